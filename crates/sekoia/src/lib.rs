//! Client of the Sekoia.io API calls alertsync makes.
//!
//! - [`SekoiaClient::get_alert`]: `GET {base}/v1/sic/alerts/{uuid}` with the flags Sekoia's
//!   trigger uses, answered as a [`GetAlert`] the enricher maps to an outcome.
//! - [`SekoiaClient::check_key`]: `GET {base}/v1/me`, to tell a rejected key from an outage.
//! - [`SekoiaClient::list_alerts`] / [`SekoiaClient::list_alerts_by`]: one page of
//!   `GET {base}/v1/sic/alerts` sorted by creation or update time (the catch-up poller).
//! - [`SekoiaClient::list_comments`]: an alert's comments.
//! - [`SekoiaClient::search_events`]: an alert's events, through Sekoia's asynchronous events
//!   search job (start, wait, page), within one deadline.
//! - Write-back: [`SekoiaClient::me`] (the key's identity), [`SekoiaClient::post_comment`],
//!   [`SekoiaClient::get_workflow`] and [`SekoiaClient::patch_workflow`] (a status change).
//! - [`live_url`]: the LiveAPI websocket URL, derived from the base URL as Sekoia does.
//! - [`key`]: the "key accepted" readiness check shared by the services that call Sekoia.
//!
//! The base URL is either `https://api.sekoia.io` or a regional `https://app.<region>.sekoia.io/api`;
//! paths are appended to it, so both work. The API key is sent only in the `Authorization`
//! header and never appears in an error: every reason the client gives is redacted of it where
//! it is made (callers log reasons before any other redaction).
//!
//! Bodies are read with a bound: an alert (and any other answer but the list, e.g. a page of
//! events) up to [`MAX_ALERT_BYTES`], a page of the alert list up to [`MAX_LIST_BYTES`], an
//! error body up to [`MAX_ERROR_BYTES`] (only its `message` is quoted, redacted then cut to
//! 200 characters).

mod calls;
pub mod key;

pub use calls::{EventsQuery, ListBy, WorkflowAction};

use std::time::Duration;

use alertsync_config::{Redactor, SekoiaConfig};
use alertsync_http::body::{ReadError, read_capped};
use alertsync_http::{CallOutcome, Class, classify, describe_error, retry_after};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use tracing::Instrument as _;

/// The answer to a Get Alert call: the call path's outcome, whose value is the raw body,
/// untouched, and what `H` read from it (`H::default()` when the object does not fit `H`, e.g.
/// a field of an unexpected type or a repeated key: the alert is still valid JSON and still
/// goes on). A 404 is [`CallOutcome::NotYet`] (the alert may not be readable yet); a 200
/// without a JSON object is transient; an alert over [`MAX_ALERT_BYTES`] is too large.
pub type GetAlert<H = serde::de::IgnoredAny> = CallOutcome<(Bytes, H)>;

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
    /// `{base}/v1/sic/alerts/`: Get Alert's URL is this plus a path segment and a constant
    /// query, built without parsing a URL per alert.
    alerts: url::Url,
    /// `Bearer <key>`, marked sensitive (hyper then never prints it), built once rather than
    /// validated again on every request.
    auth: reqwest::header::HeaderValue,
    /// Knows the key: every reason passes through it before it leaves the client.
    redactor: Redactor,
}

/// Largest Get Alert body read: a larger one is refused as a permanent failure naming its size
/// (an alert is a few KiB; this bounds the memory one alert can take in the enricher).
pub const MAX_ALERT_BYTES: usize = 16 * 1024 * 1024;
/// Largest alert list page read (a page holds up to 100 alerts).
pub const MAX_LIST_BYTES: usize = 64 * 1024 * 1024;
/// Largest error body read, for its `message`.
pub const MAX_ERROR_BYTES: usize = 64 * 1024;
/// Longest `message` quoted from an error body, in characters.
const MESSAGE_EXCERPT: usize = 200;

/// Get Alert's flags, as Sekoia's trigger sends them.
const GET_ALERT_QUERY: &str = "stix=false&comments=false&countermeasures=false&history=false";

/// An answer as [`SekoiaClient::send`] read it.
struct Answer {
    status: u16,
    class: Class,
    retry_after: Option<Duration>,
    /// Read up to the cap of the answer's class.
    body: Result<Bytes, ReadError>,
}

