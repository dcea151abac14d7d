//! The CSI provisioner (external-provisioner in front of the driver) and the PV binder of
//! kube-controller-manager. (The pvc-protection and pv-protection controllers run inside the
//! API server, see `crate::gc`.)
//!
//! Faithful where it is inconvenient: a claim from a snapshot whose `restoreSize` is larger stays
//! Pending with a `ProvisioningFailed` event; a claim whose volume mode differs from the
//! snapshot content's `sourceVolumeMode` is refused unless the content carries
//! `snapshot.storage.kubernetes.io/allow-volume-mode-change: "true"`; a released volume with
//! reclaim policy Delete is deleted with its image.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::events::{Kind, Recorder};
use super::util::{self, dyn_ns, finalizers_patch, is_conflict};
use super::Ctx;

/// Finalizer external-provisioner keeps on the volumes it must delete.
pub const PROVISIONER_FINALIZER: &str = "external-provisioner.volume.kubernetes.io/finalizer";
/// The content annotation that allows a claim of another volume mode.
pub const ALLOW_VOLUME_MODE_CHANGE: &str =
    "snapshot.storage.kubernetes.io/allow-volume-mode-change";
const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const PROVISIONER_COMPONENT: &str = "external-provisioner";
const BINDER_COMPONENT: &str = "persistentvolume-controller";

/// Starts the provisioner and the claim controllers.
pub fn start(ctx: Ctx) -> Vec<JoinHandle<()>> {
    let notify = Arc::new(Notify::new());
    let c = &ctx.client;
    let mut hs = vec![
        util::watch_into(Api::<PersistentVolumeClaim>::all(c.clone()), notify.clone()),
        util::watch_into(Api::<PersistentVolume>::all(c.clone()), notify.clone()),
        util::watch_into(util::dyn_all(c, "VolumeSnapshot"), notify.clone()),
    ];
    let ctx2 = ctx.clone();
    hs.push(tokio::spawn(async move {
        if ctx2.opts.install_classes {
            install_storage_class(&ctx2).await;
        }
    }));
    hs.push(util::reconcile_loop("provisioner", notify, move || {
        let ctx = ctx.clone();
        async move { reconcile(&ctx).await }
    }));
    hs
}

async fn install_storage_class(ctx: &Ctx) {
    let api: Api<StorageClass> = Api::all(ctx.client.clone());
    let sc = StorageClass {
        metadata: ObjectMeta {
            name: Some("csi-hostpath-sc".into()),
            annotations: Some(BTreeMap::from([(DEFAULT_CLASS.into(), "true".into())])),
            ..ObjectMeta::default()
        },
        provisioner: ctx.opts.driver.clone(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("Immediate".into()),
        allow_volume_expansion: Some(true),
        ..StorageClass::default()
    };
    for _ in 0..100 {
        match api.create(&PostParams::default(), &sc).await {
            Ok(_) => return,
            Err(e) if is_conflict(&e) => return,
            Err(e) => {
                tracing::debug!("cannot create the StorageClass yet: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
}

/// Bytes in a Kubernetes quantity (`1Gi`, `500M`, `1048576`, `1e3`).
pub fn parse_quantity(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let mult: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    let n: f64 = num.parse().ok()?;
    Some((n * mult).ceil() as u64)
}

fn requested_bytes(pvc: &PersistentVolumeClaim) -> Option<u64> {
    pvc.spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .and_then(|q| parse_quantity(&q.0))
}

fn volume_mode(pvc: &PersistentVolumeClaim) -> String {
    pvc.spec
        .as_ref()
        .and_then(|s| s.volume_mode.clone())
        .unwrap_or_else(|| "Filesystem".into())
}

async fn reconcile(ctx: &Ctx) -> Result<(), kube::Error> {
    let c = &ctx.client;
    let pvcs = Api::<PersistentVolumeClaim>::all(c.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let pvs = Api::<PersistentVolume>::all(c.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let classes = Api::<StorageClass>::all(c.clone())
        .list(&ListParams::default())
        .await?
        .items;

    for pvc in &pvcs {
        let ns = pvc.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), &ns);
        let name = pvc.name_any();
        // The API server's pvc-protection controller looks after deleted claims.
        if pvc.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let bound_name = pvc.spec.as_ref().and_then(|s| s.volume_name.clone());
        let phase = pvc.status.as_ref().and_then(|s| s.phase.clone());
        match bound_name {
            Some(vn) => {
                if phase.as_deref() != Some("Bound") {
                    if let Some(pv) = pvs.iter().find(|p| p.name_any() == vn) {
                        bind(ctx, pvc, pv).await;
                    }
                }
            }
            None => {
                // A volume already provisioned for this claim (claimRef set by the provisioner).
                if let Some(pv) = pvs.iter().find(|p| {
                    p.spec
                        .as_ref()
                        .and_then(|s| s.claim_ref.as_ref())
                        .is_some_and(|r| {
                            r.namespace.as_deref() == Some(&ns)
                                && r.name.as_deref() == Some(&name)
                                && r.uid.as_ref().is_none_or(|u| Some(u) == pvc.uid().as_ref())
                        })
                }) {
                    bind(ctx, pvc, pv).await;
                } else {
                    provision(ctx, pvc, &classes).await;
                }
            }
        }
        if phase.is_none() {
            let _ = api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"phase": "Pending"}})),
                )
                .await;
        }
    }

    for pv in &pvs {
        reconcile_pv(ctx, pv, &pvcs).await;
    }
    Ok(())
}

