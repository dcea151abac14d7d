//! The driver's SnapshotMetadata service: the cbt-testserver crate serves the Kubernetes
//! flavour over TLS, and this module plugs in what the `csi-snapshot-metadata` sidecar and the
//! hostpath driver do against a real cluster — TokenReview with the service's audience and
//! SubjectAccessReview (`get volumesnapshots` in the request's namespace) against the API
//! server, VolumeSnapshot → VolumeSnapshotContent → handle resolution with the sidecar's status
//! codes, answers computed from the driver's snapshot images, and the driver's refusal of a
//! delta between snapshots of different volumes. It registers the `SnapshotMetadataService`
//! named after the driver (`spec.address`, `spec.audience`, `spec.caCert` base64).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{DynamicObject, PostParams};
use kube::{Api, ResourceExt};
use s3mover_cbt_testserver::{Backend, BackendFuture, Quirks, Snapshot, Source, TestServer};
use serde_json::json;
use tokio::task::JoinHandle;
use tonic::Status;

use super::storage::Driver;
use super::util::{self, b, dyn_all, dyn_ns, is_conflict, s};
use super::{CbtMode, Ctx};

/// The audience the service expects, as in upstream's example deployment.
pub const AUDIENCE: &str = "test-backup-client";

/// Starts the service (unless the driver has none) and registers it.
pub fn start(ctx: Ctx) -> Vec<JoinHandle<()>> {
    if ctx.opts.cbt == CbtMode::Disabled {
        return Vec::new();
    }
    vec![tokio::spawn(async move { serve(ctx).await })]
}

