//! A repository that trusts nothing the object store says, through the real binary: a changed
//! config is refused before anything is written, objects moved or copied to another name are
//! detected by restore, verify and check, and missing or truncated data is reported by name
//! with the exit status of missing data (3).

mod common;

use std::path::{Path, PathBuf};

use common::*;

const MIB: u64 = 1 << 20;

fn image(env: &Env, name: &str, seed: u64) -> PathBuf {
    let image = env.path(name);
    make_image(&image, 8 * MIB, &[(0, MIB), (5 * MIB, 2 * MIB)], seed);
    image
}

fn backup(env: &Env, image: &Path, volume: &str) -> String {
    let report = env.json(&["backup", image.to_str().unwrap(), "--volume", volume]);
    report["id"].as_str().expect("backup id").to_string()
}

fn restore(env: &Env, spec: &str, volume: Option<&str>, target: &str) -> std::process::Output {
    let target = env.path(target);
    let mut args = vec!["restore", spec, "--target", target.to_str().unwrap()];
    if let Some(volume) = volume {
        args.extend(["--volume", volume]);
    }
    env.run(&args)
}

/// Restores `spec` to a new file `target` and checks it equals the file `expected`.
fn restores_to(env: &Env, spec: &str, volume: Option<&str>, target: &str, expected: &Path) {
    let out = restore(env, spec, volume, target);
    assert!(out.status.success(), "restore {spec}: {}", stderr_of(&out));
    assert!(
        std::fs::read(env.path(target)).unwrap() == std::fs::read(expected).unwrap(),
        "restore {spec} is byte-exact"
    );
}

fn edit_config(env: &Env, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = env.repo.join("config");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// Every file of the repository with its bytes.
fn snapshot(repo: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_under(repo)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

#[test]
fn a_changed_config_is_refused_and_nothing_is_written() {
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &str); 7] = [
        (
            "plaintext",
            |c| {
                c["encryption"] = "none".into();
                c["idKey"] = "00".repeat(32).into();
            },
            "says the repository is unencrypted, but the repository has key slots",
        ),
        (
            "plaintext, slots unnamed",
            |c| {
                c["encryption"] = "none".into();
                c["idKey"] = "00".repeat(32).into();
                c.as_object_mut().unwrap().remove("keySlots");
            },
            "has key slots (keys/",
        ),
        (
            "chunk size",
            |c| c["chunkSize"] = 131072.into(),
            "chunkSize is 131072",
        ),
        (
            "pack size",
            |c| c["packSize"] = 4096.into(),
            "packSize is 4096",
        ),
        (
            "repository id",
            |c| c["id"] = "00".repeat(16).into(),
            "belongs to repository",
        ),
        (
            "downgrade",
            |c| {
                c["version"] = 1.into();
                c.as_object_mut().unwrap().remove("sealedFields");
            },
            "made for format version 2",
        ),
        (
            "sealed copy removed",
            |c| {
                c.as_object_mut().unwrap().remove("sealedFields");
            },
            "no sealed copy",
        ),
    ];
    for (what, edit, says) in cases {
        let env = Env::new();
        env.init();
        let image = image(&env, "vol.img", 1);
        backup(&env, &image, "v");
        edit_config(&env, edit);
        // What the attack of a plaintext config also does: no marker directory to read.
        let _ = std::fs::remove_file(env.repo.join("gc/markers"));
        let before = snapshot(&env.repo);
        let out = env.run(&["backup", image.to_str().unwrap(), "--volume", "v"]);
        let stderr = expect_failure(&out, 3, says);
        assert!(
            stderr.contains("config"),
            "{what}: names the config: {stderr}"
        );
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{what}: one line: {stderr}"
        );
        assert!(
            snapshot(&env.repo) == before,
            "{what}: nothing was written to the repository"
        );
        expect_failure(&env.run(&["backups"]), 3, says);
    }
}

#[test]
fn a_format_version_nobody_wrote_is_refused() {
    let env = Env::new();
    env.init();
    edit_config(&env, |c| c["version"] = 0.into());
    expect_failure(&env.run(&["backups"]), 3, "format version 0");
}

#[test]
fn a_manifest_moved_or_rolled_back_is_detected_by_name() {
    let env = Env::new();
    env.init();
    let one = backup(&env, &image(&env, "a.img", 1), "a");
    let two = backup(&env, &image(&env, "b.img", 2), "b");
    let older = backup(&env, &image(&env, "c.img", 3), "c");
    let newer = backup(&env, &image(&env, "c2.img", 4), "c");
    let manifest = |id: &str| env.repo.join("backups").join(id);
    // Backup `one`'s manifest copied over `two`'s key; `older` copied over `newer` (a rollback).
    std::fs::copy(manifest(&one), manifest(&two)).unwrap();
    std::fs::copy(manifest(&older), manifest(&newer)).unwrap();

    for id in [&two, &newer] {
        let stderr = expect_failure(&restore(&env, id, None, &format!("{id}.img")), 3, id);
        assert!(stderr.contains(&format!("backups/{id}")), "{stderr}");
    }
    for command in ["verify", "check"] {
        let stderr = expect_failure(&env.run(&[command]), 3, &format!("backups/{two}"));
        assert!(
            stderr.contains(&format!("backups/{newer}")),
            "{command}: {stderr}"
        );
    }
    // The intact backups still restore.
    restores_to(&env, &one, None, "one.img", &env.path("a.img"));
}

