//! End to end on the simulated cluster (crates/k8s-sim): `s3mover k8s backup` and
//! `k8s restore` of PersistentVolumeClaims with snapshots, temporary claims and mover Jobs
//! whose pods run the real `s3mover` binary in bubblewrap with loop devices, and the driver's
//! SnapshotMetadata service. Needs root, bubblewrap, losetup and kubectl.

mod k8s_support;

use k8s_support::{pattern, require, start, write_at};
use s3mover_k8s_sim::controllers::CbtMode;

const MIB: u64 = 1 << 20;

/// The headline: a full then a CBT-delta backup of a Block claim, the claim deleted, and a
/// restore under the same name that is byte-exact; nothing temporary left, one base kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn block_claim_full_delta_disaster_and_restore() {
    if !require("block_claim_full_delta_disaster_and_restore") {
        return;
    }
    let k8s = start(|_| {}).await;
    full_delta_disaster_and_restore(&k8s).await;
}

/// The same on copy-on-write storage: the driver's images live on a reflink filesystem (XFS),
/// where a snapshot and a claim from it share blocks with the volume and the changed blocks are
/// found without comparing the shared ones (`bench/k8s.sh` measures this kind of storage).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn block_claim_round_trip_on_copy_on_write_storage() {
    let test = "block_claim_round_trip_on_copy_on_write_storage";
    if !require(test) {
        return;
    }
    let Some(fs) = s3mover_testkit::reflink_or_skip(test, 1 << 30) else {
        return;
    };
    let k8s = start(|c| c.state_dir = Some(fs.path().join("csi"))).await;
    full_delta_disaster_and_restore(&k8s).await;
    drop(k8s);
}

async fn full_delta_disaster_and_restore(k8s: &k8s_support::K8s) {
    k8s.namespace("db");
    k8s.claim("db", "data", 8 * MIB, "Block", &[]).await;
    let image = k8s.image_of("db", "data").await;
    write_at(&image, 0, &pattern(1, 3 * MIB as usize));
    write_at(&image, 6 * MIB, &pattern(2, MIB as usize));

    let first = k8s.s3mover_json(&["k8s", "backup", "data", "-n", "db"]);
    let first = &first[0];
    assert_eq!(first["status"], "ok", "{first}");
    assert_eq!(first["namespace"], "db");
    assert_eq!(first["pvc"], "data");
    assert_eq!(first["changeSource"], "cbt-allocated", "{first}");
    assert_eq!(
        first["bytesRead"],
        4 * MIB,
        "only the allocated blocks are read: {first}"
    );

    // The workload changes 5 blocks of 4 KiB.
    for i in 0..5u64 {
        write_at(
            &image,
            i * 1_000_000 / 4096 * 4096 + 8192,
            &pattern(10 + i, 4096),
        );
    }
    let expected = std::fs::read(&image).expect("image");
    let second = k8s.s3mover_json(&["k8s", "backup", "data", "-n", "db"]);
    let second = &second[0];
    assert_eq!(second["status"], "ok", "{second}");
    assert_eq!(second["changeSource"], "cbt-delta", "{second}");
    assert_eq!(second["baseSnapshotHandle"], first["snapshotHandle"]);
    let read = second["bytesRead"].as_u64().expect("bytesRead");
    assert!(
        read > 0 && read <= 5 * 64 * 1024,
        "a delta reads only changed chunks: {second}"
    );
    k8s.assert_no_leftovers().await;
    assert_eq!(
        k8s.bases("db", "data").await,
        vec![second["snapshot"].as_str().expect("snapshot").to_string()],
        "only the newest snapshot is kept"
    );

    // Disaster: the claim is gone.
    k8s.kubectl(&["delete", "pvc", "data", "-n", "db", "--wait=true"], None);
    let restored = k8s.s3mover_json(&["k8s", "restore", "data", "-n", "db"]);
    assert_eq!(restored["pvc"], "data", "{restored}");
    assert_eq!(restored["backup"], second["id"]);
    k8s.wait_bound("db", "data").await;
    let image = k8s.image_of("db", "data").await;
    let got = std::fs::read(&image).expect("restored image");
    assert_eq!(got.len(), expected.len());
    assert!(
        got == expected,
        "the restored volume differs from the backed-up one"
    );
    k8s.assert_no_leftovers().await;

    // An existing claim is not overwritten unless asked.
    let (code, _, stderr) = k8s.s3mover(&["k8s", "restore", "data", "-n", "db"]);
    assert_ne!(code, 0);
    assert_one_line_reason(&stderr, "already exists");
}

