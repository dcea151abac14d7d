//! `k8s restore`: a claim made again from a backup, with the size, volume mode, access modes
//! and storage class the backup recorded (or overridden), filled by a mover Job that writes the
//! backup onto its raw device with every chunk's hash checked, and left Bound for the workload.
//!
//! A Filesystem claim cannot be attached as a raw device, so its data goes through a Block
//! claim first: the backup is written to a Block claim, its volume is kept (reclaim policy
//! Retain) when that claim is deleted, and a Filesystem volume over the same storage
//! (`csi.volumeHandle`) is bound to the new claim — the way Velero's block data mover restores.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde::Serialize;

use crate::backup::CLEANUP_WAIT;
use crate::cleanup::{Kind, ObjectRef, Tracker};
use crate::labels::{self, object_labels};
use crate::manifests::{self, MoverJob};
use crate::mover::{self, JobPhase};
use crate::record::parse_quantity;
use crate::retry;
use crate::select::ClaimRef;
use crate::{Error, Result};

/// What to restore where.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// The backup id.
    pub backup_id: String,
    /// The claim to create (or overwrite).
    pub target: ClaimRef,
    /// Size in bytes.
    pub size: u64,
    /// `Block` or `Filesystem`.
    pub volume_mode: String,
    /// Access modes.
    pub access_modes: Vec<String>,
    /// Storage class.
    pub storage_class: Option<String>,
    /// Write over an existing Block claim.
    pub overwrite: bool,
    /// `--repo-secret`.
    pub repo_secret: String,
    /// `--mover-image`.
    pub mover_image: String,
    /// `--image-pull-policy`.
    pub pull_policy: Option<String>,
    /// `--mover-service-account`.
    pub mover_service_account: String,
    /// `--timeout`.
    pub timeout: Duration,
    /// Pod retries.
    pub backoff_limit: i32,
}

impl RestoreRequest {
    fn shape(&self, volume_mode: &'static str) -> manifests::ClaimShape<'_> {
        manifests::ClaimShape {
            size: self.size,
            volume_mode,
            access_modes: &self.access_modes,
            storage_class: self.storage_class.as_deref(),
        }
    }
}

/// A restore's outcome.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreOutcome {
    /// The claim's namespace.
    pub namespace: String,
    /// The claim.
    pub pvc: String,
    /// The backup restored.
    pub backup: String,
    /// The mover's JSON result.
    pub result: serde_json::Value,
    /// The volume the claim is bound to.
    pub volume: Option<String>,
    /// Seconds in all.
    pub seconds: f64,
}

