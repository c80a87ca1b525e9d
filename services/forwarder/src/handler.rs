//! One `EnrichedAlert` delivered to one destination. A creation is handled here; an update or
//! a comment by [`crate::later`], which waits for the creation's record.
//!
//! The order of things is what makes the guarantees (for a creation):
//! 1. decode (undecodable → dead-letter as poison);
//! 2. skip the alert if its delivery record exists (a redelivery or replay of work done), or
//!    if the destination's filter rejects it. The record is not read for the first delivery of
//!    an alert's only `EnrichedAlert` (marked so by the enricher): no earlier delivery exists;
//! 3. render (a render error or a body over `max_body_bytes` → dead-letter);
//! 4. send through the call path ([`alertsync_worker::call`]): held at the destination's
//!    gate while it is paused (401/403), its circuit is open or it is rate-limited (429);
//!    transient failures retried, then dead-lettered; 413 and other 4xx dead-lettered;
//! 5. on a 2xx, write the delivery record (with the remote id and the alert state sent, for a
//!    destination that follows lifecycles), then ack. Such a destination also records a
//!    creation it filtered out or dead-lettered, so that later events know not to wait.

use std::sync::Arc;
use std::time::Duration;

use alertsync_gate::Gate;
use alertsync_http::CallOutcome;
use alertsync_proto::protocol::FIRST_ENRICHMENT_HEADER;
use alertsync_proto::{DeadLetterClass, Message as _, Stage, canonical_uuid, v1};
use alertsync_telemetry::Metrics;
use alertsync_template::{Context, RawAlert};
use alertsync_worker::{CallPolicy, CallSite, Delivery, Handler, Outcome, gated_call};
use tracing::Instrument;

use crate::destination::{Answer, Destination, Rendered};
use crate::filter::Filter;
use crate::records::{AlertRecord, DeliveryRecords};

/// NAK delay when the delivery record cannot be read (NATS trouble; not the alert's fault).
const RECORD_UNKNOWN_DELAY: Duration = Duration::from_secs(2);

/// Delivers to one destination.
pub struct ForwardHandler {
    pub(crate) dest: Destination,
    pub(crate) gate: Gate,
    pub(crate) policy: CallPolicy,
    pub(crate) records: Arc<DeliveryRecords>,
    pub(crate) metrics: Metrics,
    pub(crate) lifecycle: Option<crate::later::Lifecycle>,
}

/// A dead-letter outcome of the forwarder (the call path makes the others).
fn dead(class: DeadLetterClass, reason: String, uuid: &str) -> Outcome {
    Outcome::dead_letter(class, reason, uuid)
}

impl ForwardHandler {
    /// A handler for `dest`, behind `gate`, skipping alerts found in `records`.
    pub fn new(
        dest: Destination,
        gate: Gate,
        records: Arc<DeliveryRecords>,
        metrics: Metrics,
    ) -> Self {
        let policy = CallPolicy {
            retry: dest.retry,
            max_attempts: dest.max_attempts,
            // A destination's 404 is permanent; nothing answers "not yet".
            not_yet_attempts: 1,
        };
        Self {
            dest,
            gate,
            policy,
            records,
            metrics,
            lifecycle: None,
        }
    }

    /// This handler, handling updates and comments with `lifecycle`.
    pub fn with_lifecycle(mut self, lifecycle: crate::later::Lifecycle) -> Self {
        self.lifecycle = Some(lifecycle);
        self
    }

    /// Whether the destination follows alerts past their creation.
    pub fn follows_lifecycle(&self) -> bool {
        self.dest.follows_lifecycle()
    }

    /// The destination's gate.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// The destination's name.
    pub fn destination(&self) -> &str {
        &self.dest.name
    }

    /// Whether the alert was delivered here before; `Err` is what to do when that cannot be
    /// known. The first delivery of the alert's only `EnrichedAlert` cannot follow an earlier
    /// one, so its record is not read.
    async fn delivered_before(&self, d: &Delivery, uuid: &str) -> Result<bool, Outcome> {
        let never_delivered = d.first_ever && d.header(FIRST_ENRICHMENT_HEADER).is_some();
        self.records
            .is_delivered(uuid, never_delivered)
            .await
            .map_err(|e| {
                // Sending without knowing could deliver twice; this is NATS' trouble, not the
                // alert's, so it never leads to a dead letter.
                tracing::warn!(alert.uuid = %uuid, destination = %self.dest.name, error = %e, "will retry");
                self.metrics.retry(Stage::Forward, Some(&self.dest.name));
                Outcome::Retry {
                    after: RECORD_UNKNOWN_DELAY,
                }
            })
    }

