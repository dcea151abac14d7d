//! Backing up a volume: change source → slot bitmap → read and hash → deduplicate against the
//! parent → pack and upload → build the tree → commit the manifest.
//!
//! Reads run ahead of the tree builder by a bounded number of batches; new chunks are sealed
//! on worker threads and uploaded in parallel packs (see `upload.rs`). The tree builder walks
//! the tree in slot order, keeping the parent's untouched subtrees by id without reading them.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{BoxStream, StreamExt};

use s3mover_ranges::{read_ranges_file, BlockMetadataType, BlockRange, RangeValidator};

use crate::bitmap::SlotBitmap;
use crate::device::Volume;
use crate::error::{Error, Result};
use crate::id::{ChunkId, IdHasher};
use crate::index::{self, PackIndex};
use crate::layout::{self, session::SessionRecord, session::SESSION_REUSE_SECONDS};
use crate::manifest::{BackupStats, CbtInfo, ChangeSource, Manifest};
use crate::pack::BlobKind;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::tree::{self, PageReader, FANOUT};
use crate::tree_table::{TablePage, TreeTable};
use crate::upload::{Outlook, Packer, UploadedPack};

/// Slots read (one positional read each) and hashed by one task on the blocking pool.
const SLOTS_PER_READ: u64 = 16;
/// Separate runs of slots read by one task: scattered changes make runs of one slot, and a
/// task per slot woke a thread per 64 KiB read.
const RUNS_PER_READ: usize = 4;
/// Read batches in flight ahead of the tree builder, each a task of its own, so this is also
/// the I/O queue depth an incremental gets on a cold disk that was not advised of its reads.
const READS_AHEAD: usize = 16;
/// Full-size data packs' worth of bytes between two index objects (and session checkpoints).
/// Counted in bytes, not packs, so that the smaller packs at the end of a backup do not add
/// index objects.
const PACKS_PER_INDEX: u64 = 4;
/// Chunk ids remembered for in-run deduplication (about 50 MB); beyond this, duplicates
/// within one run are stored again, which costs space but never correctness.
const KNOWN_SET_LIMIT: usize = 1 << 20;

/// Which backup an incremental builds on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParentChoice {
    /// The newest backup of the same volume.
    Latest,
    /// None: a full backup.
    None,
    /// A backup id or unique prefix.
    Id(String),
}

/// Where the backup learns what to read.
pub enum ChangeInput {
    /// Decide from the source: sparse extents for files, everything for devices.
    Auto,
    /// A ranges file of changes since the parent.
    ChangedRangesFile(PathBuf),
    /// A ranges file of allocated ranges.
    AllocatedRangesFile(PathBuf),
    /// Ranges streamed from a CBT service. Any failure of the stream — an error, a range that
    /// breaks the rules, a capacity that is not the source's — makes the backup read the whole
    /// volume instead (deduplicated against the parent), never a wrong incremental.
    RangeStream {
        /// `CbtAllocated` or `CbtDelta`.
        source: ChangeSource,
        /// FIXED_LENGTH or VARIABLE_LENGTH, as the service said; `None` when it sent nothing.
        kind: Option<BlockMetadataType>,
        /// The volume capacity the service reported; `None` when it sent nothing.
        capacity: Option<u64>,
        /// The ranges.
        ranges: BoxStream<'static, std::result::Result<BlockRange, String>>,
    },
}

/// What to back up and how.
pub struct BackupOptions {
    pub volume: String,
    pub source: PathBuf,
    pub parent: ParentChoice,
    pub change: ChangeInput,
    pub tags: Vec<String>,
    pub cbt: Option<CbtInfo>,
    /// Packs uploading at once.
    pub upload_concurrency: usize,
    pub progress: Option<Arc<dyn Progress>>,
}

/// The outcome of a backup.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub manifest: Manifest,
    /// Why a parent was not used, if one was asked for and not used.
    pub parent_note: Option<String>,
    /// Chunks reused from an interrupted earlier run of this volume.
    pub resumed_chunks: u64,
    /// Requests made to the store, counted after the commit (exact, unlike the manifest's
    /// stats, which are taken just before the manifest is written).
    pub requests: crate::storage::RequestSnapshot,
    /// Bytes of data packs uploaded; everything else uploaded is metadata.
    pub data_pack_bytes: u64,
    /// Problems after the commit that did not undo it (the backup is committed).
    pub warnings: Vec<String>,
}

