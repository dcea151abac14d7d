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
            super::one_line(&e.to_string())
        ))
    })?;

    let description = match &endpoint {
        Some(endpoint) => format!("{location} (endpoint {endpoint}, region {region})"),
        None => format!("{location} (region {region})"),
    };
    Ok(Store::new(Arc::new(backend), prefix, description)
        .with_multipart(multipart)
        .with_stream_reads()
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

fn read_ca_certificates(file: &Path) -> Result<Vec<reqwest::Certificate>, StoreError> {
    let pem = std::fs::read(file).map_err(|e| {
        StoreError::Location(format!("cannot read --ca-cert {}: {e}", file.display()))
    })?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        StoreError::Location(format!(
            "--ca-cert {} is not a PEM certificate bundle: {}",
            file.display(),
            super::one_line(&e.to_string())
        ))
    })?;
    if certificates.is_empty() {
        return Err(StoreError::Location(format!(
            "--ca-cert {} holds no PEM certificate",
            file.display()
        )));
    }
    Ok(certificates)
}

/// Where the S3 credentials come from.
enum Credentials {
    Static(AwsCredential),
    Process(ProcessCredentialProvider),
    /// Left to `object_store`'s own providers (web identity, containers), with these settings.
    Ambient(Vec<(AmazonS3ConfigKey, String)>),
}

fn find_credentials(
    env: EnvLookup<'_>,
    profile: Option<&Profile>,
) -> Result<Credentials, StoreError> {
    if let Some(command) = non_empty(env("S3MOVER_S3_CREDENTIALS_COMMAND")) {
        return Ok(Credentials::Process(ProcessCredentialProvider::new(
            command,
            "S3MOVER_S3_CREDENTIALS_COMMAND".to_string(),
        )));
    }
    let key_id = non_empty(env("AWS_ACCESS_KEY_ID"));
    let secret = non_empty(env("AWS_SECRET_ACCESS_KEY"));
    match (key_id, secret) {
        (Some(key_id), Some(secret_key)) => {
            return Ok(Credentials::Static(AwsCredential {
                key_id,
                secret_key,
                token: non_empty(env("AWS_SESSION_TOKEN")),
            }))
        }
        (Some(_), None) => {
            return Err(StoreError::Location(
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not; set both".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(StoreError::Location(
                "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not; set both".into(),
            ))
        }
        (None, None) => {}
    }
    if let Some(profile) = profile {
        if let Some(command) = profile.get("credential_process") {
            return Ok(Credentials::Process(ProcessCredentialProvider::new(
                command,
                format!("credential_process of AWS profile {:?}", profile.name),
            )));
        }
        match (profile.get("aws_access_key_id"), profile.get("aws_secret_access_key")) {
            (Some(key_id), Some(secret_key)) => {
                return Ok(Credentials::Static(AwsCredential {
                    key_id,
                    secret_key,
                    token: profile.get("aws_session_token"),
                }))
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(StoreError::Location(format!(
                    "AWS profile {:?} has only one of aws_access_key_id and aws_secret_access_key; set both",
                    profile.name
                )))
            }
            (None, None) => {
                if profile.explicit {
                    let hint = if profile.get("role_arn").is_some() {
                        " (role_arn profiles are not supported; use credential_process)"
                    } else {
                        ""
                    };
                    return Err(StoreError::Location(format!(
                        "AWS profile {:?} has no aws_access_key_id/aws_secret_access_key and no credential_process{hint}",
                        profile.name
                    )));
                }
            }
        }
    }
    let mut ambient = Vec::new();
    if non_empty(env("AWS_WEB_IDENTITY_TOKEN_FILE")).is_some()
        && non_empty(env("AWS_ROLE_ARN")).is_some()
    {
        return Ok(Credentials::Ambient(ambient));
    }
    for (name, key) in [
        (
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            AmazonS3ConfigKey::ContainerCredentialsRelativeUri,
        ),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            AmazonS3ConfigKey::ContainerCredentialsFullUri,
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            AmazonS3ConfigKey::ContainerAuthorizationTokenFile,
        ),
    ] {
        if let Some(value) = non_empty(env(name)) {
            ambient.push((key, value));
        }
    }
    if !ambient.is_empty() {
        return Ok(Credentials::Ambient(ambient));
    }
    Err(StoreError::Location(
        "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE (a profile in ~/.aws/credentials or ~/.aws/config, credential_process allowed), or S3MOVER_S3_CREDENTIALS_COMMAND".into(),
    ))
}

