//! `alertsync run` with every stage in one process passes the same end-to-end delivery test as
//! the three separate binaries (`tests/tests/binaries.rs`): ready on each stage's /readyz,
//! an alert announced on the webhook reaches both destinations, SIGTERM exits 0, and no
//! secret reaches the log.

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
