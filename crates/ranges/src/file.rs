//! The ranges file: reading it as a stream of validated ranges, and writing it.
//!
//! The reader accepts what proto3 JSON allows — int64 values as numbers or strings, enum values
//! as names or numbers, and both the JSON (`byteOffset`) and the original (`byte_offset`) field
//! names — and hands every range to a callback as soon as it is parsed. Keys may come in any
//! order: when the list comes before the type and capacity, ordering is checked as the list
//! streams and the capacity and fixed block size are checked when the header arrives.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read, Write};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::{BlockMetadataType, BlockRange, RangeError, RangeValidator};

/// What the header fields of a ranges file say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangesHeader {
    /// FIXED_LENGTH or VARIABLE_LENGTH.
    pub kind: BlockMetadataType,
    /// `volumeCapacityBytes`: the size of the volume the ranges describe.
    pub capacity: u64,
    /// How many ranges the file held.
    pub ranges: u64,
}

/// Why a ranges file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RangesFileError {
    /// The file is not valid JSON of the expected shape.
    #[error("not a valid ranges file: {0}")]
    Syntax(String),
    /// A required field is missing.
    #[error("the ranges file has no \"{0}\" field; it must be the JSON of a GetMetadata*Response")]
    Missing(&'static str),
    /// A range breaks the ordering or size rules.
    #[error("bad range in the ranges file: {0}")]
    Range(#[from] RangeError),
    /// The consumer of the ranges refused one.
    #[error("{0}")]
    Rejected(Box<dyn std::error::Error + Send + Sync>),
    /// Reading failed.
    #[error("could not read the ranges file: {0}")]
    Io(#[from] io::Error),
}

/// Reads a ranges file, calling `on_range` for each validated range in order.
///
/// Memory stays constant whatever the number of ranges. The callback's error stops the read and
/// comes back as [`RangesFileError::Rejected`].
pub fn read_ranges_file<R, F, E>(reader: R, on_range: F) -> Result<RangesHeader, RangesFileError>
where
    R: Read,
    F: FnMut(BlockRange) -> Result<(), E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let state = RefCell::new(ReadState {
        on_range,
        failure: None,
        kind: None,
        capacity: None,
        provisional: RangeValidator::new(BlockMetadataType::VariableLength, u64::MAX),
        strict: None,
        first_size: None,
        first_size_change: None,
        max_end: 0,
    });
    let mut de =
        serde_json::Deserializer::from_reader(io::BufReader::with_capacity(1 << 16, reader));
    let parsed = de.deserialize_map(TopVisitor { state: &state });
    let mut state = state.into_inner();
    if let Some(failure) = state.failure.take() {
        return Err(failure);
    }
    parsed.map_err(|e| {
        if e.is_io() {
            RangesFileError::Io(io::Error::other(e.to_string()))
        } else {
            RangesFileError::Syntax(e.to_string())
        }
    })?;
    de.end()
        .map_err(|e| RangesFileError::Syntax(e.to_string()))?;
    state.finish()
}

struct ReadState<F> {
    on_range: F,
    failure: Option<RangesFileError>,
    kind: Option<BlockMetadataType>,
    capacity: Option<u64>,
    /// Checks order and sizes while the header is still unknown.
    provisional: RangeValidator,
    /// Full validator, once the header came before the list.
    strict: Option<RangeValidator>,
    first_size: Option<u64>,
    first_size_change: Option<(u64, BlockRange)>,
    max_end: u64,
}

impl<F, E> ReadState<F>
where
    F: FnMut(BlockRange) -> Result<(), E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn start_list(&mut self) {
        if let (Some(kind), Some(capacity)) = (self.kind, self.capacity) {
            self.strict = Some(RangeValidator::new(kind, capacity));
        }
    }

    fn accept(&mut self, range: BlockRange) -> Result<(), RangesFileError> {
        let index = self.provisional.accepted();
        match &mut self.strict {
            Some(strict) => strict.check(range)?,
            None => {
                self.provisional.check(range)?;
                match self.first_size {
                    None => self.first_size = Some(range.size),
                    Some(size) if size != range.size && self.first_size_change.is_none() => {
                        self.first_size_change = Some((index, range));
                    }
                    Some(_) => {}
                }
            }
        }
        self.max_end = range.end();
        (self.on_range)(range).map_err(|e| RangesFileError::Rejected(e.into()))
    }

    fn finish(self) -> Result<RangesHeader, RangesFileError> {
        let kind = self
            .kind
            .ok_or(RangesFileError::Missing("blockMetadataType"))?;
        let capacity = self
            .capacity
            .ok_or(RangesFileError::Missing("volumeCapacityBytes"))?;
        let ranges = match &self.strict {
            Some(strict) => strict.accepted(),
            None => {
                if self.max_end > capacity {
                    return Err(RangeError::PastEnd {
                        index: self.provisional.accepted().saturating_sub(1),
                        range: BlockRange::new(0, 0),
                        end: self.max_end,
                        capacity,
                    }
                    .into());
                }
                if let (BlockMetadataType::FixedLength, Some((index, range)), Some(block_size)) =
                    (kind, self.first_size_change, self.first_size)
                {
                    return Err(RangeError::SizeChanged {
                        index,
                        range,
                        size: range.size,
                        block_size,
                    }
                    .into());
                }
                self.provisional.accepted()
            }
        };
        Ok(RangesHeader {
            kind,
            capacity,
            ranges,
        })
    }
}

