//! The pack index: which pack holds each chunk and tree page, loaded from `index/` objects.
//!
//! Index objects are decompressed as they are read, one pack's records at a time
//! ([`read_index_entries`]), never held whole.

use std::collections::HashMap;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::pack::{self, BlobKind, PackEntry};
use crate::repo::Repository;

const INDEX_AAD: &[u8] = b"s3mover index v1";

/// Where a blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Position of the pack in [`PackIndex::packs`].
    pub pack: u32,
    pub kind: BlobKind,
    pub offset: u64,
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
}

impl PackIndex {
    /// Loads every index object of the repository.
    pub async fn load(repo: &Repository) -> Result<PackIndex> {
        let keys: Vec<String> = repo
            .store()
            .list("index/")
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        Self::load_objects(repo, keys).await
    }

    /// Loads the given index objects.
    pub async fn load_objects(repo: &Repository, keys: Vec<String>) -> Result<PackIndex> {
        let mut index = PackIndex::default();
        let mut bodies = futures::stream::iter(keys.clone())
            .map(|key| async move { read_compressed_object(repo, &key).await.map(|b| (key, b)) })
            .buffer_unordered(16);
        while let Some((key, compressed)) = bodies.try_next().await? {
            decode_compressed_records(&key, &compressed, |name, entry| index.insert(name, entry))?;
        }
        index.objects = keys;
        Ok(index)
    }

    /// Adds one blob's location (the first location of an id wins).
    pub fn insert(&mut self, pack_name: &ChunkId, entry: PackEntry) {
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
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.blobs.contains_key(id)
    }

    /// The name of pack number `n`.
    pub fn pack_name(&self, n: u32) -> ChunkId {
        self.packs[n as usize]
    }

    /// Every pack name.
    pub fn packs(&self) -> &[ChunkId] {
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

/// Reads and opens one index object, returning its records.
pub async fn read_index_object(repo: &Repository, key: &str) -> Result<Vec<u8>> {
    let compressed = read_compressed_object(repo, key).await?;
    zstd::stream::decode_all(&compressed[..]).map_err(|e| Error::Corrupt(format!("{key}: {e}")))
}

/// Reads one index object and calls `each` for every (pack, entry) as the records are
/// decompressed, holding one pack's records at a time instead of the whole object (an index
/// object of packs of small, well-compressed blobs decompresses to tens of MiB).
pub async fn read_index_entries(
    repo: &Repository,
    key: &str,
    each: impl FnMut(&ChunkId, PackEntry),
) -> Result<()> {
    let compressed = read_compressed_object(repo, key).await?;
    decode_compressed_records(key, &compressed, each)
}

/// Reads and opens one index object, leaving its records compressed.
async fn read_compressed_object(repo: &Repository, key: &str) -> Result<Vec<u8>> {
    let sealed = repo.store().get(key).await?;
    repo.sealer()
        .open(&sealed, INDEX_AAD)
        .map_err(|e| Error::Corrupt(format!("{key}: {e}")))
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
    let bad = |e: String| Error::Corrupt(format!("{key}: {e}"));
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

/// Writes an index object for the given packs; returns its key and size.
pub async fn write_index_object(
    repo: &Repository,
    packs: &[(ChunkId, Vec<PackEntry>)],
) -> Result<(String, u64)> {
    let records = pack::encode_index_records(packs);
    let compressed = zstd::bulk::compress(&records, 3)
        .map_err(|e| Error::Invalid(format!("cannot compress index: {e}")))?;
    let sealed = repo.sealer().seal(&compressed, INDEX_AAD);
    let key = format!("index/{}", blake3::hash(&sealed).to_hex());
    let size = sealed.len() as u64;
    repo.store().put(&key, Bytes::from(sealed)).await?;
    Ok((key, size))
}
