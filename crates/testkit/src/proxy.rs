//! A fault-injecting HTTP proxy to put between an S3 client and Garage.
//!
//! Each request is forwarded unchanged (the `Host` header too, so SigV4 signatures still
//! verify) unless, with probability [`Faults::rate`], the proxy injects one fault drawn from
//! [`Faults::kinds`] with a seeded random generator:
//!
//! * [`FaultKind::Status500`] / [`FaultKind::Status503`]: the request body is read and an S3
//!   `InternalError` / `SlowDown` answer comes back; nothing reaches the server;
//! * [`FaultKind::ResetMidBody`]: an upload is cut after half its body; a download is
//!   answered with half of the server's body and then the connection is reset (SO_LINGER 0);
//!   a request with neither body is dropped without an answer;
//! * [`FaultKind::Latency`]: the request is forwarded after [`Faults::latency`].
//!
//! Besides these random faults, [`FaultProxy::set_fail_rules`] makes every request that
//! matches a [`FailRule`] (method and query) fail with a fixed status, for tests that need one
//! particular request — say the second part of a multipart upload — to fail for good; and
//! [`FaultProxy::set_stall_rules`] makes the next requests of a method stall ([`StallRule`]):
//! never answered, or answered halfway, with the connection left open.
//!
//! Every request is counted by kind (PUT, GET, HEAD, LIST = GET on the bucket, DELETE, POST),
//! faulted ones included, so benchmarks can report what a client really sent. The proxy runs
//! on its own thread and runtime, usable from sync and async tests alike, and stops on drop.
//! [`FaultProxy::start_tls`] serves HTTPS with a certificate from a throw-away CA
//! ([`FaultProxy::ca_pem`]), for testing `--ca-cert` and `--insecure-skip-tls-verify`.
//!
//! Paths under `/__faultproxy/` are the proxy's own controls (not forwarded, not counted):
//! `counts` (JSON), `reset` (zero the counters), `faults?rate=R&seed=S&latency_ms=M`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// One kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer `500 InternalError`.
    Status500,
    /// Answer `503 SlowDown`.
    Status503,
    /// Reset the connection halfway through the request's or the response's body.
    ResetMidBody,
    /// Forward after a delay.
    Latency,
}

/// What the proxy injects, and how often.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Probability that a request gets a fault, 0.0..=1.0.
    pub rate: f64,
    /// The faults to draw from (uniformly).
    pub kinds: Vec<FaultKind>,
    /// Delay of a [`FaultKind::Latency`] fault.
    pub latency: Duration,
    /// Seed of the random generator (same seed, same requests: same faults).
    pub seed: u64,
}

impl Faults {
    /// No faults: a counting pass-through.
    pub fn none() -> Faults {
        Faults {
            rate: 0.0,
            kinds: Vec::new(),
            latency: Duration::ZERO,
            seed: 0,
        }
    }

    /// Every kind of fault at `rate`, with 200 ms of added latency.
    pub fn mixed(rate: f64, seed: u64) -> Faults {
        Faults {
            rate,
            kinds: vec![
                FaultKind::Status500,
                FaultKind::Status503,
                FaultKind::ResetMidBody,
                FaultKind::Latency,
            ],
            latency: Duration::from_millis(200),
            seed,
        }
    }

    /// Only `kind`, at `rate`.
    pub fn only(kind: FaultKind, rate: f64, seed: u64) -> Faults {
        Faults {
            rate,
            kinds: vec![kind],
            latency: Duration::from_millis(200),
            seed,
        }
    }
}

/// Requests that always fail: the proxy answers them with `status` and an S3 error body
/// instead of forwarding them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailRule {
    /// The HTTP method, e.g. `PUT`.
    pub method: String,
    /// A substring the query must contain, e.g. `partNumber=2`; empty matches any query.
    pub query_contains: String,
    /// The status to answer, e.g. 400 (not retried by S3 clients) or 503 (retried).
    pub status: u16,
}

