//! Planning a backup: which parent it builds on, and which slots it reads (the change
//! source folded into a slot bitmap).

use super::*;

/// What a backup builds on and reads.
pub(super) struct Plan {
    /// The parent backup, if one is used.
    pub(super) parent: Option<Manifest>,
    /// The slots to read.
    pub(super) bitmap: SlotBitmap,
    /// How the slots were chosen, as the manifest records it.
    pub(super) change_source: ChangeSource,
    /// The change-tracking snapshots, when a service was asked.
    pub(super) cbt: Option<CbtInfo>,
    /// Why the backup reads more than it was told or builds on less than it was asked.
    pub(super) notes: Vec<BackupNote>,
}

/// Chooses the parent and folds the change input into a slot bitmap, falling back to wider
/// reads (with a note each) wherever the change information cannot be trusted.
pub(super) async fn plan(
    repo: &Repository,
    volume_name: &str,
    parent: &ParentChoice,
    change: ChangeInput,
    volume: &Volume,
    chunk_size: u64,
) -> Result<Plan> {
    let size = volume.size();
    let (parent, parent_note) = choose_parent(repo, volume_name, parent, size, chunk_size).await?;
    let mut bitmap = SlotBitmap::new(size, chunk_size);
    let mut notes = Vec::new();
    let (mut change_source, cbt) =
        fold_change_source(change, volume, &mut bitmap, &mut notes).await?;
    if let (ChangeSource::CbtDelta, Some(p)) = (change_source, &parent) {
        if let Some(note) = delta_base_mismatch(p, cbt.as_ref()) {
            bitmap.mark_all();
            change_source = ChangeSource::Full;
            notes.push(note);
        }
    }
    if change_source.inherits_from_parent() && parent.is_none() {
        // Changes relative to nothing: read everything rather than make a wrong incremental.
        bitmap.mark_all();
        change_source = ChangeSource::Full;
        if parent_note.is_none() {
            notes.push(BackupNote::ChangesWithoutParent);
        }
    }
    if change_source == ChangeSource::Full && parent.is_some() {
        change_source = ChangeSource::HashCompare;
    }
    notes.extend(parent_note);
    Ok(Plan {
        parent,
        bitmap,
        change_source,
        cbt,
        notes,
    })
}

async fn choose_parent(
    repo: &Repository,
    volume_name: &str,
    choice: &ParentChoice,
    size: u64,
    chunk_size: u64,
) -> Result<(Option<Manifest>, Option<BackupNote>)> {
    let candidate = match choice {
        ParentChoice::None => return Ok((None, None)),
        ParentChoice::Latest => repo.latest_backup(volume_name).await?,
        ParentChoice::Id(id) => Some(repo.resolve_backup(id, Some(volume_name)).await?),
    };
    let Some(parent) = candidate else {
        return Ok((None, None));
    };
    let not_used = |reason: String| {
        Ok((
            None,
            Some(BackupNote::ParentNotUsed {
                parent: parent.id.clone(),
                reason,
            }),
        ))
    };
    if let Some(reason) = crate::quarantine::reject_parent(repo, &parent).await? {
        return not_used(reason);
    }
    if parent.size_bytes != size {
        return not_used(format!(
            "the source is {size} bytes but parent {} is {} bytes: taking a full backup",
            parent.id, parent.size_bytes
        ));
    }
    if parent.chunk_size != chunk_size {
        return not_used(format!(
            "parent {} uses {}-byte chunks, the repository {chunk_size}: taking a full backup",
            parent.id, parent.chunk_size
        ));
    }
    Ok((Some(parent), None))
}

/// A delta whose base is not the parent's snapshot would be a wrong incremental.
fn delta_base_mismatch(parent: &Manifest, cbt: Option<&CbtInfo>) -> Option<BackupNote> {
    let recorded = parent.cbt.as_ref()?.snapshot_handle.as_ref()?;
    let base = cbt?.base_snapshot_handle.as_ref()?;
    (recorded != base).then(|| BackupNote::DeltaBaseMismatch {
        base: base.clone(),
        parent: parent.id.clone(),
        parent_snapshot: recorded.clone(),
    })
}

