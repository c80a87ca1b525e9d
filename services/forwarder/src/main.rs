//! `alertsync-forwarder --config alertsync.toml`: delivers enriched alerts to destinations.

#[global_allocator]
static ALLOC: alertsync_runtime::Allocator = alertsync_runtime::Allocator;

fn main() -> std::process::ExitCode {
    alertsync_runtime::service_main(
        "alertsync-forwarder",
        alertsync_config::Stage::Forwarder,
        |cfg, shutdown| async move {
            alertsync_forwarder::Forwarder::build(&cfg)
                .await?
                .run(shutdown)
                .await
        },
    )
}
