//! Dead-letter entries: what a stage publishes when it gives up on a message, so nothing is
//! ever dropped silently. Entries go to `<prefix>.dlq.<stage>[.<destination>]` and are kept in
//! the DLQ stream (limits retention) for inspection and replay.

use std::time::SystemTime;

use alertsync_config::Redactor;
use alertsync_nats::publish::{PublishError, publish_acked};
use alertsync_proto::{DeadLetterClass, Message as _, Stage, time, v1::DeadLetter};
use alertsync_telemetry::Metrics;
use async_nats::jetstream;

use crate::worker::Delivery;

/// Publishes dead letters for one stage (and destination).
#[derive(Clone)]
pub struct DeadLetters {
    js: jetstream::Context,
    subject: String,
    stage: Stage,
    destination: Option<String>,
    redactor: Redactor,
    metrics: Metrics,
}

impl DeadLetters {
    /// A publisher to `subject` for `stage` (and `destination`, for the forwarder), counting
    /// each stored entry in `metrics`.
    pub fn new(
        js: jetstream::Context,
        subject: String,
        stage: Stage,
        destination: Option<&str>,
        redactor: Redactor,
        metrics: Metrics,
    ) -> Self {
        Self {
            js,
            subject,
            stage,
            destination: destination.map(str::to_string),
            redactor,
            metrics,
        }
    }

    /// The JetStream context entries are published with (the stage's connection).
    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Publishes the entry for `delivery` and waits for JetStream to store it, then counts it
    /// (only then: a failed publish is followed by a redelivery, which would count the same
    /// message twice). The reason is redacted here, whatever the caller passed.
    pub async fn publish(
        &self,
        delivery: &Delivery,
        class: DeadLetterClass,
        reason: &str,
        last_status: Option<u16>,
        alert_uuid: &str,
    ) -> Result<(), PublishError> {
        let entry = DeadLetter {
            stage: self.stage.as_str().to_string(),
            destination: self.destination.clone().unwrap_or_default(),
            reason: self.redactor.redact(reason),
            last_http_status: last_status.map(u32::from).unwrap_or(0),
            attempts: delivery.delivered,
            first_attempt_at: Some(time::from_system(delivery.published)),
            last_attempt_at: Some(time::from_system(SystemTime::now())),
            original_subject: delivery.subject.clone(),
            original_payload: delivery.payload.to_vec(),
            alert_uuid: alert_uuid.to_string(),
            original_sequence: delivery.stream_sequence,
        };
        // The same failed message dead-lettered twice (a crash between publish and ack) is
        // stored once.
        let msg_id = format!(
            "dlq:{}:{}:{}",
            delivery.stream,
            self.destination.as_deref().unwrap_or_default(),
            delivery.stream_sequence
        );
        // Published inside the message's process span: the dead letter joins the alert's trace.
        let mut headers = async_nats::HeaderMap::new();
        alertsync_telemetry::propagation::inject_nats(&mut headers);
        publish_acked(
            &self.js,
            self.subject.clone(),
            &msg_id,
            Some(headers),
            entry.encode_to_vec().into(),
        )
        .await?;
        self.metrics
            .dead_lettered(self.stage, self.destination.as_deref(), class);
        Ok(())
    }
}
