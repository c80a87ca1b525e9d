//! `alertsync check`: is this configuration ready to run? One line per check, `ok` or `FAIL`
//! with what to do, and a non-zero exit on any failure. Nothing is published and no alert is
//! sent.
//!
//! The checks, for the chosen stages (all by default):
//! - `config`: the file loads and validates (unknown fields, invalid values, unset `${VAR}`s);
//! - `template <destination>`: every template of every destination compiles (forwarder);
//! - `nats`: the server answers, is 2.10 or newer, and has JetStream for this account;
//! - `sekoia key`: `GET {base}/v1/me` accepts the API key (enricher, and an ingest that
//!   listens to the LiveAPI or polls);
//! - `destination <name>` (with `--destinations`): the destination's host answers an HTTP
//!   `HEAD` (any status counts: it proves DNS, TCP and TLS work; no credential is sent).
//!
//! Every printed message goes through the config's redactor: secrets are never printed.

use std::path::PathBuf;
use std::time::Duration;

use alertsync_config::{Config, ConfigError, Redactor, Stage};
use alertsync_sekoia::{KeyCheck, SekoiaClient};

use crate::run::StageArg;

/// How long one network check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `alertsync check`.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  alertsync check --config alertsync.toml
  alertsync check --config alertsync.toml --destinations
  alertsync check --config alertsync.toml --stages ingest

Exits 0 when every check passes, 1 otherwise. Run it with the same environment the services get
(the ${VAR}s of the config must be set).")]
pub struct CheckArgs {
    /// Path of alertsync.toml.
    #[arg(long, short, env = alertsync_config::CONFIG_ENV)]
    config: PathBuf,
    /// Also check that every destination's host is reachable (an HTTP HEAD without
    /// credentials; never an alert).
    #[arg(long)]
    destinations: bool,
    /// Check what these stages need, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ingest,enricher,forwarder"
    )]
    stages: Vec<StageArg>,
}

/// The result lines of one run, printed as they come.
struct Report {
    redactor: Redactor,
    passed: usize,
    failed: usize,
}

impl Report {
    fn ok(&mut self, check: &str, detail: &str) {
        self.passed += 1;
        println!("ok    {check}: {}", self.redactor.redact(detail));
    }

    fn fail(&mut self, check: &str, problem: &str, fix: &str) {
        self.failed += 1;
        let line = if fix.is_empty() {
            format!("FAIL  {check}: {problem}")
        } else {
            format!("FAIL  {check}: {problem} -> {fix}")
        };
        println!("{}", self.redactor.redact(&line));
    }
}

/// Runs every check; `Err` when any failed.
pub async fn check(args: CheckArgs) -> anyhow::Result<()> {
    let stages: Vec<Stage> = args.stages.iter().map(|s| (*s).into()).collect();
    let mut report = Report {
        redactor: Redactor::default(),
        passed: 0,
        failed: 0,
    };
    let config = match Config::load(&args.config, &stages) {
        Ok(c) => c,
        Err(e) => {
            const FIX: &str = "fix it (alertsync.example.toml documents every field)";
            const SET_VAR: &str = "set it where the services run (.env with docker compose, \
                                   a Secret on Kubernetes) and here";
            match e {
                // One line per problem, each naming its field.
                ConfigError::Invalid { path, problems } => {
                    let path = path.unwrap_or_default();
                    for p in problems {
                        let fix = if p.contains("environment variable") {
                            SET_VAR
                        } else {
                            FIX
                        };
                        report.fail("config", &format!("{path}: {p}"), fix);
                    }
                }
                // The parser's message spans lines: keep it on one.
                other => report.fail(
                    "config",
                    &other
                        .to_string()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" "),
                    FIX,
                ),
            }
            anyhow::bail!("the configuration is invalid; the other checks need a valid one");
        }
    };
    report.redactor = config.redactor.clone();
    for deprecation in &config.deprecations {
        println!("warn  config: {deprecation}");
    }
    report.ok(
        "config",
        &format!(
            "{} is valid for {} ({} destination{})",
            args.config.display(),
            stages
                .iter()
                .map(|s| format!("{s:?}").to_lowercase())
                .collect::<Vec<_>>()
                .join(", "),
            config.destinations.len(),
            if config.destinations.len() == 1 {
                ""
            } else {
                "s"
            }
        ),
    );

    if stages.contains(&Stage::Forwarder) {
        check_templates(&config, &mut report);
    }
    check_nats(&config, &mut report).await;
    let needs_sekoia = stages.contains(&Stage::Enricher)
        || (stages.contains(&Stage::Ingest)
            && config.ingest.as_ref().is_some_and(|i| i.uses_sekoia()));
    if needs_sekoia {
        check_sekoia(&config, &mut report).await;
    }
    if args.destinations {
        check_destinations(&config, &mut report).await;
    }

    if report.failed > 0 {
        anyhow::bail!(
            "{} of {} checks failed: fix them and run alertsync check again",
            report.failed,
            report.failed + report.passed
        );
    }
    println!("all {} checks passed", report.passed);
    Ok(())
}

