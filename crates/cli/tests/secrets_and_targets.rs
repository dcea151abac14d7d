//! Secrets stay secret (credentials in URLs, tokens, repository file permissions, password
//! sources) and restores go only where they may: never onto a mounted or held block device
//! without `--force`, and onto standard output only when it is a file, byte-exact.

mod common;

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{expect_failure, make_image, Env, LoopDevice};

const SECRET: &str = "hunter2-secret";

/// A repository with one backup of volume `v` from a 1 MiB image; returns the image's bytes.
fn repository_with_backup(env: &Env) -> Vec<u8> {
    env.ok(&[
        "init",
        "--chunk-size",
        "64K",
        "--kdf-memory",
        "8M",
        "--kdf-passes",
        "1",
    ]);
    let image = env.path("disk.img");
    make_image(&image, 1 << 20, &[(0, 64 << 10), (512 << 10, 200 << 10)], 7);
    env.ok(&["backup", image.to_str().expect("path"), "--volume", "v"]);
    std::fs::read(&image).expect("read image")
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn all_output(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn credentials_in_repository_urls_never_reach_errors_or_logs() {
    let env = Env::new();
    let port = closed_port();
    let endpoint = format!("http://user:{SECRET}@127.0.0.1:{port}");
    let encoded = format!("http%3A%2F%2Fuser%3A{SECRET}%40127.0.0.1%3A{port}");
    // (repository URL, AWS_ENDPOINT_URL, whether the output shows the URL, masked)
    let cases: Vec<(String, Option<String>, bool)> = vec![
        (format!("s3://bkt/p?endpoint={endpoint}"), None, true),
        (format!("s3://bkt/p?endpoint={encoded}"), None, true),
        ("s3://bkt/p".into(), Some(endpoint.clone()), true),
        (
            format!("s3://key:{SECRET}@bkt/p?endpoint=http://127.0.0.1:{port}"),
            None,
            false,
        ),
        (format!("s3://user:{SECRET}@/p"), None, true),
    ];
    for (repo, env_endpoint, shown) in cases {
        let mut command = env.command(&["backups", "-vv"]);
        command
            .env("S3MOVER_REPO", &repo)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("S3MOVER_S3_RETRY_BUDGET", "1s")
            .env_remove("AWS_ENDPOINT_URL_S3")
            .env_remove("AWS_PROFILE");
        match &env_endpoint {
            Some(url) => command.env("AWS_ENDPOINT_URL", url),
            None => command.env_remove("AWS_ENDPOINT_URL"),
        };
        let out = command.output().expect("run");
        let text = all_output(&out);
        assert_ne!(out.status.code(), Some(0), "{repo}: {text}");
        assert!(
            !text.contains(SECRET),
            "{repo} leaked its password:\n{text}"
        );
        if shown {
            assert!(
                text.contains("***"),
                "{repo}: the masked URL is shown:\n{text}"
            );
        }
    }
}

#[test]
fn a_token_on_the_command_line_is_warned_about_and_help_points_to_the_file() {
    let env = Env::new();
    let help = String::from_utf8_lossy(&env.run(&["backup", "--help"]).stdout).into_owned();
    assert!(help.contains("prefer --cbt-token-file"), "{help}");
    let help = String::from_utf8_lossy(&env.run(&["cbt", "list", "--help"]).stdout).into_owned();
    assert!(help.contains("prefer --token-file"), "{help}");

    let port = closed_port();
    let address = format!("127.0.0.1:{port}");
    let ca = env.path("ca.pem");
    std::fs::write(&ca, "not a certificate").expect("write ca");
    let ca = ca.to_str().expect("path");
    let out = env.run(&[
        "cbt",
        "list",
        "--address",
        &address,
        "--ca-cert",
        ca,
        "--token",
        "t0ken",
        "-n",
        "ns",
        "-s",
        "snap",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("use --token-file FILE"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");

    repository_with_backup(&env);
    let image = env.path("disk.img");
    let out = env.run(&[
        "backup",
        image.to_str().expect("path"),
        "--volume",
        "v",
        "--cbt-address",
        &address,
        "--cbt-ca-cert",
        ca,
        "--cbt-token",
        "t0ken",
        "-n",
        "ns",
        "-s",
        "snap",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("use --cbt-token-file FILE"), "{stderr}");
}

/// Runs s3mover with the file-creation mask cleared, so that only s3mover decides modes.
fn run_with_open_umask(env: &Env, args: &[&str]) -> Output {
    let mut command = env.command(args);
    // SAFETY: umask is async-signal-safe and touches no memory.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    command.output().expect("run")
}

#[test]
fn repository_files_and_restored_images_are_private_whatever_the_umask() {
    let env = Env::new();
    let image = env.path("disk.img");
    make_image(&image, 4 << 20, &[(0, 1 << 20), (2 << 20, 300 << 10)], 3);
    let image = image.to_str().expect("path");
    for args in [
        vec!["init", "--kdf-memory", "8M", "--kdf-passes", "1"],
        vec!["backup", image, "--volume", "v"],
        vec!["backup", image, "--volume", "v", "--parent", "none"],
        vec!["protect", "latest"],
    ] {
        let args = if args[0] == "protect" {
            let id = env.json(&["backups"])[0]["id"]
                .as_str()
                .expect("id")
                .to_string();
            vec!["protect".to_string(), id]
        } else {
            args.iter().map(|s| s.to_string()).collect()
        };
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_with_open_umask(&env, &refs);
        assert!(out.status.success(), "{refs:?}: {}", all_output(&out));
    }
    let mut checked = 0;
    let mut stack = vec![env.repo.clone()];
    while let Some(dir) = stack.pop() {
        let mode = std::fs::metadata(&dir).expect("stat").mode() & 0o777;
        assert_eq!(mode, 0o700, "directory {}", dir.display());
        for entry in std::fs::read_dir(&dir).expect("list") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let mode = std::fs::metadata(&path).expect("stat").mode() & 0o777;
                assert_eq!(mode, 0o600, "file {}", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 5, "only {checked} files in the repository");

    let restored = env.path("restored.img");
    let out = run_with_open_umask(
        &env,
        &[
            "restore",
            "latest",
            "--volume",
            "v",
            "--target",
            restored.to_str().expect("path"),
        ],
    );
    assert!(out.status.success(), "{}", all_output(&out));
    let mode = std::fs::metadata(&restored).expect("stat").mode() & 0o777;
    assert_eq!(mode, 0o600, "restored image");
}

#[test]
fn password_sources_time_out_show_their_errors_and_are_named_when_wrong() {
    let env = Env::new();
    repository_with_backup(&env);
    let run = |vars: &[(&str, &str)]| {
        let mut command = env.command(&["backups"]);
        command.env_remove("S3MOVER_PASSWORD");
        for (name, value) in vars {
            command.env(name, value);
        }
        command.output().expect("run")
    };

    // A command that hangs is stopped.
    let out = run(&[
        ("S3MOVER_PASSWORD_COMMAND", "sleep 600"),
        ("S3MOVER_PASSWORD_COMMAND_TIMEOUT", "1s"),
    ]);
    expect_failure(&out, 4, "did not finish within 1s");
    let out = run(&[
        ("S3MOVER_PASSWORD_COMMAND", "echo x"),
        ("S3MOVER_PASSWORD_COMMAND_TIMEOUT", "0s"),
    ]);
    expect_failure(&out, 4, "S3MOVER_PASSWORD_COMMAND_TIMEOUT");

    // A command that fails says why, in its own words.
    let out = run(&[(
        "S3MOVER_PASSWORD_COMMAND",
        "echo 'vault: permission denied' >&2; exit 3",
    )]);
    expect_failure(&out, 4, "vault: permission denied");

    // A wrong password names its source.
    let out = run(&[("S3MOVER_PASSWORD", "wrong")]);
    expect_failure(&out, 4, "password from S3MOVER_PASSWORD does not open");
    let out = run(&[("S3MOVER_PASSWORD_COMMAND", "echo wrong")]);
    expect_failure(
        &out,
        4,
        "password from S3MOVER_PASSWORD_COMMAND does not open",
    );
    let file = env.path("password.txt");
    std::fs::write(&file, "wrong\n").expect("write");
    let out = run(&[("S3MOVER_PASSWORD_FILE", file.to_str().expect("path"))]);
    expect_failure(
        &out,
        4,
        &format!(
            "password from password file {} does not open",
            file.display()
        ),
    );

    // A trailing line break is not part of the password, from any source.
    let with_newline = format!("{}\n", env.password);
    let out = run(&[("S3MOVER_PASSWORD", &with_newline)]);
    assert!(out.status.success(), "{}", all_output(&out));
    let out = run(&[("S3MOVER_PASSWORD", &format!("{}\r\n", env.password))]);
    assert!(out.status.success(), "{}", all_output(&out));
    std::fs::write(&file, &with_newline).expect("write");
    let out = run(&[("S3MOVER_PASSWORD_FILE", file.to_str().expect("path"))]);
    assert!(out.status.success(), "{}", all_output(&out));
}

/// Restores latest of `v` with standard output going to `stdout`.
fn restore_to_stdout(env: &Env, target: &str, extra: &[&str], stdout: Stdio) -> Output {
    let mut args = vec!["restore", "latest", "--volume", "v", "--target", target];
    args.extend(extra);
    env.command(&args).stdout(stdout).output().expect("run")
}

#[test]
fn restore_to_standard_output_writes_exactly_the_image_when_it_is_a_file() {
    let env = Env::new();
    let expected = repository_with_backup(&env);
    for (target, extra) in [
        ("-", &[][..]),
        ("/dev/stdout", &[][..]),
        ("-", &["-o", "json"][..]),
    ] {
        let file = env.path("from-stdout.img");
        let out = restore_to_stdout(
            &env,
            target,
            extra,
            Stdio::from(File::create(&file).expect("create")),
        );
        assert!(out.status.success(), "{target}: {}", all_output(&out));
        let written = std::fs::read(&file).expect("read");
        assert!(
            written == expected,
            "{target} {extra:?}: the image on stdout differs"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let summary = if extra.is_empty() {
            "restored backup"
        } else {
            "\"digest\""
        };
        assert!(
            stderr.contains(summary),
            "the summary goes to stderr: {stderr}"
        );
    }
    // A pipe cannot be written out of order: refused, nothing read or written.
    let out = restore_to_stdout(&env, "-", &[], Stdio::piped());
    expect_failure(&out, 2, "standard output is a pipe");
    assert!(out.stdout.is_empty());
}

/// True when mkfs.ext4 and mount can run; otherwise prints why the caller skips (fails in CI).
fn filesystem_tools_available(test: &str) -> bool {
    let ok = ["mkfs.ext4", "mount", "umount"].iter().all(|tool| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: mkfs.ext4 (e2fsprogs) and mount are required in CI");
        }
        eprintln!("SKIPPED {test}: needs mkfs.ext4 (e2fsprogs) and mount");
    }
    ok
}

/// Unmounts on drop.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn device_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read device")
}

#[test]
fn restore_refuses_a_mounted_or_held_device_unless_forced() {
    const TEST: &str = "restore_refuses_a_mounted_or_held_device_unless_forced";
    if !common::loop_devices_available(TEST) || !filesystem_tools_available(TEST) {
        return;
    }
    let env = Env::new();
    let expected = repository_with_backup(&env);
    let backing = env.path("device.img");
    make_image(&backing, 8 << 20, &[], 0);
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
        .arg(&backing)
        .status()
        .expect("mkfs.ext4");
    assert!(status.success());
    let device = LoopDevice::attach(&backing);
    let device_path = device.path.to_str().expect("path").to_string();
    let mount_point = env.path("mnt");
    std::fs::create_dir(&mount_point).expect("mkdir");
    let status = Command::new("mount")
        .arg(&device.path)
        .arg(&mount_point)
        .status()
        .expect("mount");
    assert!(status.success());
    let mount = Mount(mount_point.clone());
    std::fs::write(mount_point.join("precious"), b"filesystem data").expect("write");
    let _ = Command::new("sync").status();
    let before = device_bytes(&device.path);

    let out = env.run(&[
        "restore",
        "latest",
        "--volume",
        "v",
        "--target",
        &device_path,
    ]);
    expect_failure(&out, 2, "is mounted");
    assert!(
        device_bytes(&device.path) == before,
        "a refused restore changed the device"
    );
    assert_eq!(
        std::fs::read(mount_point.join("precious")).expect("read"),
        b"filesystem data"
    );
    drop(mount);

    // Held by another exclusive open (as device mapper, RAID or swap hold it).
    let before = device_bytes(&device.path);
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(&device.path)
        .expect("exclusive open");
    let out = env.run(&[
        "restore",
        "latest",
        "--volume",
        "v",
        "--target",
        &device_path,
    ]);
    expect_failure(&out, 2, "is in use");
    assert!(
        device_bytes(&device.path) == before,
        "a refused restore changed the device"
    );

    // --force overrides, and the restore is exact.
    let out = env.run(&[
        "restore",
        "latest",
        "--volume",
        "v",
        "--target",
        &device_path,
        "--force",
    ]);
    assert!(out.status.success(), "{}", all_output(&out));
    drop(holder);
    let after = device_bytes(&device.path);
    assert!(
        after[..expected.len()] == expected[..],
        "forced restore differs"
    );

    // Not held: restores without --force.
    let out = env.run(&[
        "restore",
        "latest",
        "--volume",
        "v",
        "--target",
        &device_path,
    ]);
    assert!(out.status.success(), "{}", all_output(&out));
}
