//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! decoded to the same JSON the server stores.
//!
//! `kubectl`'s typed clients send protobuf for built-in kinds, with no fallback to JSON: the
//! generator commands (`kubectl create namespace|configmap|secret|serviceaccount|role|
//! rolebinding|clusterrole|clusterrolebinding|token|job`, `create job --from=cronjob/NAME`) and
//! `kubectl auth can-i|whoami`. This module knows the wire schemas of exactly those kinds (field numbers from Kubernetes'
//! `generated.proto` files). A field it does not know makes the request fail with 415 and
//! a message naming it, never a silently incomplete object. Answers are always JSON, which
//! every client accepts.

mod jobs;

use base64::Engine;
use serde_json::{json, Map, Value};

/// The four bytes every protobuf-encoded Kubernetes object starts with.
const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    Time,
    MapStr,
    MapBytes,
    /// `resource.Quantity` (a message holding its string form), as that string.
    Quantity,
    /// `map<string, Quantity>` (resource requests and limits).
    MapQuantity,
    Msg(&'static [Field]),
    /// A Go struct embedded in its parent: its fields are the parent's in JSON (`json:",inline"`).
    Inline(&'static [Field]),
}

#[derive(Clone, Copy)]
struct Field {
    num: u64,
    name: &'static str,
    ty: Ty,
    repeated: bool,
}

const fn f(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: false,
    }
}

const fn rep(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: true,
    }
}

const OWNER_REF: &[Field] = &[
    f(1, "kind", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
    f(5, "apiVersion", Ty::Str),
    f(6, "controller", Ty::Bool),
    f(7, "blockOwnerDeletion", Ty::Bool),
];

const OBJECT_META: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "generateName", Ty::Str),
    f(3, "namespace", Ty::Str),
    f(4, "selfLink", Ty::Str),
    f(5, "uid", Ty::Str),
    f(6, "resourceVersion", Ty::Str),
    f(7, "generation", Ty::Int),
    f(8, "creationTimestamp", Ty::Time),
    f(9, "deletionTimestamp", Ty::Time),
    f(10, "deletionGracePeriodSeconds", Ty::Int),
    f(11, "labels", Ty::MapStr),
    f(12, "annotations", Ty::MapStr),
    rep(13, "ownerReferences", Ty::Msg(OWNER_REF)),
    rep(14, "finalizers", Ty::Str),
];

const META: Field = f(1, "metadata", Ty::Msg(OBJECT_META));

const LABEL_SELECTOR_REQ: &[Field] = &[
    f(1, "key", Ty::Str),
    f(2, "operator", Ty::Str),
    rep(3, "values", Ty::Str),
];

const LABEL_SELECTOR: &[Field] = &[
    f(1, "matchLabels", Ty::MapStr),
    rep(2, "matchExpressions", Ty::Msg(LABEL_SELECTOR_REQ)),
];

const NAMESPACE: &[Field] = &[
    META,
    f(2, "spec", Ty::Msg(&[rep(1, "finalizers", Ty::Str)])),
    f(3, "status", Ty::Msg(&[f(1, "phase", Ty::Str)])),
];

const CONFIG_MAP: &[Field] = &[
    META,
    f(2, "data", Ty::MapStr),
    f(3, "binaryData", Ty::MapBytes),
    f(4, "immutable", Ty::Bool),
];

const SECRET: &[Field] = &[
    META,
    f(2, "data", Ty::MapBytes),
    f(3, "type", Ty::Str),
    f(4, "stringData", Ty::MapStr),
    f(5, "immutable", Ty::Bool),
];

const OBJECT_REF: &[Field] = &[
    f(1, "kind", Ty::Str),
    f(2, "namespace", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
    f(5, "apiVersion", Ty::Str),
    f(6, "resourceVersion", Ty::Str),
    f(7, "fieldPath", Ty::Str),
];

const SERVICE_ACCOUNT: &[Field] = &[
    META,
    rep(2, "secrets", Ty::Msg(OBJECT_REF)),
    rep(3, "imagePullSecrets", Ty::Msg(&[f(1, "name", Ty::Str)])),
    f(4, "automountServiceAccountToken", Ty::Bool),
];

const POLICY_RULE: &[Field] = &[
    rep(1, "verbs", Ty::Str),
    rep(2, "apiGroups", Ty::Str),
    rep(3, "resources", Ty::Str),
    rep(4, "resourceNames", Ty::Str),
    rep(5, "nonResourceURLs", Ty::Str),
];

const ROLE: &[Field] = &[
    META,
    rep(2, "rules", Ty::Msg(POLICY_RULE)),
    f(
        3,
        "aggregationRule",
        Ty::Msg(&[rep(1, "clusterRoleSelectors", Ty::Msg(LABEL_SELECTOR))]),
    ),
];

const BINDING: &[Field] = &[
    META,
    rep(
        2,
        "subjects",
        Ty::Msg(&[
            f(1, "kind", Ty::Str),
            f(2, "apiGroup", Ty::Str),
            f(3, "name", Ty::Str),
            f(4, "namespace", Ty::Str),
        ]),
    ),
    f(
        3,
        "roleRef",
        Ty::Msg(&[
            f(1, "apiGroup", Ty::Str),
            f(2, "kind", Ty::Str),
            f(3, "name", Ty::Str),
        ]),
    ),
];

const RESOURCE_ATTRIBUTES: &[Field] = &[
    f(1, "namespace", Ty::Str),
    f(2, "verb", Ty::Str),
    f(3, "group", Ty::Str),
    f(4, "version", Ty::Str),
    f(5, "resource", Ty::Str),
    f(6, "subresource", Ty::Str),
    f(7, "name", Ty::Str),
];

const ACCESS_REVIEW_SPEC: &[Field] = &[
    f(1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRIBUTES)),
    f(
        2,
        "nonResourceAttributes",
        Ty::Msg(&[f(1, "path", Ty::Str), f(2, "verb", Ty::Str)]),
    ),
];

