//! The pack index in the repository: loading it from `index/` objects (again when a prune
//! rewrote them meanwhile), sharing it between readers that reload it after a concurrent prune,
//! and reading and writing index objects.

use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;

use super::{decode_compressed_records, PackIndex, DAMAGED_INDEX_ADVICE};
use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::layout;
use crate::layout::aad::{self, ObjectKind};
use crate::pack::{self, BlobKind, PackEntry};
use crate::repo::Repository;

impl PackIndex {
    /// Loads every index object of the repository. A prune rewrites index objects (writes the
    /// new one, then deletes the old): an object that vanishes between the listing and its
    /// read makes the load list `index/` again, a few times at most.
    pub async fn load(repo: &Repository) -> Result<PackIndex> {
        Self::load_where(repo, |_| true).await
    }

    /// Loads only the tree pages' locations: all a backup needs to read its parent's tree, at a
    /// small fraction of the memory of the whole index (a repository holds about 128 data
    /// chunks per tree page).
    pub async fn load_tree_pages(repo: &Repository) -> Result<PackIndex> {
        Self::load_where(repo, |entry| entry.kind == BlobKind::Tree).await
    }

    /// Loads the blobs that `keep` accepts from every index object of the repository.
    async fn load_where(repo: &Repository, keep: fn(&PackEntry) -> bool) -> Result<PackIndex> {
        let mut attempt = 1;
        loop {
            let keys: Vec<String> = repo
                .store()
                .list(layout::INDEX)
                .await?
                .into_iter()
                .map(|o| o.key)
                .collect();
            match Self::load_objects_where(repo, keys, keep).await {
                Err(Error::Store(e)) if e.is_not_found() && attempt < LOAD_ATTEMPTS => attempt += 1,
                other => return other,
            }
        }
    }

    /// Loads the blobs that `keep` accepts from the given index objects. A damaged object is
    /// recorded in [`PackIndex::damaged`] and the others are loaded: it costs only the blobs it
    /// listed.
    async fn load_objects_where(
        repo: &Repository,
        keys: Vec<String>,
        keep: fn(&PackEntry) -> bool,
    ) -> Result<PackIndex> {
        let mut index = PackIndex::default();
        let mut bodies = futures::stream::iter(keys.clone())
            .map(|key| async move {
                let body = read_compressed_object(repo, &key).await;
                (key, body)
            })
            .buffer_unordered(16);
        while let Some((key, body)) = bodies.next().await {
            let decoded = body.and_then(|compressed| {
                decode_compressed_records(&key, &compressed, |name, entry| {
                    if keep(&entry) {
                        index.insert(name, entry)
                    }
                })
            });
            match decoded {
                Ok(()) => {}
                Err(Error::Corrupt { reason, .. }) => index.damaged.push((key, reason)),
                Err(e) => return Err(e),
            }
        }
        index.damaged.sort();
        index.objects = keys;
        Ok(index)
    }
}

/// Listings of `index/` a [`PackIndex::load`] tries when index objects vanish under it.
const LOAD_ATTEMPTS: u32 = 3;

/// A pack index that readers share and reload when a concurrent prune moved blobs.
///
/// Each loaded index has a generation. A reader remembers the generation its locations came
/// from and, when one of them is gone, calls [`SharedIndex::reload_after`] with it: the first
/// caller reloads, callers waiting meanwhile get that same new index (single flight), and a
/// caller whose generation is already superseded gets the current index without a reload.
#[derive(Clone)]
pub(crate) struct SharedIndex {
    inner: Arc<SharedInner>,
}

struct SharedInner {
    repo: Repository,
    current: Mutex<(Arc<PackIndex>, u64)>,
    /// Held while a reload runs, so that one runs at a time.
    reloading: tokio::sync::Mutex<()>,
}

