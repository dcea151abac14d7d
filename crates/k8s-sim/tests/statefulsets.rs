//! The StatefulSet controller, VolumeAttachments and pod termination through the real
//! `kubectl`: ordered creation (OrderedReady waits for each pod, Parallel does not),
//! `kubectl rollout status` and `kubectl rollout restart`, a partitioned update, ControllerRevisions;
//! a pod moved to another node while its volume is still attached to the old one (Multi-Attach
//! until the slow detach finishes), a pod kept Terminating by a hung unmount, and preStop hooks
//! (one that runs before SIGTERM, one that kills the container's main process and is killed
//! with it: FailedPreStopHook, exit 137).

mod cluster;
mod sim_api;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cluster::*;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use s3mover_k8s_sim::controllers::attachdetach::AttachFaults;
use s3mover_k8s_sim::{SimCluster, SimOptions};
use sim_api::{kubectl_ok, kubectl_or_skip};

const NEEDS: &[&str] = &["root", "bwrap", "losetup", "mount", "mkfs.ext4"];

struct Rig {
    sim: SimCluster,
    client: Client,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    faults: AttachFaults,
    _dir: tempfile::TempDir,
}

async fn rig(test: &str, nodes: &[&str]) -> Option<Rig> {
    if !require(test, NEEDS) {
        return None;
    }
    let k = kubectl_or_skip(test)?;
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut opts = SimOptions::new(dir.path());
    opts.nodes = nodes.iter().map(|n| n.to_string()).collect();
    let faults = AttachFaults::default();
    let mut c = images();
    c.volume_attach = Some(faults.clone());
    opts.controllers = c;
    let sim = SimCluster::start(opts).await.expect("cluster starts");
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, "default")
        .expect("kubeconfig");
    Some(Rig {
        client: sim.client(),
        sim,
        kubeconfig,
        kubectl: k,
        faults,
        _dir: dir,
    })
}

/// A StatefulSet `web` of `replicas` busybox pods, each with a 16Mi claim at /data where the
/// main process writes its pid (`$$$$`: Kubernetes turns `$$` into `$` in commands).
fn web(replicas: i32, policy: &str, image: &str, grace: i64, pre_stop: Option<&str>) -> String {
    let hook = match pre_stop {
        Some(cmd) => format!(
            "\n        lifecycle:\n          preStop:\n            exec:\n              command: [\"/bin/sh\", \"-c\", {cmd:?}]"
        ),
        None => String::new(),
    };
    format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  replicas: {replicas}
  podManagementPolicy: {policy}
  serviceName: web
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      terminationGracePeriodSeconds: {grace}
      containers:
      - name: app
        image: {image}
        command: ["/bin/sh", "-c", "echo $$$$ > /data/pid; trap 'exit 0' TERM; while true; do sleep 0.1; done"]
        volumeMounts:
        - name: data
          mountPath: /data{hook}
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: ["ReadWriteOnce"]
      resources:
        requests:
          storage: 16Mi
"#
    )
}

impl Rig {
    fn apply(&self, yaml: &str) {
        let f = self.kubeconfig.with_extension("yaml");
        std::fs::write(&f, yaml).expect("manifest written");
        kubectl_ok(
            &self.kubectl,
            &self.kubeconfig,
            &["apply", "-f", f.to_str().unwrap_or_default()],
        );
    }

    async fn kubectl(&self, args: &[&str]) -> String {
        let (k, kc) = (self.kubectl.clone(), self.kubeconfig.clone());
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            kubectl_ok(&k, &kc, &a)
        })
        .await
        .expect("kubectl ran")
    }

    async fn pods(&self) -> Vec<Pod> {
        Api::<Pod>::namespaced(self.client.clone(), "default")
            .list(&ListParams::default().labels("app=web"))
            .await
            .expect("pods")
            .items
    }

    async fn pod(&self, name: &str) -> Option<Pod> {
        Api::<Pod>::namespaced(self.client.clone(), "default")
            .get_opt(name)
            .await
            .expect("pod")
    }
}

fn revision(p: &Pod) -> String {
    p.labels()
        .get("controller-revision-hash")
        .cloned()
        .unwrap_or_default()
}

