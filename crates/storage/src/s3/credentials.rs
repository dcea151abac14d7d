//! The credential chain (options, environment, shared files and profiles with their INI
//! parsing, web identity) and the `credential_process` provider.

use super::*;

/// Where the S3 credentials come from.
pub(super) enum Credentials {
    Static(AwsCredential),
    Process(ProcessCredentialProvider),
    /// Left to `object_store`'s own providers (web identity, containers), with these settings.
    Ambient(Vec<(AmazonS3ConfigKey, String)>),
}

pub(super) fn find_credentials(
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
pub(super) struct Profile {
    name: String,
    /// Named by `AWS_PROFILE` (so it must exist and must hold credentials).
    explicit: bool,
    values: HashMap<String, String>,
}

impl Profile {
    pub(super) fn get(&self, key: &str) -> Option<String> {
        non_empty(self.values.get(key).cloned())
    }

    /// Loads `AWS_PROFILE` (or `default` if present); `None` when there is nothing to load.
    pub(super) fn load(env: EnvLookup<'_>) -> Result<Option<Profile>, StoreError> {
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
pub(super) fn ini_section(text: &str, section: &str) -> Option<HashMap<String, String>> {
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

pub(super) struct CachedCredential {
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
pub(super) struct ProcessOutput {
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
