//! What a rollout test reports: per pod and round the measured times, node moves, volume
//! attachments and events; the failure conditions (`--fail-on`) and the verdict they give;
//! and the summary over rounds (how often Multi-Attach happened, min/median/max times).

use serde::Serialize;

use crate::{Error, Result};

/// How the rolling update is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// The pod-template annotation `rolling-restart-trigger=<run id>` (the default).
    Annotation,
    /// `kubectl rollout restart`: the `kubectl.kubernetes.io/restartedAt` annotation.
    Restart,
    /// The environment variable `ROLLING_UPDATE_TRIGGER=<run id>` in every container.
    Env,
    /// A partition-stepped rollout: partition = replicas, the annotation, then the partition
    /// lowered one ordinal at a time as each updated pod becomes Ready.
    Partition,
}

impl std::str::FromStr for Trigger {
    type Err = Error;
    fn from_str(s: &str) -> Result<Trigger> {
        Ok(match s {
            "annotation" => Trigger::Annotation,
            "restart" => Trigger::Restart,
            "env" => Trigger::Env,
            "partition" => Trigger::Partition,
            other => {
                return Err(Error::Invalid(format!(
                    "--trigger {other:?}: use annotation, restart, env or partition"
                )))
            }
        })
    }
}

/// How long Terminating is too long.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StuckLimit {
    /// A multiple of the pod's grace period (`2x-grace`).
    GraceFactor(f64),
    /// A fixed number of seconds (`90s`, `10m`).
    Seconds(f64),
}

impl StuckLimit {
    /// The limit in seconds for a pod with this grace period.
    pub fn seconds(&self, grace: i64) -> f64 {
        match self {
            StuckLimit::GraceFactor(f) => f * grace.max(0) as f64,
            StuckLimit::Seconds(s) => *s,
        }
    }

    fn describe(&self) -> String {
        match self {
            StuckLimit::GraceFactor(f) => format!("{f}x its grace period"),
            StuckLimit::Seconds(s) => format!("{s} s"),
        }
    }
}

/// The conditions that fail a test (`--fail-on`). A rollout that does not complete within
/// `--timeout` always fails.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailOn {
    /// A `FailedAttachVolume` Multi-Attach error for any of the set's pods.
    pub multi_attach: bool,
    /// A pod Terminating longer than this.
    pub stuck_terminating: Option<StuckLimit>,
    /// A canary not read back intact.
    pub data: bool,
    /// Any other `FailedAttachVolume` (e.g. `ControllerPublishVolume … not found`) or a
    /// VolumeAttachment's attach or detach error.
    pub attach_error: bool,
    /// A `FailedMount` event.
    pub mount_error: bool,
    /// A `FailedPreStopHook` event.
    pub prestop_hook: bool,
}

/// `--fail-on`'s default.
pub const DEFAULT_FAIL_ON: &str = "multi-attach,stuck-terminating=2x-grace,data";

impl std::str::FromStr for FailOn {
    type Err = Error;
    fn from_str(s: &str) -> Result<FailOn> {
        let mut f = FailOn {
            multi_attach: false,
            stuck_terminating: None,
            data: false,
            attach_error: false,
            mount_error: false,
            prestop_hook: false,
        };
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (item, None),
            };
            match (key, value) {
                ("none", None) => {}
                ("multi-attach", None) => f.multi_attach = true,
                ("data", None) => f.data = true,
                ("attach-error", None) => f.attach_error = true,
                ("mount-error", None) => f.mount_error = true,
                ("prestop-hook", None) => f.prestop_hook = true,
                ("stuck-terminating", v) => {
                    f.stuck_terminating = Some(parse_stuck(v.unwrap_or("2x-grace"))?)
                }
                _ => {
                    return Err(Error::Invalid(format!(
                        "--fail-on {item:?}: use a list of multi-attach, stuck-terminating[=Nx-grace|DURATION], data, attach-error, mount-error, prestop-hook (or none)"
                    )))
                }
            }
        }
        Ok(f)
    }
}

fn parse_stuck(v: &str) -> Result<StuckLimit> {
    let bad = || {
        Error::Invalid(format!(
            "--fail-on stuck-terminating={v}: use Nx-grace (e.g. 2x-grace) or a duration (e.g. 90s, 10m)"
        ))
    };
    if let Some(f) = v.strip_suffix("x-grace") {
        let f: f64 = f.parse().map_err(|_| bad())?;
        if !(f.is_finite() && f > 0.0) {
            return Err(bad());
        }
        return Ok(StuckLimit::GraceFactor(f));
    }
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    Ok(StuckLimit::Seconds(n * mult))
}

/// `pass` or `fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// No failure condition was met and the rollout completed.
    Pass,
    /// At least one reason.
    Fail,
}

