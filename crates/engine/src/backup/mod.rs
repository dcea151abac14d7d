//! Backing up a volume: change source → slot bitmap → read and hash → deduplicate against the
//! parent → pack and upload → build the tree → commit the manifest.
//!
//! [`backup`] is the pipeline plan → load → read and build → commit, and each stage lives in
//! its own file: `change.rs` (the change inputs, the [`ChangeTracker`] door a change-tracking
//! service comes through, the [`BackupNote`]s a backup returns), `plan.rs` (parent and slot
//! bitmap, and every fallback to a wider read), `load.rs` (the parent's page locations, an
//! interrupted run's session, the quarantine), `read.rs` (the source opened, slots read and
//! hashed ahead), `build.rs` (the tree builder and the tree table), `writer.rs` (the
//! `ChunkWriter`: deduplication, packers, index objects, session checkpoints), `commit.rs` (manifest, post-commit check, `latest/` pointer).
//! [`unlock_and_backup`] starts what can start before the repository is unlocked.
//!
//! Reads run ahead of the tree builder by a bounded number of batches; new chunks are sealed
//! on worker threads and uploaded in parallel packs (see `upload.rs`). The tree builder walks
//! the tree in slot order, keeping the parent's untouched subtrees by id without reading them.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{BoxStream, StreamExt};

use s3mover_ranges::{read_ranges_file, BlockMetadataType, RangeValidator};

use crate::bitmap::SlotBitmap;
use crate::device::Volume;
use crate::error::{Error, Result};
use crate::id::{ChunkId, IdHasher};
use crate::index::{self, PackIndex};
use crate::layout::{self, session::SessionRecord, session::SESSION_REUSE_SECONDS};
use crate::manifest::{BackupStats, CbtInfo, ChangeSource, Manifest};
use crate::pack::BlobKind;
use crate::progress::Progress;
use crate::repo::{LockedRepository, Repository};
use crate::tree::{self, PageReader, FANOUT};
use crate::tree_table::{TablePage, TreeTable};
use crate::upload::{Outlook, Packer, UploadedPack};

mod build;
mod change;
mod commit;
mod load;
mod plan;
mod read;
mod writer;

use build::*;
use change::joined_notes;
pub use change::{BackupNote, ChangeInput, ChangeTracker, TrackedRanges};
use commit::Commit;
use load::*;
use plan::*;
pub use read::prefetch_ranges;
use read::*;
use writer::*;

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

/// What to back up and how.
pub struct BackupOptions {
    /// The volume name the backup is filed under.
    pub volume: String,
    /// The device or image file to read.
    pub source: PathBuf,
    /// Which backup to build on.
    pub parent: ParentChoice,
    /// Where the backup learns what to read.
    pub change: ChangeInput,
    /// Tags recorded in the manifest.
    pub tags: Vec<String>,
    /// Packs uploading at once; `None` for what the store does best
    /// ([`crate::storage::Store::uploads_in_flight`]).
    pub upload_concurrency: Option<usize>,
    /// Told of the bytes as they are read.
    pub progress: Option<Arc<dyn Progress>>,
}

/// The outcome of a backup.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The committed manifest.
    pub manifest: Manifest,
    /// Why the backup read more than its change source said, or did not build on the parent
    /// asked for ([`BackupReport::note`] has them as one line).
    pub notes: Vec<BackupNote>,
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

impl BackupReport {
    /// The notes as one line, or `None` when there are none.
    pub fn note(&self) -> Option<String> {
        joined_notes(&self.notes)
    }
}

/// Runs a backup on a repository whose config is read but which is not unlocked yet: what
/// needs only the config starts first (the kernel's reads of a ranges file's ranges, see
/// [`prefetch_ranges`]), so that it overlaps the key derivation `unlock` runs; then the
/// repository is unlocked and backed up.
pub async fn unlock_and_backup<F, Fut, E>(
    locked: LockedRepository,
    options: BackupOptions,
    unlock: F,
) -> std::result::Result<BackupReport, E>
where
    F: FnOnce(LockedRepository) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<Repository, E>>,
    E: From<Error>,
{
    if options.change.ranges_file().is_some() {
        let chunk_size = u64::from(locked.config().chunk_size);
        // Only a hint: the backup reports any error the prefetch met.
        drop(prefetch_ranges(
            &options.source,
            &options.change,
            chunk_size,
        ));
    }
    let repo = unlock(locked).await?;
    Ok(backup(&repo, options).await?)
}

/// Runs a backup: plan what to read, load what the build needs, read and build the tree
/// (uploading what is new as it goes), commit the manifest.
pub async fn backup(repo: &Repository, options: BackupOptions) -> Result<BackupReport> {
    let clock = Clock::start(repo);
    let volume = open_source(&options.source)?;
    let (size, chunk_size) = (volume.size(), repo.chunk_size());
    let (name, change) = (&options.volume, options.change);
    let plan = plan(repo, name, &options.parent, change, &volume, chunk_size).await?;
    clock.log("change source folded");
    let advised = advise_in_background(&volume, &plan.bitmap, chunk_size);
    let session_key = layout::session_key(&repo.volume_key(name));
    let (parent, started_at) = (plan.parent.as_ref(), &clock.started_at);
    let Loaded { parent, resumed } = load(repo, name, parent, &session_key, started_at).await?;
    let resumed_chunks = resumed.known.len() as u64;
    clock.log("index and session loaded");
    if let Some(progress) = &options.progress {
        progress.start(plan.bitmap.count().saturating_mul(chunk_size).min(size));
    }
    // Reading before the advice is done would only race it for the same pages.
    let _ = advised.await;
    let bitmap = Arc::new(plan.bitmap.clone());
    let data = DataFeed::new(volume, bitmap, chunk_size, repo.hasher().clone());
    let uploads = options.upload_concurrency;
    let uploads = uploads.unwrap_or_else(|| repo.store().uploads_in_flight());
    let writer = ChunkWriter::new(repo, resumed, session_key.clone(), uploads);
    let progress = options.progress.clone();
    let builder = TreeBuilder::new(repo, &plan, parent, data, writer, progress);
    let id = hex::encode(&crate::crypto::random_key()[..8]);
    let built = builder.run(&id, &clock).await?;
    let commit = Commit {
        id,
        volume: options.volume,
        source: options.source,
        size,
        tags: options.tags,
        plan,
        resumed_chunks,
        session_key,
        progress: options.progress,
    };
    commit::commit(repo, &clock, commit, built).await
}

/// When a backup started, as its stages need it.
struct Clock {
    /// For the debug log's timings and the manifest's `seconds`.
    started: Instant,
    /// The manifest's and the session's `startedAt`.
    started_at: String,
    /// The store's counts before the backup, for the stats and the report.
    requests_before: crate::storage::RequestSnapshot,
}

impl Clock {
    fn start(repo: &Repository) -> Self {
        Clock {
            started: Instant::now(),
            started_at: crate::time_util::now_rfc3339(),
            requests_before: repo.store().counts(),
        }
    }

    /// Logs (at debug level) that `stage` ended, with the time since the start.
    fn log(&self, stage: &str) {
        tracing::debug!(
            "backup: {stage} after {:.3}s",
            self.started.elapsed().as_secs_f64()
        );
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
