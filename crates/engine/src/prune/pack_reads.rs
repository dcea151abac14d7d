//! How prune reads the packs it repacks: each pack's header from its end, then only its live
//! blobs, in reads of at most [`READ_BYTES`], a few of them ahead of the one being copied.
//!
//! Reading live ranges instead of whole packs bounds the memory of repacking by the reads in
//! flight (a few MiB each) rather than by whole 16 MiB packs, and skips the dead stretches of
//! a pack. On a local directory the reads bypass the page cache
//! ([`crate::storage::Store::get_range_uncached`]): a pack is copied once and then deleted.

use std::ops::Range;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};

use crate::error::{Error, Result};
use crate::gc;
use crate::id::ChunkId;
use crate::pack::{self, PackEntry};
use crate::repo::Repository;

/// Most bytes of one read: live blobs that lie close together are read together up to this.
/// Three alignment blocks short of 4 MiB, so that a direct read's aligned buffer (the range
/// widened to whole 4 KiB blocks, and one more block to align its start) is never over 4 MiB
/// and every read reuses the same size of pooled buffer.
pub(crate) const READ_BYTES: u64 = (4 << 20) - 3 * crate::storage::direct_io::ALIGN as u64;
/// Dead bytes between two live blobs that are read through rather than starting another read.
const MAX_GAP_BYTES: u64 = 256 << 10;
/// Reads in flight or done ahead of the one being copied.
const READS_AHEAD: usize = 2;
/// Pack headers read ahead.
const HEADERS_AHEAD: usize = 2;
/// The end of a pack read first for its header: enough for the headers of packs of up to ~1,400
/// blobs (64 KiB chunks make ~260); a longer header takes a second read.
const TAIL_BYTES: u64 = 64 << 10;

/// A pack to repack: its name, listed size, the sorted prefixes of the ids removed from it,
/// and the index objects that name it (read for its blobs when its own header is damaged).
pub(crate) struct PackToCopy<'a> {
    pub name: ChunkId,
    pub size: u64,
    pub removed: &'a [u64],
    pub index_objects: Vec<String>,
}

/// One step of copying a pack: a read of its live blobs, or the news that the pack is gone.
pub(crate) enum CopyStep {
    /// Live blobs of pack number `pack` (its position in the list given to [`read_live_blobs`]),
    /// and the bytes of `range`, in which each blob's `offset` lies. `last` marks the pack's last
    /// read (a pack without live blobs has one read of nothing).
    Blobs {
        pack: usize,
        range: Range<u64>,
        blobs: Vec<PackEntry>,
        bytes: Bytes,
        last: bool,
    },
    /// Pack number `pack` no longer exists.
    Gone { pack: usize },
    /// The header of a pack does not open (`reason`, which names the pack): its blobs were
    /// located through the index objects that name it instead, and the copy gives them a sound
    /// header.
    DamagedHeader { reason: String },
}

impl CopyStep {
    /// A blob's bytes within this step's read.
    pub(crate) fn blob<'s>(&'s self, entry: &PackEntry, key: &str) -> Result<&'s [u8]> {
        let CopyStep::Blobs { range, bytes, .. } = self else {
            return Err(Error::Internal("no bytes in this step".into()));
        };
        let start = entry.offset.checked_sub(range.start);
        start
            .and_then(|start| bytes.get(start as usize..start as usize + entry.length as usize))
            .ok_or_else(|| Error::corrupt(format!("{key}: blob beyond its read")).with_key(key))
    }
}

/// The live blobs of `packs`, read in order, a few reads ahead of the caller.
pub(crate) fn read_live_blobs<'a>(
    repo: &'a Repository,
    packs: Vec<PackToCopy<'a>>,
) -> BoxStream<'a, Result<CopyStep>> {
    stream::iter(packs.into_iter().enumerate())
        .map(move |(at, pack)| async move {
            let key = pack::pack_key(&pack.name);
            let located = locate_blobs(repo, &pack, &key).await;
            let plan = located.and_then(|found| match found {
                Some((entries, body_end, damage)) => {
                    plan_reads(entries, pack.removed, body_end, &key).map(|r| Some((r, damage)))
                }
                None => Ok(None),
            });
            (at, key, plan)
        })
        .buffered(HEADERS_AHEAD)
        .flat_map(|(at, key, plan)| {
            let reads: Vec<Result<PlannedRead>> = match plan {
                Ok(None) => vec![Ok(PlannedRead::gone(at, key))],
                Ok(Some((mut reads, damage))) => {
                    // A pack without live blobs has one read of nothing.
                    if reads.is_empty() {
                        reads.push((0..0, Vec::new()));
                    }
                    let count = reads.len();
                    let report =
                        damage.map(|reason| Ok(PlannedRead::damaged(at, key.clone(), reason)));
                    report
                        .into_iter()
                        .chain(reads.into_iter().enumerate().map(|(i, (range, blobs))| {
                            Ok(PlannedRead {
                                pack: at,
                                key: key.clone(),
                                range: Some(range),
                                blobs,
                                last: i + 1 == count,
                                damage: None,
                            })
                        }))
                        .collect()
                }
                Err(e) => vec![Err(e)],
            };
            stream::iter(reads)
        })
        .map(move |planned| async move { planned?.fetch(repo).await })
        .buffered(READS_AHEAD)
        .boxed()
}

