//! `alertsync-enricher --config alertsync.toml`: fetches each new alert from Sekoia.

alertsync_runtime::service_binary!(
    "alertsync-enricher",
    Enricher,
    alertsync_enricher::Enricher::build
);
