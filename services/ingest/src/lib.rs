//! The ingest service: receives alert-created events from three sources and publishes each
//! alert once as an `AlertCreated` on `<prefix>.alerts.created.<alert uuid>`.
//!
//! - [`webhook`]: `POST /v1/alerts`: bearer token, 64 KiB limit, answers 202 only once
//!   JetStream has stored the event.
//! - [`live`]: the Sekoia LiveAPI websocket (low latency), with jittered reconnects.
//! - [`poller`]: the catch-up poller over the alert list, from a cursor kept in NATS KV
//!   (completeness: nothing created while the socket was down is missed).
//! - [`publisher`]: the one way in: community filter, then a publish that the server refuses
//!   when the alert's subject already holds it (dedup across sources, replicas and restarts for
//!   as long as the stream keeps alerts).
//! - [`events`]: parses the accepted payloads into an [`events::AlertEvent`], with a reason on
//!   error.
//! - [`Ingest`]: builds (connects, ensures streams and buckets, binds) and runs the service.

pub mod events;
pub mod live;
pub mod poller;
pub mod publisher;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;

use alertsync_config::Config;
use alertsync_nats::{Connection, Topology, connect};
use alertsync_runtime::Health;
use alertsync_sekoia::{SekoiaClient, key::KeyState};
use alertsync_telemetry::Metrics;
use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The sources that call Sekoia, when configured.
struct SekoiaSources {
    key: KeyState,
    client: SekoiaClient,
    key_check: (std::time::Duration, std::time::Duration),
    live: Option<live::LiveSource>,
    poller: Option<poller::Poller>,
}

/// A built ingest service, ready to run.
pub struct Ingest {
    listener: TcpListener,
    router: axum::Router,
    limits: alertsync_runtime::ListenerLimits,
    health: Health,
    client: alertsync_nats::async_nats::Client,
    sources: Option<SekoiaSources>,
}

impl Ingest {
    /// Connects to NATS, ensures the streams and buckets, binds `ingest.listen`, and prepares
    /// the live socket and the poller when they are on.
    pub async fn build(cfg: &Config) -> anyhow::Result<Self> {
        cfg.ingest_settings()?;
        Self::build_on(cfg, connect(&cfg.nats, "alertsync-ingest").await?).await
    }

    /// [`Ingest::build`] on an existing NATS connection (shared by the stages of one process).
    pub async fn build_on(cfg: &Config, (client, js): Connection) -> anyhow::Result<Self> {
        let settings = cfg.ingest_settings()?;
        let ingest = settings.ingest;
        let topology = Topology::new(js.clone(), &cfg.nats);
        topology.ensure_streams().await?;
        let health = Health::with_nats(client.clone());
        health.set("topology", true, "streams and buckets ensured");
        let metrics = Metrics::new();
        let communities = settings
            .communities
            .iter()
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let publisher = Arc::new(publisher::Publisher::new(
            js.clone(),
            topology.subjects().clone(),
            communities,
            metrics.clone(),
        ));
        let sources = match settings.sekoia {
            Some(sekoia_cfg) => {
                let client = SekoiaClient::new(sekoia_cfg)?;
                let key = KeyState::new(health.clone());
                let live = ingest.live.then(|| live::LiveSource {
                    url: sekoia_cfg
                        .live_url
                        .clone()
                        .unwrap_or_else(|| alertsync_sekoia::live_url(&sekoia_cfg.base_url)),
                    api_key: sekoia_cfg.api_key.clone(),
                    publisher: publisher.clone(),
                    health: health.clone(),
                    key: key.clone(),
                    metrics: metrics.clone(),
                    idle_timeout: ingest.live_idle_timeout.get(),
                    reconnect_max: ingest.live_reconnect_max_delay.get(),
                });
                let poller = if ingest.poll_interval.get().is_zero() {
                    None
                } else {
                    Some(poller::Poller {
                        sekoia: client.clone(),
                        publisher: publisher.clone(),
                        state: topology.ensure_kv("INGEST", None).await?,
                        interval: ingest.poll_interval.get(),
                        lookback: ingest.poll_lookback.get(),
                        communities: sekoia_cfg.communities.clone(),
                        key: key.clone(),
                        rejected_retry: sekoia_cfg.rejected_key_retry.get(),
                    })
                };
                Some(SekoiaSources {
                    key,
                    client,
                    key_check: (
                        sekoia_cfg.key_check_interval.get(),
                        sekoia_cfg.rejected_key_retry.get(),
                    ),
                    live,
                    poller,
                })
            }
            None => None,
        };
        let listener = TcpListener::bind(ingest.listen)
            .await
            .with_context(|| format!("ingest.listen: cannot bind {}", ingest.listen))?;
        let state = webhook::State {
            publisher,
            client: client.clone(),
            token: ingest.webhook_token.clone(),
        };
        let router = webhook::router(state)
            .merge(alertsync_runtime::health_router(health.clone()))
            .merge(alertsync_telemetry::metrics_router(metrics));
        Ok(Self {
            listener,
            router,
            limits: webhook::listener_limits(ingest),
            health,
            client,
            sources,
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

    /// Serves and listens until `shutdown`, then flushes NATS.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "ingest listening");
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(s) = self.sources {
            tasks.spawn(
                s.key
                    .watch(s.client, s.key_check.0, s.key_check.1, shutdown.clone()),
            );
            if let Some(live) = s.live {
                tasks.spawn(live.run(shutdown.clone()));
            }
            if let Some(poller) = s.poller {
                tasks.spawn(poller.run(shutdown.clone()));
            }
        }
        alertsync_runtime::serve_with_limits(self.listener, self.router, self.limits, shutdown)
            .await;
        while tasks.join_next().await.is_some() {}
        alertsync_nats::connect::flush_before_exit(&self.client, "ingest").await;
        tracing::info!("ingest stopped");
        Ok(())
    }
}
