//! Transfers through the fault-injecting proxy to a real Garage: with 10 % of requests failing
//! (500, 503, connection resets mid-body, added latency) every put, get, ranged get and list
//! still succeeds and returns the exact bytes, thanks to the one retry policy; so do a put and a
//! get that meet an outage of seconds, in which every request fails.

mod s3_support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use s3_support::{data, TestEnv};
use s3mover_testkit::{garage_or_skip, FaultKind, FaultProxy, Faults};

#[tokio::test]
async fn transfers_survive_ten_percent_faults() {
    let Some(garage) = garage_or_skip("transfers_survive_ten_percent_faults") else {
        return;
    };
    let proxy = FaultProxy::start(&garage.endpoint(), Faults::mixed(0.10, 42)).expect("proxy");
    let env = TestEnv::for_garage(&garage, &proxy.endpoint());
    let store = env
        .open(&format!("s3://{}/faulty", garage.bucket()))
        .expect("open");

    let sizes: Vec<usize> = (0..40)
        .map(|i| match i % 4 {
            0 => 3 * 1024 * 1024 + i,
            1 => 256 * 1024 + i,
            2 => 4096,
            _ => 1,
        })
        .collect();
    let objects: Arc<Vec<Vec<u8>>> = Arc::new(
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| data(i as u64, n))
            .collect(),
    );

    futures::stream::iter(0..objects.len())
        .map(|i| {
            let store = store.clone();
            let objects = Arc::clone(&objects);
            async move {
                store
                    .put(&format!("packs/{i:03}"), Bytes::from(objects[i].clone()))
                    .await
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await
        .expect("every upload succeeds despite faults");

    let listed = store.list("packs/").await.expect("list");
    assert_eq!(listed.len(), objects.len());

    for round in 0..2 {
        futures::stream::iter(0..objects.len())
            .map(|i| {
                let store = store.clone();
                let objects = Arc::clone(&objects);
                async move {
                    let got = store.get(&format!("packs/{i:03}")).await?;
                    assert_eq!(got.as_ref(), &objects[i][..], "object {i} round {round}");
                    let len = objects[i].len() as u64;
                    if len > 10 {
                        let range = len / 3..len - len / 4;
                        let part = store
                            .get_range(&format!("packs/{i:03}"), range.clone())
                            .await?;
                        assert_eq!(
                            part.as_ref(),
                            &objects[i][range.start as usize..range.end as usize]
                        );
                    }
                    Ok::<_, s3mover_engine::storage::StoreError>(())
                }
            })
            .buffer_unordered(8)
            .try_collect::<Vec<_>>()
            .await
            .expect("every download succeeds despite faults");
    }

    let counts = proxy.counts();
    eprintln!("proxy counts: {:?}", counts);
    assert!(
        counts.faults >= 10,
        "too few faults were injected: {counts:?}"
    );
    assert!(
        counts.status_faults > 0 && counts.resets > 0 && counts.delays > 0,
        "{counts:?}"
    );
    // Every injected error answer and reset was seen as a failed attempt; delays were not.
    assert_eq!(
        store.counts().failed_attempts,
        counts.status_faults + counts.resets,
        "{counts:?}"
    );
}

/// An outage — every request answered 503 or cut off, for twelve seconds — costs time, not the
/// transfer: a put and a get caught in it complete once it ends, with the exact bytes. (Ten
/// retries, the count that once bounded a request, spent about 2.6 s.)
#[tokio::test]
async fn an_outage_of_seconds_is_ridden_out() {
    let Some(garage) = garage_or_skip("an_outage_of_seconds_is_ridden_out") else {
        return;
    };
    let proxy = FaultProxy::start(&garage.endpoint(), Faults::none()).expect("proxy");
    let env = TestEnv::for_garage(&garage, &proxy.endpoint());
    let store = env
        .open(&format!("s3://{}/outage", garage.bucket()))
        .expect("open");
    let object = data(11, 3 * 1024 * 1024);
    store
        .put("before", Bytes::from(object.clone()))
        .await
        .expect("put before the outage");

    proxy.set_faults(Faults {
        rate: 1.0,
        kinds: vec![FaultKind::Status503, FaultKind::ResetMidBody],
        latency: Duration::ZERO,
        seed: 9,
    });
    let outage = async {
        tokio::time::sleep(Duration::from_secs(12)).await;
        proxy.set_faults(Faults::none());
    };
    let (put, get, ()) = tokio::join!(
        store.put("during", Bytes::from(object.clone())),
        store.get("before"),
        outage
    );
    put.expect("put through the outage");
    assert_eq!(get.expect("get through the outage").as_ref(), &object[..]);
    assert_eq!(
        store.get("during").await.expect("get").as_ref(),
        &object[..]
    );
    let counts = proxy.counts();
    eprintln!("proxy counts: {counts:?}");
    assert!(
        store.counts().failed_attempts >= 4 && counts.status_faults + counts.resets >= 4,
        "both requests kept being retried through the outage: {counts:?}"
    );
}

#[tokio::test]
async fn downloads_survive_frequent_resets_mid_body() {
    let Some(garage) = garage_or_skip("downloads_survive_frequent_resets_mid_body") else {
        return;
    };
    let proxy = FaultProxy::start(&garage.endpoint(), Faults::none()).expect("proxy");
    let env = TestEnv::for_garage(&garage, &proxy.endpoint());
    let store = env
        .open(&format!("s3://{}/resets", garage.bucket()))
        .expect("open");
    let object = data(7, 8 * 1024 * 1024 + 5);
    store
        .put("big", Bytes::from(object.clone()))
        .await
        .expect("put");
    proxy.set_faults(Faults::only(FaultKind::ResetMidBody, 0.3, 7));
    for _ in 0..6 {
        assert_eq!(store.get("big").await.expect("get").as_ref(), &object[..]);
        let part = store
            .get_range("big", 1_000_000..5_000_000)
            .await
            .expect("range");
        assert_eq!(part.as_ref(), &object[1_000_000..5_000_000]);
        let streamed: Vec<Bytes> = store
            .get_range_stream("big", 500_000..8_000_000)
            .await
            .expect("range stream")
            .try_collect()
            .await
            .expect("streamed range");
        assert_eq!(streamed.concat(), &object[500_000..8_000_000]);
    }
    for i in 0..6 {
        store
            .put(&format!("up{i}"), Bytes::from(object.clone()))
            .await
            .expect("put through resets");
    }
    proxy.set_faults(Faults::none());
    for i in 0..6 {
        assert_eq!(
            store.get(&format!("up{i}")).await.expect("get").as_ref(),
            &object[..]
        );
    }
    let counts = proxy.counts();
    eprintln!("proxy counts: {:?}", counts);
    assert!(counts.resets >= 3, "{counts:?}");
    // Each reset, of an upload or mid-download, is one failed attempt the store saw.
    assert_eq!(store.counts().failed_attempts, counts.resets, "{counts:?}");
    // Over plain HTTP every body is hashed into its request's signature.
    assert!(counts.put >= 7, "{counts:?}");
    assert_eq!(counts.unsigned_puts, 0, "{counts:?}");
}

#[tokio::test]
async fn proxy_counts_requests_by_kind() {
    let Some(garage) = garage_or_skip("proxy_counts_requests_by_kind") else {
        return;
    };
    let proxy = FaultProxy::start(&garage.endpoint(), Faults::none()).expect("proxy");
    let env = TestEnv::for_garage(&garage, &proxy.endpoint());
    let store = env
        .open(&format!("s3://{}/counted", garage.bucket()))
        .expect("open");
    store.put("a", Bytes::from_static(b"1")).await.expect("put");
    store.put("b", Bytes::from_static(b"2")).await.expect("put");
    store.get("a").await.expect("get");
    store.size_of("b").await.expect("head");
    store.list("").await.expect("list");
    store.delete("a").await.expect("delete");
    let counts = proxy.counts();
    assert_eq!(
        (
            counts.put,
            counts.get,
            counts.head,
            counts.list,
            counts.delete
        ),
        (2, 1, 1, 1, 1),
        "{counts:?}"
    );
    proxy.reset_counts();
    assert_eq!(proxy.counts().total(), 0);
}
