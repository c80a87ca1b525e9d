//! The listener's limits against slow and greedy clients, over real TCP on 127.0.0.1.
//!
//! The clients here are raw sockets, because an HTTP client library would not misbehave on
//! purpose. The pauses between the bytes of a slow client are its behaviour, not
//! synchronisation: every outcome is awaited as a condition with a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use alertsync_runtime::{ListenerLimits, is_body_timeout, serve_with_limits};
use axum::{Router, body::Body, extract::Request, http::StatusCode, routing::get, routing::post};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

/// What every outcome here is awaited for, at most.
const DEADLINE: Duration = Duration::from_secs(10);

fn limits() -> ListenerLimits {
    ListenerLimits {
        header_timeout: Duration::from_millis(400),
        body_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_millis(800),
        max_connections: 256,
    }
}

/// `/healthz`, and `POST /echo` answering with the body it read (408 when it came too slowly).
fn router() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/echo",
            post(|req: Request<Body>| async move {
                match axum::body::to_bytes(req.into_body(), 1 << 20).await {
                    Ok(b) => (StatusCode::OK, b.to_vec()),
                    Err(e) if is_body_timeout(&e) => (StatusCode::REQUEST_TIMEOUT, Vec::new()),
                    Err(_) => (StatusCode::BAD_REQUEST, Vec::new()),
                }
            }),
        )
}

struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(limits: ListenerLimits) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_with_limits(
            listener,
            router(),
            limits,
            shutdown.clone(),
        ));
        Self {
            addr,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        timeout(DEADLINE, self.task)
            .await
            .expect("the listener stops once its connections are closed")
            .unwrap();
    }
}

/// Sends `request` on a new connection and returns the status code and the whole answer (the
/// request asks the server to close).
async fn exchange(addr: SocketAddr, request: &str) -> (u16, String) {
    timeout(DEADLINE, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, answer)
    })
    .await
    .expect("an answer in time")
}

async fn healthz(addr: SocketAddr) -> u16 {
    exchange(
        addr,
        "GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    )
    .await
    .0
}

async fn good_post(addr: SocketAddr) -> (u16, String) {
    exchange(
        addr,
        "POST /echo HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello",
    )
    .await
}

/// Reads from `s` until the server closes it (EOF or reset); returns what it read. Panics
/// when the connection is still open after [`DEADLINE`].
async fn until_closed(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection in time");
    got
}

/// A client that sends a request head one byte at a time and never finishes it. Returns once
/// the server closed the connection, with how long it stayed open.
async fn byte_by_byte(addr: SocketAddr) -> Duration {
    let start = Instant::now();
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = s.into_split();
    let dribble = tokio::spawn(async move {
        let head = b"POST /echo HTTP/1.1\r\nhost: t\r\n";
        for &b in head.iter().chain(std::iter::repeat(&b'a')) {
            if write.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    until_closed(&mut read).await;
    dribble.abort();
    start.elapsed()
}

#[tokio::test]
async fn a_head_sent_byte_by_byte_is_cut_off_after_the_header_timeout_while_good_requests_are_served()
 {
    let server = Server::start(limits()).await;
    let slow = tokio::spawn(byte_by_byte(server.addr));
    // Served meanwhile, although the slow client keeps sending.
    let (status, answer) = good_post(server.addr).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.ends_with("hello"), "{answer}");
    assert_eq!(healthz(server.addr).await, 200);
    let open_for = slow.await.unwrap();
    // Each byte arrived well within the header timeout: only a bound on the whole head cuts
    // this client off.
    assert!(
        open_for >= limits().header_timeout,
        "closed after {open_for:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let server = Server::start(limits()).await;
    let start = Instant::now();
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let got = until_closed(&mut s).await;
    assert!(got.is_empty(), "nothing is said to a silent connection");
    assert!(start.elapsed() >= limits().header_timeout);
    server.stop().await;
}

#[tokio::test]
async fn an_unfinished_body_is_answered_408_and_closed_after_the_body_timeout() {
    let server = Server::start(limits()).await;
    let start = Instant::now();
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 1000\r\n\r\nonly ten b")
        .await
        .unwrap();
    let got = String::from_utf8_lossy(&until_closed(&mut s).await).into_owned();
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(start.elapsed() >= limits().body_timeout);
    assert_eq!(healthz(server.addr).await, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_kept_alive_connection_serves_several_requests_then_is_closed_when_idle() {
    let server = Server::start(limits()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    for _ in 0..3 {
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = timeout(DEADLINE, s.read(&mut buf)).await.unwrap().unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok\n"), "{answer}");
    }
    let idle_since = Instant::now();
    assert!(until_closed(&mut s).await.is_empty());
    // The idle timeout, longer than the header timeout, is the one that applies between
    // requests.
    assert!(idle_since.elapsed() >= limits().idle_timeout);
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_answered_503_until_one_closes() {
    let server = Server::start(ListenerLimits {
        max_connections: 3,
        // Long enough that the silent connections below hold their places during the test.
        header_timeout: Duration::from_secs(60),
        ..limits()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // The listener accepts in order, so the fourth finds the three places taken.
    let (status, answer) = exchange(
        server.addr,
        "GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("too many connections"), "{answer}");
    let (status, _) = good_post(server.addr).await;
    assert_eq!(status, 503);

    // A place frees up when a connection closes.
    drop(held.pop());
    let deadline = Instant::now() + DEADLINE;
    loop {
        let status = healthz(server.addr).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "no place freed up");
        tokio::task::yield_now().await;
    }
    drop(held);
    server.stop().await;
}

/// Many slow clients of every kind at once: `/healthz` and good requests are answered all
/// along, and every slow client is cut off.
#[tokio::test]
async fn healthz_and_good_requests_are_answered_while_slow_clients_hold_connections() {
    let server = Server::start(limits()).await;
    let addr = server.addr;
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..30 {
        slow.spawn(async move {
            byte_by_byte(addr).await;
        });
        slow.spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            until_closed(&mut s).await;
        });
        slow.spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 99\r\n\r\nx")
                .await
                .unwrap();
            until_closed(&mut s).await;
        });
    }
    for _ in 0..5 {
        assert_eq!(healthz(addr).await, 200);
        assert_eq!(good_post(addr).await.0, 200);
    }
    // Every slow client was closed (each panics otherwise).
    while let Some(r) = slow.join_next().await {
        r.unwrap();
    }
    assert_eq!(healthz(addr).await, 200);
    server.stop().await;
}

/// On shutdown, the listener stops accepting and an idle connection does not hold it up.
#[tokio::test]
async fn shutdown_closes_idle_connections_at_once() {
    let server = Server::start(ListenerLimits {
        header_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
        ..limits()
    })
    .await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = timeout(DEADLINE, s.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let addr = server.addr;
    server.stop().await;
    assert!(until_closed(&mut s).await.is_empty());
    assert!(TcpStream::connect(addr).await.is_err());
}
