//! The snapshot controller (common-controller of external-snapshotter) and the CSI driver's
//! snapshotter sidecar: a VolumeSnapshot of a claim gets a VolumeSnapshotContent
//! (`snapcontent-<uid>`, `spec.sourceVolumeMode` from the volume), the driver copies the
//! volume's image, and the content's `snapshotHandle`, `restoreSize` and `readyToUse` flow back
//! into the snapshot's status. Pre-provisioned contents (`spec.source.snapshotHandle`) bind to
//! the snapshot they name. Deletion follows `deletionPolicy`. Failures are written to
//! `status.error` with an Event, as the real controllers do.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Api, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::events::{dyn_reference, Kind};
use super::util::{self, b, dyn_all, dyn_ns, finalizers_patch, is_conflict, now_rfc3339, s};
use super::Ctx;

/// The default-class annotation of VolumeSnapshotClasses.
pub const DEFAULT_SNAPSHOT_CLASS: &str = "snapshot.storage.kubernetes.io/is-default-class";
const VS_BOUND_PROTECTION: &str = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";
const VS_SOURCE_PROTECTION: &str =
    "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection";
const VSC_BOUND_PROTECTION: &str =
    "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";
const BEING_DELETED: &str = "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted";
const CONTROLLER: &str = "snapshot-controller";
const SIDECAR: &str = "csi-snapshotter";
const API_VERSION: &str = "snapshot.storage.k8s.io/v1";

/// Starts the snapshot controller and the driver's snapshotter.
pub fn start(ctx: Ctx) -> Vec<JoinHandle<()>> {
    let notify = Arc::new(Notify::new());
    let c = &ctx.client;
    let mut hs = vec![
        util::watch_into(dyn_all(c, "VolumeSnapshot"), notify.clone()),
        util::watch_into(dyn_all(c, "VolumeSnapshotContent"), notify.clone()),
        util::watch_into(Api::<PersistentVolumeClaim>::all(c.clone()), notify.clone()),
    ];
    let ctx2 = ctx.clone();
    hs.push(tokio::spawn(async move {
        if ctx2.opts.install_classes {
            install_class(&ctx2).await;
        }
    }));
    hs.push(util::reconcile_loop(
        "snapshot-controller",
        notify,
        move || {
            let ctx = ctx.clone();
            async move { reconcile(&ctx).await }
        },
    ));
    hs
}

fn resource(kind: &str) -> ApiResource {
    util::snapshot_resource(kind)
}

