//! `[enricher.events]`: the alert's events (Sekoia's events search job) reach the templates,
//! bounded by `limit` and `timeout`; a failed or slow search follows `on_failure`; event text
//! changes neither the body's structure nor the URL's path.

use std::time::Duration;

use alertsync_standins::{EventsJob, alerts};
use alertsync_tests::*;
use serde_json::{Value, json};

/// A destination whose URL and body read the events.
const DESTINATION: &str = r#"
[[destinations]]
name = "soar"
url = "{receiver}/soar/{{ events[0]['host.name'] if events else 'none' }}"
json = '''{"uuid": "{{ alert.uuid }}", "count": "{{ events | length }}", "hosts": "{% for e in events %}{{ e['host.name'] }};{% endfor %}", "error": "{{ events_error }}"}'''
timeout = "5s"
[destinations.retry]
base_delay = "100ms"
max_delay = "1s"
"#;

fn events_lines(limit: usize, timeout: &str, on_failure: &str) -> String {
    format!(
        "{DEFAULT_ENRICHER}max_attempts = 3\n[enricher.events]\nlimit = {limit}\n\
         timeout = \"{timeout}\"\non_failure = \"{on_failure}\"\nearliest = \"first_seen\"\n"
    )
}

/// A new alert with `events` in the fake Sekoia, announced; returns its uuid and short id.
async fn alert_with(p: &Pipeline, events: Vec<Value>) -> (String, String) {
    let uuid = uuid::Uuid::new_v4().to_string();
    let short_id = alerts::random_short_id();
    p.sekoia
        .insert_alert(alerts::new_alert(&uuid, &short_id, "rule", "title"));
    p.sekoia.set_events(&short_id, events);
    (uuid, short_id)
}

fn event(i: usize, host: &str) -> Value {
    json!({"source.ip": format!("10.0.0.{}", i % 250), "host.name": host, "sekoiaio.intake.dialect": "x"})
}

async fn body_for(p: &Pipeline, uuid: &str) -> (String, Value) {
    let found = p
        .receiver
        .wait_until(SOON, |r| {
            r.iter()
                .any(|r| r.json().is_some_and(|j| j["uuid"] == uuid))
        })
        .await;
    assert!(found, "the alert was delivered");
    let r = p
        .receiver
        .requests()
        .into_iter()
        .find(|r| r.json().is_some_and(|j| j["uuid"] == uuid))
        .unwrap();
    (r.path.clone(), r.json().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_are_attached_up_to_the_limit_following_pages_and_hostile_values_stay_data() {
    let p = Pipeline::start_with(
        DESTINATION,
        DEFAULT_INGEST,
        &events_lines(150, "20s", "deliver"),
    )
    .await;
    let hostile = "h\"}, \"x\": \"{{ 7*7 }}\r\n/../admin?q=1#f";
    let mut events = vec![event(0, hostile)];
    events.extend((1..250).map(|i| event(i, &format!("host{i}"))));
    let (uuid, short_id) = alert_with(&p, events).await;
    p.announce(&uuid).await;
    let (path, body) = body_for(&p, &uuid).await;
    assert_eq!(body["count"], "150", "limit honoured across two pages");
    assert_eq!(body["error"], "");
    let hosts = body["hosts"].as_str().unwrap();
    assert!(hosts.starts_with(&format!("{hostile};host1;")), "{hosts}");
    assert_eq!(hosts.matches(';').count(), 150);
    // The hostile host name is one encoded path segment, not a path of its own.
    assert_eq!(
        path,
        "/soar/h%22%7D%2C%20%22x%22%3A%20%22%7B%7B%207%2A7%20%7D%7D%0D%0A%2F..%2Fadmin%3Fq%3D1%23f"
    );
    let started = p.sekoia.events_job_requests();
    assert_eq!(started.len(), 1);
    assert_eq!(
        started[0]["term"],
        format!("alert_short_ids:\"{short_id}\"")
    );
    assert_eq!(started[0]["max_last_events"], 150);
    assert_ne!(
        started[0]["earliest_time"], "first_seen",
        "the alert's own first_seen_at"
    );
    assert_eq!(p.sekoia.events_pages_served(), 2);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_or_slow_search_delivers_without_events_and_says_why() {
    let p = Pipeline::start_with(
        DESTINATION,
        DEFAULT_INGEST,
        &events_lines(10, "1s", "deliver"),
    )
    .await;
    let (failed, failed_short) = alert_with(&p, vec![event(1, "a")]).await;
    p.sekoia
        .script_events_job(&failed_short, EventsJob::Fail(3));
    let (slow, slow_short) = alert_with(&p, vec![event(1, "b")]).await;
    p.sekoia
        .script_events_job(&slow_short, EventsJob::Slow(Duration::from_secs(30)));
    p.announce(&failed).await;
    p.announce(&slow).await;
    let (path, body) = body_for(&p, &failed).await;
    assert_eq!(body["count"], "0");
    assert!(
        body["error"].as_str().unwrap().contains("status 3"),
        "{body}"
    );
    assert_eq!(path, "/soar/none");
    let (_, body) = body_for(&p, &slow).await;
    assert_eq!(body["count"], "0");
    assert!(
        body["error"].as_str().unwrap().contains("did not finish"),
        "{body}"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_on_failure_retry_a_failing_search_is_retried_then_dead_lettered() {
    let p = Pipeline::start_with(
        DESTINATION,
        DEFAULT_INGEST,
        &events_lines(10, "5s", "retry"),
    )
    .await;
    let (flaky, flaky_short) = alert_with(&p, vec![event(1, "ok")]).await;
    // Fails once, then works: delivered with its events.
    p.sekoia.script_events_job(&flaky_short, EventsJob::Fail(4));
    let (broken, broken_short) = alert_with(&p, vec![event(1, "never")]).await;
    for _ in 0..3 {
        p.sekoia
            .script_events_job(&broken_short, EventsJob::Fail(4));
    }
    p.announce(&flaky).await;
    p.announce(&broken).await;
    let (_, body) = body_for(&p, &flaky).await;
    assert_eq!(body["count"], "1");
    let dead = p.wait_dead_letters(1, SOON).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].alert_uuid, broken);
    assert!(dead[0].reason.contains("status 4"), "{}", dead[0].reason);
    assert_eq!(dead[0].stage, "enrich");
    p.shutdown().await;
}
