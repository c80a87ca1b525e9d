//! The fake's alert state, notifications and answers, over plain HTTP/1.1 (no client of ours:
//! what goes over the wire is what is checked).

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::broadcast;

use super::*;

const KEY: &str = "test-key";
const ACKNOWLEDGED: &str = "8f206505-af6d-433e-93f4-775d46dc7d0f";

async fn fake() -> (FakeSekoia, String, broadcast::Receiver<String>) {
    let fake = FakeSekoia::start(KEY).await;
    let uuid = uuid::Uuid::new_v4().to_string();
    fake.insert_alert(crate::alerts::new_alert(
        &uuid,
        &crate::alerts::random_short_id(),
        "rule",
        "title",
    ));
    let rx = fake.inner.live_tx.subscribe();
    (fake, uuid, rx)
}

/// `method path` with `key` and `body`: the status and the JSON answered.
async fn call(
    fake: &FakeSekoia,
    method: &str,
    path: &str,
    key: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(fake.addr).await.unwrap();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: fake\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The notifications pushed so far.
fn pushed(rx: &mut broadcast::Receiver<String>) -> Vec<Value> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .map(|t| serde_json::from_str(&t).unwrap())
        .collect()
}

fn assert_metadata(n: &Value, alert: &Value) {
    assert_eq!(n["metadata"]["version"], 2);
    assert!(uuid::Uuid::try_parse(n["metadata"]["uuid"].as_str().unwrap()).is_ok());
    let at = n["metadata"]["created_at"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
    assert_eq!(n["metadata"]["community_uuid"], alert["community_uuid"]);
}

#[tokio::test]
async fn a_status_change_is_made_recorded_and_announced() {
    let (fake, uuid, mut rx) = fake().await;
    let before = fake.alert(&uuid).unwrap();
    let n = fake.set_status(&uuid, "Acknowledged");
    let alert = fake.alert(&uuid).unwrap();
    assert_eq!(pushed(&mut rx), vec![n.clone()], "announced as returned");
    assert_metadata(&n, &alert);
    assert_eq!(n["type"], "alert");
    assert_eq!(n["action"], "updated");
    assert_eq!(
        n["attributes"],
        json!({
            "uuid": uuid,
            "short_id": alert["short_id"],
            "updated": {"status": ACKNOWLEDGED, "status_name": "Acknowledged"},
        })
    );
    assert_eq!(alert["status"]["uuid"], ACKNOWLEDGED);
    assert_eq!(alert["status"]["name"], "Acknowledged");
    assert!(alert["status"]["description"].is_string());
    assert_eq!(alert["updated_by"], ANALYST);
    assert_eq!(alert["updated_by_type"], "user");
    assert!(alert["updated_at"].as_i64() >= before["updated_at"].as_i64());
    let entry = &alert["history"][0];
    assert_eq!(entry["entry_type"], "alert");
    assert_eq!(
        entry["alert"],
        json!({"status": "Acknowledged", "previous_status": "Pending"})
    );
    assert_eq!(
        alert["history"].as_array().unwrap().len(),
        before["history"].as_array().unwrap().len() + 1
    );
}

#[tokio::test]
async fn updated_at_never_goes_backwards_and_a_quiet_change_is_not_announced() {
    let (fake, uuid, mut rx) = fake().await;
    let future = state::now() + 1000;
    fake.update_alert(&uuid, |a| a["updated_at"] = json!(future), false);
    fake.set_status_quietly(&uuid, "Ongoing");
    let alert = fake.alert(&uuid).unwrap();
    assert_eq!(alert["updated_at"], future);
    assert_eq!(alert["status"]["name"], "Ongoing");
    assert!(pushed(&mut rx).is_empty());
    fake.add_comment_quietly(&uuid, "quiet", "Jane");
    assert!(pushed(&mut rx).is_empty());
    assert_eq!(fake.alert(&uuid).unwrap()["number_of_total_comments"], 2);
}

#[tokio::test]
async fn a_custom_status_keeps_one_uuid() {
    let (fake, a, _rx) = fake().await;
    let b = uuid::Uuid::new_v4().to_string();
    fake.insert_alert(crate::alerts::new_alert(&b, "ALb", "rule", "title"));
    let na = fake.set_status(&a, "Escalated");
    let nb = fake.set_status(&b, "Escalated");
    let status = &na["attributes"]["updated"]["status"];
    assert_eq!(status, &nb["attributes"]["updated"]["status"]);
    assert_eq!(
        Some(status.as_str().unwrap().to_string()),
        fake.status_uuid("Escalated")
    );
    assert_ne!(status, ACKNOWLEDGED);
}

#[tokio::test]
async fn a_comment_is_kept_listed_and_announced_without_moving_updated_at() {
    let (fake, uuid, mut rx) = fake().await;
    let before = fake.alert(&uuid).unwrap();
    let n = fake.add_comment(&uuid, "looks \"bad\" {{ 7*7 }}\r\nX: y", "Jane");
    let alert = fake.alert(&uuid).unwrap();
    assert_eq!(pushed(&mut rx), vec![n.clone()]);
    assert_metadata(&n, &alert);
    assert_eq!(
        (n["type"].as_str(), n["action"].as_str()),
        (Some("alert-comment"), Some("created"))
    );
    let comment = alert["comments"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        n["attributes"],
        json!({
            "uuid": comment["uuid"],
            "alert_uuid": uuid,
            "alert_short_id": alert["short_id"],
            "content": "looks \"bad\" {{ 7*7 }}\r\nX: y",
            "created_by": ANALYST,
            "created_by_type": "user",
        })
    );
    assert_eq!(comment["author"], "Jane");
    assert_eq!(comment["unseen"], true);
    assert!(comment["date"].is_i64());
    assert_eq!(alert["number_of_total_comments"], 2);
    assert_eq!(alert["updated_at"], before["updated_at"]);
    assert_eq!(alert["history"][0]["entry_type"], "comment");

    let (status, list) = call(
        &fake,
        "GET",
        &format!("/v1/sic/alerts/{uuid}/comments"),
        KEY,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list["total"], 2);
    assert_eq!(list["items"][1], comment);
}

#[tokio::test]
async fn urgency_and_other_changes_say_what_changed() {
    let (fake, uuid, mut rx) = fake().await;
    let n = fake.set_urgency(&uuid, 90);
    assert_eq!(
        n["attributes"]["updated"],
        json!({"dynamic_urgency_value": 90})
    );
    let alert = fake.alert(&uuid).unwrap();
    assert_eq!(alert["urgency"]["current_value"], 90);
    assert_eq!(alert["urgency"]["display"], "Urgent");
    assert_eq!(
        alert["history"][0]["urgency"],
        json!({"value": 90, "previous_value": 65})
    );
    let n = fake.update_alert(&uuid, |a| a["title"] = json!("renamed"), true);
    assert_eq!(n["attributes"]["updated"], json!({"title": "renamed"}));
    assert_eq!(pushed(&mut rx).len(), 2);
}

#[tokio::test]
async fn the_workflow_allows_sekoias_transitions_and_refuses_the_others() {
    let (fake, uuid, mut rx) = fake().await;
    let path = format!("/v1/sic/alerts/{uuid}/workflow");
    let (status, body) = call(&fake, "GET", &path, KEY, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"actions": [
            {"id": "937bdabf-6a08-434b-b6d3-d7447e4e452a", "name": "Acknowledge", "description": "Acknowledge the alert"},
            {"id": "ade85d7b-7507-4026-bfc6-cc006d10ddac", "name": "Reject", "description": "Reject the alert"},
        ]})
    );
    // Close is not allowed from Pending.
    let close = r#"{"action_uuid": "1390be4e-ced8-4dd6-9bed-573471b235ab", "comment": null}"#;
    let (status, body) = call(&fake, "PATCH", &path, KEY, Some(close)).await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("not allowed"),
        "{body}"
    );
    assert_eq!(fake.alert(&uuid).unwrap()["status"]["name"], "Pending");
    assert!(pushed(&mut rx).is_empty());

    let ack = r#"{"action_uuid": "937bdabf-6a08-434b-b6d3-d7447e4e452a", "comment": "on it"}"#;
    let (status, body) = call(&fake, "PATCH", &path, KEY, Some(ack)).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Validate", "Reject", "Close"]);
    let identity = fake.apikey_identity();
    let alert = fake.alert(&uuid).unwrap();
    assert_eq!(alert["status"]["uuid"], ACKNOWLEDGED);
    assert_eq!(alert["updated_by"], json!(identity));
    assert_eq!(alert["updated_by_type"], "apikey");
    let comment = alert["comments"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(comment["content"], "on it");
    assert_eq!(comment["created_by"], json!(identity));
    assert_eq!(comment["created_by_type"], "apikey");
    assert_eq!(alert["history"][0]["history_comments"], json!([comment]));
    let n = pushed(&mut rx);
    assert_eq!(n.len(), 2);
    assert_eq!(n[0]["attributes"]["updated"]["status"], ACKNOWLEDGED);
    assert_eq!(n[1]["type"], "alert-comment");
    assert_eq!(n[1]["attributes"]["created_by"], json!(identity));
    assert_eq!(n[1]["attributes"]["created_by_type"], "apikey");
    assert_eq!(fake.workflow_patches(&uuid).len(), 2, "both recorded");

    for body in ["{", r#"{"comment": "x"}"#, r#"{"action_uuid": 7}"#] {
        let (status, answer) = call(&fake, "PATCH", &path, KEY, Some(body)).await;
        assert_eq!(status, 400, "{body}");
        assert!(answer["message"].is_string());
    }
    assert_eq!(
        fake.workflow_patches(&uuid)[2],
        json!("{"),
        "garbled bodies recorded as text"
    );
}

