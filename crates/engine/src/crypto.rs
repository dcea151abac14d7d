//! Keys and sealing: the master key, its password-wrapped key slots, and the AEAD that every
//! stored blob goes through.
//!
//! Sealing uses XChaCha20-Poly1305 with a random 192-bit nonce per blob, so nonce reuse is not
//! a concern at any number of blobs. The master key is wrapped by a key derived from the
//! password with Argon2id. An unencrypted repository uses [`Sealer::Plain`], which passes bytes
//! through; everything else about the format is the same.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::layout::aad::{self, key_slot_aad};
use crate::xchacha::{XChaCha20Poly1305, NONCE_LEN, TAG_LEN};

/// Bytes a sealed blob adds to its plaintext: the nonce and the tag.
pub(crate) const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

const DATA_KEY_CONTEXT: &str = "s3mover 2026 data key v1";
const ID_KEY_CONTEXT: &str = "s3mover 2026 chunk id key v1";

/// Why sealing, opening or unwrapping failed.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// Authentication failed: the data was changed, or the key is wrong.
    #[error("authentication failed: the data is corrupt or was sealed with another key")]
    Authentication,
    /// The blob is shorter than a nonce and a tag.
    #[error("sealed data is truncated ({0} bytes)")]
    Truncated(usize),
    /// The blob holds more than the room its reader has for it.
    #[error("it holds {len} bytes, more than the {room} expected")]
    Oversized {
        /// Bytes the blob holds.
        len: usize,
        /// Bytes of room.
        room: usize,
    },
    /// The password opens none of the key slots.
    #[error("wrong password: it opens none of the repository's {0} key slot(s); check S3MOVER_PASSWORD, --password-file or S3MOVER_PASSWORD_COMMAND")]
    WrongPassword(usize),
    /// Key derivation failed (bad parameters in a key slot).
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

/// The repository's secret keys, derived from the master key.
#[derive(Clone)]
pub(crate) struct Keys {
    /// Key for chunk and page ids (keyed BLAKE3).
    pub id_key: [u8; 32],
    /// Key for sealing, `None` in an unencrypted repository.
    pub data_key: Option<Zeroizing<[u8; 32]>>,
}

impl Keys {
    /// Derives the id and data keys from a master key.
    pub(crate) fn from_master(master: &[u8; 32]) -> Self {
        Keys {
            id_key: blake3::derive_key(ID_KEY_CONTEXT, master),
            data_key: Some(Zeroizing::new(blake3::derive_key(DATA_KEY_CONTEXT, master))),
        }
    }

    /// Keys of an unencrypted repository: only the id key, which is stored in `config`.
    pub(crate) fn plain(id_key: [u8; 32]) -> Self {
        Keys {
            id_key,
            data_key: None,
        }
    }

    /// The sealer for these keys.
    pub(crate) fn sealer(&self) -> Sealer {
        match &self.data_key {
            Some(key) => Sealer::XChaCha(Box::new(XChaCha20Poly1305::new(key))),
            None => Sealer::Plain,
        }
    }
}

/// Seals and opens blobs.
pub(crate) enum Sealer {
    /// No encryption: seal and open are the identity.
    Plain,
    /// XChaCha20-Poly1305 with random nonces.
    XChaCha(Box<XChaCha20Poly1305>),
}

