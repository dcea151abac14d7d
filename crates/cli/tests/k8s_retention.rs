//! Per-claim retention (`s3mover.io/retention` on a claim) on the simulated cluster: `k8s
//! backup` records the claim's rules with each backup, and the deployed weekly forget CronJob
//! (run as an operator runs it, with the manifests' RBAC) keeps what each claim asked for —
//! also for a claim that was deleted since — while claims without rules, or whose rules were
//! removed before their last backup, get the CronJob's own. A misspelt annotation fails that
//! claim alone, in one line naming the annotation, before anything is created. Needs root,
//! bubblewrap, losetup and kubectl.

mod k8s_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use k8s_support::{pattern, repo_root, require, start, write_at, PASSWORD};
use s3mover_k8s_sim::controllers::ImageConfig;

const MIB: u64 = 1 << 20;
/// The image the external-s3 overlay names.
const DEPLOYED_IMAGE: &str = "registry.example/s3mover:0.1.0";
const SYSTEM: &str = "s3mover-system";
const NS: &str = "shop";

/// The number of backups of each volume, read from the repository directly.
fn counts(repo: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (_, volume) in k8s_support::repository_backups(repo) {
        *counts.entry(volume).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_claim_keeps_what_its_annotation_says() {
    if !require("each_claim_keeps_what_its_annotation_says") {
        return;
    }
    let k8s = start(|c| {
        c.images.insert(
            DEPLOYED_IMAGE.into(),
            ImageConfig::entrypoint(env!("CARGO_BIN_EXE_s3mover")),
        );
    })
    .await;
    let overlay = repo_root().join("deploy/overlays/external-s3");
    k8s.kubectl(&["apply", "-k", &overlay.display().to_string()], None);
    let (_repo_dir, repo) = k8s.deployed_repository(NS);
    let opted_in = [("s3mover.io/backup", "true")];
    // plain: no rules (the CronJob's); loose: more than the CronJob's; gone: its own rules,
    // and deleted before the forget; dropped: rules removed before its last backup.
    for (pvc, rules) in [
        ("plain", None),
        ("loose", Some(" keep-last=3 ")),
        ("gone", Some("keep-last=2")),
        ("dropped", Some("keep-last=3")),
        ("typo", Some("keep-dialy=7")),
    ] {
        k8s.claim(NS, pvc, 2 * MIB, "Block", &opted_in).await;
        if let Some(rules) = rules {
            let annotation = format!("s3mover.io/retention={rules}");
            k8s.kubectl(&["annotate", "pvc", pvc, "-n", NS, &annotation], None);
        }
    }

    for round in 1..=4u64 {
        for pvc in ["plain", "loose", "gone", "dropped"] {
            let volume = k8s.image_of(NS, pvc).await;
            write_at(&volume, 0, &pattern(round * 10 + pvc.len() as u64, 4096));
        }
        if round == 4 {
            k8s.kubectl(
                &[
                    "annotate",
                    "pvc",
                    "dropped",
                    "-n",
                    NS,
                    "s3mover.io/retention-",
                ],
                None,
            );
        }
        let (code, stdout, stderr) = k8s.s3mover(&[
            "k8s",
            "backup",
            "-A",
            "-l",
            "s3mover.io/backup=true",
            "-o",
            "json",
        ]);
        let outcomes: serde_json::Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
        let outcomes = outcomes.as_array().expect("a list");
        let failed: Vec<&serde_json::Value> =
            outcomes.iter().filter(|o| o["status"] != "ok").collect();
        if round == 1 {
            // The misspelt rules fail that claim alone, before anything is created for it.
            assert_ne!(code, 0, "{stdout}");
            assert_eq!(failed.len(), 1, "{stdout}");
            assert_eq!(failed[0]["pvc"], "typo");
            let error = failed[0]["error"].as_str().expect("an error");
            assert_eq!(
                error,
                "claim shop/typo: annotation s3mover.io/retention: unknown rule \"keep-dialy\" \
                 (rules: keep-last, keep-hourly, keep-daily, keep-weekly, keep-monthly, \
                 keep-yearly, keep-within)"
            );
            assert!(stderr.lines().any(|l| l.contains(error)), "{stderr}");
            let snapshots = k8s.kubectl(&["get", "volumesnapshots", "-n", NS, "-o", "name"], None);
            assert!(
                !String::from_utf8_lossy(&snapshots.stdout).contains("typo"),
                "a snapshot of the claim with bad rules was taken"
            );
            k8s.kubectl(
                &["label", "pvc", "typo", "-n", NS, "s3mover.io/backup-"],
                None,
            );
        } else {
            assert_eq!(code, 0, "{stdout}\n{stderr}");
            assert!(failed.is_empty(), "{stdout}");
        }
        assert_eq!(outcomes.len() - failed.len(), 4, "{stdout}");
    }
    k8s.assert_no_leftovers().await;
    k8s.kubectl(&["delete", "pvc", "gone", "-n", NS, "--wait=true"], None);
    let before = counts(&repo);
    assert!(before.values().all(|n| *n == 4), "{before:?}");
    assert_eq!(before.len(), 4, "{before:?}");

    let log = k8s.run_cronjob(SYSTEM, "s3mover-forget", "forget-now");
    assert!(
        log.contains(
            "volume shop/loose (calendar UTC; its own rules keep-last=3, recorded by backup "
        ),
        "{log}"
    );
    assert!(
        log.contains(
            "volume shop/gone (calendar UTC; its own rules keep-last=2, recorded by backup "
        ),
        "{log}"
    );
    assert!(log.contains("volume shop/plain (calendar UTC):"), "{log}");
    assert!(log.contains("volume shop/dropped (calendar UTC):"), "{log}");
    assert!(log.contains("removed 9 backups, kept 7"), "{log}");
    let after = counts(&repo);
    let expected: BTreeMap<String, usize> = [
        ("shop/dropped", 1),
        ("shop/gone", 2),
        ("shop/loose", 3),
        ("shop/plain", 1),
    ]
    .into_iter()
    .map(|(v, n)| (v.to_string(), n))
    .collect();
    assert_eq!(after, expected);

    // The same decision in JSON says where each volume's rules came from.
    let out = Command::new(env!("CARGO_BIN_EXE_s3mover"))
        .args(["forget", "--keep-daily", "7", "--dry-run", "-o", "json"])
        .env("S3MOVER_REPO", &repo)
        .env("S3MOVER_PASSWORD", PASSWORD)
        .output()
        .expect("s3mover forget");
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let policies = report["forget"]["policies"].as_array().expect("policies");
    let sources: Vec<(String, String, String)> = policies
        .iter()
        .map(|p| {
            (
                p["volume"].as_str().unwrap_or_default().to_string(),
                p["source"].as_str().unwrap_or_default().to_string(),
                p["rules"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let row = |v: &str, s: &str, r: &str| (v.to_string(), s.to_string(), r.to_string());
    assert_eq!(
        sources,
        [
            row("shop/dropped", "command line", "keep-daily=7"),
            row("shop/gone", "recorded", "keep-last=2"),
            row("shop/loose", "recorded", "keep-last=3"),
            row("shop/plain", "command line", "keep-daily=7"),
        ]
    );
    assert!(report["forget"]["removed"]
        .as_array()
        .is_some_and(|r| r.is_empty()));
    k8s.assert_no_leftovers().await;
}

/// Rules given as a `--tag` are checked when the backup starts, by `backup` and `k8s backup`
/// alike, before anything is read or created.
#[test]
fn bad_rules_in_a_tag_are_refused_at_once() {
    for args in [
        vec!["backup", "/dev/null", "--volume", "v"],
        vec!["k8s", "backup", "data", "--kubeconfig", "/nonexistent"],
    ] {
        for (rules, says) in [
            (
                "keep-daily=0",
                "keep-daily=0: the count must be a whole number from 1",
            ),
            ("keep-dialy=7", "unknown rule \"keep-dialy\""),
            ("", "no rules"),
        ] {
            let tag = format!("s3mover.retention={rules}");
            let out = Command::new(env!("CARGO_BIN_EXE_s3mover"))
                .args(&args)
                .args(["--tag", &tag])
                .env("S3MOVER_REPO", "/nonexistent/repo")
                .output()
                .expect("s3mover runs");
            assert_eq!(out.status.code(), Some(2), "{args:?} {tag}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let line = format!("tag s3mover.retention: {says}");
            assert!(stderr.contains(&line), "{args:?} {tag}: {stderr}");
        }
    }
}
