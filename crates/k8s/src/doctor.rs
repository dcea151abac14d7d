//! `k8s doctor`: is this cluster ready for s3mover's backups? Each check is a line with PASS,
//! WARN or FAIL and, when not PASS, what to do. It checks what the earlier validate-cbt script
//! did and more: the snapshot CRDs and the CBT CRD, a snapshot controller, each driver's default
//! VolumeSnapshotClass, the SnapshotMetadataService (address, audience, a CA that parses and is
//! not expired), every permission a backup needs (SelfSubjectAccessReview), the repository
//! Secret, the mover service account, and the claims' volume modes.

use std::collections::BTreeSet;

use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
};
use kube::api::{Api, ListParams, PostParams};
use kube::Client;
use serde::Serialize;

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Pass,
    /// Works, but not as well as it could (e.g. no CBT: whole volumes are read).
    Warn,
    /// Backups will fail.
    Fail,
}

impl Status {
    /// `PASS`, `WARN`, `FAIL`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// The verdict.
    pub status: Status,
    /// What was found.
    pub message: String,
    /// What to do, when not PASS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(
    name: impl Into<String>,
    status: Status,
    message: impl Into<String>,
    fix: Option<&str>,
) -> Check {
    Check {
        name: name.into(),
        status,
        message: message.into(),
        fix: fix.map(str::to_string),
    }
}

/// What to check.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// The namespace of the claims (and, with the claims, of the movers).
    pub namespace: String,
    /// One claim, or every claim of the namespace.
    pub pvc: Option<String>,
    /// The repository Secret's name.
    pub repo_secret: String,
    /// The mover service account's name.
    pub mover_service_account: String,
}

/// Permissions `k8s backup` and `k8s restore` use: (verb, group, resource, namespaced).
pub const ORCHESTRATOR_PERMISSIONS: &[(&str, &str, &str, bool)] = &[
    ("get", "", "persistentvolumeclaims", true),
    ("list", "", "persistentvolumeclaims", true),
    ("create", "", "persistentvolumeclaims", true),
    ("delete", "", "persistentvolumeclaims", true),
    ("get", "", "persistentvolumes", false),
    ("create", "", "configmaps", true),
    ("delete", "", "configmaps", true),
    ("list", "", "pods", true),
    ("delete", "", "pods", true),
    ("list", "", "events", true),
    ("get", "", "secrets", true),
    ("create", "batch", "jobs", true),
    ("get", "batch", "jobs", true),
    ("delete", "batch", "jobs", true),
    ("create", "snapshot.storage.k8s.io", "volumesnapshots", true),
    ("get", "snapshot.storage.k8s.io", "volumesnapshots", true),
    ("list", "snapshot.storage.k8s.io", "volumesnapshots", true),
    ("patch", "snapshot.storage.k8s.io", "volumesnapshots", true),
    ("delete", "snapshot.storage.k8s.io", "volumesnapshots", true),
    (
        "get",
        "snapshot.storage.k8s.io",
        "volumesnapshotcontents",
        false,
    ),
    (
        "patch",
        "snapshot.storage.k8s.io",
        "volumesnapshotcontents",
        false,
    ),
    (
        "list",
        "snapshot.storage.k8s.io",
        "volumesnapshotclasses",
        false,
    ),
    (
        "get",
        "cbt.storage.k8s.io",
        "snapshotmetadataservices",
        false,
    ),
];

/// Runs every check.
pub async fn run(client: &Client, options: &DoctorOptions) -> Vec<Check> {
    let mut checks = Vec::new();
    let ns = options.namespace.as_str();
    match client.apiserver_version().await {
        Ok(v) => checks.push(check(
            "api-server",
            Status::Pass,
            format!("reachable, Kubernetes {}.{}", v.major, v.minor),
            None,
        )),
        Err(e) => {
            checks.push(check(
                "api-server",
                Status::Fail,
                format!("not reachable: {}", crate::error::chain(&e)),
                Some("check --kubeconfig/--context, or run inside the cluster"),
            ));
            return checks;
        }
    }
    checks.extend(crd_checks(client).await);
    checks.push(snapshot_controller(client).await);
    checks.extend(permission_checks(client, ns, &options.repo_secret).await);
    checks.push(progress_permission(client, ns).await);
    checks.push(repo_secret(client, ns, &options.repo_secret).await);
    checks.push(mover_account(client, ns, &options.mover_service_account).await);
    checks.extend(claim_checks(client, options).await);
    checks
}

