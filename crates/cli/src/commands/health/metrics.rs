//! The Prometheus text exposition format (version 0.0.4) of the health checks, for the
//! node-exporter textfile collector or a Pushgateway: `s3mover_check_ok{check=…}` and, where
//! a check has them, ages in seconds, sizes in bytes and item counts, then each check's own
//! samples (per etcd node, per Longhorn volume, per claim). Every family is a gauge, written
//! once with its HELP and TYPE, its samples together.

use anyhow::{bail, Context, Result};

use super::CheckResult;
use s3mover_k8s::doctor::Status;

/// One sample.
#[derive(Debug, Clone)]
pub struct Metric {
    /// Family name.
    pub name: &'static str,
    /// HELP text.
    pub help: &'static str,
    /// Label pairs.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

impl Metric {
    /// A sample.
    pub fn new(
        name: &'static str,
        help: &'static str,
        labels: Vec<(String, String)>,
        value: f64,
    ) -> Metric {
        Metric {
            name,
            help,
            labels,
            value,
        }
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole exposition.
pub fn exposition(results: &[CheckResult], all_passed: bool) -> String {
    let mut samples: Vec<Metric> = Vec::new();
    let check = |r: &CheckResult| vec![("check".to_string(), r.name.clone())];
    for r in results {
        samples.push(Metric::new(
            "s3mover_check_ok",
            "Whether the health check passed (1) or failed (0); a warning counts as passed.",
            check(r),
            if r.status == Status::Fail { 0.0 } else { 1.0 },
        ));
        samples.push(Metric::new(
            "s3mover_check_status",
            "The health check's status: 0 pass, 1 warn, 2 fail.",
            check(r),
            match r.status {
                Status::Pass => 0.0,
                Status::Warn => 1.0,
                Status::Fail => 2.0,
            },
        ));
        if let Some(age) = r.age_seconds {
            samples.push(Metric::new(
                "s3mover_check_age_seconds",
                "Age of the newest backup the check looked at (the oldest such age where it looks at several), in seconds.",
                check(r),
                age as f64,
            ));
        }
        if let Some(max) = r.max_age_seconds {
            samples.push(Metric::new(
                "s3mover_check_max_age_seconds",
                "The check's age threshold, in seconds.",
                check(r),
                max as f64,
            ));
        }
        if let Some(size) = r.size_bytes {
            samples.push(Metric::new(
                "s3mover_check_size_bytes",
                "Size of what the check looked at, in bytes.",
                check(r),
                size as f64,
            ));
        }
        if let Some(items) = r.items {
            samples.push(Metric::new(
                "s3mover_check_items",
                "Number of items (snapshots, volumes, claims, documents) the check looked at.",
                check(r),
                items as f64,
            ));
        }
        if let Some(failed) = r.failed_items {
            samples.push(Metric::new(
                "s3mover_check_failed_items",
                "Number of items that failed the check.",
                check(r),
                failed as f64,
            ));
        }
        samples.extend(r.metrics.iter().cloned());
    }
    samples.push(Metric::new(
        "s3mover_health_all_passed",
        "Whether every selected health check passed (1) or not (0).",
        Vec::new(),
        if all_passed { 1.0 } else { 0.0 },
    ));
    samples.push(Metric::new(
        "s3mover_health_last_run_timestamp_seconds",
        "When the health checks ran, in seconds since the Unix epoch.",
        Vec::new(),
        time::OffsetDateTime::now_utc().unix_timestamp() as f64,
    ));
    render(&samples)
}

fn render(samples: &[Metric]) -> String {
    let mut order: Vec<&'static str> = Vec::new();
    for s in samples {
        if !order.contains(&s.name) {
            order.push(s.name);
        }
    }
    let mut out = String::new();
    for name in order {
        let family: Vec<&Metric> = samples.iter().filter(|s| s.name == name).collect();
        out.push_str(&format!(
            "# HELP {name} {}\n# TYPE {name} gauge\n",
            family[0].help
        ));
        let mut seen = std::collections::HashSet::new();
        for s in family {
            let labels = if s.labels.is_empty() {
                String::new()
            } else {
                let inner: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                format!("{{{}}}", inner.join(","))
            };
            // A repeated label set would make the exposition invalid: the first one stands.
            if seen.insert(labels.clone()) {
                out.push_str(&format!("{name}{labels} {}\n", s.value));
            }
        }
    }
    out
}

/// The Pushgateway URL checked before any check runs: `http://` or `https://`, and the push
/// path for job `s3mover_health`.
pub fn push_url(base: &str) -> Result<String> {
    let parsed = url::Url::parse(base).map_err(|e| {
        anyhow::Error::new(s3mover_engine::Error::Invalid(format!(
            "--pushgateway {base:?} is not a URL ({e}); use e.g. http://pushgateway:9091"
        )))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(s3mover_engine::Error::Invalid(format!(
            "--pushgateway {base:?}: use an http:// or https:// URL"
        ))
        .into());
    }
    Ok(format!(
        "{}/metrics/job/s3mover_health",
        base.trim_end_matches('/')
    ))
}

/// PUTs the exposition to the Pushgateway (replacing the job's earlier metrics).
pub async fn push(base: &str, body: &str) -> Result<()> {
    let url = push_url(base)?;
    let response = reqwest::Client::new()
        .put(&url)
        .header("Content-Type", "text/plain; version=0.0.4")
        .body(body.to_string())
        .send()
        .await
        .with_context(|| format!("cannot push the metrics to {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        bail!(
            "the Pushgateway at {url} refused the metrics ({status}): {}",
            text.lines().next().unwrap_or("").trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_written_once_with_escaped_labels() {
        let mut a = CheckResult::new("etcd", Some(86_400));
        a.status = Status::Pass;
        a.age_seconds = Some(60);
        a.metrics.push(Metric::new(
            "s3mover_etcd_snapshots",
            "help",
            vec![("node".into(), "a\"b\\c\nd".into())],
            3.0,
        ));
        let b = CheckResult::new("metadata", None);
        let text = exposition(&[a, b], false);
        assert_eq!(text.matches("# TYPE s3mover_check_ok gauge").count(), 1);
        assert!(
            text.contains("s3mover_check_ok{check=\"etcd\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("s3mover_check_ok{check=\"metadata\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("s3mover_etcd_snapshots{node=\"a\\\"b\\\\c\\nd\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("s3mover_health_all_passed 0\n"), "{text}");
        assert!(push_url("ftp://x").is_err());
        assert_eq!(
            push_url("http://pg:9091/").expect("url"),
            "http://pg:9091/metrics/job/s3mover_health"
        );
    }
}
