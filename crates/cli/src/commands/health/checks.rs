//! The checks themselves. Each returns its result, or an error that becomes a failed check
//! (one line saying why it could not run).

use anyhow::{Context as _, Result};
use s3mover_engine::cluster_docs;
use s3mover_k8s::doctor::Status;
use s3mover_k8s::longhorn::{self, Verdict};
use s3mover_k8s::record::ClaimRecord;
use serde_json::json;

use super::etcd::short;
use super::{CheckResult, Context, Metric};

fn age_of(time: &str, now: time::OffsetDateTime) -> Option<i64> {
    s3mover_engine::time_util::parse_rfc3339(time).map(|t| (now - t).whole_seconds().max(0))
}

pub async fn etcd(ctx: &mut Context<'_>, max_age: i64) -> Result<CheckResult> {
    let Some(url) = ctx.args.etcd_snapshots.as_deref() else {
        let mut r = CheckResult::new("etcd", Some(max_age));
        r.message = "no snapshot location: pass --etcd-snapshots s3://BUCKET/PREFIX (or S3MOVER_ETCD_SNAPSHOTS)".into();
        r.fix = Some(
            "use the bucket and folder of the k3s server's --etcd-s3-bucket and --etcd-s3-folder"
                .into(),
        );
        return Ok(r);
    };
    let store = crate::commands::open_and_remember(
        ctx.global,
        url,
        &crate::commands::store_options(&ctx.args.repo.store, false),
    )?;
    let objects = store
        .list("")
        .await
        .with_context(|| format!("cannot list {}", crate::redact::redact(url)))?;
    Ok(super::etcd::analyse(
        &crate::redact::redact(url),
        &objects,
        max_age,
        time::OffsetDateTime::now_utc(),
    ))
}

/// The CSI driver of Longhorn's volumes.
const LONGHORN_DRIVER: &str = "driver.longhorn.io";

pub async fn longhorn(ctx: &mut Context<'_>, max_age: i64) -> Result<CheckResult> {
    let namespace = ctx.args.longhorn_namespace.clone();
    let cluster = ctx.cluster().await?;
    let all = longhorn::bound_volumes(&cluster.client).await?;
    let backup_volumes = longhorn::backup_volumes(&cluster.client, &namespace).await?;
    let (volumes, others): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|v| v.driver.as_deref() == Some(LONGHORN_DRIVER));
    let entries = longhorn::classify(
        &volumes,
        &backup_volumes,
        max_age,
        time::OffsetDateTime::now_utc(),
    );
    let mut r = CheckResult::new("longhorn", Some(max_age));
    let count = |v: Verdict| entries.iter().filter(|e| e.status == v).count();
    let (ok, stale, missing, unreadable) = (
        count(Verdict::Ok),
        count(Verdict::Stale),
        count(Verdict::NoBackup),
        count(Verdict::ParseError),
    );
    r.items = Some(entries.len() as u64);
    r.failed_items = Some((entries.len() - ok) as u64);
    r.age_seconds = entries.iter().filter_map(|e| e.age_seconds).max();
    r.size_bytes = Some(entries.iter().filter_map(|e| e.data_stored_bytes).sum());
    r.details = json!({"volumes": entries, "otherDriverVolumes": others.len()});
    for (verdict, n) in [
        ("OK", ok),
        ("STALE", stale),
        ("NO_BACKUP", missing),
        ("PARSE_ERROR", unreadable),
    ] {
        r.metrics.push(Metric::new(
            "s3mover_longhorn_volumes",
            "Bound Longhorn volumes by the state of their newest backup.",
            vec![("status".into(), verdict.into())],
            n as f64,
        ));
    }
    for e in &entries {
        if let Some(age) = e.age_seconds {
            r.metrics.push(Metric::new(
                "s3mover_longhorn_backup_age_seconds",
                "Age of a bound Longhorn volume's newest backup, in seconds.",
                vec![
                    ("pvc".into(), e.pvc.clone()),
                    ("volume".into(), e.volume.clone()),
                ],
                age as f64,
            ));
        }
    }
    let bad: Vec<String> = entries
        .iter()
        .filter(|e| e.status != Verdict::Ok)
        .take(5)
        .map(|e| {
            let verdict = serde_json::to_value(e.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            format!("{} {verdict}", e.pvc)
        })
        .collect();
    if bad.is_empty() {
        r.status = Status::Pass;
        r.message = format!(
            "{ok} bound Longhorn volume(s) backed up within {}",
            short(max_age)
        );
    } else {
        r.message = format!(
            "{} of {} bound Longhorn volumes need attention ({stale} stale, {missing} without a backup, {unreadable} unreadable): {}{}",
            entries.len() - ok,
            entries.len(),
            bad.join(", "),
            if entries.len() - ok > bad.len() { ", …" } else { "" }
        );
        r.fix = Some(
            "check the volumes' recurring backup jobs and the backup target in Longhorn's UI"
                .into(),
        );
    }
    Ok(r)
}

