//! Two-way: what is written back to the Sekoia alert after a delivery
//! (`[destinations.after_create]`), and what a tool sends back (`POST /v1/sync/<destination>`,
//! `[destinations.sync_back]`): applied once, through the call path, never echoed to the tool
//! it came from.

use std::time::Duration;

use alertsync_standins::{Reply, alerts};
use alertsync_tests::*;
use serde_json::{Value, json};

const SYNC_TOKEN: &str = "sync-token-0123456789abcdef";
const SYNC_SECRET: &str = "sync-hmac-secret-0123456789";

/// `soar`: ids from its answers, updates and comments out, and its notifications back in.
/// `other`: updates and comments out only.
fn destinations(after_create: &str) -> String {
    format!(
        r#"
[[destinations]]
name = "soar"
url = "{{receiver}}/soar"
json = '''{{"sourceRef": "{{{{ alert.uuid }}}}"}}'''
remote_id = "{{{{ response.json.id }}}}"
timeout = "5s"
[destinations.retry]
base_delay = "100ms"
max_delay = "1s"
[destinations.on_update]
method = "patch"
url = "{{receiver}}/soar/{{{{ remote.id }}}}"
json = '''{{"status": "{{{{ alert.status.name }}}}"}}'''
[destinations.on_comment]
url = "{{receiver}}/soar/{{{{ remote.id }}}}/comments"
json = '''{{"message": "{{{{ comment.content }}}}"}}'''
{after_create}
[destinations.sync_back]
token = "{SYNC_TOKEN}"
alert = "{{{{ body.object.sourceRef }}}}"
status = "{{{{ body.object.status }}}}"
comment = "{{{{ body.details.message }}}}"
[destinations.sync_back.statuses]
Closed = "Closed"
FalsePositive = "Rejected"

[[destinations]]
name = "other"
url = "{{receiver}}/other"
json = '''{{"sourceRef": "{{{{ alert.uuid }}}}"}}'''
timeout = "5s"
[destinations.retry]
base_delay = "100ms"
max_delay = "1s"
[destinations.on_update]
method = "patch"
url = "{{receiver}}/other/alert"
json = '''{{"sourceRef": "{{{{ alert.uuid }}}}", "status": "{{{{ alert.status.name }}}}"}}'''
[destinations.on_comment]
url = "{{receiver}}/other/comments"
json = '''{{"sourceRef": "{{{{ alert.uuid }}}}", "message": "{{{{ comment.content }}}}"}}'''

[[destinations]]
name = "pd"
url = "{{receiver}}/pd"
json = '''{{"sourceRef": "{{{{ alert.uuid }}}}"}}'''
timeout = "5s"
[destinations.sync_back]
hmac_secret = "{SYNC_SECRET}"
signature_header = "X-PagerDuty-Signature"
alert = "{{{{ body.event.data.alert }}}}"
status = "{{{{ body.event.event_type }}}}"
[destinations.sync_back.statuses]
"incident.resolved" = "Closed"
"#
    )
}

