//! Quarantine: chunks that verification found missing or damaged, and backups that use them.
//!
//! * `quarantine/chunks/<64 hex>`: a chunk found bad (and in which pack). The next backup of any
//!   volume that holds this chunk uploads it again instead of trusting the parent's copy, and
//!   the bad copy's index entry is dropped so readers never pick it.
//! * `quarantine/backups/<16 hex>`: a backup whose data failed verification. It is never used
//!   as the base (parent) of an incremental; the next backup of its volume is a full one.
//! * `quarantine/volumes/<volume key>`: a volume whose backups use a quarantined chunk. Written
//!   before the chunk records, so a backup learns with one read of its volume's record (usually
//!   "not found") whether it needs to list the chunk records at all: the backup path never
//!   lists the repository otherwise. A verify that finds nothing quarantined any more removes
//!   volume records older than a day.
//!
//! Records are removed by `verify` once the chunk reads back correctly (from its new copy) or
//! the backup verifies clean with its data read.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::index;
use crate::layout::{self, aad::ObjectKind};
use crate::manifest::Manifest;
use crate::pack;
use crate::repo::Repository;

/// What a quarantine record says.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    /// What was wrong with the copy.
    pub detail: String,
    /// The pack the bad copy was in, hex, if known.
    #[serde(default)]
    pub pack: Option<String>,
    /// When the bad copy was found (RFC 3339).
    pub time: String,
}

impl crate::layout::sealed::SealedRecord for Record {
    const KIND: ObjectKind = ObjectKind::Quarantine;
    const NAME: &'static str = "quarantine record";
}

/// The quarantined chunk ids, loaded with one listing of `quarantine/chunks/`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Quarantine {
    chunks: HashSet<ChunkId>,
}

impl Quarantine {
    /// The quarantined chunks that can matter to a backup of `volume`: none, with one read,
    /// unless a verify recorded the volume as affected; then every quarantined chunk.
    pub(crate) async fn load_for_volume(repo: &Repository, volume: &str) -> Result<Quarantine> {
        let marked = repo
            .store()
            .get_optional(&volume_record_key(repo, volume))
            .await?;
        match marked {
            Some(_) => Self::load(repo).await,
            None => Ok(Quarantine::default()),
        }
    }

    /// Lists the quarantined chunks.
    pub(crate) async fn load(repo: &Repository) -> Result<Quarantine> {
        let chunks = repo
            .store()
            .list(layout::QUARANTINE_CHUNKS)
            .await?
            .into_iter()
            .filter_map(|o| {
                o.key
                    .strip_prefix(layout::QUARANTINE_CHUNKS)
                    .and_then(ChunkId::from_hex)
            })
            .collect();
        Ok(Quarantine { chunks })
    }

    /// True when the chunk must not be trusted: upload it again.
    pub(crate) fn contains(&self, id: &ChunkId) -> bool {
        !self.chunks.is_empty() && self.chunks.contains(id)
    }

    /// Number of quarantined chunks.
    pub(crate) fn len(&self) -> usize {
        self.chunks.len()
    }
}

fn chunk_key(id: &ChunkId) -> String {
    layout::quarantined_chunk_key(id)
}

fn backup_key(id: &str) -> String {
    layout::quarantined_backup_key(id)
}

const VOLUMES_PREFIX: &str = layout::QUARANTINE_VOLUMES;

fn volume_record_key(repo: &Repository, volume: &str) -> String {
    format!("{VOLUMES_PREFIX}{}", repo.volume_key(volume))
}

/// Records that backups of `volume` use a quarantined chunk (before the chunk's own record).
pub(crate) async fn record_volume(repo: &Repository, volume: &str) -> Result<()> {
    let record = Record {
        detail: "backups of this volume use a quarantined chunk".to_string(),
        pack: None,
        time: crate::time_util::now_rfc3339(),
    };
    put_record(repo, &volume_record_key(repo, volume), &record).await
}

