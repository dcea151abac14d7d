//! Compact id-prefix sets for prune's marking, and a merge of sorted prefix lists.
//!
//! Prune identifies a chunk or tree page by the 64-bit prefix of its id ([`crate::gc::prefix`]).
//! A [`PrefixSet`] keeps the top 52 bits of each prefix in 4 bytes: the first
//! 20 bits pick a bucket in a table of 2^20 offsets (4 MiB, allocated on first use) and the next
//! 32 bits are stored, sorted within their bucket. An id whose prefix agrees with a member's in
//! those 52 bits tests as a member, so a set of live ids may call a dead id live (prune then
//! keeps it) but never calls a live id dead. With n members, another id collides with
//! probability n / 2^52 (2 in a billion for 10 million members).
//!
//! A set is built through a [`PrefixSetBuilder`], which buffers insertions and merges them into
//! the sorted keys in place whenever the buffer fills: building never holds more than the set,
//! its growth and the buffer (8 MiB), whatever the number of insertions of the same id. Only a
//! built set answers queries, so no query can miss an id still in the buffer.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A [`PrefixSet`] keeps the top `BUCKET_BITS + 32` (52) bits of a 64-bit prefix.
const BUCKET_BITS: u32 = 20;
/// Insertions buffered before they are merged into the set.
const BUFFER_KEYS: usize = 1 << 20;

/// A set of id prefixes, 4 bytes per member (plus a fixed 4 MiB table once non-empty).
#[derive(Debug, Default)]
pub(super) struct PrefixSet {
    bucket_bits: u32,
    /// `starts[b]..starts[b + 1]` is bucket `b` of `keys`; empty until the first member.
    starts: Vec<u32>,
    /// The low 32 bits of every member's key, sorted by (bucket, low bits).
    keys: Vec<u32>,
}

impl PrefixSet {
    fn with_bucket_bits(bucket_bits: u32) -> Self {
        PrefixSet {
            bucket_bits,
            starts: Vec::new(),
            keys: Vec::new(),
        }
    }

    /// The key of a prefix: its top `bucket_bits + 32` bits.
    fn key(&self, prefix: u64) -> u64 {
        prefix >> (32 - self.bucket_bits)
    }

    /// Number of distinct keys (ids whose prefixes differ in their top 52 bits).
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the set has no member.
    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// True when some member shares the top 52 bits of `prefix` (always, for a member).
    pub(super) fn contains(&self, prefix: u64) -> bool {
        self.contains_key(self.key(prefix))
    }

    /// The position of the member sharing the top 52 bits of `prefix` among all members
    /// (`0..len()`), if there is one: a slot for per-member flags.
    pub(super) fn position(&self, prefix: u64) -> Option<usize> {
        if self.keys.is_empty() {
            return None;
        }
        let key = self.key(prefix);
        let bucket = (key >> 32) as usize;
        let (start, end) = (
            self.starts[bucket] as usize,
            self.starts[bucket + 1] as usize,
        );
        self.keys[start..end]
            .binary_search(&(key as u32))
            .ok()
            .map(|i| start + i)
    }

    /// The key (top 52 bits) this set compares `prefix` by.
    pub(super) fn key_of(&self, prefix: u64) -> u64 {
        self.key(prefix)
    }

    fn contains_key(&self, key: u64) -> bool {
        if self.keys.is_empty() {
            return false;
        }
        let bucket = (key >> 32) as usize;
        let (start, end) = (
            self.starts[bucket] as usize,
            self.starts[bucket + 1] as usize,
        );
        self.keys[start..end].binary_search(&(key as u32)).is_ok()
    }

