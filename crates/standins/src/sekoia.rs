//! A fake Sekoia.io API, speaking the real wire formats and keeping the alerts' state:
//! - `GET /v1/sic/alerts/{uuid}` (Get Alert) and `GET /v1/me` (the key's identity), checking
//!   `Authorization: Bearer <key>` (401 otherwise), error bodies `{"message": ...}`;
//! - `GET /v1/sic/alerts?date[created_at]=<iso>,now&sort=created_at&direction=asc&limit&offset`,
//!   or by `updated_at` (`date[updated_at]`, `sort=updated_at`), `match[community_uuid]` too,
//!   answering `{"items", "total", "has_more"}`;
//! - an alert's comments and workflow (`GET`/`POST .../comments`, `GET`/`PATCH .../workflow`,
//!   see the `writes` module) and the events search jobs (`/v1/sic/conf/events/search/jobs`,
//!   see [`EventsJob`]);
//! - `/live/`: the LiveAPI websocket, authenticated by the cookie `access_token_cookie=<key>`,
//!   greeting with `{"authenticated": true}` and pushing v2 notifications.
//!
//! Answers per alert can be scripted (`[404, 404]` then the alert); with `auto_create` every
//! unknown uuid gets a realistic alert (benchmark). Tests can drop or refuse the socket,
//! create alerts only the list shows, and push raw socket messages.
//!
//! Alerts keep their state. Tests change them as an analyst would ([`FakeSekoia::set_status`],
//! [`FakeSekoia::set_urgency`], [`FakeSekoia::add_comment`], [`FakeSekoia::update_alert`]):
//! `updated_*` and the history follow, and the change is announced on the socket as Sekoia
//! announces it (`alert:updated`, `alert-comment:created`), or made quietly (`*_quietly`,
//! `announce: false`), as when nobody was listening. Writes through the API (a comment, a
//! workflow action) are made by the key's identity ([`FakeSekoia::apikey_identity`]) and
//! announced too. An unknown alert is a 404 everywhere.
//!
//! The default workflow is Sekoia's: Pending → Acknowledge, Reject; Acknowledged → Validate
//! (to Ongoing), Reject, Close; Ongoing → Close, Reject; Rejected and Closed are final (no
//! reopening; [`FakeSekoia::define_status`] adds a tenant's own statuses and ways between
//! them).

mod events;
mod state;
#[cfg(test)]
mod tests;
mod writes;

pub use events::EventsJob;
pub use state::ANALYST;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{
    Json, Router,
    extract::{
        Path, Query, State,
        ws::{Message, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use state::Actor;

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
    /// The uuid `/v1/me` gives the key: the author of everything written through the API.
    identity: String,
    /// Statuses and transitions. Locked after `alerts` when both are held.
    workflow: Mutex<state::Workflow>,
    /// The next write calls (POST comments, PATCH workflow) answer these statuses.
    write_script: Mutex<VecDeque<u16>>,
    /// Bodies of the write calls per alert uuid, whatever they answered.
    comments_posted: Mutex<HashMap<String, Vec<Value>>>,
    workflow_patches: Mutex<HashMap<String, Vec<Value>>>,
    events: Mutex<events::Events>,
    events_pages: AtomicUsize,
    /// `Retry-After` of scripted 429 and 503 answers.
    retry_after: Mutex<Option<Duration>>,
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
            identity: uuid::Uuid::new_v4().to_string(),
            workflow: Default::default(),
            write_script: Default::default(),
            comments_posted: Default::default(),
            workflow_patches: Default::default(),
            events: Default::default(),
            events_pages: Default::default(),
            retry_after: Default::default(),
        }
    }
}

