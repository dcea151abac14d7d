//! Container images from OCI archives: what a node's container runtime does when it pulls an
//! image, done with the host's `tar` and `umoci`. The archive (an OCI image layout in a tar
//! file, as `buildah push … oci-archive:` writes it) is unpacked once into a root filesystem,
//! and the image configuration's `Entrypoint`, `Cmd`, `Env` and `WorkingDir` become an
//! [`ImageConfig`] whose containers the kubelet runs with that root filesystem as `/`
//! ([`crate::controllers::kubelet::rootfs`]). An image that lacks a library or a file its
//! program needs therefore fails in the simulated cluster as it would on a node.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::ImageConfig;

/// Why an OCI archive could not be turned into an image.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// A host tool failed or is missing.
    #[error("{tool} failed: {message}")]
    Tool {
        /// The program (`tar`, `umoci`).
        tool: &'static str,
        /// Its error output, or why it could not start.
        message: String,
    },
    /// The layout's index, manifest or configuration is missing or not what OCI says.
    #[error("{archive}: not an OCI image archive: {message}")]
    Layout {
        /// The archive.
        archive: String,
        /// What is wrong.
        message: String,
    },
}

fn run(tool: &'static str, cmd: &mut Command) -> Result<(), OciError> {
    let out = cmd.output().map_err(|e| OciError::Tool {
        tool,
        message: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(OciError::Tool {
        tool,
        message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Unpacks the image in the OCI archive `archive` under `dest` (created; `dest/layout` holds
/// the image layout, `dest/bundle/rootfs` the root filesystem) and returns it as an image the
/// kubelet runs from that root filesystem. The archive's first manifest is the image.
pub fn unpack_archive(archive: &Path, dest: &Path) -> Result<ImageConfig, OciError> {
    let layout = dest.join("layout");
    let bundle = dest.join("bundle");
    let bad = |message: String| OciError::Layout {
        archive: archive.display().to_string(),
        message,
    };
    std::fs::create_dir_all(&layout).map_err(|e| bad(format!("{}: {e}", layout.display())))?;
    run(
        "tar",
        Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(&layout),
    )?;
    let index = read_json(&layout.join("index.json")).map_err(&bad)?;
    let first = index
        .pointer("/manifests/0")
        .ok_or_else(|| bad("index.json lists no manifest".into()))?;
    let reference = first
        .pointer("/annotations/org.opencontainers.image.ref.name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("the manifest has no org.opencontainers.image.ref.name".into()))?;
    let manifest = read_json(&blob(&layout, first)?).map_err(&bad)?;
    let config = manifest
        .get("config")
        .ok_or_else(|| bad("the manifest has no config".into()))?;
    let config = read_json(&blob(&layout, config)?).map_err(&bad)?;
    run(
        "umoci",
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:{reference}", layout.display()))
            .arg(&bundle),
    )?;
    let strings = |key: &str| -> Vec<String> {
        config
            .pointer(&format!("/config/{key}"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let env = strings("Env")
        .into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    Ok(ImageConfig {
        entrypoint: strings("Entrypoint"),
        cmd: strings("Cmd"),
        env,
        rootfs: Some(bundle.join("rootfs")),
    })
}

/// The blob a descriptor (`{"digest": "sha256:…"}`) names, which must exist.
fn blob(layout: &Path, descriptor: &Value) -> Result<PathBuf, OciError> {
    let bad = |message: String| OciError::Layout {
        archive: layout.display().to_string(),
        message,
    };
    let digest = descriptor
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("a descriptor has no digest".into()))?;
    let (algorithm, hex) = digest
        .split_once(':')
        .filter(|(a, h)| !a.is_empty() && !h.is_empty() && !h.contains('/') && !a.contains('/'))
        .ok_or_else(|| bad(format!("bad digest {digest:?}")))?;
    let path = layout.join("blobs").join(algorithm).join(hex);
    if !path.is_file() {
        return Err(bad(format!("blob {digest} is missing")));
    }
    Ok(path)
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_an_archive_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("x.tar");
        std::fs::write(&f, b"not a tar file").unwrap();
        let e = unpack_archive(&f, &d.path().join("out")).unwrap_err();
        assert!(e.to_string().starts_with("tar failed: "), "{e}");
    }

    #[test]
    fn an_archive_without_an_index_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("oci-layout"), b"{}").unwrap();
        let f = d.path().join("x.tar");
        let ok = Command::new("tar")
            .arg("-cf")
            .arg(&f)
            .arg("-C")
            .arg(d.path())
            .arg("oci-layout")
            .status()
            .unwrap();
        assert!(ok.success());
        let e = unpack_archive(&f, &d.path().join("out")).unwrap_err();
        assert!(e.to_string().contains("not an OCI image archive"), "{e}");
        assert!(e.to_string().contains("index.json"), "{e}");
    }

    #[test]
    fn digests_cannot_leave_the_layout() {
        let d = tempfile::tempdir().unwrap();
        let e = blob(d.path(), &serde_json::json!({"digest": "sha256:../../etc"})).unwrap_err();
        assert!(e.to_string().contains("bad digest"), "{e}");
    }
}
