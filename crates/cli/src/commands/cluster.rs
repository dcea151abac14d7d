//! `s3mover cluster backup|backups|show|forget`: cluster metadata documents, collected by
//! `s3mover-k8s` (`metadata`) and stored sealed by the engine (`cluster_docs`). Only `backup`
//! needs the cluster: with `--repo` (or `S3MOVER_REPO`) the others work when the cluster is
//! gone, which is when `show -o yaml` is needed.

use anyhow::Result;
use s3mover_engine::cluster_docs::{self, StoredDocument};
use s3mover_engine::Repository;
use s3mover_k8s::Cluster;

use crate::cli::{Cli, Command, GlobalArgs, OutputFormat, EXIT_OK};
use crate::cli_cluster::{
    ClusterBackupArgs, ClusterBackupsArgs, ClusterCmdArgs, ClusterCommand, ClusterForgetArgs,
    ClusterShowArgs, RepoSecretArgs,
};
use crate::cli_k8s::ClusterArgs as KubeArgs;
use crate::output::{human_bytes, print_json, shown};

/// `-o yaml` is for `cluster show` and `-o prometheus` for `health`; any other command
/// refuses them rather than print something else.
pub fn check_output_format(cli: &Cli) -> Result<()> {
    let fits = match cli.global.output {
        OutputFormat::Yaml => matches!(
            &cli.command,
            Command::Cluster(ClusterCmdArgs {
                command: ClusterCommand::Show(_),
                ..
            })
        ),
        OutputFormat::Prometheus => matches!(cli.command, Command::Health(_)),
        _ => true,
    };
    if fits {
        return Ok(());
    }
    let name = match cli.global.output {
        OutputFormat::Yaml => "-o yaml is only for `cluster show`",
        _ => "-o prometheus is only for `health`",
    };
    Err(s3mover_engine::Error::Invalid(format!("{name}; use -o text or -o json here")).into())
}

pub async fn run(global: &GlobalArgs, args: &ClusterCmdArgs) -> Result<u8> {
    match &args.command {
        ClusterCommand::Backup(a) => backup(global, &args.kube, a).await,
        ClusterCommand::Backups(a) => backups(global, &args.kube, a).await,
        ClusterCommand::Show(a) => show(global, &args.kube, a).await,
        ClusterCommand::Forget(a) => forget(global, &args.kube, a).await,
        ClusterCommand::NodeToken(command) => {
            super::node_token::run(global, &args.kube, command).await
        }
    }
}

/// Opens the repository: `--repo`/`S3MOVER_REPO`, else the repository Secret of the
/// kubeconfig context's (or the pod's) namespace. `cluster` is used when already connected.
pub async fn open_repo(
    global: &GlobalArgs,
    kube: &KubeArgs,
    secret: &RepoSecretArgs,
    cluster: Option<&Cluster>,
) -> Result<Repository> {
    if super::repo_url(global).is_ok() {
        return super::open_repository(global, &secret.store).await;
    }
    let connected;
    let cluster = match cluster {
        Some(c) => c,
        None => {
            connected = Cluster::connect(&kube.options()).await?;
            &connected
        }
    };
    super::k8s::open_repository(
        global,
        &secret.store,
        cluster,
        &cluster.default_namespace,
        &secret.repo_secret,
    )
    .await
}

async fn backup(global: &GlobalArgs, kube: &KubeArgs, args: &ClusterBackupArgs) -> Result<u8> {
    cluster_docs::check_cluster_name(&args.cluster)?;
    if args.keep_last == Some(0) {
        return Err(s3mover_engine::Error::Invalid(
            "--keep-last 0 would remove every metadata document of the cluster; keep at least 1"
                .into(),
        )
        .into());
    }
    let cluster = Cluster::connect(&kube.options()).await?;
    let document = s3mover_k8s::metadata::collect(&cluster.client, &args.cluster).await?;
    let repo = open_repo(global, kube, &args.repo, Some(&cluster)).await?;
    let stored = cluster_docs::write(&repo, &args.cluster, document).await?;
    let forgotten = match args.keep_last {
        Some(n) => Some(cluster_docs::forget(&repo, &args.cluster, n, false).await?),
        None => None,
    };
    let counts = &stored.document.document["counts"];
    if global.output == OutputFormat::Json {
        let mut out = summary(&stored);
        if let Some(report) = &forgotten {
            out["pruned"] = ids(&report.removed);
            out["kept"] = report.kept.len().into();
        }
        print_json(&out)?;
    } else if !global.quiet {
        println!(
            "cluster {} metadata saved as {} ({}): {} PVs ({} bound), {} PVCs, {} StorageClasses, {} VolumeSnapshotClasses, {} nodes",
            shown(&args.cluster),
            stored.document.id,
            human_bytes(stored.size),
            counts["persistentVolumes"],
            counts["boundPersistentVolumes"],
            counts["persistentVolumeClaims"],
            counts["storageClasses"],
            counts["volumeSnapshotClasses"],
            counts["nodes"],
        );
        if let Some(report) = &forgotten {
            println!(
                "kept {} document(s) of cluster {}, removed {}",
                report.kept.len(),
                shown(&args.cluster),
                report.removed.len()
            );
        }
    }
    Ok(EXIT_OK)
}

fn summary(doc: &StoredDocument) -> serde_json::Value {
    serde_json::json!({
        "id": doc.document.id,
        "cluster": doc.document.cluster,
        "time": doc.document.time,
        "sizeBytes": doc.size,
        "counts": doc.document.document["counts"],
    })
}

