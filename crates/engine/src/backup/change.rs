//! Where a backup learns what to read, and the notes it returns when it reads more than that.
//!
//! [`ChangeInput`] names the source of changes. A change-tracking service (CBT) reaches the
//! engine as a [`ChangeTracker`]: the snapshot handles it works on and a way to open its
//! ranges. The CBT client implements it over gRPC; the engine never sees the protocol, and the
//! engine alone decides what to do with it (`plan.rs`, `plan_changes`):
//!
//! - the service opens and its ranges pass the checks: they are the plan (`cbt-delta` with a
//!   base snapshot, `cbt-allocated` without);
//! - the service cannot be opened (unreachable, refused, no change tracking for the snapshot):
//!   the source is read as with no change information at all (its data extents for an image
//!   file, everything for a device), [`BackupNote::ChangeTrackingUnavailable`];
//! - the ranges fail part-way, break the rules or describe a volume of another size: the whole
//!   volume is read, [`BackupNote::ChangeTrackingFailed`];
//! - a delta whose base is not the parent's snapshot: the whole volume is read,
//!   [`BackupNote::DeltaBaseMismatch`].
//!
//! Every fallback is deduplicated against the parent, so it costs reads, never a wrong
//! incremental or a second copy of unchanged data.

use std::fmt;
use std::path::PathBuf;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use s3mover_ranges::{BlockMetadataType, BlockRange};

use crate::manifest::CbtInfo;

/// Where the backup learns what to read.
pub enum ChangeInput {
    /// Decide from the source: sparse extents for files, everything for devices.
    Auto,
    /// A ranges file of changes since the parent.
    ChangedRangesFile(PathBuf),
    /// A ranges file of allocated ranges.
    AllocatedRangesFile(PathBuf),
    /// A change-tracking service. Whatever fails on its side makes the backup read more
    /// (deduplicated against the parent) and say why in its notes; see the module comment.
    Tracker(Box<dyn ChangeTracker>),
}

impl ChangeInput {
    /// The ranges file this input names, if it is one.
    pub(super) fn ranges_file(&self) -> Option<&std::path::Path> {
        match self {
            ChangeInput::ChangedRangesFile(path) | ChangeInput::AllocatedRangesFile(path) => {
                Some(path)
            }
            ChangeInput::Auto | ChangeInput::Tracker(_) => None,
        }
    }
}

/// A change-tracking service, as the backup engine sees it.
pub trait ChangeTracker: Send {
    /// The snapshot the ranges are of and, for a delta, its base. The backup records them in
    /// its manifest whether or not the service could be used (the next delta's base is the
    /// snapshot read, not the way it was read). A base handle makes the ranges a delta
    /// (`cbt-delta`); without one they are the allocated ranges (`cbt-allocated`).
    fn snapshots(&self) -> CbtInfo;

    /// Connects and starts the ranges. An error, whose text says why, means the service
    /// cannot be used for this backup.
    fn open(self: Box<Self>) -> BoxFuture<'static, Result<TrackedRanges, String>>;
}

/// The ranges a change-tracking service streams, with what it said of them first.
pub struct TrackedRanges {
    /// FIXED_LENGTH or VARIABLE_LENGTH, as the service said; `None` when it sent nothing.
    pub kind: Option<BlockMetadataType>,
    /// The volume capacity the service reported; `None` when it sent nothing.
    pub capacity: Option<u64>,
    /// The ranges, in the service's order; an error ends them.
    pub ranges: BoxStream<'static, Result<BlockRange, String>>,
}

/// Why a backup read more than its change source said, or did not build on the parent it was
/// asked to: one per event, in the order they matter to the reader (change tracking first).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackupNote {
    /// The change-tracking service could not be used; the source was read as without it.
    ChangeTrackingUnavailable {
        /// What went wrong, as the service client said.
        reason: String,
    },
    /// The service's ranges failed or broke the rules; the whole volume was read.
    ChangeTrackingFailed {
        /// What went wrong.
        reason: String,
    },
    /// The changed blocks are relative to another snapshot than the parent's; the whole
    /// volume was read.
    DeltaBaseMismatch {
        /// The base snapshot handle of the changed blocks.
        base: String,
        /// The parent backup.
        parent: String,
        /// The snapshot handle the parent was taken from.
        parent_snapshot: String,
    },
    /// The parent asked for was not used: the backup is a full one.
    ParentNotUsed {
        /// The backup that was not used.
        parent: String,
        /// Why, as a sentence.
        reason: String,
    },
    /// Changes were given but no parent is usable: they were ignored and the whole volume read.
    ChangesWithoutParent,
}

impl fmt::Display for BackupNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupNote::ChangeTrackingUnavailable { reason } => write!(
                f,
                "change tracking unavailable ({reason}); reading the whole volume"
            ),
            BackupNote::ChangeTrackingFailed { reason } => write!(
                f,
                "change tracking failed ({reason}); reading the whole volume instead"
            ),
            BackupNote::DeltaBaseMismatch {
                base,
                parent,
                parent_snapshot,
            } => write!(
                f,
                "the changed blocks are relative to snapshot {base} but parent {parent} was taken from {parent_snapshot}: reading the whole volume instead"
            ),
            BackupNote::ParentNotUsed { reason, .. } => f.write_str(reason),
            BackupNote::ChangesWithoutParent => f.write_str(
                "no usable parent backup: the changed ranges were ignored and the whole volume read",
            ),
        }
    }
}

/// The notes as one line, `; `-separated, or `None` when there are none.
pub(super) fn joined_notes(notes: &[BackupNote]) -> Option<String> {
    (!notes.is_empty()).then(|| {
        notes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}
