//! The restore's reads: each coalesced read is consumed as it arrives, its blobs opened,
//! checked and written in batches on workers; blobs whose pack a prune deleted are read where
//! the reloaded index places them.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::TryStreamExt;

use crate::device::Volume;
use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::index::{SharedIndex, RELOADS_PER_READ};
use crate::manifest::Manifest;
use crate::pack;
use crate::progress::Progress;
use crate::repo::Repository;

use super::plan::{in_no_pack, max_read_bytes, Coalescer, Fetch};

/// Bytes of whole blobs one worker opens and writes while the rest of a read arrives.
const DECODE_BATCH_BYTES: usize = 1 << 20;

/// A blob read from its pack, not yet opened.
struct Blob {
    slot: u64,
    id: ChunkId,
    sealed: Bytes,
    pack_key: Arc<str>,
}

/// Reads `fetch` as it arrives and hands every [`DECODE_BATCH_BYTES`] of whole blobs to a
/// worker, one batch being written while the next arrives; when its pack is gone, reads the
/// blobs where the reloaded index says.
#[allow(clippy::too_many_arguments)]
pub(super) async fn fetch_and_write(
    repo: &Repository,
    index: &SharedIndex,
    manifest: &Manifest,
    target: Arc<Volume>,
    fetch: Fetch,
    chunk_size: u64,
    size: u64,
    progress: Option<Arc<dyn Progress>>,
) -> Result<(u64, u64)> {
    let key: Arc<str> = pack::pack_key(&fetch.pack).into();
    let mut pieces = match repo
        .store()
        .get_range_stream(&key, fetch.start..fetch.end)
        .await
    {
        Ok(pieces) => pieces,
        Err(e) if e.is_not_found() => {
            let wanted = fetch
                .items
                .iter()
                .map(|(slot, id, ..)| (*slot, *id))
                .collect();
            let blobs =
                read_moved(repo, index, manifest, fetch.pack, fetch.generation, wanted).await?;
            return write_blobs(repo.clone(), target, blobs, chunk_size, size, progress).await;
        }
        Err(e) => return Err(e.into()),
    };
    let items = fetch.items;
    let ends = batch_ends(&items, DECODE_BATCH_BYTES);
    let mut cutter = BlobCutter::default();
    // Blobs of the batch being cut, and batches cut whole, waiting for a worker.
    let mut cut: Vec<Blob> = Vec::new();
    let mut whole: Vec<Vec<Blob>> = Vec::new();
    let mut batch = 0usize;
    let mut writing: Option<tokio::task::JoinHandle<Result<(u64, u64)>>> = None;
    let (mut written, mut chunks) = (0u64, 0u64);
    while cutter.next < items.len() {
        let Some(piece) = pieces.try_next().await? else {
            break;
        };
        cutter.feed(&items, piece, |i, sealed| {
            let (slot, id, ..) = items[i];
            cut.push(Blob {
                slot,
                id,
                sealed,
                pack_key: Arc::clone(&key),
            });
            if ends.get(batch) == Some(&(i + 1)) {
                whole.push(std::mem::take(&mut cut));
                batch += 1;
            }
        });
        // Batches that one piece completed together (a local read is one piece) go to one
        // worker: one write buffer and one thread per read, as many as there are reads.
        if !whole.is_empty() {
            let blobs: Vec<Blob> = whole.drain(..).flatten().collect();
            let task = tokio::spawn(write_blobs(
                repo.clone(),
                Arc::clone(&target),
                blobs,
                chunk_size,
                size,
                progress.clone(),
            ));
            if let Some(previous) = writing.replace(task) {
                let (w, c) = join_write(previous).await?;
                written += w;
                chunks += c;
            }
        }
    }
    if let Some(last) = writing {
        let (w, c) = join_write(last).await?;
        written += w;
        chunks += c;
    }
    if cutter.next != items.len() {
        return Err(Error::corrupt_object(
            &key,
            format!("pack {key} ended before the chunks the index places in it"),
        ));
    }
    Ok((written, chunks))
}

/// Cuts the blobs at `items` (slot, id, offset in the read range, length; in offset order)
/// out of the pieces a read arrives in: a blob within one piece is a slice of it, no copy; a
/// blob split across pieces is gathered in a buffer of its exact size.
#[derive(Default)]
struct BlobCutter {
    /// Offset in the range of the next piece's first byte.
    at: usize,
    /// The next item to cut.
    next: usize,
    /// What has arrived of item `next`, when it started in an earlier piece.
    partial: Vec<u8>,
}

