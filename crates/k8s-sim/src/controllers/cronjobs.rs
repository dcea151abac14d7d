//! The `batch/v1` CronJob controller, as kube-controller-manager's runs it: at each scheduled
//! time (5-field cron in UTC, or `@hourly`-style macros) a Job from `jobTemplate`, named
//! `CRONJOB-<minutes since the epoch>`, owned by the CronJob and annotated with its scheduled
//! time; only the most recent missed time runs, and only within `startingDeadlineSeconds`;
//! `concurrencyPolicy` Allow, Forbid (the run waits while a Job is active) or Replace (the
//! active Jobs are deleted); `suspend`; `status.active`, `lastScheduleTime`,
//! `lastSuccessfulTime`; finished Jobs beyond `successfulJobsHistoryLimit` (3) and
//! `failedJobsHistoryLimit` (1) deleted, oldest first.
//!
//! Its clock is the wall clock plus a [`CronClock`] offset that tests move forward, so a
//! nightly schedule can be seen firing without waiting for the night.

use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use croner::Cron;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Api, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::events::Kind;
use super::util;
use super::Ctx;

const COMPONENT: &str = "cronjob-controller";
/// The annotation a scheduled Job carries: the time it was scheduled for.
pub const SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed times than this and the controller says so and runs only the latest.
const MAX_MISSED: usize = 100;

/// The controller's clock offset from the wall clock; clones share it.
#[derive(Debug, Clone, Default)]
pub struct CronClock(Arc<AtomicI64>);

impl CronClock {
    /// Moves the clock `seconds` forward.
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }

    /// The controller's "now".
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::seconds(self.0.load(Ordering::SeqCst))
    }

    /// Seconds from the controller's "now" to the next `hour`:00 UTC (a test advances by this
    /// and a little more to see a daily schedule fire).
    pub fn seconds_until_next(&self, hour: u32) -> i64 {
        let now = self.now().timestamp();
        let (day, at) = (86_400, i64::from(hour) * 3600);
        let today = now - now.rem_euclid(day) + at;
        if today > now {
            today - now
        } else {
            today + day - now
        }
    }
}

/// Checks a schedule the way the API server validates `spec.schedule`: five fields or a
/// macro, no seconds field, no `TZ=` prefix (that is `spec.timeZone`'s job).
pub fn parse_schedule(schedule: &str) -> Result<Cron, String> {
    let text = schedule.trim();
    if text.contains("TZ") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    if !text.starts_with('@') && text.split_whitespace().count() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}",
            text.split_whitespace().count()
        ));
    }
    Cron::from_str(text).map_err(|e| e.to_string())
}

/// Starts the controller.
pub fn start(ctx: Ctx) -> Vec<JoinHandle<()>> {
    let notify = Arc::new(Notify::new());
    let c = &ctx.client;
    vec![
        util::watch_into(Api::<CronJob>::all(c.clone()), notify.clone()),
        util::watch_into(Api::<Job>::all(c.clone()), notify.clone()),
        util::reconcile_loop(COMPONENT, notify, move || {
            let ctx = ctx.clone();
            async move { reconcile(&ctx).await }
        }),
    ]
}

async fn reconcile(ctx: &Ctx) -> Result<(), kube::Error> {
    let cronjobs = Api::<CronJob>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?;
    let jobs = Api::<Job>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?;
    for cronjob in &cronjobs.items {
        let uid = cronjob.uid().unwrap_or_default();
        let owned: Vec<&Job> = jobs
            .items
            .iter()
            .filter(|j| {
                j.owner_references()
                    .iter()
                    .any(|o| o.controller == Some(true) && o.uid == uid)
            })
            .collect();
        if let Err(e) = sync(ctx, cronjob, &owned).await {
            tracing::debug!("{COMPONENT}: {}: {e}", cronjob.name_any());
        }
    }
    Ok(())
}

fn condition(job: &Job, kind: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
}

fn finished(job: &Job) -> bool {
    condition(job, "Complete") || condition(job, "Failed")
}

/// An API timestamp as the cron library's time.
fn from_api(t: &k8s_openapi::jiff::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().try_into().ok()?)
}

