//! The Kubernetes side of s3mover: backing up and restoring PersistentVolumeClaims.
//!
//! A backup takes a CSI VolumeSnapshot of the claim, makes a temporary Block-mode claim from it,
//! and runs a mover Job whose pod reads the raw device with `s3mover backup`, streaming the
//! changed blocks from the driver's SnapshotMetadata service itself. A restore creates the claim
//! again from the attributes the backup recorded and runs a mover Job with `s3mover restore`
//! onto its raw device. The engine knows nothing of this crate; the CLI joins the two.
//!
//! - [`connect`]: a client from the kubeconfig first, the in-cluster configuration second.
//! - [`resources`]: the snapshot and CBT custom resources, read as dynamic objects.
//! - [`discovery`]: VolumeSnapshot → content → SnapshotMetadataService → token.
//! - [`manifests`]: the objects s3mover creates, built as plain values (unit-tested).
//! - [`backup`], [`restore`]: the two flows; [`cleanup`]: what they leave when interrupted.
//! - [`doctor`]: is a cluster ready for backups; [`record`]: what a backup records of its claim.
//! - [`retry`]: reads and creates that ride out a failing API server.
//! - [`metadata`]: what `cluster backup` records of a cluster ([`yaml`] writes its objects for
//!   `kubectl apply`); [`longhorn`]: Longhorn backup freshness for `health`.
//! - [`rollout`]: `s3mover rollout-test`, a StatefulSet rolling update measured.

pub mod backup;
pub mod cleanup;
pub mod connect;
pub mod discovery;
pub mod doctor;
pub mod error;
pub mod labels;
pub mod longhorn;
pub mod manifests;
pub mod metadata;
pub mod mover;
pub mod record;
pub mod resources;
pub mod restore;
pub mod retry;
pub mod rollout;
pub mod select;
pub mod yaml;

pub use connect::{ClientOptions, Cluster};
pub use error::Error;

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
