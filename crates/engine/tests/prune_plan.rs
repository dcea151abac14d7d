//! A dry run is the prune's plan reported: it writes nothing, and the prune that follows it
//! (nothing changed in between) finds, deletes and repacks exactly what the dry run said.

mod local_support;

use std::path::Path;

use s3mover_engine::backup::ParentChoice;
use s3mover_engine::prune::{self, PruneOptions, PruneReport};
use s3mover_engine::retention::{self, KeepPolicy};
use s3mover_engine::Repository;

const BLOCK: u64 = 4096;
const BLOCKS: u64 = 256;
/// Small data packs (about 16 blocks each), so that the volume spans many packs.
const PACK_SIZE: u32 = 64 * 1024;

/// The volume's first state, then every third block rewritten.
fn content(generation: u64, block: u64) -> Vec<u8> {
    let seed = if generation > 0 && block.is_multiple_of(3) {
        2
    } else {
        1
    };
    local_support::block_data(seed, block, BLOCK)
}

async fn backup(repo: &Repository, image: &Path, generation: u64) {
    local_support::write_blocks(
        image,
        BLOCKS * BLOCK,
        BLOCK,
        (0..BLOCKS).map(|b| (b, content(generation, b))),
    );
    let parent = if generation == 0 {
        ParentChoice::None
    } else {
        ParentChoice::Latest
    };
    local_support::backup_image(repo, image, "v", parent)
        .await
        .expect("backup");
}

/// Every object of the repository, with its size.
async fn objects(repo: &Repository) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = repo
        .store()
        .list("")
        .await
        .expect("list")
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    all.sort();
    all
}

async fn prune_now(repo: &Repository, dry_run: bool) -> PruneReport {
    let options = PruneOptions {
        grace: time::Duration::ZERO,
        dry_run,
        ..PruneOptions::default()
    };
    prune::prune(repo, &options).await.expect("prune")
}

#[test]
fn a_dry_run_writes_nothing_and_reports_what_the_prune_then_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("v.img");
    let rt = local_support::runtime();
    rt.block_on(async {
        let repo = local_support::new_repo(&dir.path().join("repo"), BLOCK as u32, PACK_SIZE).await;
        backup(&repo, &image, 0).await;
        backup(&repo, &image, 1).await;
        let policy = KeepPolicy {
            last: Some(1),
            ..KeepPolicy::default()
        };
        retention::forget(&repo, Some("v"), &policy, false)
            .await
            .expect("forget");

        let before = objects(&repo).await;
        let dry = prune_now(&repo, true).await;
        assert_eq!(objects(&repo).await, before, "a dry run writes nothing");
        assert!(dry.dry_run);
        assert!(dry.pending_packs > 0, "{dry:?}");
        assert!(dry.repacked_packs > 0, "{dry:?}");
        assert!(dry.freed_bytes > 0, "{dry:?}");
        assert!(dry.index_objects_rewritten > 0, "{dry:?}");

        let done = prune_now(&repo, false).await;
        assert!(!done.dry_run);
        let found = |r: &PruneReport| {
            (
                r.backups,
                r.packs,
                r.pack_bytes,
                r.chunks_marked,
                r.pending_packs,
                r.pending_dead_bytes,
            )
        };
        assert_eq!(found(&dry), found(&done), "{dry:?}\n{done:?}");
        let removed =
            |r: &PruneReport| (r.deleted_packs, r.repacked_packs, r.index_objects_rewritten);
        assert_eq!(removed(&dry), removed(&done), "{dry:?}\n{done:?}");
        assert_ne!(
            objects(&repo).await,
            before,
            "the prune removed what it planned"
        );
    });
}
