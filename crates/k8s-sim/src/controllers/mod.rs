//! The controllers and node agents a real cluster runs, each an ordinary client of the
//! simulated API server (kube-rs `Api` and `watcher`, nothing reaches into the server's store):
//!
//! - [`snapshots`]: the snapshot controller and the CSI driver's snapshotter (VolumeSnapshot →
//!   VolumeSnapshotContent → a copy of the volume's image file);
//! - [`provisioner`]: the CSI provisioner with external-provisioner's checks, the PV binder and
//!   the pvc-protection and pv-protection controllers;
//! - [`cbt`]: the driver's SnapshotMetadata service (the cbt-testserver crate) behind the
//!   sidecar's TokenReview and SubjectAccessReview checks, registered as a
//!   `SnapshotMetadataService`;
//! - [`jobs`]: the `batch/v1` Job controller;
//! - [`kubelet`]: a scheduler and kubelets for simulated Nodes that run containers as real
//!   processes in bubblewrap, with block volumes on loop devices.
//!
//! All volume data lives in image files under the driver's state directory ([`storage`]).
//!
//! [`start_all`] is called once by [`crate::SimCluster::start`] with an admin client; the tasks
//! it returns are aborted when the cluster shuts down. The API server itself runs the loops
//! that act on storage directly (garbage collection, Foreground deletion, pvc-protection and
//! pv-protection, namespace deletion: see [`crate::gc`]); the kubelet deletes a gracefully
//! deleted pod again with `gracePeriodSeconds=0` once its containers have stopped, and its
//! logs go where `pods/log` reads them ([`crate::api::pod_log_path`]).

pub mod attachdetach;
pub mod cbt;
pub mod cronjobs;
pub mod events;
pub mod jobs;
pub mod kubelet;
pub mod oci;
pub mod provisioner;
pub mod snapshots;
pub mod statefulsets;
pub mod storage;
mod util;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::SimOptions;

/// What a container image stands for on this machine: the host program its entrypoint runs, or
/// an image's own root filesystem ([`oci::unpack_archive`]) its containers run in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// The image's ENTRYPOINT (first element a host path), replaced by a container's `command`.
    pub entrypoint: Vec<String>,
    /// The image's CMD, replaced by a container's `args`.
    pub cmd: Vec<String>,
    /// Environment the image sets (ENV), overridden by the container's.
    pub env: Vec<(String, String)>,
    /// The image's unpacked root filesystem, the container's `/` (a fresh copy per container
    /// run, as a runtime's writable layer); `None`: the host's root, with the entrypoint a
    /// host path.
    pub rootfs: Option<PathBuf>,
}

impl ImageConfig {
    /// An image whose entrypoint is `program` (e.g. the s3mover binary), no CMD.
    pub fn entrypoint(program: impl Into<String>) -> Self {
        ImageConfig {
            entrypoint: vec![program.into()],
            ..ImageConfig::default()
        }
    }

    /// An image with no entrypoint whose CMD is `program` (as `busybox` runs `sh`).
    pub fn cmd(program: impl Into<String>) -> Self {
        ImageConfig {
            cmd: vec![program.into()],
            ..ImageConfig::default()
        }
    }
}

/// How the driver's SnapshotMetadata service behaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CbtMode {
    /// Served over TLS and registered as a `SnapshotMetadataService` named after the driver.
    #[default]
    Enabled,
    /// A driver without changed block tracking: no service, no `SnapshotMetadataService`.
    Disabled,
    /// Served and registered, but every token is refused (UNAUTHENTICATED).
    RefuseTokens,
    /// Registered with an address where nothing listens.
    Unreachable,
}

