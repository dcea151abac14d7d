//! The `apps/v1` StatefulSet controller: pods `<set>-<ordinal>` with stable names and claims
//! from `volumeClaimTemplates` (`<template>-<set>-<ordinal>`), created in order and waiting for
//! each to be Running and Ready (`podManagementPolicy: OrderedReady`) or all at once
//! (`Parallel`), and rolling updates from the highest ordinal down to
//! `updateStrategy.rollingUpdate.partition`, one pod at a time, each replaced only after the
//! one before it is Ready again. Template versions are `ControllerRevision`s named
//! `<set>-<hash>`, and pods carry the `controller-revision-hash` label; the status reports
//! `currentRevision`/`updateRevision`, the replica counts and `observedGeneration` as
//! kube-controller-manager does, so `kubectl rollout status` and `kubectl rollout restart`
//! work against it. `OnDelete` updates only pods that something else deleted.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::events::Kind;
use super::util::{self, is_conflict, is_not_found};
use super::Ctx;

const COMPONENT: &str = "statefulset-controller";
/// The label naming a pod's template revision.
pub const REVISION_LABEL: &str = "controller-revision-hash";
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// Starts the StatefulSet controller.
pub fn start(ctx: Ctx) -> Vec<JoinHandle<()>> {
    let notify = Arc::new(Notify::new());
    let c = &ctx.client;
    vec![
        util::watch_into(Api::<StatefulSet>::all(c.clone()), notify.clone()),
        util::watch_into(Api::<Pod>::all(c.clone()), notify.clone()),
        util::reconcile_loop("statefulset-controller", notify, move || {
            let ctx = ctx.clone();
            async move { reconcile(&ctx).await }
        }),
    ]
}

async fn reconcile(ctx: &Ctx) -> Result<(), kube::Error> {
    let sets = Api::<StatefulSet>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    if sets.is_empty() {
        return Ok(());
    }
    let pods = Api::<Pod>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    for set in sets
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
    {
        if let Err(e) = sync_set(ctx, set, &pods).await {
            tracing::debug!("statefulset {}: {e}", set.name_any());
        }
    }
    Ok(())
}

/// FNV-1a of the template's JSON, as a short hex name (the controller's revision hash).
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// The ordinal of a pod named `<set>-<n>`.
pub fn ordinal(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

fn revision_of(pod: &Pod) -> Option<&str> {
    pod.labels().get(REVISION_LABEL).map(String::as_str)
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Running with its Ready condition True.
pub fn running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running"
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn healthy(pod: &Pod) -> bool {
    running_and_ready(pod) && !terminating(pod)
}

fn owner(set: &StatefulSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "StatefulSet".into(),
        name: set.name_any(),
        uid: set.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

struct SetView<'a> {
    set: &'a StatefulSet,
    name: String,
    ns: String,
    replicas: i32,
    partition: i32,
    rolling: bool,
    monotonic: bool,
    update_rev: String,
    current_rev: String,
    templates: BTreeMap<String, PodTemplateSpec>,
}

async fn sync_set(ctx: &Ctx, set: &StatefulSet, all_pods: &[Pod]) -> Result<(), kube::Error> {
    let name = set.name_any();
    let ns = set.namespace().unwrap_or_default();
    let uid = set.uid().unwrap_or_default();
    let spec = set.spec.clone().unwrap_or_default();
    let template = spec.template.clone();
    let update_rev = format!("{name}-{}", template_hash(&template));
    let revs = ensure_revisions(ctx, set, &update_rev, &template).await?;
    let status_current = set
        .status
        .as_ref()
        .and_then(|s| s.current_revision.clone())
        .filter(|r| revs.contains_key(r));
    let current_rev = status_current.unwrap_or_else(|| update_rev.clone());
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate";
    let partition = strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let view = SetView {
        set,
        name: name.clone(),
        ns: ns.clone(),
        replicas: spec.replicas.unwrap_or(1),
        partition,
        rolling,
        monotonic: spec.pod_management_policy.as_deref() != Some("Parallel"),
        update_rev,
        current_rev,
        templates: revs,
    };
    let mut pods: BTreeMap<i32, &Pod> = BTreeMap::new();
    for p in all_pods.iter().filter(|p| {
        p.namespace().as_deref() == Some(ns.as_str())
            && p.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == uid)
    }) {
        if let Some(i) = ordinal(&name, &p.name_any()) {
            pods.insert(i, p);
        }
    }
    act(ctx, &view, &pods).await?;
    write_status(ctx, &view, &pods).await
}

/// One step of the controller's work: replace failed pods, create missing ones in order,
/// remove surplus ones from the top, then roll one pod to the update revision.
async fn act(ctx: &Ctx, v: &SetView<'_>, pods: &BTreeMap<i32, &Pod>) -> Result<(), kube::Error> {
    let current_replicas = v
        .set
        .status
        .as_ref()
        .and_then(|s| s.current_replicas)
        .unwrap_or(0);
    // A pod that ended is replaced.
    for p in pods.range(..v.replicas).map(|(_, p)| p) {
        if matches!(phase(p), "Failed" | "Succeeded") && !terminating(p) {
            delete_pod(ctx, v, p).await?;
            return Ok(());
        }
    }
    for i in 0..v.replicas {
        match pods.get(&i) {
            None => {
                let at_current = v.rolling
                    && if v.partition > 0 {
                        i < v.partition
                    } else {
                        i < current_replicas
                    };
                let rev = if at_current && v.current_rev != v.update_rev {
                    &v.current_rev
                } else {
                    &v.update_rev
                };
                create_pod(ctx, v, i, rev).await?;
                if v.monotonic {
                    return Ok(());
                }
            }
            Some(p) if !healthy(p) && v.monotonic => return Ok(()),
            Some(_) => {}
        }
    }
    // Surplus pods go from the highest ordinal down.
    let surplus: Vec<&&Pod> = pods
        .iter()
        .rev()
        .filter(|(i, _)| **i >= v.replicas)
        .map(|(_, p)| p)
        .collect();
    for p in surplus {
        if terminating(p) {
            if v.monotonic {
                return Ok(());
            }
            continue;
        }
        delete_pod(ctx, v, p).await?;
        if v.monotonic {
            return Ok(());
        }
    }
    if !v.rolling {
        return Ok(());
    }
    for target in (v.partition.max(0)..v.replicas).rev() {
        let Some(p) = pods.get(&target) else {
            return Ok(());
        };
        if revision_of(p) != Some(v.update_rev.as_str()) && !terminating(p) {
            delete_pod(ctx, v, p).await?;
            return Ok(());
        }
        if !healthy(p) {
            return Ok(());
        }
    }
    Ok(())
}

async fn delete_pod(ctx: &Ctx, v: &SetView<'_>, pod: &Pod) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &v.ns);
    match api.delete(&pod.name_any(), &DeleteParams::default()).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(e),
    }
    ctx.events
        .record(
            v.set,
            Kind::Normal,
            "SuccessfulDelete",
            &format!(
                "delete Pod {} in StatefulSet {} successful",
                pod.name_any(),
                v.name
            ),
            COMPONENT,
        )
        .await;
    Ok(())
}

