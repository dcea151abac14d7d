//! The control loops that belong to the control plane itself rather than to storage
//! drivers or nodes: the garbage collector (owner references, Foreground deletion), the
//! pvc-protection and pv-protection controllers, and the namespace controller.
//!
//! They run on the store directly, after every change (and at least once a second), each
//! pass a scan of all objects — plenty at the sizes tests use.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::admission::{PVC_PROTECTION, PV_PROTECTION};
use crate::crud::{self, DeleteOptions, Propagation, FOREGROUND};
use crate::meta;
use crate::resources::{find, RESOURCES};
use crate::store::{Key, Store, Txn};

/// Runs the control loops until the task is aborted.
pub async fn run(store: Arc<Store>) {
    let mut changes = store.changes();
    loop {
        changes.mark_unchanged();
        store.write(pass);
        let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
    }
}

/// One pass of every loop; public so tests can drive it deterministically.
pub fn pass(txn: &mut Txn<'_>) {
    garbage_collect(txn);
    foreground(txn);
    protection(txn);
    namespaces(txn);
    custom_resources(txn);
}

/// The objects of a CustomResourceDefinition that was deleted go with it.
fn custom_resources(txn: &mut Txn<'_>) {
    let Some(crd) = find("apiextensions.k8s.io", "v1", "customresourcedefinitions") else {
        return;
    };
    for (res, def) in RESOURCES.iter().enumerate() {
        let Some(name) = crate::crds::definition_name(def) else {
            continue;
        };
        if txn.get(&Key::new(crd, "", &name)).is_some() {
            continue;
        }
        for (key, _) in txn.list(res, None) {
            txn.remove(&key);
        }
    }
}

fn background() -> DeleteOptions {
    DeleteOptions {
        propagation: Some(Propagation::Background),
        ..DeleteOptions::default()
    }
}

fn uids(txn: &Txn<'_>) -> HashMap<String, Key> {
    txn.keys()
        .into_iter()
        .filter_map(|k| {
            let uid = meta::uid(txn.get(&k)?).to_string();
            Some((uid, k))
        })
        .collect()
}

/// Dependents whose owners are all gone are deleted; references to owners that are gone
/// are dropped while another owner remains; dependents of an owner in Foreground deletion
/// are deleted.
fn garbage_collect(txn: &mut Txn<'_>) {
    let live = uids(txn);
    for key in txn.keys() {
        let Some(obj) = txn.get(&key) else { continue };
        let owners = meta::owner_uids(obj);
        if owners.is_empty() || meta::is_deleting(obj) {
            continue;
        }
        let present: Vec<&String> = owners
            .iter()
            .map(|(u, _)| u)
            .filter(|u| live.contains_key(*u))
            .collect();
        let owner_in_foreground = present.iter().any(|u| {
            live.get(*u).and_then(|k| txn.get(k)).is_some_and(|o| {
                meta::is_deleting(o) && meta::finalizers(o).iter().any(|f| f == FOREGROUND)
            })
        });
        if present.is_empty() || owner_in_foreground {
            let _ = crud::delete(txn, &key, &background());
        } else if present.len() != owners.len() {
            let mut obj = obj.clone();
            for (u, _) in &owners {
                if !live.contains_key(u) {
                    meta::remove_owner(&mut obj, u);
                }
            }
            txn.replace(&key, obj);
        }
    }
}

/// An owner in Foreground deletion goes when no dependent that blocks it is left.
fn foreground(txn: &mut Txn<'_>) {
    for key in txn.keys() {
        let Some(obj) = txn.get(&key) else { continue };
        if !meta::is_deleting(obj) || !meta::finalizers(obj).iter().any(|f| f == FOREGROUND) {
            continue;
        }
        let uid = meta::uid(obj).to_string();
        let mut obj = obj.clone();
        if crud::dependents(txn, &uid)
            .iter()
            .all(|(_, _, block)| !block)
        {
            meta::remove_finalizer(&mut obj, FOREGROUND);
            crud::commit(txn, &key, obj);
        }
    }
}

/// Whether a scheduled pod (in any phase) in `ns` uses claim `claim`: the pvc-protection
/// controller's test.
fn claim_in_use(txn: &Txn<'_>, ns: &str, claim: &str) -> bool {
    let Some(pods) = find("", "v1", "pods") else {
        return false;
    };
    txn.list(pods, Some(ns)).iter().any(|(_, pod)| {
        let scheduled = pod["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
        scheduled
            && pod["spec"]["volumes"].as_array().is_some_and(|vols| {
                vols.iter().any(|v| {
                    v["persistentVolumeClaim"]["claimName"].as_str() == Some(claim)
                        || (v.get("ephemeral").is_some()
                            && format!("{}-{}", meta::name(pod), v["name"].as_str().unwrap_or(""))
                                == claim)
                })
            })
    })
}

fn protection(txn: &mut Txn<'_>) {
    let (Some(pvcs), Some(pvs)) = (
        find("", "v1", "persistentvolumeclaims"),
        find("", "v1", "persistentvolumes"),
    ) else {
        return;
    };
    for (key, mut pvc) in txn.list(pvcs, None) {
        if meta::is_deleting(&pvc)
            && meta::finalizers(&pvc).iter().any(|f| f == PVC_PROTECTION)
            && !claim_in_use(txn, &key.ns, &key.name)
        {
            meta::remove_finalizer(&mut pvc, PVC_PROTECTION);
            crud::commit(txn, &key, pvc);
        }
    }
    for (key, mut pv) in txn.list(pvs, None) {
        if meta::is_deleting(&pv)
            && meta::finalizers(&pv).iter().any(|f| f == PV_PROTECTION)
            && pv["status"]["phase"].as_str() != Some("Bound")
        {
            meta::remove_finalizer(&mut pv, PV_PROTECTION);
            crud::commit(txn, &key, pv);
        }
    }
}

/// A namespace being deleted has its content deleted, and goes when nothing is left in it.
fn namespaces(txn: &mut Txn<'_>) {
    let Some(ns_res) = find("", "v1", "namespaces") else {
        return;
    };
    for (key, ns) in txn.list(ns_res, None) {
        if !meta::is_deleting(&ns) {
            continue;
        }
        let content: Vec<Key> = txn
            .keys()
            .into_iter()
            .filter(|k| RESOURCES[k.res].namespaced && k.ns == key.name)
            .collect();
        if content.is_empty() {
            txn.remove(&key);
            continue;
        }
        for k in content {
            if txn.get(&k).is_some_and(|o: &Value| !meta::is_deleting(o)) {
                let _ = crud::delete(txn, &k, &background());
            }
        }
    }
}
