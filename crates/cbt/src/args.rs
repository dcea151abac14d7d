//! The selection flags shared by `cbt list`, `cbt verify` and `backup`, and their resolution
//! into an [`Endpoint`] plus a [`Query`].
//!
//! The CLI flattens [`SelectionArgs`] into its commands (`#[command(flatten)]`) and calls
//! [`SelectionArgs::resolve`]; nothing else about CBT lives in the CLI.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::connect::{Endpoint, KubernetesEndpoint};
use crate::token::{FileToken, StaticToken, TokenSource};
use crate::{CbtError, Query};

/// Which snapshot to ask about, and where. Direct mode: `--address` + `--ca-cert` +
/// `--token`/`--token-file` (Kubernetes flavour) or `--socket` (CSI flavour).
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectionArgs {
    /// SnapshotMetadata service address HOST:PORT (spec.address of the SnapshotMetadataService CR); the host is also the TLS server name
    #[arg(
        long,
        alias = "cbt-address",
        value_name = "HOST:PORT",
        conflicts_with = "socket"
    )]
    pub address: Option<String>,

    /// CA bundle (PEM, or base64 of PEM as in the CR's caCert) that signed the service's certificate
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Audience-scoped service account token (kubectl create token SA --audience AUDIENCE).
    /// Other users can read a command line: prefer --token-file
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,

    /// File holding the token; read again before every call, so a rotated projected token is picked up
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Namespace of the VolumeSnapshot(s)
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// VolumeSnapshot name (with --socket: the CSI snapshot id)
    #[arg(short = 's', long, value_name = "SNAPSHOT")]
    pub snapshot: Option<String>,

    /// CSI snapshot handle of the base snapshot; asks for the changed blocks since it
    #[arg(
        short = 'P',
        long = "base",
        visible_alias = "previous-snapshot-id",
        value_name = "BASE_HANDLE"
    )]
    pub base: Option<String>,

    /// First byte of interest
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub starting_offset: u64,

    /// Ranges per response message (0: the server chooses)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_results: u32,

    /// CSI driver socket: talk the CSI flavour directly instead of the Kubernetes service
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// A resolved selection: where to connect and what to ask.
#[derive(Clone)]
pub struct Selection {
    /// The service.
    pub endpoint: Endpoint,
    /// The question.
    pub query: Query,
}

/// What a backup records about where its ranges came from, so the next incremental can ask
/// for the delta from this snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// `"kubernetes"` or `"csi"`.
    pub flavour: &'static str,
    /// Namespace of the VolumeSnapshot (Kubernetes flavour).
    pub namespace: Option<String>,
    /// VolumeSnapshot name (Kubernetes) or CSI snapshot id (CSI).
    pub snapshot: String,
    /// The CSI handle of this snapshot when known here (CSI flavour: the id itself). The
    /// Kubernetes flavour learns it from VolumeSnapshotContent.status.snapshotHandle.
    pub snapshot_handle: Option<String>,
    /// The base snapshot handle the delta was computed from, if any.
    pub base_handle: Option<String>,
}

impl SelectionArgs {
    /// True when any CBT selection was given (a service to ask).
    pub fn is_set(&self) -> bool {
        self.address.is_some() || self.socket.is_some()
    }

    /// Checks the combination and reads the CA and token files.
    pub fn resolve(&self) -> Result<Selection, CbtError> {
        let snapshot = match &self.snapshot {
            Some(s) if !s.is_empty() => s.clone(),
            _ => {
                return Err(CbtError::Usage(
                    "--snapshot/-s is required: the VolumeSnapshot name (with --socket: the CSI snapshot id)".into(),
                ))
            }
        };
        let max_results = i32::try_from(self.max_results).map_err(|_| {
            CbtError::Usage(format!(
                "--max-results {} is larger than {}",
                self.max_results,
                i32::MAX
            ))
        })?;
        if i64::try_from(self.starting_offset).is_err() {
            return Err(CbtError::Usage(format!(
                "--starting-offset {} is larger than {}",
                self.starting_offset,
                i64::MAX
            )));
        }
        if matches!(&self.base, Some(b) if b.is_empty()) {
            return Err(CbtError::Usage("-P/--base must not be empty".into()));
        }
        let query = Query {
            snapshot,
            base: self.base.clone(),
            starting_offset: self.starting_offset,
            max_results,
        };
        let endpoint = match (&self.address, &self.socket) {
            (Some(_), Some(_)) => {
                return Err(CbtError::Usage(
                    "--address and --socket exclude each other: --address is the Kubernetes SnapshotMetadata service, --socket a CSI driver socket".into(),
                ))
            }
            (None, None) => {
                return Err(CbtError::Usage(
                    "give --address HOST:PORT with --ca-cert and --token/--token-file (Kubernetes SnapshotMetadata service), or --socket PATH (CSI driver socket)".into(),
                ))
            }
            (None, Some(socket)) => {
                if self.ca_cert.is_some() || self.token.is_some() || self.token_file.is_some() {
                    return Err(CbtError::Usage(
                        "--ca-cert, --token and --token-file belong to --address; the CSI socket takes none of them".into(),
                    ));
                }
                Endpoint::Csi {
                    socket: socket.clone(),
                    secrets: HashMap::new(),
                }
            }
            (Some(address), None) => {
                crate::connect::tls_server_name(address)?;
                let Some(ca_path) = &self.ca_cert else {
                    return Err(CbtError::Usage(
                        "--ca-cert FILE is required with --address (the SnapshotMetadataService CR's caCert, base64-decoded or not)".into(),
                    ));
                };
                let ca_cert = std::fs::read(ca_path).map_err(|source| CbtError::ReadFile {
                    what: "CA certificate",
                    path: ca_path.clone(),
                    source,
                })?;
                crate::connect::decode_ca_pem(&ca_cert, &ca_path.display().to_string())?;
                let token: Arc<dyn TokenSource> = match (&self.token, &self.token_file) {
                    (Some(t), _) if !t.is_empty() => Arc::new(StaticToken(t.clone())),
                    (_, Some(f)) => Arc::new(FileToken(f.clone())),
                    _ => {
                        return Err(CbtError::Usage(
                            "--token or --token-file is required with --address: a service account token for the audience in the SnapshotMetadataService CR".into(),
                        ))
                    }
                };
                let namespace = match &self.namespace {
                    Some(n) if !n.is_empty() => n.clone(),
                    _ => {
                        return Err(CbtError::Usage(
                            "-n/--namespace is required with --address: the namespace of the VolumeSnapshot".into(),
                        ))
                    }
                };
                Endpoint::Kubernetes(KubernetesEndpoint {
                    address: address.trim().to_string(),
                    ca_cert,
                    namespace,
                    token,
                })
            }
        };
        Ok(Selection { endpoint, query })
    }
}

impl Selection {
    /// What a backup should record about this selection.
    pub fn record(&self) -> SnapshotRecord {
        match &self.endpoint {
            Endpoint::Kubernetes(k) => SnapshotRecord {
                flavour: "kubernetes",
                namespace: Some(k.namespace.clone()),
                snapshot: self.query.snapshot.clone(),
                snapshot_handle: None,
                base_handle: self.query.base.clone(),
            },
            Endpoint::Csi { .. } => SnapshotRecord {
                flavour: "csi",
                namespace: None,
                snapshot: self.query.snapshot.clone(),
                snapshot_handle: Some(self.query.snapshot.clone()),
                base_handle: self.query.base.clone(),
            },
        }
    }
}
