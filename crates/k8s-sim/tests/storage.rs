//! The CSI provisioner, PV binder and snapshot controller through the API, as a user sees
//! them: claims provisioned and Bound, snapshots ready with their content, claims from
//! snapshots, and external-provisioner's refusals with their events.

mod cluster;

use cluster::*;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

#[tokio::test]
async fn a_block_claim_is_provisioned_and_bound() {
    let sim = start(|_| {}).await;
    let c = &sim.client;
    claim(c, "default", "data", "16Mi", "Block", None).await;
    let pvc = wait_bound(c, "default", "data").await;
    let pv_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .expect("volumeName");
    let pv = Api::<PersistentVolume>::all(c.clone())
        .get(&pv_name)
        .await
        .expect("PV");
    let spec = pv.spec.expect("spec");
    assert_eq!(spec.volume_mode.as_deref(), Some("Block"));
    assert_eq!(spec.claim_ref.and_then(|r| r.name).as_deref(), Some("data"));
    assert_eq!(
        spec.csi.map(|c| c.driver).as_deref(),
        Some("hostpath.csi.k8s.io")
    );
    assert_eq!(pv.status.and_then(|s| s.phase).as_deref(), Some("Bound"));
    let image = sim.image_of("default", "data").await;
    assert_eq!(
        std::fs::metadata(&image).expect("image file").len(),
        16 << 20
    );
    wait_event(c, "default", "data", "ProvisioningSucceeded", &pv_name).await;
}