#[cfg(test)]
fn parse_time(text: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The most recent scheduled time after `since` and not after `now`, with whether more than
/// [`MAX_MISSED`] were missed.
fn latest_due(
    cron: &Cron,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, bool) {
    let mut latest = None;
    let mut at = since;
    for _ in 0..=MAX_MISSED {
        match cron.find_next_occurrence(&at, false) {
            Ok(t) if t <= now => {
                latest = Some(t);
                at = t;
            }
            _ => return (latest, false),
        }
    }
    // Too many: the latest one is the one before now.
    let last = cron.find_previous_occurrence(&now, true).ok();
    (last.or(latest), true)
}

async fn sync(ctx: &Ctx, cronjob: &CronJob, owned: &[&Job]) -> Result<(), kube::Error> {
    let spec = match &cronjob.spec {
        Some(s) => s,
        None => return Ok(()),
    };
    let ns = cronjob.namespace().unwrap_or_default();
    let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    let active: Vec<&&Job> = owned.iter().filter(|j| !finished(j)).collect();
    prune_history(ctx, &ns, spec, owned).await?;
    let status = json!({
        "active": active.iter().map(|j| job_ref(j)).collect::<Vec<_>>(),
        "lastSuccessfulTime": owned.iter().filter(|j| condition(j, "Complete"))
            .filter_map(|j| j.status.as_ref()?.completion_time.as_ref().map(|t| t.0))
            .max().map(|t| t.to_string()),
    });
    if spec.suspend == Some(true) {
        return patch_status(&api, cronjob, status).await;
    }
    if spec
        .time_zone
        .as_deref()
        .is_some_and(|z| z != "UTC" && z != "Etc/UTC")
    {
        ctx.events
            .record(
                cronjob,
                Kind::Warning,
                "UnknownTimeZone",
                "this cluster schedules in UTC only",
                COMPONENT,
            )
            .await;
        return Ok(());
    }
    let cron = match parse_schedule(&spec.schedule) {
        Ok(c) => c,
        Err(e) => {
            let message = format!("unparseable schedule {:?}: {e}", spec.schedule);
            ctx.events
                .record(
                    cronjob,
                    Kind::Warning,
                    "UnparseableSchedule",
                    &message,
                    COMPONENT,
                )
                .await;
            return Ok(());
        }
    };
    let now = ctx.opts.cron_clock.now();
    let last = cronjob
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .and_then(|t| from_api(&t.0));
    let since = last
        .or_else(|| {
            cronjob
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| from_api(&t.0))
        })
        .unwrap_or(now);
    let (due, too_many) = latest_due(&cron, since, now);
    let Some(due) = due else {
        return patch_status(&api, cronjob, status).await;
    };
    if too_many {
        ctx.events
            .record(
                cronjob,
                Kind::Warning,
                "TooManyMissedTimes",
                "too many missed start times; only the most recent runs",
                COMPONENT,
            )
            .await;
    }
    if let Some(deadline) = spec.starting_deadline_seconds {
        if (now - due).num_seconds() > deadline {
            ctx.events
                .record(
                    cronjob,
                    Kind::Warning,
                    "MissSchedule",
                    &format!(
                        "missed scheduled time {} by more than startingDeadlineSeconds",
                        due.to_rfc3339()
                    ),
                    COMPONENT,
                )
                .await;
            let mut status = status;
            status["lastScheduleTime"] = api_time(due);
            return patch_status(&api, cronjob, status).await;
        }
    }
    match spec.concurrency_policy.as_deref().unwrap_or("Allow") {
        "Forbid" if !active.is_empty() => return patch_status(&api, cronjob, status).await,
        "Replace" => {
            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
            for job in &active {
                let _ = jobs.delete(&job.name_any(), &background()).await;
            }
        }
        _ => {}
    }
    let job = create_job(ctx, cronjob, due).await?;
    ctx.events
        .record(
            cronjob,
            Kind::Normal,
            "SuccessfulCreate",
            &format!("Created job {}", job.name_any()),
            COMPONENT,
        )
        .await;
    let mut status = status;
    status["lastScheduleTime"] = api_time(due);
    if let Some(list) = status["active"].as_array_mut() {
        list.push(job_ref(&job));
    }
    patch_status(&api, cronjob, status).await
}

