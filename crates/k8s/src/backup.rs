//! `k8s backup`: one claim's backup, end to end, and the fan-out over many.
//!
//! VolumeSnapshot of the claim (class by flag, else the driver's default) → wait ready → the
//! content's handle and driver → the driver's SnapshotMetadataService, if any → a temporary
//! Block claim from the snapshot (a Filesystem snapshot's content is annotated to allow the
//! mode change) → a mover Job that streams the changed blocks itself and runs `s3mover backup`
//! on the raw device, the delta's base being the claim's kept snapshot → the result from the
//! termination message. The new snapshot is kept as the next base and the older one deleted
//! only once the new backup has committed; everything else is deleted, on failure too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::Client;
use serde::Serialize;

use crate::cleanup::{Kind, ObjectRef, Tracker};
use crate::labels::{self, object_labels};
use crate::manifests::{self, MoverCbt, MoverJob};
use crate::mover::{self, JobPhase};
use crate::record::{parse_quantity, ClaimRecord};
use crate::resources::{self, ContentInfo};
use crate::retry;
use crate::select::ClaimRef;
use crate::{Error, Result};

/// How long cleanup waits for each deleted object to be gone.
pub const CLEANUP_WAIT: Duration = Duration::from_secs(120);

/// Settings shared by every claim of one `k8s backup`.
#[derive(Debug, Clone)]
pub struct BackupSettings {
    /// `--snapshot-class`; `None`: the driver's default class.
    pub snapshot_class: Option<String>,
    /// `--repo-secret`: the Secret the mover takes its environment from.
    pub repo_secret: String,
    /// `--mover-image`.
    pub mover_image: String,
    /// `--image-pull-policy`, if given.
    pub pull_policy: Option<String>,
    /// `--mover-service-account`.
    pub mover_service_account: String,
    /// `--timeout`: for each claim, from its snapshot to its result.
    pub timeout: Duration,
    /// `--tag` values, added to the recorded ones.
    pub tags: Vec<String>,
    /// Pod retries of a mover Job.
    pub backoff_limit: i32,
    /// Checks the rules of a claim's [`labels::RETENTION_ANNOTATION`] and returns the text to
    /// record, or why they are wrong (one line).
    pub retention_rules: RetentionCheck,
}

/// See [`BackupSettings::retention_rules`].
pub type RetentionCheck = fn(&str) -> std::result::Result<String, String>;

/// One claim's outcome, as `k8s backup -o json` prints it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupOutcome {
    /// The claim's namespace.
    pub namespace: String,
    /// The claim.
    pub pvc: String,
    /// `ok` or `failed`.
    pub status: &'static str,
    /// Why it failed (one line).
    pub error: Option<String>,
    /// The backup's id.
    pub id: Option<String>,
    /// The mover's change source (`cbt-delta`, `cbt-allocated`, `hash-compare`, `full`).
    pub change_source: Option<String>,
    /// Bytes the mover read.
    pub bytes_read: Option<u64>,
    /// Bytes the mover uploaded.
    pub bytes_uploaded: Option<u64>,
    /// The VolumeSnapshot read (kept as the next base on success).
    pub snapshot: Option<String>,
    /// Its CSI handle.
    pub snapshot_handle: Option<String>,
    /// The base snapshot handle the changed blocks were asked against.
    pub base_snapshot_handle: Option<String>,
    /// Why the backup read more than the changed blocks, or other notes.
    pub note: Option<String>,
    /// Seconds per phase: snapshot, claim (and pod start), data, cleanup.
    pub phases: BTreeMap<&'static str, f64>,
    /// Seconds in all.
    pub seconds: f64,
    /// The `seconds` of the mover's own result (its `s3mover backup`), inside the data phase.
    pub mover_seconds: Option<f64>,
    /// Objects that could not be removed (with why).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub leftovers: Vec<String>,
}

/// Progress lines for the orchestrator's display: (claim, message).
pub type ProgressFn = dyn Fn(&ClaimRef, &str) + Send + Sync;

