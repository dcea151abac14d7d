//! The repository's `config` object: format version, chunk size, encryption and pack sizes.
//!
//! The config is plaintext, so that a repository can be recognised and its chunk size known
//! before it is unlocked. From format 2 an encrypted repository's config also holds a sealed
//! copy of its security-relevant fields ([`SecuredFields`]); unlocking checks the plaintext
//! against it, so a config whose fields were changed in the store is refused.

use serde::{Deserialize, Serialize};

pub(crate) use crate::layout::{FORMAT_NAME, FORMAT_VERSION, OLDEST_FORMAT_VERSION};

/// Default chunk size: 64 KiB (see docs/benchmarks.md for the measured trade-off).
pub(crate) const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Smallest and largest chunk sizes `init` accepts.
pub(crate) const MIN_CHUNK_SIZE: u32 = 4 * 1024;
/// See [`MIN_CHUNK_SIZE`].
pub(crate) const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// Default target size of data packs.
pub(crate) const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;
/// Default target size of tree packs.
pub(crate) const DEFAULT_TREE_PACK_SIZE: u32 = 4 * 1024 * 1024;

/// The `config` object.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepoConfig {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// The format version; see `docs/format.md`.
    pub version: u32,
    /// Random repository id, hex.
    pub id: String,
    /// Bytes per chunk slot.
    pub chunk_size: u32,
    /// `xchacha20poly1305` or `none`.
    pub encryption: String,
    /// Target size of data packs.
    pub pack_size: u32,
    /// Target size of tree packs.
    pub tree_pack_size: u32,
    /// The id key, hex; only in unencrypted repositories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_key: Option<String>,
    /// When the repository was created.
    pub created: String,
    /// Key slots written at `init` (`keys/<id>`), so opening needs no listing; slots added
    /// later are found by listing `keys/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_slots: Vec<String>,
    /// Format 2, encrypted: the [`SecuredFields`] as JSON, sealed with the data key (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_fields: Option<String>,
}

/// The fields of the config that an attacker who can write the store must not change: they
/// decide whether data is encrypted, how it is cut and named, and which format it follows.
/// Their JSON, sealed, is `sealedFields`.
pub(crate) const SECURED_FIELDS: [&str; 7] = [
    "format",
    "version",
    "id",
    "chunkSize",
    "encryption",
    "packSize",
    "treePackSize",
];

/// The secured fields of a config, by their JSON names.
pub(crate) type SecuredFields = serde_json::Map<String, serde_json::Value>;

impl RepoConfig {
    /// True for an encrypted repository.
    pub fn is_encrypted(&self) -> bool {
        self.encryption != "none"
    }

    /// The security-relevant fields as the plaintext states them.
    pub(crate) fn secured_fields(&self) -> SecuredFields {
        let Ok(serde_json::Value::Object(mut all)) = serde_json::to_value(self) else {
            return SecuredFields::new();
        };
        all.retain(|name, _| SECURED_FIELDS.contains(&name.as_str()));
        all
    }

    /// The repository id as 16 bytes, if it is 32 hex digits.
    pub(crate) fn id_bytes(&self) -> Option<[u8; 16]> {
        hex::decode(&self.id)
            .ok()
            .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
    }
}

/// The secured fields in which `plain` (the config) and `sealed` (its sealed copy) differ,
/// with both values, for an error message (`chunkSize is 131072 in the config but 65536 in
/// its sealed copy`).
pub(crate) fn differences(plain: &SecuredFields, sealed: &SecuredFields) -> Vec<String> {
    SECURED_FIELDS
        .iter()
        .filter(|name| plain.get(**name) != sealed.get(**name))
        .map(|name| {
            let show = |v: Option<&serde_json::Value>| {
                v.map_or_else(|| "absent".to_string(), |v| v.to_string())
            };
            format!(
                "{name} is {} in the config but {} in its sealed copy",
                show(plain.get(*name)),
                show(sealed.get(*name))
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RepoConfig {
        RepoConfig {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            id: "00112233445566778899aabbccddeeff".into(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            encryption: "xchacha20poly1305".into(),
            pack_size: DEFAULT_PACK_SIZE,
            tree_pack_size: DEFAULT_TREE_PACK_SIZE,
            id_key: None,
            created: "2026-01-01T00:00:00Z".into(),
            key_slots: vec!["0011223344556677".into()],
            sealed_fields: None,
        }
    }

    #[test]
    fn the_secured_fields_are_exactly_the_named_ones() {
        let fields = config().secured_fields();
        let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
        let mut expected = SECURED_FIELDS.to_vec();
        expected.sort_unstable();
        names.sort_unstable();
        assert_eq!(names, expected);
    }

    #[test]
    fn every_changed_field_is_named_with_both_values() {
        let kept = config().secured_fields();
        let mut changed = config();
        changed.chunk_size = 131072;
        changed.encryption = "none".into();
        // Fields outside the secured set may change freely.
        changed.created = "later".into();
        changed.key_slots.clear();
        let found = differences(&changed.secured_fields(), &kept);
        assert_eq!(
            found,
            vec![
                "chunkSize is 131072 in the config but 65536 in its sealed copy".to_string(),
                "encryption is \"none\" in the config but \"xchacha20poly1305\" in its sealed copy"
                    .to_string(),
            ]
        );
        assert!(differences(&config().secured_fields(), &kept).is_empty());
    }
}
