//! The CustomResourceDefinitions a cluster with the CSI snapshot CRDs and the
//! SnapshotMetadataService CRD installed has, built from the served kinds of those groups,
//! so a client that checks for the CRDs (a "doctor") finds them as on a real cluster.

use serde_json::{json, Value};

use crate::resources::{ResourceDef, RESOURCES};

/// Groups whose kinds are CRDs on a real cluster.
const CRD_GROUPS: &[&str] = &[
    "snapshot.storage.k8s.io",
    "cbt.storage.k8s.io",
    "longhorn.io",
];

/// The name of the CustomResourceDefinition a kind comes from, if it is one.
pub fn definition_name(def: &ResourceDef) -> Option<String> {
    CRD_GROUPS
        .contains(&def.group)
        .then(|| format!("{}.{}", def.plural, def.group))
}

/// One `apiextensions.k8s.io/v1` CustomResourceDefinition per kind of [`CRD_GROUPS`], as
/// installed and established.
pub fn installed() -> Vec<Value> {
    RESOURCES
        .iter()
        .filter(|r| CRD_GROUPS.contains(&r.group))
        .map(|r| {
            let mut names = json!({
                "plural": r.plural,
                "singular": r.singular,
                "kind": r.kind,
                "listKind": format!("{}List", r.kind),
            });
            if !r.short_names.is_empty() {
                names["shortNames"] = json!(r.short_names);
            }
            let mut version = json!({
                "name": r.version,
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            });
            if r.has_status() {
                version["subresources"] = json!({"status": {}});
            }
            let mut annotations = json!({});
            if r.group == "snapshot.storage.k8s.io" {
                annotations["api-approved.kubernetes.io"] =
                    json!("https://github.com/kubernetes-csi/external-snapshotter/pull/814");
            }
            json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": format!("{}.{}", r.plural, r.group), "annotations": annotations},
                "spec": {
                    "group": r.group,
                    "names": names,
                    "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                    "versions": [version],
                },
                "status": {
                    "acceptedNames": names,
                    "conditions": [
                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found"},
                        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
                    ],
                    "storedVersions": [r.version],
                },
            })
        })
        .collect()
}
