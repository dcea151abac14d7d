//! Opening and creating repositories, and the operations on their small objects: config, key
//! slots, manifests and the per-volume `latest` pointers.

use std::sync::Arc;

use bytes::Bytes;
use zeroize::Zeroizing;

use crate::config::{self, RepoConfig, FORMAT_NAME, FORMAT_VERSION};
use crate::crypto::{self, KeySlot, Keys, Sealer};
use crate::error::{Error, Result};
use crate::id::IdHasher;
use crate::manifest::Manifest;
use crate::storage::Store;

const MANIFEST_AAD: &[u8] = b"s3mover manifest v1";

/// Settings chosen at `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Bytes per chunk slot.
    pub chunk_size: u32,
    /// `None` makes an unencrypted repository.
    pub password: Option<Zeroizing<String>>,
    /// Target size of data packs.
    pub pack_size: u32,
    /// Argon2id cost of the first key slot (ignored without a password).
    pub kdf: crypto::KdfCost,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunk_size: config::DEFAULT_CHUNK_SIZE,
            password: None,
            pack_size: config::DEFAULT_PACK_SIZE,
            kdf: crypto::KdfCost::DEFAULT,
        }
    }
}

/// An open repository: its store, config and keys.
#[derive(Clone)]
pub struct Repository {
    store: Store,
    config: RepoConfig,
    sealer: Arc<Sealer>,
    hasher: IdHasher,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("store", &self.store)
            .field("id", &self.config.id)
            .finish()
    }
}

impl Repository {
    /// Creates a repository in an empty location.
    pub async fn init(store: Store, options: InitOptions) -> Result<Repository> {
        let chunk_size = options.chunk_size;
        if !(config::MIN_CHUNK_SIZE..=config::MAX_CHUNK_SIZE).contains(&chunk_size)
            || !chunk_size.is_power_of_two()
        {
            return Err(Error::Invalid(format!(
                "chunk size {chunk_size} is not a power of two between {} and {} bytes",
                config::MIN_CHUNK_SIZE,
                config::MAX_CHUNK_SIZE
            )));
        }
        if store.get_optional("config").await?.is_some() {
            return Err(Error::AlreadyExists {
                location: store.description().to_string(),
                what: "an s3mover repository".into(),
            });
        }
        let existing = store.list("").await?;
        if let Some(object) = existing.first() {
            return Err(Error::AlreadyExists {
                location: store.description().to_string(),
                what: format!("other data (for example {:?})", object.key),
            });
        }
        let master = crypto::random_key();
        let mut key_slots = Vec::new();
        let (keys, encryption, id_key) = match &options.password {
            Some(password) => {
                let slot = KeySlot::create(&master, password.as_bytes(), options.kdf)?;
                let slot_json = serde_json::to_vec_pretty(&slot)
                    .map_err(|e| Error::Invalid(format!("cannot encode key slot: {e}")))?;
                let slot_id = hex::encode(&crypto::random_key()[..8]);
                store
                    .put(&format!("keys/{slot_id}"), Bytes::from(slot_json))
                    .await?;
                key_slots.push(slot_id);
                (Keys::from_master(&master), "xchacha20poly1305", None)
            }
            None => (Keys::plain(master), "none", Some(hex::encode(master))),
        };
        let config = RepoConfig {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            id: hex::encode(&crypto::random_key()[..16]),
            chunk_size,
            encryption: encryption.into(),
            pack_size: options.pack_size,
            tree_pack_size: config::DEFAULT_TREE_PACK_SIZE,
            id_key,
            created: crate::time_util::now_rfc3339(),
            key_slots,
        };
        let config_json = serde_json::to_vec_pretty(&config)
            .map_err(|e| Error::Invalid(format!("cannot encode config: {e}")))?;
        let repo = Repository::assemble(store, config, keys);
        // An empty marker directory, so that backups never list `gc/deleting/`.
        crate::gc::write_marker_directory(&repo, &[]).await?;
        // The config is written last: a repository exists once its config does.
        repo.store().put("config", Bytes::from(config_json)).await?;
        Ok(repo)
    }

    /// Opens a repository, unlocking it with `password` if it is encrypted.
    pub async fn open(store: Store, password: Option<&str>) -> Result<Repository> {
        let started = std::time::Instant::now();
        let repo = LockedRepository::read(store)
            .await?
            .unlock(password)
            .await?;
        tracing::debug!(
            "repository opened in {:.3}s",
            started.elapsed().as_secs_f64()
        );
        Ok(repo)
    }

    fn assemble(store: Store, config: RepoConfig, keys: Keys) -> Repository {
        Repository {
            store,
            sealer: Arc::new(keys.sealer()),
            hasher: IdHasher::new(keys.id_key),
            config,
        }
    }