struct TopVisitor<'s, F> {
    state: &'s RefCell<ReadState<F>>,
}

impl<'de, F, E> Visitor<'de> for TopVisitor<'_, F>
where
    F: FnMut(BlockRange) -> Result<(), E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object with blockMetadataType, volumeCapacityBytes and blockMetadata")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "blockMetadataType" | "block_metadata_type" => {
                    let kind = map.next_value::<KindValue>()?.0;
                    self.state.borrow_mut().kind = Some(kind);
                }
                "volumeCapacityBytes" | "volume_capacity_bytes" => {
                    let capacity = map.next_value::<Int64>()?.0;
                    self.state.borrow_mut().capacity = Some(capacity);
                }
                "blockMetadata" | "block_metadata" => {
                    self.state.borrow_mut().start_list();
                    map.next_value_seed(ListSeed { state: self.state })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct ListSeed<'s, F> {
    state: &'s RefCell<ReadState<F>>,
}

impl<'de, F, E> DeserializeSeed<'de> for ListSeed<'_, F>
where
    F: FnMut(BlockRange) -> Result<(), E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, F, E> Visitor<'de> for ListSeed<'_, F>
where
    F: FnMut(BlockRange) -> Result<(), E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of {byteOffset, sizeBytes} objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<RawRange>()? {
            let range = BlockRange::new(raw.offset, raw.size);
            let mut state = self.state.borrow_mut();
            if let Err(failure) = state.accept(range) {
                state.failure = Some(failure);
                return Err(de::Error::custom("range refused"));
            }
        }
        Ok(())
    }
}

/// One `BlockMetadata` entry; absent fields are zero, as in proto3.
struct RawRange {
    offset: u64,
    size: u64,
}

impl<'de> serde::Deserialize<'de> for RawRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawVisitor;
        impl<'de> Visitor<'de> for RawVisitor {
            type Value = RawRange;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object {\"byteOffset\": N, \"sizeBytes\": N}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRange, A::Error> {
                let mut raw = RawRange { offset: 0, size: 0 };
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "byteOffset" | "byte_offset" => raw.offset = map.next_value::<Int64>()?.0,
                        "sizeBytes" | "size_bytes" => raw.size = map.next_value::<Int64>()?.0,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(raw)
            }
        }
        deserializer.deserialize_map(RawVisitor)
    }
}

/// A proto3 JSON int64: a number or a decimal string; negative values are refused.
struct Int64(u64);

