//! Carrying out a [`PrunePlan`]: phase 1 writes this run's pending set; phase 2, when some
//! pending set is ripe, sweeps it.
//!
//! The sweep, in the order that keeps every backup whole (`docs/format.md`, "Garbage
//! collection"): the marker directory names a new deletion marker, and the marker goes up
//! before `backups/` is listed again; the sweep marks anew from the backups the pending sets
//! did not all see and from fresh sessions, and selects only then. Before anything goes, the
//! removed set records exactly which ids go (0); live blobs of partly dead packs are copied
//! into new packs, which are indexed (1, module `repack`); index objects naming removed packs
//! are rewritten and the tree tables pointed at the pages' new packs (2); only then are packs
//! deleted (3), and the marker is marked finished.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};

use super::duplicates::Duplicates;
use super::idset::{MergeSorted, PrefixSet};
use super::listing::{list_keys, Listing};
use super::mark::{ObjectsOfPack, TreeLocator};
use super::pack_reads::PackToCopy;
use super::plan::{PlannedPack, PrunePlan, RipeSets, Selection};
use super::repack::{self, MovedPages};
use super::usage::PackUsage;
use super::{session_protect_seconds, PruneReport};
use crate::error::{Error, Result};
use crate::gc::{self, DeletionMarker, Lease};
use crate::id::ChunkId;
use crate::index;
use crate::layout;
use crate::pack::{self, PackEntry};
use crate::repo::Repository;

/// Pack deletions in flight, and between two checks of the prune's lease.
const PARALLEL_DELETES: usize = 16;
const DELETES_PER_LEASE_CHECK: usize = 64;

/// Carries out `plan` under `lease`: writes its pending set and sweeps its ripe sets.
pub(super) async fn carry_out(mut plan: PrunePlan<'_>, lease: &mut Lease) -> Result<PruneReport> {
    write_pending_set(&plan).await?;
    if plan.ripe.keys.is_empty() {
        return Ok(plan.report);
    }
    // Only the packs the sweep may touch keep their dead prefixes.
    let ripe_numbers = plan.ripe_numbers();
    plan.usage.keep_only(&ripe_numbers);
    sweep(plan, lease).await
}

/// Phase 1: drops the pending sets that do not open and writes this run's.
async fn write_pending_set(plan: &PrunePlan<'_>) -> Result<()> {
    let repo = plan.repo;
    for key in &plan.damaged_pending {
        repo.store().delete(key).await?;
    }
    let Some(set) = &plan.pending else {
        return Ok(());
    };
    // The dead prefixes of the candidate packs, merged as they are written.
    let dead_of = &plan.usage.dead_of;
    let dead = MergeSorted::new(set.numbers.iter().map(|n| dead_of.of(*n).iter().copied()));
    let created = plan.listing.started;
    let sealed =
        gc::encode_pending_set(repo, &set.key, created, &set.seen_backups, &set.packs, dead)?;
    repo.store().put(&set.key, sealed).await?;
    Ok(())
}

/// Phase 2: marks again under a deletion marker, then removes what is still removable.
async fn sweep(mut plan: PrunePlan<'_>, lease: &mut Lease) -> Result<PruneReport> {
    let repo = plan.repo;
    let mut deletion = Deletion::begin(&plan, lease).await?;
    let fresh = mark_again(&mut plan, &mut deletion).await?;
    plan.report.resurrected = plan.resurrected(&fresh);
    let selection = plan.select(&fresh);
    let PrunePlan {
        listing,
        marker,
        objects_of_pack,
        usage,
        ripe,
        mut report,
        ..
    } = plan;
    // 0. Record exactly which ids go, before anything goes.
    let removed_of = record_removed(
        repo,
        &selection,
        usage,
        &ripe,
        fresh,
        &mut deletion,
        &mut report,
    )
    .await?;
    let read = WhatWasRead {
        listing: &listing,
        locator: &marker.locator,
        objects_of_pack: &objects_of_pack,
    };
    remove(repo, read, &selection, removed_of, lease, &mut report).await?;
    deletion.finish(repo).await?;
    Ok(report)
}