/// Runs a backup.
pub async fn backup(repo: &Repository, options: BackupOptions) -> Result<BackupReport> {
    let started = Instant::now();
    let started_at = crate::time_util::now_rfc3339();
    let requests_before = repo.store().counts();
    let volume = Arc::new(Volume::open_source(&options.source)?);
    let size = volume.size();
    if size == 0 {
        return Err(Error::Invalid(format!(
            "source {} is empty; nothing to back up",
            options.source.display()
        )));
    }
    let chunk_size = repo.chunk_size();

    let (parent, mut parent_note) = choose_parent(repo, &options, size, chunk_size).await?;
    tracing::debug!(
        "backup: parent chosen after {:.3}s",
        started.elapsed().as_secs_f64()
    );
    let mut bitmap = SlotBitmap::new(size, chunk_size);
    let (mut change_source, fallback_note) =
        fold_change_source(options.change, &volume, &mut bitmap).await?;
    if let Some(note) = fallback_note {
        parent_note = Some(note);
    }
    if let (ChangeSource::CbtDelta, Some(p)) = (change_source, &parent) {
        if let Some(note) = delta_base_mismatch(p, options.cbt.as_ref()) {
            bitmap.mark_all();
            change_source = ChangeSource::Full;
            parent_note = Some(note);
        }
    }
    if change_source.inherits_from_parent() && parent.is_none() {
        // Changes relative to nothing: read everything rather than make a wrong incremental.
        bitmap.mark_all();
        parent_note.get_or_insert_with(|| {
            "no usable parent backup: the changed ranges were ignored and the whole volume read"
                .into()
        });
        change_source = ChangeSource::Full;
    }
    if change_source == ChangeSource::Full && parent.is_some() {
        change_source = ChangeSource::HashCompare;
    }
    let inherit = change_source.inherits_from_parent();
    tracing::debug!(
        "backup: change source folded after {:.3}s",
        started.elapsed().as_secs_f64()
    );

    // The kernel is told of every range the backup will read on a thread of its own (the
    // advice itself starts the reads and can take a while), so the source's reads overlap the
    // metadata loads below.
    let advised = {
        let volume = Arc::clone(&volume);
        let bitmap = bitmap.clone();
        tokio::task::spawn_blocking(move || advise_scattered_reads(&volume, &bitmap, chunk_size))
    };

    // Only an incremental reads the parent's tree pages, so only it needs their locations:
    // from the parent's tree table, or (a parent without one) from the pack index, of tree
    // pages only (data chunks are compared by id, never looked up). Quarantine matters only
    // when chunks are compared with a parent's. The three loads are independent small
    // requests: run them together.
    let session_key = layout::session_key(&repo.volume_key(&options.volume));
    let ((index, parent_table), (known, resumed_objects), quarantine) = tokio::try_join!(
        async {
            let Some(parent) = &parent else {
                return Ok((Arc::new(PackIndex::default()), None));
            };
            match TreeTable::read(repo, &parent.id).await {
                Ok(Some(table)) => Ok((Arc::new(table.to_index()), Some(table))),
                Ok(None) => Ok((Arc::new(PackIndex::load_tree_pages(repo).await?), None)),
                // The table is only a hint: a damaged one costs the listing it would have saved.
                Err(Error::Corrupt(reason)) => {
                    tracing::warn!(
                        "the tree table of backup {} is damaged ({reason}); reading the pack index instead",
                        parent.id
                    );
                    Ok((Arc::new(PackIndex::load_tree_pages(repo).await?), None))
                }
                Err(e) => Err(e),
            }
        },
        resume_session(repo, &session_key),
        async {
            match &parent {
                Some(_) => {
                    crate::quarantine::Quarantine::load_for_volume(repo, &options.volume).await
                }
                None => Ok(crate::quarantine::Quarantine::default()),
            }
        },
    )?;
    let resumed_chunks = known.len() as u64;
    tracing::debug!(
        "backup: index and session loaded after {:.3}s",
        started.elapsed().as_secs_f64()
    );

    if let Some(progress) = &options.progress {
        progress.start(bitmap.count().saturating_mul(chunk_size).min(size));
    }

    let reader = parent
        .as_ref()
        .map(|_| PageReader::new(repo.clone(), Arc::clone(&index)));
    // Reading before the advice is done would only race it for the same pages.
    let _ = advised.await;
    let data = DataFeed::new(
        Arc::clone(&volume),
        Arc::new(bitmap.clone()),
        chunk_size,
        repo.hasher().clone(),
    );
    let session = SessionRecord {
        session: hex::encode(&crate::crypto::random_key()[..8]),
        volume: options.volume.clone(),
        started_at: started_at.clone(),
        updated_at: started_at.clone(),
        host: crate::layout::session::hostname(),
        index_objects: resumed_objects,
    };
    let mut builder = TreeBuilder {
        repo,
        bitmap: &bitmap,
        slots: bitmap.slots(),
        planned_slots: bitmap.count(),
        chunk_size,
        inherit,
        parent_reader: reader.as_ref(),
        data,
        data_packer: Packer::new(
            repo.clone(),
            BlobKind::Data,
            repo.config().pack_size as usize,
            options.upload_concurrency,
        ),
        tree_packer: Packer::new(
            repo.clone(),
            BlobKind::Tree,
            repo.config().tree_pack_size as usize,
            options.upload_concurrency,
        ),
        known,
        session,
        session_key: session_key.clone(),
        stats: BackupStats::default(),
        progress: options.progress.clone(),
        pending_index: Vec::new(),
        quarantine,
        new_pages: Vec::new(),
        tree_locations: HashMap::new(),
    };

    let slots = bitmap.slots();
    let depth = tree::depth_for(slots);
    let parent_root = parent
        .as_ref()
        .and_then(|p| ChunkId::from_hex(&p.root))
        .unwrap_or(ChunkId::ZERO);
    let root = builder.build(depth - 1, 0, parent_root).await?;
    tracing::debug!(
        "backup: tree built after {:.3}s",
        started.elapsed().as_secs_f64()
    );
    builder.finish_packers().await?;
    let table = builder.tree_table(parent_table.as_ref());
    let manifest_id = hex::encode(&crate::crypto::random_key()[..8]);
    // The last index object and the tree table are independent: write them together.
    tokio::try_join!(builder.write_index(), table.write(repo, &manifest_id))?;
    tracing::debug!(
        "backup: uploads finished after {:.3}s",
        started.elapsed().as_secs_f64()
    );
    let mut stats = std::mem::take(&mut builder.stats);
    let data_pack_bytes = builder.data_packer.bytes_uploaded;
    drop(builder);
    let mut manifest = Manifest {
        id: manifest_id.clone(),
        volume: options.volume.clone(),
        time: crate::time_util::now_rfc3339(),
        started_at,
        parent: parent.as_ref().map(|p| p.id.clone()),
        size_bytes: size,
        chunk_size,
        slots,
        root: root.to_hex(),
        depth,
        change_source,
        cbt: options.cbt,
        tags: options.tags,
        source: options.source.display().to_string(),
        host: crate::layout::session::hostname(),
        stats: BackupStats::default(),
    };
    // Stats as of the commit: everything but the manifest itself and the pointer after it.
    let before_commit = repo.store().counts().since(&requests_before);
    stats.seconds = started.elapsed().as_secs_f64();
    let manifest_estimate = serde_json::to_vec(&manifest).map(|v| v.len()).unwrap_or(0) as u64
        + 512
        + crate::crypto::SEAL_OVERHEAD as u64;
    stats.bytes_uploaded = before_commit.bytes_put + manifest_estimate;
    stats.metadata_bytes_uploaded = stats.bytes_uploaded - data_pack_bytes;
    stats.objects_written = before_commit.objects_put + 1;
    manifest.stats = stats;
    repo.write_manifest(&manifest).await?;
    tracing::debug!(
        "backup: manifest written after {:.3}s",
        started.elapsed().as_secs_f64()
    );
    crate::gc::check_after_commit(repo, &manifest.started_at, &manifest).await?;
    // The backup is committed: point `latest/` at it and drop its session object, together.
    let (pointed, session_deleted) = tokio::join!(
        repo.set_latest(&options.volume, &manifest_id),
        repo.store().delete(&session_key)
    );
    let mut warnings = Vec::new();
    if let Err(e) = pointed {
        warnings.push(latest_not_written(repo, &options.volume, &manifest_id, &e).await);
    }
    tracing::debug!(
        "backup: committed after {:.3}s",
        started.elapsed().as_secs_f64()
    );
    // A leftover session object only costs a later rerun a lookup.
    if let Err(e) = session_deleted {
        tracing::warn!("backup {manifest_id} is committed, but its session object stayed: {e}");
    }
    if let Some(progress) = &options.progress {
        progress.finish();
    }
    Ok(BackupReport {
        manifest,
        parent_note,
        resumed_chunks,
        requests: repo.store().counts().since(&requests_before),
        data_pack_bytes,
        warnings,
    })
}

