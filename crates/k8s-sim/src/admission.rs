//! Built-in admission and defaulting a real cluster applies to writes: name validation, the
//! defaults the controllers and clients rely on (Job selectors and pod-template labels, pod
//! restart policy and termination-message path, volume modes, reclaim policies), the
//! `kubernetes.io/pvc-protection` and `kubernetes.io/pv-protection` finalizers, the status a
//! new object starts with, and the PersistentVolumeClaim spec's immutability.

use serde_json::{json, Value};

use crate::meta;
use crate::resources::ResourceDef;
use crate::status::ApiError;

/// The pvc-protection finalizer.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The pv-protection finalizer.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

fn set_default(obj: &mut Value, path: &[&str], value: Value) {
    let mut cur = obj;
    for (i, part) in path.iter().enumerate() {
        if !cur.is_object() {
            return;
        }
        if i == path.len() - 1 {
            if cur.get(*part).is_none_or(Value::is_null) {
                cur[*part] = value;
            }
            return;
        }
        if cur.get(*part).is_none_or(Value::is_null) {
            cur[*part] = json!({});
        }
        cur = &mut cur[*part];
    }
}

fn default_pod_spec(spec: &mut Value) {
    set_default(spec, &["restartPolicy"], json!("Always"));
    set_default(spec, &["terminationGracePeriodSeconds"], json!(30));
    set_default(spec, &["dnsPolicy"], json!("ClusterFirst"));
    set_default(spec, &["schedulerName"], json!("default-scheduler"));
    set_default(spec, &["serviceAccountName"], json!("default"));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                set_default(
                    c,
                    &["terminationMessagePath"],
                    json!("/dev/termination-log"),
                );
                set_default(c, &["terminationMessagePolicy"], json!("File"));
                set_default(c, &["imagePullPolicy"], json!("IfNotPresent"));
            }
        }
    }
}

/// Checks the name of a new object.
pub fn validate_name(def: &ResourceDef, name: &str) -> Result<(), ApiError> {
    let check = if def.plural == "namespaces" {
        meta::check_dns1123_label(name)
    } else if matches!(def.group, "rbac.authorization.k8s.io") {
        // RBAC names are path segments, not DNS names (`system:auth-delegator`).
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            Err("may not contain '/'".into())
        } else {
            Ok(())
        }
    } else {
        meta::check_dns1123_subdomain(name)
    };
    check.map_err(|e| {
        ApiError::invalid(
            def,
            name,
            &format!("metadata.name: Invalid value: {name:?}: {e}"),
        )
    })
}

