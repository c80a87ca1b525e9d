//! `POST /v1/sync/<destination>`: a tool tells Sekoia what became of an alert it was sent
//! (`[destinations.sync_back]`): a status to move the alert to, a comment to add.
//!
//! Answers (JSON bodies, nothing stored on a 4xx):
//! - 202 `{"alert_uuid", "stored", "duplicate"}` once the write-back is stored in JetStream (the
//!   same notification posted again is a duplicate: it is known by a digest of its body); 202
//!   with `ignored` when there is nothing to do (an unmapped status and no comment);
//! - 401 without the destination's bearer token, or without a valid HMAC-SHA256 signature of
//!   the raw body in its `signature_header`;
//! - 404 for an unknown destination, or one without `sync_back`;
//! - 413 over 64 KiB; 408 when the body did not arrive in time;
//! - 400 with a reason when the body is not JSON or the templates cannot read it;
//! - 403 when the alert was never delivered to that destination: a tool acts only on the alerts
//!   it was sent;
//! - 503 when NATS cannot store it (the tool retries).
//!
//! The notification's text is data: templates read it as `body`, and what they render (a
//! comment) is never rendered again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use alertsync_config::{Config, Secret};
use alertsync_nats::async_nats::{self, jetstream, jetstream::kv};
use alertsync_nats::{Subjects, keys, publish::publish_first};
use alertsync_proto::{Message as _, canonical_uuid, time, v1};
use alertsync_telemetry::Metrics;
use alertsync_template::{Context, Engine, TextTemplate};
use axum::{
    Json, Router,
    body::Body,
    extract::{Path, Request, State as AxumState},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};
use sha2::Digest as _;
use subtle::ConstantTimeEq;

/// How a destination's notifications prove where they come from.
enum Auth {
    /// `Authorization: Bearer <token>`.
    Token(Secret),
    /// HMAC-SHA256 of the raw body, hex, in `header`.
    Hmac { secret: Secret, header: String },
}

/// One destination's `sync_back`, compiled.
struct SyncDestination {
    auth: Auth,
    alert: Option<TextTemplate>,
    remote_id: Option<TextTemplate>,
    status: Option<TextTemplate>,
    comment: Option<TextTemplate>,
    statuses: BTreeMap<String, String>,
    author: String,
}

/// What the sync endpoint needs.
#[derive(Clone)]
pub struct SyncState {
    destinations: Arc<HashMap<String, SyncDestination>>,
    js: jetstream::Context,
    subjects: Subjects,
    records: kv::Store,
    client: async_nats::Client,
    metrics: Metrics,
}

impl SyncState {
    /// The `sync_back` of every destination of `cfg` (a template that does not compile names
    /// the field); `None` when no destination has one.
    pub fn new(
        cfg: &Config,
        js: jetstream::Context,
        subjects: Subjects,
        records: kv::Store,
        client: async_nats::Client,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        // A notification without the field a template reads means "nothing there".
        let engine = Engine::new()
            .with_values(
                alertsync_config::TEMPLATE_VALUES,
                cfg.template_values.to_map(),
            )
            .with_chainable_undefined();
        let mut destinations = HashMap::new();
        for d in &cfg.destinations {
            let Some(sb) = &d.sync_back else { continue };
            let compile = |field: &str, t: &Option<String>| {
                t.as_deref()
                    .map(|t| engine.compile_text(t))
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("destinations[{}].sync_back.{field}: {e}", d.name))
            };
            // The ingest does not validate [[destinations]] (the forwarder does), and a
            // variable unset where the ingest runs would leave an empty secret: one that any
            // caller could match.
            for (field, secret) in [("token", &sb.token), ("hmac_secret", &sb.hmac_secret)] {
                if secret.as_ref().is_some_and(|s| s.expose().len() < 16) {
                    anyhow::bail!(
                        "destinations[{}].sync_back.{field}: must be at least 16 characters (is \
                         its variable set where the ingest runs?)",
                        d.name
                    );
                }
            }
            let auth = match (&sb.token, &sb.hmac_secret) {
                (Some(t), _) => Auth::Token(t.clone()),
                (None, Some(s)) => Auth::Hmac {
                    secret: s.clone(),
                    header: sb.signature_header.to_ascii_lowercase(),
                },
                (None, None) => anyhow::bail!(
                    "destinations[{}].sync_back: set token or hmac_secret",
                    d.name
                ),
            };
            destinations.insert(
                d.name.clone(),
                SyncDestination {
                    auth,
                    alert: compile("alert", &sb.alert)?,
                    remote_id: compile("remote_id", &sb.remote_id)?,
                    status: compile("status", &sb.status)?,
                    comment: compile("comment", &sb.comment)?,
                    statuses: sb.statuses.clone(),
                    author: sb.author.clone(),
                },
            );
        }
        Ok(Self {
            destinations: Arc::new(destinations),
            js,
            subjects,
            records,
            client,
            metrics,
        })
    }
}