/// A notification the sync endpoint must refuse: destination, body, headers, the status it
/// must answer, and words of its reason.
type RefusedCase = (
    &'static str,
    Vec<u8>,
    Vec<(&'static str, String)>,
    u16,
    &'static str,
);

const LIVE: &str = "live = true\npoll_interval = \"0\"\n";

async fn start(after_create: &str) -> Pipeline {
    let p = Pipeline::start_with(
        &destinations(after_create),
        LIVE,
        &format!("{DEFAULT_ENRICHER}max_attempts = 4\n"),
    )
    .await;
    p.receiver.respond_with("/soar", |body| {
        let uuid = serde_json::from_slice::<Value>(body).unwrap_or_default()["sourceRef"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Reply::status(201)
            .body(&json!({"id": format!("T-{}", &uuid[..8]), "key": "SOC-42"}).to_string())
    });
    assert!(
        eventually(SOON, || async { p.sekoia.live_open() > 0 }).await,
        "the socket connects"
    );
    p
}

/// A new alert in `status`, created and announced; waits until every destination has it.
async fn delivered_alert(p: &Pipeline, status: &str) -> String {
    let uuid = uuid::Uuid::new_v4().to_string();
    p.sekoia.insert_alert(alerts::new_alert(
        &uuid,
        &alerts::random_short_id(),
        "rule",
        "title",
    ));
    if status != "Pending" {
        p.sekoia.set_status_quietly(&uuid, status);
    }
    p.announce(&uuid).await;
    let all = p
        .receiver
        .wait_until(SOON, |r| {
            ["/soar", "/other", "/pd"].iter().all(|path| {
                r.iter().any(|r| {
                    r.path == *path && r.json().is_some_and(|j| j["sourceRef"] == uuid.as_str())
                })
            })
        })
        .await;
    assert!(all, "every destination got the alert");
    uuid
}

async fn sync(
    p: &Pipeline,
    destination: &str,
    body: &[u8],
    headers: &[(&str, String)],
) -> (u16, Value) {
    let client = reqwest_client();
    let mut req = client
        .post(p.ingest_url(&format!("/v1/sync/{destination}")))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.expect("ingest reachable");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn bearer() -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {SYNC_TOKEN}"))]
}

/// TheHive's notification of a closed alert, in its audit format.
fn closed_in_soar(uuid: &str, message: &str) -> Vec<u8> {
    json!({
        "operation": "update", "objectType": "Alert", "objectId": "~4144",
        "details": {"stage": "Closed", "message": message},
        "object": {"sourceRef": uuid, "status": "Closed", "stage": "Closed"}
    })
    .to_string()
    .into_bytes()
}

fn status_of(p: &Pipeline, uuid: &str) -> String {
    p.sekoia.alert(uuid).unwrap()["status"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_create_comments_the_ticket_key_and_moves_the_status_once_per_alert() {
    let mut p = start(
        "[destinations.after_create]\ncomment = \"Ticket {{ response.json.key }}: https://jira.example/browse/{{ response.json.key }}\"\nstatus = \"Acknowledged\"",
    )
    .await;
    let uuid = delivered_alert(&p, "Pending").await;
    assert!(
        eventually(SOON, || async {
            p.sekoia.comments_posted(&uuid).len() == 1 && status_of(&p, &uuid) == "Acknowledged"
        })
        .await,
        "the key was commented back and the alert acknowledged"
    );
    let posted = p.sekoia.comments_posted(&uuid);
    assert_eq!(
        posted[0]["content"],
        "Ticket SOC-42: https://jira.example/browse/SOC-42"
    );
    assert_eq!(posted[0]["author"], "alertsync");
    // The acknowledgement reaches the other destination, not the one it was written for.
    assert!(
        p.receiver
            .wait_until(SOON, |r| r.iter().any(|r| r.path == "/other/alert"
                && r.json().is_some_and(|j| j["status"] == "Acknowledged")))
            .await
    );
    // The delivery replayed (the consumer rewound): nothing is written back again.
    let s = p.subjects();
    p.js.get_stream(s.enriched_stream())
        .await
        .unwrap()
        .delete_consumer(&s.destination_consumer("soar"))
        .await
        .unwrap();
    p.restart_forwarder().await;
    // Every delivery came back and was handled, and so was any write-back it stored.
    assert!(p.wait_settled().await, "the rewound consumer drained");
    assert_eq!(p.sekoia.comments_posted(&uuid).len(), 1, "one comment");
    assert_eq!(p.sekoia.workflow_patches(&uuid).len(), 1, "one transition");
    assert!(
        p.receiver
            .requests()
            .iter()
            .all(|r| !r.path.starts_with("/soar/T-")),
        "nothing echoed to the SOAR"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tool_closes_the_alert_once_and_the_change_is_not_echoed_back_to_it() {
    let mut p = start("").await;
    let uuid = delivered_alert(&p, "Acknowledged").await;
    let hostile = format!(
        "closed: \"false positive\" {{{{ 7*7 }}}}\r\nX-Injected: 1 {}",
        "x".repeat(10 * 1024)
    );
    let body = closed_in_soar(&uuid, &hostile);
    let (status, answer) = sync(&p, "soar", &body, &bearer()).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["duplicate"], false);
    // The tool retries its notification: stored once.
    let (status, answer) = sync(&p, "soar", &body, &bearer()).await;
    assert_eq!((status, answer["duplicate"].clone()), (202, json!(true)));
    assert!(
        eventually(SOON, || async {
            status_of(&p, &uuid) == "Closed" && p.sekoia.comments_posted(&uuid).len() == 1
        })
        .await,
        "the alert is closed and commented"
    );
    let patches = p.sekoia.workflow_patches(&uuid);
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(
        patches[0]["action_uuid"],
        p.sekoia.transition_id("Close").unwrap(),
        "the transition named for Closed, from the workflow"
    );
    // The comment reaches Sekoia as the text the tool sent, not evaluated, not restructured.
    assert_eq!(p.sekoia.comments_posted(&uuid)[0]["content"], hostile);
    // The other destination hears of both; the SOAR of neither.
    assert!(
        p.receiver
            .wait_until(SOON, |r| {
                r.iter().any(|r| {
                    r.path == "/other/alert" && r.json().is_some_and(|j| j["status"] == "Closed")
                }) && r.iter().any(|r| r.path == "/other/comments")
            })
            .await
    );
    assert!(
        eventually(SOON, || async {
            let (_, m) = get_text(&p.forwarder_url("/metrics")).await;
            metric(&m, "alertsync_lifecycle_skipped_total{destination=\"soar\",kind=\"updated\",reason=\"echo\"}") >= 1.0
                && metric(&m, "alertsync_lifecycle_skipped_total{destination=\"soar\",kind=\"comment\",reason=\"echo\"}") >= 1.0
        })
        .await,
        "the SOAR's own changes were recognised as echoes"
    );
    assert!(
        p.receiver
            .requests()
            .iter()
            .all(|r| !r.path.starts_with("/soar/T-")),
        "nothing echoed to the SOAR"
    );
    // Another notification asking for Closed (the tool sends its own update later): the alert
    // is already Closed, so the write-back completes without a PATCH.
    let again = json!({"object": {"sourceRef": uuid, "status": "Closed", "stage": "Closed"}, "details": {}})
        .to_string();
    let (status, answer) = sync(&p, "soar", again.as_bytes(), &bearer()).await;
    assert_eq!(
        (status, answer["duplicate"].clone()),
        (202, json!(false)),
        "{answer}"
    );
    assert!(
        eventually(SOON, || async {
            let (_, m) = get_text(&p.enricher_url("/metrics")).await;
            metric(
                &m,
                "alertsync_writebacks_total{destination=\"soar\",what=\"status\"}",
            ) == 2.0
        })
        .await,
        "the second write-back was handled"
    );
    assert_eq!(
        p.sekoia.workflow_patches(&uuid).len(),
        1,
        "no PATCH for the status it has"
    );
    // JetStream hands every stored notification over again (the consumer rewound): each
    // step is past its record, Sekoia changes no further.
    assert!(p.wait_settled().await);
    p.js.get_stream(p.subjects().writeback_stream())
        .await
        .unwrap()
        .delete_consumer(&p.subjects().writeback_consumer())
        .await
        .unwrap();
    p.restart_enricher().await;
    assert!(p.wait_settled().await, "the rewound consumer drained");
    assert_eq!(p.sekoia.workflow_patches(&uuid).len(), 1, "one transition");
    assert_eq!(p.sekoia.comments_posted(&uuid).len(), 1, "one comment");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_notification_says_why_and_changes_nothing() {
    let p = start("").await;
    let uuid = delivered_alert(&p, "Acknowledged").await;
    let never_sent = uuid::Uuid::new_v4().to_string();
    p.sekoia
        .insert_alert(alerts::new_alert(&never_sent, "ALnever1", "rule", "title"));
    let good = closed_in_soar(&uuid, "done");
    // (destination, body, headers, expected status, words of the reason)
    let cases: Vec<RefusedCase> = vec![
        ("soar", good.clone(), vec![], 401, "bearer token"),
        (
            "soar",
            good.clone(),
            vec![("authorization", "Bearer wrong-token-0123456789".into())],
            401,
            "bearer token",
        ),
        (
            "pd",
            br#"{"event":{}}"#.to_vec(),
            vec![("x-pagerduty-signature", format!("v1={}", "0".repeat(64)))],
            401,
            "signature",
        ),
        ("nope", good.clone(), bearer(), 404, "sync_back"),
        ("other", good.clone(), bearer(), 404, "sync_back"),
        ("soar", vec![b' '; 70 * 1024], bearer(), 413, "over"),
        ("soar", b"{not json".to_vec(), bearer(), 400, "invalid JSON"),
        (
            "soar",
            br#"{"object": {"sourceRef": "not-a-uuid", "status": "Closed"}}"#.to_vec(),
            bearer(),
            400,
            "alert uuid",
        ),
        (
            "soar",
            closed_in_soar(&never_sent, "x"),
            bearer(),
            403,
            "never delivered",
        ),
    ];
    for (dest, body, headers, want, reason) in cases {
        let (status, answer) = sync(&p, dest, &body, &headers).await;
        assert_eq!(status, want, "{dest}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{dest} {want}: {answer}");
        assert!(!error.contains(SYNC_TOKEN), "{answer}");
    }
    // A signed PagerDuty notification passes; an unmapped status is ignored, not stored.
    let pd =
        json!({"event": {"event_type": "incident.resolved", "data": {"alert": uuid}}}).to_string();
    let sig = hmac_hex(SYNC_SECRET.as_bytes(), pd.as_bytes());
    let (status, answer) = sync(
        &p,
        "pd",
        pd.as_bytes(),
        &[("x-pagerduty-signature", format!("v1={sig}"))],
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let unmapped = json!({"object": {"sourceRef": uuid, "status": "Snoozed"}}).to_string();
    let (status, answer) = sync(&p, "soar", unmapped.as_bytes(), &bearer()).await;
    assert_eq!(status, 202, "{answer}");
    assert!(answer["ignored"].is_string(), "{answer}");
    // Only the PagerDuty notification was stored.
    let mut stream =
        p.js.get_stream(p.subjects().writeback_stream())
            .await
            .unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    assert!(p.sekoia.comments_posted(&never_sent).is_empty());
    assert!(p.sekoia.workflow_patches(&never_sent).is_empty());
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sekoia_refusing_the_write_back_holds_it_retries_it_and_dead_letters_it_with_a_reason() {
    let p = start("").await;
    // 429, 503 and a rejected key: held and retried, then applied once.
    let uuid = delivered_alert(&p, "Acknowledged").await;
    p.sekoia.script_writes(&[429, 503, 401]);
    let (status, _) = sync(&p, "soar", &closed_in_soar(&uuid, "retried"), &bearer()).await;
    assert_eq!(status, 202);
    let comments_on = |uuid: &str, text: &str| {
        p.sekoia.alert(uuid).unwrap()["comments"]
            .as_array()
            .map_or(0, |c| c.iter().filter(|c| c["content"] == text).count())
    };
    assert!(
        eventually(Duration::from_secs(30), || async {
            status_of(&p, &uuid) == "Closed" && comments_on(&uuid, "retried") == 1
        })
        .await,
        "applied once Sekoia took it"
    );
    assert!(p.wait_settled().await);
    assert_eq!(
        comments_on(&uuid, "retried"),
        1,
        "the comment was added once"
    );
    // A status no transition leads to: dead-lettered, naming the allowed ones.
    let pending = delivered_alert(&p, "Pending").await;
    let (status, _) = sync(&p, "soar", &closed_in_soar(&pending, ""), &bearer()).await;
    assert_eq!(status, 202);
    let dead = p.wait_dead_letters(1, SOON).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].stage, "writeback");
    assert_eq!(dead[0].alert_uuid, pending);
    assert!(dead[0].reason.contains("Acknowledge"), "{}", dead[0].reason);
    assert!(p.sekoia.workflow_patches(&pending).is_empty());
    // Sekoia failing every time: dead-lettered with the last answer once attempts run out.
    let failing = delivered_alert(&p, "Acknowledged").await;
    p.sekoia.script_writes(&[503; 4]);
    let (status, _) = sync(
        &p,
        "soar",
        &closed_in_soar(&failing, "will fail"),
        &bearer(),
    )
    .await;
    assert_eq!(status, 202);
    let dead = p.wait_dead_letters(2, Duration::from_secs(60)).await;
    let entry = dead
        .iter()
        .find(|d| d.alert_uuid == failing)
        .expect("dead-lettered");
    assert!(entry.reason.contains("503"), "{}", entry.reason);
    assert!(!entry.reason.contains(SEKOIA_KEY));
    // Sekoia is fine again: `alertsync dlq replay` applies it.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertsync.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nurl = \"{}\"\nprefix = \"{}\"\n{}",
            p.nats.url(),
            p.config.nats.prefix,
            destinations("").replace("{receiver}", &p.receiver.url(""))
        ),
    )
    .unwrap();
    let dlq = |args: &[&str]| {
        std::process::Command::new(alertsync_tests::faults::binary("alertsync"))
            .arg("dlq")
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("ALERTSYNC_CONFIG")
            .output()
            .expect("alertsync runs")
    };
    let listed = dlq(&["list", "--json"]);
    let entries: Vec<Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let sequence = entries
        .iter()
        .find(|e| e["alert_uuid"] == failing.as_str())
        .and_then(|e| e["sequence"].as_u64())
        .unwrap_or_else(|| {
            panic!(
                "listed: {entries:?} {}",
                String::from_utf8_lossy(&listed.stderr)
            )
        });
    let replayed = dlq(&["replay", &sequence.to_string()]);
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert!(
        eventually(SOON, || async {
            status_of(&p, &failing) == "Closed" && comments_on(&failing, "will fail") == 1
        })
        .await,
        "the replayed write-back was applied"
    );
    p.shutdown().await;
}

fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    use sha2::Digest as _;
    let mut k = key.to_vec();
    k.resize(64, 0);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = sha2::Sha256::new()
        .chain_update(&ipad)
        .chain_update(message)
        .finalize();
    let outer = sha2::Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}
