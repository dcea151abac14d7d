//! What verify must see and what must never leave a user stuck, through the real binary:
//! damaged pack headers (verify reports them, prune copies around them), second copies of live
//! chunks (prune frees them), a failed backup's orphan packs (the grace decides when they go),
//! backups rerun right after a prune (not withdrawn), a damaged marker directory (check
//! reports it, backups list instead, prune rewrites it), and a `latest/` pointer that cannot
//! be written after the commit (the backup still succeeds).

mod common;

use std::path::{Path, PathBuf};

use common::{expect_failure, files_under, make_image, Env};

const MIB: u64 = 1 << 20;

/// The data and tree packs of the repository, with their sizes.
fn packs(env: &Env) -> Vec<(PathBuf, u64)> {
    files_under(&env.repo.join("packs"))
        .into_iter()
        .map(|p| {
            let size = std::fs::metadata(&p).expect("stat").len();
            (p, size)
        })
        .collect()
}

fn pack_bytes(env: &Env) -> u64 {
    packs(env).iter().map(|(_, size)| size).sum()
}

/// Flips a byte inside a pack's sealed header (found from its trailer).
fn damage_header(pack: &Path) {
    let mut bytes = std::fs::read(pack).expect("read pack");
    let n = bytes.len();
    let header_len = u32::from_le_bytes(bytes[n - 12..n - 8].try_into().expect("4 bytes")) as usize;
    let at = n - 12 - header_len + header_len / 2;
    bytes[at] ^= 0x10;
    std::fs::write(pack, bytes).expect("write pack");
}

fn backup_id(env: &Env, image: &Path, volume: &str, extra: &[&str]) -> String {
    let mut args = vec!["backup", image.to_str().expect("utf-8"), "--volume", volume];
    args.extend_from_slice(extra);
    let report = env.json(&args);
    report["id"]
        .as_str()
        .or_else(|| report["manifest"]["id"].as_str())
        .unwrap_or_else(|| panic!("no id in {report}"))
        .to_string()
}

fn restore_matches(env: &Env, id: &str, image: &Path) {
    let target = env.path(&format!("restored-{id}.img"));
    env.ok(&["restore", id, "--target", target.to_str().expect("utf-8")]);
    let restored = std::fs::read(&target).expect("read restored");
    let original = std::fs::read(image).expect("read image");
    assert!(restored == original, "restore of {id} is not byte-exact");
    std::fs::remove_file(&target).expect("remove restored");
}

