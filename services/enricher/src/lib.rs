//! The enricher service: consumes `AlertNotification`s (created, updated, commented), calls
//! Sekoia's Get Alert and publishes an `EnrichedAlert` with the alert as it is now (message id
//! `enriched:<uuid>`, `enriched:<uuid>:updated:<event id>` or
//! `enriched:<uuid>:comment:<comment uuid>`) on `<prefix>.alerts.enriched.<community>`.
//!
//! - [`handler`]: what happens to one message, as an [`alertsync_worker::Outcome`]: 200 →
//!   publish then ack; 404 → retry up to `enricher.not_found_attempts`; 429/5xx/timeouts →
//!   delayed NAK (raised to `Retry-After`), dead-letter when attempts run out; 401/403 → hold
//!   the message without burning attempts while the key is rejected; undecodable → poison.
//! - [`events`]: the alert's events (`[enricher.events]`, Sekoia's events search job), and a
//!   comment's author and date.
//! - [`filter`]: the Alert Created trigger's filters (`rule_filter`, `rule_names_filter`) and
//!   `sekoia.communities`, applied to the fetched alert: a filtered alert is acked and counted.
//! - [`writeback`]: the write-back stage (`[destinations.after_create]`, `/v1/sync`): comments
//!   and status changes applied to Sekoia alerts, behind a gate of its own; it runs here, with
//!   the Sekoia key, when some destination writes back.
//! - [`Enricher`]: builds (connects, ensures topology, binds health) and runs the service.

pub mod events;
pub mod filter;
pub mod handler;
pub mod writeback;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alertsync_config::Config;
use alertsync_gate::{GatePolicy, GateState, GateStatus};
use alertsync_nats::{Connection, Topology, connect, topology::ConsumerSpec};
use alertsync_proto::Stage;
use alertsync_sekoia::{SekoiaClient, key::KeyState};
use alertsync_telemetry::Metrics;
use alertsync_worker::{DeadLetters, StageRunner, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

/// The readiness check (and the gate's name in logs) of the circuit to Sekoia's API.
const SEKOIA_GATE: &str = "sekoia_api";

/// The readiness detail of the circuit to Sekoia.
/// Gate (and readiness check) of the write-back stage's calls to Sekoia.
const WRITE_GATE: &str = "sekoia_write";

fn describe_write_gate(status: &GateStatus) -> String {
    match status.state {
        GateState::Open => "writes to Sekoia go through".into(),
        _ => describe_gate(status).replace("Get Alert", "Sekoia write-back"),
    }
}

fn describe_gate(status: &GateStatus) -> String {
    let what = match status.state {
        GateState::Open => return "Get Alert answers".into(),
        GateState::CircuitOpen => "circuit open: Get Alert keeps failing",
        GateState::Throttled => "throttled: Sekoia asked us to wait",
        GateState::Paused => "paused: Sekoia rejects the API key",
    };
    let next = status
        .next_try_in
        .map(|d| format!("; next try in {}s", d.as_secs()))
        .unwrap_or_default();
    format!(
        "{what} ({}){next}; alerts wait in the stream",
        status.reason
    )
}

/// The enricher stage: [`Enricher::build`] puts together the [`StageRunner`] that runs it.
pub struct Enricher;

/// How often the enricher asks since when the created stream holds every alert published to
/// it: a purge or a deletion of that stream is noticed within this time.
const CREATED_SINCE_EVERY: Duration = Duration::from_secs(5);

/// Keeps `since` at the time from which the created stream holds every alert (epoch seconds,
/// rounded up; 0 while unknown), until `shutdown`.
async fn watch_created_since(
    topology: Topology,
    since: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    // `build_on` read it once already, before the worker started.
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CREATED_SINCE_EVERY) => {}
        }
        update_created_since(&topology, &since).await;
    }
}

