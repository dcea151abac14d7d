//! `s3mover k8s restore`.

use std::sync::Arc;

use anyhow::Result;
use s3mover_k8s::cleanup::Tracker;
use s3mover_k8s::record::ClaimRecord;
use s3mover_k8s::restore::{restore_claim, RestoreRequest};
use s3mover_k8s::select::ClaimRef;
use s3mover_k8s::Cluster;

use crate::cli::{GlobalArgs, OutputFormat, EXIT_OK};
use crate::cli_k8s::K8sRestoreArgs;
use crate::output::{human_bytes, print_json};

/// Checks what can be checked without a cluster.
pub fn check_flags(args: &K8sRestoreArgs) -> Result<()> {
    if let Some(mode) = &args.volume_mode {
        if mode != "Block" && mode != "Filesystem" {
            return Err(s3mover_k8s::Error::Invalid(format!(
                "--volume-mode {mode:?} must be Block or Filesystem"
            ))
            .into());
        }
    }
    Ok(())
}

pub async fn run(global: &GlobalArgs, cluster: &Cluster, args: &K8sRestoreArgs) -> Result<u8> {
    let namespace = super::namespace(cluster, &args.namespace);
    let target = ClaimRef {
        namespace: args
            .to_namespace
            .clone()
            .unwrap_or_else(|| namespace.clone()),
        name: args.to.clone().unwrap_or_else(|| args.pvc.clone()),
    };
    super::check_mover_namespace(&args.mover, &target.namespace)?;
    let volume = ClaimRecord::volume_name(&namespace, &args.pvc);
    let repo = super::open_repository(
        global,
        &args.store,
        cluster,
        &namespace,
        &args.mover.repo_secret,
    )
    .await?;
    let manifest = repo
        .resolve_backup(args.backup.as_deref().unwrap_or("latest"), Some(&volume))
        .await?;
    let recorded = ClaimRecord::from_tags(&manifest.tags);
    let size = match args.size {
        Some(size) if size < manifest.size_bytes => anyhow::bail!(
            "--size {size} is smaller than backup {} ({} bytes)",
            manifest.id,
            manifest.size_bytes
        ),
        Some(size) => size,
        None => recorded
            .as_ref()
            .map_or(manifest.size_bytes, |r| r.size.max(manifest.size_bytes)),
    };
    let request = RestoreRequest {
        backup_id: manifest.id.clone(),
        target: target.clone(),
        size,
        volume_mode: args
            .volume_mode
            .clone()
            .or(recorded.as_ref().map(|r| r.volume_mode.clone()))
            .unwrap_or_else(|| "Block".into()),
        access_modes: recorded
            .as_ref()
            .map(|r| r.access_modes.clone())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
        storage_class: args
            .storage_class
            .clone()
            .or(recorded.as_ref().and_then(|r| r.storage_class.clone())),
        overwrite: args.overwrite,
        repo_secret: args.mover.repo_secret.clone(),
        mover_image: args.mover.mover_image.clone(),
        pull_policy: args.mover.image_pull_policy.clone(),
        mover_service_account: args.mover.mover_service_account.clone(),
        timeout: args.mover.timeout,
        backoff_limit: args.mover.backoff_limit,
    };
    super::say(
        global,
        &format!(
            "{target}: restoring backup {} of {volume} ({}, {})",
            manifest.id,
            human_bytes(size),
            request.volume_mode
        ),
    );
    let tracker = Arc::new(Tracker::default());
    let quiet = global.quiet;
    let progress = move |line: &str| {
        if !quiet {
            eprintln!("{target}: {line}");
        }
    };
    let outcome = tokio::select! {
        outcome = restore_claim(&cluster.client, &tracker, &request, &progress) => outcome?,
        _ = tokio::signal::ctrl_c() => {
            super::say(global, "interrupted: removing what this run created");
            tracker.delete_all(&cluster.client, s3mover_k8s::backup::CLEANUP_WAIT).await;
            anyhow::bail!("interrupted; the claim this run created was removed");
        }
    };
    if global.output == OutputFormat::Json {
        print_json(&outcome)?;
    } else if !global.quiet {
        println!(
            "{}/{}: restored backup {} in {:.1}s; every chunk's hash checked; the claim is Bound{}",
            outcome.namespace,
            outcome.pvc,
            outcome.backup,
            outcome.seconds,
            outcome
                .volume
                .as_deref()
                .map(|v| format!(" to volume {v}"))
                .unwrap_or_default()
        );
    }
    Ok(EXIT_OK)
}