/// One profile merged from the AWS shared credentials and config files.
struct Profile {
    name: String,
    /// Named by `AWS_PROFILE` (so it must exist and must hold credentials).
    explicit: bool,
    values: HashMap<String, String>,
}

impl Profile {
    fn get(&self, key: &str) -> Option<String> {
        non_empty(self.values.get(key).cloned())
    }

    /// Loads `AWS_PROFILE` (or `default` if present); `None` when there is nothing to load.
    fn load(env: EnvLookup<'_>) -> Result<Option<Profile>, StoreError> {
        let explicit_name = non_empty(env("AWS_PROFILE"));
        let name = explicit_name
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let home = env("HOME").map(PathBuf::from);
        let credentials_file = non_empty(env("AWS_SHARED_CREDENTIALS_FILE"))
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials")));
        let config_file = non_empty(env("AWS_CONFIG_FILE"))
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/config")));

        let mut values = HashMap::new();
        let mut found = false;
        // The config file first, so the credentials file wins where both set a key.
        let sources = [
            (
                config_file,
                if name == "default" {
                    "default".to_string()
                } else {
                    format!("profile {name}")
                },
            ),
            (credentials_file, name.clone()),
        ];
        let mut searched = Vec::new();
        for (file, section) in sources {
            let Some(file) = file else { continue };
            searched.push(file.display().to_string());
            let text = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(StoreError::Location(format!(
                        "cannot read AWS shared file {}: {e}",
                        file.display()
                    )))
                }
            };
            if let Some(section_values) = ini_section(&text, &section) {
                found = true;
                values.extend(section_values);
            }
        }
        if !found {
            return match explicit_name {
                Some(name) => Err(StoreError::Location(format!(
                    "AWS_PROFILE={name} names a profile that is in none of {}; check the name or set AWS_CONFIG_FILE/AWS_SHARED_CREDENTIALS_FILE",
                    if searched.is_empty() { "the AWS shared files (HOME is not set)".to_string() } else { searched.join(", ") }
                ))),
                None => Ok(None),
            };
        }
        Ok(Some(Profile {
            name,
            explicit: explicit_name.is_some(),
            values,
        }))
    }
}

/// The `key = value` pairs of `[section]` in an AWS-style INI file (None if no such section).
fn ini_section(text: &str, section: &str) -> Option<HashMap<String, String>> {
    let mut current: Option<String> = None;
    let mut result: Option<HashMap<String, String>> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            current = Some(name.clone());
            if name == section {
                result.get_or_insert_with(HashMap::new);
            }
            continue;
        }
        if current.as_deref() != Some(section) {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            if let Some(values) = result.as_mut() {
                values.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
    }
    result
}

/// Credentials from a command that prints `credential_process` JSON; cached until five
/// minutes before they expire.
pub struct ProcessCredentialProvider {
    command: String,
    origin: String,
    cache: tokio::sync::Mutex<Option<CachedCredential>>,
}

struct CachedCredential {
    credential: Arc<AwsCredential>,
    expires: Option<time::OffsetDateTime>,
}

impl std::fmt::Debug for ProcessCredentialProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessCredentialProvider")
            .field("program", &self.program())
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// The JSON a `credential_process` prints.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProcessOutput {
    version: u32,
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    session_token: Option<String>,
    #[serde(default)]
    expiration: Option<String>,
}

