//! The two gRPC services: the Kubernetes flavour with the sidecar's argument checks, token
//! audience and RBAC checks and status codes, and the CSI flavour as a driver serves it. Both
//! share the driver part: look the snapshots up, check offsets, and stream messages computed
//! from the images, with the configured quirks applied.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use s3mover_cbt::proto::{csi, k8s};
use s3mover_cbt::BlockMetadataType;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Code, Request, Response, Status};

use crate::image::{walk_allocated, walk_delta, walk_synthetic, Source};

/// A bad thing to put into the range list, to test that clients refuse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inject {
    /// Range #1 starts at 0, before range #0 (which must not be at 0).
    OutOfOrder,
    /// Range #1 starts one byte before range #0 ends.
    Overlap,
    /// Range #1 has size 0.
    ZeroSize,
    /// Range #1 starts at the capacity.
    PastCapacity,
    /// Messages after the first flip FIXED_LENGTH ⇄ VARIABLE_LENGTH.
    ChangeType,
    /// Messages after the first report a capacity one block larger.
    ChangeCapacity,
    /// Every message says UNKNOWN (0) as the type.
    UnknownType,
    /// Range #1 is half a block long (breaks FIXED_LENGTH's constant size).
    SizeChange,
}

/// Switchable driver and sidecar behaviour.
#[derive(Debug, Clone)]
pub struct Quirks {
    /// FIXED_LENGTH (hostpath default) or VARIABLE_LENGTH (adjacent blocks merged within a message).
    pub block_type: BlockMetadataType,
    /// Block size in bytes (4096 as in hostpath).
    pub block_size: u64,
    /// Ranges per message when the request says 0 (hostpath 256, Ceph 128, vSphere 10000).
    pub default_max_results: u32,
    /// Upper bound on ranges per message (Ceph caps at 128).
    pub max_results_cap: Option<u32>,
    /// Fail every call with `abort_code` after this many messages.
    pub abort_every: Option<u32>,
    /// Status code used by `abort_every`.
    pub abort_code: Code,
    /// End every call cleanly after its first message (vSphere).
    pub single_message: bool,
    /// OUT_OF_RANGE when `starting_offset` ≥ capacity (Ceph); otherwise an empty stream (hostpath).
    pub out_of_range_at_end: bool,
    /// Audience a token must carry (sidecar `--audience`).
    pub audience: String,
    /// A protocol violation to inject.
    pub inject: Option<Inject>,
    /// Answer UNIMPLEMENTED to everything (a driver without the service).
    pub unimplemented: bool,
}

impl Default for Quirks {
    fn default() -> Self {
        Quirks::hostpath()
    }
}

impl Quirks {
    /// csi-driver-host-path: FIXED_LENGTH 4 KiB blocks, 256 per message, empty stream past the end.
    pub fn hostpath() -> Self {
        Quirks {
            block_type: BlockMetadataType::FixedLength,
            block_size: 4096,
            default_max_results: 256,
            max_results_cap: None,
            abort_every: None,
            abort_code: Code::Aborted,
            single_message: false,
            out_of_range_at_end: false,
            audience: "test-backup-client".into(),
            inject: None,
            unimplemented: false,
        }
    }

    /// Ceph RBD: VARIABLE_LENGTH, 128 per message (default and cap), OUT_OF_RANGE at the end.
    pub fn ceph() -> Self {
        Quirks {
            block_type: BlockMetadataType::VariableLength,
            default_max_results: 128,
            max_results_cap: Some(128),
            out_of_range_at_end: true,
            ..Quirks::hostpath()
        }
    }

    /// vSphere: VARIABLE_LENGTH, 10000 per message, one message per call then a clean end.
    pub fn vsphere() -> Self {
        Quirks {
            block_type: BlockMetadataType::VariableLength,
            default_max_results: 10000,
            single_message: true,
            ..Quirks::hostpath()
        }
    }
}

