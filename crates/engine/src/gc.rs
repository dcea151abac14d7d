//! The garbage-collection objects under `gc/` and the one check a backup makes after its
//! commit. `docs/format.md` ("Garbage collection") gives the protocol and its safety argument.
//!
//! * `gc/pending/<t1>-<rand>`: a *pending set*, written by prune's phase 1: the packs found
//!   unreferenced (wholly or partly) at `t1`, the 64-bit prefixes of the chunk ids in them that
//!   no backup referenced (the *dead ids*), and the backups that were marked.
//! * `gc/deleting/<t2>-<rand>`: a *deletion marker*, written by phase 2 before it lists
//!   `backups/` again and deletes anything; it records when deletion began and finished and is
//!   kept for [`MARKER_RETENTION_SECONDS`] after it finished.
//! * `gc/lease/<t>-<rand>`: a prune's lease, so that two prunes do not sweep at once.
//!
//! A backup, after writing its manifest, reads the marker directory `gc/markers` (or, when
//! there is none or it is damaged, lists `gc/deleting/`). For every marker that may have
//! overlapped it, it checks its tree against the marker's removed ids: a hit on a sweep that
//! has not finished, or on a finished one that left no indexed copy in an existing pack,
//! withdraws its manifest and fails with "rerun the backup". Only then is `latest/` updated.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::layout::{self, aad::ObjectKind};
use crate::manifest::Manifest;
use crate::repo::Repository;

/// The object naming every deletion marker, so a backup's check reads one object instead of
/// listing `gc/deleting/` (see [`write_marker_directory`]).
pub const MARKER_DIRECTORY_KEY: &str = crate::layout::GC_MARKERS_KEY;

/// How long a deletion marker stays after its deletion finished. A backup that takes longer
/// than this from its start to its post-commit check is outside the safety argument.
pub(crate) const MARKER_RETENTION_SECONDS: i64 = 6 * 3600;
/// Tolerated clock difference between machines, subtracted when comparing their times.
pub(crate) const CLOCK_SKEW_SECONDS: i64 = 300;
/// A prune's lease lasts this long unless renewed.
pub(crate) const LEASE_SECONDS: i64 = 15 * 60;

/// The 64-bit prefix of an id, the unit of prune's mark set. Two ids sharing a prefix only
/// make prune keep a dead chunk, never delete a live one.
pub fn prefix(id: &ChunkId) -> u64 {
    u64::from_be_bytes([
        id.0[0], id.0[1], id.0[2], id.0[3], id.0[4], id.0[5], id.0[6], id.0[7],
    ])
}

/// Seconds since the epoch, now.
pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn random_suffix() -> String {
    hex::encode(&crate::crypto::random_key()[..4])
}

/// One pack of a pending set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PendingPack {
    /// Pack name, hex.
    pub pack: String,
    /// Pack size in bytes.
    pub size: u64,
    /// True when some of its blobs are live: its live blobs are copied before it is deleted.
    pub repack: bool,
    /// Bytes of dead blobs in it.
    pub dead_bytes: u64,
}

/// A pending set (phase 1's result).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingSet {
    /// Unix seconds when the phase-1 listing began.
    pub created: i64,
    /// The backups phase 1 marked from.
    pub seen_backups: Vec<String>,
    /// The packs proposed for deletion.
    pub packs: Vec<PendingPack>,
    /// Sorted prefixes of the dead chunk and page ids in those packs.
    pub dead: Vec<u64>,
}

impl PendingSet {
    /// Object key for a new pending set.
    pub fn new_key(created: i64) -> String {
        format!("{}{created:012}-{}", layout::GC_PENDING, random_suffix())
    }

    /// The creation time encoded in a key, if it is a pending-set key.
    pub(crate) fn created_of(key: &str) -> Option<i64> {
        key.strip_prefix("gc/pending/")?
            .split('-')
            .next()?
            .parse()
            .ok()
    }

    /// Reads a set. The JSON is parsed as it is decompressed, never held whole.
    pub async fn read(repo: &Repository, key: &str) -> Result<PendingSet> {
        let sealed = repo.store().get(key).await?;
        let compressed = repo.open_object(pending_kind(key), key, &sealed)?;
        drop(sealed);
        let decoder = zstd::stream::read::Decoder::new(&compressed[..])
            .map_err(|e| Error::corrupt_object(key, format!("{key}: {e}")))?;
        let reader = std::io::BufReader::with_capacity(1 << 16, decoder);
        let mut set: PendingSet = serde_json::from_reader(reader)
            .map_err(|e| Error::corrupt_object(key, format!("{key}: {e}")))?;
        set.dead.sort_unstable();
        set.dead.shrink_to_fit();
        Ok(set)
    }
}

