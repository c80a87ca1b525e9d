//! One `EnrichedAlert` delivered to one destination.
//!
//! The order of things is what makes the guarantees:
//! 1. decode (undecodable → dead-letter as poison);
//! 2. skip the alert if its delivery record exists (a redelivery or replay of work done), or
//!    if the destination's filter rejects it. The record is not read for the first delivery of
//!    an alert's only `EnrichedAlert` (marked so by the enricher): no earlier delivery exists;
//! 3. render (a render error or a body over `max_body_bytes` → dead-letter);
//! 4. wait for the destination's [`Gate`] (held, not retried, while it is paused, its circuit
//!    is open or it is rate-limited);
//! 5. send, and by the answer:
//!    - 2xx → write the delivery record, then ack;
//!    - 401/403 → pause the destination and hold the alert (no attempt burnt);
//!    - 429 → hold every call until `Retry-After` (capped) has passed, then send again;
//!    - 408, 5xx except 501, timeout, connection error → delayed NAK, or hold once the circuit
//!      has opened; dead-letter when attempts run out;
//!    - 413 → dead-letter, saying the body is over the destination's limit;
//!    - other 4xx, 501 → dead-letter.

use std::sync::Arc;
use std::time::Duration;

use alertsync_gate::{Gate, Turn};
use alertsync_http::Class;
use alertsync_proto::protocol::FIRST_ENRICHMENT_HEADER;
use alertsync_proto::{DeadLetterClass, Message as _, Stage, canonical_uuid, v1};
use alertsync_telemetry::Metrics;
use alertsync_template::{Context, RawAlert};
use alertsync_worker::{Delivery, Handler, Outcome};
use tracing::Instrument;

use crate::destination::{Attempt, Destination};
use crate::filter::Filter;
use crate::records::DeliveryRecords;

/// NAK delay of a message held at a closed gate when the service shuts down.
const RELEASE_DELAY: Duration = Duration::from_secs(5);
/// NAK delay when the delivery record cannot be read (NATS trouble; not the alert's fault).
const RECORD_UNKNOWN_DELAY: Duration = Duration::from_secs(2);

/// Delivers to one destination.
pub struct ForwardHandler {
    dest: Destination,
    gate: Gate,
    records: Arc<DeliveryRecords>,
    metrics: Metrics,
}

impl ForwardHandler {
    /// A handler for `dest`, behind `gate`, skipping alerts found in `records`.
    pub fn new(
        dest: Destination,
        gate: Gate,
        records: Arc<DeliveryRecords>,
        metrics: Metrics,
    ) -> Self {
        Self {
            dest,
            gate,
            records,
            metrics,
        }
    }

    fn dead(
        &self,
        class: DeadLetterClass,
        reason: String,
        status: Option<u16>,
        uuid: &str,
    ) -> Outcome {
        Outcome::DeadLetter {
            class,
            reason,
            last_status: status,
            alert_uuid: uuid.to_string(),
        }
    }

    /// One attempt, in its own `deliver` client span whose context the destination receives
    /// as `traceparent`, so the external tool can find the alert's trace (without an exporter
    /// there is no such span, and `traceparent` carries the alert's `process` span).
    async fn send(
        &self,
        request: &crate::destination::Rendered,
        uuid: &str,
        attempt: u32,
    ) -> (Attempt, tracing::Span) {
        let span = alertsync_telemetry::detail_span!(
            "deliver",
            otel.kind = "client",
            http.request.method = %request.method,
            server.address = request.url.host_str().unwrap_or(""),
            alertsync.destination = %self.dest.name,
            alertsync.attempt = attempt,
            alert.uuid = %uuid,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            error.message = tracing::field::Empty,
        );
        let attempt = self.dest.send(request).instrument(span.clone()).await;
        (attempt, span)
    }

    /// The destination's gate.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// The destination's name.
    pub fn destination(&self) -> &str {
        &self.dest.name
    }
}

