//! What the Sekoia client reads of an answer and says about it, against a real HTTP server on
//! 127.0.0.1 (issue 24, items 4 and 6): reasons never carry the key, even cut in two; an
//! alert over the cap is refused naming its size; huge bodies are not read whole.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alertsync_config::{Config, Stage};
use alertsync_sekoia::{GetAlert, MAX_ALERT_BYTES, SekoiaClient};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const KEY: &str = "sekoia-key-0123456789abcdefghij";
const UUID: &str = "6a1b5cd2-1b3f-4a53-9b3e-0d1f2e3a4b5c";
const DEADLINE: Duration = Duration::from_secs(30);

/// How the stand-in answers.
#[derive(Clone, Copy)]
enum Answer {
    /// `status` with `{"message": "<pad filler bytes><the request's Authorization header> ..."}`.
    MessageEchoingAuth(u16, usize),
    /// 200 declaring `Content-Length: 100 MiB`, and sending it.
    HugeAlert,
    /// `status` with a chunked body that never ends.
    Endless(u16),
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
                let chunk = vec![b' '; 64 * 1024];
                match answer {
                    Answer::MessageEchoingAuth(status, pad) => {
                        let body = serde_json::json!({
                            "message": format!("{}{auth} is not allowed here", "m".repeat(pad))
                        })
                        .to_string();
                        let _ = s
                            .write_all(
                                format!(
                                    "HTTP/1.1 {status} Whatever\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .await;
                    }
                    Answer::HugeAlert => {
                        let total = 100 * 1024 * 1024;
                        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {total}\r\n\r\n{{");
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
                            "HTTP/1.1 {status} Whatever\r\ntransfer-encoding: chunked\r\n\r\n1\r\n{{\r\n"
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

fn client(addr: SocketAddr) -> SekoiaClient {
    let text = format!(
        r#"
[nats]
url = "nats://127.0.0.1:4222"
[sekoia]
base_url = "http://{addr}"
api_key = "${{KEY}}"
timeout = "20s"
[enricher]
listen = "127.0.0.1:0"
"#
    );
    let env = |k: &str| (k == "KEY").then(|| KEY.to_string());
    let cfg = Config::parse(&text, &env, &[Stage::Enricher]).unwrap();
    SekoiaClient::new(cfg.sekoia.as_ref().unwrap()).unwrap()
}

async fn get_alert(addr: SocketAddr) -> GetAlert {
    tokio::time::timeout(DEADLINE, client(addr).get_alert(UUID))
        .await
        .expect("Get Alert answers in time")
}

fn assert_no_part_of_the_key(text: &str, what: &str) {
    for n in 4..=KEY.len() {
        assert!(
            !text.contains(&KEY[..n]),
            "{what}: {:?} in {text}",
            &KEY[..n]
        );
    }
}

#[tokio::test]
async fn a_message_echoing_the_key_at_any_offset_around_the_cut_leaves_no_part_of_it_in_the_reason()
{
    // The message is quoted up to 200 characters: the key is whole before, cut across, and
    // after the cut.
    for pad in 150..=220 {
        let (addr, _) = stand_in(Answer::MessageEchoingAuth(500, pad)).await;
        match get_alert(addr).await {
            GetAlert::Transient { status, reason, .. } => {
                assert_eq!(status, Some(500));
                assert!(
                    reason.starts_with("Get Alert answered 500: mmm"),
                    "{reason}"
                );
                assert_no_part_of_the_key(&reason, &format!("offset {pad}"));
            }
            other => panic!("{other:?}"),
        }
        let (addr, _) = stand_in(Answer::MessageEchoingAuth(400, pad)).await;
        match get_alert(addr).await {
            GetAlert::Permanent { status, reason } => {
                assert_eq!(status, Some(400));
                assert_no_part_of_the_key(&reason, &format!("offset {pad}"));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn an_alert_declared_over_the_cap_is_refused_naming_its_size_and_the_cap() {
    let (addr, written) = stand_in(Answer::HugeAlert).await;
    match get_alert(addr).await {
        GetAlert::TooLarge { status, reason } => {
            assert_eq!(status, Some(200));
            assert_eq!(
                reason,
                format!(
                    "Get Alert answered 200 with a body of 104857600 bytes, over the cap of {MAX_ALERT_BYTES} bytes"
                )
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(written.load(Ordering::Relaxed) < 32 * 1024 * 1024);
}

#[tokio::test]
async fn an_endless_alert_is_refused_once_past_the_cap() {
    let (addr, _) = stand_in(Answer::Endless(200)).await;
    match get_alert(addr).await {
        GetAlert::TooLarge { status, reason } => {
            assert_eq!(status, Some(200));
            assert!(
                reason.starts_with(&format!(
                    "Get Alert answered 200 with a body of more than {MAX_ALERT_BYTES} bytes"
                )),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_endless_error_body_is_not_read_whole() {
    let (addr, written) = stand_in(Answer::Endless(503)).await;
    match get_alert(addr).await {
        GetAlert::Transient { status, reason, .. } => {
            assert_eq!(status, Some(503));
            assert_eq!(reason, "Get Alert answered 503");
        }
        other => panic!("{other:?}"),
    }
    assert!(written.load(Ordering::Relaxed) < 32 * 1024 * 1024);
}
