//! Command-line flags (the contract other tools call) and exit codes.
//!
//! Exit codes:
//! - 0: success
//! - 1: the operation failed (storage, I/O, not a repository, …)
//! - 2: bad usage or input (flags, ranges file, target too small, in use or not a file or
//!   device, no such backup, a `forget` that would empty a volume)
//! - 3: integrity problem: missing or corrupt data was found
//! - 4: wrong or missing password

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use s3mover_engine::Error as EngineError;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the operation failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad usage or input.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: missing or corrupt data found.
pub const EXIT_INTEGRITY: u8 = 3;
/// Exit code: wrong or missing password.
pub const EXIT_AUTH: u8 = 4;

/// Back up block volumes to object storage, incrementally, and restore them byte-exact.
#[derive(Debug, Parser)]
#[command(
    name = "s3mover",
    version,
    about,
    long_about = "Back up block volumes (Kubernetes block-mode PVCs, block devices, disk images) to object \
storage, incrementally, and restore them byte-exact.\n\n\
A repository is a directory or an S3 bucket prefix. Backups are encrypted by default; every backup \
restores on its own, and an incremental costs what changed, not the volume size.\n\n\
Quick start:\n  export S3MOVER_REPO=/srv/backups S3MOVER_PASSWORD=secret\n  s3mover init\n  \
s3mover backup /dev/vdb --volume db\n  s3mover backup /dev/vdb --volume db --changed-ranges changes.json\n  \
s3mover restore latest --volume db --target /dev/vdc\n\n\
S3 repositories (s3://bucket/prefix) read the usual AWS settings: AWS_ENDPOINT_URL (or \
?endpoint=URL), AWS_REGION (or ?region=), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and \
AWS_SESSION_TOKEN, AWS_PROFILE with the shared config and credentials files (credential_process \
included), or S3MOVER_S3_CREDENTIALS_COMMAND (a command printing credential_process JSON). \
Tuning: S3MOVER_S3_RETRY_BUDGET (how long a failing request is retried; default 5m), \
S3MOVER_S3_STALL_TIMEOUT (a request that moves no data for this long is retried; default 30s), \
S3MOVER_S3_MULTIPART_THRESHOLD and S3MOVER_S3_MULTIPART_PART_SIZE. See docs/s3.md. \
Credentials in URLs are masked in every message.\n\n\
The password comes from --password-file, S3MOVER_PASSWORD or the output of \
S3MOVER_PASSWORD_COMMAND (stopped after S3MOVER_PASSWORD_COMMAND_TIMEOUT, default 60s).\n\n\
Exit status: 0 success, 1 failure, 2 bad usage or input, 3 missing or corrupt data found, 4 wrong or missing password.",
    after_help = "Run `s3mover demo` to see a full, incremental and restore on a scratch image."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Repository: a path, file:///path, or s3://bucket/prefix.
    #[arg(long, global = true, env = "S3MOVER_REPO", value_name = "URL")]
    pub repo: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Print only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Read the repository password from this file (first line).
    #[arg(
        long,
        global = true,
        env = "S3MOVER_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub password_file: Option<PathBuf>,
    /// The stores the command opened, for its closing note on failed attempts (not a flag).
    #[arg(skip)]
    pub opened_stores: crate::commands::OpenedStores,
}

/// How to reach the repository's store (S3 TLS settings); taken by every repository command.
#[derive(Debug, Args, Clone, Default)]
pub struct StoreArgs {
    /// PEM file of extra CA certificates to trust for an S3 endpoint (a private CA).
    #[arg(long, env = "S3MOVER_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Accept any TLS certificate from the S3 endpoint. Only for testing: it allows interception.
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,
}

