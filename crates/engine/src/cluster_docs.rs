//! Cluster metadata documents: one sealed JSON document per `cluster backup` run, kept beside
//! the backups in the same repository.
//!
//! A document is stored under `clusters/<cluster key>/<id>`, where the cluster key is the
//! keyed hash of the cluster's name (as volume names are hashed, so names do not leak from an
//! encrypted repository) and the id is 16 hex digits: the creation second (8 hex) followed by
//! 32 random bits, so ids sort by time and two runs in the same second never share a name.
//! The sealed plaintext holds the cluster name, the id and the time again; a document is only
//! accepted under the key its own name and id give, so retention of one cluster, which lists
//! only that cluster's key prefix, can never touch another cluster's documents.
//!
//! The engine knows nothing of Kubernetes: the document body is any JSON value.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layout::aad::ObjectKind;
use crate::Repository;

/// Where the documents live.
pub const PREFIX: &str = "clusters/";

/// Longest accepted cluster name.
const MAX_NAME: usize = 253;

/// One stored document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDocument {
    /// 16 hex digits, unique in the repository.
    pub id: String,
    /// The cluster's name, as `--cluster` gave it.
    pub cluster: String,
    /// When it was written (RFC 3339 UTC with microseconds).
    pub time: String,
    /// The document body.
    pub document: serde_json::Value,
}

/// A document as listed: the document and what it costs in the store.
#[derive(Debug, Clone)]
pub struct StoredDocument {
    /// The document.
    pub document: ClusterDocument,
    /// Its object key.
    pub key: String,
    /// Its sealed size in bytes.
    pub size: u64,
}

/// A document object that exists but cannot be read.
#[derive(Debug, Clone)]
pub struct DamagedDocument {
    /// Its object key.
    pub key: String,
    /// Why (one line).
    pub problem: String,
}

/// Every readable document, oldest first, and the ones that could not be read.
#[derive(Debug, Default)]
pub struct DocumentScan {
    /// Readable documents, oldest first.
    pub documents: Vec<StoredDocument>,
    /// Damaged ones.
    pub damaged: Vec<DamagedDocument>,
}

/// What retention of one cluster did (or would do).
#[derive(Debug, Clone, Default)]
pub struct ForgetReport {
    /// Documents kept, newest first.
    pub kept: Vec<StoredDocument>,
    /// Documents removed (or, dry run, to remove), newest first.
    pub removed: Vec<StoredDocument>,
}

/// Checks a cluster name: not empty or blank, no control characters, at most 253 bytes.
pub fn check_cluster_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::Invalid(
            "the cluster name is empty; name the cluster with --cluster NAME".into(),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "cluster name {name:?} holds a control character; use printable characters"
        )));
    }
    if name.len() > MAX_NAME {
        return Err(Error::Invalid(format!(
            "cluster name is {} bytes long; at most {MAX_NAME} are allowed",
            name.len()
        )));
    }
    Ok(())
}

/// The key prefix of one cluster's documents.
pub(crate) fn cluster_prefix(repo: &Repository, cluster: &str) -> String {
    format!("{PREFIX}{}/", repo.hasher().cluster_key(cluster))
}

/// A new id for a document written at `unix_seconds`.
pub(crate) fn new_id(unix_seconds: i64) -> String {
    let random = &crate::crypto::random_key()[..4];
    format!(
        "{:08x}{}",
        u32::try_from(unix_seconds.max(0)).unwrap_or(u32::MAX),
        hex::encode(random)
    )
}

