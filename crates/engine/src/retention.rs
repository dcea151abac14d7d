//! Retention rules for `forget`: which backups of a volume to keep, and why.
//!
//! Pure functions over backup times, so they are tested against tables. Backup times are
//! stored in UTC; the calendar the hourly/daily/weekly/monthly/yearly rules count in is UTC
//! unless the caller gives a fixed offset (`--timezone-offset +02:00`), in which case an hour,
//! day, ISO week, month or year is that of the offset's wall clock. (A fixed offset, not a zone
//! database: around a daylight-saving change a "day" is still 24 hours of the given offset.)
//!
//! The rules follow restic's: the backups are ordered newest first; `keep-last N` keeps the N
//! newest; `keep-daily N` keeps the newest backup of each of the N newest days that have one
//! (and likewise for the other periods); `keep-within D` keeps every backup no older than D
//! before the newest; `keep-tag T` keeps backups carrying tag T (`KEY=VALUE`, or `KEY` for any
//! value). A protected backup is always kept. A backup is removed only if no rule keeps it.

use std::collections::HashSet;

use serde::Serialize;
use time::{Duration, OffsetDateTime, UtcOffset};

/// The keep rules. `None` (or 0) means the rule is not used.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeepPolicy {
    /// Keep the newest N backups.
    pub last: Option<u32>,
    /// Keep the newest backup of each of the N newest hours that have one.
    pub hourly: Option<u32>,
    /// … days.
    pub daily: Option<u32>,
    /// … weeks.
    pub weekly: Option<u32>,
    /// … months.
    pub monthly: Option<u32>,
    /// … years.
    pub yearly: Option<u32>,
    /// Keep every backup no older than this before the newest.
    pub within: Option<Duration>,
    /// Keep every backup carrying one of these tags.
    pub tags: Vec<String>,
    /// The calendar's offset from UTC (UTC when zero).
    pub offset: Option<UtcOffset>,
    /// Let `forget` remove every backup of a volume when no rule keeps any of them; without
    /// it such a `forget` is refused and removes nothing.
    pub allow_remove_all: bool,
}

impl KeepPolicy {
    /// True when no rule is set: such a policy would remove everything, so callers refuse it.
    pub fn is_empty(&self) -> bool {
        let unset = |n: Option<u32>| n.unwrap_or(0) == 0;
        unset(self.last)
            && unset(self.hourly)
            && unset(self.daily)
            && unset(self.weekly)
            && unset(self.monthly)
            && unset(self.yearly)
            && self.within.is_none()
            && self.tags.is_empty()
    }
}

/// What retention needs to know of one backup.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The backup id.
    pub id: String,
    /// When it was taken.
    pub time: OffsetDateTime,
    /// Its tags.
    pub tags: Vec<String>,
    /// Protected backups are always kept.
    pub protected: bool,
}

/// The decision for one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// The backup id.
    pub id: String,
    /// True when a rule keeps it.
    pub keep: bool,
    /// The rules that kept it (`last`, `hourly`, `daily`, `weekly`, `monthly`, `yearly`,
    /// `within`, `tag`, `protected`, or `no-rules` when no rule applies to its volume); empty
    /// when it goes.
    pub reasons: Vec<String>,
}

