//! The one configuration file of alertsync (`alertsync.toml`), shared by every service: each
//! service reads its own part.
//!
//! - [`Config`] and its sections are the operator's manual: every field is documented here.
//! - [`Config::load`] reads a file, expands `${VAR}` from the environment (see
//!   `interpolate`), deserializes (unknown fields are errors) and validates what the given
//!   [`Stage`]s need, with messages that name the field.
//! - [`Redactor`] (module `redact`) knows every secret of the file, so services can scrub them
//!   out of logs, errors and dead-letter entries.
//! - [`Duration`] parses `"500ms"`, `"10s"`, `"5m"`, `"7d"`.

mod interpolate;
mod redact;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use redact::{REDACTED, Redactor};

/// Environment variable naming the configuration file when `--config` is not given.
pub const CONFIG_ENV: &str = "ALERTSYNC_CONFIG";

/// A service of the pipeline; each validates only the sections it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Receives alert-created events.
    Ingest,
    /// Calls Get Alert.
    Enricher,
    /// Delivers to destinations.
    Forwarder,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 3] = [Stage::Ingest, Stage::Enricher, Stage::Forwarder];

    fn sections(self) -> &'static [&'static str] {
        match self {
            Stage::Ingest => &["nats", "ingest"],
            Stage::Enricher => &["nats", "sekoia", "enricher"],
            Stage::Forwarder => &["nats", "forwarder", "destinations"],
        }
    }
}

/// A configuration problem, naming the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("invalid config{}: {message}", in_path(.path))]
    Parse {
        /// The file, when read from one.
        path: Option<String>,
        /// The parser's message (names the key, line and column).
        message: String,
    },
    /// One or more fields are invalid.
    #[error("invalid config{}:\n  - {}", in_path(.path), .problems.join("\n  - "))]
    Invalid {
        /// The file, when read from one.
        path: Option<String>,
        /// One line per problem, each starting with the field path.
        problems: Vec<String>,
    },
}

fn in_path(p: &Option<String>) -> String {
    p.as_ref().map(|p| format!(" in {p}")).unwrap_or_default()
}

/// The whole `alertsync.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// NATS connection and subject naming.
    pub nats: NatsConfig,
    /// Sekoia.io API access (enricher).
    pub sekoia: Option<SekoiaConfig>,
    /// The ingest service.
    pub ingest: Option<IngestConfig>,
    /// The enricher service.
    #[serde(default)]
    pub enricher: EnricherConfig,
    /// The forwarder service.
    #[serde(default)]
    pub forwarder: ForwarderConfig,
    /// Where alerts are delivered: one `[[destinations]]` table each.
    #[serde(default)]
    pub destinations: Vec<DestinationConfig>,
    /// Every secret of this file (values from `${VAR}`, keys, tokens, credential headers).
    #[serde(skip)]
    pub redactor: Redactor,
}

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
    /// Replicas of every stream the services create (1, or 3 on a 3-node cluster).
    #[serde(default = "one")]
    pub stream_replicas: usize,
    /// How long alerts are kept in the created/enriched streams; also how long an alert uuid is
    /// remembered as published (the ingest's dedup across sources and restarts).
    #[serde(default = "seven_days")]
    pub stream_max_age: Duration,
    /// How long dead-letter entries are kept.
    #[serde(default = "ninety_days")]
    pub dlq_max_age: Duration,
    /// Window in which JetStream drops a second publish of the same alert.
    #[serde(default = "two_minutes")]
    pub duplicate_window: Duration,
    /// Timeout of every JetStream API call and publish acknowledgement.
    #[serde(default = "five_seconds")]
    pub request_timeout: Duration,
    /// Optional user name.
    pub user: Option<String>,
    /// Optional password (use `${VAR}`).
    pub password: Option<Secret>,
    /// Optional token (use `${VAR}`).
    pub token: Option<Secret>,
}

