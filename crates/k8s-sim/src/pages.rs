//! List pagination, as the API server does it: a list with `limit=N` returns at most N items
//! and, when more remain, an opaque `metadata.continue` token (and `remainingItemCount` when no
//! selector filtered the list). Every page of one list comes from the same moment — the first
//! page's resourceVersion — because the remaining items are kept with the token; a token older
//! than [`CONTINUE_LIFETIME`] (the API server's etcd compaction interval) or unknown gets 410
//! `Expired`, and a token used for another list 400, as a real server answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::status::ApiError;

/// How long a continue token stays good.
pub const CONTINUE_LIFETIME: Duration = Duration::from_secs(300);

/// The rest of a list, kept for its continue token.
struct Rest {
    /// Which list (resource, namespace, selectors): a token is only good for the same one.
    scope: String,
    items: Vec<Value>,
    rv: u64,
    created: Instant,
}

/// One page of a list.
#[derive(Debug)]
pub struct Page {
    /// The page's items.
    pub items: Vec<Value>,
    /// The list's resourceVersion (the first page's, for every page).
    pub rv: u64,
    /// The token for the next page, when items remain.
    pub continue_token: Option<String>,
    /// How many items remain after this page.
    pub remaining: u64,
}

/// The kept rests of paginated lists.
#[derive(Default)]
pub struct Pages {
    rests: Mutex<HashMap<String, Rest>>,
    next: AtomicU64,
}

impl Pages {
    /// The first page of `items` (the whole list at `rv`), at most `limit` long (0: all).
    pub fn first(&self, scope: String, items: Vec<Value>, rv: u64, limit: usize) -> Page {
        self.cut(scope, items, rv, limit)
    }

    /// The page after the one that returned `token`.
    pub fn next(&self, scope: String, token: &str, limit: usize) -> Result<Page, ApiError> {
        let rest = {
            let mut rests = self.rests.lock().unwrap_or_else(|p| p.into_inner());
            rests.retain(|_, r| r.created.elapsed() < CONTINUE_LIFETIME);
            rests.remove(token)
        };
        let Some(rest) = rest else {
            return Err(ApiError::new(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            ));
        };
        if rest.scope != scope {
            return Err(ApiError::bad_request(
                "continue key is not valid: the token belongs to another list",
            ));
        }
        Ok(self.cut(scope, rest.items, rest.rv, limit))
    }

    fn cut(&self, scope: String, mut items: Vec<Value>, rv: u64, limit: usize) -> Page {
        if limit == 0 || items.len() <= limit {
            return Page {
                items,
                rv,
                continue_token: None,
                remaining: 0,
            };
        }
        let rest = items.split_off(limit);
        let remaining = rest.len() as u64;
        let token = format!("sim-{rv}-{}", self.next.fetch_add(1, Ordering::Relaxed));
        self.rests.lock().unwrap_or_else(|p| p.into_inner()).insert(
            token.clone(),
            Rest {
                scope,
                items: rest,
                rv,
                created: Instant::now(),
            },
        );
        Page {
            items,
            rv,
            continue_token: Some(token),
            remaining,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn items(n: usize) -> Vec<Value> {
        (0..n).map(|i| json!({"i": i})).collect()
    }

    #[test]
    fn pages_follow_each_other_from_one_moment() {
        let pages = Pages::default();
        let first = pages.first("cm/ns".into(), items(5), 7, 2);
        assert_eq!(first.items, items(2));
        assert_eq!(first.remaining, 3);
        let token = first.continue_token.expect("more");
        let second = pages.next("cm/ns".into(), &token, 2).expect("page");
        assert_eq!((second.items[0]["i"].as_u64(), second.rv), (Some(2), 7));
        let third = pages
            .next("cm/ns".into(), &second.continue_token.expect("more"), 2)
            .expect("page");
        assert_eq!((third.items.len(), third.continue_token), (1, None));
        // A token is good once, and only for its own list.
        assert_eq!(pages.next("cm/ns".into(), &token, 2).unwrap_err().code, 410);
        let other = pages.first("cm/ns".into(), items(3), 8, 1);
        let e = pages
            .next("pods/ns".into(), &other.continue_token.expect("more"), 1)
            .unwrap_err();
        assert_eq!(e.code, 400);
        assert!(pages
            .first("x".into(), items(3), 1, 0)
            .continue_token
            .is_none());
    }
}
