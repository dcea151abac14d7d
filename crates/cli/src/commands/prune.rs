//! `s3mover prune`: delete data no backup references, beside running backups.

use anyhow::Result;
use s3mover_engine::prune::{self, PruneOptions, PruneReport};
use s3mover_engine::retention::parse_duration;
use s3mover_engine::Error as EngineError;

use crate::cli::{GlobalArgs, OutputFormat, PruneArgs, EXIT_OK};
use crate::output::{human_bytes, print_json};

pub async fn run(global: &GlobalArgs, args: &PruneArgs) -> Result<u8> {
    let repo = super::open_repository(global, &args.store).await?;
    let options = options(&args.grace, &args.max_unused, args.dry_run)?;
    let report = prune::prune(&repo, &options).await?;
    print(global, &report)?;
    Ok(EXIT_OK)
}

/// Prune options from the flags `prune` and `forget --prune` share.
pub fn options(grace: &str, max_unused: &str, dry_run: bool) -> Result<PruneOptions> {
    let grace = parse_duration(grace).map_err(|e| EngineError::Invalid(format!("--grace: {e}")))?;
    let number = max_unused.trim().trim_end_matches('%');
    let max_unused = match number.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => p / 100.0,
        _ => {
            return Err(EngineError::Invalid(format!(
                "--max-unused {max_unused:?} must be a percentage between 0 and 100, like 10%"
            ))
            .into())
        }
    };
    Ok(PruneOptions {
        grace,
        max_unused,
        dry_run,
    })
}

/// Prints a prune report.
pub fn print(global: &GlobalArgs, r: &PruneReport) -> Result<()> {
    if global.output == OutputFormat::Json {
        return print_json(r);
    }
    for damage in &r.damaged_pack_headers {
        eprintln!("damaged pack: {damage}");
    }
    if global.quiet {
        return Ok(());
    }
    let verb = if r.dry_run { "would" } else { "did" };
    println!(
        "{} backups, {} packs ({}), {} blobs in use",
        r.backups,
        r.packs,
        human_bytes(r.pack_bytes),
        r.chunks_marked
    );
    println!(
        "found unused: {} packs with {} unused (swept by a prune at least one grace period later); {} older sets waiting",
        r.pending_packs,
        human_bytes(r.pending_dead_bytes),
        r.pending_sets_waiting
    );
    // A dry run writes no new pack, so it has no count of them to give.
    let repacked = if r.dry_run {
        r.repacked_packs.to_string()
    } else {
        format!("{} into {} new", r.repacked_packs, r.new_packs)
    };
    println!(
        "{verb} delete {} packs, repack {repacked}, rewrite {} index objects: {} freed{}",
        r.deleted_packs,
        r.index_objects_rewritten,
        human_bytes(r.freed_bytes),
        if r.resurrected > 0 {
            format!(" ({} blobs kept: newer backups use them)", r.resurrected)
        } else {
            String::new()
        }
    );
    if r.abandoned_uploads > 0 {
        println!(
            "deleted {} pack uploads a killed process left unfinished ({})",
            r.abandoned_uploads,
            human_bytes(r.abandoned_upload_bytes)
        );
    }
    if r.copies_dropped > 0 {
        println!(
            "{verb} drop {} second copies of blobs in use (one copy of each stays)",
            r.copies_dropped
        );
    }
    Ok(())
}
