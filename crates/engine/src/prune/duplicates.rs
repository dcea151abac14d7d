//! Second copies of live blobs: which index entries name a live id that another entry names
//! too, and which copy of each such id prune keeps.
//!
//! Backups without a parent (`--parent none`, a new volume holding data another volume holds,
//! a rerun after a crash that lost its session) and prunes killed after copying store live
//! blobs again. Marking alone calls every copy live; here, while the index is streamed for the
//! per-pack counts, one flag per marked id (1 bit each) finds the ids met a second time
//! ([`SeenTwice`]). Their top 52 bits are only candidates (distinct ids may share them), so a
//! third stream of the index collects the entries of just those candidates, with their full
//! ids, and [`choose`] keeps one copy of each id and drops the others, exactly.
//!
//! A dropped copy is not a removed id: the id stays in the repository, in the kept copy, so it
//! does not go into pending or removed sets and no backup is withdrawn for it. The kept copy
//! is in a pack that exists; it is never dropped, and its pack is never deleted by the same
//! sweep (it holds a live blob), so the index keeps naming it.

use std::collections::HashMap;

use crate::error::Result;
use crate::gc;
use crate::id::ChunkId;
use crate::index;
use crate::repo::Repository;

use super::idset::PrefixSet;
use super::listing::Listing;
use super::mark::TreeLocator;

/// Finds the marked ids that more than one index entry names.
pub(super) struct SeenTwice {
    seen: Vec<u64>,
    candidates: Vec<u64>,
}

impl SeenTwice {
    /// One flag per member of `marks`.
    pub(super) fn new(marks: &PrefixSet) -> Self {
        SeenTwice {
            seen: vec![0; marks.len().div_ceil(64)],
            candidates: Vec::new(),
        }
    }

    /// Notes an index entry of the member at `position` (whose key is `key`).
    pub(super) fn note(&mut self, position: usize, key: u64) {
        let (word, bit) = (position / 64, 1u64 << (position % 64));
        if let Some(flags) = self.seen.get_mut(word) {
            if *flags & bit != 0 {
                self.candidates.push(key);
            }
            *flags |= bit;
        }
    }

