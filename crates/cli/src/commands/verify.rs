//! `s3mover verify`: check backups for missing and damaged data.

use anyhow::Result;
use s3mover_engine::verify::{self, ReadData};

use crate::cli::{GlobalArgs, OutputFormat, VerifyArgs, EXIT_INTEGRITY, EXIT_OK};
use crate::output::{human_bytes, print_json};

pub async fn run(global: &GlobalArgs, args: &VerifyArgs) -> Result<u8> {
    let repo = super::open_repository(global, &args.store).await?;
    let (manifests, damaged) = if args.backups.is_empty() {
        let scan = repo.scan_manifests(None).await?;
        (scan.manifests, scan.damaged)
    } else {
        let mut list = Vec::new();
        for spec in &args.backups {
            list.push(repo.resolve_backup(spec, None).await?);
        }
        (list, Vec::new())
    };
    let read_data = match (&args.read_data, &args.read_data_subset) {
        (true, _) => ReadData::All,
        (false, Some(spec)) if !spec.trim().ends_with('%') => {
            ReadData::Bytes(crate::cli::parse_size(spec).map_err(s3mover_engine::Error::Invalid)?)
        }
        (false, Some(pct)) => ReadData::Subset(parse_percent(pct)?),
        (false, None) => ReadData::None,
    };
    let mut report = verify::verify(&repo, &manifests, read_data).await?;
    // Damaged manifests are reported first; the backups that can be read were verified.
    let damaged = damaged.iter().map(|d| verify::Problem {
        chunk: String::new(),
        kind: "corrupt".into(),
        detail: d.to_string(),
        uses: Vec::new(),
    });
    report.problems.splice(0..0, damaged);
    if global.output == OutputFormat::Json {
        print_json(&report)?;
    } else {
        for problem in &report.problems {
            if problem.chunk.is_empty() && problem.uses.is_empty() {
                eprintln!("{}: {}", problem.kind, problem.detail);
                continue;
            }
            let uses: Vec<String> = problem
                .uses
                .iter()
                .map(|u| {
                    format!(
                        "backup {} ({}) offset {}",
                        u.backup,
                        crate::output::shown(&u.volume),
                        u.offset
                    )
                })
                .collect();
            eprintln!(
                "{} chunk {}: {} — used by {}",
                problem.kind,
                if problem.chunk.is_empty() {
                    "-"
                } else {
                    &problem.chunk
                },
                problem.detail,
                if uses.is_empty() {
                    "no backup".to_string()
                } else {
                    uses.join(", ")
                }
            );
        }
        if !global.quiet {
            println!(
                "verified {} backups: {} chunks referenced, {} read ({} in {} packs), {} problems",
                report.backups_checked,
                report.chunks_checked,
                report.chunks_read,
                human_bytes(report.bytes_read),
                report.packs_read,
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

fn parse_percent(text: &str) -> Result<f64> {
    let number = text.trim().trim_end_matches('%');
    match number.parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p / 100.0),
        _ => Err(s3mover_engine::Error::Invalid(format!(
            "--read-data-subset {text:?} must be a percentage between 0 and 100, like 5%"
        ))
        .into()),
    }
}
