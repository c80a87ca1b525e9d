//! `alertsync run` with every stage in one process passes the same end-to-end delivery test as
//! the three separate binaries (`tests/tests/binaries.rs`): ready on each stage's /readyz,
//! an alert announced on the webhook reaches both destinations, SIGTERM exits 0, and no
//! secret reaches the log.
//!
//! The compose `demo` profile, without Docker: `alertsync stand-ins` and `alertsync run` as
//! child processes, with the shipped `deploy/compose/alertsync.toml` and `.env.example`,
//! deliver the generated alerts to the printing receiver.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alertsync_nats_launcher::NatsServer;
use alertsync_standins::{FakeSekoia, Receiver};
use alertsync_tests::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `alertsync run` child; killed if the test fails before it is stopped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn alertsync_run_with_all_stages_delivers_an_alert_and_exits_zero_on_sigterm() {
    let nats = NatsServer::start().expect("nats-server starts (NATS_SERVER_BIN)");
    let sekoia = FakeSekoia::start(SEKOIA_KEY).await;
    let receiver = Receiver::start().await;
    let ports = [free_port(), free_port(), free_port()];
    let mut text = config_text(
        &nats.url(),
        &sekoia.base_url(),
        &receiver.url(""),
        &(destination("soar", "/soar", MAIN_TEMPLATE)
            + &destination("intake", "/intake", INTAKE_TEMPLATE)),
    );
    for port in ports {
        text = text.replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
            1,
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertsync.toml");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("run.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut process = Process(
        Command::new(env!("CARGO_BIN_EXE_alertsync"))
            .args(["run", "--config"])
            .arg(&config)
            // All three stages on one thread: the smallest runtime `run` can be given
            // (the benchmark's `--one-process` runs the default, one thread per core).
            .env("ALERTSYNC_WORKER_THREADS", "1")
            .env("SEKOIA_API_KEY", SEKOIA_KEY)
            .env("WEBHOOK_TOKEN", WEBHOOK_TOKEN)
            .env("SOAR_KEY", SOAR_KEY)
            .env("INTAKE_KEY", INTAKE_KEY)
            .env("RUST_LOG", "debug")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let client = reqwest_client();
    for port in ports {
        let url = format!("http://127.0.0.1:{port}/readyz");
        let ready = eventually(SOON, || async {
            matches!(client.get(&url).send().await, Ok(r) if r.status().as_u16() == 200)
        })
        .await;
        assert!(ready, "{url} never became ready; log:\n{}", read_log());
    }

    let uuid = uuid::Uuid::new_v4().to_string();
    sekoia.insert_alert(alertsync_standins::alerts::new_alert(
        &uuid,
        "ALrun0000001",
        "rule",
        "title",
    ));
    let resp = client
        .post(format!("http://127.0.0.1:{}/v1/alerts", ports[0]))
        .bearer_auth(WEBHOOK_TOKEN)
        .json(&serde_json::json!({"alert_uuid": uuid}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    assert!(
        receiver.wait_until(SOON, |reqs| reqs.len() >= 2).await,
        "both destinations got it; log:\n{}",
        read_log()
    );
    assert_eq!(
        uuids_in(&receiver.requests_to("/soar"), "alert_short_id"),
        vec![uuid.clone()]
    );
    let intake = receiver.requests_to("/intake");
    assert_eq!(intake.len(), 1);
    assert_eq!(
        intake[0].json().unwrap()["intake_key"],
        INTAKE_KEY,
        "the intake got its key"
    );

    let pid = process.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exited = eventually(Duration::from_secs(15), || {
        let done = process.0.try_wait().unwrap().is_some();
        async move { done }
    })
    .await;
    assert!(
        exited,
        "no exit within 15s of SIGTERM; log:\n{}",
        read_log()
    );
    let status = process.0.wait().unwrap();
    let log = read_log();
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM; log:\n{log}");
    for secret in [SEKOIA_KEY, WEBHOOK_TOKEN, SOAR_KEY, INTAKE_KEY] {
        assert!(!log.contains(secret), "a secret reached the log:\n{log}");
    }
    // Exactly one delivery per destination, even after the shutdown.
    assert_eq!(receiver.requests().len(), 2);
}

/// Sends SIGTERM and waits (with a deadline) for the exit code.
async fn terminate(process: &mut Process, what: &str, log: &dyn Fn() -> String) -> Option<i32> {
    let pid = process.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exited = eventually(Duration::from_secs(15), || {
        let done = process.0.try_wait().unwrap().is_some();
        async move { done }
    })
    .await;
    assert!(
        exited,
        "{what}: no exit within 15s of SIGTERM; log:\n{}",
        log()
    );
    process.0.wait().unwrap().code()
}

/// The variables of `.env.example`, as `docker compose` passes them from `.env`.
fn example_env() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.env.example");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[tokio::test]
async fn the_compose_demo_profile_delivers_generated_alerts_to_the_printing_receiver() {
    let nats = NatsServer::start().expect("nats-server starts (NATS_SERVER_BIN)");
    let [sekoia, receiver, ingest, enricher, forwarder] = [(); 5].map(|_| free_port());
    let config_text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/compose/alertsync.toml"),
    )
    .unwrap()
    // What compose's service names and container ports become on this machine.
    .replace("nats://nats:4222", &nats.url())
    .replace("0.0.0.0:8080", &format!("127.0.0.1:{ingest}"))
    .replace("0.0.0.0:8081", &format!("127.0.0.1:{enricher}"))
    .replace("0.0.0.0:8082", &format!("127.0.0.1:{forwarder}"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertsync.toml");
    std::fs::write(&config, config_text).unwrap();
    let env = example_env();
    let spawn = |name: &str, args: Vec<String>, extra: &[(String, String)]| {
        let log = dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_alertsync"));
        cmd.args(&args)
            .envs(env.iter().cloned())
            .envs(extra.iter().cloned())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null());
        (Process(cmd.spawn().unwrap()), log)
    };

    // As in docker-compose.yml's stand-ins service, with loopback addresses.
    let (mut stand_ins, stand_ins_log) = spawn(
        "stand-ins",
        vec![
            "stand-ins".into(),
            format!("--sekoia-listen=127.0.0.1:{sekoia}"),
            format!("--receiver-listen=127.0.0.1:{receiver}"),
            format!("--webhook=http://127.0.0.1:{ingest}/v1/alerts"),
            "--webhook-token-env=ALERTSYNC_WEBHOOK_TOKEN".into(),
            "--sekoia-key-env=SEKOIA_API_KEY".into(),
            "--every=300ms".into(),
        ],
        &[],
    );
    // The .env variables that point the shipped config at the stand-ins.
    let urls = [
        ("SEKOIA_BASE_URL", format!("http://127.0.0.1:{sekoia}")),
        ("SOAR_URL", format!("http://127.0.0.1:{receiver}/soar")),
        (
            "SEKOIA_INTAKE_URL",
            format!("http://127.0.0.1:{receiver}/intake"),
        ),
    ]
    .map(|(k, v)| (k.to_string(), v));
    let (mut run, run_log) = spawn(
        "run",
        vec![
            "run".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        &urls,
    );
    let printed = || std::fs::read_to_string(&stand_ins_log).unwrap_or_default();
    let logs = || {
        format!(
            "stand-ins:\n{}\nrun:\n{}",
            printed(),
            std::fs::read_to_string(&run_log).unwrap_or_default()
        )
    };

    let delivered =
        eventually(SOON, || {
            let out = printed();
            async move {
                out.matches("POST /soar").count() >= 3 && out.matches("POST /intake").count() >= 3
            }
        })
        .await;
    assert!(delivered, "alerts did not reach the receiver:\n{}", logs());

    assert_eq!(
        terminate(&mut run, "alertsync run", &logs).await,
        Some(0),
        "{}",
        logs()
    );
    assert_eq!(
        terminate(&mut stand_ins, "alertsync stand-ins", &logs).await,
        Some(0),
        "{}",
        logs()
    );
    let out = printed();
    // Every printed body is JSON, the hostile rule name included, and the intake key is
    // scrubbed from what the receiver prints.
    let bodies: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with("           {"))
        .map(|l| serde_json::from_str(l.trim()).expect("printed body is JSON"))
        .collect();
    assert!(bodies.len() >= 6, "{out}");
    assert!(
        bodies
            .iter()
            .filter_map(|b| b.get("intake_key"))
            .all(|k| k == "[REDACTED]"),
        "{out}"
    );
    let all = logs();
    for (name, value) in &env {
        assert!(
            !all.contains(value.as_str()),
            "{name}'s value was printed:\n{all}"
        );
    }
}
