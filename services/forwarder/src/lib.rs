//! The forwarder service: delivers each `EnrichedAlert` to every configured destination.
//!
//! - [`destination`]: a compiled destination (templates, client, retry policy), rendering and
//!   one delivery attempt.
//! - [`handler`]: one message for one destination as an [`alertsync_worker::Outcome`]:
//!   already delivered → ack without sending; 2xx → record, then ack; 401/403 → pause the
//!   destination; 429 → hold until `Retry-After`; 408/5xx (not 501)/transport errors →
//!   delayed NAK, or hold once the circuit is open; other 4xx (413 explained), render errors
//!   or exhausted attempts → dead-letter on `<prefix>.dlq.forward.<destination>`;
//!   undecodable → poison.
//! - [`records`]: the delivery records (NATS KV) that make redeliveries harmless.
//! - [`filter`]: per-destination filters (urgency, entity, alert type, rule names, community).
//! - [`Forwarder`]: one durable consumer, one [`Gate`] and one worker loop per destination,
//!   so a dead destination never holds back another. Each destination's consumer also reads
//!   `<prefix>.replay.forward.<destination>` (DLQ replays meant for it alone), and its gate
//!   is the readiness check `destination.<name>`.

pub mod destination;
pub mod filter;
pub mod handler;
pub mod later;
pub mod records;
pub mod state;
pub mod turn;

use std::sync::Arc;
use std::time::Duration;

use alertsync_config::Config;
use alertsync_gate::{GatePolicy, GateState, GateStatus};
use alertsync_nats::{Connection, Topology, connect, topology::ConsumerSpec};
use alertsync_proto::Stage;
use alertsync_worker::{DeadLetters, StageRunner, Worker, WorkerConfig};

pub use destination::Destination;

/// The forwarder stage: [`Forwarder::build`] puts together the [`StageRunner`] that runs it.
pub struct Forwarder;

/// Readiness check name of a destination.
pub fn destination_check(name: &str) -> String {
    format!("destination.{name}")
}

/// The readiness message of a destination whose gate is `status`: which state, since when,
/// why, and when it is tried again.
pub fn describe_gate(status: &GateStatus) -> String {
    if status.state == GateState::Open {
        return "delivering".into();
    }
    let since = status
        .since
        .map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
        .unwrap_or_default();
    let next = status
        .next_try_in
        .map(|d| format!("; next try in {}s", d.as_secs()))
        .unwrap_or_default();
    let what = match status.state {
        GateState::Paused => "paused: the destination rejects our credentials",
        GateState::CircuitOpen => "circuit open: the destination keeps failing",
        GateState::Throttled => "throttled: the destination asked us to wait",
        GateState::Open => "open",
    };
    format!(
        "{what} since {since} ({}){next}; alerts wait in the stream",
        status.reason
    )
}

/// The template engine for the destinations of `cfg`: their templates read the `${VAR}`
/// values of the config as data (`alertsync_config::TemplateValues`).
pub fn template_engine(cfg: &Config) -> alertsync_template::Engine {
    alertsync_template::Engine::new().with_values(
        alertsync_config::TEMPLATE_VALUES,
        cfg.template_values.to_map(),
    )
}

/// Compiles every destination of `cfg` (template errors name the destination and field).
pub fn compile_destinations(cfg: &Config) -> anyhow::Result<Vec<Destination>> {
    let engine = template_engine(cfg);
    cfg.destinations
        .iter()
        .map(|d| Destination::new(d, &engine, cfg.redactor.clone()).map_err(Into::into))
        .collect()
}

impl Forwarder {
    /// Compiles the templates, connects to NATS, ensures the topology and one consumer per
    /// destination, and binds `forwarder.listen`.
    pub async fn build(cfg: &Config) -> anyhow::Result<StageRunner> {
        // Templates first: a bad one fails before anything connects.
        let destinations = compile_destinations(cfg)?;
        let nats = connect(&cfg.nats, "alertsync-forwarder").await?;
        Self::build_on(cfg, destinations, nats).await
    }

