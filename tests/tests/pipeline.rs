//! The playbook end to end: webhook → ingest → enricher (Get Alert) → forwarder → destination,
//! over a real nats-server.

use std::collections::HashMap;
use std::time::Duration;

use alertsync_standins::Reply;
use alertsync_tests::*;
use serde_json::{Value, json};

fn only_keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn the_seed_templates_deliver_exactly_one_request_each_with_the_expected_bodies() {
    let dests = destination("soar", "/soar", MAIN_TEMPLATE)
        + &destination("intake", "/intake", INTAKE_TEMPLATE);
    let p = Pipeline::start(&dests).await;
    let uuid = p
        .send_alert("Brute force on SSH service", "Brute force on SSH service")
        .await;

    let r = &p.receiver;
    assert!(
        r.wait_until(SOON, |reqs| reqs
            .iter()
            .filter(|q| q.path == "/soar")
            .count()
            >= 1
            && reqs.iter().filter(|q| q.path == "/intake").count() >= 1)
            .await,
        "both destinations received the alert"
    );
    let soar = r.requests_to("/soar");
    assert_eq!(soar.len(), 1);
    assert_eq!(soar[0].method, "POST");
    let expected = format!(
        r#"{{"alert_short_id":"{uuid}", "rule_name":"Brute force on SSH service","rule_severity":"65","description":"This is a description"}}"#
    );
    assert_eq!(String::from_utf8_lossy(&soar[0].body), expected);
    assert_eq!(
        soar[0].header("authorization"),
        Some(format!("Bearer {SOAR_KEY}").as_str())
    );
    assert_eq!(soar[0].header("content-type"), Some("application/json"));
    assert_eq!(
        soar[0].header("idempotency-key"),
        Some(format!("{uuid}:soar").as_str())
    );

    let intake = r.requests_to("/intake");
    assert_eq!(intake.len(), 1);
    let body = intake[0].json().expect("intake body is JSON");
    assert_eq!(only_keys(&body), vec!["intake_key", "json"]);
    assert_eq!(body["intake_key"], INTAKE_KEY);
    let inner = body["json"].as_str().unwrap();
    assert_eq!(
        inner,
        format!(
            r#"'{{"alert_short_id":"{uuid}", "rule_name":"Brute force on SSH service","rule_severity":"65","description":"An HTTP request was made from Sekoia.io Playbook"}}'"#
        )
    );
    assert!(p.dead_letters().await.is_empty());
    p.shutdown().await;
}

