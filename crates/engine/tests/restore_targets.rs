//! Restore targets written with direct I/O: volumes whose size is not a multiple of 4096 (the
//! last chunk's tail cannot be written directly) and targets on tmpfs, restored byte-exact.

mod local_support;

use std::os::unix::fs::FileExt;
use std::path::Path;

use local_support::runtime;
use s3mover_engine::backup::ParentChoice;
use s3mover_engine::manifest::Manifest;
use s3mover_engine::restore;
use s3mover_engine::{InitOptions, Repository};

/// 1 MiB + 1000 bytes.
const ODD_SIZE: u64 = (1 << 20) + 1000;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed) ^ (i >> 11) as u8 | 1)
        .collect()
}

/// A volume of `size` bytes: data at the start, a run in the middle, a zero gap and data up to
/// the last byte. Returns its content.
fn make_volume(path: &Path, size: u64) -> Vec<u8> {
    let file = std::fs::File::create(path).expect("volume");
    file.set_len(size).expect("size");
    let size = size as usize;
    let mut content = vec![0u8; size];
    for (offset, len, seed) in [
        (0, 12_288, 1),
        (300_000, 200_000, 2),
        (size - 70_000, 70_000, 3),
    ] {
        let data = pattern(len, seed);
        file.write_all_at(&data, offset as u64).expect("write");
        content[offset..offset + len].copy_from_slice(&data);
    }
    file.sync_all().expect("sync");
    content
}

async fn backup_of(dir: &Path, chunk_size: u32, content_path: &Path) -> (Repository, Manifest) {
    let repo = local_support::init_repo(
        &dir.join(format!("repo-{chunk_size}")),
        InitOptions {
            chunk_size,
            ..InitOptions::default()
        },
    )
    .await;
    let report = local_support::backup_image(&repo, content_path, "odd", ParentChoice::None)
        .await
        .expect("backup");
    (repo, report.manifest)
}

async fn restore_and_compare(repo: &Repository, manifest: &Manifest, target: &Path, want: &[u8]) {
    let report = restore::restore(repo, manifest, local_support::restore_options(target))
        .await
        .expect("restore");
    assert_eq!(report.size_bytes, want.len() as u64);
    let got = std::fs::read(target).expect("read restored");
    assert_eq!(
        got.len(),
        want.len(),
        "restored size of {}",
        target.display()
    );
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{} differs from the source at byte {at}", target.display());
    }
}

#[test]
fn volumes_of_odd_size_restore_byte_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("odd.img");
    let content = make_volume(&source, ODD_SIZE);
    runtime().block_on(async {
        for chunk_size in [4096, 65536] {
            let (repo, manifest) = backup_of(dir.path(), chunk_size, &source).await;
            assert_eq!(manifest.size_bytes, ODD_SIZE);
            let target = dir.path().join(format!("restored-{chunk_size}.img"));
            restore_and_compare(&repo, &manifest, &target, &content).await;
            // Over an existing file full of other bytes.
            std::fs::write(&target, vec![0xa5u8; 3 << 20]).expect("garbage");
            restore_and_compare(&repo, &manifest, &target, &content).await;
        }
    });
}

/// tmpfs refuses O_DIRECT before Linux 6.6 and accepts it since; restores work either way.
#[test]
fn restores_to_tmpfs() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("SKIPPED restores_to_tmpfs: /dev/shm does not exist");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("odd.img");
    let content = make_volume(&source, ODD_SIZE);
    let target_dir = tempfile::tempdir_in(shm).expect("tempdir on /dev/shm");
    runtime().block_on(async {
        let (repo, manifest) = backup_of(dir.path(), 65536, &source).await;
        let target = target_dir.path().join("restored.img");
        restore_and_compare(&repo, &manifest, &target, &content).await;
    });
}
