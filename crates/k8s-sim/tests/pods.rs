//! The Job controller and the kubelet through the API: pods run for real in bubblewrap with
//! their claims on loop devices, termination messages collected, images that cannot be pulled,
//! and back-off limits.

mod cluster;

use cluster::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::Api;
use serde_json::json;

const DEVICE_TOOLS: &[&str] = &["root", "bwrap", "losetup"];

#[tokio::test]
async fn a_job_writes_its_device_and_a_snapshot_carries_the_bytes_to_a_new_claim() {
    if !require(
        "a_job_writes_its_device_and_a_snapshot_carries_the_bytes_to_a_new_claim",
        DEVICE_TOOLS,
    ) {
        return;
    }
    let sim = start(|_| {}).await;
    let c = &sim.client;
    claim(c, "default", "vol", "16Mi", "Block", None).await;
    wait_bound(c, "default", "vol").await;
    job(
        c,
        "default",
        "writer",
        "printf hello-from-a-pod | dd of=/dev/xvda bs=4096 seek=3 conv=notrunc 2>/dev/null && echo written > /dev/termination-log",
        Some("vol"),
        0,
    )
    .await;
    let (cond, pods) = wait_job(c, "default", "writer").await;
    assert_eq!(cond, "Complete", "{pods:?}");
    assert_eq!(pods.len(), 1);
    assert_eq!(termination_message(&pods[0]).as_deref(), Some("written\n"));
    assert_eq!(
        pods[0].status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded")
    );
    let labels = pods[0].metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("job-name").map(String::as_str), Some("writer"));
    assert_eq!(
        read_at(&sim.image_of("default", "vol").await, 3 * 4096, 16),
        b"hello-from-a-pod"
    );

    snapshot(c, "default", "vol-snap", "vol").await;
    claim(c, "default", "vol-copy", "16Mi", "Block", Some("vol-snap")).await;
    wait_bound(c, "default", "vol-copy").await;
    job(
        c,
        "default",
        "reader",
        "dd if=/dev/xvda bs=4096 skip=3 count=1 2>/dev/null | head -c 16 > /dev/termination-log",
        Some("vol-copy"),
        0,
    )
    .await;
    let (cond, pods) = wait_job(c, "default", "reader").await;
    assert_eq!(cond, "Complete", "{pods:?}");
    assert_eq!(
        termination_message(&pods[0]).as_deref(),
        Some("hello-from-a-pod")
    );
    // The loop devices went with the pods.
    let out = std::process::Command::new("losetup")
        .arg("-a")
        .output()
        .expect("losetup");
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        !list.contains(&sim.csi_dir().display().to_string()),
        "{list}"
    );
}

#[tokio::test]
async fn an_unknown_image_backs_off() {
    let sim = start(|_| {}).await;
    let c = &sim.client;
    let _: Pod = create(c, "default", json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nope"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "registry.example/nope:1"}]},
    }))
    .await;
    let api = Api::<Pod>::namespaced(c.clone(), "default");
    wait_for("ImagePullBackOff", || {
        let api = api.clone();
        async move {
            let p = api.get("nope").await.map_err(|e| e.to_string())?;
            let w = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.first())
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.clone());
            if w.as_deref() == Some("ImagePullBackOff") {
                Ok(())
            } else {
                Err(format!("{w:?}"))
            }
        }
    })
    .await;
    let msg = wait_event(c, "default", "nope", "Failed", "Failed to pull image").await;
    assert!(msg.contains("registry.example/nope:1"), "{msg}");
    let p = api.get("nope").await.expect("pod");
    assert_eq!(p.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
}

