//! Observed through traces: the three binaries as real processes export OTLP to an in-process
//! collector that decodes the real protobuf; one trace per alert spans all three services and
//! reaches the destination's `traceparent`; `/metrics` parses and counts what happened; JSON
//! logs carry the trace id; no secret shows up anywhere.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alertsync_nats_launcher::NatsServer;
use alertsync_standins::otlp::{OtlpReceiver, ReceivedSpan};
use alertsync_standins::{FakeSekoia, Receiver, Reply, alerts};
use alertsync_tests::*;

const SECRETS: [&str; 4] = [SEKOIA_KEY, WEBHOOK_TOKEN, SOAR_KEY, INTAKE_KEY];

fn binary(name: &str) -> PathBuf {
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .to_path_buf();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `name`, exporting spans to `otlp` if given (else with no exporter at all).
    fn spawn(name: &str, config: &Path, dir: &Path, otlp: Option<&str>) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(binary(name));
        if let Some(otlp) = otlp {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
                .env("OTEL_BSP_SCHEDULE_DELAY", "200");
        }
        let child = cmd
            .arg("--config")
            .arg(config)
            .env("SEKOIA_API_KEY", SEKOIA_KEY)
            .env("WEBHOOK_TOKEN", WEBHOOK_TOKEN)
            .env("SOAR_KEY", SOAR_KEY)
            .env("INTAKE_KEY", INTAKE_KEY)
            .env("ALERTSYNC_LOG_FORMAT", "json")
            // Per-alert success lines are debug: at info they cost a fifth of the CPU.
            .env(
                "RUST_LOG",
                "info,alertsync_ingest=debug,alertsync_enricher=debug,alertsync_forwarder=debug",
            )
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    async fn terminate(mut self) -> String {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "clean exit");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "exits within the grace period"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Writes a config for `destinations` (each service on its own free port), starts the three
/// binaries with it (exporting to `otlp`, if given) and waits until each is ready. Returns the
/// ports (ingest, enricher, forwarder), the directory holding config and logs, and the
/// processes.
async fn start_services(
    nats: &NatsServer,
    sekoia: &FakeSekoia,
    receiver: &Receiver,
    destinations: &str,
    otlp: Option<&str>,
) -> ([u16; 3], tempfile::TempDir, [Proc; 3]) {
    let ports = [free_port(), free_port(), free_port()];
    let mut text = config_text(
        &nats.url(),
        &sekoia.base_url(),
        &receiver.url(""),
        destinations,
    );
    for port in ports {
        text = text.replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
            1,
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertsync.toml");
    std::fs::write(&config, text).unwrap();
    let procs = [
        "alertsync-ingest",
        "alertsync-enricher",
        "alertsync-forwarder",
    ]
    .map(|name| Proc::spawn(name, &config, dir.path(), otlp));
    let client = reqwest_client();
    for port in ports {
        let url = format!("http://127.0.0.1:{port}/readyz");
        assert!(
            eventually(SOON, || async {
                matches!(client.get(&url).send().await, Ok(r) if r.status().as_u16() == 200)
            })
            .await,
            "{url} ready"
        );
    }
    (ports, dir, procs)
}

/// Makes a new alert readable at the fake Sekoia and announces it on the ingest's webhook
/// (listening on `port`), which must accept it. Returns its uuid.
async fn announce(
    client: &reqwest::Client,
    port: u16,
    sekoia: &FakeSekoia,
    short_id: &str,
) -> String {
    let uuid = uuid::Uuid::new_v4().to_string();
    sekoia.insert_alert(alerts::new_alert(&uuid, short_id, "rule", "title"));
    let resp = client
        .post(format!("http://127.0.0.1:{port}/v1/alerts"))
        .bearer_auth(WEBHOOK_TOKEN)
        .json(&serde_json::json!({"alert_uuid": uuid}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    uuid
}

/// Checks that `text` is Prometheus/OpenMetrics text: comments, samples `name{labels} value`,
/// and `# EOF`.
fn assert_prometheus_text(text: &str) {
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample: {line}"));
        assert!(value.parse::<f64>().is_ok(), "bad value in: {line}");
        let name = series.split('{').next().unwrap();
        assert!(
            name.starts_with("alertsync_")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad name in: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "bad labels: {line}"
            );
            assert!(!labels.contains("-4"), "no uuid in label values: {line}");
        }
    }
}

fn by_id(spans: &[ReceivedSpan]) -> HashMap<&str, &ReceivedSpan> {
    spans.iter().map(|s| (s.span_id.as_str(), s)).collect()
}

#[tokio::test]
async fn one_trace_per_alert_spans_every_service_and_reaches_the_destination() {
    let nats = NatsServer::start().unwrap();
    let sekoia = FakeSekoia::start(SEKOIA_KEY).await;
    let receiver = Receiver::start().await;
    let otlp = OtlpReceiver::start().await;
    // "soar" fails once with 503 then delivers; "strict" refuses everything with 400.
    receiver.script("/soar", vec![Reply::status(503)]);
    receiver.always("/strict", Reply::status(400).body("{\"error\":\"no\"}"));
    let (ports, _dir, procs) = start_services(
        &nats,
        &sekoia,
        &receiver,
        &(destination("soar", "/soar", MAIN_TEMPLATE)
            + &destination("strict", "/strict", MAIN_TEMPLATE)),
        Some(&otlp.endpoint()),
    )
    .await;
    let client = reqwest_client();

    let mut uuids = Vec::new();
    for i in 0..3 {
        uuids.push(announce(&client, ports[0], &sekoia, &format!("ALtrace00000{i}")).await);
    }
    assert!(
        receiver
            .wait_until(SOON, |r| {
                r.iter()
                    .filter(|q| q.path == "/soar" && q.status == 200)
                    .count()
                    == 3
                    && r.iter().filter(|q| q.path == "/strict").count() == 3
            })
            .await
    );

    // Metrics, while the services run.
    let metrics: Vec<String> = {
        let mut out = Vec::new();
        for port in ports {
            let (status, text) = get_text(&format!("http://127.0.0.1:{port}/metrics")).await;
            assert_eq!(status, 200);
            assert_prometheus_text(&text);
            out.push(text);
        }
        out
    };
    let forwarder_metrics = || async {
        get_text(&format!("http://127.0.0.1:{}/metrics", ports[2]))
            .await
            .1
    };
    assert_eq!(
        metric(
            &metrics[0],
            "alertsync_alerts_received_total{source=\"webhook\",kind=\"created\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            &metrics[0],
            "alertsync_alerts_published_total{source=\"webhook\",kind=\"created\"}"
        ),
        3.0
    );
    assert_eq!(metric(&metrics[1], "alertsync_alerts_enriched_total"), 3.0);
    assert!(
        metrics[1].contains("alertsync_consumer_pending{consumer="),
        "the enricher reports its lag: {}",
        metrics[1]
    );
    assert!(
        eventually(SOON, || async {
            let m = forwarder_metrics().await;
            metric(&m, "alertsync_deliveries_total{destination=\"soar\",outcome=\"delivered\",kind=\"created\"}") == 3.0
                && metric(&m, "alertsync_retries_total{stage=\"forward\",destination=\"soar\"}") == 1.0
                && metric(&m, "alertsync_dead_lettered_total{stage=\"forward\",destination=\"strict\",reason=\"http_4xx\"}") == 3.0
                && metric(&m, "alertsync_created_to_delivered_seconds_count{destination=\"soar\"}") == 3.0
                && m.contains("alertsync_consumer_pending{consumer=")
        })
        .await,
        "{}",
        forwarder_metrics().await
    );

    // Stop the services: spans are flushed on shutdown.
    let mut logs = Vec::new();
    for p in procs {
        logs.push(p.terminate().await);
    }
    let services = [
        "alertsync-ingest",
        "alertsync-enricher",
        "alertsync-forwarder",
    ];
    assert!(
        otlp.wait_until(SOON, |spans| {
            uuids.iter().all(|u| {
                let s: BTreeSet<&str> = spans
                    .iter()
                    .filter(|s| s.attributes.get("alert.uuid") == Some(u))
                    .map(|s| s.service.as_str())
                    .collect();
                services.iter().all(|svc| s.contains(svc))
            })
        })
        .await,
        "spans from all three services arrive"
    );
    let spans = otlp.spans();
    let ids = by_id(&spans);
    for uuid in &uuids {
        let mine: Vec<&ReceivedSpan> = spans
            .iter()
            .filter(|s| s.attributes.get("alert.uuid") == Some(uuid))
            .collect();
        let traces: BTreeSet<&str> = mine.iter().map(|s| s.trace_id.as_str()).collect();
        assert_eq!(traces.len(), 1, "one trace per alert: {mine:#?}");
        let trace = *traces.iter().next().unwrap();
        let in_trace: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == trace).collect();
        // Parent before child: every parent is a span of the same trace, and the chain runs
        // ingest → enricher → forwarder.
        for s in &in_trace {
            if !s.parent_span_id.is_empty() {
                let parent = ids
                    .get(s.parent_span_id.as_str())
                    .unwrap_or_else(|| panic!("parent of {} missing", s.name));
                assert_eq!(parent.trace_id, trace);
            }
        }
        let find = |service: &str, name: &str| -> Vec<&ReceivedSpan> {
            in_trace
                .iter()
                .copied()
                .filter(|s| s.service == service && s.name == name)
                .collect()
        };
        let webhook = find("alertsync-ingest", "webhook_receive");
        assert_eq!(webhook.len(), 1, "{in_trace:#?}");
        assert!(
            webhook[0].parent_span_id.is_empty(),
            "the webhook starts the trace"
        );
        let ingest_publish = find("alertsync-ingest", "publish");
        assert_eq!(ingest_publish[0].parent_span_id, webhook[0].span_id);
        let enrich = find("alertsync-enricher", "enrich_process");
        assert!(!enrich.is_empty());
        assert!(
            enrich
                .iter()
                .all(|s| s.parent_span_id == ingest_publish[0].span_id)
        );
        let get_alert = find("alertsync-enricher", "sekoia_get_alert");
        assert_eq!(
            get_alert[0]
                .attributes
                .get("http.response.status_code")
                .map(String::as_str),
            Some("200")
        );
        let enriched_publish = find("alertsync-enricher", "publish");
        let forward = find("alertsync-forwarder", "forward_process");
        assert!(
            forward
                .iter()
                .all(|s| s.parent_span_id == enriched_publish[0].span_id)
        );
        assert!(
            forward
                .iter()
                .all(|s| s.attributes.get("messaging.system").map(String::as_str) == Some("nats"))
        );
        // Every attempt is visible with its status, for both destinations.
        let delivers = find("alertsync-forwarder", "deliver");
        let statuses = |dest: &str| -> Vec<String> {
            delivers
                .iter()
                .filter(|s| {
                    s.attributes
                        .get("alertsync.destination")
                        .map(String::as_str)
                        == Some(dest)
                })
                .filter_map(|s| s.attributes.get("http.response.status_code").cloned())
                .collect()
        };
        assert_eq!(statuses("strict"), vec!["400".to_string()]);
        let soar = statuses("soar");
        assert!(
            soar == vec!["200".to_string()] || soar.len() == 2,
            "{soar:?}"
        );
        // The destination got this trace id in `traceparent`.
        for req in receiver.requests().iter().filter(|r| {
            r.json()
                .and_then(|j| j["alert_short_id"].as_str().map(str::to_string))
                == Some(uuid.clone())
        }) {
            let tp = req
                .header("traceparent")
                .expect("traceparent sent to the destination");
            assert_eq!(tp.split('-').nth(1), Some(trace), "{tp}");
        }
    }
    // The alert that met the 503 shows both attempts in its trace.
    let retried: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| {
            s.name == "deliver"
                && s.attributes
                    .get("http.response.status_code")
                    .map(String::as_str)
                    == Some("503")
        })
        .collect();
    assert_eq!(retried.len(), 1);
    let retried_trace = &retried[0].trace_id;
    let attempts: Vec<&String> = spans
        .iter()
        .filter(|s| &s.trace_id == retried_trace && s.name == "deliver")
        .filter(|s| {
            s.attributes
                .get("alertsync.destination")
                .map(String::as_str)
                == Some("soar")
        })
        .filter_map(|s| s.attributes.get("http.response.status_code"))
        .collect();
    assert_eq!(
        attempts.len(),
        2,
        "both attempts in one trace: {attempts:?}"
    );

    // JSON logs carry the trace id; nothing anywhere holds a secret.
    let enricher_log = &logs[1];
    let traced: Vec<serde_json::Value> = enricher_log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["message"] == "alert enriched")
        .collect();
    assert_eq!(traced.len(), 3, "{enricher_log}");
    let all_traces: BTreeSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    assert!(traced.iter().all(|v| {
        v["trace_id"]
            .as_str()
            .is_some_and(|t| all_traces.contains(t))
    }));
    for secret in SECRETS {
        for log in &logs {
            assert!(!log.contains(secret), "a secret reached a log");
        }
        for s in &spans {
            assert!(
                !s.attributes.values().any(|v| v.contains(secret))
                    && !s
                        .events
                        .iter()
                        .any(|(_, a)| a.values().any(|v| v.contains(secret))),
                "a secret reached span {}",
                s.name
            );
        }
    }
}