/// Encodes and seals a pending set (or a removed set: one with only `created` and `dead`)
/// whose dead prefixes come from an ascending iterator. The JSON is compressed as it is
/// produced, so neither the prefixes nor their text are ever held whole; store the result
/// under `gc/pending/…` or `gc/removed/…`.
pub fn encode_pending_set(
    repo: &Repository,
    key: &str,
    created: i64,
    seen_backups: &[String],
    packs: &[PendingPack],
    dead: impl Iterator<Item = u64>,
) -> Result<Bytes> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase", bound = "")]
    struct Out<'a, I: Iterator<Item = u64>> {
        created: i64,
        seen_backups: &'a [String],
        packs: &'a [PendingPack],
        dead: SeqOnce<I>,
    }
    let out = Out {
        created,
        seen_backups,
        packs,
        dead: SeqOnce(std::cell::RefCell::new(Some(dead))),
    };
    let encoder = zstd::stream::write::Encoder::new(Vec::new(), 3)
        .map_err(|e| Error::Internal(format!("cannot compress pending set: {e}")))?;
    let mut writer = std::io::BufWriter::with_capacity(1 << 16, encoder);
    serde_json::to_writer(&mut writer, &out)
        .map_err(|e| Error::Internal(format!("cannot encode pending set: {e}")))?;
    let compressed = writer
        .into_inner()
        .map_err(|e| Error::Internal(format!("cannot compress pending set: {}", e.error())))?
        .finish()
        .map_err(|e| Error::Internal(format!("cannot compress pending set: {e}")))?;
    Ok(Bytes::from(repo.seal_object(
        pending_kind(key),
        key,
        &compressed,
    )))
}

/// Removed sets share the pending sets' encoding but are a kind of their own.
fn pending_kind(key: &str) -> ObjectKind {
    if key.starts_with("gc/removed/") {
        ObjectKind::GcRemoved
    } else {
        ObjectKind::GcPending
    }
}

/// Serializes an iterator as a sequence, once.
struct SeqOnce<I>(std::cell::RefCell<Option<I>>);

impl<I: Iterator<Item = u64>> Serialize for SeqOnce<I> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match self.0.borrow_mut().take() {
            Some(items) => serializer.collect_seq(items),
            None => Err(serde::ser::Error::custom("sequence serialized twice")),
        }
    }
}

/// A deletion marker (phase 2 in progress or recently finished).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeletionMarker {
    /// The pending sets this deletion works from.
    pub pending: Vec<String>,
    /// Unix seconds when it began (written before its listing of `backups/`).
    pub began: i64,
    /// Unix seconds when it finished, if it did.
    pub finished: Option<i64>,
    /// Once phase 2 knows exactly what it removes (before it deletes anything): the key of a
    /// set, in the pending-set format, of just those ids. Backups then check against it
    /// instead of the (larger) pending sets.
    #[serde(default)]
    pub removed: Option<String>,
}

impl crate::layout::sealed::SealedRecord for DeletionMarker {
    const KIND: ObjectKind = ObjectKind::GcMarker;
    const NAME: &'static str = "deletion marker";
}

impl DeletionMarker {
    /// Object key for a new marker.
    pub fn new_key(began: i64) -> String {
        format!("{}{began:012}-{}", layout::GC_DELETING, random_suffix())
    }

    /// Writes (or rewrites) the marker.
    pub async fn write(&self, repo: &Repository, key: &str) -> Result<()> {
        repo.write_record(key, self).await?;
        Ok(())
    }

    /// Reads a marker; `None` if it vanished meanwhile.
    pub async fn read(repo: &Repository, key: &str) -> Result<Option<DeletionMarker>> {
        repo.read_record(key).await
    }

    /// True when this deletion may have removed data a backup started at `started` relies on:
    /// it has not finished, or finished after `started` (less the clock-skew allowance).
    pub(crate) fn overlaps(&self, started: i64) -> bool {
        match self.finished {
            None => true,
            Some(finished) => finished >= started - CLOCK_SKEW_SECONDS,
        }
    }
}

