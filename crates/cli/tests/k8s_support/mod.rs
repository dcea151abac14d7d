//! A simulated cluster (crates/k8s-sim) set up the way a platform engineer sets up a real one
//! for s3mover: the mover image, a namespace with the repository Secret and the mover service
//! account (deploy/rbac/mover.yaml, applied with kubectl), and the `s3mover` binary run as the
//! orchestrator with a kubeconfig.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, PostParams};
use kube::Client;
use s3mover_k8s_sim::controllers::{ControllerOptions, ImageConfig};
use s3mover_k8s_sim::{SimCluster, SimOptions};

/// The mover image the tests use; the simulated kubelet runs the s3mover binary for it.
pub const IMAGE: &str = "s3mover:test";
/// The repository password.
pub const PASSWORD: &str = "k8s test password";
/// A guard against a hung test, not a performance limit.
pub const PATIENCE: Duration = Duration::from_secs(300);

/// `SKIPPED` outside CI, a failure in CI, when root or a host tool is missing.
pub fn require(test: &str) -> bool {
    let mut missing = Vec::new();
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root".to_string());
    }
    for tool in ["bwrap", "losetup", "kubectl"] {
        let found = std::env::var_os("PATH").is_some_and(|p| {
            std::env::split_paths(&p)
                .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
                .any(|d| d.join(tool).is_file())
        });
        if !found {
            missing.push(tool.to_string());
        }
    }
    if missing.is_empty() {
        return true;
    }
    let reason = format!("needs {}", missing.join(", "));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {reason} (CI must provide it: see .ci/run)");
    }
    println!("SKIPPED {test}: {reason}");
    false
}

/// A running simulated cluster with s3mover's repository.
pub struct K8s {
    pub sim: SimCluster,
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub repo: PathBuf,
    /// The orchestrator's kubeconfig when it runs with its RBAC role.
    pub orchestrator_kubeconfig: Option<PathBuf>,
    /// The simulated CSI driver's state directory (its `volumes/` hold the claims' images).
    pub driver_dir: PathBuf,
}

/// Starts a cluster whose controllers `tweak` configures, and initializes the repository.
pub async fn start(tweak: impl FnOnce(&mut ControllerOptions)) -> K8s {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut options = SimOptions::new(dir.path().join("cluster"));
    let mut controllers = ControllerOptions::default();
    controllers.images.insert(
        IMAGE.into(),
        ImageConfig::entrypoint(env!("CARGO_BIN_EXE_s3mover")),
    );
    controllers.job_backoff = Duration::from_millis(200);
    controllers.kubelet_backoff = Duration::from_millis(500);
    tweak(&mut controllers);
    options.controllers = controllers;
    let driver_dir = s3mover_k8s_sim::controllers::state_dir(&options);
    let sim = SimCluster::start(options)
        .await
        .expect("the simulated cluster starts");
    let client = sim.client();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, "default")
        .expect("kubeconfig");
    let repo = dir.path().join("repo");
    let k8s = K8s {
        sim,
        client,
        dir,
        kubeconfig,
        repo,
        orchestrator_kubeconfig: None,
        driver_dir,
    };
    init_repository(&k8s.repo);
    k8s
}

