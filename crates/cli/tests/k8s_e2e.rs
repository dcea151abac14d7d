//! End to end on the simulated cluster (crates/k8s-sim): `s3mover k8s backup` and
//! `k8s restore` of PersistentVolumeClaims with snapshots, temporary claims and mover Jobs
//! whose pods run the real `s3mover` binary in bubblewrap with loop devices, and the driver's
//! SnapshotMetadata service. Needs root, bubblewrap, losetup and kubectl.

mod k8s_support;

use k8s_support::{pattern, require, start, write_at};

const MIB: u64 = 1 << 20;

/// The headline: a full then a CBT-delta backup of a Block claim, the claim deleted, and a
/// restore under the same name that is byte-exact; nothing temporary left, one base kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn block_claim_full_delta_disaster_and_restore() {
    if !require("block_claim_full_delta_disaster_and_restore") {
        return;
    }
    let k8s = start(|_| {}).await;
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
    assert_eq!(first["bytesRead"], 4 * MIB, "only the allocated blocks are read: {first}");

    // The workload changes 5 blocks of 4 KiB.
    for i in 0..5u64 {
        write_at(&image, i * 1_000_000 / 4096 * 4096 + 8192, &pattern(10 + i, 4096));
    }
    let expected = std::fs::read(&image).expect("image");
    let second = k8s.s3mover_json(&["k8s", "backup", "data", "-n", "db"]);
    let second = &second[0];
    assert_eq!(second["status"], "ok", "{second}");
    assert_eq!(second["changeSource"], "cbt-delta", "{second}");
    assert_eq!(second["baseSnapshotHandle"], first["snapshotHandle"]);
    let read = second["bytesRead"].as_u64().expect("bytesRead");
    assert!(read > 0 && read <= 5 * 64 * 1024, "a delta reads only changed chunks: {second}");
    assert!(k8s.leftovers().await.is_empty(), "left: {:?}", k8s.leftovers().await);
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
    assert!(got == expected, "the restored volume differs from the backed-up one");
    assert!(k8s.leftovers().await.is_empty(), "left: {:?}", k8s.leftovers().await);

    // An existing claim is not overwritten unless asked.
    let (code, _, stderr) = k8s.s3mover(&["k8s", "restore", "data", "-n", "db"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}
