//! The outside world, made cheap so the benchmark measures the pipeline and not its fakes.
//!
//! - [`FastSekoia`]: `GET /v1/sic/alerts/{uuid}` answers a realistic alert (the stand-ins'
//!   fixture, about 5.5 KiB) for any uuid, created now (`created_at`, as for an alert whose
//!   creation was just announced), spliced from pre-serialised parts; `GET /v1/me` accepts the
//!   key. Anything without `Authorization: Bearer <key>` gets 401.
//! - [`FastDestination`]: answers 200 to every request and credits it to the run whose uuid
//!   tag matches the `alert_short_id` in the body (the seed template puts the alert uuid
//!   there), through that run's [`Tracker`]: first receipts are timestamped, repeats counted
//!   as duplicates.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::{Bytes, BytesMut};
use hyper::{Request, StatusCode, body::Incoming, header};

use crate::tracker::{TAG_LEN, Tracker};
use crate::wire::{self, Server};

const PLACEHOLDER: &str = "@@ALERT-UUID@@";
/// Stands for `created_at` (a number) in the serialised alert.
const CREATED_PLACEHOLDER: &str = "\"@@CREATED-AT@@\"";
const ME: &str = r#"{"uuid":"00000000-0000-4000-8000-000000000001","type":"apikey"}"#;
const UNAUTHORIZED: &str = r#"{"message":"Invalid or expired API key"}"#;
const NOT_FOUND: &str = r#"{"message":"Alert not found"}"#;

/// A fast fake Sekoia API.
pub struct FastSekoia {
    server: Server,
    gets: Arc<AtomicU64>,
}

impl FastSekoia {
    /// Starts on a free loopback port, accepting `api_key`.
    pub async fn start(api_key: &str) -> std::io::Result<Self> {
        let mut alert = alertsync_standins::alerts::new_alert(
            PLACEHOLDER,
            "ALbench000001",
            "Brute force on SSH service",
            "Brute force on SSH service",
        );
        alert["created_at"] = serde_json::json!(CREATED_PLACEHOLDER.trim_matches('"'));
        let text = serde_json::to_string(&alert).expect("an alert serialises");
        let parts = Arc::new(Spliced::new(&text));
        let expected = Bytes::from(format!("Bearer {api_key}"));
        let gets = Arc::new(AtomicU64::new(0));
        let counter = gets.clone();
        let server = wire::serve(move |req: Request<Incoming>| {
            let (parts, expected, counter) = (parts.clone(), expected.clone(), counter.clone());
            async move {
                let authorized = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .is_some_and(|v| v.as_bytes() == expected.as_ref());
                if !authorized {
                    return wire::json(StatusCode::UNAUTHORIZED, UNAUTHORIZED);
                }
                let path = req.uri().path();
                if path == "/v1/me" {
                    return wire::json(StatusCode::OK, ME);
                }
                match path.strip_prefix("/v1/sic/alerts/") {
                    Some(uuid) if uuid.len() == 36 => {
                        counter.fetch_add(1, Ordering::Relaxed);
                        wire::json(StatusCode::OK, parts.alert(uuid))
                    }
                    _ => wire::json(StatusCode::NOT_FOUND, NOT_FOUND),
                }
            }
        })
        .await?;
        Ok(Self { server, gets })
    }

    /// `http://127.0.0.1:<port>`: the `sekoia.base_url`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// Get Alert calls answered so far.
    pub fn gets(&self) -> u64 {
        self.gets.load(Ordering::Relaxed)
    }
}

/// The serialised alert cut at its uuid and its `created_at`, in the order they appear.
struct Spliced {
    parts: Vec<(Bytes, Option<Slot>)>,
}

#[derive(Clone, Copy)]
enum Slot {
    Uuid,
    CreatedAt,
}

impl Spliced {
    fn new(text: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = text;
        loop {
            let next = [
                (PLACEHOLDER, Slot::Uuid),
                (CREATED_PLACEHOLDER, Slot::CreatedAt),
            ]
            .into_iter()
            .filter_map(|(p, slot)| rest.find(p).map(|at| (at, p.len(), slot)))
            .min_by_key(|(at, ..)| *at);
            match next {
                Some((at, len, slot)) => {
                    parts.push((Bytes::copy_from_slice(&rest.as_bytes()[..at]), Some(slot)));
                    rest = &rest[at + len..];
                }
                None => {
                    parts.push((Bytes::copy_from_slice(rest.as_bytes()), None));
                    break;
                }
            }
        }
        let slots = |want: fn(&Slot) -> bool| {
            parts
                .iter()
                .filter(|(_, s)| s.as_ref().is_some_and(want))
                .count()
        };
        assert_eq!(
            slots(|s| matches!(s, Slot::Uuid)),
            1,
            "the uuid appears once"
        );
        assert_eq!(
            slots(|s| matches!(s, Slot::CreatedAt)),
            1,
            "created_at appears once"
        );
        Self { parts }
    }