/// A flipped byte in a pack's header is reported by `verify --read-data`, naming the pack;
/// prune, which reads headers to repack, copies the pack's blobs from where the index places
/// them instead of failing, after which verify is clean and every backup restores.
#[test]
fn a_damaged_pack_header_is_reported_by_verify_and_prune_copies_around_it() {
    let env = Env::new();
    env.init();
    let image = env.path("disk.img");
    make_image(&image, 4 * MIB, &[(0, 4 * MIB)], 1);
    backup_id(&env, &image, "vol", &[]);
    let damaged: Vec<PathBuf> = packs(&env).into_iter().map(|(p, _)| p).collect();
    for pack in &damaged {
        damage_header(pack);
    }

    let out = env.run(&["verify", "--read-data"]);
    let stderr = expect_failure(&out, 3, "header");
    for pack in &damaged {
        let name = pack.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(stderr.contains(name), "verify should name {name}: {stderr}");
    }

    // `check` reads tree packs (the smallest pack here) and their headers.
    let tree_pack = packs(&env)
        .into_iter()
        .min_by_key(|(_, size)| *size)
        .map(|(p, _)| p)
        .expect("a pack");
    let stderr = expect_failure(&env.run(&["check"]), 3, "header");
    let name = tree_pack
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name");
    assert!(stderr.contains(name), "check should name {name}: {stderr}");

    // A quarter of the chunks change: after forgetting the first backup every old pack is
    // partly dead, and prune repacks them.
    let blocks = common::pseudo_random(MIB as usize, 2);
    common::write_at(&image, MIB, &blocks);
    let second = backup_id(&env, &image, "vol", &[]);
    env.ok(&["forget", "--volume", "vol", "--keep-last", "1"]);
    let out = env.run(&["prune", "--grace", "0s", "--max-unused", "0%"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "prune failed: {stderr}");
    assert!(
        stderr.contains("damaged pack"),
        "prune should say: {stderr}"
    );
    for pack in &damaged {
        assert!(!pack.exists(), "{} should be repacked", pack.display());
    }
    env.ok(&["verify", "--read-data"]);
    env.ok(&["check"]);
    restore_matches(&env, &second, &image);
}

/// Sets a file's modification time `seconds` into the past (what a store lists as its age).
fn age(path: &Path, seconds: u64) {
    let when = std::time::SystemTime::now() - std::time::Duration::from_secs(seconds);
    std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open")
        .set_modified(when)
        .expect("set mtime");
}

/// The packs of a backup that failed before it indexed them go as soon as they are older than
/// `--grace` (and the 15-minute floor), not after a fixed 6 hours.
#[test]
fn a_failed_backups_unindexed_packs_go_once_older_than_the_grace() {
    let env = Env::new();
    env.init();
    let kept = env.path("kept.img");
    make_image(&kept, 2 * MIB, &[(0, 2 * MIB)], 3);
    let kept_id = backup_id(&env, &kept, "kept", &[]);
    let before: Vec<PathBuf> = packs(&env).into_iter().map(|(p, _)| p).collect();

    // The index cannot be written: the backup fails after uploading its packs.
    let index = env.repo.join("index");
    let saved = env.path("index.saved");
    std::fs::rename(&index, &saved).expect("move index");
    std::fs::write(&index, b"not a directory").expect("block index");
    let failed = env.path("failed.img");
    make_image(&failed, 3 * MIB, &[(0, 3 * MIB)], 4);
    let out = env.run(&[
        "backup",
        failed.to_str().expect("utf-8"),
        "--volume",
        "failed",
    ]);
    assert!(!out.status.success(), "the backup should fail");
    std::fs::remove_file(&index).expect("unblock index");
    std::fs::rename(&saved, &index).expect("restore index");
    let orphans: Vec<PathBuf> = packs(&env)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| !before.contains(p))
        .collect();
    assert!(!orphans.is_empty(), "the failed backup uploaded packs");

    let prune = |grace: &str| env.ok(&["prune", "--grace", grace, "--max-unused", "0%"]);
    // Younger than the floor: kept even with no grace.
    for pack in &orphans {
        age(pack, 5 * 60);
    }
    prune("0s");
    assert!(orphans.iter().all(|p| p.exists()), "inside the floor");
    // An hour old: kept under a two-hour grace, removed under none.
    for pack in &orphans {
        age(pack, 3600);
    }
    prune("2h");
    assert!(orphans.iter().all(|p| p.exists()), "inside the grace");
    prune("0s");
    assert!(orphans.iter().all(|p| !p.exists()), "older than the grace");
    env.ok(&["check"]);
    restore_matches(&env, &kept_id, &kept);
}

