//! A bounded fuzz run of the ranges-file reader: arbitrary bytes, and JSON of the right shape
//! with hostile numbers, strings and orders. The reader must return (a range list or an error)
//! and never panic, and every range it hands out must lie inside the capacity it reports.

use proptest::prelude::*;
use s3mover_ranges::read_ranges_file;

/// A JSON number or string at a boundary, or garbage.
fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        prop::sample::select(vec![
            "0",
            "-1",
            "18446744073709551615",
            "18446744073709551616",
            "1e20",
            "1.5",
            "null",
            "true",
            "[]",
            "{}",
            "\"\"",
            "\"4096\"",
            "\"-4096\"",
            "\"FIXED_LENGTH\"",
            "\"VARIABLE_LENGTH\"",
            "1",
            "2",
            "3",
            "4096",
            "9223372036854775807",
        ])
        .prop_map(str::to_string),
    ]
}

fn range_entry() -> impl Strategy<Value = String> {
    (
        field_value(),
        field_value(),
        prop::sample::select(vec![
            ("byteOffset", "sizeBytes"),
            ("byte_offset", "size_bytes"),
        ]),
    )
        .prop_map(|(o, s, (ko, ks))| format!("{{\"{ko}\":{o},\"{ks}\":{s}}}"))
}

fn ranges_json() -> impl Strategy<Value = String> {
    (
        field_value(),
        field_value(),
        prop::collection::vec(range_entry(), 0..6),
        any::<bool>(),
    )
        .prop_map(|(kind, capacity, ranges, list_first)| {
            let list = format!("\"blockMetadata\":[{}]", ranges.join(","));
            let header = format!("\"blockMetadataType\":{kind},\"volumeCapacityBytes\":{capacity}");
            if list_first {
                format!("{{{list},{header}}}")
            } else {
                format!("{{{header},{list}}}")
            }
        })
}

fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut seen = Vec::new();
    let result = read_ranges_file(bytes, |range| {
        seen.push(range);
        Ok::<(), std::io::Error>(())
    });
    if let Ok(header) = result {
        for range in &seen {
            prop_assert!(
                range
                    .offset
                    .checked_add(range.size)
                    .is_some_and(|end| end <= header.capacity),
                "range {:?} outside capacity {}",
                range,
                header.capacity
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check(&bytes)?;
    }

    #[test]
    fn hostile_json_never_panics(text in ranges_json()) {
        check(text.as_bytes())?;
    }
}
