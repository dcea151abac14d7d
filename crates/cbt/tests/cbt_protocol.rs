//! Integration tests of the CBT client against the conformance test server: real gRPC over
//! real TLS on loopback (Kubernetes flavour) and a real unix socket (CSI flavour).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use s3mover_cbt::{
    blocking, BlockMetadataType, BlockRange, CbtError, Client, FetchedToken, KubernetesEndpoint,
    ListFormat, Query, RefreshingToken, RetryPolicy, Selection, SelectionArgs, StreamOptions,
    StreamStats,
};
use s3mover_cbt_testserver::{Inject, Quirks, Snapshot, Source, TestServer, TokenGrant};

const BS: u64 = 4096;
const NS: &str = "default";
const TOKEN: &str = "good-token";

fn image(dir: &Path, name: &str, size: u64, blocks: &[u64], fill: u8) -> PathBuf {
    let p = dir.join(name);
    let f = File::create(&p).expect("create image");
    f.set_len(size).expect("size image");
    for &b in blocks {
        f.write_all_at(&[fill.max(1); BS as usize], b * BS)
            .expect("write block");
    }
    p
}

fn copy_image(src: &Path, dst: &Path) {
    // Keeps the copy sparse enough for small images; tests copy at most a few MiB.
    std::fs::copy(src, dst).expect("copy image");
}

fn write_blocks(p: &Path, blocks: &[u64], fill: u8) {
    let f = OpenOptions::new().write(true).open(p).expect("open image");
    for &b in blocks {
        f.write_all_at(&[fill; BS as usize], b * BS).expect("write");
    }
}

fn server(q: Quirks) -> TestServer {
    let s = TestServer::start(q).expect("start test server");
    s.grant(TOKEN, &[NS]);
    s
}

fn k8s_args(s: &TestServer, snapshot: &str, base: Option<&str>, max_results: u32) -> SelectionArgs {
    SelectionArgs {
        address: Some(s.address().to_string()),
        ca_cert: Some(s.ca_file().to_path_buf()),
        token: Some(TOKEN.into()),
        namespace: Some(NS.into()),
        snapshot: Some(snapshot.into()),
        base: base.map(String::from),
        max_results,
        ..Default::default()
    }
}

fn csi_args(s: &TestServer, snapshot: &str, base: Option<&str>, max_results: u32) -> SelectionArgs {
    SelectionArgs {
        socket: Some(s.socket().to_path_buf()),
        snapshot: Some(snapshot.into()),
        base: base.map(String::from),
        max_results,
        ..Default::default()
    }
}

fn fast() -> StreamOptions {
    StreamOptions {
        retry: RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        },
        check_completeness: true,
    }
}

struct Listing {
    ranges: Vec<BlockRange>,
    header: Option<(BlockMetadataType, u64)>,
    stats: StreamStats,
}

fn collect_sel(sel: &Selection, opts: StreamOptions) -> Result<Listing, CbtError> {
    let mut it = blocking::RangeIter::open(sel, opts)?;
    let header = it.header()?;
    let mut ranges = Vec::new();
    for r in it.by_ref() {
        ranges.push(r?);
    }
    Ok(Listing {
        ranges,
        header,
        stats: it.stats().clone(),
    })
}

fn collect(args: &SelectionArgs) -> Result<Listing, CbtError> {
    collect_sel(&args.resolve()?, fast())
}

fn fixed(blocks: &[u64]) -> Vec<BlockRange> {
    blocks
        .iter()
        .map(|&b| BlockRange::new(b * BS, BS))
        .collect()
}

/// Merges touching ranges (VARIABLE_LENGTH extents may be split at message boundaries).
fn merged(rs: &[BlockRange]) -> Vec<BlockRange> {
    let mut out: Vec<BlockRange> = Vec::new();
    for r in rs {
        match out.last_mut() {
            Some(l) if l.end() == r.offset => l.size += r.size,
            _ => out.push(*r),
        }
    }
    out
}

