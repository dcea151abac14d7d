//! `s3mover k8s` flags that are wrong are refused in one line, before any cluster is asked,
//! and a cluster that cannot be found is reported in one line.

use std::process::Command;

fn s3mover(args: &[&str]) -> (i32, String) {
    let home = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_s3mover"))
        .args(args)
        .env("HOME", home.path())
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("s3mover runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn refused(args: &[&str], says: &str) {
    let (code, stderr) = s3mover(args);
    assert_eq!(code, 2, "{args:?}: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(says), "{args:?}: {stderr}");
}

#[test]
fn bad_backup_flags_are_refused_before_the_cluster_is_asked() {
    refused(&["k8s", "backup", "-n", "db"], "name the claims to back up");
    refused(&["k8s", "backup", "a", "-l", "app=x"], "not both");
    refused(&["k8s", "backup", "a", "-A"], "-A selects by label");
    refused(&["k8s", "backup", "a", "--tag", "novalue"], "KEY=VALUE");
    refused(&["k8s", "backup", "a", "--parallel", "0"], "--parallel");
    refused(
        &[
            "k8s",
            "backup",
            "a",
            "-n",
            "db",
            "--mover-namespace",
            "other",
        ],
        "movers run in the claim's namespace",
    );
    refused(
        &["k8s", "restore", "a", "--volume-mode", "Raw"],
        "Block or Filesystem",
    );
    let (code, stderr) = s3mover(&["k8s", "backup", "a", "--timeout", "soon"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not a duration"), "{stderr}");
}

#[test]
fn a_missing_cluster_is_one_line() {
    let (code, stderr) = s3mover(&["k8s", "status", "--kubeconfig", "/nonexistent/kubeconfig"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("cannot read kubeconfig /nonexistent/kubeconfig"),
        "{stderr}"
    );
    let (code, stderr) = s3mover(&["k8s", "doctor"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("not inside a cluster"), "{stderr}");
}
