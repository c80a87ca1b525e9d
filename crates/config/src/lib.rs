//! The one configuration file of alertsync (`alertsync.toml`), shared by every service: each
//! service reads its own part.
//!
//! - [`Config`] holds the sections, one module each (`nats`, `sekoia`, `ingest`, `enricher`,
//!   `forwarder`, `destinations` with its filter, and `retry`, the retry shape they share):
//!   they are the operator's manual, every field is documented there.
//! - [`Config::load`] reads a file, expands `${VAR}` from the environment (module
//!   `interpolate`), moves deprecated keys to their new spelling (listing them in
//!   [`Config::deprecations`]), deserializes (unknown fields are errors) and validates what
//!   the given [`Stage`]s need, with messages that name the field.
//! - [`Config::ingest_settings`], [`Config::enricher_settings`],
//!   [`Config::forwarder_settings`] (module `settings`) hand each stage its validated
//!   sections, with no optional section left to check.
//! - [`Redactor`] (module `redact`) knows every secret of the file, so services can scrub them
//!   out of logs, errors and dead-letter entries; [`Secret`] is a value never printed.
//! - [`HumanDuration`] parses `"500ms"`, `"10s"`, `"5m"`, `"7d"`.

mod destinations;
mod duration;
mod enricher;
mod fields;
mod forwarder;
mod ingest;
mod interpolate;
mod nats;
mod redact;
mod retry;
mod secret;
mod sekoia;
mod settings;

use std::path::Path;

use serde::Deserialize;

pub use destinations::{
    AfterCreate, Change, DestinationConfig, DestinationFilter, LaterRequest, Method, SyncBack,
    UrlTemplate, is_credential_header,
};
pub use duration::HumanDuration;
pub use enricher::{EnricherConfig, EventsConfig, OnFailure};
pub use fields::IN_FLIGHT;
pub use forwarder::ForwarderConfig;
pub use ingest::{EventKindName, IngestConfig};
pub use interpolate::{TEMPLATE_VALUES, TemplateValues};
pub use nats::NatsConfig;
pub use redact::{REDACTED, Redactor};
pub use retry::RetryConfig;
pub use secret::Secret;
pub use sekoia::SekoiaConfig;
pub use settings::{EnricherSettings, ForwarderSettings, IngestSettings};

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

/// The whole `alertsync.toml`. A stage reads its part through its settings
/// ([`Config::enricher_settings`]…); tools that look at whatever is there (`alertsync check`,
/// `render`) read the sections.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// NATS connection and subject naming.
    pub nats: NatsConfig,
    /// Sekoia.io API access (enricher; ingest's live socket and poller).
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
    /// One line per deprecated spelling the file uses, naming the new one (`enricher.
    /// retry_base_delay is deprecated; use enricher.retry.base_delay`), for the service to
    /// log once logging is up. Only for the sections the loaded stages read.
    #[serde(skip)]
    pub deprecations: Vec<String>,
    /// Values from the environment that the destination templates read as data
    /// (`{{ env['NAME'] }}`, see [`TemplateValues`]): give them to the template engine as the
    /// global [`TEMPLATE_VALUES`].
    #[serde(skip)]
    pub template_values: TemplateValues,
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
        let mut table: toml::Table = text.parse().map_err(parse_err)?;
        let mut needed: Vec<&str> = stages.iter().flat_map(|s| s.sections()).copied().collect();
        if stages.contains(&Stage::Ingest) && ingest::raw_uses_sekoia(&table) {
            needed.push("sekoia");
        }
        let mut expanded = interpolate::Expanded::default();
        for (key, value) in table.iter_mut() {
            // A section the running stages don't use may reference variables that are unset
            // where this stage runs (the ingest pod has no Sekoia key): don't fail on those.
            let report = needed.contains(&key.as_str());
            interpolate::expand(value, key, env, report, &mut expanded);
        }
        let interpolate::Expanded {
            mut problems,
            mut secrets,
            template_values,
        } = expanded;
        let mut deprecations = Vec::new();
        enricher::migrate_flat_retry_keys(
            &mut table,
            stages.contains(&Stage::Enricher),
            &mut deprecations,
            &mut problems,
        );
        let mut cfg: Config = toml::Value::Table(table).try_into().map_err(parse_err)?;
        cfg.check_common(&mut problems);
        for stage in stages {
            match stage {
                Stage::Ingest => drop(cfg.check_ingest(&mut problems)),
                Stage::Enricher => drop(cfg.check_enricher(&mut problems)),
                Stage::Forwarder => drop(cfg.check_forwarder(&mut problems)),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: None,
                problems,
            });
        }
        secrets.extend(cfg.known_secrets());
        cfg.redactor = Redactor::new(secrets);
        cfg.deprecations = deprecations;
        cfg.template_values = template_values;
        Ok(cfg)
    }

    fn known_secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = self.nats.secrets().collect();
        if let Some(s) = &self.sekoia {
            out.push(s.api_key.expose().to_string());
        }
        if let Some(i) = &self.ingest {
            out.push(i.webhook_token.expose().to_string());
        }
        for d in &self.destinations {
            out.extend(d.secrets());
        }
        out
    }

    /// The notification kinds the ingest takes: `ingest.events` when set; otherwise
    /// creations, and updates or comments when some destination has `on_update` or
    /// `on_comment`.
    pub fn ingest_kinds(&self) -> Vec<EventKindName> {
        if let Some(kinds) = self.ingest.as_ref().and_then(|i| i.events.clone()) {
            return kinds;
        }
        let mut kinds = vec![EventKindName::Created];
        if self.destinations.iter().any(|d| d.on_update.is_some()) {
            kinds.push(EventKindName::Updated);
        }
        if self.destinations.iter().any(|d| d.on_comment.is_some()) {
            kinds.push(EventKindName::Comment);
        }
        kinds
    }

    /// The destination called `name`.
    pub fn destination(&self, name: &str) -> Option<&DestinationConfig> {
        self.destinations.iter().find(|d| d.name == name)
    }
}

fn parse_err(e: toml::de::Error) -> ConfigError {
    ConfigError::Parse {
        path: None,
        message: e.to_string().trim_end().to_string(),
    }
}
