//! S3 credentials the ways people keep them, against a real Garage: a shared-config profile
//! with `credential_process`, static keys in the shared credentials file, and
//! `S3MOVER_S3_CREDENTIALS_COMMAND`; cached until near expiry; failures explained without
//! the command's output.

mod s3_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use s3_support::{assert_one_line_without, TestEnv};
use s3mover_testkit::{garage_or_skip, Garage};

/// A script printing credential_process JSON, appending a line to `runs` each time it runs.
fn credential_script(
    dir: &Path,
    garage: &Garage,
    expiration: Option<String>,
) -> (PathBuf, PathBuf) {
    let runs = dir.join("runs");
    let script = dir.join("creds.sh");
    let expiration = expiration
        .map(|e| format!(",\"Expiration\":\"{e}\""))
        .unwrap_or_default();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho run >> '{}'\nprintf '%s' '{{\"Version\":1,\"AccessKeyId\":\"{}\",\"SecretAccessKey\":\"{}\"{}}}'\n",
            runs.display(),
            garage.access_key(),
            garage.secret_key(),
            expiration
        ),
    )
    .expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (script, runs)
}

fn runs(file: &Path) -> usize {
    std::fs::read_to_string(file)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn rfc3339_in(seconds: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

/// Only endpoint and region: no keys in the environment.
fn env_without_keys(garage: &Garage) -> TestEnv {
    TestEnv::new(vec![
        ("AWS_ENDPOINT_URL".into(), garage.endpoint()),
        ("AWS_REGION".into(), garage.region().into()),
    ])
}

async fn round_trip(env: &TestEnv, garage: &Garage, prefix: &str) {
    let store = env
        .open(&format!("s3://{}/{prefix}", garage.bucket()))
        .expect("open");
    for i in 0..3 {
        store
            .put(&format!("obj{i}"), Bytes::from(vec![i as u8; 1000]))
            .await
            .expect("put");
    }
    assert_eq!(
        store.get("obj2").await.expect("get").as_ref(),
        &[2u8; 1000][..]
    );
}

#[tokio::test]
async fn credential_process_in_a_profile() {
    let Some(garage) = garage_or_skip("credential_process_in_a_profile") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let (script, runs_file) = credential_script(dir.path(), &garage, Some(rfc3339_in(3600)));
    let config = dir.path().join("config");
    std::fs::write(
        &config,
        format!(
            "[default]\nregion = us-east-1\n\n[profile backup]\nregion = {}\ncredential_process = {} --token not-shown\n",
            garage.region(),
            script.display()
        ),
    )
    .expect("config");
    let mut env = TestEnv::new(vec![("AWS_ENDPOINT_URL".into(), garage.endpoint())]);
    env.set("AWS_CONFIG_FILE", &config.display().to_string())
        .set("AWS_PROFILE", "backup");
    round_trip(&env, &garage, "cp-profile").await;
    // Cached: valid for an hour, so one run served every request.
    assert_eq!(runs(&runs_file), 1);
}

#[tokio::test]
async fn static_keys_in_the_credentials_file() {
    let Some(garage) = garage_or_skip("static_keys_in_the_credentials_file") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        format!(
            "[other]\naws_access_key_id = GKnope\naws_secret_access_key = nope\n[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            garage.access_key(),
            garage.secret_key()
        ),
    )
    .expect("credentials");
    let mut env = env_without_keys(&garage);
    env.set(
        "AWS_SHARED_CREDENTIALS_FILE",
        &credentials.display().to_string(),
    );
    round_trip(&env, &garage, "static-profile").await;
}

#[tokio::test]
async fn s3mover_credentials_command() {
    let Some(garage) = garage_or_skip("s3mover_credentials_command") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let (script, runs_file) = credential_script(dir.path(), &garage, None);
    let mut env = env_without_keys(&garage);
    env.set(
        "S3MOVER_S3_CREDENTIALS_COMMAND",
        &script.display().to_string(),
    );
    // The command wins over keys in the environment.
    env.set("AWS_ACCESS_KEY_ID", "GK000000000000000000000000")
        .set("AWS_SECRET_ACCESS_KEY", "wrong");
    round_trip(&env, &garage, "s3mover-cmd").await;
    // No Expiration: never refreshed.
    assert_eq!(runs(&runs_file), 1);
}

#[tokio::test]
async fn credentials_near_expiry_are_refreshed() {
    let Some(garage) = garage_or_skip("credentials_near_expiry_are_refreshed") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    // Valid for two more minutes: inside the five-minute refresh margin.
    let (script, runs_file) = credential_script(dir.path(), &garage, Some(rfc3339_in(120)));
    let mut env = env_without_keys(&garage);
    env.set(
        "S3MOVER_S3_CREDENTIALS_COMMAND",
        &script.display().to_string(),
    );
    round_trip(&env, &garage, "refresh").await;
    assert!(runs(&runs_file) >= 4, "ran {} times", runs(&runs_file));
}

#[tokio::test]
async fn failing_or_garbled_commands_are_explained() {
    let Some(garage) = garage_or_skip("failing_or_garbled_commands_are_explained") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("s3://{}/failing", garage.bucket());

    let failing = dir.path().join("failing.sh");
    std::fs::write(&failing, "#!/bin/sh\necho 'vault is locked' >&2\nexit 3\n").expect("write");
    std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut env = env_without_keys(&garage);
    env.set(
        "S3MOVER_S3_CREDENTIALS_COMMAND",
        &format!("{} --password hunter2", failing.display()),
    );
    let store = env.open(&url).expect("open");
    let error = store
        .put("config", Bytes::from_static(b"x"))
        .await
        .expect_err("put")
        .to_string();
    eprintln!("error: {error}");
    assert!(error.contains("failing.sh"), "{error}");
    assert!(error.contains("S3MOVER_S3_CREDENTIALS_COMMAND"), "{error}");
    assert!(error.contains("vault is locked"), "{error}");
    assert_one_line_without(&error, "hunter2");

    let garbled = dir.path().join("garbled.sh");
    std::fs::write(
        &garbled,
        "#!/bin/sh\necho '{\"Version\":1,\"AccessKeyId\":\"AKIDSECRETISH\",\"SecretAccessKey\":12345}'\n",
    )
    .expect("write");
    std::fs::set_permissions(&garbled, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    env.set(
        "S3MOVER_S3_CREDENTIALS_COMMAND",
        &garbled.display().to_string(),
    );
    let store = env.open(&url).expect("open");
    let error = store.get("config").await.expect_err("get").to_string();
    eprintln!("error: {error}");
    assert!(error.contains("credential_process JSON"), "{error}");
    assert_one_line_without(&error, "12345");
    assert_one_line_without(&error, "AKIDSECRETISH");

    // Nothing was written by either.
    let good = TestEnv::for_garage(&garage, &garage.endpoint());
    let listed = good.open(&url).expect("open").list("").await.expect("list");
    assert!(listed.is_empty());
}
