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
//! The suite is behind the `faults` feature: `cargo test -p alertsync-tests --features faults
//! --test faults` runs it alone; `scripts/test` turns it on.

use std::time::{Duration, Instant};

use alertsync_nats::async_nats::jetstream;
use alertsync_proto::{Message as _, v1};
use alertsync_standins::Reply;
use alertsync_tests::faults::*;
use alertsync_tests::{SEKOIA_KEY, SOAR_KEY, eventually};

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
    let drained = eventually(DRAIN, || async {
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

/// The standard end-of-scenario checks: nothing lost, nothing dead-lettered, no duplicate at
/// all (no delivery was in flight at a SIGKILL of the forwarder or NATS), no secret leaked.
async fn assert_clean(p: &FaultPipeline, t: &Tally) {
    assert_eq!(t.lost, 0, "{t}");
    assert_eq!(t.dead_letters, 0, "{t}");
    assert_eq!(t.duplicates, 0, "{t}");
    p.assert_no_secret_leaks().await;
}

/// The end-of-scenario checks after NATS itself went away: as [`assert_clean`], except that
/// deliveries in flight then (their records could not be written) may have been sent again,
/// though never past a receiver honouring `Idempotency-Key`.
async fn assert_clean_but_for_in_flight(p: &FaultPipeline, t: &Tally) {
    assert_eq!(t.lost, 0, "{t}");
    assert_eq!(t.dead_letters, 0, "{t}");
    assert!(
        t.duplicates <= 16,
        "more duplicates than deliveries in flight: {t}"
    );
    assert_eq!(t.duplicates_past_idempotency_key, 0, "{t}");
    p.assert_no_secret_leaks().await;
}

/// Waits until the forwarder's readiness names `destination` in `state`, with a "since".
async fn wait_not_ready(p: &FaultPipeline, destination: &str, state: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = p.forwarder.readyz().await;
        if status == 503
            && body.contains(&format!("destination.{destination}"))
            && body.contains(state)
            && body.contains("since")
        {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "readiness never said {destination} is {state}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_nats_server_mid_flow_loses_nothing() {
    let started = Instant::now();
    let mut p = FaultPipeline::start(Options::default()).await;
    let sender = p.send(ALERTS, 100);
    sender
        .wait_accepted_at_least(ALERTS * 4 / 10, Duration::from_secs(60))
        .await;
    let Nats::Single(server) = &mut p.nats else {
        unreachable!()
    };
    server.kill();
    // Down for a moment: webhook callers get 503 or a refused connection and retry.
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart().expect("nats-server restarts on its store");
    let t = p.settle(&sender, "soar", DRAIN).await;
    t.report("2 nats-server SIGKILL + restart (file store)", started);
    assert!(
        sender.retries() > 0,
        "the webhook never refused a call: NATS was not down"
    );
    assert_clean_but_for_in_flight(&p, &t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_node_of_a_three_node_cluster_with_r3_streams_loses_nothing() {
    let started = Instant::now();
    let mut p = FaultPipeline::start(Options {
        cluster: true,
        ..Options::default()
    })
    .await;
    // The streams really are R3.
    let s = p.subjects();
    for stream in [
        s.created_stream(),
        s.enriched_stream(),
        s.dead_letter_stream(),
    ] {
        let mut st = p.js.get_stream(&stream).await.unwrap();
        assert_eq!(st.info().await.unwrap().config.num_replicas, 3, "{stream}");
    }
    let mut kv =
        p.js.get_stream(format!("KV_{}", s.delivery_records_bucket()))
            .await
            .unwrap();
    assert_eq!(kv.info().await.unwrap().config.num_replicas, 3);

    let sender = p.send(ALERTS, 100);
    sender
        .wait_accepted_at_least(ALERTS * 3 / 10, Duration::from_secs(60))
        .await;
    let Nats::Cluster(cluster) = &mut p.nats else {
        unreachable!()
    };
    cluster.kill(0);
    sender
        .wait_accepted_at_least(ALERTS * 7 / 10, Duration::from_secs(120))
        .await;
    let Nats::Cluster(cluster) = &mut p.nats else {
        unreachable!()
    };
    cluster.restart(0).expect("the node comes back");
    let t = p.settle(&sender, "soar", DRAIN).await;
    t.report(
        "3 3-node cluster, R3: one node SIGKILLed and restarted",
        started,
    );
    assert_clean_but_for_in_flight(&p, &t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_refusing_connections_for_30s_then_answering_503_for_10s_gets_everything_after()
 {
    let started = Instant::now();
    let p = FaultPipeline::start(Options::default()).await;
    let sender = p.send(ALERTS, 100);
    sender
        .wait_accepted_at_least(ALERTS / 5, Duration::from_secs(60))
        .await;
    p.receiver_proxy.set_up(false);
    let ready = wait_not_ready(&p, "soar", "circuit open").await;
    assert!(ready.contains("connection"), "{ready}");
    tokio::time::sleep(Duration::from_secs(30)).await;
    p.receiver.always("/soar", Reply::status(503));
    p.receiver_proxy.set_up(true);
    let before = p.receiver.requests_to("/soar").len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Not hammered while the circuit is open: only probes (0.5 s doubling to 4 s) get through.
    let during = p.receiver.requests_to("/soar").len() - before;
    assert!(
        during <= 20,
        "{during} requests in 10 s of 503s: the circuit did not hold"
    );
    p.receiver
        .always("/soar", Reply::status(200).body("{\"ok\":true}"));
    let t = p.settle(&sender, "soar", DRAIN).await;
    t.report("4 destination refused 30 s, then 503 10 s", started);
    assert_clean(&p, &t).await;
    let (status, body) = p.forwarder.readyz().await;
    assert_eq!(status, 200, "ready again after the outage: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_answering_429_with_retry_after_never_gets_a_request_earlier_than_allowed() {
    let started = Instant::now();
    let p = FaultPipeline::start(Options::default()).await;
    let sender = p.send(ALERTS, 100);
    sender
        .wait_accepted_at_least(ALERTS / 5, Duration::from_secs(60))
        .await;
    p.receiver.always(
        "/soar",
        Reply::status(429)
            .header("Retry-After", "2")
            .body("{\"error\":\"slow down\"}"),
    );
    wait_not_ready(&p, "soar", "throttled").await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    p.receiver
        .always("/soar", Reply::status(200).body("{\"ok\":true}"));
    let t = p.settle(&sender, "soar", DRAIN).await;
    t.report("5 destination 429 Retry-After: 2 for 8 s", started);
    assert_clean(&p, &t).await;

    // After each 429, nothing arrives before its Retry-After, except requests that were
    // already on their way when it was answered (within the slack).
    let slack = Duration::from_millis(500);
    let reqs = p.receiver.requests_to("/soar");
    let throttles: Vec<_> = reqs
        .iter()
        .filter(|r| r.status == 429)
        .map(|r| r.at)
        .collect();
    assert!(
        throttles.len() >= 3,
        "the destination throttled {} times",
        throttles.len()
    );
    for t429 in &throttles {
        let early: Vec<_> = reqs
            .iter()
            .filter(|r| {
                r.at.duration_since(*t429)
                    .is_ok_and(|d| d > slack && d < Duration::from_secs(2))
            })
            .collect();
        assert!(
            early.is_empty(),
            "{} requests within Retry-After of a 429",
            early.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sekoia_api_down_for_30s_delays_alerts_but_loses_none() {
    let started = Instant::now();
    let p = FaultPipeline::start(Options::default()).await;
    let sender = p.send(ALERTS, 100);
    sender
        .wait_accepted_at_least(ALERTS / 5, Duration::from_secs(60))
        .await;
    p.sekoia_proxy.set_up(false);
    tokio::time::sleep(Duration::from_secs(30)).await;
    p.sekoia_proxy.set_up(true);
    let t = p.settle(&sender, "soar", DRAIN).await;
    t.report("6 Sekoia API refused 30 s", started);
    assert_clean(&p, &t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_rejecting_our_credentials_pauses_dead_letters_nothing_and_resumes_once_fixed()
 {
    let started = Instant::now();
    let p = FaultPipeline::start(Options::default()).await;
    let sender = p.send(ALERTS, 100);
    sender
        .wait_accepted_at_least(ALERTS / 5, Duration::from_secs(60))
        .await;
    p.receiver.always(
        "/soar",
        Reply::status(401).body("{\"error\":\"invalid API key\"}"),
    );
    let body = wait_not_ready(&p, "soar", "paused").await;
    assert!(body.contains("401"), "{body}");
    let before = p.receiver.requests_to("/soar").len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Paused: it stopped pulling, so alerts wait in the stream and only probes go out.
    let during = p.receiver.requests_to("/soar").len() - before;
    assert!(during <= 20, "{during} requests in 10 s while paused");
    let (pending, _) = p.forward_backlog("soar").await.expect("consumer info");
    assert!(pending > 0, "alerts wait in the stream while paused");
    assert!(
        p.dead_letters().await.is_empty(),
        "a 401 dead-lettered an alert"
    );
    p.receiver
        .always("/soar", Reply::status(200).body("{\"ok\":true}"));
    let t = p.settle(&sender, "soar", DRAIN).await;
    t.report("7 destination 401 for 10 s, then fixed", started);
    assert_clean(&p, &t).await;
    let (status, body) = p.forwarder.readyz().await;
    assert_eq!(status, 200, "ready again after the fix: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_in_flight_deliveries_exits_zero_and_leaves_nothing_to_redeliver()
 {
    let started = Instant::now();
    let mut p = FaultPipeline::start(Options::default()).await;
    // Every request takes 300 ms: at any moment up to 16 are in flight.
    p.receiver_proxy.set_latency(Duration::from_millis(300));
    let sender = p.send(ALERTS, 200);
    assert!(
        p.receiver
            .wait_until(Duration::from_secs(60), |r| r.len() >= 200)
            .await
    );
    let stop = Instant::now();
    let code = p.forwarder.terminate(Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "clean exit on SIGTERM");
    assert!(
        stop.elapsed() < Duration::from_secs(10),
        "took {:?}",
        stop.elapsed()
    );
    // Nothing was left unacknowledged: no message will be redelivered.
    let (pending, ack_pending) = p.forward_backlog("soar").await.expect("consumer info");
    assert_eq!(
        ack_pending, 0,
        "{ack_pending} deliveries left for the server to redeliver"
    );
    assert!(
        pending > 0,
        "the forwarder stopped before the load was over"
    );
    p.receiver_proxy.set_latency(Duration::ZERO);
    p.forwarder.start().await;
    let t = p.settle(&sender, "soar", DRAIN).await;
    t.report(
        "8 forwarder SIGTERM under load (300 ms per request)",
        started,
    );
    assert_clean(&p, &t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_nats_is_down_stops_every_service_with_exit_zero_and_loses_nothing() {
    let started = Instant::now();
    let mut p = FaultPipeline::start(Options::default()).await;
    let sender = p.send(300, 100);
    assert!(
        p.receiver
            .wait_until(Duration::from_secs(60), |r| r.len() >= 50)
            .await
    );
    let Nats::Single(server) = &mut p.nats else {
        unreachable!()
    };
    server.kill();
    // An operator stops or rolls the services during a NATS outage. Each must still exit
    // (async-nats answers a flush only once connected: an unbounded one never returned).
    let grace = Duration::from_secs(40);
    let stop = Instant::now();
    let (ingest, enricher, forwarder) = tokio::join!(
        p.ingest.terminate(grace),
        p.enricher.terminate(grace),
        p.forwarder.terminate(grace),
    );
    let took = stop.elapsed();
    println!("SIGTERM with NATS down: every service exited within {took:?}");
    assert_eq!(
        (ingest, enricher, forwarder),
        (Some(0), Some(0), Some(0)),
        "ingest, enricher, forwarder exit codes after SIGTERM with NATS down ({took:?}; None: still running after {grace:?})"
    );
    let logs = format!("{}\n{}", p.enricher.logs(), p.forwarder.logs());
    assert!(
        logs.contains("NATS is unreachable at shutdown"),
        "no service said what it could not send"
    );
    // Nothing the webhook accepted is lost, and nothing reaches the receiver twice beyond a
    // delivery in flight when NATS went away (its record could not be written).
    let Nats::Single(server) = &mut p.nats else {
        unreachable!()
    };
    server.restart().expect("nats-server restarts on its store");
    p.ingest.start().await;
    p.enricher.start().await;
    p.forwarder.start().await;
    let t = p.settle(&sender, "soar", DRAIN).await;
    t.report("10 SIGTERM to every service while NATS is down", started);
    assert_clean_but_for_in_flight(&p, &t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_on_every_subject_is_dead_lettered_with_reasons_while_alerts_keep_flowing() {
    let started = Instant::now();
    let p = FaultPipeline::start(Options {
        destinations: vec![
            ("soar".into(), "/soar".into()),
            ("intake".into(), "/intake".into()),
        ],
        ..Options::default()
    })
    .await;
    let sender = p.send(ALERTS, 100);
    let s = p.subjects();
    let not_json = v1::EnrichedAlert {
        created: Some(v1::AlertNotification {
            alert_uuid: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        }),
        alert_json: b"{not json".to_vec().into(),
        ..Default::default()
    };
    let bad_uuid = v1::AlertNotification {
        alert_uuid: "../../etc/passwd".into(),
        ..Default::default()
    };
    let poison: Vec<(String, Vec<u8>)> = vec![
        (s.created(""), b"\x01\x02 not protobuf".to_vec()),
        (s.created(""), bad_uuid.encode_to_vec()),
        (s.enriched(""), b"\xff\xfe garbage".to_vec()),
        (s.enriched(""), not_json.encode_to_vec()),
        (s.replay_forward("soar"), b"\x00 replayed garbage".to_vec()),
    ];
    for (i, (subject, payload)) in poison.into_iter().enumerate() {
        sender
            .wait_accepted_at_least((i + 1) * ALERTS / 6, Duration::from_secs(60))
            .await;
        publish(&p.js, subject, payload).await;
    }
    let t = p.settle(&sender, "soar", DRAIN).await;
    let t2 = p.settle(&sender, "intake", DRAIN).await;
    t.report("9 poison on every subject (soar)", started);
    t2.report("9 poison on every subject (intake)", started);
    for t in [&t, &t2] {
        assert_eq!(t.lost, 0, "{t}");
        assert_eq!(t.duplicates, 0, "{t}");
    }
    // 2 on the created subject (enrich), 2 on the enriched subject for each destination,
    // 1 on soar's replay subject (soar only).
    let dl = p.dead_letters().await;
    let count = |stage: &str, dest: &str| {
        dl.iter()
            .filter(|d| d.stage == stage && d.destination == dest)
            .count()
    };
    assert_eq!(count("enrich", ""), 2, "{dl:?}");
    assert_eq!(count("forward", "soar"), 3, "{dl:?}");
    assert_eq!(count("forward", "intake"), 2, "{dl:?}");
    assert_eq!(dl.len(), 7);
    for d in &dl {
        assert!(d.reason.starts_with("poison"), "{}", d.reason);
        assert!(!d.original_payload.is_empty());
    }
    assert!(
        dl.iter()
            .any(|d| d.reason.contains("the alert body is not JSON"))
    );
    assert!(dl.iter().any(|d| d.reason.contains("undecodable")));
    p.assert_no_secret_leaks().await;
}

async fn publish(js: &jetstream::Context, subject: String, payload: Vec<u8>) {
    js.publish(subject, payload.into())
        .await
        .expect("publish")
        .await
        .expect("stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recognisable_secrets_reach_no_log_line_dead_letter_readiness_answer_or_dlq_output() {
    let started = Instant::now();
    // Debug logs, as JSON with every span's fields (the trace attributes), and a secret in
    // the destination URL too.
    let p = FaultPipeline::start(Options {
        log_filter: "debug".into(),
        token_in_url: true,
        ..Options::default()
    })
    .await;
    // A destination that echoes our credentials back in its errors.
    let echo = format!("{{\"error\":\"bad credentials: Bearer {SOAR_KEY}\"}}");
    p.receiver.always("/soar", Reply::status(400).body(&echo));
    let first = p.send(5, 50);
    let first_uuids = first.wait_accepted(Duration::from_secs(60)).await;
    assert!(
        eventually(DRAIN, || async {
            p.dead_letters().await.len() >= first_uuids.len()
        })
        .await
    );
    // Credentials rejected (echoed back), then a rejected Sekoia key, then the destination
    // down for a moment.
    p.receiver.always("/soar", Reply::status(401).body(&echo));
    let second = p.send(20, 20);
    wait_not_ready(&p, "soar", "paused").await;
    p.sekoia.set_api_key("a-rotated-key-we-do-not-have");
    let third = p.send(5, 20);
    let rejected = eventually(Duration::from_secs(30), || async {
        let (status, body) = p.enricher.readyz().await;
        status == 503 && body.contains("rejected")
    })
    .await;
    assert!(rejected, "the enricher reports the rejected key");
    p.sekoia.set_api_key(SEKOIA_KEY);
    p.receiver_proxy.set_up(false);
    wait_not_ready(&p, "soar", "circuit open").await;
    p.receiver
        .always("/soar", Reply::status(200).body("{\"ok\":true}"));
    p.receiver_proxy.set_up(true);
    let t3 = p.settle(&third, "soar", DRAIN).await;
    assert_eq!(t3.lost, 0, "{t3}");
    let t = p.settle(&second, "soar", DRAIN).await;
    t.report("secret leak check (debug logs)", started);
    assert_eq!(t.lost, 0, "{t}");
    assert_eq!(t.duplicates, 0, "{t}");
    assert_eq!(t.dead_letters, 5, "{t}");
    let dl = p.dead_letters().await;
    assert!(
        dl.iter()
            .all(|d| d.reason.contains("bad credentials: [REDACTED]")),
        "the echoed credential is redacted in the reason: {:?}",
        dl.iter().map(|d| &d.reason).collect::<Vec<_>>()
    );
    // The check below is not vacuous: every service logged at debug level, with spans.
    for s in [&p.ingest, &p.enricher, &p.forwarder] {
        let logs = s.logs();
        assert!(logs.contains("\"level\":\"DEBUG\""), "{logs}");
    }
    p.assert_no_secret_leaks().await;

    // What an operator sees of those entries.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(binary("alertsync"))
            .arg("dlq")
            .arg("--config")
            .arg(&p.config_path)
            .args(args)
            .env("SOAR_KEY", SOAR_KEY)
            .env("URL_TOKEN", URL_TOKEN)
            .output()
            .expect("alertsync runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let list = cli(&["list", "--json"]);
    let seq = serde_json::from_str::<serde_json::Value>(list.lines().next().unwrap()).unwrap()
        ["sequence"]
        .to_string();
    let show = cli(&["show", &seq]);
    assert!(show.contains("?token=[REDACTED]"), "{show}");
    for text in [list, cli(&["list"]), show] {
        for secret in SECRETS {
            assert!(
                !text.contains(secret),
                "a secret reached dlq output:\n{text}"
            );
        }
    }
}

/// Posts `notification` to the ingest webhook until it is accepted (the ingest may be down).
async fn post_until_accepted(url: &str, notification: &serde_json::Value) {
    let client = alertsync_tests::reqwest_client();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let resp = client
            .post(url)
            .bearer_auth(alertsync_tests::WEBHOOK_TOKEN)
            .json(notification)
            .send()
            .await;
        if let Ok(r) = &resp
            && r.status().as_u16() == 202
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the webhook never took {notification}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilling_each_service_during_creations_updates_and_comments_loses_none_and_repeats_none_past_the_records()
 {
    use std::collections::HashSet;
    const LIFECYCLE_ALERTS: usize = 300;
    let started = Instant::now();
    let mut p = FaultPipeline::start(Options {
        lifecycle: true,
        ..Options::default()
    })
    .await;
    let uuids: Vec<String> = (0..LIFECYCLE_ALERTS)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    for uuid in &uuids {
        p.sekoia.insert_alert(alertsync_standins::alerts::new_alert(
            uuid,
            &alertsync_standins::alerts::random_short_id(),
            "rule",
            "title",
        ));
    }
    // Creations at 50 per second; each alert delivered is then acknowledged and commented on
    // in Sekoia, both announced to the webhook: a mixed stream of all three kinds.
    let webhook = p.webhook_url();
    let creations = {
        let (uuids, webhook) = (uuids.clone(), webhook.clone());
        tokio::spawn(async move {
            for uuid in uuids {
                post_until_accepted(&webhook, &serde_json::json!({"alert_uuid": uuid})).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let follower = {
        let (sekoia, receiver, webhook) = (p.sekoia.clone(), p.receiver.clone(), webhook.clone());
        let all = uuids.len();
        tokio::spawn(async move {
            let mut followed = HashSet::new();
            let mut changes = tokio::task::JoinSet::new();
            while followed.len() < all {
                let delivered = delivered_uuids(&receiver.requests_to("/soar"), "/soar");
                for uuid in delivered {
                    if followed.insert(uuid.clone()) {
                        let ack = sekoia.set_status_quietly(&uuid, "Acknowledged");
                        let comment = sekoia.add_comment_quietly(&uuid, "seen", "Jane");
                        let webhook = webhook.clone();
                        changes.spawn(async move {
                            post_until_accepted(&webhook, &ack).await;
                            post_until_accepted(&webhook, &comment).await;
                        });
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            while changes.join_next().await.is_some() {}
        })
    };
    // Nine kills spread over the flow, by the creations delivered.
    for round in 0..9 {
        let at = (round + 1) * LIFECYCLE_ALERTS / 10;
        let reached = eventually(Duration::from_secs(180), || async {
            delivered_uuids(&p.receiver.requests_to("/soar"), "/soar").len() >= at
        })
        .await;
        assert!(reached, "the flow stalled before {at} creations");
        let service = match round % 3 {
            0 => &mut p.enricher,
            1 => &mut p.forwarder,
            _ => &mut p.ingest,
        };
        service.kill();
        service.start().await;
    }
    creations.await.unwrap();
    follower.await.unwrap();
    // Every alert: its creation, its update and its comment, each at least once.
    let later = |reqs: &[alertsync_standins::Recorded],
                 comments: bool|
     -> Vec<alertsync_standins::Recorded> {
        reqs.iter()
            .filter(|r| r.path.starts_with("/soar/t/") && r.path.ends_with("/comments") == comments)
            .cloned()
            .collect()
    };
    let all_there = p
        .receiver
        .wait_until(DRAIN, |reqs| {
            let want: HashSet<&String> = uuids.iter().collect();
            let count = |rs: Vec<alertsync_standins::Recorded>| {
                rs.iter()
                    .filter(|r| (200..300).contains(&r.status))
                    .filter_map(|r| r.json()?["alert_short_id"].as_str().map(str::to_string))
                    .filter(|u| want.contains(u))
                    .collect::<HashSet<_>>()
                    .len()
            };
            count(later(reqs, false)) == uuids.len() && count(later(reqs, true)) == uuids.len()
        })
        .await;
    let reqs = p.receiver.requests();
    let created = Tally::from_requests(&uuids, &p.receiver.requests_to("/soar"));
    let updated = Tally::from_requests(&uuids, &later(&reqs, false));
    let commented = Tally::from_requests(&uuids, &later(&reqs, true));
    created.report("6a lifecycle: creations, SIGKILL ×3 each", started);
    updated.report("6b lifecycle: updates, SIGKILL ×3 each", started);
    commented.report("6c lifecycle: comments, SIGKILL ×3 each", started);
    assert!(
        all_there,
        "not every update and comment arrived: {updated} / {commented}"
    );
    for t in [&created, &updated, &commented] {
        assert_eq!(t.lost, 0, "{t}");
        // Only requests in flight when the forwarder was killed may repeat, and never past
        // the records: a repeat carries the key of the request it repeats.
        assert!(t.duplicates <= p.forwarder.kills * 16, "{t}");
        assert_eq!(t.duplicates_past_idempotency_key, 0, "{t}");
    }
    assert_eq!(p.dead_letters().await.len(), 0);
    // Each alert's update was sent for one state only.
    let statuses: HashSet<String> = later(&reqs, false)
        .iter()
        .filter_map(|r| r.json()?["status"].as_str().map(str::to_string))
        .collect();
    assert_eq!(statuses, HashSet::from(["Acknowledged".to_string()]));
    // Every delivered creation was commented back on its Sekoia alert (after_create), the
    // enricher killed three times meanwhile: once past its record; only a write-back in
    // flight at a kill may repeat (Sekoia's comment API takes no idempotency key).
    let written_back = |uuid: &String| {
        let want = format!("Ticket {uuid}");
        p.sekoia.alert(uuid).unwrap()["comments"]
            .as_array()
            .map_or(0, |c| {
                c.iter().filter(|c| c["content"] == want.as_str()).count()
            })
    };
    let all_written = eventually(DRAIN, || async {
        uuids.iter().all(|u| written_back(u) >= 1)
    })
    .await;
    let repeats: usize = uuids
        .iter()
        .map(|u| written_back(u).saturating_sub(1))
        .sum();
    println!(
        "fault-figures | 6d lifecycle: after_create write-backs | alerts {} | repeated {repeats}",
        uuids.len()
    );
    assert!(all_written, "not every creation was written back");
    assert!(
        repeats <= p.enricher.kills * 16,
        "{repeats} repeated write-backs"
    );
    p.assert_no_secret_leaks().await;
}

/// The tool took the creation (it made the ticket) but the forwarder was SIGKILLed before it
/// heard back: the restarted forwarder sends the creation again under the same key, and the
/// ticket's key is commented back on the Sekoia alert once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarder_killed_before_hearing_back_from_the_tool_writes_back_once() {
    let mut p = FaultPipeline::start(Options {
        lifecycle: true,
        ..Options::default()
    })
    .await;
    let uuid = uuid::Uuid::new_v4().to_string();
    p.sekoia.insert_alert(alertsync_standins::alerts::new_alert(
        &uuid,
        &alertsync_standins::alerts::random_short_id(),
        "rule",
        "title",
    ));
    p.receiver.hold("/soar");
    post_until_accepted(&p.webhook_url(), &serde_json::json!({"alert_uuid": uuid})).await;
    assert!(
        p.receiver
            .wait_until(DRAIN, |r| r.iter().any(|r| r.path == "/soar"))
            .await,
        "the tool took the creation"
    );
    p.forwarder.kill();
    p.receiver.release("/soar");
    p.forwarder.start().await;
    let written_back = || {
        let want = format!("Ticket {uuid}");
        p.sekoia.alert(&uuid).unwrap()["comments"]
            .as_array()
            .map_or(0, |c| {
                c.iter().filter(|c| c["content"] == want.as_str()).count()
            })
    };
    assert!(
        eventually(DRAIN, || async { written_back() >= 1 }).await,
        "the ticket's key was never written back"
    );
    // Nothing left in flight anywhere: a second write-back would have been made by now.
    assert!(
        eventually(DRAIN, || async {
            p.forward_backlog("soar").await == Some((0, 0))
                && p.writeback_backlog().await == Some((0, 0))
        })
        .await,
        "the stages did not drain"
    );
    let sent = p.receiver.requests_to("/soar");
    assert!(sent.len() >= 2, "sent again after the kill: {sent:?}");
    let key = sent[0].header("idempotency-key");
    assert!(key.is_some());
    assert!(
        sent.iter().all(|r| r.header("idempotency-key") == key),
        "every attempt carries the creation's key"
    );
    assert_eq!(written_back(), 1, "written back once");
    assert_eq!(p.dead_letters().await.len(), 0);
}
