//! Loading: what the build needs from the repository before the first slot is read — where
//! the parent's tree pages are, what an interrupted run of the volume already stored, and which
//! chunks are quarantined.

use super::*;

/// What the load stage hands the build.
pub(super) struct Loaded {
    /// The tree the new one is built on.
    pub(super) parent: ParentTree,
    /// What an interrupted run of the volume stored.
    pub(super) resumed: Resumed,
}

/// The parent's tree, as the tree builder compares with it.
pub(super) struct ParentTree {
    /// Reads the parent's tree pages (`None` for a full backup).
    pub(super) reader: Option<PageReader>,
    /// The parent's root (zero for a full backup).
    pub(super) root: ChunkId,
    /// The parent's tree table, when it has a readable one.
    pub(super) table: Option<TreeTable>,
    /// Chunks never taken from a parent, however it names them.
    pub(super) quarantine: crate::quarantine::Quarantine,
}

/// What the chunk writer goes on from.
pub(super) struct Resumed {
    /// Chunks an interrupted run of this volume stored, reused instead of uploaded again.
    pub(super) known: KnownSet,
    /// The session record this run checkpoints, carrying on a resumed run's index objects.
    pub(super) session: SessionRecord,
}

/// The load stage: the parent's tree, an interrupted run's session and the quarantine.
///
/// Only an incremental reads the parent's tree pages, so only it needs their locations: from
/// the parent's tree table, or (a parent without one) from the pack index, of tree pages only
/// (data chunks are compared by id, never looked up). Quarantine matters only when chunks are
/// compared with a parent's. The three loads are independent small requests: run them
/// together.
pub(super) async fn load(
    repo: &Repository,
    volume: &str,
    parent: Option<&Manifest>,
    session_key: &str,
    started_at: &str,
) -> Result<Loaded> {
    let ((index, parent_table), (known, resumed_objects), quarantine) = tokio::try_join!(
        async {
            let Some(parent) = parent else {
                return Ok((Arc::new(PackIndex::default()), None));
            };
            match TreeTable::read(repo, &parent.id).await {
                Ok(Some(table)) => Ok((Arc::new(table.to_index()), Some(table))),
                Ok(None) => Ok((Arc::new(PackIndex::load_tree_pages(repo).await?), None)),
                // The table is only a hint: a damaged one costs the listing it would have saved.
                Err(Error::Corrupt { reason, .. }) => {
                    tracing::warn!(
                        "the tree table of backup {} is damaged ({reason}); reading the pack index instead",
                        parent.id
                    );
                    Ok((Arc::new(PackIndex::load_tree_pages(repo).await?), None))
                }
                Err(e) => Err(e),
            }
        },
        resume_session(repo, session_key),
        async {
            match parent {
                Some(_) => crate::quarantine::Quarantine::load_for_volume(repo, volume).await,
                None => Ok(crate::quarantine::Quarantine::default()),
            }
        },
    )?;
    let session = SessionRecord {
        session: hex::encode(&crate::crypto::random_key()[..8]),
        volume: volume.to_string(),
        started_at: started_at.to_string(),
        updated_at: started_at.to_string(),
        host: crate::layout::session::hostname(),
        index_objects: resumed_objects,
    };
    let reader = parent.map(|_| PageReader::new(repo.clone(), index));
    let root = parent.and_then(|p| ChunkId::from_hex(&p.root));
    Ok(Loaded {
        parent: ParentTree {
            reader,
            root: root.unwrap_or(ChunkId::ZERO),
            table: parent_table,
            quarantine,
        },
        resumed: Resumed { known, session },
    })
}

/// The chunks a fresh session object of the volume says an interrupted run stored (read from
/// the index objects it names), and those of its index objects that could be read.
async fn resume_session(repo: &Repository, session_key: &str) -> Result<(KnownSet, Vec<String>)> {
    let mut known = KnownSet::default();
    let record = match repo.read_record::<SessionRecord>(session_key).await {
        Ok(Some(record)) => record,
        Ok(None) => return Ok((known, Vec::new())),
        Err(Error::Store(e)) => return Err(e.into()),
        Err(_) => {
            tracing::warn!("ignoring an unreadable session object {session_key}");
            return Ok((known, Vec::new()));
        }
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let fresh = record
        .age_seconds(now)
        .is_some_and(|age| age < SESSION_REUSE_SECONDS);
    if !fresh {
        return Ok((known, Vec::new()));
    }
    let mut usable = Vec::new();
    for key in &record.index_objects {
        if let Ok(records) = index::read_index_object(repo, key).await {
            crate::pack::decode_index_records(&records, |_, entry| known.insert(entry.id))?;
            usable.push(key.clone());
        }
    }
    tracing::info!(
        "resuming: {} chunks from an interrupted run of {} are reused",
        known.len(),
        record.volume
    );
    Ok((known, usable))
}
