//! Block ranges as Changed Block Tracking reports them, and the ranges-file format.
//!
//! A *range list* says which byte ranges of a volume hold data (an "allocated" list) or changed
//! since a base snapshot (a "delta" list). Lists come from the Kubernetes SnapshotMetadata API,
//! from a CSI driver, or from a file written by any tool. This crate is the one place that
//! decides whether a list is well formed ([`RangeValidator`]) and that reads and writes the
//! ranges file ([`read_ranges_file`], [`RangesFileWriter`]) — the proto3 JSON mapping of a
//! `GetMetadata*Response`, merged over the whole stream:
//!
//! ```json
//! {"blockMetadataType":"FIXED_LENGTH","volumeCapacityBytes":1073741824,
//!  "blockMetadata":[{"byteOffset":0,"sizeBytes":4096},{"byteOffset":61440,"sizeBytes":4096}]}
//! ```
//!
//! Lists can hold hundreds of millions of entries, so both directions stream: the reader hands
//! each range to a callback as it is parsed and never collects the list.

mod file;
mod validate;

pub use file::{read_ranges_file, RangesFileError, RangesFileWriter, RangesHeader};
pub use validate::{RangeError, RangeValidator};

use serde::{Deserialize, Serialize};

/// How a range list describes blocks (`BlockMetadataType` in the CBT protocols).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockMetadataType {
    /// Every range has the same size (the block size).
    #[serde(rename = "FIXED_LENGTH")]
    FixedLength,
    /// Ranges are extents of varying size.
    #[serde(rename = "VARIABLE_LENGTH")]
    VariableLength,
}

impl BlockMetadataType {
    /// The proto3 JSON name of this type.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockMetadataType::FixedLength => "FIXED_LENGTH",
            BlockMetadataType::VariableLength => "VARIABLE_LENGTH",
        }
    }

    /// Maps the protobuf enum number (1 or 2) to a type; 0 (`UNKNOWN`) and others give `None`.
    pub fn from_proto_number(n: i64) -> Option<Self> {
        match n {
            1 => Some(BlockMetadataType::FixedLength),
            2 => Some(BlockMetadataType::VariableLength),
            _ => None,
        }
    }
}

impl std::fmt::Display for BlockMetadataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One byte range of a volume: `size` bytes starting at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRange {
    /// Byte offset from the start of the volume.
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
}

impl BlockRange {
    /// Creates a range of `size` bytes at `offset`.
    pub fn new(offset: u64, size: u64) -> Self {
        BlockRange { offset, size }
    }

    /// The first byte after the range (saturating, so a hostile size cannot wrap around).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.size)
    }
}

impl std::fmt::Display for BlockRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[offset {}, size {}]", self.offset, self.size)
    }
}