#[tokio::test]
async fn a_tenant_status_is_reachable_by_its_transition() {
    let (fake, uuid, _rx) = fake().await;
    fake.define_status("Escalated", "Escalate", &["Ongoing"]);
    fake.set_status(&uuid, "Ongoing");
    let path = format!("/v1/sic/alerts/{uuid}/workflow");
    let (_, body) = call(&fake, "GET", &path, KEY, None).await;
    let escalate = body["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "Escalate")
        .unwrap()
        .clone();
    assert_eq!(
        Some(escalate["id"].as_str().unwrap().to_string()),
        fake.transition_id("Escalate")
    );
    let patch = json!({"action_uuid": escalate["id"], "comment": null}).to_string();
    let (status, body) = call(&fake, "PATCH", &path, KEY, Some(&patch)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"actions": []}),
        "no way out of Escalated was defined"
    );
    let alert = fake.alert(&uuid).unwrap();
    assert_eq!(alert["status"]["name"], "Escalated");
    assert_eq!(
        Some(alert["status"]["uuid"].as_str().unwrap().to_string()),
        fake.status_uuid("Escalated")
    );
}

#[tokio::test]
async fn posted_comments_are_the_keys_and_bad_ones_are_refused() {
    let (fake, uuid, mut rx) = fake().await;
    let path = format!("/v1/sic/alerts/{uuid}/comments");
    let (status, made) = call(
        &fake,
        "POST",
        &path,
        KEY,
        Some(r#"{"content": "c\"1", "author": "alertsync"}"#),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(made["content"], "c\"1");
    assert_eq!(made["author"], "alertsync");
    assert_eq!(made["created_by"], json!(fake.apikey_identity()));
    assert_eq!(made["created_by_type"], "apikey");
    assert_eq!(made["unseen"], false);
    let n = pushed(&mut rx);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0]["attributes"]["uuid"], made["uuid"]);

    let long = json!({"content": "x", "author": "a".repeat(33)}).to_string();
    let exact = json!({"content": "x", "author": "é".repeat(32)}).to_string();
    for (body, want) in [
        (long.as_str(), 400),
        (exact.as_str(), 200),
        (r#"{"author": "a"}"#, 400),
        ("not json", 400),
        (r#"{"content": "no author"}"#, 200),
    ] {
        let (status, answer) = call(&fake, "POST", &path, KEY, Some(body)).await;
        assert_eq!(status, want, "{body}: {answer}");
    }
    assert_eq!(fake.comments_posted(&uuid).len(), 6);
    let unknown = format!("/v1/sic/alerts/{}/comments", uuid::Uuid::new_v4());
    let (status, body) = call(&fake, "POST", &unknown, KEY, Some(r#"{"content": "x"}"#)).await;
    assert_eq!((status, body), (404, json!({"message": "Alert not found"})));
    let (status, body) = call(&fake, "GET", &unknown, KEY, None).await;
    assert_eq!((status, body), (404, json!({"message": "Alert not found"})));
    let (status, body) = call(&fake, "POST", &path, "wrong", Some(r#"{"content": "x"}"#)).await;
    assert_eq!(status, 401);
    assert!(body["message"].is_string());

    fake.script_writes(&[429]);
    fake.retry_after(Some(std::time::Duration::from_secs(3)));
    let (status, _) = call(&fake, "POST", &path, KEY, Some(r#"{"content": "x"}"#)).await;
    assert_eq!(status, 429);
}

#[tokio::test]
async fn events_jobs_run_and_page_as_sekoia_does() {
    let (fake, _, _rx) = fake().await;
    let events: Vec<Value> = (0..150)
        .map(|i| json!({"n": i, "source.ip": "10.0.0.1"}))
        .collect();
    fake.set_events("ALev", events);
    let start = json!({
        "term": "alert_short_ids:\"ALev\"",
        "earliest_time": "-1d",
        "latest_time": "now",
        "visible": false,
        "max_last_events": 120,
    });
    let jobs = "/v1/sic/conf/events/search/jobs";
    let (status, job) = call(&fake, "POST", jobs, KEY, Some(&start.to_string())).await;
    assert_eq!(status, 200);
    assert_eq!(job["status"], 0);
    let job = job["uuid"].as_str().unwrap().to_string();
    let (status, state) = call(&fake, "GET", &format!("{jobs}/{job}"), KEY, None).await;
    assert_eq!(status, 200);
    assert_eq!(state["status"], 2);
    assert_eq!(state["total"], 120, "max_last_events");
    let page = |q: &str| format!("{jobs}/{job}/events?{q}");
    let (status, body) = call(&fake, "GET", &page("limit=101&offset=0"), KEY, None).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("100"));
    let (status, body) = call(&fake, "GET", &page("limit=100&offset=100"), KEY, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["total"], 120);
    assert_eq!(body["items"].as_array().unwrap().len(), 20);
    assert_eq!(body["items"][0]["n"], 100);
    assert_eq!(fake.events_pages_served(), 1);
    assert_eq!(fake.events_job_requests(), vec![start.clone()]);

    // A slow job: not started, running, then done; its events wait for it.
    fake.script_events_job(
        "ALev",
        EventsJob::Slow(std::time::Duration::from_millis(300)),
    );
    let (_, job) = call(&fake, "POST", jobs, KEY, Some(&start.to_string())).await;
    let job = job["uuid"].as_str().unwrap().to_string();
    let state_path = format!("{jobs}/{job}");
    let look = || call(&fake, "GET", &state_path, KEY, None);
    assert_eq!(look().await.1["status"], 0);
    assert_eq!(look().await.1["status"], 1);
    let (status, _) = call(&fake, "GET", &format!("{jobs}/{job}/events"), KEY, None).await;
    assert_eq!(status, 400, "not done yet");
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    assert_eq!(look().await.1["status"], 2);

    let (status, _) = call(
        &fake,
        "GET",
        &format!("{jobs}/{}", uuid::Uuid::new_v4()),
        KEY,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(&fake, "POST", jobs, KEY, Some(r#"{"term": "x"}"#)).await;
    assert_eq!(status, 400, "times are required");
    let (status, _) = call(&fake, "POST", jobs, "wrong", Some(&start.to_string())).await;
    assert_eq!(status, 401);
    assert_eq!(fake.events_jobs_started(), 2);
}

#[tokio::test]
async fn the_list_answers_by_update_time() {
    let (fake, first, _rx) = fake().await;
    let second = uuid::Uuid::new_v4().to_string();
    fake.insert_alert(crate::alerts::new_alert(&second, "ALs", "rule", "second"));
    let since = chrono::DateTime::from_timestamp(state::now() - 60, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // The first alert changes last: it lists last by update time.
    fake.update_alert(&first, |a| a["updated_at"] = json!(state::now() + 5), false);
    let path = format!(
        "/v1/sic/alerts?date%5Bupdated_at%5D={since},now&sort=updated_at&direction=asc&limit=10&offset=0"
    );
    let (status, body) = call(&fake, "GET", &path, KEY, None).await;
    assert_eq!(status, 200);
    let uuids: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(uuids, [second.as_str(), first.as_str()]);
    assert_eq!(body["total"], 2);
    let (status, _) = call(&fake, "GET", "/v1/sic/alerts?sort=urgency", KEY, None).await;
    assert_eq!(status, 400);
    let (status, _) = call(
        &fake,
        "GET",
        "/v1/sic/alerts?offset=18446744073709551615",
        KEY,
        None,
    )
    .await;
    assert_eq!(status, 200, "a huge offset is an empty page");
}

#[tokio::test]
async fn me_answers_the_keys_identity() {
    let (fake, _, _rx) = fake().await;
    let (status, body) = call(&fake, "GET", "/v1/me", KEY, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["uuid"], json!(fake.apikey_identity()));
    assert_eq!(body["type"], "apikey");
    let (status, _) = call(&fake, "GET", "/v1/me", "wrong", None).await;
    assert_eq!(status, 401);
}
