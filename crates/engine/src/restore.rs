//! Restoring a backup to a block device or a file: walk the tree, fetch blobs in parallel with
//! ranged reads (neighbours in a pack coalesced), check every id, then write — neighbouring
//! chunks gathered into one write, around the page cache when the target allows it (see
//! [`Volume::write_batch`]).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use crate::device::Volume;
use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::index::PackIndex;
use crate::manifest::Manifest;
use crate::pack;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::tree::{self, Leaf, PageReader};

/// Largest coalesced ranged read.
const MAX_FETCH_BYTES: u64 = 4 << 20;

/// Where and how to restore.
pub struct RestoreOptions {
    pub target: PathBuf,
    /// The device already reads as zeros: skip zeroing zero slots.
    pub assume_zeroed: bool,
    /// Replace an existing non-empty regular file.
    pub overwrite: bool,
    /// Ranged reads in flight.
    pub concurrency: usize,
    pub progress: Option<Arc<dyn Progress>>,
}

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    pub id: String,
    pub volume: String,
    pub target: String,
    pub size_bytes: u64,
    /// Bytes of non-zero chunks written.
    pub bytes_written: u64,
    /// Bytes left as holes or zeroed.
    pub zero_bytes: u64,
    pub chunks: u64,
    pub seconds: f64,
    /// Bytes of the volume per second.
    pub throughput_bytes_per_second: f64,
    /// The backup's tree root: a digest of its whole content.
    pub digest: String,
}

/// One coalesced read: consecutive blobs of one pack.
struct Fetch {
    pack: u32,
    start: u64,
    end: u64,
    /// (slot, id, offset within the fetched bytes, length)
    items: Vec<(u64, ChunkId, usize, usize)>,
}

/// Restores `manifest` to `options.target`.
pub async fn restore(
    repo: &Repository,
    manifest: &Manifest,
    options: RestoreOptions,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let target = Arc::new(open_target(
        &options.target,
        manifest.size_bytes,
        options.overwrite,
    )?);
    let fresh_file = !target.is_block_device();
    let index = Arc::new(PackIndex::load(repo).await?);
    let reader = PageReader::new(repo.clone(), Arc::clone(&index));
    let root = ChunkId::from_hex(&manifest.root)
        .ok_or_else(|| Error::Corrupt(format!("manifest {} has an invalid root", manifest.id)))?;
    if let Some(progress) = &options.progress {
        progress.start(manifest.size_bytes);
    }

    let (leaf_tx, leaf_rx) = mpsc::channel::<Leaf>(4);
    let walker = tree::walk_leaves(&reader, root, manifest.depth, manifest.slots, leaf_tx);
    let planner = plan_fetches(leaf_rx, Arc::clone(&index), manifest);
    let (fetch_tx, fetch_rx) = mpsc::channel::<Fetch>(options.concurrency * 2);
    let plan_and_send = async {
        let mut planner = planner;
        while let Some(fetch) = planner.next().await? {
            if fetch_tx.send(fetch).await.is_err() {
                break;
            }
        }
        drop(fetch_tx);
        Ok::<_, Error>(())
    };
    let chunk_size = manifest.chunk_size;
    let size = manifest.size_bytes;
    let written = tokio_stream_from(fetch_rx)
        .map(|fetch| {
            fetch_and_write(
                repo,
                &index,
                Arc::clone(&target),
                fetch,
                chunk_size,
                size,
                options.progress.clone(),
            )
        })
        .buffer_unordered(options.concurrency.max(1))
        .try_fold((0u64, 0u64), |(bytes, chunks), (b, c)| async move {
            Ok((bytes + b, chunks + c))
        });
    let (walk_result, plan_result, write_result) = tokio::join!(walker, plan_and_send, written);
    walk_result?;
    plan_result?;
    let (bytes_written, chunks) = write_result?;

    let zero_bytes = manifest.size_bytes - bytes_written;
    if !fresh_file && !options.assume_zeroed {
        zero_unwritten(repo, &reader, &target, manifest, root).await?;
    }
    target.sync()?;
    if let Some(progress) = &options.progress {
        progress.finish();
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(RestoreReport {
        id: manifest.id.clone(),
        volume: manifest.volume.clone(),
        target: options.target.display().to_string(),
        size_bytes: manifest.size_bytes,
        bytes_written,
        zero_bytes,
        chunks,
        seconds,
        throughput_bytes_per_second: manifest.size_bytes as f64 / seconds.max(1e-9),
        digest: manifest.root.clone(),
    })
}

fn open_target(path: &Path, size: u64, overwrite: bool) -> Result<Volume> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            let volume = Volume::open_target(path)?;
            if volume.size() < size {
                return Err(Error::Invalid(format!(
                    "target {} holds {} bytes but the backup is {size} bytes; use a device at least as large",
                    path.display(),
                    volume.size()
                )));
            }
            Ok(volume)
        }
        Ok(meta) if meta.len() > 0 && !overwrite => Err(Error::Invalid(format!(
            "target file {} exists and is not empty; pass --overwrite to replace it",
            path.display()
        ))),
        _ => Volume::create_file_target(path, size),
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Turns leaves into coalesced fetches. Each pack has one open fetch; a blob extends it when it
/// lies after it within [`MAX_GAP_BYTES`] (the gap is read and skipped), otherwise the open
/// fetch is sent and a new one begins. An incremental's blobs, mostly in its parents' packs
/// with small holes where chunks changed, so still come in few large reads.
struct Planner<'m> {
    leaves: mpsc::Receiver<Leaf>,
    index: Arc<PackIndex>,
    manifest: &'m Manifest,
    open: HashMap<u32, Fetch>,
    queue: VecDeque<Fetch>,
}