/// The binder: claim ⇄ volume, both Bound.
async fn bind(ctx: &Ctx, pvc: &PersistentVolumeClaim, pv: &PersistentVolume) {
    let ns = pvc.namespace().unwrap_or_default();
    let name = pvc.name_any();
    let pv_name = pv.name_any();
    let pv_api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let spec = pv.spec.clone().unwrap_or_default();
    // A pre-bound claim may only take a free volume or one reserved for it.
    if let Some(r) = &spec.claim_ref {
        let ours = r.namespace.as_deref() == Some(&ns)
            && r.name.as_deref() == Some(&name)
            && r.uid.as_ref().is_none_or(|u| Some(u) == pvc.uid().as_ref());
        if !ours {
            return;
        }
    }
    let claim_ref = json!({
        "kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": ns, "name": name,
        "uid": pvc.uid(), "resourceVersion": pvc.resource_version(),
    });
    if pv_api
        .patch(
            &pv_name,
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"annotations": {"pv.kubernetes.io/bound-by-controller": "yes"}},
                "spec": {"claimRef": claim_ref},
            })),
        )
        .await
        .is_err()
    {
        return;
    }
    let _ = pv_api
        .patch_status(
            &pv_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Bound"}})),
        )
        .await;
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let r = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"annotations": {
                    "pv.kubernetes.io/bind-completed": "yes",
                    "pv.kubernetes.io/bound-by-controller": "yes",
                }},
                "spec": {"volumeName": pv_name},
            })),
        )
        .await;
    if r.is_err() {
        return;
    }
    let _ = api
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "phase": "Bound",
                "accessModes": spec.access_modes,
                "capacity": spec.capacity,
            }})),
        )
        .await;
}

fn class_for<'a>(
    pvc: &PersistentVolumeClaim,
    classes: &'a [StorageClass],
) -> Option<&'a StorageClass> {
    match pvc
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
    {
        Some("") => None,
        Some(n) => classes.iter().find(|c| c.name_any() == n),
        None => classes.iter().find(|c| {
            c.annotations()
                .get(DEFAULT_CLASS)
                .is_some_and(|v| v == "true")
        }),
    }
}

/// The PV controller's events for a claim with no class to provision it: a named class that
/// does not exist, or no class at all and no default one.
async fn report_no_class(ctx: &Ctx, pvc: &PersistentVolumeClaim) {
    let named = pvc
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .filter(|n| !n.is_empty());
    let (reason, message) = match named {
        Some(name) => (
            "ProvisioningFailed",
            format!("storageclass.storage.k8s.io {name:?} not found"),
        ),
        None => (
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set".into(),
        ),
    };
    ctx.events
        .record(pvc, Kind::Warning, reason, &message, BINDER_COMPONENT)
        .await;
}