#[test]
fn sealed_objects_moved_to_another_name_do_not_open_there() {
    let env = Env::new();
    env.init();
    let a = backup(&env, &image(&env, "a.img", 1), "a");
    let b = backup(&env, &image(&env, "b.img", 2), "b");

    // A tree table moved to another backup's name is reported by check.
    std::fs::copy(
        env.repo.join("trees").join(&a),
        env.repo.join("trees").join(&b),
    )
    .unwrap();
    let stderr = expect_failure(&env.run(&["check"]), 3, &format!("trees/{b}"));
    assert!(stderr.contains("tree table is damaged"), "{stderr}");
    std::fs::remove_file(env.repo.join("trees").join(&b)).unwrap();

    // An index object copied to another name does not open there.
    let index = files_under(&env.repo.join("index"));
    let moved = env.repo.join("index").join("ab".repeat(32));
    std::fs::copy(&index[0], &moved).unwrap();
    let name = format!("index/{}", "ab".repeat(32));
    expect_failure(&env.run(&["check"]), 3, &name);
    std::fs::remove_file(&moved).unwrap();

    // A volume's `latest/` pointer moved to another volume's name is not followed: the next
    // backup of that volume finds its parent by listing, and it is the volume's own.
    let latest = files_under(&env.repo.join("latest"));
    assert_eq!(latest.len(), 2);
    let bytes_0 = std::fs::read(&latest[0]).unwrap();
    std::fs::write(&latest[1], bytes_0).unwrap();
    for (volume, own, file) in [("a", &a, "a.img"), ("b", &b, "b.img")] {
        let report = env.json(&[
            "backup",
            env.path(file).to_str().unwrap(),
            "--volume",
            volume,
        ]);
        assert_eq!(report["parent"].as_str(), Some(own.as_str()), "{report}");
    }
    env.ok(&["check"]);
}

