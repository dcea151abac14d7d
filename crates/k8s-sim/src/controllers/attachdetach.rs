//! The attach/detach controller and the CSI attacher, as `storage.k8s.io/v1`
//! VolumeAttachments: a scheduled pod's CSI claims get a VolumeAttachment `csi-<sha256>` for
//! (volume, node), marked `attached` by the driver, and the kubelet waits for it before it
//! mounts ([`crate::controllers::kubelet`]). A volume whose pods on a node are all gone is
//! detached (the VolumeAttachment deleted). A ReadWriteOnce volume still attached to one node
//! is not attached to another: the pod that wants it gets kube-controller-manager's
//! `FailedAttachVolume` "Multi-Attach error" event until the old attachment is gone, which is
//! what a StatefulSet rollout that moves a pod sees when detaching is slow.
//!
//! Enabled by [`ControllerOptions::volume_attach`](super::ControllerOptions::volume_attach);
//! its [`AttachFaults`] can be changed while the cluster runs: slow or stuck detaches, slow
//! attaches, `ControllerPublishVolume` errors, a kubelet whose unmount hangs (pods stay
//! Terminating), and a driver that loses a volume's data when it detaches.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::events::Kind;
use super::util::{self, is_conflict, is_not_found, now_rfc3339};
use super::Ctx;

const COMPONENT: &str = "attachdetach-controller";

/// What the simulated attacher, driver and kubelets do wrong, changeable at run time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultSettings {
    /// How long an attach takes.
    pub attach_delay: Duration,
    /// How long a detach takes once the volume's last pod on the node is gone.
    pub detach_delay: Duration,
    /// Detaches never finish (the VolumeAttachment gets a `detachError`) until cleared.
    pub stuck_detach: bool,
    /// Attaches fail with this `ControllerPublishVolume` error, e.g.
    /// `rpc error: code = NotFound desc = [ControllerPublishVolume] Volume … not found`.
    pub attach_error: Option<String>,
    /// Kubelets cannot unmount a deleted pod's claims, so the pod stays Terminating until
    /// cleared.
    pub stuck_unmount: bool,
    /// The driver loses a volume's contents when it detaches it (a fresh, empty filesystem or
    /// zeroed device afterwards), as a volume recreated by hand does.
    pub lose_data_on_detach: bool,
}

/// A handle on the fault settings, shared by the controller, the kubelets and a test.
#[derive(Debug, Clone, Default)]
pub struct AttachFaults(Arc<Mutex<FaultSettings>>);

impl AttachFaults {
    /// The settings now.
    pub fn get(&self) -> FaultSettings {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes the settings.
    pub fn set(&self, f: impl FnOnce(&mut FaultSettings)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// The VolumeAttachment name for (volume handle, attacher, node), as the attach/detach
/// controller derives it: `csi-` and the SHA-256 of the three.
pub fn attachment_name(handle: &str, attacher: &str, node: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{handle}{attacher}{node}").as_bytes(),
    );
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("csi-{hex}")
}

#[derive(Default)]
struct Memory {
    /// (pv, node) → when its attach was asked for.
    attach_started: HashMap<(String, String), Instant>,
    /// VolumeAttachment name → when it stopped being wanted.
    unwanted_since: HashMap<String, Instant>,
    /// (pod uid, pv) → when a Multi-Attach error was last reported.
    reported: HashMap<(String, String), Instant>,
}

/// Starts the controller (nothing when VolumeAttachments are not simulated).
pub fn start(ctx: Ctx) -> Vec<JoinHandle<()>> {
    let Some(faults) = ctx.opts.volume_attach.clone() else {
        return Vec::new();
    };
    let notify = Arc::new(Notify::new());
    let c = &ctx.client;
    let mem = Arc::new(Mutex::new(Memory::default()));
    let n2 = notify.clone();
    vec![
        util::watch_into(Api::<Pod>::all(c.clone()), notify.clone()),
        util::watch_into(Api::<VolumeAttachment>::all(c.clone()), notify.clone()),
        // Timers (delays) are checked often, not only on changes.
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                n2.notify_one();
            }
        }),
        util::reconcile_loop(COMPONENT, notify, move || {
            let ctx = ctx.clone();
            let mem = mem.clone();
            let faults = faults.clone();
            async move { reconcile(&ctx, &mem, &faults.get()).await }
        }),
    ]
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The CSI PVs (name, handle, ReadWriteOnce) of a pod's claims.
fn pod_volumes<'a>(
    ctx: &Ctx,
    pod: &Pod,
    pvcs: &'a [PersistentVolumeClaim],
    pvs: &'a [PersistentVolume],
) -> Vec<&'a PersistentVolume> {
    let ns = pod.namespace().unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .filter_map(|c| {
            let pvc = pvcs.iter().find(|p| {
                p.namespace().as_deref() == Some(ns.as_str()) && p.name_any() == c.claim_name
            })?;
            let pv_name = pvc.spec.as_ref()?.volume_name.clone()?;
            pvs.iter().find(|pv| {
                pv.name_any() == pv_name
                    && pv
                        .spec
                        .as_ref()
                        .and_then(|s| s.csi.as_ref())
                        .is_some_and(|c| c.driver == ctx.opts.driver)
            })
        })
        .collect()
}

