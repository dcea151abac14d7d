//! Create, update and delete with the real API server's semantics, on a locked store: uid,
//! creationTimestamp, generation and resourceVersion bookkeeping, `generateName`, optimistic
//! concurrency, status subresources, finalizers and `deletionTimestamp`, propagation
//! policies (Orphan, Background, Foreground) with each kind's default, and graceful
//! deletion of pods that a kubelet runs.

use serde_json::{json, Value};

use crate::admission;
use crate::meta;
use crate::resources::{find, ResId, RESOURCES};
use crate::status::ApiError;
use crate::store::{Key, Txn};

/// The finalizer of an object whose dependents are deleted before it (Foreground).
pub const FOREGROUND: &str = "foregroundDeletion";

/// How dependents are treated when their owner is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents lose their owner reference and stay.
    Orphan,
    /// The owner goes now; the garbage collector deletes dependents afterwards.
    Background,
    /// Dependents are deleted first; the owner stays, marked, until they are gone.
    Foreground,
}

/// What a DELETE asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// `propagationPolicy` (or the legacy `orphanDependents`); `None` takes the kind's default.
    pub propagation: Option<Propagation>,
    /// `gracePeriodSeconds`.
    pub grace_period: Option<i64>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun` of the body (`["All"]`), which is where kubectl puts it for a delete; the
    /// query's `dryRun` is read with every other write's.
    pub dry_run: Vec<String>,
}

impl DeleteOptions {
    /// Options from a `DeleteOptions` body and/or the query string (the query wins).
    pub fn parse(body: &[u8], query: &dyn Fn(&str) -> Option<String>) -> Result<Self, ApiError> {
        let v: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
        };
        let policy = query("propagationPolicy")
            .or_else(|| v["propagationPolicy"].as_str().map(str::to_string));
        let mut propagation = match policy.as_deref() {
            None | Some("") => None,
            Some("Orphan") => Some(Propagation::Orphan),
            Some("Background") => Some(Propagation::Background),
            Some("Foreground") => Some(Propagation::Foreground),
            Some(other) => {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!("propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""),
                ))
            }
        };
        let orphan = query("orphanDependents")
            .map(|s| s == "true")
            .or_else(|| v["orphanDependents"].as_bool());
        if propagation.is_none() {
            propagation = match orphan {
                Some(true) => Some(Propagation::Orphan),
                Some(false) => Some(Propagation::Background),
                None => None,
            };
        }
        let grace_period = query("gracePeriodSeconds")
            .and_then(|s| s.parse().ok())
            .or_else(|| v["gracePeriodSeconds"].as_i64());
        Ok(DeleteOptions {
            propagation,
            grace_period,
            uid: v["preconditions"]["uid"].as_str().map(str::to_string),
            resource_version: v["preconditions"]["resourceVersion"]
                .as_str()
                .map(str::to_string),
            dry_run: v["dryRun"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// Objects that a new namespace gets from the controllers of a real cluster: the `default`
/// service account and the `kube-root-ca.crt` ConfigMap.
fn namespace_seeds(ns: &str, ca_pem: &str) -> Vec<(ResId, Value)> {
    let mut out = Vec::new();
    if let Some(sa) = find("", "v1", "serviceaccounts") {
        out.push((
            sa,
            json!({"metadata": {"name": "default", "namespace": ns}}),
        ));
    }
    if let Some(cm) = find("", "v1", "configmaps") {
        out.push((
            cm,
            json!({"metadata": {"name": "kube-root-ca.crt", "namespace": ns},
                   "data": {"ca.crt": ca_pem}}),
        ));
    }
    out
}

/// Creates an object in namespace `ns` ("" for cluster-scoped); `ca_pem` fills the
/// `kube-root-ca.crt` ConfigMap of a new namespace.
pub fn create(
    txn: &mut Txn<'_>,
    res: ResId,
    ns: &str,
    mut obj: Value,
    ca_pem: &str,
) -> Result<Value, ApiError> {
    let def = &RESOURCES[res];
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    let api_version = def.api_version();
    if let Some(v) = obj.get("apiVersion").and_then(Value::as_str) {
        if v != api_version {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    if let Some(k) = obj.get("kind").and_then(Value::as_str) {
        if k != def.kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                def.kind
            )));
        }
    }
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(def.kind);
    let body_ns = meta::namespace(&obj).to_string();
    let m = meta::meta_mut(&mut obj);
    if def.namespaced {
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        m.insert("namespace".into(), json!(ns));
    } else {
        m.remove("namespace");
    }
    for f in [
        "resourceVersion",
        "uid",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "creationTimestamp",
        "selfLink",
    ] {
        m.remove(f);
    }
    let mut name = m
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let generate = m
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        if generate.is_empty() {
            return Err(ApiError::invalid(
                def,
                "",
                "metadata.name: Required value: name or generateName is required",
            ));
        }
        name = loop {
            let candidate = format!("{generate}{}", meta::random_suffix());
            if txn.get(&Key::new(res, ns, &candidate)).is_none() {
                break candidate;
            }
        };
    }
    admission::validate_name(def, &name)?;
    if def.namespaced {
        let ns_res = find("", "v1", "namespaces").expect("namespaces are served");
        match txn.get(&Key::new(ns_res, "", ns)) {
            None => {
                return Err(ApiError {
                    code: 404,
                    reason: "NotFound",
                    message: format!("namespaces \"{ns}\" not found"),
                    details: Some(json!({"name": ns, "kind": "namespaces"})),
                })
            }
            Some(n) if meta::is_deleting(n) => {
                return Err(ApiError::forbidden(
                    def,
                    &name,
                    &format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
                ))
            }
            Some(_) => {}
        }
    }
    let key = Key::new(res, ns, &name);
    if txn.get(&key).is_some() {
        return Err(ApiError::already_exists(def, &name));
    }
    let m = meta::meta_mut(&mut obj);
    m.insert("name".into(), json!(name));
    m.insert("uid".into(), json!(meta::new_uid()));
    m.insert("creationTimestamp".into(), json!(meta::now()));
    if obj.get("spec").is_some() {
        meta::meta_mut(&mut obj).insert("generation".into(), json!(1));
    }
    admission::on_create(def, &mut obj)?;
    if def.group.is_empty() && def.plural == "pods" {
        let sa_name = obj["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        let sa_res = find("", "v1", "serviceaccounts").expect("serviceaccounts are served");
        let sa = txn.get(&Key::new(sa_res, ns, sa_name));
        let automount = sa.and_then(|s| s["automountServiceAccountToken"].as_bool());
        admission::service_account(def, &mut obj, sa.is_some(), automount)?;
    }
    let stored = txn.insert(key, obj);
    if def.group.is_empty() && def.plural == "namespaces" {
        for (r, seed) in namespace_seeds(&name, ca_pem) {
            // A seed that already exists was made by someone else first: keep theirs.
            let _ = create(txn, r, &name, seed, ca_pem);
        }
    }
    Ok(stored)
}

fn without_meta_status(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

/// Replaces an object: the main resource (`status_only` false: status kept from the stored
/// object) or the status subresource (`status_only` true: only status taken from `new`).
pub fn update(
    txn: &mut Txn<'_>,
    key: &Key,
    mut new: Value,
    status_only: bool,
) -> Result<Value, ApiError> {
    let def = &RESOURCES[key.res];
    let Some(old) = txn.get(key).cloned() else {
        return Err(ApiError::not_found(def, &key.name));
    };
    if !new.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    let body_name = meta::name(&new);
    if !body_name.is_empty() && body_name != key.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            key.name
        )));
    }
    let want_rv = meta::str_field(&new, "resourceVersion");
    if !want_rv.is_empty() && want_rv != meta::str_field(&old, "resourceVersion") {
        return Err(ApiError::conflict(def, &key.name));
    }
    let mut next = if status_only {
        let mut o = old.clone();
        match new.get("status") {
            Some(s) => o["status"] = s.clone(),
            None => {
                if let Some(m) = o.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        o
    } else {
        if def.has_status() {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        let om = old.get("metadata").cloned().unwrap_or(json!({}));
        let m = meta::meta_mut(&mut new);
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match om.get(f) {
                Some(v) => m.insert(f.into(), v.clone()),
                None => m.remove(f),
            };
        }
        new["apiVersion"] = json!(def.api_version());
        new["kind"] = json!(def.kind);
        admission::validate_update(def, &old, &new)?;
        // Kinds that track a generation (those with a spec) count changes of everything but
        // metadata and status.
        if let Some(g) = old["metadata"]["generation"].as_i64() {
            if without_meta_status(&old) != without_meta_status(&new) {
                meta::meta_mut(&mut new).insert("generation".into(), json!(g + 1));
            }
        }
        new
    };
    meta::set_rv(&mut next, 0);
    let mut unchanged = old.clone();
    meta::set_rv(&mut unchanged, 0);
    if next == unchanged {
        return Ok(old);
    }
    Ok(commit(txn, key, next))
}

/// Stores a changed object, or removes it when it is being deleted and its last finalizer
/// is gone.
pub fn commit(txn: &mut Txn<'_>, key: &Key, obj: Value) -> Value {
    if meta::is_deleting(&obj)
        && meta::finalizers(&obj).is_empty()
        && !removed_by_controller(key, &obj)
    {
        return txn.remove_as(key, obj);
    }
    txn.replace(key, obj)
}

/// Objects that go only when a controller says so: a pod with a deletion grace period
/// (its kubelet deletes it again with grace 0 once its containers stopped) and a
/// namespace (the namespace controller removes it once it is empty).
fn removed_by_controller(key: &Key, obj: &Value) -> bool {
    let def = &RESOURCES[key.res];
    if !def.group.is_empty() {
        return false;
    }
    match def.plural {
        "pods" => obj["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .is_some_and(|g| g > 0),
        "namespaces" => true,
        _ => false,
    }
}

/// The default propagation of a kind when a DELETE names none: `batch/v1` Jobs (like the
/// other legacy workload kinds) orphan their dependents, everything else is Background.
pub fn default_propagation(res: ResId) -> Propagation {
    let def = &RESOURCES[res];
    match (def.group, def.plural) {
        ("batch", "jobs") | ("", "replicationcontrollers") => Propagation::Orphan,
        _ => Propagation::Background,
    }
}

/// Every object with an owner reference to `uid`.
pub fn dependents(txn: &Txn<'_>, uid: &str) -> Vec<(Key, Value, bool)> {
    let mut out = Vec::new();
    for key in txn.keys() {
        if let Some(obj) = txn.get(&key) {
            if let Some((_, block)) = meta::owner_uids(obj).into_iter().find(|(u, _)| u == uid) {
                out.push((key.clone(), obj.clone(), block));
            }
        }
    }
    out
}

/// Deletes an object as DELETE does; returns the object as it now is (removed, or marked
/// with a deletionTimestamp).
pub fn delete(txn: &mut Txn<'_>, key: &Key, opts: &DeleteOptions) -> Result<Value, ApiError> {
    let def = &RESOURCES[key.res];
    let Some(mut obj) = txn.get(key).cloned() else {
        return Err(ApiError::not_found(def, &key.name));
    };
    if let Some(uid) = &opts.uid {
        if uid != meta::uid(&obj) {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta::uid(&obj)
                ),
            ));
        }
    }
    if let Some(rv) = &opts.resource_version {
        if rv != meta::str_field(&obj, "resourceVersion") {
            return Err(ApiError::conflict(def, &key.name));
        }
    }
    let is_pod = def.group.is_empty() && def.plural == "pods";
    if is_pod && opts.grace_period == Some(0) && meta::is_deleting(&obj) {
        // The kubelet confirms the pod is gone.
        meta::meta_mut(&mut obj).insert("deletionGracePeriodSeconds".into(), json!(0));
        return Ok(commit(txn, key, obj));
    }
    if meta::is_deleting(&obj) {
        return Ok(obj);
    }
    let propagation = opts
        .propagation
        .unwrap_or_else(|| default_propagation(key.res));
    if propagation == Propagation::Orphan {
        let uid = meta::uid(&obj).to_string();
        for (dkey, mut dep, _) in dependents(txn, &uid) {
            meta::remove_owner(&mut dep, &uid);
            txn.replace(&dkey, dep);
        }
    }
    let now = meta::now();
    let m = meta::meta_mut(&mut obj);
    m.insert("deletionTimestamp".into(), json!(now));
    let running_pod = is_pod
        && obj["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
        && !matches!(
            obj["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        );
    let grace = if running_pod {
        opts.grace_period
            .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30)
            .max(0)
    } else {
        0
    };
    meta::meta_mut(&mut obj).insert("deletionGracePeriodSeconds".into(), json!(grace));
    if propagation == Propagation::Foreground {
        meta::add_finalizer(&mut obj, FOREGROUND);
    }
    if def.group.is_empty() && def.plural == "namespaces" {
        obj["status"]["phase"] = json!("Terminating");
        return Ok(txn.replace(key, obj));
    }
    Ok(commit(txn, key, obj))
}
