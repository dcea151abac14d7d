//! Running a mover Job to its end and waiting for the objects before it: a snapshot becoming
//! ready, a claim binding. Everything is polled with `get`/`list`, so a dropped connection or a
//! failing API server costs a retry, not the operation; failures that cannot heal (an image
//! that cannot be pulled, a Job out of retries) end the wait at once with the cluster's own
//! words.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use kube::Client;

use crate::cleanup::{Kind, ObjectRef, Tracker};
use crate::resources::{self, ContentInfo, SnapshotStatus};
use crate::{Error, Result};

use crate::retry::ErrorBudget;
pub use crate::retry::{create, Poll, POLL};

/// Container waiting reasons that do not heal by waiting.
const FATAL_WAITING: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Waits until VolumeSnapshot `namespace/name` is ready and returns its content. On timeout
/// the snapshot's own error message is the reason.
pub async fn wait_snapshot_ready(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<ContentInfo> {
    let snapshots = resources::snapshots(client, namespace);
    let start = Instant::now();
    let mut budget = ErrorBudget::new();
    let mut last = SnapshotStatus::default();
    let mut poll = Poll::new();
    loop {
        match snapshots.get(name).await {
            Ok(vs) => {
                budget.ok();
                last = SnapshotStatus::of(&vs);
                if let (true, Some(content)) = (last.ready, &last.content) {
                    match resources::contents(client).get(content).await {
                        Ok(vsc) => {
                            let info = ContentInfo::of(&vsc);
                            if info.snapshot_handle.is_some() {
                                return Ok(info);
                            }
                        }
                        Err(e) => budget.check(Error::api(
                            format!("cannot read VolumeSnapshotContent {content}"),
                            e,
                        ))?,
                    }
                }
            }
            Err(e) => budget.check(Error::api(
                format!("cannot read VolumeSnapshot {namespace}/{name}"),
                e,
            ))?,
        }
        if start.elapsed() >= timeout {
            let why = match last.error {
                Some(message) => format!(" ({message})"),
                None => String::new(),
            };
            return Err(Error::Timeout {
                what: format!("VolumeSnapshot {namespace}/{name} did not become ready{why}"),
                after: timeout,
            });
        }
        poll.wait().await;
    }
}

/// The newest Warning event about an object, if any ("ProvisioningFailed: …").
pub async fn latest_warning(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Option<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let list = events.list(&ListParams::default()).await.ok()?;
    list.items
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(name)
                && e.involved_object.kind.as_deref() == Some(kind)
                && e.type_.as_deref() == Some("Warning")
        })
        .max_by_key(|e| {
            e.last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or(e.event_time.as_ref().map(|t| t.0))
        })
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default().trim()
            )
        })
}

/// Why a claim is not bound yet, for a timeout message.
async fn claim_pending_reason(client: &Client, namespace: &str, claim: &str) -> Option<String> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let pvc = claims.get(claim).await.ok()?;
    let phase = pvc.status.and_then(|s| s.phase).unwrap_or_default();
    if phase == "Bound" {
        return None;
    }
    let event = latest_warning(client, namespace, "PersistentVolumeClaim", claim).await;
    Some(match event {
        Some(event) => format!("claim {namespace}/{claim} stayed {phase}: {event}"),
        None => format!("claim {namespace}/{claim} stayed {phase}"),
    })
}

/// Progress of a mover Job, for the orchestrator's display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobPhase {
    /// Created; no pod running yet.
    Created,
    /// A pod is running (attempt number, from 1).
    Running(u32),
    /// The running mover has moved `done` of `total` bytes (from its log's progress lines).
    Progress {
        /// Bytes done.
        done: u64,
        /// Bytes to do.
        total: u64,
    },
}

/// How often a running mover's log is read for progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// The last `progress: DONE/TOTAL bytes` line in `log` (see [`crate::manifests::PROGRESS_ENV`]).
pub fn last_progress(log: &str) -> Option<(u64, u64)> {
    log.lines().rev().find_map(|line| {
        let rest = line
            .trim()
            .strip_prefix("progress: ")?
            .strip_suffix(" bytes")?;
        let (done, total) = rest.split_once('/')?;
        Some((done.parse().ok()?, total.parse().ok()?))
    })
}

