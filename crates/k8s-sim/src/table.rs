//! Server-side printing and metadata-only answers: `meta.k8s.io/v1` `Table` (what `kubectl
//! get` asks for with `Accept: application/json;as=Table;...`) and `PartialObjectMetadata`
//! (what kube-rs' metadata API asks for), for objects, lists and watch events.

use serde_json::{json, Value};

use crate::meta;
use crate::resources::ResourceDef;

/// The representation a request asked for in its `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum As {
    /// The objects themselves.
    Object,
    /// A `Table`.
    Table,
    /// `PartialObjectMetadata` (lists: `PartialObjectMetadataList`).
    Metadata,
}

impl As {
    /// From an `Accept` header: the first alternative this server can produce.
    pub fn from_accept(accept: &str) -> As {
        for alt in accept.split(',') {
            let params: Vec<&str> = alt.split(';').map(str::trim).collect();
            if params.contains(&"as=Table") {
                return As::Table;
            }
            if params
                .iter()
                .any(|p| *p == "as=PartialObjectMetadata" || *p == "as=PartialObjectMetadataList")
            {
                return As::Metadata;
            }
            if params
                .first()
                .is_some_and(|t| t.starts_with("application/json") || *t == "*/*")
            {
                return As::Object;
            }
        }
        As::Object
    }
}

/// `PartialObjectMetadata` of an object.
pub fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// `PartialObjectMetadataList` of objects.
pub fn partial_list(items: &[Value], rv: u64) -> Value {
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items.iter().map(partial).collect::<Vec<_>>(),
    })
}

fn age(obj: &Value) -> String {
    let Some(t) = meta::parse_time(meta::str_field(obj, "creationTimestamp")) else {
        return "<unknown>".into();
    };
    let secs = (time::OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3 * 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn s(v: &Value) -> Value {
    match v {
        Value::Null => json!(""),
        Value::String(_) => v.clone(),
        other => json!(other.to_string()),
    }
}

/// A column: its name and how to fill a cell from an object.
type Column = (&'static str, fn(&Value) -> Value);

/// Columns after NAME for a kind.
fn columns(def: &ResourceDef) -> Vec<Column> {
    match (def.group, def.plural) {
        ("", "pods") => vec![("Status", |o| s(&o["status"]["phase"]))],
        ("", "persistentvolumeclaims") => vec![
            ("Status", |o| s(&o["status"]["phase"])),
            ("Volume", |o| s(&o["spec"]["volumeName"])),
            ("Capacity", |o| s(&o["status"]["capacity"]["storage"])),
            ("StorageClass", |o| s(&o["spec"]["storageClassName"])),
            ("VolumeMode", |o| s(&o["spec"]["volumeMode"])),
        ],
        ("", "persistentvolumes") => vec![
            ("Capacity", |o| s(&o["spec"]["capacity"]["storage"])),
            ("Status", |o| s(&o["status"]["phase"])),
            ("Claim", |o| {
                let c = &o["spec"]["claimRef"];
                match (c["namespace"].as_str(), c["name"].as_str()) {
                    (Some(ns), Some(n)) => json!(format!("{ns}/{n}")),
                    _ => json!(""),
                }
            }),
        ],
        ("", "namespaces") => vec![("Status", |o| s(&o["status"]["phase"]))],
        ("batch", "jobs") => vec![
            ("Succeeded", |o| s(&o["status"]["succeeded"])),
            ("Failed", |o| s(&o["status"]["failed"])),
        ],
        ("snapshot.storage.k8s.io", "volumesnapshots") => vec![
            ("ReadyToUse", |o| s(&o["status"]["readyToUse"])),
            ("SourcePVC", |o| {
                s(&o["spec"]["source"]["persistentVolumeClaimName"])
            }),
            ("RestoreSize", |o| s(&o["status"]["restoreSize"])),
            ("SnapshotContent", |o| {
                s(&o["status"]["boundVolumeSnapshotContentName"])
            }),
        ],
        ("snapshot.storage.k8s.io", "volumesnapshotcontents") => vec![
            ("ReadyToUse", |o| s(&o["status"]["readyToUse"])),
            ("Driver", |o| s(&o["spec"]["driver"])),
        ],
        _ => vec![],
    }
}

/// A `Table` of objects; `include` is the `includeObject` query (`None`, `Object`, or the
/// default `Metadata`).
pub fn table(def: &ResourceDef, items: &[Value], rv: u64, include: &str) -> Value {
    let cols = columns(def);
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0}),
    ];
    for (name, _) in &cols {
        defs.push(
            json!({"name": name, "type": "string", "format": "", "description": "", "priority": 0}),
        );
    }
    defs.push(json!({"name": "Age", "type": "string", "format": "", "description": "Time since creation", "priority": 0}));
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut cells = vec![json!(meta::name(o))];
            cells.extend(cols.iter().map(|(_, f)| f(o)));
            cells.push(json!(age(o)));
            let mut row = json!({"cells": cells});
            match include {
                "None" => {}
                "Object" => row["object"] = o.clone(),
                _ => row["object"] = partial(o),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": defs,
        "rows": rows,
    })
}
