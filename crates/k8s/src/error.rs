//! Errors of the Kubernetes side, each one line that says what failed and, where it helps,
//! what to do.

use std::time::Duration;

/// What went wrong talking to the cluster or running a backup or restore there.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("cannot reach Kubernetes: {0}")]
    Config(String),
    /// An API request failed.
    #[error("{context}: {detail}")]
    Api {
        /// What was being done.
        context: String,
        /// The server's message (or the transport error).
        detail: String,
        /// HTTP status when the server answered.
        code: Option<u16>,
    },
    /// The request cannot be carried out as given (no such claim, wrong mode, …).
    #[error("{0}")]
    Invalid(String),
    /// The operation ran and failed (a snapshot error, a failed mover pod, …).
    #[error("{0}")]
    Failed(String),
    /// Something did not happen in time.
    #[error("{what} within {}", humantime(*after))]
    Timeout {
        /// What was awaited, phrased so that "… within 5m" reads well.
        what: String,
        /// How long was waited.
        after: Duration,
    },
    /// Interrupted (Ctrl-C).
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    /// Wraps a kube error with what was being done.
    pub fn api(context: impl Into<String>, error: kube::Error) -> Error {
        let (detail, code) = match &error {
            kube::Error::Api(status) => (status.message.clone(), Some(status.code)),
            other => (chain(other), None),
        };
        Error::Api {
            context: context.into(),
            detail,
            code,
        }
    }

    /// True for a 404 from the server.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Api {
                code: Some(404),
                ..
            }
        )
    }

    /// True when retrying the same request may succeed: the server was unreachable, or said
    /// it is overloaded or failed internally.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Api { code: None, .. } => true,
            Error::Api { code: Some(c), .. } => *c == 429 || *c >= 500,
            _ => false,
        }
    }
}

/// True when a kube error means "not found".
pub fn not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 404)
}

/// True when a kube error means the identity may not do it (403): asking again will not help.
pub fn forbidden(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 403)
}

/// True when a kube error means "already exists".
pub fn already_exists(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 409)
}

/// An error and its sources on one line.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A duration as people write it: 90s, 5m, 1h30m.
pub fn humantime(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_flags() {
        assert_eq!(humantime(Duration::from_secs(90)), "1m30s");
        assert_eq!(humantime(Duration::from_secs(3600)), "1h");
        assert_eq!(humantime(Duration::from_millis(250)), "250ms");
    }
}
