//! `s3mover k8s backups`, `status`, `doctor` and `cleanup`.

use anyhow::Result;
use s3mover_engine::manifest::Manifest;
use s3mover_k8s::cleanup::Tracker;
use s3mover_k8s::doctor::{self, DoctorOptions};
use s3mover_k8s::record::ClaimRecord;
use s3mover_k8s::select::ClaimRef;
use s3mover_k8s::Cluster;

use crate::cli::{GlobalArgs, OutputFormat, EXIT_FAILED, EXIT_OK};
use crate::cli_k8s::{K8sBackupsArgs, K8sCleanupArgs, K8sDoctorArgs, K8sStatusArgs};
use crate::output::{human_bytes, print_json};

/// The claim a backup's volume name (`NAMESPACE/PVC`) stands for.
fn claim_of(manifest: &Manifest) -> Option<ClaimRef> {
    let (namespace, name) = manifest.volume.split_once('/')?;
    Some(ClaimRef {
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

pub async fn backups(global: &GlobalArgs, cluster: &Cluster, args: &K8sBackupsArgs) -> Result<u8> {
    let namespace = super::namespace(cluster, &args.namespace);
    let repo =
        super::open_repository(global, &args.store, cluster, &namespace, &args.repo_secret).await?;
    let manifests = repo.list_manifests(None).await?;
    let selected: Vec<(ClaimRef, &Manifest)> = manifests
        .iter()
        .filter_map(|m| Some((claim_of(m)?, m)))
        .filter(|(c, _)| args.all_namespaces || c.namespace == namespace)
        .filter(|(c, _)| args.pvc.as_ref().is_none_or(|p| &c.name == p))
        .collect();
    if global.output == OutputFormat::Json {
        let rows: Vec<_> = selected
            .iter()
            .map(|(c, m)| {
                let record = ClaimRecord::from_tags(&m.tags);
                serde_json::json!({
                    "id": m.id, "namespace": c.namespace, "pvc": c.name, "volume": m.volume,
                    "time": m.time, "parent": m.parent, "sizeBytes": m.size_bytes,
                    "changeSource": m.change_source.as_str(),
                    "volumeMode": record.as_ref().map(|r| r.volume_mode.clone()),
                    "storageClass": record.as_ref().and_then(|r| r.storage_class.clone()),
                    "snapshotHandle": record.as_ref().and_then(|r| r.snapshot_handle.clone()),
                })
            })
            .collect();
        return print_json(&rows).map(|_| EXIT_OK);
    }
    if selected.is_empty() {
        super::say(global, "no backups of claims");
        return Ok(EXIT_OK);
    }
    println!(
        "{:<16}  {:<16}  {:<24}  {:<20}  {:>10}  SOURCE",
        "ID", "NAMESPACE", "PVC", "TIME", "SIZE"
    );
    for (c, m) in selected {
        println!(
            "{:<16}  {:<16}  {:<24}  {:<20}  {:>10}  {}",
            m.id,
            c.namespace,
            c.name,
            m.time,
            human_bytes(m.size_bytes),
            m.change_source.as_str()
        );
    }
    Ok(EXIT_OK)
}

pub async fn status(global: &GlobalArgs, cluster: &Cluster, args: &K8sStatusArgs) -> Result<u8> {
    let namespace = super::namespace(cluster, &args.namespace);
    let selection = s3mover_k8s::select::Selection::Labels {
        namespace: (!args.all_namespaces).then(|| namespace.clone()),
        selector: format!(
            "{}!={}",
            s3mover_k8s::labels::ROLE,
            s3mover_k8s::labels::ROLE_CLAIM
        ),
    };
    let claims = selection.resolve(&cluster.client).await?;
    let repo =
        super::open_repository(global, &args.store, cluster, &namespace, &args.repo_secret).await?;
    let manifests = repo.list_manifests(None).await?;
    let now = time::OffsetDateTime::now_utc();
    let mut rows = Vec::new();
    for claim in claims {
        let volume = ClaimRecord::volume_name(&claim.namespace, &claim.name);
        let latest = manifests
            .iter()
            .filter(|m| m.volume == volume)
            .max_by(|a, b| a.time.cmp(&b.time));
        let bases = s3mover_k8s::backup::base_snapshots(&cluster.client, &claim)
            .await
            .unwrap_or_default();
        let recorded_handle = latest
            .and_then(|m| ClaimRecord::from_tags(&m.tags))
            .and_then(|r| r.snapshot_handle);
        let base_kept = bases
            .iter()
            .any(|(_, c)| c.snapshot_handle.is_some() && c.snapshot_handle == recorded_handle);
        let age = latest.and_then(|m| {
            let t = time::OffsetDateTime::parse(
                &m.time,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()?;
            Some((now - t).whole_seconds().max(0))
        });
        rows.push(serde_json::json!({
            "namespace": claim.namespace, "pvc": claim.name,
            "lastBackup": latest.map(|m| m.id.clone()), "time": latest.map(|m| m.time.clone()),
            "ageSeconds": age, "changeSource": latest.map(|m| m.change_source.as_str()),
            "baseSnapshot": bases.first().map(|(n, _)| n.clone()), "baseSnapshotKept": base_kept,
        }));
    }
    if global.output == OutputFormat::Json {
        return print_json(&rows).map(|_| EXIT_OK);
    }
    println!(
        "{:<16}  {:<24}  {:<16}  {:>8}  {:<14}  BASE SNAPSHOT",
        "NAMESPACE", "PVC", "LAST BACKUP", "AGE", "SOURCE"
    );
    for row in rows {
        let text = |k: &str| row[k].as_str().unwrap_or("-").to_string();
        let age = row["ageSeconds"]
            .as_i64()
            .map_or("-".to_string(), short_age);
        let base = match (
            row["baseSnapshotKept"].as_bool(),
            row["baseSnapshot"].as_str(),
        ) {
            (Some(true), Some(name)) => format!("kept ({name})"),
            (_, Some(name)) => format!("{name} (not the last backup's: next one reads more)"),
            _ => "none (next backup reads allocated or all blocks)".to_string(),
        };
        println!(
            "{:<16}  {:<24}  {:<16}  {:>8}  {:<14}  {base}",
            text("namespace"),
            text("pvc"),
            text("lastBackup"),
            age,
            text("changeSource")
        );
    }
    Ok(EXIT_OK)
}

fn short_age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

pub async fn doctor(global: &GlobalArgs, cluster: &Cluster, args: &K8sDoctorArgs) -> Result<u8> {
    let options = DoctorOptions {
        namespace: super::namespace(cluster, &args.namespace),
        pvc: args.pvc.clone(),
        repo_secret: args.repo_secret.clone(),
        mover_service_account: args.mover_service_account.clone(),
    };
    let checks = doctor::run(&cluster.client, &options).await;
    let failed = doctor::any_failed(&checks);
    if global.output == OutputFormat::Json {
        print_json(&serde_json::json!({"checks": checks, "allPassed": !failed}))?;
    } else {
        for c in &checks {
            println!("{} {}: {}", c.status.label(), c.name, c.message);
            if let Some(fix) = &c.fix {
                println!("     fix: {fix}");
            }
        }
    }
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}

pub async fn cleanup(global: &GlobalArgs, cluster: &Cluster, args: &K8sCleanupArgs) -> Result<u8> {
    let found = s3mover_k8s::cleanup::leftovers(&cluster.client, args.namespace.as_deref()).await?;
    let mut failed = Vec::new();
    if !args.dry_run && !found.is_empty() {
        failed = Tracker::default()
            .delete(
                &cluster.client,
                found.clone(),
                s3mover_k8s::backup::CLEANUP_WAIT,
            )
            .await;
    }
    if global.output == OutputFormat::Json {
        print_json(&serde_json::json!({
            "dryRun": args.dry_run,
            "objects": found,
            "failed": failed.iter().map(|(o, why)| serde_json::json!({"object": o, "error": why})).collect::<Vec<_>>(),
        }))?;
    } else if !global.quiet {
        let verb = if args.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for object in &found {
            if !failed.iter().any(|(o, _)| o == object) {
                println!("{verb} {object}");
            }
        }
        if found.is_empty() {
            println!("nothing to remove");
        }
    }
    for (object, why) in &failed {
        eprintln!("s3mover: could not remove {object}: {why}");
    }
    Ok(if failed.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}
