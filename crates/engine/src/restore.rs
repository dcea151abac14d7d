//! Restoring a backup to a block device or a file: walk the tree, fetch blobs in parallel with
//! ranged reads (neighbours in a pack coalesced, up to a whole pack), check every id, then write
//! — neighbouring chunks gathered into one write, around the page cache when the target allows
//! it (see `Volume::write_batch`).
//!
//! A read is consumed as it arrives ([`Store::get_range_stream`]): every `DECODE_BATCH_BYTES`
//! of whole blobs go to a worker that opens, checks and writes them while the next arrive, so a
//! read as large as a pack holds little memory and its first chunks are written before its last
//! bytes are fetched.
//!
//! No lock keeps a prune away: it may repack a pack this restore planned to read and delete it.
//! A read that finds its pack gone reloads the shared index (`SharedIndex`, once for all
//! reads that fail together), looks its chunks up again and reads them where they are now,
//! checked like every other blob; tree pages do the same ([`PageReader`]).
//!
//! [`Store::get_range_stream`]: crate::storage::Store::get_range_stream

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::stream::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use crate::device::Volume;
use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::index::{PackIndex, SharedIndex, RELOADS_PER_READ};
use crate::manifest::Manifest;
use crate::pack;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::tree::{self, Leaf, PageReader};

/// Largest coalesced ranged read: a whole pack (data packs are 16 MiB, up to ~32 MiB with the
/// largest chunks), so a full restore reads each pack with one GET. Fewer, larger reads cost the
/// server less per byte (no block read twice at the seam of two ranges, fewer requests), and
/// streaming keeps the memory of one read small whatever its size.
const MAX_FETCH_BYTES: u64 = 32 << 20;
/// Largest coalesced read from a store that answers in one piece (a local directory): there a
/// read is held whole until it is written, so it stays small to bound memory (reads in flight
/// times this).
const MAX_WHOLE_READ_BYTES: u64 = 4 << 20;

/// Bytes of whole blobs one worker opens and writes while the rest of a read arrives.
const DECODE_BATCH_BYTES: usize = 1 << 20;

/// Where and how to restore.
pub struct RestoreOptions {
    /// The device or file written.
    pub target: PathBuf,
    /// The device already reads as zeros: skip zeroing zero slots.
    pub assume_zeroed: bool,
    /// Replace an existing non-empty regular file.
    pub overwrite: bool,
    /// Ranged reads in flight (taken as 1 to 1024).
    pub concurrency: usize,
    /// Write to a block device even when it is mounted or held (see `Volume::open_target`).
    pub force: bool,
    /// Told of the bytes as they are written.
    pub progress: Option<Arc<dyn Progress>>,
}

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    /// The backup restored.
    pub id: String,
    /// Its volume.
    pub volume: String,
    /// The target, as given.
    pub target: String,
    /// The volume's size.
    pub size_bytes: u64,
    /// Bytes of non-zero chunks written.
    pub bytes_written: u64,
    /// Bytes left as holes or zeroed.
    pub zero_bytes: u64,
    /// Chunks written.
    pub chunks: u64,
    /// Seconds the restore took.
    pub seconds: f64,
    /// Bytes of the volume per second.
    pub throughput_bytes_per_second: f64,
    /// The backup's tree root: a digest of its whole content.
    pub digest: String,
    /// The requests the restore made (after the repository was opened).
    pub requests: crate::storage::RequestSnapshot,
}

/// One coalesced read: consecutive blobs of one pack.
struct Fetch {
    pack: ChunkId,
    /// The generation of the shared index the locations came from.
    generation: u64,
    start: u64,
    end: u64,
    /// (slot, id, offset within the fetched bytes, length)
    items: Vec<(u64, ChunkId, usize, usize)>,
}

/// A blob read from its pack, not yet opened.
struct Blob {
    slot: u64,
    id: ChunkId,
    sealed: Bytes,
    pack_key: Arc<str>,
}

/// Restores `manifest` to `options.target`.
pub async fn restore(
    repo: &Repository,
    manifest: &Manifest,
    options: RestoreOptions,
) -> Result<RestoreReport> {
    restore_from(repo, manifest, options, None).await
}

