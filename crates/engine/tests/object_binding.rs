//! Sealed objects are bound to their kind, key and repository, and repositories of format 1
//! (whose objects carry fixed labels) still open, back up and restore.

mod local_support;

use s3mover_engine::backup::ParentChoice;
use s3mover_engine::internals::gc::DeletionMarker;
use s3mover_engine::internals::objects::ObjectKind;
use s3mover_engine::internals::repo as internal;
use s3mover_engine::storage::{open_store, StoreOptions};
use s3mover_engine::{Error, InitOptions, Repository};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_opens_only_as_itself_under_its_own_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = local_support::new_repo(&dir.path().join("repo"), 4096, 1 << 20).await;
    for kind in ObjectKind::ALL {
        let sealed = internal::seal_object(&repo, kind, "some/key", b"payload");
        assert_eq!(
            internal::open_object(&repo, kind, "some/key", &sealed).expect("opens"),
            b"payload"
        );
        let moved = internal::open_object(&repo, kind, "some/other", &sealed);
        assert_eq!(moved.is_err(), kind.bound_to_key(), "{kind:?} moved");
        if let Err(e) = moved {
            assert!(e.to_string().contains("some/other"), "names the key: {e}");
        }
        for other in ObjectKind::ALL.into_iter().filter(|k| *k != kind) {
            assert!(
                internal::open_object(&repo, other, "some/key", &sealed).is_err(),
                "{kind:?} opened as {other:?}"
            );
        }
    }
    // A real object copied to another name: the marker directory as a deletion marker.
    let directory = repo.store().get("gc/markers").await.expect("directory");
    let key = DeletionMarker::new_key(1);
    repo.store().put(&key, directory).await.expect("put");
    match DeletionMarker::read(&repo, &key).await {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains(&key), "{reason}"),
        other => panic!("a moved object opened: {other:?}"),
    }
}

/// A corruption error names its object as a field, not only in its message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_errors_carry_the_objects_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = local_support::new_repo(&dir.path().join("repo"), 4096, 1 << 20).await;
    let sealed = internal::seal_object(&repo, ObjectKind::ALL[0], "some/key", b"payload");
    let moved = internal::open_object(&repo, ObjectKind::ALL[0], "some/other", &sealed)
        .expect_err("a moved object opens");
    assert!(matches!(moved, Error::Corrupt { .. }), "{moved:?}");
    assert_eq!(moved.object_key(), Some("some/other"));

    let directory = repo.store().get("gc/markers").await.expect("directory");
    let key = DeletionMarker::new_key(2);
    repo.store().put(&key, directory).await.expect("put");
    let error = DeletionMarker::read(&repo, &key)
        .await
        .expect_err("a moved marker opens");
    assert_eq!(error.object_key(), Some(key.as_str()), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_repository_opens_backs_up_and_restores() {
    let dir = tempfile::tempdir().expect("temp dir");
    let location = dir.path().join("repo").display().to_string();
    let options = StoreOptions {
        create: true,
        ..StoreOptions::default()
    };
    let store = open_store(&location, &options).expect("store");
    Repository::init(
        store,
        InitOptions {
            chunk_size: 4096,
            password: Some(zeroize::Zeroizing::new(local_support::PASSWORD.into())),
            format_version: 1,
            ..InitOptions::default()
        },
    )
    .await
    .expect("init");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("repo/config")).expect("config"))
            .expect("json");
    assert_eq!(config["version"], 1);
    assert!(config.get("sealedFields").is_none(), "{config}");

    let image = dir.path().join("vol.img");
    let data = local_support::block_data(7, 0, 256 * 1024);
    std::fs::write(&image, &data).expect("image");
    let store = open_store(&location, &options).expect("store");
    let repo = Repository::open(store, Some(local_support::PASSWORD))
        .await
        .expect("open");
    assert!(!internal::binds_names(&repo));
    local_support::backup_image(&repo, &image, "v", ParentChoice::None)
        .await
        .expect("backup");
    let incremental = local_support::backup_image(&repo, &image, "v", ParentChoice::Latest)
        .await
        .expect("incremental");
    let manifest = repo
        .read_manifest(&incremental.manifest.id)
        .await
        .expect("manifest");
    assert!(
        manifest.parent.is_some(),
        "found its parent through latest/"
    );
    local_support::assert_restores(&repo, &manifest, &dir.path().join("r.img"), &data).await;
    // Format 1 keeps `latest/` in plaintext.
    let latest = repo
        .store()
        .get(&format!("latest/{}", internal::volume_key(&repo, "v")))
        .await
        .expect("latest");
    assert_eq!(&latest[..], incremental.manifest.id.as_bytes());

    // Format 1 still refuses a config rewritten as unencrypted over its key slots.
    let path = dir.path().join("repo/config");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config")).expect("json");
    config["encryption"] = "none".into();
    config["idKey"] = "00".repeat(32).into();
    std::fs::write(&path, serde_json::to_vec(&config).expect("json")).expect("write");
    let store = open_store(&location, &options).expect("store");
    match Repository::open(store, Some(local_support::PASSWORD)).await {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("key slots"), "{reason}"),
        other => panic!("a plaintext config over key slots opened: {other:?}"),
    }
}