/// `[sekoia]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SekoiaConfig {
    /// API base URL: `https://api.sekoia.io` (FRA1) or `https://app.<region>.sekoia.io/api`.
    pub base_url: url::Url,
    /// API key with the "View alerts" permission (use `${SEKOIA_API_KEY}`).
    pub api_key: Secret,
    /// Timeout of one API call.
    #[serde(default = "ten_seconds")]
    pub timeout: Duration,
    /// LiveAPI websocket URL. Default: derived from `base_url` as Sekoia does
    /// (`https://api.sekoia.io` → `wss://app.sekoia.io/live/`,
    /// `https://app.<region>.sekoia.io/api` → `wss://app.<region>.sekoia.io/live/`).
    pub live_url: Option<url::Url>,
    /// Only alerts of these communities (uuids) are handled, by every source (MSSP setups).
    /// Empty: all communities the key can see.
    #[serde(default)]
    pub communities: Vec<String>,
    /// How often the key is checked with `GET /v1/me` while it is accepted.
    #[serde(default = "five_minutes")]
    pub key_check_interval: Duration,
    /// How often it is checked again while Sekoia rejects it.
    #[serde(default = "thirty_seconds")]
    pub rejected_key_retry: Duration,
}

/// `[ingest]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Listen address of the webhook and health endpoints (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Bearer token that webhook callers must send (use `${ALERTSYNC_WEBHOOK_TOKEN}`).
    pub webhook_token: Secret,
    /// Listen to the Sekoia LiveAPI websocket (needs `[sekoia]`).
    #[serde(default = "yes")]
    pub live: bool,
    /// Reconnect when nothing at all (message or pong) arrived on the socket for this long.
    #[serde(default = "ninety_seconds")]
    pub live_idle_timeout: Duration,
    /// Largest delay between two reconnection attempts (exponential with full jitter up to it).
    #[serde(default = "one_minute")]
    pub live_reconnect_max_delay: Duration,
    /// How often the catch-up poller lists recent alerts (`0` disables it; needs `[sekoia]`).
    #[serde(default = "one_minute")]
    pub poll_interval: Duration,
    /// How far back the poller looks on its very first run.
    #[serde(default = "one_hour")]
    pub poll_lookback: Duration,
    /// Time for a request head to arrive on the listener, from its first byte; also how long
    /// a new connection may stay silent.
    #[serde(default = "ten_seconds")]
    pub webhook_header_timeout: Duration,
    /// Time for a request body to arrive, from the end of its head.
    #[serde(default = "thirty_seconds")]
    pub webhook_body_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request.
    #[serde(default = "one_minute")]
    pub webhook_idle_timeout: Duration,
    /// Connections served at once; more are answered 503. Keep it below the file-descriptor
    /// limit.
    #[serde(default = "listener_connections")]
    pub webhook_max_connections: usize,
    /// Removed: an alert uuid is remembered as published for as long as the created stream
    /// keeps the alert (`nats.stream_max_age`). Accepted only to name it in a startup error.
    #[serde(default)]
    pub seen_retention: Option<Duration>,
}

impl IngestConfig {
    /// Whether a source that needs the Sekoia API (live socket or poller) is on.
    pub fn uses_sekoia(&self) -> bool {
        self.live || !self.poll_interval.get().is_zero()
    }
}

/// `[enricher]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnricherConfig {
    /// Listen address of the health endpoints.
    #[serde(default = "default_enricher_listen")]
    pub listen: SocketAddr,
    /// Alerts fetched from Sekoia at once by this replica (see [`IN_FLIGHT`]).
    #[serde(default = "in_flight")]
    pub concurrency: usize,
    /// Deliveries of one alert before it is dead-lettered (transient errors).
    #[serde(default = "ten")]
    pub max_attempts: u32,
    /// Get Alert answering 404 is retried (a new alert may not be readable yet) this many
    /// times in all before the alert is dead-lettered.
    #[serde(default = "five")]
    pub not_found_attempts: u32,
    /// First retry delay; doubles per attempt.
    #[serde(default = "one_second")]
    pub retry_base_delay: Duration,
    /// Largest retry delay (also caps `Retry-After`).
    #[serde(default = "five_minutes")]
    pub retry_max_delay: Duration,
    /// Transient Get Alert failures in a row (5xx, timeouts, connection errors) that open the
    /// circuit to Sekoia: the enricher stops pulling and holds its alerts, without burning
    /// their attempts, and probes Sekoia until it answers again.
    #[serde(default = "five")]
    pub circuit_failures: u32,
    /// Wait before the first probe of an open circuit (or after a 429 without `Retry-After`
    /// ends); doubled after every failed probe.
    #[serde(default = "five_seconds")]
    pub probe_base_delay: Duration,
    /// Largest wait between two probes.
    #[serde(default = "five_minutes")]
    pub probe_max_delay: Duration,
    /// The Alert Created trigger's `rule_filter`: only alerts whose rule name or rule uuid
    /// equals this are forwarded.
    pub rule_filter: Option<String>,
    /// The trigger's `rule_names_filter`: only alerts whose rule name is in this list (exact,
    /// case-sensitive) are forwarded. With `rule_filter` too, both must pass.
    #[serde(default)]
    pub rule_names_filter: Vec<String>,
}

