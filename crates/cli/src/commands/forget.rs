//! `s3mover forget`: remove backups by retention rules, optionally pruning afterwards.

use anyhow::Result;
use s3mover_engine::retention::{self, parse_duration, parse_offset, KeepPolicy};
use s3mover_engine::Error as EngineError;

use crate::cli::{ForgetArgs, GlobalArgs, OutputFormat, EXIT_OK};
use crate::output::print_json;

pub async fn run(global: &GlobalArgs, args: &ForgetArgs) -> Result<u8> {
    let repo = super::open_repository(global, &args.store).await?;
    let policy = KeepPolicy {
        last: args.keep_last,
        hourly: args.keep_hourly,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
        yearly: args.keep_yearly,
        within: args
            .keep_within
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| EngineError::Invalid(format!("--keep-within: {e}")))?,
        tags: args.keep_tag.clone(),
        offset: args
            .timezone_offset
            .as_deref()
            .map(parse_offset)
            .transpose()
            .map_err(|e| EngineError::Invalid(format!("--timezone-offset: {e}")))?,
        allow_remove_all: args.allow_remove_all,
    };
    let prune_options = args
        .prune
        .then(|| super::prune::options(&args.grace, &args.max_unused, args.dry_run))
        .transpose()?;
    let report = if args.backups.is_empty() {
        retention::forget(&repo, args.volume.as_deref(), &policy, args.dry_run).await?
    } else {
        if !policy.is_empty() || args.volume.is_some() {
            return Err(EngineError::Invalid(
                "forget takes backup ids or --keep-* rules (with --volume), not both".into(),
            )
            .into());
        }
        retention::forget_ids(&repo, &args.backups, args.dry_run).await?
    };
    let pruned = match &prune_options {
        Some(options) => Some(s3mover_engine::prune::prune(&repo, options).await?),
        None => None,
    };
    if global.output == OutputFormat::Json {
        print_json(&serde_json::json!({
            "forget": report,
            "prune": pruned,
        }))?;
        return Ok(EXIT_OK);
    }
    if !global.quiet {
        let mut volume = "";
        for entry in report.backups.iter().filter(|_| !args.backups.is_empty()) {
            println!(
                "  {} {}  {}  {}",
                if report.dry_run {
                    "would remove"
                } else {
                    "remove"
                },
                entry.id,
                if entry.volume.is_empty() {
                    "?".into()
                } else {
                    crate::output::shown(&entry.volume)
                },
                entry.reasons.join(", ")
            );
        }
        for entry in report.backups.iter().filter(|_| args.backups.is_empty()) {
            if entry.volume != volume {
                volume = &entry.volume;
                let policy = report.policies.iter().find(|p| p.volume == volume);
                let recorded = match policy {
                    Some(p) if p.source == "recorded" => format!(
                        "; its own rules {}, recorded by backup {}",
                        p.rules,
                        p.backup.as_deref().unwrap_or("?")
                    ),
                    Some(p) if p.source == "none" => {
                        "; no rule given or recorded: every backup kept".to_string()
                    }
                    _ => String::new(),
                };
                println!(
                    "volume {} (calendar {}{recorded}):",
                    crate::output::shown(volume),
                    report.calendar
                );
                if let Some(note) = policy.and_then(|p| p.note.as_deref()) {
                    println!("  note: {note}");
                }
            }
            println!(
                "  {} {}  {}  {}",
                if entry.keep { "keep  " } else { "remove" },
                entry.id,
                entry.time,
                entry.reasons.join(", ")
            );
        }
        println!(
            "{} {} backups, kept {}",
            if report.dry_run {
                "would remove"
            } else {
                "removed"
            },
            report.removed.len(),
            report.backups.len() - report.removed.len()
        );
    }
    if let Some(pruned) = &pruned {
        super::prune::print(global, pruned)?;
    }
    Ok(EXIT_OK)
}