impl BlobCutter {
    /// Takes the next piece of the range; `done(item, sealed)` gets each blob it completes.
    fn feed(
        &mut self,
        items: &[(u64, ChunkId, usize, usize)],
        piece: Bytes,
        mut done: impl FnMut(usize, Bytes),
    ) {
        let start = self.at;
        let end = start + piece.len();
        self.at = end;
        while let Some(&(_, _, at, len)) = items.get(self.next) {
            if at >= end {
                break;
            }
            let (from, to) = (at.max(start), (at + len).min(end));
            if self.partial.is_empty() && from == at && to == at + len {
                done(self.next, piece.slice(at - start..to - start));
            } else {
                if self.partial.capacity() == 0 {
                    self.partial.reserve_exact(len);
                }
                self.partial
                    .extend_from_slice(&piece[from - start..to - start]);
                if to < at + len {
                    break;
                }
                done(self.next, Bytes::from(std::mem::take(&mut self.partial)));
            }
            self.next += 1;
        }
    }
}

/// Where each decode batch of `items` (slot, id, offset, length; in offset order) ends, as
/// exclusive item indices: whole blobs, each batch reaching at least `batch_bytes` past the
/// previous one's end, the last one whatever is left.
fn batch_ends(items: &[(u64, ChunkId, usize, usize)], batch_bytes: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut base = 0;
    for (i, &(_, _, at, len)) in items.iter().enumerate() {
        if at + len - base >= batch_bytes {
            ends.push(i + 1);
            base = at + len;
        }
    }
    if !items.is_empty() && ends.last() != Some(&items.len()) {
        ends.push(items.len());
    }
    ends
}

async fn join_write(task: tokio::task::JoinHandle<Result<(u64, u64)>>) -> Result<(u64, u64)> {
    task.await
        .map_err(|e| Error::Internal(format!("write task failed: {e}")))?
}

/// Opens, checks and writes `blobs` on a worker thread.
async fn write_blobs(
    repo: Repository,
    target: Arc<Volume>,
    blobs: Vec<Blob>,
    chunk_size: u64,
    size: u64,
    progress: Option<Arc<dyn Progress>>,
) -> Result<(u64, u64)> {
    tokio::task::spawn_blocking(move || {
        target.write_batch(|writer| {
            let mut written = 0u64;
            let mut chunks = 0u64;
            for Blob {
                slot,
                id,
                sealed,
                pack_key: key,
            } in &blobs
            {
                let offset = slot * chunk_size;
                let expected = chunk_size.min(size - offset) as usize;
                writer.write_in_place(offset, expected, |out| {
                    pack::decode_blob_into(repo.sealer(), repo.hasher(), id, sealed, out).map_err(
                        |e| {
                            Error::corrupt_object(
                                key,
                                format!("{e} (volume offset {offset}, pack {key})"),
                            )
                        },
                    )
                })?;
                written += expected as u64;
                chunks += 1;
                if let Some(p) = &progress {
                    p.advance(expected as u64);
                }
            }
            Ok((written, chunks))
        })
    })
    .await
    .map_err(|e| Error::Internal(format!("write task failed: {e}")))?
}

