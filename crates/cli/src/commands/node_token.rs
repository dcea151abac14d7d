//! `s3mover cluster node-token backup|check`: the k3s server token, which a restore of an
//! etcd snapshot needs, kept off the cluster — in a Kubernetes Secret or in a secret manager
//! through a command. The token reaches the command on its stdin and in its environment
//! (`S3MOVER_NODE_TOKEN`), never on a command line, where any user of the machine could read
//! it (`ps`, `/proc/PID/cmdline`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use s3mover_k8s::Cluster;
use zeroize::Zeroizing;

use crate::cli::{GlobalArgs, OutputFormat, EXIT_FAILED, EXIT_OK};
use crate::cli_cluster::{NodeTokenBackupArgs, NodeTokenCommand, TokenStoreArgs};
use crate::cli_k8s::ClusterArgs as KubeArgs;
use crate::output::print_json;

/// The Secret key that holds the token.
const TOKEN_KEY: &str = "token";
/// Annotation with the time the copy was last written.
const UPDATED_AT: &str = "s3mover.io/updated-at";

pub async fn run(global: &GlobalArgs, kube: &KubeArgs, command: &NodeTokenCommand) -> Result<u8> {
    match command {
        NodeTokenCommand::Backup(args) => backup(global, kube, args).await,
        NodeTokenCommand::Check(args) => {
            let status = check(kube, &args.store, args.token_file.as_deref()).await?;
            if global.output == OutputFormat::Json {
                print_json(&status)?;
            } else if !global.quiet {
                println!("{}", status.message);
            }
            Ok(if status.ok { EXIT_OK } else { EXIT_FAILED })
        }
    }
}

/// Reads the token file: one line, errors that say what to do.
pub fn read_token(path: &Path) -> Result<Zeroizing<String>> {
    let text = match std::fs::read(path) {
        Ok(bytes) => Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "token file {} does not exist: run on a k3s server node, or name the file with --token-file",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "cannot read token file {}: permission denied (it is readable by root only on a k3s server)",
            path.display()
        ),
        Err(e) => bail!("cannot read token file {}: {e}", path.display()),
    };
    let token = Zeroizing::new(text.trim().to_string());
    if token.is_empty() {
        bail!(
            "token file {} is empty: there is no token to back up",
            path.display()
        );
    }
    Ok(token)
}

/// `NAMESPACE/NAME`.
fn split_secret(text: &str) -> Result<(&str, &str)> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns, name))
        }
        _ => Err(s3mover_engine::Error::Invalid(format!(
            "--to-secret {text:?}: give NAMESPACE/NAME"
        ))
        .into()),
    }
}

fn one_store(store: &TokenStoreArgs) -> Result<()> {
    if store.secret.is_none() && store.secret_command.is_none() {
        return Err(s3mover_engine::Error::Invalid(
            "say where the token goes: --to-secret NAMESPACE/NAME or --secret-command CMD".into(),
        )
        .into());
    }
    if let Some(secret) = &store.secret {
        split_secret(secret)?;
    }
    Ok(())
}

async fn backup(global: &GlobalArgs, kube: &KubeArgs, args: &NodeTokenBackupArgs) -> Result<u8> {
    one_store(&args.store)?;
    let token = read_token(&args.token_file)?;
    let now = s3mover_engine::time_util::format_rfc3339(time::OffsetDateTime::now_utc());
    let (action, target) = if let Some(secret) = &args.store.secret {
        let (ns, name) = split_secret(secret)?;
        let cluster = Cluster::connect(&kube.options()).await?;
        let action = write_secret(&cluster, ns, name, &token, &now).await?;
        (action, format!("Secret {ns}/{name}"))
    } else {
        let command = args.store.secret_command.as_deref().unwrap_or_default();
        run_command(command, "backup", Some(token.as_str()))?;
        ("stored".to_string(), "the secret command".to_string())
    };
    if global.output == OutputFormat::Json {
        print_json(&serde_json::json!({
            "success": true, "action": action, "target": target, "timestamp": now,
        }))?;
    } else if !global.quiet {
        println!("node token {action} in {target}");
    }
    Ok(EXIT_OK)
}

async fn write_secret(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    token: &str,
    now: &str,
) -> Result<String> {
    let api: Api<Secret> = Api::namespaced(cluster.client.clone(), ns);
    let existing = api
        .get_opt(name)
        .await
        .map_err(|e| s3mover_k8s::Error::api(format!("cannot read Secret {ns}/{name}"), e))?;
    let data = BTreeMap::from([(TOKEN_KEY.to_string(), ByteString(token.as_bytes().to_vec()))]);
    match existing {
        Some(mut secret) => {
            secret.data = Some(data);
            secret.string_data = None;
            secret
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(UPDATED_AT.into(), now.into());
            api.replace(name, &PostParams::default(), &secret)
                .await
                .map_err(|e| {
                    s3mover_k8s::Error::api(format!("cannot update Secret {ns}/{name}"), e)
                })?;
            Ok("updated".into())
        }
        None => {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(ns.into()),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_string(),
                        "s3mover".to_string(),
                    )])),
                    annotations: Some(BTreeMap::from([(UPDATED_AT.to_string(), now.to_string())])),
                    ..ObjectMeta::default()
                },
                data: Some(data),
                type_: Some("Opaque".into()),
                ..Secret::default()
            };
            api.create(&PostParams::default(), &secret)
                .await
                .map_err(|e| {
                    s3mover_k8s::Error::api(format!("cannot create Secret {ns}/{name}"), e)
                })?;
            Ok("created".into())
        }
    }
}

