//! `s3mover cluster node-token`: the token reaches a secret-manager command on its stdin and
//! in its environment, never on a command line (the earlier script ran `bws secret edit ID
//! --value TOKEN`); a missing, unreadable or empty token file is a one-line error.

mod cluster_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use cluster_support::refused;

const TOKEN: &str = "K10f00dfeedbeef1234567890abcdef::server:5ecre7";

fn s3mover(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_s3mover"));
    command
        .args(args)
        .env("HOME", dir)
        .env_remove("KUBECONFIG")
        .env_remove("S3MOVER_NODE_TOKEN_FILE")
        .env_remove("S3MOVER_NODE_TOKEN_SECRET")
        .env_remove("S3MOVER_NODE_TOKEN_COMMAND");
    command
}

/// A stand-in for a secret manager's CLI: records its argv, the command lines of its parent
/// and grandparent (the shell s3mover starts and s3mover, or s3mover and the test when the
/// shell execs the command), its stdin and its environment's token.
fn stand_in(dir: &Path) -> String {
    let script = dir.join("secret-manager");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nd={}\nprintf '%s\\n' \"$0\" \"$@\" > \"$d/argv\"\n\
             tr '\\0' ' ' < /proc/$PPID/cmdline > \"$d/parent-cmdline\"\n\
             grandparent=$(awk '/^PPid:/ {{print $2}}' /proc/$PPID/status)\n\
             tr '\\0' ' ' < /proc/$grandparent/cmdline > \"$d/grandparent-cmdline\"\n\
             cat > \"$d/stdin\"\nprintf '%s' \"$S3MOVER_NODE_TOKEN\" > \"$d/env\"\n\
             printf '%s' \"$S3MOVER_NODE_TOKEN_ACTION\" > \"$d/action\"\n\
             echo '{{\"value\": \"echoed back by the manager\"}}'\n",
            dir.display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    format!("{} secret edit k3s-node-token", script.display())
}

#[test]
fn the_token_goes_to_the_command_on_stdin_and_env_never_in_argv() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("node-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
    let command = stand_in(dir.path());
    let out = cluster_support::output(
        s3mover(
            dir.path(),
            &[
                "cluster",
                "node-token",
                "backup",
                "--token-file",
                &token_file.display().to_string(),
                "--secret-command",
                &command,
                "-o",
                "json",
            ],
        )
        .output()
        .expect("s3mover runs"),
    );
    assert_eq!(out.0, 0, "{}", out.2);
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).expect(name);
    assert_eq!(read("stdin"), TOKEN, "the token arrives on stdin");
    assert_eq!(read("env"), TOKEN, "and in S3MOVER_NODE_TOKEN");
    assert_eq!(read("action"), "backup");
    for recorded in ["argv", "parent-cmdline", "grandparent-cmdline"] {
        let text = read(recorded);
        assert!(!text.is_empty(), "{recorded} was recorded");
        assert!(!text.contains(TOKEN), "the token is in {recorded}: {text}");
        assert!(
            !text.contains("5ecre7"),
            "part of the token is in {recorded}: {text}"
        );
    }
    assert!(
        read("argv").contains("secret\nedit\nk3s-node-token"),
        "{}",
        read("argv")
    );
    let ancestors = read("parent-cmdline") + &read("grandparent-cmdline");
    assert!(
        ancestors.contains("node-token backup"),
        "s3mover was seen: {ancestors}"
    );
    assert!(
        !out.1.contains("echoed back"),
        "the manager's output is not shown: {}",
        out.1
    );
    let result: serde_json::Value = serde_json::from_str(&out.1).expect("JSON");
    assert_eq!(result["success"], true);
}

#[test]
fn a_failing_command_is_one_line_without_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("node-token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let out = cluster_support::output(
        s3mover(
            dir.path(),
            &[
                "cluster",
                "node-token",
                "backup",
                "--token-file",
                &token_file.display().to_string(),
                "--secret-command",
                "echo \"refused value $(cat)\" >&2; exit 3",
            ],
        )
        .output()
        .expect("s3mover runs"),
    );
    assert_eq!(out.0, 1, "{}", out.2);
    assert_eq!(out.2.trim().lines().count(), 1, "{}", out.2);
    assert!(out.2.contains("secret command failed"), "{}", out.2);
    assert!(out.2.contains("refused value ***"), "{}", out.2);
    assert!(!out.2.contains("5ecre7"), "{}", out.2);
}

#[test]
fn check_asks_the_command_and_fails_when_there_is_no_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |command: &str| {
        cluster_support::output(
            s3mover(
                dir.path(),
                &[
                    "cluster",
                    "node-token",
                    "check",
                    "--secret-command",
                    command,
                    "-o",
                    "json",
                ],
            )
            .output()
            .expect("s3mover runs"),
        )
    };
    let (code, stdout, stderr) = run(
        "test \"$S3MOVER_NODE_TOKEN_ACTION\" = check && echo '{\"exists\": true, \"updatedAt\": \"2026-12-01T06:00:00Z\"}'",
    );
    assert_eq!(code, 0, "{stderr}");
    let status: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(status["exists"], true);
    assert_eq!(status["updatedAt"], "2026-12-01T06:00:00Z");
    let (code, stdout, _) = run("exit 1");
    assert_eq!(code, 1, "no copy: the check fails");
    let status: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(status["exists"], false);
}

#[test]
fn missing_unreadable_and_empty_token_files_are_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backup = |file: &Path, as_nobody: bool| {
        let file = file.display().to_string();
        let args = [
            "cluster",
            "node-token",
            "backup",
            "--token-file",
            &file,
            "--secret-command",
            "cat >/dev/null",
        ];
        let mut command = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(env!("CARGO_BIN_EXE_s3mover"))
                .args(args)
                .env("HOME", "/tmp")
                .env_remove("KUBECONFIG");
            c
        } else {
            s3mover(dir.path(), &args)
        };
        cluster_support::output(command.output().expect("s3mover runs"))
    };
    refused(
        backup(&dir.path().join("absent"), false),
        1,
        "does not exist",
    );
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").expect("empty");
    refused(backup(&empty, false), 1, "is empty");
    refused(
        cluster_support::output(
            s3mover(
                dir.path(),
                &["cluster", "node-token", "backup", "--token-file", "/x"],
            )
            .output()
            .expect("runs"),
        ),
        2,
        "--to-secret NAMESPACE/NAME or --secret-command",
    );
    refused(
        cluster_support::output(
            s3mover(
                dir.path(),
                &["cluster", "node-token", "backup", "--to-secret", "nameonly"],
            )
            .output()
            .expect("runs"),
        ),
        2,
        "NAMESPACE/NAME",
    );
    // Unreadable: a root-only file read by another user (as root, through setpriv).
    let private = std::env::temp_dir().join(format!("s3mover-node-token-{}", std::process::id()));
    std::fs::write(&private, TOKEN).expect("token");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let is_root = unsafe { libc::geteuid() } == 0;
    if !is_root || cluster_support::require_tool("permission denied as another user", "setpriv") {
        let out = if is_root {
            backup(&private, true)
        } else {
            std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o000))
                .expect("chmod");
            backup(&private, false)
        };
        let _ = std::fs::remove_file(&private);
        refused(out, 1, "permission denied");
    }
}
