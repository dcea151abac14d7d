//! Cluster metadata: what `s3mover cluster backup` records of a cluster so that its storage
//! can be put back together after a disaster — every PersistentVolume and
//! PersistentVolumeClaim, the PV ↔ PVC bindings with each claim's spec, StorageClasses,
//! VolumeSnapshotClasses and Nodes (roles, status, versions, addresses, capacity, labels) —
//! and the PV/PVC objects `kubectl apply` takes to re-create the bindings.
//!
//! The document is plain JSON (format `s3mover-cluster-metadata`, version 1); the CLI stores
//! it sealed in the repository.

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams};
use kube::Client;
use serde_json::{json, Map, Value};

use crate::{Error, Result};

/// The `format` field of a document.
pub const FORMAT: &str = "s3mover-cluster-metadata";

/// Annotations that describe one binding's history in the old cluster; a re-created object
/// must not carry them (the controllers set them again when they bind).
const DROPPED_ANNOTATIONS: &[&str] = &[
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.kubernetes.io/selected-node",
    "kubectl.kubernetes.io/last-applied-configuration",
];

/// Reads the cluster and builds the document for cluster `name`.
pub async fn collect(client: &Client, name: &str) -> Result<Value> {
    let lp = ListParams::default();
    let pvs = Api::<PersistentVolume>::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| Error::api("cannot list PersistentVolumes", e))?
        .items;
    let pvcs = Api::<PersistentVolumeClaim>::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| Error::api("cannot list PersistentVolumeClaims", e))?
        .items;
    let classes = Api::<StorageClass>::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| Error::api("cannot list StorageClasses", e))?
        .items;
    let nodes = Api::<Node>::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| Error::api("cannot list Nodes", e))?
        .items;
    // The snapshot CRDs are optional: a cluster without them has no classes to record.
    let snapshot_classes = match crate::resources::snapshot_classes(client).list(&lp).await {
        Ok(list) => Some(list.items),
        Err(e) if crate::error::not_found(&e) => None,
        Err(e) => return Err(Error::api("cannot list VolumeSnapshotClasses", e)),
    };
    let to_values = |items: Vec<Value>| -> Vec<Value> { items.into_iter().map(clean).collect() };
    let pvs = to_values(pvs.iter().map(to_json).collect());
    let pvcs = to_values(pvcs.iter().map(to_json).collect());
    let classes = to_values(classes.iter().map(to_json).collect());
    let snapshot_classes_known = snapshot_classes.is_some();
    let snapshot_classes = to_values(
        snapshot_classes
            .unwrap_or_default()
            .iter()
            .map(to_json)
            .collect(),
    );
    let now = time::OffsetDateTime::now_utc();
    let nodes: Vec<Value> = nodes
        .iter()
        .map(|n| node_summary(&to_json(n), now))
        .collect();
    Ok(build(
        name,
        &now,
        pvs,
        pvcs,
        classes,
        snapshot_classes,
        snapshot_classes_known,
        nodes,
    ))
}

fn to_json<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

/// Drops what the server manages and nobody restores (`managedFields`).
fn clean(mut object: Value) -> Value {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    object
}

#[allow(clippy::too_many_arguments)]
fn build(
    name: &str,
    now: &time::OffsetDateTime,
    pvs: Vec<Value>,
    pvcs: Vec<Value>,
    classes: Vec<Value>,
    snapshot_classes: Vec<Value>,
    snapshot_classes_known: bool,
    nodes: Vec<Value>,
) -> Value {
    let bindings = bindings(&pvs, &pvcs);
    let bound = pvs
        .iter()
        .filter(|pv| pv["status"]["phase"] == "Bound")
        .count();
    json!({
        "format": FORMAT,
        "version": 1,
        "clusterName": name,
        "timestamp": crate::metadata::rfc3339(now),
        "counts": {
            "persistentVolumes": pvs.len(),
            "boundPersistentVolumes": bound,
            "persistentVolumeClaims": pvcs.len(),
            "bindings": bindings.len(),
            "storageClasses": classes.len(),
            "volumeSnapshotClasses": snapshot_classes.len(),
            "nodes": nodes.len(),
        },
        "bindings": bindings,
        "nodes": nodes,
        "storageClasses": classes,
        "volumeSnapshotClasses": snapshot_classes,
        "volumeSnapshotClassesServed": snapshot_classes_known,
        "persistentVolumes": pvs,
        "persistentVolumeClaims": pvcs,
    })
}

fn rfc3339(t: &time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn text<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    crate::resources::value_at(value, path)?.as_str()
}

