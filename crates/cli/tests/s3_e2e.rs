//! End to end: the real `s3mover` binary against a real Garage, directly and through the
//! fault-injecting proxy. A full backup, an incremental (`--changed-ranges`) and restores come
//! out byte-identical under 10 % injected faults; a backup killed with SIGKILL mid-upload and
//! rerun resumes and restores byte-exact; bad settings and bad repositories fail with one
//! line and write nothing.

mod common;

use common::{make_image, pseudo_random, ranges_file, write_at};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use s3mover_engine::storage::{open_store_with_env, Store, StoreOptions};
use s3mover_testkit::{free_port, garage_or_skip, FaultKind, FaultProxy, Faults, Garage};

const PASSWORD: &str = "e2e password";

/// Runs s3mover against one repository URL with a private environment.
struct Client {
    repo: String,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl Client {
    fn new(garage: &Garage, endpoint: &str, prefix: &str) -> Client {
        Client {
            repo: format!("s3://{}/{prefix}", garage.bucket()),
            env: garage.env_for_endpoint(endpoint),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn set(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_s3mover"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("S3MOVER_REPO", &self.repo)
            .env("S3MOVER_PASSWORD", PASSWORD)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run s3mover")
    }

    /// Runs `args`, which must succeed.
    fn ok_output(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "s3mover {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.ok_output(args).stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        self.json_and_stderr(args).0
    }

    /// Runs `args` with `-o json`; returns the report and standard error.
    fn json_and_stderr(&self, args: &[&str]) -> (serde_json::Value, String) {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let out = self.ok_output(&all);
        let text = String::from_utf8_lossy(&out.stdout);
        let report =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        (report, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Runs and requires failure with one line on stderr mentioning every needle.
    fn fails(&self, args: &[&str], needles: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert!(
            !out.status.success(),
            "s3mover {args:?} should fail; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
        for needle in needles {
            assert!(
                stderr.to_lowercase().contains(&needle.to_lowercase()),
                "stderr should mention {needle:?}: {stderr}"
            );
        }
        eprintln!("s3mover {args:?}: {stderr}");
        stderr
    }
}

/// A store on the same bucket with good settings, for looking behind s3mover's back.
fn direct_store(garage: &Garage, prefix: &str) -> Store {
    let env: BTreeMap<String, String> = garage.env().into_iter().collect();
    open_store_with_env(
        &format!("s3://{}/{prefix}", garage.bucket()),
        &StoreOptions::default(),
        &|k| env.get(k).cloned(),
    )
    .expect("open direct store")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Every object under the prefix, with its size.
fn objects(garage: &Garage, prefix: &str) -> BTreeMap<String, u64> {
    let store = direct_store(garage, prefix);
    runtime()
        .block_on(store.list(""))
        .expect("list")
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect()
}

fn assert_same_file(a: &Path, b: &Path) {
    let (x, y) = (
        std::fs::read(a).expect("read"),
        std::fs::read(b).expect("read"),
    );
    assert_eq!(
        x.len(),
        y.len(),
        "{} and {} differ in size",
        a.display(),
        b.display()
    );
    assert!(x == y, "{} and {} differ", a.display(), b.display());
}

fn id_of(report: &serde_json::Value) -> String {
    report["id"].as_str().expect("backup id").to_string()
}

#[test]
fn backup_incremental_restore_under_ten_percent_faults() {
    let Some(garage) = garage_or_skip("backup_incremental_restore_under_ten_percent_faults") else {
        return;
    };
    let proxy = FaultProxy::start(&garage.endpoint(), Faults::mixed(0.10, 2024)).expect("proxy");
    let client = Client::new(&garage, &proxy.endpoint(), "faulty");
    let size = 24u64 << 20;
    let image = client.path("vol.img");
    make_image(
        &image,
        size,
        &[(0, 6 << 20), (9 << 20, 5 << 20), (20 << 20, 3 << 20)],
        11,
    );

    client.ok(&["init", "--chunk-size", "64K"]);
    let full = client.json(&[
        "backup",
        image.to_str().unwrap_or_default(),
        "--volume",
        "vol",
    ]);
    let full_id = id_of(&full);
    std::fs::copy(&image, client.path("vol.full")).expect("copy");

    // 200 scattered 4 KiB writes, reported through a ranges file.
    let mut changed = Vec::new();
    for i in 0..200u64 {
        let offset = (i * 7919 * 4096) % size;
        write_at(&image, offset, &pseudo_random(4096, 500 + i));
        changed.push((offset, 4096));
    }
    changed.sort();
    let ranges = client.path("changed.json");
    ranges_file(&ranges, size, &changed);
    let incremental = client.json(&[
        "backup",
        image.to_str().unwrap_or_default(),
        "--volume",
        "vol",
        "--changed-ranges",
        ranges.to_str().unwrap_or_default(),
    ]);
    let incremental_id = id_of(&incremental);
    assert_eq!(incremental["parent"].as_str(), Some(full_id.as_str()));
    let uploaded = incremental["bytesUploaded"].as_u64().unwrap_or(u64::MAX);
    assert!(
        uploaded < 16 * 200 * 4096,
        "incremental uploaded {uploaded} bytes"
    );

    let restored_full = client.path("restored.full");
    let restored_incremental = client.path("restored.incr");
    client.ok(&[
        "restore",
        &full_id,
        "--target",
        restored_full.to_str().unwrap_or_default(),
    ]);
    client.ok(&[
        "restore",
        "latest",
        "--volume",
        "vol",
        "--target",
        restored_incremental.to_str().unwrap_or_default(),
    ]);
    assert_same_file(&restored_full, &client.path("vol.full"));
    assert_same_file(&restored_incremental, &image);
    client.ok(&["verify", &incremental_id, "--read-data"]);

    let counts = proxy.counts();
    eprintln!("proxy counts: {counts:?}");
    assert!(counts.faults >= 5, "too few faults injected: {counts:?}");
}

/// Checks what a command that rode out `injected` faults says of them: its closing note counts
/// every one (one failed attempt each), its report those after the repository was opened, and
/// at least one warning came while it ran.
fn assert_failed_attempts_reported(report: &serde_json::Value, stderr: &str, injected: u64) {
    assert!(injected > 0, "the proxy injected nothing");
    let note = failed_attempts_note(injected);
    assert!(stderr.contains(&note), "no {note:?} in: {stderr}");
    let reported = report["requests"]["failedAttempts"].as_u64().unwrap_or(0);
    assert!(
        reported > 0 && reported <= injected,
        "{reported} failed attempts in the report, {injected} injected: {report}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("WARN") && l.contains("failed") && l.contains("retrying")),
        "no warning about the retries: {stderr}"
    );
}

/// Failed attempts do not pass silently: each answer of 503 and each connection cut
/// mid-body that the retry policy rides out is counted, warned about while the command runs,
/// and summed up at its end.
#[test]
fn failed_attempts_are_counted_and_warned_about() {
    let Some(garage) = garage_or_skip("failed_attempts_are_counted_and_warned_about") else {
        return;
    };
    let proxy = FaultProxy::start(&garage.endpoint(), Faults::none()).expect("proxy");
    let client = Client::new(&garage, &proxy.endpoint(), "attempts");
    let image = client.path("vol.img");
    make_image(&image, 8 << 20, &[(0, 6 << 20)], 31);
    client.ok(&["init", "--chunk-size", "64K"]);

    proxy.set_faults(Faults::only(FaultKind::Status503, 0.3, 5));
    let before = proxy.counts();
    let (backup, stderr) = client.json_and_stderr(&[
        "backup",
        image.to_str().unwrap_or_default(),
        "--volume",
        "v",
    ]);
    let injected = proxy.counts().since(&before);
    assert_failed_attempts_reported(&backup, &stderr, injected.status_faults);
    assert!(stderr.contains("503 Service Unavailable"), "{stderr}");

    proxy.set_faults(Faults::only(FaultKind::ResetMidBody, 0.3, 6));
    let target = client.path("restored.img");
    let before = proxy.counts();
    let (restore, stderr) = client.json_and_stderr(&[
        "restore",
        "latest",
        "--volume",
        "v",
        "--target",
        target.to_str().unwrap_or_default(),
    ]);
    let injected = proxy.counts().since(&before);
    assert_same_file(&target, &image);
    assert_failed_attempts_reported(&restore, &stderr, injected.resets);

    // Any command that completes ends with the note, not only backup and restore.
    proxy.set_faults(Faults::only(FaultKind::Status503, 0.3, 7));
    let before = proxy.counts();
    let out = client.ok_output(&["verify", "--read-data"]);
    let injected = proxy.counts().since(&before);
    proxy.set_faults(Faults::none());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(injected.status_faults > 0, "the proxy injected nothing");
    let note = failed_attempts_note(injected.status_faults);
    assert!(stderr.contains(&note), "no {note:?} in: {stderr}");
}

/// The closing note of a command during which `failed` attempts failed.
fn failed_attempts_note(failed: u64) -> String {
    match failed {
        1 => "note: 1 S3 request attempt failed and was retried".to_string(),
        n => format!("note: {n} S3 request attempts failed and were retried"),
    }
}

#[test]
fn sigkill_mid_upload_then_rerun_resumes() {
    let Some(garage) = garage_or_skip("sigkill_mid_upload_then_rerun_resumes") else {
        return;
    };
    let proxy = FaultProxy::start(&garage.endpoint(), Faults::none()).expect("proxy");
    let client = Client::new(&garage, &proxy.endpoint(), "killed");
    // Seven 16 MiB data packs; the engine checkpoints its session every four packs.
    let size = 112u64 << 20;
    let image = client.path("vol.img");
    make_image(&image, size, &[(0, size)], 77);
    client.ok(&["init", "--chunk-size", "64K"]);

    // Each request waits 300 ms in the proxy, so the upload is slow enough to be cut.
    proxy.set_faults(Faults {
        latency: Duration::from_millis(300),
        ..Faults::only(FaultKind::Latency, 1.0, 1)
    });
    let mut child = client
        .command(&[
            "backup",
            image.to_str().unwrap_or_default(),
            "--volume",
            "vol",
            "--upload-concurrency",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn backup");
    let start = Instant::now();
    // Kill as soon as the run has checkpointed (a session object exists), mid-upload.
    loop {
        let checkpointed = objects(&garage, "killed")
            .keys()
            .any(|k| k.starts_with("sessions/"));
        if checkpointed {
            break;
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the backup finished before it could be killed"
        );
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint was written"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the backup already finished"
    );
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert!(!status.success());

    // The killed run committed nothing that cannot restore.
    proxy.set_faults(Faults::none());
    let listed = client.json(&["backups"]);
    for backup in listed.as_array().cloned().unwrap_or_default() {
        let id = backup["id"].as_str().unwrap_or_default().to_string();
        let target = client.path(&format!("partial-{id}"));
        client.ok(&[
            "restore",
            &id,
            "--target",
            target.to_str().unwrap_or_default(),
        ]);
        assert_same_file(&target, &image);
    }

    proxy.reset_counts();
    let rerun = client.json(&[
        "backup",
        image.to_str().unwrap_or_default(),
        "--volume",
        "vol",
    ]);
    eprintln!("rerun report: {rerun}");
    let resumed = rerun["resumedChunks"].as_u64().unwrap_or(0);
    let uploaded = rerun["bytesUploaded"].as_u64().unwrap_or(u64::MAX);
    assert!(resumed > 0, "the rerun did not resume: {rerun}");
    assert!(
        uploaded < size - (32 << 20),
        "the rerun uploaded {uploaded} of {size} bytes: it did not skip what was there"
    );
    let target = client.path("restored.img");
    client.ok(&[
        "restore",
        &id_of(&rerun),
        "--target",
        target.to_str().unwrap_or_default(),
    ]);
    assert_same_file(&target, &image);
}

#[test]
fn a_prefix_that_is_not_a_repository() {
    let Some(garage) = garage_or_skip("a_prefix_that_is_not_a_repository") else {
        return;
    };
    let store = direct_store(&garage, "photos");
    runtime()
        .block_on(store.put("2024/cat.jpg", b"not a repository".to_vec().into()))
        .expect("put");
    let before = objects(&garage, "photos");
    let client = Client::new(&garage, &garage.endpoint(), "photos");
    let image = client.path("vol.img");
    make_image(&image, 1 << 20, &[(0, 1 << 20)], 3);
    client.fails(&["backups"], &["no s3mover repository"]);
    client.fails(
        &[
            "backup",
            image.to_str().unwrap_or_default(),
            "--volume",
            "v",
        ],
        &["repository"],
    );
    client.fails(&["init"], &["cat.jpg"]);
    assert_eq!(objects(&garage, "photos"), before, "something was written");
}

#[test]
fn a_repository_of_a_newer_format_version() {
    let Some(garage) = garage_or_skip("a_repository_of_a_newer_format_version") else {
        return;
    };
    let client = Client::new(&garage, &garage.endpoint(), "future");
    client.ok(&["init", "--chunk-size", "64K"]);
    let store = direct_store(&garage, "future");
    let rt = runtime();
    let config = rt.block_on(store.get("config")).expect("config");
    let mut value: serde_json::Value = serde_json::from_slice(&config).expect("config JSON");
    value["version"] = serde_json::json!(999);
    let text = serde_json::to_vec(&value).expect("encode");
    rt.block_on(store.put("config", text.into())).expect("put");
    let before = objects(&garage, "future");

    let image = client.path("vol.img");
    make_image(&image, 1 << 20, &[(0, 1 << 20)], 5);
    client.fails(&["backups"], &["999"]);
    client.fails(
        &[
            "backup",
            image.to_str().unwrap_or_default(),
            "--volume",
            "v",
        ],
        &["999"],
    );
    client.fails(&["init"], &["already"]);
    assert_eq!(objects(&garage, "future"), before, "something was written");
}

#[test]
fn bad_s3_settings_fail_in_one_line_and_write_nothing() {
    let Some(garage) = garage_or_skip("bad_s3_settings_fail_in_one_line_and_write_nothing") else {
        return;
    };
    let image_dir = tempfile::tempdir().expect("dir");
    let image = image_dir.path().join("vol.img");
    make_image(&image, 1 << 20, &[(0, 1 << 20)], 9);
    let image = image.to_str().unwrap_or_default().to_string();

    let mut wrong_secret = Client::new(&garage, &garage.endpoint(), "bad");
    wrong_secret.set("AWS_SECRET_ACCESS_KEY", &"0".repeat(64));
    let line = wrong_secret.fails(&["init"], &["AWS_ACCESS_KEY_ID"]);
    assert!(!line.contains(&"0".repeat(64)));
    wrong_secret.fails(&["backup", &image, "--volume", "v"], &["AWS_ACCESS_KEY_ID"]);

    let mut missing_bucket = Client::new(&garage, &garage.endpoint(), "bad");
    missing_bucket.repo = "s3://no-such-bucket/bad".into();
    missing_bucket.fails(&["init"], &["bucket does not exist"]);
    missing_bucket.fails(&["backups"], &["bucket does not exist"]);

    let mut wrong_region = Client::new(&garage, &garage.endpoint(), "bad");
    wrong_region.set("AWS_REGION", "ap-south-1");
    wrong_region.fails(&["init"], &["AWS_REGION"]);

    let port = free_port().expect("port");
    let refused = Client::new(&garage, &format!("http://127.0.0.1:{port}"), "bad");
    refused.fails(&["init"], &["connection refused", "AWS_ENDPOINT_URL"]);

    let mut no_credentials = Client::new(&garage, &garage.endpoint(), "bad");
    no_credentials
        .env
        .retain(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"));
    no_credentials.fails(&["init"], &["no S3 credentials found"]);

    assert!(objects(&garage, "bad").is_empty(), "something was written");
}

#[test]
fn secrets_never_reach_output_or_logs() {
    let Some(garage) = garage_or_skip("secrets_never_reach_output_or_logs") else {
        return;
    };
    let mut client = Client::new(&garage, &garage.endpoint(), "secrets");
    client.set("AWS_SESSION_TOKEN", "session-token-that-must-not-leak");
    let image = client.path("vol.img");
    make_image(&image, 2 << 20, &[(0, 1 << 20)], 21);
    let image = image.to_str().unwrap_or_default().to_string();
    let mut outputs = Vec::new();
    for args in [
        vec!["-vv", "init", "--chunk-size", "64K"],
        vec!["-vv", "-o", "json", "backup", &image, "--volume", "v"],
        vec!["-vv", "-o", "json", "backups"],
        vec!["-vv", "-o", "json", "show", "latest", "--volume", "v"],
    ] {
        let out = client.run(&args);
        assert!(
            out.status.success(),
            "s3mover {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
        outputs.push(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    // A failing run too: errors carry no secrets either.
    let mut wrong = Client::new(&garage, &garage.endpoint(), "secrets");
    wrong.set("AWS_SECRET_ACCESS_KEY", &"e".repeat(64));
    let out = wrong.run(&["-vv", "-o", "json", "backups"]);
    assert!(!out.status.success());
    outputs.push(String::from_utf8_lossy(&out.stderr).into_owned());
    for text in &outputs {
        assert!(
            !text.contains(garage.secret_key()),
            "secret key leaked: {text}"
        );
        assert!(!text.contains(&"e".repeat(64)), "secret key leaked: {text}");
        assert!(
            !text.contains("session-token-that-must-not-leak"),
            "session token leaked: {text}"
        );
        assert!(!text.contains(PASSWORD), "password leaked: {text}");
    }
}
