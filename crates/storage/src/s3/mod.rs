//! S3 repositories (`s3://bucket/prefix`): builds `object_store`'s Amazon S3 client from the
//! repository URL, the environment and the AWS shared files, and turns S3 failures into one
//! line that says what to check.
//!
//! # Where the settings come from (first match wins)
//!
//! | setting     | sources                                                                          |
//! |-------------|----------------------------------------------------------------------------------|
//! | endpoint    | `?endpoint=URL`, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, profile `endpoint_url`; else AWS |
//! | region      | `?region=`, `AWS_REGION`, `AWS_DEFAULT_REGION`, profile `region`, else `us-east-1` |
//! | path style  | `?path-style=true|false`; default on when an endpoint is given (MinIO, Garage, Ceph) |
//! | plain HTTP  | allowed only when the endpoint itself is `http://…`                               |
//! | TLS roots   | the system roots, plus every certificate in `--ca-cert FILE` (PEM bundle)         |
//! | no TLS check| only with `--insecure-skip-tls-verify`                                            |
//!
//! # Credentials (first match wins)
//!
//! 1. `S3MOVER_S3_CREDENTIALS_COMMAND`: a shell command whose stdout is `credential_process` JSON
//!    (`{"Version":1,"AccessKeyId":…,"SecretAccessKey":…,"SessionToken":…,"Expiration":…}`).
//! 2. `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`).
//! 3. The profile `AWS_PROFILE` (or `default` when it exists) in `AWS_SHARED_CREDENTIALS_FILE`
//!    (`~/.aws/credentials`) and `AWS_CONFIG_FILE` (`~/.aws/config`): static keys or
//!    `credential_process` — the convention secret managers such as Bitwarden's `bws` use.
//! 4. Web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`) and container credentials
//!    (`AWS_CONTAINER_CREDENTIALS_*`), handled by `object_store` itself.
//!
//! Nothing else is guessed: without any of these, opening the repository fails with a message
//! that lists them (no silent wait on an instance-metadata endpoint that is not there).
//! Credentials from a command are cached and the command is run again five minutes before
//! their `Expiration`. Secrets never reach `Debug` output, logs or error messages; a command
//! line is shown by its program name only, since arguments may carry tokens.
//!
//! # The one retry policy
//!
//! Every S3 request goes through `object_store`'s retry loop, configured here and nowhere
//! else (the engine never retries a storage call itself, so retries never nest):
//!
//! * retried: 5xx, 429, 408, connection failures before the request was sent, and — because
//!   every s3mover write is an idempotent whole-object PUT or a part of a multipart upload, and
//!   deleting a key twice is harmless — interrupted requests and timeouts (object_store treats
//!   PUT and the multipart create/complete POSTs as idempotent itself; [`RetryClassifier`]
//!   tells it the same of DELETE, inside its one retry loop);
//! * not retried: 4xx answers, and TLS certificates the client does not trust;
//!   a GET whose body is cut mid-stream resumes with a ranged GET pinned to the same ETag;
//! * backoff: exponential with decorrelated jitter, each delay drawn between [`INIT_BACKOFF`]
//!   and [`BACKOFF_BASE`] times the one before, at most [`MAX_BACKOFF`];
//! * budget: time, not a count — no retry starts later than the retry budget after the first
//!   attempt ([`DEFAULT_RETRY_BUDGET`], five minutes, unless `S3MOVER_S3_RETRY_BUDGET` says
//!   otherwise), so a server restart or a network outage shorter than that costs time, not
//!   the backup. [`MAX_RETRIES`] is only a backstop;
//! * except before the server has answered anything: a connection that cannot be made is
//!   retried [`UNANSWERED_CONNECT_RETRIES`] times (a few seconds), then the command
//!   fails with the one-line error that says to check the endpoint — a wrong endpoint is far
//!   more likely then than an outage;
//! * timeouts: [`CONNECT_TIMEOUT`] to connect, [`REQUEST_TIMEOUT`] for one whole request
//!   including its body (a 16 MiB pack at 28 KB/s fits), and a stall timeout for a request
//!   that moves no data ([`super::stall`]): [`super::stall::DEFAULT_STALL_TIMEOUT`] unless
//!   `S3MOVER_S3_STALL_TIMEOUT` (`30`, `45s`, `500ms`, `2m`, `1h`: [`crate::units`]) says
//!   otherwise. A stalled request
//!   is logged as a warning, and retried like any timeout.
//!
//! # Multipart uploads
//!
//! Objects of at least the multipart threshold go up as S3 multipart uploads in fixed-size
//! parts, [`MULTIPART_CONCURRENCY`] at a time, each part its own request under the retry policy
//! above; an upload that cannot complete is aborted (see [`super`]). Settings, first match
//! wins: [`StoreOptions::multipart_threshold`] / [`StoreOptions::multipart_part_size`], then
//! `S3MOVER_S3_MULTIPART_THRESHOLD` / `S3MOVER_S3_MULTIPART_PART_SIZE` (bytes, or e.g. `64MiB`),
//! then [`DEFAULT_MULTIPART_THRESHOLD`] (64 MiB) / [`DEFAULT_MULTIPART_PART_SIZE`] (16 MiB).
//! The repository's own objects (16 MiB data packs) stay below the default threshold: one
//! PUT per pack is the fewest requests, and packs already upload eight at a time.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredential};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService,
};
use object_store::{BackoffConfig, ClientOptions, CredentialProvider, RetryConfig};

