//! The controllers and the kubelet that run inside the simulated cluster: ordinary
//! Kubernetes clients of its API server, started with it.
//!
//! [`start_all`] is called once by [`crate::SimCluster::start`] with an admin client; the
//! tasks it returns are aborted when the cluster shuts down. The API server itself already
//! runs the control-plane loops that act on storage directly (garbage collection, Foreground
//! deletion, pvc-protection and pv-protection, namespace deletion: see [`crate::gc`]).
//!
//! What the API server expects of the controllers here, as of a real cluster's:
//! - a pod with `spec.nodeName` set that is not finished is deleted gracefully: it gets a
//!   `deletionTimestamp` and `deletionGracePeriodSeconds` and stays until its kubelet
//!   deletes it again with `gracePeriodSeconds=0` after stopping its containers;
//! - pod logs (`pods/log`, `kubectl logs`) are read from the file
//!   [`crate::api::pod_log_path`] under the state directory, which the kubelet writes.

use crate::SimOptions;

/// Starts every controller; returns their tasks.
pub async fn start_all(
    cluster_client: kube::Client,
    cfg: &SimOptions,
) -> Vec<tokio::task::JoinHandle<()>> {
    let _ = (cluster_client, cfg);
    Vec::new()
}