    /// Merges `new` (keys, ascending, none already a member) into the set, in place: the keys
    /// vector grows by exactly `new.len()` and is merged from its end.
    fn merge(&mut self, new: &[u64]) {
        if new.is_empty() {
            return;
        }
        let buckets = 1usize << self.bucket_bits;
        if self.starts.is_empty() {
            self.starts = vec![0; buckets + 1];
        }
        let old_len = self.keys.len();
        assert!(
            old_len + new.len() <= u32::MAX as usize,
            "a prefix set holds at most 2^32 - 1 keys"
        );
        self.keys.reserve_exact(new.len());
        self.keys.resize(old_len + new.len(), 0);
        let (mut i, mut j, mut k) = (old_len, new.len(), old_len + new.len());
        // The bucket of old key i - 1, found walking down the offsets.
        let mut bucket = buckets - 1;
        while j > 0 {
            let candidate = new[j - 1];
            if i > 0 {
                while self.starts[bucket] as usize > i - 1 {
                    bucket -= 1;
                }
                let old = ((bucket as u64) << 32) | u64::from(self.keys[i - 1]);
                if old > candidate {
                    self.keys[k - 1] = self.keys[i - 1];
                    i -= 1;
                    k -= 1;
                    continue;
                }
            }
            self.keys[k - 1] = candidate as u32;
            j -= 1;
            k -= 1;
        }
        // Old keys below position i did not move. Each bucket now starts later by the number of
        // new keys in the buckets before it.
        let mut before = 0usize;
        for (b, start) in self.starts.iter_mut().enumerate() {
            while before < new.len() && ((new[before] >> 32) as usize) < b {
                before += 1;
            }
            *start += before as u32;
        }
    }
}

/// Builds a [`PrefixSet`] with bounded memory.
#[derive(Debug)]
pub(super) struct PrefixSetBuilder {
    set: PrefixSet,
    buffer: Vec<u64>,
    buffer_limit: usize,
}

impl Default for PrefixSetBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PrefixSetBuilder {
    /// An empty builder.
    pub(super) fn new() -> Self {
        Self::with_params(BUCKET_BITS, BUFFER_KEYS)
    }

    /// A builder with `2^bucket_bits` buckets (keys of `bucket_bits + 32` bits) that merges
    /// every `buffer_limit` insertions (tests use small values to exercise both).
    fn with_params(bucket_bits: u32, buffer_limit: usize) -> Self {
        assert!((1..=30).contains(&bucket_bits) && buffer_limit > 0);
        PrefixSetBuilder {
            set: PrefixSet::with_bucket_bits(bucket_bits),
            buffer: Vec::new(),
            buffer_limit,
        }
    }

    /// Adds the prefix of an id.
    pub(super) fn insert(&mut self, prefix: u64) {
        if self.buffer.capacity() == 0 {
            self.buffer.reserve_exact(self.buffer_limit);
        }
        let key = self.set.key(prefix);
        self.buffer.push(key);
        if self.buffer.len() >= self.buffer_limit {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.sort_unstable();
        buffer.dedup();
        let set = &self.set;
        buffer.retain(|key| !set.contains_key(*key));
        self.set.merge(&buffer);
        buffer.clear();
        self.buffer = buffer;
    }

    /// The set of everything inserted.
    pub(super) fn build(mut self) -> PrefixSet {
        self.flush();
        self.set.keys.shrink_to_fit();
        self.set
    }
}

/// Merges ascending iterators of prefixes into one ascending iterator without repeats.
pub(super) struct MergeSorted<I: Iterator<Item = u64>> {
    sources: Vec<I>,
    heads: BinaryHeap<Reverse<(u64, usize)>>,
    last: Option<u64>,
}

impl<I: Iterator<Item = u64>> MergeSorted<I> {
    /// Merges `sources`, each ascending.
    pub(super) fn new(sources: impl IntoIterator<Item = I>) -> Self {
        let mut sources: Vec<I> = sources.into_iter().collect();
        let mut heads = BinaryHeap::with_capacity(sources.len());
        for (n, source) in sources.iter_mut().enumerate() {
            if let Some(v) = source.next() {
                heads.push(Reverse((v, n)));
            }
        }
        MergeSorted {
            sources,
            heads,
            last: None,
        }
    }
}

impl<I: Iterator<Item = u64>> Iterator for MergeSorted<I> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        loop {
            let Reverse((v, n)) = self.heads.pop()?;
            if let Some(next) = self.sources[n].next() {
                self.heads.push(Reverse((next, n)));
            }
            if self.last != Some(v) {
                self.last = Some(v);
                return Some(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A deterministic stream of pseudo-random 64-bit values (splitmix64).
    fn values(seed: u64, n: usize) -> Vec<u64> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            })
            .collect()
    }