    /// The object store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The repository config.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The sealer for blobs and metadata.
    pub fn sealer(&self) -> &Arc<Sealer> {
        &self.sealer
    }

    /// The id hasher.
    pub fn hasher(&self) -> &IdHasher {
        &self.hasher
    }

    /// Bytes per chunk slot.
    pub fn chunk_size(&self) -> u64 {
        u64::from(self.config.chunk_size)
    }

    /// The object key that names a volume (`latest/<key>`, `sessions/<key>`).
    pub fn volume_key(&self, volume: &str) -> String {
        self.hasher.name_key(volume)
    }

    /// Writes a manifest: the commit point of a backup.
    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<u64> {
        let json = serde_json::to_vec(manifest)
            .map_err(|e| Error::Invalid(format!("cannot encode manifest: {e}")))?;
        let sealed = self.sealer.seal(&json, MANIFEST_AAD);
        let size = sealed.len() as u64;
        self.store
            .put(&format!("backups/{}", manifest.id), Bytes::from(sealed))
            .await?;
        Ok(size)
    }

    /// Reads one manifest by its full id.
    pub async fn read_manifest(&self, id: &str) -> Result<Manifest> {
        let sealed = self
            .store
            .get(&format!("backups/{id}"))
            .await
            .map_err(|e| {
                if e.is_not_found() {
                    Error::NoSuchBackup(format!(
                        "backup {id} does not exist; `s3mover backups` lists them"
                    ))
                } else {
                    e.into()
                }
            })?;
        let json = self
            .sealer
            .open(&sealed, MANIFEST_AAD)
            .map_err(|e| Error::Corrupt(format!("manifest of backup {id}: {e}")))?;
        serde_json::from_slice(&json)
            .map_err(|e| Error::Corrupt(format!("manifest of backup {id} is not valid: {e}")))
    }