/// `-o` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    Text,
    /// One JSON document on stdout.
    Json,
    /// A table (same as text where a command has no table).
    Table,
    /// YAML (`cluster show`: PV/PVC objects for `kubectl apply`).
    Yaml,
    /// The Prometheus text exposition format (`health`).
    Prometheus,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repository (encrypted unless --insecure-no-encryption).
    Init(InitArgs),
    /// Back up a block device or image file.
    Backup(BackupArgs),
    /// List backups.
    Backups(BackupsArgs),
    /// Show one backup in detail.
    Show(ShowArgs),
    /// Restore a backup to a block device or a file.
    Restore(RestoreArgs),
    /// Check that backups are complete and, with --read-data, undamaged.
    Verify(VerifyArgs),
    /// Run a self-contained demonstration in a temporary directory.
    Demo(DemoArgs),
    /// Changed Block Tracking: list a snapshot's ranges, or check them by copying.
    #[command(subcommand)]
    Cbt(CbtCommand),
    /// Remove backups by retention rules (per volume; --dry-run shows which rule keeps each), or
    /// by id. A volume whose newest backup records its own rules (tag
    /// s3mover.retention=keep-daily=7,…) is judged by those instead of the --keep-* counts.
    Forget(ForgetArgs),
    /// Delete data no backup references, never blocking backups (see docs/format.md).
    Prune(PruneArgs),
    /// Protect a backup from every retention rule (--remove lifts it).
    Protect(ProtectArgs),
    /// Validate all metadata quickly, without reading chunk data.
    Check(CheckArgs),
    /// Kubernetes: back up and restore PersistentVolumeClaims (see `s3mover k8s --help`).
    K8s(crate::cli_k8s::K8sArgs),
    /// Measure a StatefulSet's rolling update: termination, unavailability, node moves,
    /// Multi-Attach, data (see docs/rollout-test.md).
    RolloutTest(crate::cli_rollout::RolloutTestArgs),
    /// Repair a damaged repository.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Cluster metadata (PVs, PVCs, bindings, classes, nodes) and the k3s node token.
    Cluster(crate::cli_cluster::ClusterCmdArgs),
    /// Are etcd snapshots, Longhorn backups, s3mover's own backups, the node token and the
    /// cluster metadata fresh? Exits non-zero when any check fails.
    Health(crate::cli_cluster::HealthArgs),
}

#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Index every pack no readable index object names again, from the pack's own header, then
    /// delete the damaged index objects.
    Index(RepairIndexArgs),
}

#[derive(Debug, Args)]
pub struct RepairIndexArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Report what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Remove these backups (ids or unique prefixes) instead of applying --keep-* rules; works
    /// for a backup whose manifest is damaged.
    #[arg(value_name = "ID")]
    pub backups: Vec<String>,
    /// Only backups of this volume (default: every volume, each on its own).
    #[arg(long, value_parser = parse_volume_name)]
    pub volume: Option<String>,
    /// Keep the N newest backups.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the N newest hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest backup of each of the N newest days.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the N newest ISO weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the N newest months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest backup of each of the N newest years.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every backup within DURATION (e.g. 7d, 36h) of the volume's newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep backups with this tag (KEY=VALUE, or KEY for any value); repeatable. An empty
    /// rule or one without a key is an error.
    #[arg(long, value_name = "TAG", value_parser = s3mover_engine::retention::parse_keep_tag)]
    pub keep_tag: Vec<String>,
    /// Count hours, days, weeks, months and years at this UTC offset (e.g. +02:00); default UTC.
    #[arg(long, value_name = "OFFSET", allow_hyphen_values = true)]
    pub timezone_offset: Option<String>,
    /// Remove every backup of a volume when the rules keep none of them. Without it such a
    /// forget stops and removes nothing.
    #[arg(long)]
    pub allow_remove_all: bool,
    /// Run prune afterwards.
    #[arg(long)]
    pub prune: bool,
    /// Show what would be kept and removed, and why; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// For --prune: see `prune --max-unused`.
    #[arg(long, value_name = "PCT", default_value = "10%")]
    pub max_unused: String,
    /// For --prune: see `prune --grace`.
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub grace: String,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Report what would be freed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Repack a partly used pack when more than PCT of it is unused.
    #[arg(long, value_name = "PCT", default_value = "10%")]
    pub max_unused: String,
    /// Never touch packs younger than this, and sweep what an earlier prune found unused only
    /// once it is this old. Backups must finish within it (see docs/format.md). The uploads
    /// of a failed backup go once this old, but never before 15 minutes.
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub grace: String,
}

