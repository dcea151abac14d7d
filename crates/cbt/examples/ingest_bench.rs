//! Measures how fast the CBT client ingests ranges from a local stream.
//!
//! Starts the conformance test server in this process with a synthetic snapshot (every other
//! 4 KiB block allocated, so no file is read and ranges never merge), then lists it through the
//! client (validation, resume bookkeeping, completeness check included) and prints ranges per
//! second and the peak resident memory of the process (server included).
//!
//! `cargo run --release -p s3mover-cbt --example ingest_bench -- [RANGES] [MAX_RESULTS] [csi|k8s]`

use std::time::Instant;

use s3mover_cbt::{
    blocking, Endpoint, KubernetesEndpoint, Query, Selection, StaticToken, StreamOptions,
};
use s3mover_cbt_testserver::{Quirks, Snapshot, Source, TestServer};

fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let ranges: u64 = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000_000);
    let max_results: i32 = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let flavour = args.get(3).map(String::as_str).unwrap_or("csi");

    let server = TestServer::start(Quirks::hostpath())?;
    server.grant("bench", &["default"]);
    server.add(Snapshot {
        namespace: "default".into(),
        name: "bench".into(),
        handle: "bench-handle".into(),
        source: Source::Synthetic {
            capacity: ranges * 2 * 4096,
            stride: 2,
        },
        change_tracking: true,
    });
    let endpoint = if flavour == "k8s" {
        Endpoint::Kubernetes(KubernetesEndpoint {
            address: server.address().into(),
            ca_cert: server.certs().ca_pem.clone().into_bytes(),
            namespace: "default".into(),
            token: std::sync::Arc::new(StaticToken("bench".into())),
        })
    } else {
        Endpoint::Csi {
            socket: server.socket().to_path_buf(),
            secrets: Default::default(),
        }
    };
    let snapshot = if flavour == "k8s" {
        "bench"
    } else {
        "bench-handle"
    };
    let sel = Selection {
        endpoint,
        query: Query {
            snapshot: snapshot.into(),
            base: None,
            starting_offset: 0,
            max_results,
        },
    };
    let rss_before = peak_rss_kib().unwrap_or(0);
    let start = Instant::now();
    let mut it = blocking::RangeIter::open(&sel, StreamOptions::default())?;
    let (mut n, mut bytes) = (0u64, 0u64);
    while let Some(batch) = it.next_batch()? {
        n += batch.len() as u64;
        bytes += batch.iter().map(|r| r.size).sum::<u64>();
    }
    let secs = start.elapsed().as_secs_f64();
    if n != ranges {
        return Err(format!("expected {ranges} ranges, got {n}").into());
    }
    println!(
        "flavour={flavour} ranges={n} bytes={bytes} max_results={max_results} seconds={secs:.3} ranges_per_second={:.0} peak_rss_before_kib={rss_before} peak_rss_kib={} calls={}",
        n as f64 / secs,
        peak_rss_kib().unwrap_or(0),
        it.stats().calls
    );
    Ok(())
}
