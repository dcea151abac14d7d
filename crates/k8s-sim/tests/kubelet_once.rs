//! A pod with `restartPolicy: Never` runs its container once: the kubelet never starts a
//! finished pod again, even when a pod list it read just before the pod finished still shows
//! it running. Each of many short pods appends a line to its own host file; every file must
//! hold exactly one line once all have finished and the kubelet has re-listed pods since.

mod cluster;

use std::time::Duration;

use cluster::*;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finished_pod_is_never_started_again() {
    if !require(
        "a_finished_pod_is_never_started_again",
        &["root", "bwrap", "losetup"],
    ) {
        return;
    }
    let sim = start(|_| {}).await;
    let c = &sim.client;
    // Outside /tmp, which tests may give containers of their own.
    let runs = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("runs dir");
    const PODS: usize = 40;
    for i in 0..PODS {
        let file = runs.path().join(format!("p{i}"));
        let _: Pod = create(
            c,
            "default",
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("p{i}")},
                "spec": {"restartPolicy": "Never", "containers": [{
                    "name": "c", "image": "busybox",
                    "command": ["sh", "-c", format!("echo run >> {}", file.display())]
                }]}
            }),
        )
        .await;
    }
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    wait_for("every pod to finish", || async {
        let list = pods
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let done = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
            .count();
        if done == PODS {
            Ok(())
        } else {
            Err(format!("{done} of {PODS} finished"))
        }
    })
    .await;
    // The kubelet re-lists every pod at least every 2 s: give it two rounds to start one again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for i in 0..PODS {
        let text = std::fs::read_to_string(runs.path().join(format!("p{i}"))).unwrap_or_default();
        assert_eq!(text, "run\n", "pod p{i} ran {} times", text.lines().count());
    }
}