/// A time as the API writes it: RFC 3339 in whole seconds, UTC.
fn api_time(t: DateTime<Utc>) -> Value {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true).into()
}

fn background() -> DeleteParams {
    DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    }
}

fn job_ref(job: &Job) -> Value {
    json!({"kind": "Job", "apiVersion": "batch/v1", "namespace": job.namespace(),
           "name": job.name_any(), "uid": job.uid(), "resourceVersion": job.resource_version()})
}

async fn patch_status(
    api: &Api<CronJob>,
    cronjob: &CronJob,
    status: Value,
) -> Result<(), kube::Error> {
    api.patch_status(
        &cronjob.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .map(|_| ())
}

/// The Job for the run scheduled at `due`; one already created for it is taken as it is.
async fn create_job(ctx: &Ctx, cronjob: &CronJob, due: DateTime<Utc>) -> Result<Job, kube::Error> {
    let ns = cronjob.namespace().unwrap_or_default();
    let name = format!("{}-{}", cronjob.name_any(), due.timestamp() / 60);
    let template = cronjob
        .spec
        .as_ref()
        .map(|s| serde_json::to_value(&s.job_template))
        .transpose()
        .map_err(kube::Error::SerdeError)?
        .unwrap_or_default();
    let mut job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    });
    job["metadata"]["name"] = name.clone().into();
    job["metadata"]["namespace"] = ns.clone().into();
    job["metadata"]["annotations"][SCHEDULED_ANNOTATION] = api_time(due);
    job["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "batch/v1", "kind": "CronJob", "name": cronjob.name_any(),
        "uid": cronjob.uid(), "controller": true, "blockOwnerDeletion": true,
    }]);
    let job: Job = serde_json::from_value(job).map_err(kube::Error::SerdeError)?;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    match jobs.create(&PostParams::default(), &job).await {
        Ok(created) => Ok(created),
        Err(e) if util::is_conflict(&e) => jobs.get(&name).await,
        Err(e) => Err(e),
    }
}

/// Deletes finished Jobs beyond the history limits, oldest first.
async fn prune_history(
    ctx: &Ctx,
    ns: &str,
    spec: &k8s_openapi::api::batch::v1::CronJobSpec,
    owned: &[&Job],
) -> Result<(), kube::Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let mut done: Vec<&&Job> = owned.iter().filter(|j| condition(j, kind)).collect();
        done.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let extra = done
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        for job in done.into_iter().take(extra) {
            match jobs.delete(&job.name_any(), &background()).await {
                Ok(_) => {}
                Err(e) if util::is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        parse_time(Some(text)).expect("time")
    }

    #[test]
    fn schedules_are_checked_as_the_api_server_does() {
        assert!(parse_schedule("0 1 * * *").is_ok());
        assert!(parse_schedule("@daily").is_ok());
        assert!(parse_schedule("0 3 * * 0").is_ok());
        assert!(parse_schedule("0 0 1 * * *")
            .unwrap_err()
            .contains("5 fields"));
        assert!(parse_schedule("CRON_TZ=UTC 0 1 * * *")
            .unwrap_err()
            .contains("timeZone"));
        assert!(parse_schedule("61 1 * * *").is_err());
    }

    #[test]
    fn only_the_latest_missed_time_is_due() {
        let cron = parse_schedule("0 1 * * *").unwrap();
        let since = at("2026-12-01T12:00:00Z");
        assert_eq!(
            latest_due(&cron, since, at("2026-12-02T00:59:59Z")),
            (None, false)
        );
        assert_eq!(
            latest_due(&cron, since, at("2026-12-04T02:00:00Z")),
            (Some(at("2026-12-04T01:00:00Z")), false)
        );
        let hourly = parse_schedule("0 * * * *").unwrap();
        let (due, too_many) = latest_due(&hourly, since, at("2026-12-20T05:30:00Z"));
        assert_eq!((due, too_many), (Some(at("2026-12-20T05:00:00Z")), true));
    }
}
