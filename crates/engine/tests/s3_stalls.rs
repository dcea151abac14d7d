//! Stalled connections, through the proxy to a real Garage: a request the server never
//! answers, or whose answer stops halfway, is given up after the stall timeout
//! (`S3MOVER_S3_STALL_TIMEOUT`, short here) and sent again on a new connection, so the
//! transfer completes with the exact bytes; a server that never answers at all ends in an
//! error that says the connection stalled.

mod s3_support;

use bytes::Bytes;
use futures::TryStreamExt;
use s3_support::{data, TestEnv};
use s3mover_engine::storage::Store;
use s3mover_testkit::{garage_or_skip, FaultProxy, Faults, Garage, StallPoint, StallRule};

fn open(garage: &Garage, proxy: &FaultProxy, prefix: &str, stall: &str) -> Store {
    open_with_budget(garage, proxy, prefix, stall, None)
}

/// [`open`], with `S3MOVER_S3_RETRY_BUDGET` set when `budget` is given.
fn open_with_budget(
    garage: &Garage,
    proxy: &FaultProxy,
    prefix: &str,
    stall: &str,
    budget: Option<&str>,
) -> Store {
    let mut env = TestEnv::for_garage(garage, &proxy.endpoint());
    env.set("S3MOVER_S3_STALL_TIMEOUT", stall);
    if let Some(budget) = budget {
        env.set("S3MOVER_S3_RETRY_BUDGET", budget);
    }
    env.open(&format!("s3://{}/{prefix}", garage.bucket()))
        .expect("open")
}

fn stall(method: &str, at: StallPoint, times: u64) -> Vec<StallRule> {
    vec![StallRule {
        method: method.into(),
        at,
        times,
    }]
}

#[tokio::test]
async fn an_upload_left_unanswered_is_sent_again() {
    let Some(garage) = garage_or_skip("an_upload_left_unanswered_is_sent_again") else {
        return;
    };
    let proxy = FaultProxy::start(&garage.endpoint(), Faults::none()).expect("proxy");
    let store = open(&garage, &proxy, "stalled-put", "1s");
    let object = data(1, 3 * 1024 * 1024 + 17);
    proxy.set_stall_rules(stall("PUT", StallPoint::BeforeAnswer, 1));

    store
        .put("packs/a", Bytes::from(object.clone()))
        .await
        .expect("the put completes on its second attempt");

    let seen = proxy.counts();
    assert_eq!((seen.stalls, seen.put), (1, 2), "{seen:?}");
    assert_eq!(
        store.get("packs/a").await.expect("get").as_ref(),
        &object[..]
    );
}

#[tokio::test]
async fn a_download_that_stops_halfway_resumes() {
    let Some(garage) = garage_or_skip("a_download_that_stops_halfway_resumes") else {
        return;
    };
    let proxy = FaultProxy::start(&garage.endpoint(), Faults::none()).expect("proxy");
    let store = open(&garage, &proxy, "stalled-get", "1s");
    let object = data(2, 2 * 1024 * 1024 + 5);
    store
        .put("packs/b", Bytes::from(object.clone()))
        .await
        .expect("put");

    proxy.set_stall_rules(stall("GET", StallPoint::MidBody, 1));
    let whole = store.get("packs/b").await.expect("the get completes");
    assert_eq!(whole.as_ref(), &object[..]);
    let after_whole = proxy.counts();
    assert_eq!(
        (after_whole.stalls, after_whole.get),
        (1, 2),
        "one stalled GET, then one for the rest: {after_whole:?}"
    );

    proxy.set_stall_rules(stall("GET", StallPoint::MidBody, 1));
    let range = 1000..object.len() as u64 - 1000;
    let pieces: Vec<Bytes> = store
        .get_range_stream("packs/b", range.clone())
        .await
        .expect("ranged get")
        .try_collect()
        .await
        .expect("the streamed range completes");
    let streamed: Vec<u8> = pieces.concat();
    assert_eq!(
        streamed,
        &object[range.start as usize..range.end as usize],
        "the resumed stream holds the range exactly"
    );
    let seen = proxy.counts().since(&after_whole);
    assert_eq!((seen.stalls, seen.get), (1, 2), "{seen:?}");
}

#[tokio::test]
async fn a_server_that_never_answers_ends_in_a_stall_error() {
    let Some(garage) = garage_or_skip("a_server_that_never_answers_ends_in_a_stall_error") else {
        return;
    };
    let proxy = FaultProxy::start(&garage.endpoint(), Faults::none()).expect("proxy");
    // Retried for two seconds, not the default five minutes.
    let store = open_with_budget(&garage, &proxy, "stalled-always", "200ms", Some("2s"));
    store
        .put("packs/c", Bytes::from(data(3, 4096)))
        .await
        .expect("put");
    proxy.set_stall_rules(stall("GET", StallPoint::BeforeAnswer, u64::MAX));

    let error = store
        .get("packs/c")
        .await
        .expect_err("every attempt stalls");
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(&format!(" / {cause}"));
        source = cause.source();
    }
    assert!(text.contains("stalled"), "{text}");
    let seen = proxy.counts();
    assert!(
        seen.stalls > 1 && seen.stalls == seen.get,
        "every attempt was a stalled GET, and it was retried: {seen:?}"
    );
}
