//! `s3mover rollout-test`: runs the StatefulSet rollout test (`s3mover_k8s::rollout`) and
//! prints its report: a timeline, per-pod times, the data check and the verdict as text, or
//! the whole report as JSON. Exits 0 on `pass`, 1 on `fail`.

use anyhow::Result;
use s3mover_k8s::rollout::report::{PodResult, Report, RoundResult, Stats};
use s3mover_k8s::rollout::{self, FailOn, Options, Trigger, Verdict};
use s3mover_k8s::Cluster;

use crate::cli::{GlobalArgs, OutputFormat, EXIT_FAILED, EXIT_OK};
use crate::cli_rollout::RolloutTestArgs;
use crate::output::print_json;

/// Checks the flags (before the cluster is asked anything) into the test's options.
pub fn options(args: &RolloutTestArgs, namespace: String) -> Result<Options> {
    let trigger: Trigger = args.trigger.parse()?;
    let fail_on: FailOn = args.fail_on.parse()?;
    if args.rounds == 0 {
        return Err(s3mover_k8s::Error::Invalid("--rounds must be at least 1".into()).into());
    }
    Ok(Options {
        stateful_set: args.stateful_set.clone(),
        namespace,
        trigger,
        rounds: args.rounds,
        timeout: args.timeout,
        fail_on,
        canary_image: args.canary_image.clone(),
        poll: args.poll,
    })
}

pub async fn run(global: &GlobalArgs, args: &RolloutTestArgs) -> Result<u8> {
    options(args, String::new())?;
    let cluster = Cluster::connect(&args.cluster.options()).await?;
    let ns = args
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| cluster.default_namespace.clone());
    let opts = options(args, ns)?;
    let report = rollout::run(&cluster.client, &opts).await?;
    if global.output == OutputFormat::Json {
        print_json(&report)?;
    } else {
        print_text(&report, global.quiet);
    }
    Ok(if report.verdict == Verdict::Pass {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

fn secs(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.1}s")).unwrap_or_else(|| "-".into())
}

fn print_pods(pods: &[PodResult]) {
    let head = ["POD", "GRACE", "TERMINATING", "UNAVAILABLE", "MOVED"];
    println!(
        "  {:<24} {:>6} {:>12} {:>12}  {:<8} VOLUME DETACH→ATTACH",
        head[0], head[1], head[2], head[3], head[4]
    );
    for p in pods {
        let vols: Vec<String> = p
            .volumes
            .iter()
            .map(|v| {
                format!(
                    "{} {}",
                    v.claim,
                    v.detach_to_attach_seconds
                        .map(|s| format!("{s:.1}s"))
                        .unwrap_or_else(|| "-".into())
                )
            })
            .collect();
        let moved = match (&p.new_node, p.node_changed) {
            (Some(n), true) => format!("{}→{n}", p.old_node),
            (Some(_), false) => "no".into(),
            (None, _) => "-".into(),
        };
        println!(
            "  {:<24} {:>5}s {:>12} {:>12}  {:<8} {}",
            p.pod,
            p.grace_period_seconds,
            format!(
                "{}{}",
                secs(p.termination_seconds),
                if p.still_terminating { "+" } else { "" }
            ),
            secs(p.unavailable_seconds),
            moved,
            vols.join(", ")
        );
    }
}

fn print_round(r: &RoundResult) {
    println!(
        "round {} ({:?} trigger, run id {}): {} in {:.1}s",
        r.round,
        r.trigger,
        r.run_id,
        if r.completed {
            "completed"
        } else {
            "NOT completed"
        },
        r.duration_seconds
    );
    for t in &r.timeline {
        println!("  {:>7.1}s  {}", t.at_seconds, t.what);
    }
    print_pods(&r.pods);
    for c in &r.canary {
        println!("  data {}: {} ({})", c.claim, c.status, c.message);
    }
}

fn stats(s: &Option<Stats>) -> String {
    match s {
        Some(s) => format!("{:.1}/{:.1}/{:.1}s", s.min, s.median, s.max),
        None => "-".into(),
    }
}

fn print_text(report: &Report, quiet: bool) {
    if !quiet {
        for r in &report.rounds {
            print_round(r);
        }
        if report.rounds.len() > 1 {
            let s = &report.summary;
            println!(
                "summary: {} rounds, {} completed, Multi-Attach in {} ({:.0}%), stuck Terminating in {}, preStop failures in {}, data failures in {}",
                s.rounds,
                s.completed_rounds,
                s.multi_attach_rounds,
                s.multi_attach_rate * 100.0,
                s.stuck_terminating_rounds,
                s.prestop_hook_failure_rounds,
                s.data_failure_rounds
            );
            let head = [
                "POD",
                "UNAVAILABLE min/med/max",
                "TERMINATING min/med/max",
                "MOVES",
            ];
            println!(
                "  {:<24} {:>20} {:>20} {:>6}",
                head[0], head[1], head[2], head[3]
            );
            for p in &s.pods {
                println!(
                    "  {:<24} {:>20} {:>20} {:>6}",
                    p.pod,
                    stats(&p.unavailable_seconds),
                    stats(&p.termination_seconds),
                    p.node_changes
                );
            }
        }
    }
    match report.verdict {
        Verdict::Pass => println!(
            "PASS: statefulset {}/{} rolled out cleanly",
            report.namespace, report.stateful_set
        ),
        Verdict::Fail => {
            println!(
                "FAIL: statefulset {}/{}",
                report.namespace, report.stateful_set
            );
            for r in &report.reasons {
                println!("  - {r}");
            }
        }
    }
}
