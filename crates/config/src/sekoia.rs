//! `[sekoia]`: access to the Sekoia.io API (the enricher's Get Alert, the ingest's LiveAPI
//! socket and poller).

use serde::Deserialize;

use crate::duration::seconds;
use crate::fields::is_uuid;
use crate::{HumanDuration, Secret};

/// `[sekoia]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SekoiaConfig {
    /// API base URL: `https://api.sekoia.io` (FRA1) or `https://app.<region>.sekoia.io/api`.
    pub base_url: url::Url,
    /// API key with the "View alerts" permission (use `${SEKOIA_API_KEY}`).
    pub api_key: Secret,
    /// Timeout of one API call. Default 10s.
    #[serde(default = "seconds::<10>")]
    pub timeout: HumanDuration,
    /// LiveAPI websocket URL. Default: derived from `base_url` as Sekoia does
    /// (`https://api.sekoia.io` → `wss://app.sekoia.io/live/`,
    /// `https://app.<region>.sekoia.io/api` → `wss://app.<region>.sekoia.io/live/`).
    pub live_url: Option<url::Url>,
    /// Only alerts of these communities (uuids) are handled, by every source (MSSP setups).
    /// Empty: all communities the key can see.
    #[serde(default)]
    pub communities: Vec<String>,
    /// How often the key is checked with `GET /v1/me` while it is accepted. Default 5m.
    #[serde(default = "seconds::<300>")]
    pub key_check_interval: HumanDuration,
    /// How often it is checked again while Sekoia rejects it. Default 30s.
    #[serde(default = "seconds::<30>")]
    pub rejected_key_retry: HumanDuration,
}

impl SekoiaConfig {
    /// What every stage checks when the section is there (the communities also filter the
    /// ingest's webhook).
    pub(crate) fn check(&self, problems: &mut Vec<String>) {
        for (i, c) in self.communities.iter().enumerate() {
            if !is_uuid(c) {
                problems.push(format!("sekoia.communities[{i}]: {c:?} is not a uuid"));
            }
        }
        if let Some(u) = &self.live_url
            && !matches!(u.scheme(), "ws" | "wss")
        {
            problems.push("sekoia.live_url: must be a ws:// or wss:// URL".into());
        }
    }

    /// What a stage that calls the API checks: the URL and the key it sends.
    pub(crate) fn check_api(&self, problems: &mut Vec<String>) {
        if !matches!(self.base_url.scheme(), "http" | "https") {
            problems.push("sekoia.base_url: must be an http(s) URL".into());
        }
        let key = self.api_key.expose();
        if key.trim().is_empty() {
            problems.push("sekoia.api_key: must not be empty".into());
        } else if key.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            // It goes into the Authorization header, which cannot carry it.
            problems
                .push("sekoia.api_key: holds a control character (a trailing line break?)".into());
        }
    }
}
