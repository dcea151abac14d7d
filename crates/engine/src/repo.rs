//! Opening repositories (creating one is `init.rs`), and the operations on their small objects: config, key
//! slots, manifests and the per-volume `latest` pointers.

use std::sync::Arc;

use bytes::Bytes;

use crate::config::{
    self, RepoConfig, SecuredFields, FORMAT_NAME, FORMAT_VERSION, OLDEST_FORMAT_VERSION,
};
use crate::crypto::{self, KeySlot, Keys, Sealer, SlotContents};
use crate::error::{Error, Result};
use crate::id::IdHasher;
use crate::layout;
use crate::layout::aad::{Binding, ObjectKind};
use crate::manifest::Manifest;
use crate::storage::Store;

/// An open repository: its store, config and keys.
#[derive(Clone)]
pub struct Repository {
    store: Store,
    config: RepoConfig,
    sealer: Arc<Sealer>,
    hasher: IdHasher,
    binding: Binding,
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

    /// A repository over `store` with its config and keys (`init.rs` makes new ones).
    pub(crate) fn assemble(store: Store, config: RepoConfig, keys: Keys) -> Repository {
        Repository {
            store,
            sealer: Arc::new(keys.sealer()),
            hasher: IdHasher::new(keys.id_key),
            binding: Binding::new(config.version, &config.id),
            config,
        }
    }

    /// Seals an object of `kind` to be stored under `key`, bound to both (see `crate::layout::aad`).
    pub(crate) fn seal_object(&self, kind: ObjectKind, key: &str, plaintext: &[u8]) -> Vec<u8> {
        self.sealer.seal(plaintext, &self.binding.aad(kind, key))
    }

    /// Opens an object of `kind` read from `key`; an object that was damaged, or sealed as
    /// another kind, under another key or in another repository, is corrupt data naming `key`.
    pub(crate) fn open_object(
        &self,
        kind: ObjectKind,
        key: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        self.sealer
            .open(sealed, &self.binding.aad(kind, key))
            .map_err(|e| Error::corrupt_object(key, format!("{key}: {e}")))
    }

    /// What binds this repository's objects.
    pub(crate) fn binding(&self) -> &Binding {
        &self.binding
    }

