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
//! Memory grows with the repository by 4 bytes per marked id (the mark set, module `idset`:
//! the top 52 bits of each id's prefix, built in place through a bounded buffer and dropped
//! once the packs are counted), 8 bytes per dead id of the packs a sweep may touch, and ~90
//! bytes per distinct tree page (locations and the pages visited); the rest is per pack or per
//! object. Index objects are decoded one pack's records at a time, and pending and removed sets
//! are written and read as compressed streams. No map of every chunk's location is ever built.

mod duplicates;
mod housekeeping;
mod idset;
pub(crate) mod pack_reads;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use time::Duration;

use crate::error::{Error, Result};
use crate::gc::{self, DeletionMarker, Lease, PendingPack, PendingSet};
use crate::id::ChunkId;
use crate::index;
use crate::layout;
use crate::manifest::Manifest;
use crate::pack::{self, BlobKind, PackBuilder, PackEntry};
use crate::repo::Repository;
use crate::storage::ObjectInfo;
use crate::tree;
use duplicates::{find_duplicates, Duplicates, SeenTwice};
use housekeeping::{consumed_sets, remove_leftovers, remove_orphan_tree_tables, tidy_markers};
use idset::{MergeSorted, PrefixSet, PrefixSetBuilder};
use pack_reads::{CopyStep, PackToCopy};

use crate::layout::session::{SessionRecord, SESSION_PROTECT_SECONDS};
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
const CACHED_TREE_PACKS: usize = 16;

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
    pub dry_run: bool,
    pub backups: usize,
    pub packs: usize,
    pub pack_bytes: u64,
    pub chunks_marked: usize,
    /// Phase 1: packs this run put in a pending set, and the dead bytes in them.
    pub pending_packs: usize,
    pub pending_dead_bytes: u64,
    /// Pending sets still inside their grace period.
    pub pending_sets_waiting: usize,
    /// Phase 2: what was (or, with --dry-run, would be) removed.
    pub deleted_packs: usize,
    pub repacked_packs: usize,
    pub new_packs: usize,
    pub freed_bytes: u64,
    pub index_objects_rewritten: usize,
    /// Blobs a pending set held dead that a newer backup uses again (kept).
    pub resurrected: usize,
    /// Pack uploads killed midway whose partial files were deleted (a local repository's
    /// staged files, which listings do not show), and their bytes.
    pub abandoned_uploads: usize,
    pub abandoned_upload_bytes: u64,
    /// Second copies of live blobs dropped (one copy of each stays).
    pub copies_dropped: usize,
    /// Repacked packs whose own header did not open, with why: their blobs were copied from
    /// where the index places them, and the new packs have sound headers.
    pub damaged_pack_headers: Vec<String>,
}

/// Tree-page locations, sorted by id (tree pages only: data chunks are never looked up).
#[derive(Default)]
struct TreeLocator {
    pack_names: Vec<ChunkId>,
    pack_numbers: HashMap<ChunkId, u32>,
    pages: Vec<(ChunkId, u32, u64, u32)>,
    sorted: bool,
    loaded_objects: HashSet<String>,
}

impl TreeLocator {
    fn pack_number(&mut self, name: &ChunkId) -> u32 {
        if let Some(n) = self.pack_numbers.get(name) {
            return *n;
        }
        let n = self.pack_names.len() as u32;
        self.pack_names.push(*name);
        self.pack_numbers.insert(*name, n);
        n
    }

    fn add(&mut self, pack: u32, entry: &PackEntry) {
        if entry.kind == BlobKind::Tree {
            self.pages
                .push((entry.id, pack, entry.offset, entry.length));
            self.sorted = false;
        }
    }

    fn finish(&mut self) {
        if !self.sorted {
            self.pages.sort_unstable_by_key(|a| a.0);
            self.pages.dedup_by(|a, b| a.0 == b.0);
            self.sorted = true;
        }
    }

    fn find(&self, id: &ChunkId) -> Option<(u32, u64, u32)> {
        self.pages
            .binary_search_by(|p| p.0.cmp(id))
            .ok()
            .map(|i| (self.pages[i].1, self.pages[i].2, self.pages[i].3))
    }
}

/// Per-pack counters from the index.
#[derive(Default, Clone, Copy)]
struct PackStat {
    total: u64,
    dead: u64,
    live_count: u64,
}

/// Walks trees and collects the prefixes of every id reachable from them.
struct Marker<'a> {
    repo: &'a Repository,
    locator: TreeLocator,
    cache: Vec<(u32, Bytes)>,
    visited: HashSet<ChunkId>,
    marks: PrefixSetBuilder,
}

impl<'a> Marker<'a> {
    fn new(repo: &'a Repository, locator: TreeLocator) -> Self {
        Marker {
            repo,
            locator,
            cache: Vec::new(),
            visited: HashSet::new(),
            marks: PrefixSetBuilder::new(),
        }
    }

    fn push(&mut self, id: &ChunkId) {
        self.marks.insert(gc::prefix(id));
    }

