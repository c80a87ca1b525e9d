//! The shared gated call on its own: a real HTTP server answering scripted statuses, a real
//! reqwest client, the production status mapping (`CallOutcome::of_status`) and the gate, through
//! every outcome the call path knows.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alertsync_gate::{Gate, GatePolicy, GateState, Hold};
use alertsync_http::{CallOutcome, RetryPolicy, retry_after};
use alertsync_proto::{DeadLetterClass, Stage};
use alertsync_telemetry::Metrics;
use alertsync_worker::Outcome;
use alertsync_worker::call::{Attempted, CallPolicy, CallSite, gated_call};
use axum::http::{HeaderMap, StatusCode};

/// One scripted answer: status, `Retry-After`, and how long to wait before answering.
#[derive(Clone, Copy)]
struct Answer(u16, Option<u64>, Duration);

/// A server answering from a script (the last answer repeats), recording when each request
/// came.
#[derive(Clone, Default)]
struct Script {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    seen: Arc<Mutex<Vec<Instant>>>,
}

impl Script {
    async fn serve(answers: &[Answer]) -> (Script, SocketAddr) {
        let script = Script::default();
        script
            .answers
            .lock()
            .unwrap()
            .extend(answers.iter().copied());
        let s = script.clone();
        let app = axum::Router::new().route(
            "/call",
            axum::routing::post(move || {
                let s = s.clone();
                async move {
                    s.seen.lock().unwrap().push(Instant::now());
                    let Answer(status, ra, wait) = {
                        let mut a = s.answers.lock().unwrap();
                        if a.len() > 1 {
                            a.pop_front().unwrap()
                        } else {
                            *a.front().unwrap()
                        }
                    };
                    tokio::time::sleep(wait).await;
                    let mut headers = HeaderMap::new();
                    if let Some(ra) = ra {
                        headers.insert("retry-after", ra.to_string().parse().unwrap());
                    }
                    (StatusCode::from_u16(status).unwrap(), headers, "answer")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (script, addr)
    }

    fn requests(&self) -> Vec<Instant> {
        self.seen.lock().unwrap().clone()
    }
}

/// A message on its `attempt`th delivery.
struct Message(u32);

impl Hold for Message {
    async fn in_progress(&self) {}
}

impl Attempted for Message {
    fn attempt(&self) -> u32 {
        self.0
    }
}

fn gate(circuit_failures: u32) -> Gate {
    Gate::new(
        "test",
        GatePolicy {
            probe_base: Duration::from_millis(50),
            probe_max: Duration::from_millis(200),
            circuit_failures,
            paused_probe_every: None,
        },
    )
}

const POLICY: CallPolicy = CallPolicy {
    retry: RetryPolicy {
        base: Duration::from_secs(1),
        max: Duration::from_secs(10),
        max_retry_after: Duration::from_secs(2),
    },
    max_attempts: 3,
    not_yet_attempts: 2,
};

/// The call a stage makes: POST, then the production mapping of the answer.
async fn call(client: &reqwest::Client, addr: SocketAddr) -> CallOutcome<u16> {
    match client.post(format!("http://{addr}/call")).send().await {
        Err(e) => CallOutcome::transport(alertsync_http::describe_error(&e)),
        Ok(resp) => {
            let status = resp.status().as_u16();
            if resp.status().is_success() {
                return CallOutcome::Done(status);
            }
            let wait = retry_after(resp.headers());
            CallOutcome::of_status(status, wait, format!("answered {status}"))
        }
    }
}

/// Runs one gated call of alert `key` on its `attempt`th delivery against `answers`.
async fn run(
    answers: &[Answer],
    gate: &Gate,
    key: &str,
    attempt: u32,
) -> (Result<u16, Outcome>, Script) {
    let (script, addr) = Script::serve(answers).await;
    let client = alertsync_http::client_builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let metrics = Metrics::new();
    let site = CallSite {
        gate,
        policy: &POLICY,
        stage: Stage::Forward,
        destination: Some("test"),
        metrics: &metrics,
        what: "test call",
    };
    let d = Message(attempt);
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        gated_call(site, &d, key, || call(&client, addr)),
    )
    .await
    .expect("the call path ends");
    (result, script)
}

fn states(gate: &Gate) -> Arc<Mutex<Vec<GateState>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    gate.on_change(move |st| s.lock().unwrap().push(st.state));
    seen
}

const NOW: Duration = Duration::ZERO;

fn dead_class(r: &Result<u16, Outcome>) -> Option<(DeadLetterClass, Option<u16>)> {
    match r {
        Err(Outcome::DeadLetter {
            class, last_status, ..
        }) => Some((*class, *last_status)),
        _ => None,
    }
}

#[tokio::test]
async fn a_2xx_is_the_value_and_the_gate_stays_open() {
    let g = gate(3);
    let (r, script) = run(&[Answer(201, None, NOW)], &g, "a", 1).await;
    assert_eq!(r.unwrap(), 201);
    assert_eq!(script.requests().len(), 1);
    assert!(g.is_open());
}

#[tokio::test]
async fn rejected_credentials_pause_the_gate_and_hold_the_message_without_burning_an_attempt() {
    for status in [401, 403] {
        let g = gate(3);
        let seen = states(&g);
        let answers = [Answer(status, None, NOW), Answer(200, None, NOW)];
        // The last attempt: a burnt attempt would have dead-lettered it.
        let (r, script) = run(&answers, &g, "a", POLICY.max_attempts).await;
        assert_eq!(r.unwrap(), 200, "{status}");
        assert_eq!(script.requests().len(), 2);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, vec![GateState::Paused, GateState::Open], "{status}");
    }
}

#[tokio::test]
async fn a_429_holds_every_call_for_its_retry_after_then_calls_again() {
    let g = gate(3);
    let seen = states(&g);
    let answers = [Answer(429, Some(1), NOW), Answer(200, None, NOW)];
    let (r, script) = run(&answers, &g, "a", POLICY.max_attempts).await;
    assert_eq!(r.unwrap(), 200);
    let at = script.requests();
    assert_eq!(at.len(), 2);
    assert!(
        at[1] - at[0] >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(seen.lock().unwrap()[0], GateState::Throttled);
}

#[tokio::test]
async fn a_5xx_opening_the_circuit_holds_the_message_until_a_probe_succeeds() {
    let g = gate(1);
    let seen = states(&g);
    let answers = [
        Answer(503, None, NOW),
        Answer(502, None, NOW),
        Answer(200, None, NOW),
    ];
    let (r, script) = run(&answers, &g, "a", POLICY.max_attempts).await;
    assert_eq!(r.unwrap(), 200, "held, not dead-lettered");
    assert_eq!(script.requests().len(), 3);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.first(), Some(&GateState::CircuitOpen));
    assert_eq!(seen.last(), Some(&GateState::Open));
}

#[tokio::test]
async fn a_5xx_below_the_circuit_is_retried_with_retry_after_then_dead_lettered() {
    let g = gate(5);
    let (r, _) = run(&[Answer(503, Some(2), NOW)], &g, "a", 1).await;
    match r {
        Err(Outcome::Retry { after }) => assert_eq!(after, Duration::from_secs(2)),
        other => panic!("{other:?}"),
    }
    let (r, _) = run(
        &[Answer(500, None, NOW)],
        &gate(5),
        "a",
        POLICY.max_attempts,
    )
    .await;
    assert_eq!(
        dead_class(&r),
        Some((DeadLetterClass::Exhausted, Some(500)))
    );
}

#[tokio::test]
async fn a_timeout_is_transient() {
    let (r, _) = run(
        &[Answer(200, None, Duration::from_secs(2))],
        &gate(5),
        "a",
        1,
    )
    .await;
    assert!(matches!(r, Err(Outcome::Retry { .. })), "{r:?}");
    let (r, _) = run(
        &[Answer(200, None, Duration::from_secs(2))],
        &gate(5),
        "a",
        POLICY.max_attempts,
    )
    .await;
    assert_eq!(dead_class(&r), Some((DeadLetterClass::Exhausted, None)));
}

#[tokio::test]
async fn a_413_and_other_4xx_are_dead_lettered_at_once_by_class() {
    let g = gate(1);
    let (r, script) = run(&[Answer(413, None, NOW)], &g, "a", 1).await;
    assert_eq!(dead_class(&r), Some((DeadLetterClass::TooLarge, Some(413))));
    assert_eq!(script.requests().len(), 1);
    let (r, _) = run(&[Answer(422, None, NOW)], &g, "a", 1).await;
    assert_eq!(dead_class(&r), Some((DeadLetterClass::Http4xx, Some(422))));
    let (r, _) = run(&[Answer(501, None, NOW)], &g, "a", 1).await;
    assert_eq!(
        dead_class(&r),
        Some((DeadLetterClass::HttpOther, Some(501)))
    );
    assert!(g.is_open(), "answers about the alert leave the gate open");
}

#[tokio::test]
async fn an_alert_failing_where_others_succeed_burns_its_attempts_instead_of_holding_a_stage() {
    // The circuit opens on the first failure; the alert is held, a probe of another alert
    // succeeds, and the alert's next failure is its own: retried, not held again.
    let g = gate(1);
    let (script, addr) = Script::serve(&[Answer(503, None, NOW)]).await;
    let client = alertsync_http::client_builder().build().unwrap();
    let metrics = Metrics::new();
    let site = CallSite {
        gate: &g,
        policy: &POLICY,
        stage: Stage::Forward,
        destination: Some("test"),
        metrics: &metrics,
        what: "test call",
    };
    let bad = Message(1);
    let held = tokio::spawn({
        let g = g.clone();
        let client = client.clone();
        async move {
            let site = CallSite {
                gate: &g,
                policy: &POLICY,
                stage: Stage::Forward,
                destination: Some("test"),
                metrics: &Metrics::new(),
                what: "test call",
            };
            gated_call(site, &bad, "bad", || call(&client, addr)).await
        }
    });
    // Once the circuit is open, a fresh message probes and succeeds.
    let deadline = Instant::now() + Duration::from_secs(10);
    while g.is_open() {
        assert!(Instant::now() < deadline, "the circuit opens");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (ok, good_addr) = Script::serve(&[Answer(200, None, NOW)]).await;
    let good = Message(1);
    let r = gated_call(site, &good, "good", || call(&client, good_addr)).await;
    assert_eq!(r.unwrap(), 200);
    assert_eq!(ok.requests().len(), 1);
    let r = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the bad alert is not held for ever")
        .unwrap();
    assert!(matches!(r, Err(Outcome::Retry { .. })), "{r:?}");
    assert_eq!(script.requests().len(), 2);
    assert!(g.is_poison("bad"));
    assert!(g.is_open(), "its failures no longer close the gate");
}

#[tokio::test]
async fn not_yet_is_retried_then_dead_lettered_as_not_found() {
    let g = gate(1);
    let (script, addr) = Script::serve(&[Answer(404, None, NOW)]).await;
    let client = alertsync_http::client_builder().build().unwrap();
    let metrics = Metrics::new();
    let site = CallSite {
        gate: &g,
        policy: &POLICY,
        stage: Stage::Enrich,
        destination: None,
        metrics: &metrics,
        what: "Get Alert",
    };
    let not_yet = || async {
        match call(&client, addr).await {
            CallOutcome::Permanent {
                status: Some(404),
                reason,
            } => CallOutcome::NotYet {
                status: 404,
                reason,
            },
            other => other,
        }
    };
    let r = gated_call(site, &Message(1), "a", not_yet).await;
    assert!(matches!(r, Err(Outcome::Retry { .. })), "{r:?}");
    let r = gated_call(site, &Message(2), "a", not_yet).await;
    assert_eq!(dead_class(&r), Some((DeadLetterClass::NotFound, Some(404))));
    match r {
        Err(Outcome::DeadLetter { reason, .. }) => {
            assert_eq!(reason, "answered 404 on 2 attempts")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(script.requests().len(), 2);
    assert!(g.is_open());
}
