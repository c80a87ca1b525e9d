//! Publishing an alert-created event exactly once, whatever source saw it and whenever.
//!
//! JetStream's `Nats-Msg-Id` window (minutes) catches sources racing each other; a KV record of
//! published uuids (`<PREFIX>_SEEN`, kept `ingest.seen_retention`) catches a source seeing the
//! same alert hours later. The record is written after the publish is acknowledged, never
//! before: a crash in between can at worst publish again (the forwarder's idempotency key
//! covers it), never lose the alert.

use alertsync_jetstream::{
    Subjects,
    async_nats::jetstream::{self, kv},
    publish::{PublishError, publish_acked},
};
use alertsync_proto::{Message as _, time, v1};
use alertsync_telemetry::Metrics;

use tracing::Instrument as _;

use crate::events::AlertEvent;

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Published: the first sighting.
    Published,
    /// Already published before.
    Duplicate,
    /// Not handled: its community is not in `sekoia.communities`.
    OtherCommunity,
}

/// The one way alert-created events enter the pipeline.
pub struct Publisher {
    js: jetstream::Context,
    subjects: Subjects,
    seen: kv::Store,
    communities: Vec<String>,
    metrics: Metrics,
}

/// Short, bounded name of a source, for metrics and the seen record.
pub fn source_name(source: v1::Source) -> &'static str {
    match source {
        v1::Source::Webhook => "webhook",
        v1::Source::Live => "live",
        v1::Source::Poll => "poll",
        v1::Source::Replay => "replay",
        v1::Source::Unspecified => "unspecified",
    }
}

impl Publisher {
    /// A publisher recording sightings in `seen`, limited to `communities` when not empty.
    pub fn new(
        js: jetstream::Context,
        subjects: Subjects,
        seen: kv::Store,
        communities: Vec<String>,
        metrics: Metrics,
    ) -> Self {
        Self {
            js,
            subjects,
            seen,
            communities,
            metrics,
        }
    }

    /// Publishes `event` unless it was already published; errors mean it may not be stored
    /// (the caller retries or answers 503).
    pub async fn publish(
        &self,
        event: &AlertEvent,
        source: v1::Source,
    ) -> Result<Verdict, PublishError> {
        let subject = self.subjects.created(&event.community_uuid);
        let span = tracing::info_span!(
            "publish",
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.operation.type = "send",
            messaging.destination.name = %subject,
            alert.uuid = %event.alert_uuid,
            alert.short_id = %event.short_id,
            alertsync.source = source_name(source),
            alertsync.duplicate = tracing::field::Empty,
        );
        let verdict = self
            .publish_in_span(event, source, subject)
            .instrument(span.clone())
            .await;
        if let Ok(v) = &verdict {
            span.record("alertsync.duplicate", *v == Verdict::Duplicate);
        }
        verdict
    }

    async fn publish_in_span(
        &self,
        event: &AlertEvent,
        source: v1::Source,
        subject: String,
    ) -> Result<Verdict, PublishError> {
        let name = source_name(source);
        self.metrics.received(name);
        if !self.communities.is_empty()
            && !event.community_uuid.is_empty()
            && !self.communities.contains(&event.community_uuid)
        {
            self.metrics.filtered("ingest", "", "community");
            return Ok(Verdict::OtherCommunity);
        }
        match self.seen.get(&event.alert_uuid).await {
            Ok(Some(_)) => {
                self.metrics.duplicate(name);
                return Ok(Verdict::Duplicate);
            }
            Ok(None) => {}
            // JetStream's own dedup still covers recent repeats: go on.
            Err(e) => tracing::warn!(error = %e, "cannot read the seen-alerts record"),
        }
        let msg = v1::AlertCreated {
            alert_uuid: event.alert_uuid.clone(),
            short_id: event.short_id.clone(),
            community_uuid: event.community_uuid.clone(),
            source: source as i32,
            received_at: Some(time::now()),
        };
        let mut headers = alertsync_jetstream::async_nats::HeaderMap::new();
        alertsync_telemetry::propagation::inject_nats(&mut headers);
        let stored = publish_acked(
            &self.js,
            subject,
            &event.alert_uuid,
            Some(headers),
            msg.encode_to_vec().into(),
        )
        .await?;
        if let Err(e) = self.seen.put(&event.alert_uuid, name.into()).await {
            tracing::warn!(alert.uuid = %event.alert_uuid, error = %e, "cannot record the alert as seen");
        }
        if stored.duplicate {
            self.metrics.duplicate(name);
            Ok(Verdict::Duplicate)
        } else {
            self.metrics.published(name);
            tracing::debug!(alert.uuid = %event.alert_uuid, source = name, "alert published");
            Ok(Verdict::Published)
        }
    }
}
