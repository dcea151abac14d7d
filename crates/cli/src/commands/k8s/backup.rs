//! `s3mover k8s backup`.

use std::sync::Arc;

use anyhow::Result;
use s3mover_k8s::backup::{backup_all, BackupOutcome, BackupSettings};
use s3mover_k8s::cleanup::Tracker;
use s3mover_k8s::select::{ClaimRef, Selection};
use s3mover_k8s::Cluster;

use crate::cli::{GlobalArgs, OutputFormat, EXIT_FAILED, EXIT_OK};
use crate::cli_k8s::K8sBackupArgs;
use crate::output::{human_bytes, print_json};

/// Checks what can be checked without a cluster.
pub fn check_flags(args: &K8sBackupArgs) -> Result<()> {
    Selection::from_flags(
        &args.pvcs,
        args.selector.as_deref(),
        "default",
        args.all_namespaces,
    )?;
    for tag in &args.tags {
        if tag.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
            return Err(s3mover_k8s::Error::Invalid(format!(
                "tag {tag:?} must look like KEY=VALUE"
            ))
            .into());
        }
        crate::cli::parse_tag(tag).map_err(s3mover_k8s::Error::Invalid)?;
    }
    if args.parallel == 0 {
        return Err(s3mover_k8s::Error::Invalid("--parallel must be at least 1".into()).into());
    }
    if let (Some(ns), Some(mover)) = (&args.namespace, &args.mover.mover_namespace) {
        super::check_mover_namespace(&args.mover, ns).map_err(|_| {
            s3mover_k8s::Error::Invalid(format!(
                "--mover-namespace {mover}: movers run in the claim's namespace ({ns}), where its snapshot can be read; put the repository Secret and the mover service account there"
            ))
        })?;
    }
    Ok(())
}

pub async fn run(global: &GlobalArgs, cluster: &Cluster, args: &K8sBackupArgs) -> Result<u8> {
    let namespace = super::namespace(cluster, &args.namespace);
    let selection = Selection::from_flags(
        &args.pvcs,
        args.selector.as_deref(),
        &namespace,
        args.all_namespaces,
    )?;
    let claims = selection.resolve(&cluster.client).await?;
    if claims.is_empty() {
        anyhow::bail!("no claim matches the selector");
    }
    for claim in &claims {
        super::check_mover_namespace(&args.mover, &claim.namespace)?;
    }
    let settings = BackupSettings {
        snapshot_class: args.snapshot_class.clone(),
        repo_secret: args.mover.repo_secret.clone(),
        mover_image: args.mover.mover_image.clone(),
        pull_policy: args.mover.image_pull_policy.clone(),
        mover_service_account: args.mover.mover_service_account.clone(),
        timeout: args.mover.timeout,
        tags: args.tags.clone(),
        backoff_limit: args.mover.backoff_limit,
        retention_rules,
    };
    let tracker = Arc::new(Tracker::default());
    let quiet = global.quiet;
    let progress = move |claim: &ClaimRef, line: &str| {
        if !quiet {
            eprintln!("{claim}: {line}");
        }
    };
    let work = backup_all(
        &cluster.client,
        tracker.clone(),
        claims,
        &settings,
        args.parallel,
        &progress,
    );
    let outcomes = tokio::select! {
        outcomes = work => outcomes,
        _ = tokio::signal::ctrl_c() => {
            super::say(global, "interrupted: removing what this run created");
            let failed = tracker
                .delete_all(&cluster.client, s3mover_k8s::backup::CLEANUP_WAIT)
                .await;
            for (object, why) in &failed {
                eprintln!("s3mover: could not remove {object}: {why}");
            }
            anyhow::bail!("interrupted; no backup was committed by the claims still running, and their objects were removed");
        }
    };
    print(global, &outcomes)?;
    let failed = outcomes.iter().filter(|o| o.status != "ok").count();
    if failed > 0 {
        for o in outcomes.iter().filter(|o| o.status != "ok") {
            eprintln!(
                "s3mover: {}/{}: {}",
                o.namespace,
                o.pvc,
                o.error.as_deref().unwrap_or("failed")
            );
        }
        return Ok(EXIT_FAILED);
    }
    Ok(EXIT_OK)
}

fn print(global: &GlobalArgs, outcomes: &[BackupOutcome]) -> Result<()> {
    if global.output == OutputFormat::Json {
        return print_json(&outcomes);
    }
    if global.quiet {
        return Ok(());
    }
    for o in outcomes {
        match (o.status, &o.id) {
            ("ok", Some(id)) => {
                println!(
                    "{}/{}: backup {id} ({}), read {}, uploaded {} in {:.1}s",
                    o.namespace,
                    o.pvc,
                    o.change_source.as_deref().unwrap_or("?"),
                    human_bytes(o.bytes_read.unwrap_or(0)),
                    human_bytes(o.bytes_uploaded.unwrap_or(0)),
                    o.seconds
                );
                if let Some(note) = &o.note {
                    println!("  note: {note}");
                }
                if let Some(snapshot) = &o.snapshot {
                    println!("  kept snapshot {snapshot} as the next base");
                }
            }
            _ => println!(
                "{}/{}: FAILED: {}",
                o.namespace,
                o.pvc,
                o.error.as_deref().unwrap_or("unknown")
            ),
        }
        for leftover in &o.leftovers {
            println!("  not removed: {leftover} (run `s3mover k8s cleanup`)");
        }
    }
    Ok(())
}

/// A claim's `s3mover.io/retention` rules, checked, in the form the backup records.
fn retention_rules(text: &str) -> Result<String, String> {
    let rules = s3mover_engine::retention_spec::parse_spec(text)?;
    Ok(s3mover_engine::retention_spec::to_spec(&rules))
}
