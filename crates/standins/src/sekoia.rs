//! A fake Sekoia.io API: `GET /v1/sic/alerts/{uuid}` and `GET /v1/me`, checking
//! `Authorization: Bearer <key>` like the real one (401 otherwise), with error bodies
//! `{"message": ...}`.
//!
//! Answers per alert can be scripted (`[404, 404]` then the alert); with `auto_create` every
//! unknown uuid gets a realistic alert (benchmark).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};

#[derive(Default)]
struct Inner {
    api_key: Mutex<String>,
    alerts: Mutex<HashMap<String, Value>>,
    scripts: Mutex<HashMap<String, VecDeque<u16>>>,
    get_calls: Mutex<HashMap<String, usize>>,
    auto_create: AtomicBool,
}

/// A running fake Sekoia API.
#[derive(Clone)]
pub struct FakeSekoia {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl FakeSekoia {
    /// Starts on a free loopback port, accepting `api_key`.
    pub async fn start(api_key: &str) -> Self {
        Self::start_on(crate::loopback(), api_key)
            .await
            .expect("binding a loopback port")
    }

    /// Starts on `addr`, accepting `api_key`.
    pub async fn start_on(addr: SocketAddr, api_key: &str) -> std::io::Result<Self> {
        let inner = Arc::new(Inner::default());
        *inner.api_key.lock().unwrap() = api_key.to_string();
        let router = Router::new()
            .route("/v1/sic/alerts/{uuid}", get(get_alert))
            .route("/v1/me", get(me))
            .with_state(inner.clone());
        let addr = crate::serve_on(addr, router).await?;
        Ok(Self { addr, inner })
    }

    /// `http://127.0.0.1:<port>`: the `sekoia.base_url` to configure.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes `alert` (keyed by its `uuid`) readable.
    pub fn insert_alert(&self, alert: Value) {
        let uuid = alert["uuid"].as_str().unwrap_or_default().to_string();
        self.inner.alerts.lock().unwrap().insert(uuid, alert);
    }

    /// The next Get Alert calls for `uuid` answer these statuses, in order, before the alert.
    pub fn script(&self, uuid: &str, statuses: &[u16]) {
        self.inner
            .scripts
            .lock()
            .unwrap()
            .insert(uuid.to_string(), statuses.iter().copied().collect());
    }

    /// Changes the accepted key (simulates a rotated or revoked key).
    pub fn set_api_key(&self, key: &str) {
        *self.inner.api_key.lock().unwrap() = key.to_string();
    }

    /// Answers every unknown uuid with a realistic alert.
    pub fn auto_create(&self, on: bool) {
        self.inner.auto_create.store(on, Ordering::SeqCst);
    }

    /// Get Alert calls made for `uuid`, whatever they answered.
    pub fn get_calls(&self, uuid: &str) -> usize {
        self.inner
            .get_calls
            .lock()
            .unwrap()
            .get(uuid)
            .copied()
            .unwrap_or(0)
    }
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({"message": text}))).into_response()
}

fn authorized(inner: &Inner, headers: &HeaderMap) -> bool {
    let expected = format!("Bearer {}", inner.api_key.lock().unwrap());
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected)
}

async fn me(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    if !authorized(&inner, &headers) {
        return message(StatusCode::UNAUTHORIZED, "Invalid or expired API key");
    }
    Json(json!({"uuid": "00000000-0000-4000-8000-000000000001", "type": "apikey"})).into_response()
}

async fn get_alert(
    State(inner): State<Arc<Inner>>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
) -> Response {
    *inner
        .get_calls
        .lock()
        .unwrap()
        .entry(uuid.clone())
        .or_default() += 1;
    if !authorized(&inner, &headers) {
        return message(StatusCode::UNAUTHORIZED, "Invalid or expired API key");
    }
    let scripted = inner
        .scripts
        .lock()
        .unwrap()
        .get_mut(&uuid)
        .and_then(|q| q.pop_front());
    if let Some(status) = scripted {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return message(status, "scripted answer");
    }
    let found = inner.alerts.lock().unwrap().get(&uuid).cloned();
    match found {
        Some(alert) => Json(alert).into_response(),
        None if inner.auto_create.load(Ordering::SeqCst) => {
            let alert = crate::alerts::new_alert(
                &uuid,
                &crate::alerts::random_short_id(),
                "Brute force on SSH service",
                "Brute force on SSH service",
            );
            Json(alert).into_response()
        }
        None => message(StatusCode::NOT_FOUND, "Alert not found"),
    }
}
