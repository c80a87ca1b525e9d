//! `POST /v1/alerts`: the webhook source.
//!
//! Answers (JSON bodies):
//! - 202 `{"alert_uuid", "duplicate"}` once JetStream acknowledged the publish, or at once when
//!   the notification was already published by any source (`duplicate: true`); an alert of a
//!   community outside `sekoia.communities`, or a kind not in `ingest.events`, gets 202 with
//!   `ignored` and is not published. Taken: LiveAPI v2 notifications `alert:created`,
//!   `alert:updated`, `alert-comment:created`, and the bare creation forms;
//! - 401 without `Authorization: Bearer <ingest.webhook_token>` or with a wrong one;
//! - 400 `{"error"}` for invalid JSON or a missing/malformed uuid;
//! - 413 over 64 KiB;
//! - 408 when the body did not arrive within `ingest.webhook_body_timeout` (the connection is
//!   then closed);
//! - 503 when NATS is unreachable or does not acknowledge in time (callers retry).
//!
//! Nothing is published on a 4xx.
//!
//! The listener bounds what a client can hold ([`listener_limits`]): a request head must arrive
//! within `ingest.webhook_header_timeout`, a body within `ingest.webhook_body_timeout`, a
//! kept-alive connection is closed after `ingest.webhook_idle_timeout`, and beyond
//! `ingest.webhook_max_connections` connections are answered 503.

use std::sync::Arc;

use alertsync_config::{IngestConfig, Secret};
use alertsync_nats::async_nats;
use alertsync_proto::v1;
use alertsync_runtime::ListenerLimits;
use axum::{
    Json, Router,
    body::Body,
    extract::{Request, State as AxumState},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use subtle::ConstantTimeEq;
use tracing::Instrument as _;

use crate::events;
use crate::publisher::{Publisher, Verdict};

/// Largest accepted body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the webhook handler needs.
#[derive(Clone)]
pub struct State {
    /// Publishes deduplicated events.
    pub publisher: Arc<Publisher>,
    /// Client, for the connection state.
    pub client: async_nats::Client,
    /// Expected bearer token.
    pub token: Secret,
}

/// The webhook routes.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/v1/alerts", post(receive))
        .with_state(state)
}

/// The limits of the ingest's listener (webhook, health and metrics), from `[ingest]`.
pub fn listener_limits(cfg: &IngestConfig) -> ListenerLimits {
    ListenerLimits {
        header_timeout: cfg.webhook_header_timeout.get(),
        body_timeout: cfg.webhook_body_timeout.get(),
        idle_timeout: cfg.webhook_idle_timeout.get(),
        max_connections: cfg.webhook_max_connections,
    }
}

/// The body of a request to the ingest's listener, or the answer refusing it: 413 over
/// [`MAX_BODY_BYTES`], 408 when it did not arrive within `ingest.webhook_body_timeout`.
pub async fn read_body(body: Body) -> Result<bytes::Bytes, Response> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            if alertsync_runtime::is_body_timeout(&e) {
                error(StatusCode::REQUEST_TIMEOUT, e.to_string())
            } else {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body over {MAX_BODY_BYTES} bytes"),
                )
            }
        })
}

fn error(status: StatusCode, reason: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": reason.into()}))).into_response()
}

fn authorized(req: &Request, token: &Secret) -> bool {
    let Some(value) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(given) = value.strip_prefix("Bearer ") else {
        return false;
    };
    // Constant time, so the token cannot be guessed byte by byte from response times.
    given.as_bytes().ct_eq(token.expose().as_bytes()).into()
}

async fn receive(AxumState(state): AxumState<State>, req: Request<Body>) -> Response {
    let span = tracing::info_span!(
        "webhook_receive",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/v1/alerts",
        http.response.status_code = tracing::field::Empty,
        alert.uuid = tracing::field::Empty,
    );
    let resp = receive_in_span(state, req).instrument(span.clone()).await;
    span.record("http.response.status_code", resp.status().as_u16());
    resp
}

async fn receive_in_span(state: State, req: Request<Body>) -> Response {
    if !authorized(&req, &state.token) {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer <ingest.webhook_token>)",
        );
    }
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let event = match events::parse(&body) {
        Ok(e) => e,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    tracing::Span::current().record("alert.uuid", event.alert_uuid.as_str());
    if state.client.connection_state() != async_nats::connection::State::Connected {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "NATS is unreachable; retry later",
        );
    }
    match state.publisher.publish(&event, v1::Source::Webhook).await {
        Ok(verdict) => {
            let mut body = serde_json::json!({
                "alert_uuid": event.alert_uuid,
                "duplicate": verdict == Verdict::Duplicate,
            });
            match verdict {
                Verdict::OtherCommunity => {
                    body["ignored"] = "its community is not in sekoia.communities".into();
                }
                Verdict::OtherKind => {
                    body["ignored"] = format!(
                        "{} notifications are not taken (ingest.events)",
                        crate::events::kind_name(event.kind())
                    )
                    .into();
                }
                Verdict::Published | Verdict::Duplicate => {}
            }
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        Err(e) => {
            tracing::warn!(alert.uuid = %event.alert_uuid, error = %e, "publish failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the alert could not be stored; retry later",
            )
        }
    }
}
