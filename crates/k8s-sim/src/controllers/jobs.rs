//! The `batch/v1` Job controller: pods from the template with the controller's labels and a
//! controlling owner reference, failures counted against `backoffLimit` with an exponential
//! back-off between retries, `activeDeadlineSeconds`, `Complete`/`Failed` conditions, and
//! `ttlSecondsAfterFinished`. Pods carry the `batch.kubernetes.io/job-tracking` finalizer until
//! they are counted, so a pod deleted while running still counts as a failure.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::events::Kind;
use super::util::{self, finalizers_patch, now_rfc3339};
use super::Ctx;

/// The finalizer that keeps a Job's pod until the controller has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
const COMPONENT: &str = "job-controller";

#[derive(Default)]
struct Memory {
    /// Pods already added to a Job's counts (their finalizer removal may still be in flight).
    counted: HashSet<String>,
    /// When each Job may create its next pod after a failure.
    not_before: HashMap<String, Instant>,
}

/// Starts the Job controller.
pub fn start(ctx: Ctx) -> Vec<JoinHandle<()>> {
    let notify = Arc::new(Notify::new());
    let c = &ctx.client;
    let mem = Arc::new(Mutex::new(Memory::default()));
    vec![
        util::watch_into(Api::<Job>::all(c.clone()), notify.clone()),
        util::watch_into(Api::<Pod>::all(c.clone()), notify.clone()),
        util::reconcile_loop("job-controller", notify, move || {
            let ctx = ctx.clone();
            let mem = mem.clone();
            async move { reconcile(&ctx, &mem).await }
        }),
    ]
}

fn owned_by(pod: &Pod, uid: &str) -> bool {
    pod.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

fn finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Back-off before the next pod after `failures` failures: `base·2^(failures-1)`, 6 min at most.
pub fn backoff(base: Duration, failures: i32) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let d = base.saturating_mul(1u32 << (failures - 1).min(16) as u32);
    d.min(Duration::from_secs(360))
}

fn lock(m: &Mutex<Memory>) -> std::sync::MutexGuard<'_, Memory> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn reconcile(ctx: &Ctx, mem: &Mutex<Memory>) -> Result<(), kube::Error> {
    let c = &ctx.client;
    let jobs = Api::<Job>::all(c.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let pods = Api::<Pod>::all(c.clone())
        .list(&ListParams::default())
        .await?
        .items;
    for job in &jobs {
        if let Err(e) = sync_job(ctx, mem, job, &pods).await {
            tracing::debug!("job {}: {e}", job.name_any());
        }
    }
    // Orphaned pods (Job deleted with the orphan policy) keep no tracking finalizer.
    for pod in &pods {
        if pod.finalizers().iter().any(|f| f == TRACKING_FINALIZER)
            && !jobs
                .iter()
                .any(|j| j.uid().is_some_and(|u| owned_by(pod, &u)))
        {
            remove_tracking(ctx, pod).await;
        }
    }
    Ok(())
}

async fn remove_tracking(ctx: &Ctx, pod: &Pod) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let rest: Vec<String> = pod
        .finalizers()
        .iter()
        .filter(|f| *f != TRACKING_FINALIZER)
        .cloned()
        .collect();
    let _ = api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(finalizers_patch(&rest)),
        )
        .await;
}