/// After a commit whose `latest/` pointer could not be written: the backup stands, but the
/// pointer may name an older backup of the volume, which the next backup would build on
/// (a changed-ranges file made against this backup's snapshot would then be applied to the
/// wrong base). The pointer is deleted instead, so the next backup is a full one; if that
/// fails too, the warning says which parent to give.
async fn latest_not_written(
    repo: &Repository,
    volume: &str,
    manifest_id: &str,
    error: &Error,
) -> String {
    let key = layout::latest_key(&repo.volume_key(volume));
    match repo.store().delete(&key).await {
        Ok(()) => format!(
            "backup {manifest_id} is committed, but {key} could not be written ({error}); the \
             next backup of {volume:?} is a full one unless it is given `--parent {manifest_id}`"
        ),
        Err(e) => format!(
            "backup {manifest_id} is committed, but {key} could not be written ({error}) nor \
             removed ({e}); give the next backup of {volume:?} `--parent {manifest_id}` (or \
             `--parent none`)"
        ),
    }
}

async fn choose_parent(
    repo: &Repository,
    options: &BackupOptions,
    size: u64,
    chunk_size: u64,
) -> Result<(Option<Manifest>, Option<String>)> {
    let candidate = match &options.parent {
        ParentChoice::None => return Ok((None, None)),
        ParentChoice::Latest => repo.latest_backup(&options.volume).await?,
        ParentChoice::Id(id) => Some(repo.resolve_backup(id, Some(&options.volume)).await?),
    };
    let Some(parent) = candidate else {
        return Ok((None, None));
    };
    if let Some(note) = crate::quarantine::reject_parent(repo, &parent).await? {
        return Ok((None, Some(note)));
    }
    if parent.size_bytes != size {
        let note = format!(
            "the source is {size} bytes but parent {} is {} bytes: taking a full backup",
            parent.id, parent.size_bytes
        );
        return Ok((None, Some(note)));
    }
    if parent.chunk_size != chunk_size {
        let note = format!(
            "parent {} uses {}-byte chunks, the repository {chunk_size}: taking a full backup",
            parent.id, parent.chunk_size
        );
        return Ok((None, Some(note)));
    }
    Ok((Some(parent), None))
}

