//! One round of a rollout test: baseline, data-check canaries, trigger, then the cluster
//! looked at every `poll` interval (pods of the set, the namespace's Events, VolumeAttachments,
//! the set's status) until the rollout is complete or the timeout passes. Times are this
//! process's clock at the first look that saw a change, so they are accurate to the poll
//! interval; Events are attributed when first seen (or seen again with a higher count).

use std::collections::HashMap;
use std::time::Instant;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::report::{
    round_reasons, EventRecord, PodResult, RoundResult, TimelineEntry, Trigger, Verdict,
    VolumeResult,
};
use super::{baseline, canary, selector, set_partition, trigger, Baseline, Options};
use crate::{Error, Result};

/// Running with its Ready condition True.
pub fn ready(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref().and_then(|s| s.node_name.clone())
}

/// What is known of one ordinal during the round.
struct Track {
    base: Baseline,
    r: PodResult,
    new_uid: Option<String>,
    stuck_noted: bool,
}

struct Round {
    start: Instant,
    timeline: Vec<TimelineEntry>,
}

impl Round {
    fn t(&self) -> f64 {
        (self.start.elapsed().as_secs_f64() * 10.0).round() / 10.0
    }

    fn note(&mut self, what: String) {
        let at = self.t();
        self.timeline.push(TimelineEntry {
            at_seconds: at,
            what,
        });
    }
}

/// Runs one round against `set` (as read just before it).
pub async fn round(
    client: &Client,
    set: &StatefulSet,
    opts: &Options,
    number: u32,
) -> Result<RoundResult> {
    let ns = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let base = baseline(client, set).await?;
    let run_id = format!(
        "rollout-test-{}-{number}",
        time::OffsetDateTime::now_utc().unix_timestamp()
    );
    let canaries = match &opts.canary_image {
        Some(image) => canary::write_all(client, &ns, &base, image, &run_id, opts.timeout).await?,
        None => Vec::new(),
    };
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let mut seen: HashMap<String, i32> = events
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::api(format!("listing events in {ns}"), e))?
        .items
        .iter()
        .map(|e| (e.uid().unwrap_or_default(), e.count.unwrap_or(1)))
        .collect();
    let mut tracks: Vec<Track> = base
        .iter()
        .map(|b| Track {
            r: PodResult {
                pod: b.pod.clone(),
                old_node: b.node.clone(),
                grace_period_seconds: b.grace,
                volumes: b
                    .claims
                    .iter()
                    .map(|(c, pv)| VolumeResult {
                        claim: c.clone(),
                        pv: pv.clone(),
                        ..VolumeResult::default()
                    })
                    .collect(),
                ..PodResult::default()
            },
            base: b.clone(),
            new_uid: None,
            stuck_noted: false,
        })
        .collect();

    let mut rd = Round {
        start: Instant::now(),
        timeline: Vec::new(),
    };
    trigger(client, set, opts.trigger, &run_id).await?;
    rd.note(match opts.trigger {
        Trigger::Annotation => format!(
            "trigger: pod-template annotation {}={run_id}",
            super::TRIGGER_ANNOTATION
        ),
        Trigger::Restart => "trigger: kubectl.kubernetes.io/restartedAt (rollout restart)".into(),
        Trigger::Env => format!("trigger: env {}={run_id}", super::TRIGGER_ENV),
        Trigger::Partition => format!(
            "trigger: partition {replicas}, annotation {}={run_id}",
            super::TRIGGER_ANNOTATION
        ),
    });
    let mut partition = replicas;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let vas: Api<VolumeAttachment> = Api::all(client.clone());
    let sel = selector(set)?;
    let mut va_readable = true;
    let mut va_errors_seen: Vec<String> = Vec::new();
    let completed = loop {
        if opts.trigger == Trigger::Partition
            && partition > 0
            && (partition == replicas
                || tracks
                    .get(partition as usize)
                    .is_some_and(|t| t.r.ready_at_seconds.is_some()))
        {
            partition -= 1;
            set_partition(client, &ns, &name, partition).await?;
            rd.note(format!("partition lowered to {partition}"));
        }
        let pods = pods_api
            .list(&ListParams::default().labels(&sel))
            .await
            .map_err(|e| Error::api(format!("listing the pods of {name}"), e))?
            .items;
        let t = rd.t();
        for tr in tracks.iter_mut() {
            observe_pod(&mut rd, tr, &pods, t, opts);
        }
        if va_readable {
            match vas.list(&ListParams::default()).await {
                Ok(list) => {
                    for tr in tracks.iter_mut() {
                        observe_volumes(&mut rd, tr, &list.items, t, &mut va_errors_seen);
                    }
                }
                Err(e) => {
                    va_readable = false;
                    rd.note(format!(
                        "VolumeAttachments cannot be read ({}); detach and attach times are not measured",
                        crate::error::chain(&e)
                    ));
                }
            }
        }
        let evs = events
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::api(format!("listing events in {ns}"), e))?
            .items;
        observe_events(&mut rd, &mut tracks, &evs, &mut seen, &name, t);
        let current = sets
            .get_opt(&name)
            .await
            .map_err(|e| Error::api(format!("reading statefulset {name}"), e))?;
        let all_new = tracks.iter().all(|tr| tr.r.ready_at_seconds.is_some());
        if all_new && current.as_ref().is_some_and(|s| rolled_out(s, replicas)) {
            rd.note("rollout complete".into());
            break true;
        }
        if rd.start.elapsed() >= opts.timeout {
            rd.note(format!(
                "timeout: the rollout did not complete within {} s",
                opts.timeout.as_secs()
            ));
            break false;
        }
        tokio::time::sleep(opts.poll).await;
    };
    let duration = rd.t();
    for tr in tracks.iter_mut() {
        if let (Some(d), None) = (tr.r.deleted_at_seconds, tr.r.gone_at_seconds) {
            tr.r.still_terminating = tr.new_uid.is_none();
            if tr.r.still_terminating {
                tr.r.termination_seconds = Some(round1(duration - d));
            }
        }
    }
    let canary = if completed && !canaries.is_empty() {
        let after = baseline(
            client,
            &sets
                .get(&name)
                .await
                .map_err(|e| Error::api(format!("reading statefulset {name}"), e))?,
        )
        .await?;
        canary::read_all(
            client,
            &ns,
            &after,
            &canaries,
            opts.canary_image.as_deref().unwrap_or_default(),
            opts.timeout,
        )
        .await
    } else {
        Vec::new()
    };
    let mut rr = RoundResult {
        round: number,
        run_id,
        trigger: opts.trigger,
        completed,
        duration_seconds: duration,
        verdict: Verdict::Pass,
        reasons: Vec::new(),
        pods: tracks.into_iter().map(|t| t.r).collect(),
        canary,
        timeline: rd.timeline,
    };
    rr.reasons = round_reasons(&rr, &opts.fail_on, opts.timeout.as_secs_f64());
    if !rr.reasons.is_empty() {
        rr.verdict = Verdict::Fail;
    }
    Ok(rr)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The controller says the rollout is done, as `kubectl rollout status` reads it.