/// Why a credential command gave no credentials (never holds its output).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CredentialCommandError(String);

impl ProcessCredentialProvider {
    /// A provider running `command` through `sh -c`; `origin` says where the command was
    /// configured, for messages.
    pub fn new(command: String, origin: String) -> Self {
        ProcessCredentialProvider {
            command,
            origin,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// The program's name only: arguments may hold tokens.
    fn program(&self) -> String {
        let first = self.command.split_whitespace().next().unwrap_or("");
        Path::new(first)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| first.to_string())
    }

    fn fail(&self, what: impl std::fmt::Display) -> CredentialCommandError {
        CredentialCommandError(format!(
            "the S3 credentials command `{}` ({}) {what}",
            self.program(),
            self.origin
        ))
    }

    /// Runs the command and parses what it prints.
    pub async fn fetch(
        &self,
    ) -> Result<(AwsCredential, Option<time::OffsetDateTime>), CredentialCommandError> {
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| self.fail(format_args!("could not be started: {e}")))?;
        let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| self.fail(format_args!("did not finish within {COMMAND_TIMEOUT:?}")))?
            .map_err(|e| self.fail(format_args!("failed: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            let last: String = last.trim().chars().take(200).collect();
            return Err(self.fail(format_args!(
                "failed with {}{}{}",
                output.status,
                if last.is_empty() { "" } else { ": " },
                last
            )));
        }
        let parsed: ProcessOutput = serde_json::from_slice(&output.stdout).map_err(|e| {
            // serde_json can quote values from the input; report only where it went wrong.
            self.fail(format_args!(
                "printed something that is not credential_process JSON ({:?} error at line {} column {}); it must print {{\"Version\":1,\"AccessKeyId\":…,\"SecretAccessKey\":…}}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        if parsed.version != 1 {
            return Err(self.fail(format_args!(
                "printed Version {}, but only Version 1 is defined",
                parsed.version
            )));
        }
        if parsed.access_key_id.is_empty() || parsed.secret_access_key.is_empty() {
            return Err(self.fail("printed an empty AccessKeyId or SecretAccessKey"));
        }
        let expires = match parsed.expiration.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(text) => Some(
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                    self.fail(format_args!(
                        "printed Expiration {text:?}, which is not an RFC 3339 time"
                    ))
                })?,
            ),
        };
        Ok((
            AwsCredential {
                key_id: parsed.access_key_id,
                secret_key: parsed.secret_access_key,
                token: parsed.session_token.filter(|t| !t.is_empty()),
            },
            expires,
        ))
    }

    async fn credential(&self) -> Result<Arc<AwsCredential>, CredentialCommandError> {
        let mut cache = self.cache.lock().await;
        let now = time::OffsetDateTime::now_utc();
        if let Some(cached) = cache.as_ref() {
            let fresh = match cached.expires {
                None => true,
                Some(expires) => now + REFRESH_MARGIN < expires,
            };
            if fresh {
                return Ok(Arc::clone(&cached.credential));
            }
        }
        let (credential, expires) = self.fetch().await?;
        if let Some(expires) = expires {
            if expires <= now {
                return Err(self.fail("printed credentials that have already expired"));
            }
        }
        let credential = Arc::new(credential);
        *cache = Some(CachedCredential {
            credential: Arc::clone(&credential),
            expires,
        });
        Ok(credential)
    }
}

impl CredentialProvider for ProcessCredentialProvider {
    type Credential = AwsCredential;

    fn get_credential<'life0, 'async_trait>(
        &'life0 self,
    ) -> Pin<Box<dyn Future<Output = object_store::Result<Arc<AwsCredential>>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            self.credential()
                .await
                .map_err(|e| object_store::Error::Generic {
                    store: "S3",
                    source: Box::new(e),
                })
        })
    }
}

