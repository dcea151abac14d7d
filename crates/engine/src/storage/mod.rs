//! Where a repository's objects live: one small interface over `object_store` backends.
//!
//! The engine talks to storage only through [`Store`]: put a whole object, get it or a byte
//! range of it, check that it exists, list a prefix, delete. Backends — a local directory, S3 —
//! differ only in how [`open_store`] builds them; retries and timeouts are the backend's one
//! retry policy (`object_store`'s `RetryConfig`), never nested in the engine.

pub mod s3;
mod url;

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};

pub use self::url::{open_store, open_store_with_env, RepoLocation, StoreOptions};

/// A storage error, with the object key it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("object {key} not found in the repository")]
    NotFound { key: String },
    /// The store refused or failed the request.
    #[error("storage request for {key} failed: {message}")]
    Backend { key: String, message: String },
    /// The repository URL cannot be used.
    #[error("{0}")]
    Location(String),
    /// The store as a whole cannot be used (credentials, bucket, region, endpoint), with what
    /// to check; see [`s3::explain`].
    #[error("{0}")]
    Access(String),
}

impl StoreError {
    fn from_backend(key: &str, error: object_store::Error) -> Self {
        // Checked before NotFound: a missing bucket answers 404 too.
        if let Some(message) = s3::explain(&error) {
            return StoreError::Access(message);
        }
        match error {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                key: key.to_string(),
            },
            other => StoreError::Backend {
                key: key.to_string(),
                message: one_line(&other.to_string()),
            },
        }
    }

    /// True when the object was missing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What a listing says of one object.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// Key relative to the repository root, e.g. `packs/ab/ab12…`.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When the object was last written.
    pub last_modified: time::OffsetDateTime,
}

/// Counts of requests a [`Store`] made, for reports and benchmarks.
#[derive(Debug, Default)]
pub struct RequestCounts {
    pub put: std::sync::atomic::AtomicU64,
    pub get: std::sync::atomic::AtomicU64,
    pub head: std::sync::atomic::AtomicU64,
    pub list: std::sync::atomic::AtomicU64,
    pub delete: std::sync::atomic::AtomicU64,
    pub bytes_put: std::sync::atomic::AtomicU64,
}

impl RequestCounts {
    fn bump(counter: &std::sync::atomic::AtomicU64, by: u64) {
        counter.fetch_add(by, std::sync::atomic::Ordering::Relaxed);
    }

    /// A plain snapshot of the counters: (put, get, head, list, delete, bytes put).
    pub fn snapshot(&self) -> RequestSnapshot {
        use std::sync::atomic::Ordering::Relaxed;
        RequestSnapshot {
            put: self.put.load(Relaxed),
            get: self.get.load(Relaxed),
            head: self.head.load(Relaxed),
            list: self.list.load(Relaxed),
            delete: self.delete.load(Relaxed),
            bytes_put: self.bytes_put.load(Relaxed),
        }
    }
}

/// Request counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestSnapshot {
    pub put: u64,
    pub get: u64,
    pub head: u64,
    pub list: u64,
    pub delete: u64,
    pub bytes_put: u64,
}

impl RequestSnapshot {
    /// The requests made between `earlier` and `self`.
    pub fn since(&self, earlier: &RequestSnapshot) -> RequestSnapshot {
        RequestSnapshot {
            put: self.put - earlier.put,
            get: self.get - earlier.get,
            head: self.head - earlier.head,
            list: self.list - earlier.list,
            delete: self.delete - earlier.delete,
            bytes_put: self.bytes_put - earlier.bytes_put,
        }
    }
}

/// A repository's object store, rooted at the repository prefix.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn ObjectStore>,
    prefix: Option<ObjectPath>,
    description: String,
    counts: Arc<RequestCounts>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.description)
            .finish()
    }
}

impl Store {
    /// Wraps a backend; `prefix` is the repository's folder inside it, if any.
    pub fn new(backend: Arc<dyn ObjectStore>, prefix: &str, description: String) -> Self {
        let prefix = prefix.trim_matches('/');
        Store {
            backend,
            prefix: (!prefix.is_empty()).then(|| ObjectPath::from(prefix)),
            description,
            counts: Arc::new(RequestCounts::default()),
        }
    }

    /// Where the repository is, for messages (never holds secrets).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The requests this store has made so far.
    pub fn counts(&self) -> RequestSnapshot {
        self.counts.snapshot()
    }

    fn path(&self, key: &str) -> ObjectPath {
        match &self.prefix {
            Some(prefix) => ObjectPath::from(format!("{prefix}/{key}")),
            None => ObjectPath::from(key),
        }
    }

    fn key_of(&self, path: &ObjectPath) -> String {
        let full = path.as_ref();
        match &self.prefix {
            Some(prefix) => full
                .strip_prefix(prefix.as_ref())
                .map(|rest| rest.trim_start_matches('/').to_string())
                .unwrap_or_else(|| full.to_string()),
            None => full.to_string(),
        }
    }

    /// Writes a whole object (atomically: readers see the old object, nothing, or the new one).
    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        RequestCounts::bump(&self.counts.put, 1);
        RequestCounts::bump(&self.counts.bytes_put, data.len() as u64);
        self.backend
            .put(&self.path(key), PutPayload::from_bytes(data))
            .await
            .map(|_| ())
            .map_err(|e| StoreError::from_backend(key, e))
    }

    /// Reads a whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        RequestCounts::bump(&self.counts.get, 1);
        let result = self
            .backend
            .get(&self.path(key))
            .await
            .map_err(|e| StoreError::from_backend(key, e))?;
        result
            .bytes()
            .await
            .map_err(|e| StoreError::from_backend(key, e))
    }

    /// Reads an object, or `None` when it does not exist.
    pub async fn get_optional(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match self.get(key).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads `range` of an object; a short answer is an error, never silently used.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        RequestCounts::bump(&self.counts.get, 1);
        let wanted = range.end - range.start;
        let bytes = self
            .backend
            .get_range(&self.path(key), range.clone())
            .await
            .map_err(|e| StoreError::from_backend(key, e))?;
        if bytes.len() as u64 != wanted {
            return Err(StoreError::Backend {
                key: key.to_string(),
                message: format!(
                    "asked for bytes {}..{} but got {} bytes; the object is truncated",
                    range.start,
                    range.end,
                    bytes.len()
                ),
            });
        }
        Ok(bytes)
    }

    /// The size of an object, or `None` when it does not exist.
    pub async fn size_of(&self, key: &str) -> Result<Option<u64>, StoreError> {
        RequestCounts::bump(&self.counts.head, 1);
        match self.backend.head(&self.path(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StoreError::from_backend(key, e)),
        }
    }

    /// Lists every object under `prefix` (a folder such as `backups/`).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        RequestCounts::bump(&self.counts.list, 1);
        let path = self.path(prefix.trim_end_matches('/'));
        let objects: Vec<_> = self
            .backend
            .list(Some(&path))
            .try_collect()
            .await
            .map_err(|e| StoreError::from_backend(prefix, e))?;
        Ok(objects
            .into_iter()
            .map(|meta| ObjectInfo {
                key: self.key_of(&meta.location),
                size: meta.size,
                last_modified: time::OffsetDateTime::from_unix_timestamp(
                    meta.last_modified.timestamp(),
                )
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            })
            .collect())
    }

    /// Deletes an object; deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        RequestCounts::bump(&self.counts.delete, 1);
        match self.backend.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::from_backend(key, e)),
        }
    }
}
