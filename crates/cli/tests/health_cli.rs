//! `s3mover health` against the simulated cluster: Longhorn BackupVolumes classified as the
//! earlier script did, s3mover's own PVC backups, the metadata documents, the node token; a
//! failing check makes the exit status non-zero (the earlier `verify-all` always exited 0);
//! the Prometheus output passes `promtool check metrics` and reaches a Pushgateway.

mod cluster_support;

use std::io::{BufRead, BufReader, Read, Write};

use cluster_support::{refused, require_tool, Sim};
use serde_json::json;

fn rfc3339(seconds_ago: i64) -> String {
    let t = time::OffsetDateTime::now_utc() - time::Duration::seconds(seconds_ago);
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

async fn backup_volume(s: &Sim, name: &str, volume: &str, last: Option<&str>) {
    let mut status = json!({"dataStored": "1048576"});
    if let Some(last) = last {
        status["lastBackupAt"] = json!(last);
    }
    s.create(json!({
        "apiVersion": "longhorn.io/v1beta2", "kind": "BackupVolume",
        "metadata": {"name": name, "namespace": "longhorn-system"},
        "spec": {"volumeName": volume},
        "status": status,
    }))
    .await;
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longhorn_volumes_are_classified_and_a_failure_exits_non_zero() {
    let s = cluster_support::start().await;
    s.namespace("db").await;
    s.namespace("longhorn-system").await;
    for (pv, pvc) in [
        ("pv-ok", "ok"),
        ("pv-stale", "stale"),
        ("pv-none", "none"),
        ("pv-bad", "bad"),
    ] {
        s.bound_pair(pv, "db", pvc, "driver.longhorn.io").await;
    }
    s.bound_pair("pv-local", "db", "local", "rancher.io/local-path")
        .await;
    backup_volume(&s, "bv-ok", "pv-ok", Some(&rfc3339(3600))).await;
    backup_volume(&s, "bv-stale", "pv-stale", Some(&rfc3339(3 * 86_400))).await;
    backup_volume(&s, "bv-bad", "pv-bad", Some("last tuesday")).await;

    let report = s.json(&["health", "--check", "longhorn"], 1);
    assert_eq!(report["allPassed"], false);
    let longhorn = check(&report, "longhorn");
    assert_eq!(longhorn["status"], "fail");
    let verdicts: Vec<(String, String)> = longhorn["details"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| {
            (
                v["pvc"].as_str().unwrap_or("").to_string(),
                v["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expect = |pvc: &str, verdict: &str| {
        assert!(
            verdicts.contains(&(format!("db/{pvc}"), verdict.to_string())),
            "{pvc} {verdict}: {verdicts:?}"
        )
    };
    expect("ok", "OK");
    expect("stale", "STALE");
    expect("none", "NO_BACKUP");
    expect("bad", "PARSE_ERROR");
    assert_eq!(verdicts.len(), 4, "the local-path volume is not Longhorn's");
    assert_eq!(longhorn["details"]["otherDriverVolumes"], 1);

    // A longer threshold makes the stale one fine; the missing and unreadable still fail.
    let report = s.json(
        &["health", "--check", "longhorn", "--max-age", "longhorn=4d"],
        1,
    );
    assert_eq!(check(&report, "longhorn")["failedItems"], 2);

    let (code, text, _) = s.run(&["health", "--check", "longhorn"]);
    assert_eq!(code, 1);
    assert!(text.contains("FAIL  longhorn"), "{text}");
    assert!(text.contains("1 of 1 checks failed"), "{text}");

    let (code, metrics, stderr) = s.run(&["health", "--check", "longhorn", "-o", "prometheus"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        metrics.contains("s3mover_check_ok{check=\"longhorn\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("s3mover_longhorn_volumes{status=\"NO_BACKUP\"} 1"),
        "{metrics}"
    );
    promtool(&metrics);
}

/// `promtool check metrics` accepts the exposition (when promtool is there).
fn promtool(metrics: &str) {
    if !require_tool("promtool check metrics", "promtool") {
        return;
    }
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lint =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(lint.trim().is_empty(), "promtool lint: {lint}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_pvc_backups_and_node_token_pass_and_fail_as_they_should() {
    let s = cluster_support::start().await;
    s.namespace("db").await;
    s.bound_pair("pv-a", "db", "data", "hostpath.csi.k8s.io")
        .await;
    s.bound_pair("pv-b", "db", "logs", "hostpath.csi.k8s.io")
        .await;
    let run = |args: &[&str]| s.json(args, 0);

    // No metadata document yet: fail; one backup later: pass.
    let report = s.json(&["health", "--check", "metadata", "--cluster", "prod"], 1);
    assert!(check(&report, "metadata")["message"]
        .as_str()
        .unwrap_or("")
        .contains("no metadata"));
    run(&["cluster", "backup", "--cluster", "prod"]);
    let report = run(&["health", "--check", "metadata", "--cluster", "prod"]);
    assert_eq!(report["allPassed"], true, "{report}");
    // Another cluster's documents are not this one's.
    s.json(&["health", "--check", "metadata", "--cluster", "prod-2"], 1);

    // s3mover's own backups of claims: one backed up (a volume named NAMESPACE/PVC), one not.
    let image = s.dir.path().join("data.img");
    std::fs::write(&image, vec![7u8; 256 * 1024]).expect("image");
    let image_arg = image.display().to_string();
    run(&["backup", &image_arg, "--volume", "db/data"]);
    let report = s.json(&["health", "--check", "pvc-backups", "-n", "db"], 1);
    let pvc = check(&report, "pvc-backups");
    assert!(
        pvc["message"]
            .as_str()
            .unwrap_or("")
            .contains("db/logs has no backup"),
        "{pvc}"
    );
    assert_eq!(pvc["failedItems"], 1);
    assert!(
        pvc["details"]["claims"][0]["changeSource"].is_string(),
        "{pvc}"
    );
    assert_eq!(pvc["details"]["claims"][0]["baseSnapshotKept"], false);
    let report = run(&[
        "health",
        "--check",
        "pvc-backups",
        "-n",
        "db",
        "-l",
        "app=other",
    ]);
    assert_eq!(
        check(&report, "pvc-backups")["status"],
        "warn",
        "no claim selected"
    );

    // The node token, kept in a Secret.
    let token = s.dir.path().join("node-token");
    std::fs::write(&token, "K10abc::server:0123456789abcdef\n").expect("token");
    let token_arg = token.display().to_string();
    s.json(
        &[
            "health",
            "--check",
            "node-token",
            "--secret",
            "kube-system/k3s-node-token",
        ],
        1,
    );
    run(&[
        "cluster",
        "node-token",
        "backup",
        "--token-file",
        &token_arg,
        "--to-secret",
        "kube-system/k3s-node-token",
    ]);
    let report = run(&[
        "health",
        "--check",
        "node-token,metadata",
        "--secret",
        "kube-system/k3s-node-token",
        "--token-file",
        &token_arg,
        "--cluster",
        "prod",
    ]);
    assert_eq!(report["allPassed"], true, "{report}");
    // The token file changed after the copy was made: the copy is stale.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(120);
    std::fs::File::options()
        .write(true)
        .open(&token)
        .and_then(|f| f.set_modified(later))
        .expect("touch");
    let report = s.json(
        &[
            "health",
            "--check",
            "node-token",
            "--secret",
            "kube-system/k3s-node-token",
            "--token-file",
            &token_arg,
        ],
        1,
    );
    assert!(check(&report, "node-token")["message"]
        .as_str()
        .unwrap_or("")
        .contains("older than"));

    // Every failing check fails the run, and the metrics say which.
    let (code, metrics, stderr) = s.run(&[
        "health",
        "--check",
        "metadata,pvc-backups",
        "--cluster",
        "prod",
        "-n",
        "db",
        "-o",
        "prometheus",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        metrics.contains("s3mover_check_ok{check=\"metadata\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("s3mover_check_ok{check=\"pvc-backups\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("s3mover_pvc_backup_age_seconds{namespace=\"db\",pvc=\"data\"}"),
        "{metrics}"
    );
    promtool(&metrics);
}

/// A one-request HTTP server: answers 200 and hands back what it received.
fn pushgateway() -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            let end = line == "\r\n";
            head.push_str(&line);
            if end {
                break;
            }
        }
        let mut body = vec![0u8; length];
        let _ = reader.read_exact(&mut body);
        let mut stream = reader.into_inner();
        let _ =
            stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        let _ = tx.send(head + &String::from_utf8_lossy(&body));
    });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_pushed_and_local_etcd_snapshots_are_checked() {
    let s = cluster_support::start().await;
    // k3s also keeps snapshots on the node's disk; a directory is a location like a bucket.
    let snapshots = s.dir.path().join("snapshots");
    std::fs::create_dir_all(snapshots.join(".metadata")).expect("dir");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    std::fs::write(
        snapshots.join(format!("etcd-snapshot-server-1-{}", now - 600)),
        b"etcd",
    )
    .expect("w");
    std::fs::write(
        snapshots.join(format!(".metadata/etcd-snapshot-server-1-{}", now - 600)),
        b"",
    )
    .expect("w");
    let location = snapshots.display().to_string();
    let (url, received) = pushgateway();
    let report = s.json(
        &[
            "health",
            "--check",
            "etcd",
            "--etcd-snapshots",
            &location,
            "--pushgateway",
            &url,
        ],
        0,
    );
    assert_eq!(
        check(&report, "etcd")["items"],
        1,
        "the .metadata record is not a snapshot"
    );
    let request = received
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the Pushgateway got a request");
    assert!(
        request.starts_with("PUT /metrics/job/s3mover_health HTTP/1.1"),
        "{request}"
    );
    assert!(
        request.contains("s3mover_check_ok{check=\"etcd\"} 1"),
        "{request}"
    );
    assert!(
        request.contains("s3mover_etcd_snapshot_age_seconds{node=\"server-1\"}"),
        "{request}"
    );

    // An empty snapshot is a failure, even the newest of a fresh node.
    std::fs::write(
        snapshots.join(format!("etcd-snapshot-server-1-{}", now - 60)),
        b"",
    )
    .expect("w");
    let report = s.json(
        &["health", "--check", "etcd", "--etcd-snapshots", &location],
        1,
    );
    assert!(check(&report, "etcd")["message"]
        .as_str()
        .unwrap_or("")
        .contains("zero-byte"));
}

#[test]
fn bad_health_flags_are_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        cluster_support::output(
            std::process::Command::new(env!("CARGO_BIN_EXE_s3mover"))
                .args(args)
                .env("HOME", dir.path())
                .env_remove("KUBECONFIG")
                .env_remove("S3MOVER_MAX_AGE")
                .env_remove("S3MOVER_HEALTH_CHECKS")
                .output()
                .expect("s3mover runs"),
        )
    };
    refused(
        run(&["health", "--check", "etcd,bogus"]),
        2,
        "no such check",
    );
    refused(run(&["health", "--max-age", "etcd=soon"]), 2, "--max-age");
    refused(
        run(&["health", "--max-age", "longhorn"]),
        2,
        "CHECK=DURATION",
    );
    refused(run(&["health", "--pushgateway", "ftp://x"]), 2, "http://");
}
