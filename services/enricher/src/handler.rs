//! One `AlertNotification` (an alert created, updated or commented) → Get Alert →
//! `EnrichedAlert` with the alert as it is now.
//!
//! decode (undecodable → poison) → Get Alert through the call path
//! ([`alertsync_worker::call`]: 404 retried up to `enricher.not_found_attempts`, 429 and a
//! rejected key hold every alert, 5xx and timeouts retried then dead-lettered, held while the
//! circuit to Sekoia is open) → the trigger's filters → publish (an enriched alert over the
//! NATS server's `max_payload` is dead-lettered as too large). With `[enricher.events]`, the
//! alert's events are searched between Get Alert and the publish ([`crate::events`]); a
//! comment's author and date are completed from the alert's own comment list.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alertsync_config::EnricherConfig;
use alertsync_gate::Gate;
use alertsync_http::{CallOutcome, RetryPolicy};
use alertsync_nats::{Subjects, async_nats::jetstream, publish::publish_acked};
use alertsync_proto::protocol::FIRST_ENRICHMENT_HEADER;
use alertsync_proto::{DeadLetterClass, Message as _, Stage, canonical_uuid, time, v1};
use alertsync_sekoia::{GetAlert, SekoiaClient, key::KeyState};
use alertsync_telemetry::Metrics;
use alertsync_worker::{CallPolicy, CallSite, Delivery, Handler, Outcome, gated_call};
use tracing::Instrument as _;

use crate::filter::{AlertHead, TriggerFilter};

/// NAK delay when the enriched alert could not be published (NATS trouble, not the alert's).
const PUBLISH_RETRY: Duration = Duration::from_secs(2);
/// Room for the headers and protocol framing of an enriched alert, besides its payload, in the
/// NATS server's `max_payload`.
const HEADROOM: usize = 4096;

/// What a handler is made of, besides its config.
pub struct Parts {
    /// JetStream, to publish enriched alerts.
    pub js: jetstream::Context,
    /// Subject names.
    pub subjects: Subjects,
    /// The Sekoia API.
    pub sekoia: SekoiaClient,
    /// The key readiness check.
    pub key: KeyState,
    /// The trigger's filters.
    pub filter: TriggerFilter,
    /// Counters.
    pub metrics: Metrics,
    /// The gate to Sekoia: paused while the key is rejected, circuit open while Get Alert
    /// keeps failing, throttled on 429, so that alerts wait without burning attempts.
    pub gate: Gate,
    /// Since when the created stream holds every alert published to it (epoch seconds, 0
    /// while unknown), kept current by the service (see [`EnrichHandler::only_enrichment`]).
    pub created_stream_since: Arc<AtomicU64>,
    /// `[enricher.events]`, when set.
    pub events: Option<alertsync_config::EventsConfig>,
}

/// Handles `AlertNotification` messages.
pub struct EnrichHandler {
    parts: Parts,
    policy: CallPolicy,
}

/// A dead-letter outcome of the enricher (the call path makes those about Get Alert).
fn dead(class: DeadLetterClass, reason: String, uuid: &str) -> Outcome {
    Outcome::dead_letter(class, reason, uuid)
}

impl EnrichHandler {
    /// A handler with the enricher's retry settings.
    pub fn new(parts: Parts, cfg: &EnricherConfig) -> Self {
        let policy = CallPolicy {
            retry: RetryPolicy {
                base: cfg.retry.base_delay.get(),
                max: cfg.retry.max_delay.get(),
                max_retry_after: cfg.retry.max_retry_after.get(),
            },
            max_attempts: cfg.retry.max_attempts,
            not_yet_attempts: cfg.not_found_attempts,
        };
        Self { parts, policy }
    }

    /// The Sekoia client.
    pub fn sekoia(&self) -> &SekoiaClient {
        &self.parts.sekoia
    }

    /// One Get Alert, counted (latency, errors by status) and telling the key check what the
    /// answer says of the key.
    async fn get_alert(&self, uuid: &str) -> GetAlert<AlertHead> {
        let m = &self.parts.metrics;
        let started = std::time::Instant::now();
        let answer = self.parts.sekoia.get_alert::<AlertHead>(uuid).await;
        m.sekoia_latency(started.elapsed());
        match &answer {
            CallOutcome::Done(_) => {}
            CallOutcome::CredentialsRejected { status, .. } => {
                m.sekoia_error(&status.to_string());
                self.parts.key.rejected(*status);
            }
            other => m.sekoia_error(&other.status().map_or("transport".into(), |s| s.to_string())),
        }
        if matches!(answer, CallOutcome::Done(_) | CallOutcome::NotYet { .. }) {
            self.parts.key.accepted();
        }
        answer
    }