async fn install_class(ctx: &Ctx) {
    let api = dyn_all(&ctx.client, "VolumeSnapshotClass");
    let mut obj = DynamicObject::new("csi-hostpath-snapclass", &resource("VolumeSnapshotClass"));
    obj.metadata.annotations = Some(BTreeMap::from([(
        DEFAULT_SNAPSHOT_CLASS.into(),
        "true".into(),
    )]));
    obj.data = json!({"driver": ctx.opts.driver, "deletionPolicy": "Delete"});
    for _ in 0..100 {
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => return,
            Err(e) if is_conflict(&e) => return,
            Err(e) => {
                tracing::debug!("cannot create the VolumeSnapshotClass yet: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
}

async fn reconcile(ctx: &Ctx) -> Result<(), kube::Error> {
    let c = &ctx.client;
    let lp = ListParams::default();
    let snaps = dyn_all(c, "VolumeSnapshot").list(&lp).await?.items;
    let contents = dyn_all(c, "VolumeSnapshotContent").list(&lp).await?.items;
    let classes = dyn_all(c, "VolumeSnapshotClass").list(&lp).await?.items;
    let pvcs = Api::<PersistentVolumeClaim>::all(c.clone())
        .list(&lp)
        .await?
        .items;
    for vs in &snaps {
        sync_snapshot(ctx, vs, &contents, &classes, &pvcs).await;
    }
    for vsc in &contents {
        sync_content(ctx, vsc, &snaps).await;
    }
    Ok(())
}

async fn patch_status(api: &Api<DynamicObject>, name: &str, status: Value) {
    if let Err(e) = api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
    {
        tracing::debug!("cannot update the status of {name}: {e}");
    }
}

async fn set_finalizers(api: &Api<DynamicObject>, obj: &DynamicObject, fins: Vec<String>) {
    if fins.as_slice() != obj.finalizers() {
        let _ = api
            .patch(
                &obj.name_any(),
                &PatchParams::default(),
                &Patch::Merge(finalizers_patch(&fins)),
            )
            .await;
    }
}

/// Bytes as a Kubernetes quantity, the way the controller writes `restoreSize` on a snapshot.
fn quantity(bytes: u64) -> String {
    for (suffix, unit) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

async fn snapshot_error(
    ctx: &Ctx,
    api: &Api<DynamicObject>,
    vs: &DynamicObject,
    reason: &str,
    msg: String,
) {
    if s(&vs.data, "/status/error/message") != Some(msg.as_str()) {
        patch_status(
            api,
            &vs.name_any(),
            json!({"readyToUse": false, "error": {"message": msg, "time": now_rfc3339()}}),
        )
        .await;
    }
    ctx.events
        .record_ref(
            dyn_reference(vs, API_VERSION, "VolumeSnapshot"),
            Kind::Warning,
            reason,
            &msg,
            CONTROLLER,
        )
        .await;
}

async fn sync_snapshot(
    ctx: &Ctx,
    vs: &DynamicObject,
    contents: &[DynamicObject],
    classes: &[DynamicObject],
    pvcs: &[PersistentVolumeClaim],
) {
    let ns = vs.namespace().unwrap_or_default();
    let name = vs.name_any();
    let api = dyn_ns(&ctx.client, "VolumeSnapshot", Some(&ns));
    let bound = s(&vs.data, "/status/boundVolumeSnapshotContentName").map(String::from);
    let content = bound
        .as_deref()
        .and_then(|b| contents.iter().find(|c| c.name_any() == b));

    if vs.metadata.deletion_timestamp.is_some() {
        let in_use = pvcs.iter().any(|p| {
            p.namespace().as_deref() == Some(&ns)
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound")
                && p.metadata.deletion_timestamp.is_none()
                && p.spec
                    .as_ref()
                    .and_then(|s| s.data_source.as_ref())
                    .is_some_and(|d| d.kind == "VolumeSnapshot" && d.name == name)
        });
        let mut fins: Vec<String> = vs.finalizers().to_vec();
        if !in_use {
            fins.retain(|f| f != VS_SOURCE_PROTECTION);
        }
        match content {
            Some(c) if s(&c.data, "/spec/deletionPolicy") == Some("Delete") => {
                let capi = dyn_all(&ctx.client, "VolumeSnapshotContent");
                if c.metadata.deletion_timestamp.is_none() && !in_use {
                    let _ = capi
                        .patch(
                            &c.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(
                                json!({"metadata": {"annotations": {BEING_DELETED: "yes"}}}),
                            ),
                        )
                        .await;
                    let _ = capi.delete(&c.name_any(), &DeleteParams::default()).await;
                }
            }
            _ => fins.retain(|f| f != VS_BOUND_PROTECTION),
        }
        set_finalizers(&api, vs, fins).await;
        return;
    }

    let Some(content) = content else {
        if let Some(b) = bound {
            // The content is gone (deleted by hand): the snapshot is lost.
            if s(&vs.data, "/status/error/message").is_none() {
                snapshot_error(
                    ctx,
                    &api,
                    vs,
                    "SnapshotContentMissing",
                    format!("VolumeSnapshotContent {b} is missing"),
                )
                .await;
            }
            return;
        }
        bind_new(ctx, &api, vs, contents, classes, pvcs).await;
        return;
    };

    // Bound: keep the snapshot's status in step with its content.
    let mut fins: Vec<String> = vs.finalizers().to_vec();
    for f in [VS_BOUND_PROTECTION, VS_SOURCE_PROTECTION] {
        if !fins.iter().any(|x| x == f) {
            fins.push(f.into());
        }
    }
    set_finalizers(&api, vs, fins).await;
    let ready = b(&content.data, "/status/readyToUse");
    let mut status = json!({
        "boundVolumeSnapshotContentName": content.name_any(),
        "readyToUse": ready,
    });
    if let Some(rs) = content
        .data
        .pointer("/status/restoreSize")
        .and_then(Value::as_u64)
    {
        status["restoreSize"] = json!(quantity(rs));
    }
    if let Some(ns_time) = content
        .data
        .pointer("/status/creationTime")
        .and_then(Value::as_i64)
    {
        if let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(ns_time as i128) {
            if let Ok(t) = t.replace_nanosecond(0) {
                status["creationTime"] = json!(t
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default());
            }
        }
    }
    if let Some(err) = content.data.pointer("/status/error") {
        status["error"] = err.clone();
    } else if vs.data.pointer("/status/error").is_some() {
        status["error"] = Value::Null;
    }
    let changed = [
        "readyToUse",
        "restoreSize",
        "boundVolumeSnapshotContentName",
        "creationTime",
        "error",
    ]
    .iter()
    .any(|k| vs.data.pointer(&format!("/status/{k}")) != status.get(*k).filter(|v| !v.is_null()));
    if changed {
        let was_ready = b(&vs.data, "/status/readyToUse");
        patch_status(&api, &name, status).await;
        if ready && !was_ready {
            ctx.events
                .record_ref(
                    dyn_reference(vs, API_VERSION, "VolumeSnapshot"),
                    Kind::Normal,
                    "SnapshotReady",
                    &format!("Snapshot {ns}/{name} is ready to use."),
                    CONTROLLER,
                )
                .await;
        }
    }
}

/// An unbound snapshot: bind it to the pre-provisioned content it names, or create a content
/// for the claim it names.
async fn bind_new(
    ctx: &Ctx,
    api: &Api<DynamicObject>,
    vs: &DynamicObject,
    contents: &[DynamicObject],
    classes: &[DynamicObject],
    pvcs: &[PersistentVolumeClaim],
) {
    let ns = vs.namespace().unwrap_or_default();
    let name = vs.name_any();
    let capi = dyn_all(&ctx.client, "VolumeSnapshotContent");
    if let Some(cname) = s(&vs.data, "/spec/source/volumeSnapshotContentName") {
        let Some(c) = contents.iter().find(|c| c.name_any() == cname) else {
            snapshot_error(
                ctx,
                api,
                vs,
                "SnapshotContentMissing",
                format!("VolumeSnapshotContent {cname} is missing"),
            )
            .await;
            return;
        };
        let refers = s(&c.data, "/spec/volumeSnapshotRef/name") == Some(name.as_str())
            && s(&c.data, "/spec/volumeSnapshotRef/namespace") == Some(ns.as_str());
        if !refers {
            snapshot_error(
                ctx,
                api,
                vs,
                "SnapshotBindFailed",
                format!("Snapshot failed to bind VolumeSnapshotContent, VolumeSnapshotContent {cname} is bound to a different snapshot"),
            )
            .await;
            return;
        }
        let _ = capi
            .patch(
                cname,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"volumeSnapshotRef": {"uid": vs.uid()}}})),
            )
            .await;
        patch_status(
            api,
            &name,
            json!({"boundVolumeSnapshotContentName": cname, "readyToUse": false}),
        )
        .await;
        return;
    }
    let Some(claim) = s(&vs.data, "/spec/source/persistentVolumeClaimName") else {
        snapshot_error(
            ctx,
            api,
            vs,
            "SnapshotValidationError",
            "Exactly one of PersistentVolumeClaimName and VolumeSnapshotContentName should be specified".into(),
        )
        .await;
        return;
    };
    let Some(pvc) = pvcs
        .iter()
        .find(|p| p.namespace().as_deref() == Some(&ns) && p.name_any() == claim)
    else {
        snapshot_error(
            ctx,
            api,
            vs,
            "SnapshotCreationFailed",
            format!("Failed to create snapshot: error getting PVC {claim}: persistentvolumeclaims \"{claim}\" not found"),
        )
        .await;
        return;
    };
    let Some(pv_name) = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|_| pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
    else {
        // The controller waits for the claim to bind, retrying.
        ctx.events
            .record_ref(
                dyn_reference(vs, API_VERSION, "VolumeSnapshot"),
                Kind::Warning,
                "SnapshotContentCreationFailed",
                &format!("Failed to create snapshot content with error the PVC {claim} is not yet bound to a PV, will not attempt to take a snapshot"),
                CONTROLLER,
            )
            .await;
        return;
    };
    let pv = match Api::<PersistentVolume>::all(ctx.client.clone())
        .get_opt(&pv_name)
        .await
    {
        Ok(Some(pv)) => pv,
        _ => return,
    };
    let Some(csi) = pv.spec.as_ref().and_then(|s| s.csi.clone()) else {
        snapshot_error(
            ctx,
            api,
            vs,
            "SnapshotContentCreationFailed",
            format!("Failed to create snapshot content with error cannot find CSI PersistentVolumeSource for volume {pv_name}"),
        )
        .await;
        return;
    };
    let class = match s(&vs.data, "/spec/volumeSnapshotClassName") {
        Some(n) => classes.iter().find(|c| c.name_any() == n),
        None => {
            let defaults: Vec<&DynamicObject> = classes
                .iter()
                .filter(|c| {
                    s(&c.data, "/driver") == Some(csi.driver.as_str())
                        && c.annotations()
                            .get(DEFAULT_SNAPSHOT_CLASS)
                            .is_some_and(|v| v == "true")
                })
                .collect();
            if defaults.len() > 1 {
                snapshot_error(
                    ctx,
                    api,
                    vs,
                    "SnapshotCreationFailed",
                    format!("Failed to create snapshot: error getting default snapshot class: {} default snapshot classes were found", defaults.len()),
                )
                .await;
                return;
            }
            defaults.first().copied()
        }
    };
    let Some(class) = class else {
        let msg = match s(&vs.data, "/spec/volumeSnapshotClassName") {
            Some(n) => format!("Failed to get snapshot class with error volumesnapshotclass.snapshot.storage.k8s.io \"{n}\" not found"),
            None => "Failed to create snapshot: error getting default snapshot class: cannot find default snapshot class".into(),
        };
        snapshot_error(ctx, api, vs, "SnapshotCreationFailed", msg).await;
        return;
    };
    let uid = vs.uid().unwrap_or_default();
    let cname = format!("snapcontent-{uid}");
    let mut c = DynamicObject::new(&cname, &resource("VolumeSnapshotContent"));
    c.metadata.finalizers = Some(vec![VSC_BOUND_PROTECTION.into()]);
    c.data = json!({"spec": {
        "volumeSnapshotRef": {"kind": "VolumeSnapshot", "apiVersion": API_VERSION, "namespace": ns, "name": name, "uid": uid, "resourceVersion": vs.resource_version()},
        "source": {"volumeHandle": csi.volume_handle},
        "driver": csi.driver,
        "deletionPolicy": s(&class.data, "/deletionPolicy").unwrap_or("Delete"),
        "volumeSnapshotClassName": class.name_any(),
        "sourceVolumeMode": pv.spec.as_ref().and_then(|s| s.volume_mode.clone()).unwrap_or_else(|| "Filesystem".into()),
    }});
    match capi.create(&PostParams::default(), &c).await {
        Ok(_) => {}
        Err(e) if is_conflict(&e) => {}
        Err(e) => {
            tracing::debug!("cannot create {cname}: {e}");
            return;
        }
    }
    let mut fins: Vec<String> = vs.finalizers().to_vec();
    for f in [VS_BOUND_PROTECTION, VS_SOURCE_PROTECTION] {
        if !fins.iter().any(|x| x == f) {
            fins.push(f.into());
        }
    }
    set_finalizers(api, vs, fins).await;
    patch_status(
        api,
        &name,
        json!({"boundVolumeSnapshotContentName": cname, "readyToUse": false}),
    )
    .await;
    ctx.events
        .record_ref(
            dyn_reference(vs, API_VERSION, "VolumeSnapshot"),
            Kind::Normal,
            "CreatingSnapshot",
            &format!("Waiting for a snapshot {ns}/{name} to be created by the CSI driver."),
            CONTROLLER,
        )
        .await;
}