impl SharedIndex {
    /// Shares `index` (generation 0), reloading from `repo` when asked.
    pub(crate) fn new(repo: Repository, index: Arc<PackIndex>) -> Self {
        SharedIndex {
            inner: Arc::new(SharedInner {
                repo,
                current: Mutex::new((index, 0)),
                reloading: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Loads the repository's index and shares it.
    pub(crate) async fn load(repo: &Repository) -> Result<Self> {
        let index = PackIndex::load(repo).await?;
        Ok(Self::new(repo.clone(), Arc::new(index)))
    }

    /// The newest index and its generation.
    pub(crate) fn current(&self) -> (Arc<PackIndex>, u64) {
        let current = self
            .inner
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (Arc::clone(&current.0), current.1)
    }

    /// An index newer than `generation`: reloaded from the repository if `generation` is the
    /// newest, else the index that replaced it.
    pub(crate) async fn reload_after(&self, generation: u64) -> Result<(Arc<PackIndex>, u64)> {
        let repo = self.inner.repo.clone();
        self.reload_with(generation, || async move { PackIndex::load(&repo).await })
            .await
    }

    /// [`SharedIndex::reload_after`] with the loading step given.
    async fn reload_with<F, Fut>(&self, generation: u64, load: F) -> Result<(Arc<PackIndex>, u64)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<PackIndex>>,
    {
        let _one_at_a_time = self.inner.reloading.lock().await;
        let (index, current) = self.current();
        if current > generation {
            return Ok((index, current));
        }
        let fresh = Arc::new(load().await?);
        let mut slot = self
            .inner
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = (Arc::clone(&fresh), current + 1);
        Ok((fresh, current + 1))
    }
}

/// Every pack in the repository, by name, with its size (one listing of `packs/`).
pub(crate) async fn list_packs(repo: &Repository) -> Result<Vec<(ChunkId, u64)>> {
    Ok(repo
        .store()
        .list(layout::PACKS)
        .await?
        .into_iter()
        .filter_map(|o| {
            let name = o.key.rsplit('/').next().and_then(ChunkId::from_hex)?;
            Some((name, o.size))
        })
        .collect())
}

/// Reads and opens one index object, returning its records.
pub(crate) async fn read_index_object(repo: &Repository, key: &str) -> Result<Vec<u8>> {
    let compressed = read_compressed_object_or_advise(repo, key).await?;
    zstd::stream::decode_all(&compressed[..])
        .map_err(|e| Error::corrupt_object(key, format!("{key}: {e}")))
}

/// Reads one index object and calls `each` for every (pack, entry) as the records are
/// decompressed, holding one pack's records at a time instead of the whole object (an index
/// object of packs of small, well-compressed blobs decompresses to tens of MiB).
pub(crate) async fn read_index_entries(
    repo: &Repository,
    key: &str,
    each: impl FnMut(&ChunkId, PackEntry),
) -> Result<()> {
    let compressed = read_compressed_object_or_advise(repo, key).await?;
    decode_compressed_records(key, &compressed, each).map_err(|e| match e {
        Error::Corrupt { reason, .. } => {
            Error::corrupt_object(key, format!("{reason}; {DAMAGED_INDEX_ADVICE}"))
        }
        other => other,
    })
}

/// Reads and opens one index object, leaving its records compressed.
async fn read_compressed_object(repo: &Repository, key: &str) -> Result<Vec<u8>> {
    let sealed = repo.store().get(key).await?;
    aad::check_content_name(key, &sealed)
        .map_err(|e| Error::corrupt_object(key, format!("{key}: {e}")))?;
    repo.open_object(ObjectKind::Index, key, &sealed)
}

/// [`read_compressed_object`] for readers that stop at a damaged object: the error says what
/// to do.
async fn read_compressed_object_or_advise(repo: &Repository, key: &str) -> Result<Vec<u8>> {
    read_compressed_object(repo, key)
        .await
        .map_err(|e| match e {
            Error::Corrupt { reason, .. } => {
                Error::corrupt_object(key, format!("{reason}; {DAMAGED_INDEX_ADVICE}"))
            }
            other => other,
        })
}

/// Writes an index object for the given packs; returns its key and size.
pub(crate) async fn write_index_object(
    repo: &Repository,
    packs: &[(ChunkId, Vec<PackEntry>)],
) -> Result<(String, u64)> {
    let records = pack::encode_index_records(packs);
    let compressed = zstd::bulk::compress(&records, 3)
        .map_err(|e| Error::Internal(format!("cannot compress index: {e}")))?;
    let sealed = repo.seal_object(ObjectKind::Index, "", &compressed);
    let key = layout::index_key(&sealed);
    let size = sealed.len() as u64;
    repo.store().put(&key, Bytes::from(sealed)).await?;
    Ok((key, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    async fn empty_repo(dir: &std::path::Path) -> Repository {
        let store = crate::storage::open_store(
            &dir.display().to_string(),
            &crate::storage::StoreOptions {
                create: true,
                ..Default::default()
            },
        )
        .expect("store");
        Repository::init(
            store,
            crate::InitOptions {
                chunk_size: 4096,
                password: Some(zeroize::Zeroizing::new("pw".to_string())),
                pack_size: 64 * 1024,
                ..crate::InitOptions::default()
            },
        )
        .await
        .expect("init")
    }

    #[test]
    fn many_readers_asking_at_once_reload_once_per_generation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let repo = empty_repo(dir.path()).await;
            let shared = SharedIndex::new(repo, Arc::new(PackIndex::default()));
            let loads = Arc::new(AtomicUsize::new(0));
            let load = |loads: Arc<AtomicUsize>| {
                move || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    // Long enough that every task asks while the first reload runs.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(PackIndex::default())
                }
            };
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let shared = shared.clone();
                    let load = load(Arc::clone(&loads));
                    tokio::spawn(async move { shared.reload_with(0, load).await.map(|r| r.1) })
                })
                .collect();
            for task in tasks {
                assert_eq!(task.await.expect("task").expect("reload"), 1);
            }
            assert_eq!(loads.load(Ordering::SeqCst), 1, "one load for generation 0");
            assert_eq!(shared.current().1, 1);

            // A caller holding a superseded generation gets the current index without a load.
            let (_, generation) = shared
                .reload_with(0, load(Arc::clone(&loads)))
                .await
                .expect("reload");
            assert_eq!((generation, loads.load(Ordering::SeqCst)), (1, 1));

            // A caller holding the newest generation loads again.
            let (_, generation) = shared
                .reload_with(1, load(Arc::clone(&loads)))
                .await
                .expect("reload");
            assert_eq!((generation, loads.load(Ordering::SeqCst)), (2, 2));

            // The real reload lists the repository's (empty) index.
            let (index, generation) = shared.reload_after(2).await.expect("reload");
            assert_eq!((index.len(), generation), (0, 3));
        });
    }
}