/// A token the fake TokenReview/SubjectAccessReview knows.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    /// Audiences the token was issued for.
    pub audiences: Vec<String>,
    /// Namespaces where its service account may `get volumesnapshots`.
    pub namespaces: Vec<String>,
    /// Calls it is still accepted for (`None` = unlimited); simulates expiry.
    pub uses_left: Option<u32>,
}

/// A registered snapshot.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// VolumeSnapshot namespace.
    pub namespace: String,
    /// VolumeSnapshot name.
    pub name: String,
    /// CSI snapshot handle.
    pub handle: String,
    /// Contents.
    pub source: Source,
    /// False ⇒ FAILED_PRECONDITION ("CBT not enabled").
    pub change_tracking: bool,
}

/// Counters, for tests that check how a client behaved.
#[derive(Debug, Default)]
pub struct Counters {
    /// RPCs received (both flavours).
    pub calls: AtomicU64,
    /// Messages sent.
    pub messages: AtomicU64,
    /// Calls failed by `abort_every`.
    pub aborts: AtomicU64,
    /// Starting offsets of the calls, in order.
    pub offsets: Mutex<Vec<i64>>,
}

/// A future returned by a [`Backend`].
pub type BackendFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Where the Kubernetes flavour checks tokens and finds snapshots, when not in the server's own
/// tables: a simulated cluster plugs in its TokenReview, SubjectAccessReview and
/// VolumeSnapshot → VolumeSnapshotContent lookups here, as the sidecar does against a real API
/// server, and its driver state for the handle lookups.
pub trait Backend: Send + Sync + 'static {
    /// The sidecar's TokenReview (audience) and SubjectAccessReview (`get volumesnapshots` in
    /// `namespace`), with its status codes.
    fn authenticate(
        &self,
        token: String,
        namespace: String,
        audience: String,
    ) -> BackendFuture<Result<(), Status>>;
    /// The sidecar's VolumeSnapshot → VolumeSnapshotContent → handle resolution, then the
    /// driver's snapshot for that handle.
    fn by_name(&self, namespace: String, name: String) -> BackendFuture<Result<Snapshot, Status>>;
    /// The driver's snapshot with this handle.
    fn by_handle(&self, handle: String) -> BackendFuture<Option<Snapshot>>;
    /// The driver's check that a delta's base and target belong to one volume.
    fn check_delta(&self, base: &Snapshot, target: &Snapshot) -> Result<(), Status>;
}

/// Shared state of a test server.
#[derive(Default)]
pub struct State {
    pub(crate) quirks: Mutex<Quirks>,
    pub(crate) snapshots: Mutex<Vec<Snapshot>>,
    pub(crate) tokens: Mutex<HashMap<String, TokenGrant>>,
    pub(crate) counters: Counters,
    pub(crate) backend: Mutex<Option<Arc<dyn Backend>>>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("quirks", &self.quirks)
            .field("snapshots", &self.snapshots)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// One message before it is put into a flavour's response type.
struct Msg {
    kind: i32,
    capacity: i64,
    blocks: Vec<(i64, i64)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    fn quirks(&self) -> Quirks {
        lock(&self.quirks).clone()
    }

    fn by_name(&self, namespace: &str, name: &str) -> Option<Snapshot> {
        lock(&self.snapshots)
            .iter()
            .find(|s| s.namespace == namespace && s.name == name)
            .cloned()
    }

    fn by_handle(&self, handle: &str) -> Option<Snapshot> {
        lock(&self.snapshots)
            .iter()
            .find(|s| s.handle == handle)
            .cloned()
    }

    fn backend(&self) -> Option<Arc<dyn Backend>> {
        lock(&self.backend).clone()
    }

    async fn check_token(
        &self,
        token: &str,
        namespace: &str,
        audience: &str,
    ) -> Result<(), Status> {
        match self.backend() {
            Some(b) => {
                b.authenticate(token.into(), namespace.into(), audience.into())
                    .await
            }
            None => self.authenticate(token, namespace, audience),
        }
    }

