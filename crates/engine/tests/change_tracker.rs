//! The engine's CBT fallback, through the [`ChangeTracker`] door: ranges a service gives are the
//! plan; a service that cannot be opened, ranges that fail or describe another volume, a delta
//! from another snapshot than the parent's, and a delta with no parent each make the backup
//! read more, restore byte-exact and say why in a structured note. The gRPC implementation of
//! the door is exercised end to end by the CLI's `cbt_cli` tests.

mod local_support;

use std::path::Path;

use futures::future::BoxFuture;
use futures::StreamExt;
use local_support::{assert_restores, backup_options, runtime, write_blocks};
use s3mover_engine::backup::{
    self, BackupNote, BackupReport, ChangeInput, ChangeTracker, ParentChoice, TrackedRanges,
};
use s3mover_engine::manifest::{CbtInfo, ChangeSource};
use s3mover_engine::Repository;
use s3mover_ranges::{BlockMetadataType, BlockRange};

const BLOCK: u64 = 4096;
const BLOCKS: u64 = 64;
const SIZE: u64 = BLOCK * BLOCKS;

/// What the test service does when opened.
#[derive(Clone)]
enum Behaviour {
    /// Refuses, with this reason.
    Refuse(&'static str),
    /// Streams these block numbers' ranges, then ends or fails with the reason.
    Stream {
        blocks: Vec<u64>,
        capacity: u64,
        then_fail: Option<&'static str>,
    },
}

/// A change-tracking service in the test process.
struct TestService {
    snapshots: CbtInfo,
    behaviour: Behaviour,
}

impl ChangeTracker for TestService {
    fn snapshots(&self) -> CbtInfo {
        self.snapshots.clone()
    }

    fn open(self: Box<Self>) -> BoxFuture<'static, Result<TrackedRanges, String>> {
        Box::pin(async move {
            match self.behaviour {
                Behaviour::Refuse(reason) => Err(reason.to_string()),
                Behaviour::Stream {
                    blocks,
                    capacity,
                    then_fail,
                } => {
                    let mut items: Vec<Result<BlockRange, String>> = blocks
                        .iter()
                        .map(|b| Ok(BlockRange::new(b * BLOCK, BLOCK)))
                        .collect();
                    items.extend(then_fail.map(|reason| Err(reason.to_string())));
                    Ok(TrackedRanges {
                        kind: Some(BlockMetadataType::FixedLength),
                        capacity: Some(capacity),
                        ranges: futures::stream::iter(items).boxed(),
                    })
                }
            }
        })
    }
}

fn tracker(snapshot: &str, base: Option<&str>, behaviour: Behaviour) -> ChangeInput {
    ChangeInput::Tracker(Box::new(TestService {
        snapshots: CbtInfo {
            snapshot: Some(snapshot.into()),
            snapshot_handle: Some(snapshot.into()),
            base_snapshot_handle: base.map(str::to_string),
        },
        behaviour,
    }))
}

fn streams(blocks: Vec<u64>) -> Behaviour {
    Behaviour::Stream {
        blocks,
        capacity: SIZE,
        then_fail: None,
    }
}

/// Round `round`'s content in `changed` blocks, round 0's elsewhere.
fn write_image(path: &Path, round: u64, changed: &[u64]) -> Vec<u8> {
    write_blocks(
        path,
        SIZE,
        BLOCK,
        (0..BLOCKS).map(|b| {
            let seed = if changed.contains(&b) { round } else { 0 };
            (b, local_support::block_data(seed, b, BLOCK))
        }),
    );
    std::fs::read(path).expect("image")
}

async fn run(
    repo: &Repository,
    image: &Path,
    parent: ParentChoice,
    change: ChangeInput,
) -> BackupReport {
    backup::backup(repo, backup_options("vol", image, parent, change))
        .await
        .expect("backup")
}

/// A repository holding a full backup, from CBT snapshot `h1`, of round 0's image.
async fn with_first_backup(dir: &Path) -> (Repository, std::path::PathBuf) {
    let repo = local_support::new_repo(&dir.join("repo"), BLOCK as u32, 64 * 1024).await;
    let image = dir.join("image");
    write_image(&image, 0, &[]);
    let all: Vec<u64> = (0..BLOCKS).collect();
    let first = run(
        &repo,
        &image,
        ParentChoice::None,
        tracker("h1", None, streams(all)),
    )
    .await;
    assert_eq!(first.manifest.change_source, ChangeSource::CbtAllocated);
    assert!(first.notes.is_empty(), "{:?}", first.notes);
    (repo, image)
}

/// After a first backup, writes round `round` into the `changed` blocks, backs the image up
/// with `parent` and `change`, checks that the backup restores byte-exact and returns it.
fn second_backup(
    round: u64,
    changed: &[u64],
    parent: ParentChoice,
    change: ChangeInput,
) -> BackupReport {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (repo, image) = with_first_backup(dir.path()).await;
        let expected = write_image(&image, round, changed);
        let report = run(&repo, &image, parent, change).await;
        assert_restores(&repo, &report.manifest, &dir.path().join("out"), &expected).await;
        report
    })
}

#[test]
fn a_delta_from_the_parents_snapshot_reads_only_the_changed_blocks() {
    let change = tracker("h2", Some("h1"), streams(vec![3, 40]));
    let report = second_backup(1, &[3, 40], ParentChoice::Latest, change);
    assert_eq!(report.manifest.change_source, ChangeSource::CbtDelta);
    assert_eq!(report.manifest.stats.bytes_read, 2 * BLOCK);
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    assert_eq!(report.note(), None);
    let cbt = report.manifest.cbt.clone().expect("cbt recorded");
    assert_eq!(cbt.base_snapshot_handle.as_deref(), Some("h1"));
}

