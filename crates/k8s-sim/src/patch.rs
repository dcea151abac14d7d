//! The PATCH content types: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic
//! merge patch, and server-side apply.
//!
//! Strategic merge patch is the subset `kubectl` produces for the kinds it knows: a merge
//! patch in which lists with a known merge key (containers, env and volumes by `name`,
//! volumeMounts by `mountPath`, ...) are merged item by item, `finalizers` is merged as a
//! set, and the `$patch: delete|replace`, `$deleteFromPrimitiveList/...` and
//! `$setElementOrder/...` directives are honoured. Server-side apply is served as a merge of
//! the applied configuration into the live object, without field ownership.

use serde_json::{Map, Value};

/// The kind of patch a request carries, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// The patch type of a Content-Type header.
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Applies `patch` of type `ty` to `target`; the message says why it cannot.
pub fn apply(ty: PatchType, target: &Value, patch: &[u8]) -> Result<Value, String> {
    match ty {
        PatchType::Json => {
            let ops: json_patch::Patch =
                serde_json::from_slice(patch).map_err(|e| format!("invalid JSON patch: {e}"))?;
            let mut out = target.clone();
            json_patch::patch(&mut out, &ops).map_err(|e| e.to_string())?;
            Ok(out)
        }
        PatchType::Merge | PatchType::Apply => {
            let p: Value = parse_object(patch, ty)?;
            let mut out = target.clone();
            json_patch::merge(&mut out, &p);
            Ok(out)
        }
        PatchType::Strategic => {
            let p: Value = parse_object(patch, ty)?;
            let mut out = target.clone();
            strategic_merge(&mut out, &p);
            Ok(out)
        }
    }
}

fn parse_object(patch: &[u8], ty: PatchType) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(patch).map_err(|e| match ty {
        PatchType::Apply => format!(
            "error decoding apply patch (this server accepts the JSON form of YAML only): {e}"
        ),
        _ => format!("error decoding patch: {e}"),
    })?;
    if !v.is_object() {
        return Err("patch must be a JSON object".into());
    }
    Ok(v)
}

/// The merge key of a list field, for the lists strategic merge patch merges by key.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => Some("name"),
        "ports" => Some("containerPort"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "ownerReferences" => Some("uid"),
        "conditions" => Some("type"),
        _ => None,
    }
}

/// Lists of scalars that strategic merge patch merges as sets.
fn is_set_list(field: &str) -> bool {
    field == "finalizers"
}

fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(pmap) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if pmap.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut clean = pmap.clone();
        clean.remove("$patch");
        *target = Value::Object(clean);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let tmap = target.as_object_mut().expect("made an object above");
    for (k, pv) in pmap {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(del)) = (
                tmap.get_mut(field).and_then(Value::as_array_mut),
                pv.as_array(),
            ) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if pv.is_null() {
            tmap.remove(k);
            continue;
        }
        match (pv, merge_key(k)) {
            (Value::Array(items), Some(key)) => {
                let cur = tmap
                    .entry(k.clone())
                    .or_insert_with(|| Value::Array(vec![]));
                if !cur.is_array() {
                    *cur = Value::Array(vec![]);
                }
                let list = cur.as_array_mut().expect("made an array above");
                merge_list_by_key(list, items, key);
            }
            (Value::Array(items), None) if is_set_list(k) => {
                let cur = tmap
                    .entry(k.clone())
                    .or_insert_with(|| Value::Array(vec![]));
                if let Some(list) = cur.as_array_mut() {
                    for it in items {
                        if !list.contains(it) {
                            list.push(it.clone());
                        }
                    }
                }
            }
            (Value::Object(_), _) => {
                let cur = tmap.entry(k.clone()).or_insert(Value::Null);
                strategic_merge(cur, pv);
            }
            _ => {
                tmap.insert(k.clone(), pv.clone());
            }
        }
    }
}

fn merge_list_by_key(list: &mut Vec<Value>, items: &[Value], key: &str) {
    for item in items {
        let id = item.get(key).cloned();
        let directive = item.get("$patch").and_then(Value::as_str);
        let pos = id
            .as_ref()
            .and_then(|id| list.iter().position(|x| x.get(key) == Some(id)));
        match (directive, pos) {
            (Some("delete"), Some(i)) => {
                list.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => strategic_merge(&mut list[i], item),
            (_, None) => {
                let mut fresh = Value::Null;
                strategic_merge(&mut fresh, item);
                list.push(fresh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_containers_by_name() {
        let target = json!({"spec": {"containers": [
            {"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}]},
            {"name": "b", "image": "y"}
        ], "finalizers": ["f1"]}});
        let patch = json!({"spec": {"containers": [
            {"name": "a", "env": [{"name": "B", "value": "2"}]},
            {"name": "b", "$patch": "delete"},
            {"name": "c", "image": "z"}
        ], "$setElementOrder/containers": [{"name": "a"}]}});
        let out = apply(PatchType::Strategic, &target, patch.to_string().as_bytes()).unwrap();
        let c = out["spec"]["containers"].as_array().unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0]["image"], "x");
        assert_eq!(c[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(c[1]["name"], "c");
        assert!(out["spec"].get("$setElementOrder/containers").is_none());
    }

    #[test]
    fn merge_and_json_patch() {
        let t = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let out = apply(
            PatchType::Merge,
            &t,
            br#"{"metadata":{"labels":{"a":null,"c":"3"}}}"#,
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        let out = apply(
            PatchType::Json,
            &t,
            br#"[{"op":"replace","path":"/metadata/labels/a","value":"9"}]"#,
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"]["a"], "9");
        assert!(apply(
            PatchType::Json,
            &t,
            br#"[{"op":"test","path":"/metadata/labels/a","value":"0"}]"#
        )
        .is_err());
    }
}
