//! `s3mover rollout-test` against the simulated cluster (StatefulSet controller, attach/detach
//! controller with fault knobs, kubelets in bubblewrap): a clean rollout passes with its data
//! check intact; a pod moved to another node while its volume detaches slowly is reported as
//! Multi-Attach with the detach time; a hung unmount is reported as stuck Terminating with the
//! time it took; a volume that loses its data is caught by the canary; and bad flags are
//! refused in one line before any cluster is asked.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Api;
use s3mover_k8s_sim::controllers::attachdetach::AttachFaults;
use s3mover_k8s_sim::controllers::{ControllerOptions, ImageConfig};
use s3mover_k8s_sim::{SimCluster, SimOptions};
use serde_json::Value;

mod k8s_support;
use k8s_support::{repo_root, require};

struct Rig {
    sim: SimCluster,
    kubeconfig: PathBuf,
    faults: AttachFaults,
    _dir: tempfile::TempDir,
}

async fn rig(nodes: &[&str]) -> Rig {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut opts = SimOptions::new(dir.path().join("cluster"));
    opts.nodes = nodes.iter().map(|n| n.to_string()).collect();
    let mut c = ControllerOptions::default();
    c.images
        .insert("busybox".into(), ImageConfig::cmd("/bin/sh"));
    c.kubelet_backoff = Duration::from_millis(500);
    let faults = AttachFaults::default();
    c.volume_attach = Some(faults.clone());
    opts.controllers = c;
    let sim = SimCluster::start(opts).await.expect("cluster starts");
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, "default")
        .expect("kubeconfig");
    Rig {
        sim,
        kubeconfig,
        faults,
        _dir: dir,
    }
}

fn set_yaml(replicas: i32, grace: i64) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  replicas: {replicas}
  serviceName: db
  selector:
    matchLabels:
      app: db
  template:
    metadata:
      labels:
        app: db
    spec:
      terminationGracePeriodSeconds: {grace}
      containers:
      - name: db
        image: busybox
        command: ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"]
        volumeMounts:
        - name: data
          mountPath: /data
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
    async fn kubectl(&self, args: &[&str], input: Option<String>) -> String {
        let kc = self.kubeconfig.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&kc)
                .args(&args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("kubectl runs");
            if let Some(text) = input {
                let _ = child.stdin.take().map(|mut s| s.write_all(text.as_bytes()));
            }
            drop(child.stdin.take());
            let out = child.wait_with_output().expect("kubectl");
            assert!(
                out.status.success(),
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .await
        .expect("kubectl ran")
    }

    async fn deploy(&self, replicas: i32, grace: i64) {
        self.kubectl(&["apply", "-f", "-"], Some(set_yaml(replicas, grace)))
            .await;
        self.kubectl(&["rollout", "status", "sts/db", "--timeout=180s"], None)
            .await;
    }

    /// Runs rollout-test with `-o json`: (exit code, report, stderr).
    async fn rollout_test(&self, extra: &[&str]) -> (i32, Value, String) {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_s3mover"));
        cmd.args(["-o", "json", "rollout-test", "db", "-n", "default"])
            .args(extra)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig);
        let out = cmd.output().await.expect("s3mover runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let report: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"));
        (out.status.code().unwrap_or(-1), report, stderr)
    }

    async fn node_of(&self, pod: &str) -> String {
        self.kubectl(
            &["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"],
            None,
        )
        .await
    }
}

