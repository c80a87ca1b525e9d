//! `alertsync dlq` as an operator runs it (the real binary) against a running pipeline: list,
//! show with the request redacted, replay to the failed stage only, purge, and clear errors.
//!
//! The binaries must be built first (`cargo build --workspace --bins`; `scripts/test` does).

use std::path::Path;
use std::process::{Command, Output};

use alertsync_standins::{Reply, alerts};
use alertsync_tests::faults::binary;
use alertsync_tests::*;

fn cli(config: &Path, args: &[&str]) -> Output {
    Command::new(binary("alertsync"))
        .arg("dlq")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("SOAR_KEY", SOAR_KEY)
        .env("INTAKE_KEY", INTAKE_KEY)
        .env_remove("ALERTSYNC_CONFIG")
        .output()
        .expect("alertsync runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The CLI's config: the pipeline's [nats] and destinations.
fn write_config(p: &Pipeline, dests: &str, dir: &Path) -> std::path::PathBuf {
    let text = format!(
        "[nats]\nurl = \"{}\"\nprefix = \"{}\"\n{}",
        p.nats.url(),
        p.config.nats.prefix,
        dests.replace("{receiver}", &p.receiver.url(""))
    );
    let path = dir.join("alertsync.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn list_json(config: &Path) -> Vec<serde_json::Value> {
    let out = cli(config, &["list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[tokio::test]
async fn dlq_lists_shows_replays_to_the_failed_destination_only_and_purges() {
    let dests = destination("soar", "/soar", MAIN_TEMPLATE)
        + &destination("intake", "/intake", INTAKE_TEMPLATE);
    let p = Pipeline::start(&dests).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&p, &dests, dir.path());

    // A forward entry: soar refuses the body, intake takes it.
    p.receiver.always(
        "/soar",
        Reply::status(422).body(r#"{"error":"rule_name is not allowed"}"#),
    );
    let forwarded = p.send_alert("rule", "title").await;
    // An enrich entry: Get Alert answers 404 until attempts run out.
    let late = uuid::Uuid::new_v4().to_string();
    p.sekoia.script(&late, &[404; 5]);
    p.sekoia
        .insert_alert(alerts::new_alert(&late, "ALlate000001", "rule", "title"));
    p.announce(&late).await;
    assert_eq!(p.wait_dead_letters(2, SOON).await.len(), 2);
    assert!(
        p.receiver
            .wait_until(SOON, |r| r.iter().any(|q| q.path == "/intake"))
            .await
    );

    // list: one line per entry, or one JSON object each.
    let out = cli(&config, &["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("     SEQ  TIME"), "{text}");
    assert!(text.contains(&forwarded) && text.contains(&late), "{text}");
    assert!(text.contains("422"), "{text}");
    let entries = list_json(&config);
    assert_eq!(entries.len(), 2);
    let fwd = entries.iter().find(|e| e["stage"] == "forward").unwrap();
    assert_eq!(fwd["destination"], "soar");
    assert_eq!(fwd["alert_uuid"], forwarded.as_str());
    assert_eq!(fwd["last_status"], 422);
    assert_eq!(fwd["attempts"], 1);
    assert!(
        fwd["reason"]
            .as_str()
            .unwrap()
            .contains("rule_name is not allowed")
    );
    assert!(fwd["time"].as_str().unwrap().ends_with('Z'));
    let enr = entries.iter().find(|e| e["stage"] == "enrich").unwrap();
    assert_eq!(enr["alert_uuid"], late.as_str());
    let out = cli(&config, &["list", "--destination", "soar", "--json"]);
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));

    // show: the entry and the request soar would get now, credentials redacted.
    let fwd_seq = fwd["sequence"].as_u64().unwrap().to_string();
    let out = cli(&config, &["show", &fwd_seq]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("destination:       soar"), "{text}");
    assert!(text.contains("POST http://"), "{text}");
    assert!(text.contains("authorization: [REDACTED]"), "{text}");
    assert!(
        text.contains(&format!("\"alert_short_id\":\"{forwarded}\"")),
        "{text}"
    );
    assert!(!text.contains(SOAR_KEY), "{text}");
    let out = cli(&config, &["show", "999999"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no dead-letter entry with sequence 999999"),
        "{}",
        stderr(&out)
    );

    // replay the forward entry once soar is fixed: soar gets it once, intake not again.
    p.receiver
        .always("/soar", Reply::status(200).body(r#"{"ok":true}"#));
    let intake_before = p.receiver.requests_to("/intake").len();
    let out = cli(&config, &["replay", &fwd_seq]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("replay.forward.soar"),
        "{}",
        stdout(&out)
    );
    assert!(
        p.receiver
            .wait_until(SOON, |r| r
                .iter()
                .any(|q| q.path == "/soar" && q.status == 200))
            .await
    );
    // The enrich replay below goes through every destination after this one: once it has
    // arrived at intake, a wrongful second intake delivery would have arrived too.
    let out = cli(&config, &["replay", "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 replayed, 0 failed"),
        "{}",
        stdout(&out)
    );
    assert!(
        p.receiver
            .wait_until(SOON, |r| uuids_in(r, "alert_short_id").contains(&late)
                && r.iter().filter(|q| q.path == "/intake").count()
                    == intake_before + 1)
            .await,
        "the replayed enrich entry reached both destinations"
    );
    let soar = uuids_in(&p.receiver.requests_to("/soar"), "alert_short_id");
    assert_eq!(soar.iter().filter(|u| **u == forwarded).count(), 1);
    let intake = p.receiver.requests_to("/intake");
    assert_eq!(
        intake.len(),
        intake_before + 1,
        "intake got only the enrich replay"
    );
    assert!(
        list_json(&config).is_empty(),
        "replayed entries are deleted"
    );
    let out = cli(&config, &["show", &fwd_seq]);
    assert!(
        stderr(&out).contains("no dead-letter entry"),
        "{}",
        stderr(&out)
    );

    // purge: by age, then everything.
    p.receiver.always("/soar", Reply::status(400).body("no"));
    let third = p.send_alert("rule", "third").await;
    assert!(!p.wait_dead_letters(1, SOON).await.is_empty());
    let out = cli(&config, &["purge", "--older-than", "1h"]);
    assert_eq!(stdout(&out).trim(), "purged 0 entries", "{}", stderr(&out));
    assert_eq!(list_json(&config).len(), 1);
    assert_eq!(list_json(&config)[0]["alert_uuid"], third.as_str());
    let out = cli(&config, &["purge"]);
    assert_eq!(stdout(&out).trim(), "purged 1 entries", "{}", stderr(&out));
    assert!(list_json(&config).is_empty());
    p.shutdown().await;
}

#[tokio::test]
async fn dlq_says_clearly_when_nats_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertsync.toml");
    std::fs::write(&config, "[nats]\nurl = \"nats://127.0.0.1:1\"\n").unwrap();
    let out = cli(&config, &["list"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cannot connect to NATS at nats://127.0.0.1:1"),
        "{err}"
    );
}

#[tokio::test]
async fn an_undecodable_entry_is_listed_as_such_and_the_others_still_are() {
    let dests = destination("soar", "/soar", MAIN_TEMPLATE);
    let p = Pipeline::start(&dests).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&p, &dests, dir.path());
    p.receiver.always("/soar", Reply::status(422).body("no"));
    let forwarded = p.send_alert("rule", "title").await;
    assert_eq!(p.wait_dead_letters(1, SOON).await.len(), 1);
    // Something that is not a DeadLetter lands in the stream (another writer, a damaged copy).
    let subject = p
        .subjects()
        .dead_letter(alertsync_proto::Stage::Forward, Some("soar"));
    p.js.publish(subject, "\u{1}not a dead letter\u{ff}".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let out = cli(&config, &["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&forwarded),
        "the good entry is listed: {text}"
    );
    assert!(text.contains("UNDECODABLE"), "{text}");
    assert!(stderr(&out).contains("1 undecodable"), "{}", stderr(&out));
    let lines = list_json(&config);
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().any(|l| l["alert_uuid"] == forwarded.as_str()));
    assert!(
        lines.iter().any(|l| l["undecodable"].is_string()),
        "{lines:?}"
    );
    p.shutdown().await;
}
