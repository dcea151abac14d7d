//! Packing and uploading: sealed blobs go into packs, full packs upload in parallel, and every
//! few packs an index object records where the blobs went.
//!
//! Blobs are sealed on the blocking pool in batches of a few (see [`SEAL_BATCH_BLOBS`]): one
//! task per blob woke a thread per 64 KiB chunk, and the wake-ups cost more than the sealing of
//! small chunks. Memory is bounded by one batch being collected, `encode_ahead` batches being
//! sealed, one pack being filled and `max_uploads` packs in flight.
//!
//! # The tail of a backup
//!
//! A pack's upload starts only when the pack is full, and the backup commits only when every
//! upload is done, so the last pack's whole upload is time the backup waits with nothing else
//! to do. A packer that is told how much input is still to come ([`Packer::expect`]) cuts the
//! last packs smaller: each is about as large as what is estimated to follow it (see
//! [`tail_pack_target`]), so the final uploads are small and run beside the last reads. That
//! costs a few more PUTs per backup (about `log2(target / MIN_TAIL_PACK)`), never more packs
//! than the estimate allows for, and changes nothing in what a pack holds.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::task::{JoinHandle, JoinSet};

use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::pack::{self, BlobKind, PackBuilder, PackEntry};
use crate::repo::Repository;

/// A pack that reached the store.
#[derive(Debug, Clone)]
pub(crate) struct UploadedPack {
    /// BLAKE3 of the pack's bytes: its name in `packs/`.
    pub name: ChunkId,
    /// The blobs in the pack.
    pub entries: Vec<PackEntry>,
    /// The pack's size in bytes.
    pub size: u64,
}

/// A batch of blobs is sealed by one task when it holds this many blobs…
const SEAL_BATCH_BLOBS: usize = 4;
/// …or this many bytes, whichever comes first.
const SEAL_BATCH_BYTES: usize = 256 * 1024;

/// Blobs in sealing order: id and plaintext going in.
type Blobs = Vec<(ChunkId, Vec<u8>)>;
/// Id, plaintext length and sealed bytes coming out.
type SealedBlobs = Vec<(ChunkId, usize, Vec<u8>)>;

/// The smallest pack the tail of a backup is cut into.
pub const MIN_TAIL_PACK: usize = 4 << 20;

/// What a packer's caller expects: input (plaintext) bytes seen so far and still to come, at
/// most. Not every input byte becomes a packed byte (zero, unchanged or already stored chunks
/// are never packed, and compressible ones shrink), so the packer scales what is to come by
/// what it has packed per byte seen.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Outlook {
    /// Input bytes seen so far.
    pub input_seen: u64,
    /// Input bytes still to come, at most.
    pub input_remaining: u64,
}

impl Outlook {
    /// Packed bytes likely still to come, given `packed` bytes so far. Never below a quarter of
    /// the input to come, so that a volume whose changes all sit at its end (a low ratio so far)
    /// is cut into small packs only over its last `4 × target` bytes.
    fn estimated_rest(&self, packed: u64) -> u64 {
        let by_ratio = if self.input_seen == 0 {
            self.input_remaining
        } else {
            let ratio = packed as f64 / self.input_seen as f64;
            (self.input_remaining as f64 * ratio.min(1.0)) as u64
        };
        by_ratio.max(self.input_remaining / 4)
    }
}

/// The size at which the pack being filled ships: the full `target` while much is still to
/// come, else about what is estimated to follow (`rest`), but not below [`MIN_TAIL_PACK`].
/// Packs cut this way halve in size towards the end of the input. When less than half of
/// [`MIN_TAIL_PACK`] is left, it joins the pack being filled rather than make a tiny last pack.
pub(crate) fn tail_pack_target(target: usize, rest: u64) -> usize {
    let rest = usize::try_from(rest).unwrap_or(usize::MAX);
    if rest < MIN_TAIL_PACK / 2 {
        return target;
    }
    rest.max(MIN_TAIL_PACK).min(target)
}

