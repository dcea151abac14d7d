//! `s3mover k8s doctor` against the simulated cluster: what it reports on a cluster set up as
//! docs/kubernetes.md says (the snapshot and CBT CRDs, the hostpath driver's classes and
//! SnapshotMetadataService, the orchestrator's and movers' RBAC from deploy/rbac, the
//! repository Secret), and how it says what is missing.

mod k8s_support;

use k8s_support::{require, start};
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn checks(out: &str) -> Vec<(String, String)> {
    let v: Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    v["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks: {v}"))
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn doctor_passes_a_ready_cluster_and_names_what_is_missing() {
    if !require("doctor_passes_a_ready_cluster_and_names_what_is_missing") {
        return;
    }
    let mut k8s = start(|_| {}).await;
    k8s.namespace("db");
    k8s.claim("db", "data", 4 * MIB, "Block", &[]).await;
    k8s.claim("db", "files", 4 * MIB, "Filesystem", &[]).await;
    k8s.use_orchestrator_role();

    let (code, stdout, stderr) = k8s.s3mover(&["k8s", "doctor", "-n", "db", "-o", "json"]);
    assert!(
        stderr.is_empty() || !stderr.contains("s3mover:"),
        "{stderr}"
    );
    let found = checks(&stdout);
    assert_eq!(code, 0, "no FAIL on a ready cluster: {found:?}");
    let status = |prefix: &str| -> Vec<&str> {
        found
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, s)| s.as_str())
            .collect()
    };
    // The kinds come from API discovery, which the orchestrator's role may read.
    assert_eq!(status("crd "), ["pass"; 4], "{found:?}");
    assert_eq!(
        status("snapshot class for hostpath.csi.k8s.io"),
        ["pass"],
        "{found:?}"
    );
    assert_eq!(
        status("SnapshotMetadataService hostpath.csi.k8s.io"),
        ["pass"],
        "{found:?}"
    );
    assert_eq!(status("claim db/data"), ["pass"], "{found:?}");
    assert_eq!(
        status("claim db/files"),
        ["warn"],
        "a Filesystem claim is read through a Block claim"
    );
    assert_eq!(status("permissions in db"), ["pass"], "{found:?}");
    assert_eq!(status("mover progress in db"), ["pass"], "{found:?}");
    assert_eq!(
        status("repository secret db/s3mover-repo"),
        ["pass"],
        "{found:?}"
    );

    // Without the repository Secret a backup cannot run: FAIL, and the exit code says so.
    k8s.kubectl(&["delete", "secret", "s3mover-repo", "-n", "db"], None);
    let (code, stdout, _) = k8s.s3mover(&["k8s", "doctor", "-n", "db", "-o", "json"]);
    let found = checks(&stdout);
    assert_ne!(code, 0, "{found:?}");
    assert!(
        found
            .iter()
            .any(|(n, s)| n.starts_with("repository secret") && s == "fail"),
        "{found:?}"
    );
}