    async fn find_by_name(&self, namespace: &str, name: &str) -> Result<Snapshot, Status> {
        match self.backend() {
            Some(b) => b.by_name(namespace.into(), name.into()).await,
            None => self
                .by_name(namespace, name)
                .ok_or_else(|| not_ready_or_missing(namespace, name)),
        }
    }

    async fn find_by_handle(&self, handle: &str) -> Result<Snapshot, Status> {
        let found = match self.backend() {
            Some(b) => b.by_handle(handle.into()).await,
            None => self.by_handle(handle),
        };
        found.ok_or_else(|| missing_handle(handle))
    }

    fn check_delta(&self, base: &Snapshot, target: &Snapshot) -> Result<(), Status> {
        match self.backend() {
            Some(b) => b.check_delta(base, target),
            None => Ok(()),
        }
    }

    /// The sidecar's TokenReview (audience) and SubjectAccessReview (namespace) checks.
    fn authenticate(&self, token: &str, namespace: &str, audience: &str) -> Result<(), Status> {
        let mut tokens = lock(&self.tokens);
        let Some(grant) = tokens.get_mut(token) else {
            return Err(Status::unauthenticated("unauthenticated user"));
        };
        if grant.uses_left == Some(0) || !grant.audiences.iter().any(|a| a == audience) {
            return Err(Status::unauthenticated("unauthenticated user"));
        }
        if let Some(n) = grant.uses_left.as_mut() {
            *n -= 1;
        }
        if !grant.namespaces.iter().any(|n| n == namespace) {
            return Err(Status::permission_denied(format!(
                "user does not have permissions to perform the operation: get volumesnapshots.snapshot.storage.k8s.io in namespace {namespace:?} is not allowed"
            )));
        }
        Ok(())
    }

