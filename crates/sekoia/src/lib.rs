//! Client of the Sekoia.io API calls alertsync makes.
//!
//! - [`SekoiaClient::get_alert`]: `GET {base}/v1/sic/alerts/{uuid}` with the flags Sekoia's
//!   trigger uses, answered as a [`GetAlert`] the enricher maps to an outcome.
//! - [`SekoiaClient::check_key`]: `GET {base}/v1/me`, to tell a rejected key from an outage.
//!
//! The base URL is either `https://api.sekoia.io` or a regional `https://app.<region>.sekoia.io/api`;
//! paths are appended to it, so both work. The API key is sent only in the `Authorization`
//! header and never appears in an error.

use std::time::Duration;

use alertsync_config::SekoiaConfig;
use alertsync_http::{Class, classify, describe_error, retry_after};
use bytes::Bytes;

/// The answer to a Get Alert call.
#[derive(Debug)]
pub enum GetAlert {
    /// 200 with a JSON object body: the raw bytes, untouched.
    Found(Bytes),
    /// 404: the alert may not be readable yet, or does not exist.
    NotFound,
    /// 401/403: the key is missing, expired or lacks the "View alerts" permission.
    KeyRejected(u16),
    /// Worth retrying: 408/429/5xx, timeouts, transport errors, a garbled 200.
    Transient {
        /// HTTP status, if a response came.
        status: Option<u16>,
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
        /// What happened.
        reason: String,
    },
    /// Will not get better by retrying (other 4xx).
    Permanent {
        /// HTTP status.
        status: u16,
        /// What happened, with Sekoia's `message` when it gave one.
        reason: String,
    },
}

/// The answer to a key check.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyCheck {
    /// The key works.
    Accepted,
    /// 401/403.
    Rejected(u16),
    /// The API could not tell (outage, network).
    Unavailable(String),
}

/// A client bound to one base URL and key.
#[derive(Clone)]
pub struct SekoiaClient {
    http: reqwest::Client,
    base: url::Url,
    auth: String,
}

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the Sekoia API client: {0}")]
pub struct BuildError(String);

impl SekoiaClient {
    /// A client for `[sekoia]`.
    pub fn new(cfg: &SekoiaConfig) -> Result<Self, BuildError> {
        let http = alertsync_http::client_builder()
            .timeout(cfg.timeout.get())
            .build()
            .map_err(|e| BuildError(describe_error(&e)))?;
        let mut base = cfg.base_url.clone();
        // `join` would drop the last path segment ("/api") without a trailing slash.
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        Ok(Self {
            http,
            base,
            auth: format!("Bearer {}", cfg.api_key.expose()),
        })
    }

    fn url(&self, path: &str) -> url::Url {
        // `path` is built from validated uuids and constants, so join cannot fail.
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    /// Fetches one alert. `uuid` must already be validated (it becomes a path segment).
    pub async fn get_alert(&self, uuid: &str) -> GetAlert {
        let mut url = self.url(&format!("v1/sic/alerts/{uuid}"));
        url.query_pairs_mut()
            .append_pair("stix", "false")
            .append_pair("comments", "false")
            .append_pair("countermeasures", "false")
            .append_pair("history", "false");
        let resp = match self
            .http
            .get(url)
            .header(reqwest::header::AUTHORIZATION, &self.auth)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return GetAlert::Transient {
                    status: None,
                    retry_after: None,
                    reason: format!("Get Alert {}", describe_error(&e)),
                };
            }
        };
        let status = resp.status().as_u16();
        let wait = retry_after(resp.headers());
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return GetAlert::Transient {
                    status: Some(status),
                    retry_after: wait,
                    reason: format!("Get Alert {}", describe_error(&e)),
                };
            }
        };
        match (status, classify(status)) {
            (401 | 403, _) => GetAlert::KeyRejected(status),
            (404, _) => GetAlert::NotFound,
            (_, Class::Success) => match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(v) if v.is_object() => GetAlert::Found(body),
                _ => GetAlert::Transient {
                    status: Some(status),
                    retry_after: None,
                    reason: "Get Alert answered 200 without a JSON object".into(),
                },
            },
            (_, Class::Transient) => GetAlert::Transient {
                status: Some(status),
                retry_after: wait,
                reason: format!("Get Alert answered {status}{}", api_message(&body)),
            },
            (_, Class::Permanent) => GetAlert::Permanent {
                status,
                reason: format!("Get Alert answered {status}{}", api_message(&body)),
            },
        }
    }

    /// Checks the key with `GET {base}/v1/me`.
    pub async fn check_key(&self) -> KeyCheck {
        let resp = self
            .http
            .get(self.url("v1/me"))
            .header(reqwest::header::AUTHORIZATION, &self.auth)
            .send()
            .await;
        match resp {
            Err(e) => KeyCheck::Unavailable(describe_error(&e)),
            Ok(r) => match r.status().as_u16() {
                401 | 403 => KeyCheck::Rejected(r.status().as_u16()),
                s if (200..300).contains(&s) => KeyCheck::Accepted,
                s => KeyCheck::Unavailable(format!("/v1/me answered {s}")),
            },
        }
    }
}

/// `: <message>` from a Sekoia error body (`{"message": ...}`), bounded in length.
fn api_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .map(|m| format!(": {}", m.chars().take(200).collect::<String>()))
        .unwrap_or_default()
}