/// The PV controller's event for a claim whose class names a provisioner other than the
/// simulated driver: it waits for that provisioner, which never comes.
async fn report_external_provisioner(ctx: &Ctx, pvc: &PersistentVolumeClaim, provisioner: &str) {
    let message = format!(
        "Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."
    );
    ctx.events
        .record(
            pvc,
            Kind::Normal,
            "ExternalProvisioning",
            &message,
            BINDER_COMPONENT,
        )
        .await;
}

/// What the claim's `dataSource` gives the new volume.
struct Source {
    snapshot_handle: String,
    restore_size: Option<u64>,
}

/// external-provisioner's checks on a VolumeSnapshot data source, with its messages.
async fn snapshot_source(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    vs_name: &str,
) -> Result<Source, String> {
    let ns = pvc.namespace().unwrap_or_default();
    let vs = dyn_ns(&ctx.client, "VolumeSnapshot", Some(&ns))
        .get_opt(vs_name)
        .await
        .map_err(|e| format!("error getting handle for DataSource Type VolumeSnapshot by Name {vs_name}: {e}"))?
        .ok_or_else(|| format!(
            "error getting handle for DataSource Type VolumeSnapshot by Name {vs_name}: error getting snapshot {vs_name} from api server: volumesnapshots.snapshot.storage.k8s.io \"{vs_name}\" not found"
        ))?;
    if vs.metadata.deletion_timestamp.is_some() {
        return Err(format!(
            "error getting handle for DataSource Type VolumeSnapshot by Name {vs_name}: snapshot {vs_name} is currently being deleted"
        ));
    }
    if !util::b(&vs.data, "/status/readyToUse") {
        return Err(format!(
            "error getting handle for DataSource Type VolumeSnapshot by Name {vs_name}: snapshot {vs_name} is not Ready"
        ));
    }
    let content_name = util::s(&vs.data, "/status/boundVolumeSnapshotContentName").ok_or_else(|| {
        format!("error getting handle for DataSource Type VolumeSnapshot by Name {vs_name}: snapshot {vs_name} not bound")
    })?;
    let vsc = dyn_ns(&ctx.client, "VolumeSnapshotContent", None)
        .get_opt(content_name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!(
            "error getting handle for DataSource Type VolumeSnapshot by Name {vs_name}: error getting snapshotcontent {content_name} for snapshot {ns}/{vs_name} from api server: volumesnapshotcontents.snapshot.storage.k8s.io \"{content_name}\" not found"
        ))?;
    if util::s(&vsc.data, "/spec/driver") != Some(ctx.opts.driver.as_str()) {
        return Err(format!(
            "error getting handle for DataSource Type VolumeSnapshot by Name {vs_name}: snapshot {content_name} is not created by the driver {}",
            ctx.opts.driver
        ));
    }
    let want = volume_mode(pvc);
    if let Some(source_mode) = util::s(&vsc.data, "/spec/sourceVolumeMode") {
        if source_mode != want {
            let allowed = vsc
                .annotations()
                .get(ALLOW_VOLUME_MODE_CHANGE)
                .and_then(|v| util::parse_bool(v))
                .unwrap_or(false);
            if !allowed {
                return Err(format!(
                    "requested volume {ns}/{} modifies the mode of the source volume but does not have permission to do so. {ALLOW_VOLUME_MODE_CHANGE} annotation is not present on snapshotcontent {content_name}",
                    pvc.name_any()
                ));
            }
        }
    }
    let handle = util::s(&vsc.data, "/status/snapshotHandle")
        .ok_or_else(|| format!("snapshot handle is not set for snapshotcontent {content_name}"))?;
    let restore_size = vsc
        .data
        .pointer("/status/restoreSize")
        .and_then(|v| v.as_u64());
    Ok(Source {
        snapshot_handle: handle.into(),
        restore_size,
    })
}

