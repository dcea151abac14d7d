//! The s3mover backup engine.
//!
//! It knows block volumes and object storage and nothing else: no Kubernetes, no gRPC. A volume
//! is cut into fixed-size chunk slots; chunks are deduplicated by a keyed BLAKE3 id, compressed,
//! encrypted and bundled into pack objects; each backup is a Merkle tree of chunk ids whose root
//! a manifest commits. `docs/format.md` is the authoritative description of the format.
//!
//! The modules follow the data path: [`device`] reads and writes volumes, [`bitmap`] plans which
//! slots to read, [`backup`] reads, deduplicates and builds the [`tree`], [`upload`] packs and
//! stores blobs ([`pack`], [`index`]), [`repo`] commits [`manifest`]s, [`restore`] and
//! [`verify`] read them back. [`storage`] is the only door to the object store.

#![warn(unreachable_pub, missing_docs)]

pub mod backup;
pub mod bitmap;
pub mod check;
pub mod cluster_docs;
pub mod config;
pub mod crypto;
pub mod device;
mod device_use;
pub mod error;
pub mod gc;
pub mod id;
pub mod index;
mod init;
pub mod layout;
pub mod manifest;
pub mod pack;
pub mod progress;
// Some of prune's public fields have no doc comment yet; the allowance covers this module only.
#[allow(missing_docs)]
pub mod prune;
pub mod quarantine;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod retention_spec;
pub mod time_util;
pub mod tree;
pub mod tree_table;
pub mod upload;
pub mod verify;
pub mod xchacha;

pub use error::{Error, Result};
pub use init::InitOptions;
/// The AAD of sealed objects, under its earlier path.
pub use layout::aad as objects;
pub use repo::{LockedRepository, Repository};
/// The object-store door (the `s3mover-storage` crate), under its earlier path.
pub use s3mover_storage as storage;
pub use s3mover_storage::{direct_io, pack_buffers, units};