impl Default for EnricherConfig {
    fn default() -> Self {
        Self {
            listen: default_enricher_listen(),
            concurrency: IN_FLIGHT,
            max_attempts: 10,
            not_found_attempts: 5,
            retry_base_delay: one_second(),
            retry_max_delay: five_minutes(),
            circuit_failures: 5,
            probe_base_delay: five_seconds(),
            probe_max_delay: five_minutes(),
            rule_filter: None,
            rule_names_filter: Vec::new(),
        }
    }
}

/// `[forwarder]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwarderConfig {
    /// Listen address of the health endpoints.
    #[serde(default = "default_forwarder_listen")]
    pub listen: SocketAddr,
    /// How long the record of a delivery (destination + alert uuid, in the NATS KV bucket
    /// `<PREFIX>_DELIVERED`) is kept. An alert redelivered or replayed within this time is
    /// not sent again. At least `nats.stream_max_age`.
    #[serde(default = "thirty_days")]
    pub delivery_record_max_age: Duration,
    /// A destination that rejects our credentials (401/403) or whose circuit opened is probed
    /// again after this wait, doubled after every failed probe.
    #[serde(default = "five_seconds")]
    pub probe_base_delay: Duration,
    /// Largest wait between two probes.
    #[serde(default = "five_minutes")]
    pub probe_max_delay: Duration,
    /// Transient failures in a row (5xx, timeouts, connection errors) that open a
    /// destination's circuit: it stops getting requests except for the probes.
    #[serde(default = "five")]
    pub circuit_failures: u32,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        Self {
            listen: default_forwarder_listen(),
            delivery_record_max_age: thirty_days(),
            probe_base_delay: five_seconds(),
            probe_max_delay: five_minutes(),
            circuit_failures: 5,
        }
    }
}

/// HTTP method of a destination, as Sekoia's Request URL action names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
}

impl Method {
    /// The upper-case method name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// `[[destinations]]`: one external tool.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Name (letters, digits, `_`, `-`): used in subjects, consumer names, metrics and logs.
    pub name: String,
    /// URL to call. Never logged: it may hold a token.
    pub url: url::Url,
    /// HTTP method (`get`, `post`, `put`, `patch`, `delete`). Default `post`.
    #[serde(default = "default_method")]
    pub method: Method,
    /// Request headers; values may be templates. Values are treated as secrets in logs.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body template in Sekoia's syntax (`node.0` = trigger output, `node.1` = the alert).
    /// When the text is itself JSON, each string is rendered on its own and JSON-escaped.
    pub json: Option<String>,
    /// Query parameters; values may be templates.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Timeout of one request.
    #[serde(default = "thirty_seconds")]
    pub timeout: Duration,
    /// Verify the server's TLS certificate.
    #[serde(default = "yes")]
    pub verify_tls: bool,
    /// Requests in flight to this destination from one replica (see [`IN_FLIGHT`]).
    #[serde(default = "in_flight")]
    pub concurrency: usize,
    /// Largest body sent; a larger rendered body is dead-lettered (Sekoia intake: 250000).
    pub max_body_bytes: Option<usize>,
    /// Retry policy.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Which alerts this destination gets (all when empty).
    #[serde(default)]
    pub filter: DestinationFilter,
}

/// `[destinations.filter]`: every set condition must pass.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationFilter {
    /// Minimum `urgency.current_value` (0–100).
    pub min_urgency: Option<u32>,
    /// Entity names or uuids.
    #[serde(default)]
    pub entities: Vec<String>,
    /// Alert types, as `category` or `category/value` (e.g. `intrusions/system-compromise`).
    #[serde(default)]
    pub alert_types: Vec<String>,
    /// Rule names to include (exact).
    #[serde(default)]
    pub rule_names: Vec<String>,
    /// Rule names to exclude (exact).
    #[serde(default)]
    pub exclude_rule_names: Vec<String>,
    /// Community uuids.
    #[serde(default)]
    pub communities: Vec<String>,
}

