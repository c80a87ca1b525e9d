//! What every alertsync service process shares.
//!
//! - [`Health`]: named readiness checks (NATS connected, topology ensured, Sekoia key
//!   accepted…) served as `GET /healthz` (the process is alive) and `GET /readyz` (it can do
//!   its work) by [`health_router`].
//! - [`serve`], [`serve_with_limits`]: run an axum router on a bound listener until shutdown,
//!   with header, body and idle timeouts and a connection cap ([`ListenerLimits`]).
//! - [`shutdown_on_signal`]: cancels a token on SIGTERM or SIGINT.
//! - [`init_logging`]: logs and traces (`RUST_LOG`, `ALERTSYNC_LOG_FORMAT=json`, `OTEL_*`).
//! - [`service_main`]: the whole `main` of a service binary (arguments, logging, config,
//!   signals, exit code), so each binary's `main.rs` is one call.
//! - [`build_runtime`]: the async runtime of a process, on one thread or several
//!   (`--worker-threads`, `ALERTSYNC_WORKER_THREADS`).
//! - [`Allocator`]: the memory allocator every alertsync binary declares.

pub mod listener;

pub use listener::{BodyTimeout, ListenerLimits, is_body_timeout, serve_with_limits};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::{Json, Router, http::StatusCode, response::IntoResponse, routing::get};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The global allocator of every alertsync binary (`#[global_allocator] static ALLOC:
/// alertsync_runtime::Allocator = alertsync_runtime::Allocator;` in its `main.rs`).
///
/// mimalloc rather than glibc's malloc: each alert is a few KiB of JSON copied through several
/// buffers, and glibc's allocator was about a sixth of the services' CPU in profiles (its path
/// for blocks over 1 KiB and its consolidation). mimalloc cut CPU per alert by about a seventh.
/// It is built without transparent huge pages (`no_thp`): with them, each thread's memory is
/// touched 2 MiB at a time, which took idle RSS from 10–13 to 18–25 MiB per service; without
/// them RSS is as low as with glibc, and lower under load (BENCHMARKS.md).
pub use mimalloc::MiMalloc as Allocator;

#[derive(Debug, Clone)]
struct Check {
    ok: bool,
    message: String,
}

/// Readiness of one service: all checks pass and NATS is connected.
#[derive(Clone, Default)]
pub struct Health {
    checks: Arc<Mutex<BTreeMap<String, Check>>>,
    nats: Option<async_nats::Client>,
}

impl Health {
    /// Health that also requires `nats` to be connected.
    pub fn with_nats(nats: async_nats::Client) -> Self {
        Self {
            checks: Default::default(),
            nats: Some(nats),
        }
    }

    /// Sets check `name`; `message` says what to fix when it fails.
    pub fn set(&self, name: &str, ok: bool, message: impl Into<String>) {
        let mut checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        checks.insert(
            name.to_string(),
            Check {
                ok,
                message: message.into(),
            },
        );
    }

    /// Whether check `name` passes (false when unset).
    pub fn is_ok(&self, name: &str) -> bool {
        let checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        checks.get(name).is_some_and(|c| c.ok)
    }

    /// Whether the service is ready, and every check as `name → message` (failing ones first
    /// in importance: they say what to fix).
    pub fn report(&self) -> (bool, serde_json::Value) {
        let mut out = serde_json::Map::new();
        let mut ready = true;
        if let Some(nats) = &self.nats {
            let connected = nats.connection_state() == async_nats::connection::State::Connected;
            ready &= connected;
            out.insert(
                "nats".into(),
                serde_json::json!({"ok": connected, "message": if connected { "connected" } else { "not connected to NATS" }}),
            );
        }
        let checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        for (name, c) in checks.iter() {
            ready &= c.ok;
            out.insert(
                name.clone(),
                serde_json::json!({"ok": c.ok, "message": c.message}),
            );
        }
        (ready, serde_json::Value::Object(out))
    }

    /// Whether the service is ready.
    pub fn is_ready(&self) -> bool {
        self.report().0
    }
}

/// `GET /healthz` (always 200 while the process serves) and `GET /readyz` (200 or 503 with
/// the checks as JSON).
pub fn health_router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let health = health.clone();
                async move {
                    let (ready, checks) = health.report();
                    let status = if ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (
                        status,
                        Json(serde_json::json!({"ready": ready, "checks": checks})),
                    )
                        .into_response()
                }
            }),
        )
}

/// Serves `router` on `listener` until `shutdown` is cancelled, under the default
/// [`ListenerLimits`] (10 s for headers, 30 s for a body, 60 s idle, 1024 connections).
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    serve_with_limits(listener, router, ListenerLimits::DEFAULT, shutdown).await;
}

/// Cancels `token` on the first SIGTERM or SIGINT.
pub fn shutdown_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested");
        token.cancel();
    });
}

/// Installs logging and tracing for a process named `service` (see
/// [`alertsync_telemetry::traces`]): `RUST_LOG` (default `info`), human lines unless
/// `ALERTSYNC_LOG_FORMAT=json`, OTLP export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Keep the
/// guard until exit: dropping it flushes the spans.
#[must_use = "dropping the guard shuts tracing down"]
pub fn init_logging(service: &str) -> alertsync_telemetry::traces::TelemetryGuard {
    init_logging_with_default(service, "info")
}

/// Like [`init_logging`], with another filter when `RUST_LOG` is unset (the demo keeps
/// service logs down to warnings so its own output stays readable).
#[must_use = "dropping the guard shuts tracing down"]
pub fn init_logging_with_default(
    service: &str,
    default_filter: &str,
) -> alertsync_telemetry::traces::TelemetryGuard {
    alertsync_telemetry::traces::init(service, default_filter)
}

