//! The restore's read plan: the tree's leaves, located through the shared index, become
//! coalesced ranged reads of their packs.

use std::collections::{HashMap, VecDeque};

use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::index::SharedIndex;
use crate::manifest::Manifest;
use crate::tree::Leaf;

/// Largest coalesced ranged read: a whole pack (data packs are 16 MiB, up to ~32 MiB with the
/// largest chunks), so a full restore reads each pack with one GET. Fewer, larger reads cost the
/// server less per byte (no block read twice at the seam of two ranges, fewer requests), and
/// streaming keeps the memory of one read small whatever its size.
const MAX_FETCH_BYTES: u64 = 32 << 20;
/// Largest coalesced read from a store that answers in one piece (a local directory): there a
/// read is held whole until it is written, so it stays small to bound memory (reads in flight
/// times this).
const MAX_WHOLE_READ_BYTES: u64 = 4 << 20;

/// One coalesced read: consecutive blobs of one pack.
pub(super) struct Fetch {
    pub(super) pack: ChunkId,
    /// The generation of the shared index the locations came from.
    pub(super) generation: u64,
    pub(super) start: u64,
    pub(super) end: u64,
    /// (slot, id, offset within the fetched bytes, length)
    pub(super) items: Vec<(u64, ChunkId, usize, usize)>,
}

/// Turns leaves into coalesced fetches (see [`Coalescer`]). Locations come from the shared
/// index's newest generation; a chunk in no pack of it makes the index reload once before the
/// restore fails.
pub(super) struct Planner<'m> {
    leaves: mpsc::Receiver<Leaf>,
    index: SharedIndex,
    manifest: &'m Manifest,
    fetches: Coalescer,
}

/// Bytes of unneeded data a coalesced read may skip over.
const MAX_GAP_BYTES: u64 = 1 << 20;
/// Packs with an open fetch at once; beyond this, every open fetch is sent.
const MAX_OPEN_PACKS: usize = 64;

pub(super) fn plan_fetches(
    leaves: mpsc::Receiver<Leaf>,
    index: SharedIndex,
    manifest: &Manifest,
    max_read_bytes: u64,
) -> Planner<'_> {
    Planner {
        leaves,
        index,
        manifest,
        fetches: Coalescer::new(max_read_bytes),
    }
}

impl Planner<'_> {
    pub(super) async fn next(&mut self) -> Result<Option<Fetch>> {
        loop {
            if let Some(fetch) = self.fetches.queue.pop_front() {
                return Ok(Some(fetch));
            }
            match self.leaves.recv().await {
                Some(leaf) => self.add_leaf(leaf).await?,
                None => {
                    self.fetches.send_all();
                    if self.fetches.queue.is_empty() {
                        return Ok(None);
                    }
                }
            }
        }
    }

    async fn add_leaf(&mut self, leaf: Leaf) -> Result<()> {
        let (mut index, mut generation) = self.index.current();
        for (j, id) in leaf.ids.iter().enumerate() {
            if id.is_zero() {
                continue;
            }
            let slot = leaf.first_slot + j as u64;
            let location = match index.get(id) {
                Some(location) => location,
                None => {
                    (index, generation) = self.index.reload_after(generation).await?;
                    index
                        .get(id)
                        .ok_or_else(|| in_no_pack(id, slot, self.manifest))?
                }
            };
            self.fetches.add(
                slot,
                *id,
                index.pack_name(location.pack),
                generation,
                location.offset,
                location.length,
            );
        }
        if self.fetches.open.len() > MAX_OPEN_PACKS {
            self.fetches.send_all();
        }
        Ok(())
    }
}

pub(super) fn in_no_pack(id: &ChunkId, slot: u64, manifest: &Manifest) -> Error {
    Error::missing(format!(
        "chunk {id} (volume offset {}) of backup {} is in no pack; run `s3mover verify`",
        slot * manifest.chunk_size,
        manifest.id
    ))
}

/// Gathers blobs into coalesced fetches. Each pack has one open fetch; a blob extends it when
/// it lies after it within [`MAX_GAP_BYTES`] (the gap is read and skipped), otherwise the open
/// fetch is queued and a new one begins. An incremental's blobs, mostly in its parents' packs
/// with small holes where chunks changed, so still come in few large reads.
pub(super) struct Coalescer {
    pub(super) open: HashMap<ChunkId, Fetch>,
    pub(super) queue: VecDeque<Fetch>,
    /// Largest read: see [`max_read_bytes`].
    pub(super) max_bytes: u64,
}

/// How large a coalesced read of `store` may be: a whole pack where reads stream, a few MiB
/// where a read is held whole until written.
pub(super) fn max_read_bytes(store: &crate::storage::Store) -> u64 {
    if store.streams_reads() {
        MAX_FETCH_BYTES
    } else {
        MAX_WHOLE_READ_BYTES
    }
}

impl Coalescer {
    pub(super) fn new(max_bytes: u64) -> Self {
        Coalescer {
            open: HashMap::new(),
            queue: VecDeque::new(),
            max_bytes,
        }
    }

    pub(super) fn add(
        &mut self,
        slot: u64,
        id: ChunkId,
        pack: ChunkId,
        generation: u64,
        start: u64,
        length: u32,
    ) {
        let end = start + u64::from(length);
        if let Some(fetch) = self.open.get_mut(&pack) {
            let fits = start >= fetch.end
                && start - fetch.end <= MAX_GAP_BYTES
                && end - fetch.start <= self.max_bytes;
            if fits {
                fetch
                    .items
                    .push((slot, id, (start - fetch.start) as usize, length as usize));
                fetch.end = end;
                return;
            }
        }
        let fresh = Fetch {
            pack,
            generation,
            start,
            end,
            items: vec![(slot, id, 0, length as usize)],
        };
        if let Some(done) = self.open.insert(pack, fresh) {
            self.queue.push_back(done);
        }
    }

    /// Queues every open fetch.
    pub(super) fn send_all(&mut self) {
        let all: Vec<Fetch> = self.open.drain().map(|(_, f)| f).collect();
        self.queue.extend(all);
    }
}