impl std::fmt::Debug for DestinationConfig {
    // Header values, the URL (path and query may hold a token) and the body template (it may
    // hold an interpolated intake key) are secrets: print only their shape.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationConfig")
            .field("name", &self.name)
            .field("url_host", &self.url.host_str())
            .field("method", &self.method)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("json_bytes", &self.json.as_ref().map(String::len))
            .field("params", &self.params.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("verify_tls", &self.verify_tls)
            .field("concurrency", &self.concurrency)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("retry", &self.retry)
            .field("filter", &self.filter)
            .finish()
    }
}

/// `[destinations.retry]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all before the alert is dead-lettered.
    #[serde(default = "ten")]
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt.
    #[serde(default = "one_second")]
    pub base_delay: Duration,
    /// Largest computed retry delay.
    #[serde(default = "five_minutes")]
    pub max_delay: Duration,
    /// Largest wait honoured from a `Retry-After` header.
    #[serde(default = "fifteen_minutes")]
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            base_delay: one_second(),
            max_delay: five_minutes(),
            max_retry_after: fifteen_minutes(),
        }
    }
}

/// A secret string: `Debug` prints `[REDACTED]`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl Secret {
    /// The secret value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(SecretString::from(s.to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A duration written as `"500ms"`, `"10s"`, `"5m"`, `"1h"`, `"7d"` (or `0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// The std duration.
    pub fn get(self) -> std::time::Duration {
        self.0
    }
    /// A duration of `s` seconds.
    pub const fn secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Int(0) => Ok(Duration(std::time::Duration::ZERO)),
            Raw::Int(n) => Err(serde::de::Error::custom(format!(
                "durations need a unit: write \"{n}s\""
            ))),
            Raw::Text(s) => humantime::parse_duration(s.trim())
                .map(Duration)
                .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}"))),
        }
    }
}

