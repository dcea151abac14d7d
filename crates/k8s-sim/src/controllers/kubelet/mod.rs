//! The scheduler and one kubelet per simulated Node.
//!
//! The scheduler binds each pending pod (through the `pods/binding` subresource) to the Node
//! with the fewest pods once its claims are Bound, and says why not otherwise
//! (`FailedScheduling`), as kube-scheduler does. A kubelet registers its Node (Ready), and
//! runs its pods' containers as real processes ([`pod`]): images are looked up in
//! [`ControllerOptions::images`](crate::controllers::ControllerOptions::images), claims are
//! attached as loop devices, and a deleted pod's processes get SIGTERM, then SIGKILL after
//! the grace period.

pub mod command;
pub mod lifecycle;
pub mod pod;
pub mod rootfs;
pub mod sandbox;
pub mod staging;
pub mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::events::Kind;
use super::util::{self, is_conflict, is_not_found, now_rfc3339};
use super::Ctx;

/// Starts the scheduler and a kubelet per Node.
pub fn start(ctx: Ctx) -> Vec<JoinHandle<()>> {
    let mut hs = Vec::new();
    let notify = Arc::new(Notify::new());
    hs.push(util::watch_into(
        Api::<Pod>::all(ctx.client.clone()),
        notify.clone(),
    ));
    hs.push(util::watch_into(
        Api::<PersistentVolumeClaim>::all(ctx.client.clone()),
        notify.clone(),
    ));
    let sctx = ctx.clone();
    hs.push(util::reconcile_loop(
        "scheduler",
        notify.clone(),
        move || {
            let ctx = sctx.clone();
            async move { schedule(&ctx).await }
        },
    ));
    for node in ctx.opts.nodes.clone() {
        let n = node.clone();
        let c = ctx.clone();
        hs.push(tokio::spawn(async move { register_node(&c, &n).await }));
        let kubelet = Arc::new(Kubelet {
            ctx: ctx.clone(),
            node,
            workers: tokio::sync::Mutex::new(HashMap::new()),
        });
        let notify = Arc::new(Notify::new());
        hs.push(util::watch_into(
            Api::<Pod>::all(ctx.client.clone()),
            notify.clone(),
        ));
        hs.push(util::reconcile_loop("kubelet", notify, move || {
            let k = kubelet.clone();
            async move { k.sync().await }
        }));
    }
    hs
}