/// The claim names of pod `i`: volume name → claim name.
pub fn claim_names(set: &StatefulSet, i: i32) -> Vec<(String, String)> {
    let name = set.name_any();
    set.spec
        .iter()
        .flat_map(|s| s.volume_claim_templates.iter().flatten())
        .map(|t| {
            let tn = t.name_any();
            let claim = format!("{tn}-{name}-{i}");
            (tn, claim)
        })
        .collect()
}

async fn create_claims(ctx: &Ctx, v: &SetView<'_>, i: i32) -> Result<(), kube::Error> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &v.ns);
    let selector_labels = v
        .set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    let templates: Vec<PersistentVolumeClaim> = v
        .set
        .spec
        .iter()
        .flat_map(|s| s.volume_claim_templates.iter().flatten())
        .cloned()
        .collect();
    for (t, (_, claim)) in templates.into_iter().zip(claim_names(v.set, i)) {
        if api.get_opt(&claim).await?.is_some() {
            continue;
        }
        let mut labels = t.metadata.labels.clone().unwrap_or_default();
        labels.extend(selector_labels.clone());
        let pvc = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(claim.clone()),
                namespace: Some(v.ns.clone()),
                labels: Some(labels),
                annotations: t.metadata.annotations.clone(),
                ..ObjectMeta::default()
            },
            spec: t.spec.clone(),
            status: None,
        };
        match api.create(&PostParams::default(), &pvc).await {
            Ok(_) => {
                ctx.events
                    .record(
                        v.set,
                        Kind::Normal,
                        "SuccessfulCreate",
                        &format!(
                            "create Claim {claim} Pod {}-{i} in StatefulSet {} success",
                            v.name, v.name
                        ),
                        COMPONENT,
                    )
                    .await;
            }
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn create_pod(ctx: &Ctx, v: &SetView<'_>, i: i32, rev: &str) -> Result<(), kube::Error> {
    create_claims(ctx, v, i).await?;
    let template = v
        .templates
        .get(rev)
        .cloned()
        .or_else(|| v.set.spec.as_ref().map(|s| s.template.clone()))
        .unwrap_or_default();
    let pod_name = format!("{}-{i}", v.name);
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.clone().unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), pod_name.clone());
    labels.insert(POD_INDEX_LABEL.into(), i.to_string());
    labels.insert(REVISION_LABEL.into(), rev.to_string());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(pod_name.clone());
    if let Some(svc) = v
        .set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty())
    {
        spec.subdomain = Some(svc);
    }
    let mut volumes: Vec<Volume> = spec.volumes.take().unwrap_or_default();
    for (vol, claim) in claim_names(v.set, i) {
        volumes.retain(|x| x.name != vol);
        volumes.push(Volume {
            name: vol,
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim,
                read_only: None,
            }),
            ..Volume::default()
        });
    }
    spec.volumes = Some(volumes);
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(pod_name.clone()),
            namespace: Some(v.ns.clone()),
            labels: Some(labels),
            annotations: meta.annotations.clone(),
            owner_references: Some(vec![owner(v.set)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &v.ns);
    match api.create(&PostParams::default(), &pod).await {
        Ok(_) => {
            ctx.events
                .record(
                    v.set,
                    Kind::Normal,
                    "SuccessfulCreate",
                    &format!("create Pod {pod_name} in StatefulSet {} successful", v.name),
                    COMPONENT,
                )
                .await;
            Ok(())
        }
        // The old pod of that name is still on its way out.
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The set's ControllerRevisions by name (creating the one for `update_rev`), with their
/// templates.
async fn ensure_revisions(
    ctx: &Ctx,
    set: &StatefulSet,
    update_rev: &str,
    template: &PodTemplateSpec,
) -> Result<BTreeMap<String, PodTemplateSpec>, kube::Error> {
    let ns = set.namespace().unwrap_or_default();
    let uid = set.uid().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let owned: Vec<ControllerRevision> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| r.owner_references().iter().any(|o| o.uid == uid))
        .collect();
    let mut out = BTreeMap::new();
    let mut max_rev = 0;
    for r in &owned {
        max_rev = max_rev.max(r.revision);
        let t = r
            .data
            .as_ref()
            .and_then(|d| d.0.pointer("/spec/template").cloned())
            .and_then(|mut t| {
                if let Some(o) = t.as_object_mut() {
                    o.remove("$patch");
                }
                serde_json::from_value::<PodTemplateSpec>(t).ok()
            });
        if let Some(t) = t {
            out.insert(r.name_any(), t);
        }
    }
    let latest = owned
        .iter()
        .find(|r| r.name_any() == update_rev)
        .map(|r| r.revision);
    match latest {
        Some(n) if n == max_rev => {}
        Some(_) => {
            // Rolling back to an earlier template makes it the newest revision again.
            let _ = api
                .patch(
                    update_rev,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"revision": max_rev + 1})),
                )
                .await;
        }
        None => {
            let mut labels = set
                .spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.clone())
                .unwrap_or_default();
            labels.insert(
                "controller.kubernetes.io/hash".into(),
                update_rev.rsplit('-').next().unwrap_or_default().into(),
            );
            let mut t = serde_json::to_value(template).unwrap_or(Value::Null);
            t["$patch"] = json!("replace");
            let cr = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(update_rev.into()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    owner_references: Some(vec![owner(set)]),
                    ..ObjectMeta::default()
                },
                data: Some(RawExtension(json!({"spec": {"template": t}}))),
                revision: max_rev + 1,
            };
            match api.create(&PostParams::default(), &cr).await {
                Ok(_) => {}
                Err(e) if is_conflict(&e) => {}
                Err(e) => return Err(e),
            }
            out.insert(update_rev.into(), template.clone());
        }
    }
    Ok(out)
}

