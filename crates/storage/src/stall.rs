//! Stall detection for S3 requests: a request whose connection moves no data for the stall
//! timeout fails as timed out, so that object_store's one retry loop sends it again on a new
//! connection at once instead of after the whole-request timeout (ten minutes).
//!
//! "Moves no data" is measured where the client can see it:
//!
//! * before the answer arrives, from the start of the request and from each piece of the
//!   request body the HTTP connection takes. Bodies are handed over in [`UPLOAD_PIECE`]
//!   slices (no copy) so that a long upload shows progress while it goes: the connection
//!   asks for the next piece once it has room for it;
//! * while the answer's body arrives, for as long as the caller waits for its next piece —
//!   time the caller spends elsewhere (say, writing what it read) does not count.
//!
//! Nothing here retries: a stall becomes an [`HttpErrorKind::Timeout`] error, and the retry
//! loop decides (see `s3.rs`, "The one retry policy"). A stalled or broken answer body is
//! reported to [`FailedAttempts`] here (the retry loop resumes it where it broke); a request
//! that stalls before its answer is reported by the layer above, as every failed call is.
//! [`StallGuardedClient`] is object_store's own request path — a `reqwest::Client`, failures
//! sorted into the same kinds — with the watchdog added; object_store has no hook for one.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::attempts::{FailedAttempts, Failure};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use object_store::client::{
    HttpError, HttpErrorKind, HttpRequest, HttpRequestBody, HttpResponse, HttpResponseBody,
    HttpService,
};

/// How long a request may move no data before it is given up, unless
/// `S3MOVER_S3_STALL_TIMEOUT` says otherwise. Far above what a working server takes to answer
/// one request of the repository's (objects of at most a few tens of MiB), far below the
/// whole-request timeout.
pub(crate) const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Size of the slices a request body is handed to the connection in.
const UPLOAD_PIECE: usize = 64 * 1024;

/// The error a stalled request ends with.
#[derive(Debug, thiserror::Error)]
#[error("no data moved for {0:?}: the connection stalled")]
pub(crate) struct Stalled(pub(crate) Duration);

/// object_store's reqwest client, with the stall timeout around each request.
#[derive(Debug)]
pub(crate) struct StallGuardedClient {
    client: reqwest::Client,
    limit: Duration,
    attempts: Arc<FailedAttempts>,
}

impl StallGuardedClient {
    /// Sends requests through `client`, giving up any that moves no data for `limit`;
    /// answer bodies that break or stall are reported to `attempts`.
    pub(crate) fn new(
        client: reqwest::Client,
        limit: Duration,
        attempts: Arc<FailedAttempts>,
    ) -> StallGuardedClient {
        StallGuardedClient {
            client,
            limit,
            attempts,
        }
    }
}

#[async_trait::async_trait]
impl HttpService for StallGuardedClient {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let what = format!("{} {}", request.method(), request.uri().path());
        let progress = Progress::start();
        let request = to_reqwest(request, &progress)?;
        let response = tokio::select! {
            response = self.client.execute(request) => response.map_err(classify)?,
            stalled = progress.stalled(self.limit) => {
                return Err(HttpError::new(HttpErrorKind::Timeout, stalled));
            }
        };
        let (parts, body) = http::Response::<reqwest::Body>::from(response).into_parts();
        let body = HttpResponseBody::new(body.map_err(classify));
        Ok(HttpResponse::from_parts(
            parts,
            with_idle_timeout(body, self.limit, what, Arc::clone(&self.attempts)),
        ))
    }
}

/// When a request last moved data.
#[derive(Debug)]
struct Progress {
    start: Instant,
    /// Nanoseconds from `start` to the last movement.
    last: AtomicU64,
}