/// A delta whose base is not the parent's snapshot would be a wrong incremental.
fn delta_base_mismatch(parent: &Manifest, cbt: Option<&CbtInfo>) -> Option<String> {
    let recorded = parent.cbt.as_ref()?.snapshot_handle.as_ref()?;
    let base = cbt?.base_snapshot_handle.as_ref()?;
    (recorded != base).then(|| {
        format!(
            "the changed blocks are relative to snapshot {base} but parent {} was taken from {recorded}: reading the whole volume instead",
            parent.id
        )
    })
}

/// Folds the change information into the bitmap; says which source it was and, when change
/// tracking failed and the whole volume will be read instead, why.
async fn fold_change_source(
    change: ChangeInput,
    volume: &Volume,
    bitmap: &mut SlotBitmap,
) -> Result<(ChangeSource, Option<String>)> {
    let size = volume.size();
    let source = match change {
        ChangeInput::Auto => match volume.data_extents() {
            Some(extents) => {
                for (offset, len) in extents {
                    bitmap.mark_bytes(offset, len);
                }
                ChangeSource::Sparse
            }
            None => {
                bitmap.mark_all();
                ChangeSource::Full
            }
        },
        ChangeInput::ChangedRangesFile(path) => {
            fold_ranges_file(&path, size, bitmap)?;
            ChangeSource::ChangedRanges
        }
        ChangeInput::AllocatedRangesFile(path) => {
            fold_ranges_file(&path, size, bitmap)?;
            ChangeSource::AllocatedRanges
        }
        ChangeInput::RangeStream {
            source,
            kind,
            capacity,
            ranges,
        } => {
            return match fold_range_stream(kind, capacity, ranges, size, bitmap).await {
                Ok(()) => Ok((source, None)),
                Err(reason) => {
                    bitmap.mark_all();
                    Ok((
                        ChangeSource::Full,
                        Some(format!(
                            "change tracking failed ({reason}); reading the whole volume instead"
                        )),
                    ))
                }
            };
        }
    };
    Ok((source, None))
}

