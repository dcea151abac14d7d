//! Unit tests of the store door: multipart sizes, counts, the generic `Store`.

use super::*;

#[test]
fn part_size_grows_only_past_the_part_limit() {
    let settings = MultipartSettings {
        threshold: 64 << 20,
        part_size: 16 << 20,
        concurrency: 4,
    };
    assert_eq!(settings.part_size_for(100 << 20), 16 << 20);
    assert_eq!(settings.part_size_for(MAX_PARTS * (16 << 20)), 16 << 20);
    assert_eq!(
        settings.part_size_for(MAX_PARTS * (16 << 20) + 1),
        (16 << 20) + 1
    );
    let tiny = MultipartSettings {
        part_size: 1,
        ..settings
    };
    assert_eq!(tiny.part_size_for(100 << 20), MIN_PART_SIZE);
}

async fn streamed(store: &Store, range: Range<u64>) -> Result<(usize, Vec<u8>), StoreError> {
    let mut pieces = store.get_range_stream("k", range).await?;
    let (mut count, mut bytes) = (0, Vec::new());
    while let Some(piece) = pieces.next().await {
        bytes.extend_from_slice(&piece?);
        count += 1;
    }
    Ok((count, bytes))
}

/// A local directory's store removes old staged files through its backend's extras; a
/// backend without extras has none to remove.
#[tokio::test]
async fn abandoned_writes_go_through_the_backends_extras() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = open_store(
        dir.path().to_str().expect("path"),
        &StoreOptions {
            create: true,
            ..StoreOptions::default()
        },
    )
    .expect("local store");
    local
        .put("packs/ab/ab01", Bytes::from_static(b"pack"))
        .await
        .expect("put");
    let staged = dir.path().join("packs/ab/ab02#1");
    std::fs::write(&staged, b"12345").expect("staged file");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    let removed = local
        .remove_abandoned_writes("packs/", later)
        .await
        .expect("remove");
    assert_eq!(removed, abandoned::Removed { files: 1, bytes: 5 });
    assert!(!staged.exists());
    assert_eq!(local.get("packs/ab/ab01").await.expect("get"), &b"pack"[..]);

    let memory = Store::new(
        Arc::new(object_store::memory::InMemory::new()),
        "",
        "memory".into(),
    );
    let none = memory
        .remove_abandoned_writes("packs/", later)
        .await
        .expect("remove");
    assert_eq!(none, abandoned::Removed::default());
}

#[tokio::test]
async fn range_streams_add_up_to_exactly_the_range() {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let plain = Store::new(
        Arc::new(object_store::memory::InMemory::new()),
        "repo",
        "memory".into(),
    );
    plain
        .put("k", Bytes::from(data.clone()))
        .await
        .expect("put");
    let streaming = plain.clone().with_stream_reads();
    for store in [&plain, &streaming] {
        let (count, bytes) = streamed(store, 1_000..90_000).await.expect("stream");
        assert!(count >= 1);
        assert_eq!(bytes, &data[1_000..90_000]);
        let short = streamed(store, 90_000..110_000)
            .await
            .expect_err("past the end");
        assert!(!short.to_string().contains('\n'), "{short}");
    }
    let before = streaming.counts().get;
    streamed(&streaming, 0..10).await.expect("stream");
    assert_eq!(streaming.counts().get, before + 1);
}