/// [`restore`] starting from an index loaded earlier (which a prune may have made stale since),
/// so that tests can run a prune between loading the index and reading packs.
#[doc(hidden)]
pub async fn restore_with_index(
    repo: &Repository,
    manifest: &Manifest,
    options: RestoreOptions,
    index: Arc<PackIndex>,
) -> Result<RestoreReport> {
    restore_from(repo, manifest, options, Some(index)).await
}

/// Restores, and removes the target file again when this restore created it and failed: a
/// failed restore leaves no empty or partial image that looks like a result.
async fn restore_from(
    repo: &Repository,
    manifest: &Manifest,
    options: RestoreOptions,
    index: Option<Arc<PackIndex>>,
) -> Result<RestoreReport> {
    let existed = std::fs::symlink_metadata(&options.target).is_ok();
    let target = options.target.clone();
    let result = restore_to_target(repo, manifest, options, index).await;
    if result.is_err() && !existed {
        let _ = std::fs::remove_file(&target);
    }
    result
}

async fn restore_to_target(
    repo: &Repository,
    manifest: &Manifest,
    mut options: RestoreOptions,
    index: Option<Arc<PackIndex>>,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let requests_before = repo.store().counts();
    options.concurrency = options.concurrency.clamp(1, 1024);
    let target = Arc::new(open_target(
        &options.target,
        manifest.size_bytes,
        options.overwrite,
        options.force,
    )?);
    let fresh_file = !target.is_block_device();
    let index = match index {
        Some(index) => SharedIndex::new(repo.clone(), index),
        None => SharedIndex::load(repo).await?,
    };
    for (_, reason) in &index.current().0.damaged {
        tracing::warn!(
            "damaged index object: {reason}; chunks it listed cannot be found until {}",
            crate::index::DAMAGED_INDEX_ADVICE
        );
    }
    let reader = PageReader::shared(repo.clone(), index.clone());
    let root = ChunkId::from_hex(&manifest.root).ok_or_else(|| {
        Error::corrupt_object(
            &crate::layout::manifest_key(&manifest.id),
            format!("manifest {} has an invalid root", manifest.id),
        )
    })?;
    if let Some(progress) = &options.progress {
        progress.start(manifest.size_bytes);
    }

    let (leaf_tx, leaf_rx) = mpsc::channel::<Leaf>(4);
    let walker = tree::walk_leaves(&reader, root, manifest.depth, manifest.slots, leaf_tx);
    let planner = plan_fetches(
        leaf_rx,
        index.clone(),
        manifest,
        max_read_bytes(repo.store()),
    );
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
                manifest,
                Arc::clone(&target),
                fetch,
                chunk_size,
                size,
                options.progress.clone(),
            )
        })
        .buffer_unordered(options.concurrency)
        .try_fold((0u64, 0u64), |(bytes, chunks), (b, c)| async move {
            Ok((bytes + b, chunks + c))
        });
    let (walk_result, plan_result, write_result) = tokio::join!(walker, plan_and_send, written);
    walk_result.map_err(|e| match e {
        Error::Missing { key, reason } => Error::Missing {
            key,
            reason: format!("tree of backup {}: {reason}", manifest.id),
        },
        Error::Corrupt { key, reason } => Error::Corrupt {
            key,
            reason: format!("tree of backup {}: {reason}", manifest.id),
        },
        other => other,
    })?;
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
        requests: repo.store().counts().since(&requests_before),
    })
}

fn open_target(path: &Path, size: u64, overwrite: bool, force: bool) -> Result<Volume> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            let volume = Volume::open_target(path, force)?;
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

/// Turns leaves into coalesced fetches (see [`Coalescer`]). Locations come from the shared
/// index's newest generation; a chunk in no pack of it makes the index reload once before the
/// restore fails.
struct Planner<'m> {
    leaves: mpsc::Receiver<Leaf>,
    index: SharedIndex,
    manifest: &'m Manifest,
    fetches: Coalescer,
}

/// Bytes of unneeded data a coalesced read may skip over.
const MAX_GAP_BYTES: u64 = 1 << 20;
/// Packs with an open fetch at once; beyond this, every open fetch is sent.
const MAX_OPEN_PACKS: usize = 64;

