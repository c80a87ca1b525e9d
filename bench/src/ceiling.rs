//! The ceiling: the pipeline's two JetStream hops and two HTTP calls written as the leanest
//! code we know, with no config, no templates, no tracing, no metrics and no delivery records.
//!
//! ```text
//! POST /v1/alerts ─publish (ack awaited)─▶ <p>.created.x ─pull─▶ GET fake Sekoia
//!   ─publish (ack awaited)─▶ <p>.enriched.x ─pull─▶ POST destination ─▶ ack
//! ```
//!
//! Messages carry `Nats-Msg-Id` like the project's (dedup is part of the same JetStream work);
//! acks are plain (not double) acks. Each stage keeps up to `concurrency` messages in flight
//! over one continuous pull (`max_ack_pending` 1000, the server default the project also uses).
//!
//! It runs as a child process of the benchmark (`alertsync-bench ceiling-worker`), so its CPU
//! and memory are measured exactly like the services', and the load generator and fakes do
//! not share its runtime. It prints `CEILING_READY <addr>` once it accepts webhooks and exits
//! when its standard input closes.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, PullConsumer, pull},
    message::PublishMessage as Publish,
    stream::{self, StorageType},
};
use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode, body::Incoming, header};
use tokio::sync::Semaphore;

use crate::wire::{self, Client};

/// The line the worker prints when it is ready, followed by its webhook address.
const READY: &str = "CEILING_READY";
/// Environment variables carrying the secrets to the worker.
const TOKEN_ENV: &str = "BENCH_CEILING_WEBHOOK_TOKEN";
const KEY_ENV: &str = "BENCH_CEILING_SEKOIA_KEY";

/// What the worker needs (the parent passes it on the command line).
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// NATS URL.
    #[arg(long)]
    pub nats: String,
    /// Fake Sekoia base URL.
    #[arg(long)]
    pub sekoia: String,
    /// Destination URL.
    #[arg(long)]
    pub destination: String,
    /// Subject prefix (streams are its upper-case form).
    #[arg(long)]
    pub prefix: String,
    /// Messages in flight per stage.
    #[arg(long)]
    pub concurrency: usize,
    /// Threads of its runtime (1: everything on the main thread).
    #[arg(long, default_value_t = 1)]
    pub threads: u16,
}

#[derive(serde::Deserialize)]
struct Announce<'a> {
    #[serde(borrow)]
    alert_uuid: std::borrow::Cow<'a, str>,
}

#[derive(serde::Deserialize)]
struct Alert<'a> {
    #[serde(borrow)]
    uuid: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    rule: Rule<'a>,
}

#[derive(serde::Deserialize)]
struct Rule<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    severity: serde_json::Value,
}