/// Fills packs of one blob kind and uploads them.
pub(crate) struct Packer {
    repo: Repository,
    kind: BlobKind,
    target_size: usize,
    current: PackBuilder,
    /// Blobs collected for the next sealing task, and their bytes.
    batch: Blobs,
    batch_bytes: usize,
    encoding: VecDeque<JoinHandle<SealedBlobs>>,
    encode_ahead: usize,
    uploads: JoinSet<Result<UploadedPack>>,
    max_uploads: usize,
    completed: Vec<UploadedPack>,
    /// What the caller expects still to come, when it said (see [`Packer::expect`]).
    outlook: Option<Outlook>,
    /// Sealed blob bytes packed so far.
    packed_bytes: u64,
    /// Plaintext bytes queued for sealing and not packed yet: they follow the pack being filled.
    queued_bytes: u64,
    /// Packs uploaded so far.
    pub packs_uploaded: u64,
    /// Bytes of packs uploaded so far.
    pub bytes_uploaded: u64,
}

impl Packer {
    /// A packer for blobs of `kind`, aiming at packs of `target_size` bytes.
    pub(crate) fn new(
        repo: Repository,
        kind: BlobKind,
        target_size: usize,
        max_uploads: usize,
    ) -> Self {
        Packer {
            repo,
            kind,
            target_size,
            current: PackBuilder::new(kind, target_size + target_size / 8),
            batch: Vec::new(),
            batch_bytes: 0,
            encoding: VecDeque::new(),
            encode_ahead: 2,
            uploads: JoinSet::new(),
            max_uploads: max_uploads.max(1),
            completed: Vec::new(),
            outlook: None,
            packed_bytes: 0,
            queued_bytes: 0,
            packs_uploaded: 0,
            bytes_uploaded: 0,
        }
    }

    /// Tells the packer how much input is still to come, so it can cut the last packs smaller
    /// (see the module's documentation). Without it every pack but the last is full-size.
    pub(crate) fn expect(&mut self, outlook: Outlook) {
        self.outlook = Some(outlook);
    }

    /// Size at which the pack being filled ships.
    fn ship_size(&self) -> usize {
        match self.outlook {
            None => self.target_size,
            Some(outlook) => {
                // What is queued for sealing and the input still to come are packed after the
                // pack being filled.
                let rest = self.queued_bytes + outlook.estimated_rest(self.packed_bytes);
                tail_pack_target(self.target_size, rest)
            }
        }
    }

    /// Queues a blob: it is compressed and sealed on a worker thread, then packed.
    pub(crate) async fn add(&mut self, id: ChunkId, plaintext: Vec<u8>) -> Result<()> {
        self.batch_bytes += plaintext.len();
        self.queued_bytes += plaintext.len() as u64;
        self.batch.push((id, plaintext));
        if self.batch.len() >= SEAL_BATCH_BLOBS || self.batch_bytes >= SEAL_BATCH_BYTES {
            self.seal_batch();
        }
        while self.encoding.len() > self.encode_ahead {
            self.take_one_encoded().await?;
        }
        Ok(())
    }

