//! The ingest service: receives alert-created events and publishes each as an `AlertCreated`
//! on `<prefix>.alerts.created.<community>`, deduplicated by alert uuid (`Nats-Msg-Id`).
//!
//! - [`events`]: parses the three accepted payloads (LiveAPI v2 notification, `{"alert_uuid"}`,
//!   the Alert Created trigger output) into an [`events::AlertEvent`], with a reason on error.
//! - [`webhook`]: `POST /v1/alerts`: bearer token, 64 KiB limit, answers 202 only once
//!   JetStream has stored the event.
//! - [`Ingest`]: builds (connects, ensures streams, binds) and runs the service.

pub mod events;
pub mod webhook;

use std::net::SocketAddr;

use alertsync_config::Config;
use alertsync_jetstream::{Subjects, Topology};
use alertsync_runtime::Health;
use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A built ingest service, ready to run.
pub struct Ingest {
    listener: TcpListener,
    router: axum::Router,
    health: Health,
    client: alertsync_jetstream::async_nats::Client,
}

impl Ingest {
    /// Connects to NATS, ensures the streams and binds `ingest.listen`.
    pub async fn build(cfg: &Config) -> anyhow::Result<Self> {
        let ingest = cfg
            .ingest
            .as_ref()
            .context("the [ingest] section is missing")?;
        let (client, js) = alertsync_jetstream::connect(&cfg.nats, "alertsync-ingest").await?;
        let topology = Topology::new(js.clone(), &cfg.nats);
        topology.ensure_streams().await?;
        let health = Health::with_nats(client.clone());
        health.set("topology", true, "streams ensured");
        let listener = TcpListener::bind(ingest.listen)
            .await
            .with_context(|| format!("ingest.listen: cannot bind {}", ingest.listen))?;
        let state = webhook::State {
            js,
            client: client.clone(),
            subjects: Subjects::new(&cfg.nats.prefix),
            token: ingest.webhook_token.clone(),
        };
        let router = webhook::router(state).merge(alertsync_runtime::health_router(health.clone()));
        Ok(Self {
            listener,
            router,
            health,
            client,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The service's readiness.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Serves until `shutdown`, then flushes NATS.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "ingest listening");
        alertsync_runtime::serve(self.listener, self.router, shutdown).await;
        self.client.flush().await.ok();
        tracing::info!("ingest stopped");
        Ok(())
    }
}
