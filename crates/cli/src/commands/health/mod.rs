//! `s3mover health`: are the cluster's backups fresh? Checks `etcd` (k3s snapshots in object
//! storage), `longhorn` (Longhorn BackupVolumes of bound PVs), `pvc-backups` (s3mover's own
//! backups of the selected claims, and the repository's `check`), `node-token` (the k3s token's
//! copy) and `metadata` (the newest cluster metadata document), each with its own threshold.
//! Output as a table, JSON or the Prometheus text format (also pushed to a Pushgateway); the
//! exit status is non-zero when any check fails — the earlier script's `verify-all` always
//! exited 0.

mod checks;
mod etcd;
mod metrics;

use std::collections::BTreeMap;

use anyhow::Result;
use s3mover_engine::Repository;
use s3mover_k8s::doctor::Status;
use s3mover_k8s::Cluster;
use serde::Serialize;

use crate::cli::{GlobalArgs, OutputFormat, EXIT_FAILED, EXIT_OK};
use crate::cli_cluster::HealthArgs;
use crate::output::print_json;

pub use metrics::Metric;

/// The checks, in the order they run and print.
pub const CHECKS: &[&str] = &["etcd", "longhorn", "pvc-backups", "node-token", "metadata"];

/// Default thresholds: the earlier script's 24h (etcd) and 48h (Longhorn); a day and two hours
/// for daily PVC backups; eight days for weekly metadata backups. node-token has none (its
/// copy must only be newer than the token file).
fn default_max_age(check: &str) -> Option<i64> {
    match check {
        "etcd" => Some(24 * 3600),
        "longhorn" => Some(48 * 3600),
        "pvc-backups" => Some(26 * 3600),
        "metadata" => Some(8 * 86_400),
        _ => None,
    }
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// pass, warn or fail.
    pub status: Status,
    /// What was found, one line.
    pub message: String,
    /// What to do, when not passing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Age of the newest backup looked at (the oldest such age where several are).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<i64>,
    /// The threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<i64>,
    /// Size of what was looked at (the smallest newest snapshot for etcd).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// How many items (snapshots, volumes, claims, documents) were looked at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<u64>,
    /// How many of them failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_items: Option<u64>,
    /// Per-item findings.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
    /// Extra samples for the Prometheus output.
    #[serde(skip)]
    pub metrics: Vec<Metric>,
}

impl CheckResult {
    /// A failing result to fill in.
    pub fn new(name: &str, max_age_seconds: Option<i64>) -> CheckResult {
        CheckResult {
            name: name.to_string(),
            status: Status::Fail,
            message: String::new(),
            fix: None,
            age_seconds: None,
            max_age_seconds,
            size_bytes: None,
            items: None,
            failed_items: None,
            details: serde_json::Value::Null,
            metrics: Vec::new(),
        }
    }

    /// A check that could not run.
    pub fn error(name: &str, max_age_seconds: Option<i64>, error: &anyhow::Error) -> CheckResult {
        let mut r = CheckResult::new(name, max_age_seconds);
        r.message = crate::redact::redact(&crate::one_line(error)).to_string();
        r
    }
}

/// Checks the `--check` list: known names, each once, in the order of [`CHECKS`]; none
/// named is all of them.
fn selected_checks(list: &[String]) -> Result<Vec<&'static str>> {
    let mut wanted = Vec::new();
    for name in list.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let Some(known) = CHECKS.iter().find(|c| **c == name) else {
            return Err(s3mover_engine::Error::Invalid(format!(
                "--check {name:?}: no such check; choose from {}",
                CHECKS.join(", ")
            ))
            .into());
        };
        wanted.push(*known);
    }
    if wanted.is_empty() {
        return Ok(CHECKS.to_vec());
    }
    Ok(CHECKS
        .iter()
        .copied()
        .filter(|c| wanted.contains(c))
        .collect())
}

/// Parses `--max-age CHECK=DURATION,...` over the defaults.
fn max_ages(list: &[String]) -> Result<BTreeMap<&'static str, i64>> {
    let mut out: BTreeMap<&'static str, i64> = CHECKS
        .iter()
        .filter_map(|c| Some((*c, default_max_age(c)?)))
        .collect();
    for item in list.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
        let invalid = |why: String| -> anyhow::Error { s3mover_engine::Error::Invalid(why).into() };
        let (name, duration) = item.split_once('=').ok_or_else(|| {
            invalid(format!(
                "--max-age {item:?}: use CHECK=DURATION, e.g. etcd=24h,longhorn=48h"
            ))
        })?;
        let name = name.trim();
        let Some(known) = CHECKS.iter().find(|c| **c == name) else {
            return Err(invalid(format!(
                "--max-age {item:?}: no check {name:?}; choose from {}",
                CHECKS.join(", ")
            )));
        };
        let d = s3mover_engine::retention::parse_duration(duration)
            .map_err(|e| invalid(format!("--max-age {item:?}: {e}")))?;
        if d <= time::Duration::ZERO {
            return Err(invalid(format!(
                "--max-age {item:?}: the age must be above zero"
            )));
        }
        out.insert(known, d.whole_seconds());
    }
    Ok(out)
}

