//! The driver's SnapshotMetadata service as a backup client meets it: found through the
//! `SnapshotMetadataService` named after the driver, reached over TLS with its CA, tokens
//! checked by TokenReview (audience) and SubjectAccessReview against the cluster, answers
//! computed from the snapshot images, and the refusals the sidecar and the driver give.

mod cluster;

use base64::Engine;
use cluster::*;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::{Api, Client};
use s3mover_cbt::proto::k8s;
use s3mover_k8s_sim::controllers::CbtMode;
use serde_json::json;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::Code;

struct Service {
    address: String,
    audience: String,
    ca_pem: Vec<u8>,
}

fn sms_resource() -> ApiResource {
    ApiResource {
        group: "cbt.storage.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "cbt.storage.k8s.io/v1beta1".into(),
        kind: "SnapshotMetadataService".into(),
        plural: "snapshotmetadataservices".into(),
    }
}

async fn service(c: &Client) -> Service {
    let api: Api<DynamicObject> = Api::all_with(c.clone(), &sms_resource());
    let sms = wait_for("the SnapshotMetadataService", || {
        let api = api.clone();
        async move {
            api.get("hostpath.csi.k8s.io")
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let s = |k: &str| {
        sms.data
            .pointer(&format!("/spec/{k}"))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    Service {
        address: s("address"),
        audience: s("audience"),
        ca_pem: base64::engine::general_purpose::STANDARD
            .decode(s("caCert"))
            .expect("caCert is base64"),
    }
}

async fn connect(
    svc: &Service,
) -> Result<k8s::snapshot_metadata_client::SnapshotMetadataClient<Channel>, tonic::transport::Error>
{
    let host = svc
        .address
        .rsplit_once(':')
        .map(|(h, _)| h.to_string())
        .unwrap_or_default();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&svc.ca_pem))
        .domain_name(host);
    let ch = Channel::from_shared(format!("https://{}", svc.address))
        .expect("uri")
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(k8s::snapshot_metadata_client::SnapshotMetadataClient::new(
        ch,
    ))
}

/// A service account allowed to `get volumesnapshots` in `default` (when `allowed`).
async fn account(c: &Client, name: &str, allowed: bool) {
    let _: ServiceAccount = create(
        c,
        "default",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}),
    )
    .await;
    if allowed {
        let _: k8s_openapi::api::rbac::v1::Role = create(c, "default", json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": format!("{name}-snapshots")},
            "rules": [{"apiGroups": ["snapshot.storage.k8s.io"], "resources": ["volumesnapshots"], "verbs": ["get"]}],
        }))
        .await;
        let _: k8s_openapi::api::rbac::v1::RoleBinding = create(c, "default", json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": format!("{name}-snapshots")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("{name}-snapshots")},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "default"}],
        }))
        .await;
    }
}

async fn token(c: &Client, sa: &str, audience: &str) -> String {
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.into()],
            expiration_seconds: Some(600),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    let out: TokenRequest = Api::<ServiceAccount>::namespaced(c.clone(), "default")
        .create_subresource("token", sa, &PostParams::default(), &tr)
        .await
        .expect("TokenRequest");
    out.status.expect("token").token
}

fn write(path: &std::path::Path, block: u64, byte: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("image");
    f.write_all_at(&[byte; 4096], block * 4096).expect("write");
}

async fn allocated(
    rpc: &mut k8s::snapshot_metadata_client::SnapshotMetadataClient<Channel>,
    token: &str,
    snapshot: &str,
) -> Result<Vec<(i64, i64)>, tonic::Status> {
    let mut s = rpc
        .get_metadata_allocated(k8s::GetMetadataAllocatedRequest {
            security_token: token.into(),
            namespace: "default".into(),
            snapshot_name: snapshot.into(),
            starting_offset: 0,
            max_results: 0,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        out.extend(
            m.block_metadata
                .iter()
                .map(|b| (b.byte_offset, b.size_bytes)),
        );
    }
    Ok(out)
}

async fn delta(
    rpc: &mut k8s::snapshot_metadata_client::SnapshotMetadataClient<Channel>,
    token: &str,
    base_handle: &str,
    target: &str,
) -> Result<Vec<(i64, i64)>, tonic::Status> {
    let mut s = rpc
        .get_metadata_delta(k8s::GetMetadataDeltaRequest {
            security_token: token.into(),
            namespace: "default".into(),
            base_snapshot_id: base_handle.into(),
            target_snapshot_name: target.into(),
            starting_offset: 0,
            max_results: 0,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        out.extend(
            m.block_metadata
                .iter()
                .map(|b| (b.byte_offset, b.size_bytes)),
        );
    }
    Ok(out)
}

async fn handle_of(c: &Client, snapshot: &DynamicObject) -> String {
    let name = snapshot
        .data
        .pointer("/status/boundVolumeSnapshotContentName")
        .and_then(|v| v.as_str())
        .expect("bound");
    let content = content_api(c).get(name).await.expect("content");
    content
        .data
        .pointer("/status/snapshotHandle")
        .and_then(|v| v.as_str())
        .expect("handle")
        .to_string()
}

#[tokio::test]
async fn allocated_and_delta_come_from_the_snapshot_images() {
    let sim = start(|_| {}).await;
    let c = &sim.client;
    claim(c, "default", "v1", "1Mi", "Block", None).await;
    wait_bound(c, "default", "v1").await;
    let image = sim.image_of("default", "v1").await;
    write(&image, 1, 0xaa);
    write(&image, 3, 0xbb);
    let s1 = snapshot(c, "default", "s1", "v1").await;
    write(&image, 3, 0xcc);
    write(&image, 5, 0xdd);
    snapshot(c, "default", "s2", "v1").await;

    let svc = service(c).await;
    assert_eq!(svc.audience, "test-backup-client");
    let mut rpc = connect(&svc).await.expect("TLS with the service's CA");
    account(c, "backup", true).await;
    let good = token(c, "backup", &svc.audience).await;
    assert_eq!(
        allocated(&mut rpc, &good, "s1").await.expect("allocated"),
        vec![(4096, 4096), (12288, 4096)]
    );
    let base = handle_of(c, &s1).await;
    assert_eq!(
        delta(&mut rpc, &good, &base, "s2").await.expect("delta"),
        vec![(12288, 4096), (20480, 4096)]
    );

    // The sidecar's refusals.
    let wrong_audience = token(c, "backup", "someone-else").await;
    let e = allocated(&mut rpc, &wrong_audience, "s1")
        .await
        .expect_err("wrong audience");
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unauthenticated, "unauthenticated user")
    );
    account(c, "nobody", false).await;
    let unprivileged = token(c, "nobody", &svc.audience).await;
    let e = allocated(&mut rpc, &unprivileged, "s1")
        .await
        .expect_err("no RBAC");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = allocated(&mut rpc, &good, "missing")
        .await
        .expect_err("missing snapshot");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");

    // The driver's refusal of a delta across volumes, and of an unknown base.
    claim(c, "default", "v2", "1Mi", "Block", None).await;
    wait_bound(c, "default", "v2").await;
    let other = snapshot(c, "default", "other", "v2").await;
    let e = delta(&mut rpc, &good, &handle_of(c, &other).await, "s2")
        .await
        .expect_err("other volume");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = delta(&mut rpc, &good, "snap-unknown", "s2")
        .await
        .expect_err("unknown base");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
}

