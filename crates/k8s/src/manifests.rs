//! The objects s3mover creates, built as plain values: the VolumeSnapshot of a claim, the
//! temporary Block claim made from it, the ConfigMap carrying the CBT service's CA, the claim a
//! restore creates and the mover Job. No I/O here.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim};
use kube::api::DynamicObject;
use serde_json::json;

use crate::record::format_quantity;

/// Where a mover pod sees the volume as a raw device.
pub const DEVICE_PATH: &str = "/dev/s3mover-volume";
/// Where a mover pod finds the CBT token and CA.
pub const CBT_DIR: &str = "/var/run/s3mover/cbt";
/// The token file in [`CBT_DIR`].
pub const CBT_TOKEN: &str = "/var/run/s3mover/cbt/token";
/// The CA file in [`CBT_DIR`].
pub const CBT_CA: &str = "/var/run/s3mover/cbt/ca.crt";
/// The mover's termination message file: its JSON result.
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// The environment variable that makes `s3mover` write its result there.
pub const RESULT_FILE_ENV: &str = "S3MOVER_RESULT_FILE";
/// The environment variable that makes `s3mover` log its progress as lines
/// (`progress: DONE/TOTAL bytes`), which the orchestrator reads from the pod's log.
pub const PROGRESS_ENV: &str = "S3MOVER_PROGRESS";
/// Lifetime asked for the projected CBT token; the kubelet rotates it before it expires.
pub const TOKEN_SECONDS: i64 = 3600;

fn metadata(name: &str, namespace: &str, labels: &BTreeMap<String, String>) -> serde_json::Value {
    json!({"name": name, "namespace": namespace, "labels": labels})
}

/// A VolumeSnapshot of claim `pvc`.
pub fn snapshot(
    name: &str,
    namespace: &str,
    pvc: &str,
    class: &str,
    labels: &BTreeMap<String, String>,
) -> DynamicObject {
    let mut meta = metadata(name, namespace, labels);
    meta["annotations"] = json!({ crate::labels::PVC_NAME_ANNOTATION: pvc });
    from_json(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": meta,
        "spec": {
            "volumeSnapshotClassName": class,
            "source": {"persistentVolumeClaimName": pvc}
        }
    }))
}

/// The temporary claim a backup reads: Block mode, from `snapshot`, ReadWriteOnce, at least
/// `size` bytes, in the source claim's storage class.
pub fn temporary_claim(
    name: &str,
    namespace: &str,
    snapshot: &str,
    size: u64,
    storage_class: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> PersistentVolumeClaim {
    from_json(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(name, namespace, labels),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": "Block",
            "storageClassName": storage_class,
            "resources": {"requests": {"storage": format_quantity(size)}},
            "dataSource": {
                "apiGroup": "snapshot.storage.k8s.io",
                "kind": "VolumeSnapshot",
                "name": snapshot
            }
        }
    }))
}

/// Size, mode, access modes and class of a claim to create.
#[derive(Debug, Clone, Copy)]
pub struct ClaimShape<'a> {
    /// Bytes.
    pub size: u64,
    /// `Block` or `Filesystem`.
    pub volume_mode: &'a str,
    /// Access modes.
    pub access_modes: &'a [String],
    /// Storage class (`None`: the cluster's default).
    pub storage_class: Option<&'a str>,
}

/// The claim a restore creates.
pub fn restored_claim(
    name: &str,
    namespace: &str,
    shape: ClaimShape<'_>,
    labels: &BTreeMap<String, String>,
    backup_id: &str,
) -> PersistentVolumeClaim {
    let ClaimShape {
        size,
        volume_mode,
        access_modes,
        storage_class,
    } = shape;
    let mut meta = metadata(name, namespace, labels);
    meta["annotations"] = json!({ crate::labels::RESTORED_FROM: backup_id });
    from_json(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta,
        "spec": {
            "accessModes": access_modes,
            "volumeMode": volume_mode,
            "storageClassName": storage_class,
            "resources": {"requests": {"storage": format_quantity(size)}}
        }
    }))
}

