//! A Kubernetes client the way kubectl finds one: `--kubeconfig`, else `$KUBECONFIG`, else
//! `~/.kube/config`, with `--context` choosing the context; when there is no kubeconfig at
//! all, the in-cluster service-account configuration.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::{Error, Result};

/// How to find the cluster.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// A kubeconfig file; `None`: `$KUBECONFIG`, then `~/.kube/config`, then in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use instead of the current one.
    pub context: Option<String>,
}

/// A connected cluster: the client and the namespace the configuration names by default.
#[derive(Clone)]
pub struct Cluster {
    /// The API client.
    pub client: Client,
    /// The context's namespace (or the pod's, in-cluster); `default` when none is named.
    pub default_namespace: String,
}

impl Cluster {
    /// Connects as kubectl would. A kubeconfig that exists but is broken is an error, never a
    /// silent switch to the in-cluster configuration.
    pub async fn connect(options: &ClientOptions) -> Result<Cluster> {
        let config = load_config(options).await?;
        let default_namespace = config.default_namespace.clone();
        let client = Client::try_from(config).map_err(|e| {
            Error::Config(format!(
                "cannot build a client: {}",
                crate::error::chain(&e)
            ))
        })?;
        Ok(Cluster {
            client,
            default_namespace,
        })
    }
}

async fn load_config(options: &ClientOptions) -> Result<Config> {
    let kubeconfig_options = KubeConfigOptions {
        context: options.context.clone(),
        cluster: None,
        user: None,
    };
    let from_file = |path: &PathBuf| {
        Kubeconfig::read_from(path).map_err(|e| {
            Error::Config(format!(
                "cannot read kubeconfig {}: {}",
                path.display(),
                crate::error::chain(&e)
            ))
        })
    };
    let kubeconfig = match &options.kubeconfig {
        Some(path) => Some(from_file(path)?),
        None => match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            Some(_) => Some(Kubeconfig::read().map_err(|e| {
                Error::Config(format!(
                    "cannot read the kubeconfig named by KUBECONFIG: {}",
                    crate::error::chain(&e)
                ))
            })?),
            None => {
                let home = std::env::var_os("HOME").map(PathBuf::from);
                match home.map(|h| h.join(".kube/config")).filter(|p| p.exists()) {
                    Some(path) => Some(from_file(&path)?),
                    None => None,
                }
            }
        },
    };
    match kubeconfig {
        Some(kubeconfig) => Config::from_custom_kubeconfig(kubeconfig, &kubeconfig_options)
            .await
            .map_err(|e| Error::Config(crate::error::chain(&e))),
        None => {
            if options.context.is_some() {
                return Err(Error::Config(
                    "--context needs a kubeconfig, and none was found (--kubeconfig, KUBECONFIG or ~/.kube/config)".into(),
                ));
            }
            Config::incluster().map_err(|e| {
                Error::Config(format!(
                    "no kubeconfig (--kubeconfig, KUBECONFIG or ~/.kube/config) and not inside a cluster: {}",
                    crate::error::chain(&e)
                ))
            })
        }
    }
}
