//! Decoding into the real API types, as the API server does before it stores a built-in
//! kind: a value of the wrong type is refused (400), and fields the kind does not have are
//! dropped with a warning, or refused when the request asked for `fieldValidation=Strict`
//! (what `kubectl apply` and `create` ask for). The types are k8s-openapi's; kinds it does
//! not have (the snapshot and CBT CRDs, whose CRDs preserve unknown fields) pass unchanged.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::resources::ResourceDef;
use crate::status::ApiError;

/// How unknown fields are treated (the `fieldValidation` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Dropped silently.
    Ignore,
    /// Dropped, with a warning (the default).
    Warn,
    /// Refused.
    Strict,
}

impl FieldValidation {
    /// From the query parameter's value.
    pub fn parse(v: Option<&str>) -> FieldValidation {
        match v {
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            _ => FieldValidation::Warn,
        }
    }
}

fn roundtrip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

fn decode(def: &ResourceDef, v: &Value) -> Option<Result<Value, String>> {
    use k8s_openapi::api::{apps, batch, coordination, core, rbac, storage};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
    Some(match (def.group, def.plural) {
        ("", "namespaces") => roundtrip::<core::v1::Namespace>(v),
        ("", "pods") => roundtrip::<core::v1::Pod>(v),
        ("", "persistentvolumeclaims") => roundtrip::<core::v1::PersistentVolumeClaim>(v),
        ("", "persistentvolumes") => roundtrip::<core::v1::PersistentVolume>(v),
        ("", "secrets") => roundtrip::<core::v1::Secret>(v),
        ("", "configmaps") => roundtrip::<core::v1::ConfigMap>(v),
        ("", "serviceaccounts") => roundtrip::<core::v1::ServiceAccount>(v),
        ("", "events") => roundtrip::<core::v1::Event>(v),
        ("", "nodes") => roundtrip::<core::v1::Node>(v),
        ("", "services") => roundtrip::<core::v1::Service>(v),
        ("apps", "statefulsets") => roundtrip::<apps::v1::StatefulSet>(v),
        ("apps", "deployments") => roundtrip::<apps::v1::Deployment>(v),
        ("batch", "jobs") => roundtrip::<batch::v1::Job>(v),
        ("batch", "cronjobs") => roundtrip::<batch::v1::CronJob>(v),
        ("storage.k8s.io", "storageclasses") => roundtrip::<storage::v1::StorageClass>(v),
        ("storage.k8s.io", "volumeattachments") => roundtrip::<storage::v1::VolumeAttachment>(v),
        ("storage.k8s.io", "csidrivers") => roundtrip::<storage::v1::CSIDriver>(v),
        ("storage.k8s.io", "csinodes") => roundtrip::<storage::v1::CSINode>(v),
        ("rbac.authorization.k8s.io", "roles") => roundtrip::<rbac::v1::Role>(v),
        ("rbac.authorization.k8s.io", "clusterroles") => roundtrip::<rbac::v1::ClusterRole>(v),
        ("rbac.authorization.k8s.io", "rolebindings") => roundtrip::<rbac::v1::RoleBinding>(v),
        ("rbac.authorization.k8s.io", "clusterrolebindings") => {
            roundtrip::<rbac::v1::ClusterRoleBinding>(v)
        }
        ("coordination.k8s.io", "leases") => roundtrip::<coordination::v1::Lease>(v),
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            roundtrip::<apiext::CustomResourceDefinition>(v)
        }
        _ => return None,
    })
}

/// Paths present (and not null) in `before` but not in `after`.
fn dropped(before: &Value, after: &Value, path: &str, out: &mut Vec<String>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, bv) in b {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match a.get(k) {
                    None if !bv.is_null() => out.push(p),
                    Some(av) => dropped(bv, av, &p, out),
                    None => {}
                }
            }
        }
        (Value::Array(b), Value::Array(a)) => {
            for (i, (bv, av)) in b.iter().zip(a).enumerate() {
                dropped(bv, av, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Decodes `obj` as the kind `def` is; the object as the server keeps it and the warnings
/// for dropped fields.
pub fn normalize(
    def: &ResourceDef,
    obj: Value,
    validation: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let Some(decoded) = decode(def, &obj) else {
        return Ok((obj, Vec::new()));
    };
    let decoded = decoded.map_err(|e| {
        ApiError::bad_request(format!(
            "{kind} in version \"{v}\" cannot be handled as a {kind}: {e}",
            kind = def.kind,
            v = def.version
        ))
    })?;
    let mut unknown = Vec::new();
    dropped(&obj, &decoded, "", &mut unknown);
    if validation == FieldValidation::Strict && !unknown.is_empty() {
        let fields: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect();
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
            fields.join(", "),
            kind = def.kind,
            v = def.version
        )));
    }
    let warnings = if validation == FieldValidation::Warn {
        unknown
            .iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect()
    } else {
        Vec::new()
    };
    Ok((decoded, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{find, RESOURCES};
    use serde_json::json;

    #[test]
    fn unknown_fields_are_dropped_or_refused_and_wrong_types_refused() {
        let def = &RESOURCES[find("", "v1", "configmaps").unwrap()];
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "bogus": 1},
                        "data": {"a": "b"}, "extra": true});
        let (kept, warnings) = normalize(def, cm.clone(), FieldValidation::Warn).unwrap();
        assert_eq!(
            kept,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}})
        );
        assert_eq!(
            warnings,
            [
                "unknown field \"extra\"",
                "unknown field \"metadata.bogus\""
            ]
        );
        let e = normalize(def, cm, FieldValidation::Strict).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.message
                .contains("strict decoding error: unknown field \"extra\""),
            "{}",
            e.message
        );
        let bad = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": 1}});
        assert_eq!(
            normalize(def, bad, FieldValidation::Ignore)
                .unwrap_err()
                .code,
            400
        );
    }
}