impl FailRule {
    fn matches(&self, method: &Method, query: &str) -> bool {
        method.as_str().eq_ignore_ascii_case(&self.method) && query.contains(&self.query_contains)
    }
}

/// Requests the proxy stalls: it takes the request and then sends nothing more, for as long
/// as the client keeps the connection open — what a dead peer behind a NAT, or a hung server,
/// looks like to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StallRule {
    /// The HTTP method, e.g. `PUT`.
    pub method: String,
    /// Where the answer stops.
    pub at: StallPoint,
    /// How many matching requests stall; later ones are forwarded as usual.
    pub times: u64,
}

/// Where a stalled request stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallPoint {
    /// The request (body included) is read and never answered; nothing reaches the server.
    BeforeAnswer,
    /// The request is forwarded, and half of the server's answer is sent, then nothing.
    MidBody,
}

/// Requests seen by the proxy, by kind, and faults injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    pub put: u64,
    pub get: u64,
    pub head: u64,
    pub list: u64,
    pub delete: u64,
    pub post: u64,
    pub other: u64,
    /// Faults injected (all kinds).
    pub faults: u64,
    /// Of which 500/503 answers.
    pub status_faults: u64,
    /// Of which connection resets.
    pub resets: u64,
    /// Of which delays.
    pub delays: u64,
    /// Requests answered by a [`FailRule`] (not counted in `faults`).
    pub rule_failures: u64,
    /// Requests stalled by a [`StallRule`].
    pub stalls: u64,
    /// PUTs whose body the signature does not cover (`x-amz-content-sha256: UNSIGNED-PAYLOAD`).
    pub unsigned_puts: u64,
}

impl RequestCounts {
    /// All requests.
    pub fn total(&self) -> u64 {
        self.put + self.get + self.head + self.list + self.delete + self.post + self.other
    }

    /// The requests counted between `earlier` and `self`.
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        RequestCounts {
            put: self.put - earlier.put,
            get: self.get - earlier.get,
            head: self.head - earlier.head,
            list: self.list - earlier.list,
            delete: self.delete - earlier.delete,
            post: self.post - earlier.post,
            other: self.other - earlier.other,
            faults: self.faults - earlier.faults,
            status_faults: self.status_faults - earlier.status_faults,
            resets: self.resets - earlier.resets,
            delays: self.delays - earlier.delays,
            rule_failures: self.rule_failures - earlier.rule_failures,
            stalls: self.stalls - earlier.stalls,
            unsigned_puts: self.unsigned_puts - earlier.unsigned_puts,
        }
    }

    /// As a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "put": self.put, "get": self.get, "head": self.head, "list": self.list,
            "delete": self.delete, "post": self.post, "other": self.other,
            "faults": self.faults, "statusFaults": self.status_faults,
            "resets": self.resets, "delays": self.delays, "ruleFailures": self.rule_failures, "stalls": self.stalls,
            "unsignedPuts": self.unsigned_puts,
        })
    }
}

#[derive(Default)]
struct Counters {
    put: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    post: AtomicU64,
    other: AtomicU64,
    faults: AtomicU64,
    status_faults: AtomicU64,
    resets: AtomicU64,
    delays: AtomicU64,
    rule_failures: AtomicU64,
    stalls: AtomicU64,
    unsigned_puts: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> RequestCounts {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RequestCounts {
            put: l(&self.put),
            get: l(&self.get),
            head: l(&self.head),
            list: l(&self.list),
            delete: l(&self.delete),
            post: l(&self.post),
            other: l(&self.other),
            faults: l(&self.faults),
            status_faults: l(&self.status_faults),
            resets: l(&self.resets),
            delays: l(&self.delays),
            rule_failures: l(&self.rule_failures),
            stalls: l(&self.stalls),
            unsigned_puts: l(&self.unsigned_puts),
        }
    }

