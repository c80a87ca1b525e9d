//! `[nats]`: the connection to NATS and the naming of subjects and streams.

use serde::Deserialize;

use crate::duration::seconds;
use crate::fields::is_name;
use crate::{HumanDuration, Secret};

/// `[nats]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated for a cluster, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// Prefix of every subject and stream (letters, digits, `_`, `-`), so several deployments
    /// (or parallel tests) share one server. Default `alertsync`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Replicas of every stream the services create (1, or 3 on a 3-node cluster). Default 1.
    #[serde(default = "one")]
    pub stream_replicas: usize,
    /// How long alerts are kept in the created/enriched streams; also how long an alert uuid is
    /// remembered as published (the ingest's dedup across sources and restarts). Default 7d.
    #[serde(default = "seconds::<{ 7 * 86400 }>")]
    pub stream_max_age: HumanDuration,
    /// How long dead-letter entries are kept. Default 90d.
    #[serde(default = "seconds::<{ 90 * 86400 }>")]
    pub dlq_max_age: HumanDuration,
    /// Window in which JetStream drops a second publish of the same alert. Default 2m.
    #[serde(default = "seconds::<120>")]
    pub duplicate_window: HumanDuration,
    /// Timeout of every JetStream API call and publish acknowledgement. Default 5s.
    #[serde(default = "seconds::<5>")]
    pub request_timeout: HumanDuration,
    /// Optional user name.
    pub user: Option<String>,
    /// Optional password (use `${VAR}`).
    pub password: Option<Secret>,
    /// Optional token (use `${VAR}`).
    pub token: Option<Secret>,
}

fn default_prefix() -> String {
    "alertsync".into()
}

fn one() -> usize {
    1
}

impl NatsConfig {
    /// Every stage uses `[nats]`: checked whatever the stages.
    pub(crate) fn check(&self, problems: &mut Vec<String>) {
        if !is_name(&self.prefix) {
            problems.push(format!(
                "nats.prefix: {:?} must be letters, digits, `_` or `-`",
                self.prefix
            ));
        }
        if !(1..=5).contains(&self.stream_replicas) {
            problems.push("nats.stream_replicas: must be between 1 and 5".into());
        }
        if self.duplicate_window > self.stream_max_age {
            problems.push("nats.duplicate_window: must not exceed nats.stream_max_age".into());
        }
    }

    pub(crate) fn secrets(&self) -> impl Iterator<Item = String> + '_ {
        [&self.password, &self.token]
            .into_iter()
            .flatten()
            .map(|s| s.expose().to_string())
    }
}
