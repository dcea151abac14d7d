//! The `etcd` check: k3s etcd snapshots under an object-store prefix. Every object is listed
//! (the store pages through listings of any length). k3s names a snapshot
//! `<name>-<node>-<unix seconds>` (`etcd-snapshot-server-1-1764676800`, on-demand ones
//! `on-demand-…`, `.zip` when compressed) and keeps its own records under `.metadata/`, which
//! are skipped. Per node: the newest snapshot, its age and size. The check fails when there is
//! no snapshot, when a node's newest is older than the threshold, or when any snapshot is
//! empty (zero bytes: an upload that failed, not a backup).

use s3mover_engine::storage::ObjectInfo;
use serde_json::json;

use super::{CheckResult, Metric};
use s3mover_k8s::doctor::Status;

/// One snapshot object, as its name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Object key, relative to the prefix.
    pub key: String,
    /// The node that took it (`?` when the name does not say).
    pub node: String,
    /// When it was taken: from the name, else the object's modification time.
    pub time: time::OffsetDateTime,
    /// Bytes.
    pub size: u64,
}

/// Base names k3s gives snapshots (scheduled and on-demand).
const BASE_NAMES: &[&str] = &["etcd-snapshot-", "on-demand-"];

/// Reads a listed object as a snapshot; `None` for k3s's own records (`.metadata/…`).
pub fn snapshot_of(object: &ObjectInfo) -> Option<Snapshot> {
    if object
        .key
        .split('/')
        .any(|segment| segment.starts_with('.'))
    {
        return None;
    }
    let file = object.key.rsplit('/').next().unwrap_or(&object.key);
    let stem = file.strip_suffix(".zip").unwrap_or(file);
    let named = stem.rsplit_once('-').and_then(|(rest, seconds)| {
        if seconds.len() < 9 || !seconds.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let t = time::OffsetDateTime::from_unix_timestamp(seconds.parse().ok()?).ok()?;
        let node = BASE_NAMES
            .iter()
            .find_map(|base| rest.strip_prefix(base))
            .unwrap_or(rest);
        Some((node.to_string(), t))
    });
    let (node, time) = named.unwrap_or_else(|| ("?".to_string(), object.last_modified));
    Some(Snapshot {
        key: object.key.clone(),
        node,
        time,
        size: object.size,
    })
}

