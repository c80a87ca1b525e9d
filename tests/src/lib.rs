//! Test harness: [`Pipeline`] runs the real ingest, enricher and forwarder (their library
//! `build`/`run`, as the binaries do) against a private nats-server, with the fake Sekoia API
//! and a recording destination standing in for the outside world.
//!
//! Every wait is a condition with a deadline; nothing sleeps to synchronise.
//!
//! [`faults`] runs the same services as child processes, for the fault-injection suite.

pub mod faults;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use alertsync_config::{Config, Stage};
use alertsync_nats::{Subjects, async_nats::jetstream};
use alertsync_nats_launcher::NatsServer;
use alertsync_proto::{Message as _, v1};
use alertsync_runtime::Health;
use alertsync_standins::{FakeSekoia, Receiver, alerts};
use alertsync_worker::worker::CREATION_MARGIN;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The webhook token of test pipelines.
pub const WEBHOOK_TOKEN: &str = "test-webhook-token-0123456789";
/// The Sekoia key of test pipelines.
pub const SEKOIA_KEY: &str = "test-sekoia-key-abcdef";
/// Generous deadline for anything that should happen "soon".
pub const SOON: Duration = Duration::from_secs(20);

/// The seed's main Request URL template.
pub const MAIN_TEMPLATE: &str = r#"{"alert_short_id":"{{ node.0['alert_uuid'] }}", "rule_name":"{{ node.1['rule']['name'] }}","rule_severity":"{{ node.1['rule']['severity'] }}","description":"This is a description"}"#;
/// The seed's Bonus template (Sekoia HTTP intake), with the intake key from the environment.
pub const INTAKE_TEMPLATE: &str = r#"{"json":"'{\"alert_short_id\":\"{{ node.0['alert_uuid'] }}\", \"rule_name\":\"{{ node.1['rule']['name'] }}\",\"rule_severity\":\"{{ node.1['rule']['severity'] }}\",\"description\":\"An HTTP request was made from Sekoia.io Playbook\"}'", "intake_key":"${INTAKE_KEY}"}"#;
/// The intake key the test environment provides.
pub const INTAKE_KEY: &str = "test-intake-key-5550123";
/// The destination bearer token the test environment provides.
pub const SOAR_KEY: &str = "test-soar-key-8887766";

/// One service running in the background.
struct Running {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    health: Health,
    addr: SocketAddr,
}

impl Running {
    async fn start<S, F>(service: S, addr: SocketAddr, health: Health, run: F) -> Self
    where
        S: Send + 'static,
        F: FnOnce(
            S,
            CancellationToken,
        ) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>,
    {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(service, stop.clone()));
        Self {
            stop,
            task,
            health,
            addr,
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }
}

/// A whole pipeline under test.
pub struct Pipeline {
    /// The private server (kept alive for the test).
    pub nats: NatsServer,
    /// Fake Sekoia API.
    pub sekoia: FakeSekoia,
    /// Recording destination.
    pub receiver: Receiver,
    /// The configuration the services run with.
    pub config: Config,
    /// JetStream, for assertions on streams.
    pub js: jetstream::Context,
    ingest: Option<Running>,
    enricher: Option<Running>,
    forwarder: Option<Running>,
    extra: Vec<Running>,
}

/// Config text for a pipeline; `{receiver}` in `destinations` is the receiver's base URL.
pub fn config_text(
    nats_url: &str,
    sekoia_url: &str,
    receiver_url: &str,
    destinations: &str,
) -> String {
    format!(
        r#"
[nats]
url = "{nats_url}"
prefix = "t{prefix}"
request_timeout = "5s"
[sekoia]
base_url = "{sekoia_url}"
api_key = "${{SEKOIA_API_KEY}}"
timeout = "5s"
rejected_key_retry = "500ms"
[ingest]
listen = "127.0.0.1:0"
webhook_token = "${{WEBHOOK_TOKEN}}"
live = false
poll_interval = "0"
[enricher]
listen = "127.0.0.1:0"
retry_base_delay = "100ms"
retry_max_delay = "1s"
rule_names_filter = []
[forwarder]
listen = "127.0.0.1:0"
{destinations}
"#,
        prefix = &uuid::Uuid::new_v4().simple().to_string()[..8],
        destinations = destinations.replace("{receiver}", receiver_url),
    )
}

