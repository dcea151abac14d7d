//! Bad S3 settings against a real Garage: wrong credentials, unknown key, missing bucket,
//! wrong region, an endpoint that refuses connections, no credentials at all. Each fails with
//! one line that says what to check, never shows the secret, and writes nothing.

mod s3_support;

use bytes::Bytes;
use s3_support::{assert_one_line_without, TestEnv};
use s3mover_engine::storage::s3::UNANSWERED_CONNECT_RETRIES;
use s3mover_engine::storage::StoreError;
use s3mover_testkit::{free_port, garage_or_skip, Garage};

/// Nothing was written under `prefix` (checked with the right settings).
async fn assert_nothing_written(garage: &Garage, prefix: &str) {
    let env = TestEnv::for_garage(garage, &garage.endpoint());
    let store = env
        .open(&format!("s3://{}/{prefix}", garage.bucket()))
        .expect("open with good settings");
    let listed = store.list("").await.expect("list with good settings");
    assert!(listed.is_empty(), "something was written: {listed:?}");
}

fn message(error: StoreError) -> String {
    assert!(
        matches!(error, StoreError::Access(_)),
        "expected an actionable Access error, got {error:?}"
    );
    let text = error.to_string();
    eprintln!("error: {text}");
    text
}

#[tokio::test]
async fn wrong_secret_key() {
    let Some(garage) = garage_or_skip("wrong_secret_key") else {
        return;
    };
    let wrong = "0".repeat(64);
    let mut env = TestEnv::for_garage(&garage, &garage.endpoint());
    env.set("AWS_SECRET_ACCESS_KEY", &wrong);
    let store = env
        .open(&format!("s3://{}/bad-secret", garage.bucket()))
        .expect("opening does not contact the server");
    let error = message(
        store
            .put("config", Bytes::from_static(b"x"))
            .await
            .expect_err("put"),
    );
    assert!(error.contains("AWS_ACCESS_KEY_ID"), "{error}");
    assert!(error.contains("rejected the credentials"), "{error}");
    assert_one_line_without(&error, &wrong);
    let error = message(store.get("config").await.expect_err("get"));
    assert!(error.contains("rejected the credentials"), "{error}");
    assert_nothing_written(&garage, "bad-secret").await;
}

#[tokio::test]
async fn unknown_access_key() {
    let Some(garage) = garage_or_skip("unknown_access_key") else {
        return;
    };
    let mut env = TestEnv::for_garage(&garage, &garage.endpoint());
    env.set("AWS_ACCESS_KEY_ID", "GK000000000000000000000000");
    let store = env
        .open(&format!("s3://{}/bad-key", garage.bucket()))
        .expect("open");
    let error = message(
        store
            .put("config", Bytes::from_static(b"x"))
            .await
            .expect_err("put"),
    );
    assert!(error.contains("AWS_ACCESS_KEY_ID"), "{error}");
    assert_one_line_without(&error, garage.secret_key());
    let error = message(store.list("").await.expect_err("list"));
    assert!(error.contains("AWS_ACCESS_KEY_ID"), "{error}");
    assert_nothing_written(&garage, "bad-key").await;
}

#[tokio::test]
async fn missing_bucket() {
    let Some(garage) = garage_or_skip("missing_bucket") else {
        return;
    };
    let env = TestEnv::for_garage(&garage, &garage.endpoint());
    let store = env.open("s3://no-such-bucket/repo").expect("open");
    let error = message(store.get("config").await.expect_err("get"));
    assert!(error.contains("bucket does not exist"), "{error}");
    assert_one_line_without(&error, garage.secret_key());
    let error = message(
        store
            .put("config", Bytes::from_static(b"x"))
            .await
            .expect_err("put"),
    );
    assert!(error.contains("bucket does not exist"), "{error}");
    let error = message(store.list("").await.expect_err("list"));
    assert!(error.contains("bucket does not exist"), "{error}");
    // A missing bucket is never mistaken for a missing object.
    let error = store
        .get_optional("config")
        .await
        .expect_err("get_optional");
    assert!(!error.is_not_found());
    assert_nothing_written(&garage, "repo").await;
}