fn f(v: &Value, ptr: &str) -> f64 {
    v.pointer(ptr)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{ptr} missing in {v:#}"))
}

fn reasons(v: &Value) -> Vec<String> {
    v["reasons"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_rollout_passes_twice_with_its_data_intact() {
    if !require("a_clean_rollout_passes_twice_with_its_data_intact") {
        return;
    }
    let r = rig(&["n1", "n2"]).await;
    r.deploy(2, 3).await;
    let (code, rep, err) = r
        .rollout_test(&[
            "--rounds",
            "2",
            "--canary-image",
            "busybox",
            "--timeout",
            "120s",
        ])
        .await;
    assert_eq!(code, 0, "{rep:#}\n{err}");
    assert_eq!(rep["verdict"], "pass", "{rep:#}");
    assert!(reasons(&rep).is_empty());
    assert_eq!(rep["rounds"].as_array().map(Vec::len), Some(2));
    assert_eq!(rep["summary"]["multiAttachRounds"], 0);
    for round in rep["rounds"].as_array().into_iter().flatten() {
        assert_eq!(round["completed"], true);
        let pods = round["pods"].as_array().expect("pods");
        assert_eq!(pods.len(), 2);
        for p in pods {
            let term = f(p, "/terminationSeconds");
            let unavailable = f(p, "/unavailableSeconds");
            assert!(term <= 2.0 * 3.0, "{p:#}");
            assert!(unavailable >= term, "{p:#}");
            assert_eq!(p["nodeChanged"], false, "{p:#}");
            assert!(p["events"].is_array());
        }
        let canary = round["canary"].as_array().expect("canary");
        assert_eq!(canary.len(), 2, "{round:#}");
        assert!(canary.iter().all(|c| c["status"] == "intact"), "{canary:?}");
        // Highest ordinal first. Times are observed by polling and reported to 0.1 s, so on
        // a fast machine both pods can fall in one observation: never the other way round.
        // (The partition-stepped rollout below checks the strict order on its timeline.)
        let deleted = |i: usize| f(&pods[i], "/deletedAtSeconds");
        let ready = |i: usize| f(&pods[i], "/readyAtSeconds");
        assert!(deleted(1) <= deleted(0), "{pods:?}");
        assert!(ready(1) <= ready(0), "{pods:?}");
    }
    let unav = &rep["summary"]["pods"][0]["unavailableSeconds"];
    assert_eq!(unav["samples"], 2, "{unav}");
    assert!(f(unav, "/min") <= f(unav, "/median") && f(unav, "/median") <= f(unav, "/max"));

    // The partition-stepped rollout: 1, then 0, each step after the updated pod is Ready.
    let (code, rep, err) = r
        .rollout_test(&["--trigger", "partition", "--timeout", "120s"])
        .await;
    assert_eq!(code, 0, "{rep:#}\n{err}");
    let timeline: Vec<String> = rep["rounds"][0]["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["what"].as_str().map(String::from))
        .collect();
    let at = |text: &str| {
        timeline
            .iter()
            .position(|w| w.contains(text))
            .unwrap_or_else(|| panic!("{text:?} not in {timeline:#?}"))
    };
    assert!(at("partition lowered to 1") < at("db-1 Ready again"));
    assert!(at("db-1 Ready again") < at("partition lowered to 0"));
    assert!(at("partition lowered to 0") < at("db-0 gone"));
    r.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_detach_on_a_node_move_fails_as_multi_attach() {
    if !require("a_slow_detach_on_a_node_move_fails_as_multi_attach") {
        return;
    }
    let r = rig(&["n1", "n2"]).await;
    r.deploy(1, 2).await;
    let from = r.node_of("db-0").await;
    r.kubectl(&["cordon", &from], None).await;
    r.faults.set(|f| f.detach_delay = Duration::from_secs(4));
    let (code, rep, err) = r.rollout_test(&["--timeout", "120s"]).await;
    assert_eq!(code, 1, "{rep:#}\n{err}");
    assert_eq!(rep["verdict"], "fail");
    let rs = reasons(&rep);
    assert!(
        rs.iter().any(|x| x.starts_with("multi-attach: db-0")),
        "{rs:?}"
    );
    let p = &rep["pods"][0];
    assert_eq!(p["nodeChanged"], true, "{p:#}");
    assert_eq!(p["oldNode"], from.as_str());
    // The detach came about 4 s after the pod was gone; the pod was unavailable at least that
    // long (the poll interval is the resolution).
    let gone = f(p, "/goneAtSeconds");
    let detached = f(p, "/volumes/0/detachedAtSeconds");
    assert!(detached - gone >= 3.5, "{p:#}");
    assert!(f(p, "/volumes/0/detachSeconds") >= 3.5, "{p:#}");
    assert!(f(p, "/unavailableSeconds") >= 3.5, "{p:#}");
    assert!(f(p, "/volumes/0/detachToAttachSeconds") >= 0.0, "{p:#}");
    let events = p["events"].as_array().expect("events");
    assert!(
        events.iter().any(|e| e["reason"] == "FailedAttachVolume"
            && e["message"].as_str().unwrap_or("").contains("Multi-Attach")),
        "{events:?}"
    );
    assert_eq!(rep["summary"]["multiAttachRate"], 1.0);
    // With multi-attach tolerated the same kind of rollout passes.
    r.kubectl(&["uncordon", &from], None).await;
    let now = r.node_of("db-0").await;
    r.kubectl(&["cordon", &now], None).await;
    let (code, rep, _) = r
        .rollout_test(&[
            "--timeout",
            "120s",
            "--fail-on",
            "stuck-terminating=2x-grace",
        ])
        .await;
    assert_eq!(code, 0, "{rep:#}");
    assert_eq!(rep["pods"][0]["multiAttach"], true, "{rep:#}");
    r.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_unmount_fails_as_stuck_terminating_with_its_time() {
    if !require("a_hung_unmount_fails_as_stuck_terminating_with_its_time") {
        return;
    }
    let r = rig(&["n1"]).await;
    r.deploy(1, 1).await;
    r.faults.set(|f| f.stuck_unmount = true);
    let faults = r.faults.clone();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(8)).await;
        faults.set(|f| f.stuck_unmount = false);
    });
    let (code, rep, err) = r.rollout_test(&["--timeout", "120s"]).await;
    release.await.expect("released");
    assert_eq!(code, 1, "{rep:#}\n{err}");
    let p = &rep["pods"][0];
    // Past twice its grace period of 1 s, and not before the fault was lifted (8 s after the
    // test started, a few seconds less after the rollout did).
    let term = f(p, "/terminationSeconds");
    assert!(term > 2.0, "{p:#}");
    assert!(f(p, "/goneAtSeconds") >= 3.0, "{p:#}");
    assert_eq!(p["stuckTerminating"], true);
    assert_eq!(p["stillTerminating"], false);
    let rs = reasons(&rep);
    assert_eq!(rs.len(), 1, "{rs:?}");
    assert!(
        rs[0].starts_with("stuck-terminating: db-0 was Terminating for"),
        "{rs:?}"
    );
    assert!(rs[0].contains("2x its grace period (1 s)"), "{rs:?}");
    r.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_that_loses_its_data_on_detach_fails_the_data_check() {
    if !require("a_volume_that_loses_its_data_on_detach_fails_the_data_check") {
        return;
    }
    let r = rig(&["n1", "n2"]).await;
    r.deploy(1, 2).await;
    let from = r.node_of("db-0").await;
    r.kubectl(&["cordon", &from], None).await;
    r.faults.set(|f| f.lose_data_on_detach = true);
    let (code, rep, err) = r
        .rollout_test(&[
            "--timeout",
            "120s",
            "--canary-image",
            "busybox",
            "--fail-on",
            "data",
        ])
        .await;
    assert_eq!(code, 1, "{rep:#}\n{err}");
    let canary = &rep["rounds"][0]["canary"][0];
    assert_eq!(canary["claim"], "data-db-0");
    assert_eq!(canary["status"], "missing", "{canary}");
    let rs = reasons(&rep);
    assert_eq!(rs.len(), 1, "{rs:?}");
    assert!(rs[0].starts_with("data: claim data-db-0 missing"), "{rs:?}");
    // The set itself is fine: the rollout completed.
    let sts = Api::<StatefulSet>::namespaced(r.sim.client(), "default")
        .get("db")
        .await
        .expect("sts");
    assert_eq!(sts.status.and_then(|s| s.ready_replicas), Some(1));
    r.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_attach_is_reported_and_the_unfinished_rollout_fails_at_its_timeout() {
    if !require("a_failing_attach_is_reported_and_the_unfinished_rollout_fails_at_its_timeout") {
        return;
    }
    let r = rig(&["n1", "n2"]).await;
    r.deploy(1, 1).await;
    let from = r.node_of("db-0").await;
    r.kubectl(&["cordon", &from], None).await;
    r.faults.set(|f| {
        f.attach_error = Some(
            "rpc error: code = NotFound desc = [ControllerPublishVolume] Volume vol-1 not found"
                .into(),
        )
    });
    let (code, rep, err) = r
        .rollout_test(&["--timeout", "10s", "--fail-on", "attach-error"])
        .await;
    assert_eq!(code, 1, "{rep:#}\n{err}");
    let rs = reasons(&rep);
    assert!(rs[0].contains("did not complete within 10 s"), "{rs:?}");
    assert!(
        rs.iter().any(|x| x.starts_with("attach-error: db-0")
            && x.contains("[ControllerPublishVolume] Volume vol-1 not found")),
        "{rs:?}"
    );
    let p = &rep["pods"][0];
    assert!(p["unavailableSeconds"].is_null(), "{p:#}");
    assert_eq!(rep["rounds"][0]["completed"], false);
    r.faults.set(|f| f.attach_error = None);
    r.sim.shutdown().await;
}

fn s3mover(args: &[&str]) -> (i32, String) {
    let home = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_s3mover"))
        .args(args)
        .env("HOME", home.path())
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("s3mover runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_rollout_test_flags_are_refused_in_one_line_before_the_cluster_is_asked() {
    for (args, says) in [
        (
            &["rollout-test", "db", "--trigger", "rollback"][..],
            "--trigger \"rollback\"",
        ),
        (
            &["rollout-test", "db", "--fail-on", "multiattach"][..],
            "--fail-on \"multiattach\"",
        ),
        (
            &["rollout-test", "db", "--fail-on", "stuck-terminating=3d"][..],
            "stuck-terminating=3d",
        ),
        (
            &["rollout-test", "db", "--rounds", "0"][..],
            "--rounds must be at least 1",
        ),
    ] {
        let (code, stderr) = s3mover(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // Values clap itself checks: its usage error, exit 2.
    for (args, says) in [
        (&["rollout-test", "db", "--poll", "1ms"][..], "too short"),
        (
            &["rollout-test", "db", "--timeout", "soon"][..],
            "not a duration",
        ),
    ] {
        let (code, stderr) = s3mover(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_rig_renders_with_kustomize_and_the_api_server_accepts_it() {
    let has_kubectl = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("kubectl").is_file()));
    if !has_kubectl {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("kubectl is not on PATH (CI must provide it)");
        }
        println!("SKIPPED the_etcd_rig_renders_with_kustomize_and_the_api_server_accepts_it: needs kubectl");
        return;
    }
    let dir = repo_root().join("deploy/rollout-test");
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("kubectl kustomize");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8_lossy(&out.stdout).into_owned();
    // The fixed rig: v3 API only, values on stdin, a preStop hook that never signals PID 1.
    assert!(
        !rendered.contains("/v2/"),
        "the v2 API is disabled in etcd 3.4+"
    );
    assert!(!rendered.contains("ETCDCTL_API=2"));
    for line in rendered
        .lines()
        .filter(|l| l.contains("etcdctl") && l.contains(" put "))
    {
        assert!(
            line.contains("<\""),
            "a put without its value on stdin: {line}"
        );
    }
    let prestop = std::fs::read_to_string(dir.join("scripts/prestop.sh")).expect("prestop.sh");
    let code: Vec<&str> = prestop
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    assert!(
        !code.iter().any(|l| l.contains("kill")),
        "the preStop hook signals processes: {prestop}"
    );

    // Every object is accepted by the API server as its real type (strict field validation).
    let tmp = tempfile::tempdir().expect("tempdir");
    let sim = SimCluster::start(SimOptions::api_only(tmp.path().join("state")))
        .await
        .expect("cluster starts");
    let kc = tmp.path().join("kubeconfig");
    sim.write_kubeconfig(&kc, "default").expect("kubeconfig");
    let kc2 = kc.clone();
    let dir2 = dir.clone();
    let applied = tokio::task::spawn_blocking(move || {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kc2)
            .args(["apply", "-k"])
            .arg(&dir2)
            .output()
            .expect("kubectl apply")
    })
    .await
    .expect("ran");
    assert!(
        applied.status.success(),
        "{}{}",
        String::from_utf8_lossy(&applied.stdout),
        String::from_utf8_lossy(&applied.stderr)
    );
    let sts = Api::<StatefulSet>::namespaced(sim.client(), "csi-mount-test")
        .get("etcd-cluster")
        .await
        .expect("the StatefulSet");
    let spec = sts.spec.expect("spec");
    assert_eq!(spec.pod_management_policy.as_deref(), Some("OrderedReady"));
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.expect("pod spec");
    let etcd = pod
        .containers
        .iter()
        .find(|c| c.name == "etcd")
        .expect("etcd");
    assert!(etcd
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .is_some());
    assert!(pod.containers.iter().any(|c| c.name == "data-generator"));
    sim.shutdown().await;
}
