//! `alertsync stand-ins`: the outside world of the demo, as one process for the compose `demo`
//! profile: a fake Sekoia API that creates an alert every few seconds and announces it to the
//! ingest webhook (as the LiveAPI would), and a receiver that prints every request it gets.
//!
//! [`generate`] is the alert generator, shared with `alertsync demo`.

use std::net::SocketAddr;
use std::time::Duration;

use alertsync_config::Redactor;
use alertsync_standins::{FakeSekoia, Receiver, alerts};
use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

/// Rule names the generator cycles through; one is hostile on purpose, to show that it
/// reaches the destination as valid JSON.
pub const RULES: &[&str] = &[
    "Brute force on SSH service",
    "Suspicious PowerShell download cradle",
    "Rule with \"quotes\", a \\ backslash and {{ braces }}",
    "Impossible travel for a privileged account",
];

/// Arguments of `alertsync stand-ins`.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  alertsync stand-ins --webhook http://127.0.0.1:8080/v1/alerts
  alertsync stand-ins --sekoia-listen 0.0.0.0:9000 --receiver-listen 0.0.0.0:9100 \\
      --webhook http://ingest:8080/v1/alerts --every 3s

Point the pipeline's config at it: sekoia.base_url = \"http://<host>:9000\" and destination
URLs at http://<host>:9100/<any path>. The Sekoia API key and the webhook token are read from
the environment variables named by --sekoia-key-env and --webhook-token-env, the same ones the
services use. docker-compose.yml runs this in its `demo` profile.")]
pub struct StandInsArgs {
    /// Address of the fake Sekoia API (`GET /v1/sic/alerts/{uuid}`, `GET /v1/me`).
    #[arg(long, default_value = "127.0.0.1:9000")]
    sekoia_listen: SocketAddr,
    /// Address of the receiver, which prints every request (any path).
    #[arg(long, default_value = "127.0.0.1:9100")]
    receiver_listen: SocketAddr,
    /// The ingest webhook each new alert is announced to.
    #[arg(long)]
    webhook: String,
    /// Environment variable holding the webhook token.
    #[arg(long, default_value = "ALERTSYNC_WEBHOOK_TOKEN")]
    webhook_token_env: String,
    /// Environment variable holding the API key the fake Sekoia accepts.
    #[arg(long, default_value = "SEKOIA_API_KEY")]
    sekoia_key_env: String,
    /// Environment variables whose values are scrubbed from what the receiver prints (the
    /// destinations' credentials), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "SOAR_API_KEY,SEKOIA_INTAKE_KEY"
    )]
    redact_env: Vec<String>,
    /// How often a new alert is created (0 creates none: announce your own).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    every: Duration,
}

fn required_env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| {
        format!("environment variable {name} is not set: set it to the same value the services get")
    })
}

/// Runs the stand-ins until SIGTERM/SIGINT.
pub async fn stand_ins(args: StandInsArgs) -> anyhow::Result<()> {
    let _telemetry = alertsync_runtime::init_logging_with_default("alertsync-stand-ins", "warn");
    let token = required_env(&args.webhook_token_env)?;
    let key = required_env(&args.sekoia_key_env)?;
    let redactor = Redactor::new(
        [token.clone(), key.clone()]
            .into_iter()
            .chain(args.redact_env.iter().filter_map(|v| std::env::var(v).ok())),
    );
    let sekoia = FakeSekoia::start_on(args.sekoia_listen, &key)
        .await
        .with_context(|| format!("--sekoia-listen: cannot bind {}", args.sekoia_listen))?;
    let receiver = Receiver::start_on(args.receiver_listen)
        .await
        .with_context(|| format!("--receiver-listen: cannot bind {}", args.receiver_listen))?;
    receiver.on_request(move |r| print_request(r, &redactor));

    println!("alertsync stand-ins: the outside world of the demo");
    println!(
        "  Sekoia     {} (fake; creates an alert every {:?})",
        args.sekoia_listen, args.every
    );
    println!(
        "  receiver   {} (prints every request)",
        args.receiver_listen
    );
    println!("  webhook    {}", args.webhook);

    let shutdown = CancellationToken::new();
    alertsync_runtime::shutdown_on_signal(shutdown.clone());
    if args.every.is_zero() {
        shutdown.cancelled().await;
    } else {
        generate(sekoia, args.webhook, token, args.every, shutdown).await;
    }
    Ok(())
}

/// Prints one received request: method, path, idempotency key and the body, secrets
/// scrubbed. (Headers are not printed: they carry the destination's credentials.)
pub fn print_request(r: &alertsync_standins::Recorded, redactor: &Redactor) {
    let key = r.header("idempotency-key").unwrap_or("-");
    println!(
        "[receiver] {} {}  Idempotency-Key: {key}\n           {}",
        r.method,
        r.path,
        redactor.redact(&String::from_utf8_lossy(&r.body))
    );
}

/// Creates an alert in the fake Sekoia every `every` and announces it to `webhook` with
/// `token`, the way the LiveAPI would, until `shutdown`.
pub async fn generate(
    sekoia: FakeSekoia,
    webhook: String,
    token: String,
    every: Duration,
    shutdown: CancellationToken,
) {
    let client = alertsync_http::client_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client without custom TLS settings builds");
    let mut tick = tokio::time::interval(every);
    for i in 0usize.. {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let uuid = uuid::Uuid::new_v4().to_string();
        let short_id = alerts::random_short_id();
        let rule = RULES[i % RULES.len()];
        let mut alert = alerts::new_alert(&uuid, &short_id, rule, rule);
        // A new alert has no comments yet (the fixture's would reach the destinations as
        // comments made after the creation).
        alert["comments"] = serde_json::json!([]);
        let notification = alerts::live_notification(&alert);
        sekoia.insert_alert(alert);
        println!("[sekoia]   alert {short_id} created ({uuid}), rule: {rule}");
        let resp = client
            .post(&webhook)
            .bearer_auth(&token)
            .json(&notification)
            .send()
            .await;
        match resp {
            Ok(r) if r.status().as_u16() == 202 => {}
            Ok(r) => println!("[sekoia]   webhook answered {}", r.status()),
            Err(e) => println!(
                "[sekoia]   webhook unreachable (is ingest up yet?): {}",
                alertsync_http::describe_error(&e)
            ),
        }
    }
}
