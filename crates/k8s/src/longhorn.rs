//! Longhorn backup freshness: every bound PersistentVolume against its Longhorn
//! `BackupVolume` (`longhorn.io/v1beta2`), classified as the earlier metadata script did —
//! `OK`, `STALE` (older than the threshold), `NO_BACKUP` (no BackupVolume, or one without a
//! last backup time) or `PARSE_ERROR` (a last backup time that is not a timestamp).
//!
//! A BackupVolume names its volume in `spec.volumeName` (older Longhorn: the object's own
//! name); a Longhorn volume is named like its PV (the PV's CSI volume handle). When a volume
//! has several BackupVolumes (several backup targets), the newest backup counts.

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::Client;
use serde::Serialize;
use serde_json::Value;

use crate::{Error, Result};

/// `longhorn.io/v1beta2` BackupVolume (namespaced, in Longhorn's namespace).
pub fn backup_volume() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("longhorn.io", "v1beta2", "BackupVolume"),
        "backupvolumes",
    )
}

/// How one volume's backups stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// A backup within the threshold.
    Ok,
    /// The newest backup is older than the threshold.
    Stale,
    /// No backup at all.
    NoBackup,
    /// The last backup time cannot be read.
    ParseError,
}

/// One bound volume.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeBackup {
    /// The PV.
    pub volume: String,
    /// `namespace/claim`.
    pub pvc: String,
    /// The verdict.
    pub status: Verdict,
    /// `status.lastBackupAt`, as found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,
    /// Age of the last backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<i64>,
    /// `status.dataStored` in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_stored_bytes: Option<u64>,
    /// Why the time could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A bound PV: its name, CSI volume handle and claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundVolume {
    /// The PV's name.
    pub name: String,
    /// Its CSI volume handle, if any (Longhorn's volume name).
    pub handle: Option<String>,
    /// Its CSI driver, if any.
    pub driver: Option<String>,
    /// `namespace/claim`.
    pub pvc: String,
}

