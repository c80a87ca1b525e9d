//! `alertsync demo`: the whole pipeline on one machine, with no Docker and no Sekoia account.
//!
//! Starts a private nats-server (unless `--nats-url`), a fake Sekoia API that creates an alert
//! every few seconds and announces it to the ingest webhook (as the LiveAPI would), the three
//! services, and a receiver that prints every request it gets. Two destinations run the seed
//! playbook's two templates: the main one (`/soar`) and the Bonus Sekoia intake one (`/intake`).
//! Once the SOAR has an alert (it answers with a ticket id), an analyst acknowledges the alert
//! in the fake Sekoia and comments on it: the SOAR gets a PATCH of its ticket and the comment.
//! Then the SOAR closes its ticket (`POST /v1/sync/soar`): the Sekoia alert turns Closed, and
//! that change is not echoed back to the SOAR.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alertsync_config::{Config, Stage};
use alertsync_standins::{FakeSekoia, Receiver};
use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

/// Arguments of `alertsync demo`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  alertsync demo\n  alertsync demo --every 1s --count 5\n  alertsync demo --nats-url nats://127.0.0.1:4222"
)]
pub struct DemoArgs {
    /// Use this NATS server instead of starting a private one (needs nats-server >= 2.10 with
    /// JetStream).
    #[arg(long)]
    nats_url: Option<String>,
    /// How often the fake Sekoia creates an alert.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    every: Duration,
    /// Stop after this many alerts reached every destination (default: run until Ctrl-C).
    #[arg(long)]
    count: Option<usize>,
}

const WEBHOOK_TOKEN: &str = "demo-webhook-token-not-secret";
const SEKOIA_KEY: &str = "demo-sekoia-api-key";
const INTAKE_KEY: &str = "demo-intake-key-1234";
const SOAR_KEY: &str = "demo-soar-api-key";
const SOAR_SYNC_TOKEN: &str = "demo-soar-sync-token-not-secret";

/// The demo's configuration, in the same format as `alertsync.example.toml`.
fn demo_config(nats_url: &str, sekoia: &str, receiver: &str) -> String {
    format!(
        r#"
[nats]
url = "{nats_url}"
prefix = "alertsync-demo"
[sekoia]
base_url = "{sekoia}"
api_key = "${{SEKOIA_API_KEY}}"
[ingest]
listen = "127.0.0.1:0"
webhook_token = "${{ALERTSYNC_WEBHOOK_TOKEN}}"
[enricher]
listen = "127.0.0.1:0"
[forwarder]
listen = "127.0.0.1:0"

[[destinations]]
name = "soar"
url = "{receiver}/soar"
method = "post"
headers = {{ Authorization = "Bearer ${{SOAR_API_KEY}}" }}
json = '''{{"alert_short_id":"{{{{ node.0['alert_uuid'] }}}}", "rule_name":"{{{{ node.1['rule']['name'] }}}}","rule_severity":"{{{{ node.1['rule']['severity'] }}}}","description":"This is a description"}}'''
# The SOAR answers each creation with its own id: later requests go to that ticket.
remote_id = "{{{{ response.json.id }}}}"
[destinations.on_update]
method = "patch"
url = "{receiver}/soar/{{{{ remote.id }}}}"
json = '''{{"status": "{{{{ alert.status.name }}}}", "urgency": "{{{{ alert.urgency.current_value }}}}"}}'''
changes = ["status"]
[destinations.on_comment]
method = "post"
url = "{receiver}/soar/{{{{ remote.id }}}}/comments"
json = '''{{"message": "{{{{ comment.content }}}}", "author": "{{{{ comment.author }}}}"}}'''
# Two-way: the ticket is commented back on the Sekoia alert, and closing the ticket in the
# SOAR (a POST to /v1/sync/soar) closes the alert in Sekoia.
[destinations.after_create]
comment = "SOAR ticket {{{{ response.json.id }}}} opened"
[destinations.sync_back]
token = "${{SOAR_SYNC_TOKEN}}"
alert = "{{{{ body.ticket.source_ref }}}}"
status = "{{{{ body.ticket.state }}}}"
comment = "{{{{ body.ticket.resolution }}}}"
[destinations.sync_back.statuses]
closed = "Closed"

[[destinations]]
name = "intake"
url = "{receiver}/intake"
method = "post"
max_body_bytes = 250000
json = '''{{"json":"'{{\"alert_short_id\":\"{{{{ node.0['alert_uuid'] }}}}\", \"rule_name\":\"{{{{ node.1['rule']['name'] }}}}\",\"rule_severity\":\"{{{{ node.1['rule']['severity'] }}}}\",\"description\":\"An HTTP request was made from Sekoia.io Playbook\"}}'", "intake_key":"${{SEKOIA_INTAKE_KEY}}"}}'''
"#
    )
}

