//! One pod on a Node: volumes, then each container as a real process inside bubblewrap
//! (`bwrap --bind / / --dev /dev --proc /proc`, claims' loop devices bound at their
//! `devicePath`, files and directories at their `mountPath`, a host file at the
//! `terminationMessagePath`; an image with its own root filesystem runs in a copy of it instead
//! of the host's root, see [`super::rootfs`]), status reported as the kubelet reports it, and a
//! kill switch that sends SIGTERM to the container's process group, then SIGKILL after the
//! grace period.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::rootfs::{self, RootCopy};
use super::sandbox::{
    bwrap_args, log_tail, mount_points_to_make, read_message, remove_mount_points, signal_group,
    GroupGuard,
};
use super::volumes::{self, Attached, Bind};
use super::{command, lifecycle, pod_dir};
use crate::controllers::events::{reference, Kind};
use crate::controllers::util::now_rfc3339;
use crate::controllers::{Ctx, ImageConfig};

const KUBELET: &str = "kubelet";

/// The pod's status as this kubelet knows it.
struct Shared {
    init: Vec<Value>,
    containers: Vec<Value>,
    start_time: String,
    volumes_ready: bool,
}

fn waiting(c: &Container, reason: &str, message: Option<&str>) -> Value {
    let mut w = json!({"reason": reason});
    if let Some(m) = message {
        w["message"] = json!(m);
    }
    json!({"name": c.name, "image": c.image, "imageID": "", "ready": false, "started": false,
           "restartCount": 0, "state": {"waiting": w}})
}

/// Which list and index a container's status lives at.
#[derive(Clone, Copy)]
struct Slot {
    init: bool,
    index: usize,
}

struct PodRun {
    ctx: Ctx,
    pod: Pod,
    dir: PathBuf,
    shared: Mutex<Shared>,
    kill: watch::Receiver<Option<i64>>,
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the pod to its end (or until it is killed), then cleans up after it.
pub async fn run(ctx: Ctx, pod: Pod, kill: watch::Receiver<Option<i64>>) {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let uid = pod.uid().unwrap_or_default();
    let dir = pod_dir(ctx.storage.dir(), &ns, &name, &uid);
    let spec = pod.spec.clone().unwrap_or_default();
    let shared = Shared {
        init: spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| waiting(c, "PodInitializing", None))
            .collect(),
        containers: spec
            .containers
            .iter()
            .map(|c| {
                waiting(
                    c,
                    if spec.init_containers.as_ref().is_some_and(|i| !i.is_empty()) {
                        "PodInitializing"
                    } else {
                        "ContainerCreating"
                    },
                    None,
                )
            })
            .collect(),
        start_time: now_rfc3339(),
        volumes_ready: false,
    };
    let run = Arc::new(PodRun {
        ctx,
        pod,
        dir,
        shared: Mutex::new(shared),
        kill,
    });
    run.push().await;
    let _ = std::fs::create_dir_all(&run.dir);

    let mut attached = match run.attach().await {
        Some(a) => a,
        None => {
            run.finish_deleted().await;
            return;
        }
    };
    lock(&run.shared).volumes_ready = true;
    run.push().await;

    let restart = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let mut init_ok = true;
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let code = run
            .container(
                c,
                Slot {
                    init: true,
                    index: i,
                },
                &attached,
                &restart,
            )
            .await;
        if code != Some(0) {
            init_ok = false;
            break;
        }
    }
    if init_ok {
        let futs = spec.containers.iter().enumerate().map(|(i, c)| {
            run.container(
                c,
                Slot {
                    init: false,
                    index: i,
                },
                &attached,
                &restart,
            )
        });
        futures::future::join_all(futs).await;
    }
    lifecycle::hold_unmount(&run.ctx, run.killed().is_some()).await;
    attached.release();
    run.push().await;
    run.finish_deleted().await;
}

impl PodRun {
    fn killed(&self) -> Option<i64> {
        *self.kill.borrow()
    }