    /// The driver part, shared by both flavours.
    fn serve(
        self: &Arc<Self>,
        target: Snapshot,
        base: Option<Snapshot>,
        starting_offset: i64,
        max_results: i32,
    ) -> Result<ReceiverStream<Result<Msg, Status>>, Status> {
        let q = self.quirks();
        lock(&self.counters.offsets).push(starting_offset);
        if !target.change_tracking {
            return Err(Status::failed_precondition(format!(
                "changed block tracking is not enabled for snapshot {}; perform a full backup instead",
                target.handle
            )));
        }
        let capacity = target
            .source
            .capacity()
            .map_err(|e| Status::internal(format!("cannot stat the snapshot image: {e}")))?;
        if starting_offset < 0 {
            return Err(Status::out_of_range(format!(
                "starting offset {starting_offset} is negative"
            )));
        }
        let start = starting_offset as u64;
        if start >= capacity && q.out_of_range_at_end {
            return Err(Status::out_of_range(format!(
                "starting offset {start} is at or past the volume size {capacity}"
            )));
        }
        if max_results < 0 {
            return Err(Status::invalid_argument("max_results must not be negative"));
        }
        let mut max = if max_results == 0 {
            q.default_max_results
        } else {
            max_results as u32
        };
        if let Some(cap) = q.max_results_cap {
            max = max.min(cap);
        }
        let max = max.max(1) as usize;
        let (tx, rx) = mpsc::channel(8);
        let state = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut g = Generator {
                tx,
                q: &q,
                capacity,
                max,
                cur: Vec::with_capacity(max),
                sent: 0,
                index: 0,
                prev: None,
                state: &state,
                stopped: false,
            };
            let bs = q.block_size;
            let first = start / bs;
            let res = {
                let mut emit = |b: u64| g.block(b);
                match (&base, &target.source) {
                    (None, Source::Image(p)) => walk_allocated(p, bs, first, &mut emit),
                    (None, Source::Synthetic { capacity, stride }) => {
                        walk_synthetic(*capacity, *stride, bs, first, &mut emit);
                        Ok(())
                    }
                    (Some(b), Source::Image(t)) => match &b.source {
                        Source::Image(bp) => walk_delta(bp, t, bs, first, &mut emit),
                        Source::Synthetic { .. } => Err(std::io::Error::other(
                            "delta against a synthetic snapshot is not supported",
                        )),
                    },
                    (Some(_), Source::Synthetic { .. }) => Err(std::io::Error::other(
                        "delta of a synthetic snapshot is not supported",
                    )),
                }
            };
            match res {
                Ok(()) => g.finish(),
                Err(e) => {
                    let _ = g
                        .tx
                        .blocking_send(Err(Status::internal(format!("reading the image: {e}"))));
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}

struct Generator<'a> {
    tx: mpsc::Sender<Result<Msg, Status>>,
    q: &'a Quirks,
    capacity: u64,
    max: usize,
    cur: Vec<(i64, i64)>,
    sent: u32,
    index: u64,
    prev: Option<(i64, i64)>,
    state: &'a State,
    stopped: bool,
}

impl Generator<'_> {
    fn block(&mut self, b: u64) -> bool {
        if self.stopped {
            return false;
        }
        let bs = self.q.block_size;
        let off = b * bs;
        if off >= self.capacity {
            return false;
        }
        let size = bs.min(self.capacity - off) as i64;
        let off = off as i64;
        if self.q.block_type == BlockMetadataType::VariableLength {
            if let Some(last) = self.cur.last_mut() {
                if last.0 + last.1 == off {
                    last.1 += size;
                    return true;
                }
            }
        }
        if self.cur.len() == self.max && !self.send() {
            self.stopped = true;
            return false;
        }
        self.cur.push((off, size));
        true
    }

    fn finish(&mut self) {
        if !self.stopped && !self.cur.is_empty() {
            self.send();
        }
    }

    /// Sends the current message; false when the call is over (client gone or a quirk).
    fn send(&mut self) -> bool {
        let mut blocks = std::mem::replace(&mut self.cur, Vec::with_capacity(self.max));
        let bs = self.q.block_size as i64;
        let mut kind = match self.q.block_type {
            BlockMetadataType::FixedLength => 1,
            BlockMetadataType::VariableLength => 2,
        };
        let mut capacity = self.capacity as i64;
        for t in blocks.iter_mut() {
            if self.index == 1 {
                match (self.q.inject, self.prev) {
                    (Some(Inject::OutOfOrder), _) => t.0 = 0,
                    (Some(Inject::Overlap), Some(p)) => t.0 = p.0 + p.1 - 1,
                    (Some(Inject::ZeroSize), _) => t.1 = 0,
                    (Some(Inject::PastCapacity), _) => t.0 = capacity,
                    (Some(Inject::SizeChange), _) => t.1 = bs / 2,
                    _ => {}
                }
            }
            self.prev = Some(*t);
            self.index += 1;
        }
        if self.sent >= 1 {
            match self.q.inject {
                Some(Inject::ChangeType) => kind = if kind == 1 { 2 } else { 1 },
                Some(Inject::ChangeCapacity) => capacity += bs,
                _ => {}
            }
        }
        if self.q.inject == Some(Inject::UnknownType) {
            kind = 0;
        }
        let msg = Msg {
            kind,
            capacity,
            blocks,
        };
        if self.tx.blocking_send(Ok(msg)).is_err() {
            return false;
        }
        self.state.counters.messages.fetch_add(1, Ordering::Relaxed);
        self.sent += 1;
        if self.q.abort_every == Some(self.sent) {
            self.state.counters.aborts.fetch_add(1, Ordering::Relaxed);
            let _ = self.tx.blocking_send(Err(Status::new(
                self.q.abort_code,
                format!("test server: stream cut after {} messages", self.sent),
            )));
            return false;
        }
        !self.q.single_message
    }
}

/// Kubernetes flavour (the sidecar in front of the driver).
#[derive(Clone)]
pub struct K8sService(pub Arc<State>);

/// CSI flavour (the driver itself).
#[derive(Clone)]
pub struct CsiService(pub Arc<State>);

type BoxResp<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

macro_rules! convert {
    ($stream:expr, $resp:ty, $bm:ty) => {{
        let s: BoxResp<$resp> =
            Box::pin($stream.map(|m| m.map(|m| <$resp>::from_parts(m.kind, m.capacity, m.blocks))));
        s
    }};
}

trait FromParts {
    fn from_parts(kind: i32, capacity: i64, blocks: Vec<(i64, i64)>) -> Self;
}

macro_rules! from_parts {
    ($resp:ty, $bm:ty) => {
        impl FromParts for $resp {
            fn from_parts(kind: i32, capacity: i64, blocks: Vec<(i64, i64)>) -> Self {
                Self {
                    block_metadata_type: kind,
                    volume_capacity_bytes: capacity,
                    block_metadata: blocks
                        .into_iter()
                        .map(|(o, s)| <$bm>::from_pair(o, s))
                        .collect(),
                }
            }
        }
    };
}

trait FromPair {
    fn from_pair(o: i64, s: i64) -> Self;
}
impl FromPair for k8s::BlockMetadata {
    fn from_pair(o: i64, s: i64) -> Self {
        k8s::BlockMetadata {
            byte_offset: o,
            size_bytes: s,
        }
    }
}
impl FromPair for csi::BlockMetadata {
    fn from_pair(o: i64, s: i64) -> Self {
        csi::BlockMetadata {
            byte_offset: o,
            size_bytes: s,
        }
    }
}
from_parts!(k8s::GetMetadataAllocatedResponse, k8s::BlockMetadata);
from_parts!(k8s::GetMetadataDeltaResponse, k8s::BlockMetadata);
from_parts!(csi::GetMetadataAllocatedResponse, csi::BlockMetadata);
from_parts!(csi::GetMetadataDeltaResponse, csi::BlockMetadata);

fn not_ready_or_missing(namespace: &str, name: &str) -> Status {
    Status::unavailable(format!(
        "failed to get VolumeSnapshot '{namespace}/{name}': volumesnapshots.snapshot.storage.k8s.io \"{name}\" not found"
    ))
}

fn missing_handle(handle: &str) -> Status {
    Status::not_found(format!("snapshot {handle} not found"))
}

impl K8sService {
    fn common(&self, token: &str, namespace: &str) -> Result<Quirks, Status> {
        self.0.counters.calls.fetch_add(1, Ordering::Relaxed);
        let q = self.0.quirks();
        if token.is_empty() {
            return Err(Status::invalid_argument("securityToken is missing"));
        }
        if namespace.is_empty() {
            return Err(Status::invalid_argument(
                "namespace parameter cannot be empty",
            ));
        }
        Ok(q)
    }
}

#[tonic::async_trait]
impl k8s::snapshot_metadata_server::SnapshotMetadata for K8sService {
    type GetMetadataAllocatedStream = BoxResp<k8s::GetMetadataAllocatedResponse>;
    type GetMetadataDeltaStream = BoxResp<k8s::GetMetadataDeltaResponse>;

