//! Benchmark, not a test (`#[ignore]`; `bench/k8s.sh` runs it): what `s3mover k8s backup`
//! of a Block claim on the simulated cluster costs beyond `s3mover backup` of the same data.
//!
//! A claim (1 GiB by default) is filled with data and backed up once. Then, each round, the
//! workload writes 2000 random 4 KiB blocks and both are timed on the same change:
//!
//! - `k8s backup`: VolumeSnapshot, temporary claim from it, a mover Job whose pod streams the
//!   changed blocks from the SnapshotMetadata service and runs `s3mover backup` on the loop
//!   device, cleanup; its JSON gives the split (snapshot, claim, data, cleanup);
//! - `s3mover backup` of the volume's image file with a ranges file naming the same blocks,
//!   into a second repository holding the same previous state.
//!
//! Caches are dropped before each timed command. Knobs: `BENCH_K8S_SIZE` (bytes),
//! `BENCH_K8S_WRITES`, `BENCH_K8S_ROUNDS`, and `BENCH_K8S_STORAGE`: `copy` (default) keeps the
//! simulated driver's images on the temporary directory's filesystem, where a snapshot and a
//! claim from it are full copies and changed blocks are found by comparing images; `reflink`
//! puts them on a loop-mounted XFS with reflinks, where snapshots and clones share blocks as on
//! copy-on-write storage and the comparison skips the shared ones. The report goes to stdout and, as JSON, to the file
//! `BENCH_K8S_JSON` names when set.

mod k8s_support;

use std::process::Command;
use std::time::Instant;

use k8s_support::{pattern, require, start, write_at, PASSWORD};
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 4096;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