async fn update_created_since(topology: &Topology, since: &AtomicU64) {
    let secs = match topology.created_stream_complete_since().await {
        Ok(Some(t)) => t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
        Ok(None) => 0,
        Err(e) => {
            // Unknown: no alert is marked as its only enrichment until the next answer.
            tracing::debug!(error = %e, "cannot read the created stream's state");
            0
        }
    };
    since.store(secs, Ordering::Relaxed);
}

impl Enricher {
    /// Connects to NATS, ensures the topology and the `enricher` consumer, binds
    /// `enricher.listen`, and starts checking the Sekoia key.
    pub async fn build(cfg: &Config) -> anyhow::Result<StageRunner> {
        cfg.enricher_settings()?;
        Self::build_on(cfg, connect(&cfg.nats, "alertsync-enricher").await?).await
    }

    /// [`Enricher::build`] on an existing NATS connection (shared by the stages of one
    /// process).
    pub async fn build_on(cfg: &Config, (client, js): Connection) -> anyhow::Result<StageRunner> {
        let settings = cfg.enricher_settings()?;
        let (sekoia_cfg, e) = (settings.sekoia, settings.enricher);
        let topology = Topology::new(js.clone(), &cfg.nats);
        topology.ensure_streams().await?;
        let created_since = Arc::new(AtomicU64::new(0));
        update_created_since(&topology, &created_since).await;
        let subjects = topology.subjects().clone();
        let mut ack_wait =
            sekoia_cfg.timeout.get() + cfg.nats.request_timeout.get() + Duration::from_secs(30);
        if let Some(events) = &e.events {
            // The events search runs inside the same delivery.
            ack_wait += events.timeout.get();
        }
        let consumer = topology
            .ensure_consumer_with_filters(
                &ConsumerSpec {
                    stream: subjects.created_stream(),
                    name: subjects.enricher_consumer(),
                    filter: subjects.created_all(),
                    // Longer than one Get Alert call (and events search) plus the publish; held
                    // messages send progress.
                    ack_wait,
                    max_ack_pending: 1000.max(e.concurrency as i64 * 8),
                },
                // Updates and comments are enriched like creations.
                &[subjects.updated_all(), subjects.comment_all()],
            )
            .await?;
        let metrics = Metrics::new();
        let mut runner = StageRunner::bind(
            "enricher",
            e.listen,
            "enricher.listen",
            client,
            metrics.clone(),
        )
        .await?;
        let health = runner.health();
        health.set("topology", true, "streams and consumer ensured");
        let sekoia = SekoiaClient::new(sekoia_cfg)?;
        let key = KeyState::new(health.clone());
        let policy = GatePolicy {
            probe_base: e.probe_base_delay.get(),
            probe_max: e.probe_max_delay.get(),
            circuit_failures: e.circuit_failures,
            // A rejected key is retried at the key check's own pace, and at once when the key
            // check sees it accepted again.
            paused_probe_every: Some(sekoia_cfg.rejected_key_retry.get()),
        };
        let m = metrics.clone();
        let gate = runner.gate(
            SEKOIA_GATE,
            policy,
            SEKOIA_GATE,
            describe_gate,
            move |open| m.sekoia_circuit_open(!open),
        );
        let probe = gate.clone();
        key.on_accepted(move || probe.probe_now());
        let handler = Arc::new(handler::EnrichHandler::new(
            handler::Parts {
                js: js.clone(),
                subjects: subjects.clone(),
                sekoia: sekoia.clone(),
                key: key.clone(),
                filter: filter::TriggerFilter::new(e, &sekoia_cfg.communities),
                metrics: metrics.clone(),
                gate: gate.clone(),
                created_stream_since: created_since.clone(),
                events: e.events.clone(),
            },
            e,
        ));
        // Both of this service's workers dead-letter to their stage's subject and hold while
        // their gate is closed.
        let worker_for = |consumer, config: WorkerConfig, stage: Stage, gate| {
            let dead_letters = DeadLetters::new(
                topology.context().clone(),
                subjects.dead_letter(stage, None),
                stage,
                None,
                cfg.redactor.clone(),
                metrics.clone(),
            );
            Worker::new(consumer, config, dead_letters)
                .with_gate(gate)
                .with_metrics(metrics.clone())
        };
        let config = WorkerConfig {
            name: "enricher".into(),
            concurrency: e.concurrency,
            span_name: "enrich_process",
        };
        runner.worker(worker_for(consumer, config, Stage::Enrich, gate), handler);
        let writes_back = cfg
            .destinations
            .iter()
            .any(|d| d.after_create.is_some() || d.sync_back.is_some());
        if writes_back {
            let consumer = topology
                .ensure_consumer(&ConsumerSpec {
                    stream: subjects.writeback_stream(),
                    name: subjects.writeback_consumer(),
                    filter: subjects.writeback_all(),
                    // Up to five calls (identity, comment, Get Alert, workflow, PATCH).
                    ack_wait: sekoia_cfg.timeout.get() * 5
                        + cfg.nats.request_timeout.get() * 4
                        + Duration::from_secs(30),
                    max_ack_pending: 1000,
                })
                .await?;
            let m = metrics.clone();
            let write_gate = runner.gate(
                WRITE_GATE,
                policy,
                WRITE_GATE,
                describe_write_gate,
                move |open| m.sekoia_circuit_open(!open),
            );
            let probe = write_gate.clone();
            key.on_accepted(move || probe.probe_now());
            let records = topology
                .ensure_delivery_records(cfg.forwarder.delivery_record_max_age.get())
                .await?;
            let handler = Arc::new(writeback::WriteBackHandler::new(
                sekoia.clone(),
                write_gate.clone(),
                alertsync_worker::CallPolicy {
                    retry: alertsync_http::RetryPolicy {
                        base: e.retry.base_delay.get(),
                        max: e.retry.max_delay.get(),
                        max_retry_after: e.retry.max_retry_after.get(),
                    },
                    max_attempts: e.retry.max_attempts,
                    not_yet_attempts: e.not_found_attempts,
                },
                records,
                metrics.clone(),
            ));
            let config = WorkerConfig {
                name: "writeback".into(),
                concurrency: e.concurrency.min(16),
                span_name: "writeback_process",
            };
            let worker = worker_for(consumer, config, Stage::WriteBack, write_gate);
            runner.worker(worker, handler);
        }
        let (interval, rejected_retry) = (
            sekoia_cfg.key_check_interval.get(),
            sekoia_cfg.rejected_key_retry.get(),
        );
        runner.task(move |stop| key.watch(sekoia, interval, rejected_retry, stop));
        runner.task(move |stop| watch_created_since(topology, created_since, stop));
        Ok(runner)
    }
}