/// Backs up `claims` with at most `parallel` at once; one claim's failure does not stop the
/// others. Outcomes come back in the order of `claims`.
pub async fn backup_all(
    client: &Client,
    tracker: Arc<Tracker>,
    claims: Vec<ClaimRef>,
    settings: &BackupSettings,
    parallel: usize,
    progress: &ProgressFn,
) -> Vec<BackupOutcome> {
    let mut outcomes: Vec<(usize, BackupOutcome)> =
        futures::stream::iter(claims.into_iter().enumerate())
            .map(|(i, claim)| {
                let tracker = tracker.clone();
                async move {
                    (
                        i,
                        backup_claim(client, &tracker, &claim, settings, progress).await,
                    )
                }
            })
            .buffer_unordered(parallel.max(1))
            .collect()
            .await;
    outcomes.sort_by_key(|(i, _)| *i);
    outcomes.into_iter().map(|(_, o)| o).collect()
}

/// What the run learned before the mover finished, for the outcome.
#[derive(Default)]
struct Learned {
    snapshot: Option<String>,
    handle: Option<String>,
    base: Option<String>,
    note: Option<String>,
    phases: BTreeMap<&'static str, f64>,
}

/// Backs up one claim and cleans up after it, whatever happens.
pub async fn backup_claim(
    client: &Client,
    tracker: &Tracker,
    claim: &ClaimRef,
    settings: &BackupSettings,
    progress: &ProgressFn,
) -> BackupOutcome {
    let start = Instant::now();
    let operation = labels::new_operation_id();
    let mut learned = Learned::default();
    let result = run(
        client,
        tracker,
        claim,
        settings,
        &operation,
        &mut learned,
        progress,
    )
    .await;
    let cleanup_start = Instant::now();
    let failed_deletes = tracker
        .delete_operation(client, &operation, CLEANUP_WAIT)
        .await;
    learned
        .phases
        .insert("cleanup", cleanup_start.elapsed().as_secs_f64());
    let mut outcome = BackupOutcome {
        namespace: claim.namespace.clone(),
        pvc: claim.name.clone(),
        snapshot: learned.snapshot,
        snapshot_handle: learned.handle,
        base_snapshot_handle: learned.base,
        note: learned.note,
        phases: learned.phases,
        leftovers: failed_deletes
            .into_iter()
            .map(|(o, why)| format!("{o}: {why}"))
            .collect(),
        ..BackupOutcome::default()
    };
    match result {
        Ok(result) => {
            outcome.status = "ok";
            outcome.id = result
                .get("id")
                .and_then(|v| v.as_str())
                .map(str::to_string);
            outcome.change_source = result
                .get("changeSource")
                .and_then(|v| v.as_str())
                .map(str::to_string);
            outcome.bytes_read = result.get("bytesRead").and_then(|v| v.as_u64());
            outcome.bytes_uploaded = result.get("bytesUploaded").and_then(|v| v.as_u64());
            outcome.mover_seconds = result.get("seconds").and_then(|v| v.as_f64());
            let mover_note = result
                .get("note")
                .and_then(|v| v.as_str())
                .map(str::to_string);
            outcome.note = join_notes(outcome.note.take(), mover_note);
        }
        Err(e) => {
            outcome.status = "failed";
            outcome.error = Some(e.to_string());
            outcome.snapshot = None;
        }
    }
    outcome.seconds = start.elapsed().as_secs_f64();
    outcome
}

fn join_notes(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
}

/// The claim as the backup needs it.
struct Source {
    record: ClaimRecord,
    /// The claim's own snapshot class ([`labels::SNAPSHOT_CLASS_ANNOTATION`]).
    snapshot_class: Option<String>,
    /// The claim's retention rules ([`labels::RETENTION_ANNOTATION`]), as checked.
    retention: Option<String>,
}