/// The ConfigMap that carries the CBT service's CA into the mover pod.
pub fn ca_config_map(
    name: &str,
    namespace: &str,
    ca_pem: &[u8],
    labels: &BTreeMap<String, String>,
) -> ConfigMap {
    from_json(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(name, namespace, labels),
        "data": {"ca.crt": String::from_utf8_lossy(ca_pem)}
    }))
}

/// How to reach the CBT service from the mover pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoverCbt {
    /// The audience of the projected token.
    pub audience: String,
    /// The ConfigMap holding `ca.crt`.
    pub ca_config_map: String,
}

/// A mover Job.
#[derive(Debug, Clone)]
pub struct MoverJob<'a> {
    /// Job name.
    pub name: &'a str,
    /// Its namespace (the claim's).
    pub namespace: &'a str,
    /// Labels on the Job and its pods.
    pub labels: &'a BTreeMap<String, String>,
    /// The image; its entrypoint is `s3mover`, which the Job does not override (only `args`).
    pub image: &'a str,
    /// `imagePullPolicy`, if not the cluster's default.
    pub pull_policy: Option<&'a str>,
    /// The pod's service account.
    pub service_account: &'a str,
    /// The Secret whose keys are the repository's environment variables.
    pub repo_secret: &'a str,
    /// The claim attached as a raw device at [`DEVICE_PATH`].
    pub claim: &'a str,
    /// Arguments after `s3mover`.
    pub args: Vec<String>,
    /// CBT token and CA to mount, if the driver has a service.
    pub cbt: Option<MoverCbt>,
    /// Pod retries before the Job fails.
    pub backoff_limit: i32,
    /// `activeDeadlineSeconds`: the Job (pods included) is stopped after this.
    pub deadline_seconds: Option<i64>,
}

/// Builds the mover Job: root but not privileged, the claim as a raw device, the repository
/// Secret as environment, the JSON result in the termination message.
pub fn mover_job(spec: &MoverJob<'_>) -> Job {
    let mut volumes =
        vec![json!({"name": "volume", "persistentVolumeClaim": {"claimName": spec.claim}})];
    let mut mounts = vec![];
    if let Some(cbt) = &spec.cbt {
        volumes.push(json!({
            "name": "cbt",
            "projected": {"sources": [
                {"serviceAccountToken": {"audience": cbt.audience, "expirationSeconds": TOKEN_SECONDS, "path": "token"}},
                {"configMap": {"name": cbt.ca_config_map, "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
            ]}
        }));
        mounts.push(json!({"name": "cbt", "mountPath": CBT_DIR, "readOnly": true}));
    }
    from_json(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(spec.name, spec.namespace, spec.labels),
        "spec": {
            "backoffLimit": spec.backoff_limit,
            "activeDeadlineSeconds": spec.deadline_seconds,
            "template": {
                "metadata": {"labels": spec.labels},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": spec.service_account,
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 10,
                    "securityContext": {"runAsUser": 0, "runAsNonRoot": false},
                    "containers": [{
                        "name": "mover",
                        "image": spec.image,
                        "imagePullPolicy": spec.pull_policy,
                        "args": spec.args,
                        "envFrom": [{"secretRef": {"name": spec.repo_secret}}],
                        "env": [
                            {"name": RESULT_FILE_ENV, "value": TERMINATION_LOG},
                            {"name": PROGRESS_ENV, "value": "lines"}
                        ],
                        "securityContext": {"privileged": false, "allowPrivilegeEscalation": false},
                        "terminationMessagePath": TERMINATION_LOG,
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "volumeDevices": [{"name": "volume", "devicePath": DEVICE_PATH}],
                        "volumeMounts": mounts
                    }],
                    "volumes": volumes
                }
            }
        }
    }))
}

