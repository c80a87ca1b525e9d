//! `alertsync-ingest --config alertsync.toml`: the webhook, LiveAPI and poller sources.

alertsync_runtime::service_binary!("alertsync-ingest", Ingest, alertsync_ingest::Ingest::build);
