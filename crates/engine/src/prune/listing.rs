//! The repository as one listing saw it: prune lists every key once, when it starts, and
//! decides from that listing (a second listing of `backups/` and `sessions/` is the sweep's
//! re-mark, module `execute`).

use std::collections::{HashMap, HashSet};

use crate::error::Result;
use crate::gc;
use crate::id::ChunkId;
use crate::layout;
use crate::repo::Repository;
use crate::storage::ObjectInfo;

/// The repository as one listing saw it.
#[derive(Default)]
pub(super) struct Listing {
    /// Unix seconds when the listing began: the run's "now" for every age it compares.
    pub(super) started: i64,
    pub(super) packs: HashMap<ChunkId, ObjectInfo>,
    pub(super) index: Vec<String>,
    pub(super) backups: Vec<String>,
    pub(super) sessions: Vec<String>,
    pub(super) pending: Vec<String>,
    pub(super) markers: Vec<String>,
    /// Tree tables, by backup id.
    pub(super) tree_tables: Vec<(String, ObjectInfo)>,
    /// Packs verify found with a damaged header, to rewrite.
    pub(super) damaged: HashSet<ChunkId>,
}

impl Listing {
    pub(super) async fn take(repo: &Repository) -> Result<Listing> {
        let mut listing = Listing {
            started: gc::now_unix(),
            ..Listing::default()
        };
        for object in repo.store().list("").await? {
            let key = object.key.clone();
            if let Some(rest) = key.strip_prefix(layout::PACKS) {
                if let Some(name) = rest.rsplit('/').next().and_then(ChunkId::from_hex) {
                    listing.packs.insert(name, object);
                }
            } else if key.starts_with(layout::INDEX) {
                listing.index.push(key);
            } else if let Some(id) = key.strip_prefix(layout::BACKUPS) {
                if layout::is_backup_id(id) {
                    listing.backups.push(id.to_string());
                }
            } else if key.starts_with(layout::SESSIONS) {
                listing.sessions.push(key);
            } else if key.starts_with(layout::GC_PENDING) {
                listing.pending.push(key);
            } else if key.starts_with(layout::GC_DELETING) {
                listing.markers.push(key);
            } else if let Some(id) = key.strip_prefix(layout::TREES) {
                listing.tree_tables.push((id.to_string(), object));
            } else if let Some(name) = key
                .strip_prefix(layout::QUARANTINE_PACKS)
                .and_then(ChunkId::from_hex)
            {
                listing.damaged.insert(name);
            }
        }
        listing.backups.sort();
        listing.pending.sort();
        Ok(listing)
    }
}

/// The keys under `prefix`, listed now.
pub(super) async fn list_keys(repo: &Repository, prefix: &str) -> Result<Vec<String>> {
    Ok(repo
        .store()
        .list(prefix)
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect())
}