/// One row per PV that names a claim: the PV, the claim, and the claim's spec (if the claim
/// still exists).
fn bindings(pvs: &[Value], pvcs: &[Value]) -> Vec<Value> {
    let mut rows = Vec::new();
    for pv in pvs {
        let (Some(ns), Some(claim)) = (
            text(pv, &["spec", "claimRef", "namespace"]),
            text(pv, &["spec", "claimRef", "name"]),
        ) else {
            continue;
        };
        let pv_name = text(pv, &["metadata", "name"]).unwrap_or_default();
        let pvc = pvcs.iter().find(|c| {
            text(c, &["metadata", "namespace"]) == Some(ns)
                && text(c, &["metadata", "name"]) == Some(claim)
        });
        let claim_bound_here =
            pvc.is_some_and(|c| text(c, &["spec", "volumeName"]) == Some(pv_name));
        rows.push(json!({
            "persistentVolume": pv_name,
            "namespace": ns,
            "claim": claim,
            "pvc": format!("{ns}/{claim}"),
            "phase": text(pv, &["status", "phase"]),
            "capacity": text(pv, &["spec", "capacity", "storage"]),
            "storageClass": text(pv, &["spec", "storageClassName"]),
            "reclaimPolicy": text(pv, &["spec", "persistentVolumeReclaimPolicy"]),
            "driver": text(pv, &["spec", "csi", "driver"]),
            "volumeHandle": text(pv, &["spec", "csi", "volumeHandle"]),
            "claimExists": pvc.is_some(),
            "claimBoundHere": claim_bound_here,
            "claimSpec": pvc.map(|c| c["spec"].clone()),
            "claimLabels": pvc.map(|c| c["metadata"]["labels"].clone()),
        }));
    }
    rows.sort_by(|a, b| a["pvc"].as_str().cmp(&b["pvc"].as_str()));
    rows
}