fn ids(docs: &[StoredDocument]) -> serde_json::Value {
    docs.iter()
        .map(|d| serde_json::Value::from(d.document.id.clone()))
        .collect()
}

fn warn_damaged(scan: &cluster_docs::DocumentScan) {
    for damaged in &scan.damaged {
        tracing::warn!(
            "skipping a damaged cluster metadata document: {}",
            damaged.problem
        );
    }
}

async fn backups(global: &GlobalArgs, kube: &KubeArgs, args: &ClusterBackupsArgs) -> Result<u8> {
    if let Some(name) = &args.cluster {
        cluster_docs::check_cluster_name(name)?;
    }
    let repo = open_repo(global, kube, &args.repo, None).await?;
    let scan = cluster_docs::scan(&repo, args.cluster.as_deref()).await?;
    warn_damaged(&scan);
    if global.output == OutputFormat::Json {
        let rows: Vec<_> = scan.documents.iter().map(summary).collect();
        return print_json(&rows).map(|_| EXIT_OK);
    }
    if scan.documents.is_empty() {
        if !global.quiet {
            eprintln!("no cluster metadata documents");
        }
        return Ok(EXIT_OK);
    }
    println!(
        "{:<16}  {:<20}  {:<27}  {:>5}  {:>5}  {:>5}  {:>9}",
        "ID", "CLUSTER", "TIME", "PVS", "PVCS", "NODES", "SIZE"
    );
    for doc in &scan.documents {
        let counts = &doc.document.document["counts"];
        println!(
            "{:<16}  {:<20}  {:<27}  {:>5}  {:>5}  {:>5}  {:>9}",
            doc.document.id,
            shown(&doc.document.cluster),
            doc.document.time,
            counts["persistentVolumes"],
            counts["persistentVolumeClaims"],
            counts["nodes"],
            human_bytes(doc.size)
        );
    }
    Ok(EXIT_OK)
}

async fn show(global: &GlobalArgs, kube: &KubeArgs, args: &ClusterShowArgs) -> Result<u8> {
    let repo = open_repo(global, kube, &args.repo, None).await?;
    let doc = cluster_docs::resolve(&repo, &args.id, args.cluster.as_deref()).await?;
    let body = &doc.document.document;
    match global.output {
        OutputFormat::Json => print_json(&doc.document)?,
        OutputFormat::Yaml => {
            let objects = s3mover_k8s::metadata::apply_objects(body);
            print!("{}", s3mover_k8s::yaml::stream(&objects));
        }
        _ => {
            println!(
                "cluster {}, document {}, taken {}",
                shown(&doc.document.cluster),
                doc.document.id,
                doc.document.time
            );
            println!();
            println!(
                "{:<44}  {:<10}  {:>8}  {:<20}  PVC",
                "PV", "STATUS", "CAPACITY", "STORAGE CLASS"
            );
            let empty = Vec::new();
            let pvs = body["persistentVolumes"].as_array().unwrap_or(&empty);
            for pv in pvs {
                let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
                let claim = match (
                    pv["spec"]["claimRef"]["namespace"].as_str(),
                    pv["spec"]["claimRef"]["name"].as_str(),
                ) {
                    (Some(ns), Some(name)) => format!("{ns}/{name}"),
                    _ => "-".into(),
                };
                println!(
                    "{:<44}  {:<10}  {:>8}  {:<20}  {}",
                    shown(&text(&pv["metadata"]["name"])),
                    text(&pv["status"]["phase"]),
                    text(&pv["spec"]["capacity"]["storage"]),
                    shown(&text(&pv["spec"]["storageClassName"])),
                    shown(&claim)
                );
            }
            println!();
            println!(
                "{:<30}  {:<9}  {:<24}  {:<16}  VERSION",
                "NODE", "STATUS", "ROLES", "INTERNAL IP"
            );
            for node in body["nodes"].as_array().unwrap_or(&empty) {
                let text = |k: &str| node[k].as_str().unwrap_or("-").to_string();
                println!(
                    "{:<30}  {:<9}  {:<24}  {:<16}  {}",
                    shown(&text("name")),
                    text("status"),
                    shown(&text("roles")),
                    text("internalIP"),
                    shown(&text("kubeletVersion"))
                );
            }
        }
    }
    Ok(EXIT_OK)
}

async fn forget(global: &GlobalArgs, kube: &KubeArgs, args: &ClusterForgetArgs) -> Result<u8> {
    cluster_docs::check_cluster_name(&args.cluster)?;
    if args.keep_last == 0 {
        return Err(s3mover_engine::Error::Invalid(
            "--keep-last 0 would remove every metadata document of the cluster; keep at least 1"
                .into(),
        )
        .into());
    }
    let repo = open_repo(global, kube, &args.repo, None).await?;
    let report = cluster_docs::forget(&repo, &args.cluster, args.keep_last, args.dry_run).await?;
    if global.output == OutputFormat::Json {
        print_json(&serde_json::json!({
            "cluster": args.cluster,
            "dryRun": args.dry_run,
            "kept": ids(&report.kept),
            "removed": ids(&report.removed),
        }))?;
    } else if !global.quiet {
        let verb = if args.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for doc in &report.removed {
            println!("{verb} {} ({})", doc.document.id, doc.document.time);
        }
        println!(
            "cluster {}: {} document(s) kept, {} {verb}",
            shown(&args.cluster),
            report.kept.len(),
            report.removed.len()
        );
    }
    Ok(EXIT_OK)
}
