//! The backup tree: pages of up to 128 ids, leaves holding slot ids, the root in the manifest.
//!
//! This module knows the tree's shape (how many levels, which slots a page covers) and a
//! page's encoding, without any I/O; `reader.rs` reads pages through the pack index with a
//! small cache of whole tree packs (reloading the index when a concurrent prune moved a page)
//! and walks a tree leaf by leaf. Building a tree is part of the backup (`backup/build.rs`),
//! which shares its parent's untouched subtrees.

mod reader;

pub use reader::{walk_leaves, PageReader};

use crate::error::{Error, Result};
use crate::id::ChunkId;

/// Ids per page.
pub(crate) const FANOUT: u64 = 128;
/// Bytes of a full page.
pub(crate) const PAGE_BYTES: usize = FANOUT as usize * 32;

/// The number of levels of the tree of a volume with `slots` slots.
pub(crate) fn depth_for(slots: u64) -> u32 {
    let mut pages = slots.div_ceil(FANOUT).max(1);
    let mut depth = 1;
    while pages > 1 {
        pages = pages.div_ceil(FANOUT);
        depth += 1;
    }
    depth
}

/// Slots covered by one entry of a page at `level` (0 = leaf page: one slot per entry).
pub(crate) fn slots_per_entry(level: u32) -> u64 {
    FANOUT.saturating_pow(level)
}

/// The slots `start..end` covered by page `index` at `level`.
pub(crate) fn page_span(level: u32, index: u64, slots: u64) -> (u64, u64) {
    let per_page = slots_per_entry(level + 1);
    let start = index.saturating_mul(per_page);
    (start.min(slots), start.saturating_add(per_page).min(slots))
}

/// Number of entries in page `index` at `level`.
pub fn page_entries(level: u32, index: u64, slots: u64) -> usize {
    let (start, end) = page_span(level, index, slots);
    (end - start).div_ceil(slots_per_entry(level)) as usize
}

/// Encodes a page's ids.
pub(crate) fn encode_page(ids: &[ChunkId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ids.len() * 32);
    for id in ids {
        out.extend_from_slice(&id.0);
    }
    out
}

/// Decodes a page that must hold `expected` ids.
pub(crate) fn decode_page(bytes: &[u8], expected: usize, id: &ChunkId) -> Result<Vec<ChunkId>> {
    if bytes.len() != expected * 32 {
        return Err(Error::corrupt(format!(
            "tree page {id} holds {} bytes, expected {} ids",
            bytes.len(),
            expected
        )));
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|raw| ChunkId::from_slice(raw).unwrap_or_default())
        .collect())
}

/// One leaf page's ids and the slot of its first entry.
#[derive(Debug)]
pub struct Leaf {
    /// The slot of the page's first entry.
    pub first_slot: u64,
    /// The page's chunk ids, one per slot ([`ChunkId::ZERO`] for a zero slot).
    pub ids: Vec<ChunkId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_shape() {
        assert_eq!(depth_for(1), 1);
        assert_eq!(depth_for(128), 1);
        assert_eq!(depth_for(129), 2);
        assert_eq!(depth_for(128 * 128), 2);
        assert_eq!(depth_for(128 * 128 + 1), 3);
        // 1 TiB at 64 KiB: 16 Mi slots -> 4 levels.
        assert_eq!(depth_for(1 << 24), 4);
        assert_eq!(page_entries(0, 0, 300), 128);
        assert_eq!(page_entries(0, 2, 300), 44);
        assert_eq!(page_entries(1, 0, 300), 3);
        assert_eq!(page_span(1, 0, 300), (0, 300));
        assert_eq!(page_span(0, 2, 300), (256, 300));
    }
}