/// What the plan read that the steps after the selection need.
#[derive(Clone, Copy)]
struct WhatWasRead<'p> {
    listing: &'p Listing,
    locator: &'p TreeLocator,
    objects_of_pack: &'p ObjectsOfPack,
}

/// Steps 1 to 3 of a sweep: copies live blobs, rewrites the index and the tree tables, and
/// only then deletes packs. `removed_of` holds, per pack to repack, the prefixes that stay
/// behind.
async fn remove(
    repo: &Repository,
    read: WhatWasRead<'_>,
    selection: &Selection,
    removed_of: HashMap<u32, Vec<u64>>,
    lease: &mut Lease,
    report: &mut PruneReport,
) -> Result<()> {
    let clock = Instant::now();
    // 1. Copy the live blobs of partly dead packs into new packs, and index them.
    let to_copy = packs_to_copy(read, &selection.repack, &removed_of);
    let copied = repack::copy_live_blobs(repo, &selection.repack, to_copy, lease, report).await?;
    drop(removed_of);
    debug_step("live blobs copied", &clock);

    // 2. Rewrite the index objects that name a removed pack, and the tree tables.
    let doomed: Vec<(ChunkId, u64)> = selection
        .delete
        .iter()
        .map(|p| (p.name, p.size))
        .chain(copied.repacked.iter().copied())
        .collect();
    let removed: HashSet<ChunkId> = doomed.iter().map(|(name, _)| *name).collect();
    let objects = objects_naming(read, &removed);
    rewrite_index_objects(repo, read.listing, objects, &removed, lease, report).await?;
    lease.ensure(repo).await?;
    rewrite_tree_tables(repo, read.listing, &removed, &copied.moved_pages).await?;
    drop(copied.moved_pages);
    debug_step("index rewritten", &clock);

    // 3. Only now delete packs: nothing in the index names them any more.
    let freed = delete_packs(repo, read.listing, &doomed, lease).await?;
    report.deleted_packs = selection.delete.len();
    report.freed_bytes = freed.saturating_sub(copied.written_bytes);
    debug_step("packs deleted", &clock);
    Ok(())
}

/// Marks anew, under the deletion marker, from the backups the ripe sets did not all see and
/// from fresh sessions, listed now. A backup that cannot be read stops the sweep before it
/// deletes anything, its marker finished.
async fn mark_again(plan: &mut PrunePlan<'_>, deletion: &mut Deletion) -> Result<PrefixSet> {
    let repo = plan.repo;
    let seen_by_all = plan.ripe.seen_by_all.clone().unwrap_or_default();
    let ids: Vec<String> = list_keys(repo, layout::BACKUPS)
        .await?
        .into_iter()
        .filter_map(|k| k.strip_prefix(layout::BACKUPS).map(str::to_string))
        .filter(|id| !seen_by_all.contains(id))
        .collect();
    let sessions = list_keys(repo, layout::SESSIONS).await?;
    let protect = session_protect_seconds(plan.grace);
    match plan.marker.mark_again(&ids, &sessions, protect).await {
        Ok(fresh) => Ok(fresh),
        Err(e) => {
            deletion.finish(repo).await?;
            Err(Error::corrupt(format!(
                "prune stopped before deleting anything: a backup committed meanwhile \
                 cannot be read ({e})"
            )))
        }
    }
}

fn debug_step(step: &str, clock: &Instant) {
    tracing::debug!(
        "prune sweep: {step} after {:.3}s",
        clock.elapsed().as_secs_f64()
    );
}

/// This sweep's deletion marker, under its key.
struct Deletion {
    key: String,
    marker: DeletionMarker,
}

