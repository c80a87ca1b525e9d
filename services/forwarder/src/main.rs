//! `alertsync-forwarder --config alertsync.toml`: delivers enriched alerts to destinations.

alertsync_runtime::service_binary!(
    "alertsync-forwarder",
    Forwarder,
    alertsync_forwarder::Forwarder::build
);