/// The reason is one `s3mover:` line (progress lines may come before it).
fn assert_one_line_reason(stderr: &str, says: &str) {
    let reasons: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("s3mover: "))
        .collect();
    assert_eq!(reasons.len(), 1, "one reason line: {stderr}");
    assert!(reasons[0].contains(says), "{stderr}");
}

/// A Filesystem claim: read through a Block claim made from its snapshot (the content is
/// annotated to allow the mode change), restored through a Block claim whose volume is handed
/// to a new Filesystem claim; the data is byte-exact. Run with the orchestrator's RBAC.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn filesystem_claim_round_trip_with_the_orchestrator_role() {
    if !require("filesystem_claim_round_trip_with_the_orchestrator_role") {
        return;
    }
    let mut k8s = start(|_| {}).await;
    k8s.namespace("app");
    k8s.claim("app", "files", 4 * MIB, "Filesystem", &[]).await;
    let image = k8s.image_of("app", "files").await;
    write_at(&image, 4096, &pattern(7, 2 * MIB as usize));
    let expected = std::fs::read(&image).expect("image");
    k8s.use_orchestrator_role();

    let (code, stdout, stderr) =
        k8s.s3mover(&["k8s", "backup", "files", "-n", "app", "-o", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let out: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(out[0]["status"], "ok", "{out}");
    // The mover's progress, read from its log with the orchestrator's own permissions: the
    // last figure is the whole read.
    let read = out[0]["bytesRead"].as_u64().expect("bytesRead") as f64 / MIB as f64;
    assert!(
        stderr.contains(&format!("app/files: data read: {read:.1} of "))
            && stderr.contains("(100%)"),
        "{stderr}"
    );
    k8s.kubectl(
        &["delete", "pvc", "files", "-n", "app", "--wait=true"],
        None,
    );
    let restored = k8s.s3mover_json(&["k8s", "restore", "files", "-n", "app"]);
    assert_eq!(restored["pvc"], "files", "{restored}");
    k8s.wait_bound("app", "files").await;
    let claim = k8s.kubectl(
        &[
            "get",
            "pvc",
            "files",
            "-n",
            "app",
            "-o",
            "jsonpath={.spec.volumeMode}",
        ],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&claim.stdout), "Filesystem");
    let got = std::fs::read(k8s.image_of("app", "files").await).expect("restored image");
    assert!(
        got == expected,
        "the restored volume differs from the backed-up one"
    );
    k8s.assert_no_leftovers().await;
}

/// A driver without a SnapshotMetadataService: the whole volume is read, only what differs
/// from the last backup is uploaded, and the output says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_driver_without_cbt_reads_whole_volumes_and_says_so() {
    if !require("a_driver_without_cbt_reads_whole_volumes_and_says_so") {
        return;
    }
    let k8s = start(|c| c.cbt = CbtMode::Disabled).await;
    k8s.namespace("db");
    k8s.claim("db", "data", 4 * MIB, "Block", &[]).await;
    let image = k8s.image_of("db", "data").await;
    write_at(&image, 0, &pattern(3, MIB as usize));
    let first = k8s.s3mover_json(&["k8s", "backup", "data", "-n", "db"]);
    assert_eq!(first[0]["status"], "ok", "{first}");
    assert!(
        first[0]["note"]
            .as_str()
            .is_some_and(|n| n.contains("no SnapshotMetadataService")),
        "{first}"
    );
    assert_eq!(first[0]["bytesRead"], 4 * MIB);
    write_at(&image, 2 * MIB, &pattern(4, 4096));
    let second = k8s.s3mover_json(&["k8s", "backup", "data", "-n", "db"]);
    assert_eq!(second[0]["changeSource"], "hash-compare", "{second}");
    assert_eq!(second[0]["bytesRead"], 4 * MIB);
    assert!(
        second[0]["bytesUploaded"].as_u64().expect("uploaded") < MIB,
        "{second}"
    );
    assert!(k8s.leftovers().await.is_empty());
}