/// The kinds a backup needs, from API discovery (which every authenticated identity may read,
/// so the answer does not depend on list permissions).
async fn crd_checks(client: &Client) -> Vec<Check> {
    let snapshotter = "install the external-snapshotter CRDs (client/config/crd)";
    let probes: [(&str, &str, &str, Status, &str); 4] = [
        ("snapshot.storage.k8s.io/v1", "volumesnapshots", "crd volumesnapshots.snapshot.storage.k8s.io", Status::Fail,
         "install the external-snapshotter CRDs (client/config/crd) and the snapshot controller"),
        ("snapshot.storage.k8s.io/v1", "volumesnapshotcontents", "crd volumesnapshotcontents.snapshot.storage.k8s.io", Status::Fail, snapshotter),
        ("snapshot.storage.k8s.io/v1", "volumesnapshotclasses", "crd volumesnapshotclasses.snapshot.storage.k8s.io", Status::Fail, snapshotter),
        ("cbt.storage.k8s.io/v1beta1", "snapshotmetadataservices", "crd snapshotmetadataservices.cbt.storage.k8s.io (v1beta1)", Status::Warn,
         "install external-snapshot-metadata v1.0+ (CRD cbt.storage.k8s.io/v1beta1) and the driver's sidecar; until then every backup reads whole volumes"),
    ];
    let mut out = Vec::new();
    for (group_version, plural, name, missing, fix) in probes {
        out.push(match client.list_api_group_resources(group_version).await {
            Ok(list) if list.resources.iter().any(|r| r.name == plural) => {
                check(name, Status::Pass, "served", None)
            }
            Ok(_) => check(name, missing, "not served", Some(fix)),
            Err(e) if crate::error::not_found(&e) => check(name, missing, "not served", Some(fix)),
            Err(e) => check(
                name,
                Status::Warn,
                format!("cannot tell: {}", crate::Error::api("API discovery", e)),
                Some("check as a cluster administrator: kubectl api-resources"),
            ),
        });
    }
    out
}

async fn snapshot_controller(client: &Client) -> Check {
    let pods: Api<Pod> = Api::all(client.clone());
    let selectors = [
        "app.kubernetes.io/name=snapshot-controller",
        "app=snapshot-controller",
    ];
    for selector in selectors {
        match pods.list(&ListParams::default().labels(selector)).await {
            Ok(list) => {
                let running = list
                    .items
                    .iter()
                    .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
                if running {
                    return check(
                        "snapshot-controller",
                        Status::Pass,
                        format!("running ({selector})"),
                        None,
                    );
                }
            }
            Err(_) => {
                return check("snapshot-controller", Status::Warn, "cannot list pods cluster-wide to look for it", Some("check as a cluster administrator: kubectl get pods -A -l app.kubernetes.io/name=snapshot-controller"));
            }
        }
    }
    check("snapshot-controller", Status::Warn, "no running pod labelled app.kubernetes.io/name=snapshot-controller or app=snapshot-controller",
        Some("install the external-snapshotter snapshot controller (deploy/kubernetes/snapshot-controller), or ignore if the platform runs it elsewhere"))
}

async fn permission_checks(client: &Client, ns: &str, repo_secret: &str) -> Vec<Check> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut denied = Vec::new();
    let mut unknown = None;
    for (verb, group, resource, namespaced) in ORCHESTRATOR_PERMISSIONS {
        let review: SelfSubjectAccessReview = match serde_json::from_value(serde_json::json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"verb": verb, "group": group, "resource": resource,
                     "namespace": if *namespaced { Some(ns) } else { None },
                     // The Secret is granted by name only.
                     "name": if *resource == "secrets" { Some(repo_secret) } else { None }}}
        })) {
            Ok(r) => r,
            Err(_) => continue,
        };
        match reviews.create(&PostParams::default(), &review).await {
            Ok(answer) if answer.status.as_ref().is_some_and(|s| s.allowed) => {}
            Ok(_) => denied.push(format!(
                "{verb} {}{resource}",
                if group.is_empty() {
                    String::new()
                } else {
                    format!("{group}/")
                }
            )),
            Err(e) => unknown = Some(crate::Error::api("SelfSubjectAccessReview", e).to_string()),
        }
    }
    let name = format!("permissions in {ns}");
    if let Some(why) = unknown {
        return vec![check(
            name,
            Status::Warn,
            format!("cannot check: {why}"),
            None,
        )];
    }
    if denied.is_empty() {
        vec![check(
            name,
            Status::Pass,
            format!(
                "all {} permissions a backup and a restore use are granted",
                ORCHESTRATOR_PERMISSIONS.len()
            ),
            None,
        )]
    } else {
        vec![check(
            name,
            Status::Fail,
            format!("denied: {}", denied.join(", ")),
            Some("apply deploy/rbac/orchestrator.yaml and bind it to this identity"),
        )]
    }
}

