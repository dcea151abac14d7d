//! A listing (`GetMetadataAllocated` or `GetMetadataDelta`) as a stream of validated ranges that
//! survives broken streams.
//!
//! Rules applied here, in order of arrival:
//! - every message must carry a known type and the same type and capacity; every range is
//!   checked by [`s3mover_ranges::RangeValidator`] (ascending, non-overlapping, non-empty,
//!   inside the capacity, FIXED_LENGTH sizes constant). A violation is an error naming the range.
//! - a retryable break (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, INTERNAL, UNKNOWN, CANCELLED —
//!   the last three cover transport errors) resumes with `starting_offset` = end of the last
//!   range; a first range of the new call that ends at or before that offset is dropped, one that
//!   straddles it is clipped (VARIABLE_LENGTH only — a straddling FIXED_LENGTH block overlaps
//!   the previous one and is refused). Nothing is asked at or past the capacity.
//! - retries are bounded: `max_attempts` consecutive failures without a new range end the
//!   listing; the first retry after progress is immediate, later ones back off exponentially.
//! - UNAUTHENTICATED on a call refreshes the token once (until the next progress) and retries.
//! - after a clean end of stream that delivered ranges, the same question is asked again from
//!   the last end offset; a correct server answers nothing, one that ends streams early (vSphere)
//!   answers the rest. OUT_OF_RANGE on such a check means "nothing more".

use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use s3mover_ranges::{BlockMetadataType, BlockRange, RangeValidator};
use tonic::Code;

use crate::connect::{Client, Flavour};
use crate::proto::{csi, k8s};
use crate::CbtError;

/// What to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Kubernetes flavour: the VolumeSnapshot name. CSI flavour: the CSI snapshot id.
    pub snapshot: String,
    /// The base snapshot's CSI handle; `Some` asks for a delta, `None` for allocated ranges.
    pub base: Option<String>,
    /// First byte of interest (0 = the start).
    pub starting_offset: u64,
    /// Ranges per message; 0 lets the server choose.
    pub max_results: i32,
}

/// How hard to try.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Consecutive failed attempts without a new range before giving up.
    pub max_attempts: u32,
    /// Delay before the second consecutive retry; doubles each time after.
    pub initial_backoff: Duration,
    /// Upper bound of the delay.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Options of a listing.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Retry budget and backoff.
    pub retry: RetryPolicy,
    /// Re-ask after a clean end of stream (needed for servers that end streams early).
    pub check_completeness: bool,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            retry: RetryPolicy::default(),
            check_completeness: true,
        }
    }
}

/// Counters of one listing, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// RPCs opened (first call, resumes and completeness checks).
    pub calls: u64,
    /// Response messages received.
    pub messages: u64,
    /// Ranges handed out.
    pub ranges: u64,
    /// Calls opened again after a retryable failure.
    pub retries: u64,
    /// Calls opened after a clean end of stream to check that nothing is left.
    pub completeness_calls: u64,
    /// Ranges dropped because they ended at or before the resume offset.
    pub dropped: u64,
    /// Ranges clipped because they straddled the resume offset.
    pub clipped: u64,
    /// Times the token was refreshed after the server refused it.
    pub token_refreshes: u64,
}

struct RawMsg {
    kind: i32,
    capacity: i64,
    blocks: Vec<(i64, i64)>,
}

type RawStream = BoxStream<'static, Result<RawMsg, tonic::Status>>;

/// A listing in progress. Get ranges with [`RangeStream::next_batch`] (one batch per message)
/// or [`RangeStream::into_ranges`].
pub struct RangeStream {
    client: Client,
    query: Query,
    opts: StreamOptions,
    current: Option<RawStream>,
    validator: Option<RangeValidator>,
    next_offset: u64,
    call_start: u64,
    call_is_resume: bool,
    call_is_check: bool,
    next_call_is_check: bool,
    accepted_this_call: u64,
    failures: u32,
    force_token_refresh: bool,
    refreshed_since_progress: bool,
    done: bool,
    pending: Option<Vec<BlockRange>>,
    stats: StreamStats,
}

impl Client {
    /// Starts listing; nothing is sent until the first batch is asked for.
    pub fn ranges(&self, query: Query, opts: StreamOptions) -> RangeStream {
        RangeStream {
            client: self.clone(),
            next_offset: query.starting_offset,
            call_start: query.starting_offset,
            query,
            opts,
            current: None,
            validator: None,
            call_is_resume: false,
            call_is_check: false,
            next_call_is_check: false,
            accepted_this_call: 0,
            failures: 0,
            force_token_refresh: false,
            refreshed_since_progress: false,
            done: false,
            pending: None,
            stats: StreamStats::default(),
        }
    }
}