/// The bound PVs (phase Bound, a claimRef with namespace and name), sorted by name.
pub async fn bound_volumes(client: &Client) -> Result<Vec<BoundVolume>> {
    let pvs = Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::api("cannot list PersistentVolumes", e))?;
    let mut out: Vec<BoundVolume> = pvs
        .items
        .into_iter()
        .filter(|pv| pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
        .filter_map(|pv| {
            let spec = pv.spec?;
            let claim = spec.claim_ref?;
            let csi = spec.csi;
            Some(BoundVolume {
                name: pv.metadata.name?,
                handle: csi.as_ref().map(|c| c.volume_handle.clone()),
                driver: csi.map(|c| c.driver),
                pvc: format!("{}/{}", claim.namespace?, claim.name?),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The BackupVolume objects of `namespace`, as JSON; an error that says so when Longhorn's
/// BackupVolume kind is not served.
pub async fn backup_volumes(client: &Client, namespace: &str) -> Result<Vec<Value>> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &backup_volume());
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list
            .items
            .iter()
            .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
            .collect()),
        Err(e) if crate::error::not_found(&e) => Err(Error::Failed(
            "the cluster does not serve longhorn.io/v1beta2 BackupVolumes: Longhorn is not installed, or is older than 1.3".into(),
        )),
        Err(e) => Err(Error::api(
            format!("cannot list Longhorn BackupVolumes in {namespace}"),
            e,
        )),
    }
}

/// Classifies each bound volume against the BackupVolumes, with `max_age_seconds` as the
/// threshold, at `now`.
pub fn classify(
    volumes: &[BoundVolume],
    backup_volumes: &[Value],
    max_age_seconds: i64,
    now: time::OffsetDateTime,
) -> Vec<VolumeBackup> {
    volumes
        .iter()
        .map(|v| {
            let names: Vec<&str> = std::iter::once(v.name.as_str())
                .chain(v.handle.as_deref())
                .collect();
            let mine: Vec<&Value> = backup_volumes
                .iter()
                .filter(|b| {
                    let named = b["spec"]["volumeName"]
                        .as_str()
                        .filter(|n| !n.is_empty())
                        .or_else(|| b["metadata"]["name"].as_str());
                    named.is_some_and(|n| names.contains(&n))
                })
                .collect();
            classify_one(v, &mine, max_age_seconds, now)
        })
        .collect()
}

fn classify_one(
    volume: &BoundVolume,
    backups: &[&Value],
    max_age_seconds: i64,
    now: time::OffsetDateTime,
) -> VolumeBackup {
    let mut entry = VolumeBackup {
        volume: volume.name.clone(),
        pvc: volume.pvc.clone(),
        status: Verdict::NoBackup,
        last_backup: None,
        age_seconds: None,
        data_stored_bytes: None,
        error: None,
    };
    let mut newest: Option<(time::OffsetDateTime, &Value)> = None;
    let mut unreadable: Option<(String, String)> = None;
    for &b in backups {
        let Some(at) = b["status"]["lastBackupAt"]
            .as_str()
            .filter(|s| !s.trim().is_empty())
        else {
            continue;
        };
        match time::OffsetDateTime::parse(at.trim(), &time::format_description::well_known::Rfc3339)
        {
            Ok(t) => {
                if newest.is_none_or(|(n, _)| t > n) {
                    newest = Some((t, b));
                }
            }
            Err(e) => unreadable = Some((at.to_string(), e.to_string())),
        }
    }
    match (newest, unreadable) {
        (Some((t, b)), _) => {
            let age = (now - t).whole_seconds().max(0);
            entry.last_backup = b["status"]["lastBackupAt"].as_str().map(str::to_string);
            entry.age_seconds = Some(age);
            entry.data_stored_bytes = data_stored(&b["status"]["dataStored"]);
            entry.status = if age > max_age_seconds {
                Verdict::Stale
            } else {
                Verdict::Ok
            };
        }
        (None, Some((at, why))) => {
            entry.status = Verdict::ParseError;
            entry.last_backup = Some(at);
            entry.error = Some(why);
        }
        (None, None) => {}
    }
    entry
}

/// `status.dataStored`: Longhorn writes it as a string of bytes; a number is taken too.
fn data_stored(value: &Value) -> Option<u64> {
    match value {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bound(name: &str, pvc: &str) -> BoundVolume {
        BoundVolume {
            name: name.into(),
            handle: Some(name.into()),
            driver: Some("driver.longhorn.io".into()),
            pvc: pvc.into(),
        }
    }

    #[test]
    fn verdicts() {
        let now = time::OffsetDateTime::parse(
            "2026-12-02T12:00:00Z",
            &time::format_description::well_known::Rfc3339,
        )
        .expect("time");
        let volumes = [
            bound("pv-ok", "a/ok"),
            bound("pv-stale", "a/stale"),
            bound("pv-none", "a/none"),
            bound("pv-empty", "a/empty"),
            bound("pv-bad", "a/bad"),
            bound("pv-two", "a/two"),
        ];
        let bvs = [
            json!({"metadata": {"name": "bv-1"}, "spec": {"volumeName": "pv-ok"}, "status": {"lastBackupAt": "2026-12-02T06:00:00Z", "dataStored": "1073741824"}}),
            json!({"metadata": {"name": "bv-2"}, "spec": {"volumeName": "pv-stale"}, "status": {"lastBackupAt": "2026-11-29T12:00:00Z"}}),
            json!({"metadata": {"name": "pv-empty"}, "spec": {}, "status": {"lastBackupAt": ""}}),
            json!({"metadata": {"name": "bv-4"}, "spec": {"volumeName": "pv-bad"}, "status": {"lastBackupAt": "yesterday"}}),
            json!({"metadata": {"name": "bv-5"}, "spec": {"volumeName": "pv-two"}, "status": {"lastBackupAt": "2026-11-01T00:00:00Z"}}),
            json!({"metadata": {"name": "bv-6"}, "spec": {"volumeName": "pv-two"}, "status": {"lastBackupAt": "2026-12-02T11:00:00+00:00"}}),
        ];
        let out = classify(&volumes, &bvs, 48 * 3600, now);
        let verdicts: Vec<Verdict> = out.iter().map(|e| e.status).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Ok,
                Verdict::Stale,
                Verdict::NoBackup,
                Verdict::NoBackup,
                Verdict::ParseError,
                Verdict::Ok
            ]
        );
        assert_eq!(out[0].age_seconds, Some(6 * 3600));
        assert_eq!(out[0].data_stored_bytes, Some(1 << 30));
        assert!(out[4].error.is_some());
        assert_eq!(out[5].age_seconds, Some(3600), "the newest of two targets");
        assert_eq!(
            serde_json::to_value(Verdict::NoBackup).expect("json"),
            "NO_BACKUP"
        );
    }
}