/// Compiles each destination on its own, so every broken template is reported at once.
fn check_templates(config: &Config, report: &mut Report) {
    let engine = alertsync_forwarder::template_engine(config);
    for d in &config.destinations {
        let check = format!("template {}", d.name);
        match alertsync_forwarder::Destination::new(d, &engine, config.redactor.clone()) {
            Ok(_) => report.ok(&check, "json, headers and params compile"),
            Err(e) => report.fail(
                &check,
                &e.to_string(),
                "fix the template (Sekoia's Jinja syntax; see the Configuration section of the README)",
            ),
        }
    }
}

async fn check_nats(config: &Config, report: &mut Report) {
    let url = &config.nats.url;
    let connect = alertsync_nats::connect(&config.nats, "alertsync-check");
    let (client, js) = match tokio::time::timeout(CHECK_TIMEOUT, connect).await {
        Err(_) => {
            return report.fail(
                "nats",
                &format!("no answer from {url} within {CHECK_TIMEOUT:?}"),
                "check nats.url and that nats-server is running and reachable from here",
            );
        }
        Ok(Err(e)) => {
            let fix = match e {
                alertsync_nats::ConnectError::Unreachable { .. } => {
                    "check nats.url, that nats-server is running (with -js) and reachable from \
                     here, and the credentials in [nats]"
                }
                // These messages already say what to do.
                _ => "",
            };
            return report.fail("nats", &e.to_string(), fix);
        }
        Ok(Ok(c)) => c,
    };
    let version = client.server_info().version;
    match tokio::time::timeout(CHECK_TIMEOUT, js.query_account()).await {
        Ok(Ok(_)) => report.ok(
            "nats",
            &format!("{url} is nats-server {version} with JetStream"),
        ),
        Ok(Err(e)) => report.fail(
            "nats",
            &format!("{url} is nats-server {version} but JetStream is not available: {e}"),
            "enable JetStream on the server (-js) and for this account",
        ),
        Err(_) => report.fail(
            "nats",
            &format!("{url} is nats-server {version} but its JetStream API did not answer"),
            "check that JetStream is enabled and the cluster has a meta leader",
        ),
    }
    // Nothing was published; just let go of the connection.
    drop(client);
}

async fn check_sekoia(config: &Config, report: &mut Report) {
    let Some(sekoia) = &config.sekoia else {
        // The config check already reported the missing section.
        return;
    };
    let base = sekoia.base_url.as_str().trim_end_matches('/').to_string();
    let client = match SekoiaClient::new(sekoia) {
        Ok(c) => c,
        Err(e) => return report.fail("sekoia key", &e.to_string(), ""),
    };
    match tokio::time::timeout(CHECK_TIMEOUT, client.check_key()).await {
        Ok(KeyCheck::Accepted) => report.ok("sekoia key", &format!("{base}/v1/me accepts it")),
        Ok(KeyCheck::Rejected(status)) => report.fail(
            "sekoia key",
            &format!("Sekoia rejected the API key ({status} from {base}/v1/me)"),
            "set sekoia.api_key (usually ${SEKOIA_API_KEY}) to a valid key with the \"View alerts\" permission",
        ),
        Ok(KeyCheck::Unavailable(reason)) => report.fail(
            "sekoia key",
            &format!("cannot check the key at {base}/v1/me: {reason}"),
            "check sekoia.base_url (https://api.sekoia.io or https://app.<region>.sekoia.io/api) and the network",
        ),
        Err(_) => report.fail(
            "sekoia key",
            &format!("{base}/v1/me did not answer within {CHECK_TIMEOUT:?}"),
            "check sekoia.base_url and the network",
        ),
    }
}

async fn check_destinations(config: &Config, report: &mut Report) {
    for d in &config.destinations {
        let check = format!("destination {}", d.name);
        // Only scheme, host, port and path: the query and user info may hold credentials,
        // and the URL itself is never printed.
        let mut url = d.url.reachability_url();
        url.set_query(None);
        url.set_fragment(None);
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let host = format!(
            "{}:{}",
            url.host_str().unwrap_or("?"),
            url.port_or_known_default().unwrap_or(0)
        );
        let client = match alertsync_http::client_builder()
            .timeout(d.timeout.get().min(CHECK_TIMEOUT))
            .tls_danger_accept_invalid_certs(!d.verify_tls)
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                report.fail(&check, &alertsync_http::describe_error(&e), "");
                continue;
            }
        };
        match client.head(url).send().await {
            Ok(resp) => report.ok(
                &check,
                &format!("{host} answered HEAD with {}", resp.status().as_u16()),
            ),
            Err(e) => report.fail(
                &check,
                &format!(
                    "{host} is unreachable: {}",
                    alertsync_http::describe_error(&e)
                ),
                "check the destination's url, DNS, firewalls and proxies from where the \
                 forwarder runs (and verify_tls for a private CA)",
            ),
        }
    }
}
