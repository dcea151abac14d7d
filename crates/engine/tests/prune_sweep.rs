//! Prune's two phases one grace period apart: a pending set written by one run is swept by a
//! later one, which removes exactly the blobs dead in both, and keeps blobs that a backup made
//! in between uses again.

mod local_support;

use std::path::Path;
use std::time::Duration;

use s3mover_engine::backup::ParentChoice;
use s3mover_engine::internals::gc::{self, PendingSet};
use s3mover_engine::internals::repo as internal;
use s3mover_engine::manifest::Manifest;
use s3mover_engine::prune::{self, PruneOptions, PruneReport};
use s3mover_engine::retention::{self, KeepPolicy};
use s3mover_engine::{check, Repository};

const BLOCK: u64 = 4096;
const BLOCKS: u64 = 512;
/// Small data packs (about 16 blocks each), so that the volume spans many packs.
const PACK_SIZE: u32 = 64 * 1024;
const GRACE_SECONDS: i64 = 2;

/// Incompressible, distinct content for block `block` of generation `seed`.
fn block_data(seed: u64, block: u64) -> Vec<u8> {
    local_support::block_data(seed, block, BLOCK)
}

fn write_image(path: &Path, blocks: impl Iterator<Item = (u64, Vec<u8>)>) {
    local_support::write_blocks(path, BLOCKS * BLOCK, BLOCK, blocks);
}

/// Blocks rewritten by the incremental: one in four, so every data pack gets dead blobs.
fn rewritten(block: u64) -> bool {
    block % 4 == 1
}

async fn new_repo(dir: &Path) -> Repository {
    local_support::new_repo(dir, BLOCK as u32, PACK_SIZE).await
}

async fn backup(repo: &Repository, image: &Path, volume: &str, parent: ParentChoice) -> Manifest {
    local_support::backup_image(repo, image, volume, parent)
        .await
        .expect("backup")
        .manifest
}

async fn prune_with_grace(repo: &Repository) -> PruneReport {
    prune_with_grace_of(repo, GRACE_SECONDS).await
}

async fn prune_with_grace_of(repo: &Repository, seconds: i64) -> PruneReport {
    prune::prune(
        repo,
        &PruneOptions {
            grace: time::Duration::seconds(seconds),
            ..PruneOptions::default()
        },
    )
    .await
    .expect("prune")
}

/// Waits until a pending set written now is at least one grace period old.
fn wait_for_the_grace() {
    std::thread::sleep(Duration::from_millis(1000 * GRACE_SECONDS as u64 + 1100));
}

async fn forget_all_but_the_newest(repo: &Repository, volume: &str) {
    let policy = KeepPolicy {
        last: Some(1),
        ..KeepPolicy::default()
    };
    let report = retention::forget(repo, Some(volume), &policy, false)
        .await
        .expect("forget");
    assert_eq!(report.removed.len(), 1);
}

async fn removed_sets(repo: &Repository) -> Vec<PendingSet> {
    let mut sets = Vec::new();
    for object in repo.store().list("gc/removed/").await.expect("list") {
        sets.push(
            PendingSet::read(repo, &object.key)
                .await
                .expect("removed set"),
        );
    }
    sets
}

/// The volume before and after the incremental.
fn original(block: u64) -> Vec<u8> {
    block_data(1, block)
}

fn current(block: u64) -> Vec<u8> {
    if rewritten(block) {
        block_data(2, block)
    } else {
        original(block)
    }
}

fn image_bytes(content: impl Fn(u64) -> Vec<u8>) -> Vec<u8> {
    (0..BLOCKS).flat_map(content).collect()
}

