//! A pod's volumes on the node: claims attached as loop devices (raw for `volumeDevices`,
//! mounted for `volumeMounts`), Secrets and ConfigMaps written as files, projected
//! service-account tokens from a TokenRequest with the requested audience and lifetime, and
//! emptyDirs. Everything is undone by [`Attached::release`].

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
    Volume,
};
use kube::api::PostParams;
use kube::{Api, ResourceExt};

use crate::controllers::Ctx;

/// Why a volume could not be set up: the event reason and message the kubelet would give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeError {
    /// `FailedMount`, `FailedAttachVolume` or `FailedMapVolume`.
    pub reason: &'static str,
    /// The event message.
    pub message: String,
}

fn mount_failed(volume: &str, why: impl std::fmt::Display) -> VolumeError {
    VolumeError {
        reason: "FailedMount",
        message: format!("MountVolume.SetUp failed for volume {volume:?} : {why}"),
    }
}

/// One thing a container sees.
#[derive(Debug, Clone)]
pub enum Bind {
    /// A block device at `path`.
    Device { host: PathBuf, path: String },
    /// A directory or file at `path`.
    Dir {
        host: PathBuf,
        path: String,
        read_only: bool,
    },
}

/// A claim's volume on this node.
#[derive(Debug, Clone)]
struct Attachment {
    loop_dev: String,
    mount: Option<PathBuf>,
    block: bool,
    /// A Filesystem volume's node-wide mount ([`super::staging`]).
    shared: Option<super::staging::Key>,
}

/// Everything set up for a pod.
#[derive(Debug, Default)]
pub struct Attached {
    /// Per volume name: where its files are on the host (non-claim volumes).
    dirs: BTreeMap<String, PathBuf>,
    claims: BTreeMap<String, Attachment>,
    /// Names of the claim volumes' PVs, for events.
    pub pv_names: BTreeMap<String, String>,
}

impl Attached {
    /// The binds for one container.
    pub fn binds(
        &self,
        c: &k8s_openapi::api::core::v1::Container,
    ) -> Result<Vec<Bind>, VolumeError> {
        let mut out = Vec::new();
        for d in c.volume_devices.iter().flatten() {
            let a = self.claims.get(&d.name).ok_or_else(|| VolumeError {
                reason: "FailedMapVolume",
                message: format!("volume {:?} is not a claim attached to this pod", d.name),
            })?;
            if !a.block {
                return Err(VolumeError {
                    reason: "FailedMapVolume",
                    message: format!(
                        "volume {} has volumeMode Filesystem, but is specified in volumeDevices",
                        d.name
                    ),
                });
            }
            out.push(Bind::Device {
                host: PathBuf::from(&a.loop_dev),
                path: d.device_path.clone(),
            });
        }
        for m in c.volume_mounts.iter().flatten() {
            let ro = m.read_only.unwrap_or(false);
            let host = if let Some(a) = self.claims.get(&m.name) {
                match &a.mount {
                    Some(p) => p.clone(),
                    None => {
                        return Err(VolumeError {
                            reason: "FailedMount",
                            message: format!(
                                "volume {} has volumeMode Block, but is specified in volumeMounts",
                                m.name
                            ),
                        })
                    }
                }
            } else if let Some(d) = self.dirs.get(&m.name) {
                d.clone()
            } else {
                return Err(mount_failed(&m.name, "no such volume in the pod"));
            };
            let host = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sp) => host.join(sp),
                None => host,
            };
            out.push(Bind::Dir {
                host,
                path: m.mount_path.clone(),
                read_only: ro,
            });
        }
        Ok(out)
    }

    /// Unmounts and detaches the claims' loop devices.
    pub fn release(&mut self) {
        for (_, a) in std::mem::take(&mut self.claims) {
            if a.shared
                .as_ref()
                .is_some_and(|k| !super::staging::release(k))
            {
                continue;
            }
            if let Some(m) = &a.mount {
                let _ = Command::new("umount").arg(m).output();
            }
            let _ = Command::new("losetup").arg("-d").arg(&a.loop_dev).output();
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.release();
    }
}

