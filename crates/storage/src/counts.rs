//! Counts of the requests a store made, for reports and benchmarks.

/// Counts of requests a [`crate::Store`] made, for reports and benchmarks. Each counts the requests
/// the engine asked for; the backend's retries of one request are not counted again.
#[derive(Debug, Default)]
pub struct RequestCounts {
    /// PUT requests: whole objects and the parts of multipart uploads.
    pub put: std::sync::atomic::AtomicU64,
    /// GET requests, whole and ranged.
    pub get: std::sync::atomic::AtomicU64,
    /// HEAD requests (sizes and existence).
    pub head: std::sync::atomic::AtomicU64,
    /// LIST requests (each page of a listing).
    pub list: std::sync::atomic::AtomicU64,
    /// DELETE requests: deleted objects and aborted multipart uploads.
    pub delete: std::sync::atomic::AtomicU64,
    /// POST requests: creating and completing multipart uploads.
    pub post: std::sync::atomic::AtomicU64,
    /// Objects written, by a single PUT or by a multipart upload (attempted, as `put` is).
    pub objects_put: std::sync::atomic::AtomicU64,
    /// Bytes sent in PUT requests.
    pub bytes_put: std::sync::atomic::AtomicU64,
}

impl RequestCounts {
    pub(crate) fn bump(counter: &std::sync::atomic::AtomicU64, by: u64) {
        counter.fetch_add(by, std::sync::atomic::Ordering::Relaxed);
    }

    /// A plain snapshot of the counters.
    pub fn snapshot(&self) -> RequestSnapshot {
        use std::sync::atomic::Ordering::Relaxed;
        RequestSnapshot {
            put: self.put.load(Relaxed),
            get: self.get.load(Relaxed),
            head: self.head.load(Relaxed),
            list: self.list.load(Relaxed),
            delete: self.delete.load(Relaxed),
            post: self.post.load(Relaxed),
            objects_put: self.objects_put.load(Relaxed),
            bytes_put: self.bytes_put.load(Relaxed),
            failed_attempts: 0,
        }
    }
}

/// Request counts at one moment (see [`RequestCounts`] for what each counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestSnapshot {
    /// See [`RequestCounts::put`].
    pub put: u64,
    /// See [`RequestCounts::get`].
    pub get: u64,
    /// See [`RequestCounts::head`].
    pub head: u64,
    /// See [`RequestCounts::list`].
    pub list: u64,
    /// See [`RequestCounts::delete`].
    pub delete: u64,
    /// See [`RequestCounts::post`].
    pub post: u64,
    /// See [`RequestCounts::objects_put`].
    pub objects_put: u64,
    /// See [`RequestCounts::bytes_put`].
    pub bytes_put: u64,
    /// Attempts that failed (answers of 5xx, 429 or 408, timeouts, stalls, refused or broken
    /// connections), each sent again unless the retry policy's budget was spent. Counted
    /// apart from the requests above, which count each request once however often it was
    /// tried. Always 0 for a local directory.
    pub failed_attempts: u64,
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
            post: self.post - earlier.post,
            objects_put: self.objects_put - earlier.objects_put,
            bytes_put: self.bytes_put - earlier.bytes_put,
            failed_attempts: self.failed_attempts - earlier.failed_attempts,
        }
    }
}
