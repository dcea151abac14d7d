//! Planning a backup: which parent it builds on, and which slots it reads (the change
//! source folded into a slot bitmap).

use super::*;

pub(super) async fn choose_parent(
    repo: &Repository,
    options: &BackupOptions,
    size: u64,
    chunk_size: u64,
) -> Result<(Option<Manifest>, Option<String>)> {
    let candidate = match &options.parent {
        ParentChoice::None => return Ok((None, None)),
        ParentChoice::Latest => repo.latest_backup(&options.volume).await?,
        ParentChoice::Id(id) => Some(repo.resolve_backup(id, Some(&options.volume)).await?),
    };
    let Some(parent) = candidate else {
        return Ok((None, None));
    };
    if let Some(note) = crate::quarantine::reject_parent(repo, &parent).await? {
        return Ok((None, Some(note)));
    }
    if parent.size_bytes != size {
        let note = format!(
            "the source is {size} bytes but parent {} is {} bytes: taking a full backup",
            parent.id, parent.size_bytes
        );
        return Ok((None, Some(note)));
    }
    if parent.chunk_size != chunk_size {
        let note = format!(
            "parent {} uses {}-byte chunks, the repository {chunk_size}: taking a full backup",
            parent.id, parent.chunk_size
        );
        return Ok((None, Some(note)));
    }
    Ok((Some(parent), None))
}

/// A delta whose base is not the parent's snapshot would be a wrong incremental.
pub(super) fn delta_base_mismatch(parent: &Manifest, cbt: Option<&CbtInfo>) -> Option<String> {
    let recorded = parent.cbt.as_ref()?.snapshot_handle.as_ref()?;
    let base = cbt?.base_snapshot_handle.as_ref()?;
    (recorded != base).then(|| {
        format!(
            "the changed blocks are relative to snapshot {base} but parent {} was taken from {recorded}: reading the whole volume instead",
            parent.id
        )
    })
}

/// Folds the change information into the bitmap; says which source it was and, when change
/// tracking failed and the whole volume will be read instead, why.
pub(super) async fn fold_change_source(
    change: ChangeInput,
    volume: &Volume,
    bitmap: &mut SlotBitmap,
) -> Result<(ChangeSource, Option<String>)> {
    let size = volume.size();
    let source = match change {
        ChangeInput::Auto => match volume.data_extents() {
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
        },
        ChangeInput::ChangedRangesFile(path) => {
            fold_ranges_file(&path, size, bitmap)?;
            ChangeSource::ChangedRanges
        }
        ChangeInput::AllocatedRangesFile(path) => {
            fold_ranges_file(&path, size, bitmap)?;
            ChangeSource::AllocatedRanges
        }
        ChangeInput::RangeStream {
            source,
            kind,
            capacity,
            ranges,
        } => {
            return match fold_range_stream(kind, capacity, ranges, size, bitmap).await {
                Ok(()) => Ok((source, None)),
                Err(reason) => {
                    bitmap.mark_all();
                    Ok((
                        ChangeSource::Full,
                        Some(format!(
                            "change tracking failed ({reason}); reading the whole volume instead"
                        )),
                    ))
                }
            };
        }
    };
    Ok((source, None))
}

pub(super) async fn fold_range_stream(
    kind: Option<BlockMetadataType>,
    capacity: Option<u64>,
    mut ranges: BoxStream<'static, std::result::Result<BlockRange, String>>,
    size: u64,
    bitmap: &mut SlotBitmap,
) -> std::result::Result<(), String> {
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