/// An Event (or a VolumeAttachment error) seen during the round.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    /// Seconds after the trigger when it was first seen (or seen again).
    pub at_seconds: f64,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `FailedAttachVolume`, `FailedMount`, `FailedPreStopHook`, `Killing`, ...
    pub reason: String,
    /// The event's message.
    pub message: String,
    /// The object it is about (`Pod/etcd-0`, `VolumeAttachment/csi-…`).
    pub object: String,
    /// How many times it had happened when last seen.
    pub count: i32,
}

impl EventRecord {
    /// A Multi-Attach error.
    pub fn is_multi_attach(&self) -> bool {
        self.reason == "FailedAttachVolume" && self.message.contains("Multi-Attach")
    }

    /// An attach failure other than Multi-Attach, or a VolumeAttachment error.
    pub fn is_attach_error(&self) -> bool {
        (self.reason == "FailedAttachVolume" && !self.is_multi_attach())
            || self.reason == "VolumeAttachmentError"
    }
}

/// One claim of a pod: where its volume was attached before and after.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeResult {
    /// The claim.
    pub claim: String,
    /// Its PersistentVolume.
    pub pv: String,
    /// When the attachment to the old node went away (seconds after the trigger).
    pub detached_at_seconds: Option<f64>,
    /// When it was attached to the new pod's node.
    pub attached_at_seconds: Option<f64>,
    /// From the old pod's deletion to the detach.
    pub detach_seconds: Option<f64>,
    /// From the detach to the attach on the new node.
    pub detach_to_attach_seconds: Option<f64>,
}

/// One pod of the set in one round.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodResult {
    /// `<set>-<ordinal>`.
    pub pod: String,
    /// Its node before.
    pub old_node: String,
    /// The replacement's node.
    pub new_node: Option<String>,
    /// Whether the replacement runs elsewhere.
    pub node_changed: bool,
    /// The old pod's grace period.
    pub grace_period_seconds: i64,
    /// When the old pod was deleted (seconds after the trigger).
    pub deleted_at_seconds: Option<f64>,
    /// When it was gone from the API.
    pub gone_at_seconds: Option<f64>,
    /// When the replacement was Ready.
    pub ready_at_seconds: Option<f64>,
    /// Deletion → gone (the time spent Terminating); while still Terminating at the end, the
    /// time so far.
    pub termination_seconds: Option<f64>,
    /// Still Terminating when the round ended.
    pub still_terminating: bool,
    /// Terminating longer than the `stuck-terminating` limit.
    pub stuck_terminating: bool,
    /// Deletion → the replacement Ready: how long this member was unavailable.
    pub unavailable_seconds: Option<f64>,
    /// A Multi-Attach error for the replacement.
    pub multi_attach: bool,
    /// Its claims.
    pub volumes: Vec<VolumeResult>,
    /// Events about the old pod, the replacement or their VolumeAttachments.
    pub events: Vec<EventRecord>,
}

/// A data check of one claim.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CanaryResult {
    /// The claim.
    pub claim: String,
    /// `intact`, `changed`, `missing` or `error`.
    pub status: String,
    /// What was found.
    pub message: String,
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    /// Seconds after the trigger.
    pub at_seconds: f64,
    /// What happened.
    pub what: String,
}

/// One rollout.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoundResult {
    /// 1-based.
    pub round: u32,
    /// The run id written by the trigger.
    pub run_id: String,
    /// How it was started.
    pub trigger: Trigger,
    /// Whether the rollout completed before the timeout.
    pub completed: bool,
    /// Trigger → complete (or → timeout).
    pub duration_seconds: f64,
    /// The round's verdict.
    pub verdict: Verdict,
    /// Why it failed.
    pub reasons: Vec<String>,
    /// Per pod.
    pub pods: Vec<PodResult>,
    /// Data checks (empty without `--canary-image`).
    pub canary: Vec<CanaryResult>,
    /// What happened, in order.
    pub timeline: Vec<TimelineEntry>,
}

/// min/median/max of a measurement over rounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Number of rounds that measured it.
    pub samples: usize,
    /// Smallest.
    pub min: f64,
    /// Median (mean of the middle two for an even count).
    pub median: f64,
    /// Largest.
    pub max: f64,
}

impl Stats {
    /// The statistics of `values`, `None` when empty.
    pub fn of(values: &[f64]) -> Option<Stats> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stats {
            samples: n,
            min: v[0],
            median,
            max: v[n - 1],
        })
    }
}

/// One pod over all rounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSummary {
    /// `<set>-<ordinal>`.
    pub pod: String,
    /// Unavailability.
    pub unavailable_seconds: Option<Stats>,
    /// Time Terminating.
    pub termination_seconds: Option<Stats>,
    /// In how many rounds it moved to another node.
    pub node_changes: usize,
    /// In how many rounds it saw Multi-Attach.
    pub multi_attach_rounds: usize,
}