/// Runs the secret command through `sh -c`, with the token (if any) on stdin and in
/// `S3MOVER_NODE_TOKEN`. Its stdout is returned (a secret manager may echo the value: it is
/// never printed); a failure is one line, with the token masked out of it.
fn run_command(command: &str, action: &str, token: Option<&str>) -> Result<String> {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .env("S3MOVER_NODE_TOKEN_ACTION", action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match token {
        Some(t) => cmd.env("S3MOVER_NODE_TOKEN", t),
        None => cmd.env_remove("S3MOVER_NODE_TOKEN"),
    };
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start the secret command {command:?}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        if let Some(t) = token {
            // A command that does not read its stdin closes it: not an error.
            let _ = stdin.write_all(t.as_bytes());
        }
    }
    let out = child
        .wait_with_output()
        .context("waiting for the secret command")?;
    let mask = |text: &str| match token {
        Some(t) if !t.is_empty() => text.replace(t, "***"),
        _ => text.to_string(),
    };
    if !out.status.success() {
        let stderr = mask(&String::from_utf8_lossy(&out.stderr));
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        bail!(
            "the secret command failed ({}){}",
            out.status,
            if last.is_empty() {
                String::new()
            } else {
                format!(": {}", last.trim())
            }
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What a node-token check found.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenStatus {
    /// The copy exists (and, with a token file, is not older than it).
    pub ok: bool,
    /// A copy exists.
    pub exists: bool,
    /// When the copy was last written, if known.
    pub updated_at: Option<String>,
    /// Its age in seconds, if known.
    pub age_seconds: Option<i64>,
    /// One line for people.
    pub message: String,
}

/// Checks the token copy: exists, and not older than `token_file` when given.
pub async fn check(
    kube: &KubeArgs,
    store: &TokenStoreArgs,
    token_file: Option<&Path>,
) -> Result<TokenStatus> {
    one_store(store)?;
    let (exists, updated_at, place) = if let Some(secret) = &store.secret {
        let (ns, name) = split_secret(secret)?;
        let cluster = Cluster::connect(&kube.options()).await?;
        let api: Api<Secret> = Api::namespaced(cluster.client.clone(), ns);
        let found = api
            .get_opt(name)
            .await
            .map_err(|e| s3mover_k8s::Error::api(format!("cannot read Secret {ns}/{name}"), e))?;
        let exists = found.as_ref().is_some_and(|s| {
            s.data
                .as_ref()
                .and_then(|d| d.get(TOKEN_KEY))
                .is_some_and(|v| !v.0.is_empty())
        });
        let updated = found.and_then(|s| {
            s.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(UPDATED_AT).cloned())
                .or_else(|| {
                    // Serialized, a Time is its RFC 3339 text.
                    serde_json::to_value(s.metadata.creation_timestamp?)
                        .ok()?
                        .as_str()
                        .map(str::to_string)
                })
        });
        (exists, updated, format!("Secret {ns}/{name}"))
    } else {
        let command = store.secret_command.as_deref().unwrap_or_default();
        match run_command(command, "check", None) {
            Ok(stdout) => {
                let value: serde_json::Value = serde_json::from_str(stdout.trim()).map_err(|e| {
                    anyhow::anyhow!("the secret command's output is not JSON ({e}); print {{\"exists\": true, \"updatedAt\": \"RFC 3339\"}}")
                })?;
                let exists = value["exists"].as_bool().unwrap_or(true);
                let updated = ["updatedAt", "revisionDate", "creationDate"]
                    .iter()
                    .find_map(|k| value[*k].as_str().map(str::to_string));
                (exists, updated, "the secret command".to_string())
            }
            Err(e) => {
                tracing::info!("{e}");
                (false, None, "the secret command".to_string())
            }
        }
    };
    let now = time::OffsetDateTime::now_utc();
    let updated_time = updated_at
        .as_deref()
        .and_then(s3mover_engine::time_util::parse_rfc3339);
    let age_seconds = updated_time.map(|t| (now - t).whole_seconds().max(0));
    if !exists {
        return Ok(TokenStatus {
            ok: false,
            exists,
            updated_at,
            age_seconds,
            message: format!(
                "no node token copy in {place}; run `s3mover cluster node-token backup`"
            ),
        });
    }
    if let Some(file) = token_file {
        let modified = std::fs::metadata(file)
            .and_then(|m| m.modified())
            .with_context(|| format!("cannot read token file {}", file.display()))?;
        let modified = time::OffsetDateTime::from(modified);
        match updated_time {
            Some(t) if t >= modified.replace_nanosecond(0).unwrap_or(modified) => {}
            _ => {
                return Ok(TokenStatus {
                    ok: false,
                    exists,
                    updated_at: updated_at.clone(),
                    age_seconds,
                    message: format!(
                        "the node token copy in {place} ({}) is older than {} ({}); run `s3mover cluster node-token backup`",
                        updated_at.as_deref().unwrap_or("time unknown"),
                        file.display(),
                        s3mover_engine::time_util::format_rfc3339(modified)
                    ),
                })
            }
        }
    }
    Ok(TokenStatus {
        ok: true,
        exists,
        updated_at: updated_at.clone(),
        age_seconds,
        message: format!(
            "node token copy in {place}, updated {}",
            updated_at.as_deref().unwrap_or("(time unknown)")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        assert_eq!(
            split_secret("kube-system/token").ok(),
            Some(("kube-system", "token"))
        );
        for bad in ["token", "/x", "x/", "a/b/c"] {
            assert!(split_secret(bad).is_err(), "{bad}");
        }
    }
}
