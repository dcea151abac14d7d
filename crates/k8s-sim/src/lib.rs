//! A simulated Kubernetes cluster for s3mover's tests: a real API server speaking Kubernetes
//! JSON over HTTPS on loopback, which `kubectl` and kube-rs use as they would a real one,
//! and the controllers a cluster runs ([`controllers`]).
//!
//! The API server ([`SimCluster`]) serves discovery, the kinds of [`resources::RESOURCES`]
//! (core, batch, storage, snapshot, CBT, RBAC, ...) with get, list, watch, create, update,
//! the four patch types, delete with propagation policies and deletecollection; status
//! subresources; resourceVersions and optimistic concurrency; finalizers and owner-reference
//! garbage collection; the pvc- and pv-protection finalizers; service-account tokens
//! (TokenRequest, TokenReview) and RBAC for the requests made with them. Faults can be
//! injected (failed requests, dropped watches, compaction) to test clients' recovery.

pub mod admission;
pub mod api;
pub mod auth;
pub mod controllers;
pub mod crds;
pub mod crud;
pub mod faults;
pub mod gc;
pub mod meta;
pub mod openapi;
pub mod pages;
pub mod patch;
pub mod proto;
pub mod rbac;
pub mod resources;
pub mod reviews;
pub mod selector;
pub mod server;
pub mod status;
pub mod store;
pub mod table;
pub mod typed;
pub mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

pub use api::LogSource;
pub use auth::UserInfo;
pub use faults::Fault;
pub use status::ApiError;

/// A CSI driver the simulated cluster has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverOptions {
    /// The driver name (`hostpath.csi.k8s.io`).
    pub name: String,
    /// Whether the driver offers Changed Block Tracking (a SnapshotMetadataService).
    pub cbt: bool,
}

/// How to start a simulated cluster.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Where the cluster keeps its files (volume image files and the like).
    pub state_dir: PathBuf,
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The CSI drivers.
    pub drivers: Vec<DriverOptions>,
    /// Names of the nodes.
    pub nodes: Vec<String>,
    /// Whether to start the controllers and kubelets ([`controllers::start_all`]).
    pub run_controllers: bool,
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_interval: Duration,
    /// How many changes watches can resume from before `410 Expired`.
    pub watch_history: usize,
    /// The controllers', kubelets' and CSI driver's settings (images, switches for failures).
    pub controllers: controllers::ControllerOptions,
}

impl SimOptions {
    /// Defaults: loopback, one node, the hostpath driver with CBT, controllers running.
    pub fn new(state_dir: impl Into<PathBuf>) -> SimOptions {
        SimOptions {
            state_dir: state_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            drivers: vec![DriverOptions {
                name: "hostpath.csi.k8s.io".into(),
                cbt: true,
            }],
            nodes: vec!["sim-node-1".into()],
            run_controllers: true,
            bookmark_interval: Duration::from_secs(5),
            watch_history: 10_000,
            controllers: controllers::ControllerOptions::default(),
        }
    }

    /// Without the controllers: the API server and its control-plane loops only.
    pub fn api_only(state_dir: impl Into<PathBuf>) -> SimOptions {
        SimOptions {
            run_controllers: false,
            ..SimOptions::new(state_dir)
        }
    }
}