const SELF_SUBJECT_ACCESS_REVIEW: &[Field] = &[
    META,
    f(2, "spec", Ty::Msg(ACCESS_REVIEW_SPEC)),
    f(
        3,
        "status",
        Ty::Msg(&[
            f(1, "allowed", Ty::Bool),
            f(2, "reason", Ty::Str),
            f(3, "evaluationError", Ty::Str),
            f(4, "denied", Ty::Bool),
        ]),
    ),
];

const SELF_SUBJECT_RULES_REVIEW: &[Field] = &[
    META,
    f(2, "spec", Ty::Msg(&[f(1, "namespace", Ty::Str)])),
    f(
        3,
        "status",
        Ty::Msg(&[
            f(3, "incomplete", Ty::Bool),
            f(4, "evaluationError", Ty::Str),
        ]),
    ),
];

const SELF_SUBJECT_REVIEW: &[Field] = &[
    META,
    f(
        2,
        "status",
        Ty::Msg(&[f(
            1,
            "userInfo",
            Ty::Msg(&[
                f(1, "username", Ty::Str),
                f(2, "uid", Ty::Str),
                rep(3, "groups", Ty::Str),
            ]),
        )]),
    ),
];

const TOKEN_REQUEST: &[Field] = &[
    META,
    f(
        2,
        "spec",
        Ty::Msg(&[
            rep(1, "audiences", Ty::Str),
            f(
                3,
                "boundObjectRef",
                Ty::Msg(&[
                    f(1, "kind", Ty::Str),
                    f(2, "apiVersion", Ty::Str),
                    f(3, "name", Ty::Str),
                    f(4, "uid", Ty::Str),
                ]),
            ),
            f(4, "expirationSeconds", Ty::Int),
        ]),
    ),
    f(
        3,
        "status",
        Ty::Msg(&[
            f(1, "token", Ty::Str),
            f(2, "expirationTimestamp", Ty::Time),
        ]),
    ),
];

fn schema(kind: &str) -> Option<&'static [Field]> {
    Some(match kind {
        "Namespace" => NAMESPACE,
        "ConfigMap" => CONFIG_MAP,
        "Secret" => SECRET,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "Role" | "ClusterRole" => ROLE,
        "RoleBinding" | "ClusterRoleBinding" => BINDING,
        "SelfSubjectAccessReview" => SELF_SUBJECT_ACCESS_REVIEW,
        "SelfSubjectRulesReview" => SELF_SUBJECT_RULES_REVIEW,
        "SelfSubjectReview" => SELF_SUBJECT_REVIEW,
        "TokenRequest" => TOKEN_REQUEST,
        "Job" => jobs::JOB,
        _ => return None,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err("varint too long".into())
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
        let end = self.pos.checked_add(len).ok_or("length too large")?;
        let out = self.buf.get(self.pos..end).ok_or("truncated field")?;
        self.pos = end;
        Ok(out)
    }

    fn skip(&mut self, wire: u64) -> Result<(), String> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => {
                self.pos += 8;
                Ok(())
            }
            2 => self.bytes().map(|_| ()),
            5 => {
                self.pos += 4;
                Ok(())
            }
            w => Err(format!("unsupported wire type {w}")),
        }
    }
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".to_string())
}

fn map_entry(b: &[u8], value_ty: Ty) -> Result<(String, Value), String> {
    let mut r = Reader { buf: b, pos: 0 };
    let (mut k, mut v) = (String::new(), json!(""));
    let bytes_value = matches!(value_ty, Ty::MapBytes);
    while !r.done() {
        let tag = r.varint()?;
        match (tag >> 3, tag & 7) {
            (1, 2) => k = utf8(r.bytes()?)?,
            (2, 2) if matches!(value_ty, Ty::MapQuantity) => v = quantity(r.bytes()?)?,
            (2, 2) if bytes_value => {
                v = json!(base64::engine::general_purpose::STANDARD.encode(r.bytes()?))
            }
            (2, 2) => v = json!(utf8(r.bytes()?)?),
            (_, w) => r.skip(w)?,
        }
    }
    Ok((k, v))
}