#[derive(Clone, Copy)]
enum Period {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

fn bucket(t: OffsetDateTime, period: Period) -> (i32, u32, u32) {
    match period {
        Period::Hour => (t.year(), t.ordinal().into(), t.hour().into()),
        Period::Day => (t.year(), t.ordinal().into(), 0),
        Period::Week => {
            let (year, week, _) = t.to_iso_week_date();
            (year, week.into(), 0)
        }
        Period::Month => (t.year(), u8::from(t.month()).into(), 0),
        Period::Year => (t.year(), 0, 0),
    }
}

/// Applies `policy` to the backups of one volume; returns one decision per backup, newest
/// first.
pub fn apply(policy: &KeepPolicy, backups: &[Candidate]) -> Vec<Decision> {
    let offset = policy.offset.unwrap_or(UtcOffset::UTC);
    let mut order: Vec<&Candidate> = backups.iter().collect();
    order.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
    let newest = order.first().map(|c| c.time);
    let periods = [
        ("hourly", policy.hourly, Period::Hour),
        ("daily", policy.daily, Period::Day),
        ("weekly", policy.weekly, Period::Week),
        ("monthly", policy.monthly, Period::Month),
        ("yearly", policy.yearly, Period::Year),
    ];
    let mut remaining: Vec<u32> = periods.iter().map(|p| p.1.unwrap_or(0)).collect();
    let mut last_bucket: Vec<Option<(i32, u32, u32)>> = vec![None; periods.len()];
    let mut seen: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(order.len());
    for (position, candidate) in order.iter().enumerate() {
        if !seen.insert(candidate.id.as_str()) {
            continue;
        }
        let mut reasons = Vec::new();
        if candidate.protected {
            reasons.push("protected".to_string());
        }
        if (position as u64) < u64::from(policy.last.unwrap_or(0)) {
            reasons.push("last".to_string());
        }
        let local = candidate.time.to_offset(offset);
        for (i, (name, _, period)) in periods.iter().enumerate() {
            if remaining[i] == 0 {
                continue;
            }
            let b = bucket(local, *period);
            if last_bucket[i] != Some(b) {
                last_bucket[i] = Some(b);
                remaining[i] -= 1;
                reasons.push((*name).to_string());
            }
        }
        if let (Some(within), Some(newest)) = (policy.within, newest) {
            // A window reaching before the calendar's start keeps everything.
            if newest
                .checked_sub(within)
                .is_none_or(|start| candidate.time >= start)
            {
                reasons.push("within".to_string());
            }
        }
        if policy.tags.iter().any(|t| has_tag(&candidate.tags, t)) {
            reasons.push("tag".to_string());
        }
        out.push(Decision {
            id: candidate.id.clone(),
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    out
}

fn has_tag(tags: &[String], wanted: &str) -> bool {
    tags.iter().any(|t| {
        t == wanted || (!wanted.contains('=') && t.split_once('=').map(|(k, _)| k) == Some(wanted))
    })
}

/// Parses a duration in the grammar of [`crate::units::parse_duration`] as a calendar span,
/// which reaches about 292 billion years.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let span = crate::units::parse_duration(text)?;
    Duration::try_from(span).map_err(|_| format!("duration {text:?} is too large"))
}

/// Checks a `keep-tag` rule: `KEY=VALUE`, or `KEY` for any value. An empty rule, an empty
/// key (`=x`) or a control character is refused: such a rule keeps nothing, so a typo or an
/// unset shell variable would otherwise let `forget` remove every backup.
pub fn parse_keep_tag(text: &str) -> Result<String, String> {
    let key = text.split_once('=').map_or(text, |(key, _)| key);
    if text.trim().is_empty() {
        return Err("an empty tag keeps nothing; give KEY or KEY=VALUE".into());
    }
    if key.trim().is_empty() {
        return Err(format!(
            "tag rule {:?} has no key; give KEY or KEY=VALUE",
            text
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("tag rule {text:?} holds a control character"));
    }
    Ok(text.to_string())
}

/// Parses a fixed UTC offset like `+02:00`, `-05:30`, `+0100` or `Z`.
pub fn parse_offset(text: &str) -> Result<UtcOffset, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("utc") {
        return Ok(UtcOffset::UTC);
    }
    let bad = || format!("{text:?} is not a UTC offset; use e.g. +02:00 or -05:30");
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1i8, &t[1..]),
        Some(b'-') => (-1i8, &t[1..]),
        _ => return Err(bad()),
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let hours: i8 = digits[..2].parse().map_err(|_| bad())?;
    let minutes: i8 = digits[2..].parse().map_err(|_| bad())?;
    UtcOffset::from_hms(sign * hours, sign * minutes, 0).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn c(id: &str, time: OffsetDateTime) -> Candidate {
        Candidate {
            id: id.into(),
            time,
            tags: Vec::new(),
            protected: false,
        }
    }

    fn kept(policy: &KeepPolicy, backups: &[Candidate]) -> Vec<String> {
        let mut ids: Vec<String> = apply(policy, backups)
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.id)
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn table_of_rules() {
        // Backups across a month boundary and a year boundary (UTC).
        let backups = vec![
            c("a", datetime!(2024-12-30 10:00 UTC)),
            c("b", datetime!(2024-12-31 09:00 UTC)),
            c("c", datetime!(2024-12-31 23:30 UTC)),
            c("d", datetime!(2025-01-01 00:30 UTC)),
            c("e", datetime!(2025-01-01 05:00 UTC)),
            c("f", datetime!(2025-01-31 23:59 UTC)),
            c("g", datetime!(2025-02-01 00:01 UTC)),
        ];
        struct Row {
            policy: KeepPolicy,
            expect: &'static [&'static str],
        }
        let rows = vec![
            Row {
                policy: KeepPolicy {
                    last: Some(2),
                    ..Default::default()
                },
                expect: &["f", "g"],
            },
            Row {
                policy: KeepPolicy {
                    daily: Some(3),
                    ..Default::default()
                },
                // Newest of 2025-02-01, 2025-01-31, 2025-01-01.
                expect: &["e", "f", "g"],
            },
            Row {
                policy: KeepPolicy {
                    daily: Some(10),
                    ..Default::default()
                },
                expect: &["a", "c", "e", "f", "g"],
            },
            Row {
                policy: KeepPolicy {
                    monthly: Some(3),
                    ..Default::default()
                },
                // February, January, December.
                expect: &["c", "f", "g"],
            },
            Row {
                policy: KeepPolicy {
                    yearly: Some(5),
                    ..Default::default()
                },
                expect: &["c", "g"],
            },
            Row {
                policy: KeepPolicy {
                    // ISO weeks: 2024-12-30..2025-01-05 is week 1 of 2025.
                    weekly: Some(2),
                    ..Default::default()
                },
                // Week 5 of 2025 (f, g), then week 1 of 2025, which began on 2024-12-30.
                expect: &["e", "g"],
            },
            Row {
                policy: KeepPolicy {
                    weekly: Some(4),
                    ..Default::default()
                },
                expect: &["e", "g"],
            },
            Row {
                policy: KeepPolicy {
                    hourly: Some(3),
                    ..Default::default()
                },
                expect: &["e", "f", "g"],
            },
            Row {
                policy: KeepPolicy {
                    within: Some(Duration::days(31)),
                    ..Default::default()
                },
                // Newest is 2025-02-01 00:01; 31 days earlier is 2025-01-01 00:01.
                expect: &["d", "e", "f", "g"],
            },
        ];
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(kept(&row.policy, &backups), row.expect, "row {i}");
        }
    }