/// Why a simulated cluster could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The certificates could not be made.
    #[error("generating certificates: {0}")]
    Certs(String),
    /// The server could not start.
    #[error(transparent)]
    Serve(#[from] server::ServeError),
    /// A client for the server could not be built.
    #[error("building a client: {0}")]
    Client(String),
    /// The API server refused a call.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A running simulated cluster; its tasks stop when it is shut down or dropped.
pub struct SimCluster {
    state: Arc<api::ApiState>,
    url: String,
    opts: SimOptions,
    client: kube::Client,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

fn random_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn seed(state: &api::ApiState) -> Result<(), ApiError> {
    let find = |g: &str, v: &str, p: &str| resources::find(g, v, p).expect("served kind");
    let ns = find("", "v1", "namespaces");
    let crd = find("apiextensions.k8s.io", "v1", "customresourcedefinitions");
    let mut objects: Vec<(usize, Value)> =
        ["default", "kube-system", "kube-public", "kube-node-lease"]
            .iter()
            .map(|n| (ns, json!({"metadata": {"name": n}})))
            .collect();
    objects.extend(crds::installed().into_iter().map(|c| (crd, c)));
    for obj in rbac::bootstrap_objects() {
        let kind = obj["kind"].as_str().unwrap_or("");
        let res = resources::find_kind("rbac.authorization.k8s.io", kind).expect("RBAC kind");
        objects.push((res, obj));
    }
    state.store.write(|txn| {
        for (res, obj) in objects {
            crud::create(txn, res, "", obj, &state.ca_pem)?;
        }
        Ok(())
    })
}

impl SimCluster {
    /// Starts the API server (HTTPS with a fresh CA), its control-plane loops and, if asked,
    /// the controllers.
    pub async fn start(opts: SimOptions) -> Result<SimCluster, SimError> {
        let certs = s3mover_cbt_testserver::certs::generate(&[
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ])
        .map_err(|e| SimError::Certs(e.to_string()))?;
        let acceptor = server::acceptor(&certs.cert_pem, &certs.key_pem)?;
        let listener = server::bind(opts.listen).await?;
        let addr = listener.local_addr().map_err(|source| SimError::Io {
            path: PathBuf::from(opts.listen.to_string()),
            source,
        })?;
        let address = addr.to_string();
        let state = Arc::new(api::ApiState {
            store: Arc::new(store::Store::new(opts.watch_history)),
            issuer: auth::TokenIssuer::new(),
            faults: faults::Faults::default(),
            admin_token: random_token(),
            ca_pem: certs.ca_pem.clone(),
            address: address.clone(),
            drop_watches: tokio::sync::watch::channel(0).0,
            bookmark_interval: opts.bookmark_interval,
            logs: RwLock::new(None),
            state_dir: opts.state_dir.clone(),
            pages: pages::Pages::default(),
        });
        seed(&state)?;
        let url = format!("https://{address}");
        let mut tasks = vec![
            tokio::spawn(server::serve(listener, acceptor, state.clone())),
            tokio::spawn(gc::run(state.store.clone())),
        ];
        let client = build_client(&kubeconfig(
            &url,
            &state.ca_pem,
            &state.admin_token,
            "default",
            "admin",
        ))
        .await?;
        if opts.run_controllers {
            let mut copts = opts.clone();
            copts.controllers.api_server = Some(addr);
            tasks.extend(controllers::start_all(client.clone(), &copts).await);
        }
        Ok(SimCluster {
            state,
            url,
            opts,
            client,
            tasks: Mutex::new(tasks),
        })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.state.ca_pem
    }

    /// The admin bearer token (RBAC does not apply to it).
    pub fn admin_token(&self) -> &str {
        &self.state.admin_token
    }

    /// The options the cluster was started with.
    pub fn options(&self) -> &SimOptions {
        &self.opts
    }

    /// An admin client.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A client that authenticates with `token`.
    pub async fn client_for_token(&self, token: &str) -> Result<kube::Client, SimError> {
        build_client(&kubeconfig(
            &self.url,
            self.ca_pem(),
            token,
            "default",
            "token-user",
        ))
        .await
    }

    /// Writes an admin kubeconfig (one cluster, user and context, `namespace` as the
    /// context's namespace) that `kubectl` and kube-rs read.
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) -> Result<(), SimError> {
        self.write_kubeconfig_for_token(path, namespace, self.admin_token())
    }

    /// Writes a kubeconfig that authenticates with `token` (a service account's).
    pub fn write_kubeconfig_for_token(
        &self,
        path: &Path,
        namespace: &str,
        token: &str,
    ) -> Result<(), SimError> {
        let user = if token == self.admin_token() {
            "admin"
        } else {
            "token-user"
        };
        let text = serde_json::to_string_pretty(&kubeconfig(
            &self.url,
            self.ca_pem(),
            token,
            namespace,
            user,
        ))
        .unwrap_or_default();
        std::fs::write(path, text).map_err(|source| SimError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Registers a task to be stopped with the cluster.
    pub fn spawn_controller<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.lock_tasks().push(tokio::spawn(fut));
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A TokenRequest: a token for service account `namespace/name` with `audiences` (the
    /// API server's own when empty), valid `ttl`.
    pub fn create_token(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[&str],
        ttl: Duration,
    ) -> Result<String, SimError> {
        let aud = audiences.iter().map(|s| s.to_string()).collect();
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
        Ok(reviews::issue_token(&self.state, namespace, name, aud, ttl, None)?.0)
    }

    /// A TokenReview: who `token` authenticates as for `audiences` (the API server's own
    /// when empty), or why not.
    pub fn review_token(&self, token: &str, audiences: &[&str]) -> Result<UserInfo, String> {
        let aud: Vec<String> = audiences.iter().map(|s| s.to_string()).collect();
        let status = reviews::token_review_status(&self.state, token, &aud);
        if status["authenticated"] != true {
            return Err(status["error"]
                .as_str()
                .unwrap_or("not authenticated")
                .to_string());
        }
        let u = &status["user"];
        Ok(UserInfo {
            username: u["username"].as_str().unwrap_or("").into(),
            uid: u["uid"].as_str().unwrap_or("").into(),
            groups: meta::string_list(&u["groups"]),
            extra: u["extra"].clone(),
        })
    }

    /// Makes the next `count` requests whose path contains `path_contains` fail with
    /// `status`.
    pub fn fail_next(&self, path_contains: &str, status: u16, count: u32) {
        self.inject(Fault {
            path_contains: path_contains.into(),
            method: None,
            watch: None,
            status,
            count,
        });
    }

    /// Arms a fault.
    pub fn inject(&self, fault: Fault) {
        self.state.faults.arm(fault);
    }

    /// Ends every open watch (clients must re-watch).
    pub fn drop_watches(&self) {
        self.state.drop_watches.send_modify(|n| *n += 1);
    }

    /// Forgets the change history: a watch from any earlier resourceVersion gets 410.
    pub fn compact(&self) {
        self.state.store.compact();
    }

    /// Where `pods/log` reads come from, instead of the files at [`api::pod_log_path`].
    pub fn set_log_source(&self, source: LogSource) {
        *self.state.logs.write().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// The object store (for control loops that run inside the API server).
    pub fn store(&self) -> &Arc<store::Store> {
        &self.state.store
    }

    /// Stops the server and every task.
    pub async fn shutdown(self) {
        let tasks = std::mem::take(&mut *self.lock_tasks());
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        for t in self.lock_tasks().iter() {
            t.abort();
        }
    }
}

/// A kubeconfig document with one cluster, user and context.
fn kubeconfig(url: &str, ca_pem: &str, token: &str, namespace: &str, user: &str) -> Value {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "s3mover-sim", "cluster": {"server": url, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "s3mover-sim", "context": {"cluster": "s3mover-sim", "user": user, "namespace": namespace}}],
        "current-context": "s3mover-sim",
        "preferences": {},
    })
}

async fn build_client(doc: &Value) -> Result<kube::Client, SimError> {
    let kc: kube::config::Kubeconfig =
        serde_json::from_value(doc.clone()).map_err(|e| SimError::Client(e.to_string()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| SimError::Client(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| SimError::Client(e.to_string()))
}
