//! The parts of a pod's life around its containers that a rolling update exercises: waiting
//! for the attach/detach controller to attach the pod's claims before mounting them (with the
//! kubelet's `FailedMount` "timed out waiting for the condition" event when it takes too
//! long), a hung unmount that keeps a deleted pod Terminating (a fault of
//! [`AttachFaults`](crate::controllers::attachdetach::AttachFaults)), and `preStop` hooks: an
//! `exec` hook runs in the container's sandbox before SIGTERM and counts against the grace
//! period, and is killed with exit code 137 when the container's main process ends first
//! (`FailedPreStopHook`); a `sleep` hook sleeps.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use tokio::process::Child;
use tokio::sync::watch;

use super::sandbox::{bwrap_args, signal_group};
use super::volumes::Bind;
use crate::controllers::attachdetach::pod_attached;
use crate::controllers::events::{reference, Kind};
use crate::controllers::Ctx;

/// How long the kubelet waits for its volumes before saying so (2 minutes in the kubelet).
const MOUNT_TIMEOUT: Duration = Duration::from_secs(120);

/// Waits until the pod's claims are attached to its node; false when the pod is killed first.
pub async fn wait_attached(ctx: &Ctx, pod: &Pod, kill: &watch::Receiver<Option<i64>>) -> bool {
    if ctx.opts.volume_attach.is_none() {
        return true;
    }
    let mut since = Instant::now();
    loop {
        if kill.borrow().is_some() {
            return false;
        }
        match pod_attached(ctx, pod).await {
            Ok(true) => return true,
            Ok(false) => {}
            Err(e) => tracing::debug!("kubelet: attachments of {}: {e}", pod.name_any()),
        }
        if since.elapsed() >= MOUNT_TIMEOUT {
            let claims: Vec<String> = pod
                .spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .filter(|v| v.persistent_volume_claim.is_some())
                .map(|v| v.name.clone())
                .collect();
            let list = claims.join(" ");
            ctx.events
                .record(
                    pod,
                    Kind::Warning,
                    "FailedMount",
                    &format!("Unable to attach or mount volumes: unmounted volumes=[{list}], unattached volumes=[{list}]: timed out waiting for the condition"),
                    "kubelet",
                )
                .await;
            since = Instant::now();
        }
        let mut rx = kill.clone();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = rx.wait_for(|v| v.is_some()) => {}
        }
    }
}

/// A deleted pod's claims cannot be unmounted while the `stuck_unmount` fault is set: the
/// kubelet keeps trying, and the pod stays Terminating.
pub async fn hold_unmount(ctx: &Ctx, killed: bool) {
    let Some(faults) = ctx.opts.volume_attach.as_ref() else {
        return;
    };
    while killed && faults.get().stuck_unmount {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a hook needs of its container's sandbox.
pub struct Sandbox<'a> {
    /// The container's volumes and devices.
    pub binds: &'a [Bind],
    /// The container's environment.
    pub env: &'a BTreeMap<String, String>,
    /// The host file behind the termination message path, and that path.
    pub termination: (&'a Path, &'a str),
}

/// Runs the container's preStop hook, at most `grace` seconds. Returns the container's exit
/// status when its main process ended while the hook ran, and the grace left either way.
pub async fn pre_stop(
    ctx: &Ctx,
    pod: &Pod,
    c: &Container,
    sandbox: &Sandbox<'_>,
    grace: i64,
    child: &mut Child,
) -> (Option<std::io::Result<ExitStatus>>, i64) {
    let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) else {
        return (None, grace);
    };
    let start = Instant::now();
    let budget = Duration::from_secs(grace.max(0) as u64);
    let left = |start: Instant| grace - start.elapsed().as_secs() as i64;
    if let Some(s) = &hook.sleep {
        let d = Duration::from_secs(s.seconds.max(0) as u64).min(budget);
        return match tokio::time::timeout(d, child.wait()).await {
            Ok(st) => (Some(st), left(start)),
            Err(_) => (None, left(start)),
        };
    }
    let Some(cmd) = hook.exec.as_ref().and_then(|e| e.command.clone()) else {
        return (None, grace);
    };
    let args = bwrap_args(
        sandbox.binds,
        sandbox.termination.0,
        sandbox.termination.1,
        c.working_dir.as_deref(),
        &cmd,
    );
    let mut hook_cmd = tokio::process::Command::new("bwrap");
    hook_cmd
        .args(&args)
        .env_clear()
        .envs(sandbox.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut h = match hook_cmd.spawn() {
        Ok(h) => h,
        Err(e) => {
            fail(
                ctx,
                pod,
                c,
                &cmd,
                &format!("cannot start the hook: {e}"),
                "",
            )
            .await;
            return (None, grace);
        }
    };
    let hpid = h.id().unwrap_or(0);
    let mut out = h.stdout.take();
    let mut err = h.stderr.take();
    let collect = async {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut buf).await;
        }
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut buf).await;
        }
        buf
    };
    enum End {
        Hook(std::io::Result<ExitStatus>, Vec<u8>),
        Container(std::io::Result<ExitStatus>),
        Timeout,
    }
    let end = tokio::select! {
        (st, buf) = async { let buf = collect.await; (h.wait().await, buf) } => End::Hook(st, buf),
        st = child.wait() => End::Container(st),
        _ = tokio::time::sleep(budget) => End::Timeout,
    };
    match end {
        End::Hook(Ok(st), buf) if st.success() => {
            let _ = buf;
            (None, left(start))
        }
        End::Hook(st, buf) => {
            let code = exit_code(st);
            let output = String::from_utf8_lossy(&buf).to_string();
            let why = format!("command '{}' exited with {code}: {output}", cmd.join(" "));
            fail(ctx, pod, c, &cmd, &why, &output).await;
            (None, left(start))
        }
        End::Container(st) => {
            // The container's main process is gone, and the hook with it.
            signal_group(hpid, libc::SIGKILL);
            let _ = h.wait().await;
            let why = format!("command '{}' exited with 137: ", cmd.join(" "));
            fail(ctx, pod, c, &cmd, &why, "").await;
            (Some(st), left(start))
        }
        End::Timeout => {
            signal_group(hpid, libc::SIGKILL);
            let _ = h.wait().await;
            let why = format!(
                "command '{}' did not finish within the grace period of {grace}s",
                cmd.join(" ")
            );
            fail(ctx, pod, c, &cmd, &why, "").await;
            (None, 0)
        }
    }
}

fn exit_code(st: std::io::Result<ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match st {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9)),
        Err(_) => 255,
    }
}

/// The kubelet's `FailedPreStopHook` event.
async fn fail(ctx: &Ctx, pod: &Pod, c: &Container, cmd: &[String], why: &str, output: &str) {
    let mut r = reference(pod);
    r.field_path = Some(format!("spec.containers{{{}}}", c.name));
    let msg = format!(
        "Exec lifecycle hook ({cmd:?}) for Container {:?} in Pod \"{}_{}({})\" failed - error: {why}, message: {output:?}",
        c.name,
        pod.name_any(),
        pod.namespace().unwrap_or_default(),
        pod.uid().unwrap_or_default(),
    );
    ctx.events
        .record_ref(r, Kind::Warning, "FailedPreStopHook", &msg, "kubelet")
        .await;
}