async fn provision(ctx: &Ctx, pvc: &PersistentVolumeClaim, classes: &[StorageClass]) {
    let Some(class) = class_for(pvc, classes) else {
        report_no_class(ctx, pvc).await;
        return;
    };
    if class.provisioner != ctx.opts.driver {
        report_external_provisioner(ctx, pvc, &class.provisioner).await;
        return;
    }
    let ns = pvc.namespace().unwrap_or_default();
    let name = pvc.name_any();
    let class_name = class.name_any();
    if class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
        && !pvc.annotations().contains_key(SELECTED_NODE)
    {
        return;
    }
    let Some(uid) = pvc.uid() else { return };
    let pv_name = format!("pvc-{uid}");
    let pv_api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    if let Ok(Some(_)) = pv_api.get_opt(&pv_name).await {
        return;
    }
    let rec: &Recorder = &ctx.events;
    let fail = |msg: String| async move {
        rec.record(
            pvc,
            Kind::Warning,
            "ProvisioningFailed",
            &format!("failed to provision volume with StorageClass {class_name:?}: {msg}"),
            PROVISIONER_COMPONENT,
        )
        .await
    };
    rec.record(
        pvc,
        Kind::Normal,
        "Provisioning",
        &format!("External provisioner is provisioning volume for claim \"{ns}/{name}\""),
        PROVISIONER_COMPONENT,
    )
    .await;
    let Some(size) = requested_bytes(pvc) else {
        fail("claim Spec.Resources.Requests[storage] is missing or not a quantity".into()).await;
        return;
    };
    let mode = volume_mode(pvc);
    let data_source = pvc.spec.as_ref().and_then(|s| s.data_source.clone());
    let mut from = None;
    if let Some(ds) = data_source {
        if ds.kind == "VolumeSnapshot" && ds.api_group.as_deref() == Some("snapshot.storage.k8s.io")
        {
            match snapshot_source(ctx, pvc, &ds.name).await {
                Ok(src) => {
                    if let Some(rs) = src.restore_size {
                        if size < rs {
                            fail(format!(
                                "requested volume size {size} is less than the size {rs} for the source snapshot {}",
                                ds.name
                            ))
                            .await;
                            return;
                        }
                    }
                    from = Some(src.snapshot_handle);
                }
                Err(msg) => {
                    fail(msg).await;
                    return;
                }
            }
        } else if ds.kind != "PersistentVolumeClaim" {
            // Populators' kinds are someone else's.
            return;
        }
    }
    let storage = ctx.storage.clone();
    let id = pv_name.clone();
    let fs = mode == "Filesystem";
    let from2 = from.clone();
    let made =
        tokio::task::spawn_blocking(move || storage.create_volume(&id, size, fs, from2.as_deref()))
            .await;
    match made {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            fail(format!("rpc error: code = Internal desc = {e}")).await;
            return;
        }
        Err(e) => {
            fail(e.to_string()).await;
            return;
        }
    }
    let spec = pvc.spec.clone().unwrap_or_default();
    let pv = PersistentVolume {
        metadata: ObjectMeta {
            name: Some(pv_name.clone()),
            annotations: Some(BTreeMap::from([
                (
                    "pv.kubernetes.io/provisioned-by".into(),
                    ctx.opts.driver.clone(),
                ),
                (
                    "volume.kubernetes.io/provisioner-deletion-secret-name".into(),
                    String::new(),
                ),
                (
                    "volume.kubernetes.io/provisioner-deletion-secret-namespace".into(),
                    String::new(),
                ),
            ])),
            finalizers: Some(vec![PROVISIONER_FINALIZER.into()]),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: spec.access_modes.clone(),
            capacity: Some(BTreeMap::from([(
                "storage".into(),
                Quantity(size.to_string()),
            )])),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                uid: Some(uid.clone()),
                resource_version: pvc.resource_version(),
                field_path: None,
            }),
            csi: Some(CSIPersistentVolumeSource {
                driver: ctx.opts.driver.clone(),
                volume_handle: pv_name.clone(),
                fs_type: fs.then(|| "ext4".into()),
                volume_attributes: Some(BTreeMap::from([(
                    "storage.kubernetes.io/csiProvisionerIdentity".into(),
                    format!("{}-sim", ctx.opts.driver),
                )])),
                ..CSIPersistentVolumeSource::default()
            }),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            storage_class_name: Some(class.name_any()),
            volume_mode: Some(mode),
            mount_options: class.mount_options.clone(),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    };
    match pv_api.create(&PostParams::default(), &pv).await {
        Ok(_) => {
            ctx.events
                .record(
                    pvc,
                    Kind::Normal,
                    "ProvisioningSucceeded",
                    &format!("Successfully provisioned volume {pv_name}"),
                    PROVISIONER_COMPONENT,
                )
                .await;
        }
        Err(e) if is_conflict(&e) => {}
        Err(e) => tracing::debug!("cannot create PV {pv_name}: {e}"),
    }
}