/// Defaults and initial status of a new object; runs after the name, uid and timestamps are
/// set.
pub fn on_create(def: &ResourceDef, obj: &mut Value) -> Result<(), ApiError> {
    let name = meta::name(obj).to_string();
    let uid = meta::uid(obj).to_string();
    // A new object's status is the server's to set, except where the creator reports it
    // (a kubelet registering its Node, a CRD's accepted names).
    if def.has_status() && !matches!(def.plural, "nodes" | "customresourcedefinitions") {
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    match (def.group, def.plural) {
        ("", "namespaces") => {
            let labels = meta::meta_mut(obj)
                .entry("labels")
                .or_insert_with(|| json!({}));
            labels["kubernetes.io/metadata.name"] = json!(name);
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        ("", "pods") => {
            if obj.get("spec").is_none_or(|s| !s.is_object()) {
                return Err(ApiError::invalid(
                    def,
                    &name,
                    "spec.containers: Required value",
                ));
            }
            default_pod_spec(&mut obj["spec"]);
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        ("", "persistentvolumeclaims") => {
            set_default(obj, &["spec", "volumeMode"], json!("Filesystem"));
            meta::add_finalizer(obj, PVC_PROTECTION);
            obj["status"] = json!({"phase": "Pending"});
        }
        ("", "persistentvolumes") => {
            set_default(obj, &["spec", "volumeMode"], json!("Filesystem"));
            set_default(
                obj,
                &["spec", "persistentVolumeReclaimPolicy"],
                json!("Retain"),
            );
            meta::add_finalizer(obj, PV_PROTECTION);
            obj["status"] = json!({"phase": "Pending"});
        }
        ("", "secrets") => set_default(obj, &["type"], json!("Opaque")),
        ("batch", "jobs") => default_job(obj, &name, &uid),
        ("batch", "cronjobs") => validate_cronjob(def, &name, obj)?,
        ("apps", "statefulsets") => default_statefulset(obj),
        ("storage.k8s.io", "storageclasses") => {
            set_default(obj, &["reclaimPolicy"], json!("Delete"));
            set_default(obj, &["volumeBindingMode"], json!("Immediate"));
        }
        ("snapshot.storage.k8s.io", "volumesnapshotcontents") => {
            set_default(obj, &["spec", "deletionPolicy"], json!("Delete"));
        }
        _ => {}
    }
    Ok(())
}

/// The API server's check of a CronJob's schedule (and its defaults for the policy fields).
fn validate_cronjob(def: &ResourceDef, name: &str, obj: &mut Value) -> Result<(), ApiError> {
    let schedule = obj["spec"]["schedule"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if schedule.is_empty() {
        return Err(ApiError::invalid(
            def,
            name,
            "spec.schedule: Required value",
        ));
    }
    if let Err(why) = crate::controllers::cronjobs::parse_schedule(&schedule) {
        return Err(ApiError::invalid(
            def,
            name,
            &format!("spec.schedule: Invalid value: {schedule:?}: {why}"),
        ));
    }
    set_default(obj, &["spec", "concurrencyPolicy"], json!("Allow"));
    set_default(obj, &["spec", "suspend"], json!(false));
    set_default(obj, &["spec", "successfulJobsHistoryLimit"], json!(3));
    set_default(obj, &["spec", "failedJobsHistoryLimit"], json!(1));
    Ok(())
}

/// The API server's defaults for a StatefulSet (`kubectl rollout status` reads the strategy).
fn default_statefulset(obj: &mut Value) {
    set_default(obj, &["spec", "replicas"], json!(1));
    set_default(obj, &["spec", "podManagementPolicy"], json!("OrderedReady"));
    set_default(obj, &["spec", "revisionHistoryLimit"], json!(10));
    set_default(
        obj,
        &["spec", "updateStrategy", "type"],
        json!("RollingUpdate"),
    );
    if obj.pointer("/spec/updateStrategy/type") == Some(&json!("RollingUpdate")) {
        set_default(
            obj,
            &["spec", "updateStrategy", "rollingUpdate", "partition"],
            json!(0),
        );
    }
    set_default(
        obj,
        &["spec", "persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
    );
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        default_pod_spec(spec);
    }
}

fn default_job(obj: &mut Value, name: &str, uid: &str) {
    set_default(obj, &["spec", "parallelism"], json!(1));
    set_default(obj, &["spec", "completions"], json!(1));
    set_default(obj, &["spec", "backoffLimit"], json!(6));
    set_default(obj, &["spec", "completionMode"], json!("NonIndexed"));
    set_default(obj, &["spec", "suspend"], json!(false));
    set_default(
        obj,
        &["spec", "podReplacementPolicy"],
        json!("TerminatingOrFailed"),
    );
    let manual = obj["spec"]
        .get("manualSelector")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let job_labels = json!({
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": name,
        "controller-uid": uid,
        "job-name": name,
    });
    if !manual {
        obj["spec"]["selector"] =
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    }
    set_default(obj, &["spec", "template", "metadata"], json!({}));
    let tmeta = &mut obj["spec"]["template"]["metadata"];
    set_default(tmeta, &["labels"], json!({}));
    if let (Some(l), Some(add)) = (tmeta["labels"].as_object_mut(), job_labels.as_object()) {
        for (k, v) in add {
            l.entry(k.clone()).or_insert(v.clone());
        }
    }
    set_default(obj, &["spec", "template", "spec"], json!({}));
    default_pod_spec(&mut obj["spec"]["template"]["spec"]);
}

/// The ServiceAccount admission plugin for a new pod: the pod's service account must exist
/// (`sa_exists`), and unless `automountServiceAccountToken` is false (on the pod, else on the
/// service account: `sa_automount`) every container gets the `kube-api-access-*` projected
/// volume (a bound token, the cluster CA, the namespace) at
/// `/var/run/secrets/kubernetes.io/serviceaccount`.
pub fn service_account(
    def: &ResourceDef,
    pod: &mut Value,
    sa_exists: bool,
    sa_automount: Option<bool>,
) -> Result<(), ApiError> {
    let ns = meta::namespace(pod).to_string();
    let sa = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    if !sa_exists {
        return Err(ApiError::forbidden(
            def,
            meta::name(pod),
            &format!(
                "error looking up service account {ns}/{sa}: serviceaccount \"{sa}\" not found"
            ),
        ));
    }
    pod["spec"]["serviceAccount"] = json!(sa);
    let automount = pod["spec"]["automountServiceAccountToken"]
        .as_bool()
        .or(sa_automount)
        .unwrap_or(true);
    let has_mount = |c: &Value| {
        c["volumeMounts"].as_array().is_some_and(|m| {
            m.iter()
                .any(|m| m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount")
        })
    };
    if !automount {
        return Ok(());
    }
    let volume = format!("kube-api-access-{}", meta::random_suffix());
    let spec = &mut pod["spec"];
    set_default(spec, &["volumes"], json!([]));
    if let Some(v) = spec["volumes"].as_array_mut() {
        v.push(json!({"name": volume, "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ]}}));
    }
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter(|c| !has_mount(c)) {
                set_default(c, &["volumeMounts"], json!([]));
                if let Some(m) = c["volumeMounts"].as_array_mut() {
                    m.push(json!({"name": volume, "readOnly": true,
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}));
                }
            }
        }
    }
    Ok(())
}

/// Checks an update of the main resource against the stored object (the status endpoint is
/// not checked here).
pub fn validate_update(def: &ResourceDef, old: &Value, new: &Value) -> Result<(), ApiError> {
    let name = meta::name(old);
    if meta::is_deleting(old) {
        let old_f = meta::finalizers(old);
        if let Some(added) = meta::finalizers(new)
            .into_iter()
            .find(|f| !old_f.contains(f))
        {
            return Err(ApiError::forbidden(
                def,
                name,
                &format!("no new finalizers can be added if the object is being deleted, found new finalizers []string{{{added:?}}}"),
            ));
        }
    }
    if def.group.is_empty() && def.plural == "persistentvolumeclaims" {
        let mut a = old.get("spec").cloned().unwrap_or(Value::Null);
        let mut b = new.get("spec").cloned().unwrap_or(Value::Null);
        for s in [&mut a, &mut b] {
            if let Some(m) = s.as_object_mut() {
                if let Some(r) = m.get_mut("resources").and_then(|r| r.get_mut("requests")) {
                    if let Some(r) = r.as_object_mut() {
                        r.remove("storage");
                    }
                }
                m.remove("volumeAttributesClassName");
            }
        }
        // Binding sets spec.volumeName once.
        if a.get("volumeName").is_none_or(Value::is_null) {
            if let Some(m) = a.as_object_mut() {
                match b.get("volumeName") {
                    Some(v) => {
                        m.insert("volumeName".into(), v.clone());
                    }
                    None => {
                        m.remove("volumeName");
                    }
                }
            }
        }
        if a != b {
            return Err(ApiError::invalid(
                def,
                name,
                "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
            ));
        }
    }
    Ok(())
}