/// The seed template's body for `alert`, built by hand (the same bytes the project renders).
fn body_for(alert: &Alert<'_>) -> String {
    let severity = match &alert.rule.severity {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let quoted = |s: &str| serde_json::to_string(s).expect("a str serialises");
    format!(
        r#"{{"alert_short_id":{}, "rule_name":{},"rule_severity":{},"description":"This is a description"}}"#,
        quoted(&alert.uuid),
        quoted(&alert.rule.name),
        quoted(&severity)
    )
}

/// Runs the worker until standard input closes.
pub async fn run_worker(args: WorkerArgs) -> anyhow::Result<()> {
    let token = std::env::var(TOKEN_ENV)?;
    let key = std::env::var(KEY_ENV)?;
    let client = async_nats::connect(&args.nats).await?;
    let js = jetstream::new(client.clone());
    let (p, base) = (args.prefix.clone(), args.prefix.to_ascii_uppercase());
    let mut consumers = Vec::new();
    for (stage, consumer) in [("created", "enrich"), ("enriched", "forward")] {
        let stream = js
            .get_or_create_stream(stream::Config {
                name: format!("{base}_{}", stage.to_ascii_uppercase()),
                subjects: vec![format!("{p}.{stage}.>")],
                storage: StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await?;
        let c: PullConsumer = stream
            .get_or_create_consumer(
                consumer,
                pull::Config {
                    durable_name: Some(consumer.into()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    max_ack_pending: 1000,
                    ..Default::default()
                },
            )
            .await?;
        consumers.push(c);
    }
    let forward_consumer = consumers.pop().expect("two consumers");
    let enrich_consumer = consumers.pop().expect("two consumers");
    let http = wire::client();
    let sekoia_auth = Bytes::from(format!("Bearer {key}"));
    let sekoia = args.sekoia.clone();
    {
        let (js, http, p) = (js.clone(), http.clone(), p.clone());
        tokio::spawn(consume(
            enrich_consumer,
            args.concurrency,
            move |msg: jetstream::Message| {
                let (js, http, p, sekoia, auth) = (
                    js.clone(),
                    http.clone(),
                    p.clone(),
                    sekoia.clone(),
                    sekoia_auth.clone(),
                );
                async move { enrich(&js, &http, &p, &sekoia, &auth, &msg.payload).await }
            },
        ));
    }
    {
        let (http, destination) = (http.clone(), args.destination.clone());
        tokio::spawn(consume(
            forward_consumer,
            args.concurrency,
            move |msg: jetstream::Message| {
                let (http, destination) = (http.clone(), destination.clone());
                async move { forward(&http, &destination, &msg.payload).await }
            },
        ));
    }
    let expected = Bytes::from(format!("Bearer {token}"));
    let server = wire::serve(move |req: Request<Incoming>| {
        let (js, p, expected) = (js.clone(), p.clone(), expected.clone());
        async move { webhook(&js, &p, &expected, req).await }
    })
    .await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{READY} {}", server.addr())?;
        out.flush()?;
    }
    // The parent holds our standard input: when it goes away, so do we.
    tokio::task::spawn_blocking(|| {
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
    })
    .await?;
    client.flush().await.ok();
    Ok(())
}

async fn webhook(
    js: &jetstream::Context,
    p: &str,
    expected: &Bytes,
    req: Request<Incoming>,
) -> hyper::Response<wire::Body> {
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_ref());
    if !authorized {
        return wire::json(StatusCode::UNAUTHORIZED, r#"{"error":"bad token"}"#);
    }
    let body = wire::read_body(req.into_body()).await;
    let uuid = match serde_json::from_slice::<Announce<'_>>(&body) {
        Ok(a) if a.alert_uuid.len() == 36 => a.alert_uuid.into_owned(),
        _ => return wire::json(StatusCode::BAD_REQUEST, r#"{"error":"bad body"}"#),
    };
    let publish = Publish::build()
        .payload(Bytes::copy_from_slice(uuid.as_bytes()))
        .message_id(&uuid);
    let acked = match js.send_publish(format!("{p}.created.x"), publish).await {
        Ok(ack) => ack.await,
        Err(e) => return wire::json(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    match acked {
        Ok(ack) => wire::json(
            StatusCode::ACCEPTED,
            format!(r#"{{"alert_uuid":"{uuid}","duplicate":{}}}"#, ack.duplicate),
        ),
        Err(e) => wire::json(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Get Alert, then publish the body (ack awaited). False on any failure (NAKed).
async fn enrich(
    js: &jetstream::Context,
    http: &Client,
    p: &str,
    sekoia: &str,
    auth: &Bytes,
    payload: &[u8],
) -> bool {
    let Ok(uuid) = std::str::from_utf8(payload) else {
        return false;
    };
    let uri = format!(
        "{sekoia}/v1/sic/alerts/{uuid}?stix=false&comments=false&countermeasures=false&history=false"
    );
    let req = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header(header::AUTHORIZATION, auth.as_ref())
        .header(header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .expect("a valid request");
    let Ok(resp) = http.request(req).await else {
        return false;
    };
    let ok = resp.status() == StatusCode::OK;
    let alert = wire::read_body(resp.into_body()).await;
    if !ok {
        return false;
    }
    let publish = Publish::build()
        .payload(alert)
        .message_id(format!("enriched:{uuid}"));
    match js.send_publish(format!("{p}.enriched.x"), publish).await {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    }
}

/// Builds the seed template's body from the alert and POSTs it. False on any failure.
async fn forward(http: &Client, destination: &str, payload: &[u8]) -> bool {
    let Ok(alert) = serde_json::from_slice::<Alert<'_>>(payload) else {
        return false;
    };
    let body = body_for(&alert);
    let req = Request::builder()
        .method(Method::POST)
        .uri(destination)
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", format!("{}:ceiling", alert.uuid))
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request");
    let Ok(resp) = http.request(req).await else {
        return false;
    };
    let ok = resp.status().is_success();
    let _ = wire::read_body(resp.into_body()).await;
    ok
}

/// Pulls continuously from `consumer`, running `handle` on up to `concurrency` messages at
/// once; acks on success, NAKs (100 ms) on failure.
async fn consume<H, F>(consumer: PullConsumer, concurrency: usize, handle: H)
where
    H: Fn(jetstream::Message) -> F + Send + Sync + 'static,
    F: Future<Output = bool> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    loop {
        let mut messages = match consumer
            .stream()
            .max_messages_per_batch(concurrency.max(1) * 2)
            .messages()
            .await
        {
            Ok(m) => m,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while let Some(next) = messages.next().await {
            let Ok(msg) = next else { continue };
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let work = handle(msg.clone());
            tokio::spawn(async move {
                let ack = if work.await {
                    AckKind::Ack
                } else {
                    AckKind::Nak(Some(Duration::from_millis(100)))
                };
                let _ = msg.ack_with(ack).await;
                drop(permit);
            });
        }
    }
}

/// The ceiling worker running as a child of the benchmark.
pub struct Ceiling {
    child: Child,
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
}

impl Ceiling {
    /// Starts `exe ceiling-worker …` (logging to `dir/ceiling.log`) and waits up to 30 s for
    /// it to print its address.
    pub async fn spawn(
        exe: &Path,
        args: &WorkerArgs,
        token: &str,
        sekoia_key: &str,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = std::fs::File::create(dir.join("ceiling.log"))?;
        let mut child = Command::new(exe)
            .arg("ceiling-worker")
            .args(["--nats", &args.nats])
            .args(["--sekoia", &args.sekoia])
            .args(["--destination", &args.destination])
            .args(["--prefix", &args.prefix])
            .args(["--concurrency", &args.concurrency.to_string()])
            .args(["--threads", &args.threads.to_string()])
            .env(TOKEN_ENV, token)
            .env(KEY_ENV, sekoia_key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            let _ = tx.send(first);
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = tokio::time::timeout(Duration::from_secs(30), rx).await;
        let addr = match line {
            Ok(Ok(Some(l))) => l
                .strip_prefix(READY)
                .and_then(|a| a.trim().parse().ok())
                .ok_or_else(|| anyhow::anyhow!("unexpected ceiling output: {l}"))?,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(dir.join("ceiling.log")).unwrap_or_default();
                anyhow::bail!("the ceiling worker did not start:\n{log}");
            }
        };
        Ok(Self { child, stdin, addr })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its webhook URL.
    pub fn webhook_url(&self) -> String {
        format!("http://{}/v1/alerts", self.addr)
    }

    /// Closes its standard input and waits up to `grace` for it to exit.
    pub async fn stop(mut self, grace: Duration) -> Option<i32> {
        self.stdin.take();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hand_built_body_matches_the_seed_template_and_escapes_values() {
        let raw = br#"{"uuid":"3b1f6c2e-8d4a-4f0b-9e37-5a2c7d91e604","rule":{"name":"a \"q\"","severity":65}}"#;
        let alert: Alert<'_> = serde_json::from_slice(raw).unwrap();
        let body = body_for(&alert);
        assert_eq!(
            body,
            r#"{"alert_short_id":"3b1f6c2e-8d4a-4f0b-9e37-5a2c7d91e604", "rule_name":"a \"q\"","rule_severity":"65","description":"This is a description"}"#
        );
        serde_json::from_str::<serde_json::Value>(&body).unwrap();
    }
}