fn plan_fetches(
    leaves: mpsc::Receiver<Leaf>,
    index: SharedIndex,
    manifest: &Manifest,
    max_read_bytes: u64,
) -> Planner<'_> {
    Planner {
        leaves,
        index,
        manifest,
        fetches: Coalescer::new(max_read_bytes),
    }
}

impl Planner<'_> {
    async fn next(&mut self) -> Result<Option<Fetch>> {
        loop {
            if let Some(fetch) = self.fetches.queue.pop_front() {
                return Ok(Some(fetch));
            }
            match self.leaves.recv().await {
                Some(leaf) => self.add_leaf(leaf).await?,
                None => {
                    self.fetches.send_all();
                    if self.fetches.queue.is_empty() {
                        return Ok(None);
                    }
                }
            }
        }
    }

    async fn add_leaf(&mut self, leaf: Leaf) -> Result<()> {
        let (mut index, mut generation) = self.index.current();
        for (j, id) in leaf.ids.iter().enumerate() {
            if id.is_zero() {
                continue;
            }
            let slot = leaf.first_slot + j as u64;
            let location = match index.get(id) {
                Some(location) => location,
                None => {
                    (index, generation) = self.index.reload_after(generation).await?;
                    index
                        .get(id)
                        .ok_or_else(|| in_no_pack(id, slot, self.manifest))?
                }
            };
            self.fetches.add(
                slot,
                *id,
                index.pack_name(location.pack),
                generation,
                location.offset,
                location.length,
            );
        }
        if self.fetches.open.len() > MAX_OPEN_PACKS {
            self.fetches.send_all();
        }
        Ok(())
    }
}

fn in_no_pack(id: &ChunkId, slot: u64, manifest: &Manifest) -> Error {
    Error::missing(format!(
        "chunk {id} (volume offset {}) of backup {} is in no pack; run `s3mover verify`",
        slot * manifest.chunk_size,
        manifest.id
    ))
}

/// Gathers blobs into coalesced fetches. Each pack has one open fetch; a blob extends it when
/// it lies after it within [`MAX_GAP_BYTES`] (the gap is read and skipped), otherwise the open
/// fetch is queued and a new one begins. An incremental's blobs, mostly in its parents' packs
/// with small holes where chunks changed, so still come in few large reads.
struct Coalescer {
    open: HashMap<ChunkId, Fetch>,
    queue: VecDeque<Fetch>,
    /// Largest read: see [`max_read_bytes`].
    max_bytes: u64,
}

/// How large a coalesced read of `store` may be: a whole pack where reads stream, a few MiB
/// where a read is held whole until written.
fn max_read_bytes(store: &crate::storage::Store) -> u64 {
    if store.streams_reads() {
        MAX_FETCH_BYTES
    } else {
        MAX_WHOLE_READ_BYTES
    }
}

impl Coalescer {
    fn new(max_bytes: u64) -> Self {
        Coalescer {
            open: HashMap::new(),
            queue: VecDeque::new(),
            max_bytes,
        }
    }

    fn add(
        &mut self,
        slot: u64,
        id: ChunkId,
        pack: ChunkId,
        generation: u64,
        start: u64,
        length: u32,
    ) {
        let end = start + u64::from(length);
        if let Some(fetch) = self.open.get_mut(&pack) {
            let fits = start >= fetch.end
                && start - fetch.end <= MAX_GAP_BYTES
                && end - fetch.start <= self.max_bytes;
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
            generation,
            start,
            end,
            items: vec![(slot, id, 0, length as usize)],
        };
        if let Some(done) = self.open.insert(pack, fresh) {
            self.queue.push_back(done);
        }
    }

    /// Queues every open fetch.
    fn send_all(&mut self) {
        let all: Vec<Fetch> = self.open.drain().map(|(_, f)| f).collect();
        self.queue.extend(all);
    }
}

