//! Failed S3 attempts — answers of 5xx, 429 or 408, timeouts, stalls, refused or broken
//! connections — counted for the command's report and shown as warnings, so that a run the
//! retry policy is rescuing does not look like a healthy one.
//!
//! Nothing here retries (see `s3.rs`, "The one retry policy"); this only watches. The
//! warnings are bounded: the first failure is reported at once, later ones at most once per
//! [`WARNING_INTERVAL`], each saying how many failures it stands for. A connection that
//! cannot be made before the server has answered anything is counted but not warned about:
//! the retry policy gives such failures up after a few retries
//! ([`Self::unanswered_connect_failures`]), and the command then ends with the one-line error
//! that says what to check; a warning per retry would only say the same thing first.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shortest time between two warnings about failed attempts.
pub(crate) const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// How an attempt failed, as far as the warning policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No connection could be made.
    Connect,
    /// Anything else: an error answer, a timeout or stall, a connection cut mid-request.
    Other,
}

/// The failed attempts of one store's requests.
#[derive(Debug, Default)]
pub(crate) struct FailedAttempts {
    count: AtomicU64,
    server_answered: AtomicBool,
    unanswered_connect_failures: AtomicU64,
    warnings: Mutex<Warnings>,
}

#[derive(Debug, Default)]
struct Warnings {
    last: Option<Instant>,
    /// Failures since the last warning that no warning mentioned.
    unreported: u64,
}

impl FailedAttempts {
    /// Notes that the server answered a request (with any status).
    pub(crate) fn answered(&self) {
        self.server_answered.store(true, Ordering::Relaxed);
    }

    /// Counts a failed attempt of the request `what` (`PUT /bucket/key`), and warns about it
    /// unless the policy above says not to.
    pub(crate) fn failed(&self, what: &str, failure: Failure, reason: &dyn std::fmt::Display) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if failure == Failure::Connect && !self.server_answered.load(Ordering::Relaxed) {
            self.unanswered_connect_failures
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(others) = self.take_warning_turn(Instant::now()) else {
            return;
        };
        let others = match others {
            0 => String::new(),
            1 => " (1 more failed since the last warning)".to_string(),
            n => format!(" ({n} more failed since the last warning)"),
        };
        tracing::warn!("S3 request {what} failed: {reason}; retrying{others}");
    }

    /// Failed attempts so far.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Connections that could not be made while the server had not answered anything yet.
    pub(crate) fn unanswered_connect_failures(&self) -> u64 {
        self.unanswered_connect_failures.load(Ordering::Relaxed)
    }

    /// `Some(failures no warning mentioned yet)` when a warning is due at `now`; otherwise
    /// counts this failure as unreported.
    fn take_warning_turn(&self, now: Instant) -> Option<u64> {
        let mut warnings = self
            .warnings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let due = warnings
            .last
            .is_none_or(|last| now.duration_since(last) >= WARNING_INTERVAL);
        if !due {
            warnings.unreported += 1;
            return None;
        }
        warnings.last = Some(now);
        Some(std::mem::take(&mut warnings.unreported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_spaced_and_count_what_they_skipped() {
        let attempts = FailedAttempts::default();
        let start = Instant::now();
        assert_eq!(attempts.take_warning_turn(start), Some(0));
        assert_eq!(
            attempts.take_warning_turn(start + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            attempts.take_warning_turn(start + Duration::from_secs(9)),
            None
        );
        let later = start + WARNING_INTERVAL;
        assert_eq!(attempts.take_warning_turn(later), Some(2));
        assert_eq!(attempts.take_warning_turn(later), None);
        assert_eq!(
            attempts.take_warning_turn(later + WARNING_INTERVAL),
            Some(1)
        );
    }

    #[test]
    fn every_failure_counts_whether_or_not_it_is_warned_about() {
        let attempts = FailedAttempts::default();
        attempts.failed("GET /b/config", Failure::Connect, &"connection refused");
        attempts.failed("GET /b/config", Failure::Connect, &"connection refused");
        assert_eq!(attempts.count(), 2);
        assert_eq!(attempts.unanswered_connect_failures(), 2);
        // Not warned about: no warning turn was taken, so the next failure is warned at once.
        attempts.answered();
        attempts.failed("PUT /b/k", Failure::Other, &"503 Service Unavailable");
        attempts.failed("PUT /b/k", Failure::Connect, &"connection refused");
        assert_eq!(attempts.count(), 4);
        assert_eq!(
            attempts.unanswered_connect_failures(),
            2,
            "the server had answered"
        );
        assert_eq!(attempts.take_warning_turn(Instant::now()), None);
    }
}
