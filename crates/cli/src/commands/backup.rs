//! `s3mover backup`: back up a device or image.

use anyhow::Result;
use s3mover_engine::backup::{self, BackupOptions, BackupReport, ChangeInput, ParentChoice};

use crate::cli::{BackupArgs, GlobalArgs, OutputFormat, EXIT_OK};
use crate::output::{human_bytes, print_json};

pub async fn run(global: &GlobalArgs, args: &BackupArgs) -> Result<u8> {
    let locked = super::read_repository(global, &args.store).await?;
    let change = match (&args.changed_ranges, &args.allocated_ranges) {
        (Some(file), _) => ChangeInput::ChangedRangesFile(file.clone()),
        (None, Some(file)) => ChangeInput::AllocatedRangesFile(file.clone()),
        (None, None) if args.cbt.is_set() => super::cbt::backup_change_input(&args.cbt)?,
        (None, None) => ChangeInput::Auto,
    };
    let options = BackupOptions {
        volume: args.volume.clone(),
        source: args.source.clone(),
        parent: parent_choice(&args.parent),
        change,
        tags: args.tags.clone(),
        upload_concurrency: args.upload_concurrency,
        progress: crate::output::progress_bar(
            "backup",
            global.quiet,
            global.output == OutputFormat::Json,
        ),
    };
    let report = backup::unlock_and_backup(locked, options, |locked| {
        super::unlock_repository(global, locked)
    })
    .await?;
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
            "note": report.note(),
            "warnings": report.warnings,
            "requests": report.requests,
        }));
    }
    if let Some(note) = report.note() {
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
