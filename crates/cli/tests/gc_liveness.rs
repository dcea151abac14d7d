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

#[allow(dead_code)]
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
