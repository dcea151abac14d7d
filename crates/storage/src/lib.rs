//! Where a repository's objects live: one small interface over `object_store` backends.
//!
//! This crate is the storage half of s3mover and knows nothing of the repository format: keys
//! are opaque strings, objects opaque bytes. Besides the [`Store`] door it holds what moves
//! bytes between the machine and storage: [`direct_io`] and [`pack_buffers`] for the local
//! backend and restore targets, and [`units`], the size and duration grammar of every setting.
//!
//! The engine talks to storage only through [`Store`]: put a whole object, get it or a byte
//! range of it (whole, or streamed as it arrives), check that it exists, list a prefix, delete. Backends — a local directory, S3 —
//! differ only in how [`open_store`] builds them; retries and timeouts are the backend's one
//! retry policy (`object_store`'s `RetryConfig`), never nested in the engine.
//!
//! # Multipart uploads
//!
//! A store opened with [`MultipartSettings`] (S3 stores are; see [`s3`]) writes objects of at
//! least [`MultipartSettings::threshold`] bytes as a multipart upload: one request creates the
//! upload (a POST), fixed-size parts go up with at most [`MultipartSettings::concurrency`] in
//! flight (PUTs; only the last part may be smaller), and one request completes it (a POST), at
//! which moment the whole object appears at once. Each of these requests is retried by the
//! backend's retry policy like any other. When any of them finally fails, or the put is
//! cancelled, the upload is aborted (a DELETE) so that no parts are left stored — and billed —
//! under an upload that will never complete.

#![warn(unreachable_pub, missing_docs)]

pub mod abandoned;
mod attempts;
mod counts;
pub mod direct_io;
pub mod local;
pub mod pack_buffers;
pub mod s3;
mod stall;
pub mod units;
mod url;

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{MultipartUpload, ObjectStore, PutPayload};
use tokio::task::JoinSet;

pub use self::counts::{RequestCounts, RequestSnapshot};
pub use self::url::{open_store, open_store_with_env, RepoLocation, StoreOptions};

/// A storage error, with the object key it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("object {key} not found in the repository")]
    NotFound {
        /// The key asked for.
        key: String,
    },
    /// The store refused or failed the request.
    #[error("storage request for {key} failed: {message}")]
    Backend {
        /// The key of the request.
        key: String,
        /// What the store said, on one line.
        message: String,
    },
    /// The object is shorter than a read needs: missing data, not a storage failure.
    #[error("object {key} is truncated: {detail}")]
    Truncated {
        /// The key of the object.
        key: String,
        /// How much was asked for and how much there is.
        detail: String,
    },
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

    /// True when the object exists but is shorter than a read needed.
    pub fn is_truncated(&self) -> bool {
        matches!(self, StoreError::Truncated { .. })
    }
}

/// The text with every run of white space (line breaks included) folded to one space: error
/// messages from servers and libraries, fit for a one-line report.
pub fn one_line(text: &str) -> String {
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

/// Smallest part of a multipart upload but the last (S3's limit).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Largest part of a multipart upload (S3's limit).
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Most parts in one multipart upload (S3's limit); larger objects get larger parts.
pub const MAX_PARTS: u64 = 10_000;

/// When and how a [`Store`] splits an object into a multipart upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultipartSettings {
    /// Objects of at least this many bytes are uploaded in parts.
    pub threshold: u64,
    /// Bytes per part, [`MIN_PART_SIZE`]..=[`MAX_PART_SIZE`]; the last part holds the rest.
    pub part_size: u64,
    /// Parts of one object in flight at once.
    pub concurrency: usize,
}

impl MultipartSettings {
    /// The part size for an object of `len` bytes: the configured one, grown when the object
    /// would otherwise need more than [`MAX_PARTS`] parts.
    pub fn part_size_for(&self, len: u64) -> u64 {
        self.part_size
            .clamp(MIN_PART_SIZE, MAX_PART_SIZE)
            .max(len.div_ceil(MAX_PARTS))
    }
}

/// The state of [`Store::get_range_stream`]: counts what arrived and ends with an error when it
/// is not exactly the range asked for.
struct RangeStream {
    pieces: BoxStream<'static, object_store::Result<Bytes>>,
    key: String,
    range: Range<u64>,
    received: u64,
    ended: bool,
}

impl RangeStream {
    async fn next(mut self) -> Option<(Result<Bytes, StoreError>, Self)> {
        if self.ended {
            return None;
        }
        let wanted = self.range.end - self.range.start;
        let item = match self.pieces.next().await {
            Some(Ok(piece)) => {
                self.received += piece.len() as u64;
                if self.received <= wanted {
                    Ok(piece)
                } else {
                    Err(self.wrong_length("more bytes than that"))
                }
            }
            Some(Err(e)) => Err(StoreError::from_backend(&self.key, e)),
            None if self.received == wanted => return None,
            None => Err(self.wrong_length(&format!(
                "only {} bytes; the object is truncated",
                self.received
            ))),
        };
        self.ended = item.is_err();
        Some((item, self))
    }

    fn wrong_length(&self, what: &str) -> StoreError {
        let message = format!(
            "asked for bytes {}..{} but got {what}",
            self.range.start, self.range.end
        );
        let key = self.key.clone();
        if self.received < self.range.end - self.range.start {
            StoreError::Truncated {
                key,
                detail: message,
            }
        } else {
            StoreError::Backend { key, message }
        }
    }
}

/// A multipart upload that has not completed: aborted in the background if dropped while
/// still armed (a cancelled put), so its parts do not stay stored.
struct PendingUpload {
    upload: Option<Box<dyn MultipartUpload>>,
    key: String,
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        let Some(mut upload) = self.upload.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let key = std::mem::take(&mut self.key);
        runtime.spawn(async move {
            if let Err(error) = upload.abort().await {
                tracing::warn!(
                    key,
                    error = %one_line(&error.to_string()),
                    "could not abort a cancelled multipart upload"
                );
            }
        });
    }
}

