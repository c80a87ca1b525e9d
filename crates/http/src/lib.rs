//! Outgoing HTTP, the same way everywhere.
//!
//! - [`client_builder`]: a `reqwest` client builder with the TLS provider installed and sane
//!   timeouts; build one client per destination (or per API) and share it.
//! - [`classify`]: the one place that decides whether a status is success, worth retrying or
//!   permanent (408, 429 and 5xx except 501 retry; other 4xx are permanent).
//! - [`retry_after`]: reads `Retry-After` (seconds or an HTTP date).
//! - [`RetryPolicy`]: the delay before attempt `n + 1`, a pure function of `n` so every replica
//!   computes the same one for a JetStream redelivery.
//! - [`body`]: bounded body reads ([`body::read_capped`]), redacted excerpts of error bodies
//!   ([`body::excerpt`]: redact, then cut) and [`body::drain`].
//! - [`CallOutcome`]: what one outside call came to; [`CallOutcome::of_status`] is the one
//!   mapping from an HTTP status to what the call path does about it.

pub mod body;
pub mod outcome;

pub use outcome::CallOutcome;

use std::sync::Once;
use std::time::{Duration, SystemTime};

use backon::BackoffBuilder;

/// User-Agent sent on every request.
pub const USER_AGENT: &str = concat!("alertsync/", env!("CARGO_PKG_VERSION"));

/// Installs rustls' ring crypto provider as the process default (once). Every TLS client
/// (reqwest, the LiveAPI websocket) needs it before its first connection.
pub fn install_crypto() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Fails only if another provider was installed first, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client builder with rustls (ring) and connect/pool settings every client wants.
pub fn client_builder() -> reqwest::ClientBuilder {
    install_crypto();
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
}

/// What a response (or its absence) means for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 2xx.
    Success,
    /// Worth another try later: 408, 429, 5xx except 501, timeouts, transport errors.
    Transient,
    /// Will fail the same way again: other 4xx, 501, unexpected 1xx/3xx.
    Permanent,
}

/// Classifies an HTTP status.
pub fn classify(status: u16) -> Class {
    match status {
        200..=299 => Class::Success,
        408 | 429 => Class::Transient,
        501 => Class::Permanent,
        500..=599 => Class::Transient,
        _ => Class::Permanent,
    }
}

/// The wait a `Retry-After` header asks for: delta-seconds or an HTTP date (a date in the
/// past means "now").
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or_default())
}

/// Exponential retry delays without jitter (deterministic, see the crate docs).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Delay after the first failed attempt.
    pub base: Duration,
    /// Largest computed delay.
    pub max: Duration,
    /// Largest `Retry-After` honoured.
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// Delay before the next attempt after attempt `attempt` (1-based) failed, raised to the
    /// server's `Retry-After` (itself capped at `max_retry_after`).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let computed = backon::ExponentialBuilder::default()
            .with_min_delay(self.base)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .without_max_times()
            .build()
            .nth(attempt.saturating_sub(1) as usize)
            .unwrap_or(self.max);
        match retry_after {
            Some(ra) => computed.max(ra.min(self.max_retry_after)),
            None => computed,
        }
    }
}

/// A transport error described without its URL (a URL may hold a token).
pub fn describe_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the response failed"
    } else {
        "request failed"
    };
    // `without_url` strips the URL from the Display output; the source chain may still carry
    // a low-level reason ("Connection refused") which is useful and URL-free.
    let mut out = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !text.contains("://") {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn statuses_are_classified_like_the_retry_table() {
        assert_eq!(classify(200), Class::Success);
        assert_eq!(classify(204), Class::Success);
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify(s), Class::Transient, "{s}");
        }
        for s in [400, 401, 403, 404, 413, 422, 501, 302] {
            assert_eq!(classify(s), Class::Permanent, "{s}");
        }
    }

    #[test]
    fn delays_double_up_to_the_cap_and_honour_retry_after() {
        let p = RetryPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        };
        let got: Vec<u64> = (1..=6).map(|n| p.delay(n, None).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(p.delay(1, Some(Duration::from_secs(30))).as_secs(), 30);
        assert_eq!(p.delay(1, Some(Duration::from_secs(3600))).as_secs(), 60);
        assert_eq!(p.delay(4, Some(Duration::from_secs(2))).as_secs(), 8);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&future).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
