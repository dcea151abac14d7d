//! Packing and uploading: sealed blobs go into packs, full packs upload in parallel, and every
//! few packs an index object records where the blobs went.
//!
//! Memory is bounded by `encode_ahead` blobs being sealed, one pack being filled and
//! `max_uploads` packs in flight.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::task::{JoinHandle, JoinSet};

use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::pack::{self, BlobKind, PackBuilder, PackEntry};
use crate::repo::Repository;

/// A pack that reached the store.
#[derive(Debug, Clone)]
pub struct UploadedPack {
    pub name: ChunkId,
    pub entries: Vec<PackEntry>,
    pub size: u64,
}

/// Fills packs of one blob kind and uploads them.
pub struct Packer {
    repo: Repository,
    kind: BlobKind,
    target_size: usize,
    current: PackBuilder,
    encoding: VecDeque<JoinHandle<(ChunkId, Vec<u8>)>>,
    encode_ahead: usize,
    uploads: JoinSet<Result<UploadedPack>>,
    max_uploads: usize,
    completed: Vec<UploadedPack>,
    /// Packs uploaded so far.
    pub packs_uploaded: u64,
    /// Bytes of packs uploaded so far.
    pub bytes_uploaded: u64,
}

impl Packer {
    /// A packer for blobs of `kind`, aiming at packs of `target_size` bytes.
    pub fn new(repo: Repository, kind: BlobKind, target_size: usize, max_uploads: usize) -> Self {
        Packer {
            repo,
            kind,
            target_size,
            current: PackBuilder::new(kind, target_size + target_size / 8),
            encoding: VecDeque::new(),
            encode_ahead: 4,
            uploads: JoinSet::new(),
            max_uploads: max_uploads.max(1),
            completed: Vec::new(),
            packs_uploaded: 0,
            bytes_uploaded: 0,
        }
    }

    /// Queues a blob: it is compressed and sealed on a worker thread, then packed.
    pub async fn add(&mut self, id: ChunkId, plaintext: Vec<u8>) -> Result<()> {
        let sealer = Arc::clone(self.repo.sealer());
        self.encoding
            .push_back(tokio::task::spawn_blocking(move || {
                let sealed = pack::encode_blob(&sealer, &id, &plaintext);
                (id, sealed)
            }));
        while self.encoding.len() > self.encode_ahead {
            self.take_one_encoded().await?;
        }
        Ok(())
    }

    async fn take_one_encoded(&mut self) -> Result<()> {
        if let Some(handle) = self.encoding.pop_front() {
            let (id, sealed) = handle
                .await
                .map_err(|e| Error::Invalid(format!("sealing task failed: {e}")))?;
            self.current.add(id, &sealed);
            if self.current.len() >= self.target_size {
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
                .map_err(|e| Error::Invalid(format!("pack task failed: {e}")))?;
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
                joined.map_err(|e| Error::Invalid(format!("upload task failed: {e}")))??;
            self.packs_uploaded += 1;
            self.bytes_uploaded += uploaded.size;
            self.completed.push(uploaded);
        }
        Ok(())
    }

    /// Packs uploaded since the last call, for the index.
    pub fn take_completed(&mut self) -> Vec<UploadedPack> {
        std::mem::take(&mut self.completed)
    }

    /// Number of completed packs not yet taken.
    pub fn completed_count(&self) -> usize {
        self.completed.len()
    }

    /// Seals what is queued, uploads the last partial pack and waits for every upload.
    pub async fn finish(&mut self) -> Result<()> {
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
