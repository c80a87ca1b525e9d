//! Ingest that never misses an alert: the LiveAPI socket, the catch-up poller and the webhook,
//! deduplicated, against a fake Sekoia that serves a real websocket and the list API; and the
//! trigger's and destinations' filters.

use std::collections::HashMap;

use alertsync_nats::async_nats::jetstream::kv;
use alertsync_standins::alerts;
use alertsync_tests::*;
use futures::StreamExt;
use serde_json::{Value, json};

const LIVE_ONLY: &str = "live = true\npoll_interval = \"0\"\n";
const POLL_ONLY: &str = "live = false\npoll_interval = \"1s\"\n";
const LIVE_AND_POLL: &str = "live = true\npoll_interval = \"1s\"\n";

fn new_alert(rule: &str) -> (String, Value) {
    let uuid = uuid::Uuid::new_v4().to_string();
    let alert = alerts::new_alert(&uuid, &alerts::random_short_id(), rule, rule);
    (uuid, alert)
}

/// How many times each uuid was delivered to `path`.
fn deliveries(p: &Pipeline, path: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for u in uuids_in(&p.receiver.requests_to(path), "alert_short_id") {
        *counts.entry(u).or_default() += 1;
    }
    counts
}

async fn wait_live_connected(p: &Pipeline) {
    let health = p.ingest_health();
    assert!(
        eventually(SOON, || async {
            p.sekoia.live_open() >= 1 && health.is_ready()
        })
        .await,
        "the ingest connects to the LiveAPI socket"
    );
}

