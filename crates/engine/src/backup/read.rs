//! Reading: marked slots are read and hashed on the blocking pool a bounded number of
//! batches ahead of the tree builder, after the kernel was advised of scattered reads.

use super::*;

/// One slot's bytes and id, read from the source.
pub(super) struct SlotData {
    pub(super) slot: u64,
    pub(super) id: ChunkId,
    pub(super) bytes: Vec<u8>,
}

/// Reads marked slots in order, a bounded number of batches ahead.
pub(super) struct DataFeed {
    pub(super) batches: BoxStream<'static, Result<Vec<SlotData>>>,
    pub(super) current: std::vec::IntoIter<SlotData>,
}

impl DataFeed {
    pub(super) fn new(
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

    pub(super) async fn next(&mut self) -> Result<Option<SlotData>> {
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
    let ranges = change.ranges_file().map(std::path::Path::to_path_buf);
    let source = source.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let ranges = ranges?;
        let volume = Volume::open_source(&source).ok()?;
        let mut bitmap = SlotBitmap::new(volume.size(), chunk_size);
        fold_ranges_file(&ranges, volume.size(), &mut bitmap).ok()?;
        advise_scattered_reads(&volume, &bitmap, chunk_size)
    })
}

/// Opens the source, refusing an empty one.
pub(super) fn open_source(source: &std::path::Path) -> Result<Arc<Volume>> {
    let volume = Volume::open_source(source)?;
    if volume.size() == 0 {
        return Err(Error::Invalid(format!(
            "source {} is empty; nothing to back up",
            source.display()
        )));
    }
    Ok(Arc::new(volume))
}

/// The kernel is told of every range the backup will read on a thread of its own (the advice
/// itself starts the reads and can take a while), so the source's reads overlap the metadata
/// loads that follow; the task resolves to what [`advise_scattered_reads`] returns.
pub(super) fn advise_in_background(
    volume: &Arc<Volume>,
    bitmap: &SlotBitmap,
    chunk_size: u64,
) -> tokio::task::JoinHandle<Option<u64>> {
    let (volume, bitmap) = (Arc::clone(volume), bitmap.clone());
    tokio::task::spawn_blocking(move || advise_scattered_reads(&volume, &bitmap, chunk_size))
}

/// An incremental reads scattered slots; asking the kernel for all of them at once lets the
/// disk serve them in parallel. Only for plans small enough to fit comfortably in the page
/// cache; returns the bytes advised, `None` for a plan too large.
pub(super) fn advise_scattered_reads(
    volume: &Volume,
    bitmap: &SlotBitmap,
    chunk_size: u64,
) -> Option<u64> {
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
pub(super) fn next_read_batch(
    bitmap: &SlotBitmap,
    mut from: u64,
) -> Option<(Vec<(u64, u64)>, u64)> {
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

pub(super) fn read_runs(
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
