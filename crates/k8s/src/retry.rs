//! Riding out a failing API server: reads and creates are retried while the server's errors
//! are transient (unreachable, 429, 5xx) and have not gone on for longer than
//! [`API_ERROR_BUDGET`]; any other error ends the operation at once with the server's words.

use std::future::Future;
use std::time::{Duration, Instant};

use kube::api::{Api, PostParams};
use kube::Resource;

use crate::{Error, Result};

/// How often the cluster is asked again.
pub const POLL: Duration = Duration::from_millis(250);
/// How long API errors may go on in a row before an operation gives up.
pub const API_ERROR_BUDGET: Duration = Duration::from_secs(30);

/// Tolerates API errors for a while: transient ones are retried until they have lasted
/// [`API_ERROR_BUDGET`].
pub(crate) struct ErrorBudget {
    since: Option<Instant>,
}

impl ErrorBudget {
    pub(crate) fn new() -> Self {
        ErrorBudget { since: None }
    }

    /// A request succeeded: the next error starts a new budget.
    pub(crate) fn ok(&mut self) {
        self.since = None;
    }

    /// `Ok` when `error` may be retried, else the error itself.
    pub(crate) fn check(&mut self, error: Error) -> Result<()> {
        let since = *self.since.get_or_insert_with(Instant::now);
        if error.is_transient() && since.elapsed() < API_ERROR_BUDGET {
            tracing::debug!("retrying after API error: {error}");
            return Ok(());
        }
        Err(error)
    }
}

/// Runs a read (a `get` or `list`), retrying it while the API server fails transiently.
/// `what` names the read in the error ("cannot read claim db/data").
pub async fn read<T, F, Fut>(what: impl Fn() -> String, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = kube::Result<T>>,
{
    let mut budget = ErrorBudget::new();
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) => budget.check(Error::api(what(), e))?,
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Creates `object` with `api`, retrying while the API server fails transiently. An object
/// found already there after a failed attempt counts as created only when it carries the
/// labels of `object` (s3mover's labels name the run): the server stored it and then failed
/// to answer. Anything else that exists under that name is someone else's and an error.
pub async fn create<K>(api: &Api<K>, object: &K, what: &str) -> Result<()>
where
    K: Clone + Resource + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut budget = ErrorBudget::new();
    let mut retried = false;
    loop {
        match api.create(&PostParams::default(), object).await {
            Ok(_) => return Ok(()),
            Err(e) if retried && crate::error::already_exists(&e) => {
                if created_by_an_earlier_attempt(api, object).await {
                    return Ok(());
                }
                return Err(Error::api(format!("cannot create {what}"), e));
            }
            Err(e) => {
                budget.check(Error::api(format!("cannot create {what}"), e))?;
                retried = true;
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether the object of `object`'s name carries all of `object`'s labels.
async fn created_by_an_earlier_attempt<K>(api: &Api<K>, object: &K) -> bool
where
    K: Clone + Resource + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(name) = object.meta().name.as_deref() else {
        return false;
    };
    let wanted = object.meta().labels.clone().unwrap_or_default();
    match read(|| format!("cannot read {name}"), || api.get(name)).await {
        Ok(found) => {
            let found = found.meta().labels.clone().unwrap_or_default();
            !wanted.is_empty() && wanted.iter().all(|(k, v)| found.get(k) == Some(v))
        }
        Err(_) => false,
    }
}