use super::attempts::{FailedAttempts, Failure};
use super::stall;
use super::{MultipartSettings, Store, StoreError, StoreOptions, MAX_PART_SIZE, MIN_PART_SIZE};
use crate::units::{parse_duration, parse_size};

mod ca;
mod credentials;
mod explain;
mod http;
#[cfg(test)]
mod tests;

use ca::*;
use credentials::*;
pub use credentials::{CredentialCommandError, ProcessCredentialProvider};
pub use explain::explain;
use explain::*;
pub use http::RetryClassifier;
use http::*;

/// Packs a backup uploads at once to S3 by default: requests wait on the network, so several
/// run together (see [`Store::uploads_in_flight`]).
pub const S3_UPLOADS_IN_FLIGHT: usize = 8;

/// Delay before the first retry, and the shortest delay drawn.
pub const INIT_BACKOFF: Duration = Duration::from_millis(100);
/// Each delay is drawn up to this many times the one before: the delays reach
/// [`MAX_BACKOFF`] within about ten retries (at 2, the mean grows by only half of
/// [`INIT_BACKOFF`] per retry, and ten retries spent about 2.6 s).
pub const BACKOFF_BASE: f64 = 4.0;
/// Longest delay between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A backstop only: the retry budget ends retries first (a thousand retries take well over an
/// hour at [`MAX_BACKOFF`]).
pub const MAX_RETRIES: usize = 1000;
/// Retries of a connection that cannot be made before the server has answered anything: with
/// the backoff above, about 3 s in the median (10 s in the slowest of a hundred draws, by
/// simulating object_store's backoff); ten retries at a base of 2 took about as long.
pub const UNANSWERED_CONNECT_RETRIES: u64 = 5;
/// No retry starts later than this after the first attempt of a request, unless
/// `S3MOVER_S3_RETRY_BUDGET` says otherwise: five minutes, the outage a request rides out.
/// Several stall timeouts long, so that a connection that stalls is replaced, more than once,
/// instead of failing the whole operation at its first stall.
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(300);
const _: () = assert!(DEFAULT_RETRY_BUDGET.as_secs() > 4 * stall::DEFAULT_STALL_TIMEOUT.as_secs());
/// Time allowed to open a TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for one request, body included, as long as data keeps moving (a request that
/// stops moving data ends after the stall timeout). Ten minutes: a 16 MiB pack goes up over a
/// link of 28 KB/s, the largest pack (32 MiB) over 56 KB/s.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Objects of at least this size are uploaded in parts unless set otherwise. Data packs
/// (16 MiB by default, at most ~32 MiB with the largest chunks) and every other object of the
/// repository format stay below it and go up as single PUTs — one request each, already eight
/// at a time — so multipart is there for objects that would otherwise be one long request.
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 64 * 1024 * 1024;
/// Part size of a multipart upload unless set otherwise: a data pack's size, so one part is
/// one pack-sized request.
pub const DEFAULT_MULTIPART_PART_SIZE: u64 = 16 * 1024 * 1024;
/// Parts of one object uploaded at once.
pub const MULTIPART_CONCURRENCY: usize = 4;
/// Credentials from a command are refreshed this long before they expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// A credential command that runs longer than this is stopped.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Looks up an environment variable (the process environment, or a map in tests).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, as an [`EnvLookup`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Opens `s3://bucket/prefix?query` with settings from `env` (see the module docs).
pub fn open(
    bucket: &str,
    prefix: &str,
    query: &[(String, String)],
    options: &StoreOptions,
    env: EnvLookup<'_>,
) -> Result<Store, StoreError> {
    let location = format!("s3://{bucket}/{prefix}");
    let mut endpoint = None;
    let mut region = None;
    let mut path_style = None;
    for (key, value) in query {
        match key.as_str() {
            "endpoint" => endpoint = Some(value.clone()),
            "region" => region = Some(value.clone()),
            "path-style" | "path_style" => {
                path_style = Some(parse_bool(value).ok_or_else(|| {
                    StoreError::Location(format!(
                        "repository URL {location}: path-style={value:?} must be true or false"
                    ))
                })?)
            }
            other => {
                return Err(StoreError::Location(format!(
                    "repository URL {location}: unknown option {other:?}; known: endpoint, region, path-style"
                )))
            }
        }
    }

    let multipart = multipart_settings(options, env)?;
    let profile = Profile::load(env)?;
    let profile_value = |key: &str| profile.as_ref().and_then(|p| p.get(key));
    let endpoint = endpoint
        .or_else(|| non_empty(env("AWS_ENDPOINT_URL_S3")))
        .or_else(|| non_empty(env("AWS_ENDPOINT_URL")))
        .or_else(|| profile_value("endpoint_url"))
        .map(|e| e.trim_end_matches('/').to_string());
    let region = region
        .or_else(|| non_empty(env("AWS_REGION")))
        .or_else(|| non_empty(env("AWS_DEFAULT_REGION")))
        .or_else(|| profile_value("region"))
        .unwrap_or_else(|| "us-east-1".to_string());
    if let Some(endpoint) = &endpoint {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(StoreError::Location(format!(
                "S3 endpoint {endpoint:?} must start with http:// or https://"
            )));
        }
    }
    let path_style = path_style.unwrap_or(endpoint.is_some());
    let allow_http = endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"));

    // The HTTP client itself is built by `ClassifyingConnector` from `HttpSettings`;
    // object_store reads only whether plain HTTP is allowed from its own options.
    let client = ClientOptions::new().with_allow_http(allow_http);
    let extra_roots = match &options.ca_cert {
        Some(file) => read_ca_certificates(file)?,
        None => Vec::new(),
    };

    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: INIT_BACKOFF,
            max_backoff: MAX_BACKOFF,
            base: BACKOFF_BASE,
        },
        max_retries: MAX_RETRIES,
        retry_timeout: retry_budget(env)?,
    };

    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&region)
        .with_virtual_hosted_style_request(!path_style)
        .with_allow_http(allow_http)
        .with_retry(retry)
        .with_client_options(client)
        .with_unsigned_payload(payload_protected_by_tls(allow_http, options));
    if let Some(endpoint) = &endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let credentials = find_credentials(env, profile.as_ref())?;
    // Ambient credentials (web identity, containers) may be fetched over HTTPS even when the
    // bucket's endpoint is plain HTTP.
    let needs_tls = !allow_http || matches!(credentials, Credentials::Ambient(_));
    let attempts = Arc::new(FailedAttempts::default());
    builder = builder.with_http_connector(ClassifyingConnector {
        attempts: Arc::clone(&attempts),
        settings: HttpSettings {
            pool_max_idle_per_host: options.concurrency.map(|max| max.max(1)),
            system_roots: needs_tls,
            extra_roots,
            accept_invalid_certs: options.insecure_skip_tls_verify,
            https_only: !allow_http,
            stall_timeout: stall_timeout(env)?,
        },
    });
    builder = match credentials {
        Credentials::Static(credential) => builder.with_credentials(Arc::new(
            object_store::StaticCredentialProvider::new(credential),
        )),
        Credentials::Process(provider) => builder.with_credentials(Arc::new(provider)),
        Credentials::Ambient(settings) => settings
            .into_iter()
            .fold(builder, |b, (key, value)| b.with_config(key, value)),
    };
    let backend = builder.build().map_err(|e| {
        StoreError::Location(format!(
            "cannot set up the S3 client for {location}: {}",
            crate::one_line(&e.to_string())
        ))
    })?;

    let description = match &endpoint {
        Some(endpoint) => format!("{location} (endpoint {endpoint}, region {region})"),
        None => format!("{location} (region {region})"),
    };
    Ok(Store::new(Arc::new(backend), prefix, description)
        .with_multipart(multipart)
        .with_stream_reads()
        .with_uploads_in_flight(S3_UPLOADS_IN_FLIGHT)
        .with_failed_attempts(attempts))
}