/// Builds the HTTP client: a reqwest client configured as object_store configures its own
/// (timeouts, pool size, TLS settings, no transparent decompression — it would break
/// `Content-Length`), behind the stall watchdog ([`stall::StallGuardedClient`]) and
/// [`RetryClassifier`], both reporting failed attempts to `attempts`.
///
/// A plain-HTTP endpoint that makes no HTTPS request at all gets no TLS roots: loading the
/// system's roots reads every file in `/etc/ssl/certs`, and on a cold page cache that delayed
/// the first connection by 18–31 ms (measured by hand).
#[derive(Debug, Clone)]
struct ClassifyingConnector {
    settings: HttpSettings,
    attempts: Arc<FailedAttempts>,
}

/// What [`open`] decides about the HTTP client.
#[derive(Debug, Clone)]
struct HttpSettings {
    pool_max_idle_per_host: Option<usize>,
    /// Load the system's TLS roots (anything but a plain-HTTP endpoint with its own keys).
    system_roots: bool,
    /// Extra roots from `--ca-cert`.
    extra_roots: Vec<reqwest::Certificate>,
    /// `--insecure-skip-tls-verify`.
    accept_invalid_certs: bool,
    /// Refuse `http://` (the endpoint is not plain HTTP).
    https_only: bool,
    stall_timeout: Duration,
}

impl HttpConnector for ClassifyingConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let settings = &self.settings;
        let client = http_client(settings).map_err(|e| object_store::Error::Generic {
            store: "S3",
            source: Box::new(e),
        })?;
        Ok(HttpClient::new(RetryClassifier {
            inner: HttpClient::new(stall::StallGuardedClient::new(
                client,
                settings.stall_timeout,
                Arc::clone(&self.attempts),
            )),
            attempts: Arc::clone(&self.attempts),
        }))
    }
}

fn http_client(settings: &HttpSettings) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::ClientBuilder::new()
        .user_agent(concat!("s3mover/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .no_deflate()
        .tls_built_in_root_certs(settings.system_roots)
        .tls_built_in_native_certs(settings.system_roots)
        .danger_accept_invalid_certs(settings.accept_invalid_certs)
        .https_only(settings.https_only);
    for certificate in &settings.extra_roots {
        builder = builder.add_root_certificate(certificate.clone());
    }
    if let Some(max) = settings.pool_max_idle_per_host {
        builder = builder.pool_max_idle_per_host(max);
    }
    builder.build()
}

/// Corrects how two transport failures are classified for object_store's one retry loop; it
/// never resends anything itself:
///
/// * a DELETE cut off mid-flight (connection reset, timeout) may be sent again — object_store
///   retries only methods it knows to be idempotent, and deleting one S3 key is;
/// * a TLS certificate the client does not trust is final — retrying cannot fix it, so the
///   user hears about `--ca-cert` at once instead of after the whole retry budget;
/// * so is a connection that cannot be made once [`UNANSWERED_CONNECT_RETRIES`] have failed
///   before the server answered anything: the endpoint is more likely wrong than down.
///
/// It also reports each attempt the retry loop will judge a failure to [`FailedAttempts`].
#[derive(Debug)]
pub struct RetryClassifier {
    inner: HttpClient,
    attempts: Arc<FailedAttempts>,
}

impl HttpService for RetryClassifier {
    fn call<'life0, 'async_trait>(
        &'life0 self,
        request: HttpRequest,
    ) -> Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let is_delete = request.method().as_str() == "DELETE";
            let what = format!("{} {}", request.method(), request.uri().path());
            let outcome = match self.inner.execute(request).await {
                Err(e) if is_certificate_error(&e) => {
                    Err(HttpError::new(HttpErrorKind::Unknown, e))
                }
                Err(e)
                    if is_delete
                        && matches!(
                            e.kind(),
                            HttpErrorKind::Interrupted | HttpErrorKind::Timeout
                        ) =>
                {
                    Err(HttpError::new(HttpErrorKind::Request, e))
                }
                other => other,
            };
            self.report(&what, &outcome);
            match outcome {
                Err(e)
                    if e.kind() == HttpErrorKind::Connect
                        && self.attempts.unanswered_connect_failures()
                            > UNANSWERED_CONNECT_RETRIES =>
                {
                    Err(HttpError::new(HttpErrorKind::Unknown, e))
                }
                other => other,
            }
        })
    }
}