/// The check's verdict on a listing.
pub fn analyse(
    location: &str,
    objects: &[ObjectInfo],
    max_age_seconds: i64,
    now: time::OffsetDateTime,
) -> CheckResult {
    let snapshots: Vec<Snapshot> = objects.iter().filter_map(snapshot_of).collect();
    let mut result = CheckResult::new("etcd", Some(max_age_seconds));
    result.items = Some(snapshots.len() as u64);
    if snapshots.is_empty() {
        result.status = Status::Fail;
        result.message = format!(
            "no etcd snapshots under {location} ({} other objects)",
            objects.len()
        );
        result.fix = Some(
            "check the k3s server's --etcd-s3-* settings (bucket, folder) and that scheduled snapshots run".into(),
        );
        result.failed_items = Some(0);
        return result;
    }
    let mut nodes: std::collections::BTreeMap<&str, Vec<&Snapshot>> = Default::default();
    for s in &snapshots {
        nodes.entry(s.node.as_str()).or_default().push(s);
    }
    let mut stale = Vec::new();
    let mut rows = Vec::new();
    let mut worst_age = 0i64;
    let mut smallest_newest = u64::MAX;
    for (node, list) in &nodes {
        let newest = list
            .iter()
            .max_by(|a, b| a.time.cmp(&b.time).then(a.key.cmp(&b.key)))
            .copied();
        let Some(newest) = newest else { continue };
        let age = (now - newest.time).whole_seconds().max(0);
        worst_age = worst_age.max(age);
        smallest_newest = smallest_newest.min(newest.size);
        if age > max_age_seconds {
            stale.push(format!("{node} ({})", short(age)));
        }
        rows.push(json!({
            "node": node, "newest": newest.key, "time": s3mover_engine::time_util::format_rfc3339(newest.time),
            "ageSeconds": age, "sizeBytes": newest.size, "count": list.len(),
        }));
        let labels = vec![("node".to_string(), node.to_string())];
        result.metrics.push(Metric::new(
            "s3mover_etcd_snapshot_age_seconds",
            "Age of the newest etcd snapshot of a node, in seconds.",
            labels.clone(),
            age as f64,
        ));
        result.metrics.push(Metric::new(
            "s3mover_etcd_snapshot_size_bytes",
            "Size of the newest etcd snapshot of a node, in bytes.",
            labels.clone(),
            newest.size as f64,
        ));
        result.metrics.push(Metric::new(
            "s3mover_etcd_snapshots",
            "Number of etcd snapshots of a node under the prefix.",
            labels,
            list.len() as f64,
        ));
    }
    let empty: Vec<&Snapshot> = snapshots.iter().filter(|s| s.size == 0).collect();
    result.age_seconds = Some(worst_age);
    result.size_bytes = Some(smallest_newest);
    result.failed_items = Some((stale.len() + empty.len()) as u64);
    result.details = json!({"location": location, "nodes": rows, "emptySnapshots": empty.iter().map(|s| s.key.clone()).collect::<Vec<_>>()});
    let mut problems = Vec::new();
    if !stale.is_empty() {
        problems.push(format!(
            "newest snapshot older than {} on {}",
            short(max_age_seconds),
            stale.join(", ")
        ));
    }
    if !empty.is_empty() {
        let names: Vec<&str> = empty.iter().take(3).map(|s| s.key.as_str()).collect();
        problems.push(format!(
            "{} empty (zero-byte) snapshot(s): {}{}",
            empty.len(),
            names.join(", "),
            if empty.len() > 3 { ", …" } else { "" }
        ));
    }
    if problems.is_empty() {
        result.status = Status::Pass;
        result.message = format!(
            "{} snapshots of {} node(s) under {location}; newest per node at most {} old",
            snapshots.len(),
            nodes.len(),
            short(worst_age)
        );
    } else {
        result.status = Status::Fail;
        result.message = format!(
            "{} ({} snapshots listed)",
            problems.join("; "),
            snapshots.len()
        );
        result.fix = Some(
            "look at the k3s server's log on those nodes (etcd-snapshot, S3 upload errors); `k3s etcd-snapshot save` takes one now".into(),
        );
    }
    result
}

/// A duration in seconds as `3d4h`, `5h`, `12m`, `40s`.
pub fn short(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 86_400 => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size,
            last_modified: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn names_as_k3s_writes_them() {
        let s = snapshot_of(&object("etcd-snapshot-server-1-1764676800", 10)).expect("snapshot");
        assert_eq!(s.node, "server-1");
        assert_eq!(s.time.unix_timestamp(), 1_764_676_800);
        let s = snapshot_of(&object("on-demand-k3s-a-1764676801.zip", 10)).expect("zip");
        assert_eq!(s.node, "k3s-a");
        assert!(snapshot_of(&object(".metadata/etcd-snapshot-server-1-1764676800", 1)).is_none());
        let other = snapshot_of(&object("notes.txt", 1)).expect("other");
        assert_eq!(other.node, "?");
    }

    #[test]
    fn stale_nodes_and_empty_snapshots_fail() {
        let now = time::OffsetDateTime::from_unix_timestamp(1_764_676_800 + 3600).expect("now");
        let fresh = [
            object("etcd-snapshot-a-1764676800", 100),
            object("etcd-snapshot-b-1764676700", 100),
        ];
        let r = analyse("s3://b/p", &fresh, 86_400, now);
        assert_eq!(r.status, Status::Pass, "{}", r.message);
        let mut stale = fresh.to_vec();
        stale.push(object("etcd-snapshot-c-1764400000", 100));
        let r = analyse("s3://b/p", &stale, 86_400, now);
        assert_eq!(r.status, Status::Fail);
        assert!(r.message.contains("c ("), "{}", r.message);
        let mut empty = fresh.to_vec();
        empty.push(object("etcd-snapshot-a-1764600000", 0));
        let r = analyse("s3://b/p", &empty, 86_400, now);
        assert_eq!(r.status, Status::Fail);
        assert!(r.message.contains("zero-byte"), "{}", r.message);
        let r = analyse("s3://b/p", &[], 86_400, now);
        assert_eq!(r.status, Status::Fail);
        assert_eq!(short(90_000), "1d1h");
        assert_eq!(short(86_400), "1d");
    }
}
