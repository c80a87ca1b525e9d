//! The Sekoia LiveAPI source: a websocket that pushes "alert created" notifications.
//!
//! As Sekoia's own trigger does, it authenticates with the cookie `access_token_cookie=<key>`
//! and sends `{"action":"upgrade"}` on open; it keeps only `metadata.version == 2`,
//! `type == "alert"`, `action == "created"` with a uuid, ignores `authenticated` messages, and
//! counts and skips anything else. Unlike it, it reconnects with capped exponential backoff and
//! full jitter (reset after a stable connection) instead of a tight loop, and nothing is lost
//! while it is down: the poller catches up.
//!
//! It pings every 20 s and reconnects when nothing at all (message or pong) arrived for
//! `ingest.live_idle_timeout`. Readiness check `live` and the metric
//! `alertsync_live_socket_connected` say whether it is connected.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use alertsync_config::Secret;
use alertsync_proto::v1;
use alertsync_runtime::Health;
use alertsync_sekoia::key::KeyState;
use alertsync_telemetry::Metrics;
use futures::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest, http::HeaderValue};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::events::{self, AlertEvent};
use crate::publisher::Publisher;

/// Keepalive ping interval (Sekoia's trigger uses 20 s).
const PING_EVERY: Duration = Duration::from_secs(20);
/// A connection that lasted this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// First reconnection delay ceiling.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Never reconnect sooner than this, whatever the jitter draws.
const BACKOFF_FLOOR: Duration = Duration::from_millis(100);
/// Name of the readiness check.
pub const CHECK: &str = "live";

/// Reconnection delays: exponential ceiling, full jitter, capped, reset after a stable
/// connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays from `base` doubling up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The next delay: uniform in `[floor, min(cap, base · 2^attempt)]`.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let ms = rng.random_range(0..=ceiling.as_millis() as u64);
        Duration::from_millis(ms).max(BACKOFF_FLOOR.min(ceiling))
    }

    /// Back to the first delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// How one connection ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// Shutdown was requested.
    Shutdown,
    /// The connection failed or dropped after being up for this long.
    Dropped {
        /// How long it was connected (zero when it never connected).
        connected_for: Duration,
        /// Why.
        reason: String,
    },
}

