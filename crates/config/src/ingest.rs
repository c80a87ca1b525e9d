//! `[ingest]`: the ingest service (webhook, LiveAPI socket, catch-up poller).

use std::net::SocketAddr;

use serde::Deserialize;

use crate::duration::seconds;
use crate::fields::yes;
use crate::{HumanDuration, Secret};

/// `[ingest]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Listen address of the webhook and health endpoints (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Bearer token that webhook callers must send (use `${ALERTSYNC_WEBHOOK_TOKEN}`).
    pub webhook_token: Secret,
    /// Listen to the Sekoia LiveAPI websocket (needs `[sekoia]`). Default true.
    #[serde(default = "yes")]
    pub live: bool,
    /// Reconnect when nothing at all (message or pong) arrived on the socket for this long.
    /// Default 90s.
    #[serde(default = "seconds::<90>")]
    pub live_idle_timeout: HumanDuration,
    /// Largest delay between two reconnection attempts (exponential with full jitter up to
    /// it). Default 1m.
    #[serde(default = "seconds::<60>")]
    pub live_reconnect_max_delay: HumanDuration,
    /// How often the catch-up poller lists recent alerts (`0` disables it; needs `[sekoia]`).
    /// Default 1m.
    #[serde(default = "seconds::<60>")]
    pub poll_interval: HumanDuration,
    /// How far back the poller looks on its very first run. Default 1h.
    #[serde(default = "seconds::<3600>")]
    pub poll_lookback: HumanDuration,
    /// Time for a request head to arrive on the listener, from its first byte; also how long
    /// a new connection may stay silent. Default 10s.
    #[serde(default = "seconds::<10>")]
    pub webhook_header_timeout: HumanDuration,
    /// Time for a request body to arrive, from the end of its head. Default 30s.
    #[serde(default = "seconds::<30>")]
    pub webhook_body_timeout: HumanDuration,
    /// Time a kept-alive connection may wait for its next request. Default 1m.
    #[serde(default = "seconds::<60>")]
    pub webhook_idle_timeout: HumanDuration,
    /// Connections served at once; more are answered 503. Keep it below the file-descriptor
    /// limit. Default 1024.
    #[serde(default = "listener_connections")]
    pub webhook_max_connections: usize,
    /// The notification kinds taken: `alert-created`, `alert-updated`,
    /// `alert-comment-created`. Default: creations, plus the kinds some destination asks for
    /// (`on_update`, `on_comment`): see [`crate::Config::ingest_kinds`].
    #[serde(default)]
    pub events: Option<Vec<EventKindName>>,
    /// Removed: an alert uuid is remembered as published for as long as the created stream
    /// keeps the alert (`nats.stream_max_age`). Accepted only to name it in a startup error.
    #[serde(default)]
    pub seen_retention: Option<HumanDuration>,
}

impl IngestConfig {
    /// Whether a source that needs the Sekoia API (live socket or poller) is on.
    pub fn uses_sekoia(&self) -> bool {
        self.live || !self.poll_interval.get().is_zero()
    }

    pub(crate) fn check(&self, problems: &mut Vec<String>) {
        if self.webhook_token.expose().len() < 16 {
            problems.push("ingest.webhook_token: must be at least 16 characters".into());
        }
        if self.seen_retention.is_some() {
            problems.push(
                "ingest.seen_retention: no longer used: an alert is remembered as published \
                 for as long as the created stream keeps it; set nats.stream_max_age instead \
                 and remove this line"
                    .into(),
            );
        }
        for (key, d) in [
            ("webhook_header_timeout", self.webhook_header_timeout),
            ("webhook_body_timeout", self.webhook_body_timeout),
            ("webhook_idle_timeout", self.webhook_idle_timeout),
        ] {
            if d.get().is_zero() {
                problems.push(format!("ingest.{key}: must be more than 0"));
            }
        }
        if self.webhook_max_connections == 0 {
            problems.push("ingest.webhook_max_connections: must be at least 1".into());
        }
        if self.live_idle_timeout.get() < std::time::Duration::from_secs(25) {
            problems
                .push("ingest.live_idle_timeout: must be at least 25s (pings go every 20s)".into());
        }
    }
}

/// A notification kind as `ingest.events` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum EventKindName {
    /// `alert:created`.
    #[serde(rename = "alert-created")]
    Created,
    /// `alert:updated`.
    #[serde(rename = "alert-updated")]
    Updated,
    /// `alert-comment:created`.
    #[serde(rename = "alert-comment-created")]
    Comment,
}

/// The default of `webhook_max_connections`.
fn listener_connections() -> usize {
    1024
}

/// Whether `[ingest]` turns on a source that needs `[sekoia]` (read before deserializing, to
/// know which sections' variables must be set). Mirrors [`IngestConfig::uses_sekoia`] and
/// its defaults.
pub(crate) fn raw_uses_sekoia(table: &toml::Table) -> bool {
    let Some(ingest) = table.get("ingest").and_then(|v| v.as_table()) else {
        return false;
    };
    let live = ingest.get("live").and_then(|v| v.as_bool()).unwrap_or(true);
    let poll_off = ingest
        .get("poll_interval")
        .is_some_and(crate::duration::is_zero);
    live || !poll_off
}