fn handle(pv: &PersistentVolume) -> String {
    pv.spec
        .as_ref()
        .and_then(|s| s.csi.as_ref())
        .map(|c| c.volume_handle.clone())
        .unwrap_or_default()
}

fn exclusive(pv: &PersistentVolume) -> bool {
    let modes = pv
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default();
    !modes
        .iter()
        .any(|m| m == "ReadWriteMany" || m == "ReadOnlyMany")
}

fn va_pv(va: &VolumeAttachment) -> &str {
    va.spec
        .source
        .persistent_volume_name
        .as_deref()
        .unwrap_or_default()
}

async fn reconcile(
    ctx: &Ctx,
    mem: &Mutex<Memory>,
    faults: &FaultSettings,
) -> Result<(), kube::Error> {
    let c = &ctx.client;
    let pods = Api::<Pod>::all(c.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let pvcs = Api::<PersistentVolumeClaim>::all(c.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let pvs = Api::<PersistentVolume>::all(c.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let va_api: Api<VolumeAttachment> = Api::all(c.clone());
    let vas = va_api.list(&ListParams::default()).await?.items;

    // (pv, node) → the pods that need it there.
    let mut wanted: BTreeMap<(String, String), (Vec<&Pod>, &PersistentVolume)> = BTreeMap::new();
    // A deleted pod keeps its volumes until the kubelet has unmounted them and removed it (the
    // controller waits for the node to report them unused); a finished one lets them go.
    for pod in pods
        .iter()
        .filter(|p| !terminal(p) || p.metadata.deletion_timestamp.is_some())
    {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        for pv in pod_volumes(ctx, pod, &pvcs, &pvs) {
            wanted
                .entry((pv.name_any(), node.clone()))
                .or_insert_with(|| (Vec::new(), pv))
                .0
                .push(pod);
        }
    }

    // Attach.
    for ((pv_name, node), (users, pv)) in &wanted {
        let name = attachment_name(&handle(pv), &ctx.opts.driver, node);
        let existing = vas.iter().find(|v| v.name_any() == name);
        let elsewhere: Vec<&VolumeAttachment> = vas
            .iter()
            .filter(|v| va_pv(v) == pv_name && v.spec.node_name != *node)
            .collect();
        if existing.is_none() && exclusive(pv) && !elsewhere.is_empty() {
            let holders: Vec<String> = elsewhere
                .iter()
                .flat_map(|v| {
                    wanted
                        .get(&(pv_name.clone(), v.spec.node_name.clone()))
                        .map(|(ps, _)| ps.iter().map(|p| p.name_any()).collect::<Vec<_>>())
                        .unwrap_or_default()
                })
                .collect();
            for pod in users {
                let key = (pod.uid().unwrap_or_default(), pv_name.clone());
                let due = {
                    let mut m = mem.lock().unwrap_or_else(|p| p.into_inner());
                    let due = m
                        .reported
                        .get(&key)
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
                    if due {
                        m.reported.insert(key, Instant::now());
                    }
                    due
                };
                if due {
                    let msg = if holders.is_empty() {
                        format!("Multi-Attach error for volume {pv_name:?} Volume is already exclusively attached to one node and can't be attached to another")
                    } else {
                        format!(
                            "Multi-Attach error for volume {pv_name:?} Volume is already used by pod(s) {}",
                            holders.join(", ")
                        )
                    };
                    ctx.events
                        .record(*pod, Kind::Warning, "FailedAttachVolume", &msg, COMPONENT)
                        .await;
                }
            }
            continue;
        }
        let attached = existing.is_some_and(|v| v.status.as_ref().is_some_and(|s| s.attached));
        if attached {
            continue;
        }
        if existing.is_none() {
            let va: VolumeAttachment = serde_json::from_value(json!({
                "apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
                "metadata": {"name": name},
                "spec": {"attacher": ctx.opts.driver, "nodeName": node,
                         "source": {"persistentVolumeName": pv_name}},
            }))
            .map_err(kube::Error::SerdeError)?;
            match va_api.create(&PostParams::default(), &va).await {
                Ok(_) => {}
                Err(e) if is_conflict(&e) => {}
                Err(e) => return Err(e),
            }
        }
        let started = *mem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .attach_started
            .entry((pv_name.clone(), node.clone()))
            .or_insert_with(Instant::now);
        if started.elapsed() < faults.attach_delay {
            continue;
        }
        if let Some(err) = &faults.attach_error {
            let already = existing
                .and_then(|v| v.status.as_ref())
                .and_then(|s| s.attach_error.as_ref())
                .is_some();
            if !already {
                let _ = va_api
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {
                            "attached": false,
                            "attachError": {"time": now_rfc3339(), "message": err},
                        }})),
                    )
                    .await;
                for pod in users {
                    ctx.events
                        .record(
                            *pod,
                            Kind::Warning,
                            "FailedAttachVolume",
                            &format!("AttachVolume.Attach failed for volume {pv_name:?} : {err}"),
                            COMPONENT,
                        )
                        .await;
                }
            }
            continue;
        }
        va_api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"attached": true, "attachError": null}})),
            )
            .await?;
        mem.lock()
            .unwrap_or_else(|p| p.into_inner())
            .attach_started
            .remove(&(pv_name.clone(), node.clone()));
        for pod in users {
            ctx.events
                .record(
                    *pod,
                    Kind::Normal,
                    "SuccessfulAttachVolume",
                    &format!("AttachVolume.Attach succeeded for volume {pv_name:?} "),
                    COMPONENT,
                )
                .await;
        }
    }

    // Detach what no pod needs any more.
    for va in &vas {
        let key = (va_pv(va).to_string(), va.spec.node_name.clone());
        let name = va.name_any();
        if wanted.contains_key(&key) {
            mem.lock()
                .unwrap_or_else(|p| p.into_inner())
                .unwanted_since
                .remove(&name);
            continue;
        }
        let since = *mem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwanted_since
            .entry(name.clone())
            .or_insert_with(Instant::now);
        if faults.stuck_detach {
            let noted = va
                .status
                .as_ref()
                .and_then(|s| s.detach_error.as_ref())
                .is_some();
            if !noted {
                let _ = va_api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {
                        "detachError": {"time": now_rfc3339(), "message": "rpc error: code = DeadlineExceeded desc = context deadline exceeded"},
                    }})))
                    .await;
            }
            continue;
        }
        if since.elapsed() < faults.detach_delay {
            continue;
        }
        if faults.lose_data_on_detach {
            lose_data(ctx, &pvs, &key.0);
        }
        match va_api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
        let mut m = mem.lock().unwrap_or_else(|p| p.into_inner());
        m.unwanted_since.remove(&name);
        m.attach_started.remove(&key);
    }
    Ok(())
}