/// The sync route.
pub fn router(state: SyncState) -> Router {
    Router::new()
        .route("/v1/sync/{destination}", post(receive))
        .with_state(state)
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn error(status: StatusCode, reason: impl Into<String>) -> Response {
    answer(status, json!({"error": reason.into()}))
}

async fn receive(
    AxumState(state): AxumState<SyncState>,
    Path(name): Path<String>,
    req: Request<Body>,
) -> Response {
    let span = tracing::info_span!(
        "sync_receive",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/v1/sync/{destination}",
        http.response.status_code = tracing::field::Empty,
        alert.uuid = tracing::field::Empty,
        alertsync.destination = tracing::field::Empty,
    );
    let _entered = span.enter();
    let Some(dest) = state.destinations.get(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            "no destination of that name has [destinations.sync_back]",
        );
    };
    span.record("alertsync.destination", name.as_str());
    drop(_entered);
    let resp = handle(&state, &name, dest, req).await;
    span.record("http.response.status_code", resp.status().as_u16());
    let outcome = match resp.status().as_u16() {
        202 => "accepted",
        401 => "unauthorized",
        403 => "not_delivered",
        408 | 413 => "body_refused",
        400 => "bad_request",
        _ => "unavailable",
    };
    state.metrics.sync_notification(&name, outcome);
    resp
}

async fn handle(
    state: &SyncState,
    name: &str,
    dest: &SyncDestination,
    req: Request<Body>,
) -> Response {
    let headers = req.headers().clone();
    if let Auth::Token(token) = &dest.auth
        && !bearer_ok(&headers, token)
    {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer <sync_back.token>)",
        );
    }
    let body = match crate::webhook::read_body(req.into_body()).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    if let Auth::Hmac { secret, header } = &dest.auth
        && !signature_ok(&headers, header, secret, &body)
    {
        return error(
            StatusCode::UNAUTHORIZED,
            format!("missing or wrong HMAC-SHA256 signature of the body in {header}"),
        );
    }
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
    };
    let ctx = Context::new(&json!({})).with_json("body", &parsed);
    // A template that cannot read the notification is the caller's problem: 400 with why.
    let render = |field: &str, t: &Option<TextTemplate>| -> Result<String, String> {
        match t {
            None => Ok(String::new()),
            Some(t) => t
                .render(&ctx)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("sync_back.{field} cannot read this notification: {e}")),
        }
    };
    let rendered = (|| {
        Ok::<_, String>((
            render("alert", &dest.alert)?,
            render("remote_id", &dest.remote_id)?,
            render("status", &dest.status)?,
            render("comment", &dest.comment)?,
        ))
    })();
    let (alert, remote_id, tool_status, comment) = match rendered {
        Ok(r) => r,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let uuid = if dest.alert.is_some() {
        match canonical_uuid(&alert) {
            Some(u) => u,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "sync_back.alert did not render to a Sekoia alert uuid",
                );
            }
        }
    } else {
        if remote_id.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "sync_back.remote_id rendered empty",
            );
        }
        match state.records.get(keys::remote(name, &remote_id)).await {
            Ok(Some(v)) => match std::str::from_utf8(&v).ok().and_then(canonical_uuid) {
                Some(u) => u,
                None => return not_delivered(name),
            },
            Ok(None) => return not_delivered(name),
            Err(e) => return unavailable(&e.to_string()),
        }
    };
    tracing::Span::current().record("alert.uuid", uuid.as_str());
    match state.records.get(keys::delivery(name, &uuid)).await {
        Ok(Some(v)) if delivered(&v) => {}
        Ok(_) => return not_delivered(name),
        Err(e) => return unavailable(&e.to_string()),
    }
    let status = if tool_status.is_empty() {
        String::new()
    } else {
        match dest.statuses.get(&tool_status) {
            Some(s) => s.clone(),
            None => {
                state.metrics.sync_notification(name, "unmapped_status");
                String::new()
            }
        }
    };
    if status.is_empty() && comment.is_empty() {
        let why = if tool_status.is_empty() {
            "no status and no comment in this notification".to_string()
        } else {
            "its status is not in sync_back.statuses, and it has no comment".to_string()
        };
        return answer(
            StatusCode::ACCEPTED,
            json!({"alert_uuid": uuid, "stored": false, "ignored": why}),
        );
    }
    if state.client.connection_state() != async_nats::connection::State::Connected {
        return unavailable("NATS is unreachable");
    }
    let id = keys::digest(&String::from_utf8_lossy(&body));
    let wb = v1::WriteBack {
        alert_uuid: uuid.clone(),
        destination: name.to_string(),
        origin: v1::write_back::Origin::SyncBack as i32,
        id: id.clone(),
        comment,
        author: dest.author.clone(),
        status,
        received_at: Some(time::now()),
    };
    let stored = publish_first(
        &state.js,
        state.subjects.writeback(name, &uuid, &id),
        &format!("writeback:{name}:{uuid}:{id}"),
        None,
        wb.encode_to_vec().into(),
    )
    .await;
    match stored {
        Ok(s) => answer(
            StatusCode::ACCEPTED,
            json!({"alert_uuid": uuid, "stored": true, "duplicate": s.duplicate}),
        ),
        Err(e) => unavailable(&e.to_string()),
    }
}