fn demo_env(name: &str) -> Option<String> {
    match name {
        "SEKOIA_API_KEY" => Some(SEKOIA_KEY.into()),
        "ALERTSYNC_WEBHOOK_TOKEN" => Some(WEBHOOK_TOKEN.into()),
        "SOAR_API_KEY" => Some(SOAR_KEY.into()),
        "SEKOIA_INTAKE_KEY" => Some(INTAKE_KEY.into()),
        "SOAR_SYNC_TOKEN" => Some(SOAR_SYNC_TOKEN.into()),
        _ => None,
    }
}

/// The demo's analyst: for each alert the SOAR has, acknowledges it in the fake Sekoia and
/// comments on it, each change announced to the webhook as the LiveAPI would; then the SOAR
/// closes its ticket. Stops at once on shutdown, even in the middle of an alert.
async fn analyst(
    sekoia: FakeSekoia,
    webhook: String,
    sync_url: String,
    mut alerts: tokio::sync::mpsc::UnboundedReceiver<String>,
    closed: Arc<AtomicUsize>,
    shutdown: CancellationToken,
) {
    let client = alertsync_http::client_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client without custom TLS settings builds");
    let mut watchers = tokio::task::JoinSet::new();
    loop {
        let uuid = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = alerts.recv() => match next {
                Some(uuid) => uuid,
                None => break,
            },
        };
        watchers.spawn(watch(
            sekoia.clone(),
            uuid.clone(),
            closed.clone(),
            shutdown.clone(),
        ));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = follow(&client, &sekoia, &webhook, &sync_url, &uuid) => {}
        }
    }
    watchers.abort_all();
}

/// One alert's life after its delivery: acknowledged and commented in Sekoia, then closed in
/// the SOAR.
async fn follow(
    client: &reqwest::Client,
    sekoia: &FakeSekoia,
    webhook: &str,
    sync_url: &str,
    uuid: &str,
) {
    // Sekoia's times are whole seconds: the change lands in a later second than the
    // creation, as an analyst's would.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let Some(alert) = sekoia.alert(uuid) else {
        return;
    };
    let short_id = alert["short_id"].as_str().unwrap_or_default().to_string();
    let ack = sekoia.set_status_quietly(uuid, "Acknowledged");
    println!("[sekoia]   alert {short_id} acknowledged by an analyst");
    post(client, webhook, &ack).await;
    let comment = sekoia.add_comment_quietly(
        uuid,
        "Looking into it: \"suspicious\" logon",
        "Jane Analyst",
    );
    println!("[sekoia]   alert {short_id} commented by an analyst");
    post(client, webhook, &comment).await;
    // The SOAR's analyst closes the ticket; the SOAR tells alertsync.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let closed = serde_json::json!({"ticket": {
        "source_ref": uuid, "state": "closed", "resolution": "Closed in the SOAR: benign",
    }});
    let sent = client
        .post(sync_url)
        .bearer_auth(SOAR_SYNC_TOKEN)
        .json(&closed)
        .send()
        .await;
    match sent {
        Ok(r) => println!(
            "[soar]     ticket of alert {short_id} closed; POST /v1/sync/soar answered {}",
            r.status().as_u16()
        ),
        Err(e) => println!(
            "[soar]     sync endpoint unreachable: {}",
            alertsync_http::describe_error(&e)
        ),
    }
}

