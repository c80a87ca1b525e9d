//! The command line of `alertsync-bench`.

use std::path::PathBuf;

use crate::run::Plan;

/// Benchmark the three alertsync services against the overhead-free ceiling.
///
/// Build the services first: `cargo build --release --bins`, then
/// `cargo run --release -p alertsync-bench`. Needs a nats-server ≥ 2.10 (`NATS_SERVER_BIN`, or
/// `nats-server` on PATH; `scripts/nats-server` installs one).
#[derive(Debug, clap::Parser)]
#[command(name = "alertsync-bench", version)]
pub struct Args {
    /// Internal: run the ceiling pipeline (started by the benchmark itself).
    #[command(subcommand)]
    pub worker: Option<Worker>,
    /// Alerts in the as-fast-as-possible run.
    #[arg(long, default_value_t = 10_000)]
    pub alerts: usize,
    /// Webhook requests in flight in the as-fast-as-possible run.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Fixed rates in alerts/s, comma-separated ("" for none).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub rates: Vec<String>,
    /// Seconds each fixed-rate run lasts.
    #[arg(long, default_value_t = 10.0)]
    pub rate_seconds: f64,
    /// Webhook requests in flight at most in fixed-rate runs.
    #[arg(long, default_value_t = 64)]
    pub rate_concurrency: usize,
    /// Times every run is repeated (project and ceiling interleaved); figures are medians.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Alerts sent through each pipeline before measuring.
    #[arg(long, default_value_t = 500)]
    pub warmup: usize,
    /// CI mode: 200 alerts, one as-fast-as-possible run, no fixed rates, small warm-up.
    #[arg(long)]
    pub short: bool,
    /// Directory of the service binaries (default: this executable's own directory, which
    /// is target/release under `cargo run --release`).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Also write every figure as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write each run's per-alert times to `DIR/<scenario>-<who>-<repeat>.tsv` (webhook
    /// 202 and first receipt, ns since the epoch, 0 when it never happened), to see when
    /// the slow alerts happened and not only how many there were.
    #[arg(long, value_name = "DIR")]
    pub alert_times: Option<PathBuf>,
    /// Do not run the ceiling.
    #[arg(long)]
    pub no_ceiling: bool,
    /// Do not run the project (ceiling only).
    #[arg(long)]
    pub no_project: bool,
    /// Run the project as one `alertsync run` process (every stage in one process, the
    /// container image's default) instead of three separate service processes.
    #[arg(long)]
    pub one_process: bool,
    /// Set `enricher.concurrency` and the destination's `concurrency` (default: the
    /// services' defaults).
    #[arg(long)]
    pub service_concurrency: Option<usize>,
    /// Messages in flight per stage of the ceiling.
    #[arg(long, default_value_t = 64)]
    pub ceiling_concurrency: usize,
    /// Threads of the ceiling's runtime: 1 (the default, as the stage binaries) runs it on
    /// one thread, more on a pool of that size.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub ceiling_threads: u16,
    /// `RUST_LOG` of the services (their default is info).
    #[arg(long, default_value = "info")]
    pub service_log: String,
    /// Extra environment of the services, `NAME=VALUE` (repeatable; e.g.
    /// `OTEL_TRACES_SAMPLER=always_off` to measure what span bookkeeping costs).
    #[arg(long, value_name = "NAME=VALUE")]
    pub service_env: Vec<String>,
}

/// Internal subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Worker {
    /// Runs the ceiling pipeline until standard input closes (started by the benchmark).
    #[command(hide = true)]
    CeilingWorker(crate::ceiling::WorkerArgs),
}

impl Args {
    /// The plan these arguments describe.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let rates = if self.short {
            Vec::new()
        } else {
            self.rates
                .iter()
                .map(|r| r.trim())
                .filter(|r| !r.is_empty())
                .map(|r| {
                    r.parse::<f64>()
                        .ok()
                        .filter(|v| *v > 0.0 && v.is_finite())
                        .ok_or_else(|| anyhow::anyhow!("--rates: {r:?} is not a positive number"))
                })
                .collect::<anyhow::Result<Vec<f64>>>()?
        };
        let bin_dir = match &self.bin_dir {
            Some(d) => d.clone(),
            None => std::env::current_exe()?
                .parent()
                .map(PathBuf::from)
                .unwrap_or_default(),
        };
        if let Some(dir) = &self.alert_times {
            // Now, not after the runs: a path that cannot be written must not cost a benchmark.
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("--alert-times: cannot create {}: {e}", dir.display())
            })?;
        }
        anyhow::ensure!(
            !(self.no_ceiling && self.no_project),
            "--no-ceiling and --no-project leave nothing to run"
        );
        let service_env = self
            .service_env
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| anyhow::anyhow!("--service-env: {kv:?} is not NAME=VALUE"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Plan {
            alerts: if self.short { 200 } else { self.alerts.max(1) },
            concurrency: if self.short {
                16
            } else {
                self.concurrency.max(1)
            },
            rates,
            rate_seconds: self.rate_seconds,
            rate_concurrency: self.rate_concurrency.max(1),
            repeat: if self.short { 1 } else { self.repeat.max(1) },
            warmup: if self.short { 20 } else { self.warmup },
            project: !self.no_project,
            ceiling: !self.no_ceiling,
            one_process: self.one_process,
            bin_dir,
            service_concurrency: self.service_concurrency,
            ceiling_concurrency: self.ceiling_concurrency.max(1),
            ceiling_threads: self.ceiling_threads,
            alert_times: self.alert_times.clone(),
            service_log: self.service_log.clone(),
            service_env,
            short: self.short,
            command: std::env::args().collect::<Vec<_>>().join(" "),
        })
    }
}
