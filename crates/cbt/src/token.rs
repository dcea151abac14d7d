//! Where the audience-scoped Kubernetes token comes from, and when it is refreshed.
//!
//! The sidecar checks the `security_token` once per RPC, so a long listing that resumes after
//! the token expired needs a fresh one. The client asks its [`TokenSource`] before every RPC;
//! `force_refresh` is set when the server has just refused the current token.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;

use crate::CbtError;

/// Supplies the token put into `security_token`.
pub trait TokenSource: Send + Sync {
    /// The token to use now. With `force_refresh`, the previous token was rejected
    /// (UNAUTHENTICATED) and a cached one must not be returned again.
    fn token(&self, force_refresh: bool) -> BoxFuture<'_, Result<String, CbtError>>;
}

/// A fixed token (`--token`).
pub struct StaticToken(pub String);

impl TokenSource for StaticToken {
    fn token(&self, _force_refresh: bool) -> BoxFuture<'_, Result<String, CbtError>> {
        let t = self.0.clone();
        Box::pin(async move { Ok(t) })
    }
}

/// A token read from a file before every RPC (`--token-file`). The kubelet rotates projected
/// service account tokens in place, so re-reading picks up the fresh one.
pub struct FileToken(pub PathBuf);

impl TokenSource for FileToken {
    fn token(&self, _force_refresh: bool) -> BoxFuture<'_, Result<String, CbtError>> {
        Box::pin(async move {
            let text = std::fs::read_to_string(&self.0).map_err(|source| CbtError::ReadFile {
                what: "token file",
                path: self.0.clone(),
                source,
            })?;
            let t = text.trim().to_string();
            if t.is_empty() {
                return Err(CbtError::Token(format!(
                    "the token file {} is empty",
                    self.0.display()
                )));
            }
            Ok(t)
        })
    }
}

/// A fetched token with its expiry, as a refresh hook returns it.
#[derive(Debug, Clone)]
pub struct FetchedToken {
    /// The token text.
    pub token: String,
    /// When it expires, if known.
    pub expires_at: Option<SystemTime>,
}

type FetchFn = dyn Fn() -> BoxFuture<'static, Result<FetchedToken, CbtError>> + Send + Sync;

/// A token obtained through a hook (e.g. a Kubernetes TokenRequest), cached until it is within
/// `margin` of its expiry or is rejected by the server.
pub struct RefreshingToken {
    fetch: Box<FetchFn>,
    margin: Duration,
    cached: Mutex<Option<FetchedToken>>,
}

impl RefreshingToken {
    /// Wraps `fetch`; a cached token is replaced once it expires within `margin`.
    pub fn new<F>(margin: Duration, fetch: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, Result<FetchedToken, CbtError>> + Send + Sync + 'static,
    {
        RefreshingToken {
            fetch: Box::new(fetch),
            margin,
            cached: Mutex::new(None),
        }
    }

    fn fresh_cached(&self) -> Option<String> {
        let guard = self.cached.lock().ok()?;
        let t = guard.as_ref()?;
        match t.expires_at {
            Some(exp) if SystemTime::now() + self.margin >= exp => None,
            _ => Some(t.token.clone()),
        }
    }
}

impl TokenSource for RefreshingToken {
    fn token(&self, force_refresh: bool) -> BoxFuture<'_, Result<String, CbtError>> {
        Box::pin(async move {
            if !force_refresh {
                if let Some(t) = self.fresh_cached() {
                    return Ok(t);
                }
            }
            let fetched = (self.fetch)().await?;
            let token = fetched.token.clone();
            if let Ok(mut guard) = self.cached.lock() {
                *guard = Some(fetched);
            }
            Ok(token)
        })
    }
}
