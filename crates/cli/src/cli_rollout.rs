//! Flags of `s3mover rollout-test`: which StatefulSet, how to start its rolling update, how
//! many times, and what fails the test.

use std::time::Duration;

use clap::Args;

use crate::cli_k8s::{parse_duration, ClusterArgs};

/// `s3mover rollout-test STATEFULSET -n NS …`
#[derive(Debug, Args)]
pub struct RolloutTestArgs {
    /// The StatefulSet whose rolling update is measured.
    #[arg(value_name = "STATEFULSET")]
    pub stateful_set: String,
    /// Its namespace [default: the kubeconfig context's].
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// How to start the update: annotation (pod-template annotation
    /// rolling-restart-trigger=<run id>), restart (as `kubectl rollout restart`), env
    /// (ROLLING_UPDATE_TRIGGER=<run id> in every container), partition (partition-stepped:
    /// one ordinal at a time from the highest).
    #[arg(long, default_value = "annotation", value_name = "HOW")]
    pub trigger: String,
    /// Repeat the test this many times and report rates and min/median/max.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub rounds: u32,
    /// Give up on one rollout after this long (e.g. 90s, 30m).
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// What fails the test: multi-attach, stuck-terminating[=Nx-grace|DURATION], data,
    /// attach-error, mount-error, prestop-hook, or none. A rollout that does not complete
    /// within --timeout always fails.
    #[arg(long, default_value = s3mover_k8s::rollout::report::DEFAULT_FAIL_ON, value_name = "LIST")]
    pub fail_on: String,
    /// Check data: an image with /bin/sh for the pods that write a canary to each claim before
    /// the rollout and read it back after (see docs/rollout-test.md). No data check without it.
    #[arg(long, value_name = "IMAGE")]
    pub canary_image: Option<String>,
    /// How often the cluster is looked at (the times' resolution).
    #[arg(long, default_value = "200ms", value_parser = parse_poll, value_name = "DURATION")]
    pub poll: Duration,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `200ms`, or any duration `parse_duration` takes; at least 50 ms.
pub fn parse_poll(text: &str) -> Result<Duration, String> {
    let d = match text.trim().strip_suffix("ms") {
        Some(ms) => ms
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("{text:?} is not a duration; use e.g. 200ms or 1s"))?,
        None => parse_duration(text)?,
    };
    if d < Duration::from_millis(50) {
        return Err(format!("{text:?} is too short; use at least 50ms"));
    }
    Ok(d)
}