#[tokio::test]
async fn hostile_rule_names_and_titles_never_change_the_structure_of_the_body() {
    let template = r#"{"alert_short_id":"{{ node.0['alert_uuid'] }}", "rule_name":"{{ node.1['rule']['name'] }}","title":"{{ node.1.title }}"}"#;
    let dests =
        destination("soar", "/soar", template) + &destination("intake", "/intake", INTAKE_TEMPLATE);
    let p = Pipeline::start(&dests).await;
    let hostile = [
        r#"quote " inside"#,
        r"back\slash \n not a newline",
        "real\nnew\r\nlines\tand tab",
        "{{ 7 * 7 }} {% if true %}x{% endif %}",
        r#"", "admin": true, "x": ""#,
    ];
    let mut sent = HashMap::new();
    for (i, h) in hostile.iter().enumerate() {
        let title = format!("title {i}: {h}");
        let uuid = p.send_alert(h, &title).await;
        sent.insert(uuid, (h.to_string(), title));
    }
    assert!(
        p.receiver
            .wait_until(SOON, |reqs| reqs
                .iter()
                .filter(|q| q.path == "/soar")
                .count()
                >= hostile.len()
                && reqs.iter().filter(|q| q.path == "/intake").count()
                    >= hostile.len())
            .await
    );
    for req in p.receiver.requests_to("/soar") {
        let body = req.json().expect("valid JSON whatever the alert says");
        assert_eq!(
            only_keys(&body),
            vec!["alert_short_id", "rule_name", "title"]
        );
        let (rule, title) = &sent[body["alert_short_id"].as_str().unwrap()];
        assert_eq!(body["rule_name"].as_str().unwrap(), rule);
        assert_eq!(body["title"].as_str().unwrap(), title);
    }
    for req in p.receiver.requests_to("/intake") {
        let body = req.json().expect("valid JSON");
        assert_eq!(only_keys(&body), vec!["intake_key", "json"]);
        let inner_text = body["json"].as_str().unwrap();
        let inner: Value =
            serde_json::from_str(inner_text.trim_matches('\'')).expect("inner JSON is valid too");
        assert_eq!(
            only_keys(&inner),
            vec![
                "alert_short_id",
                "description",
                "rule_name",
                "rule_severity"
            ]
        );
        let (rule, _) = &sent[inner["alert_short_id"].as_str().unwrap()];
        assert_eq!(inner["rule_name"].as_str().unwrap(), rule);
    }
    p.shutdown().await;
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_no_earlier_than_asked_and_delivered_once() {
    let p = Pipeline::start(&destination("soar", "/soar", MAIN_TEMPLATE)).await;
    p.receiver
        .script("/soar", vec![Reply::status(429).header("Retry-After", "2")]);
    let uuid = p.send_alert("rule", "title").await;
    assert!(
        p.receiver
            .wait_until(SOON, |reqs| reqs.iter().any(|q| q.status == 200))
            .await
    );
    let reqs = p.receiver.requests_to("/soar");
    assert_eq!(reqs.len(), 2, "one 429, then one delivery");
    assert_eq!(reqs[0].status, 429);
    let waited = reqs[1].at.duration_since(reqs[0].at).unwrap();
    assert!(
        waited >= Duration::from_secs(2),
        "retried after {waited:?}, before Retry-After"
    );
    assert_eq!(uuids_in(&reqs, "alert_short_id"), vec![uuid]);
    p.shutdown().await;
}

#[tokio::test]
async fn three_503s_then_200_is_one_delivery() {
    let p = Pipeline::start(&destination("soar", "/soar", MAIN_TEMPLATE)).await;
    p.receiver.script(
        "/soar",
        vec![Reply::status(503), Reply::status(503), Reply::status(503)],
    );
    let uuid = p.send_alert("rule", "title").await;
    assert!(
        p.receiver
            .wait_until(SOON, |reqs| reqs.iter().any(|q| q.status == 200))
            .await
    );
    let reqs = p.receiver.requests_to("/soar");
    assert_eq!(
        reqs.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![503, 503, 503, 200]
    );
    assert_eq!(uuids_in(&reqs, "alert_short_id"), vec![uuid]);
    assert!(p.dead_letters().await.is_empty());
    p.shutdown().await;
}

#[tokio::test]
async fn a_400_is_dead_lettered_with_its_status_and_reason_and_never_retried() {
    let p = Pipeline::start(&destination("soar", "/soar", MAIN_TEMPLATE)).await;
    p.receiver.always(
        "/soar",
        Reply::status(400).body(r#"{"error":"field rule_name is not allowed"}"#),
    );
    let uuid = p.send_alert("rule", "title").await;
    let dl = p.wait_dead_letters(1, SOON).await;
    assert_eq!(dl.len(), 1);
    let d = &dl[0];
    assert_eq!(d.stage, "forward");
    assert_eq!(d.destination, "soar");
    assert_eq!(d.alert_uuid, uuid);
    assert_eq!(d.last_http_status, 400);
    assert_eq!(d.attempts, 1);
    assert!(
        d.reason.contains("400") && d.reason.contains("rule_name is not allowed"),
        "{}",
        d.reason
    );
    assert!(
        d.original_subject
            .starts_with(&format!("{}.alerts.enriched.", p.config.nats.prefix))
    );
    assert!(!d.original_payload.is_empty());
    // Give a wrongful retry every chance to show up: it would come within the retry delay.
    let retried = p
        .receiver
        .wait_until(Duration::from_secs(2), |reqs| reqs.len() > 1)
        .await;
    assert!(!retried, "a 400 must not be retried");
    p.shutdown().await;
}

#[tokio::test]
async fn get_alert_404_twice_then_200_is_delivered() {
    let p = Pipeline::start(&destination("soar", "/soar", MAIN_TEMPLATE)).await;
    let uuid = uuid::Uuid::new_v4().to_string();
    p.sekoia.script(&uuid, &[404, 404]);
    p.sekoia.insert_alert(alertsync_standins::alerts::new_alert(
        &uuid, "ALabc", "rule", "title",
    ));
    p.announce(&uuid).await;
    assert!(p.receiver.wait_until(SOON, |reqs| !reqs.is_empty()).await);
    assert_eq!(
        uuids_in(&p.receiver.requests(), "alert_short_id"),
        vec![uuid.clone()]
    );
    assert_eq!(p.sekoia.get_calls(&uuid), 3);
    p.shutdown().await;
}

#[tokio::test]
async fn a_rejected_sekoia_key_makes_the_enricher_not_ready_and_dead_letters_nothing() {
    let p = Pipeline::start(&destination("soar", "/soar", MAIN_TEMPLATE)).await;
    p.sekoia.set_api_key("a-key-that-is-not-ours");
    let uuid = p.send_alert("rule", "title").await;
    let health = p.enricher_health();
    assert!(
        eventually(SOON, || async { !health.is_ready() }).await,
        "enricher reports not ready"
    );
    let client = reqwest_client();
    let resp = client.get(p.enricher_readyz_url()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let text = resp.text().await.unwrap();
    assert!(text.contains("rejected the API key"), "{text}");
    assert!(!text.contains(SEKOIA_KEY), "readiness never shows the key");
    // The alert keeps being retried without burning attempts: several checks later, still
    // nothing in the DLQ and nothing delivered.
    assert!(eventually(SOON, || async { p.sekoia.get_calls(&uuid) >= 3 }).await);
    assert!(p.dead_letters().await.is_empty());
    assert!(p.receiver.requests().is_empty());
    // Fixing the key resumes delivery.
    p.sekoia.set_api_key(SEKOIA_KEY);
    assert!(
        p.receiver.wait_until(SOON, |reqs| !reqs.is_empty()).await,
        "delivered once the key works"
    );
    assert!(eventually(SOON, || async { health.is_ready() }).await);
    assert_eq!(
        uuids_in(&p.receiver.requests(), "alert_short_id"),
        vec![uuid]
    );
    p.shutdown().await;
}

#[tokio::test]
async fn the_webhook_rejects_bad_calls_with_reasons_and_publishes_nothing() {
    let p = Pipeline::start(&destination("soar", "/soar", MAIN_TEMPLATE)).await;
    let good =
        serde_json::to_vec(&json!({"alert_uuid": uuid::Uuid::new_v4().to_string()})).unwrap();
    let (s, _) = p.post_raw(good.clone(), None).await;
    assert_eq!(s, 401, "no token");
    let (s, _) = p
        .post_raw(good.clone(), Some("wrong-token-wrong-token"))
        .await;
    assert_eq!(s, 401, "bad token");
    let (s, b) = p.post_raw(b"{not json".to_vec(), Some(WEBHOOK_TOKEN)).await;
    assert_eq!(s, 400, "invalid JSON");
    assert!(b["error"].as_str().unwrap().contains("invalid JSON"), "{b}");
    let (s, b) = p
        .post_raw(
            br#"{"alert_uuid":"not-a-uuid"}"#.to_vec(),
            Some(WEBHOOK_TOKEN),
        )
        .await;
    assert_eq!(s, 400, "bad uuid");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("malformed alert uuid"),
        "{b}"
    );
    let big = format!(
        r#"{{"alert_uuid":"{}","pad":"{}"}}"#,
        uuid::Uuid::new_v4(),
        "x".repeat(70 * 1024)
    );
    let (s, _) = p.post_raw(big.into_bytes(), Some(WEBHOOK_TOKEN)).await;
    assert_eq!(s, 413, "oversize");
    assert_eq!(p.created_count().await, 0, "nothing published on a 4xx");

    // The fixtures' three accepted shapes.
    for fixture in [
        include_str!("../fixtures/live_notification_alert_created.json"),
        include_str!("../fixtures/alert_created_event.json"),
    ] {
        let (s, b) = p
            .post_raw(fixture.as_bytes().to_vec(), Some(WEBHOOK_TOKEN))
            .await;
        assert_eq!(s, 202, "{b}");
        assert_eq!(b["alert_uuid"], "3b1f6c2e-8d4a-4f0b-9e37-5a2c7d91e604");
    }
    p.shutdown().await;
}

#[tokio::test]
async fn the_same_alert_announced_twice_is_delivered_once() {
    let p = Pipeline::start(&destination("soar", "/soar", MAIN_TEMPLATE)).await;
    let uuid = p.send_alert("rule", "title").await;
    let body = serde_json::to_vec(&json!({"alert_uuid": uuid})).unwrap();
    let (s, b) = p.post_raw(body, Some(WEBHOOK_TOKEN)).await;
    assert_eq!(s, 202);
    assert_eq!(b["duplicate"], true);
    let second = p.send_alert("rule", "marker").await;
    // The marker alert went through the same stages after the duplicate: once it arrives, a
    // wrongful second delivery of the first would have had every chance to arrive too.
    assert!(p.wait_sent(&second).await);
    let got = uuids_in(&p.receiver.requests(), "alert_short_id");
    assert_eq!(got.iter().filter(|u| **u == uuid).count(), 1, "{got:?}");
    assert_eq!(p.created_count().await, 2);
    p.shutdown().await;
}

#[tokio::test]
async fn an_alert_published_before_the_duplicate_window_is_still_a_duplicate() {
    let p = Pipeline::start(&destination("soar", "/soar", MAIN_TEMPLATE)).await;
    let uuid = uuid::Uuid::new_v4().to_string();
    p.sekoia.insert_alert(alertsync_standins::alerts::new_alert(
        &uuid,
        &alertsync_standins::alerts::random_short_id(),
        "rule",
        "title",
    ));
    // Published long ago, as far as JetStream's duplicate window knows: on the alert's subject
    // but without the message id the window matches, so only the created stream's own record
    // of the alert can recognise a second sighting.
    let old = alertsync_proto::v1::AlertNotification {
        alert_uuid: uuid.clone(),
        source: alertsync_proto::v1::Source::Poll as i32,
        ..Default::default()
    };
    p.js.publish(
        p.subjects().created(&uuid),
        alertsync_proto::Message::encode_to_vec(&old).into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    assert!(p.wait_sent(&uuid).await);
    // Seen again, by two sources.
    let live = json!({"metadata": {"version": 2}, "type": "alert", "action": "created",
                      "attributes": {"uuid": uuid, "short_id": "ALq7Rt2mXw9K"}});
    for body in [json!({"alert_uuid": uuid}), live] {
        let (s, b) = p
            .post_raw(serde_json::to_vec(&body).unwrap(), Some(WEBHOOK_TOKEN))
            .await;
        assert_eq!(s, 202, "{b}");
        assert_eq!(b["duplicate"], true, "{b}");
    }
    let marker = p.send_alert("rule", "marker").await;
    assert!(p.wait_sent(&marker).await);
    let got = uuids_in(&p.receiver.requests(), "alert_short_id");
    assert_eq!(got.iter().filter(|u| **u == uuid).count(), 1, "{got:?}");
    assert_eq!(p.created_count().await, 2, "nothing stored for the repeats");
    p.shutdown().await;
}

#[tokio::test]
async fn a_destination_failing_forever_does_not_delay_another() {
    let dests = destination("dead", "/dead", MAIN_TEMPLATE)
        + &destination("alive", "/alive", MAIN_TEMPLATE);
    let p = Pipeline::start(&dests).await;
    p.receiver.always("/dead", Reply::status(503));
    let mut sent = Vec::new();
    for i in 0..20 {
        sent.push(p.send_alert(&format!("rule {i}"), "title").await);
    }
    assert!(
        p.receiver
            .wait_until(SOON, |reqs| reqs
                .iter()
                .filter(|q| q.path == "/alive")
                .count()
                >= sent.len())
            .await
    );
    let alive = p.receiver.requests_to("/alive");
    let mut got = uuids_in(&alive, "alert_short_id");
    got.sort();
    sent.sort();
    assert_eq!(
        got, sent,
        "every alert reached the healthy destination once"
    );
    // While the other destination is still being retried.
    let dead = p.receiver.requests_to("/dead");
    assert!(!dead.is_empty() && dead.iter().all(|r| r.status == 503));
    assert!(
        p.dead_letters()
            .await
            .iter()
            .all(|d| d.destination == "dead")
    );
    p.shutdown().await;
}

#[tokio::test]
async fn restarting_the_forwarder_mid_stream_loses_nothing_and_doubles_nothing() {
    let mut p = Pipeline::start(&destination("soar", "/soar", MAIN_TEMPLATE)).await;
    let mut sent = Vec::new();
    for i in 0..40 {
        sent.push(p.send_alert(&format!("rule {i}"), "title").await);
    }
    assert!(p.receiver.wait_until(SOON, |reqs| reqs.len() >= 5).await);
    p.restart_forwarder().await;
    for i in 40..60 {
        sent.push(p.send_alert(&format!("rule {i}"), "title").await);
    }
    assert!(
        p.receiver
            .wait_until(SOON, |reqs| reqs.len() >= sent.len())
            .await
    );
    let mut got = uuids_in(&p.receiver.requests(), "alert_short_id");
    got.sort();
    sent.sort();
    assert_eq!(got, sent);
    p.shutdown().await;
}

#[tokio::test]
async fn poison_on_the_created_subject_is_dead_lettered_and_the_pipeline_keeps_flowing() {
    let p = Pipeline::start(&destination("soar", "/soar", MAIN_TEMPLATE)).await;
    p.js.publish(p.subjects().created(""), "not protobuf \u{1}\u{2}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let dl = p.wait_dead_letters(1, SOON).await;
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].stage, "enrich");
    assert!(dl[0].reason.starts_with("poison"), "{}", dl[0].reason);
    let uuid = p.send_alert("rule", "title").await;
    assert!(p.wait_sent(&uuid).await);
    p.shutdown().await;
}

#[tokio::test]
async fn the_webhook_answers_503_while_nats_is_down_and_the_pipeline_resumes_when_it_is_back() {
    let mut p = Pipeline::start(&destination("soar", "/soar", MAIN_TEMPLATE)).await;
    let uuid = uuid::Uuid::new_v4().to_string();
    p.sekoia.insert_alert(alertsync_standins::alerts::new_alert(
        &uuid,
        "ALdown000001",
        "rule",
        "title",
    ));
    let body = serde_json::to_vec(&json!({"alert_uuid": uuid})).unwrap();
    p.nats.kill();
    let unavailable = eventually(SOON, || async {
        p.post_raw(body.clone(), Some(WEBHOOK_TOKEN)).await.0 == 503
    })
    .await;
    assert!(unavailable, "503 while NATS is down");
    p.nats.restart().expect("nats-server restarts on its store");
    // A caller retrying on 503 gets through once the services have reconnected.
    let accepted = eventually(SOON, || async {
        p.post_raw(body.clone(), Some(WEBHOOK_TOKEN)).await.0 == 202
    })
    .await;
    assert!(accepted);
    assert!(p.receiver.wait_until(SOON, |reqs| !reqs.is_empty()).await);
    assert_eq!(
        uuids_in(&p.receiver.requests(), "alert_short_id"),
        vec![uuid]
    );
    p.shutdown().await;
}

/// Sekoia's API down for longer than an alert's attempts last: the enricher's circuit opens
/// after `circuit_failures` failures in a row, so alerts wait (held, or in the stream) and
/// burn no attempt; the enricher reports not ready; when Sekoia answers again every alert is
/// delivered and none is dead-lettered. Without the circuit each alert would be dead-lettered
/// after its 2 attempts.
#[tokio::test]
async fn a_sekoia_outage_longer_than_the_attempts_holds_alerts_until_it_ends() {
    let enricher = "rule_names_filter = []\nmax_attempts = 2\ncircuit_failures = 2\n\
                    probe_base_delay = \"100ms\"\nprobe_max_delay = \"300ms\"\n";
    let p = Pipeline::start_with(
        &destination("soar", "/soar", MAIN_TEMPLATE),
        DEFAULT_INGEST,
        enricher,
    )
    .await;
    p.sekoia.outage(Some(503));
    let mut uuids = Vec::new();
    for i in 0..3 {
        uuids.push(p.send_alert("rule", &format!("title {i}")).await);
    }
    let health = p.enricher_health();
    assert!(
        eventually(SOON, || async { !health.is_ready() }).await,
        "the enricher reports not ready while its circuit to Sekoia is open"
    );
    // Three alerts with 2 attempts each make at most 6 calls before all are dead-lettered;
    // probes going on past that show the alerts are held instead.
    let calls = || uuids.iter().map(|u| p.sekoia.get_calls(u)).sum::<usize>();
    assert!(
        eventually(SOON, || async { calls() >= 9 }).await,
        "Sekoia keeps being probed ({} calls)",
        calls()
    );
    assert!(
        p.dead_letters().await.is_empty(),
        "nothing is dead-lettered"
    );
    assert!(p.receiver.requests().is_empty());
    let (_, text) = get_text(&p.enricher_url("/metrics")).await;
    assert_eq!(
        metric(&text, "alertsync_sekoia_circuit_open"),
        1.0,
        "{text}"
    );

    p.sekoia.outage(None);
    assert!(
        p.receiver.wait_until(SOON, |reqs| reqs.len() >= 3).await,
        "every held alert is delivered once Sekoia answers"
    );
    let mut sent = uuids_in(&p.receiver.requests(), "alert_short_id");
    sent.sort();
    uuids.sort();
    assert_eq!(sent, uuids);
    assert!(
        p.dead_letters().await.is_empty(),
        "nothing is dead-lettered"
    );
    assert!(
        eventually(SOON, || async { health.is_ready() }).await,
        "the enricher is ready again"
    );
    let (_, text) = get_text(&p.enricher_url("/metrics")).await;
    assert!(
        text.contains("alertsync_sekoia_circuit_open 0"),
        "the gauge says the circuit is closed again: {text}"
    );
    p.shutdown().await;
}