#[tokio::test]
async fn a_job_whose_pods_keep_failing_stops_at_its_backoff_limit() {
    if !require(
        "a_job_whose_pods_keep_failing_stops_at_its_backoff_limit",
        &["root", "bwrap"],
    ) {
        return;
    }
    let sim = start(|_| {}).await;
    let c = &sim.client;
    job(
        c,
        "default",
        "fails",
        "echo broken >&2; echo 'went wrong' > /dev/termination-log; exit 3",
        None,
        1,
    )
    .await;
    let (cond, pods) = wait_job(c, "default", "fails").await;
    assert_eq!(cond, "Failed");
    let j = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(c.clone(), "default")
        .get("fails")
        .await
        .expect("job");
    let st = j.status.expect("status");
    assert_eq!(st.failed, Some(2));
    let failed = st
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .expect("Failed");
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(pods.len(), 2);
    for p in &pods {
        assert_eq!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Failed")
        );
        let t = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c[0].state.clone())
            .and_then(|s| s.terminated)
            .expect("terminated");
        assert_eq!(
            (t.exit_code, t.reason.as_deref(), t.message.as_deref()),
            (3, Some("Error"), Some("went wrong\n"))
        );
    }
}

#[tokio::test]
async fn a_deleted_pod_gets_sigterm_and_its_job_counts_the_failure() {
    if !require(
        "a_deleted_pod_gets_sigterm_and_its_job_counts_the_failure",
        &["root", "bwrap"],
    ) {
        return;
    }
    let sim = start(|_| {}).await;
    let c = &sim.client;
    job(
        c,
        "default",
        "sleeper",
        "trap 'echo terminated > /dev/termination-log; exit 143' TERM; while :; do sleep 0.1; done",
        None,
        0,
    )
    .await;
    let pods = Api::<Pod>::namespaced(c.clone(), "default");
    let name = wait_for("the pod running", || {
        let pods = pods.clone();
        async move {
            let l = pods
                .list(&ListParams::default().labels("job-name=sleeper"))
                .await
                .map_err(|e| e.to_string())?;
            l.items
                .iter()
                .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .map(|p| p.metadata.name.clone().unwrap_or_default())
                .ok_or_else(|| format!("{} pods", l.items.len()))
        }
    })
    .await;
    pods.delete(&name, &Default::default())
        .await
        .expect("delete");
    let (cond, _) = wait_job(c, "default", "sleeper").await;
    assert_eq!(cond, "Failed");
    wait_event(c, "default", &name, "Killing", "Stopping container main").await;
}

/// A Job whose container mounts the Filesystem claim `claim` at `/data`.
async fn fs_job(c: &kube::Client, name: &str, claim: &str, script: &str) {
    let _: k8s_openapi::api::batch::v1::Job = create(
        c,
        "default",
        json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script],
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
            }}},
        }),
    )
    .await;
}

