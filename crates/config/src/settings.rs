//! What each stage needs, validated: [`IngestSettings`], [`EnricherSettings`],
//! [`ForwarderSettings`].
//!
//! The checks of a stage are the function that builds its settings, so a service that holds
//! its settings holds sections that passed them, with no optional section left to re-check.
//! [`Config::parse`] runs the same functions for the stages it is given.

use crate::{
    Config, ConfigError, DestinationConfig, EnricherConfig, ForwarderConfig, IngestConfig,
    NatsConfig, SekoiaConfig, destinations,
};

/// What the ingest reads: [`Config::ingest_settings`].
#[derive(Debug, Clone, Copy)]
pub struct IngestSettings<'a> {
    /// `[nats]`
    pub nats: &'a NatsConfig,
    /// `[ingest]`
    pub ingest: &'a IngestConfig,
    /// `[sekoia]` when a source that calls Sekoia (the live socket, the poller) is on;
    /// `None` for a webhook-only ingest.
    pub sekoia: Option<&'a SekoiaConfig>,
    /// `sekoia.communities` (empty without `[sekoia]`): every source, the webhook included,
    /// drops alerts of other communities.
    pub communities: &'a [String],
}

/// What the enricher reads: [`Config::enricher_settings`].
#[derive(Debug, Clone, Copy)]
pub struct EnricherSettings<'a> {
    /// `[nats]`
    pub nats: &'a NatsConfig,
    /// `[sekoia]`, where Get Alert is called.
    pub sekoia: &'a SekoiaConfig,
    /// `[enricher]`
    pub enricher: &'a EnricherConfig,
}

/// What the forwarder reads: [`Config::forwarder_settings`].
#[derive(Debug, Clone, Copy)]
pub struct ForwarderSettings<'a> {
    /// `[nats]`
    pub nats: &'a NatsConfig,
    /// `[forwarder]`
    pub forwarder: &'a ForwarderConfig,
    /// `[[destinations]]`: at least one, names unique.
    pub destinations: &'a [DestinationConfig],
}

impl Config {
    /// The ingest's settings; an error lists every problem of `[nats]`, `[ingest]` and, when
    /// a Sekoia source is on, `[sekoia]`. Never an error for a config parsed for
    /// [`Stage::Ingest`](crate::Stage::Ingest).
    pub fn ingest_settings(&self) -> Result<IngestSettings<'_>, ConfigError> {
        self.settings(Self::check_ingest)
    }

    /// The enricher's settings; never an error for a config parsed for
    /// [`Stage::Enricher`](crate::Stage::Enricher).
    pub fn enricher_settings(&self) -> Result<EnricherSettings<'_>, ConfigError> {
        self.settings(Self::check_enricher)
    }

    /// The forwarder's settings; never an error for a config parsed for
    /// [`Stage::Forwarder`](crate::Stage::Forwarder).
    pub fn forwarder_settings(&self) -> Result<ForwarderSettings<'_>, ConfigError> {
        self.settings(Self::check_forwarder)
    }

    fn settings<'a, T>(
        &'a self,
        check: fn(&'a Config, &mut Vec<String>) -> Option<T>,
    ) -> Result<T, ConfigError> {
        let mut problems = Vec::new();
        self.check_common(&mut problems);
        match check(self, &mut problems) {
            Some(settings) if problems.is_empty() => Ok(settings),
            _ => Err(ConfigError::Invalid {
                path: None,
                problems,
            }),
        }
    }

    /// What every stage checks: `[nats]`, and `[sekoia]` when it is there.
    pub(crate) fn check_common(&self, problems: &mut Vec<String>) {
        self.nats.check(problems);
        if let Some(s) = &self.sekoia {
            s.check(problems);
        }
    }

    /// Pushes the ingest's problems; `None` when a section it needs is missing.
    pub(crate) fn check_ingest(&self, problems: &mut Vec<String>) -> Option<IngestSettings<'_>> {
        let Some(ingest) = &self.ingest else {
            problems.push("ingest: section [ingest] is required".into());
            return None;
        };
        ingest.check(problems);
        let sekoia = match (&self.sekoia, ingest.uses_sekoia()) {
            (_, false) => None,
            (Some(s), true) => Some(s),
            (None, true) => {
                problems.push(
                    "sekoia: section [sekoia] is required by ingest.live and \
                     ingest.poll_interval (set live = false and poll_interval = 0 \
                     for a webhook-only ingest)"
                        .into(),
                );
                return None;
            }
        };
        Some(IngestSettings {
            nats: &self.nats,
            ingest,
            sekoia,
            communities: self
                .sekoia
                .as_ref()
                .map(|s| s.communities.as_slice())
                .unwrap_or_default(),
        })
    }

    /// Pushes the enricher's problems; `None` when `[sekoia]` is missing.
    pub(crate) fn check_enricher(
        &self,
        problems: &mut Vec<String>,
    ) -> Option<EnricherSettings<'_>> {
        let sekoia = match &self.sekoia {
            Some(s) => {
                s.check_api(problems);
                Some(s)
            }
            None => {
                problems.push("sekoia: section [sekoia] is required".into());
                None
            }
        };
        self.enricher.check(problems);
        Some(EnricherSettings {
            nats: &self.nats,
            sekoia: sekoia?,
            enricher: &self.enricher,
        })
    }

    /// Pushes the forwarder's problems.
    pub(crate) fn check_forwarder(
        &self,
        problems: &mut Vec<String>,
    ) -> Option<ForwarderSettings<'_>> {
        self.forwarder.check(self.nats.stream_max_age, problems);
        destinations::check(&self.destinations, problems);
        Some(ForwarderSettings {
            nats: &self.nats,
            forwarder: &self.forwarder,
            destinations: &self.destinations,
        })
    }
}
