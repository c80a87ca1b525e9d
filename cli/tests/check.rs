//! `alertsync check` as an operator runs it: a good config passes every check and exits 0;
//! each broken one (bad template, unknown field, unreachable NATS, old NATS, rejected key,
//! unreachable destination) fails with a line that names the problem, exits 1, and never
//! prints a secret.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

use alertsync_nats_launcher::NatsServer;
use alertsync_standins::{FakeSekoia, Receiver};
use alertsync_tests::{
    INTAKE_KEY, INTAKE_TEMPLATE, MAIN_TEMPLATE, SEKOIA_KEY, SOAR_KEY, WEBHOOK_TOKEN, config_text,
    destination,
};

/// What one run printed.
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    fn line(&self, prefix: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{}", self.stdout))
    }

    fn assert_no_secret(&self) {
        for secret in [SEKOIA_KEY, WEBHOOK_TOKEN, SOAR_KEY, INTAKE_KEY] {
            assert!(
                !self.stdout.contains(secret) && !self.stderr.contains(secret),
                "a secret was printed:\n{}\n{}",
                self.stdout,
                self.stderr
            );
        }
    }
}

/// Runs `alertsync check --config <text> <extra>` with the test secrets in its environment.
async fn check(text: &str, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertsync.toml");
    std::fs::write(&config, text).unwrap();
    run_check(&config, extra).await
}

async fn run_check(config: &Path, extra: &[&str]) -> Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_alertsync"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .args(extra)
        .env("SEKOIA_API_KEY", SEKOIA_KEY)
        .env("WEBHOOK_TOKEN", WEBHOOK_TOKEN)
        .env("SOAR_KEY", SOAR_KEY)
        .env("INTAKE_KEY", INTAKE_KEY)
        .env_remove("ALERTSYNC_CONFIG")
        .output()
        .await
        .expect("alertsync runs");
    let out = Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    out.assert_no_secret();
    out
}

fn destinations() -> String {
    destination("soar", "/soar", MAIN_TEMPLATE) + &destination("intake", "/intake", INTAKE_TEMPLATE)
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The outside world of a good config: a real nats-server, the fake Sekoia and a receiver.
struct World {
    nats: NatsServer,
    sekoia: FakeSekoia,
    receiver: Receiver,
}

impl World {
    async fn start() -> Self {
        Self {
            nats: NatsServer::start().expect("nats-server starts (NATS_SERVER_BIN)"),
            sekoia: FakeSekoia::start(SEKOIA_KEY).await,
            receiver: Receiver::start().await,
        }
    }

    fn config(&self) -> String {
        config_text(
            &self.nats.url(),
            &self.sekoia.base_url(),
            &self.receiver.url(""),
            &destinations(),
        )
    }
}

#[tokio::test]
async fn a_good_config_passes_every_check_and_exits_zero() {
    let world = World::start().await;
    let out = check(&world.config(), &["--destinations"]).await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.line("ok    config:").contains("2 destinations"));
    out.line("ok    template soar:");
    out.line("ok    template intake:");
    assert!(
        out.line("ok    nats:").contains("with JetStream"),
        "{}",
        out.stdout
    );
    out.line("ok    sekoia key:");
    out.line("ok    destination soar:");
    out.line("ok    destination intake:");
    assert!(!out.stdout.contains("FAIL"), "{}", out.stdout);
    assert!(out.stdout.contains("all 7 checks passed"), "{}", out.stdout);
    // A reachability check never delivers an alert: only HEAD requests, without credentials.
    let requests = world.receiver.requests();
    assert_eq!(requests.len(), 2);
    for r in requests {
        assert_eq!(r.method, "HEAD");
        assert!(r.body.is_empty());
        assert_eq!(r.header("authorization"), None);
    }
}