fn write_files(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    mode: i32,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let pairs: Vec<(String, String, Option<i32>)> = match items {
        Some(items) => items
            .iter()
            .map(|i| (i.key.clone(), i.path.clone(), i.mode))
            .collect(),
        None => data.keys().map(|k| (k.clone(), k.clone(), None)).collect(),
    };
    for (key, rel, m) in pairs {
        if rel.split('/').any(|c| c == "..") || rel.starts_with('/') {
            return Err(format!("invalid path {rel:?}"));
        }
        let v = data
            .get(&key)
            .ok_or_else(|| format!("configmap references non-existent config key: {key}"))?;
        let p = dir.join(&rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(&p, v).map_err(|e| e.to_string())?;
        let _ = std::fs::set_permissions(
            &p,
            std::fs::Permissions::from_mode(m.unwrap_or(mode) as u32 & 0o7777),
        );
    }
    Ok(())
}

async fn secret_data(
    ctx: &Ctx,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(s)) => {
            let mut out: BTreeMap<String, Vec<u8>> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            for (k, v) in s.string_data.unwrap_or_default() {
                out.insert(k, v.into_bytes());
            }
            Ok(Some(out))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

async fn config_map_data(
    ctx: &Ctx,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(c)) => {
            let mut out: BTreeMap<String, Vec<u8>> = c
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            for (k, v) in c.binary_data.unwrap_or_default() {
                out.insert(k, v.0);
            }
            Ok(Some(out))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// A service-account token for the pod (TokenRequest bound to the pod).
pub async fn request_token(
    ctx: &Ctx,
    pod: &Pod,
    audience: Option<&str>,
    expiration: Option<i64>,
) -> Result<String, String> {
    let ns = pod.namespace().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &ns);
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
            expiration_seconds: Some(expiration.unwrap_or(3600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                uid: pod.uid(),
            }),
        },
        ..TokenRequest::default()
    };
    let out: TokenRequest = api
        .create_subresource("token", &sa, &PostParams::default(), &tr)
        .await
        .map_err(|e| format!("failed to fetch token: {e}"))?;
    out.status
        .map(|s| s.token)
        .ok_or_else(|| "failed to fetch token: the TokenRequest has no status".into())
}

