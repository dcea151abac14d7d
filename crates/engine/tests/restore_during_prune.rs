//! A restore that loaded the pack index before a prune repacked and deleted packs it planned to
//! read: it reloads the index, reads the blobs from their new packs, and restores byte-exact.
//! One test has data packs repacked under the restore, another a tree pack; a verify in the
//! same position reports no problem.

mod local_support;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use s3mover_engine::backup::ParentChoice;
use s3mover_engine::internals::index::PackIndex;
use s3mover_engine::internals::pack;
use s3mover_engine::internals::repo as internal;
use s3mover_engine::internals::tree::{self, PageReader};
use s3mover_engine::manifest::Manifest;
use s3mover_engine::prune::{self, PruneOptions, PruneReport};
use s3mover_engine::restore;
use s3mover_engine::retention::{self, KeepPolicy};
use s3mover_engine::verify::{self, ReadData};
use s3mover_engine::ChunkId;
use s3mover_engine::Repository;

const BLOCK: u64 = 4096;
const BLOCKS: u64 = 512;
/// Small data packs (about 16 blocks each), so that the volume spans many packs.
const PACK_SIZE: u32 = 64 * 1024;

/// Incompressible, distinct content for block `block` of generation `seed`.
fn block_data(seed: u64, block: u64) -> Vec<u8> {
    local_support::block_data(seed, block, BLOCK)
}

fn write_image(path: &Path, blocks: impl Iterator<Item = (u64, Vec<u8>)>) {
    local_support::write_blocks(path, BLOCKS * BLOCK, BLOCK, blocks);
}

async fn new_repo(dir: &Path) -> Repository {
    local_support::new_repo(dir, BLOCK as u32, PACK_SIZE).await
}

async fn backup(repo: &Repository, image: &Path, parent: ParentChoice) -> Manifest {
    local_support::backup_image(repo, image, "v", parent)
        .await
        .expect("backup")
        .manifest
}

/// Backs up the original image.
async fn first_backup(repo: &Repository, image: &Path) {
    write_image(image, (0..BLOCKS).map(|b| (b, block_data(1, b))));
    backup(repo, image, ParentChoice::None).await;
}

/// Backs up the image with `rewritten` blocks changed, and forgets the first backup so that
/// the packs it alone used are wholly or partly dead. Returns the second backup and the
/// image's content.
async fn second_backup_first_forgotten(
    repo: &Repository,
    image: &Path,
    rewritten: impl Fn(u64) -> bool,
) -> (Manifest, Vec<u8>) {
    write_image(
        image,
        (0..BLOCKS)
            .filter(|b| rewritten(*b))
            .map(|b| (b, block_data(2, b))),
    );
    let newest = backup(repo, image, ParentChoice::Latest).await;
    let policy = KeepPolicy {
        last: Some(1),
        ..KeepPolicy::default()
    };
    let forgotten = retention::forget(repo, Some("v"), &policy, false)
        .await
        .expect("forget");
    assert_eq!(forgotten.removed.len(), 1);
    (newest, std::fs::read(image).expect("read image"))
}

/// A prune that sweeps at once and repacks every partly dead pack.
async fn prune_now(repo: &Repository) -> PruneReport {
    prune::prune(
        repo,
        &PruneOptions {
            grace: time::Duration::ZERO,
            max_unused: 0.0,
            dry_run: false,
        },
    )
    .await
    .expect("prune")
}

async fn pack_exists(repo: &Repository, name: &ChunkId) -> bool {
    repo.store()
        .size_of(&pack::pack_key(name))
        .await
        .expect("head pack")
        .is_some()
}