/// Reads the chunks `wanted` (slot, id) of the pack `gone`, which a prune deleted after
/// `generation` of the index was loaded: reloads the index, looks each chunk up again and reads
/// it from its new pack, neighbours coalesced. A chunk the reloaded index places in no pack is
/// missing; one whose pack is still gone after [`RELOADS_PER_READ`] reloads too.
async fn read_moved(
    repo: &Repository,
    index: &SharedIndex,
    manifest: &Manifest,
    gone: ChunkId,
    mut generation: u64,
    mut wanted: Vec<(u64, ChunkId)>,
) -> Result<Vec<Blob>> {
    let mut blobs = Vec::with_capacity(wanted.len());
    let mut gone = vec![gone];
    for _ in 0..RELOADS_PER_READ {
        let (fresh, fresh_generation) = index.reload_after(generation).await?;
        generation = fresh_generation;
        let mut fetches = Coalescer::new(max_read_bytes(repo.store()));
        let mut located = Vec::with_capacity(wanted.len());
        let mut still_gone = Vec::new();
        for (slot, id) in wanted.drain(..) {
            let location = fresh
                .get(&id)
                .ok_or_else(|| in_no_pack(&id, slot, manifest))?;
            let pack = fresh.pack_name(location.pack);
            if gone.contains(&pack) {
                // An index loaded before the pack went: the next reload is newer.
                still_gone.push((slot, id));
            } else {
                located.push((pack, location.offset, location.length, slot, id));
            }
        }
        located.sort_unstable_by_key(|l| (l.0, l.1));
        for (pack, offset, length, slot, id) in located {
            fetches.add(slot, id, pack, generation, offset, length);
        }
        fetches.send_all();
        wanted = still_gone;
        for fetch in fetches.queue {
            let key: Arc<str> = pack::pack_key(&fetch.pack).into();
            match repo.store().get_range(&key, fetch.start..fetch.end).await {
                Ok(bytes) => {
                    blobs.extend(fetch.items.into_iter().map(|(slot, id, at, len)| Blob {
                        slot,
                        id,
                        sealed: bytes.slice(at..at + len),
                        pack_key: Arc::clone(&key),
                    }))
                }
                Err(e) if e.is_not_found() => {
                    gone.push(fetch.pack);
                    wanted.extend(fetch.items.iter().map(|(slot, id, ..)| (*slot, *id)));
                }
                Err(e) => return Err(e.into()),
            }
        }
        if wanted.is_empty() {
            return Ok(blobs);
        }
    }
    let (slot, id) = wanted[0];
    let packs: Vec<String> = gone.iter().map(pack::pack_key).collect();
    Err(Error::Missing {
        key: (packs.len() == 1).then(|| packs[0].clone()),
        reason: format!(
        "chunk {id} (volume offset {}) of backup {} is in a pack that does not exist ({}), even \
         after reloading the repository index; run `s3mover verify`",
        slot * manifest.chunk_size,
        manifest.id,
        packs.join(", ")
    ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(spans: &[(usize, usize)]) -> Vec<(u64, ChunkId, usize, usize)> {
        spans
            .iter()
            .enumerate()
            .map(|(i, &(at, len))| (i as u64, ChunkId([i as u8; 32]), at, len))
            .collect()
    }

    #[test]
    fn batches_end_on_whole_blobs_past_the_batch_size() {
        // Blobs of 40 bytes with 10-byte gaps, batches of at least 100 bytes.
        let blobs = items(&[
            (0, 40),
            (50, 40),
            (100, 40),
            (150, 40),
            (200, 40),
            (250, 40),
        ]);
        // 0..140 (3 blobs), then 140..240 (2 blobs: 100 bytes past 140), then the rest.
        assert_eq!(batch_ends(&blobs, 100), [3, 5, 6]);
        assert_eq!(batch_ends(&blobs, 1000), [6], "one batch when all fit");
        assert_eq!(
            batch_ends(&blobs, 1),
            [1, 2, 3, 4, 5, 6],
            "one blob per batch"
        );
        assert!(batch_ends(&[], 100).is_empty());
    }

    /// Whatever the pieces' sizes, every blob comes out whole and in order, gaps skipped, and
    /// a blob inside one piece is a slice of it.
    #[test]
    fn blobs_are_cut_whole_from_pieces_of_any_size() {
        let range: Bytes = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
        let blobs = items(&[(0, 100), (100, 250), (400, 30), (430, 400), (900, 100)]);
        for piece_len in [1, 7, 99, 100, 101, 256, 430, 1000] {
            let mut cutter = BlobCutter::default();
            let mut out: Vec<(usize, Bytes)> = Vec::new();
            for start in (0..range.len()).step_by(piece_len) {
                let piece = range.slice(start..(start + piece_len).min(range.len()));
                let piece_ptr = piece.as_ptr_range();
                cutter.feed(&blobs, piece, |i, sealed| {
                    let inside = piece_ptr.contains(&sealed.as_ptr());
                    let (_, _, at, len) = blobs[i];
                    if (at / piece_len) == ((at + len - 1) / piece_len) {
                        assert!(inside, "blob {i} lies in one piece of {piece_len}: a slice");
                    }
                    out.push((i, sealed));
                });
            }
            assert_eq!(cutter.next, blobs.len(), "pieces of {piece_len}");
            for (n, (i, sealed)) in out.iter().enumerate() {
                let (_, _, at, len) = blobs[*i];
                assert_eq!(*i, n, "in order");
                assert_eq!(
                    sealed,
                    &range.slice(at..at + len),
                    "blob {i}, pieces of {piece_len}"
                );
            }
        }
    }

    #[test]
    fn a_range_that_ends_early_leaves_blobs_uncut() {
        let blobs = items(&[(0, 10), (10, 10)]);
        let mut cutter = BlobCutter::default();
        let mut cut = 0;
        cutter.feed(&blobs, Bytes::from_static(&[1u8; 15]), |_, _| cut += 1);
        assert_eq!(
            (cut, cutter.next),
            (1, 1),
            "the second blob is not complete"
        );
    }
}
