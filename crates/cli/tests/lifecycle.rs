//! Repository lifecycle through the real binary, each command a separate process: concurrent
//! backups with forget and prune running beside them, prune killed with SIGKILL at random
//! points, and a flipped byte in a pack that verify reports, quarantines and the next backup
//! heals.
//!
//! The stress test runs 20 rounds of 3 volumes in CI. The full form is
//! `S3MOVER_STRESS_ROUNDS=200 S3MOVER_STRESS_VOLUMES=6 cargo test -p s3mover --test lifecycle -- stress`.
//! Prune runs with `--grace 0s` so it deletes at once; that is outside the time-gated argument
//! of docs/format.md (backups finish within the grace), so a backup may be withdrawn by its
//! post-commit check ("rerun the backup") — the test then reruns it — but no committed backup
//! may ever lose data.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use rand::{Rng, SeedableRng};

const CHUNK: usize = 64 * 1024;

struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let repo = Repo {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        let out = repo.run(&["init", "--insecure-no-encryption"]);
        assert!(out.status.success(), "init: {}", stderr(&out));
        repo
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_s3mover"));
        c.args(args)
            .env("S3MOVER_REPO", self.path("repo"))
            .env("S3MOVER_PASSWORD", "unused")
            .env_remove("S3MOVER_PASSWORD_FILE")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run s3mover")
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn s3mover")
    }

    /// Backs up `image` as `volume`, rerunning when the post-commit check withdrew it.
    fn backup(&self, image: &Path, volume: &str) -> String {
        for _ in 0..20 {
            let out = self.run(&[
                "backup",
                image.to_str().expect("utf-8 path"),
                "--volume",
                volume,
                "-o",
                "json",
            ]);
            if let Some(id) = backup_id(&out) {
                return id;
            }
            assert!(
                retryable(&out),
                "backup of {volume} failed: {}",
                stderr(&out)
            );
        }
        let out = self.run(&[
            "backup",
            image.to_str().expect("utf-8 path"),
            "--volume",
            volume,
        ]);
        panic!(
            "backup of {volume} withdrawn 20 times in a row: {}",
            stderr(&out)
        );
    }

    fn backup_ids(&self) -> Vec<String> {
        let out = self.run(&["backups", "-o", "json"]);
        assert!(out.status.success(), "backups: {}", stderr(&out));
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        list.as_array()
            .expect("array")
            .iter()
            .filter_map(|b| b["id"].as_str().map(str::to_string))
            .collect()
    }

    fn restore_equals(&self, id: &str, expected: &[u8]) {
        let target = self.path(&format!("restore-{id}.img"));
        let _ = std::fs::remove_file(&target);
        let out = self.run(&["restore", id, "--target", target.to_str().expect("utf-8")]);
        assert!(out.status.success(), "restore {id}: {}", stderr(&out));
        let restored = std::fs::read(&target).expect("read restored");
        assert!(restored == expected, "restore of {id} is not byte-exact");
        std::fs::remove_file(&target).expect("remove restored");
    }

    fn verify_all(&self) {
        let out = self.run(&["verify", "--read-data"]);
        assert!(
            out.status.success(),
            "verify --read-data: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
        let out = self.run(&["check"]);
        assert!(out.status.success(), "check: {}", stderr(&out));
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn backup_id(out: &Output) -> Option<String> {
    if !out.status.success() {
        return None;
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    report["id"].as_str().map(str::to_string)
}

/// Failures a concurrent prune may cause and that a rerun fixes.
fn retryable(out: &Output) -> bool {
    let text = stderr(out);
    text.contains("rerun the backup")
        || text.contains("not found")
        || text.contains("in no pack of the repository index")
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Rewrites a few random chunks of an image (and sometimes zeroes one).
fn mutate(image: &Path, rng: &mut impl Rng) -> Vec<u8> {
    let mut data = std::fs::read(image).expect("read image");
    let chunks = data.len() / CHUNK;
    for _ in 0..rng.gen_range(1..4) {
        let c = rng.gen_range(0..chunks);
        let fill: u8 = rng.gen();
        let slice = &mut data[c * CHUNK..(c + 1) * CHUNK];
        if fill.is_multiple_of(5) {
            slice.fill(0);
        } else {
            rng.fill(slice);
        }
    }
    std::fs::write(image, &data).expect("write image");
    data
}

fn new_image(path: &Path, chunks: usize, rng: &mut impl Rng) -> Vec<u8> {
    let mut data = vec![0u8; chunks * CHUNK];
    rng.fill(&mut data[..]);
    std::fs::write(path, &data).expect("write image");
    data
}

#[test]
fn stress_concurrent_backups_forget_and_prune() {
    let rounds = env_number("S3MOVER_STRESS_ROUNDS", 20);
    let volumes = env_number("S3MOVER_STRESS_VOLUMES", 3);
    let repo = Repo::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let images: Vec<PathBuf> = (0..volumes)
        .map(|v| repo.path(&format!("vol{v}.img")))
        .collect();
    for image in &images {
        new_image(image, 16, &mut rng);
    }
    let mut expected: HashMap<String, Vec<u8>> = HashMap::new();
    let mut deleted = 0u64;
    for round in 0..rounds {
        let contents: Vec<Vec<u8>> = images.iter().map(|i| mutate(i, &mut rng)).collect();
        // Maintenance starts first and runs while the backups do.
        let forget = repo.spawn(&["forget", "--keep-last", "2", "--keep-tag", "keep"]);
        let prune = repo.spawn(&["prune", "--grace", "0s", "--max-unused", "0%", "-o", "json"]);
        let ids: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = images
                .iter()
                .enumerate()
                .map(|(v, image)| {
                    let repo = &repo;
                    scope.spawn(move || repo.backup(image, &format!("vol{v}")))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("backup thread"))
                .collect()
        });
        for (id, content) in ids.into_iter().zip(contents) {
            expected.insert(id, content);
        }
        let forget = forget.wait_with_output().expect("forget");
        assert!(
            forget.status.success(),
            "round {round} forget: {}",
            stderr(&forget)
        );
        let prune = prune.wait_with_output().expect("prune");
        assert!(
            prune.status.success() || stderr(&prune).contains("another prune is running"),
            "round {round} prune: {}",
            stderr(&prune)
        );
        if let Ok(report) = serde_json::from_slice::<serde_json::Value>(&prune.stdout) {
            deleted += report["deletedPacks"].as_u64().unwrap_or(0)
                + report["repackedPacks"].as_u64().unwrap_or(0);
        }
    }
    assert!(deleted > 0, "prune removed packs while backups ran");
    let out = repo.run(&["prune", "--grace", "0s", "--max-unused", "0%"]);
    assert!(out.status.success(), "final prune: {}", stderr(&out));
    repo.verify_all();
    let remaining = repo.backup_ids();
    assert!(remaining.len() >= volumes, "every volume keeps backups");
    for id in &remaining {
        repo.restore_equals(id, &expected[id]);
    }
}

#[test]
fn prune_killed_at_random_points_then_rerun() {
    let repo = Repo::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut expected: HashMap<String, Vec<u8>> = HashMap::new();
    for round in 0..6 {
        let image = repo.path("kill.img");
        let content = if round == 0 {
            new_image(&image, 32, &mut rng)
        } else {
            mutate(&image, &mut rng)
        };
        let id = repo.backup(&image, "kill");
        expected.insert(id, content);
        // Kill a prune at a random moment, then rerun it; repeat.
        let mut child = repo.spawn(&["prune", "--grace", "0s", "--max-unused", "0%"]);
        std::thread::sleep(std::time::Duration::from_millis(rng.gen_range(0..120)));
        let _ = child.kill();
        let _ = child.wait();
        let out = repo.run(&["forget", "--keep-last", "3"]);
        assert!(out.status.success(), "forget: {}", stderr(&out));
        let mut child = repo.spawn(&["prune", "--grace", "0s", "--max-unused", "0%"]);
        std::thread::sleep(std::time::Duration::from_millis(rng.gen_range(0..120)));
        let _ = child.kill();
        let _ = child.wait();
        repo.verify_all();
    }
    let out = repo.run(&["prune", "--grace", "0s", "--max-unused", "0%"]);
    assert!(out.status.success(), "rerun prune: {}", stderr(&out));
    repo.verify_all();
    let remaining = repo.backup_ids();
    assert_eq!(remaining.len(), 3);
    for id in &remaining {
        repo.restore_equals(id, &expected[id]);
    }

    // Killed prunes left copies: indexed ones (a copy made, the old pack not yet deleted),
    // packs not indexed yet and half-written uploads, the last two kept for the minimum age
    // of a backup's uploads. An hour later a prune leaves one copy of each chunk in use.
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let packs = walk(&repo.path("repo/packs"));
    for pack in &packs {
        let file = std::fs::File::options()
            .write(true)
            .open(pack)
            .expect("open pack");
        file.set_modified(hour_ago).expect("age pack");
    }
    let out = repo.run(&["prune", "--grace", "0s", "--max-unused", "0%"]);
    assert!(out.status.success(), "last prune: {}", stderr(&out));
    let distinct: std::collections::HashSet<&[u8]> = remaining
        .iter()
        .flat_map(|id| expected[id].chunks(CHUNK))
        .filter(|chunk| chunk.iter().any(|b| *b != 0))
        .collect();
    let live = (distinct.len() * CHUNK) as u64;
    let stored: u64 = walk(&repo.path("repo/packs"))
        .iter()
        .map(|p| std::fs::metadata(p).expect("stat").len())
        .sum();
    assert!(
        stored < live + live / 20 + (64 << 10),
        "{stored} bytes of packs hold {live} bytes of chunks in use"
    );
    for id in &remaining {
        repo.restore_equals(id, &expected[id]);
    }
}

#[test]
fn flipped_byte_is_reported_quarantined_and_healed() {
    let repo = Repo::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let image = repo.path("flip.img");
    let content = new_image(&image, 8, &mut rng);
    let first = repo.backup(&image, "flip");

    // Flip one byte inside the first blob of the (only) data pack: the largest pack.
    let mut packs: Vec<(u64, PathBuf)> = walk(&repo.path("repo/packs"))
        .into_iter()
        .map(|p| (std::fs::metadata(&p).expect("stat").len(), p))
        .collect();
    packs.sort();
    let (_, pack) = packs.pop().expect("a data pack");
    let mut bytes = std::fs::read(&pack).expect("read pack");
    bytes[100] ^= 0x01;
    std::fs::write(&pack, &bytes).expect("write pack");

    let out = repo.run(&["verify", "--read-data", "-o", "json"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "verify must report: {}",
        stderr(&out)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let problems = report["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "one damaged chunk: {report}");
    let uses = problems[0]["uses"].as_array().expect("uses");
    assert_eq!(uses[0]["backup"], first.as_str());
    assert_eq!(uses[0]["volume"], "flip");
    assert_eq!(uses[0]["offset"], 0, "the first blob is slot 0");
    assert_eq!(report["quarantinedChunks"], 1);

    // The next backup does not build on the failed one and uploads the chunk again.
    let out = repo.run(&[
        "backup",
        image.to_str().expect("utf-8"),
        "--volume",
        "flip",
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "backup: {}", stderr(&out));
    let healed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let second = healed["id"].as_str().expect("id").to_string();
    assert!(
        healed["parent"].is_null(),
        "a failed backup is never a base"
    );
    assert!(
        healed["chunksNew"].as_u64().unwrap_or(0) >= 1,
        "chunk re-uploaded"
    );
    repo.restore_equals(&second, &content);
    let out = repo.run(&["verify", &second, "--read-data"]);
    assert!(
        out.status.success(),
        "new backup verifies: {}",
        stderr(&out)
    );
    // The old backup's chunk is available again through its new copy.
    repo.restore_equals(&first, &content);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
