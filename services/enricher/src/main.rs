//! `alertsync-enricher --config alertsync.toml`: fetches each new alert from Sekoia.

#[global_allocator]
static ALLOC: alertsync_runtime::Allocator = alertsync_runtime::Allocator;

fn main() -> std::process::ExitCode {
    alertsync_runtime::service_main(
        "alertsync-enricher",
        alertsync_config::Stage::Enricher,
        |cfg, shutdown| async move {
            alertsync_enricher::Enricher::build(&cfg)
                .await?
                .run(shutdown)
                .await
        },
    )
}
