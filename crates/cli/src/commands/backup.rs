//! `s3mover backup`: back up a device or image.

use anyhow::Result;
use s3mover_engine::backup::{self, BackupOptions, BackupReport, ChangeInput, ParentChoice};

use crate::cli::{BackupArgs, GlobalArgs, OutputFormat, EXIT_OK};
use crate::output::{human_bytes, print_json};

pub async fn run(global: &GlobalArgs, args: &BackupArgs) -> Result<u8> {
    let locked = super::read_repository(global, &args.store).await?;
    // The source's reads start while the password is resolved and the key derived.
    let ranges_file = match (&args.changed_ranges, &args.allocated_ranges) {
        (Some(file), _) => Some(ChangeInput::ChangedRangesFile(file.clone())),
        (None, Some(file)) => Some(ChangeInput::AllocatedRangesFile(file.clone())),
        (None, None) => None,
    };
    if let Some(change) = &ranges_file {
        let chunk_size = u64::from(locked.config().chunk_size);
        drop(backup::prefetch_ranges(&args.source, change, chunk_size));
    }
    let repo = super::unlock_repository(global, locked).await?;
    let mut cbt = None;
    let mut cbt_note = None;
    let change = match ranges_file {
        Some(change) => change,
        None if args.cbt.is_set() => {
            let (change, info, note) = super::cbt::backup_change_input(&args.cbt).await?;
            cbt = Some(info);
            cbt_note = note;
            change
        }
        None => ChangeInput::Auto,
    };
    let options = BackupOptions {
        volume: args.volume.clone(),
        source: args.source.clone(),
        parent: parent_choice(&args.parent),
        change,
        tags: args.tags.clone(),
        cbt,
        upload_concurrency: args
            .upload_concurrency
            .unwrap_or_else(|| repo.store().uploads_in_flight()),
        progress: crate::output::progress_bar(
            "backup",
            global.quiet,
            global.output == OutputFormat::Json,
        ),
    };
    let mut report = backup::backup(&repo, options).await?;
    if let Some(note) = cbt_note {
        report.parent_note = Some(match report.parent_note.take() {
            Some(other) => format!("{note}; {other}"),
            None => note,
        });
    }
    print_report(global, &report)?;
    Ok(EXIT_OK)
}

/// Parses `--parent`.
pub fn parent_choice(text: &str) -> ParentChoice {
    match text {
        "latest" => ParentChoice::Latest,
        "none" => ParentChoice::None,
        id => ParentChoice::Id(id.to_string()),
    }
}

/// Prints a backup's outcome as text or JSON.
pub fn print_report(global: &GlobalArgs, report: &BackupReport) -> Result<()> {
    let m = &report.manifest;
    let s = &m.stats;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    if global.output == OutputFormat::Json {
        return print_json(&serde_json::json!({
            "id": m.id,
            "volume": m.volume,
            "parent": m.parent,
            "changeSource": m.change_source.as_str(),
            "sizeBytes": m.size_bytes,
            "bytesRead": s.bytes_read,
            "bytesUploaded": report.requests.bytes_put,
            "metadataBytesUploaded": report.requests.bytes_put.saturating_sub(report.data_pack_bytes),
            "objectsWritten": report.requests.objects_put,
            "chunksNew": s.chunks_new,
            "resumedChunks": report.resumed_chunks,
            "seconds": s.seconds,
            "time": m.time,
            "digest": m.root,
            "note": report.parent_note,
            "warnings": report.warnings,
            "requests": report.requests,
        }));
    }
    if let Some(note) = &report.parent_note {
        eprintln!("note: {note}");
    }

    if global.quiet {
        return Ok(());
    }
    println!(
        "backup {} of volume {} ({}) committed in {:.1}s",
        m.id,
        crate::output::shown(&m.volume),
        human_bytes(m.size_bytes),
        s.seconds
    );
    println!(
        "  change source {}, parent {}",
        m.change_source.as_str(),
        m.parent.as_deref().unwrap_or("none")
    );
    println!(
        "  read {} ({:.0} MiB/s), {} new chunks, uploaded {} in {} objects ({} metadata)",
        human_bytes(s.bytes_read),
        s.bytes_read as f64 / (1 << 20) as f64 / s.seconds.max(1e-9),
        s.chunks_new,
        human_bytes(s.bytes_uploaded),
        s.objects_written,
        human_bytes(s.metadata_bytes_uploaded)
    );
    if report.resumed_chunks > 0 {
        println!(
            "  reused {} chunks uploaded by an interrupted run",
            report.resumed_chunks
        );
    }
    Ok(())
}
