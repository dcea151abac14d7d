//! Cluster metadata documents: unique names within a second, retention by exact cluster name
//! (a cluster whose name has another's as a prefix keeps its documents), and documents that
//! only open under their own name.

mod local_support;

use s3mover_engine::cluster_docs;
use s3mover_engine::Error;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_written_in_one_second_get_their_own_names() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = local_support::new_repo(&dir.path().join("repo"), 4096, 1 << 20).await;
    let mut ids = std::collections::BTreeSet::new();
    for n in 0..20 {
        let doc = cluster_docs::write(&repo, "k3s", json!({"n": n}))
            .await
            .expect("write");
        ids.insert(doc.document.id);
    }
    assert_eq!(ids.len(), 20, "every run kept its own document");
    let scan = cluster_docs::scan(&repo, Some("k3s")).await.expect("scan");
    assert_eq!(scan.documents.len(), 20);
    let bodies: Vec<i64> = scan
        .documents
        .iter()
        .map(|d| d.document.document["n"].as_i64().expect("n"))
        .collect();
    assert_eq!(bodies, (0..20).collect::<Vec<_>>(), "oldest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_keeps_to_its_own_cluster() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = local_support::new_repo(&dir.path().join("repo"), 4096, 1 << 20).await;
    // The seed's prune matched `pv-list-k3s-` as a substring, which `pv-list-k3s-dev-…` holds.
    for cluster in ["k3s", "k3s-dev", "k3s-", "K3S"] {
        for n in 0..3 {
            cluster_docs::write(&repo, cluster, json!({"n": n}))
                .await
                .expect("write");
        }
    }
    let dry = cluster_docs::forget(&repo, "k3s", 1, true)
        .await
        .expect("dry run");
    assert_eq!((dry.kept.len(), dry.removed.len()), (1, 2));
    assert_eq!(
        cluster_docs::scan(&repo, Some("k3s"))
            .await
            .expect("scan")
            .documents
            .len(),
        3,
        "a dry run removes nothing"
    );
    let report = cluster_docs::forget(&repo, "k3s", 1, false)
        .await
        .expect("forget");
    assert_eq!(report.removed.len(), 2);
    assert_eq!(
        report.kept[0].document.document["n"], 2,
        "the newest is kept"
    );
    for other in ["k3s-dev", "k3s-", "K3S"] {
        let left = cluster_docs::scan(&repo, Some(other)).await.expect("scan");
        assert_eq!(left.documents.len(), 3, "{other} lost documents");
        assert!(left.documents.iter().all(|d| d.document.cluster == other));
    }
    let all = cluster_docs::scan(&repo, None).await.expect("scan all");
    assert_eq!(all.documents.len(), 10);
    match cluster_docs::forget(&repo, "k3s", 0, false).await {
        Err(Error::Invalid(why)) => assert!(why.contains("keep at least 1"), "{why}"),
        other => panic!("keep-last 0 was accepted: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_moved_to_another_cluster_does_not_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = local_support::new_repo(&dir.path().join("repo"), 4096, 1 << 20).await;
    let prod = cluster_docs::write(&repo, "prod", json!({"pvs": 1}))
        .await
        .expect("write");
    let dev = cluster_docs::write(&repo, "dev", json!({"pvs": 2}))
        .await
        .expect("write");
    // Copy prod's sealed document over dev's name.
    let sealed = repo.store().get(&prod.key).await.expect("get");
    repo.store().put(&dev.key, sealed).await.expect("put");
    match cluster_docs::read(&repo, &dev.key).await {
        Err(Error::Corrupt { reason: why, .. }) => assert!(why.contains(&dev.key), "{why}"),
        other => panic!("a moved document opened: {other:?}"),
    }
    let scan = cluster_docs::scan(&repo, None).await.expect("scan");
    assert_eq!(scan.documents.len(), 1);
    assert_eq!(scan.damaged.len(), 1);
    assert_eq!(scan.damaged[0].key, dev.key);
    let found = cluster_docs::resolve(&repo, &prod.document.id[..12], None)
        .await
        .expect("resolve by prefix");
    assert_eq!(found.document, prod.document);
    let latest = cluster_docs::resolve(&repo, "latest", Some("prod"))
        .await
        .expect("latest");
    assert_eq!(latest.document.id, prod.document.id);
    assert!(matches!(
        cluster_docs::resolve(&repo, "latest", Some("none")).await,
        Err(Error::NoSuchBackup(_))
    ));
}
