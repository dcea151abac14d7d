//! Flags of `s3mover k8s …`: kubectl's conventions (`-n`, `-A`, `-l`, `--kubeconfig`,
//! `--context`) plus the mover's settings.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

/// The mover image by default: this version of s3mover.
pub const DEFAULT_MOVER_IMAGE: &str = concat!("s3mover:", env!("CARGO_PKG_VERSION"));

/// `s3mover k8s …`
#[derive(Debug, Args)]
pub struct K8sArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(subcommand)]
    pub command: K8sCommand,
}

/// Which cluster, as kubectl finds it.
#[derive(Debug, Args, Clone, Default)]
pub struct ClusterArgs {
    /// Kubeconfig file [default: $KUBECONFIG, ~/.kube/config, then the in-cluster service account].
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
}

impl ClusterArgs {
    /// The options of `s3mover-k8s`.
    pub fn options(&self) -> s3mover_k8s::ClientOptions {
        s3mover_k8s::ClientOptions {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum K8sCommand {
    /// Back up PersistentVolumeClaims: snapshot, temporary claim, mover Job, changed blocks only.
    Backup(K8sBackupArgs),
    /// Create a claim again from a backup (the same name by default) and fill it.
    Restore(K8sRestoreArgs),
    /// List the repository's backups of claims.
    Backups(K8sBackupsArgs),
    /// Per claim: last backup, its age, change source, whether the base snapshot is kept.
    Status(K8sStatusArgs),
    /// Is this cluster ready for backups? PASS/WARN/FAIL per check, with fixes.
    Doctor(K8sDoctorArgs),
    /// Remove what an interrupted run left (found by s3mover's labels only).
    Cleanup(K8sCleanupArgs),
}

/// The mover Job's settings, shared by backup and restore.
#[derive(Debug, Args, Clone)]
pub struct MoverArgs {
    /// Secret (in the claim's namespace) whose keys are the repository's environment:
    /// S3MOVER_REPO, S3MOVER_PASSWORD, AWS_*.
    #[arg(long, default_value = "s3mover-repo", value_name = "NAME")]
    pub repo_secret: String,
    /// Image of the mover pods; its entrypoint is `s3mover`.
    #[arg(long, env = "S3MOVER_MOVER_IMAGE", default_value = DEFAULT_MOVER_IMAGE, value_name = "IMAGE")]
    pub mover_image: String,
    /// imagePullPolicy of the mover pods (Always, IfNotPresent, Never).
    #[arg(long, value_name = "POLICY")]
    pub image_pull_policy: Option<String>,
    /// Service account the mover pods run as (deploy/rbac/mover.yaml).
    #[arg(long, default_value = "s3mover-mover", value_name = "NAME")]
    pub mover_service_account: String,
    /// Namespace of the mover Jobs. Movers run in the claim's namespace (the only one a
    /// snapshot can be read from without moving it); another namespace is refused.
    #[arg(long, value_name = "NS")]
    pub mover_namespace: Option<String>,
    /// Give up on a claim after this long (e.g. 90s, 30m, 2h).
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Times a failed mover pod is started again before the claim fails.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub backoff_limit: i32,
}

#[derive(Debug, Args)]
pub struct K8sBackupArgs {
    /// Claims to back up (or select them with -l).
    pub pvcs: Vec<String>,
    /// Namespace [default: the kubeconfig context's].
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Select claims by label (kubectl syntax).
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// With -l: select in every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// VolumeSnapshotClass [default: the driver's default class].
    #[arg(long, value_name = "NAME")]
    pub snapshot_class: Option<String>,
    /// Claims backed up at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub parallel: usize,
    /// KEY=VALUE tag to record on each backup (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    #[command(flatten)]
    pub mover: MoverArgs,
}

#[derive(Debug, Args)]
pub struct K8sRestoreArgs {
    /// The claim whose backup to restore (its name in the repository: NAMESPACE/PVC).
    pub pvc: String,
    /// The claim's namespace [default: the kubeconfig context's].
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Backup id or unique prefix [default: the claim's latest backup].
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
    /// Name of the claim to create [default: the original name].
    #[arg(long = "to", value_name = "NEW_PVC")]
    pub to: Option<String>,
    /// Namespace of the claim to create [default: the original namespace].
    #[arg(long, value_name = "NS")]
    pub to_namespace: Option<String>,
    /// Storage class [default: the recorded one].
    #[arg(long, value_name = "NAME")]
    pub storage_class: Option<String>,
    /// Size [default: the recorded size]; at least the backup's size.
    #[arg(long, value_parser = crate::cli::parse_size, value_name = "SIZE")]
    pub size: Option<u64>,
    /// Volume mode [default: the recorded one].
    #[arg(long, value_name = "Block|Filesystem")]
    pub volume_mode: Option<String>,
    /// Write over an existing Block claim (its data is lost; nothing may be using it).
    #[arg(long, alias = "force")]
    pub overwrite: bool,
    #[command(flatten)]
    pub mover: MoverArgs,
}

#[derive(Debug, Args)]
pub struct K8sBackupsArgs {
    /// Only this claim's backups.
    pub pvc: Option<String>,
    /// Namespace [default: the kubeconfig context's].
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Secret to read the repository settings from when --repo and S3MOVER_REPO are not set.
    #[arg(long, default_value = "s3mover-repo", value_name = "NAME")]
    pub repo_secret: String,
}

#[derive(Debug, Args)]
pub struct K8sStatusArgs {
    /// Namespace [default: the kubeconfig context's].
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Secret to read the repository settings from when --repo and S3MOVER_REPO are not set.
    #[arg(long, default_value = "s3mover-repo", value_name = "NAME")]
    pub repo_secret: String,
}

#[derive(Debug, Args)]
pub struct K8sDoctorArgs {
    /// Namespace of the claims [default: the kubeconfig context's].
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Check only this claim.
    #[arg(long, value_name = "NAME")]
    pub pvc: Option<String>,
    /// The repository Secret to look for.
    #[arg(long, default_value = "s3mover-repo", value_name = "NAME")]
    pub repo_secret: String,
    /// The mover service account to look for.
    #[arg(long, default_value = "s3mover-mover", value_name = "NAME")]
    pub mover_service_account: String,
}

#[derive(Debug, Args)]
pub struct K8sCleanupArgs {
    /// Namespace [default: every namespace].
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Show what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Parses durations like 90s, 30m, 2h, 1h30m, 500ms, or plain seconds: the engine's one
/// grammar ([`s3mover_engine::units::parse_duration`]).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    s3mover_engine::units::parse_duration(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }
}