/// Reads `fetch` as it arrives and hands every [`DECODE_BATCH_BYTES`] of whole blobs to a
/// worker, one batch being written while the next arrives; when its pack is gone, reads the
/// blobs where the reloaded index says.
#[allow(clippy::too_many_arguments)]
async fn fetch_and_write(
    repo: &Repository,
    index: &SharedIndex,
    manifest: &Manifest,
    target: Arc<Volume>,
    fetch: Fetch,
    chunk_size: u64,
    size: u64,
    progress: Option<Arc<dyn Progress>>,
) -> Result<(u64, u64)> {
    let key: Arc<str> = pack::pack_key(&fetch.pack).into();
    let mut pieces = match repo
        .store()
        .get_range_stream(&key, fetch.start..fetch.end)
        .await
    {
        Ok(pieces) => pieces,
        Err(e) if e.is_not_found() => {
            let wanted = fetch
                .items
                .iter()
                .map(|(slot, id, ..)| (*slot, *id))
                .collect();
            let blobs =
                read_moved(repo, index, manifest, fetch.pack, fetch.generation, wanted).await?;
            return write_blobs(repo.clone(), target, blobs, chunk_size, size, progress).await;
        }
        Err(e) => return Err(e.into()),
    };
    let items = fetch.items;
    let ends = batch_ends(&items, DECODE_BATCH_BYTES);
    let mut cutter = BlobCutter::default();
    // Blobs of the batch being cut, and batches cut whole, waiting for a worker.
    let mut cut: Vec<Blob> = Vec::new();
    let mut whole: Vec<Vec<Blob>> = Vec::new();
    let mut batch = 0usize;
    let mut writing: Option<tokio::task::JoinHandle<Result<(u64, u64)>>> = None;
    let (mut written, mut chunks) = (0u64, 0u64);
    while cutter.next < items.len() {
        let Some(piece) = pieces.try_next().await? else {
            break;
        };
        cutter.feed(&items, piece, |i, sealed| {
            let (slot, id, ..) = items[i];
            cut.push(Blob {
                slot,
                id,
                sealed,
                pack_key: Arc::clone(&key),
            });
            if ends.get(batch) == Some(&(i + 1)) {
                whole.push(std::mem::take(&mut cut));
                batch += 1;
            }
        });
        // Batches that one piece completed together (a local read is one piece) go to one
        // worker: one write buffer and one thread per read, as many as there are reads.
        if !whole.is_empty() {
            let blobs: Vec<Blob> = whole.drain(..).flatten().collect();
            let task = tokio::spawn(write_blobs(
                repo.clone(),
                Arc::clone(&target),
                blobs,
                chunk_size,
                size,
                progress.clone(),
            ));
            if let Some(previous) = writing.replace(task) {
                let (w, c) = join_write(previous).await?;
                written += w;
                chunks += c;
            }
        }
    }
    if let Some(last) = writing {
        let (w, c) = join_write(last).await?;
        written += w;
        chunks += c;
    }
    if cutter.next != items.len() {
        return Err(Error::corrupt_object(
            &key,
            format!("pack {key} ended before the chunks the index places in it"),
        ));
    }
    Ok((written, chunks))
}

/// Cuts the blobs at `items` (slot, id, offset in the read range, length; in offset order)
/// out of the pieces a read arrives in: a blob within one piece is a slice of it, no copy; a
/// blob split across pieces is gathered in a buffer of its exact size.
#[derive(Default)]
struct BlobCutter {
    /// Offset in the range of the next piece's first byte.
    at: usize,
    /// The next item to cut.
    next: usize,
    /// What has arrived of item `next`, when it started in an earlier piece.
    partial: Vec<u8>,
}

impl BlobCutter {
    /// Takes the next piece of the range; `done(item, sealed)` gets each blob it completes.
    fn feed(
        &mut self,
        items: &[(u64, ChunkId, usize, usize)],
        piece: Bytes,
        mut done: impl FnMut(usize, Bytes),
    ) {
        let start = self.at;
        let end = start + piece.len();
        self.at = end;
        while let Some(&(_, _, at, len)) = items.get(self.next) {
            if at >= end {
                break;
            }
            let (from, to) = (at.max(start), (at + len).min(end));
            if self.partial.is_empty() && from == at && to == at + len {
                done(self.next, piece.slice(at - start..to - start));
            } else {
                if self.partial.capacity() == 0 {
                    self.partial.reserve_exact(len);
                }
                self.partial
                    .extend_from_slice(&piece[from - start..to - start]);
                if to < at + len {
                    break;
                }
                done(self.next, Bytes::from(std::mem::take(&mut self.partial)));
            }
            self.next += 1;
        }
    }
}

