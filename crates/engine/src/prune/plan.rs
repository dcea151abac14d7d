//! The plan: what a prune run will do, decided from the repository without writing anything
//! ([`PrunePlan::build`]). It reads the index, marks, counts each pack's use, chooses the packs
//! of this run's pending set (phase 1) and finds the pending sets ripe for a sweep (phase 2);
//! [`PrunePlan::select`] then names the packs the sweep deletes and repacks.
//!
//! A dry run reports the plan as it stands ([`PrunePlan::dry_run_report`]): it selects with no
//! re-marking, so it says what a sweep would remove if no backup committed meanwhile. A prune
//! selects only after its deletion marker is up and it has marked again (module `execute`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use super::housekeeping::consumed_sets;
use super::idset::{MergeSorted, PrefixSet};
use super::listing::Listing;
use super::mark::{Marker, ObjectsOfPack, TreeLocator};
use super::usage::PackUsage;
use super::{session_protect_seconds, PruneOptions, PruneReport};
use crate::error::{Error, Result};
use crate::gc::{self, PendingPack, PendingSet};
use crate::id::ChunkId;
use crate::repo::Repository;

/// What one prune run will do, and what it read to decide it.
pub(super) struct PrunePlan<'a> {
    pub(super) repo: &'a Repository,
    /// The grace period, in whole seconds (never negative).
    pub(super) grace: i64,
    pub(super) listing: Listing,
    /// The deletion markers that stay (after tidying, in a prune).
    pub(super) markers: Vec<String>,
    /// Tree locations and pack numbers, ready to mark again.
    pub(super) marker: Marker<'a>,
    pub(super) objects_of_pack: ObjectsOfPack,
    pub(super) usage: PackUsage,
    /// Phase 1: this run's pending set, when some pack qualifies.
    pub(super) pending: Option<NewPendingSet>,
    /// Pending sets that do not open. No marker names them, so no backup reads them: a prune
    /// deletes them, and this run's own set proposes their packs again.
    pub(super) damaged_pending: Vec<String>,
    /// Phase 2: the pending sets the sweep works from (none: no sweep).
    pub(super) ripe: RipeSets,
    /// The counts so far (listing, marking, phase 1).
    pub(super) report: PruneReport,
}

/// This run's pending set: the old packs that hold dead blobs.
pub(super) struct NewPendingSet {
    pub(super) key: String,
    pub(super) packs: Vec<PendingPack>,
    /// The same packs, by number.
    pub(super) numbers: HashSet<u32>,
    /// The backups this run marked from.
    pub(super) seen_backups: Vec<String>,
}

/// A pack the sweep deletes or repacks.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct PlannedPack {
    pub(super) name: ChunkId,
    pub(super) size: u64,
    /// Its number in this run's numbering of packs.
    pub(super) number: u32,
}

/// The packs one sweep removes, each list sorted by name.
pub(super) struct Selection {
    /// Packs with nothing live left: deleted whole.
    pub(super) delete: Vec<PlannedPack>,
    /// Packs with removable blobs (or second copies, or a damaged header) beside live ones:
    /// their live blobs are copied into new packs, then they are deleted.
    pub(super) repack: Vec<PlannedPack>,
}

