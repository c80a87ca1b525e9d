//! What the enricher adds to an alert besides Get Alert: its events (`[enricher.events]`,
//! Sekoia's events search job) and, for a comment, the author and date from the alert's own
//! comment list.
//!
//! The search is bounded (`timeout` for the whole job, `limit` events) and its failure never
//! loses the alert: with `on_failure = "deliver"` the alert goes on with no events and the
//! reason (`events_error`), with `"retry"` the search goes through the call path like Get
//! Alert (retried, held while Sekoia is throttling or rejects the key, then dead-lettered).

use alertsync_config::{EventsConfig, OnFailure};
use alertsync_http::CallOutcome;
use alertsync_proto::v1;
use alertsync_sekoia::{EventsQuery, SekoiaClient};
use alertsync_telemetry::Metrics;
use alertsync_worker::{CallSite, Delivery, Outcome, gated_call};
use serde_json::Value;

use crate::filter::AlertHead;

/// The events found for an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// A JSON array of the events (empty when the search failed).
    pub json: Vec<u8>,
    /// Why there are none, when the search failed (`on_failure = "deliver"`).
    pub error: Option<String>,
}

impl Found {
    fn failed(reason: String) -> Self {
        Found {
            json: b"[]".to_vec(),
            error: Some(reason),
        }
    }
}

/// One alert's events search.
pub struct Search<'a> {
    /// The Sekoia API.
    pub sekoia: &'a SekoiaClient,
    /// `[enricher.events]`.
    pub cfg: &'a EventsConfig,
    /// Counters.
    pub metrics: &'a Metrics,
}

impl Search<'_> {
    /// Searches the events of `alert`. `Err` is what the worker does with the message (only
    /// with `on_failure = "retry"`).
    pub async fn run(
        &self,
        site: CallSite<'_>,
        d: &Delivery,
        uuid: &str,
        alert: &AlertHead,
    ) -> Result<Found, Outcome> {
        let Some(query) = self.query(alert) else {
            // Sekoia's search finds an alert's events by its short id only.
            return Ok(Found::failed(
                "the alert has no short_id to search its events by".into(),
            ));
        };
        let deadline = self.cfg.timeout.get();
        let started = std::time::Instant::now();
        let found = match self.cfg.on_failure {
            OnFailure::Retry => {
                let site = CallSite {
                    what: "events search",
                    ..site
                };
                gated_call(site, d, uuid, || {
                    self.sekoia.search_events(&query, deadline)
                })
                .await
                .map(|events| Found {
                    json: to_array(&events),
                    error: None,
                })?
            }
            OnFailure::Deliver => match self.sekoia.search_events(&query, deadline).await {
                CallOutcome::Done(events) => Found {
                    json: to_array(&events),
                    error: None,
                },
                other => {
                    let reason = other
                        .reason()
                        .unwrap_or("the events search failed")
                        .to_string();
                    tracing::warn!(alert.uuid = %uuid, %reason, "delivering without events");
                    Found::failed(reason)
                }
            },
        };
        self.metrics.sekoia_latency(started.elapsed());
        Ok(found)
    }

    /// The search for `alert`: `alert_short_ids:"<short id>"` between the configured times.
    fn query(&self, alert: &AlertHead) -> Option<EventsQuery> {
        let short_id = alert
            .short_id()
            // It goes inside a quoted search term: letters and digits only.
            .filter(|s| {
                !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric())
            })?;
        let time = |setting: &str, alert_time: &str, seen: Option<&str>, fallback: &str| {
            if setting == alert_time {
                seen.filter(|t| is_timestamp(t))
                    .unwrap_or(fallback)
                    .to_string()
            } else {
                setting.to_string()
            }
        };
        Some(EventsQuery {
            term: format!("alert_short_ids:\"{short_id}\""),
            earliest: time(
                &self.cfg.earliest,
                "first_seen",
                alert.first_seen_at(),
                "-1d",
            ),
            latest: time(&self.cfg.latest, "last_seen", alert.last_seen_at(), "now"),
            limit: self.cfg.limit,
        })
    }
}

/// Whether `t` looks like an ISO-8601 time (digits, `-`, `:`, `T`, `.`, `+`, `Z`): anything
/// else from the alert is not passed to the search.
fn is_timestamp(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 40
        && t.bytes()
            .all(|b| b.is_ascii_digit() || b"-:T.+Z ".contains(&b))
}

fn to_array(events: &[Value]) -> Vec<u8> {
    serde_json::to_vec(events).unwrap_or_else(|_| b"[]".to_vec())
}

/// Fills the comment's author and date from the alert's `comments` list (Get Alert lists
/// them), when the notification did not carry them.
pub fn complete_comment(comment: &mut v1::Comment, alert_text: &str) {
    if !comment.author.is_empty() && comment.date != 0 {
        return;
    }
    #[derive(serde::Deserialize)]
    struct Comments {
        #[serde(default)]
        comments: Option<Vec<Value>>,
    }
    let Ok(Comments {
        comments: Some(list),
    }) = serde_json::from_str::<Comments>(alert_text)
    else {
        return;
    };
    let Some(found) = list
        .iter()
        .find(|c| c.get("uuid").and_then(Value::as_str) == Some(comment.uuid.as_str()))
    else {
        return;
    };
    if comment.author.is_empty()
        && let Some(author) = found.get("author").and_then(Value::as_str)
    {
        comment.author = author.to_string();
    }
    if comment.date == 0
        && let Some(date) = found.get("date").and_then(Value::as_i64)
    {
        comment.date = date;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comment_is_completed_from_the_alert_comment_list() {
        let mut c = v1::Comment {
            uuid: "9a7c1e52-3b0d-4c8e-a1f6-2d5b7e9c0f34".into(),
            content: "x".into(),
            ..Default::default()
        };
        let alert = r#"{"uuid":"a","comments":[{"uuid":"other","author":"no"},
            {"uuid":"9a7c1e52-3b0d-4c8e-a1f6-2d5b7e9c0f34","author":"Jane","date":1700000000}]}"#;
        complete_comment(&mut c, alert);
        assert_eq!(c.author, "Jane");
        assert_eq!(c.date, 1_700_000_000);
        let mut untouched = v1::Comment::default();
        complete_comment(&mut untouched, "{\"comments\": 3}");
        assert_eq!(untouched.author, "");
    }

    #[test]
    fn alert_times_are_passed_only_when_they_look_like_times() {
        assert!(is_timestamp("2024-12-15T12:29:08.454603Z"));
        assert!(is_timestamp("2022-11-28T21:00:00+00:00"));
        assert!(!is_timestamp("now\" OR 1=1"));
        assert!(!is_timestamp(""));
    }
}
