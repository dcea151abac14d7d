//! How much of each pack is in use: per pack, its bytes, its dead bytes and live blobs, the
//! prefixes of its dead ids ([`DeadPrefixes`]) and the second copies of live blobs it holds
//! (module `duplicates`), from streaming the index against the marks. Packs no index names
//! count as wholly dead once older than the grace and the upload floor; their ids come from
//! their own headers.

use std::collections::{HashMap, HashSet};

use super::duplicates::{find_duplicates, Duplicates, SeenTwice};
use super::idset::PrefixSet;
use super::listing::Listing;
use super::mark::TreeLocator;
use super::pack_reads;
use super::UPLOAD_PROTECT_FLOOR_SECONDS;
use crate::error::Result;
use crate::gc;
use crate::id::ChunkId;
use crate::index;
use crate::pack;
use crate::repo::Repository;

/// Per-pack counters from the index.
#[derive(Default, Clone, Copy)]
pub(super) struct PackStat {
    pub(super) total: u64,
    pub(super) dead: u64,
    pub(super) live_count: u64,
}

/// Every pack's use, by pack number.
pub(super) struct PackUsage {
    pub(super) stats: HashMap<u32, PackStat>,
    pub(super) dead_of: DeadPrefixes,
    pub(super) duplicates: Duplicates,
}

impl PackUsage {
    /// Counts every pack's use against `marks` (dropped once the counts are made: the sweep
    /// marks anew what it must). Packs that no index names and whose header does not open are
    /// left alone, with why in `damaged_headers`.
    pub(super) async fn count(
        repo: &Repository,
        listing: &Listing,
        locator: &mut TreeLocator,
        marks: PrefixSet,
        grace: i64,
        damaged_headers: &mut Vec<String>,
    ) -> Result<PackUsage> {
        let (mut usage, seen_twice) = count_indexed(repo, listing, locator, &marks).await?;
        let young_after = listing.started - grace;
        usage.duplicates =
            find_duplicates(repo, listing, locator, &marks, seen_twice, young_after).await?;
        for (n, (entries, bytes)) in &usage.duplicates.entries {
            if let Some(stat) = usage.stats.get_mut(n) {
                stat.live_count = stat.live_count.saturating_sub(*entries);
                stat.dead += bytes;
            }
        }
        drop(marks);
        usage
            .count_unindexed(repo, listing, locator, grace, damaged_headers)
            .await?;
        usage.dead_of.finish();
        Ok(usage)
    }

    /// Packs no index names: dead once old enough; their ids come from their headers.
    async fn count_unindexed(
        &mut self,
        repo: &Repository,
        listing: &Listing,
        locator: &mut TreeLocator,
        grace: i64,
        damaged_headers: &mut Vec<String>,
    ) -> Result<()> {
        let cutoff = listing.started - grace.max(UPLOAD_PROTECT_FLOOR_SECONDS);
        let mut unindexed: Vec<(ChunkId, u64)> = listing
            .packs
            .iter()
            .filter(|(name, info)| {
                !locator.pack_numbers.contains_key(*name)
                    && info.last_modified.unix_timestamp() <= cutoff
            })
            .map(|(name, info)| (*name, info.size))
            .collect();
        unindexed.sort();
        for (name, size) in &unindexed {
            let key = pack::pack_key(name);
            let entries = match pack_reads::read_header_from_end(repo, &key, *size).await {
                Ok(Some((entries, _))) => entries,
                Ok(None) => continue,
                Err(e) => {
                    // No index names it and its header does not open: nothing says what it
                    // holds.
                    let reason = format!("{e}; no index names it, so it is left in place");
                    tracing::warn!("{reason}");
                    damaged_headers.push(reason);
                    continue;
                }
            };
            let n = locator.pack_number(name);
            let stat = self.stats.entry(n).or_default();
            for entry in entries {
                stat.total += u64::from(entry.length);
                stat.dead += u64::from(entry.length);
                self.dead_of.push(n, gc::prefix(&entry.id));
            }
            // Anything marked stays counted dead here: the pack is unreachable through the
            // index.
        }
        Ok(())
    }

    /// Keeps the dead prefixes and second copies of `packs` only (the packs a sweep may
    /// touch).
    pub(super) fn keep_only(&mut self, packs: &HashSet<u32>) {
        self.dead_of.retain(packs);
        self.duplicates.of.retain(|n, _| packs.contains(n));
    }
}

/// Per-pack use, streaming the index: the dead prefixes of a pack are sorted and trimmed as
/// soon as the stream moves past it. Also returns the marked ids met more than once.
async fn count_indexed(
    repo: &Repository,
    listing: &Listing,
    locator: &mut TreeLocator,
    marks: &PrefixSet,
) -> Result<(PackUsage, Vec<u64>)> {
    let mut stats: HashMap<u32, PackStat> = HashMap::new();
    let mut dead_of = DeadPrefixes::default();
    let mut seen_twice = SeenTwice::new(marks);
    for key in &listing.index {
        index::read_index_entries(repo, key, |name, entry| {
            let n = locator.pack_number(name);
            let stat = stats.entry(n).or_default();
            stat.total += u64::from(entry.length);
            let p = gc::prefix(&entry.id);
            if let Some(position) = marks.position(p) {
                stat.live_count += 1;
                seen_twice.note(position, marks.key_of(p));
            } else {
                stat.dead += u64::from(entry.length);
                dead_of.push(n, p);
            }
        })
        .await?;
    }
    let usage = PackUsage {
        stats,
        dead_of,
        duplicates: Duplicates::default(),
    };
    Ok((usage, seen_twice.finish()))
}

/// The dead prefixes of each pack, sorted per pack once [`DeadPrefixes::finish`]ed.
#[derive(Default)]
pub(super) struct DeadPrefixes {
    of: HashMap<u32, Vec<u64>>,
    /// The pack the index stream is in: its list is still growing.
    current: Option<u32>,
}

impl DeadPrefixes {
    fn push(&mut self, pack: u32, prefix: u64) {
        if self.current != Some(pack) {
            if let Some(previous) = self.current {
                self.tidy(previous);
            }
            self.current = Some(pack);
        }
        self.of.entry(pack).or_default().push(prefix);
    }

    fn tidy(&mut self, pack: u32) {
        if let Some(list) = self.of.get_mut(&pack) {
            list.sort_unstable();
            list.dedup();
            list.shrink_to_fit();
        }
    }

    /// Sorts every list (a pack named by several index objects was added to more than once).
    fn finish(&mut self) {
        self.current = None;
        for list in self.of.values_mut() {
            list.sort_unstable();
            list.dedup();
            list.shrink_to_fit();
        }
    }

    /// The sorted dead prefixes of a pack.
    pub(super) fn of(&self, pack: u32) -> &[u64] {
        self.of.get(&pack).map(Vec::as_slice).unwrap_or(&[])
    }

    pub(super) fn take(&mut self, pack: u32) -> Vec<u64> {
        self.of.remove(&pack).unwrap_or_default()
    }

    fn retain(&mut self, packs: &HashSet<u32>) {
        self.of.retain(|n, _| packs.contains(n));
        self.of.shrink_to_fit();
    }
}