#[test]
fn a_pending_set_is_swept_one_grace_period_later_removing_exactly_the_dead_blobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("v.img");
    let rt = local_support::runtime();
    rt.block_on(async {
        let repo = new_repo(&dir.path().join("repo")).await;
        write_image(&image, (0..BLOCKS).map(|b| (b, original(b))));
        backup(&repo, &image, "v", ParentChoice::None).await;
        write_image(
            &image,
            (0..BLOCKS)
                .filter(|b| rewritten(*b))
                .map(|b| (b, current(b))),
        );
        let newest = backup(&repo, &image, "v", ParentChoice::Latest).await;
        forget_all_but_the_newest(&repo, "v").await;
        let before = check::check(&repo).await.expect("check");
        assert!(before.problems.is_empty(), "{:?}", before.problems);

        // Packs younger than the grace are never candidates. An hour's grace, so that a slow
        // machine cannot age the packs past it before this runs.
        assert_eq!(prune_with_grace_of(&repo, 3600).await.pending_packs, 0);
        wait_for_the_grace();
        // Phase 1 only: the dead blobs are found, nothing is removed yet.
        let first = prune_with_grace(&repo).await;
        assert!(first.pending_packs > 0, "{first:?}");
        assert_eq!(first.pending_sets_waiting, 1, "{first:?}");
        assert_eq!((first.deleted_packs, first.repacked_packs), (0, 0));
        assert!(removed_sets(&repo).await.is_empty());

        // One grace period later the set is swept: every data pack is a quarter dead.
        wait_for_the_grace();
        let second = prune_with_grace(&repo).await;
        assert_eq!(second.repacked_packs, 32, "{second:?}");
        assert_eq!(
            second.deleted_packs, 1,
            "the old tree pack goes whole: {second:?}"
        );
        assert!(second.freed_bytes > 0);
        assert_eq!(second.resurrected, 0);

        // The removed set names exactly the overwritten chunks and the old backup's pages.
        let sets = removed_sets(&repo).await;
        assert_eq!(sets.len(), 1);
        let removed = &sets[0].dead;
        let old_chunks: Vec<u64> = (0..BLOCKS)
            .filter(|b| rewritten(*b))
            .map(|b| gc::prefix(&internal::chunk_id(&repo, &original(b))))
            .collect();
        let pages = 4 + 1; // 512 slots: four leaf pages and a root
        assert_eq!(removed.len(), old_chunks.len() + pages);
        for p in &old_chunks {
            assert!(removed.binary_search(p).is_ok(), "old chunk {p:#x} removed");
        }
        for b in 0..BLOCKS {
            let live = gc::prefix(&internal::chunk_id(&repo, &current(b)));
            assert!(removed.binary_search(&live).is_err(), "live chunk {b} kept");
        }

        // The index holds exactly the newest backup's blobs, and it restores.
        let after = check::check(&repo).await.expect("check");
        assert!(after.problems.is_empty(), "{:?}", after.problems);
        assert_eq!(after.blobs_indexed as u64, BLOCKS + pages as u64);
        assert_eq!(
            before.blobs_indexed - after.blobs_indexed,
            old_chunks.len() + pages
        );
        let target = dir.path().join("out.img");
        local_support::assert_restores(&repo, &newest, &target, &image_bytes(current)).await;
    });
}

#[test]
fn blobs_a_pending_set_held_dead_that_a_later_backup_uses_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("v.img");
    let other = dir.path().join("w.img");
    let rt = local_support::runtime();
    rt.block_on(async {
        let repo = new_repo(&dir.path().join("repo")).await;
        write_image(&image, (0..BLOCKS).map(|b| (b, original(b))));
        backup(&repo, &image, "v", ParentChoice::None).await;
        write_image(
            &image,
            (0..BLOCKS)
                .filter(|b| rewritten(*b))
                .map(|b| (b, current(b))),
        );
        let newest = backup(&repo, &image, "v", ParentChoice::Latest).await;
        forget_all_but_the_newest(&repo, "v").await;
        wait_for_the_grace();
        let first = prune_with_grace(&repo).await;
        assert!(first.pending_packs > 0, "{first:?}");

        // Another volume holds the forgotten backup's content again (a full backup uploads
        // its own copies) after the pending set was written.
        write_image(&other, (0..BLOCKS).map(|b| (b, original(b))));
        let again = backup(&repo, &other, "w", ParentChoice::None).await;

        // The blobs the pending set held dead are live now: the sweep removes none of them.
        // What it deletes are second copies (each blob the two volumes share stays once).
        wait_for_the_grace();
        let second = prune_with_grace(&repo).await;
        assert_eq!(second.resurrected, 128 + 5, "{second:?}");
        assert!(second.copies_dropped > 0, "{second:?}");
        for set in removed_sets(&repo).await {
            assert!(set.dead.is_empty(), "nothing removed: {:?}", set.dead.len());
        }
        let report = check::check(&repo).await.expect("check");
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let target = dir.path().join("out.img");
        local_support::assert_restores(&repo, &newest, &target, &image_bytes(current)).await;
        local_support::assert_restores(&repo, &again, &target, &image_bytes(original)).await;
    });
}