    /// Whether the `EnrichedAlert` about to be published is provably its alert's only one,
    /// which the enricher marks ([`FIRST_ENRICHMENT_HEADER`]) so that the forwarder can skip
    /// reading the delivery records on its first delivery (one round trip to NATS per alert
    /// and destination, a third of the median latency at 1000 alerts/s in BENCHMARKS.md).
    /// All of:
    /// - this `AlertNotification` was never handled before ([`Delivery::first_ever`]: its first
    ///   delivery, by a consumer created before it was stored, not a DLQ replay), so no earlier
    ///   handling of it published anything. A late second enrichment (the enricher crashed
    ///   between its publish and its ack and came back after the duplicate window) comes from a
    ///   redelivery, so it is never marked;
    /// - it is on the alert's own created subject, where the ingest stores at most one message
    ///   per alert, checked by the server, for as long as the stream keeps it;
    /// - Sekoia created the alert after the oldest message the created stream still holds
    ///   (and after the stream began to hold one message per alert), with a margin for the
    ///   clocks: any earlier message for it would still be in that stream (and the ingest would
    ///   have been told "duplicate"). An alert seen again after the stream forgot it (expired,
    ///   purged or deleted) is not marked, and its delivery records (kept longer) are read.
    ///
    /// When in doubt (no `created_at`, another subject, a redelivery), no mark: the forwarder
    /// reads the records, as it always did.
    fn only_enrichment(&self, d: &Delivery, alert_uuid: &str, alert: &AlertHead) -> bool {
        only_enrichment(
            d.first_ever,
            d.subject == self.parts.subjects.created(alert_uuid),
            alert.created_at(),
            self.parts.created_stream_since.load(Ordering::Relaxed),
        )
    }

    async fn publish(
        &self,
        mut created: v1::AlertNotification,
        body: bytes::Bytes,
        alert: &AlertHead,
        events: Option<crate::events::Found>,
        d: &Delivery,
    ) -> Outcome {
        let uuid = created.alert_uuid.clone();
        if let Some(short_id) = alert.short_id() {
            tracing::Span::current().record("alert.short_id", short_id);
        }
        if let Some(filter) = self.parts.filter.rejects(alert) {
            self.parts.metrics.filtered(Stage::Enrich, None, filter);
            tracing::debug!(alert.uuid = %uuid, filter, "alert filtered out");
            return Outcome::Ack;
        }
        if created.community_uuid.is_empty() {
            // Sources like the bare webhook form don't carry the community; the alert does.
            created.community_uuid = alert
                .community_uuid()
                .and_then(canonical_uuid)
                .unwrap_or_default();
        }
        let subject = self.parts.subjects.enriched(&created.community_uuid);
        let span = alertsync_telemetry::publish_span(&subject, &uuid, &created.short_id);
        let msg_id = match created.kind() {
            v1::EventKind::Created => format!("enriched:{uuid}"),
            v1::EventKind::Updated => format!("enriched:{uuid}:updated:{}", created.event_id),
            v1::EventKind::Comment => format!(
                "enriched:{uuid}:comment:{}",
                created.comment.as_ref().map_or("", |c| c.uuid.as_str())
            ),
        };
        let mut msg = v1::EnrichedAlert {
            created: Some(created),
            alert_json: body,
            fetched_at: Some(time::now()),
            ..Default::default()
        };
        if let Some(found) = events {
            msg.events_enabled = true;
            msg.events_json = found.json;
            msg.events_error = found.error.unwrap_or_default();
        }
        let payload = msg.encode_to_vec();
        let max_payload = self.parts.js.client().server_info().max_payload;
        if max_payload > 0 && payload.len() + HEADROOM > max_payload {
            // Retrying cannot make it fit: say by how much it is over.
            let over = payload.len() + HEADROOM - max_payload;
            let reason = format!(
                "too large: the enriched alert is {} bytes, over what the NATS server takes \
                 ({max_payload} bytes max_payload, less {HEADROOM} for headers) by {over} \
                 bytes; raise max_payload in nats-server's configuration to forward such alerts",
                payload.len()
            );
            return dead(DeadLetterClass::TooLarge, reason, &uuid);
        }
        let mut headers = alertsync_nats::async_nats::HeaderMap::new();
        span.in_scope(|| alertsync_telemetry::propagation::inject_nats(&mut headers));
        if self.only_enrichment(d, &uuid, alert) {
            headers.insert(FIRST_ENRICHMENT_HEADER, "1");
        }
        let published = publish_acked(
            &self.parts.js,
            subject,
            &msg_id,
            Some(headers),
            payload.into(),
        )
        .instrument(span)
        .await;
        match published {
            Ok(_) => {
                self.parts.metrics.enriched();
                tracing::debug!(alert.uuid = %uuid, "alert enriched");
                Outcome::Ack
            }
            Err(e) => {
                tracing::warn!(alert.uuid = %uuid, error = %e, "enriched publish failed; will retry");
                self.parts.metrics.retry(Stage::Enrich, None);
                Outcome::Retry {
                    after: PUBLISH_RETRY,
                }
            }
        }
    }
}