#[cfg(test)]
mod tests {
    use alertsync_config::{Config, Stage};

    #[test]
    fn circuit_settings_are_checked_naming_the_field() {
        let text = include_str!("../../../alertsync.example.toml").replace(
            "listen = \"0.0.0.0:8081\"",
            "listen = \"0.0.0.0:8081\"\nprobe_base_delay = \"10m\"\ncircuit_failures = 0",
        );
        let err = Config::parse(&text, &|k| Some(format!("{k}-value")), &[Stage::Enricher])
            .unwrap_err()
            .to_string();
        assert!(err.contains("enricher.probe_base_delay"), "{err}");
        assert!(err.contains("enricher.circuit_failures"), "{err}");
    }

    #[test]
    fn the_gate_state_reads_as_what_the_enricher_is_doing() {
        use alertsync_gate::{GateState, GateStatus};
        let open = GateStatus::default();
        assert_eq!(super::describe_gate(&open), "Get Alert answers");
        let down = GateStatus {
            state: GateState::CircuitOpen,
            reason: "503 Service Unavailable".into(),
            last_status: Some(503),
            next_try_in: Some(std::time::Duration::from_secs(5)),
            ..open
        };
        let text = super::describe_gate(&down);
        assert!(
            text.starts_with("circuit open: Get Alert keeps failing (503"),
            "{text}"
        );
        assert!(text.contains("next try in 5s"), "{text}");
    }
}