#[tokio::test]
async fn an_alert_announced_on_the_socket_is_delivered_once() {
    let p = Pipeline::start_with(
        &destination("soar", "/soar", MAIN_TEMPLATE),
        LIVE_ONLY,
        DEFAULT_ENRICHER,
    )
    .await;
    wait_live_connected(&p).await;
    let (s, metrics) = get_text(&p.ingest_url("/metrics")).await;
    assert_eq!(s, 200);
    assert_eq!(metric(&metrics, "alertsync_live_socket_connected"), 1.0);
    let (uuid, alert) = new_alert("rule");
    p.sekoia.create_alert(alert);
    assert!(p.receiver.wait_until(SOON, |r| !r.is_empty()).await);
    assert_eq!(deliveries(&p, "/soar"), HashMap::from([(uuid, 1)]));
    let (_, metrics) = get_text(&p.ingest_url("/metrics")).await;
    assert_eq!(
        metric(
            &metrics,
            "alertsync_alerts_received_total{source=\"live\",kind=\"created\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "alertsync_alerts_published_total{source=\"live\",kind=\"created\"}"
        ),
        1.0
    );
    p.shutdown().await;
}

#[tokio::test]
async fn alerts_created_while_the_socket_is_down_are_caught_up_by_the_poller_once_each() {
    let p = Pipeline::start_with(
        &destination("soar", "/soar", MAIN_TEMPLATE),
        LIVE_AND_POLL,
        DEFAULT_ENRICHER,
    )
    .await;
    wait_live_connected(&p).await;
    let connects_before = p.sekoia.live_connects();
    p.sekoia.refuse_live(true);
    p.sekoia.drop_live();
    let health = p.ingest_health();
    assert!(
        eventually(SOON, || async { !health.is_ready() }).await,
        "not ready while the socket is down"
    );

    // 50 alerts only the list API shows, in groups of 10 sharing the same second.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut sent = Vec::new();
    for i in 0..50u64 {
        let (uuid, mut alert) = new_alert(&format!("rule {i}"));
        alert["created_at"] = json!(base + i / 10);
        p.sekoia.insert_alert(alert);
        sent.push(uuid);
    }
    assert!(
        p.receiver.wait_until(SOON, |r| r.len() >= 50).await,
        "the poller caught every alert up"
    );
    let got = deliveries(&p, "/soar");
    assert_eq!(got.len(), 50);
    assert!(
        sent.iter().all(|u| got.get(u) == Some(&1)),
        "each exactly once: {got:?}"
    );

    // The socket comes back by itself.
    p.sekoia.refuse_live(false);
    assert!(
        eventually(SOON, || async {
            p.sekoia.live_connects() > connects_before && health.is_ready()
        })
        .await
    );
    let (_, metrics) = get_text(&p.ingest_url("/metrics")).await;
    assert_eq!(
        metric(
            &metrics,
            "alertsync_alerts_published_total{source=\"poll\",kind=\"created\"}"
        ),
        50.0
    );
    p.shutdown().await;
}

#[tokio::test]
async fn the_same_alert_from_socket_poller_and_webhook_is_delivered_once() {
    let p = Pipeline::start_with(
        &destination("soar", "/soar", MAIN_TEMPLATE),
        LIVE_AND_POLL,
        DEFAULT_ENRICHER,
    )
    .await;
    wait_live_connected(&p).await;
    let (uuid, alert) = new_alert("rule");
    p.sekoia.create_alert(alert);
    p.announce(&uuid).await;
    assert!(p.receiver.wait_until(SOON, |r| !r.is_empty()).await);
    // Let the poller list it (twice, so at least one full run saw it), and announce it again.
    let calls = p.sekoia.list_calls();
    assert!(eventually(SOON, || async { p.sekoia.list_calls() >= calls + 2 }).await);
    p.announce(&uuid).await;
    let (_, metrics) = get_text(&p.ingest_url("/metrics")).await;
    let dropped: f64 = ["live", "poll", "webhook"]
        .iter()
        .map(|s| {
            metric(
                &metrics,
                &format!("alertsync_duplicates_dropped_total{{source=\"{s}\",kind=\"created\"}}"),
            )
        })
        .sum();
    assert!(dropped >= 2.0, "{metrics}");
    // A marker alert through the whole pipeline: anything wrongly republished would be ahead of it.
    let marker = p.send_alert("marker", "marker").await;
    assert!(
        p.receiver
            .wait_until(SOON, |r| uuids_in(r, "alert_short_id").contains(&marker))
            .await
    );
    assert_eq!(deliveries(&p, "/soar").get(&uuid), Some(&1));
    assert_eq!(p.created_count().await, 2);
    p.shutdown().await;
}

#[tokio::test]
async fn two_ingest_replicas_polling_deliver_every_alert_once_and_the_cursor_never_goes_back() {
    let mut p = Pipeline::start_with(
        &destination("soar", "/soar", MAIN_TEMPLATE),
        POLL_ONLY,
        DEFAULT_ENRICHER,
    )
    .await;
    p.start_extra_ingest().await;
    let bucket = format!("{}_INGEST", p.subjects().stream_base());
    let store: kv::Store =
        p.js.get_key_value(&bucket)
            .await
            .expect("cursor bucket exists");
    let mut watch = store.watch("poll_cursor").await.unwrap();
    let cursor_values = std::sync::Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let seen = cursor_values.clone();
    let watcher = tokio::spawn(async move {
        while let Some(Ok(entry)) = watch.next().await {
            if let Ok(v) = std::str::from_utf8(&entry.value).unwrap_or("").parse() {
                seen.lock().unwrap().push(v);
            }
        }
    });
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut sent = Vec::new();
    for batch in 0..4u64 {
        for i in 0..25u64 {
            let (uuid, mut alert) = new_alert(&format!("rule {batch}-{i}"));
            alert["created_at"] = json!(base + batch * 2 + i / 10);
            p.sekoia.insert_alert(alert);
            sent.push(uuid);
        }
        // Let both replicas poll between batches.
        let calls = p.sekoia.list_calls();
        assert!(eventually(SOON, || async { p.sekoia.list_calls() >= calls + 2 }).await);
    }
    assert!(p.receiver.wait_until(SOON, |r| r.len() >= sent.len()).await);
    let got = deliveries(&p, "/soar");
    assert_eq!(got.len(), sent.len());
    assert!(got.values().all(|n| *n == 1), "every alert once: {got:?}");
    let values = cursor_values.lock().unwrap().clone();
    watcher.abort();
    assert!(!values.is_empty());
    assert!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "cursor went backwards: {values:?}"
    );
    assert_eq!(*values.last().unwrap(), (base + 3 * 2 + 2) as i64);
    p.shutdown().await;
}