impl Handler for EnrichHandler {
    async fn handle(&self, d: &Delivery) -> Outcome {
        let created = match v1::AlertNotification::decode(d.payload.as_ref()) {
            Ok(m) => m,
            Err(e) => {
                let reason = format!("poison: undecodable AlertNotification: {e}");
                return dead(DeadLetterClass::Poison, reason, "");
            }
        };
        let Some(uuid) = canonical_uuid(&created.alert_uuid) else {
            let reason = "poison: AlertNotification without a valid alert uuid".to_string();
            return dead(DeadLetterClass::Poison, reason, "");
        };
        let span = tracing::Span::current();
        span.record("alert.uuid", uuid.as_str());
        if !created.short_id.is_empty() {
            span.record("alert.short_id", created.short_id.as_str());
        }
        let site = CallSite {
            gate: &self.parts.gate,
            policy: &self.policy,
            stage: Stage::Enrich,
            destination: None,
            metrics: &self.parts.metrics,
            what: "Get Alert",
        };
        let (body, alert) = match gated_call(site, d, &uuid, || self.get_alert(&uuid)).await {
            Ok(found) => found,
            Err(outcome) => return outcome,
        };
        let text = match std::str::from_utf8(&body) {
            Ok(text) => text,
            Err(e) => {
                // Found here, once, rather than by every destination of the forwarder.
                let reason = format!("poison: the alert body Sekoia returned is not UTF-8: {e}");
                return dead(DeadLetterClass::Poison, reason, &uuid);
            }
        };
        let mut created = created;
        if let Some(comment) = created.comment.as_mut() {
            crate::events::complete_comment(comment, text);
        }
        if self.parts.filter.rejects(&alert).is_some() {
            // Filtered before the events search: no search for an alert nobody gets.
            return self.publish(created, body, &alert, None, d).await;
        }
        let events = match &self.parts.events {
            None => None,
            Some(cfg) => {
                let search = crate::events::Search {
                    sekoia: &self.parts.sekoia,
                    cfg,
                    metrics: &self.parts.metrics,
                };
                match search.run(site, d, &uuid, &alert).await {
                    Ok(found) => Some(found),
                    Err(outcome) => return outcome,
                }
            }
        };
        self.publish(created, body, &alert, events, d).await
    }
}

/// Margin between the NATS servers' clocks and Sekoia's, for
/// [`EnrichHandler::only_enrichment`] (both are expected to keep time by NTP).
const CLOCKS_MARGIN_SECS: u64 = 2;

/// [`EnrichHandler::only_enrichment`], from what it looks at.
fn only_enrichment(
    first_ever: bool,
    on_its_own_subject: bool,
    created_at: Option<u64>,
    stream_complete_since: u64,
) -> bool {
    first_ever
        && on_its_own_subject
        && stream_complete_since > 0
        && created_at.is_some_and(|c| c >= stream_complete_since + CLOCKS_MARGIN_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_never_handled_alert_on_its_own_subject_created_within_the_stream_is_marked() {
        let since = 1_800_000_000;
        let after = Some(since + CLOCKS_MARGIN_SECS);
        assert!(only_enrichment(true, true, after, since));
        // Handled before (a redelivery, a replay, a reset consumer): maybe enriched before.
        assert!(!only_enrichment(false, true, after, since));
        // Not on the alert's own created subject: nothing checked that it is the only one.
        assert!(!only_enrichment(true, false, after, since));
        // Created before the stream's oldest message (or within the clocks' margin of it): an
        // earlier message for it may have expired or been purged.
        assert!(!only_enrichment(true, true, Some(since - 1), since));
        assert!(!only_enrichment(
            true,
            true,
            Some(since + CLOCKS_MARGIN_SECS - 1),
            since
        ));
        // No (usable) `created_at`, or the stream's state unknown: cannot tell.
        assert!(!only_enrichment(true, true, None, since));
        assert!(!only_enrichment(true, true, after, 0));
    }
}
