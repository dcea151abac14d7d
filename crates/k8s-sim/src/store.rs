//! The object store: every object as JSON, keyed by resource, namespace and name, one global
//! resourceVersion counter, and a bounded log of change events that watches replay from and
//! follow live.
//!
//! All changes go through [`Store::write`], which holds the one lock for the whole
//! read-modify-write, so a request's check (resourceVersion, existence) and its change are
//! atomic, and events are published in resourceVersion order.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::meta;
use crate::resources::ResId;

/// Where an object is stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// The resource (index into [`crate::resources::RESOURCES`]).
    pub res: ResId,
    /// Namespace; empty for cluster-scoped objects.
    pub ns: String,
    /// Object name.
    pub name: String,
}

impl Key {
    /// A key.
    pub fn new(res: ResId, ns: &str, name: &str) -> Key {
        Key {
            res,
            ns: ns.to_string(),
            name: name.to_string(),
        }
    }
}

/// Watch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object changed.
    Modified,
    /// The object was removed.
    Deleted,
}

impl EventType {
    /// The name in a `WatchEvent`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug)]
pub struct Event {
    /// The resourceVersion the change produced.
    pub rv: u64,
    /// The resource.
    pub res: ResId,
    /// Namespace of the object (empty if cluster-scoped).
    pub ns: String,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (for `Deleted`, as it was when removed).
    pub object: Value,
    /// The object before the change, for `Modified` (so a selector-filtered watch can turn a
    /// change into ADDED or DELETED as the real watch cache does).
    pub old: Option<Value>,
}

#[derive(Clone)]
struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    log: VecDeque<Arc<Event>>,
    /// Highest resourceVersion whose event is no longer in the log.
    compacted: u64,
    history: usize,
}

/// The object store.
pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<Event>>,
    changed: watch::Sender<u64>,
}

/// A write transaction: the store's lock, held.
pub struct Txn<'a> {
    inner: MutexGuard<'a, Inner>,
    events: &'a broadcast::Sender<Arc<Event>>,
    changed: bool,
}

/// A watch's starting point: the events after the requested version, and a live feed that
/// continues exactly where they end.
pub struct Subscription {
    /// The current objects, when the watch starts from "now".
    pub initial: Vec<Value>,
    /// The resourceVersion when the watch started.
    pub rv: u64,
    /// Events already in the log, oldest first.
    pub backlog: Vec<Arc<Event>>,
    /// Live events after the backlog.
    pub live: broadcast::Receiver<Arc<Event>>,
}

impl Store {
    /// An empty store keeping `history` events for watches to resume from.
    pub fn new(history: usize) -> Store {
        let (events, _) = broadcast::channel(history.max(1024));
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: BTreeMap::new(),
                log: VecDeque::new(),
                compacted: 1,
                history: history.max(1),
            }),
            events,
            changed: watch::channel(1).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the data consistent enough for a test server.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with the store locked; events it produced are published in order.
    pub fn write<R>(&self, f: impl FnOnce(&mut Txn<'_>) -> R) -> R {
        let mut txn = Txn {
            inner: self.lock(),
            events: &self.events,
            changed: false,
        };
        let out = f(&mut txn);
        let changed = txn.changed.then(|| txn.inner.rv);
        drop(txn);
        if let Some(rv) = changed {
            self.changed.send_replace(rv);
        }
        out
    }

    /// Runs `f` as [`Store::write`] does when `dry_run` is false; when true, on a copy of the
    /// store that is then thrown away, so the caller sees what the write would have done and
    /// nothing is stored, published or watched (`dryRun=All`).
    pub fn write_or_dry_run<R>(&self, dry_run: bool, f: impl FnOnce(&mut Txn<'_>) -> R) -> R {
        if !dry_run {
            return self.write(f);
        }
        let copy = Mutex::new(self.lock().clone());
        let (events, _) = broadcast::channel(1);
        let mut txn = Txn {
            inner: copy.lock().unwrap_or_else(|p| p.into_inner()),
            events: &events,
            changed: false,
        };
        f(&mut txn)
    }

    /// Runs `f` on a read-only view.
    pub fn read<R>(&self, f: impl FnOnce(&ReadView<'_>) -> R) -> R {
        let inner = self.lock();
        f(&ReadView { inner: &inner })
    }

    /// A receiver that sees every change after it was made (for the background
    /// controllers: `changed().await` never misses a write).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A watch's start: from `Some(rv)`, the logged events after `rv`; from `None`, the
    /// current objects of `res` (in `ns`, if given) as the initial state. Either way a live
    /// feed that continues exactly after. `Err(oldest)` when events after `rv` were already
    /// dropped from the log.
    pub fn subscribe(
        &self,
        from: Option<u64>,
        res: ResId,
        ns: Option<&str>,
    ) -> Result<Subscription, u64> {
        let inner = self.lock();
        let (initial, backlog) = match from {
            Some(rv) if rv < inner.compacted => return Err(inner.compacted),
            Some(rv) => (
                Vec::new(),
                inner.log.iter().filter(|e| e.rv > rv).cloned().collect(),
            ),
            None => (
                list(&inner, res, ns)
                    .into_iter()
                    .map(|(_, v)| v.clone())
                    .collect(),
                Vec::new(),
            ),
        };
        let live = self.events.subscribe();
        Ok(Subscription {
            initial,
            backlog,
            live,
            rv: inner.rv,
        })
    }

    /// Drops every event from the log, so that a watch from any earlier version gets
    /// `410 Expired` (what etcd compaction does to a real cluster).
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.log.clear();
        inner.compacted = inner.rv;
    }
}

/// Read access to the store's objects.
pub struct ReadView<'a> {
    inner: &'a Inner,
}