/// The fields the earlier metadata script kept of a node.
fn node_summary(node: &Value, now: time::OffsetDateTime) -> Value {
    let labels = node["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut roles: Vec<String> = labels
        .keys()
        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect();
    roles.sort();
    let ready = node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    let address = |kind: &str| {
        node["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == kind)
            .and_then(|a| a["address"].as_str())
            .map(str::to_string)
    };
    let created = text(node, &["metadata", "creationTimestamp"]);
    let age_days = created
        .and_then(|c| {
            time::OffsetDateTime::parse(c, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(|t| (now - t).whole_days());
    let resources = |which: &str| {
        let mut out = Map::new();
        for key in ["cpu", "memory", "pods", "ephemeral-storage"] {
            if let Some(v) = node["status"][which][key].as_str() {
                out.insert(key.to_string(), v.into());
            }
        }
        Value::Object(out)
    };
    let info = &node["status"]["nodeInfo"];
    json!({
        "name": text(node, &["metadata", "name"]),
        "status": if ready { "Ready" } else { "NotReady" },
        "roles": if roles.is_empty() { "<none>".to_string() } else { roles.join(",") },
        "ageDays": age_days,
        "kubeletVersion": info["kubeletVersion"],
        "internalIP": address("InternalIP"),
        "externalIP": address("ExternalIP"),
        "hostname": address("Hostname"),
        "osImage": info["osImage"],
        "kernelVersion": info["kernelVersion"],
        "containerRuntime": info["containerRuntimeVersion"],
        "architecture": info["architecture"],
        "creationTimestamp": created,
        "labels": node["metadata"]["labels"],
        "annotations": node["metadata"]["annotations"],
        "taints": node["spec"]["taints"],
        "podCIDR": node["spec"]["podCIDR"],
        "providerID": node["spec"]["providerID"],
        "capacity": resources("capacity"),
        "allocatable": resources("allocatable"),
    })
}

/// The PV and PVC of every binding in a document, as objects `kubectl apply` creates anew:
/// server-set metadata (uid, resourceVersion, creation time, finalizers, managed fields) and
/// status are dropped, the PV's claimRef keeps only the claim's namespace and name (so it
/// binds to the re-created claim, whatever its new uid), and the claim keeps `volumeName`,
/// so each pair binds to each other again. PVs come first, each followed by its claim.
pub fn apply_objects(document: &Value) -> Vec<Value> {
    let empty = Vec::new();
    let pvs = document["persistentVolumes"].as_array().unwrap_or(&empty);
    let pvcs = document["persistentVolumeClaims"]
        .as_array()
        .unwrap_or(&empty);
    let mut out = Vec::new();
    let mut pairs: Vec<(&Value, &Value)> = pvs
        .iter()
        .filter_map(|pv| {
            let ns = text(pv, &["spec", "claimRef", "namespace"])?;
            let claim = text(pv, &["spec", "claimRef", "name"])?;
            let pvc = pvcs.iter().find(|c| {
                text(c, &["metadata", "namespace"]) == Some(ns)
                    && text(c, &["metadata", "name"]) == Some(claim)
            })?;
            Some((pv, pvc))
        })
        .collect();
    pairs.sort_by_key(|(pv, _)| {
        text(pv, &["metadata", "name"])
            .unwrap_or_default()
            .to_string()
    });
    for (pv, pvc) in pairs {
        let mut pv_out = fresh(pv, "PersistentVolume");
        if let Some(claim_ref) = pv_out["spec"]["claimRef"].as_object_mut() {
            claim_ref.retain(|k, _| k == "namespace" || k == "name");
            claim_ref.insert("apiVersion".into(), "v1".into());
            claim_ref.insert("kind".into(), "PersistentVolumeClaim".into());
        }
        let mut pvc_out = fresh(pvc, "PersistentVolumeClaim");
        if let Some(name) = text(pv, &["metadata", "name"]) {
            pvc_out["spec"]["volumeName"] = name.into();
        }
        out.push(pv_out);
        out.push(pvc_out);
    }
    out
}

/// An object with only what a create takes: apiVersion, kind, name, namespace, labels,
/// annotations (without binding history) and spec.
fn fresh(object: &Value, kind: &str) -> Value {
    let meta = &object["metadata"];
    let mut new_meta = Map::new();
    for key in ["name", "namespace", "labels"] {
        if !meta[key].is_null() {
            new_meta.insert(key.into(), meta[key].clone());
        }
    }
    if let Some(annotations) = meta["annotations"].as_object() {
        let kept: Map<String, Value> = annotations
            .iter()
            .filter(|(k, _)| !DROPPED_ANNOTATIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !kept.is_empty() {
            new_meta.insert("annotations".into(), Value::Object(kept));
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": kind,
        "metadata": new_meta,
        "spec": object["spec"].clone(),
    })
}

/// The counts a listing shows, from a document.
pub fn counts(document: &Value) -> Value {
    document["counts"].clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(name: &str, ns: &str, claim: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "uid": "u1", "resourceVersion": "7",
                "finalizers": ["kubernetes.io/pv-protection"],
                "annotations": {"pv.kubernetes.io/provisioned-by": "driver.longhorn.io",
                                "pv.kubernetes.io/bound-by-controller": "yes"}},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "longhorn",
                "csi": {"driver": "driver.longhorn.io", "volumeHandle": name},
                "claimRef": {"kind": "PersistentVolumeClaim", "namespace": ns, "name": claim,
                             "uid": "old-uid", "resourceVersion": "5", "apiVersion": "v1"}},
            "status": {"phase": "Bound"},
        })
    }

    fn pvc(ns: &str, name: &str, volume: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": ns, "uid": "old-uid", "labels": {"app": "db"},
                "annotations": {"pv.kubernetes.io/bind-completed": "yes", "team": "a"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                "storageClassName": "longhorn", "volumeName": volume, "volumeMode": "Filesystem"},
            "status": {"phase": "Bound"},
        })
    }

    #[test]
    fn bindings_carry_the_claim_spec() {
        let doc = build(
            "k3s",
            &time::OffsetDateTime::UNIX_EPOCH,
            vec![pv("pv-a", "db", "data"), pv("pv-orphan", "gone", "x")],
            vec![pvc("db", "data", "pv-a")],
            vec![],
            vec![],
            false,
            vec![],
        );
        let rows = doc["bindings"].as_array().expect("bindings");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["pvc"], "db/data");
        assert_eq!(
            rows[0]["claimSpec"]["resources"]["requests"]["storage"],
            "1Gi"
        );
        assert_eq!(rows[0]["claimBoundHere"], true);
        assert_eq!(rows[1]["claimExists"], false);
        assert_eq!(doc["counts"]["boundPersistentVolumes"], 2);
    }

    #[test]
    fn apply_objects_rebind_without_old_identity() {
        let doc = json!({
            "persistentVolumes": [pv("pv-b", "db", "logs"), pv("pv-a", "db", "data"), pv("pv-c", "gone", "x")],
            "persistentVolumeClaims": [pvc("db", "data", "pv-a"), pvc("db", "logs", "pv-b")],
        });
        let objects = apply_objects(&doc);
        let names: Vec<&str> = objects
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(names, ["pv-a", "data", "pv-b", "logs"]);
        let pv = &objects[0];
        assert_eq!(
            pv["spec"]["claimRef"],
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "db", "name": "data"})
        );
        assert!(pv["metadata"].get("uid").is_none());
        assert!(pv["metadata"].get("finalizers").is_none());
        assert!(pv.get("status").is_none());
        assert_eq!(
            pv["metadata"]["annotations"],
            json!({"pv.kubernetes.io/provisioned-by": "driver.longhorn.io"})
        );
        let claim = &objects[1];
        assert_eq!(claim["spec"]["volumeName"], "pv-a");
        assert_eq!(claim["metadata"]["annotations"], json!({"team": "a"}));
        assert_eq!(claim["metadata"]["namespace"], "db");
    }

    #[test]
    fn node_fields() {
        let node = json!({
            "metadata": {"name": "n1", "creationTimestamp": "1970-01-03T00:00:00Z",
                "labels": {"node-role.kubernetes.io/control-plane": "true", "node-role.kubernetes.io/etcd": "true"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "nodeInfo": {"kubeletVersion": "v1.33.1+k3s1"},
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}},
        });
        let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(12);
        let row = node_summary(&node, now);
        assert_eq!(row["roles"], "control-plane,etcd");
        assert_eq!(row["status"], "Ready");
        assert_eq!(row["ageDays"], 10);
        assert_eq!(row["internalIP"], "10.0.0.1");
        assert_eq!(row["externalIP"], Value::Null);
        assert_eq!(row["capacity"]["pods"], "110");
        assert_eq!(row["kubeletVersion"], "v1.33.1+k3s1");
    }
}