impl Progress {
    /// A request starting now.
    fn start() -> Arc<Progress> {
        Arc::new(Progress {
            start: Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    /// Records that data moved now.
    fn mark(&self) {
        let now = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.fetch_max(now, Ordering::Relaxed);
    }

    /// Time since data last moved.
    fn idle(&self) -> Duration {
        let last = Duration::from_nanos(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Completes once no data has moved for `limit`.
    async fn stalled(&self, limit: Duration) -> Stalled {
        loop {
            let idle = self.idle();
            if idle >= limit {
                return Stalled(limit);
            }
            tokio::time::sleep(limit - idle).await;
        }
    }
}

/// `request` as reqwest's, its body handed over in [`UPLOAD_PIECE`] slices that mark
/// `progress` as the connection takes them.
fn to_reqwest(
    request: HttpRequest,
    progress: &Arc<Progress>,
) -> Result<reqwest::Request, HttpError> {
    let (parts, body) = request.into_parts();
    let url = reqwest::Url::parse(&parts.uri.to_string())
        .map_err(|e| HttpError::new(HttpErrorKind::Request, e))?;
    let mut outgoing = reqwest::Request::new(parts.method, url);
    *outgoing.headers_mut() = parts.headers;
    *outgoing.body_mut() = Some(reqwest::Body::wrap(ProgressBody {
        inner: body,
        rest: Bytes::new(),
        progress: Arc::clone(progress),
    }));
    Ok(outgoing)
}

/// A request body handed over in slices, each marking progress when taken.
struct ProgressBody {
    inner: HttpRequestBody,
    /// What is left of the last piece taken from `inner`.
    rest: Bytes,
    progress: Arc<Progress>,
}

impl Body for ProgressBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = self.get_mut();
        if this.rest.is_empty() {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(data) => this.rest = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        }
        let piece = this.rest.split_to(this.rest.len().min(UPLOAD_PIECE));
        this.progress.mark();
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

/// Sorts a reqwest failure into object_store's kinds, as object_store's own client does —
/// connection failures, timeouts, answers that cannot be read, and a connection that closed
/// or broke mid-request (which the retry loop may send again) — except that a connection that
/// timed out is a connection failure, not a timeout: nothing was sent, and an endpoint that
/// never answers is then given up as soon as one that refuses (see `s3.rs`).
fn classify(error: reqwest::Error) -> HttpError {
    let mut kind = if error.is_connect() {
        HttpErrorKind::Connect
    } else if error.is_timeout() {
        HttpErrorKind::Timeout
    } else if error.is_decode() {
        HttpErrorKind::Decode
    } else {
        HttpErrorKind::Unknown
    };
    let mut source = std::error::Error::source(&error);
    while kind == HttpErrorKind::Unknown {
        let Some(cause) = source else {
            break;
        };
        if let Some(e) = cause.downcast_ref::<hyper::Error>() {
            if e.is_closed() || e.is_incomplete_message() || e.is_body_write_aborted() {
                kind = HttpErrorKind::Request;
            } else if e.is_timeout() {
                kind = HttpErrorKind::Timeout;
            }
        }
        if let Some(e) = cause.downcast_ref::<std::io::Error>() {
            match e.kind() {
                std::io::ErrorKind::TimedOut => kind = HttpErrorKind::Timeout,
                std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof => kind = HttpErrorKind::Interrupted,
                _ => {}
            }
        }
        source = cause.source();
    }
    HttpError::new(kind, error.without_url())
}

/// `body`, failing with [`Stalled`] once its caller has waited `limit` for the next piece;
/// that and any other failure of the body is reported to `attempts` as one of `what`.
fn with_idle_timeout(
    body: HttpResponseBody,
    limit: Duration,
    what: String,
    attempts: Arc<FailedAttempts>,
) -> HttpResponseBody {
    HttpResponseBody::new(IdleTimeoutBody {
        inner: body,
        limit,
        waiting_since: None,
        timer: None,
        what,
        attempts,
    })
}

/// An answer's body whose wait for each piece is bounded. The timer is not reset for every
/// piece (an answer of a GiB comes in tens of thousands): it is set once, and when it fires
/// it checks how long the current wait has lasted, and is set again for the rest.
struct IdleTimeoutBody {
    inner: HttpResponseBody,
    limit: Duration,
    /// When the caller started waiting for the next piece; `None` between pieces.
    waiting_since: Option<Instant>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The request, for the report of a failure.
    what: String,
    attempts: Arc<FailedAttempts>,
}

impl Body for IdleTimeoutBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = self.get_mut();
        let since = *this.waiting_since.get_or_insert_with(Instant::now);
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting_since = None;
            if let Some(Err(e)) = &frame {
                this.attempts.failed(&this.what, Failure::Other, e);
            }
            return Poll::Ready(frame);
        }
        let deadline = tokio::time::Instant::from_std(since + this.limit);
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if since.elapsed() >= this.limit {
                this.waiting_since = None;
                let stalled = Stalled(this.limit);
                this.attempts.failed(&this.what, Failure::Other, &stalled);
                return Poll::Ready(Some(Err(HttpError::new(HttpErrorKind::Timeout, stalled))));
            }
            timer.as_mut().reset(deadline);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next_frame<B: Body + Unpin>(body: &mut B) -> Option<Result<Frame<B::Data>, B::Error>> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
    }

    #[tokio::test]
    async fn a_large_body_goes_in_pieces_that_mark_progress() {
        let data: Bytes = (0..UPLOAD_PIECE * 5 / 2)
            .map(|i| i as u8)
            .collect::<Vec<u8>>()
            .into();
        let progress = Progress::start();
        let mut body = ProgressBody {
            inner: HttpRequestBody::from(data.clone()),
            rest: Bytes::new(),
            progress: Arc::clone(&progress),
        };
        assert_eq!(body.size_hint().exact(), Some(data.len() as u64));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let idle_before = progress.idle();
        let first = next_frame(&mut body).await.unwrap().unwrap();
        assert!(
            progress.idle() < idle_before,
            "taking a piece marked progress ({:?} idle, was {idle_before:?})",
            progress.idle()
        );
        assert_eq!(
            body.size_hint().exact(),
            Some((data.len() - UPLOAD_PIECE) as u64),
            "the size left counts the piece's remainder"
        );
        let mut seen = first.into_data().unwrap().to_vec();
        let mut sizes = vec![seen.len()];
        while let Some(frame) = next_frame(&mut body).await {
            let piece = frame.unwrap().into_data().unwrap();
            sizes.push(piece.len());
            seen.extend_from_slice(&piece);
        }
        assert!(body.is_end_stream());
        assert_eq!(seen, data.as_ref(), "the pieces hold the body, in order");
        assert_eq!(sizes, [UPLOAD_PIECE, UPLOAD_PIECE, UPLOAD_PIECE / 2]);
    }

    /// A connection attempt that times out is a connection failure.
    #[tokio::test]
    async fn a_connection_that_times_out_is_a_connection_failure() {
        let error = super::super::test_support::connect_timeout_error().await;
        assert!(error.is_connect() && error.is_timeout(), "{error:?}");
        assert_eq!(classify(error).kind(), HttpErrorKind::Connect);
    }

    #[tokio::test]
    async fn an_answer_that_stops_arriving_fails_as_stalled() {
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, HttpError>>(1);
        futures::SinkExt::send(&mut tx, Ok(Frame::data(Bytes::from_static(b"half"))))
            .await
            .unwrap();
        let body = HttpResponseBody::new(http_body_util::StreamBody::new(rx));
        let attempts = Arc::new(FailedAttempts::default());
        let mut body = with_idle_timeout(
            body,
            Duration::from_millis(50),
            "GET /k".into(),
            Arc::clone(&attempts),
        );
        let first = next_frame(&mut body).await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"half"));
        // The sender stays open and sends nothing more.
        let error = next_frame(&mut body)
            .await
            .expect("an error, not the end")
            .unwrap_err();
        assert_eq!(error.kind(), HttpErrorKind::Timeout);
        let text = format!("{error} {:?}", std::error::Error::source(&error));
        assert!(text.contains("stalled"), "{text}");
        assert_eq!(attempts.count(), 1, "the stall is a failed attempt");
        drop(tx);
    }

    #[tokio::test]
    async fn time_the_caller_spends_elsewhere_is_not_a_stall() {
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, HttpError>>(1);
        let limit = Duration::from_secs(1);
        let body = HttpResponseBody::new(http_body_util::StreamBody::new(rx));
        let attempts = Arc::new(FailedAttempts::default());
        let mut body = with_idle_timeout(body, limit, "GET /k".into(), Arc::clone(&attempts));
        futures::SinkExt::send(&mut tx, Ok(Frame::data(Bytes::from_static(b"one"))))
            .await
            .unwrap();
        assert!(next_frame(&mut body).await.unwrap().is_ok());
        // The caller is busy for longer than the limit, then waits a little for the next piece.
        tokio::time::sleep(limit + limit / 2).await;
        let sender = tokio::spawn(async move {
            tokio::time::sleep(limit / 10).await;
            futures::SinkExt::send(&mut tx, Ok(Frame::data(Bytes::from_static(b"two"))))
                .await
                .unwrap();
            tx
        });
        let second = next_frame(&mut body).await.unwrap();
        assert_eq!(
            second.expect("not a stall").into_data().unwrap(),
            Bytes::from_static(b"two")
        );
        assert_eq!(attempts.count(), 0);
        drop(sender.await);
    }
}
