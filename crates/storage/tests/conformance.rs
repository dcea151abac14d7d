//! One conformance suite for every backend: the same checks of the [`Store`] door run against a
//! local directory and against Garage (S3), so that the engine can rely on one behaviour
//! whatever the repository URL. The Garage run prints SKIPPED outside CI when `garage` is not
//! installed, and fails in CI.

use bytes::Bytes;
use futures::TryStreamExt;
use s3mover_storage::{open_store, open_store_with_env, Store, StoreOptions};
use s3mover_testkit::garage_or_skip;

/// Bytes that differ at every position, `len` of them.
fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect::<Vec<u8>>()
        .into()
}

/// Every check, on one store whose prefix is empty at the start.
async fn conformance(store: &Store) {
    let small = pattern(1000, 1);
    let large = pattern(3 << 20, 2);

    // Absent objects.
    assert!(store
        .get_optional("packs/ab/none")
        .await
        .expect("get_optional")
        .is_none());
    let missing = store
        .get("packs/ab/none")
        .await
        .expect_err("missing object");
    assert!(missing.is_not_found(), "{missing}");
    assert_eq!(store.size_of("packs/ab/none").await.expect("size_of"), None);
    store
        .delete("packs/ab/none")
        .await
        .expect("deleting a missing object is no error");
    assert!(store.list("packs/").await.expect("list").is_empty());

    // Whole objects, written, overwritten and read back.
    store
        .put("backups/0000000000000001", small.clone())
        .await
        .expect("put");
    store
        .put("packs/ab/large", large.clone())
        .await
        .expect("put large");
    assert_eq!(
        store.get("backups/0000000000000001").await.expect("get"),
        small
    );
    let replaced = pattern(500, 3);
    store
        .put("backups/0000000000000001", replaced.clone())
        .await
        .expect("overwrite");
    assert_eq!(
        store.get("backups/0000000000000001").await.expect("get"),
        replaced
    );
    assert_eq!(
        store.size_of("packs/ab/large").await.expect("size_of"),
        Some(large.len() as u64)
    );

    // Ranges: plain, uncached and streamed give the same bytes; a range past the end fails.
    let range = 4000..(2 << 20) + 17;
    let want = large.slice(range.start as usize..range.end as usize);
    assert_eq!(
        store
            .get_range("packs/ab/large", range.clone())
            .await
            .expect("range"),
        want
    );
    assert_eq!(
        store
            .get_range_uncached("packs/ab/large", range.clone())
            .await
            .expect("uncached"),
        want
    );
    let pieces: Vec<Bytes> = store
        .get_range_stream("packs/ab/large", range.clone())
        .await
        .expect("stream")
        .try_collect()
        .await
        .expect("pieces");
    assert_eq!(pieces.concat(), want.to_vec());
    let end = large.len() as u64;
    store
        .get_range("packs/ab/large", end - 10..end + 10)
        .await
        .expect_err("a range past the end is an error, never a short answer");

    // Listing: keys relative to the store's prefix, with sizes, only under the prefix asked.
    store
        .put("packs/cd/other", small.clone())
        .await
        .expect("put");
    let mut listed: Vec<(String, u64)> = store
        .list("packs/")
        .await
        .expect("list")
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![
            ("packs/ab/large".to_string(), large.len() as u64),
            ("packs/cd/other".to_string(), small.len() as u64),
        ]
    );
    let backups = store.list("backups/").await.expect("list");
    assert_eq!(backups.len(), 1);
    assert_eq!(backups[0].key, "backups/0000000000000001");

    // Deleting.
    store.delete("packs/ab/large").await.expect("delete");
    assert_eq!(
        store.size_of("packs/ab/large").await.expect("size_of"),
        None
    );
    assert_eq!(store.list("packs/").await.expect("list").len(), 1);
}

#[tokio::test]
async fn a_local_directory_conforms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(
        &dir.path().join("repo").display().to_string(),
        &StoreOptions {
            create: true,
            ..StoreOptions::default()
        },
    )
    .expect("local store");
    conformance(&store).await;
}

#[tokio::test]
async fn garage_conforms() {
    let Some(garage) = garage_or_skip("garage_conforms") else {
        return;
    };
    let home = tempfile::tempdir().expect("temp home");
    let mut env: std::collections::HashMap<String, String> = garage.env().into_iter().collect();
    env.insert("HOME".into(), home.path().display().to_string());
    let url = format!("s3://{}/conformance", garage.bucket());
    let store = open_store_with_env(&url, &StoreOptions::default(), &|name| {
        env.get(name).cloned()
    })
    .expect("S3 store");
    conformance(&store).await;
}

/// Each backend says how many packs a backup uploads at once by default: one to a local disk,
/// several to S3 (opening an S3 store makes no request, so no server is needed).
#[test]
fn backends_say_how_many_uploads_to_run_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let local = open_store(&dir.path().display().to_string(), &StoreOptions::default())
        .expect("local store");
    assert_eq!(local.uploads_in_flight(), 1);
    let env = |name: &str| {
        match name {
            "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:9"),
            "AWS_REGION" => Some("garage"),
            "AWS_ACCESS_KEY_ID" => Some("GKtest"),
            "AWS_SECRET_ACCESS_KEY" => Some("secret"),
            _ => None,
        }
        .map(str::to_string)
    };
    let s3 =
        open_store_with_env("s3://bucket/repo", &StoreOptions::default(), &env).expect("S3 store");
    assert_eq!(
        s3.uploads_in_flight(),
        s3mover_storage::s3::S3_UPLOADS_IN_FLIGHT
    );
}