impl<'de> serde::Deserialize<'de> for Int64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntVisitor;
        impl Visitor<'_> for IntVisitor {
            type Value = Int64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-negative integer (number or string)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int64, E> {
                Ok(Int64(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int64, E> {
                u64::try_from(v).map(Int64).map_err(|_| {
                    E::custom(format!("negative value {v} where a byte count is expected"))
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Int64, E> {
                if v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64 {
                    Ok(Int64(v as u64))
                } else {
                    Err(E::custom(format!("{v} is not a byte count")))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Int64, E> {
                v.parse::<i64>()
                    .map_err(|_| E::custom(format!("\"{v}\" is not an integer")))
                    .and_then(|n| self.visit_i64(n))
            }
        }
        deserializer.deserialize_any(IntVisitor)
    }
}

/// A proto3 JSON enum value of `BlockMetadataType`: its name or its number.
struct KindValue(BlockMetadataType);

impl<'de> serde::Deserialize<'de> for KindValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KindVisitor;
        impl Visitor<'_> for KindVisitor {
            type Value = KindValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"FIXED_LENGTH\", \"VARIABLE_LENGTH\", 1 or 2")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KindValue, E> {
                self.visit_i64(v as i64)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KindValue, E> {
                BlockMetadataType::from_proto_number(v)
                    .map(KindValue)
                    .ok_or_else(|| E::custom(format!("block metadata type {v} is not FIXED_LENGTH (1) or VARIABLE_LENGTH (2)")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KindValue, E> {
                match v {
                    "FIXED_LENGTH" => Ok(KindValue(BlockMetadataType::FixedLength)),
                    "VARIABLE_LENGTH" => Ok(KindValue(BlockMetadataType::VariableLength)),
                    other => Err(E::custom(format!(
                        "block metadata type \"{other}\" is not FIXED_LENGTH or VARIABLE_LENGTH"
                    ))),
                }
            }
        }
        deserializer.deserialize_any(KindVisitor)
    }
}

/// Writes a ranges file as ranges arrive, validating each one so that a bad file is never made.
pub struct RangesFileWriter<W: Write> {
    out: W,
    validator: RangeValidator,
}

impl<W: Write> RangesFileWriter<W> {
    /// Starts a file for a list of type `kind` on a volume of `capacity` bytes.
    pub fn new(mut out: W, kind: BlockMetadataType, capacity: u64) -> io::Result<Self> {
        write!(
            out,
            "{{\"blockMetadataType\":\"{}\",\"volumeCapacityBytes\":{},\"blockMetadata\":[",
            kind.as_str(),
            capacity
        )?;
        Ok(RangesFileWriter {
            out,
            validator: RangeValidator::new(kind, capacity),
        })
    }

    /// Appends one range; a range that breaks the rules is refused with `InvalidData`.
    pub fn push(&mut self, range: BlockRange) -> io::Result<()> {
        let first = self.validator.accepted() == 0;
        self.validator
            .check(range)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if !first {
            self.out.write_all(b",")?;
        }
        write!(
            self.out,
            "{{\"byteOffset\":{},\"sizeBytes\":{}}}",
            range.offset, range.size
        )
    }

    /// Closes the JSON document and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(b"]}\n")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(text: &str) -> Result<(RangesHeader, Vec<BlockRange>), RangesFileError> {
        let mut got = Vec::new();
        let header = read_ranges_file(text.as_bytes(), |r| {
            got.push(r);
            Ok::<(), RangeError>(())
        })?;
        Ok((header, got))
    }

    #[test]
    fn reads_the_documented_example() {
        let text = r#"{"blockMetadataType":"FIXED_LENGTH","volumeCapacityBytes":1073741824,
            "blockMetadata":[{"byteOffset":"0","sizeBytes":"4096"},{"byteOffset":61440,"sizeBytes":4096}]}"#;
        let (header, ranges) = read_all(text).unwrap();
        assert_eq!(header.kind, BlockMetadataType::FixedLength);
        assert_eq!(header.capacity, 1 << 30);
        assert_eq!(header.ranges, 2);
        assert_eq!(
            ranges,
            vec![BlockRange::new(0, 4096), BlockRange::new(61440, 4096)]
        );
    }

    #[test]
    fn accepts_snake_case_numbers_for_enums_and_any_key_order() {
        let text = r#"{"block_metadata":[{"byte_offset":8192,"size_bytes":100}],
            "volume_capacity_bytes":"16384","block_metadata_type":2}"#;
        let (header, ranges) = read_all(text).unwrap();
        assert_eq!(header.kind, BlockMetadataType::VariableLength);
        assert_eq!(ranges, vec![BlockRange::new(8192, 100)]);
    }

    #[test]
    fn empty_list_and_missing_list_are_empty() {
        let (h, r) =
            read_all(r#"{"blockMetadataType":"FIXED_LENGTH","volumeCapacityBytes":4096}"#).unwrap();
        assert_eq!((h.ranges, r.len()), (0, 0));
    }

    #[test]
    fn refuses_bad_ranges_naming_the_entry() {
        let unsorted = r#"{"blockMetadataType":"FIXED_LENGTH","volumeCapacityBytes":65536,
            "blockMetadata":[{"byteOffset":8192,"sizeBytes":4096},{"byteOffset":0,"sizeBytes":4096}]}"#;
        let err = read_all(unsorted).unwrap_err();
        assert!(err.to_string().contains("range #1"), "{err}");

        let past_end = r#"{"blockMetadataType":"FIXED_LENGTH","volumeCapacityBytes":8192,
            "blockMetadata":[{"byteOffset":8192,"sizeBytes":4096}]}"#;
        assert!(matches!(
            read_all(past_end).unwrap_err(),
            RangesFileError::Range(RangeError::PastEnd { .. })
        ));

        let late_header_past_end = r#"{"blockMetadata":[{"byteOffset":8192,"sizeBytes":4096}],
            "blockMetadataType":"FIXED_LENGTH","volumeCapacityBytes":8192}"#;
        assert!(matches!(
            read_all(late_header_past_end).unwrap_err(),
            RangesFileError::Range(RangeError::PastEnd { .. })
        ));

        let late_header_sizes = r#"{"blockMetadata":[{"byteOffset":0,"sizeBytes":4096},{"byteOffset":4096,"sizeBytes":8192}],
            "blockMetadataType":"FIXED_LENGTH","volumeCapacityBytes":65536}"#;
        assert!(matches!(
            read_all(late_header_sizes).unwrap_err(),
            RangesFileError::Range(RangeError::SizeChanged { index: 1, .. })
        ));

        let zero = r#"{"blockMetadataType":"VARIABLE_LENGTH","volumeCapacityBytes":8192,
            "blockMetadata":[{"byteOffset":0}]}"#;
        assert!(matches!(
            read_all(zero).unwrap_err(),
            RangesFileError::Range(RangeError::ZeroSize { index: 0, .. })
        ));
    }

    #[test]
    fn refuses_malformed_files() {
        assert!(matches!(
            read_all("[1,2]").unwrap_err(),
            RangesFileError::Syntax(_)
        ));
        assert!(matches!(
            read_all(r#"{"blockMetadataType":"FIXED_LENGTH","volumeCapacityBytes":-1}"#)
                .unwrap_err(),
            RangesFileError::Syntax(_)
        ));
        assert!(matches!(
            read_all(r#"{"volumeCapacityBytes":4096}"#).unwrap_err(),
            RangesFileError::Missing("blockMetadataType")
        ));
        assert!(matches!(
            read_all(r#"{"blockMetadataType":"SOMETIMES","volumeCapacityBytes":4096}"#)
                .unwrap_err(),
            RangesFileError::Syntax(_)
        ));
        assert!(matches!(
            read_all(r#"{"blockMetadataType":"FIXED_LENGTH","volumeCapacityBytes":4096,"blockMetadata":[{"byteOffset":0,"sizeBytes":4096}"#).unwrap_err(),
            RangesFileError::Syntax(_)
        ));
    }

    #[test]
    fn callback_errors_stop_the_read() {
        let text = r#"{"blockMetadataType":"FIXED_LENGTH","volumeCapacityBytes":65536,
            "blockMetadata":[{"byteOffset":0,"sizeBytes":4096},{"byteOffset":4096,"sizeBytes":4096}]}"#;
        let mut seen = 0;
        let err = read_ranges_file(text.as_bytes(), |_| {
            seen += 1;
            Err::<(), _>(io::Error::other("device is smaller"))
        })
        .unwrap_err();
        assert_eq!(seen, 1);
        assert!(matches!(err, RangesFileError::Rejected(_)));
        assert!(err.to_string().contains("device is smaller"));
    }

    #[test]
    fn writer_output_reads_back() {
        let mut w =
            RangesFileWriter::new(Vec::new(), BlockMetadataType::FixedLength, 1 << 20).unwrap();
        for i in 0..10u64 {
            w.push(BlockRange::new(i * 8192, 4096)).unwrap();
        }
        assert!(
            w.push(BlockRange::new(0, 4096)).is_err(),
            "writer refuses disorder"
        );
        let bytes = w.finish().unwrap();
        let (h, ranges) = read_all(std::str::from_utf8(&bytes).unwrap()).unwrap();
        assert_eq!(h.capacity, 1 << 20);
        assert_eq!(ranges.len(), 10);
        assert_eq!(ranges[9], BlockRange::new(9 * 8192, 4096));
    }
}
