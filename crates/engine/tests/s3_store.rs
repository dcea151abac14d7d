//! The S3 store against a real Garage server: whole-object put/get, ranged get (whole and
//! streamed), size, list, delete, prefix isolation, and no secrets in Debug output.

mod s3_support;

use bytes::Bytes;
use futures::StreamExt;
use s3_support::{data, TestEnv};
use s3mover_testkit::garage_or_skip;

#[tokio::test]
async fn put_get_range_list_delete_against_garage() {
    let Some(garage) = garage_or_skip("put_get_range_list_delete_against_garage") else {
        return;
    };
    let env = TestEnv::for_garage(&garage, &garage.endpoint());
    let url = format!("s3://{}/repos/one", garage.bucket());
    let store = env.open(&url).expect("open");

    let big = data(1, 6 * 1024 * 1024 + 123);
    let small = data(2, 4096);
    store
        .put("config", Bytes::from_static(b"hello"))
        .await
        .expect("put config");
    store
        .put("packs/aa/pack1", Bytes::from(big.clone()))
        .await
        .expect("put big");
    store
        .put("packs/bb/pack2", Bytes::from(small.clone()))
        .await
        .expect("put small");
    store.put("empty", Bytes::new()).await.expect("put empty");

    assert_eq!(store.get("config").await.expect("get").as_ref(), b"hello");
    assert_eq!(
        store.get("packs/aa/pack1").await.expect("get big").as_ref(),
        &big[..]
    );
    assert_eq!(store.get("empty").await.expect("get empty").len(), 0);
    let range = store
        .get_range("packs/aa/pack1", 1_000_000..3_000_001)
        .await
        .expect("range");
    assert_eq!(range.as_ref(), &big[1_000_000..3_000_001]);
    let mut pieces = store
        .get_range_stream("packs/aa/pack1", 500_000..6_000_000)
        .await
        .expect("range stream");
    let mut streamed = Vec::new();
    while let Some(piece) = pieces.next().await {
        streamed.extend_from_slice(&piece.expect("piece"));
    }
    assert_eq!(streamed, &big[500_000..6_000_000]);
    let mut past_end = store
        .get_range_stream("packs/aa/pack1", 6_000_000..7_000_000)
        .await
        .expect("range stream past the end");
    let mut error = None;
    while let Some(piece) = past_end.next().await {
        if let Err(e) = piece {
            error = Some(e.to_string());
        }
    }
    let error = error.expect("a range past the end is an error");
    assert!(error.contains("truncated"), "{error}");
    assert_eq!(
        store.size_of("packs/bb/pack2").await.expect("head"),
        Some(4096)
    );
    assert_eq!(
        store.size_of("packs/none").await.expect("head missing"),
        None
    );
    assert!(store
        .get("packs/none")
        .await
        .expect_err("missing")
        .is_not_found());
    assert_eq!(
        store.get_optional("packs/none").await.expect("optional"),
        None
    );

    let mut keys: Vec<String> = store
        .list("packs/")
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    keys.sort();
    assert_eq!(keys, vec!["packs/aa/pack1", "packs/bb/pack2"]);

    // Another prefix in the same bucket sees nothing of this one.
    let other = env
        .open(&format!("s3://{}/repos/two", garage.bucket()))
        .expect("open other");
    assert!(other.list("packs/").await.expect("list other").is_empty());
    assert!(other
        .get_optional("config")
        .await
        .expect("get other")
        .is_none());

    store.delete("packs/bb/pack2").await.expect("delete");
    store.delete("packs/bb/pack2").await.expect("delete twice");
    assert_eq!(
        store.size_of("packs/bb/pack2").await.expect("head deleted"),
        None
    );
    assert_eq!(store.list("packs/").await.expect("list").len(), 1);

    let counts = store.counts();
    assert!(counts.put >= 4 && counts.get >= 4 && counts.list >= 2);
}

#[tokio::test]
async fn region_and_endpoint_from_the_url() {
    let Some(garage) = garage_or_skip("region_and_endpoint_from_the_url") else {
        return;
    };
    let mut env = TestEnv::new(vec![
        ("AWS_ACCESS_KEY_ID".into(), garage.access_key().into()),
        ("AWS_SECRET_ACCESS_KEY".into(), garage.secret_key().into()),
    ]);
    env.set("AWS_REGION", "us-east-1");
    let url = format!(
        "s3://{}/via-url?endpoint={}&region={}",
        garage.bucket(),
        garage.endpoint(),
        garage.region()
    );
    let store = env.open(&url).expect("open");
    store.put("k", Bytes::from_static(b"v")).await.expect("put");
    assert_eq!(store.get("k").await.expect("get").as_ref(), b"v");
}

#[tokio::test]
async fn debug_output_has_no_secrets() {
    let Some(garage) = garage_or_skip("debug_output_has_no_secrets") else {
        return;
    };
    let mut env = TestEnv::for_garage(&garage, &garage.endpoint());
    env.set("AWS_SESSION_TOKEN", "session-token-secret-value");
    let store = env
        .open(&format!("s3://{}/p", garage.bucket()))
        .expect("open");
    let shown = format!("{store:?} {}", store.description());
    assert!(!shown.contains(garage.secret_key()), "{shown}");
    assert!(!shown.contains("session-token-secret-value"), "{shown}");
    assert!(shown.contains(garage.bucket()), "{shown}");
}
