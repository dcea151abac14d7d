//! `s3mover cbt list`: print the ranges of a listing as a table or as the ranges-file JSON
//! (the same bytes `backup --changed-ranges` reads).

use std::io::Write;

use s3mover_ranges::{BlockMetadataType, RangesFileWriter};

use crate::{CbtError, Client, Selection, StreamOptions, StreamStats};

/// Output format of `cbt list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ListFormat {
    /// One row per range, like the upstream snapshot-metadata-lister's table.
    #[default]
    Table,
    /// The ranges-file JSON (proto3 JSON of a GetMetadata*Response merged over the stream).
    Json,
}

/// What a listing returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListSummary {
    /// Block metadata type; `None` when the server sent no message (nothing to list).
    pub kind: Option<BlockMetadataType>,
    /// Volume capacity; `None` when the server sent no message.
    pub capacity: Option<u64>,
    /// Number of ranges.
    pub ranges: u64,
    /// Sum of the range sizes.
    pub bytes: u64,
    /// Stream counters (calls, retries, completeness checks).
    pub stats: StreamStats,
}

fn werr(e: std::io::Error) -> CbtError {
    CbtError::io("cannot write the listing", e)
}

/// Lists the ranges of `sel` into `out`.
///
/// With [`ListFormat::Json`] and an empty listing (the server sent no message, so neither type
/// nor capacity is known) the file says `FIXED_LENGTH` with `volumeCapacityBytes` 0 and no ranges.
pub async fn list<W: Write + Send>(
    sel: &Selection,
    opts: StreamOptions,
    format: ListFormat,
    out: W,
) -> Result<ListSummary, CbtError> {
    let client = Client::connect(&sel.endpoint).await?;
    let mut stream = client.ranges(sel.query.clone(), opts);
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    let header = stream.header().await?;
    let mut ranges = 0u64;
    let mut bytes = 0u64;
    match format {
        ListFormat::Json => {
            let (kind, capacity) = header.unwrap_or((BlockMetadataType::FixedLength, 0));
            let mut w = RangesFileWriter::new(&mut out, kind, capacity).map_err(werr)?;
            while let Some(batch) = stream.next_batch().await? {
                for r in batch {
                    w.push(r).map_err(werr)?;
                    ranges += 1;
                    bytes += r.size;
                }
            }
            w.finish().map_err(werr)?;
        }
        ListFormat::Table => {
            writeln!(
                out,
                "{:>7} {:>14} {:>17} {:>14} {:>14}",
                "Record#", "VolCapBytes", "BlockMetadataType", "ByteOffset", "SizeBytes"
            )
            .map_err(werr)?;
            writeln!(
                out,
                "{:->7} {:->14} {:->17} {:->14} {:->14}",
                "", "", "", "", ""
            )
            .map_err(werr)?;
            let mut record = 0u64;
            while let Some(batch) = stream.next_batch().await? {
                record += 1;
                let (kind, capacity) = (
                    stream.kind().map(|k| k.as_str()).unwrap_or(""),
                    stream.capacity().unwrap_or(0),
                );
                for r in batch {
                    writeln!(
                        out,
                        "{record:>7} {capacity:>14} {kind:>17} {:>14} {:>14}",
                        r.offset, r.size
                    )
                    .map_err(werr)?;
                    ranges += 1;
                    bytes += r.size;
                }
            }
        }
    }
    out.flush().map_err(werr)?;
    Ok(ListSummary {
        kind: stream.kind(),
        capacity: stream.capacity(),
        ranges,
        bytes,
        stats: stream.stats().clone(),
    })
}
