//! The engine's error type: every failure says what went wrong and, where it can, what to do.

use crate::crypto::CryptoError;
use crate::storage::StoreError;

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Storage failed or an object is missing.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Encryption or key handling failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// No repository at the given location.
    #[error("no s3mover repository at {location}: {reason}; check the repository URL, or create a repository in an empty location with `s3mover init`")]
    NotARepository {
        /// The store's location, as given.
        location: String,
        /// Why it is not a repository.
        reason: String,
    },
    /// A repository already exists where `init` was asked to make one.
    #[error("{location} already holds {what}; choose an empty location")]
    AlreadyExists {
        /// The store's location, as given.
        location: String,
        /// What it holds.
        what: String,
    },
    /// A repository written by a newer s3mover.
    #[error("repository format version {found} is newer than this s3mover understands ({supported}); upgrade s3mover")]
    NewerFormat {
        /// The repository's format version.
        found: u32,
        /// The newest version this s3mover reads.
        supported: u32,
    },
    /// Stored data failed an integrity check.
    #[error("corrupt data: {reason}")]
    Corrupt {
        /// The object that failed, when it is known (see [`Error::with_key`]).
        key: Option<String>,
        /// What is wrong, as a sentence naming the object.
        reason: String,
    },
    /// A chunk, page or object the repository should hold is missing.
    #[error("missing data: {reason}")]
    Missing {
        /// The object that is missing or that should hold what is missing, when it is known.
        key: Option<String>,
        /// What is missing, as a sentence.
        reason: String,
    },
    /// A source or target device or file could not be used.
    #[error("{0}")]
    Io(String),
    /// An I/O operation on a path failed; the operating system's error is kept as the source.
    #[error("{what} {}: {source}", path.display())]
    File {
        /// What was being done, e.g. `cannot open`.
        what: String,
        /// The file or device.
        path: std::path::PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A read or write at an offset of a volume failed; the operating system's error is kept
    /// as the source, with the path, the offset and the length.
    #[error("{op} of {len} bytes at offset {offset} of {} failed: {source}", path.display())]
    Transfer {
        /// `read` or `write`.
        op: &'static str,
        /// The bytes asked for.
        len: usize,
        /// Where on the volume.
        offset: u64,
        /// The device or file.
        path: std::path::PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Another operation got in the way (a concurrent prune, a lapsed lease, a backup withdrawn
    /// because a prune removed what it used): nothing is lost, and running the command again
    /// is expected to succeed.
    #[error("{0}")]
    Conflict(String),
    /// A failure that is s3mover's fault, not the user's or the storage's: a task that
    /// panicked or was cancelled, a value that could not be encoded, a broken invariant.
    #[error("internal error: {0} (a bug in s3mover; please report it)")]
    Internal(String),
    /// A backup id matched nothing or several backups.
    #[error("{0}")]
    NoSuchBackup(String),
    /// The caller asked for something that cannot work (bad ranges, too-small target, …).
    #[error("{0}")]
    Invalid(String),
    /// Needs a password and none was given.
    #[error("the repository is encrypted and no password was given: set S3MOVER_PASSWORD, S3MOVER_PASSWORD_FILE or S3MOVER_PASSWORD_COMMAND")]
    PasswordRequired,
}

impl Error {
    /// An I/O error on a path, as a one-line message.
    pub(crate) fn io(what: &str, path: &std::path::Path, error: std::io::Error) -> Self {
        Error::File {
            what: what.to_string(),
            path: path.to_path_buf(),
            source: error,
        }
    }

    /// Corrupt data in the object `key`.
    pub(crate) fn corrupt_object(key: &str, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            key: Some(key.to_string()),
            reason: reason.into(),
        }
    }

    /// Corrupt data where the object is not known here (a caller that knows it adds it with
    /// [`Error::with_key`]).
    pub fn corrupt(reason: impl Into<String>) -> Self {
        Error::Corrupt {
            key: None,
            reason: reason.into(),
        }
    }

    /// Something missing from, or because of, the object `key`.
    pub fn missing_object(key: &str, reason: impl Into<String>) -> Self {
        Error::Missing {
            key: Some(key.to_string()),
            reason: reason.into(),
        }
    }

    /// Something missing where the object is not known here.
    pub(crate) fn missing(reason: impl Into<String>) -> Self {
        Error::Missing {
            key: None,
            reason: reason.into(),
        }
    }

    /// Names the object of a corruption or missing-object error that does not name one yet;
    /// other errors are returned as they are.
    pub fn with_key(self, object: &str) -> Self {
        match self {
            Error::Corrupt { key: None, reason } => Error::Corrupt {
                key: Some(object.to_string()),
                reason,
            },
            Error::Missing { key: None, reason } => Error::Missing {
                key: Some(object.to_string()),
                reason,
            },
            other => other,
        }
    }

    /// The object a corruption or missing-object error is about, when it is known.
    pub fn object_key(&self) -> Option<&str> {
        match self {
            Error::Corrupt { key, .. } | Error::Missing { key, .. } => key.as_deref(),
            _ => None,
        }
    }

    /// A read (`op` = `read`) or write of `len` bytes at `offset` of `path` failed.
    pub(crate) fn transfer(
        op: &'static str,
        len: usize,
        offset: u64,
        path: &std::path::Path,
        source: std::io::Error,
    ) -> Self {
        Error::Transfer {
            op,
            len,
            offset,
            path: path.to_path_buf(),
            source,
        }
    }

    /// An internal failure (see [`Error::Internal`]).
    pub fn internal(what: impl Into<String>) -> Self {
        Error::Internal(what.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A corruption or missing-object error reads as before, and takes the key of its object
    /// from the caller that knows it, once.
    #[test]
    fn object_errors_carry_their_key() {
        let codec = Error::corrupt("chunk 00: empty blob");
        assert_eq!(codec.to_string(), "corrupt data: chunk 00: empty blob");
        assert_eq!(codec.object_key(), None);
        let keyed = codec.with_key("packs/ab/ab01");
        assert_eq!(keyed.object_key(), Some("packs/ab/ab01"));
        assert_eq!(keyed.to_string(), "corrupt data: chunk 00: empty blob");
        let kept = keyed.with_key("packs/cd/cd01");
        assert_eq!(kept.object_key(), Some("packs/ab/ab01"));

        let missing = Error::missing_object("packs/ab/ab02", "chunk 01 is in no pack");
        assert_eq!(missing.to_string(), "missing data: chunk 01 is in no pack");
        assert_eq!(missing.object_key(), Some("packs/ab/ab02"));
        assert_eq!(Error::Invalid("x".into()).with_key("k").object_key(), None);
    }

    /// An I/O error keeps its path and the operating system's error as its source.
    #[test]
    fn io_errors_keep_their_source() {
        let error = Error::io(
            "cannot open",
            std::path::Path::new("/dev/x"),
            std::io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert!(
            error.to_string().starts_with("cannot open /dev/x: "),
            "{error}"
        );
        let source = std::error::Error::source(&error).expect("source");
        let io = source.downcast_ref::<std::io::Error>().expect("io error");
        assert_eq!(io.raw_os_error(), Some(libc::ENOENT));
    }

    /// A failed read or write at an offset reads as before and keeps its path, offset and the
    /// operating system's error as fields and source.
    #[test]
    fn transfer_errors_keep_offset_and_source() {
        let error = Error::transfer(
            "read",
            4096,
            8192,
            std::path::Path::new("/dev/x"),
            std::io::Error::from_raw_os_error(libc::EIO),
        );
        assert!(
            error
                .to_string()
                .starts_with("read of 4096 bytes at offset 8192 of /dev/x failed: "),
            "{error}"
        );
        let Error::Transfer { offset, len, .. } = &error else {
            panic!("not a transfer error: {error:?}");
        };
        assert_eq!((*offset, *len), (8192, 4096));
        let source = std::error::Error::source(&error).expect("source");
        let io = source.downcast_ref::<std::io::Error>().expect("io error");
        assert_eq!(io.raw_os_error(), Some(libc::EIO));
    }
}
