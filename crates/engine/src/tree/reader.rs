//! Reading tree pages: through the pack index, with a small cache of whole tree packs, and the
//! walk of a tree leaf by leaf. The page geometry and encoding are in the parent module.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{decode_page, page_entries, page_span, Leaf, FANOUT, PAGE_BYTES};
use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::index::{is_not_found, PackIndex, SharedIndex, RELOADS_PER_READ};
use crate::pack::{self, BlobKind};
use crate::repo::Repository;

/// Whole tree packs a reader keeps: a walk in slot order reads each pack's pages together.
const CACHED_TREE_PACKS: usize = 8;

/// Reads tree pages, caching whole tree packs.
///
/// When a page's pack is gone (a concurrent prune repacked it) or the page is in no pack of
/// the index, the reader reloads the shared index and looks the page up again (at most
/// `RELOADS_PER_READ` times per page). A pack or page still missing after a reload is
/// remembered, so that a damaged repository costs one reload, not one per page.
pub struct PageReader {
    repo: Repository,
    index: SharedIndex,
    /// Whole tree packs by name (pack numbers differ between index generations).
    cache: Mutex<Vec<(ChunkId, Bytes)>>,
    /// Packs and pages found missing even after a reload.
    missing: Mutex<HashSet<ChunkId>>,
}

impl PageReader {
    /// A reader over the repository's packs, starting from `index`.
    pub fn new(repo: Repository, index: Arc<PackIndex>) -> Self {
        let shared = SharedIndex::new(repo.clone(), index);
        Self::shared(repo, shared)
    }

    /// A reader that shares `index` (and its reloads) with other readers.
    pub(crate) fn shared(repo: Repository, index: SharedIndex) -> Self {
        PageReader {
            repo,
            index,
            cache: Mutex::new(Vec::new()),
            missing: Mutex::new(HashSet::new()),
        }
    }

    /// The newest pack index this reader knows.
    pub(crate) fn index(&self) -> Arc<PackIndex> {
        self.index.current().0
    }

    /// Reads the page `id`, which must hold `entries` ids; a `ZERO` id is a page of zeros.
    pub async fn page(&self, id: &ChunkId, entries: usize) -> Result<Vec<ChunkId>> {
        if id.is_zero() {
            return Ok(vec![ChunkId::ZERO; entries]);
        }
        let (mut index, mut generation) = self.index.current();
        let mut reloads = 0;
        loop {
            let gone = match self.page_from(&index, id, entries).await {
                Ok(result) => return result,
                Err(gone) => gone,
            };
            if reloads == RELOADS_PER_READ || self.known_missing(&gone.what) {
                self.remember_missing(gone.what);
                return Err(gone.error);
            }
            (index, generation) = self.index.reload_after(generation).await?;
            reloads += 1;
            // Unless the reloaded index sends the read elsewhere, the page is missing, not moved.
            let error = match index.get(id) {
                None => Some(not_indexed(id)),
                Some(location) if index.pack_name(location.pack) == gone.what => Some(gone.error),
                Some(_) => None,
            };
            if let Some(error) = error {
                self.remember_missing(gone.what);
                return Err(error);
            }
        }
    }

    /// Reads `id` through `index`; `Err` when its pack or its index entry is missing.
    async fn page_from(
        &self,
        index: &PackIndex,
        id: &ChunkId,
        entries: usize,
    ) -> std::result::Result<Result<Vec<ChunkId>>, Gone> {
        let Some(location) = index.get(id) else {
            return Err(Gone {
                what: *id,
                error: not_indexed(id),
            });
        };
        if location.kind != BlobKind::Tree {
            return Ok(Err(Error::corrupt(format!(
                "{id} is indexed as data, not a tree page"
            ))));
        }
        let name = index.pack_name(location.pack);
        let pack_bytes = match self.tree_pack(&name).await {
            Ok(bytes) => bytes,
            Err(error) if is_not_found(&error) => return Err(Gone { what: name, error }),
            Err(error) => return Ok(Err(error)),
        };
        let start = location.offset as usize;
        let end = start + location.length as usize;
        let Some(sealed) = pack_bytes.get(start..end) else {
            return Ok(Err(Error::corrupt_object(
                &pack::pack_key(&name),
                format!("tree pack {name} is shorter than its index says; run `s3mover verify`"),
            )));
        };
        Ok(pack::decode_blob(
            self.repo.sealer(),
            self.repo.hasher(),
            id,
            sealed,
            PAGE_BYTES,
        )
        .and_then(|plain| decode_page(&plain, entries, id))
        .map_err(|e| e.with_key(&pack::pack_key(&name))))
    }

    /// True when `what` (a pack or a page) was already found missing after a reload.
    fn known_missing(&self, what: &ChunkId) -> bool {
        self.missing
            .lock()
            .map(|m| m.contains(what))
            .unwrap_or(false)
    }

    fn remember_missing(&self, what: ChunkId) {
        if let Ok(mut missing) = self.missing.lock() {
            missing.insert(what);
        }
    }

    async fn tree_pack(&self, name: &ChunkId) -> Result<Bytes> {
        if let Ok(cache) = self.cache.lock() {
            if let Some((_, bytes)) = cache.iter().find(|(n, _)| n == name) {
                return Ok(bytes.clone());
            }
        }
        let key = pack::pack_key(name);
        let bytes = self.repo.store().get(&key).await?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHED_TREE_PACKS {
                cache.remove(0);
            }
            cache.push((*name, bytes.clone()));
        }
        Ok(bytes)
    }
}

fn not_indexed(id: &ChunkId) -> Error {
    Error::missing(format!(
        "tree page {id} is in no pack of the repository index; run `s3mover verify`"
    ))
}

/// A page could not be read because its pack or its index entry is missing: `what` is the
/// pack name or the page id.
struct Gone {
    what: ChunkId,
    error: Error,
}

/// Walks a tree in slot order, sending every non-zero leaf page to `out`; zero subtrees are
/// skipped without being read. Stops early (without error) when the receiver is dropped.
pub async fn walk_leaves(
    reader: &PageReader,
    root: ChunkId,
    depth: u32,
    slots: u64,
    out: mpsc::Sender<Leaf>,
) -> Result<()> {
    walk(reader, root, depth - 1, 0, slots, &out)
        .await
        .map(|_| ())
}

fn walk<'a>(
    reader: &'a PageReader,
    id: ChunkId,
    level: u32,
    index: u64,
    slots: u64,
    out: &'a mpsc::Sender<Leaf>,
) -> futures::future::BoxFuture<'a, Result<bool>> {
    Box::pin(async move {
        if id.is_zero() {
            return Ok(true);
        }
        let entries = page_entries(level, index, slots);
        let ids = reader.page(&id, entries).await?;
        if level == 0 {
            let (first_slot, _) = page_span(0, index, slots);
            return Ok(out.send(Leaf { first_slot, ids }).await.is_ok());
        }
        for (j, child) in ids.into_iter().enumerate() {
            if !walk(
                reader,
                child,
                level - 1,
                index * FANOUT + j as u64,
                slots,
                out,
            )
            .await?
            {
                return Ok(false);
            }
        }
        Ok(true)
    })
}