    fn reset(&self) {
        for c in [
            &self.put,
            &self.get,
            &self.head,
            &self.list,
            &self.delete,
            &self.post,
            &self.other,
            &self.faults,
            &self.status_faults,
            &self.resets,
            &self.delays,
            &self.rule_failures,
            &self.stalls,
            &self.unsigned_puts,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

struct Injector {
    faults: Faults,
    rng: StdRng,
}

struct State {
    upstream: String,
    client: Client<HttpConnector, Body>,
    counters: Counters,
    injector: Mutex<Injector>,
    rules: Mutex<Vec<FailRule>>,
    stalls: Mutex<Vec<StallRule>>,
}

impl State {
    fn draw(&self) -> Option<(FaultKind, Duration)> {
        let mut injector = self.injector.lock().unwrap_or_else(|p| p.into_inner());
        let Injector { faults, rng } = &mut *injector;
        if faults.kinds.is_empty() || faults.rate <= 0.0 {
            return None;
        }
        if !rng.gen_bool(faults.rate.min(1.0)) {
            return None;
        }
        let kind = faults.kinds[rng.gen_range(0..faults.kinds.len())];
        Some((kind, faults.latency))
    }

    fn rule_for(&self, method: &Method, query: &str) -> Option<u16> {
        let rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        rules
            .iter()
            .find(|rule| rule.matches(method, query))
            .map(|rule| rule.status)
    }

    /// Where the request stalls, if a stall rule with stalls left matches it (using one up).
    fn take_stall(&self, method: &Method) -> Option<StallPoint> {
        let mut rules = self.stalls.lock().unwrap_or_else(|p| p.into_inner());
        let rule = rules
            .iter_mut()
            .find(|rule| rule.times > 0 && method.as_str().eq_ignore_ascii_case(&rule.method))?;
        rule.times -= 1;
        Some(rule.at)
    }

    fn set_faults(&self, faults: Faults) {
        let mut injector = self.injector.lock().unwrap_or_else(|p| p.into_inner());
        injector.rng = StdRng::seed_from_u64(faults.seed);
        injector.faults = faults;
    }
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    /// PEM of the CA that signed the HTTPS certificate, when serving HTTPS.
    ca_pem: Option<String>,
    state: Arc<State>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.state.upstream)
            .finish()
    }
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream` (`host:port`).
    pub fn start(upstream: &str, faults: Faults) -> std::io::Result<FaultProxy> {
        Self::start_on("127.0.0.1:0", upstream, faults)
    }

    /// Starts a proxy listening on `listen` (`host:port`, port 0 for any).
    pub fn start_on(listen: &str, upstream: &str, faults: Faults) -> std::io::Result<FaultProxy> {
        Self::start_inner(listen, upstream, faults, None)
    }

    /// Starts an HTTPS proxy on a free loopback port, with a certificate for `127.0.0.1` and
    /// `localhost` issued by a CA made for it (see [`Self::ca_pem`]).
    pub fn start_tls(upstream: &str, faults: Faults) -> std::io::Result<FaultProxy> {
        let (ca_pem, config) = tls_config().map_err(std::io::Error::other)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let mut proxy = Self::start_inner("127.0.0.1:0", upstream, faults, Some(acceptor))?;
        proxy.ca_pem = Some(ca_pem);
        Ok(proxy)
    }

    fn start_inner(
        listen: &str,
        upstream: &str,
        faults: Faults,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<FaultProxy> {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fault-proxy")
            .enable_all()
            .build()?;
        let state = {
            let _guard = runtime.enter();
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            Arc::new(State {
                upstream,
                client: Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .build(connector),
                counters: Counters::default(),
                injector: Mutex::new(Injector {
                    rng: StdRng::seed_from_u64(faults.seed),
                    faults,
                }),
                rules: Mutex::new(Vec::new()),
                stalls: Mutex::new(Vec::new()),
            })
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("fault-proxy-accept".into())
            .spawn(move || {
                runtime.block_on(accept_loop(listener, thread_state, tls, rx));
                runtime.shutdown_background();
            })?;
        Ok(FaultProxy {
            addr,
            ca_pem: None,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, or `https://…` for an HTTPS proxy.
    pub fn endpoint(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// PEM of the CA behind an HTTPS proxy's certificate (`None` for plain HTTP).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Replaces the fault settings (and reseeds the generator).
    pub fn set_faults(&self, faults: Faults) {
        self.state.set_faults(faults);
    }

    /// Replaces the fail rules: from now on every request matching one of `rules` is answered
    /// with that rule's status (before any random fault is drawn). An empty list removes them.
    pub fn set_fail_rules(&self, rules: Vec<FailRule>) {
        *self.state.rules.lock().unwrap_or_else(|p| p.into_inner()) = rules;
    }

    /// Replaces the stall rules (see [`StallRule`]). An empty list removes them.
    pub fn set_stall_rules(&self, rules: Vec<StallRule>) {
        *self.state.stalls.lock().unwrap_or_else(|p| p.into_inner()) = rules;
    }

    /// The requests counted so far.
    pub fn counts(&self) -> RequestCounts {
        self.state.counters.snapshot()
    }

    /// Zeroes the counters.
    pub fn reset_counts(&self) {
        self.state.counters.reset();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    state: Arc<State>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fault proxy: cannot listen: {e}");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Closing with SO_LINGER 0 makes an injected abort a real TCP reset.
        let _ = stream.set_zero_linger();
        let state = Arc::clone(&state);
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(Arc::clone(&state), req));
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
                Some(acceptor) => {
                    // A client that rejects the certificate ends the handshake: nothing to serve.
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            }
        });
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Put,
    Get,
    Head,
    List,
    Delete,
    Post,
    Other,
}

