//! `[[destinations]]`: the external tools alerts are delivered to, each with its request
//! templates, its [`RetryConfig`] and its [`DestinationFilter`].

mod filter;
mod url_template;

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use crate::duration::seconds;
use crate::fields::{in_flight, is_name, yes};
use crate::{HumanDuration, RetryConfig};

pub use filter::DestinationFilter;
pub use url_template::UrlTemplate;

/// HTTP method of a destination, as Sekoia's Request URL action names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// GET
    Get,
    /// POST (the default)
    #[default]
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
    /// URL to call, a template: each value rendered into it is percent-encoded, so alert text
    /// cannot change its path or query. Never logged: it may hold a token.
    pub url: UrlTemplate,
    /// HTTP method (`get`, `post`, `put`, `patch`, `delete`). Default `post`.
    #[serde(default)]
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
    /// Timeout of one request. Default 30s.
    #[serde(default = "seconds::<30>")]
    pub timeout: HumanDuration,
    /// Verify the server's TLS certificate. Default true.
    #[serde(default = "yes")]
    pub verify_tls: bool,
    /// Requests in flight to this destination from one replica (default
    /// [`IN_FLIGHT`](crate::IN_FLIGHT)).
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
    /// Template of the tool's id for the alert, read from the creation's 2xx response
    /// (`response.status`, `response.headers`, `response.json`, `response.text`), kept with
    /// the delivery record; later requests read it as `remote.id`.
    pub remote_id: Option<String>,
    /// `[destinations.on_update]`: the request sent for each new state of a delivered alert
    /// (`alert:updated`). Absent: updates are not sent here.
    pub on_update: Option<LaterRequest>,
    /// `[destinations.on_comment]`: the request sent for each comment on a delivered alert
    /// (`alert-comment:created`). Absent: comments are not sent here.
    pub on_comment: Option<LaterRequest>,
    /// `[destinations.after_create]`: what is written back to the Sekoia alert once its
    /// creation is delivered here (a comment, a status), once per alert.
    pub after_create: Option<AfterCreate>,
    /// `[destinations.sync_back]`: what this tool may send back to Sekoia through
    /// `POST /v1/sync/<name>` on the ingest's listener.
    pub sync_back: Option<SyncBack>,
}

/// `[destinations.after_create]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AfterCreate {
    /// Template of a comment added to the Sekoia alert (reads `response` and the alert, like
    /// `remote_id`); empty or absent: none.
    pub comment: Option<String>,
    /// Sekoia status (by name) the alert is moved to; absent: none.
    pub status: Option<String>,
    /// Author of the comment (at most 32 characters). Default `alertsync`.
    #[serde(default = "default_author")]
    pub author: String,
}

/// `[destinations.sync_back]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncBack {
    /// Bearer token the tool sends (`Authorization: Bearer <token>`).
    pub token: Option<crate::Secret>,
    /// Secret of an HMAC-SHA256 signature of the raw body, hex, in `signature_header`.
    pub hmac_secret: Option<crate::Secret>,
    /// Header carrying the signature (`sha256=` and `v1=` prefixes accepted, several
    /// comma-separated). Default `X-Signature`.
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    /// Template of the Sekoia alert uuid, from the notification (`body`).
    pub alert: Option<String>,
    /// Template of the tool's id for the alert, looked up in the remote ids kept.
    pub remote_id: Option<String>,
    /// Template of the tool's status; empty: no status change.
    pub status: Option<String>,
    /// Template of a comment to add; empty: none.
    pub comment: Option<String>,
    /// Tool status → Sekoia status name.
    #[serde(default)]
    pub statuses: BTreeMap<String, String>,
    /// Author of the comments (at most 32 characters). Default `alertsync`.
    #[serde(default = "default_author")]
    pub author: String,
}

impl std::fmt::Debug for SyncBack {
    // The token and the HMAC secret are secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncBack")
            .field("token", &self.token.is_some())
            .field("hmac_secret", &self.hmac_secret.is_some())
            .field("signature_header", &self.signature_header)
            .field("statuses", &self.statuses)
            .finish_non_exhaustive()
    }
}

fn default_author() -> String {
    "alertsync".into()
}

fn default_signature_header() -> String {
    "X-Signature".into()
}

/// `[destinations.on_update]`, `[destinations.on_comment]`: a request about an alert already
/// delivered. Its headers are the destination's, overridden by its own.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaterRequest {
    /// HTTP method. Default `post`.
    #[serde(default)]
    pub method: Method,
    /// URL template (values percent-encoded), e.g. `https://soar/api/alerts/{{ remote.id }}`.
    pub url: UrlTemplate,
    /// Headers added to (or replacing) the destination's; values may be templates.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Query parameters; values may be templates.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Body template (rendered structurally when it is JSON). Absent: no body.
    pub json: Option<String>,
    /// `on_update` only: send only when one of these differs from what this destination was
    /// last sent (`status`, `urgency`). Empty: every new alert state.
    #[serde(default)]
    pub changes: Vec<Change>,
}

