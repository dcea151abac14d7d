//! Multipart uploads against a real Garage server, through the request-counting proxy: a large
//! object goes up in parts and reads back byte-exact; parts survive 10 % faults; an upload that
//! cannot complete — a part refused for good, or a put cancelled midway — is aborted, leaving
//! neither an object nor an unfinished upload behind.

mod s3_support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use s3_support::{assert_one_line_without, data, TestEnv};
use s3mover_engine::storage::{Store, StoreOptions};
use s3mover_testkit::{garage_or_skip, FailRule, FaultProxy, Faults, Garage};

const MIB: u64 = 1024 * 1024;

/// Multipart from 5 MiB up, in 5 MiB parts.
fn small_parts() -> StoreOptions {
    StoreOptions {
        multipart_threshold: Some(5 * MIB),
        multipart_part_size: Some(5 * MIB),
        ..StoreOptions::default()
    }
}

fn open(garage: &Garage, proxy: &FaultProxy, prefix: &str) -> Store {
    TestEnv::for_garage(garage, &proxy.endpoint())
        .open_with(
            &format!("s3://{}/{prefix}", garage.bucket()),
            &small_parts(),
        )
        .expect("open")
}

/// Waits (a few seconds at most) until Garage reports `expected` unfinished multipart uploads,
/// and returns the last count seen.
async fn unfinished_uploads(garage: &Garage, expected: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let count = garage
            .unfinished_multipart_uploads()
            .expect("garage bucket info");
        if count == expected || Instant::now() > deadline {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn large_object_goes_up_in_parts_and_reads_back_exact() {
    let Some(garage) = garage_or_skip("large_object_goes_up_in_parts_and_reads_back_exact") else {
        return;
    };
    let proxy = FaultProxy::start(&garage.endpoint(), Faults::none()).expect("proxy");
    let store = open(&garage, &proxy, "multipart");
    let object = data(11, (17 * MIB) as usize + 12_345);

    store
        .put("packs/big", Bytes::from(object.clone()))
        .await
        .expect("multipart put");
    let counts = store.counts();
    // 17 MiB in 5 MiB parts: 5 + 5 + 5 + 2; one POST creates the upload, one completes it.
    assert_eq!(
        (counts.put, counts.post, counts.objects_put, counts.delete),
        (4, 2, 1, 0),
        "{counts:?}"
    );
    assert_eq!(counts.bytes_put, object.len() as u64);
    let seen = proxy.counts();
    assert_eq!((seen.put, seen.post), (4, 2), "{seen:?}");

    assert_eq!(
        store.get("packs/big").await.expect("get").as_ref(),
        &object[..]
    );
    let across = 5 * MIB - 100..10 * MIB + 100;
    assert_eq!(
        store
            .get_range("packs/big", across.clone())
            .await
            .expect("range across parts")
            .as_ref(),
        &object[across.start as usize..across.end as usize]
    );
    assert_eq!(
        store.size_of("packs/big").await.expect("head"),
        Some(object.len() as u64)
    );

    // Below the threshold: one PUT, no POST.
    let before = store.counts();
    store
        .put("packs/small", Bytes::from(data(12, (4 * MIB) as usize)))
        .await
        .expect("single put");
    let single = store.counts().since(&before);
    assert_eq!((single.put, single.post, single.objects_put), (1, 0, 1));
    assert_eq!(unfinished_uploads(&garage, 0).await, 0);
}

#[tokio::test]
async fn multipart_puts_survive_ten_percent_faults() {
    let Some(garage) = garage_or_skip("multipart_puts_survive_ten_percent_faults") else {
        return;
    };
    let proxy = FaultProxy::start(&garage.endpoint(), Faults::mixed(0.10, 20)).expect("proxy");
    let store = open(&garage, &proxy, "faulty-multipart");
    let objects: Vec<Vec<u8>> = (0..6)
        .map(|i| data(100 + i, (12 * MIB) as usize + i as usize))
        .collect();

    let puts = objects.iter().enumerate().map(|(i, object)| {
        let store = store.clone();
        let object = Bytes::from(object.clone());
        async move { store.put(&format!("packs/{i}"), object).await }
    });
    futures::future::try_join_all(puts)
        .await
        .expect("every multipart put completes despite faults");
    let faults_on_uploads = proxy.counts();
    eprintln!("proxy counts after the uploads: {faults_on_uploads:?}");
    // Seed 20 draws all four kinds within the first 31 requests.
    assert!(
        faults_on_uploads.faults >= 3
            && faults_on_uploads.status_faults >= 1
            && faults_on_uploads.resets >= 1,
        "too few faults hit the uploads to test anything: {faults_on_uploads:?}"
    );
    let counts = store.counts();
    assert_eq!((counts.post, counts.put), (12, 18), "{counts:?}");

    proxy.set_faults(Faults::none());
    for (i, object) in objects.iter().enumerate() {
        let got = store.get(&format!("packs/{i}")).await.expect("get");
        assert!(got.as_ref() == &object[..], "object {i} differs");
    }
    assert_eq!(unfinished_uploads(&garage, 0).await, 0);
}

#[tokio::test]
async fn a_part_refused_for_good_aborts_the_upload() {
    let Some(garage) = garage_or_skip("a_part_refused_for_good_aborts_the_upload") else {
        return;
    };
    let proxy = FaultProxy::start(&garage.endpoint(), Faults::none()).expect("proxy");
    let store = open(&garage, &proxy, "refused");
    let object = Bytes::from(data(21, (17 * MIB) as usize));
    let refuse_part_2 = FailRule {
        method: "PUT".into(),
        query_contains: "partNumber=2&".into(),
        status: 400,
    };

    // Control: with the abort refused too, the upload is left behind — so Garage's count
    // does see leftovers, and it is the abort that removes them below.
    proxy.set_fail_rules(vec![
        refuse_part_2.clone(),
        FailRule {
            method: "DELETE".into(),
            query_contains: "uploadId=".into(),
            status: 400,
        },
    ]);
    store
        .put("packs/kept", object.clone())
        .await
        .expect_err("part 2 is refused");
    assert_eq!(unfinished_uploads(&garage, 1).await, 1);

    proxy.set_fail_rules(vec![refuse_part_2]);
    proxy.reset_counts();
    let before = store.counts();
    let error = store
        .put("packs/aborted", object)
        .await
        .expect_err("part 2 is refused");
    let message = error.to_string();
    assert_one_line_without(&message, garage.secret_key());
    assert!(message.contains("packs/aborted"), "{message}");
    let counts = store.counts().since(&before);
    assert_eq!((counts.post, counts.delete), (1, 1), "{counts:?}");
    let seen = proxy.counts();
    assert!(seen.rule_failures >= 1 && seen.delete == 1, "{seen:?}");
    assert_eq!(store.size_of("packs/aborted").await.expect("head"), None);
    assert_eq!(
        unfinished_uploads(&garage, 1).await,
        1,
        "only the control's upload may be left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_put_aborts_the_upload() {
    let Some(garage) = garage_or_skip("a_cancelled_put_aborts_the_upload") else {
        return;
    };
    let proxy = FaultProxy::start(&garage.endpoint(), Faults::none()).expect("proxy");
    let store = open(&garage, &proxy, "cancelled");
    // Part 1 keeps answering 503, so the put sits in its retries until it is dropped.
    proxy.set_fail_rules(vec![FailRule {
        method: "PUT".into(),
        query_contains: "partNumber=1&".into(),
        status: 503,
    }]);
    let put = store.put(
        "packs/cancelled",
        Bytes::from(data(31, (12 * MIB) as usize)),
    );
    // Drop the put once part 1 has been refused at least once: it is then inside its retries.
    // The wait has no deadline of its own beyond a generous one, so a slow machine cannot fail it.
    let refused_once = async {
        let give_up = Instant::now() + Duration::from_secs(120);
        while proxy.counts().rule_failures == 0 && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        result = put => panic!("the put should still be retrying part 1, but ended: {result:?}"),
        () = refused_once => {}
    }
    assert!(
        proxy.counts().rule_failures >= 1,
        "part 1 was never refused"
    );
    assert_eq!(proxy.counts().post, 1, "the upload was created");
    assert_eq!(
        unfinished_uploads(&garage, 0).await,
        0,
        "the dropped put's upload was not aborted"
    );
    assert_eq!(proxy.counts().delete, 1, "{:?}", proxy.counts());
    assert_eq!(store.size_of("packs/cancelled").await.expect("head"), None);
}
