//! What a backup asks of the store. An incremental lists nothing: it finds its parent's tree
//! pages through the parent's tree table (`trees/<id>`), deletion markers through the marker
//! directory (`gc/markers`) and quarantined chunks through its volume's record. Each has a
//! fallback, tested here: a parent without a table, a table made stale by a prune, and a
//! repository without a marker directory still give correct backups; and the post-commit
//! check still withdraws a backup that references what a sweep removes.

mod local_support;

use std::path::Path;

use local_support::runtime;
use s3mover_engine::backup::{BackupReport, ParentChoice};
use s3mover_engine::internals::gc::{self, DeletionMarker, PendingSet};
use s3mover_engine::internals::repo as internal;
use s3mover_engine::internals::tree_table;
use s3mover_engine::manifest::Manifest;
use s3mover_engine::prune::{self, PruneOptions};
use s3mover_engine::retention::{self, KeepPolicy};
use s3mover_engine::Repository;

const BLOCK: u64 = 4096;
/// Two leaf pages and a root: an incremental that changes only the first leaf inherits the second.
const BLOCKS: u64 = 256;

/// Distinct, non-zero content for every block and round (both are written into the block).
fn block_data(round: u8, block: u64) -> Vec<u8> {
    let mut data: Vec<u8> = (0..BLOCK).map(|i| (i as u8).wrapping_mul(7) | 1).collect();
    data[..8].copy_from_slice(&block.to_le_bytes());
    data[8] = round;
    data
}

fn write_image(path: &Path, round: u8) {
    std::fs::write(path, image_bytes(round)).expect("write image");
}

fn image_bytes(round: u8) -> Vec<u8> {
    (0..BLOCKS).flat_map(|b| block_data(round, b)).collect()
}

/// Round `round`'s content in blocks 0..8, round 0's in the rest: every incremental rewrites
/// the first leaf page's slots and inherits everything else.
fn write_partly_changed(path: &Path, round: u8) {
    let bytes: Vec<u8> = (0..BLOCKS)
        .flat_map(|b| block_data(if b < 8 { round } else { 0 }, b))
        .collect();
    std::fs::write(path, bytes).expect("write image");
}

async fn new_repo(dir: &Path) -> Repository {
    local_support::new_repo(dir, BLOCK as u32, 64 * 1024).await
}

async fn backup(repo: &Repository, image: &Path) -> s3mover_engine::Result<BackupReport> {
    local_support::backup_image(repo, image, "vol", ParentChoice::Latest).await
}

/// A repository under `dir` holding a full backup of round 0's image, written at `image`.
async fn repo_with_full_backup(dir: &Path, image: &Path) -> (Repository, BackupReport) {
    let repo = new_repo(&dir.join("repo")).await;
    write_image(image, 0);
    let full = backup(&repo, image).await.expect("full backup");
    (repo, full)
}

/// Restores `manifest` beside `image` and checks it equals the image as it is now.
async fn assert_restores(repo: &Repository, manifest: &Manifest, image: &Path) {
    let expected = std::fs::read(image).expect("read image");
    local_support::assert_restores(repo, manifest, &image.with_extension("restored"), &expected)
        .await;
}

/// Writes an unfinished deletion marker whose pending set holds the prefix of `id`, as a sweep
/// does before it deletes anything. Returns the marker's key.
async fn marker_removing(repo: &Repository, id: &s3mover_engine::ChunkId) -> String {
    let now = gc::now_unix();
    let pending_key = PendingSet::new_key(now);
    let sealed = gc::encode_pending_set(
        repo,
        &pending_key,
        now,
        &[],
        &[],
        std::iter::once(gc::prefix(id)),
    )
    .expect("pending set");
    repo.store().put(&pending_key, sealed).await.expect("put");
    let marker_key = DeletionMarker::new_key(now);
    DeletionMarker {
        pending: vec![pending_key],
        began: now,
        finished: None,
        removed: None,
    }
    .write(repo, &marker_key)
    .await
    .expect("marker");
    marker_key
}