#[test]
fn allocated_matches_the_hostpath_walkthrough_on_both_flavours() {
    let s = server(Quirks::hostpath());
    let img = image(s.dir(), "snap1.img", 10 << 20, &[1, 3, 5, 7, 9], 7);
    s.add_snapshot(NS, "snap-1", "handle-1", &img);
    let want = fixed(&[1, 3, 5, 7, 9]);

    let k = collect(&k8s_args(&s, "snap-1", None, 0)).expect("k8s listing");
    assert_eq!(k.ranges, want);
    assert_eq!(k.header, Some((BlockMetadataType::FixedLength, 10 << 20)));
    // One data call plus exactly one completeness check that returns nothing.
    assert_eq!(k.stats.calls, 2);
    assert_eq!(k.stats.completeness_calls, 1);

    let c = collect(&csi_args(&s, "handle-1", None, 2)).expect("csi listing");
    assert_eq!(c.ranges, want);
    assert_eq!(c.stats.messages, 3);
}

#[test]
fn delta_after_writes_at_known_offsets_names_exactly_those_blocks() {
    let s = server(Quirks::hostpath());
    let base = image(s.dir(), "base.img", 10 << 20, &[1, 3, 5, 7, 9], 7);
    let target = s.dir().join("target.img");
    copy_image(&base, &target);
    write_blocks(&target, &[2, 4, 9], 0x55);
    s.add_snapshot(NS, "snap-1", "handle-1", &base);
    s.add_snapshot(NS, "snap-2", "handle-2", &target);

    let k = collect(&k8s_args(&s, "snap-2", Some("handle-1"), 0)).expect("k8s delta");
    assert_eq!(k.ranges, fixed(&[2, 4, 9]));
    let c = collect(&csi_args(&s, "handle-2", Some("handle-1"), 1)).expect("csi delta");
    assert_eq!(c.ranges, fixed(&[2, 4, 9]));

    // VARIABLE_LENGTH: adjacent changed blocks become one extent.
    s.set_quirks(Quirks::ceph());
    write_blocks(&target, &[100, 101, 102, 200], 0x66);
    let v = collect(&k8s_args(&s, "snap-2", Some("handle-1"), 0)).expect("variable delta");
    assert_eq!(
        v.ranges,
        vec![
            BlockRange::new(2 * BS, BS),
            BlockRange::new(4 * BS, BS),
            BlockRange::new(9 * BS, BS),
            BlockRange::new(100 * BS, 3 * BS),
            BlockRange::new(200 * BS, BS),
        ]
    );
}

/// Deterministic scattered blocks plus a few runs on a 1 GiB volume.
fn gib_blocks() -> Vec<u64> {
    let total = (1u64 << 30) / BS;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v: Vec<u64> = (0..2600)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % total
        })
        .collect();
    v.extend(5000..5300); // a run
    v.extend(total - 20..total); // the last blocks, up to the capacity
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn one_gib_volume_max_results_1_aborted_every_1000_messages_yields_exact_ranges() {
    let s = server(Quirks {
        abort_every: Some(1000),
        ..Quirks::hostpath()
    });
    let blocks = gib_blocks();
    let img = image(s.dir(), "big.img", 1 << 30, &blocks, 3);
    s.add_snapshot(NS, "big", "handle-big", &img);

    let k = collect(&k8s_args(&s, "big", None, 1)).expect("k8s listing");
    assert_eq!(k.ranges, fixed(&blocks));
    let aborts = s.counters().aborts.load(Ordering::Relaxed);
    assert_eq!(aborts, blocks.len() as u64 / 1000);
    assert_eq!(k.stats.retries, aborts);
    // The last range ends at the capacity: no call is ever made at or past it.
    assert!(s.offsets().iter().all(|&o| (o as u64) < 1 << 30));

    // Same through the CSI socket with VARIABLE_LENGTH extents and ABORTED → UNAVAILABLE.
    s.set_quirks(Quirks {
        abort_every: Some(1000),
        abort_code: tonic::Code::Unavailable,
        ..Quirks::ceph()
    });
    let c = collect(&csi_args(&s, "handle-big", None, 1)).expect("csi listing");
    assert_eq!(merged(&c.ranges), merged(&fixed(&blocks)));
}