/// Why an answer's body was not read.
enum Unread {
    /// A success larger than its cap: asking again gets the same.
    TooLarge(String),
    /// The body was cut off on the way.
    Cut(String),
}

impl Unread {
    /// In the call path's terms.
    fn outcome<T>(self, answer_status: u16, retry_after: Option<Duration>) -> CallOutcome<T> {
        match self {
            Unread::TooLarge(reason) => CallOutcome::TooLarge {
                status: Some(answer_status),
                reason,
            },
            Unread::Cut(reason) => CallOutcome::Transient {
                status: Some(answer_status),
                retry_after,
                reason,
            },
        }
    }
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
        let mut auth =
            reqwest::header::HeaderValue::try_from(format!("Bearer {}", cfg.api_key.expose()))
                .map_err(|_| {
                    BuildError("sekoia.api_key holds characters an HTTP header cannot carry".into())
                })?;
        auth.set_sensitive(true);
        let alerts = base
            .join("v1/sic/alerts/")
            .map_err(|e| BuildError(format!("sekoia.base_url: {e}")))?;
        Ok(Self {
            http,
            base,
            alerts,
            auth,
            redactor: Redactor::new([cfg.api_key.expose().to_string()]),
        })
    }

    fn url(&self, path: &str) -> url::Url {
        // `path` is built from validated uuids and constants, so join cannot fail.
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    /// Fetches one alert and reads `H` from it. `uuid` must already be validated (it becomes a
    /// path segment).
    pub async fn get_alert<H: DeserializeOwned + Default>(&self, uuid: &str) -> GetAlert<H> {
        let span = alertsync_telemetry::detail_span!(
            "sekoia_get_alert",
            otel.kind = "client",
            http.request.method = "GET",
            server.address = self.base.host_str().unwrap_or_default(),
            http.response.status_code = tracing::field::Empty,
            alert.uuid = %uuid,
        );
        let answer = self.get_alert_in_span(uuid).instrument(span.clone()).await;
        if let Some(s) = answer.status() {
            span.record("http.response.status_code", s);
        }
        answer
    }

    async fn get_alert_in_span<H: DeserializeOwned + Default>(&self, uuid: &str) -> GetAlert<H> {
        let mut url = self.alerts.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push(uuid);
        }
        url.set_query(Some(GET_ALERT_QUERY));
        let mut request = reqwest::Request::new(reqwest::Method::GET, url);
        let headers = request.headers_mut();
        alertsync_telemetry::propagation::inject_http(headers);
        headers.insert(reqwest::header::AUTHORIZATION, self.auth.clone());
        headers.insert(
            reqwest::header::ACCEPT,
            reqwest::header::HeaderValue::from_static("application/json"),
        );
        let answer = match self.send("Get Alert", request, MAX_ALERT_BYTES).await {
            Ok(a) => a,
            Err(reason) => return CallOutcome::transport(reason),
        };
        let (status, wait, class) = (answer.status, answer.retry_after, answer.class);
        let body = match self.body_of("Get Alert", answer) {
            Ok(b) => b,
            Err(unread) => return unread.outcome(status, wait),
        };
        if class == Class::Success {
            return match read_object::<H>(&body) {
                Some(head) => CallOutcome::Done((body, head)),
                None => CallOutcome::Transient {
                    status: Some(status),
                    retry_after: None,
                    reason: "Get Alert answered 200 without a JSON object".into(),
                },
            };
        }
        let reason = format!("Get Alert answered {status}{}", self.api_message(&body));
        if status == 404 {
            return CallOutcome::NotYet { status, reason };
        }
        CallOutcome::of_status(status, wait, reason)
    }

    /// Sends `request` and reads the answer's body, up to `success_cap` for a success and
    /// [`MAX_ERROR_BYTES`] otherwise. No answer at all is a transport failure whose reason
    /// (redacted) names `what`.
    async fn send(
        &self,
        what: &str,
        request: reqwest::Request,
        success_cap: usize,
    ) -> Result<Answer, String> {
        let resp = self
            .http
            .execute(request)
            .await
            .map_err(|e| self.redact(format!("{what} {}", describe_error(&e))))?;
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers());
        let class = classify(status);
        let cap = if class == Class::Success {
            success_cap
        } else {
            MAX_ERROR_BYTES
        };
        Ok(Answer {
            status,
            class,
            retry_after,
            body: read_capped(resp, cap).await,
        })
    }

    /// The body of `answer`, or why there is none. An error body too large to quote reads as
    /// empty: its status says enough.
    fn body_of(&self, what: &str, answer: Answer) -> Result<Bytes, Unread> {
        let status = answer.status;
        match answer.body {
            Ok(b) => Ok(b),
            Err(ReadError::Oversize(o)) if answer.class == Class::Success => Err(Unread::TooLarge(
                format!("{what} answered {status} with {o}"),
            )),
            Err(ReadError::Oversize(_)) => Ok(Bytes::new()),
            Err(ReadError::Transport(e)) => Err(Unread::Cut(
                self.redact(format!("{what} {}", describe_error(&e))),
            )),
        }
    }

    fn redact(&self, reason: String) -> String {
        self.redactor.redact(&reason)
    }

    /// `: <message>` from a Sekoia error body (`{"message": ...}`), redacted, then cut to
    /// [`MESSAGE_EXCERPT`] characters on one line; empty when there is none.
    fn api_message(&self, body: &[u8]) -> String {
        let Some(message) = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_string))
        else {
            return String::new();
        };
        // Redact the whole message before cutting it: a key cut in two is no longer
        // recognised.
        let redacted = self.redactor.redact(&message);
        let flat: String = redacted
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MESSAGE_EXCERPT)
            .collect();
        format!(": {flat}")
    }

    /// Checks the key with `GET {base}/v1/me`.
    pub async fn check_key(&self) -> KeyCheck {
        let resp = self
            .http
            .get(self.url("v1/me"))
            .header(reqwest::header::AUTHORIZATION, self.auth.clone())
            .send()
            .await;
        match resp {
            Err(e) => KeyCheck::Unavailable(self.redact(describe_error(&e))),
            Ok(r) => match r.status().as_u16() {
                401 | 403 => KeyCheck::Rejected(r.status().as_u16()),
                s if (200..300).contains(&s) => KeyCheck::Accepted,
                s => KeyCheck::Unavailable(format!("/v1/me answered {s}")),
            },
        }
    }
}

