//! Prune's housekeeping before it marks: tree tables without a backup, deletion markers past
//! their retention or left by a prune that died (or damaged), the records of damaged packs
//! that no longer exist, and half-written uploads a killed process left behind.

use std::collections::HashSet;

use time::Duration;

use super::listing::Listing;
use super::UPLOAD_PROTECT_FLOOR_SECONDS;
use crate::error::{Error, Result};
use crate::gc::{self, DeletionMarker};
use crate::layout::{self, session::SESSION_PROTECT_SECONDS};
use crate::repo::Repository;
use crate::storage::abandoned::Removed;

/// Deletes the tree tables of backups that no longer exist (a crash between `forget`'s two
/// deletes, or a withdrawn backup). A table is written before its manifest, so one without a
/// manifest may belong to a backup still running: only tables older than the longest a
/// backup's session counts as fresh are deleted.
pub(super) async fn remove_orphan_tree_tables(repo: &Repository, listing: &Listing) -> Result<()> {
    let backups: HashSet<&str> = listing.backups.iter().map(String::as_str).collect();
    let cutoff = time::OffsetDateTime::now_utc() - ORPHAN_TABLE_AGE;
    for (id, object) in &listing.tree_tables {
        if !backups.contains(id.as_str()) && object.last_modified < cutoff {
            repo.store().delete(&object.key).await?;
        }
    }
    Ok(())
}

/// Age after which a tree table without a manifest is an orphan (13 h, as for sessions).
const ORPHAN_TABLE_AGE: Duration = Duration::seconds(SESSION_PROTECT_SECONDS);

/// Pending sets named by some deletion marker (already swept, or being swept).
pub(super) async fn consumed_sets(repo: &Repository, listing: &Listing) -> Result<HashSet<String>> {
    let mut consumed = HashSet::new();
    for key in &listing.markers {
        match DeletionMarker::read(repo, key).await {
            Ok(Some(marker)) => consumed.extend(marker.pending),
            Ok(None) => {}
            // Rewritten by tidying (not in a dry run); its sets are swept again, checked anew.
            Err(Error::Corrupt { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(consumed)
}

/// Finishes markers of prunes that died (we hold the lease, so they are not running) and
/// removes markers, with their pending sets, whose retention has passed. Returns the markers
/// that stay.
pub(super) async fn tidy_markers(repo: &Repository, listing: &Listing) -> Result<Vec<String>> {
    let now = gc::now_unix();
    let mut kept = Vec::new();
    for key in &listing.markers {
        let mut marker = match DeletionMarker::read(repo, key).await {
            Ok(Some(marker)) => marker,
            Ok(None) => continue,
            Err(Error::Corrupt { reason, .. }) => rebuilt_marker(repo, key, &reason).await?,
            Err(e) => return Err(e),
        };
        match marker.finished {
            None => {
                marker.finished = Some(now);
                marker.write(repo, key).await?;
                kept.push(key.clone());
            }
            Some(finished) if finished < now - gc::MARKER_RETENTION_SECONDS => {
                for pending in marker.pending.iter().chain(marker.removed.iter()) {
                    repo.store().delete(pending).await?;
                }
                repo.store().delete(key).await?;
            }
            Some(_) => kept.push(key.clone()),
        }
    }
    Ok(kept)
}

/// A deletion marker that does not open, rewritten so that backups can read it again. Its
/// sweep is not running (we hold the lease), so it is marked finished now. What it removed is
/// its removed set, whose key follows from the marker's; without one, the sweep deleted
/// nothing (the removed set is written before anything is deleted). The pending sets it
/// consumed are forgotten: a later sweep of them checks every id again.
async fn rebuilt_marker(repo: &Repository, key: &str, reason: &str) -> Result<DeletionMarker> {
    let removed_key = layout::removed_key_of_marker(key);
    let removed = repo
        .store()
        .size_of(&removed_key)
        .await?
        .map(|_| removed_key);
    let began = key
        .strip_prefix(layout::GC_DELETING)
        .and_then(|rest| rest.split('-').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(gc::now_unix);
    let marker = DeletionMarker {
        pending: Vec::new(),
        began,
        finished: Some(gc::now_unix()),
        removed,
    };
    tracing::warn!("deletion marker {key} was damaged ({reason}); rewriting it");
    marker.write(repo, key).await?;
    Ok(marker)
}

/// Deletes the records of damaged packs that no longer exist, and (in a local repository) the
/// pack uploads a killed process left half written, once older than the grace and the floor
/// (no upload can still be writing them).
pub(super) async fn remove_leftovers(
    repo: &Repository,
    listing: &Listing,
    grace: i64,
) -> Result<Removed> {
    for name in listing
        .damaged
        .iter()
        .filter(|n| !listing.packs.contains_key(*n))
    {
        let record = crate::quarantine::damaged_pack_key(name);
        repo.store().delete(&record).await?;
    }
    let age = std::time::Duration::from_secs(grace.max(UPLOAD_PROTECT_FLOOR_SECONDS) as u64);
    let cutoff = std::time::SystemTime::now() - age;
    Ok(repo
        .store()
        .remove_abandoned_writes(layout::PACKS, cutoff)
        .await?)
}