pub fn rolled_out(set: &StatefulSet, replicas: i32) -> bool {
    let Some(st) = &set.status else {
        return false;
    };
    st.observed_generation.unwrap_or(0) >= set.metadata.generation.unwrap_or(0)
        && st.ready_replicas.unwrap_or(0) >= replicas
        && st.updated_replicas.unwrap_or(0) >= replicas
        && st.update_revision.is_some()
        && st.update_revision == st.current_revision
}

fn observe_pod(rd: &mut Round, tr: &mut Track, pods: &[Pod], t: f64, opts: &Options) {
    let old = pods
        .iter()
        .find(|p| p.uid().as_deref() == Some(tr.base.uid.as_str()));
    match old {
        Some(p) if p.metadata.deletion_timestamp.is_some() && tr.r.deleted_at_seconds.is_none() => {
            tr.r.deleted_at_seconds = Some(t);
            rd.note(format!(
                "{} deleted, Terminating (grace period {} s)",
                tr.r.pod, tr.base.grace
            ));
        }
        None if tr.r.gone_at_seconds.is_none() => {
            let deleted = *tr.r.deleted_at_seconds.get_or_insert(t);
            tr.r.gone_at_seconds = Some(t);
            tr.r.termination_seconds = Some(round1(t - deleted));
            rd.note(format!(
                "{} gone after {:.1} s Terminating",
                tr.r.pod,
                t - deleted
            ));
        }
        _ => {}
    }
    if let (Some(d), None, Some(limit)) = (
        tr.r.deleted_at_seconds,
        tr.r.gone_at_seconds,
        opts.fail_on.stuck_terminating,
    ) {
        if t - d > limit.seconds(tr.base.grace) {
            tr.r.stuck_terminating = true;
            if !tr.stuck_noted {
                tr.stuck_noted = true;
                rd.note(format!(
                    "{} Terminating for {:.1} s, past the limit of {:.0} s",
                    tr.r.pod,
                    t - d,
                    limit.seconds(tr.base.grace)
                ));
            }
        }
    }
    if let (Some(g), Some(limit)) = (tr.r.gone_at_seconds, opts.fail_on.stuck_terminating) {
        let d = tr.r.deleted_at_seconds.unwrap_or(g);
        if g - d > limit.seconds(tr.base.grace) {
            tr.r.stuck_terminating = true;
        }
    }
    let new = pods
        .iter()
        .find(|p| p.name_any() == tr.r.pod && p.uid().as_deref() != Some(tr.base.uid.as_str()));
    if let Some(p) = new {
        if tr.new_uid.is_none() {
            tr.new_uid = p.uid();
            rd.note(format!("{} created again", tr.r.pod));
        }
        if tr.r.new_node.is_none() {
            if let Some(n) = node_of(p) {
                tr.r.node_changed = n != tr.base.node;
                rd.note(format!(
                    "{} scheduled to {n}{}",
                    tr.r.pod,
                    if tr.r.node_changed {
                        format!(" (was on {})", tr.base.node)
                    } else {
                        " (same node)".into()
                    }
                ));
                tr.r.new_node = Some(n);
            }
        }
        if tr.r.ready_at_seconds.is_none() && ready(p) && p.metadata.deletion_timestamp.is_none() {
            tr.r.ready_at_seconds = Some(t);
            let from = tr.r.deleted_at_seconds.unwrap_or(t);
            tr.r.unavailable_seconds = Some(round1(t - from));
            rd.note(format!(
                "{} Ready again, unavailable for {:.1} s",
                tr.r.pod,
                t - from
            ));
        }
    }
}