fn is_id(text: &str) -> bool {
    text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Seals and stores `document` as a new document of `cluster`. Never overwrites: an id that
/// exists already (a 1 in 2^32 chance within one second) is drawn again.
pub async fn write(
    repo: &Repository,
    cluster: &str,
    document: serde_json::Value,
) -> Result<StoredDocument> {
    check_cluster_name(cluster)?;
    let now = time::OffsetDateTime::now_utc();
    let prefix = cluster_prefix(repo, cluster);
    let mut id = new_id(now.unix_timestamp());
    for _ in 0..4 {
        if repo
            .store()
            .size_of(&format!("{prefix}{id}"))
            .await?
            .is_none()
        {
            break;
        }
        id = new_id(now.unix_timestamp());
    }
    let doc = ClusterDocument {
        id: id.clone(),
        cluster: cluster.to_string(),
        time: crate::time_util::now_rfc3339(),
        document,
    };
    let json = serde_json::to_vec(&doc)
        .map_err(|e| Error::internal(format!("cannot encode the cluster document: {e}")))?;
    let key = format!("{prefix}{id}");
    let sealed = repo.seal_object(ObjectKind::ClusterMetadata, &key, &json);
    let size = sealed.len() as u64;
    repo.store().put(&key, Bytes::from(sealed)).await?;
    Ok(StoredDocument {
        document: doc,
        key,
        size,
    })
}

/// Reads and checks the document stored under `key`: it must open as cluster metadata of
/// this repository under this key, and name the cluster and id its key says.
pub async fn read(repo: &Repository, key: &str) -> Result<StoredDocument> {
    let sealed = repo.store().get(key).await?;
    let json = repo.open_object(ObjectKind::ClusterMetadata, key, &sealed)?;
    let document: ClusterDocument = serde_json::from_slice(&json)
        .map_err(|e| Error::corrupt_object(key, format!("{key}: not a cluster document ({e})")))?;
    let expected = format!("{}{}", cluster_prefix(repo, &document.cluster), document.id);
    if expected != key {
        return Err(Error::corrupt_object(
            key,
            format!(
                "{key}: it holds document {} of cluster {:?}, which belongs under another name",
                document.id, document.cluster
            ),
        ));
    }
    Ok(StoredDocument {
        document,
        key: key.to_string(),
        size: sealed.len() as u64,
    })
}

/// Every document of `cluster` (or of every cluster), oldest first.
pub async fn scan(repo: &Repository, cluster: Option<&str>) -> Result<DocumentScan> {
    let prefix = match cluster {
        Some(name) => {
            check_cluster_name(name)?;
            cluster_prefix(repo, name)
        }
        None => PREFIX.to_string(),
    };
    let keys: Vec<String> = repo
        .store()
        .list(&prefix)
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.rsplit('/').next().is_some_and(is_id))
        .collect();
    let results: Vec<std::result::Result<StoredDocument, DamagedDocument>> =
        futures::stream::iter(keys)
            .map(|key| async move {
                match read(repo, &key).await {
                    Ok(doc) => Ok(Ok(doc)),
                    Err(Error::Corrupt {
                        reason: problem, ..
                    }) => Ok(Err(DamagedDocument { key, problem })),
                    Err(Error::Store(e)) if e.is_not_found() => Ok(Err(DamagedDocument {
                        problem: format!("{key}: removed while listing"),
                        key,
                    })),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
    let mut scan = DocumentScan::default();
    for result in results {
        match result {
            Ok(doc) => scan.documents.push(doc),
            Err(damaged) if damaged.problem.ends_with("removed while listing") => {}
            Err(damaged) => scan.damaged.push(damaged),
        }
    }
    scan.documents.sort_by(|a, b| {
        (a.document.time.as_str(), a.document.id.as_str())
            .cmp(&(b.document.time.as_str(), b.document.id.as_str()))
    });
    scan.damaged.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(scan)
}

/// Resolves `spec`: a full id or a unique id prefix (of any cluster), or `latest` of `cluster`.
pub async fn resolve(
    repo: &Repository,
    spec: &str,
    cluster: Option<&str>,
) -> Result<StoredDocument> {
    let scan = scan(repo, cluster).await?;
    if spec == "latest" {
        let Some(cluster) = cluster else {
            return Err(Error::Invalid(
                "`latest` needs --cluster NAME to say which cluster".into(),
            ));
        };
        return scan.documents.into_iter().next_back().ok_or_else(|| {
            Error::NoSuchBackup(format!(
                "cluster {cluster:?} has no metadata documents in this repository"
            ))
        });
    }
    let wanted = spec.trim().to_ascii_lowercase();
    if wanted.is_empty() {
        return Err(Error::Invalid(
            "an empty id matches nothing; give an id, a unique prefix or `latest`".into(),
        ));
    }
    let mut matches: Vec<StoredDocument> = scan
        .documents
        .into_iter()
        .filter(|d| d.document.id.starts_with(&wanted))
        .collect();
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(Error::NoSuchBackup(format!(
            "no cluster metadata document id starts with {spec:?}; `s3mover cluster backups` lists them"
        ))),
        n => Err(Error::NoSuchBackup(format!(
            "{spec:?} matches {n} cluster metadata documents; give more digits"
        ))),
    }
}

/// Keeps the `keep_last` newest documents of exactly `cluster` and removes the rest (unless
/// `dry_run`). Only `cluster`'s own key prefix is listed, so no other cluster's documents are
/// ever considered, whatever their names.
pub async fn forget(
    repo: &Repository,
    cluster: &str,
    keep_last: u32,
    dry_run: bool,
) -> Result<ForgetReport> {
    if keep_last == 0 {
        return Err(Error::Invalid(
            "--keep-last 0 would remove every metadata document of the cluster; keep at least 1"
                .into(),
        ));
    }
    let scan = scan(repo, Some(cluster)).await?;
    let mut newest_first = scan.documents;
    newest_first.reverse();
    let keep = usize::try_from(keep_last).unwrap_or(usize::MAX);
    let removed = if newest_first.len() > keep {
        newest_first.split_off(keep)
    } else {
        Vec::new()
    };
    if !dry_run {
        for doc in &removed {
            repo.store().delete(&doc.key).await?;
        }
    }
    Ok(ForgetReport {
        kept: newest_first,
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_second_and_differ_within_one() {
        let a = new_id(1_700_000_000);
        let b = new_id(1_700_000_000);
        let later = new_id(1_700_000_001);
        assert!(is_id(&a) && is_id(&b) && is_id(&later));
        assert_ne!(a, b, "two documents in the same second get different ids");
        assert_eq!(&a[..8], &b[..8]);
        assert!(later[..8] > a[..8]);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_cluster_name("k3s").is_ok());
        assert!(check_cluster_name(" ").is_err());
        assert!(check_cluster_name("a\nb").is_err());
        assert!(check_cluster_name(&"x".repeat(254)).is_err());
    }
}
