//! `s3mover cbt list` and `s3mover cbt verify`, and turning `backup`'s CBT flags into the
//! engine's range stream.

use anyhow::Result;
use futures::future::BoxFuture;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use s3mover_cbt::{
    Client, Endpoint, FetchedToken, KubernetesEndpoint, ListFormat, Query, RefreshingToken,
    Selection, SelectionArgs, StreamOptions,
};
use s3mover_engine::backup::{ChangeInput, ChangeTracker, TrackedRanges};
use s3mover_engine::manifest::CbtInfo;

use crate::cli::{
    BackupCbtArgs, CbtCommand, CbtDiscoveryArgs, CbtListArgs, GlobalArgs, OutputFormat, EXIT_OK,
};
use crate::output::{human_bytes, print_json};

pub async fn run(global: &GlobalArgs, command: &CbtCommand) -> Result<u8> {
    match command {
        CbtCommand::List(args) => list(global, args).await,
        CbtCommand::Verify(args) => {
            warn_of_token_on_command_line(&args.selection, "--token");
            let selection = args.selection.resolve()?;
            let report = s3mover_cbt::verify(
                &selection,
                StreamOptions::default(),
                &args.source,
                &args.target,
            )
            .await?;
            if global.output == OutputFormat::Json {
                print_json(&serde_json::json!({
                    "ranges": report.ranges,
                    "bytesCopied": report.bytes_copied,
                    "bytesCompared": report.bytes_compared,
                    "match": true,
                }))?;
            } else if !global.quiet {
                println!(
                    "copied {} ranges ({}) from {} to {}; the devices are identical ({} compared)",
                    report.ranges,
                    human_bytes(report.bytes_copied),
                    args.source.display(),
                    args.target.display(),
                    human_bytes(report.bytes_compared)
                );
            }
            Ok(EXIT_OK)
        }
    }
}

async fn list(global: &GlobalArgs, args: &CbtListArgs) -> Result<u8> {
    warn_of_token_on_command_line(&args.selection, "--token");
    let selection = if args.selection.is_set() {
        if args.discovery.previous_snapshot.is_some() {
            anyhow::bail!(
                "-p BASE_SNAPSHOT is looked up in the cluster; with --address give the base's handle with -P"
            );
        }
        args.selection.resolve()?
    } else {
        discover(&args.selection, &args.discovery).await?
    };
    let format = match global.output {
        OutputFormat::Json => ListFormat::Json,
        _ => ListFormat::Table,
    };
    let summary = s3mover_cbt::list(
        &selection,
        StreamOptions::default(),
        format,
        std::io::stdout(),
    )
    .await?;
    if format == ListFormat::Table && !global.quiet {
        eprintln!("{} ranges, {}", summary.ranges, human_bytes(summary.bytes));
    }
    Ok(EXIT_OK)
}

/// Says once that a token given as a flag is visible to other users, and what to use instead.
fn warn_of_token_on_command_line(selection: &SelectionArgs, flag: &str) {
    if selection.token.is_some() {
        tracing::warn!(
            "{flag} puts the token on the command line, where other users of this machine can read it; use {flag}-file FILE"
        );
    }
}

/// The change input of `backup`'s CBT flags: the CBT service they name, as the engine's
/// [`ChangeTracker`]. Bad flags are an error here; a service that cannot be reached or that
/// fails later is the engine's to handle (it reads more, and says why).
pub fn backup_change_input(args: &BackupCbtArgs) -> Result<ChangeInput> {
    let selection_args = args.selection();
    warn_of_token_on_command_line(&selection_args, "--cbt-token");
    let selection = selection_args.resolve()?;
    let record = selection.record();
    let snapshots = CbtInfo {
        snapshot: Some(record.snapshot.clone()),
        snapshot_handle: args
            .cbt_snapshot_handle
            .clone()
            .or(record.snapshot_handle.clone()),
        base_snapshot_handle: record.base_handle.clone(),
    };
    Ok(ChangeInput::Tracker(Box::new(CbtService {
        selection,
        snapshots,
    })))
}