impl Config {
    /// Reads, interpolates and validates `path` for the given stages.
    pub fn load(path: &Path, stages: &[Stage]) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &|k| std::env::var(k).ok(), stages).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: Some(path.display().to_string()),
                message,
            },
            ConfigError::Invalid { problems, .. } => ConfigError::Invalid {
                path: Some(path.display().to_string()),
                problems,
            },
            other => other,
        })
    }

    /// Parses config text; `env` resolves `${VAR}` (tests pass a closure, never `set_var`).
    pub fn parse(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        stages: &[Stage],
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| parse_err(e))?;
        let mut needed: Vec<&str> = stages.iter().flat_map(|s| s.sections()).copied().collect();
        if stages.contains(&Stage::Ingest) && ingest_uses_sekoia(&table) {
            needed.push("sekoia");
        }
        let mut problems = Vec::new();
        let mut secrets = Vec::new();
        for (key, value) in table.iter_mut() {
            // A section the running stages don't use may reference variables that are unset
            // where this stage runs (the ingest pod has no Sekoia key): don't fail on those.
            let report = needed.contains(&key.as_str());
            expand(value, key, env, report, &mut problems, &mut secrets);
        }
        let mut cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| parse_err(e))?;
        cfg.validate(stages, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: None,
                problems,
            });
        }
        secrets.extend(cfg.known_secrets());
        cfg.redactor = Redactor::new(secrets);
        Ok(cfg)
    }

    fn known_secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(s) = &self.sekoia {
            out.push(s.api_key.expose().to_string());
        }
        if let Some(i) = &self.ingest {
            out.push(i.webhook_token.expose().to_string());
        }
        for s in [&self.nats.password, &self.nats.token]
            .into_iter()
            .flatten()
        {
            out.push(s.expose().to_string());
        }
        for d in &self.destinations {
            for (name, value) in &d.headers {
                if is_credential_header(name) {
                    out.push(value.clone());
                    // "Bearer abc…": the token alone may show up elsewhere.
                    if let Some((_, tok)) = value.split_once(' ') {
                        out.push(tok.to_string());
                    }
                }
            }
        }
        out
    }

    fn validate(&self, stages: &[Stage], problems: &mut Vec<String>) {
        if !is_name(&self.nats.prefix) {
            problems.push(format!(
                "nats.prefix: {:?} must be letters, digits, `_` or `-`",
                self.nats.prefix
            ));
        }
        if !(1..=5).contains(&self.nats.stream_replicas) {
            problems.push("nats.stream_replicas: must be between 1 and 5".into());
        }
        if self.nats.duplicate_window > self.nats.stream_max_age {
            problems.push("nats.duplicate_window: must not exceed nats.stream_max_age".into());
        }
        self.validate_sekoia(problems);
        for stage in stages {
            match stage {
                Stage::Ingest => match &self.ingest {
                    None => problems.push("ingest: section [ingest] is required".into()),
                    Some(i) => {
                        if i.webhook_token.expose().len() < 16 {
                            problems.push(
                                "ingest.webhook_token: must be at least 16 characters".into(),
                            );
                        }
                        if i.uses_sekoia() && self.sekoia.is_none() {
                            problems.push(
                                "sekoia: section [sekoia] is required by ingest.live and \
                                 ingest.poll_interval (set live = false and poll_interval = 0 \
                                 for a webhook-only ingest)"
                                    .into(),
                            );
                        }
                        if i.seen_retention.is_some() {
                            problems.push(
                                "ingest.seen_retention: no longer used: an alert is remembered \
                                 as published for as long as the created stream keeps it; set \
                                 nats.stream_max_age instead and remove this line"
                                    .into(),
                            );
                        }
                        for (key, d) in [
                            ("webhook_header_timeout", i.webhook_header_timeout),
                            ("webhook_body_timeout", i.webhook_body_timeout),
                            ("webhook_idle_timeout", i.webhook_idle_timeout),
                        ] {
                            if d.get().is_zero() {
                                problems.push(format!("ingest.{key}: must be more than 0"));
                            }
                        }
                        if i.webhook_max_connections == 0 {
                            problems
                                .push("ingest.webhook_max_connections: must be at least 1".into());
                        }
                        if i.live_idle_timeout.get() < std::time::Duration::from_secs(25) {
                            problems.push(
                                "ingest.live_idle_timeout: must be at least 25s (pings go every 20s)"
                                    .into(),
                            );
                        }
                    }
                },
                Stage::Enricher => {
                    match &self.sekoia {
                        None => problems.push("sekoia: section [sekoia] is required".into()),
                        Some(s) => {
                            if !matches!(s.base_url.scheme(), "http" | "https") {
                                problems.push("sekoia.base_url: must be an http(s) URL".into());
                            }
                            let key = s.api_key.expose();
                            if key.trim().is_empty() {
                                problems.push("sekoia.api_key: must not be empty".into());
                            } else if key.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                                // It goes into the Authorization header, which cannot carry it.
                                problems.push(
                                    "sekoia.api_key: holds a control character (a trailing line break?)"
                                        .into(),
                                );
                            }
                        }
                    }
                    let e = &self.enricher;
                    if e.concurrency == 0 {
                        problems.push("enricher.concurrency: must be at least 1".into());
                    }
                    if e.max_attempts == 0 || e.not_found_attempts == 0 {
                        problems.push(
                            "enricher.max_attempts / enricher.not_found_attempts: must be at least 1"
                                .into(),
                        );
                    }
                    if e.retry_base_delay > e.retry_max_delay {
                        problems.push(
                            "enricher.retry_base_delay: must not exceed enricher.retry_max_delay"
                                .into(),
                        );
                    }
                    validate_circuit(
                        "enricher",
                        e.probe_base_delay,
                        e.probe_max_delay,
                        e.circuit_failures,
                        problems,
                    );
                }
                Stage::Forwarder => {
                    self.validate_forwarder(problems);
                    self.validate_destinations(problems)
                }
            }
        }
    }

    fn validate_sekoia(&self, problems: &mut Vec<String>) {
        let Some(s) = &self.sekoia else { return };
        for (i, c) in s.communities.iter().enumerate() {
            if !is_uuid(c) {
                problems.push(format!("sekoia.communities[{i}]: {c:?} is not a uuid"));
            }
        }
        if let Some(u) = &s.live_url
            && !matches!(u.scheme(), "ws" | "wss")
        {
            problems.push("sekoia.live_url: must be a ws:// or wss:// URL".into());
        }
    }

    fn validate_forwarder(&self, problems: &mut Vec<String>) {
        let f = &self.forwarder;
        if f.delivery_record_max_age < self.nats.stream_max_age {
            problems.push(
                "forwarder.delivery_record_max_age: must be at least nats.stream_max_age \
                 (an alert redelivered after its record expired would be sent again)"
                    .into(),
            );
        }
        validate_circuit(
            "forwarder",
            f.probe_base_delay,
            f.probe_max_delay,
            f.circuit_failures,
            problems,
        );
    }

    fn validate_destinations(&self, problems: &mut Vec<String>) {
        if self.destinations.is_empty() {
            problems.push("destinations: at least one [[destinations]] entry is required".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, d) in self.destinations.iter().enumerate() {
            let at = format!("destinations[{i}] ({})", d.name);
            if !is_name(&d.name) {
                problems.push(format!(
                    "{at}.name: must be letters, digits, `_` or `-` (it names a subject)"
                ));
            }
            if !seen.insert(d.name.as_str()) {
                problems.push(format!("{at}.name: duplicate destination name"));
            }
            if !matches!(d.url.scheme(), "http" | "https") {
                problems.push(format!("{at}.url: must be an http(s) URL"));
            }
            if d.concurrency == 0 {
                problems.push(format!("{at}.concurrency: must be at least 1"));
            }
            if d.timeout.get().is_zero() {
                problems.push(format!("{at}.timeout: must be more than 0"));
            }
            if d.retry.max_attempts == 0 {
                problems.push(format!("{at}.retry.max_attempts: must be at least 1"));
            }
            if d.retry.base_delay > d.retry.max_delay {
                problems.push(format!(
                    "{at}.retry.base_delay: must not exceed retry.max_delay"
                ));
            }
            if let Some(u) = d.filter.min_urgency
                && u > 100
            {
                problems.push(format!(
                    "{at}.filter.min_urgency: must be between 0 and 100"
                ));
            }
            for (j, c) in d.filter.communities.iter().enumerate() {
                if !is_uuid(c) {
                    problems.push(format!("{at}.filter.communities[{j}]: {c:?} is not a uuid"));
                }
            }
            for name in d.headers.keys() {
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b))
                {
                    problems.push(format!("{at}.headers: {name:?} is not a valid header name"));
                }
            }
        }
    }

    /// The destination called `name`.
    pub fn destination(&self, name: &str) -> Option<&DestinationConfig> {
        self.destinations.iter().find(|d| d.name == name)
    }
}