/// Ingest lines of the default test config: webhook only.
pub const DEFAULT_INGEST: &str = "live = false\npoll_interval = \"0\"\n";
/// Enricher lines of the default test config: no trigger filter.
pub const DEFAULT_ENRICHER: &str = "rule_names_filter = []\n";

/// The environment the test config is interpolated from.
pub fn test_env(name: &str) -> Option<String> {
    match name {
        "SEKOIA_API_KEY" => Some(SEKOIA_KEY.into()),
        "WEBHOOK_TOKEN" => Some(WEBHOOK_TOKEN.into()),
        "INTAKE_KEY" => Some(INTAKE_KEY.into()),
        "SOAR_KEY" => Some(SOAR_KEY.into()),
        _ => None,
    }
}

/// A `[[destinations]]` entry posting `template` to `{receiver}<path>` with fast retries.
pub fn destination(name: &str, path: &str, template: &str) -> String {
    format!(
        r#"
[[destinations]]
name = "{name}"
url = "{{receiver}}{path}"
method = "post"
headers = {{ Authorization = "Bearer ${{SOAR_KEY}}" }}
json = '''{template}'''
timeout = "5s"
[destinations.retry]
max_attempts = 6
base_delay = "100ms"
max_delay = "1s"
max_retry_after = "10s"
"#
    )
}

impl Pipeline {
    /// Starts nats-server, the stand-ins and the three services with `destinations`; the
    /// ingest's live socket and poller are off.
    pub async fn start(destinations: &str) -> Self {
        Self::start_with(destinations, DEFAULT_INGEST, DEFAULT_ENRICHER).await
    }

    /// Like [`Pipeline::start`], with `ingest` lines (e.g. `live = true`) and `enricher` lines
    /// (e.g. filters) in place of the defaults.
    pub async fn start_with(destinations: &str, ingest: &str, enricher: &str) -> Self {
        Self::start_full(destinations, ingest, enricher, "").await
    }

    /// Like [`Pipeline::start`], with more lines in the `[nats]` section (e.g. a short
    /// `duplicate_window`).
    pub async fn start_with_nats(destinations: &str, nats_lines: &str) -> Self {
        Self::start_full(destinations, DEFAULT_INGEST, DEFAULT_ENRICHER, nats_lines).await
    }

    /// Like [`Pipeline::start`], with `enricher` lines, on a nats-server started with
    /// `server_config` (e.g. `max_payload: 32KB`).
    pub async fn start_on_server(destinations: &str, enricher: &str, server_config: &str) -> Self {
        let nats = NatsServer::start_with_config(server_config)
            .expect("nats-server starts (see scripts/nats-server)");
        Self::start_on(nats, destinations, DEFAULT_INGEST, enricher, "").await
    }

    async fn start_full(
        destinations: &str,
        ingest: &str,
        enricher: &str,
        nats_lines: &str,
    ) -> Self {
        let nats = NatsServer::start().expect("nats-server starts (see scripts/nats-server)");
        Self::start_on(nats, destinations, ingest, enricher, nats_lines).await
    }

