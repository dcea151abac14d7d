//! Restoring a backup to a block device or a file: walk the tree, fetch blobs in parallel with
//! ranged reads (neighbours in a pack coalesced, up to a whole pack), check every id, then write
//! — neighbouring chunks gathered into one write, around the page cache when the target allows
//! it (see `Volume::write_batch`).
//!
//! A read is consumed as it arrives ([`Store::get_range_stream`]): every `DECODE_BATCH_BYTES`
//! of whole blobs go to a worker that opens, checks and writes them while the next arrive, so a
//! read as large as a pack holds little memory and its first chunks are written before its last
//! bytes are fetched.
//!
//! No lock keeps a prune away: it may repack a pack this restore planned to read and delete it.
//! A read that finds its pack gone reloads the shared index (`SharedIndex`, once for all
//! reads that fail together), looks its chunks up again and reads them where they are now,
//! checked like every other blob; tree pages do the same ([`PageReader`]).
//!
//! [`Store::get_range_stream`]: crate::storage::Store::get_range_stream
//!
//! The stages live in their own files: `plan.rs` turns the tree's leaves into coalesced reads,
//! `fetch.rs` reads them and opens, checks and writes their blobs (and finds blobs a prune
//! moved); this file opens the target and runs the pipeline.

mod fetch;
mod plan;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use crate::device::Volume;
use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::index::{PackIndex, SharedIndex};
use crate::manifest::Manifest;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::tree::{self, Leaf, PageReader};

use fetch::fetch_and_write;
use plan::{max_read_bytes, plan_fetches, Fetch};

/// Where and how to restore.
pub struct RestoreOptions {
    /// The device or file written.
    pub target: PathBuf,
    /// The device already reads as zeros: skip zeroing zero slots.
    pub assume_zeroed: bool,
    /// Replace an existing non-empty regular file.
    pub overwrite: bool,
    /// Ranged reads in flight (taken as 1 to 1024).
    pub concurrency: usize,
    /// Write to a block device even when it is mounted or held (see `Volume::open_target`).
    pub force: bool,
    /// Told of the bytes as they are written.
    pub progress: Option<Arc<dyn Progress>>,
}

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    /// The backup restored.
    pub id: String,
    /// Its volume.
    pub volume: String,
    /// The target, as given.
    pub target: String,
    /// The volume's size.
    pub size_bytes: u64,
    /// Bytes of non-zero chunks written.
    pub bytes_written: u64,
    /// Bytes left as holes or zeroed.
    pub zero_bytes: u64,
    /// Chunks written.
    pub chunks: u64,
    /// Seconds the restore took.
    pub seconds: f64,
    /// Bytes of the volume per second.
    pub throughput_bytes_per_second: f64,
    /// The backup's tree root: a digest of its whole content.
    pub digest: String,
    /// The requests the restore made (after the repository was opened).
    pub requests: crate::storage::RequestSnapshot,
}

/// Restores `manifest` to `options.target`.
pub async fn restore(
    repo: &Repository,
    manifest: &Manifest,
    options: RestoreOptions,
) -> Result<RestoreReport> {
    restore_from(repo, manifest, options, None).await
}

/// [`restore`] starting from an index loaded earlier (which a prune may have made stale since),
/// so that tests can run a prune between loading the index and reading packs.
#[doc(hidden)]
pub async fn restore_with_index(
    repo: &Repository,
    manifest: &Manifest,
    options: RestoreOptions,
    index: Arc<PackIndex>,
) -> Result<RestoreReport> {
    restore_from(repo, manifest, options, Some(index)).await
}

/// Restores, and removes the target file again when this restore created it and failed: a
/// failed restore leaves no empty or partial image that looks like a result.
async fn restore_from(
    repo: &Repository,
    manifest: &Manifest,
    options: RestoreOptions,
    index: Option<Arc<PackIndex>>,
) -> Result<RestoreReport> {
    let existed = std::fs::symlink_metadata(&options.target).is_ok();
    let target = options.target.clone();
    let result = restore_to_target(repo, manifest, options, index).await;
    if result.is_err() && !existed {
        let _ = std::fs::remove_file(&target);
    }
    result
}