#[tokio::test]
async fn garbage_v1_and_other_socket_messages_are_skipped_and_counted() {
    let p = Pipeline::start_with(
        &destination("soar", "/soar", MAIN_TEMPLATE),
        LIVE_ONLY,
        DEFAULT_ENRICHER,
    )
    .await;
    wait_live_connected(&p).await;
    let uuid = "3b1f6c2e-8d4a-4f0b-9e37-5a2c7d91e604";
    p.sekoia.push_live("this is { not json".into());
    p.sekoia.push_live(
        json!({"metadata": {"version": 1}, "type": "alert", "action": "created", "attributes": {"uuid": uuid}}).to_string(),
    );
    p.sekoia.push_live(
        json!({"metadata": {"version": 2}, "type": "alert", "action": "updated", "attributes": {"uuid": uuid}}).to_string(),
    );
    p.sekoia.push_live(
        json!({"metadata": {"version": 2}, "type": "case", "action": "created", "attributes": {"uuid": uuid}}).to_string(),
    );
    p.sekoia.push_live(
        json!({"metadata": {"version": 2}, "type": "alert", "action": "created", "attributes": {"uuid": ""}}).to_string(),
    );
    let (real, alert) = new_alert("rule");
    p.sekoia.create_alert(alert);
    assert!(
        p.receiver.wait_until(SOON, |r| !r.is_empty()).await,
        "the pipeline kept flowing"
    );
    assert_eq!(deliveries(&p, "/soar"), HashMap::from([(real, 1)]));
    let (_, m) = get_text(&p.ingest_url("/metrics")).await;
    assert_eq!(
        metric(
            &m,
            "alertsync_live_messages_skipped_total{reason=\"invalid_json\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "alertsync_live_messages_skipped_total{reason=\"not_v2\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "alertsync_live_messages_skipped_total{reason=\"not_alert_notification\"}"
        ),
        1.0
    );
    // An update, with no destination asking for updates: taken off the socket, not published.
    assert_eq!(
        metric(
            &m,
            "alertsync_alerts_filtered_total{stage=\"ingest\",destination=\"\",filter=\"kind\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "alertsync_live_messages_skipped_total{reason=\"invalid_uuid\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&m, "alertsync_live_socket_connected"),
        1.0,
        "the socket stayed up"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn a_rejected_key_makes_ingest_not_ready_with_a_clear_message_and_it_recovers() {
    let p = Pipeline::start_with(
        &destination("soar", "/soar", MAIN_TEMPLATE),
        LIVE_AND_POLL,
        DEFAULT_ENRICHER,
    )
    .await;
    wait_live_connected(&p).await;
    p.sekoia.set_api_key("rotated-key-we-do-not-have");
    p.sekoia.drop_live();
    let health = p.ingest_health();
    let url = p.ingest_url("/readyz");
    assert!(
        eventually(SOON, || async {
            get_text(&url).await.1.contains("rejected the API key")
        })
        .await,
        "readiness says the key is rejected"
    );
    let (status, body) = get_text(&url).await;
    assert_eq!(status, 503);
    assert!(
        body.contains("rejected the API key") && body.contains("sekoia.api_key"),
        "{body}"
    );
    assert!(!body.contains(SEKOIA_KEY));
    // Still serving, not crashed: the webhook answers.
    let (_, healthz) = get_text(&p.ingest_url("/healthz")).await;
    assert_eq!(healthz.trim(), "ok");
    p.sekoia.set_api_key(SEKOIA_KEY);
    assert!(
        eventually(SOON, || async { health.is_ready() }).await,
        "ready again once the key works"
    );
    let (uuid, alert) = new_alert("rule");
    p.sekoia.create_alert(alert);
    assert!(
        p.receiver
            .wait_until(SOON, |r| uuids_in(r, "alert_short_id").contains(&uuid))
            .await
    );
    p.shutdown().await;
}

#[tokio::test]
async fn trigger_filters_stop_alerts_after_enrichment_and_are_counted() {
    let enricher =
        "rule_filter = \"Allowed rule\"\nrule_names_filter = [\"Allowed rule\", \"Other\"]\n";
    let p = Pipeline::start_with(
        &destination("soar", "/soar", MAIN_TEMPLATE),
        DEFAULT_INGEST,
        enricher,
    )
    .await;
    let blocked_by_names = p.send_alert("Not in the list", "t").await;
    let allowed = p.send_alert("Allowed rule", "t").await;
    let blocked_by_rule = p.send_alert("Other", "t").await;
    assert!(p.receiver.wait_until(SOON, |r| !r.is_empty()).await);
    let (_, m) = get_text(&p.enricher_url("/metrics")).await;
    assert!(
        eventually(SOON, || async {
            let (_, m) = get_text(&p.enricher_url("/metrics")).await;
            metric(&m, "alertsync_alerts_filtered_total{stage=\"enrich\",destination=\"\",filter=\"rule_filter\"}") == 2.0
        })
        .await,
        "{m}"
    );
    let got = deliveries(&p, "/soar");
    assert_eq!(got, HashMap::from([(allowed, 1)]));
    assert!(!got.contains_key(&blocked_by_names) && !got.contains_key(&blocked_by_rule));
    assert!(p.dead_letters().await.is_empty(), "filtered is not failed");
    p.shutdown().await;
}

#[tokio::test]
async fn destination_filters_keep_alerts_from_the_destinations_that_do_not_want_them() {
    let urgent_only = destination("urgent", "/urgent", MAIN_TEMPLATE)
        + "[destinations.filter]\nmin_urgency = 80\n";
    let no_ssh = destination("nossh", "/nossh", MAIN_TEMPLATE)
        + "[destinations.filter]\nexclude_rule_names = [\"SSH brute force\"]\nalert_types = [\"intrusion-attempts\"]\n";
    let all = destination("all", "/all", MAIN_TEMPLATE);
    let p = Pipeline::start(&(urgent_only + &no_ssh + &all)).await;
    // The fixture alert: urgency 65, type intrusion-attempts/brute-force.
    let ssh = p.send_alert("SSH brute force", "t").await;
    let other = p.send_alert("Port scan", "t").await;
    assert!(
        p.receiver
            .wait_until(SOON, |r| {
                r.iter().filter(|q| q.path == "/all").count() >= 2
                    && r.iter().any(|q| q.path == "/nossh")
            })
            .await
    );
    assert!(
        eventually(SOON, || async {
            let (_, m) = get_text(&p.forwarder_url("/metrics")).await;
            metric(&m, "alertsync_alerts_filtered_total{stage=\"forward\",destination=\"urgent\",filter=\"min_urgency\"}") == 2.0
                && metric(&m, "alertsync_alerts_filtered_total{stage=\"forward\",destination=\"nossh\",filter=\"exclude_rule_names\"}") == 1.0
        })
        .await
    );
    assert!(deliveries(&p, "/urgent").is_empty());
    assert_eq!(
        deliveries(&p, "/nossh"),
        HashMap::from([(other.clone(), 1)])
    );
    assert_eq!(
        deliveries(&p, "/all"),
        HashMap::from([(ssh, 1), (other, 1)])
    );
    p.shutdown().await;
}
