//! A small reflink-capable filesystem for tests and benchmarks: an XFS image made with
//! `mkfs.xfs -m reflink=1`, loop-mounted in a temporary directory and unmounted (its loop device
//! released) when dropped. It stands for storage that shares blocks between a volume and its
//! snapshots, as copy-on-write CSI drivers do; needs root and `mkfs.xfs` (Debian `xfsprogs`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted XFS filesystem with reflinks.
#[derive(Debug)]
pub struct ReflinkFs {
    /// Holds the image and the mount point; removed after the unmount.
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

/// Why a reflink filesystem could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ReflinkError {
    /// Not root, or `mkfs.xfs` missing.
    #[error("needs {0}")]
    Missing(String),
    /// A step failed.
    #[error("{0}")]
    Failed(String),
}

fn run(cmd: &mut Command) -> Result<(), ReflinkError> {
    let out = cmd
        .output()
        .map_err(|e| ReflinkError::Failed(format!("cannot run {:?}: {e}", cmd.get_program())))?;
    if out.status.success() {
        return Ok(());
    }
    Err(ReflinkError::Failed(format!(
        "{:?} failed ({}): {}",
        cmd.get_program(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

fn have(tool: &str) -> bool {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(tool).is_file())
}

impl ReflinkFs {
    /// Makes and mounts a sparse filesystem image of `size` bytes under `parent` (which must
    /// not itself be on a filesystem that refuses loop images, such as another tmpfs-backed
    /// loop) — `None` means the system temporary directory.
    pub fn mount(size: u64, parent: Option<&Path>) -> Result<ReflinkFs, ReflinkError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(ReflinkError::Missing("root (to mount a loop image)".into()));
        }
        if !have("mkfs.xfs") {
            return Err(ReflinkError::Missing(
                "mkfs.xfs (apt-get install xfsprogs)".into(),
            ));
        }
        let dir = match parent {
            Some(p) => tempfile::tempdir_in(p),
            None => tempfile::tempdir(),
        }
        .map_err(|e| ReflinkError::Failed(format!("cannot create a directory: {e}")))?;
        let image = dir.path().join("xfs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount)
            .and_then(|()| std::fs::File::create(&image)?.set_len(size))
            .map_err(|e| ReflinkError::Failed(format!("cannot make {}: {e}", image.display())))?;
        run(Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(&image))?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount))?;
        Ok(ReflinkFs { _dir: dir, mount })
    }

    /// The mounted filesystem's root.
    pub fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for ReflinkFs {
    fn drop(&mut self) {
        // A mount made with `-o loop` releases its loop device when unmounted.
        if run(Command::new("umount").arg(&self.mount)).is_err() {
            let _ = run(Command::new("umount").arg("-l").arg(&self.mount));
        }
    }
}

/// A reflink filesystem for `test`, or `None` after printing `SKIPPED: <reason>` when root or
/// `mkfs.xfs` is missing outside CI; with `CI=true` a missing requirement panics.
pub fn reflink_or_skip(test: &str, size: u64) -> Option<ReflinkFs> {
    match ReflinkFs::mount(size, None) {
        Ok(fs) => Some(fs),
        Err(ReflinkError::Missing(what)) if !crate::garage::in_ci() => {
            eprintln!("SKIPPED: {test}: needs {what}");
            None
        }
        Err(e) => panic!("{test}: cannot mount a reflink filesystem: {e}"),
    }
}