/// Where each decode batch of `items` (slot, id, offset, length; in offset order) ends, as
/// exclusive item indices: whole blobs, each batch reaching at least `batch_bytes` past the
/// previous one's end, the last one whatever is left.
fn batch_ends(items: &[(u64, ChunkId, usize, usize)], batch_bytes: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut base = 0;
    for (i, &(_, _, at, len)) in items.iter().enumerate() {
        if at + len - base >= batch_bytes {
            ends.push(i + 1);
            base = at + len;
        }
    }
    if !items.is_empty() && ends.last() != Some(&items.len()) {
        ends.push(items.len());
    }
    ends
}

async fn join_write(task: tokio::task::JoinHandle<Result<(u64, u64)>>) -> Result<(u64, u64)> {
    task.await
        .map_err(|e| Error::Internal(format!("write task failed: {e}")))?
}

/// Opens, checks and writes `blobs` on a worker thread.
async fn write_blobs(
    repo: Repository,
    target: Arc<Volume>,
    blobs: Vec<Blob>,
    chunk_size: u64,
    size: u64,
    progress: Option<Arc<dyn Progress>>,
) -> Result<(u64, u64)> {
    tokio::task::spawn_blocking(move || {
        target.write_batch(|writer| {
            let mut written = 0u64;
            let mut chunks = 0u64;
            for Blob {
                slot,
                id,
                sealed,
                pack_key: key,
            } in &blobs
            {
                let offset = slot * chunk_size;
                let expected = chunk_size.min(size - offset) as usize;
                writer.write_in_place(offset, expected, |out| {
                    pack::decode_blob_into(repo.sealer(), repo.hasher(), id, sealed, out).map_err(
                        |e| {
                            Error::corrupt_object(
                                key,
                                format!("{e} (volume offset {offset}, pack {key})"),
                            )
                        },
                    )
                })?;
                written += expected as u64;
                chunks += 1;
                if let Some(p) = &progress {
                    p.advance(expected as u64);
                }
            }
            Ok((written, chunks))
        })
    })
    .await
    .map_err(|e| Error::Internal(format!("write task failed: {e}")))?
}