impl Deletion {
    /// Puts the marker up, for the plan's ripe sets: the marker directory names it before it
    /// exists (see `gc::write_marker_directory`); backups committing after this read it.
    async fn begin(plan: &PrunePlan<'_>, lease: &mut Lease) -> Result<Deletion> {
        let deletion = Deletion {
            key: DeletionMarker::new_key(gc::now_unix()),
            marker: DeletionMarker {
                pending: plan.ripe.keys.clone(),
                began: gc::now_unix(),
                finished: None,
                removed: None,
            },
        };
        lease.ensure(plan.repo).await?;
        let mut named = plan.markers.clone();
        named.push(deletion.key.clone());
        gc::write_marker_directory(plan.repo, &named).await?;
        deletion.marker.write(plan.repo, &deletion.key).await?;
        Ok(deletion)
    }

    /// Marks the sweep finished.
    async fn finish(&mut self, repo: &Repository) -> Result<()> {
        self.marker.finished = Some(gc::now_unix());
        self.marker.write(repo, &self.key).await
    }
}

/// Step 0: records exactly which ids go, before anything goes — per pack to delete or repack,
/// its dead prefixes that are removable (dead in a ripe set and not in the sweep's `fresh`
/// marks) — as the removed set the marker names. Returns, per pack to repack, the prefixes of
/// the blobs that stay behind: its removed ids and its second copies of live ids (deleted
/// packs go whole).
async fn record_removed(
    repo: &Repository,
    selection: &Selection,
    usage: PackUsage,
    ripe: &RipeSets,
    fresh: PrefixSet,
    deletion: &mut Deletion,
    report: &mut PruneReport,
) -> Result<HashMap<u32, Vec<u64>>> {
    let PackUsage {
        mut dead_of,
        duplicates,
        ..
    } = usage;
    let mut removed_of: HashMap<u32, Vec<u64>> = HashMap::new();
    for p in selection.delete.iter().chain(selection.repack.iter()) {
        let mut list = dead_of.take(p.number);
        list.retain(|prefix| ripe.removable(&fresh, p.number, *prefix));
        list.shrink_to_fit();
        removed_of.insert(p.number, list);
    }
    drop(dead_of);
    drop(fresh);
    let removed_key = layout::removed_key_of_marker(&deletion.key);
    let removed_ids = MergeSorted::new(removed_of.values().map(|l| l.iter().copied()));
    let began = deletion.marker.began;
    let sealed = gc::encode_pending_set(repo, &removed_key, began, &[], &[], removed_ids)?;
    repo.store().put(&removed_key, sealed).await?;
    deletion.marker.removed = Some(removed_key);
    deletion.marker.write(repo, &deletion.key).await?;
    // Deleted packs go whole; only repacked ones are filtered blob by blob, leaving
    // behind their removed ids and their second copies of live ids.
    for p in &selection.delete {
        removed_of.remove(&p.number);
    }
    report.copies_dropped = add_copies(selection, &duplicates, &mut removed_of);
    Ok(removed_of)
}

/// Adds the second copies of live blobs in the packs to repack to what stays behind of them;
/// returns how many copies the sweep drops.
fn add_copies(
    selection: &Selection,
    duplicates: &Duplicates,
    removed_of: &mut HashMap<u32, Vec<u64>>,
) -> usize {
    let dropped = selection
        .delete
        .iter()
        .chain(selection.repack.iter())
        .map(|p| duplicates.of(p.number).len())
        .sum();
    for p in &selection.repack {
        let copies = duplicates.of(p.number);
        if !copies.is_empty() {
            let list = removed_of.entry(p.number).or_default();
            list.extend_from_slice(copies);
            list.sort_unstable();
            list.dedup();
        }
    }
    dropped
}

/// What step 1 reads: each pack to repack, the prefixes that stay behind and the index
/// objects that name it.
fn packs_to_copy<'r>(
    read: WhatWasRead<'_>,
    repack: &[PlannedPack],
    removed_of: &'r HashMap<u32, Vec<u64>>,
) -> Vec<PackToCopy<'r>> {
    repack
        .iter()
        .map(|p| PackToCopy {
            name: p.name,
            size: p.size,
            removed: removed_of.get(&p.number).map(Vec::as_slice).unwrap_or(&[]),
            index_objects: read
                .objects_of_pack
                .get(&p.number)
                .into_iter()
                .flatten()
                .map(|o| read.listing.index[*o as usize].clone())
                .collect(),
        })
        .collect()
}

