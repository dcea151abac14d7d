//! The manifests in `deploy/` on the simulated cluster: both overlays render with
//! `kubectl kustomize` and apply with `kubectl apply -k`; then each CronJob is run the way an
//! operator runs one now (`kubectl create job --from=cronjob/NAME`), its pod in the simulated
//! kubelet as the `s3mover` service account with exactly the manifests' RBAC, using the
//! in-cluster configuration, and the backup, the forget with prune and the verify are checked
//! in the repository itself. Needs root, bubblewrap, losetup and kubectl.

mod k8s_support;

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_support::{pattern, repo_root, require, start, write_at, K8s};
use s3mover_k8s_sim::controllers::ImageConfig;

const MIB: u64 = 1 << 20;
/// The image the external-s3 overlay names.
const DEPLOYED_IMAGE: &str = "registry.example/s3mover:0.1.0";
const SYSTEM: &str = "s3mover-system";

fn kustomize(overlay: &str) -> String {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo_root().join("deploy/overlays").join(overlay))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// Runs a CronJob now, as an operator would, and waits for the Job to finish; its log.
fn run_cronjob(k8s: &K8s, cronjob: &str, job: &str) -> String {
    k8s.run_cronjob(SYSTEM, cronjob, job)
}

/// The repository's backups (id, volume), read directly.
fn backups(repo: &std::path::Path) -> Vec<(String, String)> {
    k8s_support::repository_backups(repo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deployed_cronjobs_back_up_forget_and_verify() {
    if !require("deployed_cronjobs_back_up_forget_and_verify") {
        return;
    }
    for overlay in ["external-s3", "garage-demo"] {
        let text = kustomize(overlay);
        assert_eq!(text.matches("kind: CronJob").count(), 3, "{overlay}");
        assert_eq!(
            text.matches("concurrencyPolicy: Forbid").count(),
            3,
            "{overlay}"
        );
        assert!(
            text.contains(&format!("namespace: {SYSTEM}")),
            "{overlay}: {text}"
        );
    }

    let clock = s3mover_k8s_sim::controllers::cronjobs::CronClock::default();
    let k8s = start(|c| {
        c.images.insert(
            DEPLOYED_IMAGE.into(),
            ImageConfig::entrypoint(env!("CARGO_BIN_EXE_s3mover")),
        );
        c.cron_clock = clock.clone();
    })
    .await;
    for overlay in ["garage-demo", "external-s3"] {
        let dir = repo_root().join("deploy/overlays").join(overlay);
        k8s.kubectl(&["apply", "-k", &dir.display().to_string()], None);
    }
    let cronjobs = k8s.kubectl(&["get", "cronjobs", "-n", SYSTEM, "-o", "name"], None);
    assert_eq!(
        String::from_utf8_lossy(&cronjobs.stdout)
            .lines()
            .collect::<Vec<_>>(),
        vec![
            "cronjob.batch/s3mover-backup",
            "cronjob.batch/s3mover-forget",
            "cronjob.batch/s3mover-verify"
        ]
    );
    // The operator's part: the repository, its Secret, and an application namespace with
    // the mover identity and the same Secret.
    let (_repo_dir, repo_path) = k8s.deployed_repository("shop");
    k8s.claim(
        "shop",
        "orders",
        4 * MIB,
        "Block",
        &[("s3mover.io/backup", "true")],
    )
    .await;
    k8s.claim("shop", "scratch", 4 * MIB, "Block", &[]).await;
    let volume = k8s.image_of("shop", "orders").await;
    // The application team's policy: this claim's snapshots use their own class.
    let class = "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotClass\n\
                 metadata: {name: orders-snapshots}\ndriver: hostpath.csi.k8s.io\n\
                 deletionPolicy: Delete\n";
    k8s.kubectl(&["apply", "-f", "-"], Some(class));
    k8s.kubectl(
        &[
            "annotate",
            "pvc",
            "orders",
            "-n",
            "shop",
            "s3mover.io/snapshot-class=orders-snapshots",
        ],
        None,
    );

    // Three nights of backups.
    for night in 1..=3u64 {
        write_at(&volume, night * MIB, &pattern(40 + night, 64 * 1024));
        let log = run_cronjob(&k8s, "s3mover-backup", &format!("backup-{night}"));
        assert!(log.contains("\"status\": \"ok\""), "{log}");
    }
    let kept = k8s.kubectl(
        &[
            "get",
            "volumesnapshots",
            "-n",
            "shop",
            "-l",
            "s3mover.io/role=base",
            "-o",
            "jsonpath={.items[*].spec.volumeSnapshotClassName}",
        ],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&kept.stdout), "orders-snapshots");
    let all = backups(&repo_path);
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(
        all.iter().all(|(_, v)| v == "shop/orders"),
        "only the labelled claim: {all:?}"
    );

    // The weekly forget: all three are from today, so the daily rule keeps the newest.
    let log = run_cronjob(&k8s, "s3mover-forget", "forget-1");
    assert!(log.contains("removed 2 backups, kept 1"), "{log}");
    let left = backups(&repo_path);
    assert_eq!(left.len(), 1, "{left:?}");

    let log = run_cronjob(&k8s, "s3mover-verify", "verify-1");
    assert!(log.contains("verified 1 backups"), "{log}");
    assert!(log.contains(", 0 problems"), "{log}");

    // The schedule itself: with forget and verify paused, the CronJob controller's clock is
    // moved past 01:00 and the nightly backup starts on its own.
    for cronjob in ["s3mover-forget", "s3mover-verify"] {
        let suspend = r#"{"spec":{"suspend":true}}"#;
        k8s.kubectl(
            &["patch", "cronjob", cronjob, "-n", SYSTEM, "-p", suspend],
            None,
        );
    }
    write_at(&volume, 5 * MIB, &pattern(50, 64 * 1024));
    clock.advance(clock.seconds_until_next(1) + 30);
    let started = Instant::now();
    let scheduled = loop {
        let out = k8s.kubectl(&["get", "jobs", "-n", SYSTEM, "-o", "name"], None);
        let names = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(name) = names
            .lines()
            .filter_map(|l| l.strip_prefix("job.batch/"))
            .find(|n| n.starts_with("s3mover-backup-"))
        {
            break name.to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no scheduled run: {names}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let log = k8s.wait_job_log(SYSTEM, &scheduled);
    assert!(log.contains("\"status\": \"ok\""), "{log}");
    assert_eq!(backups(&repo_path).len(), 2, "the kept one and tonight's");
    k8s.assert_no_leftovers().await;

    // An empty class annotation is a one-line error naming it, before anything is created.
    k8s.kubectl(
        &[
            "annotate",
            "pvc",
            "scratch",
            "-n",
            "shop",
            "s3mover.io/snapshot-class=",
        ],
        None,
    );
    let (code, _, stderr) = k8s.s3mover(&["k8s", "backup", "scratch", "-n", "shop"]);
    assert_ne!(code, 0);
    let reasons: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("s3mover: "))
        .collect();
    assert_eq!(reasons.len(), 1, "{stderr}");
    assert!(
        reasons[0].contains("annotation s3mover.io/snapshot-class is empty"),
        "{stderr}"
    );
    assert!(k8s.leftovers().await.is_empty());
}
