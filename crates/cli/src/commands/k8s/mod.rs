//! `s3mover k8s …`: the Kubernetes commands. The flows live in `s3mover-k8s`; this module
//! connects, opens the repository when a command needs it (from `--repo`, or from the same
//! Secret the movers use), shows progress and prints results.

mod backup;
mod info;
mod restore;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Secret;
use s3mover_engine::{LockedRepository, Repository};
use s3mover_k8s::Cluster;

use crate::cli::{GlobalArgs, StoreArgs};
use crate::cli_k8s::{K8sArgs, K8sCommand, MoverArgs};

pub async fn run(global: &GlobalArgs, args: &K8sArgs) -> Result<u8> {
    // Flags are checked before the cluster is asked anything.
    match &args.command {
        K8sCommand::Backup(a) => backup::check_flags(a)?,
        K8sCommand::Restore(a) => restore::check_flags(a)?,
        _ => {}
    }
    let cluster = Cluster::connect(&args.cluster.options()).await?;
    match &args.command {
        K8sCommand::Backup(a) => backup::run(global, &cluster, a).await,
        K8sCommand::Restore(a) => restore::run(global, &cluster, a).await,
        K8sCommand::Backups(a) => info::backups(global, &cluster, a).await,
        K8sCommand::Status(a) => info::status(global, &cluster, a).await,
        K8sCommand::Doctor(a) => info::doctor(global, &cluster, a).await,
        K8sCommand::Cleanup(a) => info::cleanup(global, &cluster, a).await,
    }
}

/// `-n`, else the kubeconfig context's namespace.
fn namespace(cluster: &Cluster, flag: &Option<String>) -> String {
    flag.clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| cluster.default_namespace.clone())
}

/// Movers run in the claim's namespace; `--mover-namespace` may only name that one.
fn check_mover_namespace(mover: &MoverArgs, namespace: &str) -> Result<()> {
    match &mover.mover_namespace {
        Some(ns) if ns != namespace => anyhow::bail!(
            "--mover-namespace {ns}: movers run in the claim's namespace ({namespace}), where its snapshot can be read; put the repository Secret and the mover service account there"
        ),
        _ => Ok(()),
    }
}

/// Opens the repository: `--repo`/`S3MOVER_REPO` when set, else the settings in Secret
/// `secret` of `namespace` (the one the movers take their environment from). The Secret's
/// `AWS_*` and `S3MOVER_*` keys become this process's environment where it has none of its own.
pub(crate) async fn open_repository(
    global: &GlobalArgs,
    store_args: &StoreArgs,
    cluster: &Cluster,
    namespace: &str,
    secret: &str,
) -> Result<Repository> {
    if crate::commands::repo_url(global).is_ok() {
        return crate::commands::open_repository(global, store_args).await;
    }
    let secrets: kube::Api<Secret> = kube::Api::namespaced(cluster.client.clone(), namespace);
    let found = secrets
        .get_opt(secret)
        .await
        .map_err(|e| s3mover_k8s::Error::api(format!("cannot read Secret {namespace}/{secret}"), e))?
        .with_context(|| {
            format!("no repository: pass --repo or S3MOVER_REPO, or create Secret {namespace}/{secret} with S3MOVER_REPO")
        })?;
    let mut url = None;
    for (key, value) in found.data.unwrap_or_default() {
        let Ok(text) = String::from_utf8(value.0) else {
            continue;
        };
        if key == "S3MOVER_REPO" {
            url = Some(text.clone());
        }
        if (key.starts_with("AWS_") || key.starts_with("S3MOVER_"))
            && std::env::var_os(&key).is_none()
        {
            std::env::set_var(&key, text);
        }
    }
    let url =
        url.with_context(|| format!("Secret {namespace}/{secret} has no S3MOVER_REPO key"))?;
    let store = crate::commands::open_and_remember(
        global,
        &url,
        &crate::commands::store_options(store_args, false),
    )?;
    let locked = LockedRepository::read(store).await?;
    crate::commands::unlock_repository(global, locked).await
}

/// Prints a progress line on stderr unless `-q`.
fn say(global: &GlobalArgs, line: &str) {
    if !global.quiet {
        eprintln!("{line}");
    }
}