/// Without an exporter, spans carry only their ids (no OpenTelemetry spans are built), and
/// still: each alert has one trace id, in every service's log line about it and in the
/// `traceparent` the destination receives, and two alerts have two traces.
#[tokio::test]
async fn without_an_exporter_one_trace_id_still_follows_each_alert_through_the_logs_to_the_destination()
 {
    let nats = NatsServer::start().unwrap();
    let sekoia = FakeSekoia::start(SEKOIA_KEY).await;
    let receiver = Receiver::start().await;
    let (ports, _dir, procs) = start_services(
        &nats,
        &sekoia,
        &receiver,
        &destination("soar", "/soar", MAIN_TEMPLATE),
        None,
    )
    .await;
    let client = reqwest_client();
    let mut uuids = Vec::new();
    for i in 0..2 {
        uuids.push(announce(&client, ports[0], &sekoia, &format!("ALids0000{i}")).await);
    }
    assert!(receiver.wait_until(SOON, |r| r.len() == 2).await);
    let mut logs = Vec::new();
    for p in procs {
        logs.push(p.terminate().await);
    }

    let requests = receiver.requests();
    let mut traces = BTreeSet::new();
    for uuid in &uuids {
        let request = requests
            .iter()
            .find(|r| {
                r.json()
                    .and_then(|j| j["alert_short_id"].as_str().map(str::to_string))
                    .as_ref()
                    == Some(uuid)
            })
            .expect("the alert reached the destination");
        let traceparent = request
            .header("traceparent")
            .expect("traceparent sent to the destination");
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{traceparent}");
        assert_eq!((parts[0], parts[3]), ("00", "01"), "{traceparent}");
        let (trace, span) = (parts[1], parts[2]);
        assert!(
            trace.len() == 32 && trace != "0".repeat(32),
            "{traceparent}"
        );
        assert!(span.len() == 16 && span != "0".repeat(16), "{traceparent}");
        // Each service's line about this alert is in the same trace.
        for (log, message) in logs
            .iter()
            .zip(["alert published", "alert enriched", "delivered"])
        {
            let line: serde_json::Value = log
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .find(|v: &serde_json::Value| {
                    v["message"] == message && v["alert.uuid"] == uuid.as_str()
                })
                .unwrap_or_else(|| panic!("no {message:?} line for {uuid} in:\n{log}"));
            assert_eq!(line["trace_id"], trace, "{message}: {line}");
        }
        traces.insert(trace.to_string());
    }
    assert_eq!(traces.len(), 2, "one trace per alert");
}