    /// The alert `uuid`, created now.
    fn alert(&self, uuid: &str) -> Bytes {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        let mut body =
            BytesMut::with_capacity(self.parts.iter().map(|(b, _)| b.len()).sum::<usize>() + 64);
        for (bytes, slot) in &self.parts {
            body.extend_from_slice(bytes);
            match slot {
                Some(Slot::Uuid) => body.extend_from_slice(uuid.as_bytes()),
                Some(Slot::CreatedAt) => body.extend_from_slice(now.as_bytes()),
                None => {}
            }
        }
        body.freeze()
    }
}

#[derive(Default)]
struct Ledger {
    runs: RwLock<HashMap<String, Arc<Tracker>>>,
    strays: AtomicU64,
}

/// A fast fake destination that credits receipts to runs.
pub struct FastDestination {
    server: Server,
    ledger: Arc<Ledger>,
}

impl FastDestination {
    /// Starts on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let ledger = Arc::new(Ledger::default());
        let shared = ledger.clone();
        let server = wire::serve(move |req: Request<Incoming>| {
            let ledger = shared.clone();
            async move {
                let body = wire::read_body(req.into_body()).await;
                let credited = short_id(&body).and_then(|uuid| {
                    let runs = ledger.runs.read().unwrap_or_else(|p| p.into_inner());
                    let run = runs.get(uuid.get(..TAG_LEN)?)?;
                    let i = run.index_of(uuid)?;
                    run.received(i);
                    Some(())
                });
                if credited.is_none() {
                    ledger.strays.fetch_add(1, Ordering::Relaxed);
                }
                wire::json(StatusCode::OK, r#"{"ok":true}"#)
            }
        })
        .await?;
        Ok(Self { server, ledger })
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url())
    }

    /// Credits receipts of `run`'s uuids to it from now on (and for the rest of the process:
    /// a late duplicate still counts against its run).
    pub fn track(&self, run: Arc<Tracker>) {
        self.ledger
            .runs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run.tag().to_string(), run);
    }

    /// Requests that belonged to no run (warm-up alerts are tracked too, so this stays 0).
    pub fn strays(&self) -> u64 {
        self.ledger.strays.load(Ordering::Relaxed)
    }
}

/// The alert uuid after `"alert_short_id":"` in a body rendered from the seed template.
fn short_id(body: &[u8]) -> Option<&str> {
    const KEY: &[u8] = br#""alert_short_id":""#;
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    std::str::from_utf8(body.get(at..at + 36)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uuid_is_read_from_the_seed_template_body() {
        let body = br#"{"alert_short_id":"deadbeef-0003-4000-8000-000000000fff", "rule_name":"x"}"#;
        assert_eq!(short_id(body), Some("deadbeef-0003-4000-8000-000000000fff"));
        assert_eq!(short_id(br#"{"other":1}"#), None);
        assert_eq!(short_id(br#"{"alert_short_id":"short"}"#), None);
    }

    #[test]
    fn the_fake_alert_has_the_asked_uuid_and_was_created_now() {
        let mut alert = alertsync_standins::alerts::new_alert(PLACEHOLDER, "AL1", "r", "t");
        alert["created_at"] = serde_json::json!(CREATED_PLACEHOLDER.trim_matches('"'));
        let spliced = Spliced::new(&serde_json::to_string(&alert).unwrap());
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let body = spliced.alert("deadbeef-0003-4000-8000-000000000fff");
        let got: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(got["uuid"], "deadbeef-0003-4000-8000-000000000fff");
        let created = got["created_at"].as_u64().expect("a number");
        assert!(
            (before..=before + 1).contains(&created),
            "{created} vs {before}"
        );
        alert["uuid"] = got["uuid"].clone();
        alert["created_at"] = got["created_at"].clone();
        assert_eq!(got, alert, "nothing else changed");
    }
}