/// The cluster and repository, each opened once when a check first needs it.
pub struct Context<'a> {
    global: &'a GlobalArgs,
    args: &'a HealthArgs,
    cluster: Option<Cluster>,
    repo: Option<Repository>,
}

impl<'a> Context<'a> {
    /// The cluster.
    pub async fn cluster(&mut self) -> Result<&Cluster> {
        if self.cluster.is_none() {
            self.cluster = Some(Cluster::connect(&self.args.kube.options()).await?);
        }
        Ok(self.cluster.as_ref().expect("just connected"))
    }

    /// The repository (`--repo`, else the repository Secret).
    pub async fn repo(&mut self) -> Result<&Repository> {
        if self.repo.is_none() {
            let cluster = if super::repo_url(self.global).is_ok() {
                None
            } else {
                Some(self.cluster().await?.clone())
            };
            let repo = super::cluster::open_repo(
                self.global,
                &self.args.kube,
                &self.args.repo,
                cluster.as_ref(),
            )
            .await?;
            self.repo = Some(repo);
        }
        Ok(self.repo.as_ref().expect("just opened"))
    }
}

pub async fn run(global: &GlobalArgs, args: &HealthArgs) -> Result<u8> {
    let checks = selected_checks(&args.checks)?;
    let ages = max_ages(&args.max_age)?;
    if let Some(url) = &args.pushgateway {
        metrics::push_url(url)?;
    }
    let mut ctx = Context {
        global,
        args,
        cluster: None,
        repo: None,
    };
    let mut results = Vec::new();
    for name in checks {
        let max_age = ages.get(name).copied();
        let outcome = match name {
            "etcd" => checks::etcd(&mut ctx, max_age.unwrap_or(86_400)).await,
            "longhorn" => checks::longhorn(&mut ctx, max_age.unwrap_or(172_800)).await,
            "pvc-backups" => checks::pvc_backups(&mut ctx, max_age.unwrap_or(93_600)).await,
            "node-token" => checks::node_token(&mut ctx).await,
            _ => checks::metadata(&mut ctx, max_age.unwrap_or(691_200)).await,
        };
        results.push(outcome.unwrap_or_else(|e| CheckResult::error(name, max_age, &e)));
    }
    let all_passed = results.iter().all(|r| r.status != Status::Fail);
    let exposition = metrics::exposition(&results, all_passed);
    match global.output {
        OutputFormat::Json => print_json(&serde_json::json!({
            "checks": results,
            "allPassed": all_passed,
            "timestamp": s3mover_engine::time_util::format_rfc3339(time::OffsetDateTime::now_utc()),
        }))?,
        OutputFormat::Prometheus => print!("{exposition}"),
        _ => print_table(&results, all_passed),
    }
    if let Some(url) = &args.pushgateway {
        metrics::push(url, &exposition).await?;
    }
    Ok(if all_passed { EXIT_OK } else { EXIT_FAILED })
}

fn print_table(results: &[CheckResult], all_passed: bool) {
    for r in results {
        println!("{:<4}  {:<11}  {}", r.status.label(), r.name, r.message);
        if let Some(fix) = &r.fix {
            println!("{:<4}  {:<11}  fix: {fix}", "", "");
        }
    }
    let failed = results.iter().filter(|r| r.status == Status::Fail).count();
    if all_passed {
        println!("all {} checks passed", results.len());
    } else {
        println!("{failed} of {} checks failed", results.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_lists_and_thresholds() {
        let list = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            selected_checks(&list("metadata,etcd")).expect("ok"),
            ["etcd", "metadata"]
        );
        assert!(selected_checks(&list("etc")).is_err());
        assert_eq!(selected_checks(&[]).expect("all").len(), 5);
        let ages = max_ages(&list("etcd=12h,metadata=2w")).expect("ok");
        assert_eq!(ages["etcd"], 12 * 3600);
        assert_eq!(ages["metadata"], 14 * 86_400);
        assert_eq!(ages["longhorn"], 48 * 3600);
        for bad in ["etcd", "etcd=soon", "bogus=1h", "etcd=0s"] {
            assert!(max_ages(&list(bad)).is_err(), "{bad}");
        }
    }
}