async fn write_status(
    ctx: &Ctx,
    v: &SetView<'_>,
    pods: &BTreeMap<i32, &Pod>,
) -> Result<(), kube::Error> {
    let (mut replicas, mut ready, mut current, mut updated) = (0, 0, 0, 0);
    for p in pods.values() {
        replicas += 1;
        if healthy(p) {
            ready += 1;
        }
        if !terminating(p) {
            if revision_of(p) == Some(v.current_rev.as_str()) {
                current += 1;
            }
            if revision_of(p) == Some(v.update_rev.as_str()) {
                updated += 1;
            }
        }
    }
    let mut current_rev = v.current_rev.clone();
    if v.rolling && updated == replicas && ready == replicas && replicas == v.replicas {
        current_rev = v.update_rev.clone();
        current = updated;
    }
    let status = json!({
        "observedGeneration": v.set.metadata.generation.unwrap_or(0),
        "replicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": current,
        "updatedReplicas": updated,
        "currentRevision": current_rev,
        "updateRevision": v.update_rev,
        "collisionCount": 0,
    });
    let old = v
        .set
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null);
    let same = status
        .as_object()
        .is_some_and(|m| m.iter().all(|(k, val)| old.get(k) == Some(val)));
    if same {
        return Ok(());
    }
    Api::<StatefulSet>::namespaced(ctx.client.clone(), &v.ns)
        .patch_status(
            &v.name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_come_from_the_set_name() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "web-x"), None);
        assert_eq!(ordinal("web", "webs-1"), None);
        assert_eq!(ordinal("web-a", "web-a-3"), Some(3));
    }

    #[test]
    fn a_changed_template_has_a_new_hash() {
        let a = PodTemplateSpec::default();
        let b = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                annotations: Some(BTreeMap::from([("k".into(), "v".into())])),
                ..ObjectMeta::default()
            }),
            ..PodTemplateSpec::default()
        };
        assert_eq!(template_hash(&a), template_hash(&a.clone()));
        assert_ne!(template_hash(&a), template_hash(&b));
    }
}