#[tokio::test]
async fn a_pods_projected_token_is_accepted() {
    if !require("a_pods_projected_token_is_accepted", &["root", "bwrap"]) {
        return;
    }
    let sim = start(|_| {}).await;
    let c = &sim.client;
    claim(c, "default", "v", "1Mi", "Block", None).await;
    wait_bound(c, "default", "v").await;
    write(&sim.image_of("default", "v").await, 2, 0x11);
    snapshot(c, "default", "s", "v").await;
    let svc = service(c).await;
    account(c, "mover", true).await;
    let _: k8s_openapi::api::core::v1::Pod = create(c, "default", json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "token-reader"},
        "spec": {
            "restartPolicy": "Never", "serviceAccountName": "mover",
            "containers": [{"name": "main", "image": "busybox",
                "command": ["sh", "-c", "test \"$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)\" = default && test -n \"$KUBERNETES_SERVICE_HOST\" && test -s /var/run/secrets/kubernetes.io/serviceaccount/ca.crt && cat /var/run/secrets/cbt/token > /dev/termination-log"],
                "volumeMounts": [{"name": "cbt", "mountPath": "/var/run/secrets/cbt", "readOnly": true}]}],
            "volumes": [{"name": "cbt", "projected": {"sources": [{"serviceAccountToken": {
                "audience": svc.audience, "expirationSeconds": 600, "path": "token"}}]}}],
        },
    }))
    .await;
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(c.clone(), "default");
    let csi = sim.dir.path().to_path_buf();
    let projected = wait_for("the pod's token", || {
        let pods = pods.clone();
        let csi = csi.clone();
        async move {
            let p = pods.get("token-reader").await.map_err(|e| e.to_string())?;
            termination_message(&p)
                .filter(|m| !m.is_empty())
                .ok_or_else(|| {
                    let log = std::fs::read_to_string(s3mover_k8s_sim::api::pod_log_path(
                        &csi,
                        "default",
                        "token-reader",
                        "main",
                    ));
                    format!("log {log:?}, status {:?}", p.status)
                })
        }
    })
    .await;
    let mut rpc = connect(&svc).await.expect("TLS");
    assert_eq!(
        allocated(&mut rpc, projected.trim(), "s")
            .await
            .expect("allocated"),
        vec![(8192, 4096)]
    );
}

#[tokio::test]
async fn a_driver_without_cbt_has_no_service_object() {
    let sim = start(|o| o.cbt = CbtMode::Disabled).await;
    let c = &sim.client;
    // The snapshot path works; there is just no service.
    claim(c, "default", "v", "1Mi", "Block", None).await;
    wait_bound(c, "default", "v").await;
    snapshot(c, "default", "s", "v").await;
    let api: Api<DynamicObject> = Api::all_with(c.clone(), &sms_resource());
    let e = api
        .get("hostpath.csi.k8s.io")
        .await
        .expect_err("no service");
    assert!(
        matches!(e, kube::Error::Api(ref s) if s.code == 404),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_service_that_refuses_tokens_or_cannot_be_reached() {
    let sim = start(|o| o.cbt = CbtMode::RefuseTokens).await;
    let c = &sim.client;
    claim(c, "default", "v", "1Mi", "Block", None).await;
    wait_bound(c, "default", "v").await;
    snapshot(c, "default", "s", "v").await;
    let svc = service(c).await;
    account(c, "backup", true).await;
    let t = token(c, "backup", &svc.audience).await;
    let mut rpc = connect(&svc).await.expect("TLS");
    let e = allocated(&mut rpc, &t, "s").await.expect_err("refused");
    assert_eq!(e.code(), Code::Unauthenticated);
    drop(sim);

    let sim = start(|o| o.cbt = CbtMode::Unreachable).await;
    let svc = service(&sim.client).await;
    assert!(
        connect(&svc).await.is_err(),
        "nothing listens at {}",
        svc.address
    );
}