/// The outcome of one part upload task.
fn join_part(
    joined: Option<Result<object_store::Result<()>, tokio::task::JoinError>>,
) -> object_store::Result<()> {
    match joined {
        None => Ok(()),
        Some(Ok(result)) => result,
        Some(Err(join_error)) => Err(object_store::Error::Generic {
            store: "multipart upload",
            source: Box::new(join_error),
        }),
    }
}

/// A repository's object store, rooted at the repository prefix.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn ObjectStore>,
    prefix: Option<ObjectPath>,
    description: String,
    counts: Arc<RequestCounts>,
    /// The HTTP layer's count of failed attempts (network stores only).
    failed_attempts: Option<Arc<attempts::FailedAttempts>>,
    multipart: Option<MultipartSettings>,
    stream_reads: bool,
    /// Packs a backup uploads at once unless told otherwise ([`Self::uploads_in_flight`]).
    uploads_in_flight: usize,
    /// What the backend does beyond the object-store interface, if anything.
    extras: Option<Arc<dyn BackendExtras>>,
}

/// What a backend can do beyond the [`ObjectStore`] interface, for the [`Store`] methods
/// that use it ([`Store::get_range_uncached`], [`Store::remove_abandoned_writes`]); a store
/// whose backend has none falls back to the plain interface. Locations are the backend's, the
/// repository prefix included.
#[async_trait::async_trait]
pub trait BackendExtras: Send + Sync {
    /// Reads `range` of an object that will be read once, around the backend's caches.
    async fn get_range_uncached(
        &self,
        location: &ObjectPath,
        range: Range<u64>,
    ) -> object_store::Result<Bytes>;