fn not_delivered(name: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        format!(
            "this alert was never delivered to {name}: a tool can act only on the alerts it was sent"
        ),
    )
}

fn unavailable(e: &str) -> Response {
    tracing::warn!(error = %e, "cannot store a sync notification");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the notification could not be stored; retry later",
    )
}

/// Whether a delivery record says the creation was delivered (records of filtered or
/// dead-lettered creations say otherwise; older records carry no outcome and were deliveries).
fn delivered(record: &[u8]) -> bool {
    let v: Value = serde_json::from_slice(record).unwrap_or_default();
    v.get("outcome")
        .and_then(Value::as_str)
        .is_none_or(|o| o == "delivered")
}

fn bearer_ok(headers: &HeaderMap, token: &Secret) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Constant time, so the token cannot be guessed byte by byte from response times.
    given.as_bytes().ct_eq(token.expose().as_bytes()).into()
}

/// Whether `header` holds the HMAC-SHA256 of `body` under `secret`, in hex: alone, after
/// `sha256=` or `v1=` (PagerDuty), or as one of a comma-separated list (secret rotation).
fn signature_ok(headers: &HeaderMap, header: &str, secret: &Secret, body: &[u8]) -> bool {
    let expected = hmac_sha256(secret.expose().as_bytes(), body);
    headers.get_all(header).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|sig| {
                let sig = sig.trim();
                let hex = sig
                    .strip_prefix("sha256=")
                    .or_else(|| sig.strip_prefix("v1="))
                    .unwrap_or(sig);
                decode_hex(hex).is_some_and(|given| given.ct_eq(&expected).into())
            })
        })
    })
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 64;
    let mut k = if key.len() > BLOCK {
        sha2::Sha256::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k.resize(BLOCK, 0);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = sha2::Sha256::new()
        .chain_update(&ipad)
        .chain_update(message)
        .finalize();
    sha2::Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn signatures_are_read_with_or_without_a_prefix_and_from_a_list() {
        let secret = Secret::from("a-secret-of-16-chars");
        let body = br#"{"a":1}"#;
        let mac: String = hmac_sha256(secret.expose().as_bytes(), body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        for value in [
            mac.clone(),
            format!("sha256={mac}"),
            format!("v1={}, v1={mac}", "0".repeat(64)),
        ] {
            let mut h = HeaderMap::new();
            h.insert("x-signature", value.parse().unwrap());
            assert!(signature_ok(&h, "x-signature", &secret, body), "{value}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            "x-signature",
            format!("sha256={}", "0".repeat(64)).parse().unwrap(),
        );
        assert!(!signature_ok(&h, "x-signature", &secret, body));
        assert!(!signature_ok(
            &HeaderMap::new(),
            "x-signature",
            &secret,
            body
        ));
    }
}
