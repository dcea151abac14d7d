//! Every kind of sealed object the repository holds, and the associated data (AAD) that binds
//! a sealed object to what it is and where it belongs.
//!
//! In a format-2 repository the AAD of an object is
//! `"s3mover/2\0" || kind label || "\0" || repository id || "\0" || object key`, so an object
//! opens only as its own kind, in its own repository, under its own key: a manifest copied to
//! another backup's key, or an index object moved into another repository, fails
//! authentication. Objects named by a hash of their bytes (index objects, packs) cannot hold
//! their name in their AAD; readers check the name against the hash instead (see
//! [`ObjectKind::bound_to_key`]). Chunks and tree pages are sealed with their id as AAD and
//! their id is recomputed from their plaintext, so they are bound by their content.
//!
//! A format-1 repository keeps its fixed labels ([`ObjectKind::legacy_label`]): its objects are
//! bound to their kind only.

/// The format version from which objects are bound to their key and repository.
pub(crate) const BOUND_FROM_VERSION: u32 = 2;

/// A kind of object the repository seals (or, for key slots and the config, authenticates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// `keys/<id>`: the master key sealed under a password-derived key.
    KeySlot,
    /// The sealed copy of the config's security-relevant fields, kept inside `config`.
    Config,
    /// `backups/<id>`: a backup's manifest.
    Manifest,
    /// `index/<hash>`: pack index records (named by the hash of the sealed object).
    Index,
    /// The sealed header at the end of a pack (the pack is named by the hash of its bytes).
    PackHeader,
    /// `trees/<id>`: a backup's tree table.
    TreeTable,
    /// `sessions/<volume key>`: a running backup's index objects.
    Session,
    /// `latest/<volume key>`: the newest backup of a volume.
    Latest,
    /// `quarantine/…`: verify's records of bad chunks, backups and volumes.
    Quarantine,
    /// `gc/pending/…`: a prune's pending set.
    GcPending,
    /// `gc/removed/…`: the ids a sweep removes.
    GcRemoved,
    /// `gc/deleting/…`: a deletion marker.
    GcMarker,
    /// `gc/lease/…`: a prune's lease.
    GcLease,
    /// `gc/markers`: the marker directory.
    GcMarkerDirectory,
    /// `clusters/<cluster key>/<id>`: a cluster metadata document.
    ClusterMetadata,
}

impl ObjectKind {
    /// Every kind.
    pub const ALL: [ObjectKind; 15] = [
        ObjectKind::KeySlot,
        ObjectKind::Config,
        ObjectKind::Manifest,
        ObjectKind::Index,
        ObjectKind::PackHeader,
        ObjectKind::TreeTable,
        ObjectKind::Session,
        ObjectKind::Latest,
        ObjectKind::Quarantine,
        ObjectKind::GcPending,
        ObjectKind::GcRemoved,
        ObjectKind::GcMarker,
        ObjectKind::GcLease,
        ObjectKind::GcMarkerDirectory,
        ObjectKind::ClusterMetadata,
    ];

    /// The label that names the kind in a format-2 AAD.
    pub(crate) fn label(self) -> &'static str {
        match self {
            ObjectKind::KeySlot => "key slot",
            ObjectKind::Config => "config",
            ObjectKind::Manifest => "manifest",
            ObjectKind::Index => "index",
            ObjectKind::PackHeader => "pack header",
            ObjectKind::TreeTable => "tree table",
            ObjectKind::Session => "session",
            ObjectKind::Latest => "latest",
            ObjectKind::Quarantine => "quarantine",
            ObjectKind::GcPending => "gc pending",
            ObjectKind::GcRemoved => "gc removed",
            ObjectKind::GcMarker => "gc deleting",
            ObjectKind::GcLease => "gc lease",
            ObjectKind::GcMarkerDirectory => "gc marker directory",
            ObjectKind::ClusterMetadata => "cluster metadata",
        }
    }

    /// The fixed AAD of the kind in a format-1 repository. Kinds that format 1 did not seal
    /// (the config's sealed copy, `latest/`) have none: format 1 keeps them in plaintext.
    /// Cluster metadata came after format 1 and has none either: it is sealed with the
    /// format-2 AAD in every repository.
    pub(crate) const fn legacy_label(self) -> Option<&'static [u8]> {
        Some(match self {
            ObjectKind::KeySlot => b"s3mover key slot v1",
            ObjectKind::Manifest => b"s3mover manifest v1",
            ObjectKind::Index => b"s3mover index v1",
            ObjectKind::PackHeader => b"s3mover pack header v1",
            ObjectKind::TreeTable => b"s3mover tree table v1",
            ObjectKind::Session => b"s3mover session v1",
            ObjectKind::Quarantine => b"s3mover quarantine v1",
            // Format 1 sealed removed sets as pending sets.
            ObjectKind::GcPending | ObjectKind::GcRemoved => b"s3mover gc pending v1",
            ObjectKind::GcMarker => b"s3mover gc deleting v1",
            ObjectKind::GcLease => b"s3mover gc lease v1",
            ObjectKind::GcMarkerDirectory => b"s3mover gc marker directory v1",
            ObjectKind::Config | ObjectKind::Latest | ObjectKind::ClusterMetadata => return None,
        })
    }

    /// True when the object's key is part of its AAD. Index objects and packs are named by a
    /// hash of their own bytes, which the AAD cannot contain; readers of index objects check
    /// the hash instead (`check_content_name`), and a pack's blobs are each bound to their id.
    pub fn bound_to_key(self) -> bool {
        !matches!(self, ObjectKind::Index | ObjectKind::PackHeader)
    }
}