async fn fold_range_stream(
    kind: Option<BlockMetadataType>,
    capacity: Option<u64>,
    mut ranges: BoxStream<'static, std::result::Result<BlockRange, String>>,
    size: u64,
    bitmap: &mut SlotBitmap,
) -> std::result::Result<(), String> {
    let capacity = capacity.unwrap_or(size);
    if capacity != size {
        return Err(format!(
            "the service reports a volume of {capacity} bytes but the source is {size} bytes"
        ));
    }
    let mut validator =
        RangeValidator::new(kind.unwrap_or(BlockMetadataType::VariableLength), capacity);
    let started = Instant::now();
    while let Some(range) = ranges.next().await {
        let range = range?;
        validator.check(range).map_err(|e| e.to_string())?;
        bitmap.mark_bytes(range.offset, range.size);
    }
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        "folded {} streamed ranges into {} marked slots in {seconds:.2}s ({:.0} ranges/s)",
        validator.accepted(),
        bitmap.count(),
        validator.accepted() as f64 / seconds.max(1e-9)
    );
    Ok(())
}

fn fold_ranges_file(path: &std::path::Path, size: u64, bitmap: &mut SlotBitmap) -> Result<()> {
    let file =
        std::fs::File::open(path).map_err(|e| Error::io("cannot open ranges file", path, e))?;
    let header = read_ranges_file(file, |range| {
        if range.end() > size {
            return Err(format!(
                "range {range} ends at {} but the source is only {size} bytes",
                range.end()
            ));
        }
        bitmap.mark_bytes(range.offset, range.size);
        Ok(())
    })
    .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    if header.capacity != size {
        return Err(Error::Invalid(format!(
            "{}: volumeCapacityBytes is {} but the source is {size} bytes; the ranges describe another volume",
            path.display(),
            header.capacity
        )));
    }
    Ok(())
}

async fn resume_session(repo: &Repository, session_key: &str) -> Result<(KnownSet, Vec<String>)> {
    let mut known = KnownSet::default();
    let record = match repo.read_record::<SessionRecord>(session_key).await {
        Ok(Some(record)) => record,
        Ok(None) => return Ok((known, Vec::new())),
        Err(Error::Store(e)) => return Err(e.into()),
        Err(_) => {
            tracing::warn!("ignoring an unreadable session object {session_key}");
            return Ok((known, Vec::new()));
        }
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let fresh = record
        .age_seconds(now)
        .is_some_and(|age| age < SESSION_REUSE_SECONDS);
    if !fresh {
        return Ok((known, Vec::new()));
    }
    let mut usable = Vec::new();
    for key in &record.index_objects {
        if let Ok(records) = index::read_index_object(repo, key).await {
            crate::pack::decode_index_records(&records, |_, entry| known.insert(entry.id))?;
            usable.push(key.clone());
        }
    }
    tracing::info!(
        "resuming: {} chunks from an interrupted run of {} are reused",
        known.len(),
        record.volume
    );
    Ok((known, usable))
}

/// Ids stored by this run (or an interrupted run being resumed).
#[derive(Default)]
struct KnownSet {
    ids: HashSet<ChunkId>,
}

impl KnownSet {
    fn insert(&mut self, id: ChunkId) {
        if self.ids.len() < KNOWN_SET_LIMIT {
            self.ids.insert(id);
        }
    }
    fn contains(&self, id: &ChunkId) -> bool {
        self.ids.contains(id)
    }
    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// One slot's bytes and id, read from the source.
struct SlotData {
    slot: u64,
    id: ChunkId,
    bytes: Vec<u8>,
}

/// Reads marked slots in order, a bounded number of batches ahead.
struct DataFeed {
    batches: BoxStream<'static, Result<Vec<SlotData>>>,
    current: std::vec::IntoIter<SlotData>,
}

impl DataFeed {
    fn new(
        volume: Arc<Volume>,
        bitmap: Arc<SlotBitmap>,
        chunk_size: u64,
        hasher: IdHasher,
    ) -> Self {
        let size = volume.size();
        let batches = futures::stream::unfold(0u64, move |from| {
            let bitmap = Arc::clone(&bitmap);
            async move { next_read_batch(&bitmap, from) }
        });
        let batches = batches
            .map(move |runs| {
                let volume = Arc::clone(&volume);
                let hasher = hasher.clone();
                async move {
                    tokio::task::spawn_blocking(move || {
                        read_runs(&volume, &hasher, &runs, chunk_size, size)
                    })
                    .await
                    .map_err(|e| Error::Internal(format!("read task failed: {e}")))?
                }
            })
            .buffered(READS_AHEAD)
            .boxed();
        DataFeed {
            batches,
            current: Vec::new().into_iter(),
        }
    }

    async fn next(&mut self) -> Result<Option<SlotData>> {
        loop {
            if let Some(item) = self.current.next() {
                return Ok(Some(item));
            }
            match self.batches.next().await {
                Some(batch) => self.current = batch?.into_iter(),
                None => return Ok(None),
            }
        }
    }
}

/// Starts the kernel's reads of what a backup from a ranges file will read, on a blocking
/// thread, so that a caller can start them before unlocking the repository (the key derivation
/// takes tens of milliseconds by design) — see [`crate::LockedRepository`]. The backup advises
/// the same reads again, which costs little for pages already cached or on their way.
///
/// Only a hint: the task resolves to the bytes advised, or `None` when there is nothing to
/// advise (another change source, a plan too large to advise, or an unreadable source or
/// ranges file — errors the backup itself then reports).
pub fn prefetch_ranges(
    source: &std::path::Path,
    change: &ChangeInput,
    chunk_size: u64,
) -> tokio::task::JoinHandle<Option<u64>> {
    let ranges = match change {
        ChangeInput::ChangedRangesFile(path) | ChangeInput::AllocatedRangesFile(path) => {
            Some(path.clone())
        }
        _ => None,
    };
    let source = source.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let ranges = ranges?;
        let volume = Volume::open_source(&source).ok()?;
        let mut bitmap = SlotBitmap::new(volume.size(), chunk_size);
        fold_ranges_file(&ranges, volume.size(), &mut bitmap).ok()?;
        advise_scattered_reads(&volume, &bitmap, chunk_size)
    })
}