impl Sealer {
    /// Seals `plaintext`, binding it to `aad`.
    pub(crate) fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        match self {
            Sealer::Plain => plaintext.to_vec(),
            Sealer::XChaCha(cipher) => seal_with(cipher, plaintext, aad),
        }
    }

    /// Seals the concatenation of `parts` (one copy of the data), binding it to `aad`.
    pub(crate) fn seal_parts(&self, parts: &[&[u8]], aad: &[u8]) -> Vec<u8> {
        match self {
            Sealer::Plain => parts.concat(),
            Sealer::XChaCha(cipher) => seal_parts_with(cipher, parts, aad),
        }
    }

    /// Opens a sealed blob; any change to it, or the wrong `aad`, is an error.
    pub(crate) fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match self {
            Sealer::Plain => Ok(sealed.to_vec()),
            Sealer::XChaCha(cipher) => open_with(cipher, sealed, aad),
        }
    }

    /// Opens a sealed blob into the start of `out` and returns the plaintext's length; a
    /// plaintext longer than `out` is an error, like any change to the blob or the wrong `aad`.
    pub(crate) fn open_into(
        &self,
        sealed: &[u8],
        aad: &[u8],
        out: &mut [u8],
    ) -> Result<usize, CryptoError> {
        let (body, sealing) = match self {
            Sealer::Plain => (sealed, None),
            Sealer::XChaCha(cipher) => {
                let parts = split_sealed(sealed)?;
                (parts.ciphertext, Some((cipher, parts)))
            }
        };
        let room = out.len();
        let dst = out.get_mut(..body.len()).ok_or(CryptoError::Oversized {
            len: body.len(),
            room,
        })?;
        dst.copy_from_slice(body);
        if let Some((cipher, parts)) = sealing {
            cipher
                .open_in_place(parts.nonce, aad, dst, parts.tag)
                .map_err(|_| CryptoError::Authentication)?;
        }
        Ok(body.len())
    }
}

/// The parts of a sealed blob.
struct SealedParts<'a> {
    nonce: &'a [u8; NONCE_LEN],
    ciphertext: &'a [u8],
    tag: &'a [u8; TAG_LEN],
}

/// Splits a sealed blob into nonce, ciphertext and tag.
fn split_sealed(sealed: &[u8]) -> Result<SealedParts<'_>, CryptoError> {
    let truncated = || CryptoError::Truncated(sealed.len());
    let body_len = sealed
        .len()
        .checked_sub(SEAL_OVERHEAD)
        .ok_or_else(truncated)?;
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(body_len);
    match (nonce.try_into(), tag.try_into()) {
        (Ok(nonce), Ok(tag)) => Ok(SealedParts {
            nonce,
            ciphertext,
            tag,
        }),
        _ => Err(truncated()),
    }
}

fn seal_with(cipher: &XChaCha20Poly1305, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    seal_parts_with(cipher, &[plaintext], aad)
}

/// Seals the concatenation of `parts`, copying the data once: nonce and parts go into the
/// output buffer, which is then encrypted in place and followed by the tag.
fn seal_parts_with(cipher: &XChaCha20Poly1305, parts: &[&[u8]], aad: &[u8]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len + SEAL_OVERHEAD);
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    out.extend_from_slice(&nonce);
    for part in parts {
        out.extend_from_slice(part);
    }
    // Encryption only fails for plaintexts beyond 256 GiB, far above any blob.
    match cipher.seal_in_place(&nonce, aad, &mut out[NONCE_LEN..]) {
        Ok(tag) => out.extend_from_slice(&tag),
        Err(_) => out.clear(),
    }
    out
}

fn open_with(
    cipher: &XChaCha20Poly1305,
    sealed: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let parts = split_sealed(sealed)?;
    let mut plaintext = parts.ciphertext.to_vec();
    cipher
        .open_in_place(parts.nonce, aad, &mut plaintext, parts.tag)
        .map_err(|_| CryptoError::Authentication)?;
    Ok(plaintext)
}

/// A key slot: the master key sealed under a password-derived key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeySlot {
    /// Always `argon2id`.
    pub kdf: String,
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
    /// Salt, hex.
    pub salt: String,
    /// The sealed master key, hex.
    pub sealed_master_key: String,
    /// When the slot was made (RFC 3339).
    pub created: String,
}