    /// Checks the config's plaintext against its sealed copy (format 2, encrypted).
    fn check_sealed_fields(&self) -> Result<()> {
        let refused = |why: String| {
            Error::corrupt_object(
                layout::CONFIG_KEY,
                format!(
                "config: {why}; the config was changed or damaged, and the repository is not used"
            ),
            )
        };
        let Some(text) = &self.config.sealed_fields else {
            return Err(refused("it has no sealed copy of its fields".into()));
        };
        let sealed = hex::decode(text)
            .map_err(|_| refused("its sealed copy of its fields is not hex".into()))?;
        let json = self
            .sealer
            .open(
                &sealed,
                &self.binding.aad(ObjectKind::Config, layout::CONFIG_KEY),
            )
            .map_err(|e| refused(format!("its sealed copy of its fields does not open ({e})")))?;
        let kept: SecuredFields = serde_json::from_slice(&json)
            .map_err(|e| refused(format!("its sealed copy of its fields is not valid ({e})")))?;
        let differences = config::differences(&self.config.secured_fields(), &kept);
        if differences.is_empty() {
            Ok(())
        } else {
            Err(refused(differences.join(", ")))
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
    pub(crate) fn sealer(&self) -> &Arc<Sealer> {
        &self.sealer
    }

    /// The id hasher.
    pub(crate) fn hasher(&self) -> &IdHasher {
        &self.hasher
    }

    /// Bytes per chunk slot.
    pub(crate) fn chunk_size(&self) -> u64 {
        u64::from(self.config.chunk_size)
    }

    /// The object key that names a volume (`latest/<key>`, `sessions/<key>`).
    pub(crate) fn volume_key(&self, volume: &str) -> String {
        self.hasher.name_key(volume)
    }

    /// Writes a manifest: the commit point of a backup.
    pub(crate) async fn write_manifest(&self, manifest: &Manifest) -> Result<u64> {
        self.write_record(&manifest_key(&manifest.id), manifest)
            .await
    }

    /// Reads one manifest by its full id.
    pub async fn read_manifest(&self, id: &str) -> Result<Manifest> {
        let key = manifest_key(id);
        let sealed = self.store.get(&key).await.map_err(|e| {
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
            .open(&sealed, &self.binding.aad(ObjectKind::Manifest, &key))
            .map_err(|e| {
                Error::corrupt_object(&key, format!("manifest of backup {id} ({key}): {e}"))
            })?;
        let manifest: Manifest = serde_json::from_slice(&json).map_err(|e| {
            Error::corrupt_object(
                &key,
                format!("manifest of backup {id} ({key}) is not valid: {e}"),
            )
        })?;
        if manifest.id != id {
            return Err(Error::corrupt_object(&key, format!(
                "manifest of backup {id} ({key}) is the manifest of backup {}: it was moved or copied from another backup's name",
                manifest.id
            )));
        }
        Ok(manifest)
    }

    /// Every backup id in the repository.
    pub(crate) async fn list_backup_ids(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self
            .store
            .list(layout::BACKUPS)
            .await?
            .into_iter()
            .filter_map(|o| o.key.strip_prefix(layout::BACKUPS).map(str::to_string))
            .filter(|id| layout::is_backup_id(id))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Every manifest that can be read, oldest first, optionally of one volume only; a
    /// damaged manifest is logged as a warning that says how to remove it, and skipped.
    pub async fn list_manifests(&self, volume: Option<&str>) -> Result<Vec<Manifest>> {
        let scan = self.scan_manifests(volume).await?;
        for damaged in &scan.damaged {
            tracing::warn!("{damaged}");
        }
        Ok(scan.manifests)
    }

    /// Every manifest, oldest first, optionally of one volume only, and the backups whose
    /// manifest cannot be read (of any volume: a damaged manifest does not say its volume).
    pub async fn scan_manifests(&self, volume: Option<&str>) -> Result<ManifestScan> {
        use futures::{StreamExt, TryStreamExt};
        let ids = self.list_backup_ids().await?;
        let read: Vec<std::result::Result<Option<Manifest>, DamagedBackup>> =
            futures::stream::iter(ids)
                .map(|id| async move {
                    match self.read_manifest(&id).await {
                        Ok(m) => Ok(Ok(Some(m))),
                        // Forgotten since the listing.
                        Err(Error::NoSuchBackup(_)) => Ok(Ok(None)),
                        Err(Error::Corrupt {
                            reason: problem, ..
                        }) => Ok(Err(DamagedBackup { id, problem })),
                        Err(e) => Err(e),
                    }
                })
                .buffer_unordered(16)
                .try_collect()
                .await?;
        let mut scan = ManifestScan::default();
        for result in read {
            match result {
                Ok(Some(m)) if volume.is_none_or(|v| m.volume == v) => scan.manifests.push(m),
                Ok(_) => {}
                Err(damaged) => scan.damaged.push(damaged),
            }
        }
        scan.manifests
            .sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
        scan.damaged.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(scan)
    }

    /// Resolves `latest` (with a volume), a full id, or a unique id prefix to a manifest.
    pub async fn resolve_backup(&self, spec: &str, volume: Option<&str>) -> Result<Manifest> {
        if spec == "latest" {
            let volume = volume.ok_or_else(|| {
                Error::Invalid("`latest` needs --volume NAME to say which volume".into())
            })?;
            let mut scan = self.scan_manifests(Some(volume)).await?;
            if !scan.damaged.is_empty() {
                self.refuse_damaged_latest(volume, &scan.damaged).await?;
            }
            let newest = scan.manifests.pop();
            return newest.ok_or_else(|| {
                Error::NoSuchBackup(format!(
                    "volume {volume:?} has no backups in this repository"
                ))
            });
        }
        let one = self.resolve_backup_id(spec).await?;
        let manifest = self.read_manifest(&one).await?;
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

    /// Resolves a full id or a unique id prefix to a backup id, from the listing alone (the
    /// manifest is not read, so this works for a backup whose manifest is damaged).
    pub(crate) async fn resolve_backup_id(&self, spec: &str) -> Result<String> {
        if spec.trim().is_empty() {
            return Err(Error::Invalid(
                "an empty backup id matches nothing; give an id, a unique prefix or `latest`"
                    .into(),
            ));
        }
        let spec_lower = spec.to_ascii_lowercase();
        let mut matches: Vec<String> = self
            .list_backup_ids()
            .await?
            .into_iter()
            .filter(|id| id.starts_with(&spec_lower))
            .collect();
        match matches.len() {
            1 => Ok(matches.remove(0)),
            0 => Err(Error::NoSuchBackup(format!(
                "no backup id starts with {spec:?}; `s3mover backups` lists them"
            ))),
            n => Err(Error::NoSuchBackup(format!(
                "{spec:?} matches {n} backups ({}); give more digits",
                matches.join(", ")
            ))),
        }
    }

    /// The newest backup of a volume, found through its `latest` pointer without a listing. A
    /// volume without a pointer has no parent (its first backup, or one whose pointer write was
    /// interrupted: then the next backup is a full one, which is always correct); a stale
    /// pointer (its backup was forgotten) or one that cannot be read falls back to a listing.
    pub(crate) async fn latest_backup(&self, volume: &str) -> Result<Option<Manifest>> {
        let id = match self.latest_pointer(volume).await? {
            LatestPointer::Absent => return Ok(None),
            // Only a hint: a damaged pointer costs the listing it would have saved.
            LatestPointer::Damaged => return Ok(self.list_manifests(Some(volume)).await?.pop()),
            LatestPointer::Names(id) => id,
        };
        match self.read_manifest(&id).await {
            Ok(m) if m.volume == volume => return Ok(Some(m)),
            Ok(_) | Err(Error::NoSuchBackup(_)) => {}
            // A damaged parent is not used; the listing finds the newest readable one.
            Err(Error::Corrupt {
                reason: problem, ..
            }) => tracing::warn!("{problem}"),
            Err(e) => return Err(e),
        }
        Ok(self.list_manifests(Some(volume)).await?.pop())
    }

    /// With damaged manifests about (whose volume is unknown), `latest` of `volume` is the
    /// newest readable one only if the volume's `latest/` pointer does not name a damaged one:
    /// then the newest backup is damaged, and restoring an older one instead is for the user
    /// to choose.
    async fn refuse_damaged_latest(&self, volume: &str, damaged: &[DamagedBackup]) -> Result<()> {
        let named = match self.latest_pointer(volume).await? {
            LatestPointer::Names(id) => Some(id),
            LatestPointer::Absent | LatestPointer::Damaged => None,
        };
        if let Some(bad) = damaged.iter().find(|d| Some(&d.id) == named.as_ref()) {
            return Err(Error::corrupt_object(&layout::manifest_key(&bad.id), format!(
                "the newest backup of volume {volume:?} is damaged: {}; restore an older backup by its id (`s3mover backups --volume {volume}`)",
                bad.problem
            )));
        }
        for bad in damaged {
            tracing::warn!("{bad}");
        }
        Ok(())
    }

    /// What the volume's `latest/` pointer says (a damaged one is logged and not followed).
    async fn latest_pointer(&self, volume: &str) -> Result<LatestPointer> {
        let key = layout::latest_key(&self.volume_key(volume));
        let bytes = match self.store.get_optional(&key).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(LatestPointer::Absent),
            Err(e) => {
                tracing::warn!("cannot read {key} ({e}); listing the volume's backups instead");
                return Ok(LatestPointer::Damaged);
            }
        };
        let bytes = if self.binding.binds_names() {
            match self.open_object(ObjectKind::Latest, &key, &bytes) {
                Ok(plain) => plain,
                Err(e) => {
                    tracing::warn!("ignoring a damaged pointer: {e}");
                    return Ok(LatestPointer::Damaged);
                }
            }
        } else {
            bytes.to_vec()
        };
        Ok(LatestPointer::Names(
            String::from_utf8_lossy(&bytes).trim().to_string(),
        ))
    }

    /// Points `latest/<volume>` at a backup.
    pub(crate) async fn set_latest(&self, volume: &str, id: &str) -> Result<u64> {
        let key = layout::latest_key(&self.volume_key(volume));
        let body = if self.binding.binds_names() {
            self.seal_object(ObjectKind::Latest, &key, id.as_bytes())
        } else {
            id.as_bytes().to_vec()
        };
        let size = body.len() as u64;
        self.store.put(&key, Bytes::from(body)).await?;
        Ok(size)
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
    pub(crate) fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// Unlocks the repository with `password` if it is encrypted.
    pub async fn unlock(self, password: Option<&str>) -> Result<Repository> {
        let LockedRepository { store, config } = self;
        let keys = if config.is_encrypted() {
            let password = password.ok_or(Error::PasswordRequired)?;
            let (slot, contents) = unlock(&store, &config.key_slots, password).await?;
            check_slot_matches_config(&config, &slot, &contents)?;
            Keys::from_master(&contents.master)
        } else {
            refuse_plaintext_over_key_slots(&store, &config).await?;
            if password.is_some() {
                tracing::warn!(
                    "the repository is unencrypted (made with --insecure-no-encryption): the password is not used"
                );
            }
            let id_key = config
                .id_key
                .as_deref()
                .and_then(|text| hex::decode(text).ok())
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| {
                    Error::corrupt_object(
                        layout::CONFIG_KEY,
                        "config of an unencrypted repository has no valid idKey",
                    )
                })?;
            Keys::plain(id_key)
        };
        let repo = Repository::assemble(store, config, keys);
        if repo.config.is_encrypted() && repo.binding.binds_names() {
            repo.check_sealed_fields()?;
        }
        Ok(repo)
    }
}

/// What a volume's `latest/` pointer says.
enum LatestPointer {
    Absent,
    Damaged,
    Names(String),
}

/// A backup whose manifest exists but cannot be read.
#[derive(Debug, Clone)]
pub struct DamagedBackup {
    /// The backup's id.
    pub id: String,
    /// Why its manifest cannot be read (names the object).
    pub problem: String,
}

impl std::fmt::Display for DamagedBackup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; `s3mover forget {}` removes the backup",
            self.problem, self.id
        )
    }
}

/// The manifests of a repository, and the backups whose manifest cannot be read.
#[derive(Debug, Default)]
pub struct ManifestScan {
    /// Readable manifests, oldest first.
    pub manifests: Vec<Manifest>,
    /// Damaged ones, by id.
    pub damaged: Vec<DamagedBackup>,
}

/// The object key of a backup's manifest.
pub(crate) fn manifest_key(id: &str) -> String {
    layout::manifest_key(id)
}

/// A config that says "unencrypted" in a repository that has key slots was changed: using it
/// would write plaintext into an encrypted repository. One listing of `keys/` per open of an
/// unencrypted repository.
async fn refuse_plaintext_over_key_slots(store: &Store, config: &RepoConfig) -> Result<()> {
    let slot = match config.key_slots.first() {
        Some(id) => Some(layout::key_slot_key(id)),
        None => store
            .list(layout::KEYS)
            .await?
            .into_iter()
            .next()
            .map(|o| o.key),
    };
    match slot {
        Some(slot) => Err(Error::corrupt_object(layout::CONFIG_KEY, format!(
            "config: it says the repository is unencrypted, but the repository has key slots ({slot}): the config was changed, and the repository is not used"
        ))),
        None => Ok(()),
    }
}

/// The slot that opened must belong to the repository and format version the config states:
/// a format-2 slot holds the repository id, so a config whose id was changed, or that was
/// rewritten as format 1 to escape the checks of format 2, is refused.
fn check_slot_matches_config(
    config: &RepoConfig,
    slot: &str,
    contents: &SlotContents,
) -> Result<()> {
    let bound_config = config.version >= crate::layout::aad::BOUND_FROM_VERSION;
    let problem = match (contents.repository_id, bound_config) {
        (None, false) => return Ok(()),
        (None, true) => format!(
            "it says format version {}, but key slot {slot} was made for format version 1",
            config.version
        ),
        (Some(_), false) => format!(
            "it says format version {}, but key slot {slot} was made for format version {} or later",
            config.version,
            crate::layout::aad::BOUND_FROM_VERSION
        ),
        (Some(id), true) if Some(id) == config.id_bytes() => return Ok(()),
        (Some(id), true) => format!(
            "it names repository {}, but key slot {slot} belongs to repository {}",
            config.id,
            hex::encode(id)
        ),
    };
    Err(Error::corrupt_object(
        layout::CONFIG_KEY,
        format!(
            "config: {problem}; the config was changed or damaged, and the repository is not used"
        ),
    ))
}

async fn read_config(store: &Store) -> Result<RepoConfig> {
    let location = store.description().to_string();
    let bytes = match store.get_optional(layout::CONFIG_KEY).await? {
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
    if version < u64::from(OLDEST_FORMAT_VERSION) {
        return Err(Error::corrupt_object(layout::CONFIG_KEY, format!(
            "config: format version {} is not one s3mover ever wrote; the config was changed or damaged",
            value.get("version").map(|v| v.to_string()).unwrap_or_else(|| "(none)".into())
        )));
    }
    serde_json::from_value(value)
        .map_err(|e| Error::corrupt_object(layout::CONFIG_KEY, format!("config object: {e}")))
}

async fn unlock(
    store: &Store,
    known_slots: &[String],
    password: &str,
) -> Result<(String, SlotContents)> {
    // The slots named in the config first (no listing); then any others.
    let mut tried: Vec<String> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for id in known_slots {
        let key = layout::key_slot_key(id);
        match try_slot(store, &key, password).await? {
            SlotTry::Opened(contents) => return Ok((key, contents)),
            SlotTry::Refused => tried.push(key),
            SlotTry::Missing => missing.push(key),
        }
    }
    let untried: Vec<String> = store
        .list(layout::KEYS)
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|key| !tried.contains(key))
        .collect();
    for key in untried {
        match try_slot(store, &key, password).await? {
            SlotTry::Opened(contents) => return Ok((key, contents)),
            SlotTry::Refused => tried.push(key),
            SlotTry::Missing => {}
        }
    }
    if tried.is_empty() {
        let named = if missing.is_empty() {
            String::new()
        } else {
            format!(
                " (the config names {}, which is missing)",
                missing.join(", ")
            )
        };
        return Err(Error::missing(format!(
            "the repository is encrypted but has no key slots under keys/{named}: it cannot be unlocked with any password"
        )));
    }
    if !missing.is_empty() {
        return Err(Error::missing(format!(
            "the password opens none of the repository's {} key slot(s), and key slot(s) {} named by the config are missing: the password may be the right one for a missing slot",
            tried.len(),
            missing.join(", ")
        )));
    }
    Err(crypto::CryptoError::WrongPassword(tried.len()).into())
}

/// What trying one key slot found.
enum SlotTry {
    Opened(SlotContents),
    /// The password is not this slot's.
    Refused,
    Missing,
}

async fn try_slot(store: &Store, key: &str, password: &str) -> Result<SlotTry> {
    let Some(bytes) = store.get_optional(key).await? else {
        return Ok(SlotTry::Missing);
    };
    let slot: KeySlot = serde_json::from_slice(&bytes)
        .map_err(|e| Error::corrupt_object(key, format!("key slot {key}: {e}")))?;
    let password = password.to_string();
    let opened = tokio::task::spawn_blocking(move || slot.unwrap_master(password.as_bytes()))
        .await
        .map_err(|e| Error::Internal(format!("key derivation task failed: {e}")))?
        .map_err(|e| Error::corrupt_object(key, format!("key slot {key}: {e}")))?;
    Ok(match opened {
        Some(contents) => SlotTry::Opened(contents),
        None => SlotTry::Refused,
    })
}
