//! The HTTP listener of every service: axum routes behind an accept loop that bounds what one
//! client can hold.
//!
//! `axum::serve` keeps a connection for as long as the client likes: a client that sends its
//! headers one byte at a time, says nothing at all, or never finishes its body keeps a task, a
//! file descriptor and its buffers forever, and a few hundred of them starve the process of
//! descriptors so that good requests and `/healthz` time out. Here every connection runs under
//! [`ListenerLimits`]:
//!
//! - the request head (line and headers) must arrive within `header_timeout` of its first byte,
//!   and a new connection must deliver its first request within `header_timeout` too (a silent
//!   connection is closed);
//! - the request body must arrive within `body_timeout` of the head (the handler reading it
//!   gets a [`BodyTimeout`] error, then the connection is closed);
//! - a kept-alive connection may wait `idle_timeout` for its next request after a response,
//!   and a response the client does not read is abandoned after `idle_timeout` too;
//! - at most `max_connections` connections are served at once; beyond that a connection is
//!   answered `503 Service Unavailable` and closed.
//!
//! Only HTTP/1.1 is spoken (as before: the services never enabled HTTP/2).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What one HTTP listener lets a client hold (see the [module](self) documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Time for a request head (request line and headers) to arrive, from its first byte; also
    /// the time a new connection may stay silent before its first request.
    pub header_timeout: Duration,
    /// Time for a request body to arrive, from the end of the head.
    pub body_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request, and a response may wait
    /// for the client to read it.
    pub idle_timeout: Duration,
    /// Connections served at once; more are answered 503 and closed. Keep it below the
    /// process's file-descriptor limit (`ulimit -n`), with room for NATS and outgoing calls.
    pub max_connections: usize,
}

impl ListenerLimits {
    /// 10 s for headers, 30 s for a body, 60 s idle, 1024 connections.
    pub const DEFAULT: Self = Self {
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(60),
        max_connections: 1024,
    };
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The error a handler reading a request body gets when the body did not arrive within
/// [`ListenerLimits::body_timeout`]. Find it in an error chain with [`is_body_timeout`].
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {}",
            humanize(self.0)
        )
    }
}

impl std::error::Error for BodyTimeout {}

/// Whether `err` or one of its sources is a [`BodyTimeout`] (axum wraps body errors, e.g. in
/// `axum::body::to_bytes`).
pub fn is_body_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<BodyTimeout>() {
            return true;
        }
        next = e.source();
    }
    false
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Connections over the cap being answered 503 at once. Beyond this many, a connection over
/// the cap is closed without an answer: answering must not itself become unbounded work.
const REFUSALS_AT_ONCE: usize = 64;
/// How long answering 503 to one connection over the cap may take in all (a client that has
/// not sent its request head by then is closed without an answer).
const REFUSAL_TIME: Duration = Duration::from_secs(1);
/// What a connection over the cap is told.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
content-length: 40\r\nconnection: close\r\nretry-after: 1\r\n\r\ntoo many connections; retry in a moment\n";

/// Serves `router` on `listener` under `limits` until `shutdown` is cancelled, then stops
/// accepting and waits for the open connections to finish their requests (bounded by the
/// limits: an idle connection is closed at once).
pub async fn serve_with_limits(
    listener: TcpListener,
    router: Router,
    limits: ListenerLimits,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let saturated = AtomicBool::new(false);
    let tasks = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, most likely: accepting again at once would spin.
                    tracing::warn!(error = %e, "cannot accept a connection; retrying in 1s");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                saturated.store(false, Ordering::Relaxed);
                tasks.spawn(connection(
                    stream,
                    router.clone(),
                    limits,
                    shutdown.clone(),
                    permit,
                ));
            }
            Err(_) => {
                // Once per episode: under a flood, a line per connection would flood the logs.
                if !saturated.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached: answering 503 to new connections"
                    );
                }
                if let Ok(permit) = refusals.clone().try_acquire_owned() {
                    tasks.spawn(refuse(stream, permit));
                }
            }
        }
    }
    // Stop accepting: from now on the kernel refuses new connections.
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