/// Restores and cleans up; on failure a claim this run created is deleted again.
pub async fn restore_claim(
    client: &Client,
    tracker: &Tracker,
    request: &RestoreRequest,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<RestoreOutcome> {
    let start = Instant::now();
    let operation = labels::new_operation_id();
    let result = run(client, tracker, request, &operation, progress).await;
    let failed = tracker
        .delete_operation(client, &operation, CLEANUP_WAIT)
        .await;
    let mut outcome = result?;
    if let Some((object, why)) = failed.into_iter().next() {
        return Err(Error::Failed(format!(
            "restored, but could not remove {object}: {why}"
        )));
    }
    outcome.seconds = start.elapsed().as_secs_f64();
    Ok(outcome)
}

async fn run(
    client: &Client,
    tracker: &Tracker,
    request: &RestoreRequest,
    operation: &str,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<RestoreOutcome> {
    let deadline = Instant::now() + request.timeout;
    let target = &request.target;
    let ns = target.namespace.as_str();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let track = |kind: Kind, name: &str| {
        let object = ObjectRef {
            kind,
            namespace: ns.to_string(),
            name: name.to_string(),
            operation: operation.to_string(),
        };
        tracker.add(object.clone());
        object
    };
    let filesystem = match request.volume_mode.as_str() {
        "Block" => false,
        "Filesystem" => true,
        other => {
            return Err(Error::Invalid(format!(
                "volume mode {other:?} is neither Block nor Filesystem"
            )))
        }
    };
    check_storage_class(client, request.storage_class.as_deref()).await?;
    let existing = retry::read(
        || format!("cannot read claim {target}"),
        || claims.get_opt(&target.name),
    )
    .await?;
    // The claim the mover writes to: the target itself (Block), or a Block claim whose volume
    // is handed over to the target afterwards (Filesystem).
    let device_claim = match existing {
        Some(claim) => {
            if !request.overwrite {
                return Err(Error::Invalid(format!(
                    "claim {target} already exists; delete it, restore to another name with --to, or pass --overwrite to write the backup over its data"
                )));
            }
            check_overwritable(&claim, target, request.size)?;
            target.name.clone()
        }
        None if filesystem => {
            let name = labels::object_name("s3mover-restore", &target.name, operation);
            let claim = manifests::restored_claim(
                &name,
                ns,
                request.shape("Block"),
                &object_labels(operation, labels::ROLE_CLAIM, &target.name),
                &request.backup_id,
            );
            retry::create(&claims, &claim, &format!("claim {ns}/{name}")).await?;
            track(Kind::PersistentVolumeClaim, &name);
            name
        }
        None => {
            let claim = manifests::restored_claim(
                &target.name,
                ns,
                request.shape("Block"),
                &object_labels(operation, labels::ROLE_RESTORED, &target.name),
                &request.backup_id,
            );
            retry::create(&claims, &claim, &format!("claim {target}")).await?;
            // Deleted again if the restore fails; forgotten (kept) once it succeeds.
            track(Kind::PersistentVolumeClaim, &target.name);
            target.name.clone()
        }
    };
    progress(&format!("claim {ns}/{device_claim} created"));

    let args = vec![
        "restore".to_string(),
        request.backup_id.clone(),
        "--target".into(),
        manifests::DEVICE_PATH.into(),
        "-o".into(),
        "json".into(),
    ];
    let job_name = labels::object_name("s3mover-restore", &target.name, operation);
    let job_labels = object_labels(operation, labels::ROLE_MOVER, &target.name);
    let job = manifests::mover_job(&MoverJob {
        name: &job_name,
        namespace: ns,
        labels: &job_labels,
        image: &request.mover_image,
        pull_policy: request.pull_policy.as_deref(),
        service_account: &request.mover_service_account,
        repo_secret: &request.repo_secret,
        claim: &device_claim,
        args,
        cbt: None,
        backoff_limit: request.backoff_limit,
        deadline_seconds: Some(
            deadline
                .saturating_duration_since(Instant::now())
                .as_secs()
                .max(1) as i64,
        ),
    });
    let on_phase = |phase: JobPhase| match phase {
        JobPhase::Created => progress(&format!("mover Job {job_name} created")),
        JobPhase::Running(_) => progress("mover running: writing the volume"),
        JobPhase::Progress { done, total } => {
            progress(&mover::describe_progress("written", done, total))
        }
    };
    let result = mover::run_job(
        client,
        &job,
        &device_claim,
        tracker,
        operation,
        deadline.saturating_duration_since(Instant::now()),
        &on_phase,
    )
    .await?;
    if let Some(error) = result.get("error").and_then(|e| e.as_str()) {
        return Err(Error::Failed(format!("mover failed: {error}")));
    }
    // The mover's pods must be gone before the volume changes hands.
    let job_ref = ObjectRef {
        kind: Kind::Job,
        namespace: ns.to_string(),
        name: job_name.clone(),
        operation: operation.to_string(),
    };
    crate::cleanup::delete_and_wait(client, &job_ref, CLEANUP_WAIT).await?;
    tracker.forget(&job_ref);

    let volume = if filesystem {
        progress("handing the restored volume over to a Filesystem claim");
        Some(hand_over(client, tracker, request, &device_claim, operation).await?)
    } else {
        let claim = claims
            .get(&target.name)
            .await
            .map_err(|e| Error::api(format!("cannot read claim {target}"), e))?;
        tracker.forget(&ObjectRef {
            kind: Kind::PersistentVolumeClaim,
            namespace: ns.to_string(),
            name: target.name.clone(),
            operation: operation.to_string(),
        });
        claim.spec.and_then(|s| s.volume_name)
    };
    Ok(RestoreOutcome {
        namespace: ns.to_string(),
        pvc: target.name.clone(),
        backup: request.backup_id.clone(),
        result,
        volume,
        seconds: 0.0,
    })
}

fn check_overwritable(claim: &PersistentVolumeClaim, target: &ClaimRef, size: u64) -> Result<()> {
    let spec = claim.spec.clone().unwrap_or_default();
    if spec.volume_mode.as_deref() != Some("Block") {
        return Err(Error::Invalid(format!(
            "--overwrite writes to a raw device, and claim {target} is not a Block claim: delete it and restore without --overwrite"
        )));
    }
    let capacity = claim
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| parse_quantity(&q.0));
    if let Some(capacity) = capacity {
        if capacity < size {
            return Err(Error::Invalid(format!(
                "claim {target} holds {capacity} bytes, the backup {size}: too small"
            )));
        }
    }
    Ok(())
}

/// Gives the volume the backup was written to (through Block claim `device_claim`) to a new
/// Filesystem claim named as the target: keep the volume, delete the Block claim, create a
/// Filesystem volume over the same storage bound in advance to the target claim, create the
/// claim, wait until it is Bound. Returns the new volume's name.
async fn hand_over(
    client: &Client,
    tracker: &Tracker,
    request: &RestoreRequest,
    device_claim: &str,
    operation: &str,
) -> Result<String> {
    let target = &request.target;
    let ns = target.namespace.as_str();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let block_claim = claims
        .get(device_claim)
        .await
        .map_err(|e| Error::api(format!("cannot read claim {ns}/{device_claim}"), e))?;
    let pv_name = block_claim
        .spec
        .and_then(|s| s.volume_name)
        .ok_or_else(|| Error::Failed(format!("claim {ns}/{device_claim} is not bound")))?;
    let retain = serde_json::json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}});
    let pv = volumes
        .patch(&pv_name, &PatchParams::default(), &Patch::Merge(&retain))
        .await
        .map_err(|e| Error::api(format!("cannot keep volume {pv_name}"), e))?;
    let block_ref = ObjectRef {
        kind: Kind::PersistentVolumeClaim,
        namespace: ns.to_string(),
        name: device_claim.to_string(),
        operation: operation.to_string(),
    };
    crate::cleanup::delete_and_wait(client, &block_ref, CLEANUP_WAIT).await?;
    tracker.forget(&block_ref);

    let spec = pv.spec.clone().unwrap_or_default();
    let new_pv_name = labels::object_name("s3mover-fs", &target.name, operation);
    let mut new_pv = serde_json::json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": new_pv_name,
            "labels": object_labels(operation, labels::ROLE_RESTORED, &target.name),
            "annotations": {labels::RESTORED_FROM: request.backup_id}
        },
        "spec": {
            "capacity": spec.capacity,
            "accessModes": spec.access_modes,
            "volumeMode": "Filesystem",
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": spec.storage_class_name,
            "csi": spec.csi,
            "nodeAffinity": spec.node_affinity,
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": target.name}
        }
    });
    if let Some(csi) = new_pv["spec"]["csi"].as_object_mut() {
        csi.remove("fsType");
    }
    if let Some(driver) = spec.csi.as_ref().map(|c| c.driver.clone()) {
        new_pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] = driver.into();
    }
    let new_pv: PersistentVolume = serde_json::from_value(new_pv)
        .map_err(|e| Error::Failed(format!("cannot build the Filesystem volume: {e}")))?;
    retry::create(&volumes, &new_pv, &format!("volume {new_pv_name}")).await?;
    // The old volume object goes; its storage now belongs to the new one.
    if let Err(e) = volumes.delete(&pv_name, &Default::default()).await {
        if !crate::error::not_found(&e) {
            return Err(Error::api(format!("cannot remove volume {pv_name}"), e));
        }
    }
    let mut claim = manifests::restored_claim(
        &target.name,
        ns,
        request.shape("Filesystem"),
        &object_labels(operation, labels::ROLE_RESTORED, &target.name),
        &request.backup_id,
    );
    if let Some(spec) = claim.spec.as_mut() {
        spec.volume_name = Some(new_pv_name.clone());
    }
    retry::create(&claims, &claim, &format!("claim {target}")).await?;
    wait_bound(client, target, Duration::from_secs(120)).await?;
    Ok(new_pv_name)
}