/// The environment variable behind `--worker-threads` (service binaries and `alertsync run`).
pub const WORKER_THREADS_ENV: &str = "ALERTSYNC_WORKER_THREADS";

/// What `--worker-threads` accepts: 1 to 1024 threads.
pub fn worker_threads_parser() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..=1024)
}

/// The async runtime of a process.
///
/// `Some(1)` runs every task on the calling thread (tokio's current-thread runtime), `Some(n)`
/// on `n` worker threads, `None` on one worker thread per available core (tokio's default,
/// which follows a container's CPU limit).
///
/// One thread is the stage binaries' default. A stage's work is many small steps handed from
/// task to task (a NATS message to a handler, its HTTP call, its publish): on one thread each
/// hand-over is a queue push, on several it is a cross-thread wake-up, and with three stages
/// on a small host the kernel keeps moving their threads between cores. On 2 cores, one thread
/// per stage took about a quarter off the services' CPU per alert at full load and 13 % at
/// 1000 alerts/s (BENCHMARKS.md, step 15); one thread still delivers thousands of alerts a
/// second, and a stage scales out with replicas.
pub fn build_runtime(worker_threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    match worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        None => tokio::runtime::Runtime::new(),
    }
}

/// Logs each deprecated spelling `config` uses, once, naming the new one. The config is read
/// before logging could report anything from inside it, so it lists them instead.
pub fn log_deprecations(config: &alertsync_config::Config) {
    for deprecation in &config.deprecations {
        tracing::warn!("{deprecation}");
    }
}

/// Command line of every service binary.
#[derive(Debug, clap::Parser)]
struct ServiceArgs {
    /// Path of alertsync.toml.
    #[arg(long, short, env = alertsync_config::CONFIG_ENV)]
    config: std::path::PathBuf,
    /// Threads that run the service's work. One (the default) is the cheapest per alert and
    /// carries thousands of alerts a second; scale a stage with replicas, or raise this for a
    /// replica that must use several cores.
    #[arg(long, env = WORKER_THREADS_ENV, default_value_t = 1, value_parser = worker_threads_parser())]
    worker_threads: usize,
}

/// The `main` of the service binary `service`: parses `--config`, sets up logging and tracing, loads and validates the config
/// for `stage` (printing the problems and exiting 2 on error), then runs `run` until SIGTERM or
/// SIGINT. Exits 0 after a clean shutdown, 1 when `run` failed.
pub fn service_main<F, Fut>(
    service: &str,
    stage: alertsync_config::Stage,
    run: F,
) -> std::process::ExitCode
where
    F: FnOnce(alertsync_config::Config, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    use clap::Parser as _;
    let args = ServiceArgs::parse();
    let _telemetry = init_logging(service);
    let config = match alertsync_config::Config::load(&args.config, &[stage]) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    log_deprecations(&config);
    let runtime = match build_runtime(Some(args.worker_threads)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let redactor = config.redactor.clone();
    let result = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        shutdown_on_signal(shutdown.clone());
        // Spawned, not awaited here: with several worker threads, a loop awaited on this
        // thread (the enricher's pull loop) would hand every message over to the workers
        // across threads.
        match tokio::spawn(run(config, shutdown)).await {
            Ok(result) => result,
            Err(e) => Err(anyhow::anyhow!("the service stopped unexpectedly: {e}")),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain, once, redacted: errors may quote configuration values.
            eprintln!("error: {}", redactor.redact(&format!("{e:#}")));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The whole of a service binary's `main.rs`: the allocator, and a `main` that runs
/// [`service_main`] with the stage built by `$build(&config)` (an `async fn` giving something
/// with `run(shutdown)`).
///
/// ```ignore
/// alertsync_runtime::service_binary!("alertsync-enricher", Enricher, alertsync_enricher::Enricher::build);
/// ```
#[macro_export]
macro_rules! service_binary {
    ($service:literal, $stage:ident, $build:path) => {
        #[global_allocator]
        static ALLOC: $crate::Allocator = $crate::Allocator;

        fn main() -> std::process::ExitCode {
            $crate::service_main(
                $service,
                alertsync_config::Stage::$stage,
                |cfg, shutdown| async move { $build(&cfg).await?.run(shutdown).await },
            )
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn one_worker_thread_is_a_current_thread_runtime_and_more_are_a_pool_of_that_size() {
        let one = build_runtime(Some(1)).unwrap();
        assert_eq!(one.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        // Tasks spawned on it run on the thread that drives it.
        let here = std::thread::current().id();
        let ran_on =
            one.block_on(async { tokio::spawn(async { std::thread::current().id() }).await });
        assert_eq!(ran_on.unwrap(), here);

        let three = build_runtime(Some(3)).unwrap();
        assert_eq!(three.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(three.handle().metrics().num_workers(), 3);

        let default = build_runtime(None).unwrap();
        assert_eq!(
            default.handle().runtime_flavor(),
            RuntimeFlavor::MultiThread
        );
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(default.handle().metrics().num_workers(), cores);
    }

    #[test]
    fn worker_threads_outside_1_to_1024_are_refused_naming_the_option() {
        use clap::Parser as _;
        for bad in ["0", "1025", "two", "-1"] {
            let err = ServiceArgs::try_parse_from([
                "alertsync-enricher".to_string(),
                "--config=x.toml".to_string(),
                format!("--worker-threads={bad}"),
            ])
            .unwrap_err()
            .to_string();
            assert!(err.contains("--worker-threads"), "{bad}: {err}");
        }
        let ok = ServiceArgs::try_parse_from(["alertsync-enricher", "--config", "x.toml"]).unwrap();
        assert_eq!(ok.worker_threads, 1, "one thread unless told otherwise");
    }
}