/// A CBT service that refuses the mover's token: the backup falls back to a full read
/// deduplicated against the parent, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_token_falls_back_and_says_why() {
    if !require("a_refused_token_falls_back_and_says_why") {
        return;
    }
    let k8s = start(|c| c.cbt = CbtMode::RefuseTokens).await;
    k8s.namespace("db");
    k8s.claim("db", "data", 4 * MIB, "Block", &[]).await;
    write_at(
        &k8s.image_of("db", "data").await,
        0,
        &pattern(5, MIB as usize),
    );
    let out = k8s.s3mover_json(&["k8s", "backup", "data", "-n", "db"]);
    assert_eq!(out[0]["status"], "ok", "{out}");
    let note = out[0]["note"].as_str().unwrap_or_default();
    assert!(note.contains("change tracking unavailable"), "{out}");
    assert_eq!(out[0]["bytesRead"], 4 * MIB, "{out}");
}

/// Failures: a snapshot that never becomes ready and an image that cannot be pulled each end
/// with a one-line reason, a non-zero exit, nothing left behind, and the earlier backup intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_are_one_line_and_leave_nothing() {
    if !require("failures_are_one_line_and_leave_nothing") {
        return;
    }
    let k8s = start(|_| {}).await;
    k8s.namespace("db");
    k8s.claim("db", "data", 4 * MIB, "Block", &[]).await;
    write_at(
        &k8s.image_of("db", "data").await,
        0,
        &pattern(6, MIB as usize),
    );
    let good = k8s.s3mover_json(&["k8s", "backup", "data", "-n", "db"]);
    assert_eq!(good[0]["status"], "ok", "{good}");

    let (code, stdout, stderr) = k8s.s3mover(&[
        "k8s",
        "backup",
        "data",
        "-n",
        "db",
        "--mover-image",
        "registry.invalid/nope:1",
        "-o",
        "json",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert_one_line_reason(&stderr, "cannot start: ErrImagePull");
    let out: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(out[0]["status"], "failed");
    assert!(
        out[0]["phases"]["data"].as_f64().expect("data phase") < 60.0,
        "detected at once: {out}"
    );
    k8s.assert_no_leftovers().await;
    assert_eq!(
        k8s.bases("db", "data").await,
        vec![good[0]["snapshot"].as_str().expect("snapshot").to_string()],
        "the last good snapshot stays the base"
    );

    let (code, _, stderr) = k8s.s3mover(&["k8s", "backup", "missing", "-n", "db"]);
    assert_eq!(code, 1);
    assert_one_line_reason(&stderr, "claim db/missing does not exist");

    // A storage class that does not exist is refused before anything is created...
    let (code, _, stderr) = k8s.s3mover(&[
        "k8s",
        "restore",
        "data",
        "-n",
        "db",
        "--to",
        "copy",
        "--storage-class",
        "fast-ssd",
    ]);
    assert_ne!(code, 0);
    assert_one_line_reason(&stderr, "StorageClass fast-ssd does not exist");
    let claims: kube::Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        kube::Api::namespaced(k8s.client.clone(), "db");
    assert!(
        claims.get_opt("copy").await.expect("get claim").is_none(),
        "no claim was created"
    );
    // ...where a claim asking for it would wait with the PV controller's event.
    k8s.kubectl(
        &["apply", "-f", "-"],
        Some(
            r#"{"apiVersion":"v1","kind":"PersistentVolumeClaim",
                "metadata":{"name":"stray","namespace":"db"},
                "spec":{"accessModes":["ReadWriteOnce"],"storageClassName":"fast-ssd",
                        "resources":{"requests":{"storage":"1Mi"}}}}"#,
        ),
    );
    let wanted = r#"storageclass.storage.k8s.io "fast-ssd" not found"#;
    let mut seen = String::new();
    for _ in 0..100 {
        let events = k8s.kubectl(
            &[
                "get",
                "events",
                "-n",
                "db",
                "-o",
                "jsonpath={.items[*].message}",
            ],
            None,
        );
        seen = String::from_utf8_lossy(&events.stdout).into_owned();
        if seen.contains(wanted) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(seen.contains(wanted), "events: {seen}");
    k8s.kubectl(&["delete", "pvc", "stray", "-n", "db"], None);

    let out = k8s.s3mover_json(&["k8s", "backups", "-n", "db"]);
    assert_eq!(
        out.as_array().map(Vec::len),
        Some(1),
        "only the good backup: {out}"
    );
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_s3mover"))
        .args(["verify", "--read-data"])
        .env("S3MOVER_REPO", &k8s.repo)
        .env("S3MOVER_PASSWORD", k8s_support::PASSWORD)
        .output()
        .expect("verify");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// A snapshot that never becomes ready: the timeout names it; nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_that_never_becomes_ready_times_out() {
    if !require("a_snapshot_that_never_becomes_ready_times_out") {
        return;
    }
    let k8s = start(|c| c.snapshots_never_ready = true).await;
    k8s.namespace("db");
    k8s.claim("db", "data", 4 * MIB, "Block", &[]).await;
    let (code, _, stderr) = k8s.s3mover(&["k8s", "backup", "data", "-n", "db", "--timeout", "3s"]);
    assert_eq!(code, 1, "{stderr}");
    assert_one_line_reason(&stderr, "did not become ready");
    k8s.assert_no_leftovers().await;
}

/// Twenty claims selected by label, four at a time, with the orchestrator's RBAC: all backed
/// up, nothing left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_claims_by_label_four_at_a_time() {
    if !require("twenty_claims_by_label_four_at_a_time") {
        return;
    }
    let mut k8s = start(|_| {}).await;
    k8s.namespace("fleet");
    for i in 0..20u64 {
        let name = format!("vol-{i:02}");
        k8s.claim("fleet", &name, MIB, "Block", &[("backup", "nightly")])
            .await;
        write_at(
            &k8s.image_of("fleet", &name).await,
            0,
            &pattern(100 + i, 64 * 1024),
        );
    }
    k8s.claim("fleet", "other", MIB, "Block", &[]).await;
    k8s.use_orchestrator_role();
    let out = k8s.s3mover_json(&[
        "k8s",
        "backup",
        "-l",
        "backup=nightly",
        "-A",
        "--parallel",
        "4",
    ]);
    let rows = out.as_array().expect("array");
    assert_eq!(rows.len(), 20, "{out}");
    for row in rows {
        assert_eq!(row["status"], "ok", "{row}");
        assert_eq!(row["namespace"], "fleet");
    }
    assert!(rows.iter().all(|r| r["pvc"] != "other"));
    k8s.assert_no_leftovers().await;
}

