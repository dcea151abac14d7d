//! Shared helpers for the engine's integration tests on local repositories: a runtime, a new
//! encrypted repository, a backup with the usual options, and a byte-exact restore check.

#![allow(dead_code)]

use std::os::unix::fs::FileExt;
use std::path::Path;

use s3mover_engine::backup::{self, BackupOptions, BackupReport, ChangeInput, ParentChoice};
use s3mover_engine::manifest::Manifest;
use s3mover_engine::restore::{self, RestoreOptions};
use s3mover_engine::storage::{open_store, StoreOptions};
use s3mover_engine::{InitOptions, Repository};

/// The password of every test repository.
pub const PASSWORD: &str = "pw";

/// A two-thread runtime, like the CLI's on a small machine.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Incompressible, distinct content of `len` bytes for block `block` of generation `seed`
/// (splitmix64).
pub fn block_data(seed: u64, block: u64, len: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x1_0000_0001).wrapping_add(block);
    let mut out = Vec::with_capacity(len as usize + 8);
    while out.len() < len as usize {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len as usize);
    out
}

/// Makes `path` an image of `size` bytes (keeping what it holds) and writes the given blocks
/// of `block_size` bytes into it.
pub fn write_blocks(
    path: &Path,
    size: u64,
    block_size: u64,
    blocks: impl Iterator<Item = (u64, Vec<u8>)>,
) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .expect("image");
    file.set_len(size).expect("size");
    for (block, data) in blocks {
        file.write_all_at(&data, block * block_size).expect("write");
    }
    file.sync_all().expect("sync");
}

/// A new encrypted repository in `dir` with the given chunk and data-pack sizes.
pub async fn new_repo(dir: &Path, chunk_size: u32, pack_size: u32) -> Repository {
    init_repo(
        dir,
        InitOptions {
            chunk_size,
            password: Some(zeroize::Zeroizing::new(PASSWORD.to_string())),
            pack_size,
            ..InitOptions::default()
        },
    )
    .await
}

/// A new repository in `dir` (made if missing) with `options`.
pub async fn init_repo(dir: &Path, options: InitOptions) -> Repository {
    let store = open_store(
        &dir.display().to_string(),
        &StoreOptions {
            create: true,
            ..StoreOptions::default()
        },
    )
    .expect("store");
    Repository::init(store, options).await.expect("init")
}

/// The usual options of a backup of `source` as `volume`: no tags, no CBT, two uploads.
pub fn backup_options(
    volume: &str,
    source: &Path,
    parent: ParentChoice,
    change: ChangeInput,
) -> BackupOptions {
    BackupOptions {
        volume: volume.into(),
        source: source.to_path_buf(),
        parent,
        change,
        tags: vec![],
        upload_concurrency: Some(2),
        progress: None,
    }
}

/// The usual options of a restore to `target`: overwrite, no assumptions, four readers.
pub fn restore_options(target: &Path) -> RestoreOptions {
    RestoreOptions {
        target: target.to_path_buf(),
        assume_zeroed: false,
        overwrite: true,
        concurrency: 4,
        force: false,
        progress: None,
    }
}

/// Backs up `image` as `volume` with the change source found on its own (holes or a full
/// read compared with the parent).
pub async fn backup_image(
    repo: &Repository,
    image: &Path,
    volume: &str,
    parent: ParentChoice,
) -> s3mover_engine::Result<BackupReport> {
    backup::backup(
        repo,
        backup_options(volume, image, parent, ChangeInput::Auto),
    )
    .await
}

/// Restores `manifest` to a new file at `target` and checks it equals `expected`.
pub async fn assert_restores(
    repo: &Repository,
    manifest: &Manifest,
    target: &Path,
    expected: &[u8],
) {
    let _ = std::fs::remove_file(target);
    restore::restore(repo, manifest, restore_options(target))
        .await
        .expect("restore");
    let restored = std::fs::read(target).expect("read restored");
    assert!(
        restored == expected,
        "backup {} restores byte-exact",
        manifest.id
    );
}