/// The packs `index` places the backup's tree pages and its data chunks in.
async fn packs_of(
    repo: &Repository,
    index: &Arc<PackIndex>,
    manifest: &Manifest,
) -> (HashSet<ChunkId>, HashSet<ChunkId>) {
    let reader = PageReader::new(repo.clone(), Arc::clone(index));
    let root = ChunkId::from_hex(&manifest.root).expect("root");
    let pack_of = |id: &ChunkId| index.pack_name(index.get(id).expect("indexed").pack);
    let mut tree_packs = HashSet::from([pack_of(&root)]);
    let root_entries = tree::page_entries(manifest.depth - 1, 0, manifest.slots);
    for page in reader.page(&root, root_entries).await.expect("root page") {
        tree_packs.insert(pack_of(&page));
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let walk = tree::walk_leaves(&reader, root, manifest.depth, manifest.slots, tx);
    let collect = async {
        let mut data_packs = HashSet::new();
        while let Some(leaf) = rx.recv().await {
            for id in leaf.ids.iter().filter(|id| !id.is_zero()) {
                data_packs.insert(pack_of(id));
            }
        }
        data_packs
    };
    let (walked, data_packs) = tokio::join!(walk, collect);
    walked.expect("walk");
    (tree_packs, data_packs)
}

async fn restore_with(
    repo: &Repository,
    manifest: &Manifest,
    index: Arc<PackIndex>,
    target: &Path,
) -> Vec<u8> {
    restore::restore_with_index(
        repo,
        manifest,
        local_support::restore_options(target),
        index,
    )
    .await
    .expect("restore with an index a prune made stale");
    std::fs::read(target).expect("read restored")
}

#[test]
fn a_restore_reads_data_chunks_a_prune_moved_after_it_loaded_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("v.img");
    let rt = local_support::runtime();
    rt.block_on(async {
        let repo = new_repo(&dir.path().join("repo")).await;
        // One block in four changes: every leaf page changes (the first backup's tree pack
        // dies whole), every data pack is a quarter dead.
        first_backup(&repo, &image).await;
        let (newest, expected) = second_backup_first_forgotten(&repo, &image, |b| b % 4 == 1).await;
        let stale = Arc::new(PackIndex::load(&repo).await.expect("index"));
        let (tree_packs, data_packs) = packs_of(&repo, &stale, &newest).await;

        let report = prune_now(&repo).await;
        assert!(report.repacked_packs > 0, "{report:?}");
        let mut data_gone = 0;
        for name in &data_packs {
            if !pack_exists(&repo, name).await {
                data_gone += 1;
            }
        }
        assert!(
            data_gone > 0,
            "the prune deleted data packs the restore plans to read"
        );
        for name in &tree_packs {
            assert!(
                pack_exists(&repo, name).await,
                "the newest backup's tree pack is untouched"
            );
        }

        let restored = restore_with(&repo, &newest, stale, &dir.path().join("out.img")).await;
        assert!(restored == expected, "the restore is byte-exact");
    });
}

#[test]
fn a_restore_reads_tree_pages_a_prune_moved_after_it_loaded_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("v.img");
    let rt = local_support::runtime();
    rt.block_on(async {
        let repo = new_repo(&dir.path().join("repo")).await;
        // The second backup changes exactly the blocks that share block 0's data pack: that
        // pack dies whole, no data pack is partly dead, and the first backup's tree pack keeps
        // the leaf pages the two backups share, so it is repacked.
        first_backup(&repo, &image).await;
        let first_index = PackIndex::load(&repo).await.expect("index");
        let pack_of_block = |b: u64| {
            first_index
                .get(&internal::chunk_id(&repo, &block_data(1, b)))
                .map(|l| l.pack)
        };
        let first_pack = pack_of_block(0);
        let rewritten: HashSet<u64> = (0..BLOCKS)
            .filter(|b| pack_of_block(*b) == first_pack)
            .collect();
        assert!(
            rewritten.len() < 128,
            "the changed blocks leave leaf pages shared"
        );

        let (newest, expected) =
            second_backup_first_forgotten(&repo, &image, |b| rewritten.contains(&b)).await;
        let stale = Arc::new(PackIndex::load(&repo).await.expect("index"));
        let (tree_packs, data_packs) = packs_of(&repo, &stale, &newest).await;

        let report = prune_now(&repo).await;
        assert!(report.repacked_packs > 0, "{report:?}");
        let mut tree_gone = 0;
        for name in &tree_packs {
            if !pack_exists(&repo, name).await {
                tree_gone += 1;
            }
        }
        assert!(
            tree_gone > 0,
            "the prune repacked a tree pack the restore reads"
        );
        for name in &data_packs {
            assert!(
                pack_exists(&repo, name).await,
                "no data pack of the newest backup moved"
            );
        }

        let restored = restore_with(&repo, &newest, stale, &dir.path().join("out.img")).await;
        assert!(restored == expected, "the restore is byte-exact");
    });
}

#[test]
fn a_verify_does_not_report_packs_a_prune_moved_after_it_loaded_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("v.img");
    let rt = local_support::runtime();
    rt.block_on(async {
        let repo = new_repo(&dir.path().join("repo")).await;
        first_backup(&repo, &image).await;
        let (newest, _) = second_backup_first_forgotten(&repo, &image, |b| b % 4 == 1).await;
        let stale = Arc::new(PackIndex::load(&repo).await.expect("index"));
        let report = prune_now(&repo).await;
        assert!(report.repacked_packs > 0, "{report:?}");

        let verified =
            verify::verify_with_index(&repo, std::slice::from_ref(&newest), ReadData::All, stale)
                .await
                .expect("verify");
        assert!(
            verified.problems.is_empty(),
            "{} problems, the first: {:?}",
            verified.problems.len(),
            verified.problems.first()
        );
        assert_eq!(verified.chunks_read, BLOCKS);
        assert_eq!(verified.quarantined_chunks, 0);
        assert!(verified.failed_backups.is_empty());
    });
}
