//! The labels and annotations on everything s3mover creates, so that its objects can be found
//! (by `k8s cleanup`, the next backup's base, `k8s status`) and a user's never are.

use std::collections::BTreeMap;

/// `app.kubernetes.io/managed-by=s3mover` on every object s3mover creates.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`].
pub const MANAGER: &str = "s3mover";
/// The run that created the object (one id per `k8s backup`/`k8s restore` of one claim).
pub const OPERATION: &str = "s3mover.io/operation";
/// What the object is for; see the `ROLE_*` values.
pub const ROLE: &str = "s3mover.io/role";
/// The claim the object belongs to (its name, or a hash of a name too long for a label).
pub const PVC: &str = "s3mover.io/pvc";
/// Annotation: the claim's full name.
pub const PVC_NAME_ANNOTATION: &str = "s3mover.io/pvc-name";
/// Annotation on a restored claim: the backup it was restored from.
pub const RESTORED_FROM: &str = "s3mover.io/restored-from";

/// A snapshot being backed up (deleted if the backup fails).
pub const ROLE_SNAPSHOT: &str = "snapshot";
/// The last backed-up snapshot of a claim: the base of the next delta. Kept.
pub const ROLE_BASE: &str = "base";
/// A temporary claim made from a snapshot.
pub const ROLE_CLAIM: &str = "temporary-claim";
/// A mover Job (and its pods).
pub const ROLE_MOVER: &str = "mover";
/// A ConfigMap holding the CBT service's CA for a mover.
pub const ROLE_CA: &str = "cbt-ca";
/// A claim s3mover restored: the user's from then on; never cleaned up.
pub const ROLE_RESTORED: &str = "restored";

/// Roles `k8s cleanup` removes: what only exists while an operation runs.
pub const TEMPORARY_ROLES: [&str; 4] = [ROLE_SNAPSHOT, ROLE_CLAIM, ROLE_MOVER, ROLE_CA];

/// The annotation that lets a Block claim be made from a Filesystem snapshot (KEP-3141), set
/// on the VolumeSnapshotContent.
pub const ALLOW_VOLUME_MODE_CHANGE: &str =
    "snapshot.storage.kubernetes.io/allow-volume-mode-change";
/// A claim's annotation naming the VolumeSnapshotClass its backups use (over the driver's
/// default class; `--snapshot-class` still wins).
pub const SNAPSHOT_CLASS_ANNOTATION: &str = "s3mover.io/snapshot-class";
/// A claim's annotation with its retention rules (`keep-daily=7,keep-weekly=4`), recorded with
/// each backup as the tag [`RETENTION_TAG`] for `forget` to apply to the claim's volume.
pub const RETENTION_ANNOTATION: &str = "s3mover.io/retention";
/// The backup tag the retention rules are recorded under (the engine's
/// `retention_spec::RETENTION_TAG`).
pub const RETENTION_TAG: &str = "s3mover.retention";
/// Marks a VolumeSnapshotClass as its driver's default.
pub const DEFAULT_SNAPSHOT_CLASS: &str = "snapshot.storage.kubernetes.io/is-default-class";

/// A label value for a claim name: the name itself when it fits (63 characters), else its
/// first 46 characters, a dash and 16 hex digits of a hash of the whole name.
pub fn pvc_label_value(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_string();
    }
    let digest = fnv1a(name.as_bytes());
    let head: String = name.chars().take(46).collect();
    format!("{}-{digest:016x}", head.trim_end_matches(['-', '.', '_']))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// The labels of an object of `role` for claim `pvc` made by `operation`.
pub fn object_labels(operation: &str, role: &str, pvc: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_string(), MANAGER.to_string()),
        (OPERATION.to_string(), operation.to_string()),
        (ROLE.to_string(), role.to_string()),
        (PVC.to_string(), pvc_label_value(pvc)),
    ])
}

/// Selector for the kept base snapshots of claim `pvc`.
pub fn base_selector(pvc: &str) -> String {
    format!(
        "{MANAGED_BY}={MANAGER},{ROLE}={ROLE_BASE},{PVC}={}",
        pvc_label_value(pvc)
    )
}

/// Selector for everything s3mover manages.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGER}")
}

/// Selector for the temporary objects `k8s cleanup` removes.
pub fn temporary_selector() -> String {
    format!(
        "{MANAGED_BY}={MANAGER},{ROLE} in ({})",
        TEMPORARY_ROLES.join(",")
    )
}

/// A fresh operation id: 10 lowercase letters and digits, usable in object names.
pub fn new_operation_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..10)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// An object name `prefix-<claim>-<operation>` that is a valid DNS label (at most 63
/// characters, lowercase alphanumerics and dashes, starting and ending alphanumeric).
pub fn object_name(prefix: &str, pvc: &str, operation: &str) -> String {
    let room = 63usize.saturating_sub(prefix.len() + operation.len() + 2);
    let middle: String = pvc
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(room)
        .collect();
    let middle = middle.trim_matches('-');
    if middle.is_empty() {
        format!("{prefix}-{operation}")
    } else {
        format!("{prefix}-{middle}-{operation}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_claim_names_become_distinct_valid_labels() {
        let a = "a".repeat(70);
        let b = format!("{}b", "a".repeat(69));
        assert_eq!(pvc_label_value("db"), "db");
        let (la, lb) = (pvc_label_value(&a), pvc_label_value(&b));
        assert!(la.len() <= 63 && lb.len() <= 63);
        assert_ne!(la, lb);
    }

    #[test]
    fn object_names_are_dns_labels() {
        let name = object_name("s3mover-backup", &"Data.Volume_1".repeat(10), "abc123defg");
        assert!(name.len() <= 63, "{name}");
        assert!(name.starts_with("s3mover-backup-data-volume-1"));
        assert!(name.ends_with("-abc123defg"));
        assert!(name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        assert_eq!(object_name("x", "---", "op"), "x-op");
    }

    #[test]
    fn selectors_name_the_roles() {
        assert_eq!(
            base_selector("db"),
            "app.kubernetes.io/managed-by=s3mover,s3mover.io/role=base,s3mover.io/pvc=db"
        );
        assert!(temporary_selector()
            .contains("s3mover.io/role in (snapshot,temporary-claim,mover,cbt-ca)"));
    }
}