/// What the marker directory holds.
#[derive(Debug, Serialize, Deserialize)]
struct MarkerDirectory {
    markers: Vec<String>,
}

impl crate::layout::sealed::SealedRecord for MarkerDirectory {
    const KIND: ObjectKind = ObjectKind::GcMarkerDirectory;
    const NAME: &'static str = "the marker directory";
}

/// Writes the marker directory: the keys of every deletion marker that exists or is about to.
/// Only a prune holding the lease writes it: after tidying, with the markers it listed, and
/// again, with its own marker's key added, **before** it writes that marker. So from before a
/// marker exists until a prune removes it, the directory names it, and a backup that reads the
/// directory sees every marker a listing would show (see `docs/format.md`).
pub async fn write_marker_directory(repo: &Repository, markers: &[String]) -> Result<()> {
    let directory = MarkerDirectory {
        markers: markers.to_vec(),
    };
    repo.write_record(MARKER_DIRECTORY_KEY, &directory).await?;
    Ok(())
}

/// The keys of the deletion markers: from the marker directory, or from a listing of
/// `gc/deleting/` in a repository that has none yet (no prune has written one).
async fn marker_keys(repo: &Repository) -> Result<Vec<String>> {
    match read_marker_directory(repo).await {
        Ok(Some(markers)) => return Ok(markers),
        Ok(None) => {}
        // A listing shows every marker the directory would (see `docs/format.md`): a damaged
        // directory costs one listing until a prune rewrites it.
        Err(Error::Corrupt { reason, .. }) => tracing::warn!(
            "{reason}; listing gc/deleting/ instead (`s3mover prune` rewrites {MARKER_DIRECTORY_KEY})"
        ),
        Err(e) => return Err(e),
    }
    Ok(repo
        .store()
        .list(layout::GC_DELETING)
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect())
}

/// The marker directory's list of marker keys; `None` when there is no directory.
pub(crate) async fn read_marker_directory(repo: &Repository) -> Result<Option<Vec<String>>> {
    let directory: Option<MarkerDirectory> = repo.read_record(MARKER_DIRECTORY_KEY).await?;
    Ok(directory.map(|d| d.markers))
}

/// Every deletion marker in the repository, with its key (markers named but already removed,
/// or not yet written, are skipped).
pub(crate) async fn list_markers(repo: &Repository) -> Result<Vec<(String, DeletionMarker)>> {
    let keys = marker_keys(repo).await?;
    let mut out = Vec::new();
    for key in keys {
        if let Some(marker) = DeletionMarker::read(repo, &key).await? {
            out.push((key, marker));
        }
    }
    Ok(out)
}

/// The check a backup makes right after writing its manifest (before `latest/`): if a
/// garbage-collection sweep that overlapped this backup may remove a chunk or tree page the
/// new tree references, the manifest is deleted again and the backup fails, to be rerun.
/// `started_at` is the backup's start (RFC 3339).
pub(crate) async fn check_after_commit(
    repo: &Repository,
    started_at: &str,
    manifest: &Manifest,
) -> Result<()> {
    match overlapping_dead_ids(repo, started_at, manifest).await {
        Ok(None) => Ok(()),
        Ok(Some(reason)) => withdraw(repo, manifest, &reason).await,
        Err(e) => {
            let reason = format!("its post-commit check could not complete ({e})");
            withdraw(repo, manifest, &reason).await
        }
    }
}

async fn withdraw(repo: &Repository, manifest: &Manifest, reason: &str) -> Result<()> {
    repo.store()
        .delete(&layout::manifest_key(&manifest.id))
        .await?;
    repo.store()
        .delete(&crate::tree_table::key(&manifest.id))
        .await?;
    Err(Error::Conflict(format!(
        "backup {} of volume {:?} was withdrawn: {reason}; nothing is lost, rerun the backup",
        manifest.id, manifest.volume
    )))
}