pub async fn pvc_backups(ctx: &mut Context<'_>, max_age: i64) -> Result<CheckResult> {
    let args = ctx.args;
    let cluster = ctx.cluster().await?.clone();
    let namespace = args
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| cluster.default_namespace.clone());
    let not_temporary = format!(
        "{}!={}",
        s3mover_k8s::labels::ROLE,
        s3mover_k8s::labels::ROLE_CLAIM
    );
    let selector = match &args.selector {
        Some(s) if !s.trim().is_empty() => format!("{s},{not_temporary}"),
        _ => not_temporary,
    };
    let selection = s3mover_k8s::select::Selection::Labels {
        namespace: (!args.all_namespaces).then(|| namespace.clone()),
        selector,
    };
    let claims = selection.resolve(&cluster.client).await?;
    let repo = ctx.repo().await?;
    let manifests = repo.list_manifests(None).await?;
    let report = s3mover_engine::check::check(repo).await?;
    let now = time::OffsetDateTime::now_utc();
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let mut r = CheckResult::new("pvc-backups", Some(max_age));
    for claim in &claims {
        let volume = ClaimRecord::volume_name(&claim.namespace, &claim.name);
        let latest = manifests
            .iter()
            .filter(|m| m.volume == volume)
            .max_by(|a, b| a.time.cmp(&b.time));
        let bases = s3mover_k8s::backup::base_snapshots(&cluster.client, claim)
            .await
            .unwrap_or_default();
        let recorded = latest
            .and_then(|m| ClaimRecord::from_tags(&m.tags))
            .and_then(|c| c.snapshot_handle);
        let base_kept = bases
            .iter()
            .any(|(_, c)| c.snapshot_handle.is_some() && c.snapshot_handle == recorded);
        let age = latest.and_then(|m| age_of(&m.time, now));
        match age {
            None => problems.push(format!("{claim} has no backup")),
            Some(a) if a > max_age => {
                problems.push(format!("{claim} last backed up {} ago", short(a)))
            }
            Some(_) => {}
        }
        if let Some(a) = age {
            r.metrics.push(Metric::new(
                "s3mover_pvc_backup_age_seconds",
                "Age of a claim's newest s3mover backup, in seconds.",
                vec![
                    ("namespace".into(), claim.namespace.clone()),
                    ("pvc".into(), claim.name.clone()),
                ],
                a as f64,
            ));
        }
        rows.push(json!({
            "namespace": claim.namespace, "pvc": claim.name,
            "lastBackup": latest.map(|m| m.id.clone()), "time": latest.map(|m| m.time.clone()),
            "ageSeconds": age, "changeSource": latest.map(|m| m.change_source.as_str()),
            "sizeBytes": latest.map(|m| m.size_bytes),
            "baseSnapshot": bases.first().map(|(n, _)| n.clone()), "baseSnapshotKept": base_kept,
        }));
    }
    let failed_claims = problems.len();
    if !report.problems.is_empty() {
        problems.push(format!(
            "repository check found {} problem(s): {}",
            report.problems.len(),
            report.problems[0]
        ));
    }
    r.items = Some(claims.len() as u64);
    r.failed_items = Some(failed_claims as u64);
    r.age_seconds = rows
        .iter()
        .filter_map(|row| row["ageSeconds"].as_i64())
        .max();
    r.size_bytes = Some(
        rows.iter()
            .filter_map(|row| row["sizeBytes"].as_u64())
            .sum(),
    );
    r.details = json!({"claims": rows, "repositoryCheck": report});
    if claims.is_empty() {
        r.status = Status::Warn;
        r.message = "no claims selected (-n, -A, -l)".into();
    } else if problems.is_empty() {
        r.status = Status::Pass;
        r.message = format!(
            "{} claim(s) backed up within {}; repository check clean",
            claims.len(),
            short(max_age)
        );
    } else {
        r.message = format!(
            "{}{}",
            problems
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
            if problems.len() > 5 { "; …" } else { "" }
        );
        r.fix = Some("`s3mover k8s status` shows each claim; `s3mover k8s backup` backs one up now; `s3mover check` lists repository problems".into());
    }
    Ok(r)
}