#[tokio::test]
async fn a_released_volume_with_policy_delete_loses_its_image() {
    let sim = start(|_| {}).await;
    let c = &sim.client;
    claim(c, "default", "gone", "4Mi", "Block", None).await;
    wait_bound(c, "default", "gone").await;
    let image = sim.image_of("default", "gone").await;
    assert!(image.exists());
    Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(c.clone(), "default")
        .delete("gone", &Default::default())
        .await
        .expect("delete");
    wait_for("the image removed", || {
        let image = image.clone();
        async move {
            if image.exists() {
                Err("still there".to_string())
            } else {
                Ok(())
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_claim_from_a_snapshot_has_the_snapshots_bytes() {
    let sim = start(|_| {}).await;
    let c = &sim.client;
    claim(c, "default", "src", "8Mi", "Block", None).await;
    wait_bound(c, "default", "src").await;
    let image = sim.image_of("default", "src").await;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .expect("image");
        f.write_all_at(b"before-snapshot", 4096 * 7).expect("write");
    }
    let vs = snapshot(c, "default", "snap", "src").await;
    assert_eq!(vs.data.pointer("/status/restoreSize"), Some(&json!("8Mi")));
    let content_name = vs
        .data
        .pointer("/status/boundVolumeSnapshotContentName")
        .and_then(|v| v.as_str())
        .expect("bound")
        .to_string();
    let content = content_api(c).get(&content_name).await.expect("content");
    assert_eq!(
        content.data.pointer("/spec/sourceVolumeMode"),
        Some(&json!("Block"))
    );
    assert_eq!(
        content.data.pointer("/status/restoreSize"),
        Some(&json!(8 << 20))
    );
    assert!(content.data.pointer("/status/snapshotHandle").is_some());
    wait_event(
        c,
        "default",
        "snap",
        "SnapshotCreated",
        "successfully created",
    )
    .await;
    // A later write to the source does not reach the snapshot.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .expect("image");
        f.write_all_at(b"after--snapshot", 4096 * 7).expect("write");
    }
    claim(c, "default", "copy", "8Mi", "Block", Some("snap")).await;
    wait_bound(c, "default", "copy").await;
    let copy = sim.image_of("default", "copy").await;
    assert_eq!(read_at(&copy, 4096 * 7, 15), b"before-snapshot");

    // Deleting the snapshot (policy Delete) removes the content and the driver's copy.
    let handle = content
        .data
        .pointer("/status/snapshotHandle")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let snap_file = sim
        .csi_dir()
        .join("snapshots")
        .join(format!("{handle}.snap"));
    assert!(snap_file.exists());
    snapshot_api(c, "default")
        .delete("snap", &Default::default())
        .await
        .expect("delete");
    wait_for("the snapshot's image removed", || {
        let f = snap_file.clone();
        async move {
            if f.exists() {
                Err("still there".to_string())
            } else {
                Ok(())
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_claim_smaller_than_the_snapshot_stays_pending() {
    let sim = start(|_| {}).await;
    let c = &sim.client;
    claim(c, "default", "big", "16Mi", "Block", None).await;
    wait_bound(c, "default", "big").await;
    snapshot(c, "default", "big-snap", "big").await;
    claim(c, "default", "small", "8Mi", "Block", Some("big-snap")).await;
    let msg = wait_event(
        c,
        "default",
        "small",
        "ProvisioningFailed",
        "less than the size",
    )
    .await;
    assert!(
        msg.contains("requested volume size 8388608 is less than the size 16777216 for the source snapshot big-snap"),
        "{msg}"
    );
    let pvc =
        Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(c.clone(), "default")
            .get("small")
            .await
            .expect("claim");
    assert_eq!(pvc.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
}

#[tokio::test]
async fn a_block_claim_from_a_filesystem_snapshot_needs_the_annotation() {
    if !require(
        "a_block_claim_from_a_filesystem_snapshot_needs_the_annotation",
        &["mkfs.ext4"],
    ) {
        return;
    }
    let sim = start(|_| {}).await;
    let c = &sim.client;
    claim(c, "default", "fs", "8Mi", "Filesystem", None).await;
    wait_bound(c, "default", "fs").await;
    // mkfs.ext4 made a filesystem: its superblock magic is at byte 1080.
    assert_eq!(
        read_at(&sim.image_of("default", "fs").await, 1080, 2),
        [0x53, 0xef]
    );
    let vs = snapshot(c, "default", "fs-snap", "fs").await;
    let content_name = vs
        .data
        .pointer("/status/boundVolumeSnapshotContentName")
        .and_then(|v| v.as_str())
        .expect("bound")
        .to_string();
    claim(c, "default", "raw", "8Mi", "Block", Some("fs-snap")).await;
    let msg = wait_event(
        c,
        "default",
        "raw",
        "ProvisioningFailed",
        "does not have permission",
    )
    .await;
    assert!(
        msg.contains("snapshot.storage.kubernetes.io/allow-volume-mode-change annotation is not present on snapshotcontent"),
        "{msg}"
    );
    content_api(c)
        .patch(
            &content_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"snapshot.storage.kubernetes.io/allow-volume-mode-change": "true"}}})),
        )
        .await
        .expect("annotate");
    wait_bound(c, "default", "raw").await;
    assert_eq!(
        read_at(&sim.image_of("default", "raw").await, 1080, 2),
        [0x53, 0xef]
    );
}

#[tokio::test]
async fn a_snapshot_that_never_becomes_ready() {
    let sim = start(|o| o.snapshots_never_ready = true).await;
    let c = &sim.client;
    claim(c, "default", "slow", "4Mi", "Block", None).await;
    wait_bound(c, "default", "slow").await;
    let api = snapshot_api(c, "default");
    let mut vs = kube::api::DynamicObject::new("stuck", &api_resource_vs());
    vs.data = json!({"spec": {"source": {"persistentVolumeClaimName": "slow"}}});
    api.create(&Default::default(), &vs).await.expect("created");
    // Bound to a content, but never ready.
    let v = wait_for("the snapshot bound", || {
        let api = api.clone();
        async move {
            let v = api.get("stuck").await.map_err(|e| e.to_string())?;
            if v.data
                .pointer("/status/boundVolumeSnapshotContentName")
                .is_some()
            {
                Ok(v)
            } else {
                Err(format!("{:?}", v.data.get("status")))
            }
        }
    })
    .await;
    assert_eq!(v.data.pointer("/status/readyToUse"), Some(&json!(false)));
    wait_event(
        c,
        "default",
        "stuck",
        "CreatingSnapshot",
        "Waiting for a snapshot",
    )
    .await;
}

#[tokio::test]
async fn a_wait_for_first_consumer_claim_binds_when_a_pod_is_scheduled() {
    let sim = start(|_| {}).await;
    let c = &sim.client;
    let sc: k8s_openapi::api::storage::v1::StorageClass = serde_json::from_value(json!({
        "metadata": {"name": "late"}, "provisioner": "hostpath.csi.k8s.io",
        "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete",
    }))
    .expect("class");
    Api::<k8s_openapi::api::storage::v1::StorageClass>::all(c.clone())
        .create(&Default::default(), &sc)
        .await
        .expect("created");
    let _: k8s_openapi::api::core::v1::PersistentVolumeClaim = create(c, "default", json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "later"},
        "spec": {"storageClassName": "late", "accessModes": ["ReadWriteOnce"], "volumeMode": "Block",
                 "resources": {"requests": {"storage": "4Mi"}}},
    }))
    .await;
    // No consumer yet: nothing is provisioned.
    let claim_now =
        Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(c.clone(), "default")
            .get("later")
            .await
            .expect("claim");
    assert!(claim_now.spec.and_then(|s| s.volume_name).is_none());
    let _: k8s_openapi::api::core::v1::Pod = create(c, "default", json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "consumer"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox", "command": ["true"],
                 "volumeDevices": [{"name": "d", "devicePath": "/dev/xvda"}]}],
                 "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "later"}}]},
    }))
    .await;
    let pvc = wait_bound(c, "default", "later").await;
    let selected = pvc
        .metadata
        .annotations
        .unwrap_or_default()
        .get("volume.kubernetes.io/selected-node")
        .cloned();
    assert_eq!(selected.as_deref(), Some("sim-node-1"));
    let pod = wait_for("the consumer scheduled", || async {
        let p = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(c.clone(), "default")
            .get("consumer")
            .await
            .map_err(|e| e.to_string())?;
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    assert_eq!(pod, "sim-node-1");
}
