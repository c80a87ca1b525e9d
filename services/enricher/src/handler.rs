//! One `AlertCreated` → Get Alert → `EnrichedAlert`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alertsync_config::EnricherConfig;
use alertsync_gate::{Gate, Turn};
use alertsync_http::RetryPolicy;
use alertsync_nats::{Subjects, async_nats::jetstream, publish::publish_acked};
use alertsync_proto::protocol::FIRST_ENRICHMENT_HEADER;
use alertsync_proto::{DeadLetterClass, Message as _, Stage, canonical_uuid, time, v1};
use alertsync_sekoia::{GetAlert, SekoiaClient, key::KeyState};
use alertsync_telemetry::Metrics;
use alertsync_worker::{Delivery, Handler, Outcome};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::filter::{AlertHead, TriggerFilter};

/// How often a message held during a rejected-key episode tells the server it is still alive.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// NAK delay for a held message when the service shuts down.
const RELEASE_DELAY: Duration = Duration::from_secs(5);

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
    /// How long a message is held while the key is rejected before trying again.
    pub rejected_key_retry: Duration,
    /// The circuit to Sekoia: open while Get Alert answers; closed by failures in a row
    /// (or a 429), so that alerts wait without burning attempts while Sekoia is down.
    pub gate: Gate,
    /// Since when the created stream holds every alert published to it (epoch seconds, 0
    /// while unknown), kept current by the service (see [`EnrichHandler::only_enrichment`]).
    pub created_stream_since: Arc<AtomicU64>,
}

/// Handles `AlertCreated` messages.
pub struct EnrichHandler {
    parts: Parts,
    cfg: EnricherConfig,
    retry: RetryPolicy,
    stop: CancellationToken,
}

impl EnrichHandler {
    /// A handler; `stop` releases held messages on shutdown.
    pub fn new(parts: Parts, cfg: EnricherConfig, stop: CancellationToken) -> Self {
        let retry = RetryPolicy {
            base: cfg.retry.base_delay.get(),
            max: cfg.retry.max_delay.get(),
            max_retry_after: cfg.retry.max_retry_after.get(),
        };
        Self {
            parts,
            cfg,
            retry,
            stop,
        }
    }

    /// The Sekoia client.
    pub fn sekoia(&self) -> &SekoiaClient {
        &self.parts.sekoia
    }

    fn retry_after(&self, d: &Delivery, retry_after: Option<Duration>) -> Outcome {
        self.parts.metrics.retry(Stage::Enrich, None);
        Outcome::Retry {
            after: self.retry.delay(d.delivered, retry_after),
        }
    }

    fn dead(
        &self,
        reason: String,
        status: Option<u16>,
        uuid: &str,
        class: DeadLetterClass,
    ) -> Outcome {
        Outcome::DeadLetter {
            class,
            reason,
            last_status: status,
            alert_uuid: uuid.to_string(),
        }
    }

    /// Holds `d` for one rejected-key wait, keeping it alive on the server. False when the
    /// service is stopping (the caller releases the message).
    async fn hold(&self, d: &Delivery) -> bool {
        let until = tokio::time::Instant::now() + self.parts.rejected_key_retry;
        loop {
            let now = tokio::time::Instant::now();
            if now >= until {
                return true;
            }
            let step = PROGRESS_EVERY.min(until - now);
            tokio::select! {
                _ = self.stop.cancelled() => return false,
                _ = tokio::time::sleep(step) => d.in_progress().await,
            }
            // The key watcher may have seen the key accepted again: retry right away.
            if !self.parts.key.is_rejected() {
                return true;
            }
        }
    }

    /// Whether the `EnrichedAlert` about to be published is provably its alert's only one,
    /// which the enricher marks ([`FIRST_ENRICHMENT_HEADER`]) so that the forwarder can skip
    /// reading the delivery records on its first delivery (one round trip to NATS per alert
    /// and destination, a third of the median latency at 1000 alerts/s in BENCHMARKS.md).
    /// All of:
    /// - this `AlertCreated` was never handled before ([`Delivery::first_ever`]: its first
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
        mut created: v1::AlertCreated,
        body: bytes::Bytes,
        alert: &AlertHead,
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
        let span = alertsync_telemetry::detail_span!(
            "publish",
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.operation.type = "send",
            messaging.destination.name = %subject,
            alert.uuid = %uuid,
            alert.short_id = %created.short_id,
        );
        let msg = v1::EnrichedAlert {
            created: Some(created),
            alert_json: body,
            fetched_at: Some(time::now()),
        };
        let mut headers = alertsync_nats::async_nats::HeaderMap::new();
        span.in_scope(|| alertsync_telemetry::propagation::inject_nats(&mut headers));
        if self.only_enrichment(d, &uuid, alert) {
            headers.insert(FIRST_ENRICHMENT_HEADER, "1");
        }
        let published = publish_acked(
            &self.parts.js,
            subject,
            &format!("enriched:{uuid}"),
            Some(headers),
            msg.encode_to_vec().into(),
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
                self.retry_after(d, None)
            }
        }
    }
}