fn classify(req: &Request<Incoming>) -> Kind {
    match *req.method() {
        Method::PUT => Kind::Put,
        Method::HEAD => Kind::Head,
        Method::DELETE => Kind::Delete,
        Method::POST => Kind::Post,
        Method::GET => {
            let query = req.uri().query().unwrap_or("");
            let path = req.uri().path().trim_matches('/');
            if query.contains("list-type") || !path.contains('/') {
                Kind::List
            } else {
                Kind::Get
            }
        }
        _ => Kind::Other,
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn injected() -> BoxError {
    "fault proxy: injected connection reset".into()
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, BoxError> {
    if let Some(control) = req.uri().path().strip_prefix("/__faultproxy/") {
        return Ok(control_request(
            &state,
            control,
            req.uri().query().unwrap_or(""),
        ));
    }
    let counters = &state.counters;
    match classify(&req) {
        Kind::Put => {
            Counters::bump(&counters.put);
            let unsigned = req
                .headers()
                .get("x-amz-content-sha256")
                .is_some_and(|v| v.as_bytes() == b"UNSIGNED-PAYLOAD");
            if unsigned {
                Counters::bump(&counters.unsigned_puts);
            }
        }
        Kind::Get => Counters::bump(&counters.get),
        Kind::Head => Counters::bump(&counters.head),
        Kind::List => Counters::bump(&counters.list),
        Kind::Delete => Counters::bump(&counters.delete),
        Kind::Post => Counters::bump(&counters.post),
        Kind::Other => Counters::bump(&counters.other),
    }
    if let Some(status) = state.rule_for(req.method(), req.uri().query().unwrap_or("")) {
        Counters::bump(&counters.rule_failures);
        let _ = req.into_body().collect().await;
        return error_response(status, "InvalidRequest");
    }
    if let Some(point) = state.take_stall(req.method()) {
        Counters::bump(&counters.stalls);
        return stall(&state, req, point).await;
    }
    let fault = state.draw();
    if fault.is_some() {
        Counters::bump(&counters.faults);
    }
    match fault {
        None => forward(&state, req).await,
        Some((FaultKind::Latency, delay)) => {
            Counters::bump(&counters.delays);
            tokio::time::sleep(delay).await;
            forward(&state, req).await
        }
        Some((kind @ (FaultKind::Status500 | FaultKind::Status503), _)) => {
            Counters::bump(&counters.status_faults);
            // Take the whole request, as a server that fails after receiving it would.
            let _ = req.into_body().collect().await;
            if kind == FaultKind::Status500 {
                error_response(500, "InternalError")
            } else {
                error_response(503, "SlowDown")
            }
        }
        Some((FaultKind::ResetMidBody, _)) => {
            Counters::bump(&counters.resets);
            reset_mid_body(&state, req).await
        }
    }
}

/// An S3 error answer with `status` and `code`.
fn error_response(status: u16, code: &str) -> Result<Response<Body>, BoxError> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the s3mover test proxy</Message></Error>"
    );
    Ok(Response::builder()
        .status(StatusCode::from_u16(status)?)
        .header("content-type", "application/xml")
        .body(full(body))?)
}

async fn forward(state: &State, req: Request<Incoming>) -> Result<Response<Body>, BoxError> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    parts.uri = format!("http://{}{}", state.upstream, path).parse()?;
    let request = Request::from_parts(parts, body.map_err(BoxError::from).boxed());
    let response = state.client.request(request).await?;
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(
        parts,
        body.map_err(BoxError::from).boxed(),
    ))
}

