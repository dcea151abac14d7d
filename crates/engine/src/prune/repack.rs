//! Repacking, step 1 of a sweep: the live blobs of the packs being repacked are copied into
//! new packs (data and tree blobs apart, at the repository's pack sizes), which are uploaded
//! and indexed as they fill. Exactly the blobs whose prefixes a pack's removed list holds stay
//! behind. Blobs are read a few reads ahead of the one being copied (module `pack_reads`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;

use super::pack_reads::{self, CopyStep, PackToCopy};
use super::plan::PlannedPack;
use super::PruneReport;
use crate::error::{Error, Result};
use crate::gc::Lease;
use crate::id::ChunkId;
use crate::index;
use crate::pack::{self, BlobKind, PackBuilder, PackEntry};
use crate::repo::Repository;

/// Repacked packs per index object, and the most blobs one holds (packs of small,
/// well-compressed blobs hold 100,000 or more; their entries take 56 bytes each until written).
/// New packs are indexed every few packs, as backups do, so memory does not grow with the
/// number of blobs moved.
const PACKS_PER_INDEX: usize = 4;
const ENTRIES_PER_INDEX: usize = 1 << 16;

/// Where a repacked tree page went: its new pack, offset and length.
pub(super) type MovedPages = HashMap<ChunkId, (ChunkId, u64, u32)>;

/// What copying did.
pub(super) struct Copied {
    /// The packs whose live blobs were all copied (a pack gone meanwhile is not among them),
    /// with their sizes.
    pub(super) repacked: Vec<(ChunkId, u64)>,
    /// Where repacked tree pages went, for the tree tables (1/128 of the blobs or fewer).
    pub(super) moved_pages: MovedPages,
    /// Bytes of the new packs.
    pub(super) written_bytes: u64,
}

/// Copies the live blobs of `repack` (`to_copy`, in the same order) into new packs and
/// indexes them; counts new packs, repacked packs and damaged headers into `report`.
pub(super) async fn copy_live_blobs(
    repo: &Repository,
    repack: &[PlannedPack],
    to_copy: Vec<PackToCopy<'_>>,
    lease: &mut Lease,
    report: &mut PruneReport,
) -> Result<Copied> {
    let mut new_packs = NewPacks::default();
    let mut repacked: Vec<(ChunkId, u64)> = Vec::new();
    let mut steps = pack_reads::read_live_blobs(repo, to_copy);
    let mut gone: HashSet<usize> = HashSet::new();
    while let Some(step) = steps.next().await {
        lease.ensure(repo).await?;
        let step = step?;
        let (at, blobs, last) = match &step {
            CopyStep::Gone { pack } => {
                gone.insert(*pack);
                continue;
            }
            CopyStep::DamagedHeader { reason, .. } => {
                report.damaged_pack_headers.push(reason.clone());
                continue;
            }
            CopyStep::Blobs {
                pack, blobs, last, ..
            } => (*pack, blobs, *last),
        };
        if gone.contains(&at) {
            continue;
        }
        let planned = &repack[at];
        let key = pack::pack_key(&planned.name);
        for entry in blobs {
            new_packs.add(repo, entry, step.blob(entry, &key)?).await?;
        }
        if last {
            repacked.push((planned.name, planned.size));
        }
    }
    drop(steps);
    new_packs.finish(repo).await?;
    report.new_packs = new_packs.count;
    report.repacked_packs = repacked.len();
    Ok(Copied {
        repacked,
        moved_pages: new_packs.moved_pages,
        written_bytes: new_packs.written_bytes,
    })
}

/// The new packs being filled, uploaded and indexed.
#[derive(Default)]
struct NewPacks {
    /// One pack being filled per blob kind.
    builders: HashMap<u8, PackBuilder>,
    /// Uploaded packs not indexed yet.
    unindexed: Vec<(ChunkId, Vec<PackEntry>)>,
    count: usize,
    written_bytes: u64,
    moved_pages: MovedPages,
}

impl NewPacks {
    /// Adds one sealed blob; a pack that reaches its target size is uploaded, and indexed
    /// with the packs before it every few packs.
    async fn add(&mut self, repo: &Repository, entry: &PackEntry, blob: &[u8]) -> Result<()> {
        let target = match entry.kind {
            BlobKind::Data => repo.config().pack_size as usize,
            BlobKind::Tree => repo.config().tree_pack_size as usize,
        };
        let builder = self
            .builders
            .entry(entry.kind as u8)
            .or_insert_with(|| PackBuilder::new(entry.kind, target + target / 8));
        builder.add(entry.id, blob);
        if builder.len() < target {
            return Ok(());
        }
        if let Some(full) = self.builders.remove(&(entry.kind as u8)) {
            self.upload(repo, full).await?;
            let entries: usize = self.unindexed.iter().map(|(_, e)| e.len()).sum();
            if self.unindexed.len() >= PACKS_PER_INDEX || entries >= ENTRIES_PER_INDEX {
                index::write_index_object(repo, &self.unindexed).await?;
                self.unindexed.clear();
            }
        }
        Ok(())
    }

    /// Uploads the packs still being filled and indexes every pack not indexed yet.
    async fn finish(&mut self, repo: &Repository) -> Result<()> {
        let builders: Vec<PackBuilder> = self.builders.drain().map(|(_, b)| b).collect();
        for builder in builders {
            if !builder.is_empty() {
                self.upload(repo, builder).await?;
            }
        }
        if !self.unindexed.is_empty() {
            index::write_index_object(repo, &self.unindexed).await?;
        }
        self.unindexed = Vec::new();
        Ok(())
    }

    async fn upload(&mut self, repo: &Repository, builder: PackBuilder) -> Result<()> {
        let sealer = Arc::clone(repo.sealer());
        let finished = tokio::task::spawn_blocking(move || builder.finish(&sealer))
            .await
            .map_err(|e| Error::Internal(format!("pack task failed: {e}")))?;
        let size = finished.bytes.len() as u64;
        repo.store()
            .put(&finished.key(), finished.bytes.clone())
            .await?;
        for entry in finished.entries.iter().filter(|e| e.kind == BlobKind::Tree) {
            self.moved_pages
                .insert(entry.id, (finished.name, entry.offset, entry.length));
        }
        self.unindexed.push((finished.name, finished.entries));
        self.count += 1;
        self.written_bytes += size;
        Ok(())
    }
}
