//! The repository's `config` object: format version, chunk size, encryption and pack sizes.

use serde::{Deserialize, Serialize};

/// The format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The value of `config.format`, so a stray JSON object is not taken for a repository.
pub const FORMAT_NAME: &str = "s3mover-repository";

/// Default chunk size: 64 KiB (see docs/benchmarks.md for the measured trade-off).
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Smallest and largest chunk sizes `init` accepts.
pub const MIN_CHUNK_SIZE: u32 = 4 * 1024;
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// Default target size of data packs.
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;
/// Default target size of tree packs.
pub const DEFAULT_TREE_PACK_SIZE: u32 = 4 * 1024 * 1024;

/// The `config` object.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepoConfig {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// The format version; see `docs/format.md`.
    pub version: u32,
    /// Random repository id, hex.
    pub id: String,
    /// Bytes per chunk slot.
    pub chunk_size: u32,
    /// `xchacha20poly1305` or `none`.
    pub encryption: String,
    /// Target size of data packs.
    pub pack_size: u32,
    /// Target size of tree packs.
    pub tree_pack_size: u32,
    /// The id key, hex; only in unencrypted repositories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_key: Option<String>,
    /// When the repository was created.
    pub created: String,
    /// Key slots written at `init` (`keys/<id>`), so opening needs no listing; slots added
    /// later are found by listing `keys/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_slots: Vec<String>,
}

impl RepoConfig {
    /// True for an encrypted repository.
    pub fn is_encrypted(&self) -> bool {
        self.encryption != "none"
    }
}