impl<'a> PrunePlan<'a> {
    /// Plans a run from `listing` without writing anything. `markers` are the deletion
    /// markers that stay; `report` holds what was done before (housekeeping).
    pub(super) async fn build(
        repo: &'a Repository,
        options: &PruneOptions,
        listing: Listing,
        markers: Vec<String>,
        mut report: PruneReport,
    ) -> Result<PrunePlan<'a>> {
        let clock = Instant::now();
        let grace = options.grace.whole_seconds().max(0);
        report.packs = listing.packs.len();
        report.pack_bytes = listing.packs.values().map(|o| o.size).sum();
        let (locator, objects_of_pack) = TreeLocator::read(repo, &listing).await?;
        tracing::debug!(
            "prune: index read after {:.3}s",
            clock.elapsed().as_secs_f64()
        );
        let mut marker = Marker::new(repo, locator);
        let marked = marker
            .mark_listed(&listing, session_protect_seconds(grace))
            .await?;
        report.backups = marked.backups.len();
        report.chunks_marked = marked.marks.len();
        let damaged_headers = &mut report.damaged_pack_headers;
        let usage = PackUsage::count(
            repo,
            &listing,
            &mut marker.locator,
            marked.marks,
            grace,
            damaged_headers,
        )
        .await?;
        tracing::debug!(
            "prune: marked and counted after {:.3}s",
            clock.elapsed().as_secs_f64()
        );
        let mut plan = PrunePlan {
            repo,
            grace,
            listing,
            markers,
            marker,
            objects_of_pack,
            usage,
            pending: None,
            damaged_pending: Vec::new(),
            ripe: RipeSets::default(),
            report,
        };
        plan.choose_pending(options.max_unused, marked.backups);
        plan.find_ripe_sets().await?;
        Ok(plan)
    }

    /// Phase 1: the packs older than the grace that are wholly dead, more than `max_unused`
    /// unused, or damaged.
    fn choose_pending(&mut self, max_unused: f64, seen_backups: Vec<String>) {
        let cutoff = self.listing.started - self.grace;
        let mut packs: Vec<PendingPack> = Vec::new();
        let mut numbers: HashSet<u32> = HashSet::new();
        for (n, stat) in &self.usage.stats {
            let name = self.marker.locator.pack_names[*n as usize];
            // A pack with a damaged header is rewritten whatever it holds.
            let damaged = self.listing.damaged.contains(&name);
            if stat.dead == 0 && !damaged {
                continue;
            }
            let Some(info) = self.listing.packs.get(&name) else {
                continue;
            };
            if info.last_modified.unix_timestamp() > cutoff {
                continue;
            }
            let fully = stat.live_count == 0;
            let unused = stat.dead as f64 / stat.total.max(1) as f64;
            if !fully && unused <= max_unused && !damaged {
                continue;
            }
            packs.push(PendingPack {
                pack: name.to_hex(),
                size: info.size,
                repack: !fully,
                dead_bytes: stat.dead,
            });
            numbers.insert(*n);
        }
        packs.sort_by(|a, b| a.pack.cmp(&b.pack));
        self.report.pending_packs = packs.len();
        self.report.pending_dead_bytes = packs.iter().map(|p| p.dead_bytes).sum();
        if !packs.is_empty() {
            self.pending = Some(NewPendingSet {
                key: PendingSet::new_key(self.listing.started),
                packs,
                numbers,
                seen_backups,
            });
        }
    }

    /// Phase 2's input: the pending sets not consumed by a marker and at least one grace
    /// period old, this run's own among them when the grace is zero.
    async fn find_ripe_sets(&mut self) -> Result<()> {
        let consumed = consumed_sets(self.repo, &self.listing).await?;
        for key in &self.listing.pending {
            if consumed.contains(key) {
                continue;
            }
            let Some(created) = PendingSet::created_of(key) else {
                continue;
            };
            if created > gc::now_unix() - self.grace {
                self.report.pending_sets_waiting += 1;
                continue;
            }
            match PendingSet::read(self.repo, key).await {
                Ok(set) => self.ripe.add_older(key.clone(), set),
                Err(Error::Corrupt { reason, .. }) => {
                    tracing::warn!("{reason}; deleting the damaged pending set");
                    self.damaged_pending.push(key.clone());
                }
                Err(e) => return Err(e),
            }
        }
        self.ripe.older_dead.sort_unstable();
        self.ripe.older_dead.dedup();
        self.ripe.older_dead.shrink_to_fit();
        if let Some(own) = &self.pending {
            if self.listing.started <= gc::now_unix() - self.grace {
                self.ripe.add_own(
                    own.key.clone(),
                    own.packs.clone(),
                    own.numbers.clone(),
                    own.seen_backups.clone(),
                );
            } else {
                self.report.pending_sets_waiting += 1;
            }
        }
        Ok(())
    }

    /// The numbers of the packs the ripe sets name: the only packs a sweep may touch.
    pub(super) fn ripe_numbers(&self) -> HashSet<u32> {
        self.ripe
            .packs
            .keys()
            .filter_map(|hex| ChunkId::from_hex(hex))
            .filter_map(|name| self.marker.locator.pack_numbers.get(&name).copied())
            .collect()
    }

    /// The packs of the ripe sets the sweep deletes and repacks, with `fresh` the sweep's
    /// re-marking (empty in a dry run).
    pub(super) fn select(&self, fresh: &PrefixSet) -> Selection {
        let mut selection = Selection {
            delete: Vec::new(),
            repack: Vec::new(),
        };
        for p in self.ripe.packs.values() {
            let Some(name) = ChunkId::from_hex(&p.pack) else {
                continue;
            };
            let Some(info) = self.listing.packs.get(&name) else {
                continue;
            };
            let Some(n) = self.marker.locator.pack_numbers.get(&name).copied() else {
                continue;
            };
            let stat = self.usage.stats.get(&n).copied().unwrap_or_default();
            let dead_now = self.usage.dead_of.of(n);
            let copies = self.usage.duplicates.of(n);
            let removable = |p: &u64| self.ripe.removable(fresh, n, *p);
            let all_removable = dead_now.iter().all(removable);
            let any_removable = dead_now.iter().any(removable);
            let planned = PlannedPack {
                name,
                size: info.size,
                number: n,
            };
            if stat.live_count == 0 && all_removable && !(dead_now.is_empty() && copies.is_empty())
            {
                selection.delete.push(planned);
            } else if any_removable || !copies.is_empty() || self.listing.damaged.contains(&name) {
                selection.repack.push(planned);
            }
        }
        selection.delete.sort();
        selection.repack.sort();
        selection
    }

    /// Blobs dead in a ripe set that `fresh` (the sweep's re-marking) marks again: kept.
    pub(super) fn resurrected(&self, fresh: &PrefixSet) -> usize {
        if fresh.is_empty() {
            return 0;
        }
        let own = self
            .ripe
            .own_numbers
            .iter()
            .map(|n| self.usage.dead_of.of(*n));
        let lists = own.chain(std::iter::once(self.ripe.older_dead.as_slice()));
        MergeSorted::new(lists.map(|l| l.iter().copied()))
            .filter(|p| fresh.contains(*p))
            .count()
    }

    /// What a dry run reports: the plan's counts, and what its sweep would delete, repack and
    /// free if no backup committed before it.
    pub(super) fn dry_run_report(self) -> PruneReport {
        let mut report = self.report.clone();
        if self.ripe.keys.is_empty() {
            return report;
        }
        let selection = self.select(&PrefixSet::default());
        let dead_bytes = |p: &PlannedPack| self.usage.stats.get(&p.number).map_or(0, |s| s.dead);
        report.deleted_packs = selection.delete.len();
        report.repacked_packs = selection.repack.len();
        report.freed_bytes = selection.delete.iter().map(|p| p.size).sum::<u64>()
            + selection.repack.iter().map(dead_bytes).sum::<u64>();
        // The index objects that name a pack the sweep removes, as `execute` rewrites them.
        let objects: BTreeSet<u32> = selection
            .delete
            .iter()
            .chain(&selection.repack)
            .filter_map(|p| self.objects_of_pack.get(&p.number))
            .flatten()
            .copied()
            .collect();
        report.index_objects_rewritten = objects.len();
        report
    }
}