/// The driver's data-loss fault: the volume's image replaced by an empty one of the same size
/// (formatted again when it held a filesystem).
fn lose_data(ctx: &Ctx, pvs: &[PersistentVolume], pv_name: &str) {
    let Some(pv) = pvs.iter().find(|p| p.name_any() == pv_name) else {
        return;
    };
    let id = handle(pv);
    let path = ctx.storage.volume_path(&id);
    let Ok(size) = std::fs::metadata(&path).map(|m| m.len()) else {
        return;
    };
    let filesystem = pv.spec.as_ref().and_then(|s| s.volume_mode.as_deref()) != Some("Block");
    if let Err(e) = ctx
        .storage
        .delete_volume(&id)
        .and_then(|_| ctx.storage.create_volume(&id, size, filesystem, None))
    {
        tracing::warn!("cannot replace volume {id}: {e}");
    }
}

/// Whether every CSI claim of `pod` is attached to its node (always, when VolumeAttachments
/// are not simulated).
pub async fn pod_attached(ctx: &Ctx, pod: &Pod) -> Result<bool, kube::Error> {
    if ctx.opts.volume_attach.is_none() {
        return Ok(true);
    }
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        return Ok(false);
    };
    let c = &ctx.client;
    let ns = pod.namespace().unwrap_or_default();
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(c.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items;
    let pvs = Api::<PersistentVolume>::all(c.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let vas: Api<VolumeAttachment> = Api::all(c.clone());
    for pv in pod_volumes(ctx, pod, &pvcs, &pvs) {
        let name = attachment_name(&handle(pv), &ctx.opts.driver, &node);
        let ok = vas
            .get_opt(&name)
            .await?
            .and_then(|v| v.status)
            .is_some_and(|s| s.attached);
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_names_are_stable_and_per_node() {
        let a = attachment_name("pvc-1", "hostpath.csi.k8s.io", "n1");
        assert!(a.starts_with("csi-") && a.len() == 4 + 64, "{a}");
        assert_eq!(a, attachment_name("pvc-1", "hostpath.csi.k8s.io", "n1"));
        assert_ne!(a, attachment_name("pvc-1", "hostpath.csi.k8s.io", "n2"));
    }

    #[test]
    fn fault_settings_change_through_any_handle() {
        let f = AttachFaults::default();
        let g = f.clone();
        g.set(|s| s.stuck_detach = true);
        assert!(f.get().stuck_detach);
    }
}
