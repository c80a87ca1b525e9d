//! The alert's lifecycle out (issue: updates, status changes, comments, events): a delivered
//! alert's later states and comments reach the destination, after its creation, once each, at
//! the URL built from the tool's id for it.

use std::time::Duration;

use alertsync_standins::{Reply, alerts};
use alertsync_tests::*;
use serde_json::{Value, json};

/// A destination that reads the tool's id from the creation's answer and sends updates
/// (status changes only, or every state) and comments.
fn soar(changes: &str) -> String {
    format!(
        r#"
[[destinations]]
name = "soar"
url = "{{receiver}}/soar/alerts"
headers = {{ Authorization = "Bearer ${{SOAR_KEY}}" }}
json = '''{{"sourceRef": "{{{{ alert.uuid }}}}", "title": "{{{{ alert.title }}}}"}}'''
remote_id = "{{{{ response.json.id }}}}"
timeout = "5s"
[destinations.retry]
max_attempts = 6
base_delay = "100ms"
max_delay = "1s"
[destinations.on_update]
method = "patch"
url = "{{receiver}}/soar/alerts/{{{{ remote.id }}}}"
json = '''{{"status": "{{{{ alert.status.name }}}}", "urgency": "{{{{ alert.urgency.current_value }}}}", "kind": "{{{{ event.kind }}}}"}}'''
{changes}
[destinations.on_comment]
method = "post"
url = "{{receiver}}/soar/alerts/{{{{ remote.id }}}}/comments"
json = '''{{"message": "{{{{ comment.content }}}}", "author": "{{{{ comment.author }}}}"}}'''
"#
    )
}

/// A new alert in the fake Sekoia (not announced).
fn new_alert(p: &Pipeline) -> (String, Value) {
    let uuid = uuid::Uuid::new_v4().to_string();
    let alert = alerts::new_alert(&uuid, &alerts::random_short_id(), "rule", "title");
    p.sekoia.insert_alert(alert.clone());
    (uuid, alert)
}

fn to(p: &Pipeline, method: &str, path: &str) -> Vec<alertsync_standins::Recorded> {
    p.receiver
        .requests()
        .into_iter()
        .filter(|r| r.method == method && r.path == path)
        .collect()
}

/// Prints what each stage counted and the requests seen, for a failing test.
async fn dump(p: &Pipeline) {
    for url in [
        p.ingest_url("/metrics"),
        p.enricher_url("/metrics"),
        p.forwarder_url("/metrics"),
    ] {
        let (_, m) = get_text(&url).await;
        let lines: Vec<_> = m
            .lines()
            .filter(|l| l.contains("_total") && !l.starts_with('#'))
            .collect();
        eprintln!("{}", lines.join("\n"));
    }
    for r in p.receiver.requests() {
        eprintln!("{} {} -> {}", r.method, r.path, r.status);
    }
    for d in p.dead_letters().await {
        eprintln!("dead letter: {}", d.reason);
    }
}

/// A new alert, announced, whose creation reached the tool; returns its uuid.
async fn created_at_the_tool(p: &Pipeline) -> String {
    let (uuid, alert) = new_alert(p);
    post(p, &alerts::live_notification(&alert)).await;
    assert!(
        p.receiver
            .wait_until(SOON, |r| r.iter().any(|r| r.path == "/soar/alerts"))
            .await,
        "the creation reached the tool"
    );
    uuid
}