/// A `resource.Quantity`: field 1 is its string form.
fn quantity(b: &[u8]) -> Result<Value, String> {
    let mut r = Reader { buf: b, pos: 0 };
    let mut out = String::new();
    while !r.done() {
        let tag = r.varint()?;
        match (tag >> 3, tag & 7) {
            (1, 2) => out = utf8(r.bytes()?)?,
            (_, w) => r.skip(w)?,
        }
    }
    Ok(json!(out))
}

fn time(b: &[u8]) -> Result<Value, String> {
    let mut r = Reader { buf: b, pos: 0 };
    let mut secs = 0i64;
    while !r.done() {
        let tag = r.varint()?;
        match (tag >> 3, tag & 7) {
            (1, 0) => secs = r.varint()? as i64,
            (_, w) => r.skip(w)?,
        }
    }
    if secs == 0 {
        return Ok(Value::Null);
    }
    let t = time::OffsetDateTime::from_unix_timestamp(secs).map_err(|e| e.to_string())?;
    Ok(json!(crate::meta::format_time(t)))
}

fn message(b: &[u8], fields: &[Field], path: &str) -> Result<Value, String> {
    let mut r = Reader { buf: b, pos: 0 };
    let mut out = Map::new();
    while !r.done() {
        let tag = r.varint()?;
        let (num, wire) = (tag >> 3, tag & 7);
        let Some(field) = fields.iter().find(|f| f.num == num) else {
            return Err(format!(
                "field {num} of {path} is not understood by this server"
            ));
        };
        let here = format!("{path}.{}", field.name);
        let value = match (field.ty, wire) {
            (Ty::Int, 0) => json!(r.varint()? as i64),
            (Ty::Bool, 0) => json!(r.varint()? != 0),
            (Ty::Time, 2) => time(r.bytes()?)?,
            (Ty::Quantity, 2) => quantity(r.bytes()?)?,
            // Go's empty string is what JSON leaves out (`omitempty`); a list keeps its items.
            (Ty::Str, 2) if !field.repeated => match utf8(r.bytes()?)? {
                s if s.is_empty() => Value::Null,
                s => json!(s),
            },
            (Ty::Str, 2) => json!(utf8(r.bytes()?)?),
            (Ty::MapStr | Ty::MapBytes | Ty::MapQuantity, 2) => {
                let (k, v) = map_entry(r.bytes()?, field.ty)?;
                let m = out.entry(field.name).or_insert_with(|| json!({}));
                m[k] = v;
                continue;
            }
            (Ty::Msg(sub), 2) => message(r.bytes()?, sub, &here)?,
            (Ty::Inline(sub), 2) => {
                if let Value::Object(fields) = message(r.bytes()?, sub, &here)? {
                    out.extend(fields);
                }
                continue;
            }
            (_, w) => return Err(format!("{here}: unexpected wire type {w}")),
        };
        if field.repeated {
            let list = out.entry(field.name).or_insert_with(|| json!([]));
            if let Some(a) = list.as_array_mut() {
                a.push(value);
            }
        } else if !value.is_null() {
            out.insert(field.name.into(), value);
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a protobuf-encoded object to JSON; the message says what could not be decoded.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("not a Kubernetes protobuf object (no k8s\\0 prefix)")?;
    let mut r = Reader { buf: rest, pos: 0 };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while !r.done() {
        let tag = r.varint()?;
        match (tag >> 3, tag & 7) {
            (1, 2) => {
                let tm = message(
                    r.bytes()?,
                    &[f(1, "apiVersion", Ty::Str), f(2, "kind", Ty::Str)],
                    "typeMeta",
                )?;
                api_version = tm["apiVersion"].as_str().unwrap_or("").into();
                kind = tm["kind"].as_str().unwrap_or("").into();
            }
            (2, 2) => raw = r.bytes()?,
            (_, w) => r.skip(w)?,
        }
    }
    let fields = schema(&kind).ok_or_else(|| {
        format!("{kind} in protobuf is not understood by this server; send it as JSON (kubectl apply -f)")
    })?;
    let mut obj = message(raw, fields, &kind)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(num: u64, wire: u64) -> u8 {
        u8::try_from((num << 3) | wire).unwrap()
    }

    fn ld(num: u64, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag(num, 2), u8::try_from(body.len()).unwrap()];
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn decodes_a_configmap_and_refuses_unknown_fields() {
        let meta = [ld(1, b"cm"), ld(11, &[ld(1, b"app"), ld(2, b"x")].concat())].concat();
        let raw = [ld(1, &meta), ld(2, &[ld(1, b"k"), ld(2, b"v")].concat())].concat();
        let tm = [ld(1, b"v1"), ld(2, b"ConfigMap")].concat();
        let body = [MAGIC.to_vec(), ld(1, &tm), ld(2, &raw)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cm", "labels": {"app": "x"}}, "data": {"k": "v"}})
        );
        let bad_raw = [raw.clone(), ld(9, b"?")].concat();
        let body = [MAGIC.to_vec(), ld(1, &tm), ld(2, &bad_raw)].concat();
        assert!(decode(&body).unwrap_err().contains("field 9 of ConfigMap"));
    }
}