async fn reset_mid_body(state: &State, req: Request<Incoming>) -> Result<Response<Body>, BoxError> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if declared > 0 {
        // Cut the upload: read half of it, then abort the connection.
        let mut body = req.into_body();
        let mut seen = 0u64;
        while seen < declared / 2 {
            match body.frame().await {
                Some(Ok(frame)) => {
                    seen += frame.data_ref().map(|d| d.len() as u64).unwrap_or(0);
                }
                _ => break,
            }
        }
        return Err(injected());
    }
    // Cut the download: forward, then send half of the answer and abort.
    let response = forward(state, req).await?;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await?.to_bytes();
    if bytes.len() < 2 {
        return Err(injected());
    }
    let half = bytes.slice(..bytes.len() / 2);
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![Ok(Frame::data(half)), Err(injected())];
    let stream = StreamBody::new(futures::stream::iter(frames));
    Ok(Response::from_parts(parts, BodyExt::boxed(stream)))
}

/// Answers `req` up to `point`, then never again.
async fn stall(
    state: &State,
    req: Request<Incoming>,
    point: StallPoint,
) -> Result<Response<Body>, BoxError> {
    match point {
        StallPoint::BeforeAnswer => {
            let _ = req.into_body().collect().await;
            futures::future::pending().await
        }
        StallPoint::MidBody => {
            let response = forward(state, req).await?;
            let (parts, body) = response.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let half = bytes.slice(..bytes.len() / 2);
            let stream = futures::StreamExt::chain(
                futures::stream::iter([Ok::<_, BoxError>(Frame::data(half))]),
                futures::stream::pending(),
            );
            Ok(Response::from_parts(
                parts,
                BodyExt::boxed(StreamBody::new(stream)),
            ))
        }
    }
}

fn control_request(state: &State, control: &str, query: &str) -> Response<Body> {
    let params: Vec<(&str, &str)> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let body = match control {
        "counts" => state.counters.snapshot().to_json().to_string(),
        "reset" => {
            state.counters.reset();
            "{}".to_string()
        }
        "faults" => {
            let rate = param("rate").and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let seed = param("seed").and_then(|v| v.parse().ok()).unwrap_or(1);
            let mut faults = Faults::mixed(rate, seed);
            if let Some(ms) = param("latency_ms").and_then(|v| v.parse().ok()) {
                faults.latency = Duration::from_millis(ms);
            }
            state.set_faults(faults);
            "{}".to_string()
        }
        _ => {
            return Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(full("unknown control; use counts, reset or faults"))
                .unwrap_or_else(|_| Response::new(full("")))
        }
    };
    Response::builder()
        .header("content-type", "application/json")
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full("")))
}

/// A CA (returned as PEM) and a server configuration with a certificate it issued for
/// `127.0.0.1` and `localhost`.
fn tls_config() -> Result<(String, tokio_rustls::rustls::ServerConfig), BoxError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "s3mover test proxy CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate()?;
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "s3mover test proxy");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    Ok((ca_cert.pem(), config))
}
