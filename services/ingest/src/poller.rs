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
//!
//! When the ingest takes updates or comments, a second pass with its own cursor
//! (`poll_cursor_updated`) lists `date[updated_at]=<since>,now&sort=updated_at`: each listed
//! alert updated after its creation is published as an update known by its `updated_at`
//! (`poll-<secs>`), and the comments of each listed alert are listed and published (each known
//! by its uuid, so one the socket already brought is a duplicate).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alertsync_http::CallOutcome;
use alertsync_http::RetryPolicy;
use alertsync_nats::async_nats::jetstream::kv;
use alertsync_proto::v1;
use alertsync_sekoia::{ListBy, ListError, SekoiaClient, key::KeyState};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::events;
use crate::publisher::Publisher;

/// Key of the cursor in the ingest state bucket.
pub const CURSOR_KEY: &str = "poll_cursor";
/// Key of the cursor of the updates pass.
pub const UPDATED_CURSOR_KEY: &str = "poll_cursor_updated";
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
                r = self.poll_all() => match r {
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

    /// The creations pass, then the updates pass when updates or comments are taken.
    async fn poll_all(&self) -> Result<usize, RunError> {
        let created = self.poll_once(ListBy::Created).await?;
        let later = self.publisher.takes(v1::EventKind::Updated)
            || self.publisher.takes(v1::EventKind::Comment);
        if !later {
            return Ok(created);
        }
        Ok(created + self.poll_once(ListBy::Updated).await?)
    }

    /// The stored cursor of `key` and its revision (revision 0: none yet).
    async fn cursor(&self, key: &str) -> Result<(i64, u64), RunError> {
        match self.state.entry(key).await {
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

    /// Moves the cursor `key` to `to` unless it is already further; never backwards.
    async fn advance(&self, key: &str, to: i64, mut revision: u64) -> Result<(), RunError> {
        for _ in 0..10 {
            let written = if revision == 0 {
                self.state
                    .create(key, to.to_string().into())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else {
                self.state
                    .update(key, to.to_string().into(), revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            };
            if written.is_ok() {
                return Ok(());
            }
            // Another replica moved it: keep the larger of the two.
            let (current, rev) = self.cursor(key).await?;
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

    /// One pass: every page since the pass's cursor. Returns how many notifications were
    /// newly published.
    async fn poll_once(&self, by: ListBy) -> Result<usize, RunError> {
        let (key, time_field) = match by {
            ListBy::Created => (CURSOR_KEY, "created_at"),
            ListBy::Updated => (UPDATED_CURSOR_KEY, "updated_at"),
        };
        let (cursor, revision) = self.cursor(key).await?;
        let since = cursor - OVERLAP_SECS;
        let mut newest = cursor;
        let mut published = 0;
        let mut outcome = Ok(());
        'pages: for page_no in 0..MAX_PAGES {
            let page = match self
                .sekoia
                .list_alerts_by(by, since, page_no * PAGE, PAGE, &self.communities)
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
                let events = match by {
                    ListBy::Created => events::from_alert(item).into_iter().collect(),
                    ListBy::Updated => match self.later_events(item).await {
                        Ok(events) => events,
                        Err(e) => {
                            outcome = Err(e);
                            break 'pages;
                        }
                    },
                };
                if by == ListBy::Created && events.is_empty() {
                    tracing::warn!("skipping a listed alert without a valid uuid");
                }
                for event in events {
                    match self.publish(&event).await {
                        Ok(true) => published += 1,
                        Ok(false) => {}
                        Err(e) => {
                            // Stop here: the cursor only covers what was handled.
                            outcome = Err(e);
                            break 'pages;
                        }
                    }
                }
                if let Some(t) = item.get(time_field).and_then(|c| c.as_i64()) {
                    newest = newest.max(t);
                }
            }
            if count < PAGE {
                break;
            }
        }
        if newest > cursor {
            self.advance(key, newest, revision).await?;
        }
        outcome.map(|()| published)
    }

    /// Publishes `event` from the poller; `Ok(true)` when it was new.
    async fn publish(&self, event: &events::AlertEvent) -> Result<bool, RunError> {
        let span = tracing::info_span!(
            parent: None,
            "poll_receive",
            otel.kind = "consumer",
            alert.uuid = %event.alert_uuid,
            alert.short_id = %event.short_id,
        );
        match self
            .publisher
            .publish(event, v1::Source::Poll)
            .instrument(span)
            .await
        {
            Ok(verdict) => Ok(verdict == crate::publisher::Verdict::Published),
            Err(e) => Err(RunError::Retry(Duration::from_secs(5), e.to_string())),
        }
    }

    /// What an alert listed by `updated_at` brings: its update (when it was updated after it
    /// was created and updates are taken) and its comments (when comments are taken).
    async fn later_events(
        &self,
        item: &serde_json::Value,
    ) -> Result<Vec<events::AlertEvent>, RunError> {
        let mut out = Vec::new();
        let Some(alert) = events::from_alert(item) else {
            tracing::warn!("skipping a listed alert without a valid uuid");
            return Ok(out);
        };
        let created = item.get("created_at").and_then(|c| c.as_i64());
        let updated = item.get("updated_at").and_then(|c| c.as_i64());
        if self.publisher.takes(v1::EventKind::Updated)
            && updated.is_some_and(|u| created.is_none_or(|c| u > c))
            && let Some(update) = events::update_from_alert(item)
        {
            out.push(update);
        }
        let no_comments = item
            .get("number_of_total_comments")
            .and_then(|n| n.as_u64())
            == Some(0);
        if self.publisher.takes(v1::EventKind::Comment) && !no_comments {
            match self.sekoia.list_comments(&alert.alert_uuid).await {
                CallOutcome::Done(comments) => {
                    out.extend(
                        comments
                            .iter()
                            .filter_map(|c| events::comment_from_list(&alert, c)),
                    );
                }
                CallOutcome::CredentialsRejected { status, .. } => {
                    self.key.rejected(status);
                    return Err(RunError::Retry(
                        self.rejected_retry,
                        format!("Sekoia rejected the key ({status})"),
                    ));
                }
                CallOutcome::Throttled {
                    retry_after,
                    reason,
                }
                | CallOutcome::Transient {
                    retry_after,
                    reason,
                    ..
                } => return Err(RunError::Retry(retry_after.unwrap_or_default(), reason)),
                // Gone since it was listed (404), or an answer that will not change: nothing
                // to catch up for this alert, and the others must not wait on it.
                other => {
                    tracing::warn!(
                        alert.uuid = %alert.alert_uuid,
                        reason = other.reason().unwrap_or_default(),
                        "cannot list the alert's comments; skipping them"
                    );
                }
            }
        }
        Ok(out)
    }
}
