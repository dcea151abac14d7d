//! The backup engine through the real `s3mover` binary: round trips, bad input, crash safety.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

const MIB: u64 = 1 << 20;

fn image_with_data(env: &Env, name: &str) -> std::path::PathBuf {
    let image = env.path(name);
    make_image(
        &image,
        64 * MIB,
        &[(0, 2 * MIB), (10 * MIB + 4096, 3 * MIB), (63 * MIB, MIB)],
        1,
    );
    image
}

#[test]
fn full_incremental_restore_and_listing() {
    let env = Env::new();
    env.init();
    let image = image_with_data(&env, "vol.img");
    let full = env.json(&[
        "backup",
        image.to_str().unwrap(),
        "--volume",
        "db",
        "--tag",
        "env=test",
    ]);
    assert_eq!(full["volume"], "db");
    assert_eq!(full["parent"], serde_json::Value::Null);
    assert_eq!(full["changeSource"], "sparse");
    for field in [
        "id",
        "bytesRead",
        "bytesUploaded",
        "metadataBytesUploaded",
        "objectsWritten",
    ] {
        assert!(!full[field].is_null(), "backup -o json has {field}");
    }
    let original = std::fs::read(&image).unwrap();

    write_at(&image, 5 * MIB, &pseudo_random(4096, 77));
    write_at(&image, 40 * MIB + 8192, &pseudo_random(4096, 78));
    let ranges = env.path("r.json");
    ranges_file(
        &ranges,
        64 * MIB,
        &[(5 * MIB, 4096), (40 * MIB + 8192, 4096)],
    );
    let incr = env.json(&[
        "backup",
        image.to_str().unwrap(),
        "--volume",
        "db",
        "--changed-ranges",
        ranges.to_str().unwrap(),
    ]);
    assert_eq!(incr["parent"], full["id"]);
    assert_eq!(incr["changeSource"], "changed-ranges");
    assert_eq!(
        incr["bytesRead"],
        2 * 65536,
        "only the two changed chunks are read"
    );
    assert!(
        incr["bytesUploaded"].as_u64().unwrap() < 200_000,
        "incremental uploads little: {incr}"
    );

    let list = env.json(&["backups"]);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for field in ["id", "volume", "time", "parent", "sizeBytes"] {
        assert!(rows[0].get(field).is_some(), "backups -o json has {field}");
    }
    assert_eq!(rows[1]["sizeBytes"], 64 * MIB);

    let restored_full = env.path("full.img");
    let id = full["id"].as_str().unwrap();
    env.ok(&[
        "restore",
        &id[..6],
        "--target",
        restored_full.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read(&restored_full).unwrap() == original,
        "full backup restores the original"
    );

    let restored = env.path("latest.img");
    let report = env.json(&[
        "restore",
        "latest",
        "--volume",
        "db",
        "--target",
        restored.to_str().unwrap(),
    ]);
    assert_eq!(report["digest"], incr["digest"]);
    assert!(
        std::fs::read(&restored).unwrap() == std::fs::read(&image).unwrap(),
        "incremental restores the changed image"
    );

    let show = env.json(&["show", id]);
    assert_eq!(show["tags"][0], "env=test");
    let verify = env.json(&["verify", "--read-data"]);
    assert_eq!(verify["problems"].as_array().unwrap().len(), 0);
    assert!(verify["chunksRead"].as_u64().unwrap() > 0);
}

#[test]
fn hash_compare_uploads_only_changed_chunks() {
    let env = Env::new();
    env.init();
    let image = image_with_data(&env, "vol.img");
    env.ok(&["backup", image.to_str().unwrap(), "--volume", "v"]);
    write_at(&image, MIB, &pseudo_random(100, 5));
    let second = env.json(&["backup", image.to_str().unwrap(), "--volume", "v"]);
    assert_eq!(
        second["changeSource"], "sparse",
        "an image file's data extents are read and compared with the parent"
    );
    assert_eq!(second["chunksNew"], 1, "{second}");
}

#[test]
fn wrong_password_is_refused() {
    let env = Env::new();
    env.init();
    let out = env
        .command(&["backups"])
        .env("S3MOVER_PASSWORD", "not it")
        .output()
        .unwrap();
    expect_failure(&out, 4, "wrong password");
    let out = env
        .command(&["backups"])
        .env_remove("S3MOVER_PASSWORD")
        .output()
        .unwrap();
    expect_failure(&out, 4, "no password");
    // The password file and command sources work.
    let file = env.path("pw");
    std::fs::write(&file, format!("{}\n", env.password)).unwrap();
    let out = env
        .command(&["backups", "--password-file", file.to_str().unwrap()])
        .env_remove("S3MOVER_PASSWORD")
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = env
        .command(&["backups"])
        .env_remove("S3MOVER_PASSWORD")
        .env(
            "S3MOVER_PASSWORD_COMMAND",
            format!("echo '{}'", env.password),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn init_refuses_existing_repository_and_missing_password() {
    let env = Env::new();
    env.init();
    expect_failure(&env.run(&["init"]), 1, "already holds");
    let other = Env::new();
    let out = other
        .command(&["init"])
        .env_remove("S3MOVER_PASSWORD")
        .output()
        .unwrap();
    expect_failure(&out, 4, "needs a password");
    assert!(!other.repo.join("config").exists());
}

#[test]
fn init_takes_a_key_derivation_cost_and_refuses_one_out_of_bounds() {
    let env = Env::new();
    expect_failure(
        &env.run(&["init", "--kdf-memory", "1M"]),
        2,
        "outside 7168..=4194304 KiB",
    );
    assert!(!env.repo.exists(), "a refused init writes nothing");
    expect_failure(&env.run(&["init", "--kdf-passes", "0"]), 2, "passes 0");
    assert!(!env.repo.exists(), "a refused init writes nothing");

    env.ok(&["init", "--kdf-memory", "8M", "--kdf-passes", "3"]);
    let keys: Vec<_> = std::fs::read_dir(env.repo.join("keys")).unwrap().collect();
    assert_eq!(keys.len(), 1);
    let slot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(keys[0].as_ref().unwrap().path()).unwrap()).unwrap();
    assert_eq!(slot["memoryKib"], 8192);
    assert_eq!(slot["iterations"], 3);
    env.ok(&["backups"]);
}

#[test]
fn not_a_repository_and_newer_format_are_refused() {
    let env = Env::new();
    std::fs::create_dir_all(&env.repo).unwrap();
    expect_failure(&env.run(&["backups"]), 1, "no s3mover repository");
    env.init();
    let config_path = env.repo.join("config");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["version"] = 99.into();
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    let before = files_under(&env.repo);
    let image = image_with_data(&env, "vol.img");
    expect_failure(
        &env.run(&["backup", image.to_str().unwrap(), "--volume", "v"]),
        1,
        "newer than this s3mover",
    );
    assert_eq!(
        files_under(&env.repo),
        before,
        "nothing written to a newer repository"
    );
}

#[test]
fn bad_ranges_files_are_refused_naming_the_entry() {
    let env = Env::new();
    env.init();
    let image = image_with_data(&env, "vol.img");
    env.ok(&["backup", image.to_str().unwrap(), "--volume", "v"]);
    let cases: Vec<(&str, String, &str)> = vec![
        ("unsorted", format!(r#"{{"blockMetadataType":"FIXED_LENGTH","volumeCapacityBytes":{},"blockMetadata":[{{"byteOffset":8192,"sizeBytes":4096}},{{"byteOffset":0,"sizeBytes":4096}}]}}"#, 64 * MIB), "range #1"),
        ("overlap", format!(r#"{{"blockMetadataType":"VARIABLE_LENGTH","volumeCapacityBytes":{},"blockMetadata":[{{"byteOffset":0,"sizeBytes":8192}},{{"byteOffset":4096,"sizeBytes":4096}}]}}"#, 64 * MIB), "range #1"),
        ("zero size", format!(r#"{{"blockMetadataType":"VARIABLE_LENGTH","volumeCapacityBytes":{},"blockMetadata":[{{"byteOffset":0,"sizeBytes":0}}]}}"#, 64 * MIB), "range #0"),
        ("past end", format!(r#"{{"blockMetadataType":"FIXED_LENGTH","volumeCapacityBytes":{},"blockMetadata":[{{"byteOffset":{},"sizeBytes":4096}}]}}"#, 64 * MIB, 64 * MIB), "past the volume capacity"),
        ("capacity mismatch", r#"{"blockMetadataType":"FIXED_LENGTH","volumeCapacityBytes":1048576,"blockMetadata":[]}"#.to_string(), "another volume"),
        ("not json", "garbage".to_string(), "not a valid ranges file"),
    ];
    let before = files_under(&env.repo);
    for (name, text, needle) in cases {
        let path = env.path("bad.json");
        std::fs::write(&path, text).unwrap();
        let out = env.run(&[
            "backup",
            image.to_str().unwrap(),
            "--volume",
            "v",
            "--changed-ranges",
            path.to_str().unwrap(),
        ]);
        let stderr = expect_failure(&out, 2, needle);
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{name}: one-line error: {stderr}"
        );
    }
    assert_eq!(
        files_under(&env.repo),
        before,
        "refused backups write nothing"
    );
}

#[test]
fn missing_source_and_existing_target_are_refused() {
    let env = Env::new();
    env.init();
    expect_failure(
        &env.run(&["backup", "/nonexistent/disk", "--volume", "v"]),
        1,
        "does not exist",
    );
    let image = image_with_data(&env, "vol.img");
    env.ok(&["backup", image.to_str().unwrap(), "--volume", "v"]);
    let target = env.path("existing.img");
    std::fs::write(&target, b"precious").unwrap();
    expect_failure(
        &env.run(&[
            "restore",
            "latest",
            "--volume",
            "v",
            "--target",
            target.to_str().unwrap(),
        ]),
        2,
        "--overwrite",
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    expect_failure(
        &env.run(&[
            "restore",
            "ffffffff",
            "--target",
            env.path("x").to_str().unwrap(),
        ]),
        2,
        "no backup id",
    );
}

/// Finds the pack holding data (the largest pack file).
fn largest_pack(env: &Env) -> std::path::PathBuf {
    files_under(&env.repo.join("packs"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a pack")
}

#[test]
fn flipped_byte_is_detected_by_restore_and_verify() {
    let env = Env::new();
    env.init();
    let image = image_with_data(&env, "vol.img");
    let full = env.json(&["backup", image.to_str().unwrap(), "--volume", "v"]);
    let pack = largest_pack(&env);
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[1000] ^= 0x01;
    std::fs::write(&pack, bytes).unwrap();

    let out = env.run(&["verify", "--read-data"]);
    let stderr = expect_failure(&out, 3, "corrupt chunk");
    assert!(
        stderr.contains(full["id"].as_str().unwrap()),
        "verify names the backup: {stderr}"
    );
    assert!(
        stderr.contains("offset 0"),
        "verify names the volume offset: {stderr}"
    );

    let out = env.run(&[
        "restore",
        "latest",
        "--volume",
        "v",
        "--target",
        env.path("r.img").to_str().unwrap(),
    ]);
    let stderr = expect_failure(&out, 3, "chunk");
    assert!(stderr.contains("volume offset"), "{stderr}");
}

#[test]
fn truncated_pack_is_detected() {
    let env = Env::new();
    env.init();
    let image = image_with_data(&env, "vol.img");
    env.ok(&["backup", image.to_str().unwrap(), "--volume", "v"]);
    let pack = largest_pack(&env);
    let len = std::fs::metadata(&pack).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    expect_failure(&env.run(&["verify"]), 3, "truncated");
    let out = env.run(&[
        "restore",
        "latest",
        "--volume",
        "v",
        "--target",
        env.path("r.img").to_str().unwrap(),
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
}

#[test]
fn size_change_makes_a_full_backup() {
    let env = Env::new();
    env.init();
    let image = image_with_data(&env, "vol.img");
    env.ok(&["backup", image.to_str().unwrap(), "--volume", "v"]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(80 * MIB)
        .unwrap();
    let ranges = env.path("r.json");
    ranges_file(&ranges, 80 * MIB, &[(0, 4096)]);
    let grown = env.json(&[
        "backup",
        image.to_str().unwrap(),
        "--volume",
        "v",
        "--changed-ranges",
        ranges.to_str().unwrap(),
    ]);
    assert_eq!(grown["parent"], serde_json::Value::Null);
    assert_eq!(grown["changeSource"], "full");
    let restored = env.path("r.img");
    env.ok(&[
        "restore",
        "latest",
        "--volume",
        "v",
        "--target",
        restored.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&restored).unwrap() == std::fs::read(&image).unwrap());
}

#[test]
fn loop_device_backup_and_restore() {
    if !loop_devices_available("loop_device_backup_and_restore") {
        return;
    }
    let env = Env::new();
    env.init();
    let source_file = image_with_data(&env, "src.img");
    let target_file = env.path("dst.img");
    make_image(&target_file, 64 * MIB, &[(0, 64 * MIB)], 99); // garbage to be overwritten
    let small_file = env.path("small.img");
    make_image(&small_file, 32 * MIB, &[], 0);
    let source = LoopDevice::attach(&source_file);
    let target = LoopDevice::attach(&target_file);
    let small = LoopDevice::attach(&small_file);

    let full = env.json(&["backup", source.path.to_str().unwrap(), "--volume", "loop"]);
    assert_eq!(full["changeSource"], "full", "a device is read whole");
    env.ok(&[
        "restore",
        "latest",
        "--volume",
        "loop",
        "--target",
        target.path.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read(&source.path).unwrap() == std::fs::read(&target.path).unwrap(),
        "device restored byte-exact, zero regions zeroed"
    );

    let out = env.run(&[
        "restore",
        "latest",
        "--volume",
        "loop",
        "--target",
        small.path.to_str().unwrap(),
    ]);
    let stderr = expect_failure(&out, 2, "33554432 bytes");
    assert!(stderr.contains("67108864"), "names both sizes: {stderr}");
}

#[test]
fn killed_backup_reruns_uploading_only_what_is_missing() {
    let env = Env::new();
    // Unencrypted for speed; small packs so the run writes index checkpoints early.
    env.ok(&["init", "--insecure-no-encryption"]);
    let image = env.path("big.img");
    make_image(&image, 256 * MIB, &[(0, 256 * MIB)], 3);
    let reference = env.json(&[
        "backup",
        image.to_str().unwrap(),
        "--volume",
        "ref",
        "--parent",
        "none",
    ]);
    let full_upload = reference["bytesUploaded"].as_u64().unwrap();

    let mut child = env
        .command(&[
            "backup",
            image.to_str().unwrap(),
            "--volume",
            "v",
            "--upload-concurrency",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill as soon as the run has checkpointed (its session object exists).
    let sessions = env.repo.join("sessions");
    let mut checkpointed = false;
    for _ in 0..6000 {
        if files_under(&sessions)
            .iter()
            .any(|p| !p.to_string_lossy().contains('#'))
        {
            checkpointed = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    if !checkpointed {
        eprintln!("SKIPPED killed_backup_reruns_uploading_only_what_is_missing: the backup finished before it could be killed");
        return;
    }
    let listed = env.json(&["backups", "--volume", "v"]);
    assert_eq!(
        listed.as_array().unwrap().len(),
        0,
        "the killed run committed nothing"
    );

    let rerun = env.json(&["backup", image.to_str().unwrap(), "--volume", "v"]);
    assert!(
        rerun["resumedChunks"].as_u64().unwrap() > 0,
        "rerun reused the killed run's chunks: {rerun}"
    );
    assert!(
        rerun["bytesUploaded"].as_u64().unwrap() < full_upload,
        "rerun uploads less than a full backup: {rerun}"
    );
    let restored = env.path("r.img");
    env.ok(&[
        "restore",
        "latest",
        "--volume",
        "v",
        "--target",
        restored.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&restored).unwrap() == std::fs::read(&image).unwrap());
}

#[test]
fn demo_runs_and_checks_itself() {
    let env = Env::new();
    let out = env.json(&["demo", "--dir", env.path("demo").to_str().unwrap()]);
    assert_eq!(out["restores"][0]["matches"], true);
    assert_eq!(out["restores"][1]["matches"], true);
    assert!(
        out["incremental"]["bytesUploaded"].as_u64().unwrap()
            < out["full"]["bytesUploaded"].as_u64().unwrap()
    );
}

/// `forget` without --keep-* rules thins the volumes whose backups record their own rules (the
/// `s3mover.retention` tag) and keeps every backup of the others; when no volume records
/// rules it is refused and removes nothing.
#[test]
fn forget_without_rules_applies_only_recorded_ones() {
    let env = Env::new();
    env.init();
    let image = env.path("small.img");
    make_image(&image, MIB, &[(0, MIB)], 1);
    let image_arg = image.to_str().expect("utf-8");
    for volume in ["plain", "plain"] {
        env.ok(&["backup", image_arg, "--volume", volume]);
    }
    let refused = env.run(&["forget"]);
    expect_failure(&refused, 2, "forget needs at least one --keep-* rule");
    let listed = env.json(&["backups"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");

    for _ in 0..3 {
        let tag = "s3mover.retention=keep-last=1";
        env.ok(&["backup", image_arg, "--volume", "ruled", "--tag", tag]);
    }
    let report = env.json(&["forget"]);
    let kept_of = |volume: &str| {
        report["forget"]["backups"]
            .as_array()
            .expect("backups")
            .iter()
            .filter(|b| b["volume"] == volume && b["keep"] == true)
            .count()
    };
    assert_eq!(kept_of("ruled"), 1, "{report}");
    assert_eq!(kept_of("plain"), 2, "{report}");
    assert_eq!(
        report["forget"]["removed"].as_array().map(Vec::len),
        Some(2)
    );
    let source_of = |volume: &str| {
        report["forget"]["policies"]
            .as_array()
            .expect("policies")
            .iter()
            .find(|p| p["volume"] == volume)
            .map(|p| p["source"].clone())
    };
    assert_eq!(source_of("ruled"), Some("recorded".into()), "{report}");
    assert_eq!(source_of("plain"), Some("none".into()), "{report}");
    let listed = env.json(&["backups"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
}