#[tokio::test]
async fn wrong_region() {
    let Some(garage) = garage_or_skip("wrong_region") else {
        return;
    };
    let mut env = TestEnv::for_garage(&garage, &garage.endpoint());
    env.set("AWS_REGION", "eu-central-1");
    let store = env
        .open(&format!("s3://{}/bad-region", garage.bucket()))
        .expect("open");
    let error = message(
        store
            .put("config", Bytes::from_static(b"x"))
            .await
            .expect_err("put"),
    );
    assert!(error.contains("AWS_REGION"), "{error}");
    assert!(error.contains("region"), "{error}");
    assert_one_line_without(&error, garage.secret_key());
    let error = message(store.get("config").await.expect_err("get"));
    assert!(error.contains("AWS_REGION"), "{error}");
    assert_nothing_written(&garage, "bad-region").await;
}

#[tokio::test]
async fn endpoint_refusing_connections() {
    let port = free_port().expect("port");
    let env = TestEnv::new(vec![
        (
            "AWS_ENDPOINT_URL".into(),
            format!("http://127.0.0.1:{port}"),
        ),
        (
            "AWS_ACCESS_KEY_ID".into(),
            "GK000000000000000000000000".into(),
        ),
        ("AWS_SECRET_ACCESS_KEY".into(), "f".repeat(64)),
    ]);
    let store = env.open("s3://bucket/repo").expect("open");
    let error = message(store.get("config").await.expect_err("get"));
    assert!(error.contains("connection refused"), "{error}");
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    assert!(error.contains("AWS_ENDPOINT_URL"), "{error}");
    assert_one_line_without(&error, &"f".repeat(64));
    // Retried as the one retry policy says for an endpoint that never answered, and no more:
    // every attempt was refused.
    assert_eq!(
        store.counts().failed_attempts,
        UNANSWERED_CONNECT_RETRIES + 1
    );
}

#[tokio::test]
async fn no_credentials_anywhere() {
    let env = TestEnv::new(vec![(
        "AWS_ENDPOINT_URL".into(),
        "http://127.0.0.1:9".into(),
    )]);
    let error = env.open("s3://bucket/repo").expect_err("open");
    let text = error.to_string();
    assert!(text.contains("no S3 credentials found"), "{text}");
    assert!(text.contains("AWS_PROFILE"), "{text}");
    assert!(!text.contains('\n'));
}

#[tokio::test]
async fn unknown_profile_and_bad_options() {
    let mut env = TestEnv::new(vec![("AWS_PROFILE".into(), "nope".into())]);
    let text = env
        .open("s3://bucket/repo")
        .expect_err("profile")
        .to_string();
    assert!(text.contains("AWS_PROFILE=nope"), "{text}");
    env.remove("AWS_PROFILE");
    env.set("AWS_ACCESS_KEY_ID", "GK1")
        .set("AWS_SECRET_ACCESS_KEY", "s");
    let text = env
        .open("s3://bucket/repo?endpoint=127.0.0.1:3900")
        .expect_err("scheme")
        .to_string();
    assert!(text.contains("http://"), "{text}");
    let text = env
        .open("s3://bucket/repo?colour=blue")
        .expect_err("option")
        .to_string();
    assert!(text.contains("unknown option"), "{text}");
    for (name, value) in [
        ("S3MOVER_S3_STALL_TIMEOUT", "soon"),
        ("S3MOVER_S3_RETRY_BUDGET", "0"),
        // Hours are a duration like any other (the one grammar of `units`); fractions are not.
        ("S3MOVER_S3_RETRY_BUDGET", "1.5h"),
    ] {
        env.set(name, value);
        let text = env
            .open("s3://bucket/repo")
            .expect_err("a duration")
            .to_string();
        assert!(
            text.contains(&format!("{name}={value:?} is not a duration")),
            "{text}"
        );
        assert_one_line_without(&text, "GK1");
        env.remove(name);
    }
}
