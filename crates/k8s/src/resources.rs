//! The custom resources s3mover reads and writes — VolumeSnapshot, VolumeSnapshotContent,
//! VolumeSnapshotClass (`snapshot.storage.k8s.io/v1`) and SnapshotMetadataService
//! (`cbt.storage.k8s.io/v1beta1`) — as dynamic objects, with typed views of the fields used.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::Client;
use serde_json::Value;

/// `snapshot.storage.k8s.io/v1` VolumeSnapshot (namespaced).
pub fn volume_snapshot() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot"),
        "volumesnapshots",
    )
}

/// `snapshot.storage.k8s.io/v1` VolumeSnapshotContent (cluster-scoped).
pub fn volume_snapshot_content() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotContent"),
        "volumesnapshotcontents",
    )
}

/// `snapshot.storage.k8s.io/v1` VolumeSnapshotClass (cluster-scoped).
pub fn volume_snapshot_class() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotClass"),
        "volumesnapshotclasses",
    )
}

/// `cbt.storage.k8s.io/v1beta1` SnapshotMetadataService (cluster-scoped, named after the driver).
pub fn snapshot_metadata_service() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cbt.storage.k8s.io", "v1beta1", "SnapshotMetadataService"),
        "snapshotmetadataservices",
    )
}

/// VolumeSnapshots of a namespace.
pub fn snapshots(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &volume_snapshot())
}

/// All VolumeSnapshotContents.
pub fn contents(client: &Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &volume_snapshot_content())
}

/// All VolumeSnapshotClasses.
pub fn snapshot_classes(client: &Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &volume_snapshot_class())
}

/// All SnapshotMetadataServices.
pub fn metadata_services(client: &Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &snapshot_metadata_service())
}

/// A string at a JSON path in an object's data (`["status", "error", "message"]`).
pub fn str_at<'a>(object: &'a DynamicObject, path: &[&str]) -> Option<&'a str> {
    value_at(&object.data, path)?.as_str()
}

/// A value at a JSON path.
pub fn value_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

/// What a VolumeSnapshot says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// `status.readyToUse`.
    pub ready: bool,
    /// `status.boundVolumeSnapshotContentName`.
    pub content: Option<String>,
    /// `status.error.message`.
    pub error: Option<String>,
    /// `status.restoreSize` (a quantity).
    pub restore_size: Option<String>,
}

impl SnapshotStatus {
    /// Reads the status of a VolumeSnapshot.
    pub fn of(snapshot: &DynamicObject) -> SnapshotStatus {
        SnapshotStatus {
            ready: value_at(&snapshot.data, &["status", "readyToUse"])
                .and_then(Value::as_bool)
                .unwrap_or(false),
            content: str_at(snapshot, &["status", "boundVolumeSnapshotContentName"])
                .map(str::to_string),
            error: str_at(snapshot, &["status", "error", "message"]).map(str::to_string),
            restore_size: value_at(&snapshot.data, &["status", "restoreSize"]).map(quantity_text),
        }
    }
}

/// What the backup needs from a VolumeSnapshotContent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentInfo {
    /// The content's name.
    pub name: String,
    /// `spec.driver`.
    pub driver: String,
    /// `status.snapshotHandle`: the CSI snapshot id, the base of the next delta.
    pub snapshot_handle: Option<String>,
    /// `spec.sourceVolumeMode`.
    pub source_volume_mode: Option<String>,
    /// `status.restoreSize` in bytes.
    pub restore_size: Option<u64>,
    /// Whether the volume-mode-change annotation is `"true"`.
    pub allows_mode_change: bool,
}

impl ContentInfo {
    /// Reads a VolumeSnapshotContent.
    pub fn of(content: &DynamicObject) -> ContentInfo {
        ContentInfo {
            name: content.metadata.name.clone().unwrap_or_default(),
            driver: str_at(content, &["spec", "driver"])
                .unwrap_or_default()
                .to_string(),
            snapshot_handle: str_at(content, &["status", "snapshotHandle"]).map(str::to_string),
            source_volume_mode: str_at(content, &["spec", "sourceVolumeMode"]).map(str::to_string),
            restore_size: value_at(&content.data, &["status", "restoreSize"]).and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(crate::record::parse_quantity))
            }),
            allows_mode_change: content
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::labels::ALLOW_VOLUME_MODE_CHANGE))
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        }
    }
}

