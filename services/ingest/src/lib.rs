//! The ingest service: receives notifications about alerts (created, updated, commented) from
//! three sources and publishes each once as an `AlertNotification`, on
//! `<prefix>.alerts.created.<alert uuid>`, `…updated.<alert uuid>.<event id>` or
//! `…comment.<alert uuid>.<comment uuid>`. It takes the kinds of `ingest.events` (by default
//! creations plus the kinds some destination has a request for).
//!
//! - [`webhook`]: `POST /v1/alerts`: bearer token, 64 KiB limit, answers 202 only once
//!   JetStream has stored the event.
//! - [`live`]: the Sekoia LiveAPI websocket (low latency), with jittered reconnects.
//! - [`poller`]: the catch-up poller over the alert list, from a cursor kept in NATS KV
//!   (completeness: nothing created while the socket was down is missed).
//! - [`publisher`]: the one way in: community filter, then a publish that the server refuses
//!   when the alert's subject already holds it (dedup across sources, replicas and restarts for
//!   as long as the stream keeps alerts).
//! - [`sync`]: `POST /v1/sync/<destination>`: a tool's notification (close, comment) stored
//!   as a write-back to the Sekoia alert, for alerts delivered to that tool only.
//! - [`events`]: parses the accepted payloads into an [`events::AlertEvent`], with a reason on
//!   error.
//! - [`Ingest`]: builds (connects, ensures streams and buckets, binds) and runs the service.

pub mod events;
pub mod live;
pub mod poller;
pub mod publisher;
pub mod sync;
pub mod webhook;

use std::sync::Arc;

use alertsync_config::{Config, EventKindName};
use alertsync_nats::{Connection, Topology, connect};
use alertsync_proto::v1;
use alertsync_sekoia::{SekoiaClient, key::KeyState};
use alertsync_telemetry::Metrics;
use alertsync_worker::StageRunner;

/// The ingest stage: [`Ingest::build`] puts together the [`StageRunner`] that runs it.
pub struct Ingest;

impl Ingest {
    /// Connects to NATS, ensures the streams and buckets, binds `ingest.listen`, and prepares
    /// the live socket and the poller when they are on.
    pub async fn build(cfg: &Config) -> anyhow::Result<StageRunner> {
        cfg.ingest_settings()?;
        Self::build_on(cfg, connect(&cfg.nats, "alertsync-ingest").await?).await
    }

    /// [`Ingest::build`] on an existing NATS connection (shared by the stages of one process).
    pub async fn build_on(cfg: &Config, (client, js): Connection) -> anyhow::Result<StageRunner> {
        let settings = cfg.ingest_settings()?;
        let ingest = settings.ingest;
        let topology = Topology::new(js.clone(), &cfg.nats);
        topology.ensure_streams().await?;
        let metrics = Metrics::new();
        let mut runner = StageRunner::bind(
            "ingest",
            ingest.listen,
            "ingest.listen",
            client.clone(),
            metrics.clone(),
        )
        .await?;
        let health = runner.health();
        health.set("topology", true, "streams and buckets ensured");
        let communities = settings
            .communities
            .iter()
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let kinds = cfg
            .ingest_kinds()
            .into_iter()
            .map(|k| match k {
                EventKindName::Created => v1::EventKind::Created,
                EventKindName::Updated => v1::EventKind::Updated,
                EventKindName::Comment => v1::EventKind::Comment,
            })
            .collect();
        let publisher = Arc::new(publisher::Publisher::new(
            js.clone(),
            topology.subjects().clone(),
            communities,
            kinds,
            metrics.clone(),
        ));
        if let Some(sekoia_cfg) = settings.sekoia {
            let sekoia = SekoiaClient::new(sekoia_cfg)?;
            let key = KeyState::new(health.clone());
            if ingest.live {
                let live = live::LiveSource {
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
                };
                runner.task(move |stop| live.run(stop));
            }
            if !ingest.poll_interval.get().is_zero() {
                let poller = poller::Poller {
                    sekoia: sekoia.clone(),
                    publisher: publisher.clone(),
                    state: topology.ensure_kv("INGEST", None).await?,
                    interval: ingest.poll_interval.get(),
                    lookback: ingest.poll_lookback.get(),
                    communities: sekoia_cfg.communities.clone(),
                    key: key.clone(),
                    rejected_retry: sekoia_cfg.rejected_key_retry.get(),
                };
                runner.task(move |stop| poller.run(stop));
            }
            let (interval, rejected_retry) = (
                sekoia_cfg.key_check_interval.get(),
                sekoia_cfg.rejected_key_retry.get(),
            );
            runner.task(move |stop| key.watch(sekoia, interval, rejected_retry, stop));
        }
        let state = webhook::State {
            publisher,
            client: client.clone(),
            token: ingest.webhook_token.clone(),
        };
        let mut router = webhook::router(state);
        if cfg.destinations.iter().any(|d| d.sync_back.is_some()) {
            let records = topology
                .ensure_delivery_records(cfg.forwarder.delivery_record_max_age.get())
                .await?;
            let sync = sync::SyncState::new(
                cfg,
                js.clone(),
                topology.subjects().clone(),
                records,
                client,
                metrics.clone(),
            )?;
            router = router.merge(sync::router(sync));
        }
        runner.serve(router, webhook::listener_limits(ingest));
        Ok(runner)
    }
}