/// What binds a repository's objects: its format version and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Binding {
    version: u32,
    repository_id: String,
}

impl Binding {
    /// The binding of the repository with this format version and id (hex).
    pub(crate) fn new(version: u32, repository_id: &str) -> Self {
        Binding {
            version,
            repository_id: repository_id.to_string(),
        }
    }

    /// True when objects are bound to their key and repository (format 2 and later).
    pub(crate) fn binds_names(&self) -> bool {
        self.version >= BOUND_FROM_VERSION
    }

    /// The AAD of the object of `kind` stored under `key`. For a kind that format 1 kept in
    /// plaintext, a format-1 binding gives the format-2 form (never used to seal there).
    pub(crate) fn aad(&self, kind: ObjectKind, key: &str) -> Vec<u8> {
        if !self.binds_names() {
            if let Some(label) = kind.legacy_label() {
                return label.to_vec();
            }
        }
        let key = if kind.bound_to_key() { key } else { "" };
        let mut aad = Vec::with_capacity(32 + self.repository_id.len() + key.len());
        aad.extend_from_slice(b"s3mover/2\0");
        aad.extend_from_slice(kind.label().as_bytes());
        aad.push(0);
        aad.extend_from_slice(self.repository_id.as_bytes());
        aad.push(0);
        aad.extend_from_slice(key.as_bytes());
        aad
    }
}

/// The AAD of a key slot made for a repository of `version`: a slot holds the master key (and
/// from format 2 the repository id), so it is bound to its kind only.
pub(crate) fn key_slot_aad(version: u32) -> &'static [u8] {
    if version >= BOUND_FROM_VERSION {
        b"s3mover/2\0key slot"
    } else {
        b"s3mover key slot v1"
    }
}

/// Checks that an object named `<prefix>/<64 hex>` by the BLAKE3 hash of its sealed bytes
/// (index objects) still has the bytes its name says: an object copied or moved to another
/// name is refused. Returns a one-line reason on a mismatch.
pub(crate) fn check_content_name(key: &str, sealed: &[u8]) -> Result<(), String> {
    let named = key.rsplit('/').next().unwrap_or_default();
    let actual = blake3::hash(sealed).to_hex();
    if named.eq_ignore_ascii_case(actual.as_str()) {
        Ok(())
    } else {
        Err(format!(
            "its bytes hash to {}, not to its name: the object was damaged or moved from another name",
            &actual.as_str()[..16]
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_key_and_repository_gives_another_aad() {
        let one = Binding::new(2, "00112233445566778899aabbccddeeff");
        let other_repo = Binding::new(2, "ffeeddccbbaa99887766554433221100");
        let mut seen = std::collections::HashSet::new();
        for kind in ObjectKind::ALL {
            assert!(
                seen.insert(one.aad(kind, "backups/0000000000000001")),
                "{kind:?}"
            );
            assert_ne!(
                one.aad(kind, "k"),
                other_repo.aad(kind, "k"),
                "{kind:?} is bound to the repository"
            );
            assert_eq!(
                one.aad(kind, "a") != one.aad(kind, "b"),
                kind.bound_to_key(),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn format_one_keeps_its_labels() {
        let legacy = Binding::new(1, "00112233445566778899aabbccddeeff");
        assert_eq!(
            legacy.aad(ObjectKind::Manifest, "backups/0000000000000001"),
            b"s3mover manifest v1"
        );
        assert_eq!(
            legacy.aad(ObjectKind::GcRemoved, "gc/removed/x"),
            legacy.aad(ObjectKind::GcPending, "gc/pending/y")
        );
        assert!(!legacy.binds_names());
    }

    #[test]
    fn a_content_named_object_must_hash_to_its_name() {
        let bytes = b"sealed index bytes";
        let key = format!("index/{}", blake3::hash(bytes).to_hex());
        assert!(check_content_name(&key, bytes).is_ok());
        assert!(check_content_name(&key, b"other bytes").is_err());
        let moved = format!("index/{}", blake3::hash(b"x").to_hex());
        assert!(check_content_name(&moved, bytes)
            .unwrap_err()
            .contains("moved"));
    }
}