/// A mover that fails every time is retried `--backoff-limit` times, no more; the claim fails
/// with the mover's own words, and nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_mover_is_retried_a_bounded_number_of_times() {
    if !require("a_failing_mover_is_retried_a_bounded_number_of_times") {
        return;
    }
    let k8s = start(|c| {
        c.images.insert(
            "s3mover:broken".into(),
            s3mover_k8s_sim::controllers::ImageConfig::entrypoint("/bin/false"),
        );
    })
    .await;
    k8s.namespace("db");
    k8s.claim("db", "data", MIB, "Block", &[]).await;
    let (code, _, stderr) = k8s.s3mover(&[
        "k8s",
        "backup",
        "data",
        "-n",
        "db",
        "--mover-image",
        "s3mover:broken",
        "--backoff-limit",
        "1",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert_one_line_reason(&stderr, "mover failed after 2 attempts");
    k8s.assert_no_leftovers().await;
    assert!(
        k8s.bases("db", "data").await.is_empty(),
        "a failed backup keeps no snapshot"
    );
}

/// A temporary claim the driver cannot provision (the claim reports more capacity than any
/// volume can have): the backup ends with one line quoting the provisioner's event, a
/// non-zero exit, nothing left behind, and the earlier backup intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_temporary_claim_that_stays_pending_says_why() {
    if !require("a_temporary_claim_that_stays_pending_says_why") {
        return;
    }
    let k8s = start(|_| {}).await;
    k8s.namespace("db");
    k8s.claim("db", "data", 4 * MIB, "Block", &[]).await;
    write_at(
        &k8s.image_of("db", "data").await,
        0,
        &pattern(8, MIB as usize),
    );
    let good = k8s.s3mover_json(&["k8s", "backup", "data", "-n", "db"]);
    assert_eq!(good[0]["status"], "ok", "{good}");

    // 9 EiB: more than a file (and so a volume of the driver) can hold.
    k8s.kubectl(
        &[
            "patch",
            "pvc",
            "data",
            "-n",
            "db",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"capacity":{"storage":"9Ei"}}}"#,
        ],
        None,
    );
    let (code, _, stderr) = k8s.s3mover(&["k8s", "backup", "data", "-n", "db", "--timeout", "10s"]);
    assert_eq!(code, 1, "{stderr}");
    assert_one_line_reason(
        &stderr,
        "stayed Pending: ProvisioningFailed: failed to provision",
    );
    k8s.assert_no_leftovers().await;
    assert_eq!(
        k8s.bases("db", "data").await,
        vec![good[0]["snapshot"].as_str().expect("snapshot").to_string()],
        "the last good snapshot stays the base"
    );
    let out = k8s.s3mover_json(&["k8s", "backups", "-n", "db"]);
    assert_eq!(out.as_array().map(Vec::len), Some(1), "{out}");
}