/// Reads the chunks `wanted` (slot, id) of the pack `gone`, which a prune deleted after
/// `generation` of the index was loaded: reloads the index, looks each chunk up again and reads
/// it from its new pack, neighbours coalesced. A chunk the reloaded index places in no pack is
/// missing; one whose pack is still gone after [`RELOADS_PER_READ`] reloads too.
async fn read_moved(
    repo: &Repository,
    index: &SharedIndex,
    manifest: &Manifest,
    gone: ChunkId,
    mut generation: u64,
    mut wanted: Vec<(u64, ChunkId)>,
) -> Result<Vec<Blob>> {
    let mut blobs = Vec::with_capacity(wanted.len());
    let mut gone = vec![gone];
    for _ in 0..RELOADS_PER_READ {
        let (fresh, fresh_generation) = index.reload_after(generation).await?;
        generation = fresh_generation;
        let mut fetches = Coalescer::new(max_read_bytes(repo.store()));
        let mut located = Vec::with_capacity(wanted.len());
        let mut still_gone = Vec::new();
        for (slot, id) in wanted.drain(..) {
            let location = fresh
                .get(&id)
                .ok_or_else(|| in_no_pack(&id, slot, manifest))?;
            let pack = fresh.pack_name(location.pack);
            if gone.contains(&pack) {
                // An index loaded before the pack went: the next reload is newer.
                still_gone.push((slot, id));
            } else {
                located.push((pack, location.offset, location.length, slot, id));
            }
        }
        located.sort_unstable_by_key(|l| (l.0, l.1));
        for (pack, offset, length, slot, id) in located {
            fetches.add(slot, id, pack, generation, offset, length);
        }
        fetches.send_all();
        wanted = still_gone;
        for fetch in fetches.queue {
            let key: Arc<str> = pack::pack_key(&fetch.pack).into();
            match repo.store().get_range(&key, fetch.start..fetch.end).await {
                Ok(bytes) => {
                    blobs.extend(fetch.items.into_iter().map(|(slot, id, at, len)| Blob {
                        slot,
                        id,
                        sealed: bytes.slice(at..at + len),
                        pack_key: Arc::clone(&key),
                    }))
                }
                Err(e) if e.is_not_found() => {
                    gone.push(fetch.pack);
                    wanted.extend(fetch.items.iter().map(|(slot, id, ..)| (*slot, *id)));
                }
                Err(e) => return Err(e.into()),
            }
        }
        if wanted.is_empty() {
            return Ok(blobs);
        }
    }
    let (slot, id) = wanted[0];
    let packs: Vec<String> = gone.iter().map(pack::pack_key).collect();
    Err(Error::Missing {
        key: (packs.len() == 1).then(|| packs[0].clone()),
        reason: format!(
        "chunk {id} (volume offset {}) of backup {} is in a pack that does not exist ({}), even \
         after reloading the repository index; run `s3mover verify`",
        slot * manifest.chunk_size,
        manifest.id,
        packs.join(", ")
    ),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn items(spans: &[(usize, usize)]) -> Vec<(u64, ChunkId, usize, usize)> {
        spans
            .iter()
            .enumerate()
            .map(|(i, &(at, len))| (i as u64, ChunkId([i as u8; 32]), at, len))
            .collect()
    }

    #[test]
    fn batches_end_on_whole_blobs_past_the_batch_size() {
        // Blobs of 40 bytes with 10-byte gaps, batches of at least 100 bytes.
        let blobs = items(&[
            (0, 40),
            (50, 40),
            (100, 40),
            (150, 40),
            (200, 40),
            (250, 40),
        ]);
        // 0..140 (3 blobs), then 140..240 (2 blobs: 100 bytes past 140), then the rest.
        assert_eq!(batch_ends(&blobs, 100), [3, 5, 6]);
        assert_eq!(batch_ends(&blobs, 1000), [6], "one batch when all fit");
        assert_eq!(
            batch_ends(&blobs, 1),
            [1, 2, 3, 4, 5, 6],
            "one blob per batch"
        );
        assert!(batch_ends(&[], 100).is_empty());
    }

    /// Whatever the pieces' sizes, every blob comes out whole and in order, gaps skipped, and
    /// a blob inside one piece is a slice of it.
    #[test]
    fn blobs_are_cut_whole_from_pieces_of_any_size() {
        let range: Bytes = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
        let blobs = items(&[(0, 100), (100, 250), (400, 30), (430, 400), (900, 100)]);
        for piece_len in [1, 7, 99, 100, 101, 256, 430, 1000] {
            let mut cutter = BlobCutter::default();
            let mut out: Vec<(usize, Bytes)> = Vec::new();
            for start in (0..range.len()).step_by(piece_len) {
                let piece = range.slice(start..(start + piece_len).min(range.len()));
                let piece_ptr = piece.as_ptr_range();
                cutter.feed(&blobs, piece, |i, sealed| {
                    let inside = piece_ptr.contains(&sealed.as_ptr());
                    let (_, _, at, len) = blobs[i];
                    if (at / piece_len) == ((at + len - 1) / piece_len) {
                        assert!(inside, "blob {i} lies in one piece of {piece_len}: a slice");
                    }
                    out.push((i, sealed));
                });
            }
            assert_eq!(cutter.next, blobs.len(), "pieces of {piece_len}");
            for (n, (i, sealed)) in out.iter().enumerate() {
                let (_, _, at, len) = blobs[*i];
                assert_eq!(*i, n, "in order");
                assert_eq!(
                    sealed,
                    &range.slice(at..at + len),
                    "blob {i}, pieces of {piece_len}"
                );
            }
        }
    }

    #[test]
    fn a_range_that_ends_early_leaves_blobs_uncut() {
        let blobs = items(&[(0, 10), (10, 10)]);
        let mut cutter = BlobCutter::default();
        let mut cut = 0;
        cutter.feed(&blobs, Bytes::from_static(&[1u8; 15]), |_, _| cut += 1);
        assert_eq!(
            (cut, cutter.next),
            (1, 1),
            "the second blob is not complete"
        );
    }
}
