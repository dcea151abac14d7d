//! Plumbing the controllers share: level-triggered reconcile loops woken by watches, the
//! snapshot API resources, and small accessors for `serde_json` objects.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::watcher;
use kube::Api;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How often a controller re-lists everything even when no watch said anything (the informers'
/// resync), so a dropped watch costs at most this long.
pub const RESYNC: Duration = Duration::from_secs(2);

/// Wakes `notify` on every change to the objects `api` sees.
pub fn watch_into<K>(api: Api<K>, notify: Arc<Notify>) -> JoinHandle<()>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let mut s = watcher(api.clone(), watcher::Config::default()).boxed();
            while let Some(ev) = s.next().await {
                match ev {
                    Ok(_) => notify.notify_one(),
                    Err(e) => {
                        tracing::debug!("watch failed, restarting: {e}");
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// Runs `reconcile` now, after each wake-up of `notify`, and at least every [`RESYNC`].
pub fn reconcile_loop<F, Fut>(
    name: &'static str,
    notify: Arc<Notify>,
    mut reconcile: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), kube::Error>> + Send,
{
    tokio::spawn(async move {
        loop {
            if let Err(e) = reconcile().await {
                tracing::debug!("{name}: {e}");
            }
            let _ = tokio::time::timeout(RESYNC, notify.notified()).await;
            // Let a burst of changes settle into one pass.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// `snapshot.storage.k8s.io/v1` kinds and `cbt.storage.k8s.io/v1beta1` SnapshotMetadataService.
pub fn snapshot_resource(kind: &str) -> ApiResource {
    let (group, version, plural) = match kind {
        "VolumeSnapshot" => ("snapshot.storage.k8s.io", "v1", "volumesnapshots"),
        "VolumeSnapshotContent" => ("snapshot.storage.k8s.io", "v1", "volumesnapshotcontents"),
        "VolumeSnapshotClass" => ("snapshot.storage.k8s.io", "v1", "volumesnapshotclasses"),
        _ => ("cbt.storage.k8s.io", "v1beta1", "snapshotmetadataservices"),
    };
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// All objects of a dynamic kind, cluster-wide.
pub fn dyn_all(client: &kube::Client, kind: &str) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &snapshot_resource(kind))
}

/// Objects of a dynamic kind in one namespace (cluster-scoped kinds: `ns` is ignored).
pub fn dyn_ns(client: &kube::Client, kind: &str, ns: Option<&str>) -> Api<DynamicObject> {
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &snapshot_resource(kind)),
        None => dyn_all(client, kind),
    }
}

/// The string at a JSON pointer (`/spec/driver`), if any.
pub fn s<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// The boolean at a JSON pointer, false when absent.
pub fn b(v: &Value, pointer: &str) -> bool {
    v.pointer(pointer).and_then(Value::as_bool).unwrap_or(false)
}

/// Go's `strconv.ParseBool`, which Kubernetes components use for annotation values.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// RFC 3339 "now" as Kubernetes writes timestamps (seconds precision, `Z`).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Whether a kube error is the API's 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether a kube error is the API's 409 (conflict or already exists).
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// A merge patch that leaves `metadata.finalizers` as `finalizers`.
pub fn finalizers_patch(finalizers: &[String]) -> Value {
    serde_json::json!({ "metadata": { "finalizers": finalizers } })
}

/// Random lowercase alphanumerics, as `generateName` and snapshot handles use.
pub fn random_suffix(n: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_bool_is_gos() {
        assert_eq!(parse_bool("true"), Some(true));
        assert_eq!(parse_bool("T"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("yes"), None);
    }

    #[test]
    fn timestamps_are_rfc3339_seconds() {
        let t = now_rfc3339();
        assert!(t.ends_with('Z'), "{t}");
        assert_eq!(t.len(), "2026-01-01T00:00:00Z".len(), "{t}");
    }
}
