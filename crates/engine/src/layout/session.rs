//! The session record of a running backup (`sessions/<volume key>`): the index objects it has
//! written so far, so that a rerun after a crash reuses its uploads and a prune protects them.
//! Backup writes it and reads it back to resume; prune reads it to protect. Both ages that
//! govern it live here, with the check that keeps them ordered.

use serde::{Deserialize, Serialize};

use super::aad::ObjectKind;
use super::sealed::SealedRecord;

/// A crashed run's session is reused only while younger than this (half the GC grace period).
pub(crate) const SESSION_REUSE_SECONDS: i64 = 12 * 3600;
/// Sessions updated within this many seconds (or within prune's grace, if shorter) protect
/// the chunks they list.
pub(crate) const SESSION_PROTECT_SECONDS: i64 = 13 * 3600;

// A session a backup still reuses must still protect its chunks from prune.
const _: () = assert!(SESSION_REUSE_SECONDS < SESSION_PROTECT_SECONDS);

/// What a session object holds. Readers accept a record with fields missing (prune needs only
/// `updatedAt` and `indexObjects`).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionRecord {
    #[serde(default)]
    pub(crate) session: String,
    #[serde(default)]
    pub(crate) volume: String,
    #[serde(default)]
    pub(crate) started_at: String,
    pub(crate) updated_at: String,
    #[serde(default)]
    pub(crate) host: String,
    #[serde(default)]
    pub(crate) index_objects: Vec<String>,
}

impl SealedRecord for SessionRecord {
    const KIND: ObjectKind = ObjectKind::Session;
    const NAME: &'static str = "session";
}

impl SessionRecord {
    /// The seconds since the last update, `None` when the time does not parse.
    pub(crate) fn age_seconds(&self, now_unix: i64) -> Option<i64> {
        crate::time_util::parse_rfc3339(&self.updated_at).map(|t| now_unix - t.unix_timestamp())
    }
}

/// This machine's host name, recorded in sessions, manifests and leases so that a record left
/// by a process of this host that has gone can be told from one of another host; empty when
/// unknown.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}
