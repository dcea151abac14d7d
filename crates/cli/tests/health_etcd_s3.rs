//! The `etcd` health check against a real Garage bucket holding more than 1000 snapshot
//! objects named as k3s names them: every page of the listing is read (the earlier script read
//! one page of at most 1000 keys and so never saw the newest snapshots of a busy bucket), one
//! stale node fails the check, and a zero-byte snapshot fails it too.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::StreamExt;
use s3mover_engine::storage::{open_store_with_env, StoreOptions};
use s3mover_testkit::{garage_or_skip, Garage};

fn health(garage: &Garage, prefix: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let url = format!("s3://{}/{prefix}", garage.bucket());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3mover"))
        .args([
            "health",
            "--check",
            "etcd",
            "--etcd-snapshots",
            &url,
            "-o",
            "json",
        ])
        .args(extra)
        .envs(garage.env())
        .env_remove("S3MOVER_MAX_AGE")
        .output()
        .expect("s3mover runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

#[test]
fn more_than_a_thousand_snapshots_one_stale_node_and_an_empty_one() {
    let Some(garage) =
        garage_or_skip("more_than_a_thousand_snapshots_one_stale_node_and_an_empty_one")
    else {
        return;
    };
    let env: BTreeMap<String, String> = garage.env().into_iter().collect();
    let store = open_store_with_env(
        &format!("s3://{}/k3s-etcd-snapshots", garage.bucket()),
        &StoreOptions::default(),
        &|k| env.get(k).cloned(),
    )
    .expect("store");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // Three servers, a snapshot every 5 minutes for days: 1200 objects. Keys sort by node
    // then time, so server-3's newest ones sort last, far beyond the first 1000 keys.
    let mut keys: Vec<(String, usize)> = Vec::new();
    for i in 0..400 {
        let age = 60 + i * 300;
        keys.push((format!("etcd-snapshot-server-1-{}", now - age), 64));
        keys.push((format!("etcd-snapshot-server-2-{}.zip", now - age - 30), 64));
    }
    // server-3 stopped taking snapshots two days ago.
    for i in 0..400 {
        keys.push((
            format!("etcd-snapshot-server-3-{}", now - 2 * 86_400 - i * 300),
            64,
        ));
    }
    keys.push((format!(".metadata/etcd-snapshot-server-1-{}", now - 60), 10));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        futures::stream::iter(keys.iter())
            .map(|(key, size)| {
                let store = store.clone();
                async move {
                    store
                        .put(key, Bytes::from(vec![1u8; *size]))
                        .await
                        .expect("put")
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
    });

    let (code, report) = health(&garage, "k3s-etcd-snapshots", &[]);
    assert_eq!(code, 1, "{report}");
    let etcd = &report["checks"][0];
    assert_eq!(etcd["items"], 1200, "every page was listed: {etcd}");
    let message = etcd["message"].as_str().unwrap_or("");
    assert!(message.contains("server-3 (2d"), "{message}");
    assert!(
        !message.contains("server-1") && !message.contains("server-2"),
        "{message}"
    );
    let nodes = etcd["details"]["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    let server_1 = nodes
        .iter()
        .find(|n| n["node"] == "server-1")
        .expect("server-1");
    assert!(
        server_1["ageSeconds"].as_i64().unwrap_or(i64::MAX) < 3600,
        "{server_1}"
    );
    assert_eq!(server_1["sizeBytes"], 64);

    // With a threshold that covers server-3, the check passes …
    let (code, report) = health(&garage, "k3s-etcd-snapshots", &["--max-age", "etcd=3d"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["allPassed"], true);

    // … until an empty snapshot appears.
    runtime.block_on(async {
        store
            .put(&format!("on-demand-server-1-{}", now - 10), Bytes::new())
            .await
            .expect("put");
    });
    let (code, report) = health(&garage, "k3s-etcd-snapshots", &["--max-age", "etcd=3d"]);
    assert_eq!(code, 1, "{report}");
    assert!(
        report["checks"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("1 empty (zero-byte) snapshot(s): on-demand-server-1-"),
        "{report}"
    );
    // A prefix with nothing in it fails as well.
    let (code, report) = health(&garage, "nothing-here", &[]);
    assert_eq!(code, 1, "{report}");
}