    /// Deletes what writes killed midway left under `location` (files no listing shows),
    /// once last modified before `older_than`.
    async fn remove_abandoned_writes(
        &self,
        location: &ObjectPath,
        older_than: std::time::SystemTime,
    ) -> object_store::Result<abandoned::Removed>;
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
            failed_attempts: None,
            multipart: None,
            stream_reads: false,
            uploads_in_flight: 1,
            extras: None,
        }
    }

    /// Deletes what writes killed midway left under `prefix` (a local directory's staged
    /// files, which no listing shows) once last modified before `older_than`; nothing for
    /// stores whose backend leaves none ([`BackendExtras`]).
    pub async fn remove_abandoned_writes(
        &self,
        prefix: &str,
        older_than: std::time::SystemTime,
    ) -> Result<abandoned::Removed, StoreError> {
        let Some(extras) = &self.extras else {
            return Ok(abandoned::Removed::default());
        };
        extras
            .remove_abandoned_writes(&self.path(prefix.trim_end_matches('/')), older_than)
            .await
            .map_err(|e| StoreError::from_backend(prefix, e))
    }

    /// Gives the store what its backend does beyond the object-store interface.
    pub fn with_extras(mut self, extras: Arc<dyn BackendExtras>) -> Self {
        self.extras = Some(extras);
        self
    }

    /// Uploads objects of at least `settings.threshold` bytes in parts (without this, every
    /// object is one PUT).
    pub fn with_multipart(mut self, settings: MultipartSettings) -> Self {
        self.multipart = Some(settings);
        self
    }

    /// Makes [`Self::get_range_stream`] hand over a ranged read piece by piece as it arrives
    /// (for network stores; a local read is fastest whole).
    pub fn with_stream_reads(mut self) -> Self {
        self.stream_reads = true;
        self
    }

    /// Sets how many packs a backup uploads at once by default (see
    /// [`Self::uploads_in_flight`]).
    pub fn with_uploads_in_flight(mut self, uploads: usize) -> Self {
        self.uploads_in_flight = uploads.max(1);
        self
    }

    /// Packs a backup uploads at once by default: 1 unless the backend says otherwise. A local
    /// put is a direct write that takes a fraction of the time it takes to fill the next pack,
    /// so one in flight keeps the disk busy, and each pack fewer in flight is 16 MiB less
    /// memory; S3 requests wait on the network, so S3 stores run several together.
    pub fn uploads_in_flight(&self) -> usize {
        self.uploads_in_flight
    }

    /// True when [`Self::get_range_stream`] hands reads over as they arrive (network stores).
    pub fn streams_reads(&self) -> bool {
        self.stream_reads
    }

    /// Reports, in [`Self::counts`], the failed attempts the HTTP layer counts in `attempts`.
    fn with_failed_attempts(mut self, attempts: Arc<attempts::FailedAttempts>) -> Self {
        self.failed_attempts = Some(attempts);
        self
    }

    /// How this store splits large objects, if it does.
    pub fn multipart(&self) -> Option<MultipartSettings> {
        self.multipart
    }

    /// Where the repository is, for messages (never holds secrets).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The requests this store has made so far.
    pub fn counts(&self) -> RequestSnapshot {
        RequestSnapshot {
            failed_attempts: self.failed_attempts.as_ref().map_or(0, |a| a.count()),
            ..self.counts.snapshot()
        }
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
    /// Objects at or above the multipart threshold go up in parts (see the module docs).
    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        RequestCounts::bump(&self.counts.objects_put, 1);
        RequestCounts::bump(&self.counts.bytes_put, data.len() as u64);
        if let Some(settings) = self.multipart {
            if data.len() as u64 >= settings.threshold {
                return self.put_multipart(key, data, settings).await;
            }
        }
        RequestCounts::bump(&self.counts.put, 1);
        self.backend
            .put(&self.path(key), PutPayload::from_bytes(data))
            .await
            .map(|_| ())
            .map_err(|e| StoreError::from_backend(key, e))
    }

    /// Writes `data` as one multipart upload, aborting the upload if it cannot complete.
    async fn put_multipart(
        &self,
        key: &str,
        data: Bytes,
        settings: MultipartSettings,
    ) -> Result<(), StoreError> {
        RequestCounts::bump(&self.counts.post, 1);
        let upload = self
            .backend
            .put_multipart(&self.path(key))
            .await
            .map_err(|e| StoreError::from_backend(key, e))?;
        let mut pending = PendingUpload {
            upload: Some(upload),
            key: key.to_string(),
        };
        let mut parts = JoinSet::new();
        let result = self
            .upload_parts(&mut pending, &mut parts, data, settings)
            .await;
        match result {
            Ok(()) => Ok(()),
            Err(error) => {
                // Parts still in flight would store data after the abort; stop them first.
                parts.shutdown().await;
                if let Some(mut upload) = pending.upload.take() {
                    RequestCounts::bump(&self.counts.delete, 1);
                    if let Err(abort_error) = upload.abort().await {
                        tracing::warn!(
                            key,
                            error = %one_line(&abort_error.to_string()),
                            "could not abort a failed multipart upload; its parts stay stored until the bucket's lifecycle rule for incomplete multipart uploads removes them"
                        );
                    }
                }
                Err(StoreError::from_backend(key, error))
            }
        }
    }

    /// Uploads the parts of `data` with at most `settings.concurrency` in flight, then
    /// completes the upload (and disarms `pending`).
    async fn upload_parts(
        &self,
        pending: &mut PendingUpload,
        parts: &mut JoinSet<object_store::Result<()>>,
        data: Bytes,
        settings: MultipartSettings,
    ) -> object_store::Result<()> {
        let Some(upload) = pending.upload.as_mut() else {
            return Ok(());
        };
        let part_size = settings.part_size_for(data.len() as u64) as usize;
        let mut start = 0;
        while start < data.len() {
            while parts.len() >= settings.concurrency.max(1) {
                join_part(parts.join_next().await)?;
            }
            let end = (start + part_size).min(data.len());
            RequestCounts::bump(&self.counts.put, 1);
            parts.spawn(upload.put_part(PutPayload::from_bytes(data.slice(start..end))));
            start = end;
        }
        while let Some(joined) = parts.join_next().await {
            join_part(Some(joined))?;
        }
        RequestCounts::bump(&self.counts.post, 1);
        upload.complete().await?;
        pending.upload = None;
        Ok(())
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
        let bytes = match self.backend.get_range(&self.path(key), range.clone()).await {
            Ok(bytes) => bytes,
            Err(e) => return Err(self.range_error(key, &range, e).await),
        };
        check_range_length(key, &range, wanted, bytes.len())?;
        Ok(bytes)
    }

    /// The error of a failed ranged read: a range past the object's end (which stores answer
    /// with a backend-specific error, such as HTTP 416) is a truncated object.
    async fn range_error(
        &self,
        key: &str,
        range: &Range<u64>,
        error: object_store::Error,
    ) -> StoreError {
        let error = StoreError::from_backend(key, error);
        if !matches!(error, StoreError::Backend { .. }) {
            return error;
        }
        match self.size_of(key).await {
            Ok(Some(size)) if size < range.end => StoreError::Truncated {
                key: key.to_string(),
                detail: format!(
                    "it is {size} bytes but bytes {}..{} were asked for",
                    range.start, range.end
                ),
            },
            _ => error,
        }
    }

    /// Reads `range` of an object that will be read once and not again soon (prune copying
    /// packs): a backend that can read around its caches does ([`BackendExtras`]: a local
    /// directory reads with `O_DIRECT` into a reused buffer, whatever the size, so it neither
    /// fills the page cache nor pays the cache's system time); other stores read it as
    /// [`Self::get_range`] does. Either way its length is checked.
    pub async fn get_range_uncached(
        &self,
        key: &str,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        let Some(extras) = &self.extras else {
            return self.get_range(key, range).await;
        };
        RequestCounts::bump(&self.counts.get, 1);
        let wanted = range.end - range.start;
        let bytes = match extras
            .get_range_uncached(&self.path(key), range.clone())
            .await
        {
            Ok(bytes) => bytes,
            Err(e) => return Err(self.range_error(key, &range, e).await),
        };
        check_range_length(key, &range, wanted, bytes.len())?;
        Ok(bytes)
    }

    /// Reads `range` of an object as pieces in the order they arrive, so the caller can work on
    /// the first bytes while the rest is on its way and need not hold the whole range at once.
    /// Stores opened [`Self::with_stream_reads`] (S3) stream; others answer with one piece.
    /// The pieces add up to exactly the range: a short or long answer ends the stream with an
    /// error, never silently. A body cut mid-stream is resumed by the backend's retry policy
    /// (a ranged GET pinned to the object's ETag), so it is one GET as counted here.
    pub async fn get_range_stream(
        &self,
        key: &str,
        range: Range<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes, StoreError>>, StoreError> {
        if !self.stream_reads {
            let bytes = self.get_range(key, range).await?;
            return Ok(futures::stream::once(async move { Ok(bytes) }).boxed());
        }
        RequestCounts::bump(&self.counts.get, 1);
        let options = object_store::GetOptions {
            range: Some(object_store::GetRange::Bounded(range.clone())),
            ..Default::default()
        };
        let pieces = match self.backend.get_opts(&self.path(key), options).await {
            Ok(answer) => answer.into_stream(),
            Err(e) => return Err(self.range_error(key, &range, e).await),
        };
        let state = RangeStream {
            pieces,
            key: key.to_string(),
            range,
            received: 0,
            ended: false,
        };
        Ok(futures::stream::unfold(state, RangeStream::next).boxed())
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

/// A ranged read's answer must be exactly the range: a short one means a truncated object.
fn check_range_length(
    key: &str,
    range: &Range<u64>,
    wanted: u64,
    got: usize,
) -> Result<(), StoreError> {
    if (got as u64) < wanted {
        return Err(StoreError::Truncated {
            key: key.to_string(),
            detail: format!(
                "asked for bytes {}..{} but got {got} bytes",
                range.start, range.end
            ),
        });
    }
    if got as u64 != wanted {
        return Err(StoreError::Backend {
            key: key.to_string(),
            message: format!(
                "asked for bytes {}..{} but got {got} bytes",
                range.start, range.end
            ),
        });
    }
    Ok(())
}

/// Helpers for the storage modules' unit tests.
#[cfg(test)]
mod test_support {
    use std::time::Duration;

    /// The error of a connection attempt that times out: to a listener whose queue is full, so
    /// that the kernel drops the handshake.
    pub(crate) async fn connect_timeout_error() -> reqwest::Error {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let any_port: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
        listener.bind(&any_port.into()).expect("bind");
        listener.listen(0).expect("listen");
        let address = listener
            .local_addr()
            .expect("address")
            .as_socket()
            .expect("an IP address");
        // A backlog of 0 queues one connection; the attempts after it are dropped.
        let _queued = std::net::TcpStream::connect(address).expect("the queued connection");
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(300))
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        // On a loaded machine the kernel may answer a dropped attempt otherwise (a reset); a
        // few attempts give the timeout this stands for.
        let mut error = None;
        for _ in 0..5 {
            let e = client
                .get(format!("http://{address}/"))
                .send()
                .await
                .expect_err("the queue is full");
            let timed_out = e.is_timeout();
            error = Some(e);
            if timed_out {
                break;
            }
        }
        error.expect("at least one attempt")
    }
}

#[cfg(test)]
mod tests;