/// An incremental reads scattered slots; asking the kernel for all of them at once lets the
/// disk serve them in parallel. Only for plans small enough to fit comfortably in the page
/// cache; returns the bytes advised, `None` for a plan too large.
fn advise_scattered_reads(volume: &Volume, bitmap: &SlotBitmap, chunk_size: u64) -> Option<u64> {
    const MAX_ADVISED_BYTES: u64 = 1 << 30;
    let planned = bitmap.count().saturating_mul(chunk_size);
    if planned > MAX_ADVISED_BYTES {
        return None;
    }
    let size = volume.size();
    let mut advised = 0;
    let mut next = bitmap.next_marked(0);
    while let Some(start) = next {
        let mut end = start + 1;
        while bitmap.get(end) {
            end += 1;
        }
        let offset = start * chunk_size;
        let len = (end * chunk_size).min(size) - offset;
        volume.advise_will_need(offset, len);
        advised += len;
        next = bitmap.next_marked(end);
    }
    Some(advised)
}

/// The marked runs from slot `from` on that make one read task: up to [`SLOTS_PER_READ`]
/// slots in up to [`RUNS_PER_READ`] runs (so scattered changes keep a few slots per task and
/// little memory ahead). Returns the runs and the slot to go on from, or `None` when no marked
/// slot is left.
fn next_read_batch(bitmap: &SlotBitmap, mut from: u64) -> Option<(Vec<(u64, u64)>, u64)> {
    let mut runs = Vec::new();
    let mut slots = 0;
    while slots < SLOTS_PER_READ && runs.len() < RUNS_PER_READ {
        let Some(start) = bitmap.next_marked(from) else {
            break;
        };
        let mut end = start + 1;
        while slots + (end - start) < SLOTS_PER_READ && bitmap.get(end) {
            end += 1;
        }
        runs.push((start, end));
        slots += end - start;
        from = end;
    }
    (!runs.is_empty()).then_some((runs, from))
}

fn read_runs(
    volume: &Volume,
    hasher: &IdHasher,
    runs: &[(u64, u64)],
    chunk_size: u64,
    size: u64,
) -> Result<Vec<SlotData>> {
    // One buffer per slot, read in place: the bytes are never copied before sealing.
    runs.iter()
        .flat_map(|&(start, end)| start..end)
        .map(|slot| {
            let offset = slot * chunk_size;
            let len = chunk_size.min(size - offset) as usize;
            let mut bytes = vec![0u8; len];
            volume.read_exact_at(&mut bytes, offset)?;
            Ok(SlotData {
                slot,
                id: hasher.id_of(&bytes),
                bytes,
            })
        })
        .collect()
}