    /// Every backup id in the repository.
    pub async fn list_backup_ids(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self
            .store
            .list("backups/")
            .await?
            .into_iter()
            .filter_map(|o| o.key.strip_prefix("backups/").map(str::to_string))
            .filter(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Every manifest, oldest first, optionally of one volume only.
    pub async fn list_manifests(&self, volume: Option<&str>) -> Result<Vec<Manifest>> {
        use futures::{StreamExt, TryStreamExt};
        let ids = self.list_backup_ids().await?;
        let mut manifests: Vec<Manifest> = futures::stream::iter(ids)
            .map(|id| async move { self.read_manifest(&id).await })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        if let Some(volume) = volume {
            manifests.retain(|m| m.volume == volume);
        }
        manifests.sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
        Ok(manifests)
    }

    /// Resolves `latest` (with a volume), a full id, or a unique id prefix to a manifest.
    pub async fn resolve_backup(&self, spec: &str, volume: Option<&str>) -> Result<Manifest> {
        if spec == "latest" {
            let volume = volume.ok_or_else(|| {
                Error::Invalid("`latest` needs --volume NAME to say which volume".into())
            })?;
            let newest = self.list_manifests(Some(volume)).await?.pop();
            return newest.ok_or_else(|| {
                Error::NoSuchBackup(format!(
                    "volume {volume:?} has no backups in this repository"
                ))
            });
        }
        if spec.trim().is_empty() {
            return Err(Error::Invalid(
                "an empty backup id matches nothing; give an id, a unique prefix or `latest`"
                    .into(),
            ));
        }
        let spec_lower = spec.to_ascii_lowercase();
        let matches: Vec<String> = self
            .list_backup_ids()
            .await?
            .into_iter()
            .filter(|id| id.starts_with(&spec_lower))
            .collect();
        match matches.as_slice() {
            [one] => {
                let manifest = self.read_manifest(one).await?;
                if let Some(volume) = volume {
                    if manifest.volume != volume {
                        return Err(Error::NoSuchBackup(format!(
                            "backup {one} is of volume {:?}, not {volume:?}",
                            manifest.volume
                        )));
                    }
                }
                Ok(manifest)
            }
            [] => Err(Error::NoSuchBackup(format!(
                "no backup id starts with {spec:?}; `s3mover backups` lists them"
            ))),
            several => Err(Error::NoSuchBackup(format!(
                "{spec:?} matches {} backups ({}); give more digits",
                several.len(),
                several.join(", ")
            ))),
        }
    }

    /// The newest backup of a volume, found through its `latest` pointer without a listing. A
    /// volume without a pointer has no parent (its first backup, or one whose pointer write was
    /// interrupted: then the next backup is a full one, which is always correct); a stale
    /// pointer (its backup was forgotten) or one that cannot be read falls back to a listing.
    pub async fn latest_backup(&self, volume: &str) -> Result<Option<Manifest>> {
        let key = format!("latest/{}", self.volume_key(volume));
        let bytes = match self.store.get_optional(&key).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::warn!("cannot read {key} ({e}); listing the volume's backups instead");
                return Ok(self.list_manifests(Some(volume)).await?.pop());
            }
        };
        let id = String::from_utf8_lossy(&bytes).trim().to_string();
        match self.read_manifest(&id).await {
            Ok(m) if m.volume == volume => return Ok(Some(m)),
            Ok(_) | Err(Error::NoSuchBackup(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(self.list_manifests(Some(volume)).await?.pop())
    }

    /// Points `latest/<volume>` at a backup.
    pub async fn set_latest(&self, volume: &str, id: &str) -> Result<u64> {
        let key = format!("latest/{}", self.volume_key(volume));
        self.store.put(&key, Bytes::from(id.to_string())).await?;
        Ok(id.len() as u64)
    }
}

/// A repository whose config is read and that is not unlocked yet. Unlocking runs the key
/// derivation, which takes tens of milliseconds by design; what needs only the config (a
/// backup's chunk size, to start reading its source) can start before it.
pub struct LockedRepository {
    store: Store,
    config: RepoConfig,
}

impl LockedRepository {
    /// Reads the config of the repository in `store`.
    pub async fn read(store: Store) -> Result<LockedRepository> {
        let config = read_config(&store).await?;
        Ok(LockedRepository { store, config })
    }

    /// The repository config.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// Unlocks the repository with `password` if it is encrypted.
    pub async fn unlock(self, password: Option<&str>) -> Result<Repository> {
        let LockedRepository { store, config } = self;
        let keys = if config.is_encrypted() {
            let password = password.ok_or(Error::PasswordRequired)?;
            unlock(&store, &config.key_slots, password).await?
        } else {
            let id_key = config
                .id_key
                .as_deref()
                .and_then(|text| hex::decode(text).ok())
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| {
                    Error::Corrupt("config of an unencrypted repository has no valid idKey".into())
                })?;
            Keys::plain(id_key)
        };
        Ok(Repository::assemble(store, config, keys))
    }
}

async fn read_config(store: &Store) -> Result<RepoConfig> {
    let location = store.description().to_string();
    let bytes = match store.get_optional("config").await? {
        Some(bytes) => bytes,
        None => {
            return Err(Error::NotARepository {
                location,
                reason: "it has no config object".into(),
            })
        }
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| Error::NotARepository {
            location: location.clone(),
            reason: "its config object is not s3mover's".into(),
        })?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT_NAME) {
        return Err(Error::NotARepository {
            location,
            reason: "its config object is not s3mover's".into(),
        });
    }
    let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
    if version > u64::from(FORMAT_VERSION) {
        return Err(Error::NewerFormat {
            found: u32::try_from(version).unwrap_or(u32::MAX),
            supported: FORMAT_VERSION,
        });
    }
    serde_json::from_value(value).map_err(|e| Error::Corrupt(format!("config object: {e}")))
}

async fn unlock(store: &Store, known_slots: &[String], password: &str) -> Result<Keys> {
    // The slots named in the config first (no listing); then any others.
    let mut tried: Vec<String> = Vec::new();
    for id in known_slots {
        let key = format!("keys/{id}");
        if let Some(keys) = try_slot(store, &key, password).await? {
            return Ok(keys);
        }
        tried.push(key);
    }
    let listed = store.list("keys/").await?;
    if listed.is_empty() && tried.is_empty() {
        return Err(Error::Corrupt(
            "the repository is encrypted but has no key slots under keys/".into(),
        ));
    }
    let untried: Vec<String> = listed
        .into_iter()
        .map(|o| o.key)
        .filter(|key| !tried.contains(key))
        .collect();
    for key in untried {
        if let Some(keys) = try_slot(store, &key, password).await? {
            return Ok(keys);
        }
        tried.push(key);
    }
    Err(crypto::CryptoError::WrongPassword(tried.len()).into())
}

async fn try_slot(store: &Store, key: &str, password: &str) -> Result<Option<Keys>> {
    let Some(bytes) = store.get_optional(key).await? else {
        return Ok(None);
    };
    {
        let slot: KeySlot = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Corrupt(format!("key slot {key}: {e}")))?;
        let password = password.to_string();
        let opened = tokio::task::spawn_blocking(move || slot.unwrap_master(password.as_bytes()))
            .await
            .map_err(|e| Error::Invalid(format!("key derivation task failed: {e}")))??;
        Ok(opened.map(|master| Keys::from_master(&master)))
    }
}
