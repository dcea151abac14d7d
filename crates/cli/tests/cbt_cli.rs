//! Changed Block Tracking through the binary, against the in-repo conformance server over real
//! TLS and a real unix socket: `cbt list` feeding `backup --changed-ranges`, backups taking
//! ranges straight from the stream, `cbt verify`, and falling back to a full read when change
//! tracking cannot be trusted.

mod common;

use common::*;
use s3mover_cbt_testserver::{Quirks, TestServer};

const MIB: u64 = 1 << 20;
const NS: &str = "apps";
const TOKEN: &str = "token-for-s3mover";

struct Fixture {
    env: Env,
    server: TestServer,
    snap1: std::path::PathBuf,
    snap2: std::path::PathBuf,
    changed: Vec<u64>,
}

fn fixture() -> Fixture {
    let env = Env::new();
    env.init();
    let snap1 = env.path("snap1.img");
    make_image(
        &snap1,
        32 * MIB,
        &[(0, MIB), (8 * MIB, 2 * MIB), (30 * MIB, 4096)],
        11,
    );
    let snap2 = env.path("snap2.img");
    std::fs::copy(&snap1, &snap2).unwrap();
    let changed = vec![4096 * 3, 5 * MIB, 9 * MIB + 4096 * 7, 31 * MIB];
    for (i, offset) in changed.iter().enumerate() {
        write_at(&snap2, *offset, &pseudo_random(4096, 100 + i as u64));
    }
    let server = TestServer::start(Quirks::hostpath()).expect("test server");
    server.grant(TOKEN, &[NS]);
    server.add_snapshot(NS, "snap1", "handle-1", &snap1);
    server.add_snapshot(NS, "snap2", "handle-2", &snap2);
    Fixture {
        env,
        server,
        snap1,
        snap2,
        changed,
    }
}

fn k8s_flags(f: &Fixture) -> Vec<String> {
    vec![
        "--cbt-address".into(),
        f.server.address().into(),
        "--cbt-ca-cert".into(),
        f.server.ca_file().display().to_string(),
        "--cbt-token".into(),
        TOKEN.into(),
        "-n".into(),
        NS.into(),
    ]
}

fn run_with(f: &Fixture, base: &[&str], extra: &[String]) -> serde_json::Value {
    let mut args: Vec<&str> = base.to_vec();
    args.extend(extra.iter().map(String::as_str));
    f.env.json(&args)
}

