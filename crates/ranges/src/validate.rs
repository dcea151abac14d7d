//! Validation of a range list as it streams past: the rules every CBT consumer depends on.
//!
//! A wrong range list is a wrong backup, so nothing here repairs a list: the first violation is
//! an error that names the entry (its index in the stream) and the range.

use crate::{BlockMetadataType, BlockRange};

/// Why a range list was refused. Each variant names the offending entry by its zero-based index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// A range with `size == 0`.
    #[error("range #{index} {range} has size zero; every range must cover at least one byte")]
    ZeroSize { index: u64, range: BlockRange },
    /// A range that starts before the end of the previous one.
    #[error(
        "range #{index} {range} starts before the previous range ends at {previous_end}; ranges must be sorted and must not overlap"
    )]
    OutOfOrder {
        index: u64,
        range: BlockRange,
        previous_end: u64,
    },
    /// A range that ends past the volume capacity.
    #[error("range #{index} {range} ends at {end}, past the volume capacity of {capacity} bytes")]
    PastEnd {
        index: u64,
        range: BlockRange,
        end: u64,
        capacity: u64,
    },
    /// A FIXED_LENGTH list whose sizes are not all equal.
    #[error(
        "range #{index} {range} has size {size} but this FIXED_LENGTH list uses blocks of {block_size} bytes"
    )]
    SizeChanged {
        index: u64,
        range: BlockRange,
        size: u64,
        block_size: u64,
    },
    /// The stream changed its block metadata type midway.
    #[error(
        "message at range #{index} changed the block metadata type from {expected} to {found}"
    )]
    TypeChanged {
        index: u64,
        expected: BlockMetadataType,
        found: BlockMetadataType,
    },
    /// The stream changed the volume capacity midway, or it differs from the expected one.
    #[error(
        "volume capacity {found} at range #{index} differs from the expected {expected} bytes"
    )]
    CapacityChanged {
        index: u64,
        expected: u64,
        found: u64,
    },
}

/// Checks ranges one at a time, in stream order, in constant memory.
#[derive(Debug, Clone)]
pub struct RangeValidator {
    kind: BlockMetadataType,
    capacity: u64,
    block_size: Option<u64>,
    previous_end: Option<u64>,
    next_index: u64,
}

impl RangeValidator {
    /// A validator for a list of the given type on a volume of `capacity` bytes.
    pub fn new(kind: BlockMetadataType, capacity: u64) -> Self {
        RangeValidator {
            kind,
            capacity,
            block_size: None,
            previous_end: None,
            next_index: 0,
        }
    }

    /// The block metadata type this validator expects.
    pub fn kind(&self) -> BlockMetadataType {
        self.kind
    }

    /// The volume capacity this validator expects.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// How many ranges have been accepted so far.
    pub fn accepted(&self) -> u64 {
        self.next_index
    }

    /// The end of the last accepted range, if any.
    pub fn last_end(&self) -> Option<u64> {
        self.previous_end
    }

    /// Checks that a later message of the same stream still has this type and capacity.
    pub fn check_header(&self, kind: BlockMetadataType, capacity: u64) -> Result<(), RangeError> {
        if kind != self.kind {
            return Err(RangeError::TypeChanged {
                index: self.next_index,
                expected: self.kind,
                found: kind,
            });
        }
        if capacity != self.capacity {
            return Err(RangeError::CapacityChanged {
                index: self.next_index,
                expected: self.capacity,
                found: capacity,
            });
        }
        Ok(())
    }

    /// Accepts the next range of the stream or says why it breaks the rules.
    pub fn check(&mut self, range: BlockRange) -> Result<(), RangeError> {
        let index = self.next_index;
        if range.size == 0 {
            return Err(RangeError::ZeroSize { index, range });
        }
        if let Some(previous_end) = self.previous_end {
            if range.offset < previous_end {
                return Err(RangeError::OutOfOrder {
                    index,
                    range,
                    previous_end,
                });
            }
        }
        let end = range.end();
        if end > self.capacity {
            return Err(RangeError::PastEnd {
                index,
                range,
                end,
                capacity: self.capacity,
            });
        }
        if self.kind == BlockMetadataType::FixedLength {
            match self.block_size {
                None => self.block_size = Some(range.size),
                Some(block_size) if block_size != range.size => {
                    return Err(RangeError::SizeChanged {
                        index,
                        range,
                        size: range.size,
                        block_size,
                    })
                }
                Some(_) => {}
            }
        }
        self.previous_end = Some(end);
        self.next_index += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(capacity: u64) -> RangeValidator {
        RangeValidator::new(BlockMetadataType::FixedLength, capacity)
    }

    #[test]
    fn accepts_sorted_touching_ranges() {
        let mut v = fixed(16384);
        for offset in [0, 4096, 12288] {
            v.check(BlockRange::new(offset, 4096)).expect("valid range");
        }
        assert_eq!(v.accepted(), 3);
        assert_eq!(v.last_end(), Some(16384));
    }

    #[test]
    fn refuses_zero_size_naming_the_entry() {
        let mut v = fixed(16384);
        v.check(BlockRange::new(0, 4096)).unwrap();
        let err = v.check(BlockRange::new(4096, 0)).unwrap_err();
        assert!(matches!(err, RangeError::ZeroSize { index: 1, .. }));
        assert!(err.to_string().contains("range #1"));
    }

    #[test]
    fn refuses_overlap_and_disorder() {
        let mut v = RangeValidator::new(BlockMetadataType::VariableLength, 1 << 20);
        v.check(BlockRange::new(8192, 8192)).unwrap();
        let err = v.check(BlockRange::new(12288, 4096)).unwrap_err();
        assert!(matches!(
            err,
            RangeError::OutOfOrder {
                index: 1,
                previous_end: 16384,
                ..
            }
        ));
        let err = v.check(BlockRange::new(0, 4096)).unwrap_err();
        assert!(matches!(err, RangeError::OutOfOrder { index: 1, .. }));
    }

    #[test]
    fn refuses_ranges_past_capacity_and_overflowing() {
        let mut v = fixed(8192);
        let err = v.check(BlockRange::new(8192, 4096)).unwrap_err();
        assert!(matches!(err, RangeError::PastEnd { end: 12288, .. }));
        let mut v = RangeValidator::new(BlockMetadataType::VariableLength, u64::MAX - 1);
        let err = v.check(BlockRange::new(u64::MAX - 10, 100)).unwrap_err();
        assert!(matches!(err, RangeError::PastEnd { .. }));
    }

    #[test]
    fn fixed_length_sizes_must_not_change() {
        let mut v = fixed(1 << 20);
        v.check(BlockRange::new(0, 4096)).unwrap();
        let err = v.check(BlockRange::new(4096, 8192)).unwrap_err();
        assert!(matches!(
            err,
            RangeError::SizeChanged {
                block_size: 4096,
                size: 8192,
                ..
            }
        ));
    }

    #[test]
    fn header_changes_are_refused() {
        let v = fixed(4096);
        assert!(v.check_header(BlockMetadataType::FixedLength, 4096).is_ok());
        assert!(matches!(
            v.check_header(BlockMetadataType::VariableLength, 4096),
            Err(RangeError::TypeChanged { .. })
        ));
        assert!(matches!(
            v.check_header(BlockMetadataType::FixedLength, 8192),
            Err(RangeError::CapacityChanged { .. })
        ));
    }
}