/// Over all rounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Rounds run.
    pub rounds: usize,
    /// Rounds that completed.
    pub completed_rounds: usize,
    /// Rounds with at least one Multi-Attach error.
    pub multi_attach_rounds: usize,
    /// `multiAttachRounds / rounds`.
    pub multi_attach_rate: f64,
    /// Rounds with a pod Terminating too long.
    pub stuck_terminating_rounds: usize,
    /// Rounds with a `FailedPreStopHook`.
    pub prestop_hook_failure_rounds: usize,
    /// Rounds whose data check failed.
    pub data_failure_rounds: usize,
    /// Per pod.
    pub pods: Vec<PodSummary>,
}

/// The whole test.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The StatefulSet.
    pub stateful_set: String,
    /// Its namespace.
    pub namespace: String,
    /// `fail` if any round failed.
    pub verdict: Verdict,
    /// Every round's reasons, prefixed with the round when there are several.
    pub reasons: Vec<String>,
    /// Each round.
    pub rounds: Vec<RoundResult>,
    /// The last round's pods (the same as `rounds[-1].pods`).
    pub pods: Vec<PodResult>,
    /// Rates and statistics over the rounds.
    pub summary: Summary,
}

/// The failure reasons of a round under `fail_on`.
pub fn round_reasons(round: &RoundResult, fail_on: &FailOn, timeout_secs: f64) -> Vec<String> {
    let mut out = Vec::new();
    if !round.completed {
        out.push(format!(
            "the rollout did not complete within {timeout_secs:.0} s"
        ));
    }
    for p in &round.pods {
        if fail_on.multi_attach && p.multi_attach {
            let first = p.events.iter().find(|e| e.is_multi_attach());
            out.push(format!(
                "multi-attach: {} could not attach its volume ({})",
                p.pod,
                first.map(|e| e.message.as_str()).unwrap_or("")
            ));
        }
        if let (Some(limit), true) = (fail_on.stuck_terminating, p.stuck_terminating) {
            out.push(format!(
                "stuck-terminating: {} was Terminating for {:.1} s{}, more than {} ({} s)",
                p.pod,
                p.termination_seconds.unwrap_or(0.0),
                if p.still_terminating {
                    " and still is"
                } else {
                    ""
                },
                limit.describe(),
                p.grace_period_seconds
            ));
        }
        let first_of = |pred: &dyn Fn(&EventRecord) -> bool| p.events.iter().find(|e| pred(e));
        if fail_on.attach_error {
            if let Some(e) = first_of(&|e| e.is_attach_error()) {
                out.push(format!("attach-error: {}: {}", p.pod, e.message));
            }
        }
        if fail_on.mount_error {
            if let Some(e) = first_of(&|e| e.reason == "FailedMount") {
                out.push(format!("mount-error: {}: {}", p.pod, e.message));
            }
        }
        if fail_on.prestop_hook {
            if let Some(e) = first_of(&|e| e.reason == "FailedPreStopHook") {
                out.push(format!("prestop-hook: {}: {}", p.pod, e.message));
            }
        }
    }
    if fail_on.data {
        for c in round.canary.iter().filter(|c| c.status != "intact") {
            out.push(format!(
                "data: claim {} {}: {}",
                c.claim, c.status, c.message
            ));
        }
    }
    out
}

