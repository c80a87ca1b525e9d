//! The fault-injection harness: the three services as real child processes (so they can be
//! SIGKILLed), a real nats-server or 3-node cluster, Sekoia and the destination behind TCP
//! proxies that can refuse connections or add latency, a webhook caller that retries until
//! it gets a 202, and the tally that says what was lost and what was delivered twice.
//!
//! The binaries must be built first (`cargo build --workspace --bins`; `scripts/test` does).
//! Every wait is a condition with a deadline; fault windows ("down for 30 s") are timed
//! because that is the scenario.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use alertsync_config::{Config, Stage};
use alertsync_nats::{Subjects, async_nats::jetstream};
use alertsync_nats_launcher::{NatsCluster, NatsServer};
use alertsync_proto::{Message as _, v1};
use alertsync_standins::{FakeSekoia, Receiver, Recorded, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::{INTAKE_KEY, MAIN_TEMPLATE, SEKOIA_KEY, SOAR_KEY, WEBHOOK_TOKEN, config_text};

/// A secret that only ever appears in a destination URL's query string.
pub const URL_TOKEN: &str = "test-url-token-4242424242";
/// Every secret the fault pipelines run with: none may appear in a log line, a DLQ entry or
/// a readiness answer.
pub const SECRETS: [&str; 5] = [SEKOIA_KEY, WEBHOOK_TOKEN, SOAR_KEY, INTAKE_KEY, URL_TOKEN];

/// Where the built binaries are: next to the test executable's parent directory.
pub fn binary(name: &str) -> PathBuf {
    let dir = std::env::current_exe()
        .expect("test executable path")
        .parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

// ------------------------------------------------------------------------------------------
// TCP fault proxy
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
struct ProxyMode {
    up: bool,
    latency: Duration,
}

/// A loopback TCP proxy in front of a stand-in: "down" closes its listener (connections are
/// refused) and drops every request that arrives on an open connection (a request already
/// forwarded still gets its answer, so going down never turns a delivered request into an
/// unknown one); "latency" delays every chunk sent upstream (each HTTP request arrives that
/// much later).
pub struct FaultProxy {
    port: u16,
    mode: watch::Sender<ProxyMode>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts forwarding a free port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let (mode, rx) = watch::channel(ProxyMode {
            up: true,
            latency: Duration::ZERO,
        });
        let task = tokio::spawn(supervise(listener, port, target, rx));
        Self { port, mode, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Up (forwarding) or down (connection refused).
    pub fn set_up(&self, up: bool) {
        self.mode.send_modify(|m| m.up = up);
    }

    /// Delay added to every chunk sent upstream.
    pub fn set_latency(&self, latency: Duration) {
        self.mode.send_modify(|m| m.latency = latency);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn supervise(
    first: TcpListener,
    port: u16,
    target: SocketAddr,
    mut rx: watch::Receiver<ProxyMode>,
) {
    let mut listener = Some(first);
    loop {
        let up = rx.borrow().up;
        if !up {
            listener = None;
            if rx.changed().await.is_err() {
                return;
            }
            continue;
        }
        let l = match listener.take() {
            Some(l) => l,
            None => match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => l,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = l.accept() => {
                    if let Ok((client, _)) = accepted {
                        conns.spawn(proxy_one(client, target, rx.clone()));
                    }
                }
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if !rx.borrow().up {
                        // Refuse new connections; open ones drop their next request.
                        conns.detach_all();
                        break;
                    }
                }
                _ = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(l);
    }
}

async fn proxy_one(client: TcpStream, target: SocketAddr, rx: watch::Receiver<ProxyMode>) {
    let Ok(upstream) = TcpStream::connect(target).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let ProxyMode { up, latency } = *rx.borrow();
            if !up {
                break;
            }
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            if uw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = uw.shutdown().await;
    };
    let down = async move {
        let _ = tokio::io::copy(&mut ur, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}

// ------------------------------------------------------------------------------------------
// Service processes
// ------------------------------------------------------------------------------------------

/// One service binary run as a child process, restartable, its logs kept per incarnation.
pub struct Service {
    name: String,
    config: PathBuf,
    dir: PathBuf,
    env: Vec<(String, String)>,
    /// Its health port (from the config).
    pub port: u16,
    child: Option<Child>,
    logs: Vec<PathBuf>,
    /// SIGKILLs so far.
    pub kills: usize,
}

impl Service {
    fn new(name: &str, config: &Path, dir: &Path, port: u16, env: Vec<(String, String)>) -> Self {
        Self {
            name: name.to_string(),
            config: config.to_path_buf(),
            dir: dir.to_path_buf(),
            env,
            port,
            child: None,
            logs: Vec::new(),
            kills: 0,
        }
    }

    /// Starts the process (a new log file per incarnation).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = self
            .dir
            .join(format!("{}.{}.log", self.name, self.logs.len() + 1));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(binary(&self.name));
        cmd.arg("--config")
            .arg(&self.config)
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("service binary starts"));
        self.logs.push(log);
    }

    /// Starts the process and waits until it serves `/healthz`.
    pub async fn start(&mut self) {
        self.spawn();
        self.wait_alive().await;
    }

    /// Waits until `/healthz` answers (the service built: connected, topology ensured).
    pub async fn wait_alive(&mut self) {
        let url = format!("http://127.0.0.1:{}/healthz", self.port);
        let client = crate::reqwest_client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if matches!(client.get(&url).send().await, Ok(r) if r.status().is_success()) {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("{} exited with {status}:\n{}", self.name, self.tail_log());
            }
            assert!(
                Instant::now() < deadline,
                "{} never served /healthz:\n{}",
                self.name,
                self.tail_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `/readyz` answer: status and body.
    pub async fn readyz(&self) -> (u16, String) {
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        match crate::reqwest_client().get(&url).send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.kills += 1;
        }
    }

    /// SIGTERM, then the exit code if it exits within `grace` (it is SIGKILLed otherwise).
    pub async fn terminate(&mut self, grace: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every line every incarnation logged.
    pub fn logs(&self) -> String {
        self.logs
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn tail_log(&self) -> String {
        let all = self.logs();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ------------------------------------------------------------------------------------------
// The pipeline
// ------------------------------------------------------------------------------------------

/// One nats-server, or a 3-node cluster.
pub enum Nats {
    /// A single server.
    Single(NatsServer),
    /// A cluster (R3 streams).
    Cluster(NatsCluster),
}

impl Nats {
    /// The URL(s) the services connect to.
    pub fn url(&self) -> String {
        match self {
            Nats::Single(s) => s.url(),
            Nats::Cluster(c) => c.urls(),
        }
    }
}

/// How a fault pipeline is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run on a 3-node cluster with R3 streams.
    pub cluster: bool,
    /// Destinations: (name, path on the receiver).
    pub destinations: Vec<(String, String)>,
    /// Requests in flight per destination.
    pub concurrency: usize,
    /// `RUST_LOG` of the services.
    pub log_filter: String,
    /// Put a secret token in the destinations' URL query.
    pub token_in_url: bool,
    /// Destinations follow the alerts' lifecycle: the receiver answers each creation with the
    /// alert uuid as the tool's id, updates (`PATCH <path>/t/<id>`) and comments
    /// (`POST <path>/t/<id>/comments`) carry the alert uuid as `alert_short_id`, and each
    /// delivered creation is commented back on the Sekoia alert (`Ticket <id>`).
    pub lifecycle: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cluster: false,
            destinations: vec![("soar".into(), "/soar".into())],
            concurrency: 16,
            log_filter: "info".into(),
            token_in_url: false,
            lifecycle: false,
        }
    }
}

/// The real services as processes, with every outside dependency under the test's control.
pub struct FaultPipeline {
    /// NATS.
    pub nats: Nats,
    /// Fake Sekoia (auto-creates every alert asked for).
    pub sekoia: FakeSekoia,
    /// Proxy the enricher reaches Sekoia through.
    pub sekoia_proxy: FaultProxy,
    /// The recording destination.
    pub receiver: Receiver,
    /// Proxy the forwarder reaches the receiver through.
    pub receiver_proxy: FaultProxy,
    /// The parsed config (the services read the same file).
    pub config: Config,
    /// The config file.
    pub config_path: PathBuf,
    /// Ingest process.
    pub ingest: Service,
    /// Enricher process.
    pub enricher: Service,
    /// Forwarder process.
    pub forwarder: Service,
    /// JetStream, for assertions.
    pub js: jetstream::Context,
    options: Options,
    _dir: tempfile::TempDir,
}

fn must_replace(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "test config has no {from:?}");
    text.replacen(from, to, 1)
}

impl FaultPipeline {
    /// Starts NATS, the stand-ins, the proxies and the three service processes, and waits
    /// until each serves its health endpoint.
    pub async fn start(options: Options) -> Self {
        let nats = if options.cluster {
            Nats::Cluster(NatsCluster::start(3).expect("a 3-node nats cluster starts"))
        } else {
            Nats::Single(NatsServer::start().expect("nats-server starts"))
        };
        let sekoia = FakeSekoia::start(SEKOIA_KEY).await;
        sekoia.auto_create(true);
        let sekoia_addr: SocketAddr = sekoia
            .base_url()
            .trim_start_matches("http://")
            .parse()
            .expect("sekoia addr");
        let sekoia_proxy = FaultProxy::start(sekoia_addr).await;
        let receiver = Receiver::start().await;
        let receiver_addr: SocketAddr = receiver
            .url("")
            .trim_start_matches("http://")
            .parse()
            .expect("receiver addr");
        let receiver_proxy = FaultProxy::start(receiver_addr).await;
        if options.lifecycle {
            for (_, path) in &options.destinations {
                // The tool's id for an alert is its uuid: later requests name their alert.
                receiver.respond_with(path, |body| {
                    let id = serde_json::from_slice::<serde_json::Value>(body)
                        .ok()
                        .and_then(|j| j["alert_short_id"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    Reply::status(201).body(&serde_json::json!({ "id": id }).to_string())
                });
            }
        }

        let ports = [free_port(), free_port(), free_port()];
        let query = if options.token_in_url {
            "?token=${URL_TOKEN}"
        } else {
            ""
        };
        let lifecycle = |path: &str| {
            if !options.lifecycle {
                return String::new();
            }
            format!(
                r#"
[destinations.on_update]
method = "patch"
url = "{{receiver}}{path}/t/{{{{ remote.id }}}}"
json = '''{{"alert_short_id": "{{{{ alert.uuid }}}}", "status": "{{{{ alert.status.name }}}}"}}'''
[destinations.on_comment]
url = "{{receiver}}{path}/t/{{{{ remote.id }}}}/comments"
json = '''{{"alert_short_id": "{{{{ alert.uuid }}}}", "comment": "{{{{ comment.uuid }}}}"}}'''
[destinations.after_create]
comment = "Ticket {{{{ response.json.id }}}}"
"#
            )
        };
        let destinations: String = options
            .destinations
            .iter()
            .map(|(name, path)| {
                let later = lifecycle(path);
                let remote = if options.lifecycle {
                    "remote_id = \"{{ response.json.id }}\""
                } else {
                    ""
                };
                format!(
                    r#"
[[destinations]]
name = "{name}"
url = "{{receiver}}{path}{query}"
method = "post"
headers = {{ Authorization = "Bearer ${{SOAR_KEY}}" }}
json = '''{MAIN_TEMPLATE}'''
timeout = "2s"
concurrency = {concurrency}
{remote}
[destinations.retry]
max_attempts = 10
base_delay = "200ms"
max_delay = "2s"
max_retry_after = "10s"
{later}"#,
                    concurrency = options.concurrency
                )
            })
            .collect();
        let mut text = config_text(
            &nats.url(),
            &sekoia_proxy.url(),
            &receiver_proxy.url(),
            &destinations,
        );
        text = must_replace(
            &text,
            "request_timeout = \"5s\"",
            "request_timeout = \"3s\"",
        );
        if options.cluster {
            text = must_replace(
                &text,
                "request_timeout = \"3s\"",
                "request_timeout = \"3s\"\nstream_replicas = 3",
            );
        }
        // Long enough that a 30 s Sekoia outage does not exhaust 10 attempts (1+2+4+8·6 s).
        text = must_replace(
            &text,
            "retry_base_delay = \"100ms\"\nretry_max_delay = \"1s\"",
            "retry_base_delay = \"1s\"\nretry_max_delay = \"8s\"",
        );
        for port in ports {
            text = must_replace(
                &text,
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{port}\""),
            );
        }
        text = must_replace(
            &text,
            &format!("[forwarder]\nlisten = \"127.0.0.1:{}\"", ports[2]),
            &format!(
                "[forwarder]\nlisten = \"127.0.0.1:{}\"\nprobe_base_delay = \"500ms\"\n\
                 probe_max_delay = \"4s\"\ncircuit_failures = 5",
                ports[2]
            ),
        );
        let env = |k: &str| match k {
            "URL_TOKEN" => Some(URL_TOKEN.to_string()),
            other => crate::test_env(other),
        };
        let config = Config::parse(&text, &env, &Stage::ALL).expect("fault config is valid");
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("alertsync.toml");
        std::fs::write(&config_path, &text).expect("write config");

        let service_env: Vec<(String, String)> = vec![
            ("SEKOIA_API_KEY".into(), SEKOIA_KEY.into()),
            ("WEBHOOK_TOKEN".into(), WEBHOOK_TOKEN.into()),
            ("SOAR_KEY".into(), SOAR_KEY.into()),
            ("INTAKE_KEY".into(), INTAKE_KEY.into()),
            ("URL_TOKEN".into(), URL_TOKEN.into()),
            ("RUST_LOG".into(), options.log_filter.clone()),
            ("ALERTSYNC_LOG_FORMAT".into(), "json".into()),
        ];
        let mk = |name: &str, port| {
            Service::new(name, &config_path, dir.path(), port, service_env.clone())
        };
        let ingest = mk("alertsync-ingest", ports[0]);
        let enricher = mk("alertsync-enricher", ports[1]);
        let forwarder = mk("alertsync-forwarder", ports[2]);

        let js = connect_js(&nats.url()).await;
        let mut p = Self {
            nats,
            sekoia,
            sekoia_proxy,
            receiver,
            receiver_proxy,
            config,
            config_path,
            ingest,
            enricher,
            forwarder,
            js,
            options,
            _dir: dir,
        };
        // Services refuse to start without JetStream; a fresh cluster needs a meta leader.
        p.wait_jetstream().await;
        p.forwarder.start().await;
        p.enricher.start().await;
        p.ingest.start().await;
        p
    }

    async fn wait_jetstream(&self) {
        let ok = crate::eventually(Duration::from_secs(60), || async {
            self.js.query_account().await.is_ok()
        })
        .await;
        assert!(ok, "JetStream never became available");
    }

    /// Subject names.
    pub fn subjects(&self) -> Subjects {
        Subjects::new(&self.config.nats.prefix)
    }

    /// `http://127.0.0.1:<ingest>/v1/alerts`.
    pub fn webhook_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/alerts", self.ingest.port)
    }

    /// The receiver path of destination `name`.
    pub fn path_of(&self, name: &str) -> String {
        self.options
            .destinations
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.clone())
            .expect("a configured destination")
    }

    /// Sends `count` new alerts at `per_second` in the background (each retried until
    /// accepted).
    pub fn send(&self, count: usize, per_second: u32) -> Sender {
        Sender::start(self.webhook_url(), count, per_second)
    }

    /// Every dead-letter entry.
    pub async fn dead_letters(&self) -> Vec<v1::DeadLetter> {
        let Ok(mut s) = self
            .js
            .get_stream(self.subjects().dead_letter_stream())
            .await
        else {
            return Vec::new();
        };
        let Ok(info) = s.info().await else {
            return Vec::new();
        };
        let state = info.state.clone();
        let mut out = Vec::new();
        if state.messages == 0 {
            return out;
        }
        for seq in state.first_sequence..=state.last_sequence {
            if let Ok(m) = s.get_raw_message(seq).await
                && let Ok(d) = v1::DeadLetter::decode(m.payload.as_ref())
            {
                out.push(d);
            }
        }
        out
    }

    /// (pending, ack pending) of destination `name`'s consumer.
    pub async fn forward_backlog(&self, name: &str) -> Option<(u64, usize)> {
        let s = self.subjects();
        let stream = self.js.get_stream(s.enriched_stream()).await.ok()?;
        let mut c: jetstream::consumer::PullConsumer = stream
            .get_consumer(&s.destination_consumer(name))
            .await
            .ok()?;
        let info = c.info().await.ok()?;
        Some((info.num_pending, info.num_ack_pending))
    }

    /// (pending, ack pending) of the write-back consumer.
    pub async fn writeback_backlog(&self) -> Option<(u64, usize)> {
        let s = self.subjects();
        let stream = self.js.get_stream(s.writeback_stream()).await.ok()?;
        let mut c: jetstream::consumer::PullConsumer =
            stream.get_consumer(&s.writeback_consumer()).await.ok()?;
        let info = c.info().await.ok()?;
        Some((info.num_pending, info.num_ack_pending))
    }

    /// (pending, ack pending) of the enricher's consumer.
    pub async fn enrich_backlog(&self) -> Option<(u64, usize)> {
        let s = self.subjects();
        let stream = self.js.get_stream(s.created_stream()).await.ok()?;
        let mut c: jetstream::consumer::PullConsumer =
            stream.get_consumer(&s.enricher_consumer()).await.ok()?;
        let info = c.info().await.ok()?;
        Some((info.num_pending, info.num_ack_pending))
    }

    /// Waits until every alert of `sender` was delivered to destination `name` at least once,
    /// then until nothing is left in flight anywhere (so a late duplicate would have arrived),
    /// and returns the tally.
    pub async fn settle(&self, sender: &Sender, name: &str, timeout: Duration) -> Tally {
        let path = self.path_of(name);
        let uuids = sender.wait_accepted(timeout).await;
        let want: HashSet<String> = uuids.iter().cloned().collect();
        let done = self
            .receiver
            .wait_until(timeout, |reqs| {
                delivered_uuids(reqs, &path).intersection(&want).count() == want.len()
            })
            .await;
        let quiet = crate::eventually(timeout, || async {
            let f = self.forward_backlog(name).await;
            let e = self.enrich_backlog().await;
            f == Some((0, 0)) && e == Some((0, 0))
        })
        .await;
        let t = self.tally(&uuids, name).await;
        assert!(
            done,
            "not every alert reached {name} within {timeout:?}: {t}\nforwarder log tail:\n{}",
            self.forwarder.tail_log()
        );
        assert!(quiet, "work still in flight after delivery: {t}");
        t
    }

    /// What destination `name` received for `uuids`.
    pub async fn tally(&self, uuids: &[String], name: &str) -> Tally {
        let path = self.path_of(name);
        let reqs = self.receiver.requests_to(&path);
        let mut t = Tally::from_requests(uuids, &reqs);
        t.dead_letters = self.dead_letters().await.len();
        t
    }

    /// Asserts that no secret appears in any service log, dead-letter entry or readiness
    /// answer.
    pub async fn assert_no_secret_leaks(&self) {
        let mut places: Vec<(String, String)> = Vec::new();
        for s in [&self.ingest, &self.enricher, &self.forwarder] {
            places.push((format!("{} log", s.name), s.logs()));
            places.push((format!("{} /readyz", s.name), s.readyz().await.1));
        }
        for d in self.dead_letters().await {
            places.push((
                "a dead-letter entry".into(),
                format!(
                    "{} {} {} {} {}",
                    d.reason,
                    d.original_subject,
                    d.alert_uuid,
                    d.destination,
                    String::from_utf8_lossy(&d.original_payload)
                ),
            ));
        }
        for (place, text) in places {
            for secret in SECRETS {
                if let Some(line) = text.lines().find(|l| l.contains(secret)) {
                    panic!("a secret reached {place}: {line}");
                }
            }
        }
    }
}

async fn connect_js(url: &str) -> jetstream::Context {
    let servers: Vec<alertsync_nats::async_nats::ServerAddr> = url
        .split(',')
        .map(|u| u.parse().expect("nats url"))
        .collect();
    let client = alertsync_nats::async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(servers)
        .await
        .expect("connect to nats");
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .build(client)
}

// ------------------------------------------------------------------------------------------
// The webhook caller
// ------------------------------------------------------------------------------------------

/// Sends alerts to the webhook the way Sekoia's caller does: retrying every non-2xx and every
/// connection error until the alert is accepted.
pub struct Sender {
    uuids: Vec<String>,
    accepted: Arc<AtomicUsize>,
    retries: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sender {
    fn start(webhook: String, count: usize, per_second: u32) -> Self {
        let uuids: Vec<String> = (0..count)
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        let accepted = Arc::new(AtomicUsize::new(0));
        let retries = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let (a, r, f, list) = (
            accepted.clone(),
            retries.clone(),
            failed.clone(),
            uuids.clone(),
        );
        let task = tokio::spawn(async move {
            let client = crate::reqwest_client();
            let gap = Duration::from_secs_f64(1.0 / f64::from(per_second.max(1)));
            let mut tasks = tokio::task::JoinSet::new();
            let start = tokio::time::Instant::now();
            for (i, uuid) in list.into_iter().enumerate() {
                tokio::time::sleep_until(start + gap * i as u32).await;
                let (client, url, a, r, f) = (
                    client.clone(),
                    webhook.clone(),
                    a.clone(),
                    r.clone(),
                    f.clone(),
                );
                tasks.spawn(async move {
                    let body = serde_json::json!({ "alert_uuid": uuid });
                    let deadline = Instant::now() + Duration::from_secs(180);
                    loop {
                        let resp = client
                            .post(&url)
                            .bearer_auth(WEBHOOK_TOKEN)
                            .json(&body)
                            .send()
                            .await;
                        match resp {
                            Ok(r) if r.status().as_u16() == 202 => {
                                a.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            Ok(r) if matches!(r.status().as_u16(), 400 | 401 | 413) => {
                                f.store(true, Ordering::SeqCst);
                                return;
                            }
                            _ => {}
                        }
                        if Instant::now() > deadline {
                            f.store(true, Ordering::SeqCst);
                            return;
                        }
                        r.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        });
        Self {
            uuids,
            accepted,
            retries,
            failed,
            task,
        }
    }

    /// Alerts accepted (202) so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Webhook calls that had to be retried (refused, 503…).
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` alerts were accepted.
    pub async fn wait_accepted_at_least(&self, n: usize, timeout: Duration) {
        let ok = crate::eventually(timeout, || async { self.accepted() >= n }).await;
        assert!(
            ok,
            "only {} of {n} alerts accepted in time",
            self.accepted()
        );
    }

    /// Waits until every alert was accepted; returns their uuids.
    pub async fn wait_accepted(&self, timeout: Duration) -> Vec<String> {
        let ok = crate::eventually(timeout, || async {
            self.accepted() == self.uuids.len() || self.task.is_finished()
        })
        .await;
        assert!(
            ok && !self.failed.load(Ordering::SeqCst) && self.accepted() == self.uuids.len(),
            "the webhook did not accept every alert: {} of {}",
            self.accepted(),
            self.uuids.len()
        );
        self.uuids.clone()
    }

    /// The alerts' uuids.
    pub fn uuids(&self) -> &[String] {
        &self.uuids
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ------------------------------------------------------------------------------------------
// The tally
// ------------------------------------------------------------------------------------------

/// The alert uuids destination requests at `path` carried with a 2xx answer.
pub fn delivered_uuids(reqs: &[Recorded], path: &str) -> HashSet<String> {
    reqs.iter()
        .filter(|r| r.path == path && (200..300).contains(&r.status))
        .filter_map(|r| {
            r.json()?
                .get("alert_short_id")?
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// What one destination got, against what was sent.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Alerts sent (accepted by the webhook).
    pub sent: usize,
    /// Of those, delivered at least once (2xx).
    pub delivered: usize,
    /// Sent but never delivered.
    pub lost: usize,
    /// 2xx deliveries beyond the first of an alert.
    pub duplicates: usize,
    /// Duplicates a receiver honouring `Idempotency-Key` would still process (their key was
    /// never seen before): must be 0.
    pub duplicates_past_idempotency_key: usize,
    /// Requests in all (any status).
    pub requests: usize,
    /// Dead-letter entries.
    pub dead_letters: usize,
}

impl Tally {
    /// Counts `reqs` (to one destination) against `sent`.
    pub fn from_requests(sent: &[String], reqs: &[Recorded]) -> Self {
        let sent_set: HashSet<&str> = sent.iter().map(String::as_str).collect();
        let mut per_uuid: HashMap<String, usize> = HashMap::new();
        let mut keys_seen: HashSet<String> = HashSet::new();
        let mut past_key = 0;
        for r in reqs.iter().filter(|r| (200..300).contains(&r.status)) {
            let Some(uuid) = r
                .json()
                .and_then(|j| j.get("alert_short_id")?.as_str().map(str::to_string))
            else {
                continue;
            };
            let n = per_uuid.entry(uuid.clone()).or_default();
            *n += 1;
            let key = r.header("idempotency-key").unwrap_or_default().to_string();
            let new_key = keys_seen.insert(key);
            if *n > 1 && new_key {
                past_key += 1;
            }
        }
        let delivered = sent_set
            .iter()
            .filter(|u| per_uuid.contains_key(**u))
            .count();
        Self {
            sent: sent.len(),
            delivered,
            lost: sent.len() - delivered,
            duplicates: per_uuid.values().map(|n| n - 1).sum(),
            duplicates_past_idempotency_key: past_key,
            requests: reqs.len(),
            dead_letters: 0,
        }
    }

    /// Prints the figures line the README quotes (visible with `--nocapture`) and appends it
    /// to `$ALERTSYNC_FAULT_REPORT` when set.
    pub fn report(&self, scenario: &str, started: Instant) {
        let line = format!(
            "fault-figures | {scenario} | sent {} | delivered {} | lost {} | duplicated {} \
             (past Idempotency-Key {}) | requests {} | dead letters {} | {:.0} s",
            self.sent,
            self.delivered,
            self.lost,
            self.duplicates,
            self.duplicates_past_idempotency_key,
            self.requests,
            self.dead_letters,
            started.elapsed().as_secs_f64()
        );
        println!("{line}");
        if let Ok(path) = std::env::var("ALERTSYNC_FAULT_REPORT") {
            use std::io::Write as _;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(f, "{line}");
            }
        }
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {}, delivered {}, lost {}, duplicated {} (past Idempotency-Key {}), requests {}, dead letters {}",
            self.sent,
            self.delivered,
            self.lost,
            self.duplicates,
            self.duplicates_past_idempotency_key,
            self.requests,
            self.dead_letters
        )
    }
}