#[test]
fn vsphere_single_message_streams_are_completed_by_asking_again() {
    let s = server(Quirks::vsphere());
    let blocks: Vec<u64> = (0..50).map(|i| i * 3).collect();
    let img = image(s.dir(), "v.img", 4 << 20, &blocks, 9);
    s.add_snapshot(NS, "v", "handle-v", &img);
    let k = collect(&k8s_args(&s, "v", None, 7)).expect("listing");
    assert_eq!(k.ranges, fixed(&blocks));
    assert_eq!(
        k.header.map(|h| h.0),
        Some(BlockMetadataType::VariableLength)
    );
    // 50 ranges, 7 per message, one message per call: 8 calls with data + 1 empty check.
    assert_eq!(k.stats.calls, 9);
}

#[test]
fn default_max_results_follow_the_driver() {
    let blocks: Vec<u64> = (0..600).map(|i| i * 2).collect();
    for (q, per_message) in [
        (Quirks::hostpath(), 256u64),
        (Quirks::ceph(), 128),
        (
            Quirks {
                single_message: false,
                ..Quirks::vsphere()
            },
            10000,
        ),
    ] {
        let s = server(q);
        let img = image(s.dir(), "m.img", 8 << 20, &blocks, 1);
        s.add_snapshot(NS, "m", "handle-m", &img);
        let k = collect(&k8s_args(&s, "m", None, 0)).expect("listing");
        assert_eq!(k.ranges, fixed(&blocks));
        assert_eq!(k.stats.messages, 600u64.div_ceil(per_message));
    }
    // Ceph caps a larger request at 128.
    let s = server(Quirks::ceph());
    let img = image(s.dir(), "m.img", 8 << 20, &blocks, 1);
    s.add_snapshot(NS, "m", "handle-m", &img);
    let k = collect(&k8s_args(&s, "m", None, 1000)).expect("listing");
    assert_eq!(k.stats.messages, 5);
}

#[test]
fn ceph_out_of_range_at_the_end_is_never_provoked() {
    let s = server(Quirks::ceph());
    // Last block allocated: the listing ends exactly at the capacity.
    let img = image(s.dir(), "c.img", 1 << 20, &[0, 10, 255], 1);
    s.add_snapshot(NS, "c", "handle-c", &img);
    let k = collect(&k8s_args(&s, "c", None, 0)).expect("listing");
    assert_eq!(k.ranges, fixed(&[0, 10, 255]));
    assert_eq!(k.stats.calls, 1, "no completeness call at the capacity");

    // Starting at the capacity is the user's choice, and Ceph refuses it.
    let mut a = k8s_args(&s, "c", None, 0);
    a.starting_offset = 1 << 20;
    let e = collect(&a).err().expect("out of range");
    assert!(e.to_string().contains("OutOfRange"), "{e}");

    // Hostpath answers an empty stream there.
    s.set_quirks(Quirks::hostpath());
    let k = collect(&a).expect("empty listing");
    assert!(k.ranges.is_empty());
    assert_eq!(k.header, None);
}

#[test]
fn resume_from_a_user_starting_offset_and_empty_snapshots() {
    let s = server(Quirks::hostpath());
    let img = image(s.dir(), "o.img", 1 << 20, &[1, 2, 3, 50, 60], 1);
    let empty = image(s.dir(), "e.img", 1 << 20, &[], 1);
    s.add_snapshot(NS, "o", "handle-o", &img);
    s.add_snapshot(NS, "e", "handle-e", &empty);
    let mut a = k8s_args(&s, "o", None, 0);
    a.starting_offset = 3 * BS;
    assert_eq!(collect(&a).expect("listing").ranges, fixed(&[3, 50, 60]));
    let e = collect(&k8s_args(&s, "e", None, 0)).expect("empty");
    assert!(e.ranges.is_empty());
    assert_eq!(e.stats.calls, 1);
}