/// Errors about one connection that was gone before we accepted it, not about the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Answers 503 to a connection over the cap and closes it.
async fn refuse(mut stream: TcpStream, _permit: OwnedSemaphorePermit) {
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        // Answer once the request head is in: HTTP clients take an answer that comes before
        // their request for a broken connection, not for a 503 they may retry.
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await? {
                0 => return Ok(()),
                n if head.len() + n > 16 * 1024 => break,
                n => head.extend_from_slice(&buf[..n]),
            }
        }
        stream.write_all(BUSY).await?;
        stream.shutdown().await?;
        // Read what the client still sends (a body) until it closes: closing with unread data
        // resets the connection, and the client could lose the answer.
        let mut read = 0;
        while read < 64 * 1024 {
            match stream.read(&mut buf).await? {
                0 => break,
                n => read += n,
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Serves one connection until it ends, a limit closes it, or shutdown.
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: ListenerLimits,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let clock = Clock::new(limits);
    let io = TokioIo::new(Watched {
        io: stream,
        clock: clock.clone(),
    });
    let tower = TowerToHyperService::new(router);
    let service = {
        let clock = clock.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            clock.request_started();
            let timeout = limits.body_timeout;
            let deadline = Instant::now() + timeout;
            let req: Request = req.map(|body| {
                axum::body::Body::new(TimedBody {
                    inner: body,
                    deadline,
                    timeout,
                    sleep: None,
                })
            });
            let response = hyper::service::Service::call(&tower, req);
            let clock = clock.clone();
            async move {
                let response = response.await?;
                Ok::<_, Infallible>(response.map(|inner| ResponseBody { inner, clock }))
            }
        })
    };
    // Our own clock, not hyper's `header_read_timeout`: hyper starts that one as soon as it
    // waits for a request, so it would also close kept-alive connections after the (short)
    // header timeout, leaving no separate idle timeout.
    let conn = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }
        phase = clock.expired() => phase.log(&limits),
        _ = shutdown.cancelled() => {
            // Lets a request in progress finish; an idle connection closes at once.
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                phase = clock.expired() => phase.log(&limits),
            }
        }
    }
}

/// Where a connection is in its request cycle, for its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// A request is being handled (its body has its own deadline).
    Handling,
    /// The response was handed over; waiting for the next request.
    Idle,
}

impl Phase {
    fn log(self, limits: &ListenerLimits) {
        match self {
            Phase::Head => tracing::debug!(
                "closing a connection: no complete request head within {}",
                humanize(limits.header_timeout)
            ),
            Phase::Idle => tracing::debug!(
                "closing a connection idle for {}",
                humanize(limits.idle_timeout)
            ),
            Phase::Handling => {}
        }
    }
}

struct ClockState {
    phase: Phase,
    deadline: Option<Instant>,
}

/// The deadline of one connection, moved along by its reads and requests.
struct Clock {
    state: Mutex<ClockState>,
    changed: Notify,
    limits: ListenerLimits,
}

impl Clock {
    fn new(limits: ListenerLimits) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(ClockState {
                phase: Phase::Head,
                deadline: Some(Instant::now() + limits.header_timeout),
            }),
            changed: Notify::new(),
            limits,
        })
    }

    fn set(&self, phase: Phase, deadline: Option<Instant>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.phase = phase;
        s.deadline = deadline;
        drop(s);
        self.changed.notify_one();
    }

    /// Bytes arrived: on an idle connection, they start a request head.
    fn bytes_read(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.phase == Phase::Idle {
            s.phase = Phase::Head;
            s.deadline = Some(Instant::now() + self.limits.header_timeout);
            drop(s);
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        self.set(Phase::Handling, None);
    }

    fn response_done(&self) {
        self.set(Phase::Idle, Some(Instant::now() + self.limits.idle_timeout));
    }

    /// Resolves once the current deadline passed, with the phase it belonged to.
    async fn expired(&self) -> Phase {
        loop {
            let changed = self.changed.notified();
            let (phase, deadline) = {
                let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                (s.phase, s.deadline)
            };
            match deadline {
                None => changed.await,
                Some(d) if Instant::now() >= d => return phase,
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(d) => {}
                        _ = changed => {}
                    }
                }
            }
        }
    }
}

/// The connection's socket, telling its clock when bytes arrive.
struct Watched {
    io: TcpStream,
    clock: Arc<Clock>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.bytes_read();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A request body that fails with [`BodyTimeout`] once its deadline passed.
struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    timeout: Duration,
    /// Armed on the first wait only: most bodies arrive with their head and never wait.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that starts the connection's idle clock once hyper is done with it
/// (written out, or abandoned).
struct ResponseBody {
    inner: axum::body::Body,
    clock: Arc<Clock>,
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.clock.response_done();
    }
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
