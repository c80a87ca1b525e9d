//! Bounded reads and redacted excerpts against a real HTTP server on 127.0.0.1 that sends
//! what it likes: huge, endless, or echoing our credentials (issue 24, items 4 and 6).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alertsync_http::body::{ReadError, excerpt, read_capped};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const KEY: &str = "sk-live-0123456789abcdefghij";
/// What the echoing stand-in writes after the header it echoes.
const TAIL: &str = " and more text after it";
const DEADLINE: Duration = Duration::from_secs(20);

fn redact(t: &str) -> String {
    t.replace(KEY, "[REDACTED]")
}

/// How the stand-in answers.
#[derive(Clone, Copy)]
enum Answer {
    /// 500 with a body of `pad` bytes of filler, then the request's Authorization header.
    EchoAuthAt(usize),
    /// `status` declaring `Content-Length: 100 MiB`, and sending it.
    Huge(u16),
    /// `status` with a chunked body that never ends.
    Endless(u16),
}

/// A server answering every request with `answer`; counts the body bytes it managed to write.
async fn stand_in(answer: Answer) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let count = written.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let auth = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .starts_with("authorization:")
                            .then(|| l["authorization:".len()..].trim().to_string())
                    })
                    .unwrap_or_default();
                let chunk = vec![b'x'; 64 * 1024];
                match answer {
                    Answer::EchoAuthAt(pad) => {
                        let body = format!("{}{auth}{TAIL}", "p".repeat(pad));
                        let _ = s
                            .write_all(
                                format!(
                                    "HTTP/1.1 500 Internal Server Error\r\ncontent-length: {}\r\n\r\n{body}",
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .await;
                    }
                    Answer::Huge(status) => {
                        let total = 100 * 1024 * 1024;
                        let head = format!(
                            "HTTP/1.1 {status} Whatever\r\ncontent-length: {total}\r\n\r\n"
                        );
                        if s.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        while count.load(Ordering::Relaxed) < total {
                            if s.write_all(&chunk).await.is_err() {
                                return;
                            }
                            count.fetch_add(chunk.len(), Ordering::Relaxed);
                        }
                    }
                    Answer::Endless(status) => {
                        let head = format!(
                            "HTTP/1.1 {status} Whatever\r\ntransfer-encoding: chunked\r\n\r\n"
                        );
                        if s.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        let framed =
                            [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                        while s.write_all(&framed).await.is_ok() {
                            count.fetch_add(chunk.len(), Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    (addr, written)
}

async fn get(addr: SocketAddr) -> reqwest::Response {
    alertsync_http::client_builder()
        .build()
        .unwrap()
        .get(format!("http://{addr}/"))
        .header("authorization", format!("Bearer {KEY}"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_error_body_echoing_the_key_at_any_offset_around_the_cut_leaks_no_part_of_it() {
    for pad in 250..=320 {
        let (addr, _) = stand_in(Answer::EchoAuthAt(pad)).await;
        let got = tokio::time::timeout(DEADLINE, excerpt(get(addr).await, 300, &redact, KEY.len()))
            .await
            .unwrap();
        for n in 4..=KEY.len() {
            assert!(
                !got.contains(&KEY[..n]),
                "offset {pad}: {:?} in {got}",
                &KEY[..n]
            );
        }
        assert!(got.starts_with("ppp"), "{got}");
        assert!(got.chars().count() <= 300);
    }
}

#[tokio::test]
async fn an_excerpt_of_an_endless_body_returns_after_reading_its_bound() {
    let (addr, written) = stand_in(Answer::Endless(500)).await;
    let got = tokio::time::timeout(DEADLINE, excerpt(get(addr).await, 300, &redact, KEY.len()))
        .await
        .expect("the excerpt does not wait for a body that never ends");
    assert_eq!(got, "x".repeat(300));
    // The server got as far as the socket buffers let it, nowhere near 100 MiB.
    assert!(written.load(Ordering::Relaxed) < 32 * 1024 * 1024);
}

#[tokio::test]
async fn a_body_declared_over_the_cap_is_refused_before_reading_it() {
    let (addr, written) = stand_in(Answer::Huge(200)).await;
    let err = tokio::time::timeout(DEADLINE, read_capped(get(addr).await, 1024 * 1024))
        .await
        .unwrap()
        .unwrap_err();
    match err {
        ReadError::Oversize(o) => {
            assert_eq!(o.read, 0);
            assert_eq!(o.declared, Some(100 * 1024 * 1024));
            assert_eq!(
                o.to_string(),
                "a body of 104857600 bytes, over the cap of 1048576 bytes"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(written.load(Ordering::Relaxed) < 32 * 1024 * 1024);
}

#[tokio::test]
async fn a_streamed_body_over_the_cap_is_refused_once_past_the_cap() {
    let (addr, written) = stand_in(Answer::Endless(200)).await;
    let err = tokio::time::timeout(DEADLINE, read_capped(get(addr).await, 1024 * 1024))
        .await
        .expect("the read stops at the cap")
        .unwrap_err();
    match err {
        ReadError::Oversize(o) => {
            assert!(o.read > 1024 * 1024, "{o:?}");
            assert!(o.read <= 1024 * 1024 + 64 * 1024, "{o:?}");
            assert_eq!(o.declared, None);
        }
        other => panic!("{other:?}"),
    }
    assert!(written.load(Ordering::Relaxed) < 32 * 1024 * 1024);
}

#[tokio::test]
async fn a_body_under_the_cap_is_read_whole() {
    let (addr, _) = stand_in(Answer::EchoAuthAt(100_000)).await;
    let body = read_capped(get(addr).await, 1024 * 1024).await.unwrap();
    assert_eq!(
        body.len(),
        100_000 + "Bearer ".len() + KEY.len() + TAIL.len()
    );
    assert!(body.starts_with(&[b'p'; 100_000]));
}