    async fn get_metadata_allocated(
        &self,
        request: Request<k8s::GetMetadataAllocatedRequest>,
    ) -> Result<Response<Self::GetMetadataAllocatedStream>, Status> {
        let r = request.into_inner();
        let q = self.common(&r.security_token, &r.namespace)?;
        if r.snapshot_name.is_empty() {
            return Err(Status::invalid_argument("snapshotName cannot be empty"));
        }
        self.0
            .check_token(&r.security_token, &r.namespace, &q.audience)
            .await?;
        if q.unimplemented {
            return Err(Status::unimplemented(
                "GetMetadataAllocated is not implemented",
            ));
        }
        let target = self.0.find_by_name(&r.namespace, &r.snapshot_name).await?;
        let s = self
            .0
            .serve(target, None, r.starting_offset, r.max_results)?;
        Ok(Response::new(convert!(
            s,
            k8s::GetMetadataAllocatedResponse,
            k8s::BlockMetadata
        )))
    }

    async fn get_metadata_delta(
        &self,
        request: Request<k8s::GetMetadataDeltaRequest>,
    ) -> Result<Response<Self::GetMetadataDeltaStream>, Status> {
        let r = request.into_inner();
        let q = self.common(&r.security_token, &r.namespace)?;
        if r.base_snapshot_id.is_empty() {
            return Err(Status::invalid_argument("baseSnapshotId cannot be empty"));
        }
        if r.target_snapshot_name.is_empty() {
            return Err(Status::invalid_argument(
                "targetSnapshotName cannot be empty",
            ));
        }
        self.0
            .check_token(&r.security_token, &r.namespace, &q.audience)
            .await?;
        if q.unimplemented {
            return Err(Status::unimplemented("GetMetadataDelta is not implemented"));
        }
        let target = self
            .0
            .find_by_name(&r.namespace, &r.target_snapshot_name)
            .await?;
        // The sidecar forwards the base handle blindly; the driver answers NOT_FOUND.
        let base = self.0.find_by_handle(&r.base_snapshot_id).await?;
        self.0.check_delta(&base, &target)?;
        let s = self
            .0
            .serve(target, Some(base), r.starting_offset, r.max_results)?;
        Ok(Response::new(convert!(
            s,
            k8s::GetMetadataDeltaResponse,
            k8s::BlockMetadata
        )))
    }
}

#[tonic::async_trait]
impl csi::snapshot_metadata_server::SnapshotMetadata for CsiService {
    type GetMetadataAllocatedStream = BoxResp<csi::GetMetadataAllocatedResponse>;
    type GetMetadataDeltaStream = BoxResp<csi::GetMetadataDeltaResponse>;