#[test]
fn missing_or_truncated_packs_make_restore_exit_3_naming_the_pack() {
    let env = Env::new();
    env.init();
    let id = backup(&env, &image(&env, "a.img", 1), "a");
    let pack = files_under(&env.repo.join("packs"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let name = pack
        .strip_prefix(&env.repo)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let whole = std::fs::read(&pack).unwrap();
    // Cut short (the last blobs are past the end) and cut to a stub (every read starts past it).
    for keep in [whole.len() / 2, 10] {
        std::fs::write(&pack, &whole[..keep]).unwrap();
        let target = format!("r{keep}.img");
        let stderr = expect_failure(&restore(&env, &id, None, &target), 3, &name);
        assert!(stderr.contains("truncated"), "{stderr}");
        assert!(
            !stderr.contains("LocalFileSystem"),
            "no backend text: {stderr}"
        );
    }
    std::fs::remove_file(&pack).unwrap();
    let stderr = expect_failure(&restore(&env, &id, None, "gone.img"), 3, &name);
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn missing_key_slots_are_reported_as_missing_not_as_a_wrong_password() {
    let env = Env::new();
    env.init();
    for slot in files_under(&env.repo.join("keys")) {
        std::fs::remove_file(slot).unwrap();
    }
    let stderr = expect_failure(&env.run(&["backups"]), 3, "no key slots");
    assert!(stderr.contains("missing"), "{stderr}");
    assert!(!stderr.contains("wrong password"), "{stderr}");
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_damaged_manifest_costs_only_its_backup_and_forget_removes_it() {
    let env = Env::new();
    env.init();
    let a_img = image(&env, "a.img", 1);
    let a_old = backup(&env, &a_img, "a");
    let a_new = backup(&env, &a_img, "a");
    let b_img = image(&env, "b.img", 2);
    let b_old = backup(&env, &b_img, "b");
    let b_new = backup(&env, &image(&env, "b2.img", 3), "b");
    flip_byte(&env.repo.join("backups").join(&b_new), 40);

    // Listing goes on, naming the damaged backup and how to remove it.
    let out = env.run(&["backups", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(!ids.contains(&b_new.as_str()));
    let stderr = stderr_of(&out);
    assert!(stderr.contains(&format!("backups/{b_new}")), "{stderr}");
    assert!(
        stderr.contains(&format!("s3mover forget {b_new}")),
        "{stderr}"
    );

    // Other volumes restore; the damaged volume's `latest` is refused, not silently older.
    restores_to(&env, "latest", Some("a"), "ra.img", &a_img);
    let stderr = expect_failure(&restore(&env, "latest", Some("b"), "rb.img"), 3, &b_new);
    assert!(stderr.contains("newest backup of volume"), "{stderr}");
    restores_to(&env, &b_old, None, "rb_old.img", &b_img);

    // Verify checks every other backup and reports the damaged one.
    let out = env.run(&["verify", "--read-data", "-o", "json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["backupsChecked"], 3, "{report}");
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert!(problems[0]["detail"].as_str().unwrap().contains(&b_new));

    // Retention of another volume works; prune refuses, saying how to go on.
    env.ok(&["forget", "--volume", "a", "--keep-last", "1"]);
    assert!(!env.repo.join("backups").join(&a_old).exists());
    let stderr = expect_failure(&env.run(&["prune", "--grace", "0s"]), 3, &b_new);
    assert!(
        stderr.contains(&format!("s3mover forget {b_new}")),
        "{stderr}"
    );

    // A backup of the damaged volume still works, on its newest readable parent.
    let report = env.json(&["backup", b_img.to_str().unwrap(), "--volume", "b"]);
    assert_eq!(report["parent"].as_str(), Some(b_old.as_str()), "{report}");

    // `forget ID` removes the broken backup; then everything is clean again.
    let out = env.run(&["forget", &b_new, "--keep-last", "1"]);
    expect_failure(&out, 2, "not both");
    env.ok(&["forget", &b_new]);
    assert!(!env.repo.join("backups").join(&b_new).exists());
    env.ok(&["prune", "--grace", "0s"]);
    env.ok(&["check"]);
    env.ok(&["verify", "--read-data"]);
    restores_to(&env, &a_new, None, "ra2.img", &a_img);
}

#[test]
fn a_damaged_index_object_costs_only_its_backups_until_repair_index() {
    let env = Env::new();
    env.init();
    let a_img = image(&env, "a.img", 1);
    let a = backup(&env, &a_img, "a");
    let before: Vec<PathBuf> = files_under(&env.repo.join("index"));
    let b_img = image(&env, "b.img", 2);
    let b = backup(&env, &b_img, "b");
    let b_index: Vec<PathBuf> = files_under(&env.repo.join("index"))
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(b_index.len(), 1, "backup b wrote one index object");
    let damaged = format!(
        "index/{}",
        b_index[0].file_name().unwrap().to_str().unwrap()
    );
    flip_byte(&b_index[0], 100);

    // Backup a restores; b fails with exit 3, and the warning says what to do.
    restores_to(&env, &a, None, "ra.img", &a_img);
    let out = restore(&env, &b, None, "rb.img");
    let stderr = expect_failure(&out, 3, &damaged);
    assert!(stderr.contains("s3mover repair index"), "{stderr}");
    assert!(
        stderr.contains(&format!("backup {b}")),
        "names the backup: {stderr}"
    );

    // Check and verify report the object and go on; prune refuses, saying what to do.
    let stderr = expect_failure(&env.run(&["check"]), 3, &damaged);
    assert!(stderr.contains("s3mover repair index"), "{stderr}");
    let out = env.run(&["verify", "-o", "json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["backupsChecked"], 2, "{report}");
    let text = report["problems"].to_string();
    assert!(text.contains(&damaged), "{text}");
    assert!(
        !text.contains(&format!("\"backup\":\"{a}\"")),
        "a is intact: {text}"
    );
    let stderr = expect_failure(&env.run(&["prune", "--grace", "0s"]), 3, &damaged);
    assert!(stderr.contains("s3mover repair index"), "{stderr}");

    // The repair indexes b's packs again from their headers and drops the damaged object.
    let report = env.json(&["repair", "index"]);
    assert_eq!(report["damaged"].as_array().unwrap().len(), 1, "{report}");
    assert!(report["packsReindexed"].as_u64().unwrap() >= 1, "{report}");
    assert!(!b_index[0].exists());
    restores_to(&env, &b, None, "rb2.img", &b_img);
    env.ok(&["check"]);
    env.ok(&["verify", "--read-data"]);
    env.ok(&["prune", "--grace", "0s"]);
    env.ok(&["check"]);
}

#[test]
fn forget_by_id_refuses_an_empty_id_and_a_protected_backup() {
    let env = Env::new();
    env.init();
    let id = backup(&env, &image(&env, "a.img", 1), "a");
    expect_failure(&env.run(&["forget", ""]), 2, "empty backup id");
    env.ok(&["protect", &id]);
    flip_byte(&env.repo.join("backups").join(&id), 30);
    expect_failure(&env.run(&["forget", &id]), 2, "protect --remove");
    assert!(env.repo.join("backups").join(&id).exists());
    // Lifting the protection needs no readable manifest; then the broken backup goes.
    env.ok(&["protect", "--remove", &id]);
    let out = env.ok(&["forget", &id[..6]]);
    assert!(out.contains(&id), "{out}");
    assert!(!env.repo.join("backups").join(&id).exists());
    assert!(!env.repo.join("trees").join(&id).exists());
}