#[tokio::test]
async fn a_filesystem_claim_keeps_files_and_stays_while_a_finished_pod_uses_it() {
    if !require(
        "a_filesystem_claim_keeps_files_and_stays_while_a_finished_pod_uses_it",
        &["root", "bwrap", "losetup", "mkfs.ext4", "mount"],
    ) {
        return;
    }
    let sim = start(|_| {}).await;
    let c = &sim.client;
    claim(c, "default", "files", "16Mi", "Filesystem", None).await;
    wait_bound(c, "default", "files").await;
    fs_job(
        c,
        "put",
        "files",
        "echo to-the-log; echo hello > /data/greeting",
    )
    .await;
    let (cond, pods) = wait_job(c, "default", "put").await;
    assert_eq!(cond, "Complete", "{pods:?}");
    // pods/log comes from the kubelet's log of the container.
    let api = Api::<Pod>::namespaced(c.clone(), "default");
    let put_pod = pods[0].metadata.name.clone().unwrap_or_default();
    let log = api.logs(&put_pod, &Default::default()).await.expect("logs");
    assert_eq!(log, "to-the-log\n");
    fs_job(
        c,
        "get",
        "files",
        "cat /data/greeting > /dev/termination-log",
    )
    .await;
    let (cond, pods) = wait_job(c, "default", "get").await;
    assert_eq!(cond, "Complete", "{pods:?}");
    assert_eq!(termination_message(&pods[0]).as_deref(), Some("hello\n"));

    // pvc-protection: finished pods still hold the claim.
    let claims =
        Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(c.clone(), "default");
    claims
        .delete("files", &Default::default())
        .await
        .expect("delete");
    let held = claims.get("files").await.expect("still there");
    assert!(held.metadata.deletion_timestamp.is_some());
    for j in ["put", "get"] {
        let l = api
            .list(&ListParams::default().labels(&format!("job-name={j}")))
            .await
            .expect("pods");
        for p in l.items {
            api.delete(&p.metadata.name.unwrap_or_default(), &Default::default())
                .await
                .expect("delete pod");
        }
    }
    wait_for("the claim gone", || {
        let claims = claims.clone();
        async move {
            match claims.get_opt("files").await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(p) => Err(format!("finalizers {:?}", p.metadata.finalizers)),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_job_past_its_active_deadline_fails_and_its_pod_is_stopped() {
    if !require(
        "a_job_past_its_active_deadline_fails_and_its_pod_is_stopped",
        &["root", "bwrap"],
    ) {
        return;
    }
    let sim = start(|_| {}).await;
    let c = &sim.client;
    let _: k8s_openapi::api::batch::v1::Job = create(c, "default", json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "slow"},
        "spec": {"backoffLimit": 3, "activeDeadlineSeconds": 1, "template": {"spec": {
            "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "sleep 600"]}],
        }}},
    }))
    .await;
    let (cond, _) = wait_job(c, "default", "slow").await;
    assert_eq!(cond, "Failed");
    let j = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(c.clone(), "default")
        .get("slow")
        .await
        .expect("job");
    let failed = j
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .expect("Failed");
    assert_eq!(failed.reason.as_deref(), Some("DeadlineExceeded"));
    // The running pod was stopped, not left sleeping.
    let pods = Api::<Pod>::namespaced(c.clone(), "default");
    wait_for("the pod stopped", || {
        let pods = pods.clone();
        async move {
            let l = pods
                .list(&ListParams::default().labels("job-name=slow"))
                .await
                .map_err(|e| e.to_string())?;
            let running: Vec<_> = l
                .items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .collect();
            if running.is_empty() {
                Ok(())
            } else {
                Err(format!("{} running", running.len()))
            }
        }
    })
    .await;
}

/// A cluster shut down while a pod runs with a Block claim leaves neither the container's
/// processes nor its loop device behind (the kubelet kills the container's whole process
/// group, and the claim's attachment is released).
#[tokio::test]
async fn shutting_down_with_a_running_pod_leaves_no_process_or_loop_device() {
    if !require(
        "shutting_down_with_a_running_pod_leaves_no_process_or_loop_device",
        DEVICE_TOOLS,
    ) {
        return;
    }
    let sim = start(|_| {}).await;
    let c = &sim.client;
    claim(c, "default", "held", "8Mi", "Block", None).await;
    wait_bound(c, "default", "held").await;
    let image = sim.image_of("default", "held").await;
    let marker = format!("held-until-shutdown-{}", std::process::id());
    job(
        c,
        "default",
        "holder",
        &format!("while :; do sleep 0.1; done # {marker}"),
        Some("held"),
        0,
    )
    .await;
    let pods = Api::<Pod>::namespaced(c.clone(), "default");
    wait_for("the pod running", || {
        let pods = pods.clone();
        async move {
            let l = pods
                .list(&ListParams::default().labels("job-name=holder"))
                .await
                .map_err(|e| e.to_string())?;
            l.items
                .iter()
                .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .map(|_| ())
                .ok_or_else(|| format!("{} pods", l.items.len()))
        }
    })
    .await;
    let attached = || {
        let out = std::process::Command::new("losetup")
            .args(["-j"])
            .arg(&image)
            .output()
            .expect("losetup runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let running = || {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .any(|cmdline| String::from_utf8_lossy(&cmdline).contains(&marker))
    };
    assert!(
        !attached().is_empty(),
        "the claim is attached while the pod runs"
    );
    assert!(running(), "the container runs");

    sim.cluster.shutdown().await;
    let mut left = (attached(), running());
    for _ in 0..50 {
        if left.0.is_empty() && !left.1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = (attached(), running());
    }
    assert_eq!(left.0, "", "no loop device is left attached");
    assert!(!left.1, "no container process is left running");
}
