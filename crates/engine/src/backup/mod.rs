//! Backing up a volume: change source → slot bitmap → read and hash → deduplicate against the
//! parent → pack and upload → build the tree → commit the manifest.
//!
//! The stages live in their own files: `change.rs` (the change inputs, the [`ChangeTracker`]
//! door a change-tracking service comes through, the [`BackupNote`]s a backup returns),
//! `plan.rs` (parent and slot bitmap, and every fallback to a wider read), `read.rs` (slots
//! read and hashed ahead), `build.rs` (the tree builder, deduplication, packers, session
//! checkpoints); [`backup`] here runs them and commits, and [`unlock_and_backup`] starts what
//! can start before the repository is unlocked.
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
mod plan;
mod read;

use build::*;
use change::joined_notes;
pub use change::{BackupNote, ChangeInput, ChangeTracker, TrackedRanges};
use plan::*;
pub use read::prefetch_ranges;
use read::*;

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

    let Plan {
        parent,
        bitmap,
        change_source,
        cbt,
        notes,
    } = plan(
        repo,
        &options.volume,
        &options.parent,
        options.change,
        &volume,
        chunk_size,
    )
    .await?;
    let upload_concurrency = options
        .upload_concurrency
        .unwrap_or_else(|| repo.store().uploads_in_flight());
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
                Err(Error::Corrupt { reason, .. }) => {
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
            upload_concurrency,
        ),
        tree_packer: Packer::new(
            repo.clone(),
            BlobKind::Tree,
            repo.config().tree_pack_size as usize,
            upload_concurrency,
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
        cbt,
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
        notes,
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
