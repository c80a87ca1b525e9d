//! `alertsync-ingest --config alertsync.toml`: the webhook source.

#[global_allocator]
static ALLOC: alertsync_runtime::Allocator = alertsync_runtime::Allocator;

fn main() -> std::process::ExitCode {
    alertsync_runtime::service_main(
        "alertsync-ingest",
        alertsync_config::Stage::Ingest,
        |cfg, shutdown| async move {
            alertsync_ingest::Ingest::build(&cfg)
                .await?
                .run(shutdown)
                .await
        },
    )
}
