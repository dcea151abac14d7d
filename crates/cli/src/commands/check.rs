//! `s3mover check`: validate all metadata without reading chunk data.

use anyhow::Result;
use s3mover_engine::check;

use crate::cli::{CheckArgs, GlobalArgs, OutputFormat, EXIT_INTEGRITY, EXIT_OK};
use crate::output::print_json;

pub async fn run(global: &GlobalArgs, args: &CheckArgs) -> Result<u8> {
    let repo = super::open_repository(global, &args.store).await?;
    let report = check::check(&repo).await?;
    if global.output == OutputFormat::Json {
        print_json(&report)?;
    } else {
        for problem in &report.problems {
            eprintln!("{problem}");
        }
        if !global.quiet {
            println!(
                "checked {} backups ({} with tree tables), {} index objects ({} blobs), {} packs, {} chunk references: {} problems",
                report.backups,
                report.tree_tables,
                report.index_objects,
                report.blobs_indexed,
                report.packs,
                report.chunks_referenced,
                report.problems.len()
            );
        }
    }
    Ok(if report.problems.is_empty() {
        EXIT_OK
    } else {
        EXIT_INTEGRITY
    })
}
