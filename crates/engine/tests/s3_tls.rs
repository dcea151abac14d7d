//! S3 over HTTPS with a private CA, against a real Garage behind the test proxy serving TLS:
//! an untrusted certificate fails with a one-line hint at `--ca-cert`; `--ca-cert FILE` makes
//! it work; `--insecure-skip-tls-verify` works only when asked; a bad CA file is refused.

mod s3_support;

use bytes::Bytes;
use s3_support::{assert_one_line_without, TestEnv};
use s3mover_engine::storage::{StoreError, StoreOptions};
use s3mover_testkit::{garage_or_skip, FaultProxy, Faults};

#[tokio::test]
async fn https_endpoint_with_a_private_ca() {
    let Some(garage) = garage_or_skip("https_endpoint_with_a_private_ca") else {
        return;
    };
    let proxy = FaultProxy::start_tls(&garage.endpoint(), Faults::none()).expect("TLS proxy");
    assert!(proxy.endpoint().starts_with("https://"));
    let env = TestEnv::for_garage(&garage, &proxy.endpoint());
    let url = format!("s3://{}/tls", garage.bucket());

    // The system roots alone do not trust the private CA.
    let store = env.open(&url).expect("open");
    let error = store
        .put("config", Bytes::from_static(b"x"))
        .await
        .expect_err("untrusted certificate");
    assert!(matches!(error, StoreError::Access(_)), "{error:?}");
    // Not retried: no retry can make the certificate trusted. (A failure the retry loop
    // would send again counts as a failed attempt.)
    assert_eq!(store.counts().failed_attempts, 0);
    let text = error.to_string();
    eprintln!("error: {text}");
    assert!(text.contains("--ca-cert"), "{text}");
    assert_one_line_without(&text, garage.secret_key());

    // --ca-cert FILE.
    let dir = tempfile::tempdir().expect("dir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, proxy.ca_pem().unwrap_or_default()).expect("write CA");
    let trusted = env
        .open_with(
            &url,
            &StoreOptions {
                ca_cert: Some(ca.clone()),
                ..StoreOptions::default()
            },
        )
        .expect("open with CA");
    let before = proxy.counts();
    trusted
        .put("config", Bytes::from_static(b"over tls"))
        .await
        .expect("put over TLS");
    // Over verified TLS the body is not hashed into the signature.
    let sent = proxy.counts().since(&before);
    assert_eq!((sent.put, sent.unsigned_puts), (1, 1), "{sent:?}");
    assert_eq!(
        trusted.get("config").await.expect("get").as_ref(),
        b"over tls"
    );

    // --insecure-skip-tls-verify.
    let insecure = env
        .open_with(
            &url,
            &StoreOptions {
                insecure_skip_tls_verify: true,
                ..StoreOptions::default()
            },
        )
        .expect("open insecure");
    assert_eq!(
        insecure.get("config").await.expect("get").as_ref(),
        b"over tls"
    );
    // Without a checked certificate the signature covers the body again.
    let before = proxy.counts();
    insecure
        .put("config", Bytes::from_static(b"over tls"))
        .await
        .expect("put, certificate unchecked");
    let sent = proxy.counts().since(&before);
    assert_eq!((sent.put, sent.unsigned_puts), (1, 0), "{sent:?}");
}

#[test]
fn a_ca_file_that_is_not_pem_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").expect("write");
    let env = TestEnv::new(vec![
        ("AWS_ENDPOINT_URL".into(), "https://127.0.0.1:9".into()),
        ("AWS_ACCESS_KEY_ID".into(), "GK1".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "s".into()),
    ]);
    let options = StoreOptions {
        ca_cert: Some(bad),
        ..StoreOptions::default()
    };
    let text = env
        .open_with("s3://b/p", &options)
        .expect_err("bad CA file")
        .to_string();
    assert!(text.contains("--ca-cert"), "{text}");
    let options = StoreOptions {
        ca_cert: Some(dir.path().join("missing.pem")),
        ..StoreOptions::default()
    };
    let text = env
        .open_with("s3://b/p", &options)
        .expect_err("missing CA file")
        .to_string();
    assert!(text.contains("cannot read --ca-cert"), "{text}");
}