/// Bytes of unneeded data a coalesced read may skip over.
const MAX_GAP_BYTES: u64 = 1 << 20;
/// Packs with an open fetch at once; beyond this, every open fetch is sent.
const MAX_OPEN_PACKS: usize = 64;

fn plan_fetches(
    leaves: mpsc::Receiver<Leaf>,
    index: Arc<PackIndex>,
    manifest: &Manifest,
) -> Planner<'_> {
    Planner {
        leaves,
        index,
        manifest,
        open: HashMap::new(),
        queue: VecDeque::new(),
    }
}

impl Planner<'_> {
    async fn next(&mut self) -> Result<Option<Fetch>> {
        loop {
            if let Some(fetch) = self.queue.pop_front() {
                return Ok(Some(fetch));
            }
            match self.leaves.recv().await {
                Some(leaf) => self.add_leaf(leaf)?,
                None => {
                    let rest: Vec<Fetch> = self.open.drain().map(|(_, f)| f).collect();
                    self.queue.extend(rest);
                    if self.queue.is_empty() {
                        return Ok(None);
                    }
                }
            }
        }
    }

    fn add_leaf(&mut self, leaf: Leaf) -> Result<()> {
        for (j, id) in leaf.ids.iter().enumerate() {
            if id.is_zero() {
                continue;
            }
            let slot = leaf.first_slot + j as u64;
            let location = self.index.get(id).ok_or_else(|| {
                Error::Missing(format!(
                    "chunk {id} (volume offset {}) of backup {} is in no pack; run `s3mover verify`",
                    slot * self.manifest.chunk_size,
                    self.manifest.id
                ))
            })?;
            self.add_blob(slot, *id, location.pack, location.offset, location.length);
        }
        if self.open.len() > MAX_OPEN_PACKS {
            let all: Vec<Fetch> = self.open.drain().map(|(_, f)| f).collect();
            self.queue.extend(all);
        }
        Ok(())
    }

    fn add_blob(&mut self, slot: u64, id: ChunkId, pack: u32, start: u64, length: u32) {
        let end = start + u64::from(length);
        if let Some(fetch) = self.open.get_mut(&pack) {
            let fits = start >= fetch.end
                && start - fetch.end <= MAX_GAP_BYTES
                && end - fetch.start <= MAX_FETCH_BYTES;
            if fits {
                fetch
                    .items
                    .push((slot, id, (start - fetch.start) as usize, length as usize));
                fetch.end = end;
                return;
            }
        }
        let fresh = Fetch {
            pack,
            start,
            end,
            items: vec![(slot, id, 0, length as usize)],
        };
        if let Some(done) = self.open.insert(pack, fresh) {
            self.queue.push_back(done);
        }
    }
}