/// The Argon2id cost of a key slot: what it takes to try one password against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfCost {
    /// The cost of new key slots unless asked otherwise: OWASP's recommended Argon2id
    /// configuration (m = 19 MiB, t = 2, p = 1; Password Storage Cheat Sheet). Repository
    /// passwords are usually long random secrets (a Kubernetes Secret, a secret manager), for
    /// which the KDF matters little; backup jobs run under memory limits, where it matters that
    /// opening a repository does not need 64 MiB. A human-chosen password deserves more:
    /// `init --kdf-memory 64M --kdf-passes 3` is RFC 9106's second recommended option.
    pub const DEFAULT: KdfCost = KdfCost {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };
    /// The least memory accepted for a new slot (OWASP's smallest configuration is 7 MiB).
    pub const MIN_MEMORY_KIB: u32 = 7 * 1024;
    /// The most memory accepted for a new slot.
    pub const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
    /// The most passes accepted for a new slot.
    pub const MAX_ITERATIONS: u32 = 64;

    /// Checks that the cost is within the bounds above; the error says which bound.
    pub fn validate(&self) -> Result<(), CryptoError> {
        if !(Self::MIN_MEMORY_KIB..=Self::MAX_MEMORY_KIB).contains(&self.memory_kib) {
            return Err(CryptoError::Kdf(format!(
                "key derivation memory {} KiB is outside {}..={} KiB (7 MiB to 4 GiB)",
                self.memory_kib,
                Self::MIN_MEMORY_KIB,
                Self::MAX_MEMORY_KIB
            )));
        }
        if !(1..=Self::MAX_ITERATIONS).contains(&self.iterations) {
            return Err(CryptoError::Kdf(format!(
                "key derivation passes {} is outside 1..={}",
                self.iterations,
                Self::MAX_ITERATIONS
            )));
        }
        if !(1..=16).contains(&self.parallelism) {
            return Err(CryptoError::Kdf(format!(
                "key derivation lanes {} is outside 1..=16",
                self.parallelism
            )));
        }
        Ok(())
    }
}

impl Default for KdfCost {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What a key slot holds once unwrapped.
pub(crate) struct SlotContents {
    /// The master key.
    pub master: Zeroizing<[u8; 32]>,
    /// The id of the repository the slot was made for (format 2 and later); `None` for a slot
    /// of a format-1 repository, which held the master key only.
    pub repository_id: Option<[u8; 16]>,
}

impl KeySlot {
    /// Wraps `master` with `password`, at the cost `cost`. With `repository_id` the slot is a
    /// format-2 slot: it holds the repository id beside the master key, so that a config whose
    /// id or format version was changed does not match its slots.
    pub(crate) fn create(
        master: &[u8; 32],
        password: &[u8],
        cost: KdfCost,
        repository_id: Option<&[u8; 16]>,
    ) -> Result<Self, CryptoError> {
        cost.validate()?;
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let wrapping = derive_wrapping_key(
            password,
            &salt,
            cost.memory_kib,
            cost.iterations,
            cost.parallelism,
        )?;
        let cipher = XChaCha20Poly1305::new(&wrapping);
        let sealed = match repository_id {
            Some(id) => seal_parts_with(
                &cipher,
                &[master, id],
                key_slot_aad(aad::BOUND_FROM_VERSION),
            ),
            None => seal_with(&cipher, master, key_slot_aad(1)),
        };
        Ok(KeySlot {
            kdf: "argon2id".into(),
            memory_kib: cost.memory_kib,
            iterations: cost.iterations,
            parallelism: cost.parallelism,
            salt: hex::encode(salt),
            sealed_master_key: hex::encode(sealed),
            created: crate::time_util::now_rfc3339(),
        })
    }

