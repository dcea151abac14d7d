//! The backup manifest: what one backup is, and the commit point that makes it exist.

use serde::{Deserialize, Serialize};

/// Where a backup's change information came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeSource {
    /// Every byte read; no parent to compare with.
    Full,
    /// Every byte read and hashed; only chunks that differ from the parent were stored.
    HashCompare,
    /// Only the ranges of a `--changed-ranges` file were read; the rest came from the parent.
    ChangedRanges,
    /// Only the ranges of an `--allocated-ranges` file were read; the rest is zero.
    AllocatedRanges,
    /// Only the data extents of a sparse file (SEEK_DATA/SEEK_HOLE) were read.
    Sparse,
    /// Allocated ranges streamed from a CBT service.
    CbtAllocated,
    /// Changed ranges streamed from a CBT service.
    CbtDelta,
}

impl ChangeSource {
    /// The name used in manifests and `-o json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeSource::Full => "full",
            ChangeSource::HashCompare => "hash-compare",
            ChangeSource::ChangedRanges => "changed-ranges",
            ChangeSource::AllocatedRanges => "allocated-ranges",
            ChangeSource::Sparse => "sparse",
            ChangeSource::CbtAllocated => "cbt-allocated",
            ChangeSource::CbtDelta => "cbt-delta",
        }
    }

    /// True when slots outside the ranges are inherited from the parent.
    pub(crate) fn inherits_from_parent(self) -> bool {
        matches!(self, ChangeSource::ChangedRanges | ChangeSource::CbtDelta)
    }
}

/// CBT snapshot handles a backup's ranges came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CbtInfo {
    /// The snapshot the backup read (name or CSI handle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The CSI snapshot handle of that snapshot: the base for the next delta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
    /// The base snapshot handle of a delta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_snapshot_handle: Option<String>,
}

/// Figures of one backup run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupStats {
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Slots read.
    pub slots_read: u64,
    /// Chunks stored by this backup.
    pub chunks_new: u64,
    /// Bytes of chunk data before compression that this backup stored.
    pub data_bytes_new: u64,
    /// Every byte written to the store, manifest included.
    pub bytes_uploaded: u64,
    /// The part of `bytes_uploaded` that is not chunk data.
    pub metadata_bytes_uploaded: u64,
    /// Objects written.
    pub objects_written: u64,
    /// Seconds from start to commit.
    pub seconds: f64,
}

/// One backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// 16 hex digits.
    pub id: String,
    /// The volume name.
    pub volume: String,
    /// Commit time, RFC 3339 UTC.
    pub time: String,
    /// Start time, RFC 3339 UTC.
    pub started_at: String,
    /// The backup this one was built on.
    pub parent: Option<String>,
    /// Volume size in bytes.
    pub size_bytes: u64,
    /// Bytes per slot.
    pub chunk_size: u64,
    /// Number of slots.
    pub slots: u64,
    /// Tree root id, hex.
    pub root: String,
    /// Tree levels.
    pub depth: u32,
    /// Where change information came from.
    pub change_source: ChangeSource,
    /// CBT handles, for the next incremental.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cbt: Option<CbtInfo>,
    /// `KEY=VALUE` tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The source path.
    pub source: String,
    /// The host that made it.
    #[serde(default)]
    pub host: String,
    /// Figures of the run.
    pub stats: BackupStats,
}

impl crate::layout::sealed::SealedRecord for Manifest {
    const KIND: crate::layout::aad::ObjectKind = crate::layout::aad::ObjectKind::Manifest;
    const NAME: &'static str = "manifest";
}