    /// The keys (top 52 bits) named more than once, sorted.
    pub(super) fn finish(self) -> Vec<u64> {
        let mut keys = self.candidates;
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

/// One index entry of a candidate id.
#[derive(Debug, Clone, Copy)]
pub(super) struct BlobCopy {
    pub id: ChunkId,
    /// Pack number (prune's numbering).
    pub pack: u32,
    pub offset: u64,
    pub length: u32,
}

/// The copies to drop.
#[derive(Debug, Default)]
pub(super) struct Duplicates {
    /// Per pack, the sorted 64-bit prefixes of the copies to drop from it.
    pub of: HashMap<u32, Vec<u64>>,
    /// Per pack, the index entries and bytes those copies account for.
    pub entries: HashMap<u32, (u64, u64)>,
}

impl Duplicates {
    /// The sorted prefixes to drop from pack `n`.
    pub(super) fn of(&self, n: u32) -> &[u64] {
        self.of.get(&n).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Keeps one copy of each id named in several packs: among the copies `rank` accepts (their
/// pack exists and holds them), the one of lowest rank. A copy is dropped only where every
/// entry of its pack with the same 64-bit prefix is a dropped copy (pack contents are
/// filtered by prefix).
pub(super) fn choose<K: Ord>(
    mut copies: Vec<BlobCopy>,
    rank: impl Fn(&BlobCopy) -> Option<K>,
) -> Duplicates {
    copies.sort_unstable_by_key(|c| (c.id, c.pack, c.offset));
    // Per (pack, prefix): whether every entry is droppable, the entries and their bytes.
    let mut verdicts: HashMap<(u32, u64), (bool, u64, u64)> = HashMap::new();
    for group in copies.chunk_by(|a, b| a.id == b.id) {
        let keeper = group
            .iter()
            .filter_map(|c| rank(c).map(|k| (k, c.pack)))
            .min_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, pack)| pack);
        for copy in group {
            let droppable = keeper.is_some_and(|k| k != copy.pack);
            let verdict = verdicts
                .entry((copy.pack, gc::prefix(&copy.id)))
                .or_insert((true, 0, 0));
            verdict.0 &= droppable;
            verdict.1 += 1;
            verdict.2 += u64::from(copy.length);
        }
    }
    let mut out = Duplicates::default();
    for ((pack, prefix), (droppable, count, bytes)) in verdicts {
        if droppable {
            out.of.entry(pack).or_default().push(prefix);
            let entries = out.entries.entry(pack).or_default();
            entries.0 += count;
            entries.1 += bytes;
        }
    }
    for list in out.of.values_mut() {
        list.sort_unstable();
    }
    out
}

/// The second copies of live blobs to drop (module `duplicates`): the entries of the ids
/// `candidates` (keys of `marks`) collected from a third stream of the index, one copy of each
/// id kept. A copy in a pack younger than `young_after` (which this run does not touch) is
/// kept first; then the copy in the pack of lowest name, so that packs holding the same
/// blobs lose them whole.
pub(super) async fn find_duplicates(
    repo: &Repository,
    listing: &Listing,
    locator: &mut TreeLocator,
    marks: &PrefixSet,
    candidates: Vec<u64>,
    young_after: i64,
) -> Result<Duplicates> {
    if candidates.is_empty() {
        return Ok(Duplicates::default());
    }
    let mut copies: Vec<BlobCopy> = Vec::new();
    for key in &listing.index {
        index::read_index_entries(repo, key, |name, entry| {
            let key = marks.key_of(gc::prefix(&entry.id));
            if candidates.binary_search(&key).is_ok() {
                copies.push(BlobCopy {
                    id: entry.id,
                    pack: locator.pack_number(name),
                    offset: entry.offset,
                    length: entry.length,
                });
            }
        })
        .await?;
    }
    let names = &locator.pack_names;
    Ok(choose(copies, |copy| {
        let name = names[copy.pack as usize];
        let info = listing.packs.get(&name)?;
        let holds = copy.offset + u64::from(copy.length) <= info.size;
        let young = info.last_modified.unix_timestamp() > young_after;
        holds.then_some((!young, name))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(id: u8, pack: u32) -> BlobCopy {
        BlobCopy {
            id: ChunkId([id; 32]),
            pack,
            offset: 0,
            length: 10,
        }
    }

    #[test]
    fn one_copy_of_each_id_is_kept_in_the_best_ranked_pack() {
        let copies = vec![copy(1, 5), copy(1, 3), copy(1, 9), copy(2, 9), copy(3, 4)];
        let dups = choose(copies, |c| Some(c.pack));
        assert_eq!(dups.of(3), &[] as &[u64]);
        assert_eq!(dups.of(5), &[crate::gc::prefix(&ChunkId([1; 32]))]);
        assert_eq!(dups.of(9), &[crate::gc::prefix(&ChunkId([1; 32]))]);
        assert_eq!(dups.entries[&9], (1, 10));
        assert!(dups.of(4).is_empty(), "a single copy stays");
    }

    #[test]
    fn no_copy_is_dropped_without_a_usable_keeper_or_when_a_prefix_is_shared() {
        // Pack 3 cannot keep (say it is missing): pack 5 keeps.
        let dups = choose(vec![copy(1, 3), copy(1, 5)], |c| {
            (c.pack != 3).then_some(c.pack)
        });
        assert!(dups.of(5).is_empty() && !dups.of(3).is_empty());
        // No usable copy: nothing is dropped.
        let dups = choose(vec![copy(1, 3), copy(1, 5)], |_| None::<u32>);
        assert!(dups.of.is_empty());
        // Id b shares id a's 64-bit prefix; pack 7 holds a dropped copy of a and the only
        // copy of b: filtering by prefix would drop b, so a's copy stays too.
        let a = copy(1, 7);
        let mut b = copy(1, 7);
        b.id.0[31] = 2;
        let dups = choose(vec![a, b, copy(1, 2)], |c| Some(c.pack));
        assert!(dups.of(7).is_empty());
    }

    #[test]
    fn a_pack_named_twice_is_one_copy() {
        let dups = choose(vec![copy(1, 4), copy(1, 4)], |c| Some(c.pack));
        assert!(dups.of.is_empty());
    }
}
