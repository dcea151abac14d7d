//! The kinds the simulated API server serves, and the discovery documents built from them.
//!
//! Every kind is a row of [`RESOURCES`]: its group, version, plural and singular names, kind,
//! scope, short names and subresources. Storage, routing, discovery, RBAC messages and the
//! `kubectl get` table all read this one table, so adding a kind is adding a row.

use serde_json::{json, Value};

/// What a resource accepts: ordinary objects, or a review that is only ever created and
/// answered (never stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Stored objects with the full set of verbs.
    Stored,
    /// A create-only review (`SelfSubjectAccessReview`, `TokenReview`, ...).
    Review,
}

/// One kind the server serves.
#[derive(Debug)]
pub struct ResourceDef {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Plural resource name, as in URLs and RBAC rules.
    pub plural: &'static str,
    /// Singular resource name.
    pub singular: &'static str,
    /// Kind of one object.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names `kubectl` accepts (`pvc`, `vs`, ...).
    pub short_names: &'static [&'static str],
    /// Subresources besides the object itself (`status`, `log`, `token`).
    pub subresources: &'static [&'static str],
    /// Whether objects are stored or the resource is a create-only review.
    pub shape: Shape,
}

impl ResourceDef {
    /// `apiVersion` of the objects: `v1` for core, else `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether the resource has a `status` subresource (so the main endpoint keeps status and
    /// the status endpoint keeps everything else).
    pub fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }

    /// `group/plural` (or `plural` for core), as a resource is named in messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const STATUS: &[&str] = &["status"];
const NONE: &[&str] = &[];

macro_rules! res {
    (@ $g:expr, $v:expr, $p:expr, $s:expr, $k:expr, $ns:expr, $short:expr, $sub:expr, $shape:expr) => {
        ResourceDef {
            group: $g,
            version: $v,
            plural: $p,
            singular: $s,
            kind: $k,
            namespaced: $ns,
            short_names: $short,
            subresources: $sub,
            shape: $shape,
        }
    };
    (review $g:expr, $v:expr, $p:expr, $s:expr, $k:expr, $ns:expr) => {
        res!(@ $g, $v, $p, $s, $k, $ns, NONE, NONE, Shape::Review)
    };
    ($g:expr, $v:expr, $p:expr, $s:expr, $k:expr, $ns:expr, $short:expr, $sub:expr) => {
        res!(@ $g, $v, $p, $s, $k, $ns, $short, $sub, Shape::Stored)
    };
}

/// Every kind the server serves.
pub static RESOURCES: &[ResourceDef] = &[
    res!(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
        &["status", "finalize"]
    ),
    res!(
        "",
        "v1",
        "pods",
        "pod",
        "Pod",
        true,
        &["po"],
        &["status", "log"]
    ),
    res!(
        "",
        "v1",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
        STATUS
    ),
    res!(
        "",
        "v1",
        "persistentvolumes",
        "persistentvolume",
        "PersistentVolume",
        false,
        &["pv"],
        STATUS
    ),
    res!("", "v1", "secrets", "secret", "Secret", true, NONE, NONE),
    res!(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        NONE
    ),
    res!(
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
        &["token"]
    ),
    res!("", "v1", "events", "event", "Event", true, &["ev"], NONE),
    res!("", "v1", "nodes", "node", "Node", false, &["no"], STATUS),
    res!(
        "",
        "v1",
        "endpoints",
        "endpoints",
        "Endpoints",
        true,
        &["ep"],
        NONE
    ),
    res!(
        "",
        "v1",
        "services",
        "service",
        "Service",
        true,
        &["svc"],
        STATUS
    ),
    res!(
        "apps",
        "v1",
        "statefulsets",
        "statefulset",
        "StatefulSet",
        true,
        &["sts"],
        STATUS
    ),
    res!(
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        true,
        &["deploy"],
        STATUS
    ),
    res!("batch", "v1", "jobs", "job", "Job", true, NONE, STATUS),
    res!(
        "batch",
        "v1",
        "cronjobs",
        "cronjob",
        "CronJob",
        true,
        &["cj"],
        STATUS
    ),
    res!(
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "storageclass",
        "StorageClass",
        false,
        &["sc"],
        NONE
    ),
    res!(
        "storage.k8s.io",
        "v1",
        "volumeattachments",
        "volumeattachment",
        "VolumeAttachment",
        false,
        NONE,
        STATUS
    ),
    res!(
        "storage.k8s.io",
        "v1",
        "csidrivers",
        "csidriver",
        "CSIDriver",
        false,
        NONE,
        NONE
    ),
    res!(
        "storage.k8s.io",
        "v1",
        "csinodes",
        "csinode",
        "CSINode",
        false,
        NONE,
        NONE
    ),
    res!(
        "snapshot.storage.k8s.io",
        "v1",
        "volumesnapshots",
        "volumesnapshot",
        "VolumeSnapshot",
        true,
        &["vs"],
        STATUS
    ),
    res!(
        "snapshot.storage.k8s.io",
        "v1",
        "volumesnapshotcontents",
        "volumesnapshotcontent",
        "VolumeSnapshotContent",
        false,
        &["vsc", "vscs"],
        STATUS
    ),
    res!(
        "snapshot.storage.k8s.io",
        "v1",
        "volumesnapshotclasses",
        "volumesnapshotclass",
        "VolumeSnapshotClass",
        false,
        &["vsclass", "vsclasses"],
        NONE
    ),
    res!(
        "cbt.storage.k8s.io",
        "v1beta1",
        "snapshotmetadataservices",
        "snapshotmetadataservice",
        "SnapshotMetadataService",
        false,
        &["sms"],
        NONE
    ),
    res!(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        STATUS
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "role",
        "Role",
        true,
        NONE,
        NONE
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        NONE,
        NONE
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        NONE,
        NONE
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        NONE,
        NONE
    ),
    res!(
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        true,
        NONE,
        NONE
    ),
    res!(review "authorization.k8s.io", "v1", "selfsubjectaccessreviews", "selfsubjectaccessreview", "SelfSubjectAccessReview", false),
    res!(review "authorization.k8s.io", "v1", "subjectaccessreviews", "subjectaccessreview", "SubjectAccessReview", false),
    res!(review "authorization.k8s.io", "v1", "localsubjectaccessreviews", "localsubjectaccessreview", "LocalSubjectAccessReview", true),
    res!(review "authorization.k8s.io", "v1", "selfsubjectrulesreviews", "selfsubjectrulesreview", "SelfSubjectRulesReview", false),
    res!(review "authentication.k8s.io", "v1", "tokenreviews", "tokenreview", "TokenReview", false),
    res!(review "authentication.k8s.io", "v1", "selfsubjectreviews", "selfsubjectreview", "SelfSubjectReview", false),
    res!(
        "longhorn.io",
        "v1beta2",
        "backupvolumes",
        "backupvolume",
        "BackupVolume",
        true,
        &["lhbv"],
        STATUS
    ),
    res!(
        "apps",
        "v1",
        "controllerrevisions",
        "controllerrevision",
        "ControllerRevision",
        true,
        NONE,
        NONE
    ),
];

