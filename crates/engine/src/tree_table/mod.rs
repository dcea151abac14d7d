//! Tree tables: where every stored page of one backup's tree is, so that the next incremental
//! of the volume reads its parent's tree without listing and loading the pack index.
//!
//! `trees/<backup id>` is written by a backup before its manifest. It lists, for each non-zero
//! page of the tree, its position (level, index), its id and its location (pack, offset,
//! length). The next backup builds its starting index from the parent's table, and composes its
//! own table from the parent's entries for the subtrees it inherits (positions whose span holds
//! no changed slot) and the pages it wrote.
//!
//! A table is a hint, never trusted for content: pages are still read by id and hash-checked.
//! A location that a prune made stale (the pack was repacked and deleted) sends the reader to
//! the full pack index, as does a missing table (backups made before tables existed); the new
//! table then takes the fresh locations. Tables of forgotten backups are deleted by `forget`,
//! and orphans by `prune`.
//!
//! This module is the table and its encoding, without I/O; `stored.rs` reads and writes it.

mod stored;

use crate::id::ChunkId;
use crate::index::PackIndex;
use crate::pack::{BlobKind, PackEntry};

/// Bytes of one entry: level (1), index (8), id (32), pack number (4), offset (8), length (4).
const ENTRY_BYTES: usize = 1 + 8 + 32 + 4 + 8 + 4;

/// The object key of a backup's tree table.
pub fn key(backup_id: &str) -> String {
    crate::layout::tree_table_key(backup_id)
}

/// One stored page of a tree: where it sits in the tree and where it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TablePage {
    /// The page's level in the tree (0 for leaves).
    pub level: u8,
    /// The page's position within its level.
    pub index: u64,
    /// The page's id.
    pub id: ChunkId,
    /// The pack holding it.
    pub pack: ChunkId,
    /// Byte offset of the sealed page in the pack.
    pub offset: u64,
    /// Length of the sealed page.
    pub length: u32,
}

/// The stored pages of one backup's tree.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TreeTable {
    /// Every stored page, in tree order.
    pub pages: Vec<TablePage>,
}

impl TreeTable {
    /// The pages' locations as a pack index of tree pages.
    pub(crate) fn to_index(&self) -> PackIndex {
        let mut index = PackIndex::default();
        for page in &self.pages {
            index.insert(
                &page.pack,
                PackEntry {
                    id: page.id,
                    kind: BlobKind::Tree,
                    offset: page.offset,
                    length: page.length,
                },
            );
        }
        index
    }

    /// `pack names` then entries; pack names are stored once and referred to by number.
    fn encode(&self) -> Vec<u8> {
        let mut packs: Vec<ChunkId> = self.pages.iter().map(|p| p.pack).collect();
        packs.sort_unstable();
        packs.dedup();
        let mut out = Vec::with_capacity(8 + packs.len() * 32 + self.pages.len() * ENTRY_BYTES);
        out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
        for pack in &packs {
            out.extend_from_slice(&pack.0);
        }
        out.extend_from_slice(&(self.pages.len() as u32).to_le_bytes());
        for page in &self.pages {
            let number = packs.binary_search(&page.pack).unwrap_or_default() as u32;
            out.push(page.level);
            out.extend_from_slice(&page.index.to_le_bytes());
            out.extend_from_slice(&page.id.0);
            out.extend_from_slice(&number.to_le_bytes());
            out.extend_from_slice(&page.offset.to_le_bytes());
            out.extend_from_slice(&page.length.to_le_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> std::result::Result<TreeTable, String> {
        let mut reader = Reader { bytes, at: 0 };
        let pack_count = reader.u32()? as usize;
        let mut packs = Vec::with_capacity(pack_count.min(bytes.len() / 32));
        for _ in 0..pack_count {
            packs.push(reader.id()?);
        }
        let page_count = reader.u32()? as usize;
        let mut pages = Vec::with_capacity(page_count.min(bytes.len() / ENTRY_BYTES));
        for _ in 0..page_count {
            let level = reader.take(1)?[0];
            let index = reader.u64()?;
            let id = reader.id()?;
            let number = reader.u32()? as usize;
            let pack = *packs
                .get(number)
                .ok_or_else(|| format!("entry names pack {number} of {pack_count}"))?;
            let offset = reader.u64()?;
            let length = reader.u32()?;
            pages.push(TablePage {
                level,
                index,
                id,
                pack,
                offset,
                length,
            });
        }
        if reader.at != bytes.len() {
            return Err(format!(
                "{} bytes after the last entry",
                bytes.len() - reader.at
            ));
        }
        Ok(TreeTable { pages })
    }
}

/// Reads fixed-size little-endian fields, failing on a short input.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], String> {
        let end = self.at + n;
        let out = self
            .bytes
            .get(self.at..end)
            .ok_or_else(|| "the table is truncated".to_string())?;
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        let raw = self.take(4)?;
        Ok(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        let raw = self.take(8)?;
        let mut out = [0u8; 8];
        out.copy_from_slice(raw);
        Ok(u64::from_le_bytes(out))
    }

    fn id(&mut self) -> std::result::Result<ChunkId, String> {
        let raw = self.take(32)?;
        ChunkId::from_slice(raw).ok_or_else(|| "bad id".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    fn sample() -> TreeTable {
        TreeTable {
            pages: vec![
                TablePage {
                    level: 1,
                    index: 0,
                    id: id(1),
                    pack: id(200),
                    offset: 0,
                    length: 4136,
                },
                TablePage {
                    level: 0,
                    index: 77,
                    id: id(2),
                    pack: id(100),
                    offset: 4136,
                    length: 4100,
                },
                TablePage {
                    level: 0,
                    index: u64::MAX / 3,
                    id: id(3),
                    pack: id(200),
                    offset: u64::from(u32::MAX) + 5,
                    length: 9,
                },
            ],
        }
    }

    #[test]
    fn a_table_decodes_to_what_was_encoded() {
        let table = sample();
        assert_eq!(TreeTable::decode(&table.encode()), Ok(table));
        assert_eq!(
            TreeTable::decode(&TreeTable::default().encode()),
            Ok(TreeTable::default())
        );
    }

    #[test]
    fn a_truncated_or_padded_table_is_refused() {
        let bytes = sample().encode();
        for cut in [0, 3, 40, bytes.len() - 1] {
            assert!(TreeTable::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(TreeTable::decode(&padded).is_err());
    }

    #[test]
    fn the_index_locates_every_page_as_a_tree_page() {
        let table = sample();
        let index = table.to_index();
        for page in &table.pages {
            let location = index.get(&page.id).expect("indexed");
            assert_eq!(index.pack_name(location.pack), page.pack);
            assert_eq!(location.kind, BlobKind::Tree);
            assert_eq!(
                (location.offset, location.length),
                (page.offset, page.length)
            );
        }
    }
}