impl RetryClassifier {
    /// Tells [`FailedAttempts`] about an attempt the retry loop may send again: an answer it
    /// retries (5xx, 429, 408) or a transport failure of a kind it retries. Failures it
    /// gives up on at once (untrusted certificates, unreadable answers) end the request with
    /// their own error instead.
    fn report(&self, what: &str, outcome: &Result<HttpResponse, HttpError>) {
        match outcome {
            Ok(response) => {
                self.attempts.answered();
                let status = response.status();
                if status.is_server_error()
                    || status == http::StatusCode::TOO_MANY_REQUESTS
                    || status == http::StatusCode::REQUEST_TIMEOUT
                {
                    self.attempts.failed(what, Failure::Other, &status);
                }
            }
            Err(e) => match e.kind() {
                HttpErrorKind::Connect => {
                    self.attempts.failed(what, Failure::Connect, &root_cause(e))
                }
                HttpErrorKind::Request | HttpErrorKind::Timeout | HttpErrorKind::Interrupted => {
                    self.attempts.failed(what, Failure::Other, &root_cause(e))
                }
                // Unknown, Decode: final, not retried.
                _ => {}
            },
        }
    }
}

/// The innermost error of `error`'s chain, the one that says what happened on the wire
/// ("Connection reset by peer (os error 104)"), for a warning that fits on a line.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    super::one_line(&cause.to_string())
}

fn is_certificate_error(error: &HttpError) -> bool {
    let text = error_chain_text(error).to_ascii_lowercase();
    text.contains("invalid peer certificate") || text.contains("unknownissuer")
}

/// One line saying what to check, for the S3 failures a user can fix: wrong credentials,
/// missing bucket, wrong region, unreachable endpoint, untrusted certificate. `None` for
/// anything else (the caller reports the error itself).
pub fn explain(error: &object_store::Error) -> Option<String> {
    let text = error_chain_text(error);
    let endpoint = endpoint_in(&text);
    let at = endpoint
        .as_deref()
        .map(|e| format!(" at {e}"))
        .unwrap_or_default();
    if let Some(start) = text.find("the S3 credentials command") {
        return Some(super::one_line(&text[start..]));
    }
    if text.contains("InvalidAccessKeyId")
        || text.contains("SignatureDoesNotMatch")
        || text.contains("InvalidToken")
        || text.contains("ExpiredToken")
        || text.contains("No such key")
        || text.contains("Forbidden: Invalid signature")
        || text.contains("InvalidSignature")
    {
        return Some(format!(
            "the S3 server{at} rejected the credentials: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), the AWS_PROFILE, or S3MOVER_S3_CREDENTIALS_COMMAND"
        ));
    }
    if text.contains("NoSuchBucket") || text.contains("Bucket not found") {
        return Some(format!(
            "the bucket does not exist on the S3 server{at}: check the bucket name in s3://BUCKET/PREFIX and the endpoint"
        ));
    }
    if text.contains("AuthorizationHeaderMalformed")
        || text.contains("PermanentRedirect")
        || text.contains("IllegalLocationConstraint")
        || text.contains("incorrectly configured region")
        || (text.contains("region") && text.contains("400 Bad Request"))
        || text.contains("unexpected region")
    {
        return Some(format!(
            "the S3 server{at} expects another region: set AWS_REGION or ?region= to the bucket's region"
        ));
    }
    if text.contains("AccessDenied") || text.contains("403 Forbidden") {
        return Some(format!(
            "the S3 server{at} denied access: check that the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE or S3MOVER_S3_CREDENTIALS_COMMAND) are allowed to read and write this bucket"
        ));
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("connection refused") {
        return Some(format!(
            "cannot connect to the S3 endpoint{at}: connection refused; check AWS_ENDPOINT_URL or ?endpoint= and that the server is running"
        ));
    }
    if lower.contains("tcp connect error")
        && (lower.contains("deadline has elapsed") || lower.contains("timed out"))
    {
        return Some(format!(
            "cannot connect to the S3 endpoint{at}: no answer to the connection within {}s; check AWS_ENDPOINT_URL or ?endpoint=, and that no firewall drops the connection",
            CONNECT_TIMEOUT.as_secs()
        ));
    }
    if lower.contains("dns error") || lower.contains("failed to lookup address") {
        return Some(format!(
            "cannot resolve the S3 endpoint's host{at}: check AWS_ENDPOINT_URL or ?endpoint="
        ));
    }
    if lower.contains("certificate") || lower.contains("unknownissuer") {
        return Some(format!(
            "the S3 endpoint{at} presented a TLS certificate that is not trusted: pass --ca-cert FILE with your CA (or, for a test server only, --insecure-skip-tls-verify)"
        ));
    }
    if lower.contains("invalid http version parsed") || lower.contains("invalid http") {
        return Some(format!(
            "the S3 endpoint{at} does not speak the expected protocol: check http:// versus https:// in AWS_ENDPOINT_URL or ?endpoint="
        ));
    }
    None
}

/// The display text of an error and all its sources, on one line.
fn error_chain_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    super::one_line(&parts.join(": "))
}