fn node(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_status_and_restart_drive_an_ordered_rolling_update() {
    let Some(r) = rig(
        "kubectl_rollout_status_and_restart_drive_an_ordered_rolling_update",
        &["n1", "n2"],
    )
    .await
    else {
        return;
    };
    r.apply(&web(3, "OrderedReady", "busybox", 5, None));
    let out = r
        .kubectl(&["rollout", "status", "statefulset/web", "--timeout=120s"])
        .await;
    assert!(
        out.contains("roll out complete: 3 new pods have been updated"),
        "{out}"
    );
    let before = r.pods().await;
    assert_eq!(before.len(), 3);
    // Claims from the template, one per ordinal, and a VolumeAttachment per volume and node.
    let vas = Api::<VolumeAttachment>::all(r.client.clone())
        .list(&ListParams::default())
        .await
        .expect("volumeattachments")
        .items;
    for i in 0..3 {
        let pvc = wait_bound(&r.client, "default", &format!("data-web-{i}")).await;
        let pv = pvc.spec.and_then(|s| s.volume_name).expect("bound");
        let p = before
            .iter()
            .find(|p| p.name_any() == format!("web-{i}"))
            .expect("pod");
        assert!(
            vas.iter().any(
                |v| v.spec.source.persistent_volume_name.as_deref() == Some(&pv)
                    && v.spec.node_name == node(p)
                    && v.status.as_ref().is_some_and(|s| s.attached)
            ),
            "no attachment of {pv} to {}: {vas:?}",
            node(p)
        );
    }
    let old_rev = revision(&before[0]);
    r.kubectl(&["rollout", "restart", "statefulset/web"]).await;
    let out = r
        .kubectl(&["rollout", "status", "statefulset/web", "--timeout=120s"])
        .await;
    assert!(out.contains("roll out complete: 3 new pods"), "{out}");
    let after = r.pods().await;
    assert_eq!(after.len(), 3);
    for p in &after {
        assert_ne!(revision(p), old_rev, "{} not updated", p.name_any());
        assert!(
            !before.iter().any(|b| b.uid() == p.uid()),
            "{} not replaced",
            p.name_any()
        );
    }
    // Highest ordinal first: web-2's replacement is the oldest.
    let created = |n: &str| {
        after
            .iter()
            .find(|p| p.name_any() == n)
            .and_then(|p| p.metadata.creation_timestamp.clone())
            .expect("created")
    };
    assert!(created("web-2").0 <= created("web-1").0 && created("web-1").0 <= created("web-0").0);
    let history = r.kubectl(&["rollout", "history", "statefulset/web"]).await;
    assert!(history.contains('1') && history.contains('2'), "{history}");

    // A partitioned update touches only the ordinals at or above the partition.
    r.kubectl(&[
        "patch",
        "statefulset/web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}},"template":{"metadata":{"annotations":{"rolling-restart-trigger":"p1"}}}}}"#,
    ])
    .await;
    let out = r
        .kubectl(&["rollout", "status", "statefulset/web", "--timeout=120s"])
        .await;
    assert!(
        out.contains("partitioned roll out complete: 1 new pods"),
        "{out}"
    );
    let parted = r.pods().await;
    let rev_of = |n: &str| revision(parted.iter().find(|p| p.name_any() == n).expect("pod"));
    assert_ne!(rev_of("web-2"), rev_of("web-1"));
    assert_eq!(rev_of("web-1"), rev_of("web-0"));
    let sts = Api::<StatefulSet>::namespaced(r.client.clone(), "default")
        .get("web")
        .await
        .expect("sts");
    let st = sts.status.expect("status");
    assert_eq!(st.updated_replicas, Some(1));
    assert_ne!(st.current_revision, st.update_revision);
    r.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_ready_waits_for_each_pod_and_parallel_does_not() {
    let Some(r) = rig(
        "ordered_ready_waits_for_each_pod_and_parallel_does_not",
        &["n1"],
    )
    .await
    else {
        return;
    };
    // An image that cannot be pulled: web-0 never becomes Ready.
    r.apply(&web(2, "OrderedReady", "no-such-image", 5, None));
    wait_for("web-0 failing to pull", || async {
        match r.pod("web-0").await {
            Some(p) if format!("{:?}", p.status).contains("ImagePullBackOff") => Ok(()),
            other => Err(format!("{:?}", other.map(|p| p.status))),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        r.pod("web-1").await.is_none(),
        "OrderedReady created web-1 before web-0 was Ready"
    );
    r.kubectl(&["delete", "statefulset/web", "--wait=true"])
        .await;
    wait_for("the set's pods gone", || async {
        let n = r.pods().await.len();
        if n == 0 {
            Ok(())
        } else {
            Err(format!("{n} pods"))
        }
    })
    .await;
    r.kubectl(&["delete", "pvc", "--all"]).await;
    r.apply(&web(2, "Parallel", "no-such-image", 5, None));
    wait_for("web-1 created in parallel", || async {
        match r.pod("web-1").await {
            Some(_) => Ok(()),
            None => Err("no web-1".into()),
        }
    })
    .await;
    r.sim.shutdown().await;
}

/// Waits for an event about `pod` whose reason and message contain the given text.
async fn event_text(r: &Rig, pod: &str, reason: &str, text: &str) -> String {
    wait_event(&r.client, "default", pod, reason, text).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_moved_off_a_cordoned_node_sees_multi_attach_until_the_slow_detach_ends() {
    let Some(r) = rig(
        "a_pod_moved_off_a_cordoned_node_sees_multi_attach_until_the_slow_detach_ends",
        &["n1", "n2"],
    )
    .await
    else {
        return;
    };
    r.apply(&web(1, "OrderedReady", "busybox", 2, None));
    r.kubectl(&["rollout", "status", "statefulset/web", "--timeout=120s"])
        .await;
    let old = r.pod("web-0").await.expect("web-0");
    let from = node(&old);
    r.kubectl(&["cordon", &from]).await;
    r.faults.set(|f| f.detach_delay = Duration::from_secs(4));
    r.kubectl(&["rollout", "restart", "statefulset/web"]).await;
    let msg = event_text(&r, "web-0", "FailedAttachVolume", "Multi-Attach error").await;
    assert!(msg.contains("Volume is already"), "{msg}");
    let out = r
        .kubectl(&["rollout", "status", "statefulset/web", "--timeout=120s"])
        .await;
    assert!(out.contains("roll out complete"), "{out}");
    let new = r.pod("web-0").await.expect("web-0");
    assert_ne!(node(&new), from);
    event_text(
        &r,
        "web-0",
        "SuccessfulAttachVolume",
        "AttachVolume.Attach succeeded",
    )
    .await;
    r.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_unmount_keeps_a_pod_terminating_past_its_grace_period() {
    let Some(r) = rig(
        "a_hung_unmount_keeps_a_pod_terminating_past_its_grace_period",
        &["n1"],
    )
    .await
    else {
        return;
    };
    r.apply(&web(1, "OrderedReady", "busybox", 1, None));
    r.kubectl(&["rollout", "status", "statefulset/web", "--timeout=120s"])
        .await;
    let old = r.pod("web-0").await.expect("web-0");
    r.faults.set(|f| f.stuck_unmount = true);
    r.kubectl(&["delete", "pod", "web-0", "--wait=false"]).await;
    // Three grace periods later it is still there, Terminating.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = r.pod("web-0").await.expect("still there");
    assert_eq!(p.uid(), old.uid());
    assert!(p.metadata.deletion_timestamp.is_some());
    r.faults.set(|f| f.stuck_unmount = false);
    wait_for("the old web-0 gone", || async {
        match r.pod("web-0").await {
            Some(p) if p.uid() == old.uid() => Err("still there".to_string()),
            _ => Ok(()),
        }
    })
    .await;
    r.sim.shutdown().await;
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_stop_hooks_run_before_sigterm_and_one_that_kills_pid_1_fails_with_137() {
    let Some(r) = rig(
        "pre_stop_hooks_run_before_sigterm_and_one_that_kills_pid_1_fails_with_137",
        &["n1"],
    )
    .await
    else {
        return;
    };
    let marker = r.kubeconfig.with_extension("prestop");
    let good = format!("sleep 1; echo ran > {}", marker.display());
    r.apply(&web(1, "OrderedReady", "busybox", 10, Some(&good)));
    r.kubectl(&["rollout", "status", "statefulset/web", "--timeout=120s"])
        .await;
    r.kubectl(&["rollout", "restart", "statefulset/web"]).await;
    r.kubectl(&["rollout", "status", "statefulset/web", "--timeout=120s"])
        .await;
    assert_eq!(read(&marker).trim(), "ran");
    let evs = events_for(&r.client, "default", "web-0").await;
    assert!(
        !evs.iter()
            .any(|e| e.reason.as_deref() == Some("FailedPreStopHook")),
        "{evs:?}"
    );

    // The rig's hook: stop the main process, then go on working; it dies with the container.
    let bad = "kill -TERM $(cat /data/pid); sleep 5; echo never";
    r.apply(&web(1, "OrderedReady", "busybox", 30, Some(bad)));
    r.kubectl(&["rollout", "status", "statefulset/web", "--timeout=120s"])
        .await;
    r.kubectl(&["rollout", "restart", "statefulset/web"]).await;
    let msg = event_text(&r, "web-0", "FailedPreStopHook", "exited with 137").await;
    assert!(msg.contains("kill -TERM"), "{msg}");
    let out = r
        .kubectl(&["rollout", "status", "statefulset/web", "--timeout=120s"])
        .await;
    assert!(out.contains("roll out complete"), "{out}");
    r.sim.shutdown().await;
}