    /// Unwraps the master key (and the repository id of a format-2 slot); `None` when the
    /// password is not this slot's.
    pub(crate) fn unwrap_master(
        &self,
        password: &[u8],
    ) -> Result<Option<SlotContents>, CryptoError> {
        if self.kdf != "argon2id" {
            return Err(CryptoError::Kdf(format!(
                "unknown key derivation {:?}",
                self.kdf
            )));
        }
        let salt = hex::decode(&self.salt).map_err(|e| CryptoError::Kdf(e.to_string()))?;
        let sealed =
            hex::decode(&self.sealed_master_key).map_err(|e| CryptoError::Kdf(e.to_string()))?;
        let wrapping = derive_wrapping_key(
            password,
            &salt,
            self.memory_kib,
            self.iterations,
            self.parallelism,
        )?;
        let cipher = XChaCha20Poly1305::new(&wrapping);
        let (opened, bound) =
            match open_with(&cipher, &sealed, key_slot_aad(aad::BOUND_FROM_VERSION)) {
                Ok(opened) => (Zeroizing::new(opened), true),
                Err(_) => match open_with(&cipher, &sealed, key_slot_aad(1)) {
                    Ok(opened) => (Zeroizing::new(opened), false),
                    Err(_) => return Ok(None),
                },
            };
        let expected = if bound { 32 + 16 } else { 32 };
        if opened.len() != expected {
            return Err(CryptoError::Kdf(
                "key slot holds a key of the wrong length".into(),
            ));
        }
        let mut master = Zeroizing::new([0u8; 32]);
        master.copy_from_slice(&opened[..32]);
        let repository_id = bound.then(|| {
            let mut id = [0u8; 16];
            id.copy_from_slice(&opened[32..]);
            id
        });
        Ok(Some(SlotContents {
            master,
            repository_id,
        }))
    }
}

fn derive_wrapping_key(
    password: &[u8],
    salt: &[u8],
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let params = argon2::Params::new(memory_kib, iterations, parallelism, Some(32))
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(password, salt, out.as_mut())
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    Ok(out)
}

/// 32 fresh random bytes.
pub(crate) fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let keys = Keys::from_master(&[7u8; 32]);
        let sealer = keys.sealer();
        let sealed = sealer.seal(b"hello block", b"id-1");
        assert_eq!(sealed.len(), 11 + SEAL_OVERHEAD);
        assert_eq!(sealer.open(&sealed, b"id-1").unwrap(), b"hello block");
        assert!(matches!(
            sealer.open(&sealed, b"id-2"),
            Err(CryptoError::Authentication)
        ));
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert!(matches!(
            sealer.open(&flipped, b"id-1"),
            Err(CryptoError::Authentication)
        ));
        assert!(matches!(
            sealer.open(&sealed[..10], b"id-1"),
            Err(CryptoError::Truncated(10))
        ));
        let other = Keys::from_master(&[8u8; 32]).sealer();
        assert!(other.open(&sealed, b"id-1").is_err());
    }

    #[test]
    fn nonces_differ_between_seals() {
        let sealer = Keys::from_master(&[1u8; 32]).sealer();
        assert_ne!(sealer.seal(b"same", b""), sealer.seal(b"same", b""));
    }

    #[test]
    fn key_slot_unwraps_only_with_its_password() {
        let master = random_key();
        let slot = KeySlot::create(&master, b"correct horse", KdfCost::DEFAULT, None).unwrap();
        let opened = slot.unwrap_master(b"correct horse").unwrap().unwrap();
        assert_eq!((*opened.master, opened.repository_id), (master, None));
        assert!(slot.unwrap_master(b"wrong").unwrap().is_none());
        let bound = KeySlot::create(&master, b"pw", KdfCost::DEFAULT, Some(&[9u8; 16])).unwrap();
        let opened = bound.unwrap_master(b"pw").unwrap().unwrap();
        assert_eq!(
            (*opened.master, opened.repository_id),
            (master, Some([9u8; 16]))
        );
    }

    #[test]
    fn a_key_slot_keeps_the_cost_it_was_made_with() {
        let master = random_key();
        let cost = KdfCost {
            memory_kib: 8 * 1024,
            iterations: 3,
            parallelism: 2,
        };
        let slot = KeySlot::create(&master, b"pw", cost, None).unwrap();
        assert_eq!(
            (slot.memory_kib, slot.iterations, slot.parallelism),
            (8 * 1024, 3, 2)
        );
        assert_eq!(*slot.unwrap_master(b"pw").unwrap().unwrap().master, master);
        // The same password under a slot of another cost derives another wrapping key.
        let other = KeySlot::create(&master, b"pw", KdfCost::DEFAULT, None).unwrap();
        assert_ne!(slot.sealed_master_key, other.sealed_master_key);
    }

    #[test]
    fn a_cost_outside_the_bounds_is_refused_with_the_bound() {
        let master = random_key();
        for (cost, says) in [
            (
                KdfCost {
                    memory_kib: 1024,
                    ..KdfCost::DEFAULT
                },
                "memory 1024 KiB",
            ),
            (
                KdfCost {
                    iterations: 0,
                    ..KdfCost::DEFAULT
                },
                "passes 0",
            ),
            (
                KdfCost {
                    parallelism: 0,
                    ..KdfCost::DEFAULT
                },
                "lanes 0",
            ),
        ] {
            let err = KeySlot::create(&master, b"pw", cost, None).unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
        }
    }
}
