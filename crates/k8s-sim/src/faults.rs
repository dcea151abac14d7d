//! Injected API server faults, so clients' handling of them can be tested: the next N
//! requests whose path contains a string (and, optionally, of one method) fail with a given
//! status (500, 503, 429 with `Retry-After`, ...) or get no answer at all (the connection is
//! closed), and open watches can be dropped.

use std::sync::Mutex;

use serde::Deserialize;

/// One armed fault.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    /// Requests whose path contains this string are affected ("" matches all).
    #[serde(default)]
    pub path_contains: String,
    /// Only requests of this method (`GET`, `POST`, ...), if set.
    #[serde(default)]
    pub method: Option<String>,
    /// Only watch requests (`?watch=true`) or only non-watch requests, if set.
    #[serde(default)]
    pub watch: Option<bool>,
    /// HTTP status to answer with; 0 closes the connection without an answer (a network
    /// failure, as a load balancer or a restarting server causes).
    pub status: u16,
    /// How many matching requests fail.
    pub count: u32,
}

/// The armed faults.
#[derive(Debug, Default)]
pub struct Faults {
    armed: Mutex<Vec<Fault>>,
}

impl Faults {
    /// Arms a fault.
    pub fn arm(&self, fault: Fault) {
        if fault.count > 0 {
            self.lock().push(fault);
        }
    }

    /// Disarms every fault.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Fault>> {
        self.armed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The status a request must fail with, if a fault matches (using one of its count).
    pub fn take(&self, method: &str, path: &str, watch: bool) -> Option<u16> {
        let mut armed = self.lock();
        let idx = armed.iter().position(|f| {
            path.contains(&f.path_contains)
                && f.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && f.watch.is_none_or(|w| w == watch)
        })?;
        let status = armed[idx].status;
        armed[idx].count -= 1;
        if armed[idx].count == 0 {
            armed.remove(idx);
        }
        Some(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_fails_exactly_count_matching_requests() {
        let f = Faults::default();
        f.arm(Fault {
            path_contains: "/pods".into(),
            method: Some("GET".into()),
            watch: None,
            status: 503,
            count: 2,
        });
        assert_eq!(f.take("POST", "/api/v1/namespaces/a/pods", false), None);
        assert_eq!(f.take("GET", "/api/v1/nodes", false), None);
        assert_eq!(f.take("GET", "/api/v1/namespaces/a/pods", false), Some(503));
        assert_eq!(f.take("get", "/api/v1/pods", true), Some(503));
        assert_eq!(f.take("GET", "/api/v1/pods", false), None);
    }
}