#[test]
fn an_incremental_lists_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("vol.img");
    runtime().block_on(async {
        let (repo, _full) = repo_with_full_backup(dir.path(), &image).await;
        write_partly_changed(&image, 1);
        let incremental = backup(&repo, &image).await.expect("incremental");
        assert_eq!(
            incremental.requests.list, 0,
            "listings on the backup path: {:?}",
            incremental.requests
        );
        assert_restores(&repo, &incremental.manifest, &image).await;
        assert!(
            repo.store()
                .get_optional(gc::MARKER_DIRECTORY_KEY)
                .await
                .expect("get")
                .is_some(),
            "init writes the marker directory"
        );
    });
}

#[test]
fn the_check_finds_a_marker_through_the_directory_or_a_listing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("vol.img");
    runtime().block_on(async {
        let (repo, _full) = repo_with_full_backup(dir.path(), &image).await;
        // A sweep that removes a chunk the next backup will reference: block 3 keeps the
        // content it had, so the incremental inherits its chunk.
        write_image(&image, 0);
        let inherited = internal::chunk_id(&repo, &block_data(0, 3));
        let marker = marker_removing(&repo, &inherited).await;

        // 1. The directory names the marker (as a prune writes it before the marker).
        gc::write_marker_directory(&repo, std::slice::from_ref(&marker))
            .await
            .expect("directory");
        let err = backup(&repo, &image).await.expect_err("withdrawn");
        assert!(err.to_string().contains("withdrawn"), "{err}");

        // 2. No directory (a repository no prune of this format has touched): a listing.
        repo.store()
            .delete(gc::MARKER_DIRECTORY_KEY)
            .await
            .expect("delete");
        let err = backup(&repo, &image).await.expect_err("withdrawn");
        assert!(err.to_string().contains("withdrawn"), "{err}");

        // 3. A directory that does not name the marker: the check reads only the directory,
        //    which is why prunes name a marker there before writing it.
        gc::write_marker_directory(&repo, &[])
            .await
            .expect("directory");
        let report = backup(&repo, &image).await.expect("committed");
        assert_eq!(
            report.requests.list, 0,
            "the check did not list: {:?}",
            report.requests
        );
    });
}

#[test]
fn a_parent_without_a_tree_table_is_read_through_the_pack_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("vol.img");
    runtime().block_on(async {
        let (repo, full) = repo_with_full_backup(dir.path(), &image).await;
        // As for a backup made before tree tables existed.
        repo.store()
            .delete(&tree_table::key(&full.manifest.id))
            .await
            .expect("delete table");
        write_partly_changed(&image, 1);
        let first = backup(&repo, &image).await.expect("incremental");
        assert_eq!(
            first.requests.list, 1,
            "it listed index/: {:?}",
            first.requests
        );
        assert_restores(&repo, &first.manifest, &image).await;
        // Its own table is complete: the next incremental lists nothing.
        write_partly_changed(&image, 2);
        let second = backup(&repo, &image).await.expect("incremental");
        assert_eq!(second.requests.list, 0, "{:?}", second.requests);
        assert_restores(&repo, &second.manifest, &image).await;
    });
}