    #[test]
    fn offsets_move_day_and_year_boundaries() {
        let backups = vec![
            c("x", datetime!(2024-12-31 22:00 UTC)),
            c("y", datetime!(2024-12-31 23:30 UTC)),
        ];
        let utc = KeepPolicy {
            yearly: Some(5),
            ..Default::default()
        };
        // In UTC both are in 2024: only the newest is kept.
        assert_eq!(kept(&utc, &backups), ["y"]);
        // At +01:00, y is 2025-01-01 00:30 and x 2024-12-31 23:00: two years, both kept.
        let east = KeepPolicy {
            offset: Some(parse_offset("+01:00").unwrap()),
            ..utc.clone()
        };
        assert_eq!(kept(&east, &backups), ["x", "y"]);
        let west = KeepPolicy {
            daily: Some(5),
            offset: Some(parse_offset("-05:00").unwrap()),
            ..Default::default()
        };
        // At -05:00 both are on 2024-12-31.
        assert_eq!(kept(&west, &backups), ["y"]);
    }

    #[test]
    fn protected_and_tags_and_reasons() {
        let mut backups = vec![
            c("old", datetime!(2020-01-01 00:00 UTC)),
            c("tagged", datetime!(2020-01-02 00:00 UTC)),
            c("new", datetime!(2020-01-03 00:00 UTC)),
        ];
        backups[0].protected = true;
        backups[1].tags = vec!["keep=forever".into()];
        let policy = KeepPolicy {
            last: Some(1),
            daily: Some(1),
            tags: vec!["keep".into()],
            ..Default::default()
        };
        let decisions = apply(&policy, &backups);
        assert_eq!(decisions[0].id, "new");
        assert_eq!(decisions[0].reasons, ["last", "daily"]);
        assert_eq!(decisions[1].reasons, ["tag"]);
        assert_eq!(decisions[2].reasons, ["protected"]);
        assert!(decisions.iter().all(|d| d.keep));
        assert!(KeepPolicy::default().is_empty());
    }

    #[test]
    fn durations_and_offsets_parse() {
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("10m"), Ok(Duration::minutes(10)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::hours(36)));
        assert_eq!(parse_duration("2w"), Ok(Duration::days(14)));
        assert!(parse_duration("5q").is_err());
        assert!(parse_duration("h").is_err());
        assert_eq!(
            parse_offset("-05:30").unwrap(),
            UtcOffset::from_hms(-5, -30, 0).unwrap()
        );
        assert!(parse_offset("0200").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("9223372036854775807s9223372036854775807s").is_err());
    }

    /// A window longer than the calendar reaches keeps every backup instead of overflowing.
    #[test]
    fn huge_windows_keep_everything() {
        let backups = vec![
            c("old", datetime!(2020-01-01 00:00 UTC)),
            c("new", datetime!(2020-01-02 00:00 UTC)),
        ];
        let policy = KeepPolicy {
            within: Some(parse_duration("99999999999d").expect("parses")),
            ..KeepPolicy::default()
        };
        assert_eq!(kept(&policy, &backups), ["new", "old"]);
    }

    #[test]
    fn empty_and_keyless_tag_rules_are_refused() {
        for bad in ["", " ", "=", "=x", "a\nb"] {
            assert!(parse_keep_tag(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_keep_tag("keep").as_deref(), Ok("keep"));
        assert_eq!(parse_keep_tag("keep=x").as_deref(), Ok("keep=x"));
    }
}

/// The decision for one backup, with what `forget` shows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ForgetEntry {
    /// The backup id.
    pub id: String,
    /// Its volume.
    pub volume: String,
    /// When it was taken (RFC 3339).
    pub time: String,
    /// True when a rule keeps it.
    pub keep: bool,
    /// The rules that keep it (see [`Decision::reasons`]).
    pub reasons: Vec<String>,
}