async fn fetch_and_write(
    repo: &Repository,
    index: &PackIndex,
    target: Arc<Volume>,
    fetch: Fetch,
    chunk_size: u64,
    size: u64,
    progress: Option<Arc<dyn Progress>>,
) -> Result<(u64, u64)> {
    let key = pack::pack_key(&index.pack_name(fetch.pack));
    let bytes = repo.store().get_range(&key, fetch.start..fetch.end).await?;
    let repo = repo.clone();
    tokio::task::spawn_blocking(move || {
        target.write_batch(|writer| {
            let mut written = 0u64;
            let mut chunks = 0u64;
            for (slot, id, at, len) in &fetch.items {
                let offset = slot * chunk_size;
                let expected = chunk_size.min(size - offset) as usize;
                let plain = pack::decode_blob(
                    repo.sealer(),
                    repo.hasher(),
                    id,
                    &bytes[*at..*at + *len],
                    expected,
                )
                .map_err(|e| Error::Corrupt(format!("{e} (volume offset {offset}, pack {key})")))?;
                if plain.len() != expected {
                    return Err(Error::Corrupt(format!(
                        "chunk {id} at volume offset {offset} holds {} bytes, expected {expected}",
                        plain.len()
                    )));
                }
                writer.write(offset, &plain)?;
                written += plain.len() as u64;
                chunks += 1;
                if let Some(p) = &progress {
                    p.advance(plain.len() as u64);
                }
            }
            Ok((written, chunks))
        })
    })
    .await
    .map_err(|e| Error::Invalid(format!("write task failed: {e}")))?
}

/// Zeroes the slots whose id is `ZERO` (on devices, or on files that were not created empty).
async fn zero_unwritten(
    _repo: &Repository,
    reader: &PageReader,
    target: &Volume,
    manifest: &Manifest,
    root: ChunkId,
) -> Result<()> {
    let chunk = manifest.chunk_size;
    let size = manifest.size_bytes;
    let mut zero_from: Option<u64> = None;
    let mut next_slot = 0u64;
    let flush = |from: u64, to: u64| -> Result<()> {
        let start = from * chunk;
        let end = (to * chunk).min(size);
        if end > start {
            target.zero_range(start, end - start)?;
        }
        Ok(())
    };
    let (tx, mut rx) = mpsc::channel::<Leaf>(4);
    let walk = tree::walk_leaves(reader, root, manifest.depth, manifest.slots, tx);
    let consume = async {
        while let Some(leaf) = rx.recv().await {
            // Slots between the previous leaf and this one are in zero subtrees.
            if leaf.first_slot > next_slot && zero_from.is_none() {
                zero_from = Some(next_slot);
            }
            for (j, id) in leaf.ids.iter().enumerate() {
                let slot = leaf.first_slot + j as u64;
                match (id.is_zero(), zero_from) {
                    (true, None) => zero_from = Some(slot),
                    (false, Some(from)) => {
                        flush(from, slot)?;
                        zero_from = None;
                    }
                    _ => {}
                }
            }
            next_slot = leaf.first_slot + leaf.ids.len() as u64;
        }
        if next_slot < manifest.slots && zero_from.is_none() {
            zero_from = Some(next_slot);
        }
        if let Some(from) = zero_from {
            flush(from, manifest.slots)?;
        }
        Ok::<_, Error>(())
    };
    let (walked, consumed) = tokio::join!(walk, consume);
    walked?;
    consumed
}
