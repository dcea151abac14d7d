//! The slot bitmap: one bit per chunk slot, marking the slots a backup reads.
//!
//! Change sources (range lists, sparse-file extents, CBT streams) fold into it range by range,
//! so memory is one bit per slot whatever the number of ranges: 2 MiB for 1 TiB at 64 KiB.

/// One bit per slot of a volume.
#[derive(Debug, Clone)]
pub(crate) struct SlotBitmap {
    words: Vec<u64>,
    slots: u64,
    chunk_size: u64,
    volume_size: u64,
}

impl SlotBitmap {
    /// An empty bitmap for a volume of `volume_size` bytes cut in `chunk_size` slots.
    pub(crate) fn new(volume_size: u64, chunk_size: u64) -> Self {
        let slots = volume_size.div_ceil(chunk_size);
        SlotBitmap {
            words: vec![0; slots.div_ceil(64) as usize],
            slots,
            chunk_size,
            volume_size,
        }
    }

    /// Number of slots.
    pub(crate) fn slots(&self) -> u64 {
        self.slots
    }

    /// Marks every slot.
    pub(crate) fn mark_all(&mut self) {
        self.mark_slots(0, self.slots);
    }

    /// Marks the slots touched by `size` bytes at `offset`. The caller checks bounds; bytes past
    /// the volume end are ignored.
    pub(crate) fn mark_bytes(&mut self, offset: u64, size: u64) {
        if size == 0 || offset >= self.volume_size {
            return;
        }
        let end = offset.saturating_add(size).min(self.volume_size);
        let first = offset / self.chunk_size;
        let last = (end - 1) / self.chunk_size;
        self.mark_slots(first, last + 1);
    }

    /// Marks slots `start..end`.
    pub(crate) fn mark_slots(&mut self, start: u64, end: u64) {
        let end = end.min(self.slots);
        let mut slot = start;
        while slot < end {
            let word = (slot / 64) as usize;
            let bit = slot % 64;
            let span = (64 - bit).min(end - slot);
            let mask = if span == 64 {
                u64::MAX
            } else {
                ((1u64 << span) - 1) << bit
            };
            self.words[word] |= mask;
            slot += span;
        }
    }

    /// True when slot `slot` is marked.
    pub(crate) fn get(&self, slot: u64) -> bool {
        slot < self.slots && self.words[(slot / 64) as usize] & (1 << (slot % 64)) != 0
    }

    /// True when any slot in `start..end` is marked.
    pub(crate) fn any_in(&self, start: u64, end: u64) -> bool {
        let end = end.min(self.slots);
        let mut slot = start;
        while slot < end {
            let word = (slot / 64) as usize;
            let bit = slot % 64;
            let span = (64 - bit).min(end - slot);
            let mask = if span == 64 {
                u64::MAX
            } else {
                ((1u64 << span) - 1) << bit
            };
            if self.words[word] & mask != 0 {
                return true;
            }
            slot += span;
        }
        false
    }

    /// Number of marked slots.
    pub(crate) fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// The first marked slot at or after `from`.
    pub(crate) fn next_marked(&self, from: u64) -> Option<u64> {
        if from >= self.slots {
            return None;
        }
        let mut word = (from / 64) as usize;
        let mut bits = self.words[word] & (u64::MAX << (from % 64));
        loop {
            if bits != 0 {
                let slot = word as u64 * 64 + u64::from(bits.trailing_zeros());
                return (slot < self.slots).then_some(slot);
            }
            word += 1;
            if word >= self.words.len() {
                return None;
            }
            bits = self.words[word];
        }
    }

    /// Marked slots in ascending order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &word)| {
            let mut w = word;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros() as u64;
                w &= w - 1;
                Some(i as u64 * 64 + bit)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_slots_touched_by_byte_ranges() {
        let mut b = SlotBitmap::new(10 * 65536 + 100, 65536);
        assert_eq!(b.slots(), 11);
        b.mark_bytes(65535, 2); // touches slots 0 and 1
        b.mark_bytes(10 * 65536 + 50, 4096); // last, short slot; clipped at the end
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 1, 10]);
        assert!(b.any_in(2, 11));
        assert!(!b.any_in(2, 10));
        b.mark_all();
        assert_eq!(b.count(), 11);
    }

    #[test]
    fn word_boundaries() {
        let mut b = SlotBitmap::new(200 * 4096, 4096);
        b.mark_slots(60, 130);
        assert_eq!(b.count(), 70);
        assert!(!b.get(59) && b.get(60) && b.get(129) && !b.get(130));
        assert!(b.any_in(129, 131) && !b.any_in(130, 200) && !b.any_in(0, 60));
        assert_eq!(b.next_marked(0), Some(60));
        assert_eq!(b.next_marked(100), Some(100));
        assert_eq!(b.next_marked(130), None);
    }
}