/// What `forget` decided (and, unless a dry run, did).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ForgetReport {
    /// True when nothing was removed because only a plan was asked for.
    pub dry_run: bool,
    /// Every backup considered, grouped by volume, newest first within a volume.
    pub backups: Vec<ForgetEntry>,
    /// Ids removed (or that would be).
    pub removed: Vec<String>,
    /// Calendar the period rules used.
    pub calendar: String,
    /// The rules each volume was judged by: recorded with its newest backup, or the command
    /// line's ([`crate::retention_spec`]).
    pub policies: Vec<crate::retention_spec::VolumePolicy>,
}

const PROTECTED_PREFIX: &str = crate::layout::PROTECTED;

fn protected_key(id: &str) -> String {
    format!("{PROTECTED_PREFIX}{id}")
}

/// Ids of protected backups.
pub(crate) async fn protected_ids(repo: &crate::Repository) -> crate::Result<HashSet<String>> {
    Ok(repo
        .store()
        .list(PROTECTED_PREFIX)
        .await?
        .into_iter()
        .filter_map(|o| o.key.strip_prefix(PROTECTED_PREFIX).map(str::to_string))
        .collect())
}

/// Protects a backup from every retention rule (`remove` lifts the protection). `spec` is an
/// id or unique prefix; returns the full id.
pub async fn protect(repo: &crate::Repository, spec: &str, remove: bool) -> crate::Result<String> {
    // Lifting a protection does not need the manifest (it may be damaged).
    let id = if remove {
        repo.resolve_backup_id(spec).await?
    } else {
        repo.resolve_backup(spec, None).await?.id
    };
    let key = protected_key(&id);
    if remove {
        repo.store().delete(&key).await?;
    } else {
        let body = format!("{{\"protected\":\"{}\"}}", crate::time_util::now_rfc3339());
        repo.store().put(&key, bytes::Bytes::from(body)).await?;
    }
    Ok(id)
}

/// Applies `policy` to every volume (or one) and removes the backups no rule keeps. A volume
/// whose newest backup records its own rules (the `s3mover.retention` tag) uses those instead
/// of `policy`'s counting rules. With an empty `policy`, only such volumes are thinned and the
/// others keep every backup; when no volume records rules, an empty `policy` is refused.
pub async fn forget(
    repo: &crate::Repository,
    volume: Option<&str>,
    policy: &KeepPolicy,
    dry_run: bool,
) -> crate::Result<ForgetReport> {
    for tag in &policy.tags {
        parse_keep_tag(tag).map_err(|e| crate::Error::Invalid(format!("--keep-tag: {e}")))?;
    }
    let manifests = repo.list_manifests(volume).await?;
    let protected = protected_ids(repo).await?;
    let mut volumes: Vec<String> = manifests.iter().map(|m| m.volume.clone()).collect();
    volumes.sort();
    volumes.dedup();
    let mut report = ForgetReport {
        dry_run,
        backups: Vec::new(),
        removed: Vec::new(),
        calendar: match policy.offset {
            Some(o) if o != UtcOffset::UTC => format!("UTC{o}"),
            _ => "UTC".into(),
        },
        policies: Vec::new(),
    };
    for name in volumes {
        let of_volume: Vec<&crate::manifest::Manifest> =
            manifests.iter().filter(|m| m.volume == name).collect();
        let mut candidates = Vec::new();
        for m in &of_volume {
            let time = crate::time_util::parse_rfc3339(&m.time).ok_or_else(|| {
                crate::Error::corrupt_object(
                    &crate::layout::manifest_key(&m.id),
                    format!("backup {} has an invalid time {:?}", m.id, m.time),
                )
            })?;
            candidates.push(Candidate {
                id: m.id.clone(),
                time,
                tags: m.tags.clone(),
                protected: protected.contains(&m.id),
            });
        }
        let (volume_policy, shown) =
            crate::retention_spec::volume_policy(policy, &name, &candidates);
        report.policies.push(shown);
        // No rule at all for this volume: it keeps every backup (an empty policy keeps none).
        let decisions = if volume_policy.is_empty() {
            keep_all(&candidates)
        } else {
            apply(&volume_policy, &candidates)
        };
        for decision in decisions {
            let time = of_volume
                .iter()
                .find(|m| m.id == decision.id)
                .map(|m| m.time.clone())
                .unwrap_or_default();
            if !decision.keep {
                report.removed.push(decision.id.clone());
            }
            report.backups.push(ForgetEntry {
                id: decision.id,
                volume: name.clone(),
                time,
                keep: decision.keep,
                reasons: decision.reasons,
            });
        }
    }
    if policy.is_empty() && !report.policies.iter().any(|p| p.source == "recorded") {
        return Err(crate::Error::Invalid(
            "forget needs at least one --keep-* rule: no volume's backups record their own (the s3mover.retention tag); nothing was removed"
                .into(),
        ));
    }
    if !policy.allow_remove_all {
        refuse_emptied_volumes(&report)?;
    }
    if !dry_run {
        for id in &report.removed {
            repo.store()
                .delete(&crate::layout::manifest_key(id))
                .await?;
            // The tree table goes with its manifest (a crash in between leaves it to prune).
            repo.store().delete(&crate::tree_table::key(id)).await?;
        }
    }
    Ok(report)
}

