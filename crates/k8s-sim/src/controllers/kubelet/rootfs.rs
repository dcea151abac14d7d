//! Containers of images with their own root filesystem ([`ImageConfig::rootfs`]): each run
//! gets a fresh copy of the image's root filesystem (a container runtime's writable layer,
//! thrown away when the container ends), and bubblewrap makes that copy `/`, with a fresh
//! `/dev` and `/proc`, `/sys` read-only, the node's `/etc/hosts` and `/etc/resolv.conf`, and the
//! claims' devices and the volumes bound at their paths inside it.
//! Nothing of the host is visible but what the pod's spec mounts, so a program the image cannot
//! run (a missing shared library, a missing CA bundle) fails as on a real node.
//!
//! [`ImageConfig::rootfs`]: crate::controllers::ImageConfig::rootfs

use std::path::{Path, PathBuf};

use super::sandbox::bind_args;
use super::volumes::Bind;

/// The host's `bwrap`, found on the kubelet's own `PATH`: a container's environment (the
/// image's `PATH` among it) is not where the runtime is looked up.
pub fn bwrap_program() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("bwrap"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("bwrap"))
}

/// A container's copy of its image's root filesystem, removed when dropped.
#[derive(Debug)]
pub struct RootCopy {
    path: PathBuf,
}

impl RootCopy {
    /// Copies `image_root` to `pod_dir/rootfs/CONTAINER-RESTART` (reflinked where the file
    /// system can, as overlay layers share their lower layer).
    pub fn make(
        image_root: &Path,
        pod_dir: &Path,
        container: &str,
        restart: i32,
    ) -> Result<RootCopy, String> {
        let path = pod_dir
            .join("rootfs")
            .join(format!("{container}-{restart}"));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let _ = std::fs::remove_dir_all(&path);
        let copy = RootCopy { path };
        if !image_root.is_dir() {
            return Err(format!(
                "the image's root filesystem {} is missing",
                image_root.display()
            ));
        }
        let out = std::process::Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(image_root)
            .arg(&copy.path)
            .output()
            .map_err(|e| format!("cp: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cp: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(copy)
    }

    /// Where the copy is on the host.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RootCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The bubblewrap command line for one container whose `/` is `root`: as
/// [`super::sandbox::bwrap_args`], but mount paths are paths inside the image (the host's
/// symbolic links mean nothing there) and the working directory is `/` unless the container
/// names one.
pub fn bwrap_args(
    root: &Path,
    binds: &[Bind],
    termination_host: &Path,
    termination_path: &str,
    working_dir: Option<&str>,
    argv: &[String],
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--bind".into(),
        root.display().to_string(),
        "/".into(),
        "--dev".into(),
        "/dev".into(),
        "--proc".into(),
        "/proc".into(),
        // What a runtime adds to every container: sysfs read-only, and the node's name
        // resolution files (the kubelet manages /etc/hosts and /etc/resolv.conf).
        "--ro-bind".into(),
        "/sys".into(),
        "/sys".into(),
        "--ro-bind-try".into(),
        "/etc/hosts".into(),
        "/etc/hosts".into(),
        "--ro-bind-try".into(),
        "/etc/resolv.conf".into(),
        "/etc/resolv.conf".into(),
    ];
    a.extend(bind_args(binds, str::to_string));
    a.extend([
        "--bind".into(),
        termination_host.display().to_string(),
        termination_path.into(),
        "--die-with-parent".into(),
        "--chdir".into(),
        working_dir.filter(|w| !w.is_empty()).unwrap_or("/").into(),
        "--".into(),
    ]);
    a.extend(argv.iter().cloned());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_root_is_slash_and_paths_stay_as_written() {
        let binds = vec![
            Bind::Device {
                host: "/dev/loop3".into(),
                path: "/dev/s3mover-volume".into(),
            },
            Bind::Dir {
                host: "/s/cbt".into(),
                path: "/var/run/s3mover/cbt".into(),
                read_only: true,
            },
        ];
        let a = bwrap_args(
            Path::new("/pods/p/rootfs/mover-0"),
            &binds,
            Path::new("/s/term"),
            "/dev/termination-log",
            None,
            &["/usr/local/bin/s3mover".into(), "--version".into()],
        );
        let s = a.join(" ");
        assert!(
            s.starts_with("--bind /pods/p/rootfs/mover-0 / --dev /dev --proc /proc --ro-bind /sys /sys --ro-bind-try /etc/hosts /etc/hosts --ro-bind-try /etc/resolv.conf /etc/resolv.conf --dev-bind /dev/loop3 /dev/s3mover-volume --ro-bind /s/cbt /var/run/s3mover/cbt --bind /s/term /dev/termination-log"),
            "{s}"
        );
        assert!(
            s.ends_with("--chdir / -- /usr/local/bin/s3mover --version"),
            "{s}"
        );
    }

    #[test]
    fn each_run_gets_its_own_copy_and_it_goes_away() {
        let d = tempfile::tempdir().unwrap();
        let image = d.path().join("image");
        std::fs::create_dir_all(image.join("etc")).unwrap();
        std::fs::write(image.join("etc/hostname"), b"image").unwrap();
        let copy = RootCopy::make(&image, &d.path().join("pod"), "c", 0).unwrap();
        let p = copy.path().to_path_buf();
        assert_eq!(std::fs::read(p.join("etc/hostname")).unwrap(), b"image");
        std::fs::write(p.join("etc/hostname"), b"changed").unwrap();
        drop(copy);
        assert!(!p.exists());
        assert_eq!(std::fs::read(image.join("etc/hostname")).unwrap(), b"image");
        let e = RootCopy::make(&d.path().join("none"), d.path(), "c", 1).unwrap_err();
        assert!(e.contains("is missing"), "{e}");
    }
}
