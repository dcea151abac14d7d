//! Helpers for tests that run the real `s3mover` binary.
#![allow(dead_code)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory with a repository path and the password env.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub password: String,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        Env {
            dir,
            repo,
            password: "test password".into(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs s3mover with the repository and password set.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run s3mover")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_s3mover"));
        cmd.args(args)
            .env("S3MOVER_REPO", &self.repo)
            .env("S3MOVER_PASSWORD", &self.password)
            .env_remove("S3MOVER_PASSWORD_FILE")
            .env_remove("S3MOVER_PASSWORD_COMMAND");
        cmd
    }

    /// Runs and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "s3mover {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and requires JSON output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    pub fn init(&self) {
        self.ok(&["init", "--chunk-size", "64K"]);
    }
}

/// Asserts failure with the given exit code and a stderr containing `needle`; returns stderr.
pub fn expect_failure(out: &Output, code: i32, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "exit code; stderr: {stderr}");
    assert!(
        stderr.to_lowercase().contains(&needle.to_lowercase()),
        "stderr should mention {needle:?}: {stderr}"
    );
    stderr
}

/// Makes a sparse image of `size` bytes with pseudo-random data blocks at the given offsets.
pub fn make_image(path: &Path, size: u64, extents: &[(u64, u64)], seed: u64) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .expect("image");
    file.set_len(size).expect("set_len");
    for (i, &(offset, len)) in extents.iter().enumerate() {
        let data = pseudo_random(len as usize, seed.wrapping_add(i as u64));
        file.write_all_at(&data, offset).expect("write extent");
    }
    file.sync_all().expect("sync");
}

/// Deterministic pseudo-random bytes (xorshift).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `data` at `offset` of a file.
pub fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    file.write_all_at(data, offset).expect("write");
    file.sync_all().expect("sync");
}

/// Writes a ranges file.
pub fn ranges_file(path: &Path, capacity: u64, ranges: &[(u64, u64)]) {
    let entries: Vec<String> = ranges
        .iter()
        .map(|(o, s)| format!("{{\"byteOffset\":{o},\"sizeBytes\":{s}}}"))
        .collect();
    std::fs::write(
        path,
        format!(
            "{{\"blockMetadataType\":\"FIXED_LENGTH\",\"volumeCapacityBytes\":{capacity},\"blockMetadata\":[{}]}}",
            entries.join(",")
        ),
    )
    .expect("write ranges");
}

/// Every file under a directory (recursively).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for entry in entries.flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

/// True when this process can use loop devices; otherwise prints why the caller skips.
pub fn loop_devices_available(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc_geteuid() } == 0;
    let ok = root
        && Path::new("/dev/loop-control").exists()
        && Command::new("losetup").arg("--version").output().is_ok();
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: loop devices are required in CI (root, /dev/loop-control, losetup)");
        }
        eprintln!("SKIPPED {test}: needs root, /dev/loop-control and losetup");
    }
    ok
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// A loop device over a file, detached on drop.
pub struct LoopDevice {
    pub path: PathBuf,
}

impl LoopDevice {
    pub fn attach(file: &Path) -> LoopDevice {
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file)
            .output()
            .expect("losetup");
        assert!(
            out.status.success(),
            "losetup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        LoopDevice {
            path: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
        }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}