#[test]
fn blobs_dead_only_since_the_pending_set_wait_for_a_set_of_their_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("v.img");
    let third = |b: u64| {
        if b % 4 == 3 {
            block_data(3, b)
        } else {
            current(b)
        }
    };
    let rt = local_support::runtime();
    rt.block_on(async {
        let repo = new_repo(&dir.path().join("repo")).await;
        write_image(&image, (0..BLOCKS).map(|b| (b, original(b))));
        backup(&repo, &image, "v", ParentChoice::None).await;
        write_image(
            &image,
            (0..BLOCKS)
                .filter(|b| rewritten(*b))
                .map(|b| (b, current(b))),
        );
        backup(&repo, &image, "v", ParentChoice::Latest).await;
        forget_all_but_the_newest(&repo, "v").await;
        wait_for_the_grace();
        assert!(prune_with_grace(&repo).await.pending_packs > 0);

        // After the pending set: another incremental, and the backup before it forgotten.
        write_image(
            &image,
            (0..BLOCKS).filter(|b| b % 4 == 3).map(|b| (b, third(b))),
        );
        let newest = backup(&repo, &image, "v", ParentChoice::Latest).await;
        forget_all_but_the_newest(&repo, "v").await;
        wait_for_the_grace();

        // The sweep removes only what the pending set held dead; what died since waits.
        let second = prune_with_grace(&repo).await;
        assert_eq!(second.pending_sets_waiting, 1, "{second:?}");
        let sets = removed_sets(&repo).await;
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].dead.len(), 128 + 5);
        for b in (0..BLOCKS).filter(|b| b % 4 == 3) {
            let died_since = gc::prefix(&internal::chunk_id(&repo, &current(b)));
            assert!(sets[0].dead.binary_search(&died_since).is_err());
        }
        let target = dir.path().join("out.img");
        local_support::assert_restores(&repo, &newest, &target, &image_bytes(third)).await;

        // The sweep copied them into new packs, which the next run's set names once they are
        // a grace period old; the run after that removes them.
        wait_for_the_grace();
        prune_with_grace(&repo).await;
        wait_for_the_grace();
        let last = prune_with_grace(&repo).await;
        assert!(last.repacked_packs > 0, "{last:?}");
        let report = check::check(&repo).await.expect("check");
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.blobs_indexed as u64, BLOCKS + 5);
        local_support::assert_restores(&repo, &newest, &target, &image_bytes(third)).await;
    });
}

/// Packs of thousands of blobs: each has a header longer than prune's first read of a pack's
/// end and more live data than one of its reads, so repacking reads the header twice over
/// and the live blobs in several reads. Blob for blob, exactly the live ones are kept.
#[test]
fn packs_with_long_headers_are_repacked_through_several_reads() {
    const BIG_PACK: u32 = 8 << 20;
    const BLOCKS_HERE: u64 = 3072;
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("v.img");
    let content = |generation: u64, block: u64| -> Vec<u8> {
        let seed = if generation == 2 && rewritten(block) {
            2
        } else {
            1
        };
        local_support::block_data(seed, block, BLOCK)
    };
    let rt = local_support::runtime();
    rt.block_on(async {
        let repo_dir = dir.path().join("repo");
        let repo = local_support::new_repo(&repo_dir, BLOCK as u32, BIG_PACK).await;
        local_support::write_blocks(
            &image,
            BLOCKS_HERE * BLOCK,
            BLOCK,
            (0..BLOCKS_HERE).map(|b| (b, content(1, b))),
        );
        backup(&repo, &image, "v", ParentChoice::None).await;
        local_support::write_blocks(
            &image,
            BLOCKS_HERE * BLOCK,
            BLOCK,
            (0..BLOCKS_HERE)
                .filter(|b| rewritten(*b))
                .map(|b| (b, content(2, b))),
        );
        let newest = backup(&repo, &image, "v", ParentChoice::Latest).await;
        forget_all_but_the_newest(&repo, "v").await;

        // The largest pack's header is longer than the 64 KiB prune reads first.
        let largest = walk_files(&repo_dir.join("packs"))
            .into_iter()
            .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .expect("a pack");
        let bytes = std::fs::read(&largest).expect("read pack");
        let at = bytes.len() - 12;
        let header_len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        assert!(header_len > 64 << 10, "header of {header_len} bytes");

        wait_for_the_grace();
        let first = prune_with_grace(&repo).await;
        assert!(first.pending_packs > 0, "{first:?}");
        wait_for_the_grace();
        let second = prune_with_grace(&repo).await;
        assert!(second.repacked_packs >= 2, "{second:?}");

        let after = check::check(&repo).await.expect("check");
        assert!(after.problems.is_empty(), "{:?}", after.problems);
        let leaf_pages = BLOCKS_HERE.div_ceil(128);
        assert_eq!(after.blobs_indexed as u64, BLOCKS_HERE + leaf_pages + 1);
        let expected: Vec<u8> = (0..BLOCKS_HERE).flat_map(|b| content(2, b)).collect();
        let target = dir.path().join("out.img");
        local_support::assert_restores(&repo, &newest, &target, &expected).await;
    });
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk_files(&path));
        } else {
            files.push(path);
        }
    }
    files
}