/// What `on_update.changes` can watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// The alert's status (`status.uuid`, else `status.name`).
    Status,
    /// The alert's urgency (`urgency.current_value`).
    Urgency,
}

impl std::fmt::Debug for LaterRequest {
    // Like the destination's: URL, header values and body may hold secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaterRequest")
            .field("method", &self.method)
            .field("url_host", &self.url.host_str())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("params", &self.params.keys().collect::<Vec<_>>())
            .field("json_bytes", &self.json.as_ref().map(String::len))
            .field("changes", &self.changes)
            .finish()
    }
}

impl LaterRequest {
    fn check(&self, at: &str, changes_allowed: bool, problems: &mut Vec<String>) {
        if !matches!(self.url.scheme(), "http" | "https") {
            problems.push(format!("{at}.url: must be an http(s) URL"));
        }
        if !changes_allowed && !self.changes.is_empty() {
            problems.push(format!("{at}.changes: only on_update has changes"));
        }
        check_header_names(&self.headers, at, problems);
    }
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
            .field("remote_id", &self.remote_id.is_some())
            .field("on_update", &self.on_update)
            .field("on_comment", &self.on_comment)
            .field("after_create", &self.after_create)
            .field("sync_back", &self.sync_back)
            .finish()
    }
}

impl DestinationConfig {
    /// The values of credential headers (and the token after `Bearer `), for the redactor.
    pub(crate) fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        let later = [&self.on_update, &self.on_comment];
        let all = self
            .headers
            .iter()
            .chain(later.into_iter().flatten().flat_map(|l| l.headers.iter()));
        for (name, value) in all {
            if is_credential_header(name) {
                out.push(value.clone());
                // "Bearer abc…": the token alone may show up elsewhere.
                if let Some((_, tok)) = value.split_once(' ') {
                    out.push(tok.to_string());
                }
            }
        }
        if let Some(sb) = &self.sync_back {
            out.extend(sb.token.iter().map(|t| t.expose().to_string()));
            out.extend(sb.hmac_secret.iter().map(|t| t.expose().to_string()));
        }
        out
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

/// Checks the whole list: at least one entry, unique names, and each entry's fields.
pub(crate) fn check(destinations: &[DestinationConfig], problems: &mut Vec<String>) {
    if destinations.is_empty() {
        problems.push("destinations: at least one [[destinations]] entry is required".into());
    }
    let mut seen = HashSet::new();
    for (i, d) in destinations.iter().enumerate() {
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
        d.retry.check(&format!("{at}.retry"), problems);
        d.filter.check(&at, problems);
        check_header_names(&d.headers, &at, problems);
        if let Some(u) = &d.on_update {
            u.check(&format!("{at}.on_update"), true, problems);
        }
        if let Some(c) = &d.on_comment {
            c.check(&format!("{at}.on_comment"), false, problems);
        }
        if let Some(a) = &d.after_create {
            check_author(&a.author, &format!("{at}.after_create.author"), problems);
        }
        if let Some(sb) = &d.sync_back {
            let at = format!("{at}.sync_back");
            match (&sb.token, &sb.hmac_secret) {
                (Some(_), Some(_)) | (None, None) => problems.push(format!(
                    "{at}: set one of token (a bearer token) or hmac_secret (a signature)"
                )),
                (Some(t), None) if t.expose().len() < 16 => {
                    problems.push(format!("{at}.token: must be at least 16 characters"));
                }
                (None, Some(s)) if s.expose().len() < 16 => {
                    problems.push(format!("{at}.hmac_secret: must be at least 16 characters"));
                }
                _ => {}
            }
            match (&sb.alert, &sb.remote_id) {
                (Some(_), Some(_)) | (None, None) => problems.push(format!(
                    "{at}: set one of alert (the Sekoia alert uuid) or remote_id (the tool's id)"
                )),
                (None, Some(_)) if d.remote_id.is_none() => problems.push(format!(
                    "{at}.remote_id: needs destinations.remote_id, which keeps the tool's ids"
                )),
                _ => {}
            }
            if sb.status.is_none() && sb.comment.is_none() {
                problems.push(format!("{at}: set status, comment or both"));
            }
            check_author(&sb.author, &format!("{at}.author"), problems);
            if HeaderName::from_bytes(sb.signature_header.as_bytes()).is_err() {
                problems.push(format!("{at}.signature_header: not a valid header name"));
            }
        }
    }
}

fn check_author(author: &str, at: &str, problems: &mut Vec<String>) {
    if author.is_empty() || author.chars().count() > 32 {
        problems.push(format!("{at}: must be 1 to 32 characters (Sekoia's limit)"));
    }
}

/// A header name as HTTP allows it.
struct HeaderName;

impl HeaderName {
    fn from_bytes(b: &[u8]) -> Result<(), ()> {
        let ok = !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(c));
        if ok { Ok(()) } else { Err(()) }
    }
}

fn check_header_names(headers: &BTreeMap<String, String>, at: &str, problems: &mut Vec<String>) {
    for name in headers.keys() {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b))
        {
            problems.push(format!("{at}.headers: {name:?} is not a valid header name"));
        }
    }
}