impl Handler for ForwardHandler {
    async fn handle(&self, d: &Delivery) -> Outcome {
        let name = self.dest.name.as_str();
        // From `Bytes`, so that the alert comes out as a slice of the message, not a copy.
        let enriched = match v1::EnrichedAlert::decode(d.payload.clone()) {
            Ok(m) => m,
            Err(e) => {
                return self.dead(
                    DeadLetterClass::Poison,
                    format!("poison: undecodable EnrichedAlert: {e}"),
                    None,
                    "",
                );
            }
        };
        let Some(uuid) = enriched
            .created
            .as_ref()
            .and_then(|c| canonical_uuid(&c.alert_uuid))
        else {
            return self.dead(
                DeadLetterClass::Poison,
                "poison: EnrichedAlert without a valid alert uuid".into(),
                None,
                "",
            );
        };
        let process = tracing::Span::current();
        process.record("alert.uuid", uuid.as_str());
        process.record("alertsync.destination", name);
        // The first delivery of the alert's only `EnrichedAlert` cannot follow an earlier one.
        let never_delivered = d.first_ever && d.header(FIRST_ENRICHMENT_HEADER).is_some();
        match self.records.is_delivered(&uuid, never_delivered).await {
            Ok(true) => {
                tracing::info!(alert.uuid = %uuid, destination = %name, attempt = d.delivered, "already delivered; not sending again");
                self.metrics.delivery(name, "already_delivered");
                return Outcome::Ack;
            }
            Ok(false) => {}
            Err(e) => {
                // Sending without knowing could deliver twice; this is NATS' trouble, not the
                // alert's, so it never leads to a dead letter.
                tracing::warn!(alert.uuid = %uuid, destination = %name, error = %e, "will retry");
                self.metrics.retry(Stage::Forward, Some(name));
                return Outcome::Retry {
                    after: RECORD_UNKNOWN_DELAY,
                };
            }
        }
        // Read in place: only what the filter and the templates look at is ever parsed.
        let text = match std::str::from_utf8(&enriched.alert_json) {
            Ok(t) => t,
            Err(e) => {
                return self.dead(
                    DeadLetterClass::Poison,
                    format!("poison: the alert body is not UTF-8: {e}"),
                    None,
                    &uuid,
                );
            }
        };
        let alert = match RawAlert::parse(text) {
            Ok(a) => a,
            Err(e) => {
                return self.dead(
                    DeadLetterClass::Poison,
                    format!("poison: the alert body is not JSON: {e}"),
                    None,
                    &uuid,
                );
            }
        };
        let rejected = if self.dest.filter.passes_all() {
            None
        } else {
            self.dest.filter.rejects(&alert.fields(Filter::READS))
        };
        if let Some(filter) = rejected {
            // Not for this destination: acked, counted, and never sent or dead-lettered.
            self.metrics.filtered(Stage::Forward, Some(name), filter);
            tracing::debug!(alert.uuid = %uuid, destination = %name, filter, "alert filtered out");
            return Outcome::Ack;
        }
        let ctx = Context::from_raw(&alert);
        let rendered =
            alertsync_telemetry::detail_span!("render", alertsync.destination = %name, alert.uuid = %uuid)
                .in_scope(|| self.dest.render(&ctx, &uuid));
        let request = match rendered {
            Ok(r) => r,
            Err(reason) => return self.dead(DeadLetterClass::Render, reason, None, &uuid),
        };
        let body_bytes = request.body.as_ref().map_or(0, bytes::Bytes::len);
        loop {
            let pass = match self.gate.turn(d).await {
                Turn::Go(pass) => pass,
                Turn::Released => {
                    return Outcome::Retry {
                        after: RELEASE_DELAY,
                    };
                }
            };
            let started = std::time::Instant::now();
            let (attempt, span) = self.send(&request, &uuid, d.delivered).await;
            self.metrics.delivery_latency(name, started.elapsed());
            match &attempt {
                Attempt::Delivered(status) => {
                    span.record("http.response.status_code", status);
                }
                Attempt::Failed { status, reason, .. } => {
                    if let Some(status) = status {
                        span.record("http.response.status_code", status);
                    }
                    span.record("otel.status_code", "ERROR");
                    // The reason is redacted and says what went wrong, not what was sent.
                    span.record("error.message", reason.as_str());
                }
            }
            match attempt {
                Attempt::Delivered(status) => {
                    pass.delivered();
                    // The record goes before the ack: a redelivery after this point is skipped.
                    self.records.record(&uuid, status, d.delivered).await;
                    tracing::debug!(alert.uuid = %uuid, destination = %name, status, attempt = d.delivered, "delivered");
                    self.metrics.delivery(name, "delivered");
                    if let Some(received) = enriched
                        .created
                        .as_ref()
                        .and_then(|c| c.received_at.as_ref())
                    {
                        // From the moment a source saw the alert; a clock step back reads as 0.
                        let age = std::time::SystemTime::now()
                            .duration_since(alertsync_proto::time::to_system(received))
                            .unwrap_or_default();
                        self.metrics.created_to_delivered(name, age);
                    }
                    return Outcome::Ack;
                }
                Attempt::Failed {
                    status: Some(status @ (401 | 403)),
                    reason,
                    ..
                } => {
                    tracing::debug!(alert.uuid = %uuid, destination = %name, status, "credentials rejected; holding the alert");
                    self.metrics.delivery(name, "rejected");
                    pass.rejected(status, &reason);
                }
                Attempt::Failed {
                    status: Some(429),
                    retry_after,
                    reason,
                    ..
                } => {
                    let wait = match retry_after {
                        Some(ra) => ra.min(self.dest.retry.max_retry_after),
                        None => self.dest.retry.delay(d.delivered, None),
                    };
                    tracing::debug!(alert.uuid = %uuid, destination = %name, ?wait, "rate limited; holding the alert");
                    self.metrics.delivery(name, "throttled");
                    pass.throttled(wait, &reason);
                }
                Attempt::Failed {
                    status,
                    class: Class::Transient,
                    retry_after,
                    reason,
                } => {
                    self.metrics.delivery(name, "failed");
                    if pass.failed(status, &reason) {
                        // The circuit is open: hold the alert until a probe succeeds.
                        continue;
                    }
                    if d.delivered < self.dest.max_attempts {
                        let after = self.dest.retry.delay(d.delivered, retry_after);
                        tracing::info!(alert.uuid = %uuid, destination = %name, ?status, attempt = d.delivered, retry_in = ?after, %reason, "delivery failed; will retry");
                        self.metrics.retry(Stage::Forward, Some(name));
                        return Outcome::Retry { after };
                    }
                    return self.dead(
                        DeadLetterClass::Exhausted,
                        format!("gave up after {} attempts: {reason}", d.delivered),
                        status,
                        &uuid,
                    );
                }
                Attempt::Failed {
                    status: Some(413),
                    reason,
                    ..
                } => {
                    pass.answered();
                    self.metrics.delivery(name, "rejected_permanently");
                    return self.dead(
                        DeadLetterClass::TooLarge,
                        format!(
                            "body too large for the destination: it answered 413 to a \
                             {body_bytes}-byte body (a Sekoia intake takes at most 250 KiB \
                             per event; set destinations[{}].max_body_bytes to its limit to \
                             catch this before sending) — {reason}",
                            name
                        ),
                        Some(413),
                        &uuid,
                    );
                }
                Attempt::Failed { status, reason, .. } => {
                    pass.answered();
                    self.metrics.delivery(name, "rejected_permanently");
                    return self.dead(DeadLetterClass::of_status(status), reason, status, &uuid);
                }
            }
        }
    }
}