/// A progress line for people: `data read: 512.0 of 1024.0 MiB (50%)`.
pub fn describe_progress(verb: &str, done: u64, total: u64) -> String {
    let percent = if total == 0 {
        100
    } else {
        (u128::from(done.min(total)) * 100 / u128::from(total)) as u64
    };
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    format!(
        "data {verb}: {:.1} of {:.1} MiB ({percent}%)",
        mib(done),
        mib(total)
    )
}

/// Reads the mover's progress from the tail of its pod's log. Progress is only shown, so a log
/// that cannot be read (a missing `pods/log` permission, a pod gone) is passed over.
async fn read_progress(pods: &Api<Pod>, pod: &Pod) -> Option<(u64, u64)> {
    let name = pod.metadata.name.as_deref()?;
    // The result JSON the mover prints at the end comes after its last progress line.
    let params = kube::api::LogParams {
        tail_lines: Some(200),
        ..kube::api::LogParams::default()
    };
    match pods.logs(name, &params).await {
        Ok(log) => last_progress(&log),
        Err(e) => {
            tracing::debug!("cannot read the progress of pod {name}: {e}");
            None
        }
    }
}

/// Creates the mover Job, tracks it, and waits for its end. Returns the JSON result the
/// successful pod wrote to its termination message. Fails at once when the pod's image cannot
/// be pulled or its container cannot be created; fails with the last attempt's own error when
/// the Job runs out of retries; times out with the reason a claim is still pending, if one is.
pub async fn run_job(
    client: &Client,
    job: &Job,
    claim: &str,
    tracker: &Tracker,
    operation: &str,
    timeout: Duration,
    on_phase: &(dyn Fn(JobPhase) + Send + Sync),
) -> Result<serde_json::Value> {
    let namespace = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let pods_api = pods.clone();
    create(&jobs, job, &format!("mover Job {namespace}/{name}")).await?;
    tracker.add(ObjectRef {
        kind: Kind::Job,
        namespace: namespace.clone(),
        name: name.clone(),
        operation: operation.to_string(),
    });
    on_phase(JobPhase::Created);
    let selector = format!("batch.kubernetes.io/job-name={name}");
    let start = Instant::now();
    let mut budget = ErrorBudget::new();
    let mut running_seen = 0u32;
    let mut poll = Poll::new();
    let mut progress = ProgressWatch::default();
    loop {
        let state = async {
            let job = jobs
                .get(&name)
                .await
                .map_err(|e| Error::api(format!("cannot read mover Job {namespace}/{name}"), e))?;
            let pods = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| {
                    Error::api(format!("cannot list the pods of Job {namespace}/{name}"), e)
                })?;
            Ok::<_, Error>((job, pods.items))
        }
        .await;
        match state {
            Err(e) => budget.check(e)?,
            Ok((job, pods)) => {
                budget.ok();
                progress.check(&pods_api, &pods, on_phase).await;
                match judge(&job, &pods) {
                    Ok(Some(outcome)) => {
                        progress.last_word(&pods_api, &pods, on_phase).await;
                        return Ok(outcome);
                    }
                    Ok(None) => {}
                    // A Job that ran out of time or retries while its claim never bound
                    // (its deadline can come just before ours) failed because of the claim.
                    Err(error) => {
                        return Err(
                            match claim_pending_reason(client, &namespace, claim).await {
                                Some(why) => Error::Failed(format!(
                                    "mover Job {namespace}/{name} failed: {why}"
                                )),
                                None => error,
                            },
                        )
                    }
                }
                let running = pods
                    .iter()
                    .filter(|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Pending")
                    })
                    .count() as u32;
                if running > running_seen {
                    running_seen = running;
                    on_phase(JobPhase::Running(running));
                }
            }
        }
        if start.elapsed() >= timeout {
            let why = claim_pending_reason(client, &namespace, claim)
                .await
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            return Err(Error::Timeout {
                what: format!("mover Job {namespace}/{name} did not finish{why}"),
                after: timeout,
            });
        }
        poll.wait().await;
    }
}

