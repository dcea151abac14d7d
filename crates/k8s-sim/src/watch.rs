//! Watches: a streamed body of newline-delimited `WatchEvent`s (`ADDED`, `MODIFIED`,
//! `DELETED`, `BOOKMARK`, `ERROR`), as the real API server's watch cache sends them.
//!
//! - Without a resourceVersion (or "0") the watch starts with the current objects as
//!   ADDED; from a resourceVersion it replays the logged changes after it, and a version
//!   whose changes were already compacted away gets an `ERROR` event with a 410 `Expired`
//!   Status (the form kube-rs' watcher and client-go's reflector relist on).
//! - Label and field selectors filter, and a change that moves an object into or out of
//!   the selection is sent as ADDED or DELETED.
//! - `allowWatchBookmarks` adds periodic BOOKMARKs; `sendInitialEvents=true` ends the
//!   initial ADDED events with the `k8s.io/initial-events-end` bookmark.
//! - `timeoutSeconds` ends the stream; so does a dropped-watches fault, or a watcher so far
//!   behind that live events were lost (it must re-watch, as after a real server restart).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::api::{selectors, ApiState, Request, Target};
use crate::resources::{ResourceDef, RESOURCES};
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::Body;
use crate::status::ApiError;
use crate::store::{Event, EventType};
use crate::table::{self, As};

struct Filter {
    res: usize,
    ns: Option<String>,
    name: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        self.name
            .as_deref()
            .is_none_or(|n| crate::meta::name(obj) == n)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }

    /// The event type a watcher with this filter sees for `e`, if any.
    fn view(&self, e: &Event) -> Option<EventType> {
        if e.res != self.res || self.ns.as_deref().is_some_and(|n| n != e.ns) {
            return None;
        }
        let now = self.matches(&e.object);
        match e.kind {
            EventType::Modified => {
                let before = e.old.as_ref().is_some_and(|o| self.matches(o));
                match (before, now) {
                    (true, true) => Some(EventType::Modified),
                    (false, true) => Some(EventType::Added),
                    (true, false) => Some(EventType::Deleted),
                    (false, false) => None,
                }
            }
            k => now.then_some(k),
        }
    }
}

struct Render {
    def: &'static ResourceDef,
    repr: As,
    include: String,
}

impl Render {
    fn object(&self, obj: &Value, rv: u64) -> Value {
        match self.repr {
            As::Object => obj.clone(),
            As::Metadata => table::partial(obj),
            As::Table => table::table(self.def, std::slice::from_ref(obj), rv, &self.include),
        }
    }

    fn line(&self, kind: &str, object: Value) -> Bytes {
        let mut s = json!({"type": kind, "object": object}).to_string();
        s.push('\n');
        Bytes::from(s)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({"kind": self.def.kind, "apiVersion": self.def.api_version(), "metadata": metadata});
        self.line("BOOKMARK", object)
    }
}

/// Starts a watch; the response streams until the watch ends.
pub fn watch(
    state: &Arc<ApiState>,
    req: &Request,
    t: &Target,
) -> Result<http::Response<Body>, ApiError> {
    let (labels, fields) = selectors(req)?;
    let filter = Filter {
        res: t.res,
        ns: (!t.ns.is_empty()).then(|| t.ns.clone()),
        name: (!t.name.is_empty()).then(|| t.name.clone()),
        labels,
        fields,
    };
    let render = Render {
        def: &RESOURCES[t.res],
        repr: As::from_accept(&req.accept),
        include: req.q("includeObject").unwrap_or_default(),
    };
    let from = match req.q("resourceVersion").as_deref() {
        None | Some("0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?,
        ),
    };
    let timeout = req
        .q("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let bookmarks = req.q("allowWatchBookmarks").as_deref() == Some("true");
    let initial_events = req.q("sendInitialEvents").as_deref() == Some("true");
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let sub = state.store.subscribe(from, t.res, filter.ns.as_deref());
    let mut drop_rx = state.drop_watches.subscribe();
    let bookmark_interval = state.bookmark_interval;
    tokio::spawn(async move {
        let mut sub = match sub {
            Ok(s) => s,
            Err(oldest) => {
                let e = ApiError::expired(from.unwrap_or(0), oldest);
                let _ = tx.send(render.line("ERROR", e.to_status())).await;
                return;
            }
        };
        let mut seen = sub.rv;
        for obj in std::mem::take(&mut sub.initial) {
            if filter.matches(&obj)
                && tx
                    .send(render.line("ADDED", render.object(&obj, seen)))
                    .await
                    .is_err()
            {
                return;
            }
        }
        if initial_events && tx.send(render.bookmark(seen, true)).await.is_err() {
            return;
        }
        let backlog = std::mem::take(&mut sub.backlog);
        for e in backlog {
            seen = seen.max(e.rv);
            if let Some(kind) = filter.view(&e) {
                if tx
                    .send(render.line(kind.as_str(), render.object(&e.object, e.rv)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(bookmark_interval);
        tick.reset();
        loop {
            // Biased: an event already published is sent before a drop or deadline ends the
            // watch.
            tokio::select! {
                biased;
                r = sub.live.recv() => match r {
                    Ok(e) => {
                        if e.rv <= seen {
                            continue;
                        }
                        seen = e.rv;
                        if let Some(kind) = filter.view(&e) {
                            if tx.send(render.line(kind.as_str(), render.object(&e.object, e.rv))).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    if tx.send(render.bookmark(seen, false)).await.is_err() {
                        return;
                    }
                }
                _ = &mut deadline => return,
                _ = drop_rx.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let body = StreamBody::new(stream).boxed();
    Ok(http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(body)
        .unwrap_or_else(|_| http::Response::new(http_body_util::Empty::new().boxed())))
}
