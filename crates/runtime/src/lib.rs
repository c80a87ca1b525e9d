//! What every alertsync service process shares.
//!
//! - [`Health`]: named readiness checks (NATS connected, topology ensured, Sekoia key
//!   accepted…) served as `GET /healthz` (the process is alive) and `GET /readyz` (it can do
//!   its work) by [`health_router`].
//! - [`serve`]: runs an axum router on a bound listener until shutdown.
//! - [`shutdown_on_signal`]: cancels a token on SIGTERM or SIGINT.
//! - [`init_logging`]: logs and traces (`RUST_LOG`, `ALERTSYNC_LOG_FORMAT=json`, `OTEL_*`).
//! - [`service_main`]: the whole `main` of a service binary (arguments, logging, config,
//!   signals, exit code), so each binary's `main.rs` is one call.
//! - [`Allocator`]: the memory allocator every alertsync binary declares.

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

/// Serves `router` on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP listener failed");
    }
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

/// Command line of every service binary.
#[derive(Debug, clap::Parser)]
struct ServiceArgs {
    /// Path of alertsync.toml.
    #[arg(long, short, env = alertsync_config::CONFIG_ENV)]
    config: std::path::PathBuf,
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
    let runtime = match tokio::runtime::Runtime::new() {
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
        // On a worker thread, not on this one: a loop awaited here (the enricher's pull loop)
        // would otherwise hand every message over to the workers across threads.
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