#[test]
fn a_service_that_cannot_be_opened_reads_the_source_as_without_one_and_says_why() {
    let change = tracker("h2", Some("h1"), Behaviour::Refuse("token refused"));
    let report = second_backup(2, &[5], ParentChoice::Latest, change);
    assert_eq!(
        report.notes,
        vec![BackupNote::ChangeTrackingUnavailable {
            reason: "token refused".into()
        }]
    );
    assert_eq!(
        report.note().as_deref(),
        Some("change tracking unavailable (token refused); reading the whole volume")
    );
    assert_ne!(report.manifest.change_source, ChangeSource::CbtDelta);
    assert_eq!(report.manifest.stats.bytes_read, SIZE);
    // The snapshot read is recorded all the same: it is the next delta's base.
    let cbt = report.manifest.cbt.clone().expect("cbt recorded");
    assert_eq!(cbt.snapshot_handle.as_deref(), Some("h2"));
}

#[test]
fn ranges_that_fail_part_way_make_a_whole_read_compared_with_the_parent() {
    let behaviour = Behaviour::Stream {
        blocks: vec![2],
        capacity: SIZE,
        then_fail: Some("stream reset"),
    };
    // The service would have missed block 9: only a whole read finds it.
    let change = tracker("h2", Some("h1"), behaviour);
    let report = second_backup(3, &[2, 9], ParentChoice::Latest, change);
    assert_eq!(
        report.notes,
        vec![BackupNote::ChangeTrackingFailed {
            reason: "stream reset".into()
        }]
    );
    assert!(report
        .note()
        .unwrap()
        .contains("reading the whole volume instead"));
    assert_eq!(report.manifest.change_source, ChangeSource::HashCompare);
    assert_eq!(report.manifest.stats.bytes_read, SIZE);
}

#[test]
fn ranges_of_a_volume_of_another_size_are_not_used() {
    let behaviour = Behaviour::Stream {
        blocks: vec![1],
        capacity: 2 * SIZE,
        then_fail: None,
    };
    let change = tracker("h2", Some("h1"), behaviour);
    let report = second_backup(4, &[1], ParentChoice::Latest, change);
    match report.notes.as_slice() {
        [BackupNote::ChangeTrackingFailed { reason }] => {
            assert!(reason.contains("reports a volume of"), "{reason}")
        }
        other => panic!("unexpected notes {other:?}"),
    }
    assert_eq!(report.manifest.change_source, ChangeSource::HashCompare);
}

#[test]
fn a_delta_from_another_snapshot_than_the_parents_is_not_used() {
    let change = tracker("h3", Some("h2"), streams(vec![7]));
    let report = second_backup(5, &[7, 8], ParentChoice::Latest, change);
    let parent = report.manifest.parent.clone().expect("parent");
    assert_eq!(
        report.notes,
        vec![BackupNote::DeltaBaseMismatch {
            base: "h2".into(),
            parent,
            parent_snapshot: "h1".into(),
        }]
    );
    assert!(report.note().unwrap().contains("whole volume"));
    assert_eq!(report.manifest.change_source, ChangeSource::HashCompare);
    assert_eq!(report.manifest.stats.bytes_read, SIZE);
}

#[test]
fn a_delta_with_no_parent_reads_everything() {
    let change = tracker("h2", Some("h1"), streams(vec![0]));
    let report = second_backup(6, &[0], ParentChoice::None, change);
    assert_eq!(report.notes, vec![BackupNote::ChangesWithoutParent]);
    assert_eq!(report.manifest.change_source, ChangeSource::Full);
    assert_eq!(report.manifest.parent, None);
}

#[test]
fn unlock_and_backup_unlocks_with_the_callers_password_and_passes_its_error_on() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (repo, image) = with_first_backup(dir.path()).await;
        let expected = write_image(&image, 7, &[4]);
        let ranges = dir.path().join("ranges.json");
        std::fs::write(
            &ranges,
            format!(
                r#"{{"blockMetadataType":"FIXED_LENGTH","volumeCapacityBytes":{SIZE},"blockMetadata":[{{"byteOffset":{},"sizeBytes":{BLOCK}}}]}}"#,
                4 * BLOCK
            ),
        )
        .unwrap();
        let options = || {
            backup_options(
                "vol",
                &image,
                ParentChoice::Latest,
                ChangeInput::ChangedRangesFile(ranges.clone()),
            )
        };
        let locked = || async {
            s3mover_engine::LockedRepository::read(repo.store().clone())
                .await
                .expect("config")
        };
        let wrong = backup::unlock_and_backup(locked().await, options(), |l| async move {
            l.unlock(Some("wrong")).await
        })
        .await;
        assert!(
            matches!(wrong, Err(s3mover_engine::Error::Crypto(_))),
            "{:?}",
            wrong.map(|r| r.manifest.id)
        );
        let report = backup::unlock_and_backup(locked().await, options(), |l| async move {
            l.unlock(Some(local_support::PASSWORD)).await
        })
        .await
        .expect("backup");
        assert_eq!(report.manifest.change_source, ChangeSource::ChangedRanges);
        assert_eq!(report.manifest.stats.bytes_read, BLOCK);
        assert_restores(&repo, &report.manifest, &dir.path().join("out"), &expected).await;
    });
}