impl ReadView<'_> {
    /// The current resourceVersion.
    pub fn rv(&self) -> u64 {
        self.inner.rv
    }

    /// One object.
    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.inner.objects.get(key)
    }

    /// All objects of `res` (in namespace `ns`, if given), in key order.
    pub fn list(&self, res: ResId, ns: Option<&str>) -> Vec<(&Key, &Value)> {
        list(self.inner, res, ns)
    }
}

fn list<'a>(inner: &'a Inner, res: ResId, ns: Option<&str>) -> Vec<(&'a Key, &'a Value)> {
    let start = Key::new(res, ns.unwrap_or(""), "");
    inner
        .objects
        .range(start..)
        .take_while(|(k, _)| k.res == res && ns.is_none_or(|n| k.ns == n))
        .collect()
}

impl Txn<'_> {
    /// The current resourceVersion.
    pub fn rv(&self) -> u64 {
        self.inner.rv
    }

    /// One object.
    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.inner.objects.get(key)
    }

    /// All objects of `res` (in namespace `ns`, if given), cloned with their keys.
    pub fn list(&self, res: ResId, ns: Option<&str>) -> Vec<(Key, Value)> {
        list(&self.inner, res, ns)
            .into_iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Every key of every resource (for the garbage collector's scans).
    pub fn keys(&self) -> Vec<Key> {
        self.inner.objects.keys().cloned().collect()
    }

    fn next_rv(&mut self) -> u64 {
        self.inner.rv += 1;
        self.inner.rv
    }

    fn publish(&mut self, event: Event) {
        let event = Arc::new(event);
        let inner = &mut *self.inner;
        inner.log.push_back(event.clone());
        while inner.log.len() > inner.history {
            if let Some(old) = inner.log.pop_front() {
                inner.compacted = old.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event);
        self.changed = true;
    }

    /// Stores a new object (the caller checked it does not exist) with the next
    /// resourceVersion; returns it as stored.
    pub fn insert(&mut self, key: Key, mut obj: Value) -> Value {
        let rv = self.next_rv();
        meta::set_rv(&mut obj, rv);
        self.inner.objects.insert(key.clone(), obj.clone());
        self.publish(Event {
            rv,
            res: key.res,
            ns: key.ns,
            kind: EventType::Added,
            object: obj.clone(),
            old: None,
        });
        obj
    }

    /// Replaces an existing object with the next resourceVersion; returns it as stored.
    pub fn replace(&mut self, key: &Key, mut obj: Value) -> Value {
        let rv = self.next_rv();
        meta::set_rv(&mut obj, rv);
        let old = self.inner.objects.insert(key.clone(), obj.clone());
        self.publish(Event {
            rv,
            res: key.res,
            ns: key.ns.clone(),
            kind: EventType::Modified,
            object: obj.clone(),
            old,
        });
        obj
    }

    /// Removes an object; returns it with the resourceVersion of its removal.
    pub fn remove(&mut self, key: &Key) -> Option<Value> {
        let obj = self.inner.objects.remove(key)?;
        Some(self.publish_removal(key, obj))
    }

    /// Removes an object whose last state is `last` (a deletion that changed metadata on
    /// the way out); returns it with the resourceVersion of its removal.
    pub fn remove_as(&mut self, key: &Key, last: Value) -> Value {
        self.inner.objects.remove(key);
        self.publish_removal(key, last)
    }

    fn publish_removal(&mut self, key: &Key, mut obj: Value) -> Value {
        let rv = self.next_rv();
        meta::set_rv(&mut obj, rv);
        self.publish(Event {
            rv,
            res: key.res,
            ns: key.ns.clone(),
            kind: EventType::Deleted,
            object: obj.clone(),
            old: None,
        });
        obj
    }
}
