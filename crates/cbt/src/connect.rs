//! Connecting to a SnapshotMetadata service: the Kubernetes flavour over TLS, or the CSI flavour
//! over a unix socket.
//!
//! Kubernetes flavour: the sidecar serves TLS with a certificate issued by the CA bundle from
//! the SnapshotMetadataService CR (`caCert`, base64 of PEM there); the TLS server name is the
//! host part of `spec.address`, verbatim, and the token goes into the `security_token` field of
//! every request. CSI flavour: plain HTTP/2 over the driver's unix socket, no token.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Uri};

use crate::error::chain;
use crate::proto::{csi, k8s};
use crate::{CbtError, TokenSource};

/// Largest response message accepted (a message of 10,000 ranges is about 200 KB).
const MAX_MESSAGE: usize = 64 << 20;

/// The Kubernetes-facing service (external-snapshot-metadata sidecar).
#[derive(Clone)]
pub struct KubernetesEndpoint {
    /// `host:port` as in the CR's `spec.address` (no scheme).
    pub address: String,
    /// The CA bundle as PEM text (or base64 of PEM, as stored in the CR).
    pub ca_cert: Vec<u8>,
    /// Namespace of the VolumeSnapshot(s).
    pub namespace: String,
    /// Where the audience-scoped token comes from.
    pub token: Arc<dyn TokenSource>,
}

/// Which service to talk to.
#[derive(Clone)]
pub enum Endpoint {
    /// Kubernetes flavour over TLS; snapshots are VolumeSnapshot names, the base is a CSI handle.
    Kubernetes(KubernetesEndpoint),
    /// CSI flavour on a driver's unix socket; snapshots and the base are CSI snapshot ids.
    Csi {
        /// Path of the driver's socket (`unix://` prefix allowed).
        socket: PathBuf,
        /// Secrets passed in the `secrets` field (the sidecar would inject the snapshotter secret).
        secrets: HashMap<String, String>,
    },
}

impl Endpoint {
    /// A short description for messages: the address or socket path.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Kubernetes(k) => k.address.clone(),
            Endpoint::Csi { socket, .. } => format!("unix:{}", socket.display()),
        }
    }
}

/// A connected client of either flavour. Cloning is cheap and shares the connection.
#[derive(Clone)]
pub struct Client {
    pub(crate) flavour: Flavour,
    pub(crate) target: String,
}

#[derive(Clone)]
pub(crate) enum Flavour {
    K8s {
        rpc: k8s::snapshot_metadata_client::SnapshotMetadataClient<Channel>,
        namespace: String,
        token: Arc<dyn TokenSource>,
    },
    Csi {
        rpc: csi::snapshot_metadata_client::SnapshotMetadataClient<Channel>,
        secrets: HashMap<String, String>,
    },
}

/// Splits `host:port` (or `[v6]:port`) and returns the host as used for TLS (no brackets).
pub fn tls_server_name(address: &str) -> Result<String, CbtError> {
    let bad = || {
        CbtError::Usage(format!(
            "--address {address:?} must be HOST:PORT (as in the SnapshotMetadataService CR's spec.address, without a scheme)"
        ))
    };
    let rest = address.trim();
    if let Some(v6) = rest.strip_prefix('[') {
        let (host, tail) = v6.split_once(']').ok_or_else(bad)?;
        let port = tail.strip_prefix(':').ok_or_else(bad)?;
        port.parse::<u16>().map_err(|_| bad())?;
        return Ok(host.to_string());
    }
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains(':') || host.contains('/') {
        return Err(bad());
    }
    port.parse::<u16>().map_err(|_| bad())?;
    Ok(host.to_string())
}

/// Accepts PEM text, or base64 of PEM (the CR's `caCert` as stored in JSON/YAML).
pub fn decode_ca_pem(raw: &[u8], what: &str) -> Result<Vec<u8>, CbtError> {
    const MARK: &[u8] = b"-----BEGIN CERTIFICATE-----";
    if raw.windows(MARK.len()).any(|w| w == MARK) {
        return Ok(raw.to_vec());
    }
    let compact: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(&compact) {
        if decoded.windows(MARK.len()).any(|w| w == MARK) {
            return Ok(decoded);
        }
    }
    Err(CbtError::BadCaCert(what.to_string()))
}

impl Client {
    /// The address or socket this client talks to.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Connects (TCP + TLS handshake, or the unix socket) and fails early with a clear message.
    pub async fn connect(endpoint: &Endpoint) -> Result<Client, CbtError> {
        let target = endpoint.describe();
        let connect_err = |e: &dyn std::error::Error| CbtError::Connect {
            target: target.clone(),
            detail: chain(e),
        };
        let flavour = match endpoint {
            Endpoint::Kubernetes(k) => {
                let host = tls_server_name(&k.address)?;
                let pem = decode_ca_pem(&k.ca_cert, "bundle")?;
                let tls = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(pem))
                    .domain_name(host);
                let uri = format!("https://{}", k.address.trim());
                let channel = Channel::from_shared(uri)
                    .map_err(|e| connect_err(&e))?
                    .tls_config(tls)
                    .map_err(|e| connect_err(&e))?
                    .connect_timeout(Duration::from_secs(30))
                    .connect()
                    .await
                    .map_err(|e| connect_err(&e))?;
                Flavour::K8s {
                    rpc: k8s::snapshot_metadata_client::SnapshotMetadataClient::new(channel)
                        .max_decoding_message_size(MAX_MESSAGE),
                    namespace: k.namespace.clone(),
                    token: k.token.clone(),
                }
            }
            Endpoint::Csi { socket, secrets } => {
                let path = match socket.to_str().and_then(|s| s.strip_prefix("unix://")) {
                    Some(p) => PathBuf::from(p),
                    None => socket.clone(),
                };
                let channel = tonic::transport::Endpoint::from_static("http://[::]:50051")
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            let s = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                        }
                    }))
                    .await
                    .map_err(|e| connect_err(&e))?;
                Flavour::Csi {
                    rpc: csi::snapshot_metadata_client::SnapshotMetadataClient::new(channel)
                        .max_decoding_message_size(MAX_MESSAGE),
                    secrets: secrets.clone(),
                }
            }
        };
        Ok(Client { flavour, target })
    }
}
