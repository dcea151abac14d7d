//! The sandbox a container runs in: the bubblewrap command line (the host's root, a fresh
//! `/dev` and `/proc`, claims' loop devices at their `devicePath`, volumes at their
//! `mountPath`, a host file at the termination message path), the mount points bubblewrap
//! creates on the host and their removal, signals to the container's process group, and
//! reading what the container left behind (termination message, log tail).

use std::path::{Path, PathBuf};

use super::volumes::Bind;

/// The kubelet keeps at most this much of a termination message.
const MAX_MESSAGE: usize = 4096;

/// The bubblewrap command line for one container.
pub fn bwrap_args(
    binds: &[Bind],
    termination_host: &Path,
    termination_path: &str,
    working_dir: Option<&str>,
    argv: &[String],
) -> Vec<String> {
    let mut a: Vec<String> = ["--bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(bind_args(binds, through_links));
    a.extend([
        "--bind".into(),
        termination_host.display().to_string(),
        termination_path.into(),
        "--die-with-parent".into(),
    ]);
    if let Some(w) = working_dir.filter(|w| !w.is_empty()) {
        a.extend(["--chdir".into(), w.into()]);
    }
    a.push("--".into());
    a.extend(argv.iter().cloned());
    a
}

/// bubblewrap's arguments for the claims' devices and the volumes, each mount path passed
/// through `path` (the host's root: [`through_links`]; an image's root: as written).
pub fn bind_args(binds: &[Bind], path: impl Fn(&str) -> String) -> Vec<String> {
    let mut a = Vec::new();
    for b in binds {
        match b {
            Bind::Device { host, path: at } => {
                a.extend(["--dev-bind".into(), host.display().to_string(), at.clone()]);
            }
            Bind::Dir {
                host,
                path: at,
                read_only,
            } => {
                let flag = if *read_only { "--ro-bind" } else { "--bind" };
                a.extend([flag.into(), host.display().to_string(), path(at)]);
            }
        }
    }
    a
}

/// A mount path with the host's symbolic links in its existing part resolved (`/var/run/x`
/// → `/run/x`): the container's root is the host's, and bubblewrap cannot create mount points
/// through a link. Paths under the container's own `/dev` and `/proc` are left alone.
pub fn through_links(path: &str) -> String {
    let p = Path::new(path);
    if !p.is_absolute() || p.starts_with("/dev") || p.starts_with("/proc") {
        return path.to_string();
    }
    let mut existing = p;
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return path.to_string(),
        }
    }
    let Ok(mut out) = std::fs::canonicalize(existing) else {
        return path.to_string();
    };
    for name in rest.into_iter().rev() {
        out.push(name);
    }
    out.display().to_string()
}

/// The host paths bubblewrap will create as mount points (the container's root is the host's),
/// outermost first.
pub fn mount_points_to_make(binds: &[Bind]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for b in binds {
        if let Bind::Dir { path, .. } = b {
            let mut p = PathBuf::from(through_links(path));
            let mut missing = Vec::new();
            while !p.exists() {
                missing.push(p.clone());
                if !p.pop() {
                    break;
                }
            }
            for m in missing.into_iter().rev() {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
    }
    out
}

/// Removes the mount points bubblewrap left on the host, if still empty, innermost first.
pub fn remove_mount_points(made: &[PathBuf]) {
    for p in made.iter().rev() {
        if std::fs::remove_dir(p).is_err() {
            if let Ok(m) = std::fs::symlink_metadata(p) {
                if m.is_file() && m.len() == 0 {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
    }
}

pub fn signal_group(pid: u32, sig: i32) {
    if pid == 0 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names the group the
    // container was started in (process_group(0) made it its leader).
    unsafe {
        libc::kill(-(pid as i32), sig);
    }
}

/// Kills a container's whole process group when dropped before it is disarmed: a kubelet
/// task aborted while its container runs (the cluster shutting down) leaves nothing behind.
/// `kill_on_drop` alone kills only bubblewrap's first process, and the sandbox it forked
/// would go on holding the pod's loop devices.
pub struct GroupGuard {
    pid: u32,
}

impl GroupGuard {
    /// Guards the group `pid` leads.
    pub fn new(pid: u32) -> Self {
        GroupGuard { pid }
    }

    /// The container has ended the ordinary way: nothing to kill.
    pub fn disarm(&mut self) {
        self.pid = 0;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        signal_group(self.pid, libc::SIGKILL);
    }
}

/// The termination message file's first 4096 bytes.
pub fn read_message(p: &Path) -> String {
    let raw = std::fs::read(p).unwrap_or_default();
    let end = raw.len().min(MAX_MESSAGE);
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// The last 80 lines (at most 2048 bytes) of a log, for FallbackToLogsOnError.
pub fn log_tail(p: &Path) -> String {
    let raw = std::fs::read(p).unwrap_or_default();
    let text = String::from_utf8_lossy(&raw);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    let start = tail.len().saturating_sub(2048);
    let mut i = start;
    while !tail.is_char_boundary(i) {
        i += 1;
    }
    tail[i..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bwrap_binds_devices_files_and_the_termination_log() {
        let binds = vec![
            Bind::Device {
                host: "/dev/loop7".into(),
                path: "/dev/xvda".into(),
            },
            Bind::Dir {
                host: "/s/tok".into(),
                path: "/secrets/tokens".into(),
                read_only: true,
            },
        ];
        let a = bwrap_args(
            &binds,
            Path::new("/s/term"),
            "/dev/termination-log",
            Some("/work"),
            &["/bin/sh".into(), "-c".into(), "true".into()],
        );
        let s = a.join(" ");
        assert!(s.starts_with("--bind / / --dev /dev --proc /proc --dev-bind /dev/loop7 /dev/xvda --ro-bind /s/tok /secrets/tokens --bind /s/term /dev/termination-log"), "{s}");
        assert!(s.ends_with("--chdir /work -- /bin/sh -c true"), "{s}");
    }

    #[test]
    fn mount_paths_resolve_host_links() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, d.path().join("link")).unwrap();
        let p = d.path().join("link/secrets/x");
        let real = std::fs::canonicalize(&real).unwrap();
        assert_eq!(
            through_links(&p.display().to_string()),
            real.join("secrets/x").display().to_string()
        );
        assert_eq!(
            through_links("/dev/termination-log"),
            "/dev/termination-log"
        );
    }

    #[test]
    fn log_tails_keep_the_end() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("l");
        let text: String = (0..200).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        let t = log_tail(&p);
        assert!(t.ends_with("line 199"), "{t}");
        assert!(t.starts_with("line 120"), "{t}");
    }
}
