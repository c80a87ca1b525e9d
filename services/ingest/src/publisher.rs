//! Publishing a notification exactly once, whatever source saw it and whenever.
//!
//! Creations, updates and comments each have their own subjects (see
//! [`alertsync_nats::Subjects`]): `created.<alert>`, `updated.<alert>.<event id>`,
//! `comment.<alert>.<comment uuid>`. What follows, said of creations, holds for each.
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

use crate::events::{AlertEvent, Happened};

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Published: the first sighting.
    Published,
    /// Already published before.
    Duplicate,
    /// Not handled: its community is not in `sekoia.communities`.
    OtherCommunity,
    /// Not handled: its kind is not in `ingest.events`.
    OtherKind,
}

/// The one way alert-created events enter the pipeline.
pub struct Publisher {
    js: jetstream::Context,
    subjects: Subjects,
    communities: Vec<String>,
    kinds: Vec<v1::EventKind>,
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
    /// A publisher limited to `communities` when not empty, taking the notification `kinds`.
    pub fn new(
        js: jetstream::Context,
        subjects: Subjects,
        communities: Vec<String>,
        kinds: Vec<v1::EventKind>,
        metrics: Metrics,
    ) -> Self {
        Self {
            js,
            subjects,
            communities,
            kinds,
            metrics,
        }
    }

    /// Whether notifications of `kind` are taken.
    pub fn takes(&self, kind: v1::EventKind) -> bool {
        self.kinds.contains(&kind)
    }

    /// The subject of `event` and its message id.
    fn subject_of(&self, event: &AlertEvent) -> (String, String) {
        let uuid = &event.alert_uuid;
        match &event.happened {
            Happened::Created => (self.subjects.created(uuid), uuid.clone()),
            Happened::Updated { event_id, .. } => (
                self.subjects.updated(uuid, event_id),
                format!("updated:{uuid}:{event_id}"),
            ),
            Happened::Comment(c) => (
                self.subjects.comment(uuid, &c.uuid),
                format!("comment:{uuid}:{}", c.uuid),
            ),
        }
    }

    /// Publishes `event` unless it was already published; errors mean it may not be stored
    /// (the caller retries or answers 503).
    pub async fn publish(
        &self,
        event: &AlertEvent,
        source: v1::Source,
    ) -> Result<Verdict, PublishError> {
        let (subject, msg_id) = self.subject_of(event);
        let span = alertsync_telemetry::publish_span(&subject, &event.alert_uuid, &event.short_id);
        span.record("alertsync.source", source_name(source));
        span.record("alertsync.kind", event.kind().label());
        let verdict = self
            .publish_in_span(event, source, subject, msg_id)
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
        msg_id: String,
    ) -> Result<Verdict, PublishError> {
        let name = source_name(source);
        let kind = event.kind().label();
        self.metrics.received(name, kind);
        if !self.takes(event.kind()) {
            self.metrics
                .filtered(alertsync_proto::Stage::Ingest, None, "kind");
            return Ok(Verdict::OtherKind);
        }
        if !self.communities.is_empty()
            && !event.community_uuid.is_empty()
            && !self.communities.contains(&event.community_uuid)
        {
            self.metrics
                .filtered(alertsync_proto::Stage::Ingest, None, "community");
            return Ok(Verdict::OtherCommunity);
        }
        let mut msg = v1::AlertNotification {
            alert_uuid: event.alert_uuid.clone(),
            short_id: event.short_id.clone(),
            community_uuid: event.community_uuid.clone(),
            source: source as i32,
            received_at: Some(time::now()),
            kind: event.kind() as i32,
            ..Default::default()
        };
        match &event.happened {
            Happened::Created => {}
            Happened::Updated { updated, event_id } => {
                msg.updated_json = updated.clone();
                msg.event_id = event_id.clone();
            }
            Happened::Comment(c) => msg.comment = Some(c.clone()),
        }
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
            &msg_id,
            Some(headers),
            msg.encode_to_vec().into(),
        )
        .await?;
        if stored.duplicate {
            self.metrics.duplicate(name, kind);
            Ok(Verdict::Duplicate)
        } else {
            self.metrics.published(name, kind);
            tracing::debug!(alert.uuid = %event.alert_uuid, source = name, kind, "alert published");
            Ok(Verdict::Published)
        }
    }
}
