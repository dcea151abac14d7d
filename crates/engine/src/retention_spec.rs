//! Retention rules recorded with a backup: the text form `keep-daily=7,keep-weekly=4` (the
//! `forget` flags' names and values, comma-separated), and which rules `forget` applies to a
//! volume.
//!
//! A backup carrying the tag [`RETENTION_TAG`]`=RULES` (what `s3mover k8s backup` records from
//! a claim's `s3mover.io/retention` annotation, or `s3mover backup --tag
//! s3mover.retention=RULES`) asks for its volume to be kept by those rules. `forget` reads them
//! from the volume's **newest** backup, so a volume whose claim is gone keeps the rules it was
//! last backed up with, and removing the annotation gives the volume back to the command
//! line's rules at its next backup. Recorded rules replace the command line's counting rules
//! (`--keep-last/-hourly/-daily/-weekly/-monthly/-yearly/-within`); `--keep-tag`, the calendar
//! offset and `--allow-remove-all` still come from the command line.

use serde::Serialize;
use time::Duration;

use crate::retention::{parse_duration, Candidate, KeepPolicy};

/// The tag key under which a backup records its volume's retention rules.
pub const RETENTION_TAG: &str = "s3mover.retention";

/// The rules a text form may name, in the order [`to_spec`] writes them.
pub const RULES: [&str; 7] = [
    "keep-last",
    "keep-hourly",
    "keep-daily",
    "keep-weekly",
    "keep-monthly",
    "keep-yearly",
    "keep-within",
];

/// Parses `keep-daily=7,keep-weekly=4` (spaces around items allowed) into a policy with
/// only those rules. Refused, with a message naming the item: an empty text, an unknown rule, a
/// rule given twice, a count that is not a positive integer, a duration that does not parse.
pub fn parse_spec(text: &str) -> Result<KeepPolicy, String> {
    if text.trim().is_empty() {
        return Err("no rules: give e.g. keep-daily=7,keep-weekly=4".into());
    }
    let mut policy = KeepPolicy::default();
    let mut seen: Vec<&str> = Vec::new();
    for item in text.split(',').map(str::trim) {
        let Some((name, value)) = item.split_once('=') else {
            return Err(format!(
                "{item:?} is not RULE=VALUE (e.g. keep-daily=7; rules: {})",
                RULES.join(", ")
            ));
        };
        let (name, value) = (name.trim(), value.trim());
        let Some(rule) = RULES.iter().find(|r| **r == name) else {
            return Err(format!(
                "unknown rule {name:?} (rules: {})",
                RULES.join(", ")
            ));
        };
        if seen.contains(rule) {
            return Err(format!("{name} is given twice"));
        }
        seen.push(rule);
        if *rule == "keep-within" {
            let within = parse_duration(value).map_err(|e| format!("{name}: {e}"))?;
            if within <= Duration::ZERO {
                return Err(format!(
                    "{name}={value} keeps nothing; give a longer duration"
                ));
            }
            policy.within = Some(within);
            continue;
        }
        let count: u32 =
            value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!("{name}={value}: the count must be a whole number from 1")
            })?;
        let slot = match *rule {
            "keep-last" => &mut policy.last,
            "keep-hourly" => &mut policy.hourly,
            "keep-daily" => &mut policy.daily,
            "keep-weekly" => &mut policy.weekly,
            "keep-monthly" => &mut policy.monthly,
            _ => &mut policy.yearly,
        };
        *slot = Some(count);
    }
    Ok(policy)
}

/// The text form of a policy's counting rules, in [`RULES`] order (`keep-tag` rules are not
/// part of it). [`parse_spec`] reads it back.
pub fn to_spec(policy: &KeepPolicy) -> String {
    let counts = [
        ("keep-last", policy.last),
        ("keep-hourly", policy.hourly),
        ("keep-daily", policy.daily),
        ("keep-weekly", policy.weekly),
        ("keep-monthly", policy.monthly),
        ("keep-yearly", policy.yearly),
    ];
    let mut items: Vec<String> = counts
        .iter()
        .filter_map(|(name, n)| n.filter(|n| *n > 0).map(|n| format!("{name}={n}")))
        .collect();
    if let Some(within) = policy.within {
        items.push(format!("keep-within={}", duration_text(within)));
    }
    items.join(",")
}