#[test]
fn actionable_errors_for_auth_missing_snapshots_and_no_tracking() {
    let s = server(Quirks::hostpath());
    let img = image(s.dir(), "a.img", 1 << 20, &[1], 1);
    s.add_snapshot(NS, "a", "handle-a", &img);
    s.add(Snapshot {
        namespace: NS.into(),
        name: "untracked".into(),
        handle: "handle-u".into(),
        source: Source::Image(img.clone()),
        change_tracking: false,
    });
    s.grant_token(
        "wrong-audience",
        TokenGrant {
            audiences: vec!["someone-else".into()],
            namespaces: vec![NS.into()],
            uses_left: None,
        },
    );
    s.grant("other-ns", &["elsewhere"]);

    let mut a = k8s_args(&s, "a", None, 0);
    a.token = Some("wrong-audience".into());
    let e = collect(&a).err().expect("unauthenticated");
    assert!(matches!(e, CbtError::Unauthenticated { .. }), "{e}");
    assert!(e.to_string().contains("audience"), "{e}");

    a.token = Some("other-ns".into());
    let e = collect(&a).err().expect("denied");
    assert!(matches!(e, CbtError::PermissionDenied { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("external-snapshot-metadata-client-runner"),
        "{e}"
    );
    assert!(e.to_string().contains("volumesnapshots"), "{e}");

    let before = s.calls();
    let e = collect(&k8s_args(&s, "nope", None, 0))
        .err()
        .expect("missing");
    assert!(matches!(e, CbtError::SnapshotNotFound { .. }), "{e}");
    assert!(e.to_string().contains("default/nope"), "{e}");
    assert_eq!(s.calls() - before, 1, "a missing snapshot is not retried");

    let e = collect(&k8s_args(&s, "untracked", None, 0))
        .err()
        .expect("no cbt");
    assert!(e.needs_full_backup());
    assert!(e.to_string().contains("full backup is needed"), "{e}");

    let e = collect(&k8s_args(&s, "a", Some("gone-handle"), 0))
        .err()
        .expect("base gone");
    assert!(e.needs_full_backup(), "{e}");
    assert!(e.to_string().contains("base snapshot"), "{e}");

    s.update_quirks(|q| q.unimplemented = true);
    let e = collect(&csi_args(&s, "handle-a", None, 0))
        .err()
        .expect("unimplemented");
    assert!(matches!(e, CbtError::NoChangeTracking { .. }), "{e}");
}

#[test]
fn bad_ranges_from_the_server_are_errors_naming_the_range() {
    let s = server(Quirks::hostpath());
    let img = image(s.dir(), "b.img", 1 << 20, &[2, 4, 6, 8], 1);
    s.add_snapshot(NS, "b", "handle-b", &img);
    let cases: [(Inject, &[&str]); 8] = [
        (
            Inject::OutOfOrder,
            &["range #1", "[offset 0, size 4096]", "must be sorted"],
        ),
        (
            Inject::Overlap,
            &["range #1", "[offset 12287, size 4096]", "overlap"],
        ),
        (Inject::ZeroSize, &["range #1", "size zero"]),
        (
            Inject::PastCapacity,
            &[
                "range #1",
                "[offset 1048576, size 4096]",
                "past the volume capacity",
            ],
        ),
        (
            Inject::ChangeType,
            &[
                "changed the block metadata type",
                "FIXED_LENGTH",
                "VARIABLE_LENGTH",
            ],
        ),
        (Inject::ChangeCapacity, &["capacity 1052672", "differs"]),
        (Inject::UnknownType, &["UNKNOWN"]),
        (
            Inject::SizeChange,
            &["range #1", "size 2048", "FIXED_LENGTH"],
        ),
    ];
    for (inject, words) in cases {
        s.update_quirks(|q| q.inject = Some(inject));
        let e = collect(&csi_args(&s, "handle-b", None, 1))
            .err()
            .unwrap_or_else(|| panic!("{inject:?} must be refused"));
        let text = e.to_string();
        for w in words {
            assert!(text.contains(w), "{inject:?}: {text:?} lacks {w:?}");
        }
    }
}

#[test]
fn token_is_refreshed_when_refused_or_near_expiry() {
    let s = server(Quirks {
        abort_every: Some(2),
        ..Quirks::hostpath()
    });
    let img = image(s.dir(), "t.img", 1 << 20, &[1, 3, 5, 7, 9, 11], 1);
    s.add_snapshot(NS, "t", "handle-t", &img);
    let fetches = Arc::new(AtomicU32::new(0));
    // Each fetched token is valid for one call only, as if it expired right after.
    let f2 = fetches.clone();
    let token = RefreshingToken::new(Duration::from_secs(0), move || {
        let n = f2.fetch_add(1, Ordering::SeqCst);
        let t = format!("token-{n}");
        Box::pin(async move {
            Ok(FetchedToken {
                token: t,
                expires_at: None,
            })
        })
    });
    // Pre-register the tokens the hook will hand out.
    for n in 0..20 {
        s.grant_token(
            &format!("token-{n}"),
            TokenGrant {
                audiences: vec!["test-backup-client".into()],
                namespaces: vec![NS.into()],
                uses_left: Some(1),
            },
        );
    }
    let sel = Selection {
        endpoint: s3mover_cbt::Endpoint::Kubernetes(KubernetesEndpoint {
            address: s.address().into(),
            ca_cert: s.certs().ca_pem.clone().into_bytes(),
            namespace: NS.into(),
            token: Arc::new(token),
        }),
        query: Query {
            snapshot: "t".into(),
            base: None,
            starting_offset: 0,
            max_results: 1,
        },
    };
    let l = collect_sel(&sel, fast()).expect("listing with refreshed tokens");
    assert_eq!(l.ranges, fixed(&[1, 3, 5, 7, 9, 11]));
    assert!(l.stats.token_refreshes >= 2, "{:?}", l.stats);

    // Near expiry: a token that expires within the margin is replaced before the next call.
    let fetches2 = Arc::new(AtomicU32::new(0));
    let f3 = fetches2.clone();
    s.grant("long-lived", &[NS]);
    let token = RefreshingToken::new(Duration::from_secs(600), move || {
        f3.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            Ok(FetchedToken {
                token: "long-lived".into(),
                expires_at: Some(SystemTime::now() + Duration::from_secs(60)),
            })
        })
    });
    let mut sel2 = sel.clone();
    if let s3mover_cbt::Endpoint::Kubernetes(k) = &mut sel2.endpoint {
        k.token = Arc::new(token);
    }
    let l = collect_sel(&sel2, fast()).expect("listing");
    assert_eq!(fetches2.load(Ordering::SeqCst) as u64, l.stats.calls);
}