/// The summary over `rounds`.
pub fn summarize(rounds: &[RoundResult]) -> Summary {
    let mut names: Vec<String> = Vec::new();
    for r in rounds {
        for p in &r.pods {
            if !names.contains(&p.pod) {
                names.push(p.pod.clone());
            }
        }
    }
    let pods = names
        .iter()
        .map(|n| {
            let of = |f: &dyn Fn(&PodResult) -> Option<f64>| -> Vec<f64> {
                rounds
                    .iter()
                    .flat_map(|r| r.pods.iter().filter(|p| &p.pod == n))
                    .filter_map(f)
                    .collect()
            };
            let count = |f: &dyn Fn(&PodResult) -> bool| {
                rounds
                    .iter()
                    .flat_map(|r| r.pods.iter().filter(|p| &p.pod == n))
                    .filter(|p| f(p))
                    .count()
            };
            PodSummary {
                pod: n.clone(),
                unavailable_seconds: Stats::of(&of(&|p| p.unavailable_seconds)),
                termination_seconds: Stats::of(&of(&|p| {
                    p.termination_seconds.filter(|_| !p.still_terminating)
                })),
                node_changes: count(&|p| p.node_changed),
                multi_attach_rounds: count(&|p| p.multi_attach),
            }
        })
        .collect();
    let rounds_with = |f: &dyn Fn(&RoundResult) -> bool| rounds.iter().filter(|r| f(r)).count();
    let multi = rounds_with(&|r| r.pods.iter().any(|p| p.multi_attach));
    Summary {
        rounds: rounds.len(),
        completed_rounds: rounds_with(&|r| r.completed),
        multi_attach_rounds: multi,
        multi_attach_rate: if rounds.is_empty() {
            0.0
        } else {
            multi as f64 / rounds.len() as f64
        },
        stuck_terminating_rounds: rounds_with(&|r| r.pods.iter().any(|p| p.stuck_terminating)),
        prestop_hook_failure_rounds: rounds_with(&|r| {
            r.pods
                .iter()
                .any(|p| p.events.iter().any(|e| e.reason == "FailedPreStopHook"))
        }),
        data_failure_rounds: rounds_with(&|r| r.canary.iter().any(|c| c.status != "intact")),
        pods,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_on_parses_the_documented_list() {
        let f: FailOn = DEFAULT_FAIL_ON.parse().unwrap();
        assert!(f.multi_attach && f.data && !f.attach_error);
        assert_eq!(f.stuck_terminating, Some(StuckLimit::GraceFactor(2.0)));
        let g: FailOn = "stuck-terminating=90s,prestop-hook".parse().unwrap();
        assert_eq!(g.stuck_terminating, Some(StuckLimit::Seconds(90.0)));
        assert!(g.prestop_hook && !g.multi_attach);
        let n: FailOn = "none".parse().unwrap();
        assert!(!n.multi_attach && n.stuck_terminating.is_none());
    }

    #[test]
    fn bad_fail_on_items_say_what_is_allowed() {
        for bad in [
            "multiattach",
            "stuck-terminating=x-grace",
            "stuck-terminating=5d",
            "data=1",
        ] {
            let e = bad.parse::<FailOn>().unwrap_err().to_string();
            assert!(e.starts_with("--fail-on "), "{bad}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e = "rollback".parse::<Trigger>().unwrap_err().to_string();
        assert!(e.contains("annotation, restart, env or partition"), "{e}");
    }

    #[test]
    fn stats_are_min_median_max() {
        assert_eq!(Stats::of(&[]), None);
        let s = Stats::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max, s.samples), (1.0, 2.0, 3.0, 3));
        assert_eq!(Stats::of(&[4.0, 1.0]).unwrap().median, 2.5);
    }

    fn pod(name: &str) -> PodResult {
        PodResult {
            pod: name.into(),
            grace_period_seconds: 10,
            ..PodResult::default()
        }
    }

    fn round(pods: Vec<PodResult>, completed: bool) -> RoundResult {
        RoundResult {
            round: 1,
            run_id: "r".into(),
            trigger: Trigger::Annotation,
            completed,
            duration_seconds: 1.0,
            verdict: Verdict::Pass,
            reasons: vec![],
            pods,
            canary: vec![],
            timeline: vec![],
        }
    }

    #[test]
    fn reasons_follow_fail_on() {
        let f: FailOn = DEFAULT_FAIL_ON.parse().unwrap();
        assert!(round_reasons(&round(vec![pod("a-0")], true), &f, 60.0).is_empty());
        let mut p = pod("a-0");
        p.multi_attach = true;
        p.events.push(EventRecord {
            at_seconds: 1.0,
            type_: "Warning".into(),
            reason: "FailedAttachVolume".into(),
            message: "Multi-Attach error for volume \"pvc-1\"".into(),
            object: "Pod/a-0".into(),
            count: 1,
        });
        p.stuck_terminating = true;
        p.termination_seconds = Some(25.0);
        let r = round_reasons(&round(vec![p.clone()], false), &f, 60.0);
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(r[0].contains("did not complete within 60 s"), "{r:?}");
        assert!(r[1].starts_with("multi-attach: a-0"), "{r:?}");
        assert!(r[2].contains("Terminating for 25.0 s"), "{r:?}");
        let none: FailOn = "none".parse().unwrap();
        assert!(round_reasons(&round(vec![p], true), &none, 60.0).is_empty());
    }

    #[test]
    fn the_summary_counts_rounds_and_pods() {
        let mut a = pod("a-0");
        a.unavailable_seconds = Some(2.0);
        a.multi_attach = true;
        let mut b = pod("a-0");
        b.unavailable_seconds = Some(4.0);
        b.node_changed = true;
        let s = summarize(&[round(vec![a], true), round(vec![b], true)]);
        assert_eq!(s.multi_attach_rounds, 1);
        assert_eq!(s.multi_attach_rate, 0.5);
        assert_eq!(s.pods[0].unavailable_seconds.as_ref().unwrap().median, 3.0);
        assert_eq!(s.pods[0].node_changes, 1);
    }
}
