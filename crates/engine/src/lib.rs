//! The s3mover backup engine.
//!
//! It knows block volumes and object storage and nothing else: no Kubernetes, no gRPC. A volume
//! is cut into fixed-size chunk slots; chunks are deduplicated by a keyed BLAKE3 id, compressed,
//! encrypted and bundled into pack objects; each backup is a Merkle tree of chunk ids whose root
//! a manifest commits. `docs/format.md` is the authoritative description of the format, and
//! `docs/architecture.md` draws the data path through these modules.
//!
//! # The public API
//!
//! A caller opens a [`Repository`] (or creates one with [`Repository::init`]) and runs one of
//! the operations, each a public module with its options, its report and one entry function:
//! [`backup`], [`restore`], [`verify`], [`check`], [`retention`] (forget), [`prune`],
//! [`repair`] and [`cluster_docs`]. [`manifest`] holds what a backup records, [`progress`] the
//! callback long operations report to, [`retention_spec`] the text form of retention rules,
//! [`time_util`] the RFC 3339 times the format uses, and [`storage`] the object-store door.
//! Everything else is crate-private: the format's codecs and the data path's stages.
//!
//! # Inside
//!
//! The modules follow the data path: `device` reads and writes volumes, `bitmap` plans which
//! slots to read, `backup` reads, deduplicates and builds the `tree`, `upload` packs and stores
//! blobs (`pack`, `index`), `repo` commits manifests, `restore` and `verify` read them back.
//! `layout` owns the object layout: every key prefix, id check, AAD label and the format
//! version. `gc` is the deletion protocol that prune and backup share.

#![warn(unreachable_pub, missing_docs)]

// The operations: the public API.
pub mod backup;
pub mod check;
pub mod cluster_docs;
pub mod manifest;
pub mod progress;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod retention;
pub mod retention_spec;
pub mod time_util;
pub mod verify;

// The format and the data path's stages: crate-private.
mod bitmap;
mod config;
mod crypto;
mod device;
mod device_use;
mod error;
mod gc;
mod id;
mod index;
mod init;
mod layout;
mod pack;
mod quarantine;
mod repo;
mod tree;
mod tree_table;
mod upload;
mod xchacha;

pub use crypto::{CryptoError, KdfCost};
pub use error::{Error, Result};
pub use id::ChunkId;
pub use init::InitOptions;
pub use repo::{LockedRepository, Repository};
/// The object-store door (the `s3mover-storage` crate).
pub use s3mover_storage as storage;
pub use s3mover_storage::units;

/// Parts of the format for the engine's integration tests, which build, damage and inspect
/// objects the public API never exposes. Not a stable API: nothing outside this repository's
/// tests should use it.
#[doc(hidden)]
pub mod internals {
    /// The deletion protocol's records.
    pub mod gc {
        pub use crate::gc::{
            encode_pending_set, now_unix, prefix, write_marker_directory, DeletionMarker,
            PendingSet, MARKER_DIRECTORY_KEY,
        };
    }
    /// The in-memory pack index.
    pub mod index {
        pub use crate::index::PackIndex;
    }
    /// Pack keys and blob kinds.
    pub mod pack {
        pub use crate::pack::{pack_key, BlobKind};
    }
    /// Reading a backup's tree.
    pub mod tree {
        pub use crate::tree::{page_entries, walk_leaves, PageReader};
    }
    /// A backup's table of tree-page locations.
    pub mod tree_table {
        pub use crate::tree_table::{key, TreeTable};
    }
    /// The packer's constants.
    pub mod upload {
        pub use crate::upload::MIN_TAIL_PACK;
    }
    /// The AAD every sealed object is bound by.
    pub mod objects {
        pub use crate::layout::aad::ObjectKind;
    }
    /// What a repository does with its keys, for tests that forge or inspect objects.
    pub mod repo {
        use crate::layout::aad::ObjectKind;
        use crate::{ChunkId, Repository, Result};

        /// Seals `plaintext` as an object of `kind` stored at `key`.
        pub fn seal_object(repo: &Repository, kind: ObjectKind, key: &str, data: &[u8]) -> Vec<u8> {
            repo.seal_object(kind, key, data)
        }

        /// Opens an object of `kind` read from `key`.
        pub fn open_object(
            repo: &Repository,
            kind: ObjectKind,
            key: &str,
            sealed: &[u8],
        ) -> Result<Vec<u8>> {
            repo.open_object(kind, key, sealed)
        }

        /// True when the repository's sealed objects are bound to their names.
        pub fn binds_names(repo: &Repository) -> bool {
            repo.binding().binds_names()
        }

        /// The id the repository gives a chunk of `data`.
        pub fn chunk_id(repo: &Repository, data: &[u8]) -> ChunkId {
            repo.hasher().id_of(data)
        }

        /// The key a volume's name has in object keys.
        pub fn volume_key(repo: &Repository, volume: &str) -> String {
            repo.volume_key(volume)
        }
    }
}
