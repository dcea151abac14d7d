//! `s3mover rollout-test`: a StatefulSet's rolling update, measured. Each round records a
//! baseline (pods, nodes, claims → PVs), starts the update ([`Trigger`]), and watches pods,
//! Events and VolumeAttachments until the rollout completes or the timeout passes
//! ([`watch`]): per pod the time from deletion to gone against its grace period, to the new pod
//! Ready, whether it moved node, and its volume's detach → attach; Multi-Attach and other
//! attach, mount and preStop-hook failures. An optional data check ([`canary`]) writes a
//! canary onto each claim before the rollout and reads it back after. [`report`] turns the
//! rounds into a verdict with reasons and a summary.

pub mod canary;
pub mod report;
pub mod watch;

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

pub use report::{FailOn, Report, Trigger, Verdict};

use crate::{Error, Result};

/// The annotation (and environment variable) the default trigger writes.
pub const TRIGGER_ANNOTATION: &str = "rolling-restart-trigger";
/// The environment variable `--trigger env` sets.
pub const TRIGGER_ENV: &str = "ROLLING_UPDATE_TRIGGER";

/// What to test and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The StatefulSet.
    pub stateful_set: String,
    /// Its namespace.
    pub namespace: String,
    /// How each round starts the update.
    pub trigger: Trigger,
    /// How many rollouts.
    pub rounds: u32,
    /// How long one rollout may take.
    pub timeout: Duration,
    /// What fails the test.
    pub fail_on: FailOn,
    /// An image with `/bin/sh` for the data check; `None`: no data check.
    pub canary_image: Option<String>,
    /// How often the cluster is looked at.
    pub poll: Duration,
}

/// One pod before the rollout.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// `<set>-<ordinal>`.
    pub pod: String,
    /// Its uid (the replacement has another).
    pub uid: String,
    /// Its node.
    pub node: String,
    /// Its grace period.
    pub grace: i64,
    /// (claim, PV) of its PersistentVolumeClaim volumes.
    pub claims: Vec<(String, String)>,
}

/// The set's label selector as a query string.
pub fn selector(set: &StatefulSet) -> Result<String> {
    let labels = set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    if labels.is_empty() {
        return Err(Error::Invalid(format!(
            "statefulset {} has no selector.matchLabels to find its pods by",
            set.name_any()
        )));
    }
    Ok(labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(","))
}

/// The set's pods before the rollout, which must all be Ready.
pub async fn baseline(client: &Client, set: &StatefulSet) -> Result<Vec<Baseline>> {
    let ns = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let listed = pods
        .list(&ListParams::default().labels(&selector(set)?))
        .await
        .map_err(|e| Error::api(format!("listing the pods of statefulset {name}"), e))?
        .items;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let mut out = Vec::new();
    for i in 0..replicas {
        let pod_name = format!("{name}-{i}");
        let Some(p) = listed.iter().find(|p| p.name_any() == pod_name) else {
            return Err(Error::Invalid(format!(
                "statefulset {name}: pod {pod_name} does not exist; the test needs all {replicas} replicas Ready"
            )));
        };
        if !watch::ready(p) || p.metadata.deletion_timestamp.is_some() {
            return Err(Error::Invalid(format!(
                "statefulset {name}: pod {pod_name} is not Ready; the test needs all {replicas} replicas Ready"
            )));
        }
        let mut cl = Vec::new();
        for v in p.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if let Some(c) = &v.persistent_volume_claim {
                let pv = claims
                    .get_opt(&c.claim_name)
                    .await
                    .map_err(|e| Error::api(format!("reading claim {}", c.claim_name), e))?
                    .and_then(|c| c.spec.and_then(|s| s.volume_name))
                    .unwrap_or_default();
                cl.push((c.claim_name.clone(), pv));
            }
        }
        out.push(Baseline {
            pod: pod_name,
            uid: p.uid().unwrap_or_default(),
            node: p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            grace: p
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30),
            claims: cl,
        });
    }
    Ok(out)
}

/// Starts the rolling update. For [`Trigger::Partition`] the partition is first set to the
/// replica count, so nothing moves until [`watch`] lowers it.
pub async fn trigger(client: &Client, set: &StatefulSet, how: Trigger, run_id: &str) -> Result<()> {
    let ns = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let annotate = |key: &str, value: &str| json!({"spec": {"template": {"metadata": {"annotations": {key: value}}}}});
    let patch = match how {
        Trigger::Annotation => annotate(TRIGGER_ANNOTATION, run_id),
        Trigger::Restart => annotate(
            "kubectl.kubernetes.io/restartedAt",
            &time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        ),
        Trigger::Partition => {
            let mut p = annotate(TRIGGER_ANNOTATION, run_id);
            p["spec"]["updateStrategy"] =
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": replicas}});
            p
        }
        Trigger::Env => {
            // Strategic merge: containers by name, env by name.
            let containers: Vec<serde_json::Value> = set
                .spec
                .as_ref()
                .map(|s| s.template.spec.iter().flat_map(|p| p.containers.iter()))
                .into_iter()
                .flatten()
                .map(|c| json!({"name": c.name, "env": [{"name": TRIGGER_ENV, "value": run_id}]}))
                .collect();
            json!({"spec": {"template": {"spec": {"containers": containers}}}})
        }
    };
    api.patch(&name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map_err(|e| Error::api(format!("starting the rollout of statefulset {name}"), e))?;
    Ok(())
}

/// Lowers (or sets) the RollingUpdate partition.
pub async fn set_partition(client: &Client, ns: &str, name: &str, partition: i32) -> Result<()> {
    Api::<StatefulSet>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": partition}}}}),
            ),
        )
        .await
        .map_err(|e| Error::api(format!("setting the partition of statefulset {name}"), e))?;
    Ok(())
}

/// Runs every round and builds the report.
pub async fn run(client: &Client, opts: &Options) -> Result<Report> {
    if opts.rounds == 0 {
        return Err(Error::Invalid("--rounds must be at least 1".into()));
    }
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), &opts.namespace);
    let mut rounds = Vec::new();
    for round in 1..=opts.rounds {
        let set = api
            .get_opt(&opts.stateful_set)
            .await
            .map_err(|e| Error::api(format!("reading statefulset {}", opts.stateful_set), e))?
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "statefulset {} not found in namespace {}",
                    opts.stateful_set, opts.namespace
                ))
            })?;
        let rr = watch::round(client, &set, opts, round).await?;
        let failed = rr.verdict == Verdict::Fail && !rr.completed;
        rounds.push(rr);
        // A rollout that never finished leaves nothing sound to start the next one from.
        if failed {
            break;
        }
    }
    let multi = rounds.len() > 1;
    let reasons: Vec<String> = rounds
        .iter()
        .flat_map(|r| {
            r.reasons.iter().map(move |x| {
                if multi {
                    format!("round {}: {x}", r.round)
                } else {
                    x.clone()
                }
            })
        })
        .collect();
    Ok(Report {
        stateful_set: opts.stateful_set.clone(),
        namespace: opts.namespace.clone(),
        verdict: if reasons.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        reasons,
        pods: rounds.last().map(|r| r.pods.clone()).unwrap_or_default(),
        summary: report::summarize(&rounds),
        rounds,
    })
}
