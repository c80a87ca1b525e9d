//! The fault-injection suite: the three services as real processes, broken for real (SIGKILL,
//! a nats-server or cluster node killed, destinations and Sekoia down, throttling, rejected
//! credentials, SIGTERM under load, poison), each scenario asserting at the end that every
//! alert sent was delivered, that the DLQ holds only what the scenario expects, and that no
//! alert was delivered twice except a delivery in flight at a SIGKILL of the forwarder or of
//! NATS (counted and reported; never one a receiver honouring `Idempotency-Key` would process).
//!
//! Each scenario prints a `fault-figures | …` line (run with `--nocapture`, or set
//! `ALERTSYNC_FAULT_REPORT=<file>` to collect them); the README quotes them.
//!
//! The binaries must be built first (`cargo build --workspace --bins`; `scripts/test` does).

use std::time::{Duration, Instant};

use alertsync_standins::Reply;
use alertsync_tests::faults::*;

/// Deadline for a whole scenario's alerts to be delivered after the faults end: covers an
/// enricher redelivery after its ack wait (~40 s) with room for a loaded CI machine.
const DRAIN: Duration = Duration::from_secs(240);

/// Sent per scenario where time allows.
const ALERTS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilling_each_service_several_times_mid_flow_loses_nothing_and_doubles_only_in_flight_deliveries()
 {
    let started = Instant::now();
    let mut p = FaultPipeline::start(Options::default()).await;
    let sender = p.send(ALERTS, 100);
    // Nine kills spread over the flow, by progress: enricher, forwarder, ingest, three times.
    for round in 0..9 {
        let at = (round + 1) * ALERTS / 10;
        sender
            .wait_accepted_at_least(at, Duration::from_secs(120))
            .await;
        let service = match round % 3 {
            0 => &mut p.enricher,
            1 => &mut p.forwarder,
            _ => &mut p.ingest,
        };
        service.kill();
        service.start().await;
    }
    let t = p.settle(&sender, "soar", DRAIN).await;
    t.report("1 SIGKILL ingest/enricher/forwarder ×3 each", started);
    assert_eq!(t.lost, 0, "{t}");
    assert_eq!(t.dead_letters, 0, "{t}");
    // Only deliveries in flight when the forwarder was killed may repeat.
    assert!(
        t.duplicates <= p.forwarder.kills * 16,
        "more duplicates than deliveries in flight at the kills: {t}"
    );
    assert_eq!(t.duplicates_past_idempotency_key, 0, "{t}");

    // Redelivering work that was recorded never delivers again: rewind the consumer so every
    // alert comes back, and nothing reaches the destination.
    let before = p.receiver.requests_to("/soar").len();
    assert_eq!(
        p.forwarder.terminate(Duration::from_secs(20)).await,
        Some(0)
    );
    let s = p.subjects();
    p.js.get_stream(s.enriched_stream())
        .await
        .unwrap()
        .delete_consumer(&s.destination_consumer("soar"))
        .await
        .unwrap();
    p.forwarder.start().await;
    let drained = alertsync_tests::eventually(DRAIN, || async {
        p.forward_backlog("soar").await == Some((0, 0))
    })
    .await;
    assert!(drained, "the rewound consumer never drained");
    assert_eq!(
        p.receiver.requests_to("/soar").len(),
        before,
        "an alert with a delivery record was sent again"
    );
    p.assert_no_secret_leaks().await;
}
