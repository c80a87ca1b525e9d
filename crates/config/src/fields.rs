//! Checks and serde defaults shared by several sections.

use crate::HumanDuration;

/// Default messages in flight per stage worker (Get Alert calls per enricher replica,
/// requests per destination and forwarder replica). A worker never asks JetStream for more
/// messages than it has free handlers, so under a backlog this also sizes its pull requests:
/// with 16, batches of about four cost nats-server a fifth more CPU per alert and the
/// pipeline a tenth of its throughput (BENCHMARKS.md, step 11). 64 is also fewer than the
/// 100 concurrent runs Sekoia's own playbook workers allow. It is also the most alerts one
/// replica can have sent but not yet recorded when it is killed (README, delivery records).
pub const IN_FLIGHT: usize = 64;

/// [`IN_FLIGHT`], as a serde default.
pub(crate) fn in_flight() -> usize {
    IN_FLIGHT
}

/// `true`, as a serde default.
pub(crate) fn yes() -> bool {
    true
}

pub(crate) fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Letters, digits, `_` and `-`: the names that go into subjects and consumer names.
pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The circuit settings of `section` (`enricher`, `forwarder`): probes wait more than 0 and
/// at most the largest wait, and at least one failure opens the circuit.
pub(crate) fn check_circuit(
    section: &str,
    probe_base_delay: HumanDuration,
    probe_max_delay: HumanDuration,
    circuit_failures: u32,
    problems: &mut Vec<String>,
) {
    if probe_base_delay.get().is_zero() || probe_base_delay > probe_max_delay {
        problems.push(format!(
            "{section}.probe_base_delay: must be more than 0 and at most \
             {section}.probe_max_delay"
        ));
    }
    if circuit_failures == 0 {
        problems.push(format!("{section}.circuit_failures: must be at least 1"));
    }
}