    /// [`Forwarder::build`] with destinations already compiled ([`compile_destinations`]),
    /// on an existing NATS connection (shared by the stages of one process).
    pub async fn build_on(
        cfg: &Config,
        destinations: Vec<Destination>,
        (client, js): Connection,
    ) -> anyhow::Result<StageRunner> {
        let topology = Topology::new(js.clone(), &cfg.nats);
        topology.ensure_streams().await?;
        let subjects = topology.subjects().clone();
        let metrics = alertsync_telemetry::Metrics::new();
        let store = topology
            .ensure_delivery_records(cfg.forwarder.delivery_record_max_age.get())
            .await?;
        let mut runner = StageRunner::bind(
            "forwarder",
            cfg.forwarder.listen,
            "forwarder.listen",
            client,
            metrics.clone(),
        )
        .await?;
        let policy = GatePolicy {
            probe_base: cfg.forwarder.probe_base_delay.get(),
            probe_max: cfg.forwarder.probe_max_delay.get(),
            circuit_failures: cfg.forwarder.circuit_failures,
            paused_probe_every: None,
        };
        for (dest, dcfg) in destinations.into_iter().zip(&cfg.destinations) {
            let consumer = topology
                .ensure_consumer_with_filters(
                    &ConsumerSpec {
                        stream: subjects.enriched_stream(),
                        name: subjects.destination_consumer(&dest.name),
                        filter: subjects.enriched_all(),
                        // One attempt per delivery: the record read, the request, the record
                        // write and the ack, plus margin. Held messages send progress acks.
                        ack_wait: dcfg.timeout.get()
                            + 2 * cfg.nats.request_timeout.get()
                            + Duration::from_secs(10),
                        max_ack_pending: 1000.max(dcfg.concurrency as i64 * 8),
                    },
                    &[subjects.replay_forward(&dest.name)],
                )
                .await?;
            let (m, name) = (metrics.clone(), dest.name.clone());
            let gate = runner.gate(
                &dest.name,
                policy,
                &destination_check(&dest.name),
                describe_gate,
                move |open| m.circuit_state(&name, i64::from(!open)),
            );
            let records = Arc::new(records::DeliveryRecords::new(store.clone(), &dest.name));
            let dead_letters = DeadLetters::new(
                js.clone(),
                subjects.dead_letter(Stage::Forward, Some(&dest.name)),
                Stage::Forward,
                Some(&dest.name),
                cfg.redactor.clone(),
                metrics.clone(),
            );
            let worker = Worker::new(
                consumer,
                WorkerConfig {
                    name: format!("forward {}", dest.name),
                    concurrency: dcfg.concurrency,
                    span_name: "forward_process",
                },
                dead_letters,
            )
            .with_gate(gate.clone())
            .with_metrics(metrics.clone());
            let mut handler = handler::ForwardHandler::new(dest, gate, records, metrics.clone());
            if handler.follows_lifecycle() {
                handler = handler.with_lifecycle(later::Lifecycle::new(
                    js.clone(),
                    js.get_stream(subjects.created_stream()).await?,
                    subjects.clone(),
                    cfg.forwarder.creation_wait.get(),
                ));
            }
            runner.worker(worker, Arc::new(handler));
        }
        runner
            .health()
            .set("topology", true, "streams and consumers ensured");
        Ok(runner)
    }
}

#[cfg(test)]
mod tests {
    use alertsync_config::{Config, Stage};

    #[test]
    fn the_example_config_compiles_every_destination() {
        let text = include_str!("../../../alertsync.example.toml");
        let cfg = Config::parse(text, &|k| Some(format!("{k}-value")), &Stage::ALL).unwrap();
        let dests = super::compile_destinations(&cfg).unwrap();
        assert_eq!(dests.len(), 2);
    }

    #[test]
    fn a_template_syntax_error_names_the_destination_and_field() {
        let text = include_str!("../../../alertsync.example.toml")
            .replace("\"This is a description\"", "\"{% if %}\"");
        let cfg = Config::parse(&text, &|k| Some(format!("{k}-value")), &Stage::ALL).unwrap();
        let err = super::compile_destinations(&cfg).err().unwrap().to_string();
        assert!(err.starts_with("destinations[soar].json:"), "{err}");
    }

    #[test]
    fn delivery_records_must_outlive_the_alerts_and_probe_settings_are_checked() {
        let text = include_str!("../../../alertsync.example.toml").replace(
            "listen = \"0.0.0.0:8082\"",
            "listen = \"0.0.0.0:8082\"\ndelivery_record_max_age = \"1d\"\n\
             probe_base_delay = \"10m\"\ncircuit_failures = 0",
        );
        let err = Config::parse(&text, &|k| Some(format!("{k}-value")), &[Stage::Forwarder])
            .unwrap_err()
            .to_string();
        assert!(err.contains("forwarder.delivery_record_max_age"), "{err}");
        assert!(err.contains("forwarder.probe_base_delay"), "{err}");
        assert!(err.contains("forwarder.circuit_failures"), "{err}");
    }

    #[test]
    fn readiness_says_which_state_since_when_and_why() {
        use alertsync_gate::{GateState, GateStatus};
        use std::time::{Duration, UNIX_EPOCH};
        let open = GateStatus::default();
        assert_eq!(super::describe_gate(&open), "delivering");
        let paused = GateStatus {
            state: GateState::Paused,
            since: Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
            reason: "destination answered 401 Unauthorized".into(),
            last_status: Some(401),
            next_try_in: Some(Duration::from_secs(8)),
            failed_probes: 2,
        };
        assert_eq!(
            super::describe_gate(&paused),
            "paused: the destination rejects our credentials since 2027-01-15T08:00:00Z \
             (destination answered 401 Unauthorized); next try in 8s; alerts wait in the stream"
        );
    }
}