#[derive(Debug, Args)]
pub struct ProtectArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Backup id or unique prefix.
    pub backup: String,
    /// Lift the protection.
    #[arg(long)]
    pub remove: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Bytes per chunk (e.g. 64K, 128KiB, 1M): the unit of change tracking and deduplication.
    /// Smaller chunks upload less per small change; larger ones mean smaller metadata. The
    /// default, 64K, is the largest size that keeps an incremental of scattered 4 KiB writes
    /// within 16 times the changed bytes (measurements in docs/benchmarks.md).
    #[arg(long, default_value = "64K", value_parser = parse_size)]
    pub chunk_size: u64,
    /// Create a repository without encryption. Anyone who can read the store can read the data.
    #[arg(long)]
    pub insecure_no_encryption: bool,
    /// Memory the password's key derivation (Argon2id) needs, to open the repository and for
    /// anyone guessing the password. The default, 19M with 2 passes, is OWASP's recommended
    /// setting and keeps backup jobs small; for a password a person chose, 64M with 3 passes
    /// (RFC 9106's second option) costs a guesser more. Between 7M and 4G.
    #[arg(long, default_value = "19M", value_parser = parse_size)]
    pub kdf_memory: u64,
    /// Passes of the key derivation over its memory (1 to 64).
    #[arg(long, default_value_t = 2)]
    pub kdf_passes: u32,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Block device or image file to back up.
    pub source: PathBuf,
    /// Name of the volume (backups of one volume form its history). Not empty or blank, and
    /// without control characters such as newlines.
    #[arg(long, value_parser = parse_volume_name)]
    pub volume: String,
    /// Backup to build on: latest (of this volume), none (full backup), or an id.
    #[arg(long, default_value = "latest")]
    pub parent: String,
    /// Ranges-file JSON of what changed since the parent; only those ranges are read.
    #[arg(long, value_name = "FILE", conflicts_with = "allocated_ranges")]
    pub changed_ranges: Option<PathBuf>,
    /// Ranges-file JSON of the allocated ranges; only those are read, the rest is zero.
    #[arg(long, value_name = "FILE")]
    pub allocated_ranges: Option<PathBuf>,
    /// KEY=VALUE tag to record (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<String>,
    /// Packs (16 MiB each) uploading at once, 1 to 256 [default: 1 for a local repository, 8
    /// for S3].
    #[arg(long, value_parser = parse_upload_concurrency)]
    pub upload_concurrency: Option<usize>,
    #[command(flatten)]
    pub cbt: BackupCbtArgs,
}

#[derive(Debug, Args)]
pub struct BackupsArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only backups of this volume.
    #[arg(long, value_parser = parse_volume_name)]
    pub volume: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Backup id, unique id prefix, or `latest` (with --volume).
    pub backup: String,
    /// Volume, for `latest`.
    #[arg(long, value_parser = parse_volume_name)]
    pub volume: Option<String>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Backup id, unique id prefix, or `latest` (with --volume).
    pub backup: String,
    /// Block device or file to restore to. A file is created sparse, readable by its owner
    /// only. A block device is opened exclusively: one that is mounted or in use is refused
    /// (see --force). `-` (or /dev/stdout) is standard output when it is redirected to a file
    /// (`--target - > disk.img`); the summary then goes to standard error. A pipe or terminal
    /// is refused: restore writes out of order and needs a target it can seek in.
    #[arg(long)]
    pub target: PathBuf,
    /// Volume, for `latest` (and as a check for ids).
    #[arg(long, value_parser = parse_volume_name)]
    pub volume: Option<String>,
    /// The target device already reads as zeros: do not zero the empty parts.
    #[arg(long)]
    pub assume_zeroed: bool,
    /// Replace an existing non-empty target file.
    #[arg(long)]
    pub overwrite: bool,
    /// Reads in flight (whole packs on S3, up to 4 MiB each from a local directory), 1 to
    /// 1024.
    #[arg(long, default_value_t = 8, value_parser = parse_read_concurrency)]
    pub concurrency: usize,
    /// Restore onto a block device even when it is mounted or held by another user (a
    /// filesystem, device mapper, another open with O_EXCL). This destroys what uses it.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Backups to verify (ids or prefixes); all when none are given.
    pub backups: Vec<String>,
    /// Read and hash-check every chunk.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read a part of the data: a percentage like 5% (rotating daily, so a daily run covers
    /// everything in 100/PCT days) or a size like 2G.
    #[arg(long, value_name = "PCT|SIZE")]
    pub read_data_subset: Option<String>,
}

/// `s3mover cbt …`
#[derive(Debug, Subcommand)]
pub enum CbtCommand {
    /// List a snapshot's allocated ranges, or with -P the ranges changed since a base snapshot.
    /// `-o json` prints the ranges file that `backup --changed-ranges` reads.
    List(CbtListArgs),
    /// Copy the listed ranges from --source to --target, then compare the two devices whole.
    Verify(CbtVerifyArgs),
}

#[derive(Debug, Args)]
pub struct CbtListArgs {
    #[command(flatten)]
    pub selection: s3mover_cbt::SelectionArgs,
    #[command(flatten)]
    pub discovery: CbtDiscoveryArgs,
}