/// Builds the new tree in slot order, pulling slot data as leaves need it.
struct TreeBuilder<'a> {
    repo: &'a Repository,
    bitmap: &'a SlotBitmap,
    slots: u64,
    /// Slots marked to be read, and their size.
    planned_slots: u64,
    chunk_size: u64,
    inherit: bool,
    parent_reader: Option<&'a PageReader>,
    data: DataFeed,
    data_packer: Packer,
    tree_packer: Packer,
    known: KnownSet,
    session: SessionRecord,
    session_key: String,
    stats: BackupStats,
    progress: Option<Arc<dyn Progress>>,
    pending_index: Vec<UploadedPack>,
    quarantine: crate::quarantine::Quarantine,
    /// Position and id of every non-zero page this backup built, for its tree table.
    new_pages: Vec<(u8, u64, ChunkId)>,
    /// Where this backup's uploaded tree pages went: pack, offset, length.
    tree_locations: HashMap<ChunkId, (ChunkId, u64, u32)>,
}

impl<'a> TreeBuilder<'a> {
    /// Builds page `index` at `level`; `parent` is the parent tree's id for the same page.
    fn build(
        &mut self,
        level: u32,
        index: u64,
        parent: ChunkId,
    ) -> futures::future::BoxFuture<'_, Result<ChunkId>> {
        Box::pin(async move {
            let (start, end) = tree::page_span(level, index, self.slots);
            if !self.bitmap.any_in(start, end) {
                return Ok(if self.inherit { parent } else { ChunkId::ZERO });
            }
            let entries = tree::page_entries(level, index, self.slots);
            let parent_ids = match self.parent_reader {
                Some(reader) if !parent.is_zero() => reader.page(&parent, entries).await?,
                _ => vec![ChunkId::ZERO; entries],
            };
            let mut ids = Vec::with_capacity(entries);
            for (j, parent_id) in parent_ids.into_iter().enumerate() {
                let id = if level == 0 {
                    let slot = start + j as u64;
                    if self.bitmap.get(slot) {
                        self.take_slot(slot, parent_id).await?
                    } else if self.inherit {
                        parent_id
                    } else {
                        ChunkId::ZERO
                    }
                } else {
                    self.build(level - 1, index * FANOUT + j as u64, parent_id)
                        .await?
                };
                ids.push(id);
            }
            let id = self.store_page(&ids, parent).await?;
            if !id.is_zero() {
                self.new_pages.push((level as u8, index, id));
            }
            Ok(id)
        })
    }

    async fn take_slot(&mut self, slot: u64, parent_id: ChunkId) -> Result<ChunkId> {
        let data = self
            .data
            .next()
            .await?
            .ok_or_else(|| Error::Internal(format!("slot {slot} was planned but not read")))?;
        if data.slot != slot {
            return Err(Error::Internal(format!(
                "expected slot {slot}, read slot {}",
                data.slot
            )));
        }
        self.stats.bytes_read += data.bytes.len() as u64;
        self.stats.slots_read += 1;
        if let Some(progress) = &self.progress {
            progress.advance(data.bytes.len() as u64);
        }
        let id = data.id;
        let parent_id = if self.quarantine.contains(&id) {
            ChunkId::ZERO
        } else {
            parent_id
        };
        if id.is_zero() || id == parent_id || self.known.contains(&id) {
            return Ok(id);
        }
        self.stats.chunks_new += 1;
        self.stats.data_bytes_new += data.bytes.len() as u64;
        self.known.insert(id);
        self.data_packer.expect(self.outlook());
        self.data_packer.add(id, data.bytes).await?;
        self.checkpoint().await?;
        Ok(id)
    }

    /// Input read so far and still to read, for the data packer's last packs.
    fn outlook(&self) -> Outlook {
        let remaining_slots = self.planned_slots.saturating_sub(self.stats.slots_read);
        Outlook {
            input_seen: self.stats.bytes_read,
            input_remaining: remaining_slots.saturating_mul(self.chunk_size),
        }
    }

    async fn store_page(&mut self, ids: &[ChunkId], parent: ChunkId) -> Result<ChunkId> {
        if ids.iter().all(ChunkId::is_zero) {
            return Ok(ChunkId::ZERO);
        }
        let bytes = tree::encode_page(ids);
        let id = self.repo.hasher().hash(&bytes);
        if id == parent || self.known.contains(&id) {
            return Ok(id);
        }
        self.known.insert(id);
        self.tree_packer.add(id, bytes).await?;
        Ok(id)
    }

    /// Every few packs' worth of bytes: an index object for them and a session checkpoint.
    async fn checkpoint(&mut self) -> Result<()> {
        let completed = self.data_packer.completed_bytes() + self.tree_packer.completed_bytes();
        if completed < PACKS_PER_INDEX * self.repo.config().pack_size as u64 {
            return Ok(());
        }
        self.write_index().await?;
        self.write_session().await
    }

    /// Takes the packers' finished uploads for the next index object, noting where tree pages
    /// went (for the tree table).
    fn collect_completed(&mut self) {
        let completed: Vec<UploadedPack> = self
            .data_packer
            .take_completed()
            .into_iter()
            .chain(self.tree_packer.take_completed())
            .collect();
        for pack in &completed {
            for entry in pack.entries.iter().filter(|e| e.kind == BlobKind::Tree) {
                self.tree_locations
                    .insert(entry.id, (pack.name, entry.offset, entry.length));
            }
        }
        self.pending_index.extend(completed);
    }

    async fn write_index(&mut self) -> Result<()> {
        self.collect_completed();
        if self.pending_index.is_empty() {
            return Ok(());
        }
        let packs: Vec<_> = self
            .pending_index
            .drain(..)
            .map(|p| (p.name, p.entries))
            .collect();
        let (key, _) = index::write_index_object(self.repo, &packs).await?;
        self.session.index_objects.push(key);
        Ok(())
    }

    async fn write_session(&mut self) -> Result<()> {
        self.session.updated_at = crate::time_util::now_rfc3339();
        self.repo
            .write_record(&self.session_key, &self.session)
            .await?;
        Ok(())
    }

    /// Seals and uploads what is left in both packers and waits for every upload; the last
    /// index object is written by the caller.
    async fn finish_packers(&mut self) -> Result<()> {
        self.data_packer.finish().await?;
        self.tree_packer.finish().await?;
        self.collect_completed();
        Ok(())
    }

    /// The new tree's table: the parent's pages in the subtrees this backup inherited, and the
    /// pages it built, each located where this backup uploaded it or, failing that, where the
    /// reader's newest index puts it (after a reload, fresher than the parent's table). A page
    /// located nowhere is left out: the next backup then falls back to the pack index for it.
    fn tree_table(&self, parent_table: Option<&TreeTable>) -> TreeTable {
        let index = self.parent_reader.map(PageReader::index);
        let locate = |id: &ChunkId| -> Option<(ChunkId, u64, u32)> {
            if let Some(found) = self.tree_locations.get(id) {
                return Some(*found);
            }
            let index = index.as_ref()?;
            let location = index.get(id)?;
            Some((
                index.pack_name(location.pack),
                location.offset,
                location.length,
            ))
        };
        let inherited = parent_table
            .filter(|_| self.inherit)
            .into_iter()
            .flat_map(|table| table.pages.iter())
            .filter(|page| {
                let (start, end) = tree::page_span(u32::from(page.level), page.index, self.slots);
                start < end && !self.bitmap.any_in(start, end)
            })
            .map(|page| (page.level, page.index, page.id));
        let pages = inherited
            .chain(self.new_pages.iter().copied())
            .filter_map(|(level, index, id)| {
                let (pack, offset, length) = locate(&id)?;
                Some(TablePage {
                    level,
                    index,
                    id,
                    pack,
                    offset,
                    length,
                })
            })
            .collect();
        TreeTable { pages }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every batch of a plan, in order.
    fn batches(bitmap: &SlotBitmap) -> Vec<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        let mut from = 0;
        while let Some((runs, next)) = next_read_batch(bitmap, from) {
            out.push(runs);
            from = next;
        }
        out
    }

    #[test]
    fn contiguous_slots_are_read_in_batches_of_at_most_slots_per_read() {
        let mut bitmap = SlotBitmap::new(100, 1);
        bitmap.mark_slots(10, 50);
        assert_eq!(
            batches(&bitmap),
            vec![vec![(10, 26)], vec![(26, 42)], vec![(42, 50)]]
        );
    }

    #[test]
    fn scattered_slots_share_a_batch_up_to_runs_per_read() {
        let mut bitmap = SlotBitmap::new(100, 1);
        for slot in [1, 3, 5, 7, 9, 20, 21] {
            bitmap.mark_slots(slot, slot + 1);
        }
        bitmap.mark_slots(30, 60);
        assert_eq!(
            batches(&bitmap),
            vec![
                vec![(1, 2), (3, 4), (5, 6), (7, 8)],
                vec![(9, 10), (20, 22), (30, 43)],
                vec![(43, 59)],
                vec![(59, 60)],
            ]
        );
        let read: u64 = batches(&bitmap)
            .iter()
            .flatten()
            .map(|(start, end)| end - start)
            .sum();
        assert_eq!(read, bitmap.count());
    }
}