    /// Sleeps `d` or until the pod is killed; true when killed.
    async fn sleep_or_kill(&self, d: Duration) -> bool {
        let mut rx = self.kill.clone();
        if rx.borrow().is_some() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => self.kill.borrow().is_some(),
            r = rx.wait_for(|v| v.is_some()) => r.is_ok(),
        }
    }

    async fn event(&self, c: Option<&Container>, kind: Kind, reason: &str, message: &str) {
        let mut r: ObjectReference = reference(&self.pod);
        if let Some(c) = c {
            r.field_path = Some(format!("spec.containers{{{}}}", c.name));
        }
        self.ctx
            .events
            .record_ref(r, kind, reason, message, KUBELET)
            .await;
    }

    /// Volumes, retried with FailedMount-style events until they work or the pod is killed.
    async fn attach(&self) -> Option<Attached> {
        let mut delay = Duration::from_millis(500);
        loop {
            if self.killed().is_some() {
                return None;
            }
            if !lifecycle::wait_attached(&self.ctx, &self.pod, &self.kill).await {
                return None;
            }
            match volumes::setup(&self.ctx, &self.pod, &self.dir).await {
                Ok(a) => {
                    // With VolumeAttachments the attach/detach controller reports attaches.
                    let own = self.ctx.opts.volume_attach.is_none();
                    for pv in a.pv_names.values().filter(|_| own) {
                        self.ctx
                            .events
                            .record(
                                &self.pod,
                                Kind::Normal,
                                "SuccessfulAttachVolume",
                                &format!("AttachVolume.Attach succeeded for volume {pv:?} "),
                                "attachdetach-controller",
                            )
                            .await;
                    }
                    return Some(a);
                }
                Err(e) => {
                    self.event(None, Kind::Warning, e.reason, &e.message).await;
                    if self.sleep_or_kill(delay).await {
                        return None;
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    fn set(&self, slot: Slot, v: Value) {
        let mut s = lock(&self.shared);
        let list = if slot.init {
            &mut s.init
        } else {
            &mut s.containers
        };
        if let Some(x) = list.get_mut(slot.index) {
            *x = v;
        }
    }

    fn get(&self, slot: Slot) -> Value {
        let s = lock(&self.shared);
        let list = if slot.init { &s.init } else { &s.containers };
        list.get(slot.index).cloned().unwrap_or(Value::Null)
    }

    /// The phase and conditions that follow from the containers' states.
    fn status(&self) -> Value {
        let s = lock(&self.shared);
        let restart = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let state = |v: &Value| -> &'static str {
            if v.pointer("/state/terminated").is_some() {
                "terminated"
            } else if v.pointer("/state/running").is_some() {
                "running"
            } else {
                "waiting"
            }
        };
        let code = |v: &Value| {
            v.pointer("/state/terminated/exitCode")
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        let init_failed = s
            .init
            .iter()
            .any(|v| state(v) == "terminated" && code(v) != 0);
        let all_terminated =
            !s.containers.is_empty() && s.containers.iter().all(|v| state(v) == "terminated");
        let any_running = s.containers.iter().any(|v| state(v) == "running");
        let init_done = s
            .init
            .iter()
            .all(|v| state(v) == "terminated" && code(v) == 0);
        let phase = if init_failed && restart == "Never" {
            "Failed"
        } else if all_terminated {
            if s.containers.iter().all(|v| code(v) == 0) {
                "Succeeded"
            } else if restart == "Never" || self.killed().is_some() {
                "Failed"
            } else {
                "Running"
            }
        } else if any_running {
            "Running"
        } else {
            "Pending"
        };
        let ready = any_running && s.containers.iter().all(|v| state(v) == "running");
        let now = now_rfc3339();
        let cond = |t: &str, ok: bool, reason: Option<&str>| {
            let mut c = json!({"type": t, "status": if ok { "True" } else { "False" }, "lastTransitionTime": now, "lastProbeTime": Value::Null});
            if let Some(r) = reason {
                c["reason"] = json!(r);
            }
            c
        };
        let done = matches!(phase, "Succeeded" | "Failed");
        let not_ready_reason = if done {
            Some("PodCompleted")
        } else {
            Some("ContainersNotReady")
        };
        let mut st = json!({
            "phase": phase,
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": s.start_time,
            "qosClass": "BestEffort",
            "conditions": [
                cond("PodReadyToStartContainers", s.volumes_ready && !done, None),
                cond("Initialized", init_done, if init_done { None } else { Some("ContainersNotInitialized") }),
                cond("Ready", ready, if ready { None } else { not_ready_reason }),
                cond("ContainersReady", ready, if ready { None } else { not_ready_reason }),
                cond("PodScheduled", true, None),
            ],
            "containerStatuses": s.containers,
        });
        if !s.init.is_empty() {
            st["initContainerStatuses"] = json!(s.init);
        }
        st
    }

    async fn push(&self) {
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            &self.pod.namespace().unwrap_or_default(),
        );
        let patch = json!({ "status": self.status() });
        if let Err(e) = api
            .patch_status(
                &self.pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
        {
            tracing::debug!("pod {} status: {e}", self.pod.name_any());
        }
    }

    /// A killed pod's last step: delete it with grace 0 (its finalizers may keep it a while).
    async fn finish_deleted(&self) {
        if self.killed().is_none() {
            return;
        }
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            &self.pod.namespace().unwrap_or_default(),
        );
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: self.pod.uid().map(|u| kube::api::Preconditions {
                uid: Some(u),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let _ = api.delete(&self.pod.name_any(), &dp).await;
    }

    fn image(&self, image: &str) -> Option<ImageConfig> {
        let images = &self.ctx.opts.images;
        if let Some(i) = images.get(image) {
            return Some(i.clone());
        }
        // `name` means `name:latest`; `docker.io/library/name` is `name`.
        let short = image
            .strip_prefix("docker.io/library/")
            .or_else(|| image.strip_prefix("docker.io/"))
            .unwrap_or(image);
        let tagged = if short
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':') || last.contains('@'))
        {
            short.to_string()
        } else {
            format!("{short}:latest")
        };
        images.get(short).or_else(|| images.get(&tagged)).cloned()
    }

    /// Runs one container with its restarts; its last exit code, or None if it never ran.
    async fn container(
        &self,
        c: &Container,
        slot: Slot,
        att: &Attached,
        restart: &str,
    ) -> Option<i32> {
        let image_name = c.image.clone().unwrap_or_default();
        let mut restarts = 0i32;
        let mut delay = self.ctx.opts.kubelet_backoff;
        let mut last: Option<i32> = None;
        // Pull: a known image is present on the node; any other cannot be pulled.
        let image = loop {
            if self.killed().is_some() {
                return None;
            }
            self.event(
                Some(c),
                Kind::Normal,
                "Pulling",
                &format!("Pulling image {image_name:?}"),
            )
            .await;
            if let Some(i) = self.image(&image_name) {
                self.event(
                    Some(c),
                    Kind::Normal,
                    "Pulled",
                    &format!("Container image {image_name:?} already present on machine"),
                )
                .await;
                break i;
            }
            let why = format!(
                "failed to pull and unpack image {image_name:?}: failed to resolve reference {image_name:?}: {image_name}: not found"
            );
            let msg = format!(
                "Failed to pull image {image_name:?}: rpc error: code = NotFound desc = {why}"
            );
            self.set(slot, waiting(c, "ErrImagePull", Some(&msg)));
            self.push().await;
            self.event(Some(c), Kind::Warning, "Failed", &msg).await;
            self.event(Some(c), Kind::Warning, "Failed", "Error: ErrImagePull")
                .await;
            if self.sleep_or_kill(Duration::from_millis(500)).await {
                return None;
            }
            let back = format!("Back-off pulling image {image_name:?}");
            self.set(slot, waiting(c, "ImagePullBackOff", Some(&back)));
            self.push().await;
            self.event(Some(c), Kind::Normal, "BackOff", &back).await;
            self.event(Some(c), Kind::Warning, "Failed", "Error: ImagePullBackOff")
                .await;
            if self.sleep_or_kill(delay).await {
                return None;
            }
            delay = (delay * 2).min(Duration::from_secs(300));
        };
        delay = self.ctx.opts.kubelet_backoff;
        loop {
            if self.killed().is_some() {
                return last;
            }
            let env = match volumes::environment(&self.ctx, &self.pod, c, &image.env).await {
                Ok(e) => e,
                Err(e) => {
                    self.set(slot, waiting(c, "CreateContainerConfigError", Some(&e)));
                    self.push().await;
                    self.event(Some(c), Kind::Warning, "Failed", &format!("Error: {e}"))
                        .await;
                    if self.sleep_or_kill(delay).await {
                        return last;
                    }
                    continue;
                }
            };
            let argv = command::argv(
                c.command.as_deref().unwrap_or_default(),
                c.args.as_deref().unwrap_or_default(),
                &image,
                &env,
            );
            let binds = att.binds(c);
            let (code, reason, message, started_at) = match (binds, argv.is_empty()) {
                (Err(e), _) => {
                    self.event(Some(c), Kind::Warning, e.reason, &e.message)
                        .await;
                    (128, "StartError".to_string(), e.message, now_rfc3339())
                }
                (Ok(_), true) => (
                    128,
                    "StartError".to_string(),
                    "no command specified".to_string(),
                    now_rfc3339(),
                ),
                (Ok(binds), false) => {
                    let root = image.rootfs.as_deref();
                    self.exec(c, slot, &argv, &env, &binds, restarts, &image_name, root)
                        .await
                }
            };
            let mut st = self.get(slot);
            st["state"] = json!({"terminated": {
                "exitCode": code, "reason": reason, "message": message,
                "startedAt": started_at, "finishedAt": now_rfc3339(),
                "containerID": format!("bwrap://{}", st.pointer("/containerID").and_then(Value::as_str).unwrap_or_default().trim_start_matches("bwrap://")),
            }});
            if message.is_empty() {
                if let Some(t) = st.pointer_mut("/state/terminated") {
                    if let Some(o) = t.as_object_mut() {
                        o.remove("message");
                    }
                }
            }
            st["ready"] = json!(false);
            st["started"] = json!(false);
            self.set(slot, st.clone());
            self.push().await;
            last = Some(code);
            let again = match restart {
                "Always" => !slot.init || code != 0,
                "OnFailure" => code != 0,
                _ => false,
            };
            if !again || self.killed().is_some() {
                return last;
            }
            restarts += 1;
            let back = format!(
                "Back-off restarting failed container {} in pod {}",
                c.name,
                self.pod.name_any()
            );
            let mut w = st.clone();
            w["lastState"] = st["state"].clone();
            w["state"] = json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!("back-off {}s restarting failed container={} pod={}", delay.as_secs(), c.name, self.pod.name_any())}});
            w["restartCount"] = json!(restarts);
            self.set(slot, w);
            self.push().await;
            self.event(Some(c), Kind::Warning, "BackOff", &back).await;
            if self.sleep_or_kill(delay).await {
                return last;
            }
            delay = (delay * 2).min(Duration::from_secs(300));
        }
    }

    /// One run of a container: (exit code, reason, termination message, startedAt); `root`
    /// is the image's root filesystem when it brings one.
    #[allow(clippy::too_many_arguments)]
    async fn exec(
        &self,
        c: &Container,
        slot: Slot,
        argv: &[String],
        env: &BTreeMap<String, String>,
        binds: &[Bind],
        restart: i32,
        image: &str,
        root: Option<&std::path::Path>,
    ) -> (i32, String, String, String) {
        let ns = self.pod.namespace().unwrap_or_default();
        // Each run's log replaces the last; `pods/log` serves it.
        let log = crate::api::pod_log_path(&self.ctx.state_dir, &ns, &self.pod.name_any(), &c.name);
        if let Some(p) = log.parent() {
            let _ = std::fs::create_dir_all(p);
        }
        let term_host = self
            .dir
            .join("termination")
            .join(format!("{}-{restart}", c.name));
        if let Some(p) = term_host.parent() {
            let _ = std::fs::create_dir_all(p);
        }
        let started_at = now_rfc3339();
        let fail = |msg: String| (128, "StartError".to_string(), msg, now_rfc3339());
        if let Err(e) = std::fs::write(&term_host, b"") {
            return fail(format!("cannot create the termination message file: {e}"));
        }
        let (out, err) = match std::fs::File::create(&log).and_then(|f| Ok((f.try_clone()?, f))) {
            Ok(x) => x,
            Err(e) => return fail(format!("cannot create the log file: {e}")),
        };
        let term_path = c
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into());
        // An image with its own root filesystem runs in a fresh copy of it; mount points are
        // made inside that copy, not on the host.
        let root = match root.map(|r| RootCopy::make(r, &self.dir, &c.name, restart)) {
            None => None,
            Some(Ok(copy)) => Some(copy),
            Some(Err(e)) => {
                return fail(format!(
                "failed to create containerd task: cannot prepare the image's root filesystem: {e}"
            ))
            }
        };
        let (args, made) = match &root {
            Some(r) => (
                rootfs::bwrap_args(
                    r.path(),
                    binds,
                    &term_host,
                    &term_path,
                    c.working_dir.as_deref(),
                    argv,
                ),
                Vec::new(),
            ),
            None => (
                bwrap_args(
                    binds,
                    &term_host,
                    &term_path,
                    c.working_dir.as_deref(),
                    argv,
                ),
                mount_points_to_make(binds),
            ),
        };
        let mut cmd = tokio::process::Command::new(rootfs::bwrap_program());
        cmd.args(&args)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(ch) => ch,
            Err(e) => {
                let msg = format!("failed to create containerd task: cannot start bwrap: {e}");
                self.event(Some(c), Kind::Warning, "Failed", &format!("Error: {msg}"))
                    .await;
                return fail(msg);
            }
        };
        let pid = child.id().unwrap_or(0);
        // Declared after `child`, so dropped before it: the leader is not reaped yet and its
        // group id cannot have been reused.
        let mut group = GroupGuard::new(pid);
        let mut st = self.get(slot);
        st["state"] = json!({"running": {"startedAt": started_at}});
        st["ready"] = json!(true);
        st["started"] = json!(true);
        st["restartCount"] = json!(restart);
        st["containerID"] = json!(format!("bwrap://{pid}"));
        st["imageID"] = json!(format!("sim://{image}"));
        self.set(slot, st);
        self.push().await;
        self.event(
            Some(c),
            Kind::Normal,
            "Created",
            &format!("Created container: {}", c.name),
        )
        .await;
        self.event(
            Some(c),
            Kind::Normal,
            "Started",
            &format!("Started container {}", c.name),
        )
        .await;

        let mut rx = self.kill.clone();
        let status = tokio::select! {
            s = child.wait() => s,
            g = async { rx.wait_for(|v| v.is_some()).await.map(|v| v.unwrap_or(0)).unwrap_or(0) } => {
                self.event(Some(c), Kind::Normal, "Killing", &format!("Stopping container {}", c.name)).await;
                let sandbox = lifecycle::Sandbox { binds, env, termination: (term_host.as_path(), term_path.as_str()) };
                match lifecycle::pre_stop(&self.ctx, &self.pod, c, &sandbox, g, &mut child).await {
                    (Some(s), _) => s,
                    (None, left) => {
                        signal_group(pid, libc::SIGTERM);
                        // As the kubelet: at least 2 s after a hook used the grace period up.
                        let left = if left < g { left.max(2) } else { g.max(0) };
                        match tokio::time::timeout(Duration::from_secs(left as u64), child.wait()).await {
                            Ok(s) => s,
                            Err(_) => {
                                signal_group(pid, libc::SIGKILL);
                                child.wait().await
                            }
                        }
                    }
                }
            }
        };
        group.disarm();
        // Whatever the container left behind in its group goes with it.
        signal_group(pid, libc::SIGKILL);
        remove_mount_points(&made);
        let code = match status {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9))
            }
            Err(_) => 255,
        };
        let reason = if code == 0 { "Completed" } else { "Error" };
        let mut message = read_message(&term_host);
        if message.is_empty()
            && code != 0
            && c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
        {
            message = log_tail(&log);
        }
        (code, reason.into(), message, started_at)
    }
}
