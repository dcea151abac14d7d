//! The HTTP stack under `object_store`: s3mover's own reqwest client (stall detection, TLS
//! roots only over HTTPS) and the retry classifier that counts failed attempts and gives up
//! early on an endpoint that never answers.

use super::*;

/// Builds the HTTP client: a reqwest client configured as object_store configures its own
/// (timeouts, pool size, TLS settings, no transparent decompression — it would break
/// `Content-Length`), behind the stall watchdog ([`stall::StallGuardedClient`]) and
/// [`RetryClassifier`], both reporting failed attempts to `attempts`.
///
/// A plain-HTTP endpoint that makes no HTTPS request at all gets no TLS roots: loading the
/// system's roots reads every file in `/etc/ssl/certs`, and on a cold page cache that delayed
/// the first connection by 18–31 ms (measured by hand).
#[derive(Debug, Clone)]
pub(super) struct ClassifyingConnector {
    pub(super) settings: HttpSettings,
    pub(super) attempts: Arc<FailedAttempts>,
}

/// What [`open`] decides about the HTTP client.
#[derive(Debug, Clone)]
pub(super) struct HttpSettings {
    pub(super) pool_max_idle_per_host: Option<usize>,
    /// Load the system's TLS roots (anything but a plain-HTTP endpoint with its own keys).
    pub(super) system_roots: bool,
    /// Extra roots from `--ca-cert`.
    pub(super) extra_roots: Vec<reqwest::Certificate>,
    /// `--insecure-skip-tls-verify`.
    pub(super) accept_invalid_certs: bool,
    /// Refuse `http://` (the endpoint is not plain HTTP).
    pub(super) https_only: bool,
    pub(super) stall_timeout: Duration,
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

pub(super) fn http_client(settings: &HttpSettings) -> reqwest::Result<reqwest::Client> {
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
                    || status == ::http::StatusCode::TOO_MANY_REQUESTS
                    || status == ::http::StatusCode::REQUEST_TIMEOUT
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
