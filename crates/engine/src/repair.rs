//! `repair index`: rebuilds the index from the packs' own headers after index objects were
//! damaged.
//!
//! A damaged index object hides the blobs it listed: restores of the backups using them fail
//! ("in no pack"), and prune refuses to run, because it cannot tell which packs are in use.
//! Each pack ends with a sealed header listing its blobs, so the lost records can be rebuilt:
//! every pack that no readable index object names is read through its header and indexed
//! again in new index objects, and only then are the damaged objects deleted. It runs under
//! prune's lease, so no prune works meanwhile. A pack a running backup has not indexed yet may
//! end up in two index objects; readers and prune accept a pack listed more than once.

use std::collections::HashSet;

use serde::Serialize;

use crate::error::Result;
use crate::id::ChunkId;
use crate::index::{self, PackIndex};
use crate::pack::{self, PackEntry};
use crate::prune::pack_reads;
use crate::repo::Repository;

/// Packs per new index object.
const PACKS_PER_OBJECT: usize = 256;

/// What `repair index` found and did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexRepair {
    /// Damaged index objects, with why (deleted unless a dry run).
    pub damaged: Vec<String>,
    /// Packs indexed again from their headers.
    pub packs_reindexed: usize,
    /// Blobs those packs hold.
    pub blobs_reindexed: u64,
    /// Index objects written.
    pub index_objects_written: usize,
    /// Packs that no index names and whose header cannot be read, with why (left alone).
    pub unreadable_packs: Vec<String>,
    /// Nothing was changed.
    pub dry_run: bool,
}

/// Rebuilds the index records of every pack no readable index object names, then deletes the
/// damaged index objects.
pub async fn repair_index(repo: &Repository, dry_run: bool) -> Result<IndexRepair> {
    let lease = crate::gc::Lease::acquire(repo).await?;
    let result = rebuild(repo, dry_run).await;
    lease.release(repo).await?;
    result
}

async fn rebuild(repo: &Repository, dry_run: bool) -> Result<IndexRepair> {
    let index = PackIndex::load(repo).await?;
    let indexed: HashSet<ChunkId> = index.packs().iter().copied().collect();
    let mut report = IndexRepair {
        damaged: index.damaged.iter().map(|(_, why)| why.clone()).collect(),
        dry_run,
        ..IndexRepair::default()
    };
    let mut unindexed = index::list_packs(repo).await?;
    unindexed.retain(|(name, _)| !indexed.contains(name));
    unindexed.sort();
    let mut batch: Vec<(ChunkId, Vec<PackEntry>)> = Vec::new();
    for (name, size) in unindexed {
        let key = pack::pack_key(&name);
        match pack_reads::read_header_from_end(repo, &key, size).await {
            Ok(Some((entries, _))) => {
                report.packs_reindexed += 1;
                report.blobs_reindexed += entries.len() as u64;
                batch.push((name, entries));
            }
            // Deleted since the listing.
            Ok(None) => {}
            Err(e) => report
                .unreadable_packs
                .push(format!("{}: {e}", pack::pack_key(&name))),
        }
        if batch.len() >= PACKS_PER_OBJECT {
            report.index_objects_written += write(repo, &mut batch, dry_run).await?;
        }
    }
    report.index_objects_written += write(repo, &mut batch, dry_run).await?;
    if !dry_run {
        // Only once every pack is indexed again.
        for (key, _) in &index.damaged {
            repo.store().delete(key).await?;
        }
    }
    Ok(report)
}

async fn write(
    repo: &Repository,
    batch: &mut Vec<(ChunkId, Vec<PackEntry>)>,
    dry_run: bool,
) -> Result<usize> {
    if batch.is_empty() {
        return Ok(0);
    }
    if !dry_run {
        index::write_index_object(repo, batch).await?;
    }
    batch.clear();
    Ok(1)
}
