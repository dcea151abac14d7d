//! The pack index: which pack holds each chunk and tree page, loaded from `index/` objects.
//!
//! Index objects are decompressed as they are read, one pack's records at a time
//! ([`read_index_entries`]), never held whole.
//!
//! A prune may repack and delete packs while a restore or verify reads: readers hold a
//! [`SharedIndex`], reload it when a pack they were told about is gone, and look the blobs up
//! again. The reload is shared: however many tasks ask at once, the index is listed and loaded
//! once per generation.
//!
//! This module is the index in memory and the records' decoding, without I/O; `stored.rs`
//! loads, shares, reads and writes index objects in the repository.

mod stored;

use std::collections::HashMap;

pub(crate) use stored::{
    list_packs, read_index_entries, read_index_object, write_index_object, SharedIndex,
};

use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::pack::{self, BlobKind, PackEntry};

/// Where a blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Position of the pack in [`PackIndex::packs`].
    pub pack: u32,
    /// Data chunk or tree page.
    pub kind: BlobKind,
    /// Byte offset of the sealed blob in the pack.
    pub offset: u64,
    /// Length of the sealed blob.
    pub length: u32,
}

/// Chunk id → location, for every pack listed in the repository's index objects.
#[derive(Debug, Default)]
pub struct PackIndex {
    packs: Vec<ChunkId>,
    pack_numbers: HashMap<ChunkId, u32>,
    blobs: HashMap<ChunkId, Location>,
    /// Index object keys this index was loaded from.
    pub objects: Vec<String>,
    /// Index objects that exist but could not be read, with why: the blobs they listed are
    /// not in this index (see `DAMAGED_INDEX_ADVICE`).
    pub damaged: Vec<(String, String)>,
}

/// What to do about a damaged index object.
pub(crate) const DAMAGED_INDEX_ADVICE: &str =
    "`s3mover repair index` rebuilds the index from the packs' headers";

impl PackIndex {
    /// Adds one blob's location (the first location of an id wins).
    pub(crate) fn insert(&mut self, pack_name: &ChunkId, entry: PackEntry) {
        let number = match self.pack_numbers.get(pack_name) {
            Some(n) => *n,
            None => {
                let n = self.packs.len() as u32;
                self.packs.push(*pack_name);
                self.pack_numbers.insert(*pack_name, n);
                n
            }
        };
        self.blobs.entry(entry.id).or_insert(Location {
            pack: number,
            kind: entry.kind,
            offset: entry.offset,
            length: entry.length,
        });
    }

    /// Where a blob is, if indexed.
    pub fn get(&self, id: &ChunkId) -> Option<Location> {
        self.blobs.get(id).copied()
    }

    /// True when the blob is indexed.
    pub(crate) fn contains(&self, id: &ChunkId) -> bool {
        self.blobs.contains_key(id)
    }

    /// The name of pack number `n`.
    pub fn pack_name(&self, n: u32) -> ChunkId {
        self.packs[n as usize]
    }

    /// Every pack name.
    pub(crate) fn packs(&self) -> &[ChunkId] {
        &self.packs
    }

    /// Number of indexed blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Every (id, location).
    pub fn iter(&self) -> impl Iterator<Item = (&ChunkId, &Location)> {
        self.blobs.iter()
    }
}
/// How many times a reader reloads the index for one read whose pack is gone before it gives
/// up. One reload covers a prune that finished its index rewrite before deleting packs; the
/// second covers a reload another task made just before a later prune deleted more.
pub(crate) const RELOADS_PER_READ: u32 = 2;

/// True when `error` says an object does not exist (a pack a prune deleted, for readers).
pub(crate) fn is_not_found(error: &Error) -> bool {
    matches!(error, Error::Store(e) if e.is_not_found())
}

/// Bytes of a record group's head (pack name, entry count) and of one entry.
const GROUP_HEAD: usize = 36;
const ENTRY_BYTES: u64 = 45;

/// Decompresses index records group by group (one pack's entries at a time).
fn decode_compressed_records(
    key: &str,
    compressed: &[u8],
    mut each: impl FnMut(&ChunkId, PackEntry),
) -> Result<()> {
    use std::io::Read;
    let bad = |e: String| Error::corrupt_object(key, format!("{key}: {e}"));
    let decoder = zstd::stream::read::Decoder::new(compressed).map_err(|e| bad(e.to_string()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 16, decoder);
    let mut group: Vec<u8> = Vec::new();
    loop {
        group.clear();
        (&mut reader)
            .take(GROUP_HEAD as u64)
            .read_to_end(&mut group)
            .map_err(|e| bad(e.to_string()))?;
        match group.len() {
            0 => return Ok(()),
            GROUP_HEAD => {}
            _ => return Err(bad("index object is truncated".into())),
        }
        let count = u32::from_le_bytes([group[32], group[33], group[34], group[35]]);
        let need = u64::from(count) * ENTRY_BYTES;
        // `take` bounds the read by what the object holds, whatever a damaged count says.
        (&mut reader)
            .take(need)
            .read_to_end(&mut group)
            .map_err(|e| bad(e.to_string()))?;
        if (group.len() - GROUP_HEAD) as u64 != need {
            return Err(bad("index object is truncated".into()));
        }
        pack::decode_index_records(&group, &mut each).map_err(|e| bad(e.to_string()))?;
    }
}