/// A volume whose claim is gone is Released, then deleted with its image under reclaim policy
/// Delete; pv-protection lets a deleted volume go once nothing is bound to it.
async fn reconcile_pv(ctx: &Ctx, pv: &PersistentVolume, pvcs: &[PersistentVolumeClaim]) {
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let name = pv.name_any();
    let spec = pv.spec.clone().unwrap_or_default();
    let phase = pv.status.as_ref().and_then(|s| s.phase.clone());
    let claim = spec.claim_ref.as_ref().and_then(|r| {
        pvcs.iter().find(|c| {
            c.namespace() == r.namespace
                && Some(c.name_any()) == r.name
                && (r.uid.is_none() || c.uid() == r.uid)
        })
    });
    let ours = spec
        .csi
        .as_ref()
        .is_some_and(|c| c.driver == ctx.opts.driver);
    if pv.metadata.deletion_timestamp.is_some() {
        let mut fins: Vec<String> = pv.finalizers().to_vec();
        let before = fins.len();
        if ours && fins.iter().any(|f| f == PROVISIONER_FINALIZER) {
            let handle = spec
                .csi
                .as_ref()
                .map(|c| c.volume_handle.clone())
                .unwrap_or_default();
            if spec.persistent_volume_reclaim_policy.as_deref() == Some("Delete")
                && ctx.storage.delete_volume(&handle).is_err()
            {
                return;
            }
            fins.retain(|f| f != PROVISIONER_FINALIZER);
        }
        if fins.len() != before {
            let _ = api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(finalizers_patch(&fins)),
                )
                .await;
        }
        return;
    }
    let want = match (&spec.claim_ref, claim) {
        (None, _) => "Available",
        (Some(_), Some(c))
            if c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(name.as_str()) =>
        {
            "Bound"
        }
        (Some(r), None) if r.uid.is_some() => "Released",
        (Some(_), _) => phase.as_deref().unwrap_or("Available"),
    };
    if phase.as_deref() != Some(want) {
        let _ = api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": want}})),
            )
            .await;
        if want == "Released" {
            ctx.events
                .record(
                    pv,
                    Kind::Normal,
                    "VolumeReleased",
                    "the claim of this volume was deleted",
                    BINDER_COMPONENT,
                )
                .await;
        }
    }
    if want == "Released" && spec.persistent_volume_reclaim_policy.as_deref() == Some("Delete") {
        // The binder hands the volume to its provisioner, which deletes it.
        let _ = api.delete(&name, &DeleteParams::default()).await;
    }
}

/// Claims named by the pods, for the scheduler: those missing or not Bound.
pub fn unbound_claims(pod: &Pod, pvcs: &[PersistentVolumeClaim]) -> Vec<String> {
    let ns = pod.namespace().unwrap_or_default();
    let names: HashSet<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str())
        })
        .collect();
    names
        .into_iter()
        .filter(|n| {
            !pvcs.iter().any(|c| {
                c.namespace().as_deref() == Some(&ns)
                    && c.name_any() == *n
                    && c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
            })
        })
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("10Mi"), Some(10 << 20));
        assert_eq!(parse_quantity("500M"), Some(500_000_000));
        assert_eq!(parse_quantity("4096"), Some(4096));
        assert_eq!(parse_quantity("1e3"), Some(1000));
        assert_eq!(parse_quantity("1.5Ki"), Some(1536));
        assert_eq!(parse_quantity("12X"), None);
        assert_eq!(parse_quantity(""), None);
    }
}
