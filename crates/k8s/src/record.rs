//! What a backup records about its claim, as `KEY=VALUE` tags in the backup's manifest, so that
//! a restore can recreate the claim when the original is gone: size, volume mode, access modes,
//! storage class, CSI driver and the snapshot handle (the next delta's base).

use std::collections::BTreeMap;

/// Tag key prefix of everything recorded here.
pub const TAG_PREFIX: &str = "k8s.";

/// The claim a backup was taken of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimRecord {
    /// The claim's namespace.
    pub namespace: String,
    /// The claim's name.
    pub pvc: String,
    /// Size in bytes (the claim's capacity).
    pub size: u64,
    /// `Block` or `Filesystem`.
    pub volume_mode: String,
    /// `ReadWriteOnce`, … in the claim's order.
    pub access_modes: Vec<String>,
    /// The storage class, if the claim named one.
    pub storage_class: Option<String>,
    /// The CSI driver.
    pub driver: String,
    /// The VolumeSnapshot read.
    pub snapshot: Option<String>,
    /// That snapshot's CSI handle.
    pub snapshot_handle: Option<String>,
}

impl ClaimRecord {
    /// The repository's volume name for a claim: `NAMESPACE/PVC`.
    pub fn volume_name(namespace: &str, pvc: &str) -> String {
        format!("{namespace}/{pvc}")
    }

    /// `--tag` values for `s3mover backup`.
    pub fn to_tags(&self) -> Vec<String> {
        let mut tags = vec![
            format!("{TAG_PREFIX}namespace={}", self.namespace),
            format!("{TAG_PREFIX}pvc={}", self.pvc),
            format!("{TAG_PREFIX}size={}", self.size),
            format!("{TAG_PREFIX}volumeMode={}", self.volume_mode),
            format!("{TAG_PREFIX}accessModes={}", self.access_modes.join(",")),
            format!("{TAG_PREFIX}driver={}", self.driver),
        ];
        if let Some(class) = &self.storage_class {
            tags.push(format!("{TAG_PREFIX}storageClass={class}"));
        }
        if let Some(snapshot) = &self.snapshot {
            tags.push(format!("{TAG_PREFIX}snapshot={snapshot}"));
        }
        if let Some(handle) = &self.snapshot_handle {
            tags.push(format!("{TAG_PREFIX}snapshotHandle={handle}"));
        }
        tags
    }

    /// Reads the record back from a backup's tags; `None` when the backup was not taken by
    /// `k8s backup` (no namespace, claim or size recorded).
    pub fn from_tags<'a>(tags: impl IntoIterator<Item = &'a String>) -> Option<ClaimRecord> {
        let map: BTreeMap<&str, &str> = tags
            .into_iter()
            .filter_map(|t| t.strip_prefix(TAG_PREFIX)?.split_once('='))
            .collect();
        let get = |k: &str| map.get(k).map(|v| v.to_string()).filter(|v| !v.is_empty());
        Some(ClaimRecord {
            namespace: get("namespace")?,
            pvc: get("pvc")?,
            size: get("size")?.parse().ok()?,
            volume_mode: get("volumeMode").unwrap_or_else(|| "Block".into()),
            access_modes: get("accessModes")
                .map(|m| m.split(',').map(str::to_string).collect())
                .unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            storage_class: get("storageClass"),
            driver: get("driver").unwrap_or_default(),
            snapshot: get("snapshot"),
            snapshot_handle: get("snapshotHandle"),
        })
    }
}

/// Parses a Kubernetes quantity of bytes (`1073741824`, `1Gi`, `500M`, `1.5Gi`), rounding a
/// fraction up to whole bytes.
pub fn parse_quantity(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    let factor: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        _ => return None,
    };
    match number.split_once('.') {
        None => number.parse::<u64>().ok()?.checked_mul(factor),
        Some((whole, fraction)) => {
            if fraction.is_empty() || fraction.len() > 9 || fraction.contains('.') {
                return None;
            }
            let whole: u64 = if whole.is_empty() {
                0
            } else {
                whole.parse().ok()?
            };
            let scale = 10u128.pow(fraction.len() as u32);
            let frac: u128 = fraction.parse().ok()?;
            let bytes = u128::from(whole) * u128::from(factor)
                + (frac * u128::from(factor)).div_ceil(scale);
            u64::try_from(bytes).ok()
        }
    }
}

/// A byte count as a quantity the API server keeps exact: `NGi`/`NMi`/`NKi` when it divides
/// evenly, else plain bytes.
pub fn format_quantity(bytes: u64) -> String {
    for (shift, suffix) in [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
        if bytes > 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("1073741824"), Some(1 << 30));
        assert_eq!(parse_quantity("500M"), Some(500_000_000));
        assert_eq!(parse_quantity("1.5Gi"), Some(3 << 29));
        assert_eq!(parse_quantity("0.1Ki"), Some(103));
        assert_eq!(parse_quantity("1Qi"), None);
        assert_eq!(parse_quantity(""), None);
        assert_eq!(format_quantity(1 << 30), "1Gi");
        assert_eq!(format_quantity(3 << 20), "3Mi");
        assert_eq!(format_quantity(1000), "1000");
    }

    #[test]
    fn a_record_survives_its_tags() {
        let record = ClaimRecord {
            namespace: "db".into(),
            pvc: "data".into(),
            size: 1 << 30,
            volume_mode: "Filesystem".into(),
            access_modes: vec!["ReadWriteOnce".into(), "ReadOnlyMany".into()],
            storage_class: Some("fast".into()),
            driver: "hostpath.csi.k8s.io".into(),
            snapshot: Some("s3mover-data-abc".into()),
            snapshot_handle: Some("a=b".into()),
        };
        let mut tags = record.to_tags();
        tags.push("owner=team".into());
        assert_eq!(ClaimRecord::from_tags(&tags), Some(record));
        assert_eq!(ClaimRecord::from_tags(&["owner=team".to_string()]), None);
    }
}
