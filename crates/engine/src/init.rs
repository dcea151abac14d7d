//! Creating a repository: checks that the location is empty, makes the master key and the
//! first key slot, seals the config's security fields, writes the empty deletion-marker
//! directory, and writes the config last (a repository exists once its config does).
//!
//! Kept apart from `repo.rs` so that opening and reading a repository does not depend on the
//! garbage collector's objects.

use bytes::Bytes;
use zeroize::Zeroizing;

use crate::config::{self, RepoConfig, FORMAT_NAME, FORMAT_VERSION, OLDEST_FORMAT_VERSION};
use crate::crypto::{self, KeySlot, Keys};
use crate::error::{Error, Result};
use crate::layout;
use crate::layout::aad::{Binding, ObjectKind};
use crate::repo::Repository;
use crate::storage::Store;

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
    /// The format version to write: `FORMAT_VERSION`; an older one only to test that
    /// repositories made by earlier versions still open.
    #[doc(hidden)]
    pub format_version: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunk_size: config::DEFAULT_CHUNK_SIZE,
            password: None,
            pack_size: config::DEFAULT_PACK_SIZE,
            kdf: crypto::KdfCost::DEFAULT,
            format_version: FORMAT_VERSION,
        }
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
        if store.get_optional(layout::CONFIG_KEY).await?.is_some() {
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
        let version = options.format_version;
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(Error::Invalid(format!(
                "format version {version} is not one this s3mover writes"
            )));
        }
        let master = crypto::random_key();
        let mut repository_id = [0u8; 16];
        repository_id.copy_from_slice(&crypto::random_key()[..16]);
        let mut key_slots = Vec::new();
        let (keys, encryption, id_key) = match &options.password {
            Some(password) => {
                let bound =
                    (version >= crate::layout::aad::BOUND_FROM_VERSION).then_some(&repository_id);
                let slot = KeySlot::create(&master, password.as_bytes(), options.kdf, bound)?;
                let slot_json = serde_json::to_vec_pretty(&slot)
                    .map_err(|e| Error::Internal(format!("cannot encode key slot: {e}")))?;
                let slot_id = hex::encode(&crypto::random_key()[..8]);
                store
                    .put(&layout::key_slot_key(&slot_id), Bytes::from(slot_json))
                    .await?;
                key_slots.push(slot_id);
                (Keys::from_master(&master), "xchacha20poly1305", None)
            }
            None => (Keys::plain(master), "none", Some(hex::encode(master))),
        };
        let mut config = RepoConfig {
            format: FORMAT_NAME.into(),
            version,
            id: hex::encode(repository_id),
            chunk_size,
            encryption: encryption.into(),
            pack_size: options.pack_size,
            tree_pack_size: config::DEFAULT_TREE_PACK_SIZE,
            id_key,
            created: crate::time_util::now_rfc3339(),
            key_slots,
            sealed_fields: None,
        };
        let binding = Binding::new(config.version, &config.id);
        if config.is_encrypted() && binding.binds_names() {
            let fields = serde_json::to_vec(&config.secured_fields())
                .map_err(|e| Error::Internal(format!("cannot encode config: {e}")))?;
            let sealed = keys.sealer().seal(
                &fields,
                &binding.aad(ObjectKind::Config, layout::CONFIG_KEY),
            );
            config.sealed_fields = Some(hex::encode(sealed));
        }
        let config_json = serde_json::to_vec_pretty(&config)
            .map_err(|e| Error::Internal(format!("cannot encode config: {e}")))?;
        let repo = Repository::assemble(store, config, keys);
        // An empty marker directory, so that backups never list `gc/deleting/`.
        crate::gc::write_marker_directory(&repo, &[]).await?;
        // The config is written last: a repository exists once its config does.
        repo.store()
            .put(layout::CONFIG_KEY, Bytes::from(config_json))
            .await?;
        Ok(repo)
    }
}
