//! What a destination's error answer becomes in a dead-letter reason: redacted before it is
//! cut, and read only as far as it is quoted (issue 24, items 4 and 6). The destination is a
//! real HTTP server on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alertsync_config::{Config, Stage};
use alertsync_forwarder::destination::{Destination, Rendered};
use alertsync_template::Engine;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const SOAR_KEY: &str = "soar-key-0123456789abcdefghij";
const DEADLINE: Duration = Duration::from_secs(20);

/// How the stand-in destination answers.
#[derive(Clone, Copy)]
enum Answer {
    /// 500 whose body is `pad` bytes of filler then the request's Authorization header.
    EchoAuthAt(usize),
    /// 500 with a chunked body that never ends.
    Endless,
}

async fn stand_in(answer: Answer) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let count = written.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
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
                match answer {
                    Answer::EchoAuthAt(pad) => {
                        let body = format!("{}{auth} was refused", "p".repeat(pad));
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
                    Answer::Endless => {
                        let chunk = vec![b'e'; 64 * 1024];
                        let framed =
                            [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                        let head = "HTTP/1.1 500 Internal Server Error\r\ntransfer-encoding: chunked\r\n\r\n";
                        if s.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
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

/// The destination `soar` posting to `addr`, with the config's redactor (which knows the key).
fn destination(addr: SocketAddr) -> Destination {
    let text = format!(
        r#"
[nats]
url = "nats://127.0.0.1:4222"
[forwarder]
listen = "127.0.0.1:0"
[[destinations]]
name = "soar"
url = "http://{addr}/alerts"
headers = {{ Authorization = "Bearer ${{SOAR_KEY}}" }}
json = '{{"a": 1}}'
"#
    );
    let env = |k: &str| (k == "SOAR_KEY").then(|| SOAR_KEY.to_string());
    let cfg = Config::parse(&text, &env, &[Stage::Forwarder]).unwrap();
    Destination::new(&cfg.destinations[0], &Engine::new(), cfg.redactor.clone()).unwrap()
}

fn request(addr: SocketAddr) -> Rendered {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {SOAR_KEY}")).unwrap(),
    );
    Rendered {
        method: reqwest::Method::POST,
        url: format!("http://{addr}/alerts").parse().unwrap(),
        headers,
        body: Some(bytes::Bytes::from_static(b"{\"a\": 1}")),
    }
}

#[tokio::test]
async fn a_key_echoed_at_any_offset_around_the_cut_leaves_no_part_of_it_in_the_reason() {
    for pad in 250..=320 {
        let (addr, _) = stand_in(Answer::EchoAuthAt(pad)).await;
        let attempt = tokio::time::timeout(DEADLINE, destination(addr).send(&request(addr), false))
            .await
            .unwrap();
        assert_eq!(attempt.status(), Some(500));
        let Some(reason) = attempt.reason() else {
            panic!("{attempt:?}");
        };
        assert!(
            reason.starts_with("destination answered 500 Internal Server Error: ppp"),
            "{reason}"
        );
        for n in 4..=SOAR_KEY.len() {
            assert!(
                !reason.contains(&SOAR_KEY[..n]),
                "offset {pad}: {:?} in {reason}",
                &SOAR_KEY[..n]
            );
        }
    }
}

#[tokio::test]
async fn an_endless_error_body_is_quoted_without_being_read_whole() {
    let (addr, written) = stand_in(Answer::Endless).await;
    let attempt = tokio::time::timeout(DEADLINE, destination(addr).send(&request(addr), false))
        .await
        .expect("the attempt ends although the body never does");
    let Some(reason) = attempt.reason() else {
        panic!("{attempt:?}");
    };
    assert_eq!(
        reason,
        format!(
            "destination answered 500 Internal Server Error: {}",
            "e".repeat(300)
        )
    );
    // As far as the socket buffers let the server go, nowhere near the whole body.
    assert!(written.load(Ordering::Relaxed) < 32 * 1024 * 1024);
}