/// The API server fails the first requests that read the claim, its volume and the snapshot
/// classes and that create Jobs and claims (503, 500, and a connection closed unanswered), and
/// every watch is dropped while the backup runs: the requests are retried and the backup
/// succeeds, leaving nothing behind. The restore then rides out the same kind of failures of
/// its reads and creates.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_errors_and_dropped_watches_are_retried() {
    if !require("api_errors_and_dropped_watches_are_retried") {
        return;
    }
    let k8s = start(|_| {}).await;
    k8s.namespace("db");
    k8s.claim("db", "data", 4 * MIB, "Block", &[]).await;
    write_at(
        &k8s.image_of("db", "data").await,
        0,
        &pattern(9, MIB as usize),
    );
    let fail_once = |method: &str, path: &str, status: u16| {
        k8s.sim.inject(s3mover_k8s_sim::Fault {
            path_contains: path.into(),
            method: Some(method.into()),
            watch: None,
            status,
            count: 1,
        });
    };
    for (method, path, status) in [
        ("GET", "/namespaces/db/persistentvolumeclaims/data", 503),
        ("GET", "/api/v1/persistentvolumes/", 0),
        ("GET", "/volumesnapshotclasses", 500),
        ("POST", "/namespaces/db/jobs", 503),
        ("POST", "/namespaces/db/jobs", 0),
        ("POST", "/namespaces/db/persistentvolumeclaims", 500),
        ("POST", "/namespaces/db/persistentvolumeclaims", 503),
        ("POST", "/namespaces/db/volumesnapshots", 503),
    ] {
        fail_once(method, path, status);
    }
    let mut child = k8s
        .s3mover_command(&["k8s", "backup", "data", "-n", "db", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("s3mover runs");
    let mut dropped = 0u32;
    while child.try_wait().expect("s3mover").is_none() {
        k8s.sim.drop_watches();
        dropped += 1;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert!(dropped > 1, "watches were dropped during the backup");
    let out = child.wait_with_output().expect("s3mover");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(result[0]["status"], "ok", "{result}");
    k8s.assert_no_leftovers().await;

    let expected = std::fs::read(k8s.image_of("db", "data").await).expect("image");
    k8s.kubectl(&["delete", "pvc", "data", "-n", "db", "--wait=true"], None);
    for (method, path, status) in [
        ("GET", "/namespaces/db/persistentvolumeclaims/data", 503),
        ("POST", "/namespaces/db/persistentvolumeclaims", 0),
        ("POST", "/namespaces/db/persistentvolumeclaims", 503),
        ("POST", "/namespaces/db/jobs", 500),
    ] {
        fail_once(method, path, status);
    }
    let restored = k8s.s3mover_json(&["k8s", "restore", "data", "-n", "db"]);
    assert_eq!(restored["backup"], result[0]["id"], "{restored}");
    k8s.wait_bound("db", "data").await;
    let got = std::fs::read(k8s.image_of("db", "data").await).expect("restored image");
    assert!(got == expected, "the restored volume differs");
    k8s.assert_no_leftovers().await;
}

/// The mover pod is deleted while it runs: the Job's bounded retry runs another pod and the
/// backup completes (or, should the retry fail too, ends with one line); nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mover_pod_killed_mid_run_is_retried_by_its_job() {
    if !require("a_mover_pod_killed_mid_run_is_retried_by_its_job") {
        return;
    }
    let k8s = start(|_| {}).await;
    k8s.namespace("db");
    k8s.claim("db", "data", 64 * MIB, "Block", &[]).await;
    write_at(
        &k8s.image_of("db", "data").await,
        0,
        &pattern(11, 48 * MIB as usize),
    );
    let mut child = k8s
        .s3mover_command(&["k8s", "backup", "data", "-n", "db", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("s3mover runs");
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(k8s.client.clone(), "db");
    let started = std::time::Instant::now();
    let killed = loop {
        if let Some((name, _)) = k8s
            .mover_pods("db")
            .await
            .into_iter()
            .find(|(_, phase)| phase == "Running")
        {
            pods.delete(&name, &Default::default())
                .await
                .expect("delete the running mover pod");
            break name;
        }
        assert!(
            child.try_wait().expect("s3mover").is_none(),
            "the backup ended before its mover pod was seen running"
        );
        assert!(
            started.elapsed() < k8s_support::PATIENCE,
            "no mover pod ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    // The Job counts the killed pod as a failed attempt.
    let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> =
        kube::Api::namespaced(k8s.client.clone(), "db");
    let mut failed_attempts = 0;
    while child.try_wait().expect("s3mover").is_none() {
        let list = jobs
            .list(&kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=s3mover"))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        for job in list {
            failed_attempts = failed_attempts.max(job.status.and_then(|s| s.failed).unwrap_or(0));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        failed_attempts >= 1,
        "the pod {killed} was killed before it finished"
    );
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("s3mover");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    if out.status.success() {
        assert_eq!(result[0]["status"], "ok", "{result}");
        let listed = k8s.s3mover_json(&["k8s", "backups", "-n", "db"]);
        assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    } else {
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(result[0]["status"], "failed", "{result}");
        assert_one_line_reason(&stderr, "mover failed after");
    }
    assert!(
        !k8s.mover_pods("db").await.iter().any(|(n, _)| *n == killed),
        "the killed pod {killed} is gone"
    );
    k8s.assert_no_leftovers().await;
}

/// Ctrl-C once the mover Job exists: a non-zero exit, and everything the run created (the
/// snapshot, the temporary claim, the Job and its pods, the CA ConfigMap) is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ctrl_c_removes_everything_the_backup_created() {
    if !require("ctrl_c_removes_everything_the_backup_created") {
        return;
    }
    let k8s = start(|_| {}).await;
    k8s.namespace("db");
    k8s.claim("db", "data", 4 * MIB, "Block", &[]).await;
    let child = k8s
        .s3mover_command(&["k8s", "backup", "data", "-n", "db"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("s3mover runs");
    let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> =
        kube::Api::namespaced(k8s.client.clone(), "db");
    let started = std::time::Instant::now();
    loop {
        let list = jobs
            .list(&kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=s3mover"))
            .await
            .expect("list jobs");
        if !list.items.is_empty() {
            break;
        }
        assert!(started.elapsed() < k8s_support::PATIENCE, "no mover Job");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !k8s.leftovers().await.is_empty(),
        "the run has created objects"
    );
    let pid = child.id() as libc::pid_t;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0, "SIGINT");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("s3mover");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_one_line_reason(&stderr, "interrupted");
    k8s.assert_no_leftovers().await;
    assert!(k8s.bases("db", "data").await.is_empty(), "no base is kept");
}

/// The repository's private CA (`--ca-cert`, `S3MOVER_CA_CERT`) reaches the commands that read
/// the repository themselves: a CA file that cannot be read is named in one line, before any
/// object is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_repository_ca_certificate_reaches_k8s_commands() {
    if !require("the_repository_ca_certificate_reaches_k8s_commands") {
        return;
    }
    let k8s = start(|_| {}).await;
    k8s.namespace("db");
    let repo = ["--repo", "s3://127.0.0.1:9/bucket"];
    let ca = "/nonexistent/private-ca.pem";
    for command in [
        vec!["k8s", "restore", "data", "-n", "db", "--ca-cert", ca],
        vec!["k8s", "backups", "-n", "db", "--ca-cert", ca],
        vec!["k8s", "status", "-n", "db", "--ca-cert", ca],
    ] {
        let args: Vec<&str> = command.iter().chain(repo.iter()).copied().collect();
        let (code, _, stderr) = k8s.s3mover(&args);
        assert_ne!(code, 0, "{args:?}");
        assert_one_line_reason(&stderr, &format!("cannot read --ca-cert {ca}"));
    }
    let out = k8s
        .s3mover_command(&["k8s", "restore", "data", "-n", "db", repo[0], repo[1]])
        .env("S3MOVER_CA_CERT", ca)
        .output()
        .expect("s3mover runs");
    assert_ne!(out.status.code(), Some(0));
    assert_one_line_reason(
        &String::from_utf8_lossy(&out.stderr),
        &format!("cannot read --ca-cert {ca}"),
    );
    k8s.assert_no_leftovers().await;
}
