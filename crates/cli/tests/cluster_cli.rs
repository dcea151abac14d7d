//! `s3mover cluster backup|backups|show|forget` against the simulated cluster: what a
//! document holds, YAML that real kubectl applies to a fresh cluster to re-create the
//! bindings, and the earlier script's defects gone (one cluster's retention pruning another's
//! files by a substring match, two runs in one second overwriting each other).

mod cluster_support;

use cluster_support::{kubectl, refused, require_tool, Sim};
use serde_json::json;

async fn seed_cluster(s: &Sim) {
    s.namespace("db").await;
    s.create(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "fast", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "driver.longhorn.io", "reclaimPolicy": "Retain",
        "parameters": {"numberOfReplicas": "3"},
    }))
    .await;
    s.create(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": "longhorn-snap"}, "driver": "driver.longhorn.io", "deletionPolicy": "Delete",
    }))
    .await;
    for (name, role, ip) in [
        ("server-1", "control-plane", "10.0.0.1"),
        ("agent-1", "", "10.0.0.2"),
    ] {
        let mut labels = json!({"kubernetes.io/hostname": name});
        if !role.is_empty() {
            labels[format!("node-role.kubernetes.io/{role}")] = json!("true");
            labels["node-role.kubernetes.io/etcd"] = json!("true");
        }
        s.create(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {"podCIDR": "10.42.0.0/24"},
            "status": {
                "conditions": [{"type": "Ready", "status": if role.is_empty() { "False" } else { "True" }}],
                "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
                "nodeInfo": {"kubeletVersion": "v1.33.1+k3s1", "osImage": "Debian GNU/Linux 12", "kernelVersion": "6.1.0",
                    "containerRuntimeVersion": "containerd://2.0", "architecture": "amd64", "operatingSystem": "linux",
                    "machineID": "m", "systemUUID": "s", "bootID": "b", "kubeProxyVersion": ""},
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "allocatable": {"cpu": "4", "memory": "7Gi", "pods": "110"},
            },
        }))
        .await;
    }
    s.bound_pair("pvc-1111", "db", "data", "driver.longhorn.io")
        .await;
    s.bound_pair("pvc-2222", "db", "logs", "driver.longhorn.io")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_holds_the_cluster_and_its_yaml_recreates_the_bindings() {
    let s = cluster_support::start().await;
    seed_cluster(&s).await;
    let saved = s.json(&["cluster", "backup", "--cluster", "prod"], 0);
    let counts = &saved["counts"];
    assert_eq!(counts["persistentVolumes"], 2, "{saved}");
    assert_eq!(counts["boundPersistentVolumes"], 2);
    assert_eq!(counts["persistentVolumeClaims"], 2);
    assert_eq!(counts["storageClasses"], 1);
    assert_eq!(counts["volumeSnapshotClasses"], 1);
    assert_eq!(counts["nodes"], 2);
    let id = saved["id"].as_str().expect("id").to_string();

    let listed = s.json(&["cluster", "backups"], 0);
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["cluster"], "prod");

    let shown = s.json(&["cluster", "show", &id[..8]], 0);
    let doc = &shown["document"];
    assert_eq!(doc["clusterName"], "prod");
    let binding = &doc["bindings"][0];
    assert_eq!(binding["pvc"], "db/data");
    assert_eq!(binding["persistentVolume"], "pvc-1111");
    assert_eq!(
        binding["claimSpec"]["resources"]["requests"]["storage"],
        "1Gi"
    );
    let server = doc["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["name"] == "server-1")
        .expect("server-1");
    assert_eq!(server["roles"], "control-plane,etcd");
    assert_eq!(server["status"], "Ready");
    assert_eq!(server["internalIP"], "10.0.0.1");
    assert_eq!(server["kubeletVersion"], "v1.33.1+k3s1");
    assert_eq!(server["capacity"]["memory"], "8Gi");
    assert_eq!(
        doc["storageClasses"][0]["parameters"]["numberOfReplicas"],
        "3"
    );
    assert_eq!(
        doc["volumeSnapshotClasses"][0]["driver"],
        "driver.longhorn.io"
    );
    assert!(
        doc["persistentVolumes"][0]["metadata"]
            .get("managedFields")
            .is_none(),
        "server bookkeeping is not kept"
    );

    let (code, text, stderr) = s.run(&["cluster", "show", "latest", "--cluster", "prod"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        text.contains("pvc-1111") && text.contains("db/data"),
        "{text}"
    );
    assert!(
        text.contains("server-1") && text.contains("10.0.0.1"),
        "{text}"
    );

    let (code, yaml, stderr) = s.run(&["cluster", "show", &id, "-o", "yaml"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        yaml.matches("\nkind: PersistentVolume\n").count(),
        2,
        "{yaml}"
    );
    assert_eq!(
        yaml.matches("\nkind: PersistentVolumeClaim\n").count(),
        2,
        "{yaml}"
    );
    assert!(
        !yaml.contains("uid:"),
        "no identity of the old cluster: {yaml}"
    );
    assert!(!yaml.contains("bind-completed"), "{yaml}");

    // After the disaster: a new, empty cluster. Real kubectl applies the YAML as it is (the
    // simulator does not implement server-side dry runs, so the test applies for real).
    if !require_tool(
        "a_document_holds_the_cluster_and_its_yaml_recreates_the_bindings",
        "kubectl",
    ) {
        return;
    }
    let fresh = cluster_support::start().await;
    fresh.namespace("db").await;
    let applied = fresh.kubectl(&["apply", "-f", "-"], Some(&yaml));
    assert!(
        applied.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let got = kubectl(
        &fresh.kubeconfig,
        &["get", "pv,pvc", "-A", "-o", "json"],
        None,
    );
    let list: serde_json::Value = serde_json::from_slice(&got.stdout).expect("kubectl JSON");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 4, "{list}");
    let pv = items
        .iter()
        .find(|o| o["metadata"]["name"] == "pvc-1111")
        .expect("PV re-created");
    assert_eq!(pv["spec"]["claimRef"]["name"], "data");
    assert_eq!(pv["spec"]["claimRef"]["namespace"], "db");
    assert_eq!(pv["spec"]["csi"]["volumeHandle"], "pvc-1111");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    let pvc = items
        .iter()
        .find(|o| o["metadata"]["name"] == "data")
        .expect("PVC re-created");
    assert_eq!(pvc["spec"]["volumeName"], "pvc-1111");
    assert_eq!(pvc["metadata"]["labels"]["app"], "db");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_is_by_exact_cluster_name_and_runs_never_collide() {
    let s = cluster_support::start().await;
    seed_cluster(&s).await;
    // Back-to-back runs land within the same second: each keeps its own document.
    for _ in 0..3 {
        s.json(&["cluster", "backup", "--cluster", "k3s"], 0);
    }
    for _ in 0..2 {
        s.json(&["cluster", "backup", "--cluster", "k3s-dev"], 0);
    }
    let k3s = s.json(&["cluster", "backups", "--cluster", "k3s"], 0);
    assert_eq!(k3s.as_array().map(Vec::len), Some(3), "{k3s}");
    let dry = s.json(
        &[
            "cluster",
            "forget",
            "--cluster",
            "k3s",
            "--keep-last",
            "1",
            "--dry-run",
        ],
        0,
    );
    assert_eq!(dry["removed"].as_array().map(Vec::len), Some(2));
    let done = s.json(
        &["cluster", "forget", "--cluster", "k3s", "--keep-last", "1"],
        0,
    );
    assert_eq!(done["kept"].as_array().map(Vec::len), Some(1));
    assert_eq!(done["kept"][0], k3s[2]["id"], "the newest is kept");
    let dev = s.json(&["cluster", "backups", "--cluster", "k3s-dev"], 0);
    assert_eq!(
        dev.as_array().map(Vec::len),
        Some(2),
        "k3s-dev keeps its documents: {dev}"
    );
    // Retention right after a backup, as the earlier script's weekly job did.
    let saved = s.json(
        &[
            "cluster",
            "backup",
            "--cluster",
            "k3s-dev",
            "--keep-last",
            "2",
        ],
        0,
    );
    assert_eq!(saved["pruned"].as_array().map(Vec::len), Some(1), "{saved}");
    assert_eq!(
        s.json(&["cluster", "backups"], 0).as_array().map(Vec::len),
        Some(3)
    );
}

#[test]
fn bad_cluster_flags_are_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        cluster_support::output(
            std::process::Command::new(env!("CARGO_BIN_EXE_s3mover"))
                .args(args)
                .env("HOME", dir.path())
                .env("S3MOVER_REPO", dir.path().join("repo"))
                .env_remove("KUBECONFIG")
                .env_remove("S3MOVER_CLUSTER")
                .output()
                .expect("s3mover runs"),
        )
    };
    refused(
        run(&["cluster", "forget", "--cluster", "k3s", "--keep-last", "0"]),
        2,
        "keep at least 1",
    );
    refused(
        run(&["cluster", "backup", "--cluster", " "]),
        2,
        "cluster name is empty",
    );
    refused(run(&["-o", "yaml", "backups"]), 2, "-o yaml is only for");
    refused(
        run(&["cluster", "backups", "-o", "prometheus"]),
        2,
        "-o prometheus is only for",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cronjobs_apply_and_their_arguments_parse() {
    if !require_tool("the_cronjobs_apply_and_their_arguments_parse", "kubectl") {
        return;
    }
    let s = cluster_support::start().await;
    s.namespace("s3mover").await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/cluster-health");
    let rendered = s.kubectl(&["kustomize", &dir.display().to_string()], None);
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let yaml = String::from_utf8_lossy(&rendered.stdout).into_owned();
    let applied = s.kubectl(&["apply", "-f", "-"], Some(&yaml));
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let got = s.kubectl(&["get", "cronjobs", "-n", "s3mover", "-o", "json"], None);
    let list: serde_json::Value = serde_json::from_slice(&got.stdout).expect("JSON");
    let jobs = list["items"].as_array().expect("items");
    assert_eq!(jobs.len(), 3, "{list}");
    for job in jobs {
        let container = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
        let mut args: Vec<String> = container["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("string").to_string())
            .collect();
        // The earlier script's CronJob put `--format json` where its parser refused it; these
        // arguments must parse as they are.
        args.push("--help".into());
        let (code, _, stderr) = cluster_support::output(
            std::process::Command::new(env!("CARGO_BIN_EXE_s3mover"))
                .args(&args)
                .output()
                .expect("s3mover runs"),
        );
        assert_eq!(code, 0, "{args:?}: {stderr}");
    }
}