/// One page of the alert list.
#[derive(Debug)]
pub struct AlertPage {
    /// The alerts, as raw JSON objects.
    pub items: Vec<serde_json::Value>,
}

/// Why a list call failed.
#[derive(Debug)]
pub enum ListError {
    /// 401/403.
    KeyRejected(u16),
    /// 429, 5xx, timeouts, transport errors, garbled bodies.
    Transient {
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
        /// What happened.
        reason: String,
    },
    /// Other 4xx.
    Permanent(String),
}

impl SekoiaClient {
    /// Lists alerts created at or after `since` (epoch seconds; Sekoia's times are whole
    /// seconds, so the bound is inclusive and callers dedup by uuid), oldest first.
    pub async fn list_alerts(
        &self,
        since: i64,
        offset: usize,
        limit: usize,
        communities: &[String],
    ) -> Result<AlertPage, ListError> {
        self.list_alerts_by(ListBy::Created, since, offset, limit, communities)
            .await
    }

    /// Lists alerts whose `by` time is at or after `since` (epoch seconds, inclusive: callers
    /// dedup), ordered by it, oldest first.
    pub async fn list_alerts_by(
        &self,
        by: ListBy,
        since: i64,
        offset: usize,
        limit: usize,
        communities: &[String],
    ) -> Result<AlertPage, ListError> {
        let start = chrono::DateTime::from_timestamp(since, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut url = self.url("v1/sic/alerts");
        {
            let mut q = url.query_pairs_mut();
            q.append_pair(&format!("date[{}]", by.field()), &format!("{start},now"))
                .append_pair("sort", by.field())
                .append_pair("direction", "asc")
                .append_pair("limit", &limit.to_string())
                .append_pair("offset", &offset.to_string());
            if !communities.is_empty() {
                q.append_pair("match[community_uuid]", &communities.join(","));
            }
        }
        let request = self
            .http
            .get(url)
            .header(reqwest::header::AUTHORIZATION, self.auth.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .build()
            .map_err(|e| ListError::Transient {
                retry_after: None,
                reason: self.redact(format!("listing alerts {}", describe_error(&e))),
            })?;
        let answer = self
            .send("listing alerts", request, MAX_LIST_BYTES)
            .await
            .map_err(|reason| ListError::Transient {
                retry_after: None,
                reason,
            })?;
        let (status, wait, class) = (answer.status, answer.retry_after, answer.class);
        let body = self
            .body_of("alert list", answer)
            .map_err(|unread| match unread {
                Unread::TooLarge(reason) => ListError::Permanent(reason),
                Unread::Cut(reason) => ListError::Transient {
                    retry_after: wait,
                    reason,
                },
            })?;
        match (status, class) {
            (401 | 403, _) => Err(ListError::KeyRejected(status)),
            (_, Class::Success) => {
                let v: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|_| ListError::Transient {
                        retry_after: None,
                        reason: "alert list answered 200 without JSON".into(),
                    })?;
                match v.get("items").and_then(|i| i.as_array()) {
                    Some(items) => Ok(AlertPage {
                        items: items.clone(),
                    }),
                    None => Err(ListError::Transient {
                        retry_after: None,
                        reason: "alert list answered 200 without `items`".into(),
                    }),
                }
            }
            (_, Class::Transient) => Err(ListError::Transient {
                retry_after: wait,
                reason: format!("alert list answered {status}{}", self.api_message(&body)),
            }),
            (_, Class::Permanent) => Err(ListError::Permanent(format!(
                "alert list answered {status}{}",
                self.api_message(&body)
            ))),
        }
    }
}

/// The LiveAPI URL for `base` as Sekoia derives it: `https://api.sekoia.io` →
/// `wss://app.sekoia.io/live/`, `https://app.<region>.sekoia.io/api` →
/// `wss://app.<region>.sekoia.io/live/`; plain `http` gives `ws` (local stand-ins).
pub fn live_url(base: &url::Url) -> url::Url {
    let mut u = base.clone();
    let scheme = if base.scheme() == "http" { "ws" } else { "wss" };
    let _ = u.set_scheme(scheme);
    if let Some(host) = base.host_str()
        && let Some(rest) = host.strip_prefix("api.")
    {
        let _ = u.set_host(Some(&format!("app.{rest}")));
    }
    u.set_path("/live/");
    u.set_query(None);
    u
}

/// `H` read from `body` if `body` is one JSON object (valid JSON, nothing after it), else
/// `None`. The body is not built as a tree: `H` keeps only its own fields. When the object is
/// valid but does not fit `H`, a second scan that allocates nothing tells it from bad JSON.
fn read_object<H: DeserializeOwned + Default>(body: &[u8]) -> Option<H> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    match serde_json::from_slice::<H>(body) {
        Ok(head) => Some(head),
        Err(_) => serde_json::from_slice::<serde::de::IgnoredAny>(body)
            .ok()
            .map(|_| H::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_url_is_derived_like_sekoia_does() {
        let cases = [
            ("https://api.sekoia.io", "wss://app.sekoia.io/live/"),
            (
                "https://api.test.sekoia.io",
                "wss://app.test.sekoia.io/live/",
            ),
            (
                "https://app.fra2.sekoia.io/api",
                "wss://app.fra2.sekoia.io/live/",
            ),
            ("http://127.0.0.1:9000", "ws://127.0.0.1:9000/live/"),
        ];
        for (base, live) in cases {
            assert_eq!(live_url(&base.parse().unwrap()).as_str(), live, "{base}");
        }
    }

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    struct Head {
        #[serde(default)]
        short_id: Option<String>,
    }

    #[test]
    fn a_json_object_is_found_with_its_head_and_anything_else_is_refused() {
        let head = |s: &str| read_object::<Head>(s.as_bytes());
        let found = |id: &str| {
            Some(Head {
                short_id: Some(id.into()),
            })
        };
        assert_eq!(
            head(r#" {"short_id":"ALx","big":[1,{"a":"}"}]}"#),
            found("ALx")
        );
        // Valid objects that do not fit the head still count as found, with an empty head.
        assert_eq!(
            head(r#"{"short_id":"a","short_id":"b"}"#),
            Some(Head::default())
        );
        assert_eq!(head(r#"{"short_id":7}"#), Some(Head::default()));
        assert_eq!(head("{}"), Some(Head::default()));
        for bad in [
            "",
            "[]",
            r#"["ALx"]"#,
            "null",
            r#"{"short_id":"a"} x"#,
            r#"{"a":"#,
        ] {
            assert_eq!(head(bad), None, "{bad:?}");
        }
    }
}
