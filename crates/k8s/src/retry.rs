//! Riding out a failing API server: reads and creates are retried while the server's errors
//! are transient (unreachable, 429, 5xx) and have not gone on for longer than
//! [`API_ERROR_BUDGET`]; any other error ends the operation at once with the server's words.

use std::future::Future;
use std::time::{Duration, Instant};

use kube::api::{Api, PostParams};
use kube::Resource;

use crate::{Error, Result};

/// How often the cluster is asked again after an error, and at most while waiting.
pub const POLL: Duration = Duration::from_millis(250);
/// The first wait of a [`Poll`]: a snapshot or a Job step often ends within a fraction of a
/// second, and asking again only after [`POLL`] would add up to that much to each phase.
pub const FIRST_POLL: Duration = Duration::from_millis(40);

/// The waits between reads of an object expected to change: [`FIRST_POLL`] at first, half as
/// long again each time, then [`POLL`] — quick to notice a fast step, no busier than [`POLL`]
/// for a long one.
#[derive(Debug)]
pub struct Poll {
    next: Duration,
}

impl Poll {
    /// A new sequence, starting at [`FIRST_POLL`].
    pub fn new() -> Self {
        Poll { next: FIRST_POLL }
    }

    /// Sleeps for the next interval.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.interval()).await;
    }

    /// The next interval.
    fn interval(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 3 / 2).min(POLL);
        now
    }
}

impl Default for Poll {
    fn default() -> Self {
        Poll::new()
    }
}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_start_quick_and_settle_at_the_steady_interval() {
        let mut poll = Poll::new();
        let waits: Vec<u128> = (0..8).map(|_| poll.interval().as_millis()).collect();
        assert_eq!(waits, [40, 60, 90, 135, 202, 250, 250, 250]);
    }
}
