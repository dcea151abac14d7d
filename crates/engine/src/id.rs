//! Chunk and page ids: keyed BLAKE3 hashes, with `ZERO` standing for all-zero data.

use std::fmt;

/// The id of a chunk or a tree page: 32 bytes of keyed BLAKE3, or [`ChunkId::ZERO`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The sentinel for an all-zero chunk, page or subtree: never stored, restored as a hole.
    pub const ZERO: ChunkId = ChunkId([0u8; 32]);

    /// True for the zero sentinel.
    pub fn is_zero(&self) -> bool {
        self.0 == [0u8; 32]
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        let array: [u8; 32] = bytes.try_into().ok()?;
        Some(ChunkId(array))
    }

    /// Reads an id from the first 32 bytes of `bytes`.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: [u8; 32] = bytes.get(..32)?.try_into().ok()?;
        Some(ChunkId(array))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Computes ids with the repository's id key.
#[derive(Clone)]
pub(crate) struct IdHasher {
    key: [u8; 32],
}

impl IdHasher {
    /// A hasher keyed with the repository's id key.
    pub(crate) fn new(key: [u8; 32]) -> Self {
        IdHasher { key }
    }

    /// The id of `data`: `ZERO` if every byte is zero, else the keyed hash.
    pub(crate) fn id_of(&self, data: &[u8]) -> ChunkId {
        if is_all_zero(data) {
            ChunkId::ZERO
        } else {
            self.hash(data)
        }
    }

    /// The keyed hash of `data`, without the zero rule.
    pub(crate) fn hash(&self, data: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.key, data).as_bytes())
    }

    /// A short key for a name (a volume name), as hex, for object keys.
    pub(crate) fn name_key(&self, name: &str) -> String {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(b"volume name\0");
        hasher.update(name.as_bytes());
        hex::encode(&hasher.finalize().as_bytes()[..16])
    }

    /// A short key for a cluster name (of cluster metadata documents), as hex, for object keys.
    pub(crate) fn cluster_key(&self, name: &str) -> String {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(b"cluster name\0");
        hasher.update(name.as_bytes());
        hex::encode(&hasher.finalize().as_bytes()[..16])
    }
}

/// True when every byte is zero. Compares 64-byte blocks with an OR-fold, which the compiler
/// vectorises, and stops at the first non-zero block.
pub(crate) fn is_all_zero(data: &[u8]) -> bool {
    data.chunks(64)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_data_gets_the_sentinel_and_others_a_keyed_hash() {
        let h = IdHasher::new([3u8; 32]);
        assert!(h.id_of(&[0u8; 4096]).is_zero());
        let a = h.id_of(b"abc");
        assert!(!a.is_zero());
        assert_eq!(a, h.id_of(b"abc"));
        assert_ne!(
            a,
            IdHasher::new([4u8; 32]).id_of(b"abc"),
            "ids depend on the key"
        );
        assert_eq!(ChunkId::from_hex(&a.to_hex()), Some(a));
    }
}
