//! Changed blocks between two snapshot images, on a real reflink filesystem (XFS, loop-mounted)
//! and on the plain temporary directory: the answers must be the same block for block, and on
//! XFS the blocks the snapshots share must be known without being compared.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use s3mover_cbt_testserver::extents::shared_ranges;
use s3mover_cbt_testserver::image::walk_delta;

const BS: u64 = 4096;
const SIZE: u64 = 64 << 20;

/// Deterministic bytes (xorshift), different for each `seed`.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn reflink_copy(src: &Path, dst: &Path) {
    let out = Command::new("cp")
        .args(["--reflink=auto", "--sparse=always"])
        .arg(src)
        .arg(dst)
        .output()
        .expect("cp");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Volume → snapshot a → 300 scattered 4 KiB writes (some twice, one at the very end) →
/// snapshot b. Returns the written block numbers and the delta the walk found.
fn scenario(dir: &Path) -> (Vec<u64>, Vec<u64>) {
    let vol = dir.join("vol.img");
    let f = File::create(&vol).unwrap();
    for (i, off) in (0..SIZE).step_by(1 << 20).enumerate() {
        f.write_all_at(&bytes(i as u64, 1 << 20), off).unwrap();
    }
    f.sync_all().unwrap();
    reflink_copy(&vol, &dir.join("a.snap"));
    let mut written: Vec<u64> = bytes(99, 300 * 8)
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()) % (SIZE / BS))
        .chain([SIZE / BS - 1, 7, 7])
        .collect();
    let f = OpenOptions::new().write(true).open(&vol).unwrap();
    for (i, b) in written.iter().enumerate() {
        f.write_all_at(&bytes(1000 + i as u64, BS as usize), b * BS)
            .unwrap();
    }
    f.sync_all().unwrap();
    reflink_copy(&vol, &dir.join("b.snap"));
    written.sort_unstable();
    written.dedup();
    let mut found = Vec::new();
    walk_delta(&dir.join("a.snap"), &dir.join("b.snap"), BS, 0, &mut |b| {
        found.push(b);
        true
    })
    .unwrap();
    (written, found)
}

fn shared_bytes(dir: &Path) -> u64 {
    let a = File::open(dir.join("a.snap")).unwrap();
    let b = File::open(dir.join("b.snap")).unwrap();
    shared_ranges(&a, &b)
        .unwrap()
        .iter()
        .map(|(s, e)| e - s)
        .sum()
}

#[test]
fn on_a_reflink_filesystem_shared_blocks_are_skipped_and_the_delta_is_exact() {
    let Some(fs) = s3mover_testkit::reflink_or_skip(
        "on_a_reflink_filesystem_shared_blocks_are_skipped_and_the_delta_is_exact",
        512 << 20,
    ) else {
        return;
    };
    let (written, found) = scenario(fs.path());
    assert_eq!(found, written);
    let shared = shared_bytes(fs.path());
    // All but the rewritten blocks (and what the filesystem copied around them) is shared.
    eprintln!(
        "shared: {shared} of {SIZE} bytes, {} blocks written",
        written.len()
    );
    assert!(
        shared >= SIZE / 10 * 9,
        "only {shared} of {SIZE} bytes shared"
    );
    assert!(shared <= SIZE - written.len() as u64 * BS, "{shared}");
}

#[test]
fn without_reflinks_nothing_is_shared_and_the_delta_is_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (written, found) = scenario(dir.path());
    assert_eq!(found, written);
    // Whatever the temporary directory's filesystem shares, never a rewritten block.
    assert!(shared_bytes(dir.path()) <= SIZE - written.len() as u64 * BS);
}
