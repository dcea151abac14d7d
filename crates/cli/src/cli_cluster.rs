//! Flags of `s3mover cluster …` (cluster metadata backups and the k3s node token) and of
//! `s3mover health` (backup health checks). Every setting a CronJob passes also has an
//! `S3MOVER_*` environment variable; docs/cluster-health.md maps the earlier metadata
//! script's variables onto them.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cli_k8s::ClusterArgs as KubeArgs;

/// `s3mover cluster …`
#[derive(Debug, Args)]
pub struct ClusterCmdArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Record the cluster's PVs, PVCs, bindings, StorageClasses, VolumeSnapshotClasses and
    /// Nodes as one encrypted document in the repository.
    Backup(ClusterBackupArgs),
    /// List the cluster metadata documents.
    Backups(ClusterBackupsArgs),
    /// Print one document: JSON, or with -o yaml the PV/PVC objects for `kubectl apply`.
    Show(ClusterShowArgs),
    /// Keep the newest N documents of exactly one cluster; other clusters are never touched.
    Forget(ClusterForgetArgs),
    /// Back up the k3s node token, or check that its copy exists.
    #[command(subcommand)]
    NodeToken(NodeTokenCommand),
}

/// Where the repository comes from when `--repo`/`S3MOVER_REPO` is not set.
#[derive(Debug, Args, Clone)]
pub struct RepoSecretArgs {
    /// Secret (in the kubeconfig context's namespace, or the pod's) holding S3MOVER_REPO,
    /// S3MOVER_PASSWORD and AWS_*, read when --repo and S3MOVER_REPO are not set.
    #[arg(
        long,
        env = "S3MOVER_REPO_SECRET",
        default_value = "s3mover-repo",
        value_name = "NAME"
    )]
    pub repo_secret: String,
    /// The repository's S3 TLS settings.
    #[command(flatten)]
    pub store: crate::cli::StoreArgs,
}

#[derive(Debug, Args)]
pub struct ClusterBackupArgs {
    /// The cluster's name: documents are kept and forgotten per name.
    #[arg(
        long,
        env = "S3MOVER_CLUSTER",
        default_value = "default",
        value_name = "NAME"
    )]
    pub cluster: String,
    /// After the backup, keep only the N newest documents of this cluster.
    #[arg(long, env = "S3MOVER_CLUSTER_KEEP_LAST", value_name = "N")]
    pub keep_last: Option<u32>,
    #[command(flatten)]
    pub repo: RepoSecretArgs,
}

#[derive(Debug, Args)]
pub struct ClusterBackupsArgs {
    /// Only this cluster's documents.
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    #[command(flatten)]
    pub repo: RepoSecretArgs,
}

#[derive(Debug, Args)]
pub struct ClusterShowArgs {
    /// Document id, unique id prefix, or `latest` (with --cluster).
    pub id: String,
    /// The cluster, for `latest`.
    #[arg(long, env = "S3MOVER_CLUSTER", value_name = "NAME")]
    pub cluster: Option<String>,
    #[command(flatten)]
    pub repo: RepoSecretArgs,
}

#[derive(Debug, Args)]
pub struct ClusterForgetArgs {
    /// The cluster whose documents to thin out (exact name).
    #[arg(long, env = "S3MOVER_CLUSTER", value_name = "NAME")]
    pub cluster: String,
    /// Keep the N newest documents (at least 1).
    #[arg(long, env = "S3MOVER_CLUSTER_KEEP_LAST", value_name = "N")]
    pub keep_last: u32,
    /// Show what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub repo: RepoSecretArgs,
}

/// `s3mover cluster node-token …`
#[derive(Debug, Subcommand)]
pub enum NodeTokenCommand {
    /// Read the k3s server token file and store it in a Secret or hand it to a secret
    /// manager command (on stdin and in S3MOVER_NODE_TOKEN, never on its command line).
    Backup(NodeTokenBackupArgs),
    /// Report whether the stored token exists and when it was last updated.
    Check(NodeTokenCheckArgs),
}

/// Where the token copy lives.
#[derive(Debug, Args, Clone, Default)]
pub struct TokenStoreArgs {
    /// A Kubernetes Secret NAMESPACE/NAME (key `token`).
    #[arg(
        long = "to-secret",
        alias = "secret",
        env = "S3MOVER_NODE_TOKEN_SECRET",
        value_name = "NS/NAME",
        conflicts_with = "secret_command"
    )]
    pub secret: Option<String>,
    /// A command run through `sh -c`. backup: it gets the token on stdin and in
    /// S3MOVER_NODE_TOKEN and must store it. check: it prints what it knows as JSON
    /// (`{"exists": bool, "updatedAt": RFC 3339}`) or exits non-zero when there is no copy.
    /// S3MOVER_NODE_TOKEN_ACTION is `backup` or `check`.
    #[arg(long, env = "S3MOVER_NODE_TOKEN_COMMAND", value_name = "CMD")]
    pub secret_command: Option<String>,
}

#[derive(Debug, Args)]
pub struct NodeTokenBackupArgs {
    /// The k3s server token file.
    #[arg(
        long,
        env = "S3MOVER_NODE_TOKEN_FILE",
        default_value = "/var/lib/rancher/k3s/server/node-token",
        value_name = "FILE"
    )]
    pub token_file: PathBuf,
    #[command(flatten)]
    pub store: TokenStoreArgs,
}

#[derive(Debug, Args)]
pub struct NodeTokenCheckArgs {
    #[command(flatten)]
    pub store: TokenStoreArgs,
    /// With it, the copy must not be older than this file (the token changed since).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// `s3mover health`
#[derive(Debug, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Checks to run, of etcd, longhorn, pvc-backups, node-token, metadata [default: all].
    #[arg(
        long = "check",
        env = "S3MOVER_HEALTH_CHECKS",
        value_delimiter = ',',
        value_name = "LIST"
    )]
    pub checks: Vec<String>,
    /// Where k3s uploads its etcd snapshots: s3://bucket/prefix (the same AWS_* settings as
    /// the repository).
    #[arg(long, env = "S3MOVER_ETCD_SNAPSHOTS", value_name = "URL")]
    pub etcd_snapshots: Option<String>,
    /// Thresholds, CHECK=DURATION,... (e.g. etcd=24h,longhorn=48h,pvc-backups=26h,metadata=8d).
    #[arg(
        long,
        env = "S3MOVER_MAX_AGE",
        value_delimiter = ',',
        value_name = "CHECK=DURATION,..."
    )]
    pub max_age: Vec<String>,
    /// pvc-backups: namespace of the claims [default: the kubeconfig context's].
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// pvc-backups: every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// pvc-backups: only claims with these labels.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// metadata: the cluster whose metadata documents to check.
    #[arg(
        long,
        env = "S3MOVER_CLUSTER",
        default_value = "default",
        value_name = "NAME"
    )]
    pub cluster: String,
    /// longhorn: the namespace of Longhorn's BackupVolumes.
    #[arg(
        long,
        env = "S3MOVER_LONGHORN_NAMESPACE",
        default_value = "longhorn-system",
        value_name = "NS"
    )]
    pub longhorn_namespace: String,
    /// Also push the metrics to a Prometheus Pushgateway (job `s3mover_health`).
    #[arg(long, env = "S3MOVER_PUSHGATEWAY", value_name = "URL")]
    pub pushgateway: Option<String>,
    /// node-token: where the copy is.
    #[command(flatten)]
    pub token: TokenStoreArgs,
    /// node-token: the copy must not be older than this file.
    #[arg(long, env = "S3MOVER_NODE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    #[command(flatten)]
    pub repo: RepoSecretArgs,
}