/// Values built here are valid by construction; a failure is a bug in this file.
fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    match serde_json::from_value(value) {
        Ok(v) => v,
        Err(e) => panic!("manifest does not match its type: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::object_labels;

    #[test]
    fn temporary_claim_is_block_from_the_snapshot() {
        let labels = object_labels("op1", crate::labels::ROLE_CLAIM, "data");
        let claim = temporary_claim("tmp", "db", "snap", 1 << 30, Some("fast"), &labels);
        let spec = claim.spec.expect("spec");
        assert_eq!(spec.volume_mode.as_deref(), Some("Block"));
        let source = spec.data_source.expect("dataSource");
        assert_eq!(
            (source.kind.as_str(), source.name.as_str()),
            ("VolumeSnapshot", "snap")
        );
        assert_eq!(source.api_group.as_deref(), Some("snapshot.storage.k8s.io"));
        let requests = spec.resources.and_then(|r| r.requests).expect("requests");
        assert_eq!(requests["storage"].0, "1Gi");
        assert_eq!(
            claim.metadata.labels.expect("labels")["app.kubernetes.io/managed-by"],
            "s3mover"
        );
    }

    #[test]
    fn mover_job_runs_as_root_unprivileged_with_a_raw_device_and_cbt() {
        let labels = object_labels("op1", crate::labels::ROLE_MOVER, "data");
        let job = mover_job(&MoverJob {
            name: "s3mover-backup-data-op1",
            namespace: "db",
            labels: &labels,
            image: "s3mover:dev",
            pull_policy: None,
            service_account: "s3mover-mover",
            repo_secret: "s3mover-repo",
            claim: "tmp",
            args: vec!["backup".into(), DEVICE_PATH.into()],
            cbt: Some(MoverCbt {
                audience: "aud".into(),
                ca_config_map: "ca".into(),
            }),
            backoff_limit: 2,
            deadline_seconds: Some(600),
        });
        let value = serde_json::to_value(&job).expect("json");
        let pod = &value["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert!(
            container.get("command").is_none(),
            "the image's entrypoint runs"
        );
        assert_eq!(container["args"][0], "backup");
        assert_eq!(pod["securityContext"]["runAsUser"], 0);
        assert_eq!(container["securityContext"]["privileged"], false);
        assert_eq!(container["volumeDevices"][0]["devicePath"], DEVICE_PATH);
        assert_eq!(container["envFrom"][0]["secretRef"]["name"], "s3mover-repo");
        assert_eq!(container["terminationMessagePath"], TERMINATION_LOG);
        assert_eq!(
            container["terminationMessagePolicy"], "FallbackToLogsOnError",
            "a mover that dies before writing its result is explained by its log"
        );
        assert_eq!(pod["restartPolicy"], "Never");
        let sources = &pod["volumes"][1]["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"]["audience"], "aud");
        assert_eq!(sources[1]["configMap"]["name"], "ca");
        assert_eq!(container["volumeMounts"][0]["mountPath"], CBT_DIR);
        assert_eq!(value["spec"]["backoffLimit"], 2);
        assert_eq!(
            value["spec"]["template"]["metadata"]["labels"]["s3mover.io/role"],
            "mover"
        );
    }

    #[test]
    fn restored_claim_carries_the_recorded_attributes() {
        let labels = object_labels("op1", crate::labels::ROLE_RESTORED, "data");
        let modes = ["ReadWriteOnce".to_string()];
        let shape = ClaimShape {
            size: 3 << 20,
            volume_mode: "Filesystem",
            access_modes: &modes,
            storage_class: None,
        };
        let claim = restored_claim("data", "db", shape, &labels, "0123abcd");
        let value = serde_json::to_value(&claim).expect("json");
        assert_eq!(value["spec"]["volumeMode"], "Filesystem");
        assert_eq!(value["spec"]["resources"]["requests"]["storage"], "3Mi");
        assert_eq!(
            value["metadata"]["annotations"]["s3mover.io/restored-from"],
            "0123abcd"
        );
        assert!(value["spec"].get("storageClassName").is_none());
    }
}
