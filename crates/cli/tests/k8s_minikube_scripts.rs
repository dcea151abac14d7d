//! The demo in `scripts/minikube/` run against the simulated cluster: every step but the
//! installation of minikube and the CSI driver (`S3MOVER_DEMO_CLUSTER=existing`), with the
//! real `kubectl`, the `s3mover` this test run built on `PATH`, a busybox-like workload image
//! (the host's `sh`, `dd` and `sha256sum` in bubblewrap) and a real S3 repository (Garage) that
//! the scripts install as an external repository. The restored claim must hold exactly the
//! bytes the workload wrote, nothing temporary may be left, and running the steps a second
//! time must work as well as the first (each step is idempotent).
//!
//! Needs root, bubblewrap, losetup, kubectl and garage: `SKIPPED` outside CI without them, a
//! failure in CI.

mod k8s_support;

use std::path::Path;
use std::process::Command;

use k8s_support::{repo_root, require, start, K8s, IMAGE, PASSWORD, PATIENCE};
use s3mover_k8s_sim::controllers::ImageConfig;
use s3mover_testkit::garage::garage_or_skip;

const NS: &str = "demo";
const PVC: &str = "block-writer-data";
const WORKLOAD_IMAGE: &str = "busybox:1.37.0";

/// Runs the demo's steps with the test's cluster, binary and repository.
struct Demo {
    env: Vec<(String, String)>,
    path: String,
}

impl Demo {
    fn new(k8s: &K8s, bin_dir: &Path, s3: Vec<(String, String)>) -> Demo {
        let mut env: Vec<(String, String)> = vec![
            ("S3MOVER_DEMO_CLUSTER".into(), "existing".into()),
            ("KUBECONFIG".into(), k8s.kubeconfig.display().to_string()),
            ("DEMO_NS".into(), NS.into()),
            ("S3MOVER_MOVER_IMAGE".into(), IMAGE.into()),
            ("WORKLOAD_IMAGE".into(), WORKLOAD_IMAGE.into()),
            ("S3MOVER_PASSWORD".into(), PASSWORD.into()),
            (
                "S3MOVER_INIT_ARGS".into(),
                "--kdf-memory 8M --kdf-passes 1".into(),
            ),
        ];
        env.extend(s3);
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Demo { env, path }
    }