/// `scheme://host[:port]` of the first URL in `text`.
fn endpoint_in(text: &str) -> Option<String> {
    let start = text.find("https://").or_else(|| text.find("http://"))?;
    let rest = &text[start..];
    let after_scheme = rest.find("://")? + 3;
    let end = rest[after_scheme..]
        .find(|c: char| c == '/' || c == '?' || c.is_whitespace())
        .map(|i| i + after_scheme)
        .unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_go_unsigned_only_over_verified_tls() {
        let verified = StoreOptions::default();
        let unverified = StoreOptions {
            insecure_skip_tls_verify: true,
            ..StoreOptions::default()
        };
        assert!(
            payload_protected_by_tls(false, &verified),
            "https, verified"
        );
        assert!(!payload_protected_by_tls(true, &verified), "plain http");
        assert!(
            !payload_protected_by_tls(false, &unverified),
            "https, unverified"
        );
    }

    #[test]
    fn reads_ini_sections() {
        let text = "[default]\nregion = eu-west-1\n\n[profile backup]\ncredential_process = bws run -- x\n# c\nregion=us-east-2\n";
        let d = ini_section(text, "default").unwrap();
        assert_eq!(d.get("region").map(String::as_str), Some("eu-west-1"));
        let b = ini_section(text, "profile backup").unwrap();
        assert_eq!(
            b.get("credential_process").map(String::as_str),
            Some("bws run -- x")
        );
        assert_eq!(b.get("region").map(String::as_str), Some("us-east-2"));
        assert!(ini_section(text, "backup").is_none());
    }

    #[test]
    fn finds_the_endpoint_in_an_error() {
        assert_eq!(
            endpoint_in("Error performing PUT http://127.0.0.1:9/b/k in 1s").as_deref(),
            Some("http://127.0.0.1:9")
        );
        assert_eq!(endpoint_in("nothing"), None);
    }

    #[test]
    fn debug_shows_only_the_program() {
        let p = ProcessCredentialProvider::new(
            "/usr/bin/bws secret get --access-token SECRET123".into(),
            "test".into(),
        );
        let shown = format!("{p:?}");
        assert!(shown.contains("bws"));
        assert!(!shown.contains("SECRET123"));
    }

    /// A connection that times out gets the one line that says what to check.
    #[tokio::test]
    async fn a_connection_that_times_out_is_explained() {
        let error = object_store::Error::Generic {
            store: "S3",
            source: Box::new(super::super::test_support::connect_timeout_error().await),
        };
        let line = explain(&error).expect("explained");
        assert!(
            line.starts_with("cannot connect to the S3 endpoint at http://127.0.0.1:"),
            "{line}"
        );
        assert!(line.contains("no answer to the connection"), "{line}");
        assert!(line.contains("AWS_ENDPOINT_URL"), "{line}");
    }

    /// The S3 duration settings read the shared grammar ([`crate::units`]), hours included,
    /// and refuse zero.
    #[test]
    fn duration_settings_use_the_shared_grammar() {
        fn read(value: &str) -> Result<Duration, StoreError> {
            let env = |name: &str| (name == "S3MOVER_S3_STALL_TIMEOUT").then(|| value.to_string());
            stall_timeout(&env)
        }
        assert_eq!(read("30").expect("30"), Duration::from_secs(30));
        assert_eq!(read("500ms").expect("500ms"), Duration::from_millis(500));
        assert_eq!(read("2m").expect("2m"), Duration::from_secs(120));
        assert_eq!(read("1h").expect("1h"), Duration::from_secs(3600));
        assert_eq!(read("1h30m").expect("1h30m"), Duration::from_secs(5400));
        for bad in ["0", "0s", "fast", "1.5s"] {
            let err = read(bad).expect_err(bad);
            assert!(err.to_string().contains("is not a duration"), "{err}");
        }
        let none = |_: &str| None;
        assert_eq!(
            stall_timeout(&none).expect("default"),
            stall::DEFAULT_STALL_TIMEOUT
        );
    }

    #[test]
    fn multipart_settings_come_from_options_then_env_then_defaults() {
        let none = |_: &str| None;
        let defaults = multipart_settings(&StoreOptions::default(), &none).expect("defaults");
        assert_eq!(defaults.threshold, DEFAULT_MULTIPART_THRESHOLD);
        assert_eq!(defaults.part_size, DEFAULT_MULTIPART_PART_SIZE);

        let env = |name: &str| match name {
            "S3MOVER_S3_MULTIPART_THRESHOLD" => Some("8MiB".to_string()),
            "S3MOVER_S3_MULTIPART_PART_SIZE" => Some("6291456".to_string()),
            _ => None,
        };
        let from_env = multipart_settings(&StoreOptions::default(), &env).expect("env");
        assert_eq!((from_env.threshold, from_env.part_size), (8 << 20, 6 << 20));

        let options = StoreOptions {
            multipart_threshold: Some(100 << 20),
            ..StoreOptions::default()
        };
        let from_options = multipart_settings(&options, &env).expect("options");
        assert_eq!(
            (from_options.threshold, from_options.part_size),
            (100 << 20, 6 << 20)
        );

        let small_part =
            |name: &str| (name == "S3MOVER_S3_MULTIPART_PART_SIZE").then(|| "1MiB".to_string());
        let err =
            multipart_settings(&StoreOptions::default(), &small_part).expect_err("1 MiB parts");
        assert!(err.to_string().contains("5MiB to 5GiB"), "{err}");
        let garbage =
            |name: &str| (name == "S3MOVER_S3_MULTIPART_THRESHOLD").then(|| "lots".to_string());
        let err = multipart_settings(&StoreOptions::default(), &garbage).expect_err("garbage");
        assert!(err.to_string().contains("is not a size"), "{err}");
        let tiny = StoreOptions {
            multipart_threshold: Some(1024),
            ..StoreOptions::default()
        };
        assert!(multipart_settings(&tiny, &none).is_err());
    }

    #[test]
    fn no_credentials_is_a_clear_error() {
        let env = |_: &str| None;
        let err = find_credentials(&env, None).err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("no S3 credentials found"));
    }
}