async fn read_source(
    client: &Client,
    claim: &ClaimRef,
    retention_rules: RetentionCheck,
) -> Result<Source> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &claim.namespace);
    let pvc = retry::read(
        || format!("cannot read claim {claim}"),
        || claims.get_opt(&claim.name),
    )
    .await?
    .ok_or_else(|| Error::Invalid(format!("claim {claim} does not exist")))?;
    let snapshot_class = pvc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::SNAPSHOT_CLASS_ANNOTATION))
        .map(|c| c.trim().to_string());
    if snapshot_class.as_deref() == Some("") {
        return Err(Error::Invalid(format!(
            "claim {claim}: annotation {} is empty: name a VolumeSnapshotClass or remove it",
            labels::SNAPSHOT_CLASS_ANNOTATION
        )));
    }
    let retention = pvc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::RETENTION_ANNOTATION))
        .map(|rules| retention_rules(rules))
        .transpose()
        .map_err(|e| {
            Error::Invalid(format!(
                "claim {claim}: annotation {}: {e}",
                labels::RETENTION_ANNOTATION
            ))
        })?;
    let spec = pvc.spec.unwrap_or_default();
    let status = pvc.status.unwrap_or_default();
    if status.phase.as_deref() != Some("Bound") {
        return Err(Error::Invalid(format!(
            "claim {claim} is {}, not Bound: there is nothing to snapshot yet",
            status.phase.as_deref().unwrap_or("without a phase")
        )));
    }
    let size = status
        .capacity
        .as_ref()
        .and_then(|c| c.get("storage"))
        .or_else(|| spec.resources.as_ref()?.requests.as_ref()?.get("storage"))
        .and_then(|q| parse_quantity(&q.0))
        .ok_or_else(|| Error::Invalid(format!("claim {claim} has no storage size")))?;
    let volume = spec.volume_name.clone().unwrap_or_default();
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = retry::read(
        || format!("cannot read volume {volume} of claim {claim}"),
        || pvs.get(&volume),
    )
    .await?;
    let driver = pv
        .spec
        .and_then(|s| s.csi)
        .map(|c| c.driver)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "claim {claim} is not on a CSI volume: snapshots need a CSI driver"
            ))
        })?;
    Ok(Source {
        record: ClaimRecord {
            namespace: claim.namespace.clone(),
            pvc: claim.name.clone(),
            size,
            volume_mode: spec.volume_mode.unwrap_or_else(|| "Filesystem".into()),
            access_modes: spec.access_modes.unwrap_or_default(),
            storage_class: spec.storage_class_name,
            driver,
            snapshot: None,
            snapshot_handle: None,
        },
        snapshot_class,
        retention,
    })
}

/// The driver's default VolumeSnapshotClass.
pub async fn default_snapshot_class(client: &Client, driver: &str) -> Result<String> {
    let api = resources::snapshot_classes(client);
    let params = ListParams::default();
    let classes = retry::read(
        || "cannot list VolumeSnapshotClasses".to_string(),
        || api.list(&params),
    )
    .await?;
    let defaults: Vec<String> = classes
        .items
        .iter()
        .filter(|c| resources::str_at(c, &["driver"]) == Some(driver))
        .filter(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::DEFAULT_SNAPSHOT_CLASS))
                .is_some_and(|v| v == "true")
        })
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    match defaults.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::Invalid(format!(
            "driver {driver} has no default VolumeSnapshotClass: pass --snapshot-class, or annotate one with {}=true",
            labels::DEFAULT_SNAPSHOT_CLASS
        ))),
        many => Err(Error::Invalid(format!(
            "driver {driver} has {} default VolumeSnapshotClasses ({}): pass --snapshot-class",
            many.len(),
            many.join(", ")
        ))),
    }
}

