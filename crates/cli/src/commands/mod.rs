//! One module per command; each turns parsed flags into an engine call and prints the result.

mod backup;
mod cbt;
mod check;
mod cluster;
mod demo;
mod forget;
mod health;
mod init;
mod k8s;
mod list;
mod node_token;
mod protect;
mod prune;
mod repair;
mod restore;
mod rollout_test;
mod verify;

use std::sync::Mutex;

use anyhow::{Context, Result};
use s3mover_engine::storage::{open_store, Store, StoreOptions};
use s3mover_engine::{LockedRepository, Repository};

use crate::cli::{Cli, Command, GlobalArgs, StoreArgs};

/// Runs the command; returns the exit code for non-error outcomes (e.g. verify problems).
/// A command that completes says how many S3 request attempts failed on its way, if any did.
pub async fn run(cli: Cli) -> Result<u8> {
    let code = run_command(&cli).await?;
    if !cli.global.quiet {
        crate::output::note_failed_attempts(cli.global.opened_stores.failed_attempts());
    }
    Ok(code)
}

async fn run_command(cli: &Cli) -> Result<u8> {
    let global = &cli.global;
    cluster::check_output_format(cli)?;
    match &cli.command {
        Command::Init(args) => init::run(global, args).await,
        Command::Backup(args) => backup::run(global, args).await,
        Command::Backups(args) => list::backups(global, args).await,
        Command::Show(args) => list::show(global, args).await,
        Command::Restore(args) => restore::run(global, args).await,
        Command::Verify(args) => verify::run(global, args).await,
        Command::Demo(args) => demo::run(global, args).await,
        Command::Cbt(command) => cbt::run(global, command).await,
        Command::Forget(args) => forget::run(global, args).await,
        Command::Prune(args) => prune::run(global, args).await,
        Command::Protect(args) => protect::run(global, args).await,
        Command::Check(args) => check::run(global, args).await,
        Command::K8s(args) => k8s::run(global, args).await,
        Command::RolloutTest(args) => rollout_test::run(global, args).await,
        Command::Repair(command) => repair::run(global, command).await,
        Command::Cluster(args) => cluster::run(global, args).await,
        Command::Health(args) => health::run(global, args).await,
    }
}

/// The stores a command opened, kept with its flags ([`GlobalArgs::opened_stores`]) for the
/// closing note on failed attempts.
#[derive(Default)]
pub struct OpenedStores(Mutex<Vec<Store>>);

impl OpenedStores {
    fn push(&self, store: Store) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(store);
    }

    /// Failed request attempts across the stores opened so far.
    pub fn failed_attempts(&self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|store| store.counts().failed_attempts)
            .sum()
    }
}

impl std::fmt::Debug for OpenedStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenedStores")
    }
}

/// Opens the store at `url`, and keeps it with the command's flags for the closing note.
pub fn open_and_remember(global: &GlobalArgs, url: &str, options: &StoreOptions) -> Result<Store> {
    let store = open_store(url, options)?;
    global.opened_stores.push(store.clone());
    Ok(store)
}

/// The repository URL from `--repo` / `S3MOVER_REPO`.
pub fn repo_url(global: &GlobalArgs) -> Result<&str> {
    global
        .repo
        .as_deref()
        .filter(|r| !r.is_empty())
        .context("no repository given: pass --repo URL or set S3MOVER_REPO")
}

/// Store settings from the global flags.
pub fn store_options(store: &StoreArgs, create: bool) -> StoreOptions {
    StoreOptions {
        create,
        ca_cert: store.ca_cert.clone(),
        insecure_skip_tls_verify: store.insecure_skip_tls_verify,
        ..StoreOptions::default()
    }
}

/// Opens the repository named by the global flags, with the password from its sources.
pub async fn open_repository(global: &GlobalArgs, store: &StoreArgs) -> Result<Repository> {
    unlock_repository(global, read_repository(global, store).await?).await
}

/// Reads the config of the repository named by the global flags, without unlocking it.
pub async fn read_repository(global: &GlobalArgs, store: &StoreArgs) -> Result<LockedRepository> {
    let url = repo_url(global)?;
    let store = open_and_remember(global, url, &store_options(store, false))?;
    Ok(LockedRepository::read(store).await?)
}

/// Unlocks a repository with the password from its sources.
pub async fn unlock_repository(
    global: &GlobalArgs,
    locked: LockedRepository,
) -> Result<Repository> {
    let password = crate::password::resolve(global.password_file.as_deref())?;
    let unlocked = locked
        .unlock(password.as_ref().map(|p| p.secret.as_str()))
        .await;
    match (unlocked, &password) {
        (Ok(repo), _) => Ok(repo),
        (
            Err(e @ s3mover_engine::Error::Crypto(s3mover_engine::CryptoError::WrongPassword(_))),
            Some(password),
        ) => Err(anyhow::Error::new(e).context(format!(
            "the password from {} does not open this repository",
            password.source
        ))),
        (Err(e), _) => Err(e.into()),
    }
}