/// Prints what alertsync writes back on the Sekoia alert `uuid`: the ticket's key, commented
/// back after the creation, and the status the SOAR closed it with (counted in `closed_seen`).
async fn watch(
    sekoia: FakeSekoia,
    uuid: String,
    closed_seen: Arc<AtomicUsize>,
    shutdown: CancellationToken,
) {
    let (mut commented, mut closed) = (false, false);
    for _ in 0..600 {
        let Some(alert) = sekoia.alert(&uuid) else {
            return;
        };
        let short_id = alert["short_id"].as_str().unwrap_or_default();
        if !commented
            && let Some(c) = alert["comments"].as_array().and_then(|c| {
                c.iter()
                    .find(|c| c["author"] == "alertsync" && c["content"].is_string())
            })
        {
            commented = true;
            println!(
                "[sekoia]   alert {short_id} commented by alertsync: {}",
                c["content"].as_str().unwrap_or_default()
            );
        }
        if !closed && alert["status"]["name"] == "Closed" {
            closed = true;
            println!("[sekoia]   alert {short_id} is now Closed (from the SOAR)");
            closed_seen.fetch_add(1, Ordering::SeqCst);
        }
        if commented && closed {
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Announces `notification` to the ingest webhook.
async fn post(client: &reqwest::Client, webhook: &str, notification: &serde_json::Value) {
    let sent = client
        .post(webhook)
        .bearer_auth(WEBHOOK_TOKEN)
        .json(notification)
        .send()
        .await;
    if let Err(e) = sent {
        println!(
            "[sekoia]   webhook unreachable: {}",
            alertsync_http::describe_error(&e)
        );
    }
}

/// Runs the demo until Ctrl-C (or `--count` deliveries).
pub async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let _telemetry = alertsync_runtime::init_logging_with_default("alertsync-demo", "warn");
    let (_server, nats_url) = match &args.nats_url {
        Some(url) => (None, url.clone()),
        None => {
            let s = alertsync_nats_launcher::NatsServer::start()?;
            let url = s.url();
            (Some(s), url)
        }
    };
    let sekoia = FakeSekoia::start(SEKOIA_KEY).await;
    let receiver = Receiver::start().await;
    let text = demo_config(&nats_url, &sekoia.base_url(), &receiver.url(""));
    let config = Config::parse(&text, &demo_env, &Stage::ALL).context("demo config")?;

    let delivered = Arc::new(AtomicUsize::new(0));
    let redactor = config.redactor.clone();
    let counter = delivered.clone();
    // The SOAR's ticket ids, one per alert.
    let tickets = Arc::new(AtomicUsize::new(0));
    receiver.respond_with("/soar", move |_| {
        let n = tickets.fetch_add(1, Ordering::SeqCst) + 1;
        alertsync_standins::Reply::status(201).body(&format!("{{\"id\": \"SOAR-{n}\"}}"))
    });
    let (follow_tx, follow_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    receiver.on_request(move |r| {
        if r.path == "/intake" {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        if r.path == "/soar"
            && r.status == 201
            && let Some(uuid) = r
                .json()
                .and_then(|j| j["alert_short_id"].as_str().map(str::to_string))
        {
            let _ = follow_tx.send(uuid);
        }
        let key = r.header("idempotency-key").unwrap_or("-");
        println!(
            "[receiver] {} {}  Idempotency-Key: {key}\n           {}",
            r.method,
            r.path,
            redactor.redact(&String::from_utf8_lossy(&r.body))
        );
    });

    let shutdown = CancellationToken::new();
    alertsync_runtime::shutdown_on_signal(shutdown.clone());
    let ingest = alertsync_ingest::Ingest::build(&config)
        .await
        .context("ingest")?;
    let webhook = format!("http://{}/v1/alerts", ingest.local_addr());
    let enricher = alertsync_enricher::Enricher::build(&config)
        .await
        .context("enricher")?;
    let forwarder = alertsync_forwarder::Forwarder::build(&config)
        .await
        .context("forwarder")?;
    let mut services = tokio::task::JoinSet::new();
    services.spawn(ingest.run(shutdown.clone()));
    services.spawn(enricher.run(shutdown.clone()));
    services.spawn(forwarder.run(shutdown.clone()));

    println!("alertsync demo: the Sekoia playbook, end to end, on this machine");
    println!("  NATS       {nats_url}");
    println!(
        "  Sekoia     {} (fake: creates an alert every {:?})",
        sekoia.base_url(),
        args.every
    );
    println!("  webhook    {webhook}");
    println!(
        "  receiver   {} (prints every request: /soar = main template, /intake = Bonus)",
        receiver.url("")
    );
    println!("Announce an alert yourself:");
    println!(
        "  curl -s -H 'Authorization: Bearer {WEBHOOK_TOKEN}' -d '{{\"alert_uuid\":\"<uuid>\"}}' {webhook}"
    );
    println!("Ctrl-C stops.\n");

    let sync_url = webhook.replace("/v1/alerts", "/v1/sync/soar");
    // Alerts seen Closed in Sekoia after their ticket was closed in the SOAR.
    let closed = Arc::new(AtomicUsize::new(0));
    let analyst = tokio::spawn(analyst(
        sekoia.clone(),
        webhook.clone(),
        sync_url,
        follow_rx,
        closed.clone(),
        shutdown.clone(),
    ));
    let generator = tokio::spawn(crate::standins::generate(
        sekoia.clone(),
        webhook,
        WEBHOOK_TOKEN.to_string(),
        args.every,
        shutdown.clone(),
    ));
    if let Some(n) = args.count {
        let deadline =
            tokio::time::Instant::now() + args.every * (n as u32) + Duration::from_secs(60);
        loop {
            let followed = |method: &str, comments: bool| {
                receiver
                    .requests()
                    .iter()
                    .filter(|r| {
                        r.method == method
                            && r.path.starts_with("/soar/")
                            && r.path.ends_with("/comments") == comments
                    })
                    .count()
            };
            let closed = closed.load(Ordering::SeqCst);
            if delivered.load(Ordering::SeqCst) >= n
                && receiver.requests_to("/soar").len() >= n
                && followed("PATCH", false) >= n
                && followed("POST", true) >= n
                && closed >= n
            {
                break;
            }
            if shutdown.is_cancelled() {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} alerts were delivered in time",
                delivered.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "\n{n} alerts delivered to both destinations, their ticket keys commented back on \
             them, acknowledged and commented in Sekoia (sent on to the SOAR), then closed in \
             the SOAR and so in Sekoia, with nothing echoed back to the SOAR; stopping."
        );
        shutdown.cancel();
    }
    shutdown.cancelled().await;
    let _ = generator.await;
    let _ = analyst.await;
    while let Some(r) = services.join_next().await {
        r??;
    }
    Ok(())
}
