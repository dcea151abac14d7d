//! Shared helpers for the controller tests: a simulated cluster with the controllers running,
//! the host tools they need (skipped with a reason outside CI, failing in CI), and waiting for
//! what a user would wait for with `kubectl wait`.

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use s3mover_k8s_sim::controllers::{ControllerOptions, ImageConfig};
use s3mover_k8s_sim::{SimCluster, SimOptions};
use serde_json::{json, Value};

/// How long a wait may take before the test gives up and prints what it saw (a guard against
/// hanging, not a performance limit).
pub const PATIENCE: Duration = Duration::from_secs(120);

/// `SKIPPED` outside CI, a failure in CI, when a host tool or root is missing.
pub fn require(test: &str, needs: &[&str]) -> bool {
    let mut missing = Vec::new();
    for n in needs {
        let ok = match *n {
            "root" => (unsafe { libc::geteuid() }) == 0,
            tool => which(tool).is_some(),
        };
        if !ok {
            missing.push(*n);
        }
    }
    if missing.is_empty() {
        return true;
    }
    let reason = format!("needs {}", missing.join(", "));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {reason} (CI must provide it: see .ci/run)");
    }
    println!("SKIPPED {test}: {reason}");
    false
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A running cluster and its state directory.
pub struct Sim {
    pub cluster: SimCluster,
    pub client: Client,
    pub dir: tempfile::TempDir,
}

/// Images the tests run: `busybox` is the host's shell, with no entrypoint.
pub fn images() -> ControllerOptions {
    let mut o = ControllerOptions::default();
    o.images
        .insert("busybox".into(), ImageConfig::cmd("/bin/sh"));
    o.images
        .insert("busybox:latest".into(), ImageConfig::cmd("/bin/sh"));
    o.job_backoff = Duration::from_millis(200);
    o.kubelet_backoff = Duration::from_millis(500);
    o
}

/// Starts a cluster with the controllers configured by `tweak`.
pub async fn start(tweak: impl FnOnce(&mut ControllerOptions)) -> Sim {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut opts = SimOptions::new(dir.path());
    let mut c = images();
    tweak(&mut c);
    opts.controllers = c;
    let cluster = SimCluster::start(opts)
        .await
        .expect("the simulated cluster starts");
    let client = cluster.client();
    Sim {
        cluster,
        client,
        dir,
    }
}

impl Sim {
    /// Where the CSI driver keeps its images.
    pub fn csi_dir(&self) -> PathBuf {
        self.dir.path().join("csi")
    }

    /// The image file behind a bound claim.
    pub async fn image_of(&self, ns: &str, claim: &str) -> PathBuf {
        let pvc = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), ns)
            .get(claim)
            .await
            .expect("claim");
        let pv = pvc.spec.and_then(|s| s.volume_name).expect("bound claim");
        self.csi_dir().join("volumes").join(format!("{pv}.img"))
    }
}

/// Polls `check` until it returns Some, or panics with `what` and the last state seen.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = std::time::Instant::now();
    let mut last = String::new();
    while start.elapsed() < PATIENCE {
        match check().await {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up waiting for {what}; last seen: {last}");
}

/// Creates an object from JSON.
pub async fn create<K>(client: &Client, ns: &str, v: Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(v).expect("valid object");
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &obj)
        .await
        .expect("created")
}

pub fn snapshot_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: "snapshot.storage.k8s.io".into(),
        version: "v1".into(),
        api_version: "snapshot.storage.k8s.io/v1".into(),
        kind: "VolumeSnapshot".into(),
        plural: "volumesnapshots".into(),
    };
    Api::namespaced_with(client.clone(), ns, &ar)
}

pub fn content_api(client: &Client) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: "snapshot.storage.k8s.io".into(),
        version: "v1".into(),
        api_version: "snapshot.storage.k8s.io/v1".into(),
        kind: "VolumeSnapshotContent".into(),
        plural: "volumesnapshotcontents".into(),
    };
    Api::all_with(client.clone(), &ar)
}

/// A claim of the default class.
pub async fn claim(
    client: &Client,
    ns: &str,
    name: &str,
    size: &str,
    mode: &str,
    from_snapshot: Option<&str>,
) -> PersistentVolumeClaim {
    let mut spec = json!({
        "accessModes": ["ReadWriteOnce"], "volumeMode": mode,
        "resources": {"requests": {"storage": size}},
    });
    if let Some(s) = from_snapshot {
        spec["dataSource"] =
            json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": s});
    }
    create(client, ns, json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}, "spec": spec})).await
}