/// Follows a mover's progress: its running pod's log is read every [`PROGRESS_EVERY`], and
/// the succeeded pod's once more at the end, so the last figure shown is the final one.
#[derive(Default)]
struct ProgressWatch {
    last_read: Option<Instant>,
    shown: Option<(u64, u64)>,
}

impl ProgressWatch {
    async fn check(
        &mut self,
        api: &Api<Pod>,
        pods: &[Pod],
        on_phase: &(dyn Fn(JobPhase) + Send + Sync),
    ) {
        if self.last_read.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) {
            return;
        }
        let Some(pod) = pods.iter().find(|p| phase_of(p) == Some("Running")) else {
            return;
        };
        self.last_read = Some(Instant::now());
        self.show(read_progress(api, pod).await, on_phase);
    }

    async fn last_word(
        &mut self,
        api: &Api<Pod>,
        pods: &[Pod],
        on_phase: &(dyn Fn(JobPhase) + Send + Sync),
    ) {
        if let Some(pod) = pods.iter().find(|p| phase_of(p) == Some("Succeeded")) {
            self.show(read_progress(api, pod).await, on_phase);
        }
    }

    fn show(&mut self, seen: Option<(u64, u64)>, on_phase: &(dyn Fn(JobPhase) + Send + Sync)) {
        if let Some((done, total)) = seen {
            if self.shown != seen {
                self.shown = seen;
                on_phase(JobPhase::Progress { done, total });
            }
        }
    }
}

fn phase_of(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// Decides from a Job and its pods whether the run is over: `Some(result)` on success, an
/// error on a failure that will not heal, `None` while it goes on.
pub fn judge(job: &Job, pods: &[Pod]) -> Result<Option<serde_json::Value>> {
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let condition = |kind: &str| {
        job.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == kind && c.status == "True"))
    };
    if condition("Complete").is_some() {
        let message = pods
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
            .find_map(termination_message);
        let Some(message) = message else {
            return Err(Error::Failed(format!(
                "mover Job {name} succeeded but left no result in its termination message"
            )));
        };
        return serde_json::from_str(&message).map(Some).map_err(|e| {
            Error::Failed(format!(
                "mover Job {name} left a result that is not JSON ({e}): {message}"
            ))
        });
    }
    if let Some(failed) = condition("Failed") {
        let attempts = pods.len();
        let reason = newest_failed_pod_reason(pods).unwrap_or_else(|| {
            format!(
                "{}: {}",
                failed.reason.clone().unwrap_or_default(),
                failed.message.clone().unwrap_or_default()
            )
        });
        return Err(Error::Failed(format!(
            "mover failed after {attempts} attempt{}: {reason}",
            if attempts == 1 { "" } else { "s" }
        )));
    }
    for pod in pods {
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten();
        for status in statuses {
            let waiting = status.state.as_ref().and_then(|s| s.waiting.as_ref());
            if let Some(waiting) = waiting {
                let reason = waiting.reason.as_deref().unwrap_or_default();
                if FATAL_WAITING.contains(&reason) {
                    return Err(Error::Failed(format!(
                        "mover pod {} cannot start: {reason}: {}",
                        pod.metadata.name.as_deref().unwrap_or_default(),
                        waiting.message.as_deref().unwrap_or("").trim()
                    )));
                }
            }
        }
    }
    Ok(None)
}

/// The termination message of a pod's container, if it wrote one.
fn termination_message(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find_map(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone())
        .filter(|m| !m.trim().is_empty())
}