    /// The request for `alert`, or why this destination does not get it: `Ok(None)` when its
    /// filter rejects the alert, `Err` a dead letter.
    fn request_for(
        &self,
        alert: &RawAlert,
        uuid: &str,
        ctx: &Context,
    ) -> Result<Option<Rendered>, Outcome> {
        let name = self.dest.name.as_str();
        let rejected = if self.dest.filter.passes_all() {
            None
        } else {
            self.dest.filter.rejects(&alert.fields(Filter::READS))
        };
        if let Some(filter) = rejected {
            // Not for this destination: acked, counted, and never sent or dead-lettered.
            self.metrics.filtered(Stage::Forward, Some(name), filter);
            tracing::debug!(alert.uuid = %uuid, destination = %name, filter, "alert filtered out");
            return Ok(None);
        }
        alertsync_telemetry::detail_span!("render", alertsync.destination = %name, alert.uuid = %uuid)
            .in_scope(|| self.dest.render(ctx, uuid))
            .map(Some)
            .map_err(|reason| dead(DeadLetterClass::Render, reason, uuid))
    }

    /// One attempt, in its own `deliver` client span whose context the destination receives
    /// as `traceparent`, so the external tool can find the alert's trace (without an exporter
    /// there is no such span, and `traceparent` carries the alert's `process` span). Counts the
    /// answer, and explains a 413.
    pub(crate) async fn attempt(
        &self,
        request: &Rendered,
        uuid: &str,
        attempt: u32,
        kind: &str,
        read_answer: bool,
    ) -> CallOutcome<Answer> {
        let name = self.dest.name.as_str();
        let span = alertsync_telemetry::detail_span!(
            "deliver",
            otel.kind = "client",
            http.request.method = %request.method,
            server.address = request.url.host_str().unwrap_or(""),
            alertsync.destination = %name,
            alertsync.attempt = attempt,
            alert.uuid = %uuid,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            error.message = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let outcome = self
            .dest
            .send(request, read_answer)
            .instrument(span.clone())
            .await;
        self.metrics.delivery_latency(name, started.elapsed());
        if let Some(status) = outcome.status().filter(|_| outcome.reason().is_some()) {
            span.record("http.response.status_code", status);
        }
        if let Some(reason) = outcome.reason() {
            span.record("otel.status_code", "ERROR");
            // The reason is redacted and says what went wrong, not what was sent.
            span.record("error.message", reason);
        }
        let counted = match &outcome {
            CallOutcome::Done(answer) => {
                span.record("http.response.status_code", answer.status);
                return outcome;
            }
            CallOutcome::CredentialsRejected { .. } => "rejected",
            CallOutcome::Throttled { .. } => "throttled",
            CallOutcome::Transient { .. } => "failed",
            _ => "rejected_permanently",
        };
        self.metrics.delivery(name, kind, counted);
        match outcome {
            CallOutcome::TooLarge { status, reason } => CallOutcome::TooLarge {
                status,
                reason: format!(
                    "body too large for the destination: it answered 413 to a {}-byte body \
                     (a Sekoia intake takes at most 250 KiB per event; set \
                     destinations[{name}].max_body_bytes to its limit to catch this before \
                     sending) — {reason}",
                    request.body.as_ref().map_or(0, bytes::Bytes::len),
                ),
            },
            other => other,
        }
    }

    /// After a 2xx: the record goes before the ack, so a redelivery after this point is
    /// skipped. A destination that follows lifecycles keeps the remote id and the state sent.
    async fn delivered(
        &self,
        enriched: &v1::EnrichedAlert,
        uuid: &str,
        answer: &Answer,
        ctx: Option<&Context>,
        d: &Delivery,
    ) -> Result<(), Outcome> {
        let name = self.dest.name.as_str();
        let status = answer.status;
        // The write-back is stored before the record: a crash in between sends the creation
        // again (same Idempotency-Key) and stores nothing new; one after the record finds it.
        if let (Some(lifecycle), Some(ctx)) = (&self.lifecycle, ctx)
            && let Some((comment, author, sekoia_status)) = self.dest.after_create(ctx, answer)
        {
            let comment = comment.unwrap_or_else(|reason| {
                tracing::warn!(alert.uuid = %uuid, destination = %name, %reason, "writing back without the comment");
                String::new()
            });
            if !comment.is_empty() || !sekoia_status.is_empty() {
                let wb = v1::WriteBack {
                    alert_uuid: uuid.to_string(),
                    destination: name.to_string(),
                    origin: v1::write_back::Origin::AfterCreate as i32,
                    id: "created".into(),
                    comment,
                    author,
                    status: sekoia_status,
                    received_at: Some(alertsync_proto::time::now()),
                };
                if let Err(e) = lifecycle.write_back(wb).await {
                    tracing::warn!(alert.uuid = %uuid, destination = %name, error = %e, "cannot store the write-back; will retry");
                    self.metrics.retry(Stage::Forward, Some(name));
                    return Err(Outcome::Retry {
                        after: RECORD_UNKNOWN_DELAY,
                    });
                }
            }
        }
        if self.dest.follows_lifecycle() {
            let remote_id = match ctx.map(|ctx| self.dest.remote_id(ctx, answer)) {
                Some(Ok(id)) => id,
                Some(Err(reason)) => {
                    // Delivered all the same; later requests that use `remote.id` will say so.
                    tracing::warn!(alert.uuid = %uuid, destination = %name, %reason, "no remote id for the delivered alert");
                    None
                }
                None => None,
            };
            let state = std::str::from_utf8(&enriched.alert_json)
                .ok()
                .and_then(crate::state::of_alert);
            if let Some(id) = &remote_id {
                self.records.index_remote(id, uuid).await;
            }
            let record = AlertRecord::delivered(status, d.delivered, remote_id, state);
            self.records.record_full(uuid, &record).await;
        } else {
            self.records.record(uuid, status, d.delivered).await;
        }
        tracing::debug!(alert.uuid = %uuid, destination = %name, status, attempt = d.delivered, "delivered");
        self.metrics.delivery(name, "created", "delivered");
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
        Ok(())
    }
}

/// The message's `EnrichedAlert` and its alert uuid, or the poison dead letter.
pub(crate) fn decode(d: &Delivery) -> Result<(v1::EnrichedAlert, String), Outcome> {
    // From `Bytes`, so that the alert comes out as a slice of the message, not a copy.
    let enriched = v1::EnrichedAlert::decode(d.payload.clone()).map_err(|e| {
        let reason = format!("poison: undecodable EnrichedAlert: {e}");
        dead(DeadLetterClass::Poison, reason, "")
    })?;
    let uuid = enriched
        .created
        .as_ref()
        .and_then(|c| canonical_uuid(&c.alert_uuid))
        .ok_or_else(|| {
            let reason = "poison: EnrichedAlert without a valid alert uuid".to_string();
            dead(DeadLetterClass::Poison, reason, "")
        })?;
    Ok((enriched, uuid))
}

/// The alert of `enriched`, read in place: only what the filter and the templates look at is
/// ever parsed.
pub(crate) fn read_alert(enriched: &v1::EnrichedAlert, uuid: &str) -> Result<RawAlert, Outcome> {
    let poison = |reason: String| dead(DeadLetterClass::Poison, reason, uuid);
    let text = std::str::from_utf8(&enriched.alert_json)
        .map_err(|e| poison(format!("poison: the alert body is not UTF-8: {e}")))?;
    RawAlert::parse(text).map_err(|e| poison(format!("poison: the alert body is not JSON: {e}")))
}

impl Handler for ForwardHandler {
    async fn handle(&self, d: &Delivery) -> Outcome {
        let name = self.dest.name.as_str();
        let (enriched, uuid) = match decode(d) {
            Ok(decoded) => decoded,
            Err(outcome) => return outcome,
        };
        let process = tracing::Span::current();
        process.record("alert.uuid", uuid.as_str());
        process.record("alertsync.destination", name);
        let kind = enriched
            .created
            .as_ref()
            .map_or(v1::EventKind::Created, |c| c.kind());
        if kind != v1::EventKind::Created {
            return crate::later::handle(self, d, &enriched, &uuid, kind).await;
        }
        // A creation and the later events of the same alert are handled one at a time here,
        // so an update never reads the record while its creation is being written.
        let _turn = match &self.lifecycle {
            Some(l) if self.dest.follows_lifecycle() => Some(l.lock(&uuid).await),
            _ => None,
        };
        let outcome = self.handle_created(d, &enriched, &uuid).await;
        if let Outcome::DeadLetter { .. } = &outcome
            && self.dest.follows_lifecycle()
        {
            self.records
                .mark_not_delivered(&uuid, AlertRecord::DEAD_LETTERED)
                .await;
        }
        outcome
    }
}

impl ForwardHandler {
    async fn handle_created(
        &self,
        d: &Delivery,
        enriched: &v1::EnrichedAlert,
        uuid: &str,
    ) -> Outcome {
        let name = self.dest.name.as_str();
        match self.delivered_before(d, uuid).await {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(alert.uuid = %uuid, destination = %name, attempt = d.delivered, "already delivered; not sending again");
                self.metrics.delivery(name, "created", "already_delivered");
                return Outcome::Ack;
            }
            Err(outcome) => return outcome,
        }
        let alert = match read_alert(enriched, uuid) {
            Ok(alert) => alert,
            Err(outcome) => return outcome,
        };
        // Also the context `remote_id` is rendered in, with the answer added.
        let mut ctx = Context::from_raw(&alert);
        if enriched.events_enabled {
            ctx = crate::later::with_events(ctx, enriched);
        }
        let request = match self.request_for(&alert, uuid, &ctx) {
            Ok(Some(request)) => request,
            Ok(None) => {
                if self.dest.follows_lifecycle() {
                    self.records
                        .mark_not_delivered(uuid, AlertRecord::FILTERED)
                        .await;
                }
                return Outcome::Ack;
            }
            Err(outcome) => return outcome,
        };
        let site = CallSite {
            gate: &self.gate,
            policy: &self.policy,
            stage: Stage::Forward,
            destination: Some(name),
            metrics: &self.metrics,
            what: "delivery",
        };
        let read_answer = self.dest.reads_answers();
        let sent = gated_call(site, d, uuid, || {
            self.attempt(&request, uuid, d.delivered, "created", read_answer)
        })
        .await;
        match sent {
            Ok(answer) => match self.delivered(enriched, uuid, &answer, Some(&ctx), d).await {
                Ok(()) => Outcome::Ack,
                Err(outcome) => outcome,
            },
            Err(outcome) => outcome,
        }
    }
}
