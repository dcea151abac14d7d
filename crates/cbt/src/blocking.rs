//! Blocking wrappers for callers without an async runtime (the backup engine reads ranges as a
//! plain iterator). Each wrapper owns a single-threaded tokio runtime; do not call them from
//! inside an async context.

use std::io::Write;
use std::path::Path;

use s3mover_ranges::{BlockMetadataType, BlockRange};

use crate::{
    CbtError, Client, ListFormat, ListSummary, RangeStream, Selection, StreamOptions, StreamStats,
    VerifyReport,
};

fn runtime() -> Result<tokio::runtime::Runtime, CbtError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CbtError::io("cannot start the async runtime", e))
}

/// [`crate::list`] without async.
pub fn list<W: Write + Send>(
    sel: &Selection,
    opts: StreamOptions,
    format: ListFormat,
    out: W,
) -> Result<ListSummary, CbtError> {
    runtime()?.block_on(crate::list(sel, opts, format, out))
}

/// [`crate::verify`] without async.
pub fn verify(
    sel: &Selection,
    opts: StreamOptions,
    source: &Path,
    target: &Path,
) -> Result<VerifyReport, CbtError> {
    runtime()?.block_on(crate::verify(sel, opts, source, target))
}

/// A listing as a plain iterator of validated ranges (resume, retries and the completeness
/// check included). Memory stays at one message's worth of ranges.
pub struct RangeIter {
    rt: tokio::runtime::Runtime,
    inner: RangeStream,
    buf: std::vec::IntoIter<BlockRange>,
    failed: bool,
}

impl RangeIter {
    /// Connects and prepares the listing of `sel`.
    pub fn open(sel: &Selection, opts: StreamOptions) -> Result<RangeIter, CbtError> {
        let rt = runtime()?;
        let client = rt.block_on(Client::connect(&sel.endpoint))?;
        let inner = client.ranges(sel.query.clone(), opts);
        Ok(RangeIter {
            rt,
            inner,
            buf: Vec::new().into_iter(),
            failed: false,
        })
    }

    /// Waits for the first message: its type and the volume capacity, or `None` when the
    /// server has nothing to list (it then sends no message, so the capacity is unknown).
    pub fn header(&mut self) -> Result<Option<(BlockMetadataType, u64)>, CbtError> {
        self.rt.block_on(self.inner.header())
    }

    /// Stream counters so far.
    pub fn stats(&self) -> &StreamStats {
        self.inner.stats()
    }

    /// Next batch (one server message's ranges), for callers that fold ranges in bulk.
    pub fn next_batch(&mut self) -> Result<Option<Vec<BlockRange>>, CbtError> {
        let rest: Vec<BlockRange> = std::mem::take(&mut self.buf).collect();
        if !rest.is_empty() {
            return Ok(Some(rest));
        }
        self.rt.block_on(self.inner.next_batch())
    }
}

impl Iterator for RangeIter {
    type Item = Result<BlockRange, CbtError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(r) = self.buf.next() {
                return Some(Ok(r));
            }
            match self.rt.block_on(self.inner.next_batch()) {
                Ok(Some(batch)) => self.buf = batch.into_iter(),
                Ok(None) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
