//! Errors of the CBT client, worded so that the user knows what to do next.
//!
//! gRPC status codes from the sidecar or a CSI driver are mapped here to the cause a user can
//! act on: no change tracking (take a full backup), token audience / service account / RBAC
//! problems, a snapshot that does not exist, or a server that sent a bad range list.

use std::path::PathBuf;

use s3mover_ranges::RangeError;

/// Everything that can go wrong while talking to a SnapshotMetadata service.
#[derive(Debug, thiserror::Error)]
pub enum CbtError {
    /// The selection flags do not make sense together.
    #[error("{0}")]
    Usage(String),

    /// A file named on the command line could not be read.
    #[error("cannot read the {what} {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The CA bundle is not PEM (nor base64 of PEM, as in the SnapshotMetadataService CR).
    #[error("the CA certificate {0} holds no PEM certificate (expected \"-----BEGIN CERTIFICATE-----\", or base64 of it as in the SnapshotMetadataService caCert field)")]
    BadCaCert(String),

    /// The connection (TCP, TLS handshake or unix socket) could not be made.
    #[error("cannot connect to the SnapshotMetadata service at {target}: {detail}")]
    Connect { target: String, detail: String },

    /// FAILED_PRECONDITION or UNIMPLEMENTED: the driver has no change tracking for this snapshot.
    #[error("snapshot {snapshot} has no changed block tracking ({code:?}: {message}); a full backup is needed")]
    NoChangeTracking {
        snapshot: String,
        code: tonic::Code,
        message: String,
    },

    /// UNAUTHENTICATED: the sidecar's TokenReview refused the token.
    #[error("the SnapshotMetadata service did not accept the token ({message}). Check that the token was issued for the audience named in the SnapshotMetadataService CR (spec.audience, or the sidecar's --audience flag), e.g. `kubectl create token SERVICE_ACCOUNT -n NAMESPACE --audience AUDIENCE`, and that it has not expired")]
    Unauthenticated { message: String },

    /// PERMISSION_DENIED: the sidecar's SubjectAccessReview refused the token's service account.
    #[error("the SnapshotMetadata service denied access in namespace {namespace:?} ({message}). The service account the token belongs to needs `get` on volumesnapshots (group snapshot.storage.k8s.io) in that namespace: bind it to the ClusterRole external-snapshot-metadata-client-runner")]
    PermissionDenied { namespace: String, message: String },

    /// The snapshot (or the base snapshot handle) does not exist.
    #[error("{what} was not found ({code:?}: {message}){hint}")]
    SnapshotNotFound {
        what: String,
        code: tonic::Code,
        message: String,
        hint: &'static str,
    },

    /// INVALID_ARGUMENT or another permanent status from the server.
    #[error(
        "the SnapshotMetadata service refused the request for {snapshot} ({code:?}: {message})"
    )]
    Refused {
        snapshot: String,
        code: tonic::Code,
        message: String,
    },

    /// A retryable failure that did not go away within the retry budget.
    #[error("the SnapshotMetadata service kept failing for {snapshot} after {attempts} attempts without progress ({code:?}: {message}){hint}")]
    RetriesExhausted {
        snapshot: String,
        attempts: u32,
        code: tonic::Code,
        message: String,
        hint: &'static str,
    },

    /// The server sent a range list that breaks the protocol's rules; nothing is repaired.
    #[error("the SnapshotMetadata service sent a bad range list for {snapshot}: {source}; refusing it, because a wrong range list makes a wrong backup")]
    BadRange {
        snapshot: String,
        #[source]
        source: RangeError,
    },

    /// The server sent something else that breaks the protocol (negative numbers, UNKNOWN type).
    #[error("the SnapshotMetadata service broke the protocol for {snapshot}: {detail}")]
    Protocol { snapshot: String, detail: String },

    /// The token could not be obtained.
    #[error("cannot obtain a token for the SnapshotMetadata service: {0}")]
    Token(String),

    /// Reading or writing a device, file or output failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// `cbt verify`: the devices differ after copying the listed ranges.
    #[error("source and target device contents do not match: first difference at byte offset {offset} (source {source_len} bytes, target {target_len} bytes)")]
    VerifyMismatch {
        offset: u64,
        source_len: u64,
        target_len: u64,
    },
}

impl CbtError {
    /// An [`CbtError::Io`] with a context line.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CbtError::Io {
            context: context.into(),
            source,
        }
    }

    /// True when the server says the snapshot cannot be listed with CBT, so a full read is the
    /// right fallback (FAILED_PRECONDITION, UNIMPLEMENTED, or a base snapshot that is gone).
    pub fn needs_full_backup(&self) -> bool {
        matches!(
            self,
            CbtError::NoChangeTracking { .. } | CbtError::SnapshotNotFound { .. }
        )
    }
}

/// Formats an error with its whole `source()` chain, for messages that wrap transport errors.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
