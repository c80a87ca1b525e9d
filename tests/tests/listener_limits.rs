//! The ingest's listener under slow and greedy clients, with the limits set in `[ingest]`
//! (issue 24, item 5). The limits themselves are tested in depth in `crates/runtime`; this
//! checks that the ingest applies the configured ones.

use std::net::SocketAddr;
use std::time::Duration;

use alertsync_tests::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

const INGEST: &str = "live = false\npoll_interval = \"0\"\n\
webhook_header_timeout = \"2s\"\nwebhook_body_timeout = \"300ms\"\n\
webhook_idle_timeout = \"2s\"\nwebhook_max_connections = 4\n";

/// Reads until the server closes the connection; panics if it stays open past [`SOON`].
async fn until_closed(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    timeout(SOON, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the ingest closes the connection in time");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn the_webhook_listener_cuts_off_slow_clients_and_caps_connections_as_configured() {
    let p = Pipeline::start_with(
        &destination("soar", "/soar", MAIN_TEMPLATE),
        INGEST,
        DEFAULT_ENRICHER,
    )
    .await;
    let addr: SocketAddr = p
        .ingest_url("")
        .trim_start_matches("http://")
        .parse()
        .unwrap();

    // An authorised POST whose body never ends: 408, then closed.
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "POST /v1/alerts HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {WEBHOOK_TOKEN}\r\n\
             content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"alert_uu"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let answer = until_closed(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("the request body did not arrive within 300ms"),
        "{answer}"
    );
    assert!(start.elapsed() >= Duration::from_millis(300));

    // Four silent connections take every place: the fifth is answered 503.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let (status, _) = get_text(&p.ingest_url("/healthz")).await;
    assert_eq!(status, 503, "over the cap");
    // The silent ones are closed after the header timeout, and the places free up.
    for s in &mut silent {
        assert_eq!(until_closed(s).await, "");
    }
    assert!(
        eventually(SOON, || async {
            get_text(&p.ingest_url("/healthz")).await.0 == 200
        })
        .await
    );
    let uuid = p.send_alert("rule", "after the slow clients").await;
    assert!(p.wait_sent(&uuid).await);
    p.shutdown().await;
}
