//! The CronJob controller through the API: a nightly schedule fires when the controller's clock
//! passes it (and not before), the Job carries its owner and scheduled time, Forbid makes the
//! next run wait for the active one, and finished Jobs beyond the history limit go.

mod cluster;

use std::time::Duration;

use cluster::*;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use s3mover_k8s_sim::controllers::cronjobs::{CronClock, SCHEDULED_ANNOTATION};
use serde_json::json;

async fn owned_jobs(jobs: &Api<Job>) -> Vec<Job> {
    let mut list = jobs.list(&ListParams::default()).await.expect("jobs").items;
    list.retain(|j| j.owner_references().iter().any(|o| o.kind == "CronJob"));
    list.sort_by_key(|j| j.name_any());
    list
}

#[tokio::test]
async fn a_nightly_cronjob_fires_waits_for_its_active_run_and_keeps_its_history() {
    if !require(
        "a_nightly_cronjob_fires_waits_for_its_active_run_and_keeps_its_history",
        &["root", "bwrap"],
    ) {
        return;
    }
    let clock = CronClock::default();
    let sim = start(|c| c.cron_clock = clock.clone()).await;
    let c = &sim.client;
    let _: CronJob = create(
        c,
        "default",
        json!({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
            "spec": {
                "schedule": "0 1 * * *", "concurrencyPolicy": "Forbid",
                "startingDeadlineSeconds": 3600, "successfulJobsHistoryLimit": 1,
                "jobTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox",
                                    "command": ["sh", "-c", "sleep 3"]}]}}}}
            }
        }),
    )
    .await;
    let jobs: Api<Job> = Api::namespaced(c.clone(), "default");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(owned_jobs(&jobs).await.is_empty(), "nothing before 01:00");

    clock.advance(clock.seconds_until_next(1) + 30);
    let first = wait_for("the 01:00 run", || {
        let jobs = jobs.clone();
        async move {
            owned_jobs(&jobs)
                .await
                .into_iter()
                .next()
                .ok_or_else(|| "no Job yet".to_string())
        }
    })
    .await;
    let annotations = first.annotations();
    assert!(
        annotations
            .get(SCHEDULED_ANNOTATION)
            .is_some_and(|t| t.ends_with("T01:00:00Z")),
        "{annotations:?}"
    );
    let cronjobs: Api<CronJob> = Api::namespaced(c.clone(), "default");
    let status = wait_for("status.active", || {
        let cronjobs = cronjobs.clone();
        async move {
            let cj = cronjobs.get("nightly").await.map_err(|e| e.to_string())?;
            let st = cj.status.unwrap_or_default();
            (st.active.as_ref().is_some_and(|a| !a.is_empty()) && st.last_schedule_time.is_some())
                .then_some(st.clone())
                .ok_or_else(|| format!("{st:?}"))
        }
    })
    .await;
    assert_eq!(
        status.active.expect("active")[0].name.as_deref(),
        Some(first.name_any().as_str())
    );

    // The next night comes while the first run is still going: Forbid holds the second one
    // until the first has finished, then runs it (it is still within its starting deadline).
    clock.advance(86_400);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let running = owned_jobs(&jobs).await;
    assert_eq!(
        running.len(),
        1,
        "Forbid: {:?}",
        running.iter().map(|j| j.name_any()).collect::<Vec<_>>()
    );
    let (cond, _) = wait_job(c, "default", &first.name_any()).await;
    assert_eq!(cond, "Complete");
    let second = wait_for("the next night's run", || {
        let jobs = jobs.clone();
        let first = first.name_any();
        async move {
            owned_jobs(&jobs)
                .await
                .into_iter()
                .find(|j| j.name_any() != first)
                .ok_or_else(|| "only the first".to_string())
        }
    })
    .await;
    let (cond, _) = wait_job(c, "default", &second.name_any()).await;
    assert_eq!(cond, "Complete");
    // successfulJobsHistoryLimit 1: the older finished Job goes.
    wait_for("the history limit", || {
        let jobs = jobs.clone();
        let second = second.name_any();
        async move {
            let names: Vec<String> = owned_jobs(&jobs)
                .await
                .iter()
                .map(|j| j.name_any())
                .collect();
            (names == [second.clone()])
                .then_some(())
                .ok_or_else(|| format!("{names:?}"))
        }
    })
    .await;
}

/// The API server refuses a schedule it cannot parse, in the field's words.
#[tokio::test]
async fn a_bad_schedule_is_refused_at_create() {
    let sim = start(|_| {}).await;
    let cronjobs: Api<CronJob> = Api::namespaced(sim.client.clone(), "default");
    for schedule in ["0 0 1 * * *", "every night", ""] {
        let cronjob: CronJob = serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "bad"},
            "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox"}]}}}}}
        }))
        .expect("CronJob");
        let err = cronjobs
            .create(&Default::default(), &cronjob)
            .await
            .expect_err("a bad schedule is refused");
        let kube::Error::Api(status) = err else {
            panic!("{err:?}");
        };
        assert_eq!(status.code, 422, "{schedule:?}: {status:?}");
        assert!(
            status.message.contains("spec.schedule"),
            "{}",
            status.message
        );
    }
}