impl RangeStream {
    /// The block metadata type, once the first message has arrived.
    pub fn kind(&self) -> Option<BlockMetadataType> {
        self.validator.as_ref().map(|v| v.kind())
    }

    /// The volume capacity, once the first message has arrived.
    pub fn capacity(&self) -> Option<u64> {
        self.validator.as_ref().map(|v| v.capacity())
    }

    /// Counters so far.
    pub fn stats(&self) -> &StreamStats {
        &self.stats
    }

    /// The query being answered.
    pub fn query(&self) -> &Query {
        &self.query
    }

    /// Waits for the first message and returns its type and capacity; `None` when the listing
    /// is empty (a server sends no message at all when nothing is allocated or changed).
    pub async fn header(&mut self) -> Result<Option<(BlockMetadataType, u64)>, CbtError> {
        if self.validator.is_none() && self.pending.is_none() && !self.done {
            if let Some(batch) = self.next_batch().await? {
                self.pending = Some(batch);
            }
        }
        Ok(self.validator.as_ref().map(|v| (v.kind(), v.capacity())))
    }

    /// The next non-empty batch of validated ranges, or `None` when the listing is complete.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<BlockRange>>, CbtError> {
        if let Some(batch) = self.pending.take() {
            return Ok(Some(batch));
        }
        loop {
            if self.done {
                return Ok(None);
            }
            let Some(current) = self.current.as_mut() else {
                self.open_call().await?;
                continue;
            };
            match current.next().await {
                Some(Ok(msg)) => {
                    self.stats.messages += 1;
                    let batch = self.accept(msg)?;
                    if !batch.is_empty() {
                        self.failures = 0;
                        self.refreshed_since_progress = false;
                        return Ok(Some(batch));
                    }
                }
                Some(Err(status)) => {
                    self.current = None;
                    self.on_status(status).await?;
                }
                None => {
                    self.current = None;
                    self.on_clean_end();
                }
            }
        }
    }

    /// All ranges, one at a time.
    pub fn into_ranges(self) -> impl Stream<Item = Result<BlockRange, CbtError>> + Send {
        futures::stream::try_unfold(self, |mut s| async move {
            let batch = s.next_batch().await?;
            Ok::<_, CbtError>(batch.map(|b| (futures::stream::iter(b.into_iter().map(Ok)), s)))
        })
        .try_flatten()
    }

    fn describe(&self) -> String {
        describe(&self.client, &self.query)
    }

    async fn open_call(&mut self) -> Result<(), CbtError> {
        if self.stats.calls > 0 {
            if let Some(v) = &self.validator {
                if self.next_offset >= v.capacity() {
                    // Nothing can lie past the capacity; asking would only earn OUT_OF_RANGE.
                    self.done = true;
                    return Ok(());
                }
            }
        }
        let start = self.next_offset;
        let starting_offset = i64::try_from(start).map_err(|_| {
            CbtError::Usage(format!("starting offset {start} does not fit in an int64"))
        })?;
        let max_results = self.query.max_results;
        let force = std::mem::take(&mut self.force_token_refresh);
        let opened: Result<RawStream, tonic::Status> = match &self.client.flavour {
            Flavour::K8s {
                rpc,
                namespace,
                token,
            } => {
                let security_token = token.token(force).await?;
                let mut rpc = rpc.clone();
                match &self.query.base {
                    None => {
                        let req = k8s::GetMetadataAllocatedRequest {
                            security_token,
                            namespace: namespace.clone(),
                            snapshot_name: self.query.snapshot.clone(),
                            starting_offset,
                            max_results,
                        };
                        rpc.get_metadata_allocated(req).await.map(raw_stream)
                    }
                    Some(base) => {
                        let req = k8s::GetMetadataDeltaRequest {
                            security_token,
                            namespace: namespace.clone(),
                            base_snapshot_id: base.clone(),
                            target_snapshot_name: self.query.snapshot.clone(),
                            starting_offset,
                            max_results,
                        };
                        rpc.get_metadata_delta(req).await.map(raw_stream)
                    }
                }
            }
            Flavour::Csi { rpc, secrets } => {
                let mut rpc = rpc.clone();
                match &self.query.base {
                    None => {
                        let req = csi::GetMetadataAllocatedRequest {
                            snapshot_id: self.query.snapshot.clone(),
                            starting_offset,
                            max_results,
                            secrets: secrets.clone(),
                        };
                        rpc.get_metadata_allocated(req).await.map(raw_stream)
                    }
                    Some(base) => {
                        let req = csi::GetMetadataDeltaRequest {
                            base_snapshot_id: base.clone(),
                            target_snapshot_id: self.query.snapshot.clone(),
                            starting_offset,
                            max_results,
                            secrets: secrets.clone(),
                        };
                        rpc.get_metadata_delta(req).await.map(raw_stream)
                    }
                }
            }
        };
        self.stats.calls += 1;
        self.call_start = start;
        self.accepted_this_call = 0;
        self.call_is_resume = self.validator.as_ref().and_then(|v| v.last_end()) == Some(start);
        self.call_is_check = std::mem::take(&mut self.next_call_is_check);
        match opened {
            Ok(stream) => {
                self.current = Some(stream);
                Ok(())
            }
            Err(status) => self.on_status(status).await,
        }
    }

    fn on_clean_end(&mut self) {
        if !self.opts.check_completeness || self.accepted_this_call == 0 {
            self.done = true;
            return;
        }
        match &self.validator {
            Some(v) if self.next_offset < v.capacity() => {
                tracing::debug!(
                    offset = self.next_offset,
                    "stream ended cleanly; asking again from the last end offset to make sure the listing is complete"
                );
                self.next_call_is_check = true;
                self.stats.completeness_calls += 1;
            }
            _ => self.done = true,
        }
    }

    async fn on_status(&mut self, status: tonic::Status) -> Result<(), CbtError> {
        let code = status.code();
        let message = status.message().to_string();
        if code == Code::OutOfRange && self.call_is_check && self.accepted_this_call == 0 {
            // A completeness check answered "nothing there": the listing is complete.
            self.done = true;
            return Ok(());
        }
        if code == Code::Unauthenticated
            && matches!(self.client.flavour, Flavour::K8s { .. })
            && !self.refreshed_since_progress
        {
            tracing::info!("token refused ({message}); refreshing it and asking again");
            self.refreshed_since_progress = true;
            self.force_token_refresh = true;
            self.stats.token_refreshes += 1;
            return Ok(());
        }
        let not_found_msg = code == Code::Unavailable && message.contains("not found");
        let retryable = matches!(
            code,
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::Internal
                | Code::Unknown
                | Code::Cancelled
        ) && !not_found_msg;
        if !retryable {
            return Err(self.fatal(code, message));
        }
        if let Some(v) = &self.validator {
            if self.next_offset >= v.capacity() {
                // The break came after the last possible byte: nothing is missing.
                self.done = true;
                return Ok(());
            }
        }
        self.failures += 1;
        if self.failures >= self.opts.retry.max_attempts {
            return Err(CbtError::RetriesExhausted {
                snapshot: self.describe(),
                attempts: self.failures,
                code,
                message,
                hint: if code == Code::Unavailable {
                    "; the VolumeSnapshot may not be ready to use yet, or the CSI driver behind the service is not ready"
                } else {
                    ""
                },
            });
        }
        if self.failures > 1 {
            let exp = (self.failures - 2).min(20);
            let delay = self
                .opts
                .retry
                .initial_backoff
                .saturating_mul(1u32 << exp)
                .min(self.opts.retry.max_backoff);
            tokio::time::sleep(delay).await;
        }
        tracing::debug!(code = ?code, offset = self.next_offset, "stream broke; resuming");
        self.stats.retries += 1;
        Ok(())
    }

    fn fatal(&self, code: Code, message: String) -> CbtError {
        let snapshot = self.describe();
        match code {
            Code::FailedPrecondition | Code::Unimplemented => CbtError::NoChangeTracking {
                snapshot,
                code,
                message,
            },
            Code::Unauthenticated => CbtError::Unauthenticated { message },
            Code::PermissionDenied => CbtError::PermissionDenied {
                namespace: match &self.client.flavour {
                    Flavour::K8s { namespace, .. } => namespace.clone(),
                    Flavour::Csi { .. } => String::new(),
                },
                message,
            },
            Code::NotFound => CbtError::SnapshotNotFound {
                what: snapshot,
                code,
                message,
                hint: if self.query.base.is_some() {
                    "; if the base snapshot was deleted, no delta can be computed and a full backup is needed"
                } else {
                    ""
                },
            },
            Code::Unavailable => CbtError::SnapshotNotFound {
                what: snapshot,
                code,
                message,
                hint: "; check the VolumeSnapshot name and namespace (kubectl get volumesnapshot -n NAMESPACE)",
            },
            _ => CbtError::Refused {
                snapshot,
                code,
                message,
            },
        }
    }

    fn accept(&mut self, msg: RawMsg) -> Result<Vec<BlockRange>, CbtError> {
        let kind = BlockMetadataType::from_proto_number(i64::from(msg.kind)).ok_or_else(|| {
            CbtError::Protocol {
                snapshot: describe(&self.client, &self.query),
                detail: format!(
                    "message {} has block_metadata_type {} (UNKNOWN); only FIXED_LENGTH (1) and VARIABLE_LENGTH (2) are defined",
                    self.stats.messages, msg.kind
                ),
            }
        })?;
        let capacity = u64::try_from(msg.capacity).map_err(|_| CbtError::Protocol {
            snapshot: describe(&self.client, &self.query),
            detail: format!(
                "message {} has a negative volume_capacity_bytes {}",
                self.stats.messages, msg.capacity
            ),
        })?;
        match &self.validator {
            None => self.validator = Some(RangeValidator::new(kind, capacity)),
            Some(v) => v
                .check_header(kind, capacity)
                .map_err(|source| CbtError::BadRange {
                    snapshot: describe(&self.client, &self.query),
                    source,
                })?,
        }
        let Some(v) = self.validator.as_mut() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(msg.blocks.len());
        for (off, size) in msg.blocks {
            let (Ok(o), Ok(s)) = (u64::try_from(off), u64::try_from(size)) else {
                return Err(CbtError::Protocol {
                    snapshot: describe(&self.client, &self.query),
                    detail: format!(
                        "range #{} [offset {off}, size {size}] has a negative byte_offset or size_bytes",
                        v.accepted()
                    ),
                });
            };
            let mut r = BlockRange::new(o, s);
            if self.accepted_this_call == 0 && self.call_start > 0 && r.size > 0 {
                if r.end() <= self.call_start {
                    self.stats.dropped += 1;
                    continue;
                }
                if r.offset < self.call_start
                    && self.call_is_resume
                    && v.kind() == BlockMetadataType::VariableLength
                {
                    r = BlockRange::new(self.call_start, r.end() - self.call_start);
                    self.stats.clipped += 1;
                }
            }
            v.check(r).map_err(|source| CbtError::BadRange {
                snapshot: describe(&self.client, &self.query),
                source,
            })?;
            self.accepted_this_call += 1;
            self.next_offset = r.end();
            out.push(r);
        }
        self.stats.ranges += out.len() as u64;
        Ok(out)
    }
}