fn restore_matches(f: &Fixture, volume: &str, expected: &std::path::Path) {
    let target = f.env.path(&format!("restored-{volume}.img"));
    let _ = std::fs::remove_file(&target);
    f.env.ok(&[
        "restore",
        "latest",
        "--volume",
        volume,
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read(&target).unwrap() == std::fs::read(expected).unwrap(),
        "restore of {volume} is byte-exact"
    );
}

#[test]
fn backups_take_ranges_straight_from_the_kubernetes_stream() {
    let f = fixture();
    let flags = k8s_flags(&f);
    let full = run_with(
        &f,
        &[
            "backup",
            f.snap1.to_str().unwrap(),
            "--volume",
            "pvc",
            "-s",
            "snap1",
        ],
        &flags,
    );
    assert_eq!(full["changeSource"], "cbt-allocated", "{full}");
    // Allocated: 1 MiB (16 chunks) + 2 MiB (32 chunks) + one 4 KiB block (1 chunk).
    assert_eq!(
        full["bytesRead"],
        49 * 65536,
        "reads only the allocated chunks: {full}"
    );
    let incr = run_with(
        &f,
        &[
            "backup",
            f.snap2.to_str().unwrap(),
            "--volume",
            "pvc",
            "-s",
            "snap2",
            "-P",
            "handle-1",
        ],
        &flags,
    );
    assert_eq!(incr["changeSource"], "cbt-delta", "{incr}");
    assert_eq!(incr["parent"], full["id"]);
    assert_eq!(
        incr["bytesRead"],
        f.changed.len() as u64 * 65536,
        "reads exactly the changed chunks: {incr}"
    );
    restore_matches(&f, "pvc", &f.snap2);
    let show = f.env.json(&["show", incr["id"].as_str().unwrap()]);
    assert_eq!(show["cbt"]["snapshot"], "snap2");
    assert_eq!(show["cbt"]["baseSnapshotHandle"], "handle-1");
}

#[test]
fn cbt_list_json_feeds_backup_changed_ranges() {
    let f = fixture();
    let flags = k8s_flags(&f);
    f.env
        .ok(&["backup", f.snap1.to_str().unwrap(), "--volume", "v"]);
    let mut args = vec!["cbt", "list", "-o", "json", "-s", "snap2", "-P", "handle-1"];
    let owned: Vec<String> = flags.iter().map(|s| s.replace("--cbt-", "--")).collect();
    args.extend(owned.iter().map(String::as_str));
    let listing = f.env.ok(&args);
    let parsed: serde_json::Value = serde_json::from_str(&listing).expect("ranges file JSON");
    assert_eq!(
        parsed["blockMetadata"].as_array().unwrap().len(),
        f.changed.len()
    );
    let ranges = f.env.path("r.json");
    std::fs::write(&ranges, listing).unwrap();
    let incr = f.env.json(&[
        "backup",
        f.snap2.to_str().unwrap(),
        "--volume",
        "v",
        "--changed-ranges",
        ranges.to_str().unwrap(),
    ]);
    assert_eq!(incr["changeSource"], "changed-ranges");
    restore_matches(&f, "v", &f.snap2);
}

#[test]
fn csi_socket_flavour_records_handles_and_refuses_a_foreign_base() {
    let f = fixture();
    let socket = vec![
        "--cbt-socket".to_string(),
        f.server.socket().display().to_string(),
    ];
    let full = run_with(
        &f,
        &[
            "backup",
            f.snap1.to_str().unwrap(),
            "--volume",
            "csi",
            "-s",
            "handle-1",
        ],
        &socket,
    );
    assert_eq!(full["changeSource"], "cbt-allocated");
    let show = f.env.json(&["show", full["id"].as_str().unwrap()]);
    assert_eq!(show["cbt"]["snapshotHandle"], "handle-1");
    // A delta from a snapshot that is not the parent's would be a wrong incremental.
    let wrong = run_with(
        &f,
        &[
            "backup",
            f.snap2.to_str().unwrap(),
            "--volume",
            "csi",
            "-s",
            "handle-2",
            "-P",
            "handle-2",
        ],
        &socket,
    );
    assert_eq!(wrong["changeSource"], "hash-compare", "{wrong}");
    assert!(
        wrong["note"].as_str().unwrap().contains("whole volume"),
        "{wrong}"
    );
    restore_matches(&f, "csi", &f.snap2);
}

#[test]
fn unreachable_service_falls_back_to_a_full_read() {
    let f = fixture();
    f.env
        .ok(&["backup", f.snap1.to_str().unwrap(), "--volume", "v"]);
    let flags = vec![
        "--cbt-socket".to_string(),
        f.env.path("no-such.sock").display().to_string(),
    ];
    let out = run_with(
        &f,
        &[
            "backup",
            f.snap2.to_str().unwrap(),
            "--volume",
            "v",
            "-s",
            "x",
            "-P",
            "y",
        ],
        &flags,
    );
    assert_ne!(out["changeSource"], "cbt-delta");
    assert!(
        out["note"].as_str().unwrap().contains("change tracking"),
        "{out}"
    );
    restore_matches(&f, "v", &f.snap2);
}

#[test]
fn cbt_verify_passes_on_a_good_copy_and_fails_on_a_changed_block() {
    let f = fixture();
    let target = f.env.path("target.img");
    std::fs::copy(&f.snap1, &target).unwrap();
    let socket = f.server.socket().display().to_string();
    let args = [
        "cbt",
        "verify",
        "--source",
        f.snap2.to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
        "--socket",
        &socket,
        "-s",
        "handle-2",
        "-P",
        "handle-1",
    ];
    f.env.ok(&args);
    assert!(std::fs::read(&target).unwrap() == std::fs::read(&f.snap2).unwrap());
    // One block changed outside the listed ranges: the copy cannot match.
    write_at(&target, 20 * MIB, &pseudo_random(4096, 999));
    let out = f.env.run(&args);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&(20 * MIB).to_string()),
        "names the first differing offset: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
