//! Changed Block Tracking client for s3mover: the Kubernetes SnapshotMetadata API (through the
//! external-snapshot-metadata sidecar, over TLS with an audience-scoped token) and the CSI
//! SnapshotMetadata service (on a driver's unix socket), read as a stream of validated block
//! ranges that survives broken streams and drivers that end streams early.
//!
//! No Kubernetes dependency: discovery (SnapshotMetadataService CR, TokenRequest, snapshot
//! handles) lives elsewhere and hands this crate an address, a CA bundle and a token source.
//!
//! - [`SelectionArgs`] / [`Selection`]: the shared CLI flags and what they resolve to.
//! - [`Client::connect`] + [`Client::ranges`] → [`RangeStream`]: the listing, async.
//! - [`blocking::RangeIter`]: the same as a plain iterator, for the backup engine.
//! - [`list()`] and [`verify()`]: the `cbt list` and `cbt verify` commands.

pub mod args;
pub mod blocking;
pub mod connect;
pub mod error;
pub mod list;
pub mod proto;
pub mod stream;
pub mod token;
pub mod verify;

pub use args::{Selection, SelectionArgs, SnapshotRecord};
pub use connect::{Client, Endpoint, KubernetesEndpoint};
pub use error::CbtError;
pub use list::{list, ListFormat, ListSummary};
pub use s3mover_ranges::{BlockMetadataType, BlockRange};
pub use stream::{Query, RangeStream, RetryPolicy, StreamOptions, StreamStats};
pub use token::{FetchedToken, FileToken, RefreshingToken, StaticToken, TokenSource};
pub use verify::{verify, VerifyReport};