/// Registers the Node and keeps its Ready condition's heartbeat fresh.
async fn register_node(ctx: &Ctx, name: &str) {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".into(), name.into()),
                ("kubernetes.io/os".into(), "linux".into()),
                (
                    "kubernetes.io/arch".into(),
                    std::env::consts::ARCH
                        .replace("x86_64", "amd64")
                        .replace("aarch64", "arm64"),
                ),
            ])),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    loop {
        match api.create(&PostParams::default(), &node).await {
            Ok(_) => break,
            Err(e) if is_conflict(&e) => break,
            Err(e) => {
                tracing::debug!("cannot register node {name} yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    loop {
        let now = now_rfc3339();
        let cap = BTreeMap::from([
            ("cpu".to_string(), Quantity(cpus.to_string())),
            ("memory".to_string(), Quantity("8Gi".into())),
            ("pods".to_string(), Quantity("110".into())),
        ]);
        let status = json!({"status": {
            "capacity": cap, "allocatable": cap,
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
                 "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "message": "kubelet has sufficient memory available",
                 "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "message": "kubelet has no disk pressure",
                 "lastHeartbeatTime": now, "lastTransitionTime": now},
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
            "nodeInfo": {
                "architecture": std::env::consts::ARCH, "operatingSystem": "linux", "osImage": "s3mover simulated node",
                "kernelVersion": "", "kubeletVersion": "v1.34.0-sim", "kubeProxyVersion": "", "containerRuntimeVersion": "bubblewrap://",
                "machineID": "", "systemUUID": "", "bootID": "",
            },
        }});
        if let Err(e) = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
        {
            tracing::debug!("node {name} heartbeat: {e}");
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// The Nodes new pods may go to: not cordoned (`spec.unschedulable`, `kubectl cordon`).
async fn schedulable_nodes(ctx: &Ctx) -> Result<Vec<String>, kube::Error> {
    let cordoned: Vec<String> = Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|n| n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true))
        .map(|n| n.name_any())
        .collect();
    Ok(ctx
        .opts
        .nodes
        .iter()
        .filter(|n| !cordoned.contains(n))
        .cloned()
        .collect())
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// The StorageClass a claim names (empty: the default class's binding mode is looked up as
/// "Immediate").
fn class_of(c: &PersistentVolumeClaim) -> String {
    c.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

/// kube-scheduler, reduced to what these pods need: claims Bound, then the least busy Node.
async fn schedule(ctx: &Ctx) -> Result<(), kube::Error> {
    let pods = Api::<Pod>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let pvcs = Api::<PersistentVolumeClaim>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let classes: BTreeMap<String, String> = Api::<StorageClass>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|c| (c.name_any(), c.volume_binding_mode.unwrap_or_default()))
        .collect();
    let schedulable = schedulable_nodes(ctx).await?;
    for pod in pods
        .iter()
        .filter(|p| node_name(p).is_none() && p.metadata.deletion_timestamp.is_none())
    {
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let busy = |n: &str| pods.iter().filter(|p| node_name(p) == Some(n)).count();
        let unbound = super::provisioner::unbound_claims(pod, &pvcs);
        // WaitForFirstConsumer: the scheduler picks the node and tells the provisioner.
        let mut selected: Option<String> = None;
        for claim in pvcs
            .iter()
            .filter(|c| c.namespace().as_deref() == Some(&ns) && unbound.contains(&c.name_any()))
        {
            match claim.annotations().get(SELECTED_NODE) {
                Some(n) => selected = Some(n.clone()),
                None if classes.get(&class_of(claim)).map(String::as_str)
                    == Some("WaitForFirstConsumer") =>
                {
                    let Some(node) = schedulable.iter().min_by_key(|n| busy(n)) else {
                        continue;
                    };
                    let _ = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns)
                        .patch(
                            &claim.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(
                                json!({"metadata": {"annotations": {SELECTED_NODE: node}}}),
                            ),
                        )
                        .await;
                    selected = Some(node.clone());
                }
                None => {}
            }
        }
        let missing: Vec<&String> = unbound
            .iter()
            .filter(|n| {
                !pvcs
                    .iter()
                    .any(|c| c.namespace().as_deref() == Some(&ns) && &c.name_any() == *n)
            })
            .collect();
        if !unbound.is_empty() {
            let total = ctx.opts.nodes.len();
            let msg = match missing.first() {
                Some(n) => format!("0/{total} nodes are available: persistentvolumeclaim {n:?} not found. preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling."),
                None => format!("0/{total} nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling."),
            };
            let already = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.type_ == "PodScheduled" && c.message.as_deref() == Some(msg.as_str())
                    })
                });
            if !already {
                let _ = api
                    .patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(json!({"status": {
                        "phase": "Pending",
                        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg, "lastTransitionTime": now_rfc3339()}],
                    }})))
                    .await;
                ctx.events
                    .record(
                        pod,
                        Kind::Warning,
                        "FailedScheduling",
                        &msg,
                        "default-scheduler",
                    )
                    .await;
            }
            continue;
        }
        // A claim provisioned for a node keeps its pods there.
        let claimed: Vec<String> = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter_map(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .map(|c| c.claim_name.clone())
            })
            .collect();
        let node = match selected.or_else(|| {
            pvcs.iter()
                .filter(|c| {
                    c.namespace().as_deref() == Some(&ns) && claimed.contains(&c.name_any())
                })
                .find_map(|c| c.annotations().get(SELECTED_NODE).cloned())
                .filter(|n| ctx.opts.nodes.contains(n))
        }) {
            Some(n) => n,
            None => match schedulable.iter().min_by_key(|n| busy(n)) {
                Some(n) => n.clone(),
                None => continue,
            },
        };
        let node = &node;
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(pod.name_any()),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.clone()),
                ..ObjectReference::default()
            },
        };
        let bound: Result<serde_json::Value, kube::Error> = api
            .create_subresource("binding", &pod.name_any(), &PostParams::default(), &binding)
            .await;
        if let Err(e) = bound {
            if !matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 405) {
                tracing::debug!("cannot bind {}: {e}", pod.name_any());
                continue;
            }
            // An API server without pods/binding: set the node directly.
            if api
                .patch(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"nodeName": node}})),
                )
                .await
                .is_err()
            {
                continue;
            }
        }
        let _ = api
            .patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(json!({"status": {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339()}],
            }})))
            .await;
        ctx.events
            .record(
                pod,
                Kind::Normal,
                "Scheduled",
                &format!("Successfully assigned {ns}/{} to {node}", pod.name_any()),
                "default-scheduler",
            )
            .await;
    }
    Ok(())
}

