//! `[forwarder]`: the forwarder service (delivery to every destination).

use std::net::SocketAddr;

use serde::Deserialize;

use crate::HumanDuration;
use crate::fields::check_circuit;

/// `[forwarder]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwarderConfig {
    /// Listen address of the health endpoints. Default `127.0.0.1:8082`.
    pub listen: SocketAddr,
    /// How long the record of a delivery (destination + alert uuid, in the NATS KV bucket
    /// `<PREFIX>_DELIVERED`) is kept. An alert redelivered or replayed within this time is
    /// not sent again. At least `nats.stream_max_age`. Default 30d.
    pub delivery_record_max_age: HumanDuration,
    /// A destination that rejects our credentials (401/403) or whose circuit opened is probed
    /// again after this wait, doubled after every failed probe. Default 5s.
    pub probe_base_delay: HumanDuration,
    /// Largest wait between two probes. Default 5m.
    pub probe_max_delay: HumanDuration,
    /// Transient failures in a row (5xx, timeouts, connection errors) that open a
    /// destination's circuit: it stops getting requests except for the probes. Default 5.
    pub circuit_failures: u32,
    /// How long an update or comment waits for its alert's creation to be delivered to a
    /// destination (the creation is still being retried, or still on its way) before it is
    /// dead-lettered, replayable. Default 1d.
    pub creation_wait: HumanDuration,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8082)),
            delivery_record_max_age: HumanDuration::secs(30 * 86400),
            probe_base_delay: HumanDuration::secs(5),
            probe_max_delay: HumanDuration::secs(300),
            circuit_failures: 5,
            creation_wait: HumanDuration::secs(86400),
        }
    }
}

impl ForwarderConfig {
    /// `stream_max_age` is `nats.stream_max_age`, which the delivery records must outlive.
    pub(crate) fn check(&self, stream_max_age: HumanDuration, problems: &mut Vec<String>) {
        if self.delivery_record_max_age < stream_max_age {
            problems.push(
                "forwarder.delivery_record_max_age: must be at least nats.stream_max_age \
                 (an alert redelivered after its record expired would be sent again)"
                    .into(),
            );
        }
        if self.creation_wait.get().is_zero() {
            problems.push("forwarder.creation_wait: must be more than 0".into());
        }
        check_circuit(
            "forwarder",
            self.probe_base_delay,
            self.probe_max_delay,
            self.circuit_failures,
            problems,
        );
    }
}
