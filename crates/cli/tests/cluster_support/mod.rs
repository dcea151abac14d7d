//! A simulated cluster (API server only: the objects are seeded by the tests through the
//! admin client) with a local repository, and the `s3mover` binary run against both.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::Client;
use s3mover_k8s_sim::{SimCluster, SimOptions};
use serde_json::{json, Value};

pub const PASSWORD: &str = "cluster test password";

/// A running simulated cluster, its kubeconfig and a repository.
pub struct Sim {
    pub sim: SimCluster,
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub repo: PathBuf,
}

pub async fn start() -> Sim {
    let dir = tempfile::tempdir().expect("temporary directory");
    let sim = SimCluster::start(SimOptions::api_only(dir.path().join("cluster")))
        .await
        .expect("the simulated cluster starts");
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, "default")
        .expect("kubeconfig");
    let repo = dir.path().join("repo");
    let s = Sim {
        client: sim.client(),
        sim,
        dir,
        kubeconfig,
        repo,
    };
    let (code, _, stderr) = s.run(&["init", "--kdf-memory", "8M", "--kdf-passes", "1"]);
    assert_eq!(code, 0, "init: {stderr}");
    s
}

impl Sim {
    /// `s3mover ARGS --kubeconfig …` with the repository and password in the environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_s3mover"));
        command
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("S3MOVER_REPO", &self.repo)
            .env("S3MOVER_PASSWORD", PASSWORD)
            .env("HOME", self.dir.path())
            .env_remove("S3MOVER_PASSWORD_FILE")
            .env_remove("S3MOVER_PASSWORD_COMMAND")
            .env_remove("S3MOVER_CLUSTER")
            .env_remove("S3MOVER_MAX_AGE")
            .env_remove("S3MOVER_HEALTH_CHECKS")
            .env_remove("S3MOVER_ETCD_SNAPSHOTS");
        command
    }

    /// Runs s3mover; (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        output(self.command(args).output().expect("s3mover runs"))
    }

    /// Runs s3mover with `-o json`, which must exit `code`; the parsed output.
    pub fn json(&self, args: &[&str], code: i32) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let (got, stdout, stderr) = self.run(&all);
        assert_eq!(got, code, "s3mover {args:?}: {stderr}\n{stdout}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    }

    /// Creates a cluster-scoped or namespaced object from JSON; `status`, if any, is set
    /// through the status subresource as a controller would.
    pub async fn create(&self, object: Value) {
        let api_version = object["apiVersion"]
            .as_str()
            .expect("apiVersion")
            .to_string();
        let kind = object["kind"].as_str().expect("kind").to_string();
        let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
        let plural = plural(&kind);
        let resource = ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(group, version, &kind),
            &plural,
        );
        let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        let dynamic: DynamicObject = serde_json::from_value(object.clone()).expect("object");
        api.create(&PostParams::default(), &dynamic)
            .await
            .unwrap_or_else(|e| panic!("create {kind}: {e}"));
        if !object["status"].is_null() {
            let name = object["metadata"]["name"].as_str().expect("name");
            api.patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": object["status"]})),
            )
            .await
            .unwrap_or_else(|e| panic!("status of {kind} {name}: {e}"));
        }
    }

    pub async fn namespace(&self, name: &str) {
        self.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
            .await;
    }

    /// A PV bound to a claim (both objects, as a provisioner and binder leave them).
    pub async fn bound_pair(&self, pv: &str, ns: &str, pvc: &str, driver: &str) {
        self.create(pv_object(pv, ns, pvc, driver)).await;
        self.create(json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": pvc, "namespace": ns, "labels": {"app": "db"},
                "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
                "resources": {"requests": {"storage": "1Gi"}},
                "storageClassName": "fast", "volumeName": pv},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]},
        }))
        .await;
    }

    /// Runs kubectl against the cluster with `input` on stdin.
    pub fn kubectl(&self, args: &[&str], input: Option<&str>) -> Output {
        kubectl(&self.kubeconfig, args, input)
    }
}

pub fn pv_object(pv: &str, ns: &str, pvc: &str, driver: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": pv, "annotations": {"pv.kubernetes.io/provisioned-by": driver}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "fast",
            "volumeMode": "Filesystem",
            "csi": {"driver": driver, "volumeHandle": pv},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns,
                "name": pvc, "uid": "0b6a9d1e-0000-4000-8000-000000000001"}},
        "status": {"phase": "Bound"},
    })
}

fn plural(kind: &str) -> String {
    match kind {
        "StorageClass" => "storageclasses".into(),
        "VolumeSnapshotClass" => "volumesnapshotclasses".into(),
        other => format!("{}s", other.to_ascii_lowercase()),
    }
}

pub fn output(out: Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs kubectl with a kubeconfig; (status, stdout, stderr) in the Output.
pub fn kubectl(kubeconfig: &Path, args: &[&str], input: Option<&str>) -> Output {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    if let Some(text) = input {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("kubectl stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("kubectl")
}

/// True when `tool` is on PATH; otherwise SKIPPED outside CI and a failure in CI.
pub fn require_tool(test: &str, tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
    if found {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: needs {tool} (CI must provide it: see .ci/run)");
    }
    println!("SKIPPED {test}: needs {tool}");
    false
}

/// A one-line error with `code` that says `needle`.
pub fn refused(out: (i32, String, String), code: i32, needle: &str) {
    let (got, _, stderr) = out;
    assert_eq!(got, code, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
}
