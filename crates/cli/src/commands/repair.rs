//! `s3mover repair index`: rebuild the index from the packs' headers.

use anyhow::Result;
use s3mover_engine::repair;

use crate::cli::{GlobalArgs, OutputFormat, RepairCommand, EXIT_INTEGRITY, EXIT_OK};
use crate::output::print_json;

pub async fn run(global: &GlobalArgs, command: &RepairCommand) -> Result<u8> {
    let RepairCommand::Index(args) = command;
    let repo = super::open_repository(global, &args.store).await?;
    let report = repair::repair_index(&repo, args.dry_run).await?;
    if global.output == OutputFormat::Json {
        print_json(&report)?;
    } else {
        for damaged in &report.damaged {
            let verb = if report.dry_run {
                "would delete"
            } else {
                "deleted"
            };
            eprintln!("{verb} damaged index object: {damaged}");
        }
        for pack in &report.unreadable_packs {
            eprintln!("left alone, its header cannot be read: {pack}");
        }
        if !global.quiet {
            println!(
                "{} {} packs ({} blobs) in {} new index objects; {} damaged index objects {}",
                if report.dry_run {
                    "would index"
                } else {
                    "indexed"
                },
                report.packs_reindexed,
                report.blobs_reindexed,
                report.index_objects_written,
                report.damaged.len(),
                if report.dry_run {
                    "to delete"
                } else {
                    "deleted"
                },
            );
        }
    }
    Ok(if report.unreadable_packs.is_empty() {
        EXIT_OK
    } else {
        EXIT_INTEGRITY
    })
}
