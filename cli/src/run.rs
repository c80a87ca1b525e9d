//! `alertsync run`: some or all stages in one process, from one config file.

use std::path::PathBuf;

use alertsync_config::{Config, Stage};
use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

/// Arguments of `alertsync run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Path of alertsync.toml.
    #[arg(long, short, env = alertsync_config::CONFIG_ENV)]
    config: PathBuf,
    /// Stages to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ingest,enricher,forwarder"
    )]
    stages: Vec<StageArg>,
    /// Threads that run the stages' work (default: one per available core). A stage binary
    /// runs on one; here the stages share the process's threads.
    #[arg(long, env = alertsync_runtime::WORKER_THREADS_ENV, value_parser = alertsync_runtime::worker_threads_parser())]
    worker_threads: Option<usize>,
}

impl RunArgs {
    /// The threads `--worker-threads` asks for (`None`: one per core), for the runtime `main` builds.
    pub fn worker_threads(&self) -> Option<usize> {
        self.worker_threads
    }
}

/// A stage name on the command line (`run --stages`, `check --stages`).
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum StageArg {
    /// Receives alert-created events (webhook, LiveAPI socket, poller) and publishes them.
    Ingest,
    /// Calls Get Alert and publishes the enriched alert.
    Enricher,
    /// Renders each destination's request and delivers it.
    Forwarder,
}

impl From<StageArg> for Stage {
    fn from(s: StageArg) -> Stage {
        match s {
            StageArg::Ingest => Stage::Ingest,
            StageArg::Enricher => Stage::Enricher,
            StageArg::Forwarder => Stage::Forwarder,
        }
    }
}

/// Runs the chosen stages until SIGTERM/SIGINT.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let _telemetry = alertsync_runtime::init_logging("alertsync");
    let stages: Vec<Stage> = args.stages.iter().map(|s| (*s).into()).collect();
    let config = Config::load(&args.config, &stages)?;
    alertsync_runtime::log_deprecations(&config);
    let shutdown = CancellationToken::new();
    alertsync_runtime::shutdown_on_signal(shutdown.clone());
    run_stages(&config, &stages, shutdown).await
}

/// Builds every stage first (so a bad config fails before anything runs), then runs them all
/// until `shutdown`.
pub async fn run_stages(
    config: &Config,
    stages: &[Stage],
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    // A bad template fails before anything connects, as in the forwarder alone.
    let mut destinations = if stages.contains(&Stage::Forwarder) {
        Some(alertsync_forwarder::compile_destinations(config)?)
    } else {
        None
    };
    // The stages share one NATS connection: one task writes for all of them, and nats-server
    // serves one client instead of three (BENCHMARKS.md round seven).
    let nats = alertsync_nats::connect(&config.nats, "alertsync").await?;
    for stage in stages {
        match stage {
            Stage::Ingest => {
                let s = alertsync_ingest::Ingest::build_on(config, nats.clone())
                    .await
                    .context("ingest")?;
                tasks.spawn(s.run(shutdown.clone()));
            }
            Stage::Enricher => {
                let s = alertsync_enricher::Enricher::build_on(config, nats.clone())
                    .await
                    .context("enricher")?;
                tasks.spawn(s.run(shutdown.clone()));
            }
            Stage::Forwarder => {
                let compiled = destinations.take().unwrap_or_default();
                let s = alertsync_forwarder::Forwarder::build_on(config, compiled, nats.clone())
                    .await
                    .context("forwarder")?;
                tasks.spawn(s.run(shutdown.clone()));
            }
        }
    }
    let mut result = Ok(());
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r.map_err(anyhow::Error::from).and_then(|r| r) {
            // One stage failing stops the others: a half-running pipeline is worse.
            shutdown.cancel();
            result = Err(e);
        }
    }
    result
}