/// `get pods/log`: only for showing the movers' progress, so a denial is a warning.
async fn progress_permission(client: &Client, ns: &str) -> Check {
    let name = format!("mover progress in {ns}");
    let review: SelfSubjectAccessReview = match serde_json::from_value(serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "get", "resource": "pods",
                 "subresource": "log", "namespace": ns}}
    })) {
        Ok(r) => r,
        Err(e) => return check(name, Status::Warn, format!("cannot check: {e}"), None),
    };
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    match reviews.create(&PostParams::default(), &review).await {
        Ok(answer) if answer.status.as_ref().is_some_and(|s| s.allowed) => check(
            name,
            Status::Pass,
            "get pods/log is granted: backups and restores show bytes moved",
            None,
        ),
        Ok(_) => check(
            name,
            Status::Warn,
            "get pods/log is denied: backups and restores work but show no byte counts",
            Some("apply deploy/rbac/orchestrator.yaml, which grants it"),
        ),
        Err(e) => check(
            name,
            Status::Warn,
            format!(
                "cannot check: {}",
                crate::Error::api("SelfSubjectAccessReview", e)
            ),
            None,
        ),
    }
}

async fn repo_secret(client: &Client, ns: &str, name: &str) -> Check {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let title = format!("repository secret {ns}/{name}");
    match secrets.get_opt(name).await {
        Ok(Some(secret)) => {
            let keys: BTreeSet<String> = secret.data.unwrap_or_default().into_keys()
                .chain(secret.string_data.unwrap_or_default().into_keys()).collect();
            if !keys.contains("S3MOVER_REPO") {
                return check(title, Status::Fail, "has no S3MOVER_REPO key", Some("kubectl create secret generic ... --from-literal=S3MOVER_REPO=s3://bucket/prefix --from-literal=S3MOVER_PASSWORD=..."));
            }
            let password = ["S3MOVER_PASSWORD", "S3MOVER_PASSWORD_FILE", "S3MOVER_PASSWORD_COMMAND"].iter().any(|k| keys.contains(*k));
            if password {
                check(title, Status::Pass, format!("keys: {}", keys.into_iter().collect::<Vec<_>>().join(", ")), None)
            } else {
                check(title, Status::Warn, "has no S3MOVER_PASSWORD: only an unencrypted repository opens", Some("add S3MOVER_PASSWORD to the Secret"))
            }
        }
        Ok(None) => check(title, Status::Fail, "does not exist", Some("kubectl create secret generic s3mover-repo -n NS --from-literal=S3MOVER_REPO=... --from-literal=S3MOVER_PASSWORD=...")),
        Err(e) => check(title, Status::Warn, format!("cannot read it: {}", crate::Error::api("get", e)), Some("grant get secrets in this namespace")),
    }
}

async fn mover_account(client: &Client, ns: &str, name: &str) -> Check {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let title = format!("mover service account {ns}/{name}");
    match accounts.get_opt(name).await {
        Ok(Some(_)) => check(title, Status::Pass, "exists", None),
        Ok(None) => check(
            title,
            Status::Fail,
            "does not exist",
            Some("apply deploy/rbac/mover.yaml in this namespace"),
        ),
        Err(e) => check(
            title,
            Status::Warn,
            format!("cannot read it: {}", crate::Error::api("get", e)),
            None,
        ),
    }
}