/// Index of a resource in [`RESOURCES`].
pub type ResId = usize;

/// The resource `plural` in `group`/`version`, if served.
pub fn find(group: &str, version: &str, plural: &str) -> Option<ResId> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource of `kind` in `group` (any version), if served.
pub fn find_kind(group: &str, kind: &str) -> Option<ResId> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.kind == kind)
}

/// The resource the `apiVersion`/`kind` pair names, if served.
pub fn find_api_version_kind(api_version: &str, kind: &str) -> Option<ResId> {
    let (group, version) = split_api_version(api_version);
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.kind == kind)
}

/// `"batch/v1"` → `("batch", "v1")`, `"v1"` → `("", "v1")`.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Whether a kind is served now (a kind of a CustomResourceDefinition is served only while
/// its definition exists).
pub type Served<'a> = &'a dyn Fn(&ResourceDef) -> bool;

/// The group/versions served, in a stable order (core first).
fn group_versions(served: Served<'_>) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| served(r)) {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// Whether `group`/`version` is served.
pub fn serves_group_version(group: &str, version: &str) -> bool {
    RESOURCES
        .iter()
        .any(|r| r.group == group && r.version == version)
}

fn verbs(r: &ResourceDef) -> Vec<&'static str> {
    match r.shape {
        Shape::Review => vec!["create"],
        Shape::Stored => vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
    }
}

fn subresource_verbs(sub: &str) -> Vec<&'static str> {
    match sub {
        "log" => vec!["get"],
        "token" => vec!["create"],
        "finalize" => vec!["update"],
        _ => vec!["get", "patch", "update"],
    }
}

/// `/api` : the core group's versions.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// `/apis`: every named group.
pub fn api_group_list(served: Served<'_>) -> Value {
    let groups: Vec<Value> = group_versions(served)
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/GROUP`: one group.
pub fn api_group(group: &str, served: Served<'_>) -> Option<Value> {
    let (g, v) = group_versions(served)
        .into_iter()
        .find(|(g, _)| *g == group)?;
    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
    Some(
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": [gv.clone()], "preferredVersion": gv}),
    )
}

/// `/api/v1` or `/apis/GROUP/VERSION`: the resources of one group/version.
pub fn api_resource_list(group: &str, version: &str, served: Served<'_>) -> Value {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version && served(r))
    {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": verbs(r),
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if matches!(
            r.plural,
            "pods" | "services" | "jobs" | "cronjobs" | "statefulsets" | "deployments"
        ) {
            entry["categories"] = json!(["all"]);
        }
        resources.push(entry);
        for sub in r.subresources {
            let kind = match *sub {
                "token" => "TokenRequest",
                _ => r.kind,
            };
            let mut entry = json!({
                "name": format!("{}/{}", r.plural, sub),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": subresource_verbs(sub),
            });
            if *sub == "token" {
                entry["group"] = json!("authentication.k8s.io");
                entry["version"] = json!("v1");
            }
            resources.push(entry);
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}
