//! The forwarder service: delivers each `EnrichedAlert` to every configured destination.
//!
//! - [`destination`]: a compiled destination (templates, client, retry policy), rendering and
//!   one delivery attempt.
//! - [`handler`]: one message for one destination as an [`alertsync_jetstream::Outcome`]:
//!   2xx → ack; 408/429/5xx (not 501)/transport errors → delayed NAK (raised to `Retry-After`);
//!   other 4xx, render errors or exhausted attempts → dead-letter on
//!   `<prefix>.dlq.forward.<destination>`; undecodable → poison.
//! - [`Forwarder`]: one durable consumer and one worker loop per destination, so a dead
//!   destination never holds back another.

pub mod destination;
pub mod handler;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alertsync_config::Config;
use alertsync_jetstream::{
    Topology, Worker, WorkerConfig, dead_letter::DeadLetters, subjects::STAGE_FORWARD,
    topology::ConsumerSpec,
};
use alertsync_runtime::Health;
use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use destination::Destination;

/// A built forwarder, ready to run.
pub struct Forwarder {
    listener: TcpListener,
    health: Health,
    workers: Vec<(Worker, Arc<handler::ForwardHandler>)>,
    client: alertsync_jetstream::async_nats::Client,
}

/// Compiles every destination of `cfg` (template errors name the destination and field).
pub fn compile_destinations(cfg: &Config) -> anyhow::Result<Vec<Destination>> {
    let engine = alertsync_template::Engine::new();
    cfg.destinations
        .iter()
        .map(|d| Destination::new(d, &engine, cfg.redactor.clone()).map_err(Into::into))
        .collect()
}

impl Forwarder {
    /// Compiles the templates, connects to NATS, ensures the topology and one consumer per
    /// destination, and binds `forwarder.listen`.
    pub async fn build(cfg: &Config) -> anyhow::Result<Self> {
        let destinations = compile_destinations(cfg)?;
        let (client, js) = alertsync_jetstream::connect(&cfg.nats, "alertsync-forwarder").await?;
        let topology = Topology::new(js.clone(), &cfg.nats);
        topology.ensure_streams().await?;
        let subjects = topology.subjects().clone();
        let mut workers = Vec::new();
        for (dest, dcfg) in destinations.into_iter().zip(&cfg.destinations) {
            let consumer = topology
                .ensure_consumer(&ConsumerSpec {
                    stream: subjects.enriched_stream(),
                    name: subjects.destination_consumer(&dest.name),
                    filter: subjects.enriched_all(),
                    // One attempt at a time per message: its timeout plus margin.
                    ack_wait: dcfg.timeout.get() + Duration::from_secs(30),
                    max_ack_pending: 1000.max(dcfg.concurrency as i64 * 8),
                })
                .await?;
            let dead_letters = DeadLetters::new(
                js.clone(),
                subjects.dead_letter(STAGE_FORWARD, Some(&dest.name)),
                STAGE_FORWARD,
                Some(&dest.name),
                cfg.redactor.clone(),
            );
            let worker = Worker::new(
                consumer,
                WorkerConfig {
                    name: format!("forward {}", dest.name),
                    concurrency: dcfg.concurrency,
                },
                dead_letters,
            );
            workers.push((worker, Arc::new(handler::ForwardHandler::new(dest))));
        }
        let health = Health::with_nats(client.clone());
        health.set("topology", true, "streams and consumers ensured");
        let listen = cfg.forwarder.listen;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("forwarder.listen: cannot bind {listen}"))?;
        Ok(Self {
            listener,
            health,
            workers,
            client,
        })
    }

    /// The bound health address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The service's readiness.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Runs until `shutdown`: in-flight deliveries finish, then NATS is flushed.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), destinations = self.workers.len(), "forwarder running");
        let http = tokio::spawn(alertsync_runtime::serve(
            self.listener,
            alertsync_runtime::health_router(self.health.clone()),
            shutdown.clone(),
        ));
        let loops: Vec<_> = self
            .workers
            .into_iter()
            .map(|(worker, handler)| tokio::spawn(worker.run(handler, shutdown.clone())))
            .collect();
        for l in loops {
            let _ = l.await;
        }
        let _ = http.await;
        self.client.flush().await.ok();
        tracing::info!("forwarder stopped");
        Ok(())
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
}