async fn serve(ctx: Ctx) {
    let quirks = Quirks {
        audience: AUDIENCE.into(),
        ..Quirks::hostpath()
    };
    let server = match tokio::task::spawn_blocking(move || TestServer::start(quirks)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::error!("the SnapshotMetadata service cannot start: {e}");
            return;
        }
        Err(e) => {
            tracing::error!("the SnapshotMetadata service cannot start: {e}");
            return;
        }
    };
    server.set_backend(Arc::new(Sidecar {
        client: ctx.client.clone(),
        driver: ctx.opts.driver.clone(),
        storage: ctx.storage.clone(),
        refuse: ctx.opts.cbt == CbtMode::RefuseTokens,
    }));
    let address = if ctx.opts.cbt == CbtMode::Unreachable {
        // A port nobody listens on: bound, then released.
        match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(a) => a.to_string(),
            Err(_) => "127.0.0.1:1".into(),
        }
    } else {
        server.address().to_string()
    };
    let ca = base64::engine::general_purpose::STANDARD.encode(&server.certs().ca_pem);
    let mut obj = DynamicObject::new(
        &ctx.opts.driver,
        &util::snapshot_resource("SnapshotMetadataService"),
    );
    obj.data = json!({"spec": {"address": address, "audience": AUDIENCE, "caCert": ca}});
    let api = dyn_all(&ctx.client, "SnapshotMetadataService");
    loop {
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => break,
            Err(e) if is_conflict(&e) => {
                // A service object left from an earlier start: point it here.
                if let Ok(cur) = api.get(&ctx.opts.driver).await {
                    obj.metadata.resource_version = cur.resource_version();
                    if api
                        .replace(&ctx.opts.driver, &PostParams::default(), &obj)
                        .await
                        .is_ok()
                    {
                        break;
                    }
                }
            }
            Err(e) => tracing::debug!("cannot register the SnapshotMetadataService yet: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The server lives as long as this task.
    std::future::pending::<()>().await;
    drop(server);
}

/// The sidecar's checks and lookups, and the driver's snapshot store.
struct Sidecar {
    client: kube::Client,
    driver: String,
    storage: Arc<Driver>,
    refuse: bool,
}

fn driver_snapshot(storage: &Driver, handle: &str) -> Option<Snapshot> {
    storage.snapshot(handle).map(|_| Snapshot {
        namespace: String::new(),
        name: String::new(),
        handle: handle.into(),
        source: Source::Image(storage.snapshot_path(handle)),
        change_tracking: true,
    })
}

impl Backend for Sidecar {
    fn authenticate(
        &self,
        token: String,
        namespace: String,
        audience: String,
    ) -> BackendFuture<Result<(), Status>> {
        let client = self.client.clone();
        let refuse = self.refuse;
        Box::pin(async move {
            if refuse {
                return Err(Status::unauthenticated("unauthenticated user"));
            }
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token),
                    audiences: Some(vec![audience.clone()]),
                },
                ..TokenReview::default()
            };
            let out = Api::<TokenReview>::all(client.clone())
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| Status::internal(format!("failed to authenticate user: {e}")))?;
            let st = out.status.unwrap_or_default();
            let ok = st.authenticated == Some(true)
                && st.audiences.as_ref().is_some_and(|a| a.contains(&audience));
            if !ok {
                return Err(Status::unauthenticated("unauthenticated user"));
            }
            let user = st.user.unwrap_or_default();
            let sar = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: user.username.clone(),
                    groups: user.groups.clone(),
                    uid: user.uid.clone(),
                    extra: user.extra.clone(),
                    resource_attributes: Some(ResourceAttributes {
                        verb: Some("get".into()),
                        group: Some("snapshot.storage.k8s.io".into()),
                        version: Some("v1".into()),
                        resource: Some("volumesnapshots".into()),
                        namespace: Some(namespace.clone()),
                        ..ResourceAttributes::default()
                    }),
                    ..SubjectAccessReviewSpec::default()
                },
                ..SubjectAccessReview::default()
            };
            let out = Api::<SubjectAccessReview>::all(client)
                .create(&PostParams::default(), &sar)
                .await
                .map_err(|e| Status::internal(format!("failed to authorize the user: {e}")))?;
            let st = out.status.unwrap_or_default();
            if !st.allowed {
                return Err(Status::permission_denied(format!(
                    "user does not have permissions to perform the operation: {}",
                    st.reason.unwrap_or_else(|| format!(
                        "{} cannot get volumesnapshots.snapshot.storage.k8s.io in namespace {namespace:?}",
                        user.username.unwrap_or_default()
                    ))
                )));
            }
            Ok(())
        })
    }

    fn by_name(&self, namespace: String, name: String) -> BackendFuture<Result<Snapshot, Status>> {
        let client = self.client.clone();
        let driver = self.driver.clone();
        let storage = self.storage.clone();
        Box::pin(async move {
            let vs = dyn_ns(&client, "VolumeSnapshot", Some(&namespace))
                .get(&name)
                .await
                .map_err(|e| {
                    Status::unavailable(format!(
                        "failed to get VolumeSnapshot '{namespace}/{name}': {e}"
                    ))
                })?;
            if !b(&vs.data, "/status/readyToUse") {
                return Err(Status::unavailable(format!(
                    "the VolumeSnapshot is not yet ready, name: {name}"
                )));
            }
            let content = s(&vs.data, "/status/boundVolumeSnapshotContentName").ok_or_else(|| {
                Status::unavailable(format!("boundVolumeSnapshotContentName is not set for VolumeSnapshot '{namespace}/{name}'"))
            })?;
            let vsc = dyn_all(&client, "VolumeSnapshotContent")
                .get(content)
                .await
                .map_err(|e| {
                    Status::unavailable(format!(
                        "failed to get VolumeSnapshotContent '{content}': {e}"
                    ))
                })?;
            if !b(&vsc.data, "/status/readyToUse") {
                return Err(Status::unavailable(format!(
                    "the VolumeSnapshotContent is not yet ready, name: {content}"
                )));
            }
            if s(&vsc.data, "/spec/driver") != Some(driver.as_str()) {
                return Err(Status::invalid_argument(format!(
                    "VolumeSnapshot '{name}' does not belong to the CSI driver '{driver}'"
                )));
            }
            let handle = s(&vsc.data, "/status/snapshotHandle").ok_or_else(|| {
                Status::unavailable(format!(
                    "snapshotHandle is not set for VolumeSnapshotContent '{content}'"
                ))
            })?;
            let mut snap = driver_snapshot(&storage, handle)
                .ok_or_else(|| Status::not_found(format!("snapshot {handle} not found")))?;
            snap.namespace = namespace;
            snap.name = name;
            Ok(snap)
        })
    }

    fn by_handle(&self, handle: String) -> BackendFuture<Option<Snapshot>> {
        let storage = self.storage.clone();
        Box::pin(async move { driver_snapshot(&storage, &handle) })
    }

    fn check_delta(&self, base: &Snapshot, target: &Snapshot) -> Result<(), Status> {
        let vol = |h: &str| self.storage.snapshot(h).map(|i| i.source_volume);
        match (vol(&base.handle), vol(&target.handle)) {
            (Some(a), Some(b)) if a == b => Ok(()),
            _ => Err(Status::invalid_argument(format!(
                "base snapshot {} and target snapshot {} are not from the same volume",
                base.handle, target.handle
            ))),
        }
    }
}