impl Inner {
    /// Pushes `notification` to every open socket.
    fn announce(&self, notification: &Value) {
        let _ = self.live_tx.send(notification.to_string());
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
        let jobs = "/v1/sic/conf/events/search/jobs";
        let router = Router::new()
            .route("/v1/sic/alerts/{uuid}", get(get_alert))
            .route(
                "/v1/sic/alerts/{uuid}/comments",
                get(writes::list_comments).post(writes::post_comment),
            )
            .route(
                "/v1/sic/alerts/{uuid}/workflow",
                get(writes::get_workflow).patch(writes::patch_workflow),
            )
            .route("/v1/sic/alerts", get(list_alerts))
            .route(jobs, post(events::start_job))
            .route(&format!("{jobs}/{{job}}"), get(events::job_state))
            .route(&format!("{jobs}/{{job}}/events"), get(events::job_events))
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

    /// The current state of alert `uuid` (as Get Alert answers it).
    pub fn alert(&self, uuid: &str) -> Option<Value> {
        self.inner.alerts.lock().unwrap().get(uuid).cloned()
    }

    /// Applies `change` to alert `uuid`: the alert as the helpers below change it, under the
    /// lock, then announced when `announce`. Returns the notification (announced or not).
    ///
    /// # Panics
    ///
    /// When the fake has no alert `uuid` (a mistake in the test).
    fn change(
        &self,
        uuid: &str,
        announce: bool,
        change: impl FnOnce(&Inner, &mut Value) -> Vec<Value>,
    ) -> Value {
        let notifications = {
            let mut alerts = self.inner.alerts.lock().unwrap();
            let Some(alert) = alerts.get_mut(uuid) else {
                panic!("the fake Sekoia has no alert {uuid}");
            };
            change(&self.inner, alert)
        };
        if announce {
            for n in &notifications {
                self.inner.announce(n);
            }
        }
        notifications.into_iter().next().unwrap_or(Value::Null)
    }

    /// An analyst moves alert `uuid` to the status `name` (a default status, a tenant's own, or
    /// a new name, which gets a uuid of its own): `updated_*` and the history follow, and
    /// `alert:updated` (`updated: {status, status_name}`) is announced. Returns the
    /// notification (tests also post it to a webhook). No workflow check: the analyst may.
    pub fn set_status(&self, uuid: &str, name: &str) -> Value {
        self.status_change(uuid, name, true)
    }

    /// [`FakeSekoia::set_status`] without announcing it (the socket was down).
    pub fn set_status_quietly(&self, uuid: &str, name: &str) -> Value {
        self.status_change(uuid, name, false)
    }

    fn status_change(&self, uuid: &str, name: &str, announce: bool) -> Value {
        self.change(uuid, announce, |inner, alert| {
            let status = inner.workflow.lock().unwrap().status(name);
            let updated = state::change_status(alert, &status, &Actor::analyst(), None);
            vec![state::updated_notification(alert, updated)]
        })
    }

    /// An analyst sets the urgency of alert `uuid` (`urgency.current_value`, and its display
    /// band): announced as `alert:updated` with `updated: {dynamic_urgency_value}`. Returns the
    /// notification.
    pub fn set_urgency(&self, uuid: &str, value: i64) -> Value {
        self.change(uuid, true, |_, alert| {
            let updated = state::change_urgency(alert, value, &Actor::analyst());
            vec![state::updated_notification(alert, updated)]
        })
    }

    /// Applies `f` to alert `uuid` as an analyst's change made now: `updated_at` moves forward
    /// (never backwards) and `updated_by*` name the analyst, unless `f` set them itself. The
    /// notification (returned, and announced when `announce`) is `alert:updated` whose
    /// `updated` names what `f` changed: a status by uuid and name, the urgency by its
    /// current value, anything else by its new value.
    pub fn update_alert(&self, uuid: &str, f: impl FnOnce(&mut Value), announce: bool) -> Value {
        self.change(uuid, announce, |_, alert| {
            let before = alert.clone();
            f(alert);
            let times = ["updated_at", "updated_by", "updated_by_type"];
            if times.iter().all(|k| alert.get(*k) == before.get(*k)) {
                state::touch(alert, &Actor::analyst());
            }
            let updated = state::changes(&before, alert);
            vec![state::updated_notification(alert, updated)]
        })
    }

    /// An analyst comments alert `uuid`: the comment (`created_by_type: "user"`, unseen) goes
    /// into the alert's `comments` and history, `number_of_total_comments` grows, and
    /// `alert-comment:created` is announced. `updated_at` does not move (as in Sekoia's
    /// samples). Returns the notification.
    pub fn add_comment(&self, uuid: &str, content: &str, author: &str) -> Value {
        self.comment(uuid, content, author, true)
    }

    /// [`FakeSekoia::add_comment`] without announcing it (the socket was down).
    pub fn add_comment_quietly(&self, uuid: &str, content: &str, author: &str) -> Value {
        self.comment(uuid, content, author, false)
    }

    fn comment(&self, uuid: &str, content: &str, author: &str, announce: bool) -> Value {
        self.change(uuid, announce, |_, alert| {
            let c = state::add_comment(alert, content, Some(author), &Actor::analyst(), true, true);
            vec![state::comment_notification(alert, &c)]
        })
    }

    /// Adds the tenant status `name` (if new), reachable from each status of `from` by a
    /// workflow action named `transition` (a fresh id; see [`FakeSekoia::transition_id`]).
    pub fn define_status(&self, name: &str, transition: &str, from: &[&str]) {
        self.inner
            .workflow
            .lock()
            .unwrap()
            .define(name, transition, from);
    }

    /// The uuid of the status named `name`, if the tenant has one.
    pub fn status_uuid(&self, name: &str) -> Option<String> {
        self.inner.workflow.lock().unwrap().status_uuid(name)
    }

    /// The id of the workflow action named `name` (e.g. `Close`), if there is one.
    pub fn transition_id(&self, name: &str) -> Option<String> {
        self.inner.workflow.lock().unwrap().transition_id(name)
    }

    /// The uuid `/v1/me` gives the key: `created_by`/`updated_by` of what is written through
    /// the API (with `*_type: "apikey"`). The same for the life of the fake, whatever the key.
    pub fn apikey_identity(&self) -> String {
        self.inner.identity.clone()
    }

    /// The next write calls (POST a comment, PATCH a workflow), whatever the alert, answer
    /// these statuses, in order, before writing again.
    pub fn script_writes(&self, statuses: &[u16]) {
        self.inner.write_script.lock().unwrap().extend(statuses);
    }

    /// Bodies of the `PATCH .../workflow` calls for alert `uuid` (JSON, or the text of one that
    /// is not), whatever they answered.
    pub fn workflow_patches(&self, uuid: &str) -> Vec<Value> {
        let patches = self.inner.workflow_patches.lock().unwrap();
        patches.get(uuid).cloned().unwrap_or_default()
    }

    /// Bodies of the `POST .../comments` calls for alert `uuid`, whatever they answered.
    pub fn comments_posted(&self, uuid: &str) -> Vec<Value> {
        let posted = self.inner.comments_posted.lock().unwrap();
        posted.get(uuid).cloned().unwrap_or_default()
    }

    /// Scripted 429 and 503 answers carry `Retry-After` (whole seconds) while this is set.
    pub fn retry_after(&self, wait: Option<Duration>) {
        *self.inner.retry_after.lock().unwrap() = wait;
    }

    /// The events an events search for alert `short_id` finds (flat ECS-like objects with
    /// dotted keys, e.g. `"source.ip"`), in order.
    pub fn set_events(&self, short_id: &str, events: Vec<Value>) {
        self.inner.events.lock().unwrap().set(short_id, events);
    }

    /// The next events search job for alert `short_id` goes as `job` (jobs scripted for the
    /// same short id go in turn).
    pub fn script_events_job(&self, short_id: &str, job: EventsJob) {
        self.inner.events.lock().unwrap().script(short_id, job);
    }

    /// Events search jobs started so far.
    pub fn events_jobs_started(&self) -> usize {
        self.inner.events.lock().unwrap().started()
    }

    /// Pages of events served so far.
    pub fn events_pages_served(&self) -> usize {
        self.inner.events_pages.load(Ordering::SeqCst)
    }

    /// Bodies of the requests to start an events search job (accepted or not), in order.
    pub fn events_job_requests(&self) -> Vec<Value> {
        self.inner.events.lock().unwrap().requests()
    }
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({"message": text}))).into_response()
}

