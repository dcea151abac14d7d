//! Benchmark: a backup that takes N million ranges straight from a CBT stream (CSI flavour on
//! a unix socket, served by the in-repo conformance server from a synthetic snapshot), measuring
//! the range ingest rate and the backup's peak memory.
//!
//! `cargo build --release -p s3mover --examples && target/release/examples/cbt_backup_bench [RANGES]`
//! (default 10,000,000 contiguous 4 KiB ranges: a 38 GiB sparse source). Needs `/usr/bin/time`.

use std::process::Command;

use s3mover_cbt_testserver::{Quirks, Snapshot, Source, TestServer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ranges: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000_000);
    let binary = std::env::current_exe()?
        .parent()
        .and_then(|examples| examples.parent())
        .map(|release| release.join("s3mover"))
        .ok_or("cannot locate the s3mover binary next to the examples directory")?;
    let capacity = ranges * 4096;
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("volume.img");
    std::fs::File::create(&source)?.set_len(capacity)?;
    let repo = dir.path().join("repo");

    let mut quirks = Quirks::hostpath();
    quirks.default_max_results = 10_000;
    let server = TestServer::start(quirks)?;
    server.add(Snapshot {
        namespace: "default".into(),
        name: "snap".into(),
        handle: "snap".into(),
        source: Source::Synthetic {
            capacity,
            stride: 1,
        },
        change_tracking: true,
    });

    let status = Command::new(&binary)
        .args(["init", "--insecure-no-encryption", "-q", "--repo"])
        .arg(&repo)
        .status()?;
    if !status.success() {
        return Err("s3mover init failed".into());
    }
    let output = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(&binary)
        .args(["backup", "--volume", "bench", "-o", "json", "-v", "--repo"])
        .arg(&repo)
        .arg(&source)
        .arg("--cbt-socket")
        .arg(server.socket())
        .args(["-s", "snap"])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("backup failed: {stderr}").into());
    }
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let peak_kib: u64 = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let fold = stderr
        .lines()
        .find(|l| l.contains("folded"))
        .unwrap_or("(no fold log line)")
        .trim()
        .to_string();
    println!("ranges streamed:       {ranges}");
    println!("volume:                {capacity} bytes (sparse, all zero)");
    println!("change source:         {}", report["changeSource"]);
    println!(
        "backup seconds:        {:.2}",
        report["seconds"].as_f64().unwrap_or(0.0)
    );
    println!("peak RSS of backup:    {:.1} MiB", peak_kib as f64 / 1024.0);
    println!("engine:                {fold}");
    Ok(())
}
