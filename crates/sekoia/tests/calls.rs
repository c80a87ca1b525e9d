//! The Sekoia calls besides Get Alert, against the fake Sekoia (a real HTTP server on
//! 127.0.0.1): the list by update time, comments, the events search job (paging, failed and
//! slow jobs, throttling, the deadline), the write-back calls, and a rejected key on each.

use std::time::{Duration, Instant};

use alertsync_config::{Config, Stage};
use alertsync_http::CallOutcome;
use alertsync_sekoia::{EventsQuery, ListBy, ListError, SekoiaClient};
use alertsync_standins::{EventsJob, FakeSekoia, alerts};
use serde_json::{Value, json};

const KEY: &str = "sekoia-key-0123456789abcdefghij";
const DEADLINE: Duration = Duration::from_secs(20);

fn client(base: &str, key: &str) -> SekoiaClient {
    let text = format!(
        r#"
[nats]
url = "nats://127.0.0.1:4222"
[sekoia]
base_url = "{base}"
api_key = "${{KEY}}"
timeout = "5s"
[enricher]
listen = "127.0.0.1:0"
"#
    );
    let env = |k: &str| (k == "KEY").then(|| key.to_string());
    let cfg = Config::parse(&text, &env, &[Stage::Enricher]).unwrap();
    SekoiaClient::new(cfg.sekoia.as_ref().unwrap()).unwrap()
}

async fn setup() -> (FakeSekoia, SekoiaClient) {
    let fake = FakeSekoia::start(KEY).await;
    let client = client(&fake.base_url(), KEY);
    (fake, client)
}

/// A new alert in the fake (Pending, one comment, a history); its uuid and short id.
fn new_alert(fake: &FakeSekoia) -> (String, String) {
    let uuid = uuid::Uuid::new_v4().to_string();
    let short_id = alerts::random_short_id();
    fake.insert_alert(alerts::new_alert(&uuid, &short_id, "rule", "title"));
    (uuid, short_id)
}

fn query(short_id: &str, limit: usize) -> EventsQuery {
    EventsQuery {
        term: format!("alert_short_ids:\"{short_id}\""),
        earliest: "2026-01-01T10:21:48.512073+00:00".into(),
        latest: "now".into(),
        limit,
    }
}

/// `n` flat events, as Sekoia's search gives them (dotted keys).
fn events(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"n": i, "source.ip": format!("10.0.{}.{}", i / 256, i % 256), "host.name": "web-1"}))
        .collect()
}

fn done<T: std::fmt::Debug>(outcome: CallOutcome<T>) -> T {
    match outcome {
        CallOutcome::Done(v) => v,
        other => panic!("not done: {other:?}"),
    }
}

#[tokio::test]
async fn events_are_paged_up_to_the_limit() {
    let (fake, client) = setup().await;
    fake.set_events("ALpaged", events(300));
    let found = done(client.search_events(&query("ALpaged", 250), DEADLINE).await);
    assert_eq!(found.len(), 250, "the limit is honoured");
    let order: Vec<u64> = found.iter().map(|e| e["n"].as_u64().unwrap()).collect();
    assert_eq!(
        order,
        (0..250).collect::<Vec<u64>>(),
        "in order, none twice"
    );
    assert_eq!(found[3]["source.ip"], "10.0.0.3");
    assert_eq!(fake.events_pages_served(), 3, "100 + 100 + 50");
    assert_eq!(fake.events_jobs_started(), 1);
    assert_eq!(
        fake.events_job_requests(),
        vec![json!({
            "term": "alert_short_ids:\"ALpaged\"",
            "earliest_time": "2026-01-01T10:21:48.512073+00:00",
            "latest_time": "now",
            "visible": false,
            "max_last_events": 250,
        })]
    );

    // Fewer events than asked: paging stops at the short page.
    fake.set_events("ALfew", events(120));
    let found = done(client.search_events(&query("ALfew", 1000), DEADLINE).await);
    assert_eq!(found.len(), 120);
    assert_eq!(fake.events_pages_served(), 5, "100 + 20");

    // No events at all.
    let found = done(client.search_events(&query("ALnone", 10), DEADLINE).await);
    assert!(found.is_empty());
    assert_eq!(fake.events_pages_served(), 6);
}

