//! Creating the streams and durable pull consumers, idempotently: every service calls this at
//! startup, so any of them may start first.
//!
//! Streams (limits retention, file storage, replicas from `nats.stream_replicas`):
//! - `<PREFIX>_ALERTS_CREATED` on `<prefix>.alerts.created.>`, deduplicated by alert uuid;
//! - `<PREFIX>_ALERTS_ENRICHED` on `<prefix>.alerts.enriched.>`;
//! - `<PREFIX>_DLQ` on `<prefix>.dlq.>`, kept `nats.dlq_max_age` so operators can inspect and
//!   replay entries by sequence.

use std::time::Duration;

use alertsync_config::NatsConfig;
use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    stream::{self, RetentionPolicy, StorageType},
};

use crate::Subjects;

/// A stream or consumer could not be created or updated.
#[derive(Debug, thiserror::Error)]
#[error("cannot ensure {what}: {reason}")]
pub struct TopologyError {
    /// Which stream or consumer.
    pub what: String,
    /// Why.
    pub reason: String,
}

/// Settings of one durable pull consumer.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Stream it reads.
    pub stream: String,
    /// Durable name.
    pub name: String,
    /// Subject filter.
    pub filter: String,
    /// How long the server waits for an ack before redelivering: longer than the slowest
    /// handling of one message.
    pub ack_wait: Duration,
    /// Unacknowledged messages in flight for all replicas together.
    pub max_ack_pending: i64,
}

/// Creates what the pipeline needs on one JetStream account.
#[derive(Clone)]
pub struct Topology {
    js: jetstream::Context,
    subjects: Subjects,
    nats: NatsConfig,
}

impl Topology {
    /// Topology for the deployment configured in `nats`.
    pub fn new(js: jetstream::Context, nats: &NatsConfig) -> Self {
        Self {
            js,
            subjects: Subjects::new(&nats.prefix),
            nats: nats.clone(),
        }
    }

    /// The deployment's names.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The JetStream context.
    pub fn context(&self) -> &jetstream::Context {
        &self.js
    }

    /// Creates the three streams, or updates their limits and replicas if the config changed.
    pub async fn ensure_streams(&self) -> Result<(), TopologyError> {
        let s = &self.subjects;
        let dup = self.nats.duplicate_window.get();
        let age = self.nats.stream_max_age.get();
        self.ensure_stream(s.created_stream(), s.created_all(), age, dup)
            .await?;
        self.ensure_stream(s.enriched_stream(), s.enriched_all(), age, dup)
            .await?;
        self.ensure_stream(
            s.dead_letter_stream(),
            s.dead_letter_all(),
            self.nats.dlq_max_age.get(),
            dup,
        )
        .await
    }

    async fn ensure_stream(
        &self,
        name: String,
        subject: String,
        max_age: Duration,
        duplicate_window: Duration,
    ) -> Result<(), TopologyError> {
        let err = |reason: String| TopologyError {
            what: format!("stream {name}"),
            reason,
        };
        let wanted = stream::Config {
            name: name.clone(),
            subjects: vec![subject],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            num_replicas: self.nats.stream_replicas,
            max_age,
            duplicate_window,
            ..Default::default()
        };
        let mut stream = self
            .js
            .get_or_create_stream(wanted.clone())
            .await
            .map_err(|e| err(e.to_string()))?;
        let current = stream
            .info()
            .await
            .map_err(|e| err(e.to_string()))?
            .config
            .clone();
        if current.num_replicas != wanted.num_replicas
            || current.max_age != wanted.max_age
            || current.duplicate_window != wanted.duplicate_window
            || current.subjects != wanted.subjects
        {
            let updated = stream::Config {
                num_replicas: wanted.num_replicas,
                max_age: wanted.max_age,
                duplicate_window: wanted.duplicate_window,
                subjects: wanted.subjects,
                ..current
            };
            self.js
                .update_stream(updated)
                .await
                .map_err(|e| err(e.to_string()))?;
        }
        Ok(())
    }

    /// Creates (or updates in place) a durable pull consumer and returns it.
    pub async fn ensure_consumer(
        &self,
        spec: &ConsumerSpec,
    ) -> Result<PullConsumer, TopologyError> {
        let err = |reason: String| TopologyError {
            what: format!("consumer {} on {}", spec.name, spec.stream),
            reason,
        };
        let stream = self
            .js
            .get_stream(&spec.stream)
            .await
            .map_err(|e| err(e.to_string()))?;
        stream
            .create_consumer(pull::Config {
                durable_name: Some(spec.name.clone()),
                filter_subject: spec.filter.clone(),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ack_wait: spec.ack_wait,
                // Attempts are counted by the handlers (from `delivered`) so that they can
                // dead-letter with a reason; the server must never silently stop redelivering.
                max_deliver: -1,
                max_ack_pending: spec.max_ack_pending,
                ..Default::default()
            })
            .await
            .map_err(|e| err(e.to_string()))
    }
}
