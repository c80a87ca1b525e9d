//! The shipped binaries as real processes: configured from a file and the environment, ready
//! on /readyz, delivering, exiting 0 on SIGTERM, and failing clearly on a bad config.
//!
//! The binaries must be built first (`cargo build --workspace --bins`; `scripts/test` does it).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alertsync_nats_launcher::NatsServer;
use alertsync_standins::{FakeSekoia, Receiver};
use alertsync_tests::*;

fn binary(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps; binaries one level up.
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .to_path_buf();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Service {
    child: Child,
    log: PathBuf,
}

impl Service {
    fn spawn(name: &str, config: &std::path::Path, dir: &std::path::Path, args: &[&str]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary(name))
            .arg("--config")
            .arg(config)
            .args(args)
            .env("SEKOIA_API_KEY", SEKOIA_KEY)
            .env("WEBHOOK_TOKEN", WEBHOOK_TOKEN)
            .env("SOAR_KEY", SOAR_KEY)
            .env("INTAKE_KEY", INTAKE_KEY)
            .env("RUST_LOG", "debug")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    /// SIGTERM, then the exit status within `grace`.
    async fn terminate(mut self, grace: Duration) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = tokio::time::Instant::now() + grace;
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code();
            }
            if tokio::time::Instant::now() > deadline {
                let _ = self.child.kill();
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        (code, std::fs::read_to_string(&self.log).unwrap_or_default())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[tokio::test]
async fn the_three_binaries_deliver_an_alert_and_exit_zero_on_sigterm_without_leaking_secrets() {
    let nats = NatsServer::start().unwrap();
    let sekoia = FakeSekoia::start(SEKOIA_KEY).await;
    let receiver = Receiver::start().await;
    let ports = [free_port(), free_port(), free_port()];
    let text = config_text(
        &nats.url(),
        &sekoia.base_url(),
        &receiver.url(""),
        &(destination("soar", "/soar", MAIN_TEMPLATE)
            + &destination("intake", "/intake", INTAKE_TEMPLATE)),
    )
    .replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{}\"", ports[0]),
        1,
    )
    .replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{}\"", ports[1]),
        1,
    )
    .replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{}\"", ports[2]),
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertsync.toml");
    std::fs::write(&config, text).unwrap();

    // The ingest and the enricher on their default single thread, the forwarder on a pool:
    // both runtimes a deployment can choose must deliver and shut down cleanly.
    let services = [
        Service::spawn("alertsync-ingest", &config, dir.path(), &[]),
        Service::spawn("alertsync-enricher", &config, dir.path(), &[]),
        Service::spawn(
            "alertsync-forwarder",
            &config,
            dir.path(),
            &["--worker-threads", "8"],
        ),
    ];
    let client = reqwest_client();
    for port in ports {
        let url = format!("http://127.0.0.1:{port}/readyz");
        let ready = eventually(SOON, || async {
            matches!(client.get(&url).send().await, Ok(r) if r.status().as_u16() == 200)
        })
        .await;
        assert!(ready, "{url} never became ready");
    }
    // The option reaches the runtime: eight workers besides the main thread, where the
    // single-thread default runs on the main thread alone (1 thread here).
    let threads = |s: &Service| {
        std::fs::read_dir(format!("/proc/{}/task", s.child.id()))
            .unwrap()
            .count()
    };
    assert!(
        threads(&services[2]) >= 9,
        "forwarder: {} threads",
        threads(&services[2])
    );
    assert!(
        threads(&services[0]) < 9,
        "ingest: {} threads",
        threads(&services[0])
    );

    let uuid = uuid::Uuid::new_v4().to_string();
    sekoia.insert_alert(alertsync_standins::alerts::new_alert(
        &uuid,
        "ALbin0000001",
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
        "both destinations got it"
    );
    assert_eq!(
        uuids_in(&receiver.requests_to("/soar"), "alert_short_id"),
        vec![uuid]
    );

    for s in services {
        let (code, log) = s.terminate(Duration::from_secs(15)).await;
        assert_eq!(code, Some(0), "clean exit on SIGTERM; log:\n{log}");
        for secret in [SEKOIA_KEY, WEBHOOK_TOKEN, SOAR_KEY, INTAKE_KEY] {
            assert!(!log.contains(secret), "a secret reached the log:\n{log}");
        }
    }
}

#[tokio::test]
async fn a_bad_config_fails_at_startup_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertsync.toml");
    std::fs::write(
        &config,
        config_text(
            "nats://127.0.0.1:1",
            "http://127.0.0.1:1",
            "http://127.0.0.1:1",
            &destination("soar", "/s", "{{ unclosed"),
        ),
    )
    .unwrap();
    // The enricher needs SEKOIA_API_KEY, which is not set here.
    let out = Command::new(binary("alertsync-enricher"))
        .arg("--config")
        .arg(&config)
        .env_remove("SEKOIA_API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sekoia.api_key") && err.contains("SEKOIA_API_KEY"),
        "{err}"
    );

    // The forwarder: a template that does not compile is named with its destination.
    let out = Command::new(binary("alertsync-forwarder"))
        .arg("--config")
        .arg(&config)
        .env("SOAR_KEY", SOAR_KEY)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("destinations[soar].json"), "{err}");

    // A thread count out of range is refused before anything starts, naming the option.
    let out = Command::new(binary("alertsync-ingest"))
        .arg("--config")
        .arg(&config)
        .env("ALERTSYNC_WORKER_THREADS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--worker-threads"), "{err}");
}
