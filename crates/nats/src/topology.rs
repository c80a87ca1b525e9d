//! Creating the streams and durable pull consumers, idempotently: every service calls this at
//! startup, so any of them may start first.
//!
//! Streams (limits retention, file storage, replicas from `nats.stream_replicas`):
//! - `<PREFIX>_ALERTS_CREATED` on `<prefix>.alerts.created.>` (deduplicated by alert uuid),
//!   `<prefix>.alerts.updated.>` and `<prefix>.alerts.comment.>` (one subject per update or
//!   comment): what happened to alerts, in the order the ingest saw it;
//! - `<PREFIX>_ALERTS_ENRICHED` on `<prefix>.alerts.enriched.>` and
//!   `<prefix>.replay.forward.>` (alerts replayed from the DLQ for one destination);
//! - `<PREFIX>_WRITEBACK` on `<prefix>.writeback.>`: what is to be written back to Sekoia
//!   alerts (after a delivery, or for a tool's notification), one subject per write-back;
//! - `<PREFIX>_DLQ` on `<prefix>.dlq.>`, kept `nats.dlq_max_age` so operators can inspect and
//!   replay entries by sequence.
//!
//! And the KV bucket `<PREFIX>_DELIVERED` of delivery records (see
//! [`Topology::ensure_delivery_records`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alertsync_config::NatsConfig;
use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    kv,
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};

use crate::Subjects;