    async fn start_on(
        nats: NatsServer,
        destinations: &str,
        ingest: &str,
        enricher: &str,
        nats_lines: &str,
    ) -> Self {
        let sekoia = FakeSekoia::start(SEKOIA_KEY).await;
        let receiver = Receiver::start().await;
        let text = config_text(
            &nats.url(),
            &sekoia.base_url(),
            &receiver.url(""),
            destinations,
        )
        .replacen(DEFAULT_INGEST, ingest, 1)
        .replacen(DEFAULT_ENRICHER, enricher, 1)
        .replacen("[nats]\n", &format!("[nats]\n{nats_lines}\n"), 1);
        let config = Config::parse(&text, &test_env, &Stage::ALL).expect("test config is valid");
        let client = alertsync_nats::async_nats::connect(nats.url())
            .await
            .expect("connect");
        let js = jetstream::new(client);
        let mut p = Self {
            nats,
            sekoia,
            receiver,
            config,
            js,
            ingest: None,
            enricher: None,
            forwarder: None,
            extra: Vec::new(),
        };
        p.start_ingest().await;
        p.start_enricher().await;
        p.start_forwarder().await;
        p
    }

    /// Starts one more ingest replica on the same config (stopped when the pipeline shuts
    /// down).
    pub async fn start_extra_ingest(&mut self) {
        let svc = alertsync_ingest::Ingest::build(&self.config)
            .await
            .expect("ingest builds");
        let (addr, health) = (svc.local_addr(), svc.health());
        self.extra
            .push(Running::start(svc, addr, health, |s, stop| Box::pin(s.run(stop))).await);
    }

    /// Starts one more forwarder replica on the same config (stopped when the pipeline shuts
    /// down); returns its `http://<addr>` (for `/metrics`).
    pub async fn start_extra_forwarder(&mut self) -> String {
        let svc = alertsync_forwarder::Forwarder::build(&self.config)
            .await
            .expect("forwarder builds");
        let (addr, health) = (svc.local_addr(), svc.health());
        self.extra
            .push(Running::start(svc, addr, health, |s, stop| Box::pin(s.run(stop))).await);
        format!("http://{addr}")
    }