#[tokio::test]
async fn a_failed_job_is_transient_and_names_its_status() {
    let (fake, client) = setup().await;
    fake.set_events("ALfail", events(5));
    for status in [3u8, 4] {
        fake.script_events_job("ALfail", EventsJob::Fail(status));
        match client.search_events(&query("ALfail", 10), DEADLINE).await {
            CallOutcome::Transient { reason, .. } => {
                assert!(
                    reason.contains(&format!("ended with status {status}")),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(fake.events_pages_served(), 0, "no page of a failed job");
    // The next job is not scripted: it works.
    assert_eq!(
        done(client.search_events(&query("ALfail", 10), DEADLINE).await).len(),
        5
    );
}

#[tokio::test]
async fn a_slow_job_is_waited_for_within_the_deadline_and_abandoned_past_it() {
    let (fake, client) = setup().await;
    fake.set_events("ALslow", events(2));
    fake.script_events_job("ALslow", EventsJob::Slow(Duration::from_millis(700)));
    assert_eq!(
        done(client.search_events(&query("ALslow", 10), DEADLINE).await).len(),
        2
    );

    fake.script_events_job("ALslow", EventsJob::Slow(Duration::from_secs(30)));
    let started = Instant::now();
    match client
        .search_events(&query("ALslow", 10), Duration::from_millis(1500))
        .await
    {
        CallOutcome::Transient { reason, .. } => {
            assert_eq!(reason, "the events search did not finish within 1.5s");
        }
        other => panic!("{other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "bounded by the deadline: {took:?}"
    );
}

#[tokio::test]
async fn a_throttled_or_failing_start_is_tried_again_within_the_deadline() {
    let (fake, client) = setup().await;
    fake.set_events("ALthrottled", events(3));
    fake.script_events_job("ALthrottled", EventsJob::Status(429));
    fake.script_events_job("ALthrottled", EventsJob::Status(503));
    assert_eq!(
        done(
            client
                .search_events(&query("ALthrottled", 10), DEADLINE)
                .await
        )
        .len(),
        3
    );
    assert_eq!(
        fake.events_job_requests().len(),
        3,
        "429, 503, then started"
    );
    assert_eq!(fake.events_jobs_started(), 1);

    // A Retry-After beyond the deadline: no waiting to fail, the caller is told to wait.
    fake.retry_after(Some(Duration::from_secs(60)));
    fake.script_events_job("ALthrottled", EventsJob::Status(429));
    let started = Instant::now();
    match client
        .search_events(&query("ALthrottled", 10), Duration::from_secs(5))
        .await
    {
        CallOutcome::Throttled {
            retry_after,
            reason,
        } => {
            assert_eq!(retry_after, Some(Duration::from_secs(60)));
            assert_eq!(
                reason,
                "starting the events search answered 429: scripted answer"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(fake.events_jobs_started(), 1);

    // A Retry-After within the deadline is waited for.
    fake.retry_after(Some(Duration::from_secs(1)));
    fake.script_events_job("ALthrottled", EventsJob::Status(503));
    let started = Instant::now();
    assert_eq!(
        done(
            client
                .search_events(&query("ALthrottled", 10), DEADLINE)
                .await
        )
        .len(),
        3
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn a_refused_search_is_permanent() {
    let (fake, client) = setup().await;
    fake.script_events_job("ALbad", EventsJob::Status(400));
    match client.search_events(&query("ALbad", 10), DEADLINE).await {
        CallOutcome::Permanent { status, reason } => {
            assert_eq!(status, Some(400));
            assert_eq!(
                reason,
                "starting the events search answered 400: scripted answer"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.events_job_requests().len(), 1, "not tried again");
}

fn assert_no_part_of_the_key(text: &str, key: &str) {
    for n in 4..=key.len() {
        assert!(!text.contains(&key[..n]), "{:?} in {text}", &key[..n]);
    }
}

#[tokio::test]
async fn a_rejected_key_is_told_by_every_call() {
    let fake = FakeSekoia::start(KEY).await;
    let (uuid, short_id) = new_alert(&fake);
    fake.set_events(&short_id, events(3));
    let wrong = "wrong-key-abcdefghijklmnopqrstuvwxyz";
    let client = client(&fake.base_url(), wrong);
    let action = fake.transition_id("Acknowledge").unwrap();
    let outcomes: Vec<(&str, CallOutcome<()>)> = vec![
        ("me", client.me().await.map(|_| ())),
        (
            "list_comments",
            client.list_comments(&uuid).await.map(|_| ()),
        ),
        (
            "search_events",
            client
                .search_events(&query(&short_id, 10), DEADLINE)
                .await
                .map(|_| ()),
        ),
        (
            "post_comment",
            client
                .post_comment(&uuid, "x", "alertsync")
                .await
                .map(|_| ()),
        ),
        ("get_workflow", client.get_workflow(&uuid).await.map(|_| ())),
        (
            "patch_workflow",
            client.patch_workflow(&uuid, &action, None).await,
        ),
    ];
    for (call, outcome) in outcomes {
        match outcome {
            CallOutcome::CredentialsRejected { status, reason } => {
                assert_eq!(status, 401, "{call}");
                assert!(
                    reason.ends_with("answered 401: Invalid or expired API key"),
                    "{call}: {reason}"
                );
                assert_no_part_of_the_key(&reason, wrong);
            }
            other => panic!("{call}: {other:?}"),
        }
    }
    for by in [ListBy::Created, ListBy::Updated] {
        match client.list_alerts_by(by, 0, 0, 10, &[]).await {
            Err(ListError::KeyRejected(401)) => {}
            other => panic!("{by:?}: {other:?}"),
        }
    }
    assert_eq!(fake.events_jobs_started(), 0);
    assert_eq!(fake.comments_posted(&uuid), Vec::<Value>::new());
    assert_eq!(fake.workflow_patches(&uuid), Vec::<Value>::new());
    let alert = fake.alert(&uuid).unwrap();
    assert_eq!(alert["status"]["name"], "Pending", "nothing changed");
}

#[tokio::test]
async fn the_list_by_update_time_gives_changed_alerts_oldest_change_first() {
    let (fake, client) = setup().await;
    let t0 = 1_767_262_900;
    // Created in this order, changed in another; b and c changed in the same second.
    let mut d = String::new();
    for (name, created, updated) in [
        ("a", t0, t0 + 30),
        ("b", t0 + 1, t0 + 20),
        ("c", t0 + 2, t0 + 20),
        ("d", t0 + 3, t0 + 3),
    ] {
        let uuid = uuid::Uuid::new_v4().to_string();
        let mut a = alerts::new_alert(&uuid, &alerts::random_short_id(), "rule", name);
        a["created_at"] = json!(created);
        a["updated_at"] = json!(updated);
        fake.insert_alert(a);
        d = uuid;
    }
    let titles = |page: alertsync_sekoia::AlertPage| -> Vec<String> {
        page.items
            .iter()
            .map(|a| a["title"].as_str().unwrap().to_string())
            .collect()
    };
    let by_update = client
        .list_alerts_by(ListBy::Updated, t0 + 20, 0, 10, &[])
        .await
        .unwrap();
    assert_eq!(
        titles(by_update),
        ["b", "c", "a"],
        "inclusive bound, ties in insertion order"
    );
    let by_creation = client.list_alerts(t0 + 1, 0, 10, &[]).await.unwrap();
    assert_eq!(titles(by_creation), ["b", "c", "d"]);
    // Paging.
    let second = client
        .list_alerts_by(ListBy::Updated, t0, 2, 2, &[])
        .await
        .unwrap();
    assert_eq!(titles(second), ["c", "a"]);

    // A status change moves the alert to the end of the list by update time.
    fake.set_status(&d, "Acknowledged");
    let by_update = client
        .list_alerts_by(ListBy::Updated, t0 + 20, 0, 10, &[])
        .await
        .unwrap();
    assert_eq!(titles(by_update), ["b", "c", "a", "d"]);
}

#[tokio::test]
async fn comments_are_listed_as_sekoia_gives_them() {
    let (fake, client) = setup().await;
    let (uuid, _) = new_alert(&fake);
    fake.add_comment(&uuid, "looks \"bad\"\r\n{{ 7*7 }}", "Jane");
    let comments = done(client.list_comments(&uuid).await);
    assert_eq!(comments.len(), 2, "the fixture's and the new one");
    let c = &comments[1];
    assert_eq!(c["content"], "looks \"bad\"\r\n{{ 7*7 }}");
    assert_eq!(c["author"], "Jane");
    assert_eq!(c["created_by_type"], "user");
    assert_eq!(c["unseen"], true);
    assert!(c["date"].is_i64());
    assert!(c["uuid"].is_string());

    let unknown = uuid::Uuid::new_v4().to_string();
    match client.list_comments(&unknown).await {
        CallOutcome::Permanent { status, reason } => {
            assert_eq!(status, Some(404));
            assert_eq!(reason, "listing comments answered 404: Alert not found");
        }
        other => panic!("{other:?}"),
    }
    // Not a uuid: refused before any request, nothing of it in a path.
    for bad in ["../../v1/me", "", "6a1b5cd2-1b3f-4a53-9b3e-0d1f2e3a4b5c/x"] {
        match client.list_comments(bad).await {
            CallOutcome::Permanent {
                status: None,
                reason,
            } => {
                assert_eq!(reason, "the alert uuid is not a uuid")
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_workflow_is_read_and_acted_on_by_the_key() {
    let (fake, client) = setup().await;
    let (uuid, _) = new_alert(&fake);
    let identity = done(client.me().await);
    assert_eq!(identity["uuid"], json!(fake.apikey_identity()));
    assert_eq!(identity["type"], "apikey");

    let actions = done(client.get_workflow(&uuid).await);
    let names: Vec<&str> = actions.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["Acknowledge", "Reject"]);
    assert_eq!(actions[0].id, "937bdabf-6a08-434b-b6d3-d7447e4e452a");
    assert_eq!(actions[0].description, "Acknowledge the alert");

    done(
        client
            .patch_workflow(&uuid, &actions[0].id, Some("taken in \"SOAR\" #42"))
            .await,
    );
    let alert = fake.alert(&uuid).unwrap();
    assert_eq!(alert["status"]["name"], "Acknowledged");
    assert_eq!(
        alert["status"]["uuid"],
        "8f206505-af6d-433e-93f4-775d46dc7d0f"
    );
    assert_eq!(alert["updated_by"], json!(fake.apikey_identity()));
    assert_eq!(alert["updated_by_type"], "apikey");
    let comment = alert["comments"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(comment["content"], "taken in \"SOAR\" #42");
    assert_eq!(comment["created_by"], json!(fake.apikey_identity()));
    assert_eq!(comment["created_by_type"], "apikey");
    assert_eq!(
        fake.workflow_patches(&uuid),
        vec![json!({"action_uuid": actions[0].id, "comment": "taken in \"SOAR\" #42"})]
    );

    let names: Vec<String> = done(client.get_workflow(&uuid).await)
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["Validate", "Reject", "Close"]);

    // Acknowledge again: not allowed from Acknowledged.
    match client.patch_workflow(&uuid, &actions[0].id, None).await {
        CallOutcome::Permanent { status, reason } => {
            assert_eq!(status, Some(400));
            assert!(
                reason.starts_with("acting on the workflow answered 400: Action 937bdabf"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        fake.workflow_patches(&uuid)[1],
        json!({"action_uuid": actions[0].id, "comment": null})
    );
    let close = fake.transition_id("Close").unwrap();
    done(client.patch_workflow(&uuid, &close, None).await);
    assert_eq!(fake.alert(&uuid).unwrap()["status"]["name"], "Closed");
    assert!(
        done(client.get_workflow(&uuid).await).is_empty(),
        "Closed is final"
    );

    // Not uuids: refused before any request.
    match client.patch_workflow(&uuid, "Close", None).await {
        CallOutcome::Permanent { status: None, .. } => {}
        other => panic!("{other:?}"),
    }
    match client.get_workflow("nope").await {
        CallOutcome::Permanent { status: None, .. } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.workflow_patches(&uuid).len(), 3);
}

#[tokio::test]
async fn a_hostile_comment_arrives_byte_identical() {
    let (fake, client) = setup().await;
    let (uuid, _) = new_alert(&fake);
    let piece = "He said \"stop\" \\ {{ alert.uuid }} {% if x %}\r\nX-Injected: yes\r\n\u{2028}\u{202e}🔥中文'\t";
    let mut content = String::new();
    while content.len() < 10 * 1024 {
        content.push_str(piece);
    }
    // 40 characters of two bytes each: cut to 32 characters, not 32 bytes.
    let author = "é".repeat(40);
    let made = done(client.post_comment(&uuid, &content, &author).await);
    assert_eq!(made["content"].as_str(), Some(content.as_str()));
    assert_eq!(made["author"].as_str(), Some("é".repeat(32).as_str()));
    assert_eq!(made["created_by"], json!(fake.apikey_identity()));
    assert_eq!(made["created_by_type"], "apikey");
    let posted = fake.comments_posted(&uuid);
    assert_eq!(posted.len(), 1);
    assert_eq!(
        posted[0],
        json!({"content": content, "author": "é".repeat(32)})
    );
    let alert = fake.alert(&uuid).unwrap();
    let kept = alert["comments"].as_array().unwrap().last().unwrap();
    assert_eq!(kept["content"].as_str(), Some(content.as_str()));
    assert_eq!(alert["number_of_total_comments"], 2);
}

#[tokio::test]
async fn writes_answer_what_sekoia_answers() {
    let (fake, client) = setup().await;
    let (uuid, _) = new_alert(&fake);
    let ack = fake.transition_id("Acknowledge").unwrap();
    fake.script_writes(&[429, 503, 401, 403]);
    assert!(matches!(
        client.post_comment(&uuid, "a", "b").await,
        CallOutcome::Throttled { .. }
    ));
    assert!(matches!(
        client.patch_workflow(&uuid, &ack, None).await,
        CallOutcome::Transient {
            status: Some(503),
            ..
        }
    ));
    assert!(matches!(
        client.post_comment(&uuid, "a", "b").await,
        CallOutcome::CredentialsRejected { status: 401, .. }
    ));
    assert!(matches!(
        client.patch_workflow(&uuid, &ack, None).await,
        CallOutcome::CredentialsRejected { status: 403, .. }
    ));
    assert_eq!(fake.alert(&uuid).unwrap()["status"]["name"], "Pending");
    done(client.post_comment(&uuid, "a", "b").await);
    done(client.patch_workflow(&uuid, &ack, None).await);
    assert_eq!(fake.comments_posted(&uuid).len(), 3);
    assert_eq!(fake.workflow_patches(&uuid).len(), 3);
    assert_eq!(fake.alert(&uuid).unwrap()["status"]["name"], "Acknowledged");

    // An unknown alert.
    let unknown = uuid::Uuid::new_v4().to_string();
    match client.post_comment(&unknown, "a", "b").await {
        CallOutcome::Permanent { status, reason } => {
            assert_eq!(status, Some(404));
            assert_eq!(reason, "posting a comment answered 404: Alert not found");
        }
        other => panic!("{other:?}"),
    }
}
