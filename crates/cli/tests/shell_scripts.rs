//! Every shell script under `scripts/`, `deploy/`, `bench/` and `.ci/` passes `shellcheck`
//! (following what each one sources).
//! Needs shellcheck (Debian `shellcheck`): `SKIPPED` outside CI without it, a failure in CI.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `.sh` files under `dir`, recursively, sorted.
fn scripts(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read scripts/") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            scripts(&path, found);
        } else if path.extension().is_some_and(|e| e == "sh") {
            found.push(path);
        }
    }
    found.sort();
}

#[test]
fn every_script_is_shellcheck_clean() {
    let test = "every_script_is_shellcheck_clean";
    if Command::new("shellcheck")
        .arg("--version")
        .output()
        .is_err()
    {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: needs shellcheck (CI must provide it: see .ci/run)");
        }
        println!("SKIPPED {test}: needs shellcheck (Debian: apt-get install shellcheck)");
        return;
    }
    let mut found = Vec::new();
    for dir in ["scripts", "deploy", "bench", ".ci"] {
        scripts(&repo_root().join(dir), &mut found);
    }
    for expected in [
        "minikube/00-env.sh",
        "rollout-test/scripts/prestop.sh",
        ".ci/install-garage.sh",
    ] {
        assert!(
            found.iter().any(|p| p.ends_with(expected)),
            "{expected}: {found:?}"
        );
    }
    let out = Command::new("shellcheck")
        .args(["--external-sources", "--severity=style"])
        .args(&found)
        .output()
        .expect("shellcheck runs");
    assert!(
        out.status.success(),
        "shellcheck:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The check can fail: a script with an unquoted expansion is reported.
#[test]
fn shellcheck_reports_a_bad_script() {
    if Command::new("shellcheck")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("SKIPPED shellcheck_reports_a_bad_script: needs shellcheck");
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let bad = dir.path().join("bad.sh");
    std::fs::write(&bad, "#!/usr/bin/env bash\nrm -rf $1/\n").expect("write");
    let out = Command::new("shellcheck")
        .args(["--external-sources", "--severity=style"])
        .arg(&bad)
        .output()
        .expect("shellcheck runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("SC2086"));
}