/// Folds the change information into the bitmap; says which source it was and the
/// change-tracking snapshots, and adds a note when change tracking could not be used.
async fn fold_change_source(
    change: ChangeInput,
    volume: &Volume,
    bitmap: &mut SlotBitmap,
    notes: &mut Vec<BackupNote>,
) -> Result<(ChangeSource, Option<CbtInfo>)> {
    let size = volume.size();
    let source = match change {
        ChangeInput::Auto => fold_source_extents(volume, bitmap),
        ChangeInput::ChangedRangesFile(path) => {
            fold_ranges_file(&path, size, bitmap)?;
            ChangeSource::ChangedRanges
        }
        ChangeInput::AllocatedRangesFile(path) => {
            fold_ranges_file(&path, size, bitmap)?;
            ChangeSource::AllocatedRanges
        }
        ChangeInput::Tracker(tracker) => {
            let snapshots = tracker.snapshots();
            let source = if snapshots.base_snapshot_handle.is_some() {
                ChangeSource::CbtDelta
            } else {
                ChangeSource::CbtAllocated
            };
            let source = match tracker.open().await {
                Err(reason) => {
                    notes.push(BackupNote::ChangeTrackingUnavailable { reason });
                    fold_source_extents(volume, bitmap)
                }
                Ok(tracked) => match fold_range_stream(tracked, size, bitmap).await {
                    Ok(()) => source,
                    Err(reason) => {
                        bitmap.mark_all();
                        notes.push(BackupNote::ChangeTrackingFailed { reason });
                        ChangeSource::Full
                    }
                },
            };
            return Ok((source, Some(snapshots)));
        }
    };
    Ok((source, None))
}

/// With no change information: a sparse file's data extents, or everything.
fn fold_source_extents(volume: &Volume, bitmap: &mut SlotBitmap) -> ChangeSource {
    match volume.data_extents() {
        Some(extents) => {
            for (offset, len) in extents {
                bitmap.mark_bytes(offset, len);
            }
            ChangeSource::Sparse
        }
        None => {
            bitmap.mark_all();
            ChangeSource::Full
        }
    }
}

async fn fold_range_stream(
    tracked: TrackedRanges,
    size: u64,
    bitmap: &mut SlotBitmap,
) -> std::result::Result<(), String> {
    let TrackedRanges {
        kind,
        capacity,
        mut ranges,
    } = tracked;
    let capacity = capacity.unwrap_or(size);
    if capacity != size {
        return Err(format!(
            "the service reports a volume of {capacity} bytes but the source is {size} bytes"
        ));
    }
    let mut validator =
        RangeValidator::new(kind.unwrap_or(BlockMetadataType::VariableLength), capacity);
    let started = Instant::now();
    while let Some(range) = ranges.next().await {
        let range = range?;
        validator.check(range).map_err(|e| e.to_string())?;
        bitmap.mark_bytes(range.offset, range.size);
    }
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        "folded {} streamed ranges into {} marked slots in {seconds:.2}s ({:.0} ranges/s)",
        validator.accepted(),
        bitmap.count(),
        validator.accepted() as f64 / seconds.max(1e-9)
    );
    Ok(())
}

pub(super) fn fold_ranges_file(
    path: &std::path::Path,
    size: u64,
    bitmap: &mut SlotBitmap,
) -> Result<()> {
    let file =
        std::fs::File::open(path).map_err(|e| Error::io("cannot open ranges file", path, e))?;
    let header = read_ranges_file(file, |range| {
        if range.end() > size {
            return Err(format!(
                "range {range} ends at {} but the source is only {size} bytes",
                range.end()
            ));
        }
        bitmap.mark_bytes(range.offset, range.size);
        Ok(())
    })
    .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    if header.capacity != size {
        return Err(Error::Invalid(format!(
            "{}: volumeCapacityBytes is {} but the source is {size} bytes; the ranges describe another volume",
            path.display(),
            header.capacity
        )));
    }
    Ok(())
}