#[test]
fn retries_are_bounded() {
    let s = server(Quirks::hostpath());
    s.add_snapshot(NS, "r", "handle-r", &s.dir().join("does-not-exist.img"));
    let before = s.calls();
    let e = collect(&csi_args(&s, "handle-r", None, 0))
        .err()
        .expect("fails");
    assert!(
        matches!(e, CbtError::RetriesExhausted { attempts: 4, .. }),
        "{e}"
    );
    assert_eq!(s.calls() - before, 4);
}

#[test]
fn tls_uses_the_given_ca_and_rejects_another() {
    let s = server(Quirks::hostpath());
    let other = server(Quirks::hostpath());
    let img = image(s.dir(), "x.img", 1 << 20, &[1], 1);
    s.add_snapshot(NS, "x", "handle-x", &img);
    let mut a = k8s_args(&s, "x", None, 0);
    a.ca_cert = Some(other.ca_file().to_path_buf());
    let e = collect(&a).err().expect("wrong CA");
    assert!(matches!(e, CbtError::Connect { .. }), "{e}");
    // base64 of PEM, as in the SnapshotMetadataService CR, is accepted too.
    use base64::Engine as _;
    let b64 = s.dir().join("ca.b64");
    std::fs::write(
        &b64,
        base64::engine::general_purpose::STANDARD.encode(&s.certs().ca_pem),
    )
    .expect("write");
    a.ca_cert = Some(b64);
    assert_eq!(collect(&a).expect("listing").ranges, fixed(&[1]));
}

#[test]
fn list_prints_a_ranges_file_and_a_table() {
    let s = server(Quirks::hostpath());
    let img = image(s.dir(), "l.img", 1 << 20, &[1, 3], 1);
    s.add_snapshot(NS, "l", "handle-l", &img);
    let sel = k8s_args(&s, "l", None, 0).resolve().expect("selection");
    let mut json = Vec::new();
    let sum = blocking::list(&sel, fast(), ListFormat::Json, &mut json).expect("list");
    assert_eq!(sum.ranges, 2);
    let mut got = Vec::new();
    let h = s3mover_ranges::read_ranges_file(json.as_slice(), |r| {
        got.push(r);
        Ok::<(), s3mover_ranges::RangeError>(())
    })
    .expect("valid ranges file");
    assert_eq!(h.capacity, 1 << 20);
    assert_eq!(got, fixed(&[1, 3]));
    let text = String::from_utf8(json).expect("utf8");
    assert!(
        text.starts_with("{\"blockMetadataType\":\"FIXED_LENGTH\",\"volumeCapacityBytes\":1048576")
    );

    let mut table = Vec::new();
    blocking::list(&sel, fast(), ListFormat::Table, &mut table).expect("list");
    let table = String::from_utf8(table).expect("utf8");
    assert!(table.contains("ByteOffset"));
    assert!(
        table.contains("FIXED_LENGTH           4096           4096"),
        "{table}"
    );
}

