//! Property tests of the engine: random volumes and random change sets, many rounds of
//! backup → incremental → restore, each restore byte-identical to the source at that point.

mod local_support;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use local_support::runtime;
use proptest::prelude::*;
use s3mover_engine::backup::{self, BackupOptions, ChangeInput, ParentChoice};
use s3mover_engine::restore;
use s3mover_engine::{InitOptions, Repository};
use s3mover_ranges::{BlockMetadataType, BlockRange, RangesFileWriter};

const BLOCK: u64 = 4096;

/// One round of changes: (block index, fill pattern; 0 = zeros).
#[derive(Debug, Clone)]
struct Round {
    writes: Vec<(u64, u8)>,
    mode: u8,
}

async fn new_repo(dir: &Path, chunk_size: u32, encrypted: bool) -> Repository {
    local_support::init_repo(
        dir,
        InitOptions {
            chunk_size,
            password: encrypted.then(|| zeroize::Zeroizing::new(local_support::PASSWORD.into())),
            ..InitOptions::default()
        },
    )
    .await
}

fn write_ranges(path: &Path, size: u64, blocks: &std::collections::BTreeSet<u64>) {
    let file = std::fs::File::create(path).expect("ranges file");
    let mut writer =
        RangesFileWriter::new(file, BlockMetadataType::FixedLength, size).expect("writer");
    for block in blocks {
        writer
            .push(BlockRange::new(block * BLOCK, BLOCK))
            .expect("push");
    }
    writer.finish().expect("finish");
}

fn options(source: &Path, parent: ParentChoice, change: ChangeInput) -> BackupOptions {
    local_support::backup_options("prop", source, parent, change)
}

async fn restore_to(
    repo: &Repository,
    manifest: &s3mover_engine::manifest::Manifest,
    target: &PathBuf,
) -> Vec<u8> {
    let _ = std::fs::remove_file(target);
    restore::restore(repo, manifest, local_support::restore_options(target))
        .await
        .expect("restore");
    std::fs::read(target).expect("read restored")
}

fn run_rounds(blocks: u64, chunk_size: u32, encrypted: bool, rounds: Vec<Round>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("volume.img");
    let size = blocks * BLOCK;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&image)
        .expect("image");
    file.set_len(size).expect("size");
    let rt = runtime();
    rt.block_on(async {
        let repo = new_repo(&dir.path().join("repo"), chunk_size, encrypted).await;
        let mut history = Vec::new();
        for (n, round) in rounds.into_iter().enumerate() {
            let mut changed = std::collections::BTreeSet::new();
            for (block, fill) in &round.writes {
                let block = block % blocks;
                let data: Vec<u8> = (0..BLOCK)
                    .map(|i| {
                        if *fill == 0 {
                            0
                        } else {
                            fill.wrapping_add((i % 251) as u8)
                        }
                    })
                    .collect();
                file.write_all_at(&data, block * BLOCK).expect("write");
                changed.insert(block);
            }
            file.sync_all().expect("sync");
            let ranges = dir.path().join(format!("ranges-{n}.json"));
            write_ranges(&ranges, size, &changed);
            let change = match (n, round.mode % 4) {
                (0, _) | (_, 0) => ChangeInput::Auto,
                (_, 1) | (_, 2) => ChangeInput::ChangedRangesFile(ranges),
                _ => ChangeInput::Auto,
            };
            let parent = if round.mode % 4 == 3 {
                ParentChoice::None
            } else {
                ParentChoice::Latest
            };
            let report = backup::backup(&repo, options(&image, parent, change))
                .await
                .expect("backup");
            history.push((report.manifest, std::fs::read(&image).expect("read image")));
        }
        // Every backup restores on its own to exactly the content it was taken of.
        for (i, (manifest, expected)) in history.iter().enumerate() {
            let restored = restore_to(
                &repo,
                manifest,
                &dir.path().join(format!("restored-{i}.img")),
            )
            .await;
            assert_eq!(
                restored.len(),
                expected.len(),
                "restored size of backup {i}"
            );
            assert!(
                restored == *expected,
                "backup {i} ({:?}) restored different bytes",
                manifest.change_source
            );
        }
    });
}

fn round_strategy() -> impl Strategy<Value = Round> {
    (prop::collection::vec((0u64..10_000, 0u8..4), 0..40), 0u8..4).prop_map(|(writes, mode)| {
        Round {
            writes: writes
                .into_iter()
                .map(|(b, f)| (b, f.wrapping_mul(67)))
                .collect(),
            mode,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    #[test]
    fn every_backup_restores_byte_exact(
        blocks in 1u64..700,
        chunk_pow in 12u32..16,
        rounds in prop::collection::vec(round_strategy(), 1..6),
    ) {
        run_rounds(blocks, 1 << chunk_pow, false, rounds);
    }
}

#[test]
fn encrypted_repository_round_trip_with_many_tree_levels() {
    // 4 KiB chunks and 20000 slots: three tree levels, sparse writes across them.
    let rounds = vec![
        Round {
            writes: (0..300).map(|i| (i * 61, 9)).collect(),
            mode: 0,
        },
        Round {
            writes: (0..50).map(|i| (i * 397 + 5, 200)).collect(),
            mode: 1,
        },
        Round {
            writes: vec![(19_999, 0), (0, 0), (12_345, 7)],
            mode: 2,
        },
    ];
    run_rounds(20_000, 4096, true, rounds);
}
