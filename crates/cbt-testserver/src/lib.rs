//! Conformance test server for the SnapshotMetadata APIs, for s3mover's tests and benchmarks.
//!
//! One [`TestServer`] serves the Kubernetes flavour (`snapshotmetadata.SnapshotMetadata`) over
//! real TLS on loopback, with a CA and certificate generated at start-up, and the CSI flavour
//! (`csi.v1.SnapshotMetadata`) on a real unix socket. Answers are computed from image files the
//! way the hostpath driver computes them ([`image`]), and driver and sidecar behaviour is
//! switchable at run time ([`Quirks`]): block type, default and capped `max_results`, streams
//! aborted every N messages, streams ended after one message, OUT_OF_RANGE at the end, token
//! audience and RBAC checks with the sidecar's status codes, injected protocol violations.

pub mod certs;
pub mod extents;
pub mod image;
pub mod service;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use s3mover_cbt::proto::{csi, k8s};
use tonic::transport::{Identity, Server, ServerTlsConfig};

pub use certs::TestCerts;
pub use image::Source;
pub use service::{Backend, BackendFuture, Counters, Inject, Quirks, Snapshot, State, TokenGrant};

/// A running test server; stopped when dropped.
pub struct TestServer {
    state: Arc<State>,
    address: String,
    socket: PathBuf,
    ca_file: PathBuf,
    certs: TestCerts,
    dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TestServer {
    /// Starts both flavours on their own runtime thread: TLS on `127.0.0.1:<free port>` (the
    /// certificate is valid for `127.0.0.1` and `localhost`) and a unix socket in a temporary
    /// directory, which also holds `ca.pem`.
    pub fn start(quirks: Quirks) -> io::Result<TestServer> {
        Self::start_on("127.0.0.1:0", quirks)
    }

    /// Like [`TestServer::start`] with a chosen TCP bind address.
    pub fn start_on(bind: &str, quirks: Quirks) -> io::Result<TestServer> {
        let certs = certs::generate(&["localhost", "127.0.0.1", "csi-snapshot-metadata.default"])
            .map_err(io::Error::other)?;
        let dir = tempfile::Builder::new()
            .prefix("cbt-testserver")
            .tempdir()?;
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &certs.ca_pem)?;
        let socket = dir.path().join("csi.sock");
        let tcp = std::net::TcpListener::bind(bind)?;
        tcp.set_nonblocking(true)?;
        let address = tcp.local_addr()?.to_string();
        let unix = std::os::unix::net::UnixListener::bind(&socket)?;
        unix.set_nonblocking(true)?;

        let state = Arc::new(State {
            quirks: std::sync::Mutex::new(quirks),
            ..State::default()
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let st = state.clone();
        let identity = Identity::from_pem(&certs.cert_pem, &certs.key_pem);
        let thread = std::thread::Builder::new()
            .name("cbt-testserver".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listeners = (|| {
                        Ok::<_, io::Error>((
                            tokio::net::TcpListener::from_std(tcp)?,
                            tokio::net::UnixListener::from_std(unix)?,
                        ))
                    })();
                    let (tcp, unix) = match listeners {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let tls = match Server::builder()
                        .tls_config(ServerTlsConfig::new().identity(identity))
                    {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = ready_tx.send(Err(io::Error::other(e)));
                            return;
                        }
                    };
                    let mut tls = tls;
                    let k = tls
                        .add_service(k8s::snapshot_metadata_server::SnapshotMetadataServer::new(
                            service::K8sService(st.clone()),
                        ))
                        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(tcp));
                    let c = Server::builder()
                        .add_service(csi::snapshot_metadata_server::SnapshotMetadataServer::new(
                            service::CsiService(st.clone()),
                        ))
                        .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(unix));
                    let _ = ready_tx.send(Ok(()));
                    tokio::select! {
                        _ = rx => {}
                        r = async { tokio::join!(k, c) } => {
                            if let (Err(e), _) | (_, Err(e)) = r {
                                tracing::error!("test server stopped: {e}");
                            }
                        }
                    }
                });
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("test server thread died"))??;
        Ok(TestServer {
            state,
            address,
            socket,
            ca_file,
            certs,
            dir,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// `host:port` of the Kubernetes flavour (TLS).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Path of the CSI flavour's unix socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Path of the CA bundle (PEM) that signed the server certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The generated certificates.
    pub fn certs(&self) -> &TestCerts {
        &self.certs
    }

    /// A temporary directory that lives as long as the server (for images, tokens, outputs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces the quirks; calls that are already streaming keep the old ones.
    pub fn set_quirks(&self, q: Quirks) {
        *lock(&self.state.quirks) = q;
    }

    /// Changes the quirks in place.
    pub fn update_quirks(&self, f: impl FnOnce(&mut Quirks)) {
        f(&mut lock(&self.state.quirks));
    }

    /// Registers a snapshot backed by an image file, with change tracking.
    pub fn add_snapshot(&self, namespace: &str, name: &str, handle: &str, image: &Path) {
        self.add(Snapshot {
            namespace: namespace.into(),
            name: name.into(),
            handle: handle.into(),
            source: Source::Image(image.to_path_buf()),
            change_tracking: true,
        });
    }

    /// Registers any snapshot.
    pub fn add(&self, s: Snapshot) {
        lock(&self.state.snapshots).push(s);
    }

    /// Makes `token` valid for the configured audience and `get volumesnapshots` in `namespaces`.
    pub fn grant(&self, token: &str, namespaces: &[&str]) {
        let audience = lock(&self.state.quirks).audience.clone();
        self.grant_token(
            token,
            TokenGrant {
                audiences: vec![audience],
                namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
                uses_left: None,
            },
        );
    }

    /// Registers a token with full control over its audiences, RBAC and lifetime.
    pub fn grant_token(&self, token: &str, grant: TokenGrant) {
        lock(&self.state.tokens).insert(token.into(), grant);
    }

    /// Hands token checks and snapshot lookups to `backend` instead of the server's own tables
    /// ([`TestServer::grant`], [`TestServer::add`]).
    pub fn set_backend(&self, backend: std::sync::Arc<dyn Backend>) {
        *lock(&self.state.backend) = Some(backend);
    }

    /// Counters (calls, messages, aborts).
    pub fn counters(&self) -> &Counters {
        &self.state.counters
    }

    /// RPCs received so far.
    pub fn calls(&self) -> u64 {
        self.state.counters.calls.load(Ordering::Relaxed)
    }

    /// Starting offsets of the calls that reached the driver part, in order.
    pub fn offsets(&self) -> Vec<i64> {
        lock(&self.state.counters.offsets).clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