fn losetup(image: &Path, read_only: bool) -> Result<String, String> {
    let mut cmd = Command::new("losetup");
    if read_only {
        cmd.arg("-r");
    }
    let out = cmd
        .args(["-f", "--show"])
        .arg(image)
        .output()
        .map_err(|e| format!("cannot run losetup: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn attach_claim(
    ctx: &Ctx,
    pod: &Pod,
    dir: &Path,
    v: &Volume,
    claim: &str,
    ro: bool,
) -> Result<(Attachment, String), VolumeError> {
    let ns = pod.namespace().unwrap_or_default();
    let pvc = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns)
        .get_opt(claim)
        .await
        .map_err(|e| mount_failed(&v.name, e))?
        .ok_or_else(|| {
            mount_failed(
                &v.name,
                format!("persistentvolumeclaim {claim:?} not found"),
            )
        })?;
    let pv_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .ok_or_else(|| mount_failed(&v.name, format!("PVC {ns}/{claim} has not been bound")))?;
    let pv = Api::<PersistentVolume>::all(ctx.client.clone())
        .get_opt(&pv_name)
        .await
        .map_err(|e| mount_failed(&v.name, e))?
        .ok_or_else(|| mount_failed(&v.name, format!("persistentvolume {pv_name:?} not found")))?;
    let spec = pv.spec.unwrap_or_default();
    let Some(csi) = spec.csi.filter(|c| c.driver == ctx.opts.driver) else {
        return Err(VolumeError {
            reason: "FailedAttachVolume",
            message: format!("AttachVolume.Attach failed for volume {pv_name:?} : volume is not served by driver {}", ctx.opts.driver),
        });
    };
    let image = ctx.storage.volume_path(&csi.volume_handle);
    let block = spec.volume_mode.as_deref() == Some("Block");
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    if !block {
        if let Some((loop_dev, m, key)) = super::staging::acquire(&node, &image) {
            let a = Attachment {
                loop_dev,
                mount: Some(m),
                block,
                shared: Some(key),
            };
            return Ok((a, pv_name));
        }
    }
    let img = image.clone();
    let dev = tokio::task::spawn_blocking(move || losetup(&img, ro))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .map_err(|e| VolumeError {
            reason: "FailedAttachVolume",
            message: format!("AttachVolume.Attach failed for volume {pv_name:?} : {e}"),
        })?;
    let mut a = Attachment {
        loop_dev: dev.clone(),
        mount: None,
        block,
        shared: None,
    };
    if !block {
        let m = dir.join("volumes").join(&v.name);
        let _ = std::fs::create_dir_all(&m);
        let mut cmd = Command::new("mount");
        cmd.args(["-t", csi.fs_type.as_deref().unwrap_or("ext4")]);
        if ro {
            cmd.args(["-o", "ro"]);
        }
        let out = cmd.arg(&dev).arg(&m).output();
        match out {
            Ok(o) if o.status.success() => {
                a.shared = Some(super::staging::register(&node, &image, &dev, &m));
                a.mount = Some(m);
            }
            Ok(o) => {
                let _ = Command::new("losetup").arg("-d").arg(&dev).output();
                return Err(mount_failed(
                    &v.name,
                    format!(
                        "mount failed: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                ));
            }
            Err(e) => {
                let _ = Command::new("losetup").arg("-d").arg(&dev).output();
                return Err(mount_failed(&v.name, format!("cannot run mount: {e}")));
            }
        }
    }
    Ok((a, pv_name))
}

/// Sets up every volume of the pod under `dir`.
pub async fn setup(ctx: &Ctx, pod: &Pod, dir: &Path) -> Result<Attached, VolumeError> {
    let ns = pod.namespace().unwrap_or_default();
    let mut att = Attached::default();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let vdir = dir.join("volumes").join(&v.name);
        if let Some(c) = &v.persistent_volume_claim {
            let (a, pv) = attach_claim(
                ctx,
                pod,
                dir,
                v,
                &c.claim_name,
                c.read_only.unwrap_or(false),
            )
            .await?;
            att.claims.insert(v.name.clone(), a);
            att.pv_names.insert(v.name.clone(), pv);
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            match secret_data(ctx, &ns, &name)
                .await
                .map_err(|e| mount_failed(&v.name, e))?
            {
                Some(data) => write_files(
                    &vdir,
                    &data,
                    s.items.as_ref(),
                    s.default_mode.unwrap_or(0o644),
                )
                .map_err(|e| mount_failed(&v.name, e))?,
                None if s.optional == Some(true) => {
                    std::fs::create_dir_all(&vdir).map_err(|e| mount_failed(&v.name, e))?
                }
                None => return Err(mount_failed(&v.name, format!("secret {name:?} not found"))),
            }
            att.dirs.insert(v.name.clone(), vdir);
        } else if let Some(c) = &v.config_map {
            let name = c.name.clone();
            match config_map_data(ctx, &ns, &name)
                .await
                .map_err(|e| mount_failed(&v.name, e))?
            {
                Some(data) => write_files(
                    &vdir,
                    &data,
                    c.items.as_ref(),
                    c.default_mode.unwrap_or(0o644),
                )
                .map_err(|e| mount_failed(&v.name, e))?,
                None if c.optional == Some(true) => {
                    std::fs::create_dir_all(&vdir).map_err(|e| mount_failed(&v.name, e))?
                }
                None => {
                    return Err(mount_failed(
                        &v.name,
                        format!("configmap {name:?} not found"),
                    ))
                }
            }
            att.dirs.insert(v.name.clone(), vdir);
        } else if let Some(p) = &v.projected {
            std::fs::create_dir_all(&vdir).map_err(|e| mount_failed(&v.name, e))?;
            let mode = p.default_mode.unwrap_or(0o644);
            for src in p.sources.iter().flatten() {
                if let Some(t) = &src.service_account_token {
                    let token =
                        request_token(ctx, pod, t.audience.as_deref(), t.expiration_seconds)
                            .await
                            .map_err(|e| mount_failed(&v.name, e))?;
                    let data = BTreeMap::from([(t.path.clone(), token.into_bytes())]);
                    write_files(&vdir, &data, None, mode).map_err(|e| mount_failed(&v.name, e))?;
                }
                if let Some(s) = &src.secret {
                    let name = s.name.clone();
                    match secret_data(ctx, &ns, &name)
                        .await
                        .map_err(|e| mount_failed(&v.name, e))?
                    {
                        Some(data) => write_files(&vdir, &data, s.items.as_ref(), mode)
                            .map_err(|e| mount_failed(&v.name, e))?,
                        None if s.optional == Some(true) => {}
                        None => {
                            return Err(mount_failed(&v.name, format!("secret {name:?} not found")))
                        }
                    }
                }
                if let Some(d) = &src.downward_api {
                    write_downward(&vdir, pod, d.items.as_deref().unwrap_or_default(), mode)
                        .map_err(|e| mount_failed(&v.name, e))?;
                }
                if let Some(c) = &src.config_map {
                    let name = c.name.clone();
                    match config_map_data(ctx, &ns, &name)
                        .await
                        .map_err(|e| mount_failed(&v.name, e))?
                    {
                        Some(data) => write_files(&vdir, &data, c.items.as_ref(), mode)
                            .map_err(|e| mount_failed(&v.name, e))?,
                        None if c.optional == Some(true) => {}
                        None => {
                            return Err(mount_failed(
                                &v.name,
                                format!("configmap {name:?} not found"),
                            ))
                        }
                    }
                }
            }
            att.dirs.insert(v.name.clone(), vdir);
        } else if let Some(d) = &v.downward_api {
            write_downward(
                &vdir,
                pod,
                d.items.as_deref().unwrap_or_default(),
                d.default_mode.unwrap_or(0o644),
            )
            .map_err(|e| mount_failed(&v.name, e))?;
            att.dirs.insert(v.name.clone(), vdir);
        } else if v.empty_dir.is_some() {
            std::fs::create_dir_all(&vdir).map_err(|e| mount_failed(&v.name, e))?;
            att.dirs.insert(v.name.clone(), vdir);
        } else if let Some(h) = &v.host_path {
            att.dirs.insert(v.name.clone(), PathBuf::from(&h.path));
        }
    }
    Ok(att)
}

/// The environment of one container: the image's, `envFrom`, then `env` (with `$(VAR)`
/// references to earlier variables), as the kubelet builds it.
pub async fn environment(
    ctx: &Ctx,
    pod: &Pod,
    c: &k8s_openapi::api::core::v1::Container,
    image_env: &[(String, String)],
) -> Result<BTreeMap<String, String>, String> {
    let ns = pod.namespace().unwrap_or_default();
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert(
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    env.insert("HOSTNAME".into(), pod.name_any());
    // The `kubernetes` Service's variables, which in-cluster clients read.
    if let Some(a) = ctx.opts.api_server {
        let (host, port) = (a.ip().to_string(), a.port().to_string());
        env.insert("KUBERNETES_SERVICE_HOST".into(), host.clone());
        env.insert("KUBERNETES_SERVICE_PORT".into(), port.clone());
        env.insert("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.clone());
        env.insert("KUBERNETES_PORT".into(), format!("tcp://{host}:{port}"));
    }
    for (k, v) in image_env {
        env.insert(k.clone(), v.clone());
    }
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, optional, what, name) = if let Some(s) = &from.secret_ref {
            (
                secret_data(ctx, &ns, &s.name).await?,
                s.optional == Some(true),
                "secret",
                s.name.clone(),
            )
        } else if let Some(cm) = &from.config_map_ref {
            (
                config_map_data(ctx, &ns, &cm.name).await?,
                cm.optional == Some(true),
                "configmap",
                cm.name.clone(),
            )
        } else {
            continue;
        };
        match data {
            Some(d) => {
                for (k, v) in d {
                    env.insert(
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v).into_owned(),
                    );
                }
            }
            None if optional => {}
            None => return Err(format!("{what} {name:?} not found")),
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            super::command::expand(v, &env)
        } else if let Some(from) = &e.value_from {
            if let Some(r) = &from.secret_key_ref {
                match secret_data(ctx, &ns, &r.name).await? {
                    Some(d) => match d.get(&r.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in Secret {ns}/{}",
                                r.key, r.name
                            ))
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(format!("secret {:?} not found", r.name)),
                }
            } else if let Some(r) = &from.config_map_key_ref {
                match config_map_data(ctx, &ns, &r.name).await? {
                    Some(d) => match d.get(&r.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in ConfigMap {ns}/{}",
                                r.key, r.name
                            ))
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(format!("configmap {:?} not found", r.name)),
                }
            } else if let Some(f) = &from.field_ref {
                field(pod, &f.field_path).unwrap_or_default()
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.insert(e.name.clone(), value);
    }
    Ok(env)
}

/// Files of the downward API's `fieldRef` items (resource fields are not simulated).
fn write_downward(
    dir: &Path,
    pod: &Pod,
    items: &[k8s_openapi::api::core::v1::DownwardAPIVolumeFile],
    mode: i32,
) -> Result<(), String> {
    let mut data = BTreeMap::new();
    let mut paths = Vec::new();
    for i in items {
        if let Some(f) = &i.field_ref {
            let v = field(pod, &f.field_path)
                .ok_or_else(|| format!("unsupported fieldPath {:?}", f.field_path))?;
            data.insert(i.path.clone(), v.into_bytes());
            paths.push(KeyToPath {
                key: i.path.clone(),
                path: i.path.clone(),
                mode: i.mode,
            });
        }
    }
    write_files(dir, &data, Some(&paths), mode)
}

/// The downward API's fields.
fn field(pod: &Pod, path: &str) -> Option<String> {
    let spec = pod.spec.as_ref();
    Some(match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace()?,
        "metadata.uid" => pod.uid()?,
        "spec.nodeName" => spec?.node_name.clone()?,
        "spec.serviceAccountName" => spec?
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into()),
        "status.hostIP" | "status.podIP" => "127.0.0.1".into(),
        p => {
            let (map, key) = if let Some(k) = p.strip_prefix("metadata.labels['") {
                (pod.labels(), k.strip_suffix("']")?)
            } else if let Some(k) = p.strip_prefix("metadata.annotations['") {
                (pod.annotations(), k.strip_suffix("']")?)
            } else {
                return None;
            };
            map.get(key)?.clone()
        }
    })
}