fn observe_volumes(
    rd: &mut Round,
    tr: &mut Track,
    vas: &[VolumeAttachment],
    t: f64,
    errors_seen: &mut Vec<String>,
) {
    let Some(deleted) = tr.r.deleted_at_seconds else {
        return;
    };
    for v in tr.r.volumes.iter_mut() {
        let pv = v.pv.clone();
        let of = |node: &str| {
            vas.iter().find(|a| {
                a.spec.source.persistent_volume_name.as_deref() == Some(pv.as_str())
                    && a.spec.node_name == node
            })
        };
        let attached = |a: Option<&VolumeAttachment>| {
            a.and_then(|a| a.status.as_ref())
                .is_some_and(|s| s.attached)
        };
        if v.detached_at_seconds.is_none() && !attached(of(&tr.base.node)) {
            v.detached_at_seconds = Some(t);
            v.detach_seconds = Some(round1(t - deleted));
            rd.note(format!(
                "volume {} ({}) detached from {}",
                v.pv, v.claim, tr.base.node
            ));
        }
        if let (None, Some(n)) = (v.attached_at_seconds, tr.r.new_node.as_deref()) {
            let fresh = n != tr.base.node || v.detached_at_seconds.is_some();
            if fresh && attached(of(n)) {
                v.attached_at_seconds = Some(t);
                if let Some(d) = v.detached_at_seconds {
                    v.detach_to_attach_seconds = Some(round1(t - d));
                }
                rd.note(format!("volume {} ({}) attached to {n}", v.pv, v.claim));
            }
        }
        for a in vas
            .iter()
            .filter(|a| a.spec.source.persistent_volume_name.as_deref() == Some(v.pv.as_str()))
        {
            let st = a.status.as_ref();
            let errs = [
                st.and_then(|s| s.attach_error.as_ref())
                    .map(|e| ("attach", e)),
                st.and_then(|s| s.detach_error.as_ref())
                    .map(|e| ("detach", e)),
            ];
            for (what, e) in errs.into_iter().flatten() {
                let msg = format!(
                    "{what} error on {}: {}",
                    a.spec.node_name,
                    e.message.clone().unwrap_or_default()
                );
                let key = format!("{}/{msg}", a.name_any());
                if errors_seen.contains(&key) {
                    continue;
                }
                errors_seen.push(key);
                rd.note(format!("VolumeAttachment {}: {msg}", a.name_any()));
                tr.r.events.push(EventRecord {
                    at_seconds: t,
                    type_: "Warning".into(),
                    reason: "VolumeAttachmentError".into(),
                    message: msg,
                    object: format!("VolumeAttachment/{}", a.name_any()),
                    count: 1,
                });
            }
        }
    }
}

fn observe_events(
    rd: &mut Round,
    tracks: &mut [Track],
    evs: &[Event],
    seen: &mut HashMap<String, i32>,
    set: &str,
    t: f64,
) {
    let mut evs: Vec<&Event> = evs.iter().collect();
    evs.sort_by_key(|e| {
        e.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    });
    for e in evs {
        let uid = e.uid().unwrap_or_default();
        let count = e.count.unwrap_or(1);
        if seen.get(&uid).is_some_and(|c| *c >= count) {
            continue;
        }
        seen.insert(uid, count);
        let obj = &e.involved_object;
        let kind = obj.kind.clone().unwrap_or_default();
        let oname = obj.name.clone().unwrap_or_default();
        let reason = e.reason.clone().unwrap_or_default();
        let message = e.message.clone().unwrap_or_default();
        let type_ = e.type_.clone().unwrap_or_else(|| "Normal".into());
        if kind == "StatefulSet" && oname == set {
            if type_ == "Warning" {
                rd.note(format!("StatefulSet {set}: {reason}: {message}"));
            }
            continue;
        }
        let Some(tr) = tracks
            .iter_mut()
            .find(|tr| kind == "Pod" && tr.r.pod == oname)
        else {
            continue;
        };
        let rec = EventRecord {
            at_seconds: t,
            type_: type_.clone(),
            reason: reason.clone(),
            message: message.clone(),
            object: format!("{kind}/{oname}"),
            count,
        };
        if rec.is_multi_attach() {
            tr.r.multi_attach = true;
        }
        let notable =
            type_ == "Warning" || matches!(reason.as_str(), "Killing" | "SuccessfulAttachVolume");
        if notable {
            let again = if count > 1 {
                format!(" (x{count})")
            } else {
                String::new()
            };
            rd.note(format!("{type_} {reason} {oname}: {message}{again}"));
        }
        tr.r.events.push(rec);
    }
}