/// The claim's kept base snapshots, newest first, with their contents.
pub async fn base_snapshots(
    client: &Client,
    claim: &ClaimRef,
) -> Result<Vec<(String, ContentInfo)>> {
    let api = resources::snapshots(client, &claim.namespace);
    let selector = ListParams::default().labels(&labels::base_selector(&claim.name));
    let list = retry::read(
        || format!("cannot list the base snapshots of {claim}"),
        || api.list(&selector),
    )
    .await?;
    let mut items = list.items;
    items.sort_by_key(|s| std::cmp::Reverse(s.metadata.creation_timestamp.as_ref().map(|t| t.0)));
    let mut found = Vec::new();
    for snapshot in items {
        let Some(name) = snapshot.metadata.name.clone() else {
            continue;
        };
        let status = resources::SnapshotStatus::of(&snapshot);
        let Some(content) = status.content.filter(|_| status.ready) else {
            continue;
        };
        if let Ok(vsc) = resources::contents(client).get(&content).await {
            found.push((name, ContentInfo::of(&vsc)));
        }
    }
    Ok(found)
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

#[allow(clippy::too_many_arguments)]
async fn run(
    client: &Client,
    tracker: &Tracker,
    claim: &ClaimRef,
    settings: &BackupSettings,
    operation: &str,
    learned: &mut Learned,
    progress: &ProgressFn,
) -> Result<serde_json::Value> {
    let deadline = Instant::now() + settings.timeout;
    let ns = claim.namespace.as_str();
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
    let source = read_source(client, claim, settings.retention_rules).await?;
    let mut record = source.record;
    // --snapshot-class, else the claim's annotation, else the driver's default class.
    let class = match settings.snapshot_class.clone().or(source.snapshot_class) {
        Some(class) => class,
        None => default_snapshot_class(client, &record.driver).await?,
    };
    // The base is chosen before the new snapshot exists, so that it is never the new one.
    let bases = base_snapshots(client, claim).await?;

    let phase_start = Instant::now();
    let snapshot_name = labels::object_name("s3mover", &claim.name, operation);
    let snapshot = manifests::snapshot(
        &snapshot_name,
        ns,
        &claim.name,
        &class,
        &object_labels(operation, labels::ROLE_SNAPSHOT, &claim.name),
    );
    retry::create(
        &resources::snapshots(client, ns),
        &snapshot,
        &format!("VolumeSnapshot {ns}/{snapshot_name}"),
    )
    .await?;
    let snapshot_ref = track(Kind::VolumeSnapshot, &snapshot_name);
    progress(
        claim,
        &format!("snapshot {snapshot_name} (class {class}) created"),
    );
    let content =
        mover::wait_snapshot_ready(client, ns, &snapshot_name, remaining(deadline)).await?;
    let handle = content.snapshot_handle.clone().unwrap_or_default();
    learned.snapshot = Some(snapshot_name.clone());
    learned.handle = Some(handle.clone());
    learned
        .phases
        .insert("snapshot", phase_start.elapsed().as_secs_f64());
    progress(
        claim,
        &format!(
            "snapshot ready ({:.1}s)",
            phase_start.elapsed().as_secs_f64()
        ),
    );

    if content
        .source_volume_mode
        .as_deref()
        .is_some_and(|m| m != "Block")
        && !content.allows_mode_change
    {
        allow_mode_change(client, &content.name).await?;
    }

    let phase_start = Instant::now();
    let service = crate::discovery::metadata_service(client, &content.driver).await?;
    let base = bases
        .iter()
        .find(|(_, c)| c.driver == content.driver && c.snapshot_handle.is_some())
        .and_then(|(_, c)| c.snapshot_handle.clone());
    let mut cbt = None;
    let mut cbt_args = Vec::new();
    match &service {
        Some(service) => {
            let ca_name = labels::object_name("s3mover-ca", &claim.name, operation);
            let config_map = manifests::ca_config_map(
                &ca_name,
                ns,
                &service.ca_pem,
                &object_labels(operation, labels::ROLE_CA, &claim.name),
            );
            retry::create(
                &Api::<ConfigMap>::namespaced(client.clone(), ns),
                &config_map,
                &format!("ConfigMap {ns}/{ca_name}"),
            )
            .await?;
            track(Kind::ConfigMap, &ca_name);
            cbt = Some(MoverCbt {
                audience: service.audience.clone(),
                ca_config_map: ca_name,
            });
            cbt_args = vec![
                "--cbt-address".into(),
                service.address.clone(),
                "--cbt-ca-cert".into(),
                manifests::CBT_CA.into(),
                "--cbt-token-file".into(),
                manifests::CBT_TOKEN.into(),
                "-n".into(),
                ns.to_string(),
                "-s".into(),
                snapshot_name.clone(),
                "--cbt-snapshot-handle".into(),
                handle.clone(),
            ];
            if let Some(base) = &base {
                cbt_args.extend(["-P".to_string(), base.clone()]);
                learned.base = Some(base.clone());
            }
        }
        None => {
            learned.note = Some(format!(
                "driver {} has no SnapshotMetadataService: reading the whole volume, uploading only what differs from the last backup",
                content.driver
            ));
            progress(claim, learned.note.as_deref().unwrap_or_default());
        }
    }

    let claim_name = labels::object_name("s3mover-src", &claim.name, operation);
    let size = content.restore_size.unwrap_or(record.size).max(record.size);
    let temporary = manifests::temporary_claim(
        &claim_name,
        ns,
        &snapshot_name,
        size,
        record.storage_class.as_deref(),
        &object_labels(operation, labels::ROLE_CLAIM, &claim.name),
    );
    retry::create(
        &Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns),
        &temporary,
        &format!("temporary claim {ns}/{claim_name}"),
    )
    .await?;
    track(Kind::PersistentVolumeClaim, &claim_name);

    record.snapshot = Some(snapshot_name.clone());
    record.snapshot_handle = Some(handle.clone());
    let mut args = vec![
        "backup".to_string(),
        manifests::DEVICE_PATH.to_string(),
        "--volume".into(),
        ClaimRecord::volume_name(ns, &claim.name),
        "-o".into(),
        "json".into(),
    ];
    // The claim's retention rules, unless a --tag gives them.
    let retention_tag = source
        .retention
        .filter(|_| {
            let prefix = format!("{}=", labels::RETENTION_TAG);
            !settings.tags.iter().any(|t| t.starts_with(&prefix))
        })
        .map(|rules| format!("{}={rules}", labels::RETENTION_TAG));
    for tag in record
        .to_tags()
        .into_iter()
        .chain(retention_tag)
        .chain(settings.tags.iter().cloned())
    {
        args.extend(["--tag".to_string(), tag]);
    }
    args.extend(cbt_args);
    let job_name = labels::object_name("s3mover-backup", &claim.name, operation);
    let job_labels = object_labels(operation, labels::ROLE_MOVER, &claim.name);
    let job = manifests::mover_job(&MoverJob {
        name: &job_name,
        namespace: ns,
        labels: &job_labels,
        image: &settings.mover_image,
        pull_policy: settings.pull_policy.as_deref(),
        service_account: &settings.mover_service_account,
        repo_secret: &settings.repo_secret,
        claim: &claim_name,
        args,
        cbt,
        backoff_limit: settings.backoff_limit,
        deadline_seconds: Some(remaining(deadline).as_secs().max(1) as i64),
    });
    let data_start = std::sync::Mutex::new(None::<Instant>);
    let on_phase = |phase: JobPhase| match phase {
        JobPhase::Created => progress(claim, &format!("mover Job {job_name} created")),
        JobPhase::Running(attempt) => {
            let mut started = data_start.lock().unwrap_or_else(|p| p.into_inner());
            started.get_or_insert_with(Instant::now);
            if attempt > 1 {
                progress(claim, &format!("mover running (attempt {attempt})"));
            } else {
                progress(claim, "mover running: reading the volume");
            }
        }
        JobPhase::Progress { done, total } => {
            progress(claim, &mover::describe_progress("read", done, total))
        }
    };
    let result = mover::run_job(
        client,
        &job,
        &claim_name,
        tracker,
        operation,
        remaining(deadline),
        &on_phase,
    )
    .await;
    let data_started = data_start
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or_else(Instant::now);
    learned.phases.insert(
        "claimAndPodStart",
        data_started.duration_since(phase_start).as_secs_f64(),
    );
    learned
        .phases
        .insert("data", data_started.elapsed().as_secs_f64());
    let result = result?;
    if let Some(error) = result.get("error").and_then(|e| e.as_str()) {
        return Err(Error::Failed(format!("mover failed: {error}")));
    }

    // Committed: the new snapshot becomes the base, and only now are older bases deleted.
    let patch = serde_json::json!({"metadata": {"labels": {labels::ROLE: labels::ROLE_BASE}}});
    resources::snapshots(client, ns)
        .patch(
            &snapshot_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| {
            Error::api(
                format!("cannot mark VolumeSnapshot {ns}/{snapshot_name} as the next base"),
                e,
            )
        })?;
    tracker.forget(&snapshot_ref);
    let older: Vec<ObjectRef> = bases
        .into_iter()
        .map(|(name, _)| ObjectRef {
            kind: Kind::VolumeSnapshot,
            namespace: ns.to_string(),
            name,
            operation: operation.to_string(),
        })
        .collect();
    for object in older {
        tracker.add(object);
    }
    Ok(result)
}

/// Lets a Block claim be made from a Filesystem snapshot: annotates its content (KEP-3141).
async fn allow_mode_change(client: &Client, content: &str) -> Result<()> {
    let patch = serde_json::json!({"metadata": {"annotations": {labels::ALLOW_VOLUME_MODE_CHANGE: "true"}}});
    resources::contents(client)
        .patch(content, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| {
            Error::api(
                format!(
                    "cannot allow a Block claim from the Filesystem snapshot content {content}"
                ),
                e,
            )
        })?;
    Ok(())
}