/// Posts a LiveAPI notification to the webhook; it must be accepted.
async fn post(p: &Pipeline, notification: &Value) {
    let (status, body) = p
        .post_raw(notification.to_string().into_bytes(), Some(WEBHOOK_TOKEN))
        .await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updates_and_comments_follow_the_creation_once_each_at_the_remote_url() {
    let p = Pipeline::start_with(
        &soar(""),
        "live = true\npoll_interval = \"0\"\n",
        DEFAULT_ENRICHER,
    )
    .await;
    // The tool answers the creation with its own id, which holds characters that must not
    // change the URL's path.
    p.receiver.always(
        "/soar/alerts",
        Reply::status(201).body(r#"{"id": "T 42/../x?y"}"#),
    );
    let remote_path = "/soar/alerts/T%2042%2F..%2Fx%3Fy";
    assert!(
        eventually(SOON, || async { p.sekoia.live_open() > 0 }).await,
        "the socket connects"
    );
    let uuid = created_at_the_tool(&p).await;
    // Acknowledged in Sekoia: announced on the socket, and posted to the webhook too.
    let ack = p.sekoia.set_status(&uuid, "Acknowledged");
    post(&p, &ack).await;
    let ok = p
        .receiver
        .wait_until(SOON, |r| r.iter().any(|r| r.path == remote_path))
        .await;
    if !ok {
        dump(&p).await;
    }
    assert!(ok, "the update reached the remote URL");
    // Closed, maybe within the same second (Sekoia's times are whole seconds): a new state
    // all the same, told apart by its content.
    let closed = p.sekoia.set_status(&uuid, "Closed");
    post(&p, &closed).await;
    assert!(
        p.receiver
            .wait_until(SOON, |r| r
                .iter()
                .filter(|r| r.method == "PATCH" && r.path == remote_path)
                .count()
                >= 2)
            .await
    );
    let comment = p
        .sekoia
        .add_comment(&uuid, "looks \"bad\" {{ 7*7 }}\r\nX: y", "Jane");
    post(&p, &comment).await;
    let comments_path = format!("{remote_path}/comments");
    assert!(
        p.receiver
            .wait_until(SOON, |r| r.iter().any(|r| r.path == comments_path))
            .await
    );
    // Whatever else was in flight is done: nothing more may come.
    assert!(p.wait_settled().await);
    let patches = to(&p, "PATCH", remote_path);
    let statuses: Vec<Value> = patches
        .iter()
        .map(|r| r.json().unwrap()["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        vec![json!("Acknowledged"), json!("Closed")],
        "one PATCH per state, in order"
    );
    assert_eq!(patches[0].json().unwrap()["kind"], "updated");
    assert_ne!(
        patches[0].header("idempotency-key"),
        patches[1].header("idempotency-key")
    );
    assert!(
        patches[0]
            .header("idempotency-key")
            .unwrap()
            .starts_with(&format!("{uuid}:soar:updated:"))
    );
    let posted = to(&p, "POST", &comments_path);
    assert_eq!(posted.len(), 1, "one POST for the comment");
    assert_eq!(
        posted[0].json().unwrap()["message"],
        "looks \"bad\" {{ 7*7 }}\r\nX: y"
    );
    assert_eq!(posted[0].json().unwrap()["author"], "Jane");
    assert_eq!(
        posted[0].header("authorization"),
        Some(format!("Bearer {SOAR_KEY}").as_str())
    );
    assert_eq!(to(&p, "POST", "/soar/alerts").len(), 1, "one creation");
    p.shutdown().await;
}

/// A new alert announced, and acknowledged in Sekoia once its creation has failed at the
/// destination (it was enriched and is being retried).
async fn acknowledged_while_the_creation_fails(p: &Pipeline) {
    let (uuid, alert) = new_alert(p);
    post(p, &alerts::live_notification(&alert)).await;
    assert!(
        p.receiver
            .wait_until(SOON, |r| r.iter().any(|r| r.status == 503))
            .await
    );
    let ack = p.sekoia.set_status(&uuid, "Acknowledged");
    post(p, &ack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_update_waits_for_a_creation_still_being_retried_and_is_never_sent_before_it() {
    let p = Pipeline::start(&soar("")).await;
    // The creation fails three times before the tool takes it.
    p.receiver.script(
        "/soar/alerts",
        vec![Reply::status(503), Reply::status(503), Reply::status(503)],
    );
    p.receiver
        .always("/soar/alerts", Reply::status(201).body(r#"{"id": "T-1"}"#));
    acknowledged_while_the_creation_fails(&p).await;
    let ok = p
        .receiver
        .wait_until(SOON, |r| r.iter().any(|r| r.method == "PATCH"))
        .await;
    if !ok {
        dump(&p).await;
    }
    assert!(ok, "the update arrives once the creation is delivered");
    let requests = p.receiver.requests();
    let created_at = requests
        .iter()
        .position(|r| r.path == "/soar/alerts" && r.status == 201)
        .expect("the creation was delivered");
    let patched_at = requests.iter().position(|r| r.method == "PATCH").unwrap();
    assert!(
        created_at < patched_at,
        "the update came after the creation"
    );
    assert_eq!(requests[patched_at].path, "/soar/alerts/T-1");
    p.shutdown().await;
}

/// The waits of an update for its creation are not attempts of its own, also when the
/// forwarder restarts while it waits: once the creation is delivered, the update still has
/// all its attempts (here, it is retried after a 503 instead of being dead-lettered).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waits_for_the_creation_are_not_attempts_even_across_a_forwarder_restart() {
    let mut p = Pipeline::start(&soar("").replace("max_attempts = 6", "max_attempts = 3")).await;
    // The tool takes the creation at its second try, 8 s after the first: meanwhile the
    // update waits more times than it has attempts.
    p.receiver.script(
        "/soar/alerts",
        vec![Reply::status(503).header("retry-after", "8")],
    );
    p.receiver
        .always("/soar/alerts", Reply::status(201).body(r#"{"id": "T-1"}"#));
    // The update's own first try fails: it must be retried.
    p.receiver
        .script("/soar/alerts/T-1", vec![Reply::status(503)]);
    acknowledged_while_the_creation_fails(&p).await;
    let waiting = "alertsync_deliveries_total{destination=\"soar\",outcome=\"waiting_for_creation\",kind=\"updated\"}";
    assert!(
        eventually(SOON, || async {
            let (_, m) = get_text(&p.forwarder_url("/metrics")).await;
            metric(&m, waiting) >= 3.0
        })
        .await,
        "the update waited"
    );
    assert!(
        p.receiver.requests_to("/soar/alerts").len() == 1,
        "the creation is still to be retried when the forwarder restarts"
    );
    p.restart_forwarder().await;
    let ok = p
        .receiver
        .wait_until(Duration::from_secs(60), |r| {
            r.iter()
                .any(|r| r.method == "PATCH" && (200..300).contains(&r.status))
        })
        .await;
    if !ok {
        dump(&p).await;
    }
    assert!(ok, "the update was retried after its first failure");
    let patches = to(&p, "PATCH", "/soar/alerts/T-1");
    assert_eq!(
        patches.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![503, 200]
    );
    assert!(p.dead_letters().await.is_empty());
    p.shutdown().await;
}

/// Two forwarder replicas: while one replica's update of an alert is in flight, the other
/// does not send the next one; it waits for its turn, then sends it, so the tool gets the
/// states in order and ends on the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_send_an_alerts_updates_one_at_a_time() {
    // One request at a time per replica: a replica busy with an update takes no other, so
    // the next update goes to the other replica.
    let mut p = Pipeline::start(
        &soar("").replace("timeout = \"5s\"", "timeout = \"30s\"\nconcurrency = 1"),
    )
    .await;
    let other = p.start_extra_forwarder().await;
    p.receiver
        .always("/soar/alerts", Reply::status(201).body(r#"{"id": "T-1"}"#));
    let uuid = created_at_the_tool(&p).await;
    assert!(p.wait_settled().await, "the creation is recorded");
    // The tool is slow to answer the first update.
    p.receiver.hold("/soar/alerts/T-1");
    let ack = p.sekoia.set_status(&uuid, "Acknowledged");
    post(&p, &ack).await;
    assert!(
        p.receiver
            .wait_until(SOON, |r| r.iter().any(|r| r.method == "PATCH"))
            .await
    );
    let closed = p.sekoia.set_status(&uuid, "Closed");
    post(&p, &closed).await;
    let waiting = "alertsync_deliveries_total{destination=\"soar\",outcome=\"waiting_for_turn\",kind=\"updated\"}";
    let waited = eventually(SOON, || async {
        let mut n = 0.0;
        for url in [p.forwarder_url("/metrics"), format!("{other}/metrics")] {
            n += metric(&get_text(&url).await.1, waiting);
        }
        n >= 1.0
    })
    .await;
    let patches = to(&p, "PATCH", "/soar/alerts/T-1");
    assert_eq!(
        patches.len(),
        1,
        "the second update was sent while the first was in flight"
    );
    assert!(waited, "the second update waited for its turn");
    p.receiver.release("/soar/alerts/T-1");
    assert!(
        p.receiver
            .wait_until(SOON, |r| r.iter().filter(|r| r.method == "PATCH").count()
                >= 2)
            .await,
        "the second update was sent once the first was done"
    );
    assert!(p.wait_settled().await);
    let statuses: Vec<Value> = to(&p, "PATCH", "/soar/alerts/T-1")
        .iter()
        .map(|r| r.json().unwrap()["status"].clone())
        .collect();
    assert_eq!(statuses, vec![json!("Acknowledged"), json!("Closed")]);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_older_or_repeated_state_is_skipped_and_a_never_seen_alert_gets_no_update() {
    let p = Pipeline::start(&soar("changes = [\"status\"]")).await;
    p.receiver
        .always("/soar/alerts", Reply::status(201).body(r#"{"id": "T-2"}"#));
    let uuid = created_at_the_tool(&p).await;
    let ack = p.sekoia.set_status(&uuid, "Acknowledged");
    // The same update three times (as the socket, the webhook and a retrying tool would).
    for _ in 0..3 {
        post(&p, &ack).await;
    }
    // The same state announced under another notification uuid: enriched again, not sent.
    let mut again = ack.clone();
    again["metadata"]["uuid"] = json!(uuid::Uuid::new_v4().to_string());
    post(&p, &again).await;
    let skipped = |reason: &'static str| {
        let p = &p;
        async move {
            let (_, m) = get_text(&p.forwarder_url("/metrics")).await;
            metric(
                &m,
                &format!(
                    "alertsync_lifecycle_skipped_total{{destination=\"soar\",kind=\"updated\",reason=\"{reason}\"}}"
                ),
            )
        }
    };
    // One of the two is sent, the other is the same state.
    assert!(eventually(SOON, || async { skipped("same_state").await == 1.0 }).await);
    // An urgency change only: not a status change, not sent (`changes = ["status"]`).
    let urgent = p.sekoia.set_urgency(&uuid, 90);
    post(&p, &urgent).await;
    assert!(eventually(SOON, || async { skipped("unchanged").await == 1.0 }).await);
    // An alert created before this deployment: its update is counted, not sent.
    let (old, _) = new_alert(&p);
    let old_update = p.sekoia.set_status(&old, "Acknowledged");
    post(&p, &old_update).await;
    assert!(eventually(SOON, || async { skipped("creation_not_seen").await == 1.0 }).await);
    assert!(p.wait_settled().await);
    let patches = to(&p, "PATCH", "/soar/alerts/T-2");
    assert_eq!(patches.len(), 1, "one PATCH for one new status");
    assert_eq!(patches[0].json().unwrap()["status"], "Acknowledged");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updates_and_comments_made_while_the_ingest_was_down_arrive_through_the_poller() {
    let p = Pipeline::start_with(
        &soar(""),
        "live = false\npoll_interval = \"1s\"\npoll_lookback = \"10m\"\n",
        DEFAULT_ENRICHER,
    )
    .await;
    p.receiver
        .always("/soar/alerts", Reply::status(201).body(r#"{"id": "T-3"}"#));
    // Created a minute ago: the poller publishes an update only for an alert updated after
    // its creation (by `updated_at`, whole seconds), as the changes below will be.
    let uuid = uuid::Uuid::new_v4().to_string();
    let mut alert = alerts::new_alert(&uuid, &alerts::random_short_id(), "rule", "title");
    let earlier = alert["created_at"].as_i64().unwrap() - 60;
    alert["created_at"] = json!(earlier);
    alert["updated_at"] = json!(earlier);
    p.sekoia.insert_alert(alert);
    assert!(
        p.receiver
            .wait_until(SOON, |r| r.iter().any(|r| r.path == "/soar/alerts"))
            .await,
        "the poller found the alert"
    );
    // Nobody hears these (no socket): only the poller can find them.
    p.sekoia.set_status(&uuid, "Ongoing");
    p.sekoia.add_comment(&uuid, "seen while down", "Jane");
    let ok = p
        .receiver
        .wait_until(SOON, |r| {
            r.iter().any(|r| r.method == "PATCH")
                && r.iter().any(|r| r.path == "/soar/alerts/T-3/comments")
        })
        .await;
    if !ok {
        dump(&p).await;
    }
    assert!(ok, "the poller caught up the update and the comment");
    assert!(p.wait_settled().await);
    assert_eq!(to(&p, "PATCH", "/soar/alerts/T-3").len(), 1);
    // The alert's older comment (the fixture has one) is caught up too; each comment once.
    let comments = to(&p, "POST", "/soar/alerts/T-3/comments");
    let new: Vec<_> = comments
        .iter()
        .filter(|r| r.json().unwrap()["message"] == "seen while down")
        .collect();
    assert_eq!(new.len(), 1);
    let keys: std::collections::HashSet<_> = comments
        .iter()
        .map(|r| r.header("idempotency-key"))
        .collect();
    assert_eq!(keys.len(), comments.len(), "no comment sent twice");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_older_state_arriving_after_a_newer_one_is_skipped() {
    use alertsync_proto::{Message as _, v1};
    let p = Pipeline::start(&soar("")).await;
    p.receiver
        .always("/soar/alerts", Reply::status(201).body(r#"{"id": "T-5"}"#));
    let uuid = created_at_the_tool(&p).await;
    let closed = p.sekoia.set_status(&uuid, "Closed");
    post(&p, &closed).await;
    assert!(
        p.receiver
            .wait_until(SOON, |r| r.iter().any(|r| r.method == "PATCH"))
            .await
    );
    // An enrichment of an earlier state (Ongoing, a second before) that was held up and comes
    // last, as a slow enricher replica would publish it.
    let mut older = p.sekoia.alert(&uuid).unwrap();
    older["status"] = json!({"uuid": "1f2f88d5-ff5b-48bf-bbbc-00c2fff82d9f", "name": "Ongoing"});
    older["updated_at"] = json!(older["updated_at"].as_i64().unwrap() - 1);
    let late = v1::EnrichedAlert {
        created: Some(v1::AlertNotification {
            alert_uuid: uuid.clone(),
            kind: v1::EventKind::Updated as i32,
            event_id: "late".into(),
            updated_json: "{}".into(),
            ..Default::default()
        }),
        alert_json: serde_json::to_vec(&older).unwrap().into(),
        ..Default::default()
    };
    p.js.publish(p.subjects().enriched(""), late.encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        eventually(SOON, || async {
            let (_, m) = get_text(&p.forwarder_url("/metrics")).await;
            metric(&m, "alertsync_lifecycle_skipped_total{destination=\"soar\",kind=\"updated\",reason=\"older_state\"}") == 1.0
        })
        .await
    );
    let patches = to(&p, "PATCH", "/soar/alerts/T-5");
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].json().unwrap()["status"], "Closed");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updates_of_a_dead_lettered_creation_are_skipped_until_the_creation_is_replayed() {
    let p = Pipeline::start(&soar("")).await;
    // The tool refuses the creation (a 400 is not retried): dead-lettered.
    p.receiver.script(
        "/soar/alerts",
        vec![Reply::status(400).body(r#"{"error":"no"}"#)],
    );
    p.receiver
        .always("/soar/alerts", Reply::status(201).body(r#"{"id": "T-6"}"#));
    let (uuid, alert) = new_alert(&p);
    post(&p, &alerts::live_notification(&alert)).await;
    let dead = p.wait_dead_letters(1, SOON).await;
    assert_eq!(dead.len(), 1);
    let ack = p.sekoia.set_status(&uuid, "Acknowledged");
    post(&p, &ack).await;
    assert!(
        eventually(SOON, || async {
            let (_, m) = get_text(&p.forwarder_url("/metrics")).await;
            metric(&m, "alertsync_lifecycle_skipped_total{destination=\"soar\",kind=\"updated\",reason=\"creation_dead_lettered\"}") == 1.0
        })
        .await,
        "the update was counted, not sent"
    );
    // The creation replayed from the dead-letter queue is delivered; the next update flows.
    let replay = p.subjects().replay_forward("soar");
    p.js.publish(replay, dead[0].original_payload.clone().into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        p.receiver
            .wait_until(SOON, |r| r
                .iter()
                .any(|r| r.path == "/soar/alerts" && r.status == 201))
            .await
    );
    let closed = p.sekoia.set_status(&uuid, "Closed");
    post(&p, &closed).await;
    assert!(
        p.receiver
            .wait_until(SOON, |r| r.iter().any(|r| r.method == "PATCH"))
            .await
    );
    let patches = to(&p, "PATCH", "/soar/alerts/T-6");
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].json().unwrap()["status"], "Closed");
    p.shutdown().await;
}
