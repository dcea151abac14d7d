//! `s3mover restore`: restore a backup to a device or file.

use anyhow::Result;
use s3mover_engine::restore::{self, RestoreOptions};

use crate::cli::{GlobalArgs, OutputFormat, RestoreArgs, EXIT_OK};
use crate::output::{human_bytes, print_json};

pub async fn run(global: &GlobalArgs, args: &RestoreArgs) -> Result<u8> {
    let repo = super::open_repository(global, &args.store).await?;
    let manifest = repo
        .resolve_backup(&args.backup, args.volume.as_deref())
        .await?;
    let options = RestoreOptions {
        target: args.target.clone(),
        assume_zeroed: args.assume_zeroed,
        overwrite: args.overwrite,
        concurrency: args.concurrency,
        progress: crate::output::progress_bar(
            "restore",
            global.quiet || global.output == OutputFormat::Json,
        ),
    };
    let report = restore::restore(&repo, &manifest, options).await?;
    if global.output == OutputFormat::Json {
        print_json(&report)?;
    } else if !global.quiet {
        println!(
            "restored backup {} of volume {} to {}: {} in {:.1}s ({:.0} MiB/s), {} of data, {} zero",
            report.id,
            report.volume,
            report.target,
            human_bytes(report.size_bytes),
            report.seconds,
            report.throughput_bytes_per_second / (1 << 20) as f64,
            human_bytes(report.bytes_written),
            human_bytes(report.zero_bytes)
        );
        println!(
            "  every chunk's hash checked; backup digest {}",
            report.digest
        );
    }
    Ok(EXIT_OK)
}
