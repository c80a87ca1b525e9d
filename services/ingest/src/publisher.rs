//! Publishing an alert-created event exactly once, whatever source saw it and whenever.
//!
//! Each alert has its own subject, `<prefix>.alerts.created.<alert uuid>`, and is published
//! there only if that subject holds nothing yet (`Nats-Expected-Last-Subject-Sequence: 0`). So
//! the created stream is itself the record of published alerts, for as long as it keeps them
//! (`nats.stream_max_age`): a source seeing the same alert days later, another ingest replica,
//! or a restarted one, is answered "duplicate" by the server. Checking and storing are one
//! atomic step on the server, so there is no moment where two replicas both see "not yet
//! published", and no record to write after the publish that a crash could cut short.
//! `Nats-Msg-Id = <alert uuid>` is kept: within the duplicate window it answers the same way.

use alertsync_nats::{
    Subjects,
    async_nats::jetstream,
    publish::{PublishError, publish_first},
    subjects::is_uuid_token,
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
    communities: Vec<String>,
    metrics: Metrics,
}

/// Short, bounded name of a source, for metrics and spans.
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
    /// A publisher limited to `communities` when not empty.
    pub fn new(
        js: jetstream::Context,
        subjects: Subjects,
        communities: Vec<String>,
        metrics: Metrics,
    ) -> Self {
        Self {
            js,
            subjects,
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
        let subject = self.subjects.created(&event.alert_uuid);
        let span = alertsync_telemetry::publish_span(&subject, &event.alert_uuid, &event.short_id);
        span.record("alertsync.source", source_name(source));
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
            self.metrics
                .filtered(alertsync_proto::Stage::Ingest, None, "community");
            return Ok(Verdict::OtherCommunity);
        }
        let msg = v1::AlertCreated {
            alert_uuid: event.alert_uuid.clone(),
            short_id: event.short_id.clone(),
            community_uuid: event.community_uuid.clone(),
            source: source as i32,
            received_at: Some(time::now()),
        };
        let mut headers = alertsync_nats::async_nats::HeaderMap::new();
        alertsync_telemetry::propagation::inject_nats(&mut headers);
        // The uuid was validated as a uuid (`AlertEvent`), so it is its subject's own token; the
        // check keeps a future caller from putting every odd uuid on one shared subject, where
        // all but the first would be taken for duplicates.
        if !is_uuid_token(&event.alert_uuid) {
            return Err(PublishError {
                subject,
                reason: "the alert uuid is not a uuid".into(),
                transient: false,
            });
        }
        let stored = publish_first(
            &self.js,
            subject,
            &event.alert_uuid,
            Some(headers),
            msg.encode_to_vec().into(),
        )
        .await?;
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