/// The blobs of a pack and where they end, from its header; when the header does not open,
/// from the index objects that name the pack (bounded by the pack's size), with why. `None`
/// when the pack does not exist.
async fn locate_blobs(
    repo: &Repository,
    pack: &PackToCopy<'_>,
    key: &str,
) -> Result<Option<(Vec<PackEntry>, u64, Option<String>)>> {
    let reason = match read_header_from_end(repo, key, pack.size).await {
        Ok(found) => return Ok(found.map(|(entries, end)| (entries, end, None))),
        Err(Error::Corrupt { reason, .. }) => reason,
        Err(e) => return Err(e),
    };
    let mut entries = Vec::new();
    for object in &pack.index_objects {
        let read = crate::index::read_index_entries(repo, object, |name, entry| {
            if *name == pack.name {
                entries.push(entry);
            }
        })
        .await;
        match read {
            Ok(()) => {}
            Err(e) if crate::index::is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    entries.sort_by_key(|e| (e.offset, e.id));
    entries.dedup();
    if entries.is_empty() {
        return Err(Error::corrupt(format!(
            "{reason}; no index object lists its blobs either"
        )));
    }
    let reason = format!("{reason}; its blobs were copied from where the index places them");
    tracing::warn!("{reason}");
    Ok(Some((entries, pack.size, Some(reason))))
}

/// A read decided on from a pack's header, not yet made.
struct PlannedRead {
    pack: usize,
    key: String,
    /// `None` when the pack was found gone while reading its header.
    range: Option<Range<u64>>,
    blobs: Vec<PackEntry>,
    last: bool,
    /// Set on the step that only reports a damaged header.
    damage: Option<String>,
}

impl PlannedRead {
    fn gone(pack: usize, key: String) -> Self {
        PlannedRead {
            pack,
            key,
            range: None,
            blobs: Vec::new(),
            last: true,
            damage: None,
        }
    }

    fn damaged(pack: usize, key: String, reason: String) -> Self {
        PlannedRead {
            pack,
            key,
            range: None,
            blobs: Vec::new(),
            last: false,
            damage: Some(reason),
        }
    }

    async fn fetch(self, repo: &Repository) -> Result<CopyStep> {
        if let Some(reason) = self.damage {
            return Ok(CopyStep::DamagedHeader { reason });
        }
        let Some(range) = self.range else {
            return Ok(CopyStep::Gone { pack: self.pack });
        };
        let bytes = if range.is_empty() {
            Bytes::new()
        } else {
            match repo
                .store()
                .get_range_uncached(&self.key, range.clone())
                .await
            {
                Ok(bytes) => bytes,
                Err(e) if e.is_not_found() => return Ok(CopyStep::Gone { pack: self.pack }),
                Err(e) => return Err(e.into()),
            }
        };
        Ok(CopyStep::Blobs {
            pack: self.pack,
            range,
            blobs: self.blobs,
            bytes,
            last: self.last,
        })
    }
}

/// Reads the entries of a pack from its own header and where its blobs end (the header's
/// start); `None` when the pack does not exist. One read of the pack's end, and a second when
/// the header is longer than that.
pub(crate) async fn read_header_from_end(
    repo: &Repository,
    key: &str,
    size: u64,
) -> Result<Option<(Vec<PackEntry>, u64)>> {
    let trailer = pack::TRAILER_LEN as u64;
    if size < trailer {
        return Err(Error::corrupt(format!("{key} is too short to be a pack")).with_key(key));
    }
    let tail_start = size.saturating_sub(TAIL_BYTES);
    let tail = match repo.store().get_range(key, tail_start..size).await {
        Ok(tail) => tail,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let header_len = pack::sealed_header_len(&tail)
        .map_err(|e| Error::corrupt(format!("{key}: {e}")).with_key(key))?
        as u64;
    let body_end = (size - trailer).checked_sub(header_len).ok_or_else(|| {
        Error::corrupt(format!("{key}: header length exceeds the pack")).with_key(key)
    })?;
    let suffix = if body_end >= tail_start {
        tail
    } else {
        match repo.store().get_range(key, body_end..size).await {
            Ok(suffix) => suffix,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    };
    // The header parser reads from the end, so a suffix holding the header will do.
    let entries = pack::read_pack_header(repo.sealer(), &suffix)
        .map_err(|e| Error::corrupt(format!("{key}: {e}")).with_key(key))?;
    Ok(Some((entries, body_end)))
}

/// Groups a pack's live blobs (those whose id prefix is not in the sorted `removed`) into
/// reads: neighbours closer than [`MAX_GAP_BYTES`] share a read of at most [`READ_BYTES`] (a
/// single larger blob gets a read of its own). Blobs reaching past `body_end` make the pack
/// corrupt.
fn plan_reads(
    mut entries: Vec<PackEntry>,
    removed: &[u64],
    body_end: u64,
    key: &str,
) -> Result<Vec<(Range<u64>, Vec<PackEntry>)>> {
    entries.retain(|entry| removed.binary_search(&gc::prefix(&entry.id)).is_err());
    entries.sort_by_key(|entry| entry.offset);
    let mut reads: Vec<(Range<u64>, Vec<PackEntry>)> = Vec::new();
    for entry in entries {
        let end = entry
            .offset
            .checked_add(u64::from(entry.length))
            .filter(|end| *end <= body_end)
            .ok_or_else(|| Error::corrupt(format!("{key}: blob beyond the pack")).with_key(key))?;
        match reads.last_mut() {
            Some((range, blobs))
                if entry.offset >= range.end
                    && entry.offset - range.end <= MAX_GAP_BYTES
                    && end - range.start <= READ_BYTES =>
            {
                range.end = end;
                blobs.push(entry);
            }
            _ => reads.push((entry.offset..end, vec![entry])),
        }
    }
    Ok(reads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::BlobKind;

    fn entry(byte: u8, offset: u64, length: u32) -> PackEntry {
        PackEntry {
            id: ChunkId([byte; 32]),
            kind: BlobKind::Data,
            offset,
            length,
        }
    }

    fn ranges(reads: &[(Range<u64>, Vec<PackEntry>)]) -> Vec<Range<u64>> {
        reads.iter().map(|(r, _)| r.clone()).collect()
    }

    #[test]
    fn neighbours_share_a_read_up_to_the_limit() {
        let blob = 1u32 << 20;
        let entries: Vec<_> = (0..10u8)
            .map(|i| entry(i, u64::from(i) * u64::from(blob), blob))
            .collect();
        let reads = plan_reads(entries, &[], 10 << 20, "p").unwrap();
        // 1 MiB blobs: three fit in a read, a fourth would pass READ_BYTES.
        assert_eq!(
            ranges(&reads),
            vec![
                0..3 << 20,
                3 << 20..6 << 20,
                6 << 20..9 << 20,
                9 << 20..10 << 20
            ]
        );
        assert_eq!(reads.iter().map(|(_, b)| b.len()).sum::<usize>(), 10);
    }

    #[test]
    fn removed_blobs_and_wide_gaps_split_reads() {
        let entries = vec![
            entry(1, 0, 1000),
            entry(2, 1000, 1000),
            entry(3, 2000, 1 << 20),
            entry(4, 2000 + (1 << 20), 1000),
        ];
        let removed = vec![gc::prefix(&ChunkId([3; 32]))];
        let reads = plan_reads(entries, &removed, 4 << 20, "p").unwrap();
        // Blob 3 is removed: the 1 MiB gap it leaves is wider than MAX_GAP_BYTES.
        assert_eq!(
            ranges(&reads),
            vec![0..2000, 2000 + (1 << 20)..3000 + (1 << 20)]
        );
    }

    #[test]
    fn a_blob_larger_than_a_read_gets_its_own_and_order_follows_offsets() {
        let entries = vec![entry(2, 100, 5 << 20), entry(1, 0, 100)];
        let reads = plan_reads(entries, &[], 6 << 20, "p").unwrap();
        assert_eq!(ranges(&reads), vec![0..100, 100..100 + (5 << 20)]);
    }

    #[test]
    fn a_blob_past_the_header_is_corruption() {
        let err = plan_reads(vec![entry(1, 0, 2000)], &[], 1500, "packs/ab/x").unwrap_err();
        assert!(err.to_string().contains("beyond the pack"), "{err}");
        assert_eq!(
            err.object_key(),
            Some("packs/ab/x"),
            "the pack is named as a field"
        );
        let err = plan_reads(vec![entry(1, u64::MAX, 2)], &[], 1500, "p").unwrap_err();
        assert!(err.to_string().contains("beyond the pack"), "{err}");
    }

    #[test]
    fn a_pack_with_nothing_live_plans_no_read() {
        let entries = vec![entry(1, 0, 10)];
        let removed = vec![gc::prefix(&ChunkId([1; 32]))];
        assert!(plan_reads(entries, &removed, 10, "p").unwrap().is_empty());
    }
}