/// Without `--address`: find the service from the cluster, as the upstream lister does.
#[derive(Debug, Args, Clone, Default)]
pub struct CbtDiscoveryArgs {
    /// Base VolumeSnapshot name (its content's handle becomes the base; -P wins).
    #[arg(short = 'p', long = "previous-snapshot", value_name = "BASE_SNAPSHOT")]
    pub previous_snapshot: Option<String>,
    /// Service account NS/NAME to request the token for [default: the client's own, from a SelfSubjectReview].
    #[arg(long, value_name = "NS/NAME")]
    pub service_account: Option<String>,
    /// Kubeconfig file [default: $KUBECONFIG, ~/.kube/config, then in-cluster].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

#[derive(Debug, Args)]
pub struct CbtVerifyArgs {
    /// Device (or image) holding the snapshot's data.
    #[arg(long)]
    pub source: PathBuf,
    /// Device (or image) to copy the ranges to; it must already hold the base's data.
    #[arg(long)]
    pub target: PathBuf,
    #[command(flatten)]
    pub selection: s3mover_cbt::SelectionArgs,
}

/// Change tracking flags of `backup`: where to get the ranges straight from a CBT service.
#[derive(Debug, Args, Clone, Default)]
pub struct BackupCbtArgs {
    /// SnapshotMetadata service HOST:PORT (Kubernetes flavour, TLS).
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "cbt_socket")]
    pub cbt_address: Option<String>,
    /// CA bundle (PEM, or base64 of PEM) of the SnapshotMetadata service.
    #[arg(long, value_name = "FILE")]
    pub cbt_ca_cert: Option<PathBuf>,
    /// Audience-scoped service account token for the service. Other users can read a command
    /// line (ps, /proc): prefer --cbt-token-file.
    #[arg(long, value_name = "TOKEN", conflicts_with = "cbt_token_file")]
    pub cbt_token: Option<String>,
    /// File holding the token (read again before each call): the way to pass the token.
    #[arg(long, value_name = "FILE")]
    pub cbt_token_file: Option<PathBuf>,
    /// CSI driver socket: ask the driver directly (CSI flavour).
    #[arg(long, value_name = "PATH")]
    pub cbt_socket: Option<PathBuf>,
    /// Namespace of the VolumeSnapshot.
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// VolumeSnapshot name (with --cbt-socket: the CSI snapshot id) the source holds.
    #[arg(short = 's', long, value_name = "SNAPSHOT")]
    pub snapshot: Option<String>,
    /// CSI handle of the base snapshot: read only what changed since it (it must be the
    /// parent backup's snapshot).
    #[arg(short = 'P', long = "base", value_name = "BASE_HANDLE")]
    pub base: Option<String>,
    /// Ranges per response message (0: the server chooses).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub cbt_max_results: u32,
    /// CSI handle of the snapshot the source holds (VolumeSnapshotContent status.snapshotHandle),
    /// recorded so that the next delta's base can be checked against this backup.
    #[arg(long, value_name = "HANDLE")]
    pub cbt_snapshot_handle: Option<String>,
}

impl BackupCbtArgs {
    /// True when a CBT service was named.
    pub fn is_set(&self) -> bool {
        self.cbt_address.is_some() || self.cbt_socket.is_some()
    }