    /// `http://<ingest><path>`.
    pub fn ingest_url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.ingest.as_ref().expect("ingest running").addr
        )
    }

    /// `http://<enricher><path>`.
    pub fn enricher_url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.enricher.as_ref().expect("enricher running").addr
        )
    }

    /// `http://<forwarder><path>`.
    pub fn forwarder_url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.forwarder.as_ref().expect("forwarder running").addr
        )
    }

    /// The ingest's readiness.
    pub fn ingest_health(&self) -> Health {
        self.ingest.as_ref().expect("ingest running").health.clone()
    }

    async fn start_ingest(&mut self) {
        let svc = alertsync_ingest::Ingest::build(&self.config)
            .await
            .expect("ingest builds");
        let (addr, health) = (svc.local_addr(), svc.health());
        self.ingest =
            Some(Running::start(svc, addr, health, |s, stop| Box::pin(s.run(stop))).await);
    }

    async fn start_enricher(&mut self) {
        let svc = alertsync_enricher::Enricher::build(&self.config)
            .await
            .expect("enricher builds");
        let (addr, health) = (svc.local_addr(), svc.health());
        self.enricher =
            Some(Running::start(svc, addr, health, |s, stop| Box::pin(s.run(stop))).await);
    }

    async fn start_forwarder(&mut self) {
        let svc = alertsync_forwarder::Forwarder::build(&self.config)
            .await
            .expect("forwarder builds");
        let (addr, health) = (svc.local_addr(), svc.health());
        self.forwarder =
            Some(Running::start(svc, addr, health, |s, stop| Box::pin(s.run(stop))).await);
    }

    /// Stops the forwarder gracefully (asserting a clean exit) and starts a new one.
    pub async fn restart_forwarder(&mut self) {
        let f = self.forwarder.take().expect("forwarder running");
        f.stop().await.expect("forwarder stops cleanly");
        self.start_forwarder().await;
    }

    /// Stops the enricher gracefully (asserting a clean exit) and starts a new one.
    pub async fn restart_enricher(&mut self) {
        let e = self.enricher.take().expect("enricher running");
        e.stop().await.expect("enricher stops cleanly");
        self.start_enricher().await;
    }

    /// Stops every service gracefully, asserting each exits cleanly.
    pub async fn shutdown(mut self) {
        let extra = std::mem::take(&mut self.extra);
        for s in [
            self.ingest.take(),
            self.enricher.take(),
            self.forwarder.take(),
        ]
        .into_iter()
        .flatten()
        .chain(extra)
        {
            s.stop().await.expect("service stops cleanly");
        }
    }

    /// The enricher's readiness.
    pub fn enricher_health(&self) -> Health {
        self.enricher
            .as_ref()
            .expect("enricher running")
            .health
            .clone()
    }

    /// `http://<ingest>/v1/alerts`.
    pub fn webhook_url(&self) -> String {
        format!(
            "http://{}/v1/alerts",
            self.ingest.as_ref().expect("ingest running").addr
        )
    }

    /// `http://<service>/readyz` of the enricher.
    pub fn enricher_readyz_url(&self) -> String {
        format!(
            "http://{}/readyz",
            self.enricher.as_ref().expect("enricher running").addr
        )
    }

    /// Waits until alerts created from now on can be marked as their alert's only
    /// `EnrichedAlert` (which spares the forwarder a delivery-record read): every consumer of
    /// the created and enriched streams is older than [`CREATION_MARGIN`] (a message stored
    /// later counts as `Delivery::first_ever`), and the created stream has held every alert
    /// since long enough before now (the enricher's margin for the clocks, and whole seconds).
    pub async fn wait_until_alerts_can_be_marked(&self) {
        use futures::StreamExt as _;
        let s = self.subjects();
        let mut newest = std::time::UNIX_EPOCH;
        for name in [s.created_stream(), s.enriched_stream()] {
            let stream = self.js.get_stream(&name).await.expect("stream exists");
            let mut consumers = stream.consumers();
            while let Some(info) = consumers.next().await {
                let created = std::time::SystemTime::from(info.expect("consumer info").created);
                newest = newest.max(created);
            }
        }
        let complete_since = alertsync_nats::Topology::new(self.js.clone(), &self.config.nats)
            .created_stream_complete_since()
            .await
            .expect("the created stream's state")
            .expect("the created stream is marked");
        let past = (newest + CREATION_MARGIN).max(complete_since + Duration::from_secs(3))
            + Duration::from_millis(100);
        assert!(
            eventually(SOON + CREATION_MARGIN, || async move {
                std::time::SystemTime::now() > past
            })
            .await,
            "the margins passed"
        );
    }

    /// Subject names of this pipeline.
    pub fn subjects(&self) -> Subjects {
        Subjects::new(&self.config.nats.prefix)
    }

    /// POSTs raw `body` to the webhook with `token` (None: no Authorization header).
    pub async fn post_raw(&self, body: Vec<u8>, token: Option<&str>) -> (u16, Value) {
        let client = reqwest_client();
        let mut req = client
            .post(self.webhook_url())
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = req.send().await.expect("webhook reachable");
        let status = resp.status().as_u16();
        let json = resp.json().await.unwrap_or(Value::Null);
        (status, json)
    }

    /// Waits up to [`SOON`] until the receiver has answered 2xx to a request whose
    /// `alert_short_id` is `uuid` (the seed template's field), and says whether it did.
    pub async fn wait_sent(&self, uuid: &str) -> bool {
        self.receiver
            .wait_until(SOON, |reqs| {
                uuids_in(reqs, "alert_short_id").iter().any(|u| u == uuid)
            })
            .await
    }

    /// Makes a new alert readable in the fake Sekoia and announces it on the webhook (as a
    /// LiveAPI notification); returns its uuid.
    pub async fn send_alert(&self, rule_name: &str, title: &str) -> String {
        let uuid = uuid::Uuid::new_v4().to_string();
        self.sekoia.insert_alert(alerts::new_alert(
            &uuid,
            &alerts::random_short_id(),
            rule_name,
            title,
        ));
        self.announce(&uuid).await;
        uuid
    }

    /// Announces `uuid` on the webhook (the alert may or may not exist in the fake Sekoia).
    pub async fn announce(&self, uuid: &str) {
        let body = serde_json::json!({"alert_uuid": uuid});
        let (status, json) = self
            .post_raw(serde_json::to_vec(&body).unwrap(), Some(WEBHOOK_TOKEN))
            .await;
        assert_eq!(status, 202, "webhook accepted {uuid}: {json}");
    }

    /// Waits up to [`SOON`] until no stage has work left: the enricher's consumer, every
    /// destination's and the write-back stage's (when it exists) have nothing undelivered and
    /// nothing unacknowledged. What a test asserts did *not* happen is checked after this.
    pub async fn wait_settled(&self) -> bool {
        use alertsync_nats::async_nats::jetstream::consumer::pull;
        let s = self.subjects();
        let mut consumers = vec![(s.created_stream(), s.enricher_consumer())];
        consumers.extend(
            self.config
                .destinations
                .iter()
                .map(|d| (s.enriched_stream(), s.destination_consumer(&d.name))),
        );
        consumers.push((s.writeback_stream(), s.writeback_consumer()));
        eventually(SOON, || async {
            for (stream, name) in &consumers {
                let Ok(stream) = self.js.get_stream(stream).await else {
                    continue;
                };
                let Ok(mut c) = stream.get_consumer::<pull::Config>(name).await else {
                    // No write-back stage in this pipeline.
                    continue;
                };
                match c.info().await {
                    Ok(i) if i.num_pending == 0 && i.num_ack_pending == 0 => {}
                    _ => return false,
                }
            }
            true
        })
        .await
    }

    /// Messages currently stored in the created-alerts stream.
    pub async fn created_count(&self) -> u64 {
        let mut s = self
            .js
            .get_stream(self.subjects().created_stream())
            .await
            .expect("created stream exists");
        s.info().await.expect("stream info").state.messages
    }

    /// Every dead-letter entry, in order.
    pub async fn dead_letters(&self) -> Vec<v1::DeadLetter> {
        let mut s = self
            .js
            .get_stream(self.subjects().dead_letter_stream())
            .await
            .expect("dlq stream exists");
        let state = s.info().await.expect("stream info").state.clone();
        let mut out = Vec::new();
        if state.messages == 0 {
            return out;
        }
        for seq in state.first_sequence..=state.last_sequence {
            if let Ok(m) = s.get_raw_message(seq).await {
                out.push(v1::DeadLetter::decode(m.payload.as_ref()).expect("dead letter decodes"));
            }
        }
        out
    }

    /// Waits until the DLQ holds at least `n` entries.
    pub async fn wait_dead_letters(&self, n: usize, timeout: Duration) -> Vec<v1::DeadLetter> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let dl = self.dead_letters().await;
            if dl.len() >= n || tokio::time::Instant::now() > deadline {
                return dl;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
/// (Polling a condition with a deadline, not sleeping for a guessed time.)
pub async fn eventually<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plain HTTP client for talking to the services.
pub fn reqwest_client() -> reqwest::Client {
    alertsync_http::client_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client builds")
}

/// Counts of each alert uuid among requests' bodies at `key` (parsed as JSON).
pub fn uuids_in(requests: &[alertsync_standins::Recorded], key: &str) -> Vec<String> {
    requests
        .iter()
        .filter(|r| (200..300).contains(&r.status))
        .filter_map(|r| r.json()?.get(key)?.as_str().map(str::to_string))
        .collect()
}

/// The value of the sample `name_and_labels` (exactly as exposed, e.g.
/// `alertsync_alerts_received_total{source="live"}`) in Prometheus text, 0 when absent.
pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// GETs `url` and returns the status and body (for /metrics and /readyz).
pub async fn get_text(url: &str) -> (u16, String) {
    let resp = reqwest_client()
        .get(url)
        .send()
        .await
        .expect("service reachable");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}
