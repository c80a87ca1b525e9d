//! [`StageRunner`]: what every service process is besides its own work, written once.
//!
//! A stage binds its listener (health, readiness and metrics, plus routes of its own such as
//! the ingest's webhook), registers its workers and background tasks, and runs: on shutdown the
//! workers finish their in-flight messages, the tasks and the listener stop, and the NATS
//! connection gets its bounded final flush. A stage's own code describes only what differs:
//! which consumer, which handler, which checks.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use alertsync_gate::{Gate, GatePolicy, GateStatus};
use alertsync_runtime::{Health, ListenerLimits};
use alertsync_telemetry::Metrics;
use anyhow::Context as _;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::worker::{Handler, Worker};

type Job = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// One service process being put together, then run.
pub struct StageRunner {
    name: &'static str,
    listener: TcpListener,
    router: axum::Router,
    limits: ListenerLimits,
    health: Health,
    metrics: Metrics,
    client: async_nats::Client,
    workers: Vec<Job>,
    tasks: Vec<Job>,
}

impl StageRunner {
    /// Binds `listen` (a bind error names `field`, e.g. `enricher.listen`) for the stage
    /// `name`, with readiness that requires `client` to be connected.
    pub async fn bind(
        name: &'static str,
        listen: SocketAddr,
        field: &str,
        client: async_nats::Client,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("{field}: cannot bind {listen}"))?;
        Ok(Self {
            name,
            listener,
            router: axum::Router::new(),
            limits: ListenerLimits::DEFAULT,
            health: Health::with_nats(client.clone()),
            metrics,
            client,
            workers: Vec::new(),
            tasks: Vec::new(),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The stage's readiness (a handle on the same checks).
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// The stage's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Serves `router` beside health and metrics, within `limits`.
    pub fn serve(&mut self, router: axum::Router, limits: ListenerLimits) {
        self.router = std::mem::take(&mut self.router).merge(router);
        self.limits = limits;
    }

    /// A gate in front of a called service whose state is readiness check `check` (described
    /// by `describe`) and is reported to `on_state` (a metric: true while open).
    pub fn gate(
        &self,
        name: &str,
        policy: GatePolicy,
        check: &str,
        describe: fn(&GateStatus) -> String,
        on_state: impl Fn(bool) + Send + Sync + 'static,
    ) -> Gate {
        let gate = Gate::new(name, policy);
        self.health.set(check, true, describe(&gate.status()));
        on_state(true);
        let (health, check) = (self.health.clone(), check.to_string());
        gate.on_change(move |status| {
            let open = status.state == alertsync_gate::GateState::Open;
            health.set(&check, open, describe(status));
            on_state(open);
        });
        gate
    }

    /// Runs `worker` with `handler` until shutdown.
    pub fn worker<H: Handler>(&mut self, worker: Worker, handler: Arc<H>) {
        self.workers
            .push(Box::new(move |stop| Box::pin(worker.run(handler, stop))));
    }

    /// Runs `task` (a background loop that ends at shutdown) beside the workers.
    pub fn task<F, Fut>(&mut self, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push(Box::new(move |stop| Box::pin(task(stop))));
    }

    /// Runs until `shutdown`: in-flight messages finish, tasks and the listener stop, then
    /// NATS gets its bounded final flush.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let name = self.name;
        tracing::info!(addr = %self.local_addr(), workers = self.workers.len(), "{name} running");
        let router = self
            .router
            .merge(alertsync_runtime::health_router(self.health.clone()))
            .merge(alertsync_telemetry::metrics_router(self.metrics.clone()));
        let http = tokio::spawn(alertsync_runtime::serve_with_limits(
            self.listener,
            router,
            self.limits,
            shutdown.clone(),
        ));
        let tasks: Vec<_> = self
            .tasks
            .into_iter()
            .map(|t| tokio::spawn(t(shutdown.clone())))
            .collect();
        let workers: Vec<_> = self
            .workers
            .into_iter()
            .map(|w| tokio::spawn(w(shutdown.clone())))
            .collect();
        for handle in workers.into_iter().chain(tasks) {
            let _ = handle.await;
        }
        let _ = http.await;
        alertsync_nats::connect::flush_before_exit(&self.client, name).await;
        tracing::info!("{name} stopped");
        Ok(())
    }
}
