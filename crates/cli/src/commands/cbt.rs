//! `s3mover cbt list` and `s3mover cbt verify`, and turning `backup`'s CBT flags into the
//! engine's range stream.

use anyhow::Result;
use futures::StreamExt;
use s3mover_cbt::{Client, ListFormat, SelectionArgs, StreamOptions};
use s3mover_engine::backup::ChangeInput;
use s3mover_engine::manifest::{CbtInfo, ChangeSource};

use crate::cli::{BackupCbtArgs, CbtCommand, GlobalArgs, OutputFormat, EXIT_OK};
use crate::output::{human_bytes, print_json};

pub async fn run(global: &GlobalArgs, command: &CbtCommand) -> Result<u8> {
    match command {
        CbtCommand::List(args) => list(global, &args.selection).await,
        CbtCommand::Verify(args) => {
            warn_of_token_on_command_line(&args.selection, "--token");
            let selection = args.selection.resolve()?;
            let report = s3mover_cbt::verify(
                &selection,
                StreamOptions::default(),
                &args.source,
                &args.target,
            )
            .await?;
            if global.output == OutputFormat::Json {
                print_json(&serde_json::json!({
                    "ranges": report.ranges,
                    "bytesCopied": report.bytes_copied,
                    "bytesCompared": report.bytes_compared,
                    "match": true,
                }))?;
            } else if !global.quiet {
                println!(
                    "copied {} ranges ({}) from {} to {}; the devices are identical ({} compared)",
                    report.ranges,
                    human_bytes(report.bytes_copied),
                    args.source.display(),
                    args.target.display(),
                    human_bytes(report.bytes_compared)
                );
            }
            Ok(EXIT_OK)
        }
    }
}

async fn list(global: &GlobalArgs, selection: &SelectionArgs) -> Result<u8> {
    warn_of_token_on_command_line(selection, "--token");
    let selection = selection.resolve()?;
    let format = match global.output {
        OutputFormat::Json => ListFormat::Json,
        _ => ListFormat::Table,
    };
    let summary = s3mover_cbt::list(
        &selection,
        StreamOptions::default(),
        format,
        std::io::stdout(),
    )
    .await?;
    if format == ListFormat::Table && !global.quiet {
        eprintln!("{} ranges, {}", summary.ranges, human_bytes(summary.bytes));
    }
    Ok(EXIT_OK)
}

/// Says once that a token given as a flag is visible to other users, and what to use instead.
fn warn_of_token_on_command_line(selection: &SelectionArgs, flag: &str) {
    if selection.token.is_some() {
        tracing::warn!(
            "{flag} puts the token on the command line, where other users of this machine can read it; use {flag}-file FILE"
        );
    }
}

/// Connects to the CBT service named by `backup`'s flags and returns the change input and the
/// handles to record. A service that cannot be reached, or says this snapshot has no change
/// tracking, gives a full read instead (with the reason), never a wrong incremental.
pub async fn backup_change_input(
    args: &BackupCbtArgs,
) -> Result<(ChangeInput, CbtInfo, Option<String>)> {
    let selection_args = args.selection();
    warn_of_token_on_command_line(&selection_args, "--cbt-token");
    let selection = selection_args.resolve()?;
    let record = selection.record();
    let info = CbtInfo {
        snapshot: Some(record.snapshot.clone()),
        snapshot_handle: record.snapshot_handle.clone(),
        base_snapshot_handle: record.base_handle.clone(),
    };
    let source = if selection.query.base.is_some() {
        ChangeSource::CbtDelta
    } else {
        ChangeSource::CbtAllocated
    };
    let client = match Client::connect(&selection.endpoint).await {
        Ok(client) => client,
        Err(e) => {
            return Ok((
                ChangeInput::Auto,
                info,
                Some(format!(
                    "change tracking unavailable ({e}); reading the whole volume"
                )),
            ))
        }
    };
    let mut stream = client.ranges(selection.query.clone(), StreamOptions::default());
    let header = match stream.header().await {
        Ok(header) => header,
        Err(e) => {
            return Ok((
                ChangeInput::Auto,
                info,
                Some(format!(
                    "change tracking unavailable ({e}); reading the whole volume"
                )),
            ))
        }
    };
    let ranges = stream
        .into_ranges()
        .map(|r| r.map_err(|e| e.to_string()))
        .boxed();
    Ok((
        ChangeInput::RangeStream {
            source,
            kind: header.map(|h| h.0),
            capacity: header.map(|h| h.1),
            ranges,
        },
        info,
        None,
    ))
}