#[test]
fn a_prune_rewrites_tree_tables_and_a_stale_one_still_gives_a_correct_backup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("vol.img");
    runtime().block_on(async {
        let (repo, _full) = repo_with_full_backup(dir.path(), &image).await;
        write_partly_changed(&image, 1);
        let kept = backup(&repo, &image).await.expect("incremental");
        let table_before = read_table(&repo, &kept.manifest.id).await;

        // Forget the full backup and repack everything partly dead, tree packs included: the
        // kept backup inherited its second leaf page from the full backup's tree pack.
        let policy = KeepPolicy {
            last: Some(1),
            ..KeepPolicy::default()
        };
        let forgotten = retention::forget(&repo, Some("vol"), &policy, false)
            .await
            .expect("forget");
        assert_eq!(forgotten.removed.len(), 1);
        assert!(
            tree_table::TreeTable::read(&repo, &forgotten.removed[0])
                .await
                .expect("read")
                .is_none(),
            "forget deletes the forgotten backup's table"
        );
        prune::prune(
            &repo,
            &PruneOptions {
                grace: time::Duration::seconds(0),
                max_unused: 0.0,
                dry_run: false,
            },
        )
        .await
        .expect("prune");

        // The prune moved some of the kept backup's pages and rewrote its table to match.
        let rewritten = read_table(&repo, &kept.manifest.id).await;
        assert_eq!(
            table_before.pages.len(),
            rewritten.pages.len(),
            "no live page dropped"
        );
        let mut moved = 0;
        for (before, after) in table_before.pages.iter().zip(&rewritten.pages) {
            assert_eq!(
                (before.level, before.index, before.id),
                (after.level, after.index, after.id)
            );
            assert!(
                pack_exists(&repo, &after.pack).await,
                "entries name existing packs"
            );
            if before.pack != after.pack {
                moved += 1;
                assert!(
                    !pack_exists(&repo, &before.pack).await,
                    "the old pack is gone"
                );
            }
        }
        assert!(
            moved > 0,
            "the prune moved some of the kept backup's tree pages"
        );

        // A stale table (as if the prune had not rewritten it): the backup's reads find the
        // pack gone, reload the pack index and go on, and its own table has fresh locations.
        table_before
            .write(&repo, &kept.manifest.id)
            .await
            .expect("write the stale table back");
        write_image(&image, 2);
        let after = backup(&repo, &image)
            .await
            .expect("incremental from a stale table");
        assert_restores(&repo, &after.manifest, &image).await;
        for page in &read_table(&repo, &after.manifest.id).await.pages {
            assert!(
                pack_exists(&repo, &page.pack).await,
                "page {} of the new table is in an existing pack",
                page.id
            );
        }
    });
}

async fn read_table(repo: &Repository, backup_id: &str) -> tree_table::TreeTable {
    tree_table::TreeTable::read(repo, backup_id)
        .await
        .expect("read table")
        .expect("the backup has a table")
}

async fn pack_exists(repo: &Repository, name: &s3mover_engine::ChunkId) -> bool {
    let key = s3mover_engine::internals::pack::pack_key(name);
    repo.store().size_of(&key).await.expect("head").is_some()
}

#[test]
fn a_damaged_tree_table_is_reported_by_check_and_does_not_stop_a_backup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("vol.img");
    runtime().block_on(async {
        let (repo, full) = repo_with_full_backup(dir.path(), &image).await;
        let clean = s3mover_engine::check::check(&repo).await.expect("check");
        assert!(clean.problems.is_empty(), "{:?}", clean.problems);
        assert_eq!(clean.tree_tables, 1);

        // Flip one byte of the table.
        let key = tree_table::key(&full.manifest.id);
        let mut bytes = repo.store().get(&key).await.expect("get").to_vec();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        repo.store()
            .put(&key, bytes.into())
            .await
            .expect("put the damaged table");
        let report = s3mover_engine::check::check(&repo).await.expect("check");
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains(&full.manifest.id) && p.contains("tree table is damaged")),
            "{:?}",
            report.problems
        );

        write_partly_changed(&image, 1);
        let incremental = backup(&repo, &image)
            .await
            .expect("incremental despite the table");
        assert_eq!(
            incremental.requests.list, 1,
            "it read the pack index instead: {:?}",
            incremental.requests
        );
        assert_restores(&repo, &incremental.manifest, &image).await;
    });
}

#[test]
fn check_reports_a_tree_table_that_misplaces_a_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("vol.img");
    runtime().block_on(async {
        let (repo, full) = repo_with_full_backup(dir.path(), &image).await;
        let mut table = read_table(&repo, &full.manifest.id).await;
        let leaf = table
            .pages
            .iter_mut()
            .find(|p| p.level == 0)
            .expect("a leaf page");
        leaf.index += 1;
        table
            .write(&repo, &full.manifest.id)
            .await
            .expect("write the wrong table");
        let report = s3mover_engine::check::check(&repo).await.expect("check");
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("where the tree has another page")),
            "{:?}",
            report.problems
        );
    });
}