/// `s3mover backup` of `source` into the repository at `repo`; (seconds, its JSON).
fn direct_backup(
    repo: &std::path::Path,
    source: &std::path::Path,
    ranges: Option<&std::path::Path>,
) -> (f64, Value) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_s3mover"));
    command
        .args([
            "backup",
            "--volume",
            "bench/vol",
            "--parent",
            "latest",
            "-o",
            "json",
        ])
        .arg(source)
        .env("S3MOVER_REPO", repo)
        .env("S3MOVER_PASSWORD", PASSWORD);
    if let Some(ranges) = ranges {
        command.arg("--changed-ranges").arg(ranges);
    }
    drop_caches();
    let start = Instant::now();
    let out = command.output().expect("s3mover backup runs");
    let seconds = start.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "direct backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        seconds,
        serde_json::from_slice(&out.stdout).expect("backup JSON"),
    )
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run it with bench/k8s.sh"]
async fn k8s_backup_orchestration_split() {
    if !require("k8s_backup_orchestration_split") {
        return;
    }
    let size = knob("BENCH_K8S_SIZE", 1024 * MIB);
    let writes = knob("BENCH_K8S_WRITES", 2000);
    let rounds = knob("BENCH_K8S_ROUNDS", 3).max(1);
    let storage = std::env::var("BENCH_K8S_STORAGE").unwrap_or_else(|_| "copy".into());
    let reflink = match storage.as_str() {
        "copy" => None,
        "reflink" => Some(
            s3mover_testkit::ReflinkFs::mount(size * 4 + 512 * MIB, None)
                .expect("BENCH_K8S_STORAGE=reflink needs root and mkfs.xfs"),
        ),
        other => panic!("BENCH_K8S_STORAGE={other}: use copy or reflink"),
    };
    let driver_dir = reflink.as_ref().map(|fs| fs.path().join("csi"));
    let k8s = start(|c| c.state_dir = driver_dir).await;
    k8s.namespace("bench");
    k8s.claim("bench", "vol", size, "Block", &[]).await;
    let image = k8s.image_of("bench", "vol").await;
    for offset in (0..size).step_by(16 * MIB as usize) {
        write_at(
            &image,
            offset,
            &pattern(offset, (16 * MIB).min(size - offset) as usize),
        );
    }

    let direct_repo = k8s.dir.path().join("direct-repo");
    let init = Command::new(env!("CARGO_BIN_EXE_s3mover"))
        .args(["init", "--kdf-memory", "8M", "--kdf-passes", "1"])
        .env("S3MOVER_REPO", &direct_repo)
        .env("S3MOVER_PASSWORD", PASSWORD)
        .output()
        .expect("s3mover init");
    assert!(
        init.status.success(),
        "init: {}",
        String::from_utf8_lossy(&init.stderr)
    );

    drop_caches();
    let full = k8s.s3mover_json(&["k8s", "backup", "vol", "-n", "bench"]);
    assert_eq!(full[0]["status"], "ok", "{full}");
    let (direct_full, _) = direct_backup(&direct_repo, &image, None);

    let mut per_round = Vec::new();
    let blocks = size / BLOCK;
    for round in 0..rounds {
        let mut offsets: Vec<u64> = pattern(1000 + round, writes as usize * 8)
            .chunks(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) % blocks * BLOCK)
            .collect();
        offsets.sort_unstable();
        offsets.dedup();
        for (i, offset) in offsets.iter().enumerate() {
            write_at(
                &image,
                *offset,
                &pattern(round * 1_000_000 + i as u64, BLOCK as usize),
            );
        }
        let ranges = k8s.dir.path().join(format!("ranges-{round}.json"));
        let metadata: Vec<Value> = offsets
            .iter()
            .map(|o| json!({"byteOffset": o, "sizeBytes": BLOCK}))
            .collect();
        std::fs::write(
            &ranges,
            json!({"blockMetadataType": "FIXED_LENGTH", "volumeCapacityBytes": size,
                   "blockMetadata": metadata})
            .to_string(),
        )
        .expect("ranges file");

        drop_caches();
        let start = Instant::now();
        let k8s_out = k8s.s3mover_json(&["k8s", "backup", "vol", "-n", "bench"]);
        let k8s_seconds = start.elapsed().as_secs_f64();
        let k8s_out = &k8s_out[0];
        assert_eq!(k8s_out["status"], "ok", "{k8s_out}");
        assert_eq!(k8s_out["changeSource"], "cbt-delta", "{k8s_out}");
        let (direct_seconds, direct_out) = direct_backup(&direct_repo, &image, Some(&ranges));
        assert_eq!(
            k8s_out["bytesRead"], direct_out["bytesRead"],
            "both read the same changed chunks"
        );
        per_round.push(json!({
            "blocksChanged": offsets.len(),
            "k8sSeconds": k8s_seconds,
            "directSeconds": direct_seconds,
            "overheadSeconds": k8s_seconds - direct_seconds,
            "phases": k8s_out["phases"],
            "moverSeconds": k8s_out["moverSeconds"],
            "directBackupSeconds": direct_out["seconds"],
            "bytesRead": k8s_out["bytesRead"],
            "bytesUploaded": k8s_out["bytesUploaded"],
        }));
    }
    assert!(
        k8s.leftovers().await.is_empty(),
        "nothing temporary is left"
    );

    let column = |key: &str| -> f64 {
        median(
            &mut per_round
                .iter()
                .map(|r| r[key].as_f64().expect("number"))
                .collect::<Vec<_>>(),
        )
    };
    let phase = |name: &str| -> f64 {
        median(
            &mut per_round
                .iter()
                .map(|r| r["phases"][name].as_f64().unwrap_or(0.0))
                .collect::<Vec<_>>(),
        )
    };
    let report = json!({
        "storage": storage,
        "sizeBytes": size,
        "writes": writes,
        "rounds": per_round,
        "full": {"k8sPhases": full[0]["phases"], "directSeconds": direct_full},
        "median": {
            "k8sSeconds": column("k8sSeconds"),
            "directSeconds": column("directSeconds"),
            "overheadSeconds": column("overheadSeconds"),
            "snapshot": phase("snapshot"),
            "claimAndPodStart": phase("claimAndPodStart"),
            "data": phase("data"),
            "cleanup": phase("cleanup"),
            "moverSeconds": column("moverSeconds"),
            "directBackupSeconds": column("directBackupSeconds"),
        },
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("JSON"));
    if let Ok(path) = std::env::var("BENCH_K8S_JSON") {
        std::fs::write(path, report.to_string()).expect("write the report");
    }
}