/// A quantity as text, whether the JSON holds it as a string or a number.
fn quantity_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The spec of a SnapshotMetadataService.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataService {
    /// The object's name (the driver's).
    pub name: String,
    /// `spec.address`: `host:port`, no scheme.
    pub address: String,
    /// `spec.audience`: the audience the token must carry.
    pub audience: String,
    /// `spec.caCert`, decoded: PEM text.
    pub ca_pem: Vec<u8>,
}

impl MetadataService {
    /// Reads and checks a SnapshotMetadataService; says which field is missing or broken.
    pub fn of(object: &DynamicObject) -> Result<MetadataService, String> {
        use base64::Engine as _;
        let name = object.metadata.name.clone().unwrap_or_default();
        let field = |f: &str| {
            str_at(object, &["spec", f])
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("SnapshotMetadataService {name} has no spec.{f}"))
        };
        let address = field("address")?.to_string();
        let audience = field("audience")?.to_string();
        let ca_text: String = field("caCert")?
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let ca_pem = base64::engine::general_purpose::STANDARD
            .decode(ca_text.as_bytes())
            .map_err(|e| {
                format!("SnapshotMetadataService {name}: spec.caCert is not base64: {e}")
            })?;
        Ok(MetadataService {
            name,
            address,
            audience,
            ca_pem,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(json: Value) -> DynamicObject {
        serde_json::from_value(json).expect("object")
    }

    #[test]
    fn snapshot_and_content_fields() {
        let vs = object(serde_json::json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "s", "namespace": "db"},
            "status": {"readyToUse": false, "boundVolumeSnapshotContentName": "snapcontent-1",
                       "error": {"message": "driver said no"}, "restoreSize": "1Gi"}
        }));
        let status = SnapshotStatus::of(&vs);
        assert!(!status.ready);
        assert_eq!(status.content.as_deref(), Some("snapcontent-1"));
        assert_eq!(status.error.as_deref(), Some("driver said no"));
        assert_eq!(status.restore_size.as_deref(), Some("1Gi"));

        let vsc = object(serde_json::json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": "snapcontent-1",
                "annotations": {"snapshot.storage.kubernetes.io/allow-volume-mode-change": "true"}},
            "spec": {"driver": "hostpath.csi.k8s.io", "sourceVolumeMode": "Filesystem"},
            "status": {"snapshotHandle": "7d6c", "restoreSize": 1073741824u64, "readyToUse": true}
        }));
        let info = ContentInfo::of(&vsc);
        assert_eq!(info.driver, "hostpath.csi.k8s.io");
        assert_eq!(info.snapshot_handle.as_deref(), Some("7d6c"));
        assert_eq!(info.source_volume_mode.as_deref(), Some("Filesystem"));
        assert_eq!(info.restore_size, Some(1 << 30));
        assert!(info.allows_mode_change);
    }

    #[test]
    fn metadata_service_decodes_the_ca_and_names_missing_fields() {
        use base64::Engine as _;
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
        let sms = object(serde_json::json!({
            "apiVersion": "cbt.storage.k8s.io/v1beta1", "kind": "SnapshotMetadataService",
            "metadata": {"name": "hostpath.csi.k8s.io"},
            "spec": {"address": "csi-snapshot-metadata.default:6443", "audience": "aud", "caCert": b64}
        }));
        let service = MetadataService::of(&sms).expect("service");
        assert_eq!(service.ca_pem, pem.as_bytes());
        assert_eq!(service.audience, "aud");

        let broken = object(serde_json::json!({
            "apiVersion": "cbt.storage.k8s.io/v1beta1", "kind": "SnapshotMetadataService",
            "metadata": {"name": "d"}, "spec": {"address": "a:1", "caCert": b64}
        }));
        assert_eq!(
            MetadataService::of(&broken).unwrap_err(),
            "SnapshotMetadataService d has no spec.audience"
        );
    }
}