fn unauthorized() -> Response {
    message(StatusCode::UNAUTHORIZED, "Invalid or expired API key")
}

fn not_found() -> Response {
    message(StatusCode::NOT_FOUND, "Alert not found")
}

/// A scripted answer: `status` with a message, and `Retry-After` on 429 and 503 when one is
/// set.
fn scripted(inner: &Inner, status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut answer = message(status, "scripted answer");
    let wait = *inner.retry_after.lock().unwrap();
    if let Some(wait) = wait
        && matches!(status.as_u16(), 429 | 503)
    {
        answer.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from(wait.as_secs()),
        );
    }
    answer
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
        return unauthorized();
    }
    Json(json!({"uuid": inner.identity, "type": "apikey", "name": "alertsync"})).into_response()
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
        return unauthorized();
    }
    let scripted_status = *inner.outage.lock().unwrap();
    let scripted_status = scripted_status.or_else(|| {
        inner
            .scripts
            .lock()
            .unwrap()
            .get_mut(&uuid)
            .and_then(|q| q.pop_front())
    });
    if let Some(status) = scripted_status {
        return scripted(&inner, status);
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
        None => not_found(),
    }
}

/// `date[<field>]=<start>,<end>`: epoch seconds, both ends included; `now` (or no end) is no
/// bound. `None` when the filter is absent; the 400's message when it is not valid.
fn date_range(q: &HashMap<String, String>, field: &str) -> Result<Option<(i64, i64)>, String> {
    let Some(range) = q.get(&format!("date[{field}]")) else {
        return Ok(None);
    };
    let bad = || format!("invalid date[{field}]");
    let mut ends = range.splitn(2, ',');
    let start = ends.next().unwrap_or_default();
    let start = chrono::DateTime::parse_from_rfc3339(start)
        .map_err(|_| bad())?
        .timestamp();
    let end = match ends.next().map(str::trim) {
        None | Some("") | Some("now") => i64::MAX,
        Some(end) => chrono::DateTime::parse_from_rfc3339(end)
            .map_err(|_| bad())?
            .timestamp(),
    };
    Ok(Some((start, end)))
}