    /// The same selection as `cbt list` flags.
    pub fn selection(&self) -> s3mover_cbt::SelectionArgs {
        s3mover_cbt::SelectionArgs {
            address: self.cbt_address.clone(),
            ca_cert: self.cbt_ca_cert.clone(),
            token: self.cbt_token.clone(),
            token_file: self.cbt_token_file.clone(),
            namespace: self.namespace.clone(),
            snapshot: self.snapshot.clone(),
            base: self.base.clone(),
            starting_offset: 0,
            max_results: self.cbt_max_results,
            socket: self.cbt_socket.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's files in this directory instead of a temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Parses sizes like 65536, 64K, 64KiB, 1M, 1MiB, 2G: the engine's one grammar
/// ([`s3mover_engine::units::parse_size`]), for flags as for environment variables.
pub fn parse_size(text: &str) -> Result<u64, String> {
    s3mover_engine::units::parse_size(text)
}

pub(crate) fn parse_tag(text: &str) -> Result<String, String> {
    use s3mover_engine::retention_spec::{parse_spec, to_spec, RETENTION_TAG};
    match text.split_once('=') {
        _ if text.chars().any(char::is_control) => {
            Err(format!("tag {text:?} holds a control character"))
        }
        // Retention rules are checked now, not when `forget` reads them.
        Some((RETENTION_TAG, rules)) => parse_spec(rules)
            .map(|policy| format!("{RETENTION_TAG}={}", to_spec(&policy)))
            .map_err(|e| format!("tag {RETENTION_TAG}: {e}")),
        Some((key, _)) if !key.trim().is_empty() => Ok(text.to_string()),
        _ => Err(format!("tag {text:?} must look like KEY=VALUE")),
    }
}

/// Checks a volume name: not empty or blank, and free of control characters (a newline or an
/// escape sequence would forge lines or rewrite the terminal wherever the name is shown).
pub fn parse_volume_name(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err(format!(
            "volume name {text:?} is empty or blank; name the volume"
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(format!(
            "volume name {text:?} holds a control character; use printable characters"
        ));
    }
    Ok(text.to_string())
}

/// Parses a count of parallel operations within `min..=max`.
fn parse_count(text: &str, what: &str, max: usize) -> Result<usize, String> {
    let n: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number; give {what} from 1 to {max}"))?;
    if !(1..=max).contains(&n) {
        return Err(format!("{what} must be from 1 to {max}, not {n}"));
    }
    Ok(n)
}

fn parse_read_concurrency(text: &str) -> Result<usize, String> {
    parse_count(text, "reads in flight", 1024)
}

fn parse_upload_concurrency(text: &str) -> Result<usize, String> {
    parse_count(text, "uploads at once", 256)
}

/// Maps an error to the documented exit code.
pub fn exit_code_for(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(engine) = cause.downcast_ref::<EngineError>() {
            return match engine {
                EngineError::Invalid(_) | EngineError::NoSuchBackup(_) => EXIT_USAGE,
                EngineError::Corrupt { .. } | EngineError::Missing { .. } => EXIT_INTEGRITY,
                EngineError::Store(e) if e.is_truncated() => EXIT_INTEGRITY,
                EngineError::PasswordRequired => EXIT_AUTH,
                // s3mover's own fault: not bad usage, whatever the operation was.
                EngineError::Internal(_) => EXIT_FAILED,
                EngineError::Crypto(s3mover_engine::CryptoError::WrongPassword(_)) => EXIT_AUTH,
                _ => EXIT_FAILED,
            };
        }
        if let Some(s3mover_k8s::Error::Invalid(_)) = cause.downcast_ref::<s3mover_k8s::Error>() {
            return EXIT_USAGE;
        }
        if cause
            .downcast_ref::<crate::password::PasswordError>()
            .is_some()
        {
            return EXIT_AUTH;
        }
    }
    EXIT_FAILED
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An internal failure exits 1 and says so; bad usage stays exit 2.
    #[test]
    fn internal_errors_are_not_usage_errors() {
        let internal = anyhow::Error::new(EngineError::internal("read task failed: cancelled"));
        assert_eq!(exit_code_for(&internal), EXIT_FAILED);
        assert!(internal
            .to_string()
            .starts_with("internal error: read task failed"));
        let usage = anyhow::Error::new(EngineError::Invalid("bad".into()));
        assert_eq!(exit_code_for(&usage), EXIT_USAGE);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("K").is_err());
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

        /// No text makes a flag parser panic, and what they accept is in range.
        #[test]
        fn flag_parsers_never_panic(text in "\\PC{0,24}|[0-9]{1,30}[a-zA-Z%:=+-]{0,4}[0-9]{0,20}[a-z]{0,2}") {
            let _ = parse_size(&text);
            let _ = parse_tag(&text);
            if let Ok(name) = parse_volume_name(&text) {
                prop_assert!(!name.trim().is_empty() && !name.chars().any(char::is_control));
            }
            if let Ok(n) = parse_read_concurrency(&text) {
                prop_assert!((1..=1024).contains(&n));
            }
            if let Ok(n) = parse_upload_concurrency(&text) {
                prop_assert!((1..=256).contains(&n));
            }
            let _ = s3mover_engine::retention::parse_keep_tag(&text);
            let _ = s3mover_engine::retention::parse_offset(&text);
            if let Ok(within) = s3mover_engine::retention::parse_duration(&text) {
                // Whatever the window, applying it must not overflow the calendar.
                let now = time::OffsetDateTime::now_utc();
                let candidates = [s3mover_engine::retention::Candidate {
                    id: "a".into(),
                    time: now,
                    tags: vec![],
                    protected: false,
                }];
                let policy = s3mover_engine::retention::KeepPolicy {
                    within: Some(within),
                    ..Default::default()
                };
                let _ = s3mover_engine::retention::apply(&policy, &candidates);
            }
        }
    }

    #[test]
    fn flags_parse() {
        Cli::command_for_tests();
    }

    impl Cli {
        fn command_for_tests() {
            use clap::CommandFactory;
            Cli::command().debug_assert();
        }
    }
}