impl Handler for EnrichHandler {
    async fn handle(&self, d: &Delivery) -> Outcome {
        let created = match v1::AlertCreated::decode(d.payload.as_ref()) {
            Ok(m) => m,
            Err(e) => {
                return self.dead(
                    format!("poison: undecodable AlertCreated: {e}"),
                    None,
                    "",
                    DeadLetterClass::Poison,
                );
            }
        };
        let Some(uuid) = canonical_uuid(&created.alert_uuid) else {
            return self.dead(
                "poison: AlertCreated without a valid alert uuid".into(),
                None,
                "",
                DeadLetterClass::Poison,
            );
        };
        let span = tracing::Span::current();
        span.record("alert.uuid", uuid.as_str());
        if !created.short_id.is_empty() {
            span.record("alert.short_id", created.short_id.as_str());
        }
        let m = &self.parts.metrics;
        loop {
            let pass = match self.parts.gate.turn(d).await {
                Turn::Go(pass) => pass,
                Turn::Released => {
                    return Outcome::Retry {
                        after: RELEASE_DELAY,
                    };
                }
            };
            let started = std::time::Instant::now();
            let answer = self.parts.sekoia.get_alert::<AlertHead>(&uuid).await;
            m.sekoia_latency(started.elapsed());
            match answer {
                GetAlert::Found(body, alert) => {
                    pass.delivered();
                    self.parts.key.accepted();
                    return self.publish(created, body, &alert, d).await;
                }
                GetAlert::NotFound => {
                    pass.answered();
                    self.parts.key.accepted();
                    m.sekoia_error("404");
                    if d.delivered >= self.cfg.not_found_attempts {
                        return self.dead(
                            format!("Get Alert answered 404 on {} attempts", d.delivered),
                            Some(404),
                            &uuid,
                            DeadLetterClass::NotFound,
                        );
                    }
                    return self.retry_after(d, None);
                }
                GetAlert::KeyRejected(status) => {
                    // Not the alert's fault: hold it (attempts are not burnt) until the key
                    // works again. The key watcher, not the gate, decides when that is: the
                    // pass goes unreported (a probe's turn passes to the next message).
                    drop(pass);
                    m.sekoia_error(&status.to_string());
                    self.parts.key.rejected(status);
                    if !self.hold(d).await {
                        return Outcome::Retry {
                            after: RELEASE_DELAY,
                        };
                    }
                }
                GetAlert::Transient {
                    status: Some(429),
                    retry_after,
                    reason,
                } => {
                    // Sekoia's rate limit is about us, not this alert: every call waits, and
                    // no attempt is burnt.
                    m.sekoia_error("429");
                    let wait = match retry_after {
                        Some(ra) => ra.min(self.retry.max_retry_after),
                        None => self.retry.delay(d.delivered, None),
                    };
                    tracing::debug!(alert.uuid = %uuid, ?wait, "Sekoia rate limit; holding the alert");
                    pass.throttled(wait, &reason);
                }
                GetAlert::Transient {
                    status,
                    retry_after,
                    reason,
                } => {
                    m.sekoia_error(&status.map_or("transport".to_string(), |s| s.to_string()));
                    if pass.failed(status, &reason) {
                        // The circuit is open: hold the alert until a probe gets an answer.
                        continue;
                    }
                    if d.delivered >= self.cfg.retry.max_attempts {
                        return self.dead(
                            format!("gave up after {} attempts: {reason}", d.delivered),
                            status,
                            &uuid,
                            DeadLetterClass::Exhausted,
                        );
                    }
                    tracing::debug!(alert.uuid = %uuid, %reason, attempt = d.delivered, "Get Alert failed; will retry");
                    return self.retry_after(d, retry_after);
                }
                GetAlert::Permanent { status, reason } => {
                    pass.answered();
                    m.sekoia_error(&status.to_string());
                    return self.dead(reason, Some(status), &uuid, DeadLetterClass::Http4xx);
                }
            }
        }
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
