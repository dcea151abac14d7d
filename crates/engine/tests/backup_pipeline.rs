//! The shape of the backup pipeline: the last data packs are cut smaller, so the uploads the
//! commit waits for are short (and the backup still restores byte-exact); and the source's
//! read-ahead that can start before the repository is unlocked plans exactly what the backup
//! will read.

mod local_support;

use std::path::{Path, PathBuf};

use local_support::runtime;
use s3mover_engine::backup::ParentChoice;
use s3mover_engine::internals::upload::MIN_TAIL_PACK;

const MIB: u64 = 1 << 20;
const CHUNK: u64 = 64 * 1024;
const PACK: u64 = 8 * MIB;
/// Room for a pack's last blob past its target, its sealing and its header.
const SLACK: u64 = CHUNK + 64 * 1024;

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn the_last_packs_of_a_backup_are_smaller_and_it_restores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("vol.img");
    let size = 24 * MIB;
    local_support::write_blocks(
        &image,
        size,
        CHUNK,
        (0..size / CHUNK).map(|b| (b, local_support::block_data(1, b, CHUNK))),
    );
    runtime().block_on(async {
        let repo_dir = dir.path().join("repo");
        let repo = local_support::new_repo(&repo_dir, CHUNK as u32, PACK as u32).await;
        let report = local_support::backup_image(&repo, &image, "vol", ParentChoice::Latest)
            .await
            .expect("backup");

        // Tree pages go to a pack of their own: 4 pages here, smaller than one data chunk.
        let mut data_packs: Vec<u64> = files_under(&repo_dir.join("packs"))
            .iter()
            .map(|p| std::fs::metadata(p).expect("pack").len())
            .filter(|&len| len >= CHUNK)
            .collect();
        data_packs.sort_unstable();
        eprintln!("data pack sizes: {data_packs:?}");
        let total: u64 = data_packs.iter().sum();
        assert!(total >= size, "packs hold {total} bytes of {size}");
        let largest = *data_packs.last().expect("a data pack");
        let smallest = data_packs[0];
        assert!(largest <= PACK + SLACK, "a pack of {largest} bytes");
        assert!(
            smallest <= MIN_TAIL_PACK as u64 + SLACK,
            "the smallest pack has {smallest} bytes: the tail was not cut smaller ({data_packs:?})"
        );
        // Full packs while much is left, then about half of what is left each time, with the
        // last bits in the last pack: 8, 8, 4, 4 MiB here; at most a full-size cut plus
        // log2(8 / 4) + 1.
        assert!(
            data_packs.len() <= 5,
            "{} data packs for {size} bytes: {data_packs:?}",
            data_packs.len()
        );
        assert_eq!(report.manifest.stats.chunks_new, size / CHUNK);

        let bytes = std::fs::read(&image).expect("read image");
        local_support::assert_restores(
            &repo,
            &report.manifest,
            &dir.path().join("out.img"),
            &bytes,
        )
        .await;
    });
}

/// The read-ahead a backup from a ranges file can start before the repository is unlocked:
/// it advises exactly the slots the ranges touch, and nothing for anything it cannot plan.
#[test]
fn prefetch_advises_the_slots_a_ranges_file_touches() {
    use s3mover_engine::backup::{prefetch_ranges, ChangeInput};
    use s3mover_ranges::{BlockMetadataType, BlockRange, RangesFileWriter};

    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("vol.img");
    let size = 16 * CHUNK + 4096;
    local_support::write_blocks(&image, size, 4096, std::iter::empty());
    let ranges = dir.path().join("changes.json");
    let file = std::fs::File::create(&ranges).expect("ranges file");
    let mut writer =
        RangesFileWriter::new(file, BlockMetadataType::VariableLength, size).expect("writer");
    // Slot 1 (part of it), slots 5 and 6 (one range across their border), and the short
    // last slot.
    for (offset, len) in [(CHUNK + 100, 10), (6 * CHUNK - 10, 20), (16 * CHUNK, 4096)] {
        writer.push(BlockRange::new(offset, len)).expect("push");
    }
    writer.finish().expect("finish");

    runtime().block_on(async {
        let changed = ChangeInput::ChangedRangesFile(ranges.clone());
        let advised = prefetch_ranges(&image, &changed, CHUNK)
            .await
            .expect("task");
        assert_eq!(advised, Some(3 * CHUNK + 4096));

        let missing = ChangeInput::ChangedRangesFile(dir.path().join("no-such-file.json"));
        let advised = prefetch_ranges(&image, &missing, CHUNK)
            .await
            .expect("task");
        assert_eq!(advised, None, "an unreadable ranges file advises nothing");

        let advised = prefetch_ranges(&image, &ChangeInput::Auto, CHUNK)
            .await
            .expect("task");
        assert_eq!(
            advised, None,
            "without a ranges file there is nothing to plan"
        );
    });
}