/// A response message of either API that carries one page of block metadata.
trait MetadataPage: Send + 'static {
    /// The page as the stream reads it.
    fn into_raw(self) -> RawMsg;
}

/// The four response messages (allocated and delta, of the Kubernetes and the CSI API) carry
/// the same fields under the same names.
macro_rules! metadata_page {
    ($($message:ty),* $(,)?) => {$(
        impl MetadataPage for $message {
            fn into_raw(self) -> RawMsg {
                RawMsg {
                    kind: self.block_metadata_type,
                    capacity: self.volume_capacity_bytes,
                    blocks: self
                        .block_metadata
                        .iter()
                        .map(|b| (b.byte_offset, b.size_bytes))
                        .collect(),
                }
            }
        }
    )*};
}

metadata_page!(
    k8s::GetMetadataAllocatedResponse,
    k8s::GetMetadataDeltaResponse,
    csi::GetMetadataAllocatedResponse,
    csi::GetMetadataDeltaResponse,
);

/// The stream of a call's answer, as pages the stream reads.
fn raw_stream<M: MetadataPage>(response: tonic::Response<tonic::Streaming<M>>) -> RawStream {
    response
        .into_inner()
        .map(|page| page.map(MetadataPage::into_raw))
        .boxed()
}

fn describe(client: &Client, query: &Query) -> String {
    let snap = match &client.flavour {
        Flavour::K8s { namespace, .. } => {
            format!("VolumeSnapshot {namespace}/{}", query.snapshot)
        }
        Flavour::Csi { .. } => format!("CSI snapshot {}", query.snapshot),
    };
    match &query.base {
        Some(base) => format!("{snap} (delta from base snapshot handle {base})"),
        None => snap,
    }
}