/// A backup that uploads chunks again right after a prune removed them is not withdrawn: the
/// sweep finished, and the backup's copies are indexed in packs that exist.
#[test]
fn a_backup_right_after_a_prune_that_removed_its_chunks_is_not_withdrawn() {
    let env = Env::new();
    env.init();
    let image = env.path("disk.img");
    make_image(&image, 2 * MIB, &[(0, 2 * MIB)], 5);
    let original = std::fs::read(&image).expect("read image");
    backup_id(&env, &image, "vol", &[]);
    make_image(&image, 2 * MIB, &[(0, 2 * MIB)], 6);
    backup_id(&env, &image, "vol", &[]);
    env.ok(&["forget", "--volume", "vol", "--keep-last", "1"]);
    let before = pack_bytes(&env);
    env.ok(&["prune", "--grace", "0s", "--max-unused", "0%"]);
    assert!(
        pack_bytes(&env) < before,
        "the prune removed the first backup's chunks"
    );

    // The first backup's data again, with no parent: its chunks are uploaded again.
    std::fs::write(&image, &original).expect("write image");
    for _ in 0..3 {
        let out = env.run(&[
            "backup",
            image.to_str().expect("utf-8"),
            "--volume",
            "vol",
            "--parent",
            "none",
        ]);
        assert!(
            out.status.success(),
            "backup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    env.ok(&["check"]);
}

/// A damaged marker directory does not stop backups (they list `gc/deleting/` instead);
/// `check` reports it and says that `prune` rewrites it, which it does.
#[test]
fn a_damaged_marker_directory_is_reported_and_prune_rewrites_it() {
    let env = Env::new();
    env.init();
    let directory = env.repo.join("gc/markers");
    let mut bytes = std::fs::read(&directory).expect("read gc/markers");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&directory, bytes).expect("damage gc/markers");

    let image = env.path("disk.img");
    make_image(&image, MIB, &[(0, MIB)], 7);
    let id = backup_id(&env, &image, "vol", &[]);
    let stderr = expect_failure(&env.run(&["check"]), 3, "gc/markers");
    assert!(
        stderr.contains("s3mover prune"),
        "check should say the way out: {stderr}"
    );
    env.ok(&["prune"]);
    env.ok(&["check"]);
    restore_matches(&env, &id, &image);
}

/// A backup whose `latest/` pointer cannot be written after its manifest committed succeeds
/// with a warning, and is listed and restorable.
#[test]
fn a_backup_whose_latest_pointer_cannot_be_written_still_succeeds() {
    let env = Env::new();
    env.init();
    let image = env.path("disk.img");
    make_image(&image, MIB, &[(0, MIB)], 8);
    let first = backup_id(&env, &image, "vol", &[]);
    let latest = env.repo.join("latest");
    std::fs::remove_dir_all(&latest).expect("remove latest/");
    std::fs::write(&latest, b"not a directory").expect("block latest/");

    make_image(&image, MIB, &[(0, MIB)], 9);
    let out = env.run(&["backup", image.to_str().expect("utf-8"), "--volume", "vol"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("committed"),
        "{stderr}"
    );

    std::fs::remove_file(&latest).expect("unblock latest/");
    let list = env.json(&["backups"]);
    let ids: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    let second = ids
        .iter()
        .find(|id| **id != first)
        .expect("the second backup");
    restore_matches(&env, second, &image);
}

/// Five full backups of the same data store it five times; once four are forgotten, prune
/// keeps one copy of each chunk and frees the others, and everything still restores.
#[test]
fn prune_frees_second_copies_of_live_chunks() {
    let env = Env::new();
    env.init();
    let image = env.path("disk.img");
    let size = 8 * MIB;
    make_image(&image, size, &[(0, size)], 10);
    let mut last = String::new();
    for _ in 0..5 {
        last = backup_id(&env, &image, "vol", &["--parent", "none"]);
    }
    assert!(pack_bytes(&env) > 4 * size, "five copies stored");
    env.ok(&["forget", "--volume", "vol", "--keep-last", "1"]);
    let report = env.json(&["prune", "--grace", "0s", "--max-unused", "0%"]);
    let kept = pack_bytes(&env);
    assert!(
        kept < size + size / 4,
        "one copy should stay: {kept} bytes of packs for {size} bytes of data; {report}"
    );
    assert!(
        report["copiesDropped"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    env.ok(&["check"]);
    env.ok(&["verify", "--read-data"]);
    restore_matches(&env, &last, &image);

    // Nothing more to drop, and a second prune keeps what is there.
    let again = env.json(&["prune", "--grace", "0s", "--max-unused", "0%"]);
    assert_eq!(again["copiesDropped"].as_u64(), Some(0), "{again}");
    assert_eq!(pack_bytes(&env), kept);
    restore_matches(&env, &last, &image);
}

/// Full backups of the same data under two volumes, run beside prunes that drop second copies:
/// every backup that commits restores byte-exact, whatever copy prune kept.
#[test]
fn second_copies_are_dropped_safely_beside_running_backups() {
    let env = Env::new();
    env.init();
    let images: Vec<PathBuf> = (0..2).map(|i| env.path(&format!("disk{i}.img"))).collect();
    let mut committed: Vec<(String, Vec<u8>)> = Vec::new();
    for round in 0..8u64 {
        // Both volumes hold the same data; half of it changes each round.
        for image in &images {
            make_image(image, 2 * MIB, &[(0, 2 * MIB)], 20);
            common::write_at(image, 0, &common::pseudo_random(MIB as usize, 100 + round));
        }
        let content = std::fs::read(&images[0]).expect("read image");
        let spawn = |args: &[&str]| {
            env.command(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn s3mover")
        };
        let volumes = ["vol0", "vol1"];
        let backups: Vec<_> = images
            .iter()
            .zip(volumes)
            .map(|(image, volume)| {
                let image = image.to_str().expect("utf-8");
                spawn(&[
                    "backup", image, "--volume", volume, "--parent", "none", "-o", "json",
                ])
            })
            .collect();
        let prune = spawn(&["prune", "--grace", "0s", "--max-unused", "0%"]);
        for child in backups {
            let out = child.wait_with_output().expect("backup");
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                let report: serde_json::Value =
                    serde_json::from_slice(&out.stdout).expect("backup JSON");
                let id = report["id"].as_str().expect("id").to_string();
                committed.push((id, content.clone()));
            } else {
                assert!(
                    stderr.contains("rerun the backup"),
                    "backup failed: {stderr}"
                );
            }
        }
        let out = prune.wait_with_output().expect("prune");
        assert!(
            out.status.success(),
            "prune failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for volume in volumes {
            env.ok(&["forget", "--volume", volume, "--keep-last", "2"]);
        }
    }
    env.ok(&["prune", "--grace", "0s", "--max-unused", "0%"]);
    env.ok(&["check"]);
    let listed = env.json(&["backups"]);
    let ids: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    // Up to two per volume stay (fewer when the last rounds' backups were withdrawn).
    assert!((1..=4).contains(&ids.len()), "{listed}");
    for id in &ids {
        assert!(
            committed.iter().any(|(c, _)| c == id),
            "{id} was never committed"
        );
    }
    for (id, content) in committed
        .iter()
        .filter(|(id, _)| ids.contains(&id.as_str()))
    {
        let target = env.path("restored.img");
        let _ = std::fs::remove_file(&target);
        env.ok(&["restore", id, "--target", target.to_str().expect("utf-8")]);
        assert!(
            std::fs::read(&target).expect("read restored") == *content,
            "restore of {id} is not byte-exact"
        );
    }
    // One copy of each chunk: at most two rounds' data, 3 MiB of it distinct.
    assert!(
        pack_bytes(&env) < 4 * MIB,
        "{} bytes of packs",
        pack_bytes(&env)
    );
}

/// A damaged deletion marker withdraws the backups that read it; `check` reports it and the
/// next `prune` rewrites it, after which backups commit again.
#[test]
fn a_damaged_deletion_marker_is_reported_and_prune_rewrites_it() {
    let env = Env::new();
    env.init();
    let image = env.path("disk.img");
    make_image(&image, MIB, &[(0, MIB)], 11);
    backup_id(&env, &image, "vol", &[]);
    make_image(&image, MIB, &[(0, MIB)], 12);
    backup_id(&env, &image, "vol", &[]);
    env.ok(&["forget", "--volume", "vol", "--keep-last", "1"]);
    env.ok(&["prune", "--grace", "0s"]);
    let markers = files_under(&env.repo.join("gc/deleting"));
    assert_eq!(markers.len(), 1, "the sweep left its marker");
    let mut bytes = std::fs::read(&markers[0]).expect("read marker");
    bytes[30] ^= 0x01;
    std::fs::write(&markers[0], bytes).expect("damage marker");

    make_image(&image, MIB, &[(0, MIB)], 13);
    let out = env.run(&["backup", image.to_str().expect("utf-8"), "--volume", "vol"]);
    expect_failure(&out, 1, "rerun the backup");
    let stderr = expect_failure(&env.run(&["check"]), 3, "deletion marker");
    assert!(stderr.contains("s3mover prune"), "{stderr}");
    env.ok(&["prune", "--grace", "0s"]);
    env.ok(&["check"]);
    let id = backup_id(&env, &image, "vol", &[]);
    restore_matches(&env, &id, &image);
}

/// A pack with a damaged header whose blobs are all in use is rewritten by the next prune
/// after verify reported it, so verify is clean again.
#[test]
fn prune_rewrites_a_pack_verify_found_with_a_damaged_header() {
    let env = Env::new();
    env.init();
    let image = env.path("disk.img");
    make_image(&image, 2 * MIB, &[(0, 2 * MIB)], 14);
    let id = backup_id(&env, &image, "vol", &[]);
    let (data_pack, _) = packs(&env)
        .into_iter()
        .max_by_key(|(_, size)| *size)
        .expect("a pack");
    damage_header(&data_pack);
    expect_failure(&env.run(&["verify", "--read-data"]), 3, "header");

    let out = env.run(&["prune", "--grace", "0s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "prune failed: {stderr}");
    assert!(stderr.contains("damaged pack"), "{stderr}");
    assert!(!data_pack.exists(), "the damaged pack is rewritten");
    assert!(
        files_under(&env.repo.join("quarantine")).is_empty(),
        "record cleared"
    );
    env.ok(&["verify", "--read-data"]);
    restore_matches(&env, &id, &image);
}

/// `prune --dry-run` says what the prune then does: the packs it deletes and repacks and the
/// index objects it rewrites, and no count of new packs, which only writing them gives.
#[test]
fn a_dry_run_says_what_the_prune_then_does() {
    let env = Env::new();
    env.init();
    let image = env.path("disk.img");
    make_image(&image, 4 * MIB, &[(0, 4 * MIB)], 1);
    backup_id(&env, &image, "vol", &[]);
    common::write_at(&image, MIB, &common::pseudo_random(MIB as usize, 2));
    backup_id(&env, &image, "vol", &[]);
    env.ok(&["forget", "--volume", "vol", "--keep-last", "1"]);
    let prune = ["prune", "--grace", "0s", "--max-unused", "0%"];

    let dry_text = env.ok(&[&prune[..], &["--dry-run"]].concat());
    let line = |text: &str, verb: &str| {
        text.lines()
            .find(|l| l.starts_with(verb))
            .unwrap_or_else(|| panic!("no {verb:?} line in {text}"))
            .to_string()
    };
    let would = line(&dry_text, "would delete");
    assert!(
        !would.contains(" new"),
        "a dry run counts no new packs: {would}"
    );
    let dry = env.json(&[&prune[..], &["--dry-run"]].concat());
    let done = env.json(&prune);
    for field in ["deletedPacks", "repackedPacks", "indexObjectsRewritten"] {
        assert_eq!(dry[field], done[field], "{field}: dry {dry} done {done}");
    }
    assert!(done["repackedPacks"].as_u64() > Some(0), "{done}");
    assert!(done["indexObjectsRewritten"].as_u64() > Some(0), "{done}");
    let rewritten = done["indexObjectsRewritten"].to_string();
    assert!(
        would.contains(&format!("rewrite {rewritten} index objects")),
        "{would}"
    );
}
