//! The cross-stage protocol besides the messages themselves: the headers one stage sets for
//! another, the names of the stages, and the classes of dead letters. Every stage, the CLI and
//! the metrics use these types instead of spelling the strings again.

/// Set by the enricher on an `EnrichedAlert` that is provably its alert's only one (see the
/// enricher's handler): the forwarder may skip reading its delivery records on the first
/// delivery of such a message.
pub const FIRST_ENRICHMENT_HEADER: &str = "Alertsync-First-Enrichment";

/// Set on a message republished from the dead-letter stream: names the DLQ sequence it came
/// from. A replay is never a first delivery.
pub const REPLAY_OF_HEADER: &str = "Alertsync-Replay-Of";

/// A stage of the pipeline, as it appears in dead-letter subjects, dead-letter entries and
/// metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Sources → the created stream.
    Ingest,
    /// Get Alert → the enriched stream.
    Enrich,
    /// The enriched stream → destinations.
    Forward,
    /// Writes back to Sekoia (after a creation is delivered, or for a tool's notification).
    WriteBack,
}

impl Stage {
    /// The token used in subjects (`<prefix>.dlq.<stage>`), in `DeadLetter.stage` and in the
    /// `stage` metric label. These strings are stored (DLQ entries) and scraped (metrics):
    /// they never change.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Enrich => "enrich",
            Stage::Forward => "forward",
            Stage::WriteBack => "writeback",
        }
    }

    /// The stage named `token` ([`Stage::as_str`]), if any.
    pub fn from_token(token: &str) -> Option<Stage> {
        match token {
            "ingest" => Some(Stage::Ingest),
            "enrich" => Some(Stage::Enrich),
            "forward" => Some(Stage::Forward),
            "writeback" => Some(Stage::WriteBack),
            _ => None,
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a message was dead-lettered, as a bounded set (the `reason` label of
/// `alertsync_dead_lettered_total`); the entry's free-text reason says the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterClass {
    /// The message itself cannot be read (undecodable, no valid uuid, not UTF-8, not JSON).
    Poison,
    /// Get Alert kept answering 404.
    NotFound,
    /// Transient failures until the attempts ran out.
    Exhausted,
    /// A 4xx answer that retrying will not change.
    Http4xx,
    /// Another answer that retrying will not change (501, 3xx).
    HttpOther,
    /// Too large: for the destination (413, `max_body_bytes`), for our read cap, or for NATS.
    TooLarge,
    /// A template could not be rendered for this alert.
    Render,
    /// A Sekoia status asked for cannot be reached from the alert's status (no transition
    /// bears its name).
    NoTransition,
}

impl DeadLetterClass {
    /// The metric label value (never changes: dashboards and alerting rules match on it).
    pub const fn as_str(self) -> &'static str {
        match self {
            DeadLetterClass::Poison => "poison",
            DeadLetterClass::NotFound => "not_found",
            DeadLetterClass::Exhausted => "exhausted",
            DeadLetterClass::Http4xx => "http_4xx",
            DeadLetterClass::HttpOther => "http_other",
            DeadLetterClass::TooLarge => "too_large",
            DeadLetterClass::Render => "render",
            DeadLetterClass::NoTransition => "no_transition",
        }
    }

    /// The class of a permanent HTTP answer with `status`.
    pub fn of_status(status: Option<u16>) -> DeadLetterClass {
        match status {
            Some(413) => DeadLetterClass::TooLarge,
            Some(s) if (400..500).contains(&s) => DeadLetterClass::Http4xx,
            _ => DeadLetterClass::HttpOther,
        }
    }
}

impl std::fmt::Display for DeadLetterClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_tokens_round_trip_and_keep_their_stored_spelling() {
        for (stage, token) in [
            (Stage::Ingest, "ingest"),
            (Stage::Enrich, "enrich"),
            (Stage::Forward, "forward"),
        ] {
            assert_eq!(stage.as_str(), token);
            assert_eq!(Stage::from_token(token), Some(stage));
        }
        assert_eq!(Stage::from_token("enricher"), None);
    }

    #[test]
    fn permanent_statuses_map_to_their_class() {
        assert_eq!(
            DeadLetterClass::of_status(Some(413)),
            DeadLetterClass::TooLarge
        );
        assert_eq!(
            DeadLetterClass::of_status(Some(422)),
            DeadLetterClass::Http4xx
        );
        assert_eq!(
            DeadLetterClass::of_status(Some(501)),
            DeadLetterClass::HttpOther
        );
        assert_eq!(DeadLetterClass::of_status(None), DeadLetterClass::HttpOther);
    }
}