/// The snapshotter sidecar: cut the snapshot of a dynamic content, check a pre-provisioned one,
/// delete the driver's snapshot when a content with policy Delete goes, and delete contents
/// whose snapshot is gone.
async fn sync_content(ctx: &Ctx, vsc: &DynamicObject, snaps: &[DynamicObject]) {
    let name = vsc.name_any();
    let api = dyn_all(&ctx.client, "VolumeSnapshotContent");
    if s(&vsc.data, "/spec/driver") != Some(ctx.opts.driver.as_str()) {
        return;
    }
    let handle = s(&vsc.data, "/status/snapshotHandle")
        .or_else(|| s(&vsc.data, "/spec/source/snapshotHandle"))
        .map(String::from);
    if vsc.metadata.deletion_timestamp.is_some() {
        if s(&vsc.data, "/spec/deletionPolicy") == Some("Delete") {
            if let Some(h) = &handle {
                if let Err(e) = ctx.storage.delete_snapshot(h) {
                    patch_status(&api, &name, json!({"error": {"message": format!("Failed to delete snapshot: {e}"), "time": now_rfc3339()}})).await;
                    return;
                }
            }
        }
        let fins: Vec<String> = vsc
            .finalizers()
            .iter()
            .filter(|f| *f != VSC_BOUND_PROTECTION)
            .cloned()
            .collect();
        set_finalizers(&api, vsc, fins).await;
        return;
    }
    let ref_ns = s(&vsc.data, "/spec/volumeSnapshotRef/namespace").unwrap_or_default();
    let ref_name = s(&vsc.data, "/spec/volumeSnapshotRef/name").unwrap_or_default();
    let ref_uid = s(&vsc.data, "/spec/volumeSnapshotRef/uid");
    let snapshot = snaps
        .iter()
        .find(|v| v.namespace().as_deref() == Some(ref_ns) && v.name_any() == ref_name);
    let snapshot_gone = match (ref_uid, snapshot) {
        (Some(u), Some(v)) => v.uid().as_deref() != Some(u),
        (Some(_), None) => true,
        (None, _) => false,
    };
    if snapshot_gone {
        if s(&vsc.data, "/spec/deletionPolicy") == Some("Delete") {
            let _ = api.delete(&name, &DeleteParams::default()).await;
        }
        return;
    }
    if b(&vsc.data, "/status/readyToUse") || vsc.data.pointer("/status/error").is_some() {
        return;
    }
    let vs_ref = snapshot.map(|v| dyn_reference(v, API_VERSION, "VolumeSnapshot"));
    if let Some(pre) = s(&vsc.data, "/spec/source/snapshotHandle") {
        // Pre-provisioned: ListSnapshots by id.
        match ctx.storage.snapshot(pre) {
            Some(info) => {
                patch_status(&api, &name, json!({
                    "snapshotHandle": pre, "readyToUse": true, "restoreSize": info.size_bytes,
                    "creationTime": info.creation_time_ns,
                }))
                .await
            }
            None => {
                patch_status(&api, &name, json!({"readyToUse": false, "error": {
                    "message": format!("failed to check and update snapshot content: failed to list snapshot for content {name}: \"rpc error: code = NotFound desc = snapshot {pre} not found\""),
                    "time": now_rfc3339(),
                }}))
                .await
            }
        }
        return;
    }
    if ctx.opts.snapshots_never_ready {
        return;
    }
    let Some(volume) = s(&vsc.data, "/spec/source/volumeHandle").map(String::from) else {
        return;
    };
    let id = format!(
        "snap-{}",
        vsc.uid().unwrap_or_else(|| util::random_suffix(16))
    );
    let storage = ctx.storage.clone();
    let vol = volume.clone();
    let id2 = id.clone();
    let cut = tokio::task::spawn_blocking(move || storage.create_snapshot(&vol, &id2)).await;
    match cut {
        Ok(Ok(info)) => {
            patch_status(
                &api,
                &name,
                json!({
                    "snapshotHandle": id, "readyToUse": true, "restoreSize": info.size_bytes,
                    "creationTime": info.creation_time_ns,
                }),
            )
            .await;
            if let Some(r) = vs_ref {
                ctx.events
                    .record_ref(
                        r,
                        Kind::Normal,
                        "SnapshotCreated",
                        &format!("Snapshot {ref_ns}/{ref_name} was successfully created by the CSI driver."),
                        SIDECAR,
                    )
                    .await;
            }
        }
        result => {
            let why = match result {
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
                Ok(Ok(_)) => String::new(),
            };
            let msg = format!("Failed to check and update snapshot content: failed to take snapshot of the volume {volume}: \"rpc error: code = Internal desc = {why}\"");
            patch_status(
                &api,
                &name,
                json!({"readyToUse": false, "error": {"message": msg, "time": now_rfc3339()}}),
            )
            .await;
            if let Some(r) = vs_ref {
                ctx.events
                    .record_ref(r, Kind::Warning, "SnapshotCreationFailed", &msg, SIDECAR)
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_sizes_read_like_kubectl_shows_them() {
        assert_eq!(quantity(1 << 30), "1Gi");
        assert_eq!(quantity(10 << 20), "10Mi");
        assert_eq!(quantity(4097), "4097");
        assert_eq!(quantity(0), "0");
    }
}