/// The pending sets one sweep works from.
#[derive(Default)]
pub(super) struct RipeSets {
    pub(super) keys: Vec<String>,
    /// Every pack of every set, by hex name (`repack` if any set says so).
    packs: HashMap<String, PendingPack>,
    /// The backups every set saw.
    pub(super) seen_by_all: Option<HashSet<String>>,
    /// The dead prefixes of the sets of earlier runs, sorted.
    older_dead: Vec<u64>,
    /// When this run's own set is ripe, its packs (by number): their dead prefixes in this
    /// run's marking are exactly that set's dead prefixes for them.
    own_numbers: HashSet<u32>,
}

impl RipeSets {
    fn add_packs(&mut self, key: String, packs: Vec<PendingPack>, seen: Vec<String>) {
        self.keys.push(key);
        for p in packs {
            self.packs
                .entry(p.pack.clone())
                .and_modify(|q| q.repack |= p.repack)
                .or_insert(p);
        }
        let seen: HashSet<String> = seen.into_iter().collect();
        self.seen_by_all = Some(match self.seen_by_all.take() {
            None => seen,
            Some(prev) => prev.intersection(&seen).cloned().collect(),
        });
    }

    fn add_older(&mut self, key: String, set: PendingSet) {
        self.older_dead.extend_from_slice(&set.dead);
        self.add_packs(key, set.packs, set.seen_backups);
    }

    fn add_own(
        &mut self,
        key: String,
        packs: Vec<PendingPack>,
        numbers: HashSet<u32>,
        seen: Vec<String>,
    ) {
        self.own_numbers = numbers;
        self.add_packs(key, packs, seen);
    }

    /// True when `prefix`, dead in pack `pack` in this run's marking, is dead in a ripe set.
    fn dead_in_a_set(&self, pack: u32, prefix: u64) -> bool {
        self.own_numbers.contains(&pack) || self.older_dead.binary_search(&prefix).is_ok()
    }

    /// True when `prefix`, dead in pack `pack` in this run's marking, may be removed: dead in
    /// a ripe set, dead now, and not in `fresh` (marked again by the sweep).
    pub(super) fn removable(&self, fresh: &PrefixSet, pack: u32, prefix: u64) -> bool {
        self.dead_in_a_set(pack, prefix) && !fresh.contains(prefix)
    }
}