/// The index objects (by position in the listing) that name a pack of `removed`.
fn objects_naming(read: WhatWasRead<'_>, removed: &HashSet<ChunkId>) -> BTreeSet<u32> {
    let mut objects: BTreeSet<u32> = BTreeSet::new();
    for name in removed {
        if let Some(n) = read.locator.pack_numbers.get(name) {
            if let Some(list) = read.objects_of_pack.get(n) {
                objects.extend(list.iter().copied());
            }
        }
    }
    objects
}

/// Step 2: rewrites each of `objects` without the packs of `removed` (deleting it when
/// nothing stays); an object gone meanwhile is skipped.
async fn rewrite_index_objects(
    repo: &Repository,
    listing: &Listing,
    objects: BTreeSet<u32>,
    removed: &HashSet<ChunkId>,
    lease: &mut Lease,
    report: &mut PruneReport,
) -> Result<()> {
    for object_no in objects {
        lease.ensure(repo).await?;
        let key = &listing.index[object_no as usize];
        let mut kept: Vec<(ChunkId, Vec<PackEntry>)> = Vec::new();
        let read = index::read_index_entries(repo, key, |name, entry| {
            if removed.contains(name) {
                return;
            }
            match kept.last_mut() {
                Some((last, entries)) if last == name => entries.push(entry),
                _ => kept.push((*name, vec![entry])),
            }
        })
        .await;
        match read {
            Ok(()) => {}
            Err(Error::Store(e)) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        }
        if !kept.is_empty() {
            index::write_index_object(repo, &kept).await?;
        }
        repo.store().delete(key).await?;
        report.index_objects_rewritten += 1;
    }
    Ok(())
}

/// Points the tree tables that name a removed pack at the pages' new packs, so the next
/// incremental of each volume still needs no pack index. A page in no new pack (it was
/// dead) is dropped from the table. Tables written after this run's listing are not
/// visited: a stale entry only sends a backup to the pack index.
async fn rewrite_tree_tables(
    repo: &Repository,
    listing: &Listing,
    removed: &HashSet<ChunkId>,
    moved_pages: &MovedPages,
) -> Result<()> {
    for (backup_id, _) in &listing.tree_tables {
        let Some(mut table) = crate::tree_table::TreeTable::read(repo, backup_id).await? else {
            continue;
        };
        if !table.pages.iter().any(|p| removed.contains(&p.pack)) {
            continue;
        }
        table.pages.retain_mut(|page| {
            if !removed.contains(&page.pack) {
                return true;
            }
            match moved_pages.get(&page.id) {
                Some(&(pack, offset, length)) => {
                    (page.pack, page.offset, page.length) = (pack, offset, length);
                    true
                }
                None => false,
            }
        });
        table.write(repo, backup_id).await?;
    }
    Ok(())
}

/// Step 3: deletes the `doomed` packs, checking the lease between batches, and the records
/// of the damaged ones among them. Returns the bytes deleted.
async fn delete_packs(
    repo: &Repository,
    listing: &Listing,
    doomed: &[(ChunkId, u64)],
    lease: &mut Lease,
) -> Result<u64> {
    let mut freed = 0u64;
    for batch in doomed.chunks(DELETES_PER_LEASE_CHECK) {
        lease.ensure(repo).await?;
        futures::stream::iter(batch)
            .map(|(name, _)| async move { repo.store().delete(&pack::pack_key(name)).await })
            .buffer_unordered(PARALLEL_DELETES)
            .try_collect::<Vec<()>>()
            .await?;
        freed += batch.iter().map(|(_, size)| size).sum::<u64>();
    }
    for (name, _) in doomed.iter().filter(|(n, _)| listing.damaged.contains(n)) {
        let record = crate::quarantine::damaged_pack_key(name);
        repo.store().delete(&record).await?;
    }
    Ok(freed)
}
