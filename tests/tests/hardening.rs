//! What an adversarial probe found (issue 24), end to end through the real services: a few
//! poison alerts must not hold a stage or a destination while good alerts wait, a real outage
//! still holds every alert without burning attempts, and an alert too large for NATS is
//! dead-lettered as such within its attempts instead of being retried for ever.

use std::time::Duration;

use alertsync_standins::{Reply, alerts};
use alertsync_tests::*;

/// Deadline for a scenario's alerts to settle.
const SETTLE: Duration = Duration::from_secs(90);

/// Enricher lines: a circuit that opens after 2 alerts fail in a row, fast probes, few
/// attempts (the test config's retry delays are 100 ms to 1 s).
const TIGHT_ENRICHER: &str = "rule_names_filter = []\ncircuit_failures = 2\n\
probe_base_delay = \"200ms\"\nprobe_max_delay = \"1s\"\nmax_attempts = 4\n";

/// Inserts an alert in the fake Sekoia without announcing it; returns its uuid.
fn new_alert(p: &Pipeline) -> String {
    let uuid = uuid::Uuid::new_v4().to_string();
    p.sekoia.insert_alert(alerts::new_alert(
        &uuid,
        &alerts::random_short_id(),
        "rule",
        "title",
    ));
    uuid
}

#[tokio::test]
async fn alerts_sekoia_fails_for_are_dead_lettered_after_their_attempts_while_good_ones_flow() {
    let p = Pipeline::start_with(
        &destination("soar", "/soar", MAIN_TEMPLATE),
        DEFAULT_INGEST,
        TIGHT_ENRICHER,
    )
    .await;
    // Sekoia answers 500 to Get Alert for these alerts, for as long as anyone asks.
    let poison: Vec<String> = (0..8).map(|_| new_alert(&p)).collect();
    for uuid in &poison {
        p.sekoia.script(uuid, &[500; 1000]);
        p.announce(uuid).await;
    }
    // Good alerts after the poison ones: they must not wait for the poison to be fixed.
    let mut good = Vec::new();
    for _ in 0..5 {
        good.push(p.send_alert("rule", "good").await);
    }
    let delivered = p
        .receiver
        .wait_until(SETTLE, |reqs| {
            let got = uuids_in(reqs, "alert_short_id");
            good.iter().all(|g| got.contains(g))
        })
        .await;
    assert!(
        delivered,
        "every good alert is delivered while Sekoia fails the poison ones"
    );
    // Alerts keep coming, as they do in a SOC: each is delivered on time, and each success
    // shows the poison alerts' failures to be their own.
    let deadline = tokio::time::Instant::now() + SETTLE;
    let mut dl = p.dead_letters().await;
    while dl.len() < poison.len() && tokio::time::Instant::now() < deadline {
        let uuid = p.send_alert("rule", "good").await;
        assert!(
            p.wait_sent(&uuid).await,
            "a good alert is delivered meanwhile"
        );
        good.push(uuid);
        dl = p.dead_letters().await;
    }
    let mut dead: Vec<&str> = dl.iter().map(|d| d.alert_uuid.as_str()).collect();
    dead.sort();
    let mut expected: Vec<&str> = poison.iter().map(String::as_str).collect();
    expected.sort();
    let calls: Vec<usize> = poison.iter().map(|u| p.sekoia.get_calls(u)).collect();
    let reasons: Vec<&str> = dl.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(
        dead,
        expected,
        "each poison alert dead-lettered once, no good one; Get Alert calls per poison alert \
         {calls:?}; reasons {reasons:?}; ready: {}",
        p.enricher_health().is_ready()
    );
    for d in &dl {
        assert_eq!(d.stage, "enrich");
        assert!(
            d.reason.starts_with("gave up after 4 attempts"),
            "{}",
            d.reason
        );
        assert_eq!(d.last_http_status, 500);
    }
    assert!(
        eventually(SOON, || async { p.enricher_health().is_ready() }).await,
        "the enricher is ready again once the poison is dead-lettered"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn alerts_a_destination_fails_for_are_dead_lettered_while_the_others_are_delivered() {
    let dest = destination("soar", "/soar", MAIN_TEMPLATE);
    let p = Pipeline::start(&dest).await;
    let poison: Vec<String> = (0..8).map(|_| new_alert(&p)).collect();
    for uuid in &poison {
        // The destination dislikes these alerts' content.
        p.receiver
            .answer_when_body_has(uuid, Reply::status(500).body("internal error"));
        p.announce(uuid).await;
    }
    let mut good = Vec::new();
    for _ in 0..5 {
        good.push(p.send_alert("rule", "good").await);
    }
    let delivered = p
        .receiver
        .wait_until(SETTLE, |reqs| {
            let ok: Vec<String> = reqs
                .iter()
                .filter(|r| r.status == 200)
                .filter_map(|r| r.json()?["alert_short_id"].as_str().map(str::to_string))
                .collect();
            good.iter().all(|g| ok.contains(g))
        })
        .await;
    assert!(
        delivered,
        "every good alert is delivered past the poison ones"
    );
    let dl = p.wait_dead_letters(poison.len(), SETTLE).await;
    let mut dead: Vec<&str> = dl.iter().map(|d| d.alert_uuid.as_str()).collect();
    dead.sort();
    let mut expected: Vec<&str> = poison.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(dead, expected);
    for d in &dl {
        assert_eq!(
            (d.stage.as_str(), d.destination.as_str()),
            ("forward", "soar")
        );
        assert!(
            d.reason.starts_with("gave up after 6 attempts"),
            "{}",
            d.reason
        );
    }
    p.shutdown().await;
}

#[tokio::test]
async fn a_real_outage_still_holds_every_alert_without_burning_attempts() {
    let p = Pipeline::start_with(
        &destination("soar", "/soar", MAIN_TEMPLATE),
        DEFAULT_INGEST,
        TIGHT_ENRICHER,
    )
    .await;
    p.sekoia.outage(Some(503));
    let uuids: Vec<String> = (0..3).map(|_| new_alert(&p)).collect();
    for uuid in &uuids {
        p.announce(uuid).await;
    }
    // Well past the 4 attempts each alert would have burnt: Sekoia was asked many times.
    let asked = eventually(SETTLE, || async {
        uuids.iter().map(|u| p.sekoia.get_calls(u)).sum::<usize>() >= 4 * uuids.len() + 4
    })
    .await;
    assert!(asked, "probes keep asking Sekoia during the outage");
    assert!(
        p.dead_letters().await.is_empty(),
        "nothing burnt its attempts"
    );
    assert!(!p.enricher_health().is_ready(), "the circuit is open");
    p.sekoia.outage(None);
    let delivered = p
        .receiver
        .wait_until(SETTLE, |reqs| {
            let got = uuids_in(reqs, "alert_short_id");
            uuids.iter().all(|u| got.contains(u))
        })
        .await;
    assert!(delivered, "held alerts are delivered once the outage ends");
    assert!(p.dead_letters().await.is_empty());
    p.shutdown().await;
}

#[tokio::test]
async fn an_alert_over_the_servers_max_payload_is_dead_lettered_too_large_at_once() {
    let p = Pipeline::start_on_server(
        &destination("soar", "/soar", MAIN_TEMPLATE),
        DEFAULT_ENRICHER,
        "max_payload: 65536\n",
    )
    .await;
    let uuid = uuid::Uuid::new_v4().to_string();
    let mut alert = alerts::new_alert(&uuid, &alerts::random_short_id(), "rule", "big");
    alert["details"] = serde_json::Value::String("x".repeat(100 * 1024));
    p.sekoia.insert_alert(alert);
    p.announce(&uuid).await;
    let good = p.send_alert("rule", "small").await;
    let dl = p.wait_dead_letters(1, SETTLE).await;
    assert_eq!(dl.len(), 1, "{dl:?}");
    let d = &dl[0];
    assert_eq!(
        (d.stage.as_str(), d.alert_uuid.as_str()),
        ("enrich", uuid.as_str())
    );
    assert!(
        d.reason.starts_with("too large: the enriched alert is "),
        "{}",
        d.reason
    );
    assert!(d.reason.contains("65536 bytes max_payload"), "{}", d.reason);
    assert_eq!(d.attempts, 1, "dead-lettered on its first attempt");
    assert_eq!(
        p.sekoia.get_calls(&uuid),
        1,
        "Get Alert is not fetched again"
    );
    assert!(p.wait_sent(&good).await, "a small alert still goes through");
    p.shutdown().await;
}

#[tokio::test]
async fn an_alert_body_that_is_not_utf8_is_dead_lettered_once_at_the_enricher() {
    let dests = destination("soar", "/soar", MAIN_TEMPLATE)
        + &destination("intake", "/intake", INTAKE_TEMPLATE);
    let p = Pipeline::start(&dests).await;
    let uuid = uuid::Uuid::new_v4().to_string();
    let mut body = format!(r#"{{"uuid":"{uuid}","short_id":"ALbad","title":"bad "#).into_bytes();
    body.extend_from_slice(b"\xff\xfe\"}");
    p.sekoia.answer_raw(&uuid, body);
    p.announce(&uuid).await;
    let good = p.send_alert("rule", "good").await;
    assert!(p.wait_sent(&good).await);
    let dl = p.wait_dead_letters(1, SETTLE).await;
    assert_eq!(dl.len(), 1, "one entry, not one per destination: {dl:?}");
    assert_eq!(
        (dl[0].stage.as_str(), dl[0].alert_uuid.as_str()),
        ("enrich", uuid.as_str())
    );
    assert!(dl[0].reason.contains("not UTF-8"), "{}", dl[0].reason);
    // Nothing more comes: the good alert reached both destinations, the bad one neither.
    assert!(
        p.receiver
            .wait_until(SOON, |r| r.iter().filter(|q| q.path == "/intake").count()
                == 1)
            .await
    );
    assert_eq!(p.dead_letters().await.len(), 1);
    assert!(!uuids_in(&p.receiver.requests(), "alert_short_id").contains(&uuid));
    p.shutdown().await;
}