    /// Runs one step, which must succeed; its standard output.
    fn step(&self, name: &str) -> String {
        let script = repo_root().join("scripts/minikube").join(name);
        let out = Command::new("bash")
            .arg(&script)
            .env_clear()
            .env("PATH", &self.path)
            .env(
                "HOME",
                std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("bash runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name} failed:\n{stdout}\n{stderr}");
        println!("--- {name}\n{stdout}{stderr}");
        stdout
    }
}

/// The step's script names in order, from the directory.
fn steps() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo_root().join("scripts/minikube"))
        .expect("scripts/minikube")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sh") && n.as_bytes()[0].is_ascii_digit() && n != "00-env.sh")
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_scripts_back_up_lose_and_restore_a_claim() {
    let test = "the_demo_scripts_back_up_lose_and_restore_a_claim";
    if !require(test) {
        return;
    }
    let Some(garage) = garage_or_skip(test) else {
        return;
    };
    assert_eq!(
        steps(),
        [
            "10-cluster.sh",
            "20-s3.sh",
            "30-workload.sh",
            "40-backup.sh",
            "50-write-more.sh",
            "60-incremental.sh",
            "70-disaster.sh",
            "80-restore.sh",
            "90-verify.sh",
            "99-cleanup.sh"
        ]
    );
    let k8s = start(|c| {
        c.images
            .insert(WORKLOAD_IMAGE.into(), ImageConfig::cmd("/bin/sh"));
    })
    .await;
    // `s3mover` on PATH, as a user who installed it has it.
    let bin_dir = k8s.dir.path().join("bin");
    std::fs::create_dir_all(&bin_dir).expect("bin dir");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_s3mover"), bin_dir.join("s3mover"))
        .expect("symlink");
    let mut s3 = garage.env();
    s3.push((
        "S3MOVER_REPO".into(),
        format!("s3://{}/demo", garage.bucket()),
    ));
    let demo = Demo::new(&k8s, &bin_dir, s3);

    for round in 1..=2 {
        let out = demo.step("10-cluster.sh");
        assert!(out.contains("SnapshotMetadataService"), "{out}");
        let out = demo.step("20-s3.sh");
        if round == 2 {
            assert!(out.contains("already initialized"), "{out}");
        }
        // An existing cluster's s3mover installation is not the demo's to change.
        let namespaces = k8s.kubectl(&["get", "namespaces", "-o", "name"], None);
        let namespaces = String::from_utf8_lossy(&namespaces.stdout).into_owned();
        assert!(!namespaces.contains("s3mover-system"), "{namespaces}");
        let out = demo.step("30-workload.sh");
        if round == 2 {
            // The restored claim does not carry the demo's mark: the writer fills it again.
            assert!(!out.contains("already written"), "{out}");
        }
        let written = std::fs::read(k8s.image_of(NS, PVC).await).expect("volume");
        assert!(
            written[..16 << 20].iter().filter(|b| **b != 0).count() > 15 << 20,
            "the writer pod did not fill 16 MiB"
        );
        if round == 1 {
            // Run again, the step leaves the data it wrote.
            let out = demo.step("30-workload.sh");
            assert!(out.contains("already written"), "{out}");
            let again = std::fs::read(k8s.image_of(NS, PVC).await).expect("volume");
            assert!(again == written, "a second 30-workload.sh changed the data");
        }
        demo.step("40-backup.sh");
        demo.step("50-write-more.sh");
        let more = std::fs::read(k8s.image_of(NS, PVC).await).expect("volume");
        let changed: Vec<usize> = (0..more.len() / 4096)
            .filter(|i| more[i * 4096..(i + 1) * 4096] != written[i * 4096..(i + 1) * 4096])
            .collect();
        let mut expected_changed: Vec<usize> = vec![1, 3, 5, 7, 9];
        expected_changed.extend(2048..2048 + 256);
        assert_eq!(changed, expected_changed, "what 50-write-more.sh wrote");
        let out = demo.step("60-incremental.sh");
        assert!(out.contains("\"changeSource\": \"cbt-delta\""), "{out}");
        let before = more;
        let volume = k8s.image_of(NS, PVC).await;
        demo.step("70-disaster.sh");
        // Reclaim policy Delete: the volume goes after the claim, in the background.
        let gone = std::time::Instant::now();
        while volume.exists() {
            assert!(
                gone.elapsed() < PATIENCE,
                "the deleted claim's volume stays"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let out = demo.step("70-disaster.sh");
        assert!(out.contains("already gone"), "{out}");
        demo.step("80-restore.sh");
        let restored = std::fs::read(k8s.image_of(NS, PVC).await).expect("restored volume");
        assert!(
            restored == before,
            "the restored claim differs from what the workload wrote"
        );
        let out = demo.step("80-restore.sh");
        assert!(out.contains("nothing to restore"), "{out}");
        let out = demo.step("90-verify.sh");
        assert!(out.contains("PASS"), "{out}");
        k8s.assert_no_leftovers().await;
    }
    demo.step("99-cleanup.sh");
    let namespaces = k8s.kubectl(&["get", "namespaces", "-o", "name"], None);
    let namespaces = String::from_utf8_lossy(&namespaces.stdout).into_owned();
    assert!(!namespaces.contains("namespace/demo\n"), "{namespaces}");
    k8s.assert_no_leftovers().await;
    demo.step("99-cleanup.sh");
}

/// A step given a cluster mode it does not know stops with one line saying so, before it
/// touches a cluster.
#[test]
fn an_unknown_cluster_mode_is_one_line() {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/minikube/30-workload.sh"))
        .env("S3MOVER_DEMO_CLUSTER", "kind")
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .expect("bash runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("S3MOVER_DEMO_CLUSTER must be minikube or existing, not 'kind'"),
        "{stderr}"
    );
}