/// Refuses a storage class that does not exist, before anything is created: the claim would
/// stay Pending until the timeout. A class the identity may not read is left to the cluster.
async fn check_storage_class(client: &Client, class: Option<&str>) -> Result<()> {
    let Some(class) = class.filter(|c| !c.is_empty()) else {
        return Ok(());
    };
    let classes: Api<StorageClass> = Api::all(client.clone());
    match retry::read(
        || format!("cannot read StorageClass {class}"),
        || classes.get_opt(class),
    )
    .await
    {
        Ok(Some(_)) => Ok(()),
        Ok(None) => {
            let names = classes
                .list(&Default::default())
                .await
                .map(|l| {
                    l.items
                        .into_iter()
                        .filter_map(|c| c.metadata.name)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            let known = if names.is_empty() {
                String::new()
            } else {
                format!(" (this cluster has: {})", names.join(", "))
            };
            Err(Error::Invalid(format!(
                "StorageClass {class} does not exist{known}: pass --storage-class with one that does"
            )))
        }
        Err(e)
            if matches!(
                e,
                Error::Api {
                    code: Some(403),
                    ..
                }
            ) =>
        {
            tracing::debug!("not checking StorageClass {class}: {e}");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Waits until a claim is Bound.
pub async fn wait_bound(client: &Client, claim: &ClaimRef, timeout: Duration) -> Result<()> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &claim.namespace);
    let start = Instant::now();
    let mut poll = mover::Poll::new();
    loop {
        if let Ok(pvc) = claims.get(&claim.name).await {
            if pvc.status.and_then(|s| s.phase).as_deref() == Some("Bound") {
                return Ok(());
            }
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: format!("claim {claim} was not Bound"),
                after: timeout,
            });
        }
        poll.wait().await;
    }
}