#[test]
fn verify_passes_on_a_good_copy_and_fails_on_one_changed_block() {
    let s = server(Quirks::hostpath());
    let base = image(s.dir(), "base.img", 4 << 20, &[1, 3, 5, 7, 9], 7);
    let snap = s.dir().join("snap.img");
    copy_image(&base, &snap);
    write_blocks(&snap, &[2, 4, 9, 500], 0x42);
    s.add_snapshot(NS, "s1", "h1", &base);
    s.add_snapshot(NS, "s2", "h2", &snap);

    // Source = volume restored from the target snapshot; target = restored from the base.
    let source = s.dir().join("source.dev");
    let target = s.dir().join("target.dev");
    copy_image(&snap, &source);
    copy_image(&base, &target);
    let sel = k8s_args(&s, "s2", Some("h1"), 3)
        .resolve()
        .expect("selection");
    let rep = blocking::verify(&sel, fast(), &source, &target).expect("verify passes");
    assert_eq!(rep.ranges, 4);
    assert_eq!(rep.bytes_copied, 4 * BS);

    // Negative test: one more 4 KiB block changed on the source after the snapshot.
    copy_image(&base, &target);
    write_blocks(&source, &[700], 0x99);
    let e = blocking::verify(&sel, fast(), &source, &target).expect_err("mismatch");
    match e {
        CbtError::VerifyMismatch { offset, .. } => assert_eq!(offset, 700 * BS),
        other => panic!("expected a mismatch, got {other}"),
    }

    // Allocated mode onto an empty target works too (CSI flavour).
    let empty = s.dir().join("empty.dev");
    File::create(&empty)
        .and_then(|f| f.set_len(4 << 20))
        .expect("empty");
    let sel = csi_args(&s, "h2", None, 0).resolve().expect("selection");
    blocking::verify(&sel, fast(), &snap, &empty).expect("allocated verify passes");
}

#[test]
fn selection_flag_errors_say_what_is_missing() {
    let mut a = SelectionArgs {
        address: Some("svc.ns:6443".into()),
        snapshot: Some("s".into()),
        ..Default::default()
    };
    assert!(a
        .resolve()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
        .contains("--ca-cert"));
    a.address = Some("no-port".into());
    assert!(a
        .resolve()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
        .contains("HOST:PORT"));
    let b = SelectionArgs::default();
    assert!(b
        .resolve()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
        .contains("--snapshot"));
    assert_eq!(
        s3mover_cbt::connect::tls_server_name("[::1]:6443")
            .ok()
            .as_deref(),
        Some("::1")
    );
    assert_eq!(
        s3mover_cbt::connect::tls_server_name("csi-snapshot-metadata.default:6443")
            .ok()
            .as_deref(),
        Some("csi-snapshot-metadata.default")
    );
}

#[tokio::test]
async fn async_stream_of_single_ranges() {
    use futures::TryStreamExt;
    let s = server(Quirks::ceph());
    let img = image(s.dir(), "y.img", 1 << 20, &[4, 5, 6, 20], 1);
    s.add_snapshot(NS, "y", "handle-y", &img);
    let sel = csi_args(&s, "handle-y", None, 0)
        .resolve()
        .expect("selection");
    let client = Client::connect(&sel.endpoint).await.expect("connect");
    let all: Vec<BlockRange> = client
        .ranges(sel.query.clone(), fast())
        .into_ranges()
        .try_collect()
        .await
        .expect("ranges");
    assert_eq!(
        all,
        vec![
            BlockRange::new(4 * BS, 3 * BS),
            BlockRange::new(20 * BS, BS)
        ]
    );
}