/// A duration in the largest whole unit of `d`, `h`, `m`, `s`.
fn duration_text(d: Duration) -> String {
    let seconds = d.whole_seconds();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if seconds != 0 && seconds % size == 0 {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

/// Which rules `forget` applied to one volume, and where they came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumePolicy {
    /// The volume (`NAMESPACE/PVC` for a claim).
    pub volume: String,
    /// The counting rules applied, in the text form.
    pub rules: String,
    /// `recorded` (the newest backup's [`RETENTION_TAG`]), `command line`, or `none` (no rule
    /// was given and none is recorded: every backup is kept).
    pub source: String,
    /// With `recorded`: the backup that recorded them.
    pub backup: Option<String>,
    /// Why a recorded value was not used (it does not parse).
    pub note: Option<String>,
}

/// The policy for one volume's backups: the rules its newest backup recorded, merged into
/// `default` (the command line's), or `default` itself.
pub(crate) fn volume_policy(
    default: &KeepPolicy,
    volume: &str,
    backups: &[Candidate],
) -> (KeepPolicy, VolumePolicy) {
    let newest = backups
        .iter()
        .max_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
    let recorded = newest.and_then(|m| {
        m.tags
            .iter()
            .filter_map(|t| t.split_once('='))
            .find(|(key, _)| *key == RETENTION_TAG)
            .map(|(_, value)| (m.id.clone(), value.to_string()))
    });
    let mut note = None;
    if let Some((backup, text)) = recorded {
        match parse_spec(&text) {
            Ok(rules) => {
                let policy = KeepPolicy {
                    tags: default.tags.clone(),
                    offset: default.offset,
                    allow_remove_all: default.allow_remove_all,
                    ..rules
                };
                let shown = VolumePolicy {
                    volume: volume.to_string(),
                    rules: to_spec(&policy),
                    source: "recorded".into(),
                    backup: Some(backup),
                    note: None,
                };
                return (policy, shown);
            }
            Err(e) => {
                let instead = if default.is_empty() {
                    "no rule applies and every backup is kept"
                } else {
                    "the command line's rules apply"
                };
                note = Some(format!(
                    "backup {backup} records {RETENTION_TAG}={text:?}, which is not valid ({e}); {instead}"
                ));
            }
        }
    }
    let shown = VolumePolicy {
        volume: volume.to_string(),
        rules: to_spec(default),
        source: if default.is_empty() {
            "none"
        } else {
            "command line"
        }
        .into(),
        backup: None,
        note,
    };
    (default.clone(), shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        let policy = parse_spec(" keep-daily=7, keep-weekly=4 ,keep-within=36h").expect("parses");
        assert_eq!(policy.daily, Some(7));
        assert_eq!(policy.weekly, Some(4));
        assert_eq!(policy.within, Some(Duration::hours(36)));
        assert_eq!(policy.last, None);
        assert_eq!(
            to_spec(&policy),
            "keep-daily=7,keep-weekly=4,keep-within=36h"
        );
        let all = "keep-last=1,keep-hourly=2,keep-daily=3,keep-weekly=4,keep-monthly=5,\
                   keep-yearly=6,keep-within=2d";
        assert_eq!(to_spec(&parse_spec(all).expect("parses")), all);
        assert_eq!(
            to_spec(&parse_spec("keep-within=90s").expect("parses")),
            "keep-within=90s"
        );
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (text, says) in [
            ("", "no rules"),
            ("  ", "no rules"),
            ("keep-daily", "is not RULE=VALUE"),
            ("keep-dialy=7", "unknown rule \"keep-dialy\""),
            ("keep-daily=7,keep-daily=3", "keep-daily is given twice"),
            ("keep-daily=0", "whole number from 1"),
            ("keep-daily=-1", "whole number from 1"),
            ("keep-daily=seven", "whole number from 1"),
            ("keep-daily=7,", "is not RULE=VALUE"),
            ("keep-within=5q", "keep-within:"),
            ("keep-within=0s", "keeps nothing"),
            ("keep-tag=x", "unknown rule"),
        ] {
            let err = parse_spec(text).expect_err(text);
            assert!(err.contains(says), "{text:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    fn backup(id: &str, day: u8, tags: &[&str]) -> Candidate {
        Candidate {
            id: id.into(),
            time: time::macros::datetime!(2026-01-01 00:00 UTC) + Duration::days(day.into()),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            protected: false,
        }
    }

    #[test]
    fn the_newest_backup_decides() {
        let default = KeepPolicy {
            daily: Some(7),
            tags: vec!["keep".into()],
            allow_remove_all: true,
            ..KeepPolicy::default()
        };
        let old = backup("a", 1, &["s3mover.retention=keep-last=9"]);
        let new = backup("b", 2, &["s3mover.retention=keep-last=2"]);
        let (policy, shown) = volume_policy(&default, "db/data", &[new, old.clone()]);
        assert_eq!(policy.last, Some(2));
        assert_eq!(
            policy.daily, None,
            "recorded rules replace the counting rules"
        );
        assert_eq!(policy.tags, ["keep"], "--keep-tag still applies");
        assert!(policy.allow_remove_all);
        assert_eq!(shown.source, "recorded");
        assert_eq!(shown.backup.as_deref(), Some("b"));
        assert_eq!(shown.rules, "keep-last=2");

        // The newest backup has no rules (the annotation was removed): the command line's.
        let plain = backup("c", 3, &[]);
        let (policy, shown) = volume_policy(&default, "db/data", &[old.clone(), plain]);
        assert_eq!(policy, default);
        assert_eq!(shown.source, "command line");
        assert_eq!(shown.rules, "keep-daily=7");
        assert_eq!(shown.note, None);

        // A recorded value that does not parse: the command line's, saying why.
        let bad = backup("d", 4, &["s3mover.retention=keep-daily=0"]);
        let (policy, shown) = volume_policy(&default, "db/data", &[old, bad.clone()]);
        assert_eq!(policy, default);
        assert!(
            shown
                .note
                .as_deref()
                .is_some_and(|n| n.contains("backup d")),
            "{shown:?}"
        );

        // No rule on the command line: a volume without valid recorded rules has none.
        let (policy, shown) = volume_policy(&KeepPolicy::default(), "db/data", &[bad]);
        assert!(policy.is_empty());
        assert_eq!(shown.source, "none");
        assert!(
            shown
                .note
                .as_deref()
                .is_some_and(|n| n.ends_with("every backup is kept")),
            "{shown:?}"
        );
    }
}