/// A running pod worker: its kill switch (grace seconds) and task.
struct Worker {
    kill: watch::Sender<Option<i64>>,
    task: JoinHandle<()>,
}

/// One Node's kubelet.
struct Kubelet {
    ctx: Ctx,
    node: String,
    workers: tokio::sync::Mutex<HashMap<String, Worker>>,
}

fn grace(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30)
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl Kubelet {
    async fn sync(&self) -> Result<(), kube::Error> {
        // Finished workers are forgotten before the pods are listed, never after: a worker
        // that ends after the list was read would otherwise be gone while the list still shows
        // its pod running, and the pod would be started again.
        let mut workers = self.workers.lock().await;
        workers.retain(|_, w| !w.task.is_finished());
        let pods = Api::<Pod>::all(self.ctx.client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let mine: Vec<&Pod> = pods
            .iter()
            .filter(|p| node_name(p) == Some(self.node.as_str()))
            .collect();
        for pod in &mine {
            let uid = pod.uid().unwrap_or_default();
            let deleting = pod.metadata.deletion_timestamp.is_some();
            match workers.get(&uid) {
                Some(w) if deleting => {
                    let g = grace(pod);
                    if *w.kill.borrow() != Some(g) {
                        let _ = w.kill.send(Some(g));
                    }
                }
                Some(_) => {}
                None if deleting => {
                    // Nothing runs (never started or already finished): let it go.
                    self.final_delete(pod).await;
                }
                None if terminal(pod) => {}
                None => {
                    let (tx, rx) = watch::channel(None);
                    let ctx = self.ctx.clone();
                    let p = (*pod).clone();
                    let task = tokio::spawn(async move { pod::run(ctx, p, rx).await });
                    workers.insert(uid, Worker { kill: tx, task });
                }
            }
        }
        // Pods removed from the API without a grace period.
        for (uid, w) in workers.iter() {
            if !mine
                .iter()
                .any(|p| p.uid().as_deref() == Some(uid.as_str()))
                && w.kill.borrow().is_none()
            {
                let _ = w.kill.send(Some(0));
            }
        }
        Ok(())
    }

    /// The kubelet's last word on a deleted pod: delete it with grace 0.
    async fn final_delete(&self, pod: &Pod) {
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: pod.uid().map(|u| kube::api::Preconditions {
                uid: Some(u),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(e) = api.delete(&pod.name_any(), &dp).await {
            if !is_not_found(&e) {
                tracing::debug!("cannot delete pod {}: {e}", pod.name_any());
            }
        }
    }
}

/// Where the kubelet keeps a pod's files: tokens, secrets, mounts, termination messages, logs.
pub fn pod_dir(
    state_dir: &std::path::Path,
    namespace: &str,
    name: &str,
    uid: &str,
) -> std::path::PathBuf {
    state_dir
        .join("pods")
        .join(format!("{namespace}_{name}_{uid}"))
}