async fn restore_to_target(
    repo: &Repository,
    manifest: &Manifest,
    mut options: RestoreOptions,
    index: Option<Arc<PackIndex>>,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let requests_before = repo.store().counts();
    options.concurrency = options.concurrency.clamp(1, 1024);
    let target = Arc::new(open_target(
        &options.target,
        manifest.size_bytes,
        options.overwrite,
        options.force,
    )?);
    let fresh_file = !target.is_block_device();
    let index = match index {
        Some(index) => SharedIndex::new(repo.clone(), index),
        None => SharedIndex::load(repo).await?,
    };
    for (_, reason) in &index.current().0.damaged {
        tracing::warn!(
            "damaged index object: {reason}; chunks it listed cannot be found until {}",
            crate::index::DAMAGED_INDEX_ADVICE
        );
    }
    let reader = PageReader::shared(repo.clone(), index.clone());
    let root = ChunkId::from_hex(&manifest.root).ok_or_else(|| {
        Error::corrupt_object(
            &crate::layout::manifest_key(&manifest.id),
            format!("manifest {} has an invalid root", manifest.id),
        )
    })?;
    if let Some(progress) = &options.progress {
        progress.start(manifest.size_bytes);
    }

    let (leaf_tx, leaf_rx) = mpsc::channel::<Leaf>(4);
    let walker = tree::walk_leaves(&reader, root, manifest.depth, manifest.slots, leaf_tx);
    let planner = plan_fetches(
        leaf_rx,
        index.clone(),
        manifest,
        max_read_bytes(repo.store()),
    );
    let (fetch_tx, fetch_rx) = mpsc::channel::<Fetch>(options.concurrency * 2);
    let plan_and_send = async {
        let mut planner = planner;
        while let Some(fetch) = planner.next().await? {
            if fetch_tx.send(fetch).await.is_err() {
                break;
            }
        }
        drop(fetch_tx);
        Ok::<_, Error>(())
    };
    let chunk_size = manifest.chunk_size;
    let size = manifest.size_bytes;
    let written = tokio_stream_from(fetch_rx)
        .map(|fetch| {
            fetch_and_write(
                repo,
                &index,
                manifest,
                Arc::clone(&target),
                fetch,
                chunk_size,
                size,
                options.progress.clone(),
            )
        })
        .buffer_unordered(options.concurrency)
        .try_fold((0u64, 0u64), |(bytes, chunks), (b, c)| async move {
            Ok((bytes + b, chunks + c))
        });
    let (walk_result, plan_result, write_result) = tokio::join!(walker, plan_and_send, written);
    walk_result.map_err(|e| match e {
        Error::Missing { key, reason } => Error::Missing {
            key,
            reason: format!("tree of backup {}: {reason}", manifest.id),
        },
        Error::Corrupt { key, reason } => Error::Corrupt {
            key,
            reason: format!("tree of backup {}: {reason}", manifest.id),
        },
        other => other,
    })?;
    plan_result?;
    let (bytes_written, chunks) = write_result?;

    let zero_bytes = manifest.size_bytes - bytes_written;
    if !fresh_file && !options.assume_zeroed {
        zero_unwritten(repo, &reader, &target, manifest, root).await?;
    }
    target.sync()?;
    if let Some(progress) = &options.progress {
        progress.finish();
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(RestoreReport {
        id: manifest.id.clone(),
        volume: manifest.volume.clone(),
        target: options.target.display().to_string(),
        size_bytes: manifest.size_bytes,
        bytes_written,
        zero_bytes,
        chunks,
        seconds,
        throughput_bytes_per_second: manifest.size_bytes as f64 / seconds.max(1e-9),
        digest: manifest.root.clone(),
        requests: repo.store().counts().since(&requests_before),
    })
}

fn open_target(path: &Path, size: u64, overwrite: bool, force: bool) -> Result<Volume> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            let volume = Volume::open_target(path, force)?;
            if volume.size() < size {
                return Err(Error::Invalid(format!(
                    "target {} holds {} bytes but the backup is {size} bytes; use a device at least as large",
                    path.display(),
                    volume.size()
                )));
            }
            Ok(volume)
        }
        Ok(meta) if meta.len() > 0 && !overwrite => Err(Error::Invalid(format!(
            "target file {} exists and is not empty; pass --overwrite to replace it",
            path.display()
        ))),
        _ => Volume::create_file_target(path, size),
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Zeroes the slots whose id is `ZERO` (on devices, or on files that were not created empty).
async fn zero_unwritten(
    _repo: &Repository,
    reader: &PageReader,
    target: &Volume,
    manifest: &Manifest,
    root: ChunkId,
) -> Result<()> {
    let chunk = manifest.chunk_size;
    let size = manifest.size_bytes;
    let mut zero_from: Option<u64> = None;
    let mut next_slot = 0u64;
    let flush = |from: u64, to: u64| -> Result<()> {
        let start = from * chunk;
        let end = (to * chunk).min(size);
        if end > start {
            target.zero_range(start, end - start)?;
        }
        Ok(())
    };
    let (tx, mut rx) = mpsc::channel::<Leaf>(4);
    let walk = tree::walk_leaves(reader, root, manifest.depth, manifest.slots, tx);
    let consume = async {
        while let Some(leaf) = rx.recv().await {
            // Slots between the previous leaf and this one are in zero subtrees.
            if leaf.first_slot > next_slot && zero_from.is_none() {
                zero_from = Some(next_slot);
            }
            for (j, id) in leaf.ids.iter().enumerate() {
                let slot = leaf.first_slot + j as u64;
                match (id.is_zero(), zero_from) {
                    (true, None) => zero_from = Some(slot),
                    (false, Some(from)) => {
                        flush(from, slot)?;
                        zero_from = None;
                    }
                    _ => {}
                }
            }
            next_slot = leaf.first_slot + leaf.ids.len() as u64;
        }
        if next_slot < manifest.slots && zero_from.is_none() {
            zero_from = Some(next_slot);
        }
        if let Some(from) = zero_from {
            flush(from, manifest.slots)?;
        }
        Ok::<_, Error>(())
    };
    let (walked, consumed) = tokio::join!(walk, consume);
    walked?;
    consumed
}