pub async fn node_token(ctx: &mut Context<'_>) -> Result<CheckResult> {
    let args = ctx.args;
    let mut r = CheckResult::new("node-token", None);
    if args.token.secret.is_none() && args.token.secret_command.is_none() {
        r.message = "no token copy to check: pass --secret NS/NAME or --secret-command CMD".into();
        return Ok(r);
    }
    let status =
        crate::commands::node_token::check(&args.kube, &args.token, args.token_file.as_deref())
            .await?;
    r.status = if status.ok {
        Status::Pass
    } else {
        Status::Fail
    };
    r.age_seconds = status.age_seconds;
    r.items = Some(u64::from(status.exists));
    r.message = status.message.clone();
    if !status.ok {
        r.fix = Some("run `s3mover cluster node-token backup` on a k3s server node".into());
    }
    r.details = serde_json::to_value(&status).unwrap_or_default();
    Ok(r)
}

pub async fn metadata(ctx: &mut Context<'_>, max_age: i64) -> Result<CheckResult> {
    let cluster = ctx.args.cluster.clone();
    cluster_docs::check_cluster_name(&cluster)?;
    let repo = ctx.repo().await?;
    let scan = cluster_docs::scan(repo, Some(&cluster)).await?;
    let mut r = CheckResult::new("metadata", Some(max_age));
    r.items = Some(scan.documents.len() as u64);
    let Some(newest) = scan.documents.last() else {
        r.message = format!("no metadata documents of cluster {cluster:?} in the repository");
        r.fix = Some(format!("run `s3mover cluster backup --cluster {cluster}`"));
        return Ok(r);
    };
    let age = age_of(&newest.document.time, time::OffsetDateTime::now_utc()).unwrap_or(i64::MAX);
    r.age_seconds = Some(age);
    r.size_bytes = Some(newest.size);
    r.details = json!({"newest": newest.document.id, "time": newest.document.time, "damaged": scan.damaged.len()});
    if age > max_age {
        r.message = format!(
            "the newest metadata document of cluster {cluster:?} ({}) is {} old, more than {}",
            newest.document.id,
            short(age),
            short(max_age)
        );
        r.fix = Some(format!(
            "run `s3mover cluster backup --cluster {cluster}` (is its CronJob running?)"
        ));
    } else {
        r.status = Status::Pass;
        r.message = format!(
            "newest metadata document of cluster {cluster:?} is {} old ({} kept)",
            short(age),
            scan.documents.len()
        );
    }
    Ok(r)
}