/// The stall timeout: `S3MOVER_S3_STALL_TIMEOUT`, else [`stall::DEFAULT_STALL_TIMEOUT`].
fn stall_timeout(env: EnvLookup<'_>) -> Result<Duration, StoreError> {
    duration_setting(
        env,
        "S3MOVER_S3_STALL_TIMEOUT",
        stall::DEFAULT_STALL_TIMEOUT,
    )
}

/// The retry budget: `S3MOVER_S3_RETRY_BUDGET`, else [`DEFAULT_RETRY_BUDGET`].
fn retry_budget(env: EnvLookup<'_>) -> Result<Duration, StoreError> {
    duration_setting(env, "S3MOVER_S3_RETRY_BUDGET", DEFAULT_RETRY_BUDGET)
}

/// A duration from the environment variable `name` (`30`, `500ms`, `45s`, `2m`, `1h`), else
/// `default`.
fn duration_setting(
    env: EnvLookup<'_>,
    name: &str,
    default: Duration,
) -> Result<Duration, StoreError> {
    match non_empty(env(name)) {
        None => Ok(default),
        Some(text) => parse_duration(&text)
            .ok()
            .filter(|duration| !duration.is_zero())
            .ok_or_else(|| {
                StoreError::Location(format!(
                    "{name}={text:?} is not a duration: use seconds (30) or a number with a unit (500ms, 45s, 2m, 1h), above zero"
                ))
            }),
    }
}