async fn list_alerts(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    inner.list_calls.fetch_add(1, Ordering::SeqCst);
    if !authorized(&inner, &headers) {
        return unauthorized();
    }
    let scripted_status = inner.list_script.lock().unwrap().pop_front();
    if let Some(status) = scripted_status {
        return scripted(&inner, status);
    }
    let sort = match q.get("sort").map(String::as_str) {
        None | Some("created_at") => "created_at",
        Some("updated_at") => "updated_at",
        Some(other) => {
            return message(
                StatusCode::BAD_REQUEST,
                &format!("sort: the fake sorts by created_at or updated_at, not {other}"),
            );
        }
    };
    let (created, updated) = match (date_range(&q, "created_at"), date_range(&q, "updated_at")) {
        (Ok(c), Ok(u)) => (c, u),
        (Err(m), _) | (_, Err(m)) => return message(StatusCode::BAD_REQUEST, &m),
    };
    let within = |a: &Value, field: &str, range: Option<(i64, i64)>| {
        range.is_none_or(|(start, end)| {
            let t = a[field].as_i64().unwrap_or(0);
            start <= t && t <= end
        })
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
        .filter(|(_, a)| {
            within(a, "created_at", created)
                && within(a, "updated_at", updated)
                && (communities.is_empty()
                    || a["community_uuid"]
                        .as_str()
                        .is_some_and(|c| communities.iter().any(|x| x == c)))
        })
        .map(|(i, a)| (a[sort].as_i64().unwrap_or(0), i, a))
        .collect();
    // By the sort field, then insertion (alerts of the same second keep their order).
    matching.sort_by_key(|(t, i, _)| (*t, *i));
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
    Json(json!({"items": items, "total": total, "has_more": offset.saturating_add(limit) < total}))
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
        return unauthorized();
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
