//! Committing: the manifest is assembled with the backup's stats and written (the backup
//! exists from then on), checked against a prune that may have run meanwhile, and named by the
//! volume's `latest/` pointer while the session object goes.

use super::*;

/// What the commit records: the backup as planned and built.
pub(super) struct Commit {
    /// The new backup's id (its tree table is already written under it).
    pub(super) id: String,
    /// The volume name.
    pub(super) volume: String,
    /// The device or image file read.
    pub(super) source: PathBuf,
    /// Its size in bytes.
    pub(super) size: u64,
    /// Tags recorded in the manifest.
    pub(super) tags: Vec<String>,
    /// The parent, change source and notes the backup was planned with.
    pub(super) plan: Plan,
    /// Chunks reused from an interrupted earlier run.
    pub(super) resumed_chunks: u64,
    /// The session object the run checkpointed to.
    pub(super) session_key: String,
    /// Told when the backup is done.
    pub(super) progress: Option<Arc<dyn Progress>>,
}

/// The commit stage: writes the manifest of `built`, checks it, points `latest/` at it and
/// reports.
pub(super) async fn commit(
    repo: &Repository,
    clock: &Clock,
    commit: Commit,
    built: Built,
) -> Result<BackupReport> {
    let Built {
        root,
        depth,
        slots,
        mut stats,
        data_pack_bytes,
    } = built;
    let chunk_size = repo.chunk_size();
    let mut manifest = Manifest {
        id: commit.id.clone(),
        volume: commit.volume.clone(),
        time: crate::time_util::now_rfc3339(),
        started_at: clock.started_at.clone(),
        parent: commit.plan.parent.map(|p| p.id),
        size_bytes: commit.size,
        chunk_size,
        slots,
        root: root.to_hex(),
        depth,
        change_source: commit.plan.change_source,
        cbt: commit.plan.cbt,
        tags: commit.tags,
        source: commit.source.display().to_string(),
        host: crate::layout::session::hostname(),
        stats: BackupStats::default(),
    };
    // Stats as of the commit: everything but the manifest itself and the pointer after it.
    let before_commit = repo.store().counts().since(&clock.requests_before);
    stats.seconds = clock.started.elapsed().as_secs_f64();
    let manifest_estimate = serde_json::to_vec(&manifest).map(|v| v.len()).unwrap_or(0) as u64
        + 512
        + crate::crypto::SEAL_OVERHEAD as u64;
    stats.bytes_uploaded = before_commit.bytes_put + manifest_estimate;
    stats.metadata_bytes_uploaded = stats.bytes_uploaded - data_pack_bytes;
    stats.objects_written = before_commit.objects_put + 1;
    manifest.stats = stats;
    repo.write_manifest(&manifest).await?;
    clock.log("manifest written");
    crate::gc::check_after_commit(repo, &manifest.started_at, &manifest).await?;
    // The backup is committed: point `latest/` at it and drop its session object, together.
    let (pointed, session_deleted) = tokio::join!(
        repo.set_latest(&commit.volume, &commit.id),
        repo.store().delete(&commit.session_key)
    );
    let mut warnings = Vec::new();
    if let Err(e) = pointed {
        warnings.push(latest_not_written(repo, &commit.volume, &commit.id, &e).await);
    }
    clock.log("committed");
    // A leftover session object only costs a later rerun a lookup.
    if let Err(e) = session_deleted {
        tracing::warn!(
            "backup {} is committed, but its session object stayed: {e}",
            commit.id
        );
    }
    if let Some(progress) = &commit.progress {
        progress.finish();
    }
    Ok(BackupReport {
        manifest,
        notes: commit.plan.notes,
        resumed_chunks: commit.resumed_chunks,
        requests: repo.store().counts().since(&clock.requests_before),
        data_pack_bytes,
        warnings,
    })
}

/// After a commit whose `latest/` pointer could not be written: the backup stands, but the
/// pointer may name an older backup of the volume, which the next backup would build on
/// (a changed-ranges file made against this backup's snapshot would then be applied to the
/// wrong base). The pointer is deleted instead, so the next backup is a full one; if that
/// fails too, the warning says which parent to give.
async fn latest_not_written(
    repo: &Repository,
    volume: &str,
    manifest_id: &str,
    error: &Error,
) -> String {
    let key = layout::latest_key(&repo.volume_key(volume));
    match repo.store().delete(&key).await {
        Ok(()) => format!(
            "backup {manifest_id} is committed, but {key} could not be written ({error}); the \
             next backup of {volume:?} is a full one unless it is given `--parent {manifest_id}`"
        ),
        Err(e) => format!(
            "backup {manifest_id} is committed, but {key} could not be written ({error}) nor \
             removed ({e}); give the next backup of {volume:?} `--parent {manifest_id}` (or \
             `--parent none`)"
        ),
    }
}