    fn check_against_model(bucket_bits: u32, buffer: usize, inserted: &[u64], probes: &[u64]) {
        let mut builder = PrefixSetBuilder::with_params(bucket_bits, buffer);
        let shift = 32 - bucket_bits;
        let mut model = BTreeSet::new();
        for &p in inserted {
            builder.insert(p);
            model.insert(p >> shift);
        }
        let set = builder.build();
        assert_eq!(set.len(), model.len());
        for &p in inserted {
            assert!(set.contains(p), "a member must always be found: {p:#x}");
        }
        for &p in probes {
            assert_eq!(set.contains(p), model.contains(&(p >> shift)), "{p:#x}");
        }
        let mut keys: Vec<u64> = Vec::new();
        for b in 0..(1usize << bucket_bits) {
            for &low in &set.keys[set.starts[b] as usize..set.starts[b + 1] as usize] {
                keys.push(((b as u64) << 32) | u64::from(low));
            }
        }
        assert_eq!(
            keys,
            model.into_iter().collect::<Vec<_>>(),
            "sorted, one per key"
        );
    }

    #[test]
    fn finds_every_member_and_only_keys_inserted() {
        let mut inserted = values(1, 50_000);
        // Repeats, as marking pushes a chunk once per page that holds it.
        inserted.extend(values(1, 20_000));
        let probes = values(2, 50_000);
        check_against_model(20, 1 << 20, &inserted, &probes);
        // Small buffers merge many times; few buckets put many keys in each.
        check_against_model(20, 777, &inserted, &probes);
        check_against_model(3, 1000, &inserted, &probes);
        check_against_model(1, 1, &inserted[..3000], &probes[..3000]);
    }

    #[test]
    fn keys_land_in_the_first_and_last_buckets() {
        let inserted = [0, 1, u64::MAX, u64::MAX - (1 << 40), 1 << 63, (1 << 63) - 1];
        check_against_model(20, 2, &inserted, &[2 << 12, u64::MAX >> 1]);
        check_against_model(4, 1, &inserted, &[2 << 28, 5]);
    }

    #[test]
    fn prefixes_agreeing_in_52_bits_are_one_key() {
        let mut builder = PrefixSetBuilder::new();
        builder.insert(0xABCD_EF01_2345_6000);
        let set = builder.build();
        assert_eq!(BUCKET_BITS + 32, 52);
        assert!(
            set.contains(0xABCD_EF01_2345_6FFF),
            "differs below bit 12: kept as live"
        );
        assert!(!set.contains(0xABCD_EF01_2345_7000));
        assert!(!set.contains(0xABCD_EF01_2345_5FFF));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn an_empty_set_contains_nothing() {
        let set = PrefixSetBuilder::new().build();
        assert!(set.is_empty());
        assert!(!set.contains(0));
        assert!(!set.contains(u64::MAX));
        assert!(set.starts.is_empty(), "no table until the first member");
    }

    #[test]
    fn merge_sorted_merges_and_drops_repeats() {
        let a = vec![1u64, 4, 4, 9];
        let b = vec![2u64, 4, 10];
        let c: Vec<u64> = Vec::new();
        let d = vec![0u64, 9, u64::MAX];
        let merged: Vec<u64> =
            MergeSorted::new([a.into_iter(), b.into_iter(), c.into_iter(), d.into_iter()])
                .collect();
        assert_eq!(merged, vec![0, 1, 2, 4, 9, 10, u64::MAX]);
        assert_eq!(
            MergeSorted::new(Vec::<std::vec::IntoIter<u64>>::new()).count(),
            0
        );
        let mut big: Vec<Vec<u64>> = (0..7).map(|s| values(s, 1000)).collect();
        for list in &mut big {
            list.sort_unstable();
        }
        let mut model: Vec<u64> = big.iter().flatten().copied().collect();
        model.sort_unstable();
        model.dedup();
        let merged: Vec<u64> = MergeSorted::new(big.into_iter().map(Vec::into_iter)).collect();
        assert_eq!(merged, model);
    }
}