/// Why the newest failed pod failed: the `error` of its JSON result, else the last line it
/// logged (the termination message falls back to the log tail) with its exit code, else its
/// termination reason and exit code.
fn newest_failed_pod_reason(pods: &[Pod]) -> Option<String> {
    let pod = pods
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
        .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
    let terminated = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find_map(|c| c.state.as_ref()?.terminated.clone()));
    let exit_code = terminated
        .as_ref()
        .map(|t| format!(" (exit code {})", t.exit_code))
        .unwrap_or_default();
    if let Some(message) = termination_message(pod) {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&message) {
            if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
                return Some(error.to_string());
            }
        }
        let last_line = message
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or_default();
        return Some(format!("{last_line}{exit_code}"));
    }
    match terminated {
        Some(t) => Some(format!(
            "{}{exit_code}",
            t.reason.unwrap_or_else(|| "terminated".into())
        )),
        None => pod.status.as_ref()?.reason.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_progress_line_of_a_log_is_read() {
        let log = "starting\nprogress: 0/4096 bytes\nprogress: 2048/4096 bytes\nwarning: slow\n";
        assert_eq!(last_progress(log), Some((2048, 4096)));
        assert_eq!(last_progress("progress: x/1 bytes\n"), None);
        assert_eq!(last_progress("nothing here"), None);
        assert_eq!(
            describe_progress("read", 3 << 19, 3 << 20),
            "data read: 1.5 of 3.0 MiB (50%)"
        );
        assert_eq!(
            describe_progress("written", 0, 0),
            "data written: 0.0 of 0.0 MiB (100%)"
        );
    }
    use serde_json::json;

    fn job(conditions: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "mover"},
            "status": {"conditions": conditions}
        }))
        .expect("job")
    }

    fn pod(phase: &str, state: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("mover-{phase}"), "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": phase, "containerStatuses": [{
                "name": "mover", "image": "s3mover", "imageID": "", "ready": false,
                "restartCount": 0, "state": state}]}
        }))
        .expect("pod")
    }

    #[test]
    fn a_complete_job_gives_the_pods_json_result() {
        let done = job(json!([{"type": "Complete", "status": "True"}]));
        let pods = [pod(
            "Succeeded",
            json!({"terminated": {"exitCode": 0, "message": "{\"id\":\"ab\"}"}}),
        )];
        assert_eq!(judge(&done, &pods).expect("ok"), Some(json!({"id": "ab"})));
        let silent = [pod("Succeeded", json!({"terminated": {"exitCode": 0}}))];
        assert!(judge(&done, &silent).is_err());
    }

    #[test]
    fn a_failed_job_quotes_the_movers_own_error() {
        let failed =
            job(json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]));
        let pods = [
            pod(
                "Failed",
                json!({"terminated": {"exitCode": 1, "message": "{\"error\":\"no repository\"}"}}),
            ),
            pod(
                "Failed",
                json!({"terminated": {"exitCode": 137, "reason": "Error"}}),
            ),
        ];
        let error = judge(&failed, &pods).expect_err("failed").to_string();
        assert!(
            error.starts_with("mover failed after 2 attempts: "),
            "{error}"
        );
    }

    #[test]
    fn a_mover_that_died_before_its_result_is_explained_by_its_last_log_line() {
        let failed =
            job(json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]));
        let pods = [pod(
            "Failed",
            json!({"terminated": {"exitCode": 127, "reason": "Error",
                   "message": "starting\ns3mover: error while loading shared libraries: libc.so.6\n\n"}}),
        )];
        let error = judge(&failed, &pods).expect_err("failed").to_string();
        assert!(
            error.ends_with(
                "s3mover: error while loading shared libraries: libc.so.6 (exit code 127)"
            ),
            "{error}"
        );
    }

    #[test]
    fn an_image_that_cannot_be_pulled_ends_the_wait_at_once() {
        let running = job(json!([]));
        let pods = [pod(
            "Pending",
            json!({"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"nope\""}}),
        )];
        let error = judge(&running, &pods).expect_err("fatal").to_string();
        assert!(error.contains("ImagePullBackOff"), "{error}");
        let creating = [pod(
            "Pending",
            json!({"waiting": {"reason": "ContainerCreating"}}),
        )];
        assert_eq!(judge(&running, &creating).expect("goes on"), None);
    }
}
