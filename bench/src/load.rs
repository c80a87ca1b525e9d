//! The load generator: POSTs `{"alert_uuid": "<uuid>"}` for every alert of a run to a
//! webhook, with a bounded number of requests in flight, either as fast as possible or on a
//! fixed schedule (request `i` is due at `start + i / rate`: an open-loop schedule, so a slow
//! pipeline shows up as lateness instead of silently lowering the rate).
//!
//! A 503 or a connection error is retried (as Sekoia's sender would), a bounded number of
//! times; an alert never accepted is reported as a failed send and counts as lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, header};
use tokio::time::Instant;

use crate::tracker::Tracker;
use crate::wire::Client;

/// Attempts per alert before it counts as a failed send.
const ATTEMPTS: u32 = 6;
/// First pause between attempts (doubled each time).
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// How fast to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As fast as the in-flight bound allows.
    Max,
    /// This many alerts per second, open loop.
    Rate(f64),
}

/// What the load generator did.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Alerts the webhook answered 202 for.
    pub accepted: usize,
    /// Alerts never accepted.
    pub failed: usize,
    /// Extra attempts made (503s, connection errors).
    pub retries: u64,
    /// When the first request went out (ns since the epoch).
    pub first_ns: u64,
    /// When the last answer came (ns since the epoch).
    pub last_ns: u64,
    /// Largest lateness of a request against its schedule (rate runs).
    pub max_lag: Duration,
}

/// Sends every alert of `run` to `url` with `token`, at most `concurrency` at once.
pub async fn drive(
    client: &Client,
    url: &str,
    token: &str,
    run: Arc<Tracker>,
    concurrency: usize,
    pace: Pace,
) -> Sent {
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let max_lag_ns = Arc::new(AtomicU64::new(0));
    let auth = Bytes::from(format!("Bearer {token}"));
    let uri: hyper::Uri = url.parse().expect("the webhook URL is valid");
    let start = Instant::now();
    let first_ns = crate::tracker::now_ns();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, run, next, accepted, retries, max_lag_ns, auth, uri) = (
            client.clone(),
            run.clone(),
            next.clone(),
            accepted.clone(),
            retries.clone(),
            max_lag_ns.clone(),
            auth.clone(),
            uri.clone(),
        );
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= run.len() {
                    break;
                }
                if let Pace::Rate(rate) = pace {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due).await;
                    let lag = Instant::now().saturating_duration_since(due);
                    max_lag_ns.fetch_max(lag.as_nanos() as u64, Ordering::Relaxed);
                }
                let body = Bytes::from(format!(r#"{{"alert_uuid":"{}"}}"#, run.uuid(i)));
                for attempt in 0..ATTEMPTS {
                    if attempt > 0 {
                        retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(RETRY_PAUSE * 2u32.pow(attempt - 1)).await;
                    }
                    let req = Request::builder()
                        .method(Method::POST)
                        .uri(uri.clone())
                        .header(header::AUTHORIZATION, auth.as_ref())
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Full::new(body.clone()))
                        .expect("a valid request");
                    let Ok(resp) = client.request(req).await else {
                        continue;
                    };
                    let status = resp.status().as_u16();
                    if status == 202 {
                        run.accepted(i);
                    }
                    // Read the body so the connection goes back to the pool.
                    let _ = resp.into_body().collect().await;
                    if status == 202 {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    if status != 503 {
                        // 4xx: the benchmark itself is wrong; retrying will not help.
                        eprintln!("webhook answered {status} for alert {i}");
                        break;
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let accepted = accepted.load(Ordering::Relaxed);
    Sent {
        accepted,
        failed: run.len() - accepted,
        retries: retries.load(Ordering::Relaxed),
        first_ns,
        last_ns: crate::tracker::now_ns(),
        max_lag: Duration::from_nanos(max_lag_ns.load(Ordering::Relaxed)),
    }
}