/// Whether request bodies may go without a SHA-256 in their signature (`UNSIGNED-PAYLOAD`):
/// over TLS with the server's certificate checked, which protects the body in transit (and
/// every object is sealed and named by its hash, so a changed body never reads back as valid).
/// Hashing the body costs the client and the server a pass over every byte uploaded. Over
/// plain HTTP, or with `--insecure-skip-tls-verify`, the signature covers the body.
fn payload_protected_by_tls(allow_http: bool, options: &StoreOptions) -> bool {
    !allow_http && !options.insecure_skip_tls_verify
}

/// The multipart settings: [`StoreOptions`] first, then `S3MOVER_S3_MULTIPART_THRESHOLD` and
/// `S3MOVER_S3_MULTIPART_PART_SIZE`, then [`DEFAULT_MULTIPART_THRESHOLD`] and
/// [`DEFAULT_MULTIPART_PART_SIZE`].
pub fn multipart_settings(
    options: &StoreOptions,
    env: EnvLookup<'_>,
) -> Result<MultipartSettings, StoreError> {
    let setting = |given: Option<u64>, name: &str, default: u64| -> Result<u64, StoreError> {
        if let Some(value) = given {
            return Ok(value);
        }
        match non_empty(env(name)) {
            None => Ok(default),
            Some(text) => parse_size(&text).map_err(|_| {
                StoreError::Location(format!(
                    "{name}={text:?} is not a size: give bytes, or a number with KiB, MiB or GiB (e.g. 64MiB)"
                ))
            }),
        }
    };
    let threshold = setting(
        options.multipart_threshold,
        "S3MOVER_S3_MULTIPART_THRESHOLD",
        DEFAULT_MULTIPART_THRESHOLD,
    )?;
    let part_size = setting(
        options.multipart_part_size,
        "S3MOVER_S3_MULTIPART_PART_SIZE",
        DEFAULT_MULTIPART_PART_SIZE,
    )?;
    if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
        return Err(StoreError::Location(format!(
            "the multipart part size {part_size} bytes (S3MOVER_S3_MULTIPART_PART_SIZE) is outside S3's limits: use 5MiB to 5GiB"
        )));
    }
    if threshold < MIN_PART_SIZE {
        return Err(StoreError::Location(format!(
            "the multipart threshold {threshold} bytes (S3MOVER_S3_MULTIPART_THRESHOLD) is below 5MiB, the smallest S3 part: use 5MiB or more"
        )));
    }
    Ok(MultipartSettings {
        threshold,
        part_size,
        concurrency: MULTIPART_CONCURRENCY,
    })
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}