/// Creates a local repository at `path` (with a cheap key derivation).
pub fn init_repository(path: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_s3mover"))
        .args(["init", "--kdf-memory", "8M", "--kdf-passes", "1"])
        .env("S3MOVER_REPO", path)
        .env("S3MOVER_PASSWORD", PASSWORD)
        .output()
        .expect("s3mover init");
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The backups of a local repository, (id, volume), read directly.
pub fn repository_backups(repo: &Path) -> Vec<(String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_s3mover"))
        .args(["backups", "-o", "json"])
        .env("S3MOVER_REPO", repo)
        .env("S3MOVER_PASSWORD", PASSWORD)
        .output()
        .expect("s3mover backups");
    assert!(
        out.status.success(),
        "backups: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    rows.as_array()
        .expect("a list")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or_default().to_string(),
                r["volume"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

impl K8s {
    /// From now on the orchestrator runs as service account s3mover/s3mover bound to
    /// deploy/rbac/orchestrator.yaml, and nothing else (the test's own kubectl stays admin).
    pub fn use_orchestrator_role(&mut self) {
        let rbac = std::fs::read_to_string(repo_root().join("deploy/rbac/orchestrator.yaml"))
            .expect("deploy/rbac/orchestrator.yaml");
        self.kubectl(&["apply", "-f", "-"], Some(&rbac));
        let token = self
            .sim
            .create_token("s3mover", "s3mover", &[], Duration::from_secs(3600))
            .expect("token");
        let path = self.dir.path().join("orchestrator-kubeconfig");
        self.sim
            .write_kubeconfig_for_token(&path, "default", &token)
            .expect("kubeconfig");
        self.orchestrator_kubeconfig = Some(path);
    }

    /// Runs kubectl against the cluster with `input` on stdin.
    pub fn kubectl(&self, args: &[&str], input: Option<&str>) -> Output {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        if let Some(text) = input {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("kubectl stdin");
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// A namespace ready for backups: the repository Secret and the mover service account
    /// with its role (deploy/rbac/mover.yaml).
    pub fn namespace(&self, ns: &str) {
        self.kubectl(&["create", "namespace", ns], None);
        let mover = std::fs::read_to_string(repo_root().join("deploy/rbac/mover.yaml"))
            .expect("deploy/rbac/mover.yaml")
            .replace("namespace: default", &format!("namespace: {ns}"));
        self.kubectl(&["apply", "-f", "-"], Some(&mover));
        self.repo_secret(ns, &self.repo);
    }

    /// Runs `s3mover` as the orchestrator (kubeconfig, no repository settings of its own: it
    /// reads the Secret). Returns (exit code, stdout, stderr).
    pub fn s3mover(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.s3mover_command(args).output().expect("s3mover runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The `s3mover` command [`K8s::s3mover`] runs, to start it in the background.
    pub fn s3mover_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_s3mover"));
        command
            .args(args)
            .arg("--kubeconfig")
            .arg(
                self.orchestrator_kubeconfig
                    .as_ref()
                    .unwrap_or(&self.kubeconfig),
            )
            .env_remove("S3MOVER_REPO")
            .env_remove("S3MOVER_PASSWORD")
            .env("S3MOVER_MOVER_IMAGE", IMAGE);
        command
    }

    /// Runs a CronJob of namespace `ns` now, as an operator would (`kubectl create job
    /// --from=cronjob/…`), and waits for the Job to finish; its log. Panics if it fails.
    pub fn run_cronjob(&self, ns: &str, cronjob: &str, job: &str) -> String {
        let from = format!("--from=cronjob/{cronjob}");
        self.kubectl(&["create", "job", job, &from, "-n", ns], None);
        self.wait_job_log(ns, job)
    }

    /// Waits until Job `job` completes and returns its pods' log; panics with the log when it
    /// fails.
    pub fn wait_job_log(&self, ns: &str, job: &str) -> String {
        let start = Instant::now();
        loop {
            let out = self.kubectl(
                &[
                    "get",
                    "job",
                    job,
                    "-n",
                    ns,
                    "-o",
                    "jsonpath={range .status.conditions[?(@.status==\"True\")]}{.type} {end}",
                ],
                None,
            );
            let conditions = String::from_utf8_lossy(&out.stdout).into_owned();
            let selector = format!("job-name={job}");
            let log = || {
                let out = self.kubectl(&["logs", "-n", ns, "-l", &selector, "--tail=-1"], None);
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            if conditions.split_whitespace().any(|c| c == "Complete") {
                return log();
            }
            if conditions.split_whitespace().any(|c| c == "Failed") {
                panic!("job {job} failed: {conditions}\n{}", log());
            }
            assert!(start.elapsed() < PATIENCE, "job {job} never finished");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The operator's part of a deployment (deploy/): a repository the CronJobs' pods can
    /// open (a local one outside /tmp: the simulated kubelet's containers see the host's files,
    /// except under /tmp, where the CronJobs mount an emptyDir), its `s3mover-repo` Secret in
    /// s3mover-system, and namespace `app_ns` with the mover identity and the same Secret.
    /// Returns the directory that holds it (removed when dropped) and the repository's path.
    pub fn deployed_repository(&self, app_ns: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("repository dir");
        let repo = dir.path().join("repo");
        init_repository(&repo);
        self.kubectl(&["create", "namespace", app_ns], None);
        let mover = std::fs::read_to_string(repo_root().join("deploy/rbac/mover.yaml"))
            .expect("deploy/rbac/mover.yaml")
            .replace("namespace: default", &format!("namespace: {app_ns}"));
        self.kubectl(&["apply", "-f", "-"], Some(&mover));
        for ns in ["s3mover-system", app_ns] {
            self.repo_secret(ns, &repo);
        }
        (dir, repo)
    }

    /// Secret `s3mover-repo` in `ns` for the local repository `repo`.
    pub fn repo_secret(&self, ns: &str, repo: &Path) {
        let repo = format!("--from-literal=S3MOVER_REPO={}", repo.display());
        let password = format!("--from-literal=S3MOVER_PASSWORD={PASSWORD}");
        self.kubectl(
            &[
                "create",
                "secret",
                "generic",
                "s3mover-repo",
                "-n",
                ns,
                &repo,
                &password,
            ],
            None,
        );
    }

    /// The pods of the mover Jobs in `ns`, with their phases.
    pub async fn mover_pods(&self, ns: &str) -> Vec<(String, String)> {
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(self.client.clone(), ns);
        let list = pods
            .list(&kube::api::ListParams::default().labels("batch.kubernetes.io/job-name"))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        list.into_iter()
            .map(|p| {
                let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
                (p.metadata.name.unwrap_or_default(), phase)
            })
            .collect()
    }

    /// `s3mover … -o json`, which must succeed; the parsed output.
    pub fn s3mover_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let (code, stdout, stderr) = self.s3mover(&all);
        assert_eq!(code, 0, "s3mover {args:?} failed: {stderr}\n{stdout}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    }

    /// Creates a claim of `size` bytes in `mode` and waits until it is Bound.
    pub async fn claim(
        &self,
        ns: &str,
        name: &str,
        size: u64,
        mode: &str,
        labels: &[(&str, &str)],
    ) {
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
        let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": mode,
                     "resources": {"requests": {"storage": size.to_string()}}}
        }))
        .expect("claim");
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        claims
            .create(&PostParams::default(), &claim)
            .await
            .expect("create claim");
        self.wait_bound(ns, name).await;
    }

    /// Waits until a claim is Bound.
    pub async fn wait_bound(&self, ns: &str, name: &str) {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let start = Instant::now();
        loop {
            if let Ok(c) = claims.get(name).await {
                if c.status.and_then(|s| s.phase).as_deref() == Some("Bound") {
                    return;
                }
            }
            assert!(
                start.elapsed() < PATIENCE,
                "claim {ns}/{name} was never Bound"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The image file that holds a bound claim's data.
    pub async fn image_of(&self, ns: &str, name: &str) -> PathBuf {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let pv = claims
            .get(name)
            .await
            .expect("claim")
            .spec
            .and_then(|s| s.volume_name)
            .expect("bound claim");
        let volumes = self.driver_dir.join("volumes");
        let direct = volumes.join(format!("{pv}.img"));
        if direct.exists() {
            return direct;
        }
        // A volume handed over to another PersistentVolume object keeps its storage: find it
        // through the volume's CSI handle.
        let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(self.client.clone());
        let handle = pvs
            .get(&pv)
            .await
            .expect("volume")
            .spec
            .and_then(|s| s.csi)
            .map(|c| c.volume_handle)
            .expect("CSI volume");
        volumes.join(format!("{handle}.img"))
    }

    /// Everything s3mover left behind that it should not have: temporary objects by label.
    pub async fn leftovers(&self) -> Vec<String> {
        s3mover_k8s::cleanup::leftovers(&self.client, None)
            .await
            .expect("list leftovers")
            .iter()
            .map(|o| o.to_string())
            .collect()
    }

    /// Fails the test, naming them, if s3mover left temporary objects behind.
    pub async fn assert_no_leftovers(&self) {
        let left = self.leftovers().await;
        assert!(left.is_empty(), "left: {left:?}");
    }

    /// The VolumeSnapshots s3mover keeps as bases in `ns`.
    pub async fn bases(&self, ns: &str, pvc: &str) -> Vec<String> {
        let claim = s3mover_k8s::select::ClaimRef {
            namespace: ns.into(),
            name: pvc.into(),
        };
        s3mover_k8s::backup::base_snapshots(&self.client, &claim)
            .await
            .expect("bases")
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Writes `data` at `offset` of a file (a workload writing to its volume).
pub fn write_at(path: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open image");
    file.write_all_at(data, offset).expect("write image");
    file.sync_all().expect("sync image");
}

/// Deterministic pseudo-random bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