/// Keeps every candidate, newest first as [`apply`] lists them: the decision for a volume no
/// rule applies to.
fn keep_all(candidates: &[Candidate]) -> Vec<Decision> {
    let mut order: Vec<&Candidate> = candidates.iter().collect();
    order.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
    order
        .into_iter()
        .map(|c| Decision {
            id: c.id.clone(),
            keep: true,
            reasons: vec!["no-rules".into()],
        })
        .collect()
}

/// Refuses a decision that leaves a volume with no backup: the rules given keep none of its
/// backups, which is more often a mistake (a tag rule that matches nothing, a window in the
/// wrong unit) than the intent.
fn refuse_emptied_volumes(report: &ForgetReport) -> crate::Result<()> {
    let mut emptied: Vec<(&str, usize)> = Vec::new();
    for entry in &report.backups {
        match emptied.last_mut() {
            Some((volume, count)) if *volume == entry.volume => *count += 1,
            _ => emptied.push((&entry.volume, 1)),
        }
    }
    emptied.retain(|(volume, _)| {
        report
            .backups
            .iter()
            .filter(|e| e.volume == *volume)
            .all(|e| !e.keep)
    });
    if emptied.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = emptied
        .iter()
        .map(|(volume, count)| format!("{} ({count} backups)", volume.escape_debug()))
        .collect();
    Err(crate::Error::Invalid(format!(
        "these rules keep no backup of volume {}; nothing was removed. Pass --allow-remove-all to remove them all",
        named.join(", ")
    )))
}

/// Removes the named backups (full ids or unique prefixes), whether or not their manifest can
/// be read: the supported way to remove a backup whose manifest is damaged, which no retention
/// rule can judge. A protected backup is refused. `prune` then frees its data.
pub async fn forget_ids(
    repo: &crate::Repository,
    specs: &[String],
    dry_run: bool,
) -> crate::Result<ForgetReport> {
    let protected = protected_ids(repo).await?;
    let mut ids: Vec<String> = Vec::new();
    for spec in specs {
        let id = repo.resolve_backup_id(spec).await?;
        if protected.contains(&id) {
            return Err(crate::Error::Invalid(format!(
                "backup {id} is protected; `s3mover protect --remove {id}` lifts the protection"
            )));
        }
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let mut report = ForgetReport {
        dry_run,
        backups: Vec::new(),
        removed: Vec::new(),
        calendar: "UTC".into(),
        policies: Vec::new(),
    };
    for id in ids {
        let (volume, time, reason) = match repo.read_manifest(&id).await {
            Ok(m) => (m.volume, m.time, "named".to_string()),
            Err(crate::Error::Corrupt {
                reason: problem, ..
            }) => (String::new(), String::new(), format!("named ({problem})")),
            Err(e) => return Err(e),
        };
        if !dry_run {
            repo.store().delete(&crate::repo::manifest_key(&id)).await?;
            repo.store().delete(&crate::tree_table::key(&id)).await?;
        }
        report.removed.push(id.clone());
        report.backups.push(ForgetEntry {
            id,
            volume,
            time,
            keep: false,
            reasons: vec![reason],
        });
    }
    Ok(report)
}