/// Waits until a claim is Bound.
pub async fn wait_bound(client: &Client, ns: &str, name: &str) -> PersistentVolumeClaim {
    let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    wait_for(&format!("claim {name} Bound"), || {
        let api = api.clone();
        async move {
            let p = api.get(name).await.map_err(|e| e.to_string())?;
            match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
                Some("Bound") => Ok(p),
                other => Err(format!("phase {other:?}")),
            }
        }
    })
    .await
}

/// A VolumeSnapshot of a claim, waited for until readyToUse.
pub async fn snapshot(client: &Client, ns: &str, name: &str, claim: &str) -> DynamicObject {
    let api = snapshot_api(client, ns);
    let mut vs = DynamicObject::new(name, &api_resource_vs());
    vs.data = json!({"spec": {"source": {"persistentVolumeClaimName": claim}}});
    api.create(&PostParams::default(), &vs)
        .await
        .expect("snapshot created");
    wait_for(&format!("snapshot {name} ready"), || {
        let api = api.clone();
        async move {
            let v = api.get(name).await.map_err(|e| e.to_string())?;
            if v.data.pointer("/status/readyToUse") == Some(&json!(true)) {
                Ok(v)
            } else {
                Err(format!("{:?}", v.data.get("status")))
            }
        }
    })
    .await
}

pub fn api_resource_vs() -> ApiResource {
    ApiResource {
        group: "snapshot.storage.k8s.io".into(),
        version: "v1".into(),
        api_version: "snapshot.storage.k8s.io/v1".into(),
        kind: "VolumeSnapshot".into(),
        plural: "volumesnapshots".into(),
    }
}

/// Events about an object, as `kubectl describe` lists them.
pub async fn events_for(client: &Client, ns: &str, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .collect()
}

/// Waits for an event with `reason` whose message contains `text`; returns its message.
pub async fn wait_event(client: &Client, ns: &str, name: &str, reason: &str, text: &str) -> String {
    wait_for(&format!("event {reason} on {name}"), || async {
        let evs = events_for(client, ns, name).await;
        evs.iter()
            .find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.message.as_deref().is_some_and(|m| m.contains(text))
            })
            .and_then(|e| e.message.clone())
            .ok_or_else(|| {
                format!(
                    "{:?}",
                    evs.iter()
                        .map(|e| (e.reason.clone(), e.message.clone()))
                        .collect::<Vec<_>>()
                )
            })
    })
    .await
}

/// A Job of one busybox container running `script` with the claim `device_claim` (if any) at
/// `/dev/xvda`.
pub async fn job(
    client: &Client,
    ns: &str,
    name: &str,
    script: &str,
    device_claim: Option<&str>,
    backoff_limit: i32,
) {
    let mut pod = json!({
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}],
    });
    if let Some(c) = device_claim {
        pod["containers"][0]["volumeDevices"] =
            json!([{"name": "data", "devicePath": "/dev/xvda"}]);
        pod["volumes"] = json!([{"name": "data", "persistentVolumeClaim": {"claimName": c}}]);
    }
    let _: k8s_openapi::api::batch::v1::Job = create(
        client,
        ns,
        json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": backoff_limit, "template": {"spec": pod}},
        }),
    )
    .await;
}

/// Waits for a Job to end; returns its final condition type and its pods.
pub async fn wait_job(client: &Client, ns: &str, name: &str) -> (String, Vec<Pod>) {
    let jobs = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(client.clone(), ns);
    let cond = wait_for(&format!("job {name} finished"), || {
        let jobs = jobs.clone();
        async move {
            let j = jobs.get(name).await.map_err(|e| e.to_string())?;
            let st = j.status.clone().unwrap_or_default();
            st.conditions
                .iter()
                .flatten()
                .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
                .map(|c| c.type_.clone())
                .ok_or_else(|| format!("{st:?}"))
        }
    })
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("job-name={name}")))
        .await
        .expect("pods")
        .items;
    (cond, pods)
}

/// The termination message of a pod's first container.
pub fn termination_message(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .terminated
        .as_ref()?
        .message
        .clone()
}

/// `len` bytes of a file at `offset`.
pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).expect("image");
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).expect("read");
    buf
}

pub fn name_of(o: &impl ResourceExt) -> String {
    o.name_any()
}
