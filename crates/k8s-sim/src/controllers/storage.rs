//! The simulated CSI driver's storage, laid out as csi-driver-host-path lays out its state
//! directory: a volume is a sparse image file (with an ext4 filesystem made by `mkfs.ext4` for
//! Filesystem-mode volumes), a snapshot is a copy of the volume's image taken at that moment
//! (a reflink where the filesystem can, else a sparse copy), and a small JSON file beside each
//! snapshot remembers which volume it was cut from.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// Errors of the driver's storage operations; the message is what the CSI call would return.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A filesystem operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A helper program failed.
    #[error("{0}")]
    Tool(String),
    /// No such volume or snapshot.
    #[error("{0} not found")]
    NotFound(String),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What the driver remembers about a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotInfo {
    /// Snapshot handle.
    pub id: String,
    /// Handle of the volume it was cut from.
    pub source_volume: String,
    /// Size of the volume at that moment, in bytes.
    pub size_bytes: u64,
    /// Unix time in nanoseconds when it was cut.
    pub creation_time_ns: i64,
}

/// The driver's state directory.
#[derive(Debug)]
pub struct Driver {
    dir: PathBuf,
}

impl Driver {
    /// Uses (and creates) `dir`.
    pub fn open(dir: &Path) -> Result<Driver, StorageError> {
        for sub in ["volumes", "snapshots", "pods"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(io_err("cannot create", &p))?;
        }
        Ok(Driver {
            dir: dir.to_path_buf(),
        })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The image file of volume `id`.
    pub fn volume_path(&self, id: &str) -> PathBuf {
        self.dir
            .join("volumes")
            .join(format!("{}.img", sanitize(id)))
    }

    /// The image file of snapshot `id`.
    pub fn snapshot_path(&self, id: &str) -> PathBuf {
        self.dir
            .join("snapshots")
            .join(format!("{}.snap", sanitize(id)))
    }

    fn snapshot_info_path(&self, id: &str) -> PathBuf {
        self.dir
            .join("snapshots")
            .join(format!("{}.json", sanitize(id)))
    }

    /// Where pods' directories (tokens, secrets, termination messages, logs) go.
    pub fn pods_dir(&self) -> PathBuf {
        self.dir.join("pods")
    }

    /// Whether volume `id` exists.
    pub fn has_volume(&self, id: &str) -> bool {
        self.volume_path(id).exists()
    }

    /// CreateVolume: a sparse image of `size` bytes, from snapshot `from` when given, with an
    /// ext4 filesystem when `filesystem` and not from a snapshot. Idempotent for an existing
    /// volume, as CSI requires.
    pub fn create_volume(
        &self,
        id: &str,
        size: u64,
        filesystem: bool,
        from: Option<&str>,
    ) -> Result<PathBuf, StorageError> {
        let path = self.volume_path(id);
        if path.exists() {
            return Ok(path);
        }
        let tmp = path.with_extension("img.partial");
        match from {
            Some(snap) => {
                let src = self.snapshot_path(snap);
                if !src.exists() {
                    return Err(StorageError::NotFound(format!("snapshot {snap}")));
                }
                copy_image(&src, &tmp)?;
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(&tmp)
                    .map_err(io_err("cannot open", &tmp))?;
                let len = f.metadata().map_err(io_err("cannot stat", &tmp))?.len();
                if size > len {
                    f.set_len(size).map_err(io_err("cannot resize", &tmp))?;
                }
            }
            None => {
                let f = fs::File::create(&tmp).map_err(io_err("cannot create", &tmp))?;
                f.set_len(size).map_err(io_err("cannot size", &tmp))?;
                drop(f);
                if filesystem {
                    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&tmp))?;
                }
            }
        }
        fs::rename(&tmp, &path).map_err(io_err("cannot rename", &tmp))?;
        Ok(path)
    }

    /// DeleteVolume; a missing volume is not an error (CSI idempotency).
    pub fn delete_volume(&self, id: &str) -> Result<(), StorageError> {
        let p = self.volume_path(id);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("cannot remove", &p)(e)),
            _ => Ok(()),
        }
    }

    /// CreateSnapshot of volume `volume` with handle `id`.
    pub fn create_snapshot(&self, volume: &str, id: &str) -> Result<SnapshotInfo, StorageError> {
        if let Some(info) = self.snapshot(id) {
            return Ok(info);
        }
        let src = self.volume_path(volume);
        if !src.exists() {
            return Err(StorageError::NotFound(format!("volume {volume}")));
        }
        let dst = self.snapshot_path(id);
        let tmp = dst.with_extension("snap.partial");
        copy_image(&src, &tmp)?;
        let size_bytes = fs::metadata(&tmp)
            .map_err(io_err("cannot stat", &tmp))?
            .len();
        fs::rename(&tmp, &dst).map_err(io_err("cannot rename", &tmp))?;
        let info = SnapshotInfo {
            id: id.into(),
            source_volume: volume.into(),
            size_bytes,
            creation_time_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or_default(),
        };
        let ip = self.snapshot_info_path(id);
        let json = serde_json::to_vec(&info).map_err(|e| StorageError::Tool(e.to_string()))?;
        fs::write(&ip, json).map_err(io_err("cannot write", &ip))?;
        Ok(info)
    }

    /// The snapshot with handle `id`, if the driver has it.
    pub fn snapshot(&self, id: &str) -> Option<SnapshotInfo> {
        if !self.snapshot_path(id).exists() {
            return None;
        }
        let raw = fs::read(self.snapshot_info_path(id)).ok()?;
        serde_json::from_slice(&raw).ok()
    }

    /// DeleteSnapshot; a missing snapshot is not an error.
    pub fn delete_snapshot(&self, id: &str) -> Result<(), StorageError> {
        for p in [self.snapshot_path(id), self.snapshot_info_path(id)] {
            match fs::remove_file(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("cannot remove", &p)(e))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Keeps handles from escaping the state directory.
fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

/// A reflink where possible, else a sparse copy (what `cp` does with these flags).
fn copy_image(src: &Path, dst: &Path) -> Result<(), StorageError> {
    run(Command::new("cp")
        .args(["--reflink=auto", "--sparse=always"])
        .arg(src)
        .arg(dst))
}

/// Runs a helper, its stderr in the error.
pub(crate) fn run(cmd: &mut Command) -> Result<(), StorageError> {
    let out = cmd
        .output()
        .map_err(|e| StorageError::Tool(format!("cannot run {:?}: {e}", cmd.get_program())))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(StorageError::Tool(format!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_sparse_and_snapshots_copy_them() {
        let d = tempfile::tempdir().unwrap();
        let drv = Driver::open(d.path()).unwrap();
        let p = drv.create_volume("pvc-1", 1 << 20, false, None).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().len(), 1 << 20);
        use std::os::unix::fs::FileExt;
        fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .write_all_at(b"hello", 8192)
            .unwrap();
        let info = drv.create_snapshot("pvc-1", "snap-1").unwrap();
        assert_eq!(info.source_volume, "pvc-1");
        assert_eq!(info.size_bytes, 1 << 20);
        // Later writes to the volume do not reach the snapshot.
        fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .write_all_at(b"world", 8192)
            .unwrap();
        let v2 = drv
            .create_volume("pvc-2", 2 << 20, false, Some("snap-1"))
            .unwrap();
        let data = fs::read(&v2).unwrap();
        assert_eq!(data.len(), 2 << 20);
        assert_eq!(&data[8192..8197], b"hello");
        assert_eq!(drv.snapshot("snap-1"), Some(info));
        drv.delete_snapshot("snap-1").unwrap();
        assert!(drv.snapshot("snap-1").is_none());
        drv.delete_volume("pvc-1").unwrap();
        drv.delete_volume("pvc-1").unwrap();
        assert!(!drv.has_volume("pvc-1"));
    }

    #[test]
    fn a_volume_from_a_missing_snapshot_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let drv = Driver::open(d.path()).unwrap();
        let e = drv
            .create_volume("v", 4096, false, Some("nope"))
            .unwrap_err();
        assert_eq!(e.to_string(), "snapshot nope not found");
        assert!(!drv.has_volume("v"));
    }

    #[test]
    fn handles_stay_inside_the_state_directory() {
        let d = tempfile::tempdir().unwrap();
        let drv = Driver::open(d.path()).unwrap();
        assert!(drv
            .volume_path("../../etc/passwd")
            .starts_with(d.path().join("volumes")));
    }
}