    /// The set of everything marked so far; marking starts again from nothing, with no tree
    /// page visited and no tree pack cached (up to 16 packs of 4 MiB, not needed until the
    /// sweep marks again).
    fn take_marks(&mut self) -> PrefixSet {
        self.visited = HashSet::new();
        self.cache = Vec::new();
        std::mem::take(&mut self.marks).build()
    }

    /// Loads tree locations from index objects not loaded yet (after a page was not found).
    async fn load_new_index_objects(&mut self) -> Result<bool> {
        let keys: Vec<String> = self
            .repo
            .store()
            .list(layout::INDEX)
            .await?
            .into_iter()
            .map(|o| o.key)
            .filter(|k| !self.locator.loaded_objects.contains(k))
            .collect();
        if keys.is_empty() {
            return Ok(false);
        }
        for key in keys {
            let locator = &mut self.locator;
            let read = index::read_index_entries(self.repo, &key, |name, entry| {
                let n = locator.pack_number(name);
                locator.add(n, &entry);
            })
            .await;
            match read {
                Ok(()) => {}
                Err(Error::Store(e)) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
            self.locator.loaded_objects.insert(key);
        }
        self.locator.finish();
        Ok(true)
    }

    async fn page(&mut self, id: &ChunkId, entries: usize) -> Result<Vec<ChunkId>> {
        let mut location = self.locator.find(id);
        if location.is_none() && self.load_new_index_objects().await? {
            location = self.locator.find(id);
        }
        let (pack_no, offset, length) = location.ok_or_else(|| {
            Error::Missing(format!(
                "tree page {id} is in no pack of the repository index"
            ))
        })?;
        let bytes = match self.cache.iter().position(|(n, _)| *n == pack_no) {
            Some(i) => self.cache[i].1.clone(),
            None => {
                let key = pack::pack_key(&self.locator.pack_names[pack_no as usize]);
                let bytes = self.repo.store().get(&key).await?;
                if self.cache.len() >= CACHED_TREE_PACKS {
                    self.cache.remove(0);
                }
                self.cache.push((pack_no, bytes.clone()));
                bytes
            }
        };
        let start = offset as usize;
        let sealed = bytes
            .get(start..start + length as usize)
            .ok_or_else(|| Error::Corrupt(format!("tree pack holding page {id} is truncated")))?;
        let plain = pack::decode_blob(
            self.repo.sealer(),
            self.repo.hasher(),
            id,
            sealed,
            tree::PAGE_BYTES,
        )?;
        if plain.len() != entries * 32 {
            return Err(Error::Corrupt(format!(
                "tree page {id} holds {} bytes, expected {entries} ids",
                plain.len()
            )));
        }
        Ok(plain
            .chunks_exact(32)
            .map(|raw| ChunkId::from_slice(raw).unwrap_or_default())
            .collect())
    }

    /// Marks every page and chunk of a backup's tree; shared subtrees are walked once.
    async fn mark_backup(&mut self, manifest: &Manifest) -> Result<()> {
        let root = ChunkId::from_hex(&manifest.root)
            .ok_or_else(|| Error::Corrupt(format!("backup {} has an invalid root", manifest.id)))?;
        let mut stack = vec![(root, manifest.depth.saturating_sub(1), 0u64)];
        while let Some((id, level, index_no)) = stack.pop() {
            if id.is_zero() || !self.visited.insert(id) {
                continue;
            }
            self.push(&id);
            let entries = tree::page_entries(level, index_no, manifest.slots);
            let ids = self.page(&id, entries).await?;
            for (j, child) in ids.iter().enumerate() {
                if child.is_zero() {
                    continue;
                }
                if level == 0 {
                    self.push(child);
                } else {
                    stack.push((*child, level - 1, index_no * tree::FANOUT + j as u64));
                }
            }
        }
        Ok(())
    }

    /// Marks every blob listed by the index objects of sessions updated within
    /// `protect_seconds`.
    async fn mark_sessions(&mut self, sessions: &[String], protect_seconds: i64) -> Result<()> {
        let now = gc::now_unix();
        for key in sessions {
            let session = match self.repo.read_record::<SessionRecord>(key).await {
                Ok(Some(session)) => session,
                Ok(None) => continue,
                Err(Error::Store(e)) => return Err(e.into()),
                Err(_) => continue,
            };
            let fresh = session
                .age_seconds(now)
                .is_some_and(|age| age < protect_seconds);
            if !fresh {
                continue;
            }
            for object in &session.index_objects {
                let marks = &mut self.marks;
                let read = index::read_index_entries(self.repo, object, |_, e| {
                    marks.insert(gc::prefix(&e.id));
                })
                .await;
                match read {
                    Ok(()) => {}
                    Err(Error::Store(e)) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

/// The repository as one listing saw it.
#[derive(Default)]
struct Listing {
    packs: HashMap<ChunkId, ObjectInfo>,
    index: Vec<String>,
    backups: Vec<String>,
    sessions: Vec<String>,
    pending: Vec<String>,
    markers: Vec<String>,
    /// Tree tables, by backup id.
    tree_tables: Vec<(String, ObjectInfo)>,
    /// Packs verify found with a damaged header, to rewrite.
    damaged: HashSet<ChunkId>,
}

impl Listing {
    async fn take(repo: &Repository) -> Result<Listing> {
        let mut listing = Listing::default();
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

async fn list_keys(repo: &Repository, prefix: &str) -> Result<Vec<String>> {
    Ok(repo
        .store()
        .list(prefix)
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect())
}

/// Reads manifests; a manifest deleted since it was listed is skipped.
async fn read_manifests(repo: &Repository, ids: &[String]) -> Result<Vec<Manifest>> {
    let found: Vec<Option<Manifest>> = futures::stream::iter(ids.to_vec())
        .map(|id| async move {
            match repo.read_manifest(&id).await {
                Ok(m) => Ok(Some(m)),
                Err(Error::NoSuchBackup(_)) => Ok(None),
                // Its data cannot be marked: deleting anything could take what it uses.
                Err(Error::Corrupt(problem)) => Err(Error::Corrupt(format!(
                    "{problem}; prune cannot tell which data that backup uses and deletes nothing: remove it with `s3mover forget {id}` and prune again"
                ))),
                Err(e) => Err(e),
            }
        })
        .buffered(16)
        .try_collect()
        .await?;
    Ok(found.into_iter().flatten().collect())
}

/// Runs prune.
pub async fn prune(repo: &Repository, options: &PruneOptions) -> Result<PruneReport> {
    let mut lease = if options.dry_run {
        None
    } else {
        Some(Lease::acquire(repo).await?)
    };
    let result = run(repo, options, &mut lease).await;
    if let Some(lease) = lease {
        let released = lease.release(repo).await;
        if result.is_ok() {
            released?;
        }
    }
    result
}

async fn run(
    repo: &Repository,
    options: &PruneOptions,
    lease: &mut Option<Lease>,
) -> Result<PruneReport> {
    let started = gc::now_unix();
    let clock = std::time::Instant::now();
    let grace = options.grace.whole_seconds().max(0);
    let mut report = PruneReport {
        dry_run: options.dry_run,
        ..PruneReport::default()
    };
    let listing = Listing::take(repo).await?;
    tracing::debug!("prune: listed after {:.3}s", clock.elapsed().as_secs_f64());
    report.packs = listing.packs.len();
    report.pack_bytes = listing.packs.values().map(|o| o.size).sum();

    if !options.dry_run {
        remove_orphan_tree_tables(repo, &listing).await?;
        let removed = remove_leftovers(repo, &listing, grace).await?;
        report.abandoned_uploads = removed.files;
        report.abandoned_upload_bytes = removed.bytes;
    }

    // The markers that stay, named by the marker directory from now on.
    let markers = if options.dry_run {
        listing.markers.clone()
    } else {
        let kept = tidy_markers(repo, &listing).await?;
        gc::write_marker_directory(repo, &kept).await?;
        kept
    };

    // Tree locations and which index objects name which packs.
    let mut locator = TreeLocator::default();
    let mut objects_of_pack: HashMap<u32, Vec<u32>> = HashMap::new();
    for (object_no, key) in listing.index.iter().enumerate() {
        index::read_index_entries(repo, key, |name, entry| {
            let n = locator.pack_number(name);
            locator.add(n, &entry);
            let objects = objects_of_pack.entry(n).or_default();
            if objects.last() != Some(&(object_no as u32)) {
                objects.push(object_no as u32);
            }
        })
        .await?;
        locator.loaded_objects.insert(key.clone());
    }
    locator.finish();
    tracing::debug!(
        "prune: index read after {:.3}s",
        clock.elapsed().as_secs_f64()
    );

    // Mark.
    let manifests = read_manifests(repo, &listing.backups).await?;
    report.backups = manifests.len();
    let seen_backups: Vec<String> = manifests.iter().map(|m| m.id.clone()).collect();
    let mut marker = Marker::new(repo, locator);
    for manifest in &manifests {
        marker.mark_backup(manifest).await.map_err(|e| {
            Error::Corrupt(format!(
                "cannot read the tree of backup {} ({e}); prune deletes nothing while a backup's \
                 references are unknown — run `s3mover verify {}` and forget it if it is damaged",
                manifest.id, manifest.id
            ))
        })?;
    }
    drop(manifests);
    marker
        .mark_sessions(&listing.sessions, session_protect_seconds(grace))
        .await?;
    let marks = marker.take_marks();
    report.chunks_marked = marks.len();

    // Per-pack use, streaming the index again. The dead prefixes of a pack are sorted and
    // trimmed as soon as the stream moves past it.
    let mut stats: HashMap<u32, PackStat> = HashMap::new();
    let mut dead_of = DeadPrefixes::default();
    let mut seen_twice = SeenTwice::new(&marks);
    for key in &listing.index {
        let locator = &mut marker.locator;
        index::read_index_entries(repo, key, |name, entry| {
            let n = locator.pack_number(name);
            let stat = stats.entry(n).or_default();
            stat.total += u64::from(entry.length);
            let p = gc::prefix(&entry.id);
            if let Some(position) = marks.position(p) {
                stat.live_count += 1;
                seen_twice.note(position, marks.key_of(p));
            } else {
                stat.dead += u64::from(entry.length);
                dead_of.push(n, p);
            }
        })
        .await?;
    }
    let duplicates = find_duplicates(
        repo,
        &listing,
        &mut marker.locator,
        &marks,
        seen_twice.finish(),
        started - grace,
    )
    .await?;
    for (n, (entries, bytes)) in &duplicates.entries {
        if let Some(stat) = stats.get_mut(n) {
            stat.live_count = stat.live_count.saturating_sub(*entries);
            stat.dead += bytes;
        }
    }
    // The mark set is not needed any more: the sweep marks anew what it must.
    drop(marks);
    // Packs no index names: dead once old enough; their ids come from their headers.
    let unindexed_cutoff = started - grace.max(UPLOAD_PROTECT_FLOOR_SECONDS);
    let mut unindexed: Vec<(ChunkId, u64)> = listing
        .packs
        .iter()
        .filter(|(name, info)| {
            !marker.locator.pack_numbers.contains_key(*name)
                && info.last_modified.unix_timestamp() <= unindexed_cutoff
        })
        .map(|(name, info)| (*name, info.size))
        .collect();
    unindexed.sort();
    for (name, size) in &unindexed {
        let key = pack::pack_key(name);
        let entries = match pack_reads::read_header_from_end(repo, &key, *size).await {
            Ok(Some((entries, _))) => entries,
            Ok(None) => continue,
            Err(e) => {
                // No index names it and its header does not open: nothing says what it holds.
                let reason = format!("{e}; no index names it, so it is left in place");
                tracing::warn!("{reason}");
                report.damaged_pack_headers.push(reason);
                continue;
            }
        };
        let n = marker.locator.pack_number(name);
        let stat = stats.entry(n).or_default();
        for entry in entries {
            stat.total += u64::from(entry.length);
            stat.dead += u64::from(entry.length);
            dead_of.push(n, gc::prefix(&entry.id));
        }
        // Anything marked stays counted dead here: the pack is unreachable through the index.
    }
    dead_of.finish();

    // Phase 1: a new pending set.
    let cutoff = started - grace;
    let mut own_packs: Vec<PendingPack> = Vec::new();
    let mut own_numbers: HashSet<u32> = HashSet::new();
    for (n, stat) in &stats {
        let name = marker.locator.pack_names[*n as usize];
        // A pack with a damaged header is rewritten whatever it holds.
        let damaged = listing.damaged.contains(&name);
        if stat.dead == 0 && !damaged {
            continue;
        }
        let Some(info) = listing.packs.get(&name) else {
            continue;
        };
        if info.last_modified.unix_timestamp() > cutoff {
            continue;
        }
        let fully = stat.live_count == 0;
        let unused = stat.dead as f64 / stat.total.max(1) as f64;
        if !fully && unused <= options.max_unused && !damaged {
            continue;
        }
        own_packs.push(PendingPack {
            pack: name.to_hex(),
            size: info.size,
            repack: !fully,
            dead_bytes: stat.dead,
        });
        own_numbers.insert(*n);
    }
    own_packs.sort_by(|a, b| a.pack.cmp(&b.pack));
    report.pending_packs = own_packs.len();
    report.pending_dead_bytes = own_packs.iter().map(|p| p.dead_bytes).sum();

    // Which pending sets are ripe: not consumed by a marker and at least `grace` old.
    let consumed = consumed_sets(repo, &listing).await?;
    let mut ripe = RipeSets::default();
    for key in &listing.pending {
        if consumed.contains(key) {
            continue;
        }
        let Some(created) = PendingSet::created_of(key) else {
            continue;
        };
        if created <= gc::now_unix() - grace {
            match PendingSet::read(repo, key).await {
                Ok(set) => ripe.add_older(key.clone(), set),
                // No marker names it, so no backup reads it: a damaged proposal is dropped and
                // this run's own set proposes its packs again.
                Err(Error::Corrupt(reason)) => {
                    tracing::warn!("{reason}; deleting the damaged pending set");
                    if !options.dry_run {
                        repo.store().delete(key).await?;
                    }
                }
                Err(e) => return Err(e),
            }
        } else {
            report.pending_sets_waiting += 1;
        }
    }
    ripe.older_dead.sort_unstable();
    ripe.older_dead.dedup();
    ripe.older_dead.shrink_to_fit();
    if !own_packs.is_empty() {
        let key = PendingSet::new_key(started);
        if !options.dry_run {
            // The dead prefixes of the candidate packs, merged as they are written.
            let dead = MergeSorted::new(own_numbers.iter().map(|n| dead_of.of(*n).iter().copied()));
            let sealed =
                gc::encode_pending_set(repo, &key, started, &seen_backups, &own_packs, dead)?;
            repo.store().put(&key, sealed).await?;
        }
        if started <= gc::now_unix() - grace {
            ripe.add_own(key, own_packs, own_numbers, seen_backups);
        } else {
            report.pending_sets_waiting += 1;
        }
    }
    if ripe.keys.is_empty() {
        return Ok(report);
    }
    // Only the packs the sweep may touch keep their dead prefixes.
    let ripe_numbers: HashSet<u32> = ripe
        .packs
        .keys()
        .filter_map(|hex| ChunkId::from_hex(hex))
        .filter_map(|name| marker.locator.pack_numbers.get(&name).copied())
        .collect();
    dead_of.retain(&ripe_numbers);
    let mut duplicates = duplicates;
    duplicates.of.retain(|n, _| ripe_numbers.contains(n));

    tracing::debug!(
        "prune: marked and counted after {:.3}s",
        clock.elapsed().as_secs_f64()
    );

    // Phase 2.
    let context = Phase2 {
        repo,
        listing: &listing,
        markers: &markers,
        stats: &stats,
        objects_of_pack: &objects_of_pack,
    };
    context
        .sweep(
            &mut marker,
            ripe,
            Unused {
                dead_of,
                duplicates,
            },
            options,
            lease,
            &mut report,
        )
        .await?;
    Ok(report)
}

/// The dead prefixes of each pack, sorted per pack once [`DeadPrefixes::finish`]ed.
#[derive(Default)]
struct DeadPrefixes {
    of: HashMap<u32, Vec<u64>>,
    /// The pack the index stream is in: its list is still growing.
    current: Option<u32>,
}

impl DeadPrefixes {
    fn push(&mut self, pack: u32, prefix: u64) {
        if self.current != Some(pack) {
            if let Some(previous) = self.current {
                self.tidy(previous);
            }
            self.current = Some(pack);
        }
        self.of.entry(pack).or_default().push(prefix);
    }

    fn tidy(&mut self, pack: u32) {
        if let Some(list) = self.of.get_mut(&pack) {
            list.sort_unstable();
            list.dedup();
            list.shrink_to_fit();
        }
    }

    /// Sorts every list (a pack named by several index objects was added to more than once).
    fn finish(&mut self) {
        self.current = None;
        for list in self.of.values_mut() {
            list.sort_unstable();
            list.dedup();
            list.shrink_to_fit();
        }
    }

    /// The sorted dead prefixes of a pack.
    fn of(&self, pack: u32) -> &[u64] {
        self.of.get(&pack).map(Vec::as_slice).unwrap_or(&[])
    }

    fn take(&mut self, pack: u32) -> Vec<u64> {
        self.of.remove(&pack).unwrap_or_default()
    }

    fn retain(&mut self, packs: &HashSet<u32>) {
        self.of.retain(|n, _| packs.contains(n));
        self.of.shrink_to_fit();
    }
}

/// The pending sets one sweep works from.
#[derive(Default)]
struct RipeSets {
    keys: Vec<String>,
    /// Every pack of every set, by hex name (`repack` if any set says so).
    packs: HashMap<String, PendingPack>,
    /// The backups every set saw.
    seen_by_all: Option<HashSet<String>>,
    /// The dead prefixes of the sets of earlier runs, sorted.
    older_dead: Vec<u64>,
    /// When this run's own set is ripe, its packs (by number): their dead prefixes in this
    /// run's marking are exactly that set's dead prefixes for them.
    own_numbers: HashSet<u32>,
}

impl RipeSets {
    fn add_packs(&mut self, key: String, packs: Vec<PendingPack>, seen: Vec<String>) {
        self.keys.push(key);
        for p in packs {
            self.packs
                .entry(p.pack.clone())
                .and_modify(|q| q.repack |= p.repack)
                .or_insert(p);
        }
        let seen: HashSet<String> = seen.into_iter().collect();
        self.seen_by_all = Some(match self.seen_by_all.take() {
            None => seen,
            Some(prev) => prev.intersection(&seen).cloned().collect(),
        });
    }

    fn add_older(&mut self, key: String, set: PendingSet) {
        self.older_dead.extend_from_slice(&set.dead);
        self.add_packs(key, set.packs, set.seen_backups);
    }

    fn add_own(
        &mut self,
        key: String,
        packs: Vec<PendingPack>,
        numbers: HashSet<u32>,
        seen: Vec<String>,
    ) {
        self.own_numbers = numbers;
        self.add_packs(key, packs, seen);
    }

    /// True when `prefix`, dead in pack `pack` in this run's marking, is dead in a ripe set.
    fn dead_in_a_set(&self, pack: u32, prefix: u64) -> bool {
        self.own_numbers.contains(&pack) || self.older_dead.binary_search(&prefix).is_ok()
    }
}

/// What a sweep may take from the packs of its pending sets: their dead prefixes and their
/// second copies of live blobs.
struct Unused {
    dead_of: DeadPrefixes,
    duplicates: Duplicates,
}

struct Phase2<'a> {
    repo: &'a Repository,
    listing: &'a Listing,
    /// The deletion markers that existed after tidying.
    markers: &'a [String],
    stats: &'a HashMap<u32, PackStat>,
    objects_of_pack: &'a HashMap<u32, Vec<u32>>,
}

impl Phase2<'_> {
    async fn sweep(
        &self,
        marker: &mut Marker<'_>,
        ripe: RipeSets,
        unused: Unused,
        options: &PruneOptions,
        lease: &mut Option<Lease>,
        report: &mut PruneReport,
    ) -> Result<()> {
        let repo = self.repo;
        let Unused {
            mut dead_of,
            duplicates,
        } = unused;
        let clock = std::time::Instant::now();
        let seen_by_all = ripe.seen_by_all.clone().unwrap_or_default();

        // The marker goes up before the second listing; backups committing after this read it.
        let marker_key = DeletionMarker::new_key(gc::now_unix());
        let mut deletion = DeletionMarker {
            pending: ripe.keys.clone(),
            began: gc::now_unix(),
            finished: None,
            removed: None,
        };
        if !options.dry_run {
            // The directory names the marker before the marker exists (see
            // `gc::write_marker_directory`).
            if let Some(lease) = lease.as_mut() {
                lease.ensure(repo).await?;
            }
            let mut named = self.markers.to_vec();
            named.push(marker_key.clone());
            gc::write_marker_directory(repo, &named).await?;
            deletion.write(repo, &marker_key).await?;
        }

        // Re-mark from backups the pending sets did not all see, and from fresh sessions.
        let mut fresh = PrefixSet::default();
        if !options.dry_run {
            let ids: Vec<String> = list_keys(repo, layout::BACKUPS)
                .await?
                .into_iter()
                .filter_map(|k| k.strip_prefix(layout::BACKUPS).map(str::to_string))
                .filter(|id| !seen_by_all.contains(id))
                .collect();
            let sessions = list_keys(repo, layout::SESSIONS).await?;
            marker.visited.clear();
            let result = async {
                for manifest in read_manifests(repo, &ids).await? {
                    marker.mark_backup(&manifest).await?;
                }
                let grace = options.grace.whole_seconds().max(0);
                marker
                    .mark_sessions(&sessions, session_protect_seconds(grace))
                    .await
            }
            .await;
            fresh = marker.take_marks();
            if let Err(e) = result {
                deletion.finished = Some(gc::now_unix());
                deletion.write(repo, &marker_key).await?;
                return Err(Error::Corrupt(format!(
                    "prune stopped before deleting anything: a backup committed meanwhile \
                     cannot be read ({e})"
                )));
            }
        }

        // Removable: dead in a ripe pending set, dead now, and not re-marked.
        let removable = |n: u32, p: u64| ripe.dead_in_a_set(n, p) && !fresh.contains(p);
        if !fresh.is_empty() {
            // Dead in a ripe set and marked again: the sets' dead prefixes, merged.
            let own = ripe.own_numbers.iter().map(|n| dead_of.of(*n));
            let lists = own.chain(std::iter::once(ripe.older_dead.as_slice()));
            report.resurrected = MergeSorted::new(lists.map(|l| l.iter().copied()))
                .filter(|p| fresh.contains(*p))
                .count();
        }
        let mut delete: Vec<(ChunkId, u64, u32)> = Vec::new();
        let mut repack: Vec<(ChunkId, u64, u32)> = Vec::new();
        for p in ripe.packs.values() {
            let Some(name) = ChunkId::from_hex(&p.pack) else {
                continue;
            };
            let Some(info) = self.listing.packs.get(&name) else {
                continue;
            };
            let Some(n) = marker.locator.pack_numbers.get(&name).copied() else {
                continue;
            };
            let stat = self.stats.get(&n).copied().unwrap_or_default();
            let dead_now = dead_of.of(n);
            let copies = duplicates.of(n);
            let all_removable = dead_now.iter().all(|p| removable(n, *p));
            let any_removable = dead_now.iter().any(|p| removable(n, *p));
            if stat.live_count == 0 && all_removable && !(dead_now.is_empty() && copies.is_empty())
            {
                delete.push((name, info.size, n));
            } else if any_removable || !copies.is_empty() || self.listing.damaged.contains(&name) {
                repack.push((name, info.size, n));
            }
        }
        delete.sort();
        repack.sort();

        if options.dry_run {
            report.deleted_packs = delete.len();
            report.repacked_packs = repack.len();
            report.freed_bytes = delete.iter().map(|p| p.1).sum::<u64>()
                + repack
                    .iter()
                    .map(|(_, _, n)| self.stats.get(n).map(|s| s.dead).unwrap_or(0))
                    .sum::<u64>();
            return Ok(());
        }

        let lease_ref = lease
            .as_mut()
            .ok_or_else(|| Error::Internal("sweeping without a lease".into()))?;

        // 0. Record exactly which ids go, before anything goes: per pack to delete or repack,
        //    its removable dead prefixes; the dead prefixes of other packs are dropped.
        let mut removed_of: HashMap<u32, Vec<u64>> = HashMap::new();
        for (_, _, n) in delete.iter().chain(repack.iter()) {
            let mut list = dead_of.take(*n);
            list.retain(|p| removable(*n, *p));
            list.shrink_to_fit();
            removed_of.insert(*n, list);
        }
        drop(dead_of);
        drop(fresh);
        let removed_key = layout::removed_key_of_marker(&marker_key);
        let removed_ids = MergeSorted::new(removed_of.values().map(|l| l.iter().copied()));
        let sealed =
            gc::encode_pending_set(repo, &removed_key, deletion.began, &[], &[], removed_ids)?;
        repo.store().put(&removed_key, sealed).await?;
        deletion.removed = Some(removed_key);
        deletion.write(repo, &marker_key).await?;
        // Deleted packs go whole; only repacked ones are filtered blob by blob, leaving
        // behind their removed ids and their second copies of live ids.
        for (_, _, n) in &delete {
            removed_of.remove(n);
        }
        report.copies_dropped = delete
            .iter()
            .chain(repack.iter())
            .map(|(_, _, n)| duplicates.of(*n).len())
            .sum();
        for (_, _, n) in &repack {
            let copies = duplicates.of(*n);
            if !copies.is_empty() {
                let list = removed_of.entry(*n).or_default();
                list.extend_from_slice(copies);
                list.sort_unstable();
                list.dedup();
            }
        }
        drop(duplicates);

        // 1. Copy the live blobs of partly dead packs into new packs, and index them: exactly
        //    the blobs whose prefixes the removed set holds stay behind.
        let mut written_bytes = 0u64;
        // New packs are indexed every few packs (or sooner when they hold many blobs), as
        // backups do, so memory does not grow with the number of blobs moved.
        let mut new_packs: Vec<(ChunkId, Vec<PackEntry>)> = Vec::new();
        let mut new_pack_count = 0usize;
        let mut builders: HashMap<u8, PackBuilder> = HashMap::new();
        // Where repacked tree pages went, for the tree tables (1/128 of the blobs or fewer).
        let mut moved_pages: HashMap<ChunkId, (ChunkId, u64, u32)> = HashMap::new();
        let mut repacked: Vec<(ChunkId, u64)> = Vec::new();
        // Live blobs are read a few reads ahead of the one being copied and uploaded.
        let to_copy = repack
            .iter()
            .map(|(name, size, n)| PackToCopy {
                name: *name,
                size: *size,
                removed: removed_of.get(n).map(Vec::as_slice).unwrap_or(&[]),
                index_objects: self
                    .objects_of_pack
                    .get(n)
                    .into_iter()
                    .flatten()
                    .map(|o| self.listing.index[*o as usize].clone())
                    .collect(),
            })
            .collect();
        let mut steps = pack_reads::read_live_blobs(repo, to_copy);
        let mut gone: HashSet<usize> = HashSet::new();
        while let Some(step) = steps.next().await {
            lease_ref.ensure(repo).await?;
            let step = step?;
            let (at, blobs, last) = match &step {
                CopyStep::Gone { pack } => {
                    gone.insert(*pack);
                    continue;
                }
                CopyStep::DamagedHeader { reason, .. } => {
                    report.damaged_pack_headers.push(reason.clone());
                    continue;
                }
                CopyStep::Blobs {
                    pack, blobs, last, ..
                } => (*pack, blobs, *last),
            };
            if gone.contains(&at) {
                continue;
            }
            let (name, size, _) = &repack[at];
            let key = pack::pack_key(name);
            for entry in blobs {
                let blob = step.blob(entry, &key)?;
                let target = match entry.kind {
                    BlobKind::Data => repo.config().pack_size as usize,
                    BlobKind::Tree => repo.config().tree_pack_size as usize,
                };
                let builder = builders
                    .entry(entry.kind as u8)
                    .or_insert_with(|| PackBuilder::new(entry.kind, target + target / 8));
                builder.add(entry.id, blob);
                if builder.len() >= target {
                    if let Some(full) = builders.remove(&(entry.kind as u8)) {
                        written_bytes +=
                            upload_pack(repo, full, &mut new_packs, &mut moved_pages).await?;
                        new_pack_count += 1;
                        let entries: usize = new_packs.iter().map(|(_, e)| e.len()).sum();
                        if new_packs.len() >= PACKS_PER_INDEX || entries >= ENTRIES_PER_INDEX {
                            index::write_index_object(repo, &new_packs).await?;
                            new_packs.clear();
                        }
                    }
                }
            }
            if last {
                repacked.push((*name, *size));
            }
        }
        drop(steps);
        for (_, builder) in builders.drain() {
            if !builder.is_empty() {
                written_bytes +=
                    upload_pack(repo, builder, &mut new_packs, &mut moved_pages).await?;
                new_pack_count += 1;
            }
        }
        if !new_packs.is_empty() {
            index::write_index_object(repo, &new_packs).await?;
        }
        drop(new_packs);
        drop(removed_of);
        report.new_packs = new_pack_count;
        report.repacked_packs = repacked.len();
        tracing::debug!(
            "prune sweep: live blobs copied after {:.3}s",
            clock.elapsed().as_secs_f64()
        );

        // 2. Rewrite the index objects that name a removed pack.
        let removed: HashSet<ChunkId> = delete
            .iter()
            .map(|(n, _, _)| *n)
            .chain(repacked.iter().map(|(n, _)| *n))
            .collect();
        let mut objects: BTreeSet<u32> = BTreeSet::new();
        for name in &removed {
            if let Some(n) = marker.locator.pack_numbers.get(name) {
                if let Some(list) = self.objects_of_pack.get(n) {
                    objects.extend(list.iter().copied());
                }
            }
        }
        for object_no in objects {
            lease_ref.ensure(repo).await?;
            let key = &self.listing.index[object_no as usize];
            let mut kept: Vec<(ChunkId, Vec<PackEntry>)> = Vec::new();
            let read = index::read_index_entries(repo, key, |name, entry| {
                if removed.contains(name) {
                    return;
                }
                match kept.last_mut() {
                    Some((last, entries)) if last == name => entries.push(entry),
                    _ => kept.push((*name, vec![entry])),
                }
            })
            .await;
            match read {
                Ok(()) => {}
                Err(Error::Store(e)) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            }
            if !kept.is_empty() {
                index::write_index_object(repo, &kept).await?;
            }
            repo.store().delete(key).await?;
            report.index_objects_rewritten += 1;
        }

        lease_ref.ensure(repo).await?;
        self.rewrite_tree_tables(&removed, &moved_pages).await?;
        drop(moved_pages);
        tracing::debug!(
            "prune sweep: index rewritten after {:.3}s",
            clock.elapsed().as_secs_f64()
        );

        // 3. Only now delete packs: nothing in the index names them any more.
        let mut freed = 0u64;
        let doomed: Vec<(ChunkId, u64)> = delete
            .iter()
            .map(|(name, size, _)| (*name, *size))
            .chain(repacked.iter().copied())
            .collect();
        for batch in doomed.chunks(DELETES_PER_LEASE_CHECK) {
            lease_ref.ensure(repo).await?;
            futures::stream::iter(batch)
                .map(|(name, _)| async move { repo.store().delete(&pack::pack_key(name)).await })
                .buffer_unordered(PARALLEL_DELETES)
                .try_collect::<Vec<()>>()
                .await?;
            freed += batch.iter().map(|(_, size)| size).sum::<u64>();
        }
        report.deleted_packs = delete.len();
        report.freed_bytes = freed.saturating_sub(written_bytes);
        for (name, _) in doomed
            .iter()
            .filter(|(n, _)| self.listing.damaged.contains(n))
        {
            let record = crate::quarantine::damaged_pack_key(name);
            repo.store().delete(&record).await?;
        }
        tracing::debug!(
            "prune sweep: packs deleted after {:.3}s",
            clock.elapsed().as_secs_f64()
        );

        deletion.finished = Some(gc::now_unix());
        deletion.write(repo, &marker_key).await?;
        Ok(())
    }
}

impl Phase2<'_> {
    /// Points the tree tables that name a removed pack at the pages' new packs, so the next
    /// incremental of each volume still needs no pack index. A page in no new pack (it was
    /// dead) is dropped from the table. Tables written after this run's listing are not
    /// visited: a stale entry only sends a backup to the pack index.
    async fn rewrite_tree_tables(
        &self,
        removed: &HashSet<ChunkId>,
        moved_pages: &HashMap<ChunkId, (ChunkId, u64, u32)>,
    ) -> Result<()> {
        for (backup_id, _) in &self.listing.tree_tables {
            let Some(mut table) = crate::tree_table::TreeTable::read(self.repo, backup_id).await?
            else {
                continue;
            };
            if !table.pages.iter().any(|p| removed.contains(&p.pack)) {
                continue;
            }
            table.pages.retain_mut(|page| {
                if !removed.contains(&page.pack) {
                    return true;
                }
                match moved_pages.get(&page.id) {
                    Some(&(pack, offset, length)) => {
                        (page.pack, page.offset, page.length) = (pack, offset, length);
                        true
                    }
                    None => false,
                }
            });
            table.write(self.repo, backup_id).await?;
        }
        Ok(())
    }
}

/// Repacked packs per index object, and the most blobs one holds (packs of small,
/// well-compressed blobs hold 100,000 or more; their entries take 56 bytes each until written).
const PACKS_PER_INDEX: usize = 4;
const ENTRIES_PER_INDEX: usize = 1 << 16;
/// Pack deletions in flight, and between two checks of the prune's lease.
const PARALLEL_DELETES: usize = 16;
const DELETES_PER_LEASE_CHECK: usize = 64;

async fn upload_pack(
    repo: &Repository,
    builder: PackBuilder,
    out: &mut Vec<(ChunkId, Vec<PackEntry>)>,
    moved_pages: &mut HashMap<ChunkId, (ChunkId, u64, u32)>,
) -> Result<u64> {
    let sealer = Arc::clone(repo.sealer());
    let finished = tokio::task::spawn_blocking(move || builder.finish(&sealer))
        .await
        .map_err(|e| Error::Internal(format!("pack task failed: {e}")))?;
    let size = finished.bytes.len() as u64;
    repo.store()
        .put(&finished.key(), finished.bytes.clone())
        .await?;
    for entry in finished.entries.iter().filter(|e| e.kind == BlobKind::Tree) {
        moved_pages.insert(entry.id, (finished.name, entry.offset, entry.length));
    }
    out.push((finished.name, finished.entries));
    Ok(size)
}
