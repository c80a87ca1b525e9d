//! `[enricher]`: the enricher service (Get Alert for every created alert), and the migration
//! of its deprecated flat retry keys to `[enricher.retry]`.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::fields::{IN_FLIGHT, check_circuit};
use crate::{HumanDuration, RetryConfig};

/// `[enricher]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnricherConfig {
    /// Listen address of the health endpoints. Default `127.0.0.1:8081`.
    pub listen: SocketAddr,
    /// Alerts fetched from Sekoia at once by this replica (default [`IN_FLIGHT`]).
    pub concurrency: usize,
    /// Retries of transient Get Alert failures (429, 5xx, timeouts): attempts before the
    /// alert is dead-lettered, delays between them, and the largest `Retry-After` honoured.
    /// Formerly the flat `max_attempts`, `retry_base_delay`, `retry_max_delay` (still read).
    pub retry: RetryConfig,
    /// Get Alert answering 404 is retried (a new alert may not be readable yet) this many
    /// times in all before the alert is dead-lettered. Default 5.
    pub not_found_attempts: u32,
    /// Transient Get Alert failures in a row (5xx, timeouts, connection errors) that open the
    /// circuit to Sekoia: the enricher stops pulling and holds its alerts, without burning
    /// their attempts, and probes Sekoia until it answers again. Default 5.
    pub circuit_failures: u32,
    /// Wait before the first probe of an open circuit (or after a 429 without `Retry-After`
    /// ends); doubled after every failed probe. Default 5s.
    pub probe_base_delay: HumanDuration,
    /// Largest wait between two probes. Default 5m.
    pub probe_max_delay: HumanDuration,
    /// The Alert Created trigger's `rule_filter`: only alerts whose rule name or rule uuid
    /// equals this are forwarded.
    pub rule_filter: Option<String>,
    /// The trigger's `rule_names_filter`: only alerts whose rule name is in this list (exact,
    /// case-sensitive) are forwarded. With `rule_filter` too, both must pass.
    pub rule_names_filter: Vec<String>,
    /// `[enricher.events]`: attach the alert's events (Sekoia's events search job). Absent:
    /// no search.
    pub events: Option<EventsConfig>,
}

/// `[enricher.events]`: the events search run for every alert.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Events attached per alert (pages of at most 100 are followed). Default 100.
    pub limit: usize,
    /// Start of the search: a relative time (`-1d`, `-6h`) or `first_seen` (the alert's
    /// `first_seen_at`). Default `-1d`.
    pub earliest: String,
    /// End of the search: `now`, a relative time, or `last_seen` (the alert's
    /// `last_seen_at`). Default `now`.
    pub latest: String,
    /// Longest the whole search may take (start, wait, pages). Default 2m.
    pub timeout: HumanDuration,
    /// What a failed or slow search does: `deliver` (without events: templates see
    /// `events = []` and `events_error`) or `retry` (the alert is retried, then
    /// dead-lettered). Default `deliver`.
    pub on_failure: OnFailure,
}

/// `enricher.events.on_failure`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Deliver without the events, saying why.
    #[default]
    Deliver,
    /// Retry the alert, then dead-letter it.
    Retry,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            limit: 100,
            earliest: "-1d".into(),
            latest: "now".into(),
            timeout: HumanDuration::secs(120),
            on_failure: OnFailure::Deliver,
        }
    }
}

impl EventsConfig {
    /// Largest `limit`: the events travel inside the enriched alert.
    pub const MAX_LIMIT: usize = 10_000;

    fn check(&self, problems: &mut Vec<String>) {
        if self.limit == 0 || self.limit > Self::MAX_LIMIT {
            problems.push(format!(
                "enricher.events.limit: must be 1 to {}",
                Self::MAX_LIMIT
            ));
        }
        if !is_search_time(&self.earliest, "first_seen") {
            problems.push(
                "enricher.events.earliest: must be a relative time such as \"-1d\", \"now\" \
                 or \"first_seen\""
                    .into(),
            );
        }
        if !is_search_time(&self.latest, "last_seen") {
            problems.push(
                "enricher.events.latest: must be \"now\", a relative time such as \"-1h\" \
                 or \"last_seen\""
                    .into(),
            );
        }
        if self.timeout.get().is_zero() {
            problems.push("enricher.events.timeout: must be more than 0".into());
        }
    }
}

/// `now`, the alert's own time named `alert_time`, or a relative time Sekoia's search takes:
/// `-<n><unit>` with unit s, m, h, d, w.
fn is_search_time(s: &str, alert_time: &str) -> bool {
    if s == "now" || s == alert_time {
        return true;
    }
    let Some(rest) = s.strip_prefix('-') else {
        return false;
    };
    let (digits, unit) = rest.split_at(rest.len().saturating_sub(1));
    !digits.is_empty()
        && digits.len() <= 6
        && digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(unit, "s" | "m" | "h" | "d" | "w")
}

impl Default for EnricherConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            concurrency: IN_FLIGHT,
            retry: RetryConfig::default(),
            not_found_attempts: 5,
            circuit_failures: 5,
            probe_base_delay: HumanDuration::secs(5),
            probe_max_delay: HumanDuration::secs(300),
            rule_filter: None,
            rule_names_filter: Vec::new(),
            events: None,
        }
    }
}

impl EnricherConfig {
    pub(crate) fn check(&self, problems: &mut Vec<String>) {
        if self.concurrency == 0 {
            problems.push("enricher.concurrency: must be at least 1".into());
        }
        if self.not_found_attempts == 0 {
            problems.push("enricher.not_found_attempts: must be at least 1".into());
        }
        self.retry.check("enricher.retry", problems);
        if let Some(events) = &self.events {
            events.check(problems);
        }
        check_circuit(
            "enricher",
            self.probe_base_delay,
            self.probe_max_delay,
            self.circuit_failures,
            problems,
        );
    }
}

/// The flat retry keys `[enricher]` had before it had `[enricher.retry]`, and their new
/// spelling there.
const FLAT_RETRY_KEYS: [(&str, &str); 3] = [
    ("max_attempts", "max_attempts"),
    ("retry_base_delay", "base_delay"),
    ("retry_max_delay", "max_delay"),
];

/// Moves the deprecated flat retry keys of the raw `[enricher]` table into its `retry` table,
/// before deserializing (so older files keep working). Each one moved adds a deprecation
/// naming the new spelling; a key given in both spellings is a problem naming both. With
/// `report` false (a stage that does not read `[enricher]`) nothing is reported and the
/// nested spelling wins.
pub(crate) fn migrate_flat_retry_keys(
    table: &mut toml::Table,
    report: bool,
    deprecations: &mut Vec<String>,
    problems: &mut Vec<String>,
) {
    let Some(toml::Value::Table(enricher)) = table.get_mut("enricher") else {
        return;
    };
    for (old, new) in FLAT_RETRY_KEYS {
        let Some(value) = enricher.remove(old) else {
            continue;
        };
        let retry = match enricher
            .entry("retry")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(t) => t,
            // `retry = 3`: left for the deserializer to name.
            _ => return,
        };
        if retry.contains_key(new) {
            if report {
                problems.push(format!(
                    "enricher.{old} and enricher.retry.{new} are both set: remove \
                     enricher.{old} (deprecated spelling of enricher.retry.{new})"
                ));
            }
            continue;
        }
        retry.insert(new.to_string(), value);
        if report {
            deprecations.push(format!(
                "enricher.{old} is deprecated; use enricher.retry.{new}"
            ));
        }
    }
}