/// Header names whose values are credentials, whatever their source.
pub fn is_credential_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "x-api-key"
    ) || n.contains("token")
        || n.contains("secret")
        || n.contains("key")
        || n.contains("auth")
}

/// Whether `[ingest]` turns on a source that needs `[sekoia]` (read before deserializing, to
/// know which sections' variables must be set).
fn ingest_uses_sekoia(table: &toml::Table) -> bool {
    let Some(ingest) = table.get("ingest").and_then(|v| v.as_table()) else {
        return false;
    };
    let live = ingest.get("live").and_then(|v| v.as_bool()).unwrap_or(true);
    let poll_off = match ingest.get("poll_interval") {
        Some(toml::Value::Integer(0)) => true,
        Some(toml::Value::String(s)) => {
            humantime::parse_duration(s.trim()).is_ok_and(|d| d.is_zero())
        }
        _ => false,
    };
    live || !poll_off
}

fn parse_err(e: toml::de::Error) -> ConfigError {
    ConfigError::Parse {
        path: None,
        message: e.to_string().trim_end().to_string(),
    }
}

/// Interpolates every string below `value`; `path` names the field in errors.
fn expand(
    value: &mut toml::Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    report: bool,
    problems: &mut Vec<String>,
    secrets: &mut Vec<String>,
) {
    match value {
        toml::Value::String(s) => match interpolate::interpolate(s, env) {
            Ok(r) => {
                if report {
                    for var in &r.missing {
                        problems.push(format!(
                            "{path}: environment variable {var} is not set (referenced as ${{{var}}})"
                        ));
                    }
                }
                secrets.extend(r.substituted);
                *s = r.value;
            }
            Err(e) if report => problems.push(format!("{path}: {e}")),
            Err(_) => {}
        },
        toml::Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                expand(v, &format!("{path}[{i}]"), env, report, problems, secrets);
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                expand(v, &format!("{path}.{k}"), env, report, problems, secrets);
            }
        }
        _ => {}
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn default_prefix() -> String {
    "alertsync".into()
}
fn default_method() -> Method {
    Method::Post
}
fn default_enricher_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}
fn default_forwarder_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8082))
}
fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn five() -> u32 {
    5
}
fn ten() -> u32 {
    10
}
/// Default messages in flight per stage worker (Get Alert calls per enricher replica,
/// requests per destination and forwarder replica). A worker never asks JetStream for more
/// messages than it has free handlers, so under a backlog this also sizes its pull requests:
/// with 16, batches of about four cost nats-server a fifth more CPU per alert and the
/// pipeline a tenth of its throughput (BENCHMARKS.md, step 11). 64 is also fewer than the
/// 100 concurrent runs Sekoia's own playbook workers allow. It is also the most alerts one
/// replica can have sent but not yet recorded when it is killed (README, delivery records).
pub const IN_FLIGHT: usize = 64;

