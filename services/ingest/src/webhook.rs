//! `POST /v1/alerts`: the webhook source.
//!
//! Answers (JSON bodies):
//! - 202 `{"alert_uuid", "duplicate"}` once JetStream acknowledged the publish (a second
//!   publish of the same uuid within the duplicate window is acknowledged as a duplicate);
//! - 401 without `Authorization: Bearer <ingest.webhook_token>` or with a wrong one;
//! - 400 `{"error"}` for invalid JSON or a missing/malformed uuid;
//! - 413 over 64 KiB;
//! - 503 when NATS is unreachable or does not acknowledge in time (callers retry).
//!
//! Nothing is published on a 4xx.

use alertsync_config::Secret;
use alertsync_jetstream::{Subjects, async_nats, publish::publish_acked};
use alertsync_proto::{Message as _, time, v1};
use axum::{
    Json, Router,
    body::Body,
    extract::{Request, State as AxumState},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use subtle::ConstantTimeEq;

use crate::events;

/// Largest accepted body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the webhook handler needs.
#[derive(Clone)]
pub struct State {
    /// JetStream context.
    pub js: async_nats::jetstream::Context,
    /// Client, for the connection state.
    pub client: async_nats::Client,
    /// Subject names.
    pub subjects: Subjects,
    /// Expected bearer token.
    pub token: Secret,
}

/// The webhook routes.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/v1/alerts", post(receive))
        .with_state(state)
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
    if !authorized(&req, &state.token) {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer <ingest.webhook_token>)",
        );
    }
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body over {MAX_BODY_BYTES} bytes"),
            );
        }
    };
    let event = match events::parse(&body) {
        Ok(e) => e,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    if state.client.connection_state() != async_nats::connection::State::Connected {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "NATS is unreachable; retry later",
        );
    }
    let msg = v1::AlertCreated {
        alert_uuid: event.alert_uuid.clone(),
        short_id: event.short_id,
        community_uuid: event.community_uuid.clone(),
        source: v1::Source::Webhook as i32,
        received_at: Some(time::now()),
    };
    let subject = state.subjects.created(&event.community_uuid);
    match publish_acked(
        &state.js,
        subject,
        &event.alert_uuid,
        None,
        msg.encode_to_vec().into(),
    )
    .await
    {
        Ok(stored) => {
            tracing::info!(alert.uuid = %event.alert_uuid, duplicate = stored.duplicate, "alert accepted");
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({
                    "alert_uuid": event.alert_uuid,
                    "duplicate": stored.duplicate,
                })),
            )
                .into_response()
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