async fn sync_job(
    ctx: &Ctx,
    mem: &Mutex<Memory>,
    job: &Job,
    pods: &[Pod],
) -> Result<(), kube::Error> {
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let Some(uid) = job.uid() else { return Ok(()) };
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let spec = job.spec.clone().unwrap_or_default();
    let status = job.status.clone().unwrap_or_default();
    let mine: Vec<&Pod> = pods.iter().filter(|p| owned_by(p, &uid)).collect();

    if finished(job) {
        for p in &mine {
            if p.finalizers().iter().any(|f| f == TRACKING_FINALIZER) {
                remove_tracking(ctx, p).await;
            }
        }
        if let (Some(ttl), Some(done)) = (
            spec.ttl_seconds_after_finished,
            &status.completion_time.clone().or_else(|| {
                status
                    .conditions
                    .iter()
                    .flatten()
                    .find(|c| c.type_ == "Failed")
                    .and_then(|c| c.last_transition_time.clone())
            }),
        ) {
            let age = k8s_openapi::jiff::Timestamp::now().duration_since(done.0);
            if age.as_secs() >= i64::from(ttl) {
                let dp = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    ..DeleteParams::default()
                };
                let _ = api.delete(&name, &dp).await;
            }
        }
        return Ok(());
    }
    if job.metadata.deletion_timestamp.is_some() || spec.suspend == Some(true) {
        return Ok(());
    }

    // Count terminated pods once, then let them go.
    let mut succeeded = status.succeeded.unwrap_or(0);
    let mut failed = status.failed.unwrap_or(0);
    let mut newly: Vec<&Pod> = Vec::new();
    {
        let mut m = lock(mem);
        for p in &mine {
            let pu = p.uid().unwrap_or_default();
            if !p.finalizers().iter().any(|f| f == TRACKING_FINALIZER) || m.counted.contains(&pu) {
                continue;
            }
            let terminal = match phase(p) {
                "Succeeded" => Some(true),
                "Failed" => Some(false),
                _ if p.metadata.deletion_timestamp.is_some() => Some(false),
                _ => None,
            };
            match terminal {
                Some(true) => succeeded += 1,
                Some(false) => failed += 1,
                None => continue,
            }
            m.counted.insert(pu);
            newly.push(p);
        }
    }
    let active: Vec<&Pod> = mine
        .iter()
        .copied()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none() && !matches!(phase(p), "Succeeded" | "Failed")
        })
        .collect();
    let ready = active
        .iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count() as i32;
    let completions = spec.completions.unwrap_or(1);
    let parallelism = spec.parallelism.unwrap_or(1);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let now = now_rfc3339();
    let start_time = status.start_time.as_ref().map(|t| t.0);

    let mut conditions: Vec<serde_json::Value> = Vec::new();
    let mut outcome: Option<(&str, &str, String)> = None;
    if failed > backoff_limit {
        outcome = Some((
            "Failed",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit".into(),
        ));
    } else if let (Some(limit), Some(st)) = (spec.active_deadline_seconds, start_time) {
        if k8s_openapi::jiff::Timestamp::now()
            .duration_since(st)
            .as_secs()
            >= limit
        {
            outcome = Some((
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline".into(),
            ));
        }
    }
    if outcome.is_none() && succeeded >= completions {
        outcome = Some((
            "Complete",
            "CompletionsReached",
            "Reached expected number of succeeded pods".into(),
        ));
    }

    let mut patch = json!({
        "succeeded": succeeded, "failed": failed, "ready": ready,
        "active": active.len() as i32,
    });
    if start_time.is_none() {
        patch["startTime"] = json!(now);
    }
    if let Some((kind, reason, message)) = &outcome {
        let interim = if *kind == "Failed" {
            "FailureTarget"
        } else {
            "SuccessCriteriaMet"
        };
        for t in [interim, kind] {
            conditions.push(json!({
                "type": t, "status": "True", "reason": reason, "message": message,
                "lastProbeTime": now, "lastTransitionTime": now,
            }));
        }
        let mut existing: Vec<serde_json::Value> = status
            .conditions
            .iter()
            .flatten()
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect();
        existing.extend(conditions);
        patch["conditions"] = json!(existing);
        patch["active"] = json!(0);
        if *kind == "Complete" {
            patch["completionTime"] = json!(now);
        }
    }
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": patch })),
    )
    .await?;
    for p in newly {
        remove_tracking(ctx, p).await;
    }

    if let Some((kind, reason, message)) = outcome {
        // Pods still running are killed when the Job fails.
        for p in &active {
            let _ = pod_api
                .delete(&p.name_any(), &DeleteParams::default())
                .await;
        }
        let k = if kind == "Failed" {
            Kind::Warning
        } else {
            Kind::Normal
        };
        let ev_reason = if kind == "Complete" {
            "Completed"
        } else {
            reason
        };
        let msg = if kind == "Complete" {
            "Job completed".to_string()
        } else {
            message
        };
        ctx.events.record(job, k, ev_reason, &msg, COMPONENT).await;
        return Ok(());
    }

    // Create pods up to parallelism, after the back-off that follows a failure.
    let want = (parallelism.min(completions - succeeded) - active.len() as i32).max(0);
    if want == 0 {
        return Ok(());
    }
    {
        let mut m = lock(mem);
        let prev_failed = status.failed.unwrap_or(0);
        if failed > prev_failed {
            m.not_before.insert(
                uid.clone(),
                Instant::now() + backoff(ctx.opts.job_backoff, failed),
            );
        }
        if let Some(t) = m.not_before.get(&uid) {
            if Instant::now() < *t {
                return Ok(());
            }
        }
    }
    for _ in 0..want {
        let pod = pod_for(job, &uid);
        match pod_api.create(&PostParams::default(), &pod).await {
            Ok(p) => {
                ctx.events
                    .record(
                        job,
                        Kind::Normal,
                        "SuccessfulCreate",
                        &format!("Created pod: {}", p.name_any()),
                        COMPONENT,
                    )
                    .await
            }
            Err(e) => {
                ctx.events
                    .record(
                        job,
                        Kind::Warning,
                        "FailedCreate",
                        &format!("Error creating: {e}"),
                        COMPONENT,
                    )
                    .await
            }
        }
    }
    Ok(())
}

/// The pod the controller makes from a Job's template.
fn pod_for(job: &Job, uid: &str) -> Pod {
    let name = job.name_any();
    let tpl = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let meta = tpl.metadata.unwrap_or_default();
    let mut labels: BTreeMap<String, String> = meta.labels.unwrap_or_default();
    for (k, v) in [
        ("batch.kubernetes.io/controller-uid", uid),
        ("batch.kubernetes.io/job-name", name.as_str()),
        ("controller-uid", uid),
        ("job-name", name.as_str()),
    ] {
        labels.insert(k.into(), v.into());
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            finalizers: Some(vec![TRACKING_FINALIZER.into()]),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name,
                uid: uid.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: tpl.spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let b = Duration::from_secs(10);
        assert_eq!(backoff(b, 0), Duration::ZERO);
        assert_eq!(backoff(b, 1), Duration::from_secs(10));
        assert_eq!(backoff(b, 3), Duration::from_secs(40));
        assert_eq!(backoff(b, 12), Duration::from_secs(360));
    }

    #[test]
    fn pods_carry_the_controllers_labels_and_owner() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "mover", "namespace": "db", "uid": "u-1"},
            "spec": {"template": {"metadata": {"labels": {"app": "x"}}, "spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}
        }))
        .unwrap();
        let p = pod_for(&job, "u-1");
        let l = p.metadata.labels.unwrap();
        assert_eq!(l["job-name"], "mover");
        assert_eq!(l["batch.kubernetes.io/controller-uid"], "u-1");
        assert_eq!(l["app"], "x");
        let o = &p.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (o.controller, o.block_owner_deletion),
            (Some(true), Some(true))
        );
        assert_eq!(p.metadata.generate_name.as_deref(), Some("mover-"));
    }
}