fn in_flight() -> usize {
    IN_FLIGHT
}
fn listener_connections() -> usize {
    1024
}
fn ninety_seconds() -> Duration {
    Duration::secs(90)
}
fn one_minute() -> Duration {
    Duration::secs(60)
}
fn one_hour() -> Duration {
    Duration::secs(3600)
}
fn one_second() -> Duration {
    Duration::secs(1)
}
fn five_seconds() -> Duration {
    Duration::secs(5)
}
fn ten_seconds() -> Duration {
    Duration::secs(10)
}
fn thirty_seconds() -> Duration {
    Duration::secs(30)
}
fn two_minutes() -> Duration {
    Duration::secs(120)
}
fn five_minutes() -> Duration {
    Duration::secs(300)
}
fn fifteen_minutes() -> Duration {
    Duration::secs(900)
}
fn seven_days() -> Duration {
    Duration::secs(7 * 86400)
}
fn thirty_days() -> Duration {
    Duration::secs(30 * 86400)
}
fn ninety_days() -> Duration {
    Duration::secs(90 * 86400)
}

/// The circuit settings of `section` (`enricher`, `forwarder`): probes wait more than 0 and
/// at most the largest wait, and at least one failure opens the circuit.
fn validate_circuit(
    section: &str,
    probe_base_delay: Duration,
    probe_max_delay: Duration,
    circuit_failures: u32,
    problems: &mut Vec<String>,
) {
    if probe_base_delay.get().is_zero() || probe_base_delay > probe_max_delay {
        problems.push(format!(
            "{section}.probe_base_delay: must be more than 0 and at most \
             {section}.probe_max_delay"
        ));
    }
    if circuit_failures == 0 {
        problems.push(format!("{section}.circuit_failures: must be at least 1"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"
[nats]
url = "nats://127.0.0.1:4222"
prefix = "alertsync"
[sekoia]
base_url = "https://api.sekoia.io"
api_key = "${SEKOIA_API_KEY}"
[ingest]
listen = "127.0.0.1:8080"
webhook_token = "${ALERTSYNC_WEBHOOK_TOKEN}"
[enricher]
listen = "127.0.0.1:8081"
[forwarder]
listen = "127.0.0.1:8082"
[[destinations]]
name = "soar"
url = "https://soar.example/api/alerts"
method = "post"
headers = { Authorization = "Bearer ${SOAR_API_KEY}" }
json = '''{"alert_short_id":"{{ node.0['alert_uuid'] }}", "rule_name":"{{ node.1['rule']['name'] }}","rule_severity":"{{ node.1['rule']['severity'] }}","description":"This is a description"}'''
"#;

    fn env(k: &str) -> Option<String> {
        match k {
            "SEKOIA_API_KEY" => Some("sekoia-key-123456".into()),
            "ALERTSYNC_WEBHOOK_TOKEN" => Some("webhook-token-abcdefgh".into()),
            "SOAR_API_KEY" => Some("soar-key-987654".into()),
            _ => None,
        }
    }

    #[test]
    fn the_documented_shape_loads_for_every_stage_and_knows_its_secrets() {
        let cfg = Config::parse(ISSUE_EXAMPLE, &env, &Stage::ALL).unwrap();
        assert_eq!(cfg.nats.prefix, "alertsync");
        let d = cfg.destination("soar").unwrap();
        assert_eq!(d.headers["Authorization"], "Bearer soar-key-987654");
        assert_eq!(d.method, Method::Post);
        let text = "key sekoia-key-123456 token webhook-token-abcdefgh soar-key-987654";
        let redacted = cfg.redactor.redact(text);
        assert!(!cfg.redactor.leaks(&redacted), "{redacted}");
        let debug = format!("{cfg:?}");
        for secret in [
            "sekoia-key-123456",
            "webhook-token-abcdefgh",
            "soar-key-987654",
        ] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }

    #[test]
    fn the_shipped_example_config_is_valid_and_its_templates_compile() {
        let text = include_str!("../../../alertsync.example.toml");
        let env = |k: &str| match k {
            "SEKOIA_API_KEY" | "ALERTSYNC_WEBHOOK_TOKEN" | "SOAR_API_KEY" | "SEKOIA_INTAKE_KEY" => {
                Some(format!("{k}-value-for-test"))
            }
            _ => None,
        };
        let cfg = Config::parse(text, &env, &Stage::ALL).unwrap();
        assert_eq!(cfg.destinations.len(), 2);
        assert!(cfg.redactor.leaks("SEKOIA_INTAKE_KEY-value-for-test"));
        assert_eq!(
            cfg.destination("sekoia-intake").unwrap().max_body_bytes,
            Some(250000)
        );
    }

    #[test]
    fn an_api_key_with_a_line_break_is_refused_without_quoting_it() {
        let lookup = |name: &str| (name == "SEKOIA_API_KEY").then(|| "k-123-secret\n".to_string());
        let err = Config::parse(ISSUE_EXAMPLE, &lookup, &[Stage::Enricher]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("sekoia.api_key: holds a control character"),
            "{msg}"
        );
        assert!(!msg.contains("k-123-secret"), "{msg}");
    }

    #[test]
    fn a_missing_variable_names_the_field_and_the_variable() {
        let err = Config::parse(ISSUE_EXAMPLE, &|_| None, &[Stage::Enricher]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("sekoia.api_key: environment variable SEKOIA_API_KEY is not set"),
            "{msg}"
        );
        // The enricher does not care about the webhook token or the SOAR key.
        assert!(!msg.contains("ALERTSYNC_WEBHOOK_TOKEN"), "{msg}");
        assert!(!msg.contains("SOAR_API_KEY"), "{msg}");
    }

    #[test]
    fn unknown_fields_are_named() {
        let text = ISSUE_EXAMPLE.replace("prefix = \"alertsync\"", "prefx = \"x\"");
        let msg = Config::parse(&text, &env, &Stage::ALL)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("prefx"), "{msg}");
    }

    #[test]
    fn invalid_values_name_their_field() {
        let text = ISSUE_EXAMPLE
            .replace("name = \"soar\"", "name = \"so.ar\"")
            .replace("prefix = \"alertsync\"", "prefix = \"a>b\"");
        let msg = Config::parse(&text, &env, &Stage::ALL)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("destinations[0] (so.ar).name"), "{msg}");
        assert!(msg.contains("nats.prefix"), "{msg}");
    }

    #[test]
    fn the_removed_seen_retention_is_named_with_what_replaces_it() {
        let text = ISSUE_EXAMPLE.replace("[ingest]", "[ingest]\nseen_retention = \"30d\"");
        assert_ne!(text, ISSUE_EXAMPLE);
        let msg = Config::parse(&text, &env, &[Stage::Ingest])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("ingest.seen_retention"), "{msg}");
        assert!(msg.contains("nats.stream_max_age"), "{msg}");
        // The other stages do not read [ingest]'s dedup: they still start.
        assert!(Config::parse(&text, &env, &[Stage::Forwarder]).is_ok());
    }

    #[test]
    fn durations_need_units() {
        let text = ISSUE_EXAMPLE.replace(
            "prefix = \"alertsync\"",
            "prefix = \"alertsync\"\nrequest_timeout = 5",
        );
        let msg = Config::parse(&text, &env, &Stage::ALL)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("durations need a unit"), "{msg}");
    }
}
