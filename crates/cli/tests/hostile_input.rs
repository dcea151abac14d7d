//! Input a user (or a script with an unset variable) can give that must be refused with a
//! one-line error and exit 2, losing nothing: empty or keyless keep rules, a forget that would
//! empty a volume, zero or huge counts and durations, the empty id prefix, FIFO sources and
//! blank or control-character volume names. Ends with a bounded fuzz run of the real binary
//! over every flag that parses a value.

mod common;

use common::{expect_failure, make_image, Env};
use proptest::prelude::*;

/// A repository with two backups of volume `a` and one of volume `b` (1 MiB images).
fn repository_with_backups() -> (Env, Vec<String>) {
    let env = Env::new();
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
    make_image(&image, 1 << 20, &[(0, 128 << 10)], 1);
    let image = image.to_str().expect("utf-8 path");
    env.ok(&["backup", image, "--volume", "a", "--tag", "keep=yes"]);
    env.ok(&["backup", image, "--volume", "a"]);
    env.ok(&["backup", image, "--volume", "b"]);
    let ids = backup_ids(&env);
    assert_eq!(ids.len(), 3);
    (env, ids)
}

fn backup_ids(env: &Env) -> Vec<String> {
    let list = env.json(&["backups"]);
    let mut ids: Vec<String> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|b| b["id"].as_str().expect("id").to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn empty_and_keyless_keep_tags_are_refused_and_remove_nothing() {
    let (env, ids) = repository_with_backups();
    for rule in ["", "=x", "=", " "] {
        let out = env.run(&["forget", "--keep-tag", rule]);
        expect_failure(&out, 2, "tag");
        assert_eq!(backup_ids(&env), ids, "--keep-tag {rule:?} removed backups");
    }
    // Beside a valid rule, too.
    let out = env.run(&["forget", "--keep-last", "1", "--keep-tag", ""]);
    expect_failure(&out, 2, "tag");
    assert_eq!(backup_ids(&env), ids);
}

#[test]
fn a_forget_that_empties_a_volume_stops_unless_allowed() {
    let (env, ids) = repository_with_backups();
    // A tag no backup carries keeps nothing of either volume.
    let out = env.run(&["forget", "--keep-tag", "nosuch"]);
    let stderr = expect_failure(&out, 2, "--allow-remove-all");
    assert!(stderr.contains("nothing was removed"), "{stderr}");
    assert_eq!(backup_ids(&env), ids);
    // Volume `a` keeps its tagged backup, `b` would lose its only one: refused as a whole.
    let out = env.run(&["forget", "--keep-tag", "keep"]);
    let stderr = expect_failure(&out, 2, "volume b (1 backups)");
    assert!(!stderr.contains("volume a"), "{stderr}");
    assert_eq!(backup_ids(&env), ids);
    // A dry run says the same and changes nothing.
    let out = env.run(&["forget", "--keep-tag", "nosuch", "--dry-run"]);
    expect_failure(&out, 2, "--allow-remove-all");
    // Named explicitly, it goes ahead, for the volume asked.
    env.ok(&[
        "forget",
        "--volume",
        "b",
        "--keep-tag",
        "nosuch",
        "--allow-remove-all",
    ]);
    assert_eq!(backup_ids(&env).len(), 2);
    assert!(env
        .json(&["backups", "--volume", "b"])
        .as_array()
        .expect("array")
        .is_empty());
}

#[test]
fn zero_concurrency_and_huge_windows_are_errors_or_work_but_never_panic() {
    let (env, ids) = repository_with_backups();
    let target = env.path("restored.img");
    let target_arg = target.to_str().expect("utf-8 path");
    for count in ["0", "-1", "99999999999999999999999", "x"] {
        let flag = format!("--concurrency={count}");
        let out = env.run(&["restore", &ids[0], "--target", target_arg, &flag]);
        expect_failure(&out, 2, "--concurrency");
        assert!(
            !target.exists(),
            "--concurrency {count} left a target behind"
        );
    }
    let image = env.path("disk.img");
    let out = env.run(&[
        "backup",
        image.to_str().expect("utf-8 path"),
        "--volume",
        "a",
        "--upload-concurrency",
        "0",
    ]);
    expect_failure(&out, 2, "--upload-concurrency");

    // A window longer than the calendar keeps everything.
    let out = env.json(&["forget", "--keep-within", "99999999999d"]);
    assert!(out["forget"]["removed"]
        .as_array()
        .expect("removed")
        .is_empty());
    assert_eq!(backup_ids(&env), ids);
    for duration in ["99999999999999999999d", "9223372036854775807s1s"] {
        let out = env.run(&["forget", "--keep-within", duration]);
        expect_failure(&out, 2, "too large");
    }
}

#[test]
fn a_restore_that_fails_leaves_no_target_it_created() {
    let (env, ids) = repository_with_backups();
    // Every pack gone: the restore fails after creating its target.
    for pack in common::files_under(&env.repo.join("packs")) {
        std::fs::remove_file(pack).expect("remove pack");
    }
    let target = env.path("restored.img");
    let out = env.run(&[
        "restore",
        &ids[0],
        "--target",
        target.to_str().expect("path"),
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert_ne!(out.status.code(), Some(101), "panicked");
    assert!(!target.exists(), "a failed restore left its target behind");
}

#[test]
fn the_empty_id_prefix_matches_nothing() {
    let (env, _) = repository_with_backups();
    let target = env.path("restored.img");
    let target = target.to_str().expect("path");
    for args in [
        vec!["show", ""],
        vec!["show", " "],
        vec!["restore", "", "--target", target],
        vec!["verify", ""],
        vec!["protect", ""],
    ] {
        let out = env.run(&args);
        expect_failure(&out, 2, "empty backup id");
    }
    let image = env.path("disk.img");
    let out = env.run(&[
        "backup",
        image.to_str().expect("path"),
        "--volume",
        "a",
        "--parent",
        "",
    ]);
    expect_failure(&out, 2, "empty backup id");
    assert!(!std::path::Path::new(target).exists());
}

#[test]
fn fifo_sockets_and_directories_are_refused_as_sources_and_targets() {
    let (env, ids) = repository_with_backups();
    let fifo = env.path("fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let fifo = fifo.to_str().expect("path");
    // Nothing ever writes to the FIFO: opening it for reading would wait forever.
    let out = env.run(&["backup", fifo, "--volume", "a"]);
    let stderr = expect_failure(&out, 2, "is a FIFO");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let out = env.run(&["restore", &ids[0], "--target", fifo]);
    expect_failure(&out, 2, "is a FIFO");

    let dir = env.dir.path().to_str().expect("path");
    let out = env.run(&["backup", dir, "--volume", "a"]);
    expect_failure(&out, 2, "is a directory");
    let out = env.run(&["backup", "/dev/null", "--volume", "a"]);
    expect_failure(&out, 2, "is a character device");
    assert_eq!(backup_ids(&env), ids);
}

#[test]
fn blank_and_control_character_volume_names_are_refused() {
    let (env, ids) = repository_with_backups();
    let image = env.path("disk.img");
    let image = image.to_str().expect("path");
    for name in ["", " ", "\t", "a\nb", "\u{1b}[2Jx", "nul\u{0}"] {
        if name.contains('\0') {
            continue; // cannot be an argument at all
        }
        let out = env.run(&["backup", image, "--volume", name]);
        expect_failure(&out, 2, "volume name");
        for command in [
            vec!["backups", "--volume", name],
            vec!["forget", "--volume", name, "--keep-last", "1"],
            vec!["restore", "latest", "--volume", name, "--target", "x"],
        ] {
            let out = env.run(&command);
            expect_failure(&out, 2, "volume name");
        }
    }
    assert_eq!(backup_ids(&env), ids);
    // A name with inner spaces is fine and shown as it is.
    env.ok(&["backup", image, "--volume", "my volume"]);
    let listing = env.ok(&["backups"]);
    assert!(listing.contains(" my volume "), "{listing}");
}

/// A volume name with an escape sequence and a line break, written into a plaintext
/// repository's manifest as someone with write access to the store could, is never printed
/// raw: it is shown escaped (or the manifest is refused).
#[test]
fn volume_names_read_from_a_repository_are_shown_escaped() {
    let env = Env::new();
    env.ok(&["init", "--insecure-no-encryption"]);
    let image = env.path("disk.img");
    make_image(&image, 1 << 20, &[(0, 64 << 10)], 5);
    env.ok(&["backup", image.to_str().expect("path"), "--volume", "v"]);
    let manifests = common::files_under(&env.repo.join("backups"));
    assert_eq!(manifests.len(), 1);
    let text = std::fs::read_to_string(&manifests[0]).expect("plaintext manifest");
    let forged = text.replacen(
        "\"volume\":\"v\"",
        "\"volume\":\"v\\u001b[2J\\nforged line\"",
        1,
    );
    assert_ne!(forged, text, "the manifest names its volume");
    std::fs::write(&manifests[0], forged).expect("write manifest");
    let id = manifests[0]
        .file_name()
        .and_then(|n| n.to_str())
        .expect("id")
        .to_string();
    let target = env.path("restored.img");
    let mut shown_escaped = false;
    for args in [
        vec!["backups"],
        vec!["show", &id],
        vec!["forget", "--keep-last", "1", "--dry-run"],
        vec!["restore", &id, "--target", target.to_str().expect("path")],
        vec!["verify"],
    ] {
        let out = env.run(&args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !text.contains('\u{1b}'),
            "{args:?} printed a raw escape: {text:?}"
        );
        assert!(
            !text.lines().any(|l| l.starts_with("forged line")),
            "{args:?} printed a forged line: {text:?}"
        );
        shown_escaped |= text.contains("\\u{1b}[2J\\nforged line");
    }
    // Unless the repository refuses the edited manifest outright, the name appears escaped.
    let listing = env.run(&["backups"]);
    if listing.status.success() {
        assert!(shown_escaped, "the name is shown escaped somewhere");
    }
}

/// Values that broke parsers before, or sit on a boundary.
const HOSTILE_VALUES: &[&str] = &[
    "",
    " ",
    "0",
    "-1",
    "=",
    "=x",
    "\n",
    "\u{1b}[2J",
    "99999999999d",
    "99999999999999999999",
    "18446744073709551615",
    "18446744073709551615T",
    "9223372036854775807s9223372036854775807s",
    "4294967296",
    "1e308%",
    "NaN%",
    "-0%",
    "+99:99",
    "latest",
    "é",
];

/// Every flag that parses a value, against every hostile value: none panics.
#[test]
fn no_hostile_value_of_any_flag_panics() {
    for (command, flag) in FLAGS {
        for value in HOSTILE_VALUES {
            if let Err(e) = run_flag(command, flag, value) {
                panic!("{e}");
            }
        }
    }
}

/// Flag values: the interesting shapes (empty, signs, huge numbers, units, separators,
/// control characters) mixed at random.
fn flag_value() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "",
        "0",
        "1",
        "-1",
        "+",
        "%",
        "=",
        ":",
        " ",
        "\n",
        "\u{1b}",
        "é",
        "99999999999999999999",
        "18446744073709551615",
        "9223372036854775807",
        "4294967296",
        "d",
        "h",
        "m",
        "s",
        "w",
        "y",
        "K",
        "M",
        "G",
        "T",
        "KiB",
        "100%",
        "0.5",
        "1e308",
        "NaN",
        "inf",
        "+02:00",
        "-99:99",
        "Z",
        "latest",
        "none",
        "x=y",
    ]);
    prop::collection::vec(pieces, 0..5).prop_map(|p| p.concat())
}

/// Every flag that parses a value, with the command it belongs to.
const FLAGS: &[(&str, &str)] = &[
    ("forget", "--keep-last"),
    ("forget", "--keep-hourly"),
    ("forget", "--keep-daily"),
    ("forget", "--keep-weekly"),
    ("forget", "--keep-monthly"),
    ("forget", "--keep-yearly"),
    ("forget", "--keep-within"),
    ("forget", "--keep-tag"),
    ("forget", "--timezone-offset"),
    ("forget", "--max-unused"),
    ("forget", "--grace"),
    ("prune", "--max-unused"),
    ("prune", "--grace"),
    ("verify", "--read-data-subset"),
    ("restore", "--concurrency"),
    ("backup", "--upload-concurrency"),
    ("backup", "--tag"),
    ("backup", "--volume"),
    ("backup", "--parent"),
    ("backup", "--changed-ranges-text"),
    ("init", "--chunk-size"),
    ("init", "--kdf-passes"),
];

fn flag() -> impl Strategy<Value = (&'static str, &'static str)> {
    prop::sample::select(FLAGS)
}

/// Runs `command` with `flag=value` against the shared repository (a flag named
/// `--changed-ranges-text` writes the value to a ranges file and passes that). Forget and prune
/// run dry. Fails when s3mover panics or dies of a signal.
fn run_flag(command: &str, flag: &str, value: &str) -> Result<(), TestCaseError> {
    let env = shared_env();
    let image = env.path("disk.img");
    let image = image.to_str().expect("path").to_string();
    let ranges = env.path("ranges.json");
    let target = env.path("fuzz-target.img");
    let _ = std::fs::remove_file(&target);
    let fresh = env.path("fresh-repo");
    let _ = std::fs::remove_dir_all(&fresh);
    let mut args: Vec<String> = Vec::new();
    let (flag, value) = if flag == "--changed-ranges-text" {
        std::fs::write(&ranges, value).expect("write ranges");
        (
            "--changed-ranges",
            ranges.to_str().expect("path").to_string(),
        )
    } else {
        (flag, value.to_string())
    };
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match command {
        "forget" => args.extend(words(&["forget", "--dry-run", "--keep-last", "1"])),
        "prune" => args.extend(words(&["prune", "--dry-run"])),
        "verify" => args.push("verify".into()),
        "restore" => {
            args.extend(words(&["restore", "latest", "--volume", "a", "--target"]));
            args.push(target.to_str().expect("path").into());
        }
        "backup" => {
            args.extend(words(&["backup", &image, "--volume", "fuzz"]));
        }
        _ => {
            // Key derivation kept small unless it is the flag under test.
            args.extend(words(&["--repo", fresh.to_str().expect("path")]));
            args.extend(words(&["init", "--kdf-memory", "8M"]));
        }
    }
    args.push(format!("{flag}={value}"));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.run(&refs);
    let stderr = String::from_utf8_lossy(&out.stderr);
    prop_assert_ne!(
        out.status.code(),
        Some(101),
        "{:?} panicked: {}",
        refs,
        stderr
    );
    prop_assert!(
        !stderr.contains("panicked"),
        "{:?} panicked: {}",
        refs,
        stderr
    );
    prop_assert!(out.status.code().is_some(), "{:?} died of a signal", refs);
    Ok(())
}

proptest! {
    // Each case runs the binary (some milliseconds); 160 cases keep the run short in CI, and
    // S3MOVER_FUZZ_CASES sets another number.
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// No flag value built from hostile pieces makes s3mover panic (exit 101).
    #[test]
    fn no_flag_value_panics((command, flag) in flag(), value in flag_value()) {
        run_flag(command, flag, &value)?;
    }
}

fn fuzz_cases() -> u32 {
    std::env::var("S3MOVER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(160)
}

/// One repository for all fuzz cases (made once; the cases only read it or dry-run).
fn shared_env() -> &'static Env {
    static ENV: std::sync::OnceLock<Env> = std::sync::OnceLock::new();
    ENV.get_or_init(|| repository_with_backups().0)
}
