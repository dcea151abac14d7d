//! Support for the API server tests: a simulated cluster (API server only) in a temporary directory, and
//! a runner for the real `kubectl` pointed at it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use s3mover_k8s_sim::{SimCluster, SimOptions};

/// A running cluster, its state directory and an admin kubeconfig.
pub struct Sim {
    pub cluster: SimCluster,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

/// An object of type `T` from JSON.
pub fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

/// The `Status` of an API error (panics on any other error).
pub fn api_err(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

impl Sim {
    /// A client authenticated as service account `ns/sa` (which must exist), with a token
    /// for the API server.
    pub async fn client_as(&self, ns: &str, sa: &str) -> kube::Client {
        let token = self
            .cluster
            .create_token(ns, sa, &[], std::time::Duration::from_secs(600))
            .expect("token for the service account");
        self.cluster
            .client_for_token(&token)
            .await
            .expect("client for the token")
    }
}

/// Starts the API server with its control-plane loops (no controllers or kubelet).
pub async fn start() -> Sim {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = SimCluster::start(SimOptions::api_only(dir.path().join("state")))
        .await
        .expect("cluster starts");
    let kubeconfig = dir.path().join("kubeconfig");
    cluster
        .write_kubeconfig(&kubeconfig, "default")
        .expect("kubeconfig written");
    Sim {
        cluster,
        dir,
        kubeconfig,
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The `kubectl` on PATH; outside CI a test without one prints `SKIPPED` and returns, in CI
/// it fails.
pub fn kubectl_or_skip(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("kubectl"))
            .find(|c| c.is_file())
    });
    match found {
        Some(k) => Some(k),
        None if in_ci() => panic!("{test}: kubectl is not on PATH (CI must run the kubectl tests)"),
        None => {
            eprintln!("SKIPPED {test}: kubectl is not on PATH");
            None
        }
    }
}

/// Runs kubectl with a kubeconfig (and a discovery cache of this test's own: a port reused
/// by a later server must not see an earlier one's kinds); returns its output.
pub fn kubectl(bin: &Path, kubeconfig: &Path, args: &[&str]) -> Output {
    let cache = kubeconfig.with_extension("cache");
    Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .expect("kubectl runs")
}

/// Runs kubectl, which must succeed; returns its stdout.
pub fn kubectl_ok(bin: &Path, kubeconfig: &Path, args: &[&str]) -> String {
    let out = kubectl(bin, kubeconfig, args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs kubectl, which must fail; returns its stderr.
pub fn kubectl_err(bin: &Path, kubeconfig: &Path, args: &[&str]) -> String {
    let out = kubectl(bin, kubeconfig, args);
    assert!(
        !out.status.success(),
        "kubectl {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}