    /// Starts sealing the collected blobs on the blocking pool.
    fn seal_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let blobs = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let sealer = Arc::clone(self.repo.sealer());
        self.encoding
            .push_back(tokio::task::spawn_blocking(move || {
                blobs
                    .into_iter()
                    .map(|(id, plaintext)| {
                        let sealed = pack::encode_blob(&sealer, &id, &plaintext);
                        (id, plaintext.len(), sealed)
                    })
                    .collect()
            }));
    }

    /// Packs the oldest sealed batch, shipping packs as they fill.
    async fn take_one_encoded(&mut self) -> Result<()> {
        let Some(handle) = self.encoding.pop_front() else {
            return Ok(());
        };
        let sealed_blobs = handle
            .await
            .map_err(|e| Error::Internal(format!("sealing task failed: {e}")))?;
        for (id, plaintext_len, sealed) in sealed_blobs {
            self.current.add(id, &sealed);
            self.packed_bytes += sealed.len() as u64;
            self.queued_bytes = self.queued_bytes.saturating_sub(plaintext_len as u64);
            if self.current.len() >= self.ship_size() {
                self.ship_current().await?;
            }
        }
        Ok(())
    }

    async fn ship_current(&mut self) -> Result<()> {
        if self.current.is_empty() {
            return Ok(());
        }
        // Wait for an upload slot before starting the next pack, so that the next pack can
        // reuse the buffer of the upload that finished (see `pack_buffers`).
        while self.uploads.len() >= self.max_uploads {
            self.reap_one().await?;
        }
        let capacity = self.target_size + self.target_size / 8;
        let builder = std::mem::replace(&mut self.current, PackBuilder::new(self.kind, capacity));
        let sealer = Arc::clone(self.repo.sealer());
        let store = self.repo.store().clone();
        // Naming the pack (a hash of all its bytes) and sealing its header happen in the upload
        // task, so the caller goes on packing the next blobs meanwhile.
        self.uploads.spawn(async move {
            let finished = tokio::task::spawn_blocking(move || builder.finish(&sealer))
                .await
                .map_err(|e| Error::Internal(format!("pack task failed: {e}")))?;
            let size = finished.bytes.len() as u64;
            store.put(&finished.key(), finished.bytes.clone()).await?;
            Ok(UploadedPack {
                name: finished.name,
                entries: finished.entries,
                size,
            })
        });
        Ok(())
    }

    async fn reap_one(&mut self) -> Result<()> {
        if let Some(joined) = self.uploads.join_next().await {
            let uploaded =
                joined.map_err(|e| Error::Internal(format!("upload task failed: {e}")))??;
            self.packs_uploaded += 1;
            self.bytes_uploaded += uploaded.size;
            self.completed.push(uploaded);
        }
        Ok(())
    }

    /// Packs uploaded since the last call, for the index.
    pub(crate) fn take_completed(&mut self) -> Vec<UploadedPack> {
        std::mem::take(&mut self.completed)
    }

    /// Bytes of the completed packs not yet taken.
    pub(crate) fn completed_bytes(&self) -> u64 {
        self.completed.iter().map(|pack| pack.size).sum()
    }

    /// Seals what is queued, uploads the last partial pack and waits for every upload.
    pub(crate) async fn finish(&mut self) -> Result<()> {
        self.seal_batch();
        while !self.encoding.is_empty() {
            self.take_one_encoded().await?;
        }
        self.ship_current().await?;
        while !self.uploads.is_empty() {
            self.reap_one().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn packs_are_full_size_until_little_is_left() {
        assert_eq!(tail_pack_target(16 * MIB, 100 * MIB as u64), 16 * MIB);
        assert_eq!(tail_pack_target(16 * MIB, 16 * MIB as u64), 16 * MIB);
        assert_eq!(tail_pack_target(16 * MIB, 5 * MIB as u64), 5 * MIB);
        assert_eq!(tail_pack_target(16 * MIB, 3 * MIB as u64), MIN_TAIL_PACK);
    }

    #[test]
    fn a_small_rest_joins_the_pack_being_filled() {
        let rest = (MIN_TAIL_PACK / 2 - 1) as u64;
        assert_eq!(tail_pack_target(16 * MIB, rest), 16 * MIB);
        assert_eq!(tail_pack_target(16 * MIB, 0), 16 * MIB);
    }

    #[test]
    fn packs_smaller_than_the_tail_minimum_stay_as_configured() {
        assert_eq!(tail_pack_target(MIB, 3 * MIB as u64), MIB);
        assert_eq!(tail_pack_target(MIB, 100 * MIB as u64), MIB);
    }

    #[test]
    fn the_rest_is_scaled_by_what_was_packed_per_byte_seen() {
        let outlook = Outlook {
            input_seen: 100,
            input_remaining: 1000,
        };
        // Nothing seen yet: everything to come may be packed.
        let fresh = Outlook {
            input_seen: 0,
            ..outlook
        };
        assert_eq!(fresh.estimated_rest(0), 1000);
        assert_eq!(outlook.estimated_rest(50), 500);
        // Sealing overhead never makes the estimate exceed the input to come.
        assert_eq!(outlook.estimated_rest(120), 1000);
    }

    #[test]
    fn the_rest_is_at_least_a_quarter_of_the_input_to_come() {
        // All changes at the end: nothing packed so far must not cut every pack small.
        let outlook = Outlook {
            input_seen: 1 << 40,
            input_remaining: 64 << 20,
        };
        assert_eq!(outlook.estimated_rest(0), 16 << 20);
    }
}
