//! The pack index a backup loads holds the tree pages' locations and nothing else, and they
//! are exactly the tree pages of the whole index.

mod local_support;

use s3mover_engine::backup::ParentChoice;
use s3mover_engine::internals::index::PackIndex;
use s3mover_engine::internals::pack::BlobKind;
use s3mover_engine::InitOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_loads_only_tree_page_locations() {
    let dir = tempfile::tempdir().expect("temp dir");
    let image = dir.path().join("vol.img");
    // 4 MiB of distinct non-zero 4 KiB blocks: 1024 data chunks, several tree pages.
    let mut data = vec![0xa5u8; 4 << 20];
    for (number, block) in data.chunks_mut(4096).enumerate() {
        block[..8].copy_from_slice(&(number as u64).to_le_bytes());
    }
    std::fs::write(&image, &data).expect("image");
    let repo = local_support::init_repo(
        &dir.path().join("repo"),
        InitOptions {
            chunk_size: 4096,
            ..InitOptions::default()
        },
    )
    .await;
    local_support::backup_image(&repo, &image, "v", ParentChoice::None)
        .await
        .expect("backup");

    let full = PackIndex::load(&repo).await.expect("full index");
    let trees = PackIndex::load_tree_pages(&repo).await.expect("tree index");
    let full_tree_pages: Vec<_> = full
        .iter()
        .filter(|(_, location)| location.kind == BlobKind::Tree)
        .collect();
    assert!(full.len() > 1000, "the backup stored {} blobs", full.len());
    assert!(
        !full_tree_pages.is_empty(),
        "the backup stored no tree page"
    );
    assert_eq!(trees.len(), full_tree_pages.len());
    for (id, location) in full_tree_pages {
        let found = trees
            .get(id)
            .expect("tree page missing from the tree index");
        assert_eq!(found.kind, BlobKind::Tree);
        assert_eq!(trees.pack_name(found.pack), full.pack_name(location.pack));
        assert_eq!(
            (found.offset, found.length),
            (location.offset, location.length)
        );
    }
}
