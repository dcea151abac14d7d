//! The data check: before the rollout, a short-lived pod on the workload pod's node mounts
//! each claim and writes a canary file (`.s3mover-rollout-canary`, a random value given
//! through the environment, never the command line), synced to disk; after the rollout,
//! another such pod on the replacement's node reads it back. The value comes back through the
//! pod's termination message.
//!
//! The canary pods need only an image with `/bin/sh` (`--canary-image`), not a shell in the
//! workload: they share the claim with the workload pod on its node, as ReadWriteOnce allows
//! (ReadWriteOncePod claims cannot be checked this way). What it proves: bytes written
//! through the volume's filesystem before the rollout are on the volume the replacement got,
//! after detach, attach and mount on what may be another node — the volume was neither lost,
//! replaced nor rolled back. What it cannot prove: that the application's own data is
//! consistent (a database's files may be torn), or that writes in flight when the old pod
//! stopped survived. Block-mode claims are reported as `error` (not checked).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::report::CanaryResult;
use super::Baseline;
use crate::{Error, Result};

/// The canary's file name on each claim.
pub const CANARY_FILE: &str = ".s3mover-rollout-canary";

/// A canary written to a claim.
#[derive(Debug, Clone)]
pub struct Canary {
    /// The claim.
    pub claim: String,
    /// What was written, or why the claim cannot be checked.
    pub value: std::result::Result<String, String>,
}

const WRITE: &str = r#"set -e
printf '%s' "$CANARY" > /canary/.s3mover-rollout-canary.tmp
sync
mv /canary/.s3mover-rollout-canary.tmp /canary/.s3mover-rollout-canary
sync
cat /canary/.s3mover-rollout-canary > /dev/termination-log"#;

const READ: &str = r#"if [ -f /canary/.s3mover-rollout-canary ]; then
  cat /canary/.s3mover-rollout-canary > /dev/termination-log
else
  printf 'MISSING' > /dev/termination-log
fi"#;

fn canary_pod(name: &str, node: &str, claim: &str, image: &str, script: &str, value: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {
            "app.kubernetes.io/managed-by": "s3mover",
            "s3mover.io/operation": "rollout-test-canary"}},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "canary", "image": image,
                "command": ["/bin/sh", "-c", script],
                "env": [{"name": "CANARY", "value": value}],
                "volumeMounts": [{"name": "data", "mountPath": "/canary"}],
            }],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }))
    .unwrap_or_default()
}

/// Runs a canary pod to its end; its termination message.
async fn run_pod(
    client: &Client,
    ns: &str,
    pod: Pod,
    timeout: Duration,
) -> std::result::Result<String, String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let name = pod.name_any();
    api.create(&PostParams::default(), &pod)
        .await
        .map_err(|e| {
            format!(
                "cannot create canary pod {name}: {}",
                crate::error::chain(&e)
            )
        })?;
    let start = Instant::now();
    let out = loop {
        let p = match api.get_opt(&name).await {
            Ok(Some(p)) => p,
            Ok(None) => break Err(format!("canary pod {name} disappeared")),
            Err(e) => {
                break Err(format!(
                    "reading canary pod {name}: {}",
                    crate::error::chain(&e)
                ))
            }
        };
        let status = p.status.clone().unwrap_or_default();
        let message = status
            .container_statuses
            .iter()
            .flatten()
            .find_map(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone())
            .unwrap_or_default();
        match status.phase.as_deref() {
            Some("Succeeded") => break Ok(message),
            Some("Failed") => break Err(format!("canary pod {name} failed: {message}")),
            _ => {}
        }
        if start.elapsed() >= timeout {
            break Err(format!(
                "canary pod {name} did not finish within {} s",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = api
        .delete(
            &name,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await;
    // The claim's next user waits for nothing of ours.
    let start = Instant::now();
    while start.elapsed() < timeout {
        match api.get_opt(&name).await {
            Ok(None) | Err(_) => break,
            Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    out
}

fn filesystem(pvc: &PersistentVolumeClaim) -> bool {
    pvc.spec.as_ref().and_then(|s| s.volume_mode.as_deref()) != Some("Block")
}

fn random_value() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..32)
        .map(|_| format!("{:x}", rng.gen_range(0..16u8)))
        .collect()
}

/// Writes a canary to every claim of `pods`, each through a pod on the workload pod's node.
pub async fn write_all(
    client: &Client,
    ns: &str,
    pods: &[Baseline],
    image: &str,
    run_id: &str,
    timeout: Duration,
) -> Result<Vec<Canary>> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let mut out = Vec::new();
    for b in pods {
        for (i, (claim, _)) in b.claims.iter().enumerate() {
            let pvc = claims
                .get(claim)
                .await
                .map_err(|e| Error::api(format!("reading claim {claim}"), e))?;
            if !filesystem(&pvc) {
                out.push(Canary {
                    claim: claim.clone(),
                    value: Err("a Block-mode claim has no filesystem for a canary file".into()),
                });
                continue;
            }
            let value = format!("{run_id}-{}", random_value());
            let name = format!("{}-canary-w{i}", b.pod);
            let pod = canary_pod(&name, &b.node, claim, image, WRITE, &value);
            let got = run_pod(client, ns, pod, timeout).await;
            match got {
                Ok(v) if v == value => out.push(Canary {
                    claim: claim.clone(),
                    value: Ok(value),
                }),
                Ok(v) => {
                    return Err(Error::Failed(format!(
                        "the canary written to claim {claim} read back as {v:?} at once"
                    )))
                }
                Err(e) => return Err(Error::Failed(format!("data check: {e}"))),
            }
        }
    }
    Ok(out)
}

/// Reads every canary back through a pod on the replacement's node.
pub async fn read_all(
    client: &Client,
    ns: &str,
    pods: &[Baseline],
    canaries: &[Canary],
    image: &str,
    timeout: Duration,
) -> Vec<CanaryResult> {
    let mut out = Vec::new();
    for c in canaries {
        let expected = match &c.value {
            Ok(v) => v,
            Err(why) => {
                out.push(CanaryResult {
                    claim: c.claim.clone(),
                    status: "error".into(),
                    message: why.clone(),
                });
                continue;
            }
        };
        let Some(b) = pods
            .iter()
            .find(|b| b.claims.iter().any(|(n, _)| n == &c.claim))
        else {
            out.push(CanaryResult {
                claim: c.claim.clone(),
                status: "error".into(),
                message: "no pod uses the claim after the rollout".into(),
            });
            continue;
        };
        let name = format!("{}-canary-r", b.pod);
        let pod = canary_pod(&name, &b.node, &c.claim, image, READ, "");
        let (status, message) = match run_pod(client, ns, pod, timeout).await {
            Ok(v) if &v == expected => ("intact", format!("canary read back on {}", b.node)),
            Ok(v) if v == "MISSING" => (
                "missing",
                format!("no canary file on the volume (read on {})", b.node),
            ),
            Ok(v) => (
                "changed",
                format!("canary read back as {v:?}, {expected:?} was written"),
            ),
            Err(e) => ("error", e),
        };
        out.push(CanaryResult {
            claim: c.claim.clone(),
            status: status.into(),
            message,
        });
    }
    out
}
