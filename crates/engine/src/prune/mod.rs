//! `prune`: two-phase, time-gated mark and sweep (`docs/format.md`, "Garbage collection").
//!
//! One run lists the repository once, marks every chunk and tree page reachable from every
//! backup and from every fresh `sessions/` object, and writes a *pending set* of the packs
//! older than the grace period that hold dead blobs (phase 1). Then, for every pending set at
//! least one grace period old (this run's own when the grace is zero), it writes a deletion
//! marker, lists `backups/` again, re-marks from the backups the pending set did not see, and
//! removes only blobs that are dead in the pending set, dead now and not re-marked (phase 2):
//! live blobs of partly dead packs are copied into new packs, the new index is written, index
//! objects naming removed packs are rewritten, and only then are packs deleted.
//!
//! One pipeline, its stages in their own modules ([`prune`]): `listing` lists the repository;
//! a prune (not a dry run) takes the lease and does its `housekeeping`; `plan` builds a
//! `PrunePlan` without writing anything — tree locations and marks (`mark`), each pack's use
//! (`usage`, with `duplicates` and `idset`), this run's pending set and the ripe sets. A dry
//! run reports the plan; a prune carries it out (`execute`, with `repack` and `pack_reads`
//! copying live blobs).
//!
//! Memory grows with the repository by 4 bytes per marked id (the mark set, module `idset`:
//! the top 52 bits of each id's prefix, built in place through a bounded buffer and dropped
//! once the packs are counted), 8 bytes per dead id of the packs a sweep may touch, and ~90
//! bytes per distinct tree page (locations and the pages visited); the rest is per pack or per
//! object. Index objects are decoded one pack's records at a time, and pending and removed sets
//! are written and read as compressed streams. No map of every chunk's location is ever built.

mod duplicates;
mod execute;
mod housekeeping;
mod idset;
mod listing;
mod mark;
pub(crate) mod pack_reads;
mod plan;
mod repack;
mod usage;

use serde::Serialize;
use time::Duration;

use crate::error::Result;
use crate::gc::{self, Lease};
use crate::layout::session::SESSION_PROTECT_SECONDS;
use crate::repo::Repository;
use housekeeping::{remove_leftovers, remove_orphan_tree_tables, tidy_markers};
use listing::Listing;
use plan::PrunePlan;

/// The least time a backup's uploads are protected whatever the grace: packs that no index
/// object names are removed only once older than the grace and this, and a session protects
/// its chunks for at least this after its last update. A running backup indexes its packs and
/// updates its session every 64 MiB of new data, normally well within it; one slower than that
/// whose uploads go is withdrawn by its post-commit check and rerun (nothing is lost).
pub const UPLOAD_PROTECT_FLOOR_SECONDS: i64 = 15 * 60;

/// How long a session protects the chunks it lists under a grace of `grace` seconds.
fn session_protect_seconds(grace: i64) -> i64 {
    grace.clamp(UPLOAD_PROTECT_FLOOR_SECONDS, SESSION_PROTECT_SECONDS)
}

/// How to prune.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Packs younger than this are never candidates, and a pending set is swept only once it
    /// is this old.
    pub grace: Duration,
    /// A partly used pack is repacked when more than this fraction (0..=1) of it is unused.
    pub max_unused: f64,
    /// Compute and report only; write and delete nothing.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            grace: Duration::hours(24),
            max_unused: 0.1,
            dry_run: false,
        }
    }
}

/// What a prune run found and did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    /// True when nothing was written or deleted: the report says what a prune would do.
    pub dry_run: bool,
    /// Backups in the repository.
    pub backups: usize,
    /// Pack objects listed.
    pub packs: usize,
    /// Their bytes.
    pub pack_bytes: u64,
    /// Blobs (chunks and tree pages) some backup uses.
    pub chunks_marked: usize,
    /// Phase 1: packs this run put in a pending set.
    pub pending_packs: usize,
    /// Phase 1: the unused bytes in them.
    pub pending_dead_bytes: u64,
    /// Pending sets still inside their grace period.
    pub pending_sets_waiting: usize,
    /// Phase 2: packs removed (with `dry_run`, that would be).
    pub deleted_packs: usize,
    /// Phase 2: partly used packs whose live blobs are copied into new packs.
    pub repacked_packs: usize,
    /// Phase 2: new packs written by repacking; 0 in a dry run, which writes none.
    pub new_packs: usize,
    /// Phase 2: bytes removed from the repository, net of the new packs.
    pub freed_bytes: u64,
    /// Phase 2: index objects written anew without the removed packs.
    pub index_objects_rewritten: usize,
    /// Blobs a pending set held dead that a newer backup uses again (kept).
    pub resurrected: usize,
    /// Pack uploads killed midway whose partial files were deleted (a local repository's
    /// staged files, which listings do not show).
    pub abandoned_uploads: usize,
    /// Their bytes.
    pub abandoned_upload_bytes: u64,
    /// Second copies of live blobs dropped (one copy of each stays).
    pub copies_dropped: usize,
    /// Repacked packs whose own header did not open, with why: their blobs were copied from
    /// where the index places them, and the new packs have sound headers.
    pub damaged_pack_headers: Vec<String>,
}

/// Runs prune: with `dry_run`, plans and reports the plan; otherwise, under the prune lease,
/// plans and carries the plan out.
pub async fn prune(repo: &Repository, options: &PruneOptions) -> Result<PruneReport> {
    if options.dry_run {
        let listing = list(repo).await?;
        let markers = listing.markers.clone();
        let report = PruneReport {
            dry_run: true,
            ..PruneReport::default()
        };
        let plan = PrunePlan::build(repo, options, listing, markers, report).await?;
        return Ok(plan.dry_run_report());
    }
    let mut lease = Lease::acquire(repo).await?;
    let result = run(repo, options, &mut lease).await;
    let released = lease.release(repo).await;
    if result.is_ok() {
        released?;
    }
    result
}

/// A prune under `lease`: housekeeping, the plan, and carrying it out.
async fn run(repo: &Repository, options: &PruneOptions, lease: &mut Lease) -> Result<PruneReport> {
    let listing = list(repo).await?;
    let grace = options.grace.whole_seconds().max(0);
    remove_orphan_tree_tables(repo, &listing).await?;
    let abandoned = remove_leftovers(repo, &listing, grace).await?;
    // The markers that stay, named by the marker directory from now on.
    let markers = tidy_markers(repo, &listing).await?;
    gc::write_marker_directory(repo, &markers).await?;
    let report = PruneReport {
        abandoned_uploads: abandoned.files,
        abandoned_upload_bytes: abandoned.bytes,
        ..PruneReport::default()
    };
    let plan = PrunePlan::build(repo, options, listing, markers, report).await?;
    execute::carry_out(plan, lease).await
}

async fn list(repo: &Repository) -> Result<Listing> {
    let clock = std::time::Instant::now();
    let listing = Listing::take(repo).await?;
    tracing::debug!("prune: listed after {:.3}s", clock.elapsed().as_secs_f64());
    Ok(listing)
}
