//! One `EnrichedAlert` delivered to one destination.
//!
//! The order of things is what makes the guarantees:
//! 1. decode (undecodable → dead-letter as poison);
//! 2. skip the alert if its delivery record exists (a redelivery or replay of work done);
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

use alertsync_http::Class;
use alertsync_jetstream::subjects::STAGE_FORWARD;
use alertsync_jetstream::{Delivery, Gate, Handler, Outcome, Turn};
use alertsync_proto::{Message as _, canonical_uuid, v1};
use alertsync_telemetry::Metrics;
use alertsync_template::Context;

use crate::destination::{Attempt, Destination};
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

    fn dead(&self, class: &str, reason: String, status: Option<u16>, uuid: &str) -> Outcome {
        self.metrics
            .dead_lettered(STAGE_FORWARD, &self.dest.name, class);
        Outcome::DeadLetter {
            reason,
            last_status: status,
            alert_uuid: uuid.to_string(),
        }
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
        let enriched = match v1::EnrichedAlert::decode(d.payload.as_ref()) {
            Ok(m) => m,
            Err(e) => {
                return self.dead(
                    "poison",
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
                "poison",
                "poison: EnrichedAlert without a valid alert uuid".into(),
                None,
                "",
            );
        };
        match self.records.is_delivered(&uuid).await {
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
                self.metrics.retry(STAGE_FORWARD, name);
                return Outcome::Retry {
                    after: RECORD_UNKNOWN_DELAY,
                };
            }
        }
        let alert: serde_json::Value = match serde_json::from_slice(&enriched.alert_json) {
            Ok(v) => v,
            Err(e) => {
                return self.dead(
                    "poison",
                    format!("poison: the alert body is not JSON: {e}"),
                    None,
                    &uuid,
                );
            }
        };
        let ctx = Context::new(&alert);
        let request = match self.dest.render(&ctx, &uuid) {
            Ok(r) => r,
            Err(reason) => return self.dead("render", reason, None, &uuid),
        };
        let body_bytes = request.body.as_ref().map_or(0, String::len);
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
            let attempt = self.dest.send(request.clone()).await;
            self.metrics.delivery_latency(name, started.elapsed());
            match attempt {
                Attempt::Delivered(status) => {
                    pass.delivered();
                    // The record goes before the ack: a redelivery after this point is skipped.
                    self.records.record(&uuid, status, d.delivered).await;
                    tracing::info!(alert.uuid = %uuid, destination = %name, status, attempt = d.delivered, "delivered");
                    self.metrics.delivery(name, "delivered");
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
                        self.metrics.retry(STAGE_FORWARD, name);
                        return Outcome::Retry { after };
                    }
                    return self.dead(
                        "exhausted",
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
                        "too_large",
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
                    return self.dead("permanent", reason, status, &uuid);
                }
            }
        }
    }
}