async fn claim_checks(client: &Client, options: &DoctorOptions) -> Vec<Check> {
    let ns = options.namespace.as_str();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let list = match &options.pvc {
        Some(name) => match claims.get_opt(name).await {
            Ok(Some(c)) => vec![c],
            Ok(None) => {
                return vec![check(
                    format!("claim {ns}/{name}"),
                    Status::Fail,
                    "does not exist",
                    None,
                )]
            }
            Err(e) => {
                return vec![check(
                    format!("claim {ns}/{name}"),
                    Status::Fail,
                    crate::Error::api("get", e).to_string(),
                    None,
                )]
            }
        },
        None => match claims.list(&ListParams::default()).await {
            Ok(l) => l
                .items
                .into_iter()
                .filter(|c| {
                    c.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(crate::labels::MANAGED_BY))
                        .is_none()
                })
                .collect(),
            Err(e) => {
                return vec![check(
                    format!("claims in {ns}"),
                    Status::Warn,
                    crate::Error::api("list", e).to_string(),
                    None,
                )]
            }
        },
    };
    let mut out = Vec::new();
    let mut drivers = BTreeSet::new();
    for claim in list {
        let name = claim.metadata.name.clone().unwrap_or_default();
        let spec = claim.spec.clone().unwrap_or_default();
        let title = format!("claim {ns}/{name}");
        let mode = spec
            .volume_mode
            .clone()
            .unwrap_or_else(|| "Filesystem".into());
        let Some(volume) = spec.volume_name.clone() else {
            out.push(check(
                title,
                Status::Warn,
                "not bound yet",
                Some("a claim is backed up once it is Bound"),
            ));
            continue;
        };
        let driver = Api::<PersistentVolume>::all(client.clone())
            .get(&volume)
            .await
            .ok()
            .and_then(|pv| pv.spec?.csi.map(|c| c.driver));
        match driver {
            Some(driver) => {
                drivers.insert(driver.clone());
                if mode == "Block" {
                    out.push(check(
                        title,
                        Status::Pass,
                        format!("Block mode on {driver}"),
                        None,
                    ));
                } else {
                    out.push(check(title, Status::Warn, format!("{mode} mode on {driver}: read through a Block claim after annotating the snapshot content"),
                        Some("grant patch volumesnapshotcontents (deploy/rbac/orchestrator.yaml does)")));
                }
            }
            None => out.push(check(
                title,
                Status::Fail,
                "not a CSI volume: it cannot be snapshotted",
                Some("move the data to a CSI storage class"),
            )),
        }
    }
    for driver in drivers {
        out.push(match crate::backup::default_snapshot_class(client, &driver).await {
            Ok(class) => check(format!("snapshot class for {driver}"), Status::Pass, format!("default class {class}"), None),
            Err(e) => check(format!("snapshot class for {driver}"), Status::Fail, e.to_string(), Some("create a VolumeSnapshotClass for the driver annotated snapshot.storage.kubernetes.io/is-default-class=true, or pass --snapshot-class")),
        });
        out.push(service_check(client, &driver).await);
    }
    out
}

async fn service_check(client: &Client, driver: &str) -> Check {
    let title = format!("SnapshotMetadataService {driver}");
    match crate::discovery::metadata_service(client, driver).await {
        Ok(Some(service)) => match ca_validity(&service.ca_pem) {
            Ok(until) => check(title, Status::Pass, format!("address {}, audience {}, CA valid until {until}", service.address, service.audience), None),
            Err(why) => check(title, Status::Fail, why, Some("put the CA that signed the sidecar's certificate, base64 of PEM, in spec.caCert")),
        },
        Ok(None) => check(title, Status::Warn, "none: backups read the whole volume, uploading only what changed",
            Some("deploy the driver's csi-snapshot-metadata sidecar and its SnapshotMetadataService, named after the driver")),
        Err(e) => check(title, Status::Fail, e.to_string(), Some("fix the SnapshotMetadataService object")),
    }
}

/// Parses a PEM CA bundle; returns when its first certificate to expire does, or why it is
/// unusable (no certificate, unparsable, expired, not yet valid).
pub fn ca_validity(pem: &[u8]) -> Result<String, String> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut earliest: Option<i64> = None;
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| format!("caCert is not PEM: {e}"))?;
        let cert = block
            .parse_x509()
            .map_err(|e| format!("caCert holds a certificate that does not parse: {e}"))?;
        let validity = cert.validity();
        if validity.not_after.timestamp() < now {
            return Err(format!(
                "the CA certificate expired on {}",
                validity.not_after
            ));
        }
        if validity.not_before.timestamp() > now {
            return Err(format!(
                "the CA certificate is not valid before {}",
                validity.not_before
            ));
        }
        earliest = Some(earliest.map_or(validity.not_after.timestamp(), |e| {
            e.min(validity.not_after.timestamp())
        }));
    }
    let until = earliest.ok_or_else(|| "caCert holds no certificate".to_string())?;
    time::OffsetDateTime::from_unix_timestamp(until)
        .map(|t| t.date().to_string())
        .map_err(|e| e.to_string())
}

/// True when any check failed.
pub fn any_failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Status::Fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_that_is_not_pem_or_empty_is_reported() {
        assert!(ca_validity(b"").unwrap_err().contains("no certificate"));
        let broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(ca_validity(broken).is_err());
    }

    #[test]
    fn a_current_ca_passes_and_an_expired_one_fails() {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["cbt.example".into()]).expect("params");
        let current = params.self_signed(&key).expect("cert").pem();
        assert!(
            ca_validity(current.as_bytes()).is_ok(),
            "{:?}",
            ca_validity(current.as_bytes())
        );

        let mut params = rcgen::CertificateParams::new(vec!["cbt.example".into()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let expired = params.self_signed(&key).expect("cert").pem();
        let why = ca_validity(expired.as_bytes()).expect_err("expired");
        assert!(why.contains("expired"), "{why}");
    }
}
