//! Tests of the S3 backend's settings, credentials, retry classifier and explanations.

use super::*;

#[test]
fn bodies_go_unsigned_only_over_verified_tls() {
    let verified = StoreOptions::default();
    let unverified = StoreOptions {
        insecure_skip_tls_verify: true,
        ..StoreOptions::default()
    };
    assert!(
        payload_protected_by_tls(false, &verified),
        "https, verified"
    );
    assert!(!payload_protected_by_tls(true, &verified), "plain http");
    assert!(
        !payload_protected_by_tls(false, &unverified),
        "https, unverified"
    );
}

#[test]
fn reads_ini_sections() {
    let text = "[default]\nregion = eu-west-1\n\n[profile backup]\ncredential_process = bws run -- x\n# c\nregion=us-east-2\n";
    let d = ini_section(text, "default").unwrap();
    assert_eq!(d.get("region").map(String::as_str), Some("eu-west-1"));
    let b = ini_section(text, "profile backup").unwrap();
    assert_eq!(
        b.get("credential_process").map(String::as_str),
        Some("bws run -- x")
    );
    assert_eq!(b.get("region").map(String::as_str), Some("us-east-2"));
    assert!(ini_section(text, "backup").is_none());
}

#[test]
fn finds_the_endpoint_in_an_error() {
    assert_eq!(
        endpoint_in("Error performing PUT http://127.0.0.1:9/b/k in 1s").as_deref(),
        Some("http://127.0.0.1:9")
    );
    assert_eq!(endpoint_in("nothing"), None);
}

#[test]
fn debug_shows_only_the_program() {
    let p = ProcessCredentialProvider::new(
        "/usr/bin/bws secret get --access-token SECRET123".into(),
        "test".into(),
    );
    let shown = format!("{p:?}");
    assert!(shown.contains("bws"));
    assert!(!shown.contains("SECRET123"));
}

/// A connection that times out gets the one line that says what to check.
#[tokio::test]
async fn a_connection_that_times_out_is_explained() {
    let error = object_store::Error::Generic {
        store: "S3",
        source: Box::new(super::super::test_support::connect_timeout_error().await),
    };
    let line = explain(&error).expect("explained");
    assert!(
        line.starts_with("cannot connect to the S3 endpoint at http://127.0.0.1:"),
        "{line}"
    );
    assert!(line.contains("no answer to the connection"), "{line}");
    assert!(line.contains("AWS_ENDPOINT_URL"), "{line}");
}

/// The S3 duration settings read the shared grammar ([`crate::units`]), hours included,
/// and refuse zero.
#[test]
fn duration_settings_use_the_shared_grammar() {
    fn read(value: &str) -> Result<Duration, StoreError> {
        let env = |name: &str| (name == "S3MOVER_S3_STALL_TIMEOUT").then(|| value.to_string());
        stall_timeout(&env)
    }
    assert_eq!(read("30").expect("30"), Duration::from_secs(30));
    assert_eq!(read("500ms").expect("500ms"), Duration::from_millis(500));
    assert_eq!(read("2m").expect("2m"), Duration::from_secs(120));
    assert_eq!(read("1h").expect("1h"), Duration::from_secs(3600));
    assert_eq!(read("1h30m").expect("1h30m"), Duration::from_secs(5400));
    for bad in ["0", "0s", "fast", "1.5s"] {
        let err = read(bad).expect_err(bad);
        assert!(err.to_string().contains("is not a duration"), "{err}");
    }
    let none = |_: &str| None;
    assert_eq!(
        stall_timeout(&none).expect("default"),
        stall::DEFAULT_STALL_TIMEOUT
    );
}

#[test]
fn multipart_settings_come_from_options_then_env_then_defaults() {
    let none = |_: &str| None;
    let defaults = multipart_settings(&StoreOptions::default(), &none).expect("defaults");
    assert_eq!(defaults.threshold, DEFAULT_MULTIPART_THRESHOLD);
    assert_eq!(defaults.part_size, DEFAULT_MULTIPART_PART_SIZE);

    let env = |name: &str| match name {
        "S3MOVER_S3_MULTIPART_THRESHOLD" => Some("8MiB".to_string()),
        "S3MOVER_S3_MULTIPART_PART_SIZE" => Some("6291456".to_string()),
        _ => None,
    };
    let from_env = multipart_settings(&StoreOptions::default(), &env).expect("env");
    assert_eq!((from_env.threshold, from_env.part_size), (8 << 20, 6 << 20));

    let options = StoreOptions {
        multipart_threshold: Some(100 << 20),
        ..StoreOptions::default()
    };
    let from_options = multipart_settings(&options, &env).expect("options");
    assert_eq!(
        (from_options.threshold, from_options.part_size),
        (100 << 20, 6 << 20)
    );

    let small_part =
        |name: &str| (name == "S3MOVER_S3_MULTIPART_PART_SIZE").then(|| "1MiB".to_string());
    let err = multipart_settings(&StoreOptions::default(), &small_part).expect_err("1 MiB parts");
    assert!(err.to_string().contains("5MiB to 5GiB"), "{err}");
    let garbage =
        |name: &str| (name == "S3MOVER_S3_MULTIPART_THRESHOLD").then(|| "lots".to_string());
    let err = multipart_settings(&StoreOptions::default(), &garbage).expect_err("garbage");
    assert!(err.to_string().contains("is not a size"), "{err}");
    let tiny = StoreOptions {
        multipart_threshold: Some(1024),
        ..StoreOptions::default()
    };
    assert!(multipart_settings(&tiny, &none).is_err());
}

#[test]
fn no_credentials_is_a_clear_error() {
    let env = |_: &str| None;
    let err = find_credentials(&env, None).err().map(|e| e.to_string());
    assert!(err.unwrap_or_default().contains("no S3 credentials found"));
}