/// Removes the volume records older than `min_age_seconds`; call only when no chunk is
/// quarantined. A younger record may belong to a verify that is writing chunk records right
/// now, so it stays for a later verify. Returns the records removed.
pub(crate) async fn clear_volume_records(repo: &Repository, min_age_seconds: i64) -> Result<usize> {
    let now = crate::gc::now_unix();
    let mut removed = 0;
    for object in repo.store().list(VOLUMES_PREFIX).await? {
        let Some(sealed) = repo.store().get_optional(&object.key).await? else {
            continue;
        };
        let record: Option<Record> = repo.open_record(&object.key, &sealed).ok();
        let written = record
            .and_then(|r| crate::time_util::parse_rfc3339(&r.time))
            .map(|t| t.unix_timestamp());
        // An unreadable record is treated as old: it only ever causes extra listings.
        if written.is_none_or(|t| t <= now - min_age_seconds) {
            repo.store().delete(&object.key).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

async fn put_record(repo: &Repository, key: &str, record: &Record) -> Result<()> {
    repo.write_record(key, record).await?;
    Ok(())
}

/// Records a bad chunk.
pub(crate) async fn record_chunk(
    repo: &Repository,
    id: &ChunkId,
    pack: Option<&ChunkId>,
    detail: &str,
) -> Result<()> {
    let record = Record {
        detail: detail.to_string(),
        pack: pack.map(ChunkId::to_hex),
        time: crate::time_util::now_rfc3339(),
    };
    put_record(repo, &chunk_key(id), &record).await
}

/// The record of a pack whose header is damaged.
pub(crate) fn damaged_pack_key(pack: &ChunkId) -> String {
    layout::damaged_pack_key(pack)
}

/// Records a pack whose header is damaged, for prune to rewrite.
pub(crate) async fn record_damaged_pack(repo: &Repository, pack: &ChunkId) -> Result<()> {
    let key = damaged_pack_key(pack);
    repo.store().put(&key, bytes::Bytes::new()).await?;
    Ok(())
}

/// Records a backup whose data failed verification.
pub(crate) async fn record_backup(repo: &Repository, id: &str, detail: &str) -> Result<()> {
    let record = Record {
        detail: detail.to_string(),
        pack: None,
        time: crate::time_util::now_rfc3339(),
    };
    put_record(repo, &backup_key(id), &record).await
}

/// Removes a chunk's record (it reads back correctly now).
pub(crate) async fn clear_chunk(repo: &Repository, id: &ChunkId) -> Result<()> {
    Ok(repo.store().delete(&chunk_key(id)).await?)
}

/// Removes a backup's record (it verified clean with its data read).
pub(crate) async fn clear_backup(repo: &Repository, id: &str) -> Result<()> {
    Ok(repo.store().delete(&backup_key(id)).await?)
}

/// Backup ids with a failed-verification record.
pub(crate) async fn failed_backups(repo: &Repository) -> Result<HashSet<String>> {
    Ok(repo
        .store()
        .list(layout::QUARANTINE_BACKUPS)
        .await?
        .into_iter()
        .filter_map(|o| {
            o.key
                .strip_prefix(layout::QUARANTINE_BACKUPS)
                .map(str::to_string)
        })
        .collect())
}

/// `Some(reason)` when `parent` failed verification and must not be a dedup base.
pub(crate) async fn reject_parent(repo: &Repository, parent: &Manifest) -> Result<Option<String>> {
    if repo
        .store()
        .size_of(&backup_key(&parent.id))
        .await?
        .is_some()
    {
        return Ok(Some(format!(
            "parent {} failed verification and is never used as a base: taking a full backup",
            parent.id
        )));
    }
    Ok(None)
}

/// Drops the index entries of bad copies (`(pack, chunk)` pairs) so that readers never pick
/// them: every index object naming one is rewritten without it. Returns the objects rewritten.
/// Skipped (returning 0) while a prune holds the lease; the next verify does it.
pub(crate) async fn drop_index_entries(
    repo: &Repository,
    bad: &HashSet<(ChunkId, ChunkId)>,
) -> Result<usize> {
    if bad.is_empty() {
        return Ok(0);
    }
    let lease = match crate::gc::Lease::acquire(repo).await {
        Ok(lease) => lease,
        Err(e) => {
            tracing::warn!("not dropping bad index entries now: {e}");
            return Ok(0);
        }
    };
    let result = rewrite(repo, bad).await;
    lease.release(repo).await?;
    result
}

async fn rewrite(repo: &Repository, bad: &HashSet<(ChunkId, ChunkId)>) -> Result<usize> {
    let mut rewritten = 0;
    for object in repo.store().list(layout::INDEX).await? {
        let records = match index::read_index_object(repo, &object.key).await {
            Ok(r) => r,
            Err(Error::Store(e)) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        let mut hit = false;
        let mut kept: Vec<(ChunkId, Vec<pack::PackEntry>)> = Vec::new();
        pack::decode_index_records(&records, |name, entry| {
            if bad.contains(&(*name, entry.id)) {
                hit = true;
                return;
            }
            match kept.last_mut() {
                Some((last, entries)) if last == name => entries.push(entry),
                _ => kept.push((*name, vec![entry])),
            }
        })?;
        if !hit {
            continue;
        }
        if !kept.is_empty() {
            index::write_index_object(repo, &kept).await?;
        }
        repo.store().delete(&object.key).await?;
        rewritten += 1;
    }
    Ok(rewritten)
}
