//! The object layout of a repository, in one place: where every kind of object lives (key
//! prefixes and key builders), what a valid backup id looks like, the format versions, the AAD
//! that binds a sealed object to its kind, key and repository ([`aad`]), the running backup's
//! session record ([`session`]) and typed reads and writes of sealed records ([`sealed`]).
//!
//! `docs/format.md` describes the same layout for readers of the repository; a change here is
//! a change of the format.
//!
//! ```text
//! config                      the repository config (plaintext, with a sealed copy)
//! keys/<id>                   key slots
//! backups/<id>                manifests (16 hex digits)
//! trees/<id>                  tree tables
//! packs/<xx>/<hash>           packs of chunks and tree pages
//! index/<hash>                index objects
//! sessions/<volume key>       running backups
//! latest/<volume key>         newest backup of a volume
//! protected/<id>              backups `forget` keeps
//! quarantine/{chunks,backups,volumes,packs}/…   verify's findings
//! gc/{pending,removed,deleting,lease}/…, gc/markers   prune's records
//! ```

pub(crate) mod aad;
pub(crate) mod sealed;
pub(crate) mod session;

use crate::id::ChunkId;

/// The format version this build writes and the newest it reads.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// The oldest format version this build reads (and writes, in a repository of that version).
pub(crate) const OLDEST_FORMAT_VERSION: u32 = 1;
/// The value of `config.format`, so a stray JSON object is not taken for a repository.
pub(crate) const FORMAT_NAME: &str = "s3mover-repository";

/// The repository config.
pub(crate) const CONFIG_KEY: &str = "config";
/// Key slots: the master key sealed under a password-derived key.
pub(crate) const KEYS: &str = "keys/";
/// Manifests, one a backup.
pub(crate) const BACKUPS: &str = "backups/";
/// Tree tables, one a backup.
pub(crate) const TREES: &str = "trees/";
/// Packs of chunks and tree pages.
pub(crate) const PACKS: &str = "packs/";
/// Index objects: where each blob of the packs lies.
pub(crate) const INDEX: &str = "index/";
/// Sessions of running (or crashed) backups, one a volume.
pub(crate) const SESSIONS: &str = "sessions/";
/// The newest backup of each volume.
pub(crate) const LATEST: &str = "latest/";
/// Backups that `forget` keeps whatever its policy.
pub(crate) const PROTECTED: &str = "protected/";
/// Verify's records of bad chunks.
pub(crate) const QUARANTINE_CHUNKS: &str = "quarantine/chunks/";
/// Verify's records of bad backups.
pub(crate) const QUARANTINE_BACKUPS: &str = "quarantine/backups/";
/// Verify's records of volumes whose backups use a quarantined chunk.
pub(crate) const QUARANTINE_VOLUMES: &str = "quarantine/volumes/";
/// Where verify records a pack whose own header is damaged: an empty object named by the
/// pack, which makes the next prune copy the pack's blobs (located through the index) into a
/// new pack and delete it. A forged record costs only that copy.
pub(crate) const QUARANTINE_PACKS: &str = "quarantine/packs/";
/// A prune's pending sets.
pub(crate) const GC_PENDING: &str = "gc/pending/";
/// The ids a sweep removes.
pub(crate) const GC_REMOVED: &str = "gc/removed/";
/// Deletion markers.
pub(crate) const GC_DELETING: &str = "gc/deleting/";
/// Prune leases.
pub(crate) const GC_LEASE: &str = "gc/lease/";
/// The directory of deletion markers.
pub(crate) const GC_MARKERS_KEY: &str = "gc/markers";

/// Hex digits of a backup id.
pub(crate) const BACKUP_ID_DIGITS: usize = 16;

/// True when `id` has the form of a backup id: 16 hex digits.
pub(crate) fn is_backup_id(id: &str) -> bool {
    id.len() == BACKUP_ID_DIGITS && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The key of a backup's manifest.
pub(crate) fn manifest_key(id: &str) -> String {
    format!("{BACKUPS}{id}")
}

/// The key of a backup's tree table.
pub(crate) fn tree_table_key(backup_id: &str) -> String {
    format!("{TREES}{backup_id}")
}

/// The key of a pack, fanned out by its first two hex digits.
pub(crate) fn pack_key(name: &ChunkId) -> String {
    let hex = name.to_hex();
    format!("{PACKS}{}/{}", &hex[..2], hex)
}

/// The key of an index object, named by the hash of its sealed bytes.
pub(crate) fn index_key(sealed: &[u8]) -> String {
    format!("{INDEX}{}", blake3::hash(sealed).to_hex())
}

/// The key of the session of the volume with this volume key.
pub(crate) fn session_key(volume_key: &str) -> String {
    format!("{SESSIONS}{volume_key}")
}

/// The key of the pointer to the newest backup of the volume with this volume key.
pub(crate) fn latest_key(volume_key: &str) -> String {
    format!("{LATEST}{volume_key}")
}

/// The key of a key slot.
pub(crate) fn key_slot_key(id: &str) -> String {
    format!("{KEYS}{id}")
}

/// The key of a quarantine record of a chunk.
pub(crate) fn quarantined_chunk_key(id: &ChunkId) -> String {
    format!("{QUARANTINE_CHUNKS}{}", id.to_hex())
}

/// The key of a quarantine record of a backup.
pub(crate) fn quarantined_backup_key(id: &str) -> String {
    format!("{QUARANTINE_BACKUPS}{id}")
}

/// The key of the record of a pack with a damaged header.
pub(crate) fn damaged_pack_key(pack: &ChunkId) -> String {
    format!("{QUARANTINE_PACKS}{}", pack.to_hex())
}

/// The removed-set key that goes with a deletion marker's key.
pub(crate) fn removed_key_of_marker(marker_key: &str) -> String {
    marker_key.replacen(GC_DELETING, GC_REMOVED, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_ids_are_sixteen_hex_digits() {
        assert!(is_backup_id("0123456789abcdef"));
        assert!(!is_backup_id("0123456789abcde"));
        assert!(!is_backup_id("0123456789abcdefa"));
        assert!(!is_backup_id("0123456789abcdeg"));
        assert!(!is_backup_id(""));
    }

    #[test]
    fn keys_have_their_prefixes() {
        assert_eq!(manifest_key("ab"), "backups/ab");
        assert_eq!(tree_table_key("ab"), "trees/ab");
        assert_eq!(session_key("v"), "sessions/v");
        assert_eq!(latest_key("v"), "latest/v");
        assert_eq!(
            removed_key_of_marker("gc/deleting/000000000001-x"),
            "gc/removed/000000000001-x"
        );
        let name = ChunkId::from_hex(&"ab".repeat(32)).expect("id");
        assert_eq!(pack_key(&name), format!("packs/ab/{}", "ab".repeat(32)));
    }
}
