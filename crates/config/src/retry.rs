//! [`RetryConfig`]: the one retry shape, `[destinations.retry]` and `[enricher.retry]`.

use serde::Deserialize;

use crate::HumanDuration;

/// `[destinations.retry]`, `[enricher.retry]`: delayed redeliveries of one alert after
/// transient failures.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all before the alert is dead-lettered. Default 10.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt. Default 1s.
    pub base_delay: HumanDuration,
    /// Largest computed retry delay. Default 5m.
    pub max_delay: HumanDuration,
    /// Largest wait honoured from a `Retry-After` header. Default 15m.
    pub max_retry_after: HumanDuration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            base_delay: HumanDuration::secs(1),
            max_delay: HumanDuration::secs(300),
            max_retry_after: HumanDuration::secs(900),
        }
    }
}

impl RetryConfig {
    /// `at` names the table in problems (`enricher.retry`, `destinations[0] (soar).retry`).
    pub(crate) fn check(&self, at: &str, problems: &mut Vec<String>) {
        if self.max_attempts == 0 {
            problems.push(format!("{at}.max_attempts: must be at least 1"));
        }
        if self.base_delay > self.max_delay {
            problems.push(format!("{at}.base_delay: must not exceed {at}.max_delay"));
        }
    }
}