/// A CBT service over gRPC, for the engine.
struct CbtService {
    selection: Selection,
    snapshots: CbtInfo,
}

impl ChangeTracker for CbtService {
    fn snapshots(&self) -> CbtInfo {
        self.snapshots.clone()
    }

    fn open(self: Box<Self>) -> BoxFuture<'static, std::result::Result<TrackedRanges, String>> {
        Box::pin(async move {
            let client = Client::connect(&self.selection.endpoint)
                .await
                .map_err(|e| e.to_string())?;
            let mut stream = client.ranges(self.selection.query.clone(), StreamOptions::default());
            let header = stream.header().await.map_err(|e| e.to_string())?;
            Ok(TrackedRanges {
                kind: header.map(|h| h.0),
                capacity: header.map(|h| h.1),
                ranges: stream
                    .into_ranges()
                    .map(|r| r.map_err(|e| e.to_string()))
                    .boxed(),
            })
        })
    }
}

/// Finds the snapshot's CBT service from the cluster, as the upstream lister does:
/// VolumeSnapshot → content → driver → SnapshotMetadataService → a TokenRequest for the
/// client's service account with the service's audience (refreshed before it expires).
async fn discover(flags: &SelectionArgs, discovery: &CbtDiscoveryArgs) -> Result<Selection> {
    let cluster = s3mover_k8s::Cluster::connect(&s3mover_k8s::ClientOptions {
        kubeconfig: discovery.kubeconfig.clone(),
        context: discovery.context.clone(),
    })
    .await?;
    let client = cluster.client.clone();
    let namespace = flags
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| cluster.default_namespace.clone());
    let snapshot = flags
        .snapshot
        .clone()
        .filter(|s| !s.is_empty())
        .context("--snapshot/-s is required: the VolumeSnapshot name")?;
    let content = s3mover_k8s::discovery::snapshot_content(&client, &namespace, &snapshot).await?;
    let service = s3mover_k8s::discovery::metadata_service(&client, &content.driver)
        .await?
        .with_context(|| {
            format!(
                "driver {} has no SnapshotMetadataService: it offers no changed block tracking",
                content.driver
            )
        })?;
    let base = match (&flags.base, &discovery.previous_snapshot) {
        (Some(handle), _) => Some(handle.clone()),
        (None, Some(name)) => {
            Some(s3mover_k8s::discovery::snapshot_handle(&client, &namespace, name).await?)
        }
        (None, None) => None,
    };
    let (sa_namespace, sa_name) = match &discovery.service_account {
        Some(text) => text
            .split_once('/')
            .filter(|(n, s)| !n.is_empty() && !s.is_empty())
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .with_context(|| format!("--service-account {text:?} must be NAMESPACE/NAME"))?,
        None => s3mover_k8s::discovery::own_service_account(&client).await?,
    };
    let audience = service.audience.clone();
    let token = RefreshingToken::new(Duration::from_secs(60), move || {
        let (client, ns, sa, audience) = (
            client.clone(),
            sa_namespace.clone(),
            sa_name.clone(),
            audience.clone(),
        );
        Box::pin(async move {
            let (token, expires_at) =
                s3mover_k8s::discovery::request_token(&client, &ns, &sa, &audience, 600)
                    .await
                    .map_err(|e| s3mover_cbt::CbtError::Token(e.to_string()))?;
            Ok(FetchedToken { token, expires_at })
        })
    });
    let max_results = i32::try_from(flags.max_results)
        .with_context(|| format!("--max-results {} is too large", flags.max_results))?;
    Ok(Selection {
        endpoint: Endpoint::Kubernetes(KubernetesEndpoint {
            address: service.address,
            ca_cert: service.ca_pem,
            namespace,
            token: Arc::new(token),
        }),
        query: Query {
            snapshot,
            base,
            starting_offset: flags.starting_offset,
            max_results,
        },
    })
}