    async fn get_metadata_allocated(
        &self,
        request: Request<csi::GetMetadataAllocatedRequest>,
    ) -> Result<Response<Self::GetMetadataAllocatedStream>, Status> {
        self.0.counters.calls.fetch_add(1, Ordering::Relaxed);
        let r = request.into_inner();
        if self.0.quirks().unimplemented {
            return Err(Status::unimplemented(
                "GetMetadataAllocated is not implemented",
            ));
        }
        if r.snapshot_id.is_empty() {
            return Err(Status::invalid_argument("snapshot_id is required"));
        }
        let target = self.0.find_by_handle(&r.snapshot_id).await?;
        let s = self
            .0
            .serve(target, None, r.starting_offset, r.max_results)?;
        Ok(Response::new(convert!(
            s,
            csi::GetMetadataAllocatedResponse,
            csi::BlockMetadata
        )))
    }

    async fn get_metadata_delta(
        &self,
        request: Request<csi::GetMetadataDeltaRequest>,
    ) -> Result<Response<Self::GetMetadataDeltaStream>, Status> {
        self.0.counters.calls.fetch_add(1, Ordering::Relaxed);
        let r = request.into_inner();
        if self.0.quirks().unimplemented {
            return Err(Status::unimplemented("GetMetadataDelta is not implemented"));
        }
        if r.base_snapshot_id.is_empty() || r.target_snapshot_id.is_empty() {
            return Err(Status::invalid_argument(
                "base_snapshot_id and target_snapshot_id are required",
            ));
        }
        let target = self.0.find_by_handle(&r.target_snapshot_id).await?;
        let base = self.0.find_by_handle(&r.base_snapshot_id).await?;
        self.0.check_delta(&base, &target)?;
        let s = self
            .0
            .serve(target, Some(base), r.starting_offset, r.max_results)?;
        Ok(Response::new(convert!(
            s,
            csi::GetMetadataDeltaResponse,
            csi::BlockMetadata
        )))
    }
}
