//! A fake Sekoia.io API, speaking the real wire formats:
//! - `GET /v1/sic/alerts/{uuid}` (Get Alert) and `GET /v1/me`, checking
//!   `Authorization: Bearer <key>` (401 otherwise), error bodies `{"message": ...}`;
//! - `GET /v1/sic/alerts?date[created_at]=<iso>,now&sort=created_at&direction=asc&limit&offset`
//!   (`match[community_uuid]` too), answering `{"items", "total", "has_more"}`;
//! - `/live/`: the LiveAPI websocket, authenticated by the cookie `access_token_cookie=<key>`,
//!   greeting with `{"authenticated": true}` and pushing v2 notifications.
//!
//! Answers per alert can be scripted (`[404, 404]` then the alert); with `auto_create` every
//! unknown uuid gets a realistic alert (benchmark). Tests can drop or refuse the socket,
//! create alerts only the list shows, and push raw socket messages.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::{
    Json, Router,
    extract::{
        Path, Query, State,
        ws::{Message, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

struct Inner {
    api_key: Mutex<String>,
    alerts: Mutex<HashMap<String, Value>>,
    /// Uuids in insertion order (ties in `created_at` list in this order).
    order: Mutex<Vec<String>>,
    scripts: Mutex<HashMap<String, VecDeque<u16>>>,
    /// Get Alert bodies given as bytes (not necessarily JSON, not necessarily UTF-8).
    raw: Mutex<HashMap<String, Vec<u8>>>,
    list_script: Mutex<VecDeque<u16>>,
    /// While set, every Get Alert answers this status (an outage).
    outage: Mutex<Option<u16>>,
    get_calls: Mutex<HashMap<String, usize>>,
    list_calls: AtomicUsize,
    auto_create: AtomicBool,
    live_tx: broadcast::Sender<String>,
    /// Bumped to drop every open socket.
    live_drop: watch::Sender<u64>,
    live_refuse: AtomicBool,
    live_open: AtomicUsize,
    live_connects: AtomicUsize,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            api_key: Default::default(),
            alerts: Default::default(),
            order: Default::default(),
            scripts: Default::default(),
            raw: Default::default(),
            list_script: Default::default(),
            outage: Default::default(),
            get_calls: Default::default(),
            list_calls: Default::default(),
            auto_create: Default::default(),
            live_tx: broadcast::channel(4096).0,
            live_drop: watch::channel(0).0,
            live_refuse: Default::default(),
            live_open: Default::default(),
            live_connects: Default::default(),
        }
    }
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
            .route("/v1/sic/alerts", get(list_alerts))
            .route("/v1/me", get(me))
            .route("/live/", get(live))
            .with_state(inner.clone());
        let addr = crate::serve_on(addr, router).await?;
        Ok(Self { addr, inner })
    }

    /// `http://127.0.0.1:<port>`: the `sekoia.base_url` to configure.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes `alert` (keyed by its `uuid`) readable by Get Alert and the list, without
    /// announcing it on the socket.
    pub fn insert_alert(&self, alert: Value) {
        let uuid = alert["uuid"].as_str().unwrap_or_default().to_string();
        let fresh = self
            .inner
            .alerts
            .lock()
            .unwrap()
            .insert(uuid.clone(), alert)
            .is_none();
        if fresh {
            self.inner.order.lock().unwrap().push(uuid);
        }
    }

    /// Inserts `alert` and announces it on the socket, as Sekoia does for a new alert.
    pub fn create_alert(&self, alert: Value) {
        let notification = crate::alerts::live_notification(&alert);
        self.insert_alert(alert);
        self.push_live(notification.to_string());
    }

    /// Sends a raw text frame to every open socket.
    pub fn push_live(&self, text: String) {
        let _ = self.inner.live_tx.send(text);
    }

    /// Drops every open socket abruptly (no close frame), like a network cut.
    pub fn drop_live(&self) {
        self.inner.live_drop.send_modify(|g| *g += 1);
    }

    /// While `refuse` is true, socket upgrades are answered 503.
    pub fn refuse_live(&self, refuse: bool) {
        self.inner.live_refuse.store(refuse, Ordering::SeqCst);
    }

    /// Sockets open right now.
    pub fn live_open(&self) -> usize {
        self.inner.live_open.load(Ordering::SeqCst)
    }

    /// Socket connections accepted so far.
    pub fn live_connects(&self) -> usize {
        self.inner.live_connects.load(Ordering::SeqCst)
    }

    /// List calls answered so far (whatever they answered).
    pub fn list_calls(&self) -> usize {
        self.inner.list_calls.load(Ordering::SeqCst)
    }

    /// The next list calls answer these statuses, in order, before listing again.
    pub fn script_list(&self, statuses: &[u16]) {
        self.inner.list_script.lock().unwrap().extend(statuses);
    }

    /// The next Get Alert calls for `uuid` answer these statuses, in order, before the alert.
    pub fn script(&self, uuid: &str, statuses: &[u16]) {
        self.inner
            .scripts
            .lock()
            .unwrap()
            .insert(uuid.to_string(), statuses.iter().copied().collect());
    }

    /// Get Alert for `uuid` answers 200 with `body` as it is (a garbled or hostile answer).
    pub fn answer_raw(&self, uuid: &str, body: Vec<u8>) {
        self.inner
            .raw
            .lock()
            .unwrap()
            .insert(uuid.to_string(), body);
    }

    /// While `Some(status)`, every Get Alert answers `status` (an outage of Sekoia's API);
    /// `None` ends it.
    pub fn outage(&self, status: Option<u16>) {
        *self.inner.outage.lock().unwrap() = status;
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
    let scripted = *inner.outage.lock().unwrap();
    let scripted = scripted.or_else(|| {
        inner
            .scripts
            .lock()
            .unwrap()
            .get_mut(&uuid)
            .and_then(|q| q.pop_front())
    });
    if let Some(status) = scripted {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return message(status, "scripted answer");
    }
    if let Some(body) = inner.raw.lock().unwrap().get(&uuid).cloned() {
        return (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
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

async fn list_alerts(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    inner.list_calls.fetch_add(1, Ordering::SeqCst);
    if !authorized(&inner, &headers) {
        return message(StatusCode::UNAUTHORIZED, "Invalid or expired API key");
    }
    let scripted = inner.list_script.lock().unwrap().pop_front();
    if let Some(status) = scripted {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return message(status, "scripted answer");
    }
    let since = match q.get("date[created_at]").and_then(|r| r.split(',').next()) {
        None => i64::MIN,
        Some(start) => match chrono::DateTime::parse_from_rfc3339(start) {
            Ok(t) => t.timestamp(),
            Err(_) => return message(StatusCode::BAD_REQUEST, "invalid date[created_at]"),
        },
    };
    let communities: Vec<String> = q
        .get("match[community_uuid]")
        .map(|c| c.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(20)
        .min(100);
    let offset: usize = q.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
    let alerts = inner.alerts.lock().unwrap();
    let order = inner.order.lock().unwrap();
    let mut matching: Vec<(i64, usize, &Value)> = order
        .iter()
        .enumerate()
        .filter_map(|(i, uuid)| alerts.get(uuid).map(|a| (i, a)))
        .map(|(i, a)| (a["created_at"].as_i64().unwrap_or(0), i, a))
        .filter(|(created, _, a)| {
            *created >= since
                && (communities.is_empty()
                    || a["community_uuid"]
                        .as_str()
                        .is_some_and(|c| communities.iter().any(|x| x == c)))
        })
        .collect();
    matching.sort_by_key(|(created, i, _)| (*created, *i));
    if q.get("direction").map(String::as_str) == Some("desc") {
        matching.reverse();
    }
    let total = matching.len();
    let items: Vec<Value> = matching
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|(_, _, a)| a.clone())
        .collect();
    Json(json!({"items": items, "total": total, "has_more": offset + limit < total}))
        .into_response()
}

async fn live(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if inner.live_refuse.load(Ordering::SeqCst) {
        return message(StatusCode::SERVICE_UNAVAILABLE, "LiveAPI unavailable");
    }
    let expected = format!("access_token_cookie={}", inner.api_key.lock().unwrap());
    let authenticated = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .any(|c| c.trim() == expected);
    if !authenticated {
        return message(StatusCode::UNAUTHORIZED, "Invalid or expired API key");
    }
    let rx = inner.live_tx.subscribe();
    let drop_rx = inner.live_drop.subscribe();
    ws.on_upgrade(move |socket| live_session(socket, rx, drop_rx, inner))
}

async fn live_session(
    mut socket: WebSocket,
    mut rx: broadcast::Receiver<String>,
    mut drop_rx: watch::Receiver<u64>,
    inner: Arc<Inner>,
) {
    inner.live_connects.fetch_add(1, Ordering::SeqCst);
    inner.live_open.fetch_add(1, Ordering::SeqCst);
    if socket
        .send(Message::Text(r#"{"authenticated": true}"#.into()))
        .await
        .is_ok()
    {
        loop {
            tokio::select! {
                _ = drop_rx.changed() => break,
                msg = rx.recv() => match msg {
                    Ok(text) => {
                        if socket.send(Message::Text(text.into())).await.is_err() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                incoming = socket.recv() => match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    inner.live_open.fetch_sub(1, Ordering::SeqCst);
}