/// Runs `session` again and again with [`Backoff`] delays until it ends with shutdown.
/// Generic over the session so the delays can be tested with paused time.
pub async fn reconnect_loop<F, Fut>(
    mut backoff: Backoff,
    shutdown: CancellationToken,
    mut session: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = SessionEnd>,
{
    let mut rng = rand::rngs::StdRng::from_os_rng();
    loop {
        match session().await {
            SessionEnd::Shutdown => return,
            SessionEnd::Dropped {
                connected_for,
                reason,
            } => {
                if connected_for >= STABLE_AFTER {
                    backoff.reset();
                }
                let delay = backoff.next_delay(&mut rng);
                tracing::warn!(%reason, retry_in = ?delay, "LiveAPI socket down; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// What a socket message is.
#[derive(Debug, PartialEq, Eq)]
pub enum Classified {
    /// An alert was created, updated or commented.
    Notification(AlertEvent),
    /// The `authenticated` greeting: ignored, not counted.
    Greeting,
    /// Skipped, with a bounded reason for the metric.
    Skipped(&'static str),
}

/// Classifies one text frame.
pub fn classify(text: &str) -> Classified {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return Classified::Skipped("invalid_json");
    };
    if v.get("authenticated").is_some() {
        return Classified::Greeting;
    }
    if v.pointer("/metadata/version").and_then(Value::as_i64) != Some(2) {
        return Classified::Skipped("not_v2");
    }
    let about_alerts = matches!(
        (
            v.get("type").and_then(Value::as_str),
            v.get("action").and_then(Value::as_str)
        ),
        (Some("alert"), Some("created" | "updated")) | (Some("alert-comment"), Some("created"))
    );
    if !about_alerts {
        return Classified::Skipped("not_alert_notification");
    }
    match events::parse_notification(&v) {
        Ok(e) => Classified::Notification(e),
        Err(_) => Classified::Skipped("invalid_uuid"),
    }
}

/// The LiveAPI source.
pub struct LiveSource {
    /// Websocket URL.
    pub url: url::Url,
    /// API key (sent as a cookie).
    pub api_key: Secret,
    /// Where events go.
    pub publisher: Arc<Publisher>,
    /// Readiness.
    pub health: Health,
    /// The key check, told about handshake rejections.
    pub key: KeyState,
    /// Counters.
    pub metrics: Metrics,
    /// Reconnect when silent this long.
    pub idle_timeout: Duration,
    /// Largest reconnection delay.
    pub reconnect_max: Duration,
}

impl LiveSource {
    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        alertsync_http::install_crypto();
        self.set_connected(false, "connecting");
        let this = Arc::new(self);
        let backoff = Backoff::new(BACKOFF_BASE, this.reconnect_max);
        let stop = shutdown.clone();
        reconnect_loop(backoff, shutdown, || {
            let this = this.clone();
            let stop = stop.clone();
            async move { this.session(&stop).await }
        })
        .await;
        this.set_connected(false, "stopped");
    }

    fn set_connected(&self, connected: bool, message: &str) {
        self.metrics.live_connected(connected);
        self.health.set(CHECK, connected, message.to_string());
    }

    async fn session(&self, shutdown: &CancellationToken) -> SessionEnd {
        let dropped = |reason: String, connected_for: Duration| SessionEnd::Dropped {
            connected_for,
            reason,
        };
        let mut request = match self.url.as_str().into_client_request() {
            Ok(r) => r,
            Err(e) => return dropped(format!("invalid LiveAPI URL: {e}"), Duration::ZERO),
        };
        let cookie = match HeaderValue::from_str(&format!(
            "access_token_cookie={}",
            self.api_key.expose()
        )) {
            Ok(v) => v,
            Err(_) => {
                return dropped(
                    "the API key cannot be sent as a cookie".into(),
                    Duration::ZERO,
                );
            }
        };
        request.headers_mut().insert("Cookie", cookie);
        let connect = tokio::select! {
            _ = shutdown.cancelled() => return SessionEnd::Shutdown,
            r = tokio::time::timeout(Duration::from_secs(15), tokio_tungstenite::connect_async(request)) => r,
        };
        let mut ws = match connect {
            Err(_) => return dropped("connecting timed out".into(), Duration::ZERO),
            Ok(Err(tungstenite::Error::Http(resp))) => {
                let status = resp.status().as_u16();
                if status == 401 || status == 403 {
                    self.key.rejected(status);
                }
                self.set_connected(
                    false,
                    &format!("LiveAPI refused the connection: HTTP {status}"),
                );
                return dropped(format!("LiveAPI answered HTTP {status}"), Duration::ZERO);
            }
            Ok(Err(e)) => {
                let reason = describe(&e);
                self.set_connected(false, &format!("LiveAPI unreachable: {reason}"));
                return dropped(reason, Duration::ZERO);
            }
            Ok(Ok((ws, _))) => ws,
        };
        let connected_at = Instant::now();
        if let Err(e) = ws.send(Message::text(r#"{"action": "upgrade"}"#)).await {
            return dropped(describe(&e), Duration::ZERO);
        }
        self.set_connected(true, "connected");
        tracing::info!("LiveAPI socket connected");
        let mut ping = tokio::time::interval_at(connected_at + PING_EVERY, PING_EVERY);
        let mut last_heard = Instant::now();
        let end = loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = ws.close(None).await;
                    break SessionEnd::Shutdown;
                }
                _ = ping.tick() => {
                    if let Err(e) = ws.send(Message::Ping(Default::default())).await {
                        break dropped(describe(&e), connected_at.elapsed());
                    }
                }
                _ = tokio::time::sleep_until(last_heard + self.idle_timeout) => {
                    break dropped(
                        format!("nothing received for {:?}", self.idle_timeout),
                        connected_at.elapsed(),
                    );
                }
                frame = ws.next() => {
                    last_heard = Instant::now();
                    match frame {
                        None => break dropped("closed".into(), connected_at.elapsed()),
                        Some(Err(e)) => break dropped(describe(&e), connected_at.elapsed()),
                        Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
                        Some(Ok(Message::Close(_))) => {
                            break dropped("closed by the server".into(), connected_at.elapsed());
                        }
                        Some(Ok(Message::Binary(_))) => self.metrics.live_skipped("binary"),
                        // Pings are answered by tungstenite; pongs only prove liveness.
                        Some(Ok(_)) => {}
                    }
                }
            }
        };
        self.set_connected(false, "disconnected; reconnecting");
        end
    }

    async fn on_text(&self, text: &str) {
        match classify(text) {
            Classified::Greeting => {}
            Classified::Skipped(reason) => self.metrics.live_skipped(reason),
            Classified::Notification(event) => {
                // Each notification starts its own trace.
                let span = tracing::info_span!(
                    parent: None,
                    "live_receive",
                    otel.kind = "consumer",
                    alert.uuid = %event.alert_uuid,
                    alert.short_id = %event.short_id,
                );
                let published = self
                    .publisher
                    .publish(&event, v1::Source::Live)
                    .instrument(span)
                    .await;
                if let Err(e) = published {
                    // The poller will find it: nothing is lost, only delayed.
                    tracing::warn!(alert.uuid = %event.alert_uuid, error = %e, "live alert not published; the poller will catch it");
                }
            }
        }
    }
}

/// A websocket error without any URL or header (the cookie holds the key).
fn describe(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Io(io) => format!("I/O error: {}", io.kind()),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => "closed".into(),
        tungstenite::Error::Tls(_) => "TLS error".into(),
        tungstenite::Error::Protocol(p) => format!("protocol error: {p}"),
        tungstenite::Error::Http(r) => format!("HTTP {}", r.status()),
        _ => "websocket error".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "3b1f6c2e-8d4a-4f0b-9e37-5a2c7d91e604";

    #[test]
    fn only_v2_alert_notifications_with_a_uuid_are_kept() {
        let created = format!(
            r#"{{"metadata":{{"version":2}},"type":"alert","action":"created","attributes":{{"uuid":"{UUID}"}}}}"#
        );
        assert!(matches!(classify(&created), Classified::Notification(e) if e.alert_uuid == UUID));
        assert_eq!(classify(r#"{"authenticated": true}"#), Classified::Greeting);
        assert_eq!(classify("garbage{"), Classified::Skipped("invalid_json"));
        assert_eq!(
            classify(&created.replace("\"version\":2", "\"version\":1")),
            Classified::Skipped("not_v2")
        );
        assert!(matches!(
            classify(&created.replace("created", "updated")),
            Classified::Notification(e) if e.kind() == v1::EventKind::Updated
        ));
        assert_eq!(
            classify(&created.replace("created", "deleted")),
            Classified::Skipped("not_alert_notification")
        );
        assert_eq!(
            classify(&created.replace("\"type\":\"alert\"", "\"type\":\"case\"")),
            Classified::Skipped("not_alert_notification")
        );
        assert_eq!(
            classify(&created.replace(UUID, "")),
            Classified::Skipped("invalid_uuid")
        );
    }

    #[test]
    fn delays_stay_under_a_doubling_capped_ceiling_and_reset() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(8));
        for n in 0..10u32 {
            let ceiling = Duration::from_millis(500 * (1u64 << n)).min(Duration::from_secs(8));
            let d = b.next_delay(&mut rng);
            assert!(
                d <= ceiling && d >= BACKOFF_FLOOR,
                "attempt {n}: {d:?} over {ceiling:?}"
            );
        }
        b.reset();
        assert!(b.next_delay(&mut rng) <= Duration::from_millis(500));
    }

    /// The reconnect loop, with time paused: a session that fails at once is retried after
    /// delays that grow (on average and in their ceiling), vary (jitter), stay under the cap,
    /// and start over after a stable connection.
    #[tokio::test(start_paused = true)]
    async fn reconnect_delays_grow_are_jittered_capped_and_reset_after_a_stable_connection() {
        let attempts = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
        let shutdown = CancellationToken::new();
        let cap = Duration::from_secs(30);
        let log = attempts.clone();
        let stop = shutdown.clone();
        reconnect_loop(
            Backoff::new(Duration::from_millis(500), cap),
            shutdown.clone(),
            move || {
                let log = log.clone();
                let stop = stop.clone();
                async move {
                    let mut log = log.lock().unwrap();
                    log.push(Instant::now());
                    let n = log.len();
                    if n == 40 {
                        stop.cancel();
                        return SessionEnd::Shutdown;
                    }
                    // Attempt 20 stays connected for two minutes before dropping.
                    let connected_for = if n == 20 {
                        Duration::from_secs(120)
                    } else {
                        Duration::ZERO
                    };
                    SessionEnd::Dropped {
                        connected_for,
                        reason: "refused".into(),
                    }
                }
            },
        )
        .await;
        let at = attempts.lock().unwrap().clone();
        let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps.len(), 39);
        for (i, g) in gaps.iter().enumerate().take(19) {
            let ceiling = Duration::from_millis(500 * (1u64 << i)).min(cap);
            assert!(*g <= ceiling, "gap {i}: {g:?} over {ceiling:?}");
        }
        assert!(gaps.iter().all(|g| *g <= cap && *g >= BACKOFF_FLOOR));
        let early: Duration = gaps[..4].iter().sum();
        let late: Duration = gaps[10..19].iter().sum();
        assert!(
            late > early * 4,
            "delays grow: early {early:?}, late {late:?}"
        );
        let distinct: std::collections::HashSet<_> = gaps[8..19].iter().collect();
        assert!(
            distinct.len() > 5,
            "delays are jittered: {:?}",
            &gaps[8..19]
        );
        // After the stable connection (attempt 20), the next delay starts from the base again.
        assert!(
            gaps[19] <= Duration::from_millis(500),
            "reset after a stable connection: {:?}",
            gaps[19]
        );
    }
}
