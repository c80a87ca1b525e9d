//! The catch-up poller: lists recent alerts and publishes those not yet seen, so alerts created
//! while the socket was down (or while this service was) are never missed.
//!
//! Every `ingest.poll_interval` it lists
//! `GET /v1/sic/alerts?date[created_at]=<since>,now&sort=created_at&direction=asc&limit=100&offset=N`
//! page by page. `created_at` is whole seconds, so the range is inclusive and a margin before
//! the cursor is listed again (alerts of the same second, or indexed late, are never skipped);
//! the publisher's dedup makes the overlap harmless.
//!
//! The cursor (newest `created_at` handled) lives in NATS KV and only moves forward: it is
//! written with compare-and-swap on the entry's revision, and a replica that lost the race keeps
//! the larger value. Several replicas can poll at once without double-publishing (the publisher
//! dedups) or moving the cursor back.
//!
//! 429/5xx back off exponentially (honouring `Retry-After`); 401/403 mark the key not ready.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alertsync_http::RetryPolicy;
use alertsync_nats::async_nats::jetstream::kv;
use alertsync_proto::v1;
use alertsync_sekoia::{ListError, SekoiaClient, key::KeyState};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::events;
use crate::publisher::Publisher;

/// Key of the cursor in the ingest state bucket.
pub const CURSOR_KEY: &str = "poll_cursor";
/// Page size (the API's maximum).
const PAGE: usize = 100;
/// Pages per run; the next run continues from the advanced cursor.
const MAX_PAGES: usize = 100;
/// How far before the cursor each run lists again.
const OVERLAP_SECS: i64 = 120;

/// The poller.
pub struct Poller {
    /// The Sekoia API.
    pub sekoia: SekoiaClient,
    /// Where events go.
    pub publisher: Arc<Publisher>,
    /// The bucket holding the cursor.
    pub state: kv::Store,
    /// Time between runs.
    pub interval: Duration,
    /// How far back the first run looks.
    pub lookback: Duration,
    /// Only these communities (all when empty).
    pub communities: Vec<String>,
    /// The key check.
    pub key: KeyState,
    /// How long to wait while the key is rejected.
    pub rejected_retry: Duration,
}

/// A run that could not finish.
#[derive(Debug)]
enum RunError {
    /// Try again after this delay.
    Retry(Duration, String),
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

impl Poller {
    /// Polls now, then every `interval`, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let backoff = RetryPolicy {
            base: Duration::from_secs(2),
            max: Duration::from_secs(300),
            max_retry_after: Duration::from_secs(900),
        };
        let mut failures = 0u32;
        loop {
            let wait = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.poll_once() => match r {
                    Ok(published) => {
                        failures = 0;
                        if published > 0 {
                            tracing::info!(published, "poller caught up alerts");
                        }
                        self.interval
                    }
                    Err(RunError::Retry(after, reason)) => {
                        failures += 1;
                        let after = after.max(backoff.delay(failures, None));
                        tracing::warn!(%reason, retry_in = ?after, "poll failed");
                        after
                    }
                },
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The stored cursor and its revision (revision 0: none yet).
    async fn cursor(&self) -> Result<(i64, u64), RunError> {
        match self.state.entry(CURSOR_KEY).await {
            Ok(Some(e)) if e.operation == kv::Operation::Put => {
                let v = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .unwrap_or_else(|| now_secs() - self.lookback.as_secs() as i64);
                Ok((v, e.revision))
            }
            Ok(_) => Ok((now_secs() - self.lookback.as_secs() as i64, 0)),
            Err(e) => Err(RunError::Retry(
                Duration::from_secs(5),
                format!("cannot read the poll cursor: {e}"),
            )),
        }
    }

    /// Moves the cursor to `to` unless it is already further; never backwards.
    async fn advance(&self, to: i64, mut revision: u64) -> Result<(), RunError> {
        for _ in 0..10 {
            let written = if revision == 0 {
                self.state
                    .create(CURSOR_KEY, to.to_string().into())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else {
                self.state
                    .update(CURSOR_KEY, to.to_string().into(), revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            };
            if written.is_ok() {
                return Ok(());
            }
            // Another replica moved it: keep the larger of the two.
            let (current, rev) = self.cursor().await?;
            if current >= to {
                return Ok(());
            }
            revision = rev;
        }
        Err(RunError::Retry(
            Duration::from_secs(5),
            "the poll cursor keeps changing".into(),
        ))
    }

    /// One run: every page since the cursor. Returns how many alerts were newly published.
    async fn poll_once(&self) -> Result<usize, RunError> {
        let (cursor, revision) = self.cursor().await?;
        let since = cursor - OVERLAP_SECS;
        let mut newest = cursor;
        let mut published = 0;
        let mut outcome = Ok(());
        'pages: for page_no in 0..MAX_PAGES {
            let page = match self
                .sekoia
                .list_alerts(since, page_no * PAGE, PAGE, &self.communities)
                .await
            {
                Ok(p) => p,
                Err(ListError::KeyRejected(status)) => {
                    self.key.rejected(status);
                    outcome = Err(RunError::Retry(
                        self.rejected_retry,
                        format!("Sekoia rejected the key ({status})"),
                    ));
                    break;
                }
                Err(ListError::Transient {
                    retry_after,
                    reason,
                }) => {
                    outcome = Err(RunError::Retry(retry_after.unwrap_or_default(), reason));
                    break;
                }
                Err(ListError::Permanent(reason)) => {
                    outcome = Err(RunError::Retry(self.interval, reason));
                    break;
                }
            };
            self.key.accepted();
            let count = page.items.len();
            for item in &page.items {
                let Some(event) = events::from_alert(item) else {
                    tracing::warn!("skipping a listed alert without a valid uuid");
                    continue;
                };
                let span = tracing::info_span!(
                    parent: None,
                    "poll_receive",
                    otel.kind = "consumer",
                    alert.uuid = %event.alert_uuid,
                    alert.short_id = %event.short_id,
                );
                match self
                    .publisher
                    .publish(&event, v1::Source::Poll)
                    .instrument(span)
                    .await
                {
                    Ok(crate::publisher::Verdict::Published) => published += 1,
                    Ok(_) => {}
                    Err(e) => {
                        // Stop here: the cursor only covers what was handled.
                        outcome = Err(RunError::Retry(Duration::from_secs(5), e.to_string()));
                        break 'pages;
                    }
                }
                if let Some(created) = item.get("created_at").and_then(|c| c.as_i64()) {
                    newest = newest.max(created);
                }
            }
            if count < PAGE {
                break;
            }
        }
        if newest > cursor {
            self.advance(newest, revision).await?;
        }
        outcome.map(|()| published)
    }
}