/// Settings of the simulated controllers, nodes and CSI driver.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// The CSI driver's name (provisioner of its StorageClass, name of its
    /// SnapshotMetadataService); [`start_all`] takes it from [`SimOptions::drivers`].
    pub driver: String,
    /// Names of the simulated Nodes, each with its own kubelet; [`start_all`] takes them from
    /// [`SimOptions::nodes`].
    pub nodes: Vec<String>,
    /// Image name → what it runs. Any other image cannot be pulled.
    pub images: BTreeMap<String, ImageConfig>,
    /// When true, VolumeSnapshots are never cut and never become ready.
    pub snapshots_never_ready: bool,
    /// The SnapshotMetadata service's behaviour ([`CbtMode::Disabled`] when the driver of
    /// [`SimOptions::drivers`] has no CBT).
    pub cbt: CbtMode,
    /// Create the driver's default StorageClass `csi-hostpath-sc` and default
    /// VolumeSnapshotClass `csi-hostpath-snapclass` at start, as its deployment does.
    pub install_classes: bool,
    /// The Job controller's first pod-failure back-off (doubled per failure, 6 minutes at most);
    /// 10 s as in kube-controller-manager.
    pub job_backoff: Duration,
    /// The kubelet's first image-pull and crash back-off (doubled, 5 minutes at most); 10 s as in
    /// the kubelet.
    pub kubelet_backoff: Duration,
    /// Where image files, pod directories and logs live; `None` = `<SimOptions state dir>/csi`.
    pub state_dir: Option<PathBuf>,
    /// The API server's address, given to containers as `KUBERNETES_SERVICE_HOST` and
    /// `KUBERNETES_SERVICE_PORT` (in-cluster configuration); set by [`crate::SimCluster::start`].
    pub api_server: Option<std::net::SocketAddr>,
    /// VolumeAttachments and the attach/detach controller ([`attachdetach`]) with these fault
    /// settings; `None` = not simulated (the kubelet attaches claims by itself).
    pub volume_attach: Option<attachdetach::AttachFaults>,
    /// The CronJob controller's clock: the wall clock plus an offset tests move forward.
    pub cron_clock: cronjobs::CronClock,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            driver: "hostpath.csi.k8s.io".into(),
            nodes: vec!["sim-node-1".into()],
            images: BTreeMap::new(),
            snapshots_never_ready: false,
            cbt: CbtMode::Enabled,
            install_classes: true,
            job_backoff: Duration::from_secs(10),
            kubelet_backoff: Duration::from_secs(10),
            state_dir: None,
            api_server: None,
            volume_attach: None,
            cron_clock: cronjobs::CronClock::default(),
        }
    }
}

/// What every controller shares: the admin client, the options, the driver's storage and the
/// event recorder.
#[derive(Clone)]
pub struct Ctx {
    /// Client with cluster-admin rights.
    pub client: kube::Client,
    /// Settings.
    pub opts: Arc<ControllerOptions>,
    /// The CSI driver's image files.
    pub storage: Arc<storage::Driver>,
    /// The cluster's state directory (where `pods/log` finds container logs).
    pub state_dir: PathBuf,
    /// Where Events go.
    pub events: events::Recorder,
}

/// The CSI driver's and kubelets' state directory for these options.
pub fn state_dir(cfg: &SimOptions) -> PathBuf {
    cfg.controllers
        .state_dir
        .clone()
        .unwrap_or_else(|| cfg.state_dir.join("csi"))
}

/// Starts every controller and kubelet against the API server `client` talks to (with
/// cluster-admin rights, as the real components have theirs). The handles run until aborted.
/// The simulated CSI driver is the first of [`SimOptions::drivers`].
pub async fn start_all(client: kube::Client, cfg: &SimOptions) -> Vec<JoinHandle<()>> {
    let mut opts = cfg.controllers.clone();
    if let Some(d) = cfg.drivers.first() {
        opts.driver = d.name.clone();
        if !d.cbt {
            opts.cbt = CbtMode::Disabled;
        }
    }
    if !cfg.nodes.is_empty() {
        opts.nodes = cfg.nodes.clone();
    }
    let dir = state_dir(cfg);
    let storage = match storage::Driver::open(&dir) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!("the CSI driver cannot use {}: {e}", dir.display());
            return Vec::new();
        }
    };
    let ctx = Ctx {
        events: events::Recorder::new(client.clone()),
        client,
        opts: Arc::new(opts),
        storage,
        state_dir: cfg.state_dir.clone(),
    };
    let mut handles = Vec::new();
    handles.extend(provisioner::start(ctx.clone()));
    handles.extend(snapshots::start(ctx.clone()));
    handles.extend(jobs::start(ctx.clone()));
    handles.extend(kubelet::start(ctx.clone()));
    handles.extend(cbt::start(ctx.clone()));
    handles.extend(statefulsets::start(ctx.clone()));
    handles.extend(attachdetach::start(ctx.clone()));
    handles.extend(cronjobs::start(ctx.clone()));
    handles
}