/// Metadata key of the created stream: since when (epoch seconds) it holds at most one
/// message per alert.
pub const ONE_PER_ALERT_SINCE: &str = "alertsync.one_message_per_alert_since";

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
        // The created stream records since when it holds at most one message per alert (on the
        // alert's own subject): from its creation, or, for a stream an older version created
        // (one subject per community, where an alert could be stored again), from the first
        // start of a version that publishes so.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_secs());
        self.ensure_stream(
            s.created_stream(),
            vec![s.created_all(), s.updated_all(), s.comment_all()],
            age,
            dup,
            Some((ONE_PER_ALERT_SINCE, now.to_string())),
        )
        .await?;
        self.ensure_stream(
            s.enriched_stream(),
            vec![s.enriched_all(), s.replay_forward_all()],
            age,
            dup,
            None,
        )
        .await?;
        self.ensure_stream(
            s.writeback_stream(),
            vec![s.writeback_all()],
            age,
            dup,
            None,
        )
        .await?;
        self.ensure_stream(
            s.dead_letter_stream(),
            vec![s.dead_letter_all()],
            self.nats.dlq_max_age.get(),
            dup,
            None,
        )
        .await
    }

    /// Since when the created stream holds every alert published to it, at most once each:
    /// the later of the time it started holding one message per alert
    /// ([`Topology::ensure_streams`] records it) and the time of its oldest message (older
    /// ones expired, or were purged); when it is empty, the time of the last message it
    /// stored (everything up to it is gone). `None` when the stream does not say (not marked
    /// yet).
    ///
    /// An alert that Sekoia created after that time cannot have been published before without
    /// the stream still holding it: the ingest would have been told "duplicate".
    pub async fn created_stream_complete_since(&self) -> Result<Option<SystemTime>, TopologyError> {
        let name = self.subjects.created_stream();
        let err = |reason: String| TopologyError {
            what: format!("stream {name}"),
            reason,
        };
        let mut stream = self
            .js
            .get_stream(&name)
            .await
            .map_err(|e| err(e.to_string()))?;
        let info = stream.info().await.map_err(|e| err(e.to_string()))?;
        let Some(marked) = info
            .config
            .metadata
            .get(ONE_PER_ALERT_SINCE)
            .and_then(|v| v.parse::<u64>().ok())
        else {
            return Ok(None);
        };
        let marked = UNIX_EPOCH + Duration::from_secs(marked);
        let oldest = if info.state.messages == 0 {
            // Zero (the year 1) when it never stored anything: then the mark decides.
            SystemTime::from(info.state.last_timestamp) + Duration::from_secs(1)
        } else {
            SystemTime::from(info.state.first_timestamp)
        };
        Ok(Some(marked.max(oldest)))
    }

    async fn ensure_stream(
        &self,
        name: String,
        subjects: Vec<String>,
        max_age: Duration,
        duplicate_window: Duration,
        mark: Option<(&str, String)>,
    ) -> Result<(), TopologyError> {
        let err = |reason: String| TopologyError {
            what: format!("stream {name}"),
            reason,
        };
        let mut wanted = stream::Config {
            name: name.clone(),
            subjects,
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            num_replicas: self.nats.stream_replicas,
            max_age,
            duplicate_window,
            ..Default::default()
        };
        // A metadata entry set once, when the stream is created or first lacks it, and then
        // kept as it is.
        if let Some((key, value)) = &mark {
            wanted.metadata.insert(key.to_string(), value.clone());
        }
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
        let unmarked = mark
            .as_ref()
            .is_some_and(|(key, _)| !current.metadata.contains_key(*key));
        if current.num_replicas != wanted.num_replicas
            || current.max_age != wanted.max_age
            || current.duplicate_window != wanted.duplicate_window
            || current.subjects != wanted.subjects
            || unmarked
        {
            let mut updated = stream::Config {
                num_replicas: wanted.num_replicas,
                max_age: wanted.max_age,
                duplicate_window: wanted.duplicate_window,
                subjects: wanted.subjects,
                ..current
            };
            if let Some((key, value)) = mark {
                updated.metadata.entry(key.to_string()).or_insert(value);
            }
            self.js
                .update_stream(updated)
                .await
                .map_err(|e| err(e.to_string()))?;
        }
        Ok(())
    }

    /// Opens the key-value bucket `<PREFIX>_<name>`, creating it when missing. `max_age`
    /// bounds how long each entry lives (`None`: forever).
    pub async fn ensure_kv(
        &self,
        name: &str,
        max_age: Option<Duration>,
    ) -> Result<jetstream::kv::Store, TopologyError> {
        let bucket = format!("{}_{name}", self.subjects.stream_base());
        let err = |reason: String| TopologyError {
            what: format!("key-value bucket {bucket}"),
            reason,
        };
        if let Ok(store) = self.js.get_key_value(&bucket).await {
            return Ok(store);
        }
        let created = self
            .js
            .create_key_value(jetstream::kv::Config {
                bucket: bucket.clone(),
                history: 1,
                max_age: max_age.unwrap_or_default(),
                storage: StorageType::File,
                num_replicas: self.nats.stream_replicas,
                ..Default::default()
            })
            .await;
        match created {
            Ok(store) => Ok(store),
            // Another replica created it between our get and create.
            Err(e) => self
                .js
                .get_key_value(&bucket)
                .await
                .map_err(|_| err(e.to_string())),
        }
    }

    /// Creates (or updates in place) a durable pull consumer and returns it.
    pub async fn ensure_consumer(
        &self,
        spec: &ConsumerSpec,
    ) -> Result<PullConsumer, TopologyError> {
        self.ensure_consumer_with_filters(spec, &[]).await
    }

    /// Like [`Topology::ensure_consumer`], with more subject filters besides `spec.filter`
    /// (a destination's consumer also reads its own replay subject).
    pub async fn ensure_consumer_with_filters(
        &self,
        spec: &ConsumerSpec,
        extra_filters: &[String],
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
        // One filter goes in `filter_subject`, several in `filter_subjects` (server 2.10+).
        let (filter_subject, filter_subjects) = if extra_filters.is_empty() {
            (spec.filter.clone(), Vec::new())
        } else {
            let mut all = vec![spec.filter.clone()];
            all.extend(extra_filters.iter().cloned());
            (String::new(), all)
        };
        stream
            .create_consumer(pull::Config {
                durable_name: Some(spec.name.clone()),
                filter_subject,
                filter_subjects,
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

    /// Creates the KV bucket of delivery records (or updates its retention and replicas) and
    /// returns it. Records expire after `max_age`.
    ///
    /// The bucket's stream is created here rather than with `create_key_value`, which needs
    /// account information that servers before 2.10.8 do not send; the shape is the one
    /// async-nats gives a bucket with `history = 1`.
    pub async fn ensure_delivery_records(
        &self,
        max_age: Duration,
    ) -> Result<kv::Store, TopologyError> {
        let bucket = self.subjects.delivery_records_bucket();
        let err = |reason: String| TopologyError {
            what: format!("KV bucket {bucket}"),
            reason,
        };
        let wanted = stream::Config {
            name: format!("KV_{bucket}"),
            description: Some("alertsync delivery records: destination.alert-uuid".into()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age,
            storage: StorageType::File,
            num_replicas: self.nats.stream_replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: DiscardPolicy::New,
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
        if current.num_replicas != wanted.num_replicas || current.max_age != wanted.max_age {
            let updated = stream::Config {
                num_replicas: wanted.num_replicas,
                max_age: wanted.max_age,
                ..current
            };
            self.js
                .update_stream(updated)
                .await
                .map_err(|e| err(e.to_string()))?;
        }
        self.js
            .get_key_value(&bucket)
            .await
            .map_err(|e| err(e.to_string()))
    }
}
