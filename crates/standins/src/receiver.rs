//! A destination stand-in: records every request (method, path, query, headers, body, time)
//! and answers from a per-path script (then 200 `{"ok":true}`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::{
    Router,
    body::Bytes,
    extract::{Request, State},
    http::{HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use tokio::sync::Notify;

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Raw query string.
    pub query: Option<String>,
    /// Headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Bytes,
    /// When it arrived.
    pub at: SystemTime,
    /// Status answered.
    pub status: u16,
    /// The client's address: one per connection, so repeated requests from one address
    /// came over one kept-alive connection.
    pub peer: Option<SocketAddr>,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

impl Reply {
    /// A bare status.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: &str) -> Self {
        self.body = body.to_string();
        self
    }
}

type Callback = Box<dyn Fn(&Recorded) + Send + Sync>;

#[derive(Default)]
struct Inner {
    requests: Mutex<Vec<Recorded>>,
    scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
    defaults: Mutex<HashMap<String, Reply>>,
    /// Requests whose body contains the text get the reply, before any script.
    by_content: Mutex<Vec<(String, Reply)>>,
    changed: Notify,
    callback: Mutex<Option<Callback>>,
    /// Requests to a path answered by a function of their body (after scripts and defaults).
    responders: Mutex<HashMap<String, Responder>>,
    /// Paths whose answers wait for [`Receiver::release`].
    held: Mutex<HashSet<String>>,
    released: Notify,
}

type Responder = Arc<dyn Fn(&[u8]) -> Reply + Send + Sync>;

/// A running recording destination.
#[derive(Clone)]
pub struct Receiver {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Receiver {
    /// Starts on a free loopback port.
    pub async fn start() -> Self {
        Self::start_on(crate::loopback())
            .await
            .expect("binding a loopback port")
    }

    /// Starts on `addr`.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let inner = Arc::new(Inner::default());
        let router = Router::new().fallback(record).with_state(inner.clone());
        let addr = crate::serve_on(addr, router).await?;
        Ok(Self { addr, inner })
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next requests to `path` get these answers, in order.
    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        self.inner
            .scripts
            .lock()
            .unwrap()
            .entry(path.to_string())
            .or_default()
            .extend(replies);
    }

    /// Requests to `path` get `reply` once the script is used up (instead of 200).
    pub fn always(&self, path: &str, reply: Reply) {
        self.inner
            .defaults
            .lock()
            .unwrap()
            .insert(path.to_string(), reply);
    }

    /// Requests to `path` get the reply `f` makes of their body (a tool answering each
    /// creation with its own id), once its script is used up. Takes over from [`Receiver::always`].
    pub fn respond_with(&self, path: &str, f: impl Fn(&[u8]) -> Reply + Send + Sync + 'static) {
        self.inner.defaults.lock().unwrap().remove(path);
        self.inner
            .responders
            .lock()
            .unwrap()
            .insert(path.to_string(), Arc::new(f));
    }

    /// Requests (to any path) whose body contains `needle` get `reply`, whatever else is
    /// scripted: a destination that dislikes some alerts' content.
    pub fn answer_when_body_has(&self, needle: &str, reply: Reply) {
        self.inner
            .by_content
            .lock()
            .unwrap()
            .push((needle.to_string(), reply));
    }

    /// Requests to `path` are taken (recorded, their reply chosen) but answered only once
    /// [`Receiver::release`] is called: the tool has acted on a request its caller has not
    /// heard back about yet, the window a crash of the caller leaves ambiguous.
    pub fn hold(&self, path: &str) {
        self.inner.held.lock().unwrap().insert(path.to_string());
    }

    /// Answers the requests held on `path`, and the next ones at once.
    pub fn release(&self, path: &str) {
        self.inner.held.lock().unwrap().remove(path);
        self.inner.released.notify_waiters();
    }

    /// Calls `f` on every request as it arrives (the demo prints them).
    pub fn on_request(&self, f: impl Fn(&Recorded) + Send + Sync + 'static) {
        *self.inner.callback.lock().unwrap() = Some(Box::new(f));
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// Requests to `path` so far.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Waits until `cond` holds on the recorded requests, or `timeout` passes. Returns whether
    /// it held.
    pub async fn wait_until(&self, timeout: Duration, cond: impl Fn(&[Recorded]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            if cond(&self.inner.requests.lock().unwrap()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return cond(&self.inner.requests.lock().unwrap());
            }
        }
    }
}

async fn record(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let by_content = inner
        .by_content
        .lock()
        .unwrap()
        .iter()
        .find(|(needle, _)| body.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .map(|(_, reply)| reply.clone());
    let reply = if let Some(reply) = by_content {
        reply
    } else {
        let scripted = inner
            .scripts
            .lock()
            .unwrap()
            .get_mut(&path)
            .and_then(|q| q.pop_front());
        let responder = inner.responders.lock().unwrap().get(&path).cloned();
        scripted
            .or_else(|| inner.defaults.lock().unwrap().get(&path).cloned())
            .or_else(|| responder.map(|f| f(&body)))
            .unwrap_or_else(|| Reply::status(200).body("{\"ok\":true}"))
    };
    let recorded = Recorded {
        method: parts.method.to_string(),
        path,
        query: parts.uri.query().map(str::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body,
        at: SystemTime::now(),
        status: reply.status,
        peer: parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0),
    };
    if let Some(cb) = inner.callback.lock().unwrap().as_ref() {
        cb(&recorded);
    }
    let path = recorded.path.clone();
    inner.requests.lock().unwrap().push(recorded);
    inner.changed.notify_waiters();
    loop {
        // Registered before the check, so a release in between is not missed.
        let released = inner.released.notified();
        if !inner.held.lock().unwrap().contains(&path) {
            break;
        }
        released.await;
    }
    let mut resp = (
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK),
        reply.body,
    )
        .into_response();
    for (n, v) in reply.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}