/// `Some(reason)` when the new backup must be withdrawn.
async fn overlapping_dead_ids(
    repo: &Repository,
    started_at: &str,
    manifest: &Manifest,
) -> Result<Option<String>> {
    let started = crate::time_util::parse_rfc3339(started_at)
        .map(|t| t.unix_timestamp())
        .unwrap_or(i64::MIN / 2);
    // The parent's existence and the deletion markers are independent reads: ask together.
    let parent_exists = async {
        match &manifest.parent {
            Some(parent) => Ok(repo
                .store()
                .size_of(&layout::manifest_key(parent))
                .await?
                .is_some()),
            None => Ok::<bool, Error>(true),
        }
    };
    let (parent_exists, markers) = tokio::try_join!(parent_exists, list_markers(repo))?;
    if let (false, Some(parent)) = (parent_exists, &manifest.parent) {
        return Ok(Some(format!(
            "its parent backup {parent} was removed while it ran"
        )));
    }
    // Ids the overlapping sweeps remove: those of sweeps still running (or killed before they
    // finished), and those of finished ones.
    let mut running: Vec<u64> = Vec::new();
    let mut finished: Vec<u64> = Vec::new();
    let mut running_marker: Option<String> = None;
    for (key, marker) in markers {
        if !marker.overlaps(started) {
            continue;
        }
        let into = if marker.finished.is_some() {
            &mut finished
        } else {
            running_marker.get_or_insert(key);
            &mut running
        };
        // Pending sets and removed sets are deleted only together with their marker, after
        // its retention.
        if let Some(key) = &marker.removed {
            into.extend_from_slice(&PendingSet::read(repo, key).await?.dead);
            continue;
        }
        for key in &marker.pending {
            into.extend_from_slice(&PendingSet::read(repo, key).await?.dead);
        }
    }
    if running.is_empty() && finished.is_empty() {
        return Ok(None);
    }
    for list in [&mut running, &mut finished] {
        list.sort_unstable();
        list.dedup();
    }
    // Loaded after the markers were read: a sweep read as finished deletes nothing more, so a
    // copy this index names in a pack that exists now stays.
    let index = std::sync::Arc::new(crate::index::PackIndex::load(repo).await?);
    let mut reason = None;
    let mut packs_used: HashSet<u32> = HashSet::new();
    tree_hits(repo, Arc::clone(&index), manifest, |id| {
        let p = prefix(id);
        if running.binary_search(&p).is_ok() {
            let marker = running_marker.as_deref().unwrap_or("gc/deleting/");
            reason = Some(format!(
                "garbage collection running beside it ({marker}) may delete chunk {id}, which it \
                 references; if no prune is running (one was killed), `s3mover prune` finishes \
                 that sweep"
            ));
            return true;
        }
        if finished.binary_search(&p).is_ok() {
            match index.get(id) {
                Some(location) => {
                    packs_used.insert(location.pack);
                }
                None => {
                    reason = Some(format!(
                        "garbage collection that finished beside it removed chunk {id}, which \
                         it references"
                    ));
                    return true;
                }
            }
        }
        false
    })
    .await?;
    if reason.is_some() {
        return Ok(reason);
    }
    let packs: Vec<ChunkId> = packs_used.into_iter().map(|n| index.pack_name(n)).collect();
    let sizes: Vec<(ChunkId, Option<u64>)> = futures::stream::iter(packs)
        .map(|name| async move {
            let size = repo.store().size_of(&crate::pack::pack_key(&name)).await?;
            Ok::<_, Error>((name, size))
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    Ok(sizes
        .into_iter()
        .find(|(_, size)| size.is_none())
        .map(|(name, _)| {
            format!(
                "garbage collection that finished beside it removed pack {name}, which holds \
             chunks it references"
            )
        }))
}

/// Walks the backup's tree (pages and chunks) and calls `hit` for each id whose prefix may be
/// among the removed ones, until `hit` returns true.
async fn tree_hits(
    repo: &Repository,
    index: Arc<crate::index::PackIndex>,
    manifest: &Manifest,
    mut hit: impl FnMut(&ChunkId) -> bool,
) -> Result<()> {
    let reader = crate::tree::PageReader::new(repo.clone(), index);
    let root = ChunkId::from_hex(&manifest.root).ok_or_else(|| {
        Error::corrupt_object(
            &layout::manifest_key(&manifest.id),
            format!("backup {}: bad root", manifest.id),
        )
    })?;
    let mut visited = HashSet::new();
    let mut stack = vec![(root, manifest.depth.saturating_sub(1), 0u64)];
    while let Some((id, level, index_no)) = stack.pop() {
        if id.is_zero() || !visited.insert(id) {
            continue;
        }
        if hit(&id) {
            return Ok(());
        }
        let entries = crate::tree::page_entries(level, index_no, manifest.slots);
        let ids = reader.page(&id, entries).await?;
        for (j, child) in ids.into_iter().enumerate() {
            if child.is_zero() {
                continue;
            }
            if level == 0 {
                if hit(&child) {
                    return Ok(());
                }
            } else {
                stack.push((child, level - 1, index_no * crate::tree::FANOUT + j as u64));
            }
        }
    }
    Ok(())
}

/// A prune's lease on sweeping.
#[derive(Debug)]
pub(crate) struct Lease {
    key: String,
    expires: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeaseRecord {
    host: String,
    pid: u32,
    expires: i64,
}

impl crate::layout::sealed::SealedRecord for LeaseRecord {
    const KIND: ObjectKind = ObjectKind::GcLease;
    const NAME: &'static str = "lease";
}

async fn live_leases(repo: &Repository) -> Result<Vec<(String, LeaseRecord)>> {
    let keys: Vec<String> = repo
        .store()
        .list(layout::GC_LEASE)
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect();
    let now = now_unix();
    let records: Vec<Option<(String, LeaseRecord)>> = futures::stream::iter(keys)
        .map(|key| async move {
            let Some(sealed) = repo.store().get_optional(&key).await? else {
                return Ok::<_, Error>(None);
            };
            let record = repo.open_record::<LeaseRecord>(&key, &sealed).ok();
            Ok(match record {
                Some(r) if r.expires > now && !holder_is_dead(&r) => Some((key, r)),
                _ => {
                    // Expired or unreadable: its holder is gone; clear it.
                    repo.store().delete(&key).await?;
                    None
                }
            })
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    Ok(records.into_iter().flatten().collect())
}

/// A lease held by a process of this host that no longer exists is stale at once.
fn holder_is_dead(record: &LeaseRecord) -> bool {
    !record.host.is_empty()
        && record.host == crate::layout::session::hostname()
        && record.pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{}", record.pid)).exists()
}

impl Lease {
    /// Takes the lease, or fails when another prune holds one. Write-then-list: of two prunes
    /// that start together at least one sees the other and backs off (possibly both).
    pub(crate) async fn acquire(repo: &Repository) -> Result<Lease> {
        if let Some((key, other)) = live_leases(repo).await?.into_iter().next() {
            return Err(busy(&key, &other));
        }
        let mut lease = Lease {
            key: format!("{}{:012}-{}", layout::GC_LEASE, now_unix(), random_suffix()),
            expires: 0,
        };
        lease.write(repo).await?;
        if let Some((key, other)) = live_leases(repo)
            .await?
            .into_iter()
            .find(|(k, _)| *k != lease.key)
        {
            repo.store().delete(&lease.key).await?;
            return Err(busy(&key, &other));
        }
        Ok(lease)
    }

    async fn write(&mut self, repo: &Repository) -> Result<()> {
        self.expires = now_unix() + LEASE_SECONDS;
        let record = LeaseRecord {
            host: crate::layout::session::hostname(),
            pid: std::process::id(),
            expires: self.expires,
        };
        repo.write_record(&self.key, &record).await?;
        Ok(())
    }

    /// Called before every destructive step: renews the lease when a third of it is used and
    /// fails if it lapsed or another prune took one meanwhile (then nothing more is deleted).
    pub(crate) async fn ensure(&mut self, repo: &Repository) -> Result<()> {
        let now = now_unix();
        if now >= self.expires - 30 {
            return Err(Error::Conflict(format!(
                "prune's lease {} lapsed; stopping before deleting anything more (rerun prune)",
                self.key
            )));
        }
        if now >= self.expires - 2 * LEASE_SECONDS / 3 {
            if let Some((key, other)) = live_leases(repo)
                .await?
                .into_iter()
                .find(|(k, _)| *k != self.key)
            {
                return Err(busy(&key, &other));
            }
            self.write(repo).await?;
        }
        Ok(())
    }

    /// Gives the lease up.
    pub(crate) async fn release(self, repo: &Repository) -> Result<()> {
        repo.store().delete(&self.key).await?;
        Ok(())
    }
}

fn busy(key: &str, other: &LeaseRecord) -> Error {
    Error::Conflict(format!(
        "another prune is running (lease {key} of host {:?} pid {}, expires in {} s); try again later",
        other.host,
        other.pid,
        (other.expires - now_unix()).max(0)
    ))
}