#[tokio::test]
async fn a_template_that_does_not_compile_is_named_with_its_destination_and_field() {
    let world = World::start().await;
    let text = world
        .config()
        .replace("\"This is a description\"", "\"{% if %}\"");
    let out = check(&text, &[]).await;
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    let line = out.line("FAIL  template soar:");
    assert!(line.contains("destinations[soar].json"), "{line}");
    // The other destination and the other checks still ran.
    out.line("ok    template intake:");
    out.line("ok    nats:");
    out.line("ok    sekoia key:");
    assert!(
        out.stderr.contains("1 of 5 checks failed"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_template_with_an_unknown_filter_is_refused_naming_its_destination_and_the_filter() {
    let world = World::start().await;
    let text = world.config().replace(
        "\"This is a description\"",
        "\"{{ node.1['title']|uper }}\"",
    );
    let out = check(&text, &[]).await;
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    let line = out.line("FAIL  template soar:");
    assert!(
        line.contains("destinations[soar].json: unknown filter `uper` at line 1"),
        "{line}"
    );
    out.line("ok    template intake:");
}

#[tokio::test]
async fn an_unknown_field_is_named() {
    let text = config_text(
        "nats://127.0.0.1:4222",
        "http://127.0.0.1:1",
        "http://127.0.0.1:1",
        &destinations(),
    )
    .replace(
        "request_timeout = \"5s\"",
        "request_timeout = \"5s\"\nreplicas = 3",
    );
    let out = check(&text, &[]).await;
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    let line = out.line("FAIL  config:");
    assert!(
        line.contains("unknown field `replicas`") && line.contains("nats"),
        "{line}"
    );
    // Without a valid config nothing else can be checked, and nothing else is claimed.
    assert!(!out.stdout.contains("ok "), "{}", out.stdout);
}

#[tokio::test]
async fn an_unset_variable_is_named_with_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertsync.toml");
    std::fs::write(
        &config,
        config_text(
            "nats://127.0.0.1:4222",
            "http://127.0.0.1:1",
            "http://127.0.0.1:1",
            &destinations(),
        )
        .replace("${SEKOIA_API_KEY}", "${UNSET_SEKOIA_KEY_FOR_TEST}"),
    )
    .unwrap();
    let out = run_check(&config, &[]).await;
    assert_eq!(out.code, Some(1));
    let line = out.line("FAIL  config:");
    assert!(
        line.contains("sekoia.api_key") && line.contains("UNSET_SEKOIA_KEY_FOR_TEST"),
        "{line}"
    );
}

#[tokio::test]
async fn an_unreachable_nats_server_is_named_with_its_url() {
    let world = World::start().await;
    let url = format!("nats://127.0.0.1:{}", closed_port());
    let text = world.config().replace(&world.nats.url(), &url);
    let out = check(&text, &[]).await;
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    let line = out.line("FAIL  nats:");
    assert!(
        line.contains(&format!("cannot connect to NATS at {url}")) && line.contains("nats.url"),
        "{line}"
    );
    out.line("ok    sekoia key:");
}

/// A server that speaks just enough of the NATS protocol to look like nats-server 2.9.10:
/// the INFO line, then PONG for every PING.
fn old_nats_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let info = format!(
                    "INFO {{\"server_id\":\"OLD\",\"server_name\":\"old\",\"version\":\"2.9.10\",\
                     \"go\":\"go1.19\",\"host\":\"127.0.0.1\",\"port\":{port},\"headers\":true,\
                     \"max_payload\":1048576,\"proto\":1,\"jetstream\":true}}\r\n"
                );
                if stream.write_all(info.as_bytes()).is_err() {
                    return;
                }
                let reader = BufReader::new(stream.try_clone().unwrap());
                for line in reader.lines() {
                    let Ok(line) = line else { return };
                    if line.starts_with("PING") && stream.write_all(b"PONG\r\n").is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("nats://127.0.0.1:{port}")
}

#[tokio::test]
async fn a_nats_server_older_than_2_10_is_refused_with_what_to_do() {
    let world = World::start().await;
    let url = old_nats_server();
    let text = world.config().replace(&world.nats.url(), &url);
    let out = check(&text, &[]).await;
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    let line = out.line("FAIL  nats:");
    assert!(
        line.contains("2.9.10") && line.contains("too old") && line.contains("2.10 or newer"),
        "{line}"
    );
}

#[tokio::test]
async fn a_rejected_sekoia_key_is_named_with_the_permission_it_needs() {
    let world = World::start().await;
    world.sekoia.set_api_key("another-key-entirely");
    let out = check(&world.config(), &[]).await;
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    let line = out.line("FAIL  sekoia key:");
    assert!(
        line.contains("rejected the API key (401") && line.contains("View alerts"),
        "{line}"
    );
    out.line("ok    nats:");
}

#[tokio::test]
async fn an_unreachable_destination_is_named_without_printing_its_url() {
    let world = World::start().await;
    let port = closed_port();
    let text = config_text(
        &world.nats.url(),
        &world.sekoia.base_url(),
        &format!("http://127.0.0.1:{port}"),
        &destination("soar", "/soar?token=${SOAR_KEY}", MAIN_TEMPLATE),
    );
    let out = check(&text, &["--destinations"]).await;
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    let line = out.line("FAIL  destination soar:");
    assert!(
        line.contains(&format!("127.0.0.1:{port} is unreachable")) && !line.contains("/soar"),
        "{line}"
    );
    // Without --destinations, the destination is not contacted and the rest passes.
    let out = check(&text, &[]).await;
    assert_eq!(out.code, Some(0), "{}", out.stdout);
}

#[test]
fn every_command_has_help_with_examples() {
    for cmd in ["check", "render", "run", "demo", "stand-ins", "dlq"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_alertsync"))
            .args([cmd, "--help"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{cmd}: {text}");
        assert!(
            text.contains("Examples:"),
            "{cmd} --help has no examples:\n{text}"
        );
    }
}
