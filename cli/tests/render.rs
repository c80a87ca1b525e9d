//! `alertsync render` on the seed's two templates (from `alertsync.example.toml`) and the
//! fixture alert: the exact request, secrets redacted; the same for a live alert fetched from
//! Sekoia; and what it prints is what the forwarder sends.

use std::path::{Path, PathBuf};

use alertsync_config::{Config, Stage};
use alertsync_standins::{FakeSekoia, Receiver};

const SOAR_KEY: &str = "render-test-soar-key-1234";
const INTAKE_KEY: &str = "render-test-intake-key-5678";
const SEKOIA_KEY: &str = "render-test-sekoia-key-9012";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture() -> PathBuf {
    root().join("tests/fixtures/alert_full.json")
}

fn example_config() -> String {
    std::fs::read_to_string(root().join("alertsync.example.toml")).unwrap()
}

/// Edits the example config, failing loudly if the text to replace is gone from it.
trait Edit {
    fn edit(self, from: &str, to: &str) -> String;
}

impl Edit for String {
    fn edit(self, from: &str, to: &str) -> String {
        assert!(
            self.contains(from),
            "alertsync.example.toml no longer contains {from:?}"
        );
        self.replace(from, to)
    }
}

fn env(name: &str) -> Option<String> {
    match name {
        "SOAR_API_KEY" => Some(SOAR_KEY.into()),
        "SEKOIA_INTAKE_KEY" => Some(INTAKE_KEY.into()),
        "SEKOIA_API_KEY" => Some(SEKOIA_KEY.into()),
        _ => None,
    }
}

/// Runs `alertsync render` with `args`; returns (exit code, stdout, stderr).
async fn render(config: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alertsync.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_alertsync"));
    cmd.arg("render").arg("--config").arg(&path).args(args);
    for name in ["SOAR_API_KEY", "SEKOIA_INTAKE_KEY", "SEKOIA_API_KEY"] {
        cmd.env(name, env(name).unwrap());
    }
    // The forwarder's part of the config must be enough: the webhook token is not needed.
    cmd.env_remove("ALERTSYNC_WEBHOOK_TOKEN");
    let out = cmd.output().await.expect("alertsync runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    for secret in [SOAR_KEY, INTAKE_KEY, SEKOIA_KEY] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "a secret was printed:\n{stdout}\n{stderr}"
        );
    }
    (out.status.code(), stdout, stderr)
}

/// Runs `alertsync render --destination <destination> --alert <the fixture file>`.
async fn render_fixture(config: &str, destination: &str) -> (Option<i32>, String, String) {
    let fixture = fixture();
    render(
        config,
        &[
            "--destination",
            destination,
            "--alert",
            fixture.to_str().unwrap(),
        ],
    )
    .await
}

const FIXTURE_UUID: &str = "3b1f6c2e-8d4a-4f0b-9e37-5a2c7d91e604";

fn expected_soar() -> String {
    format!(
        "POST https://soar.example/api/alerts\n\
         authorization: [REDACTED]\n\
         content-type: application/json\n\
         idempotency-key: {FIXTURE_UUID}:soar\n\
         \n\
         {{\"alert_short_id\":\"{FIXTURE_UUID}\", \"rule_name\":\"Brute force on SSH service\",\
         \"rule_severity\":\"65\",\"description\":\"This is a description\"}}\n"
    )
}

fn expected_intake() -> String {
    format!(
        "POST https://intake.sekoia.io/\n\
         content-type: application/json\n\
         idempotency-key: {FIXTURE_UUID}:sekoia-intake\n\
         \n\
         {{\"json\":\"'{{\\\"alert_short_id\\\":\\\"{FIXTURE_UUID}\\\", \\\"rule_name\\\":\
         \\\"Brute force on SSH service\\\",\\\"rule_severity\\\":\\\"65\\\",\\\"description\\\":\
         \\\"An HTTP request was made from Sekoia.io Playbook\\\"}}'\", \
         \"intake_key\":\"[REDACTED]\"}}\n"
    )
}

#[tokio::test]
async fn the_seed_main_template_renders_the_exact_request_with_the_credential_redacted() {
    let (code, stdout, stderr) = render_fixture(&example_config(), "soar").await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, expected_soar());
}

#[tokio::test]
async fn the_seed_bonus_intake_template_renders_with_the_intake_key_redacted() {
    let (code, stdout, stderr) = render_fixture(&example_config(), "sekoia-intake").await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, expected_intake());
    // The body is JSON, and so is the event inside its "json" string (once the seed's own
    // single quotes are taken off).
    let body: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let inner = body["json"].as_str().unwrap().trim_matches('\'');
    let event: serde_json::Value = serde_json::from_str(inner).unwrap();
    assert_eq!(event["rule_name"], "Brute force on SSH service");
}

#[tokio::test]
async fn a_live_alert_fetched_from_sekoia_renders_like_the_same_alert_from_a_file() {
    let sekoia = FakeSekoia::start(SEKOIA_KEY).await;
    sekoia.insert_alert(alertsync_standins::alerts::fixture());
    let config = example_config().edit("https://api.sekoia.io", &sekoia.base_url());
    let (code, stdout, stderr) = render(
        &config,
        &["--destination", "soar", "--alert-uuid", FIXTURE_UUID],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, expected_soar());

    // An alert Sekoia does not have: the message says so and what to check.
    let missing = "00000000-0000-4000-8000-00000000abcd";
    let (code, _, stderr) =
        render(&config, &["--destination", "soar", "--alert-uuid", missing]).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!("Sekoia has no alert {missing} (404)")),
        "{stderr}"
    );

    // A rejected key is named.
    sekoia.set_api_key("rotated-key-000000");
    let (code, _, stderr) = render(
        &config,
        &["--destination", "soar", "--alert-uuid", FIXTURE_UUID],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("Sekoia rejected the API key (401)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_unknown_destination_lists_the_configured_ones() {
    let (code, _, stderr) = render_fixture(&example_config(), "sOAR").await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("no destination named \"sOAR\"") && stderr.contains("soar, sekoia-intake"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_hostile_rule_name_is_rendered_as_json_text_not_structure() {
    let mut alert = alertsync_standins::alerts::fixture();
    alert["rule"]["name"] = serde_json::json!("x\", \"injected\": \"1\\");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alert.json");
    std::fs::write(&file, alert.to_string()).unwrap();
    let (code, stdout, stderr) = render(
        &example_config(),
        &["--destination", "soar", "--alert", file.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let body: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(body["rule_name"], "x\", \"injected\": \"1\\");
    assert!(body.get("injected").is_none());
}

/// What `render` prints is what the forwarder's `Destination` sends: same method, path and
/// query, same headers (credentials aside), same body.
#[tokio::test]
async fn the_printed_request_is_the_request_the_forwarder_sends() {
    let receiver = Receiver::start().await;
    let config = example_config()
        .edit("https://soar.example/api/alerts", &receiver.url("/soar"))
        .edit("https://intake.sekoia.io", &receiver.url("/intake"))
        .edit(
            "# params = { source = \"sekoia\" }",
            "params = { source = \"sekoia\", rule = \"{{ node.1.rule.name }}\" }",
        );
    let parsed = Config::parse(&config, &env, &[Stage::Forwarder]).unwrap();
    let destinations = alertsync_forwarder::compile_destinations(&parsed).unwrap();
    let alert: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture()).unwrap()).unwrap();
    let ctx = alertsync_template::Context::new(&alert);

    for (dest, path) in destinations.iter().zip(["/soar", "/intake"]) {
        let (code, printed, stderr) = render_fixture(&config, &dest.name).await;
        assert_eq!(code, Some(0), "{stderr}");

        let request = dest.render(&ctx, FIXTURE_UUID).unwrap();
        let attempt = dest.send(&request, false).await;
        assert!(
            matches!(attempt, alertsync_http::CallOutcome::Done(ref a) if a.status == 200),
            "{attempt:?}"
        );
        let got = receiver
            .requests_to(path)
            .pop()
            .expect("the receiver got it");

        let (head, body) = printed.split_once("\n\n").unwrap();
        let mut lines = head.lines();
        let query = got
            .query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        assert_eq!(
            lines.next().unwrap(),
            format!("{} {}{query}", got.method, receiver.url(path))
        );
        for line in lines {
            let (name, value) = line.split_once(": ").unwrap();
            let sent = got
                .header(name)
                .unwrap_or_else(|| panic!("{name} not sent"));
            if value == "[REDACTED]" {
                assert_eq!(name, "authorization");
                assert_eq!(sent, format!("Bearer {SOAR_KEY}"));
            } else {
                assert_eq!(sent, value, "{name}");
            }
        }
        let sent_body = String::from_utf8(got.body.to_vec()).unwrap();
        assert_eq!(
            body.trim_end_matches('\n'),
            sent_body.replace(INTAKE_KEY, "[REDACTED]")
        );
    }
}

#[tokio::test]
async fn an_alert_the_destination_filters_out_is_rendered_with_a_note_saying_so() {
    // The fixture's urgency is 65.
    let config = example_config().edit(
        "# timeout = \"30s\"",
        "[destinations.filter]\nmin_urgency = 90",
    );
    let (code, stdout, stderr) = render_fixture(&config, "soar").await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("destinations[soar].filter.min_urgency filters this alert out"),
        "{stderr}"
    );
    assert_eq!(stdout, expected_soar());
}

#[tokio::test]
async fn an_alert_the_trigger_filters_out_is_rendered_with_a_note_naming_the_field() {
    // The fixture's rule is "Brute force on SSH service".
    let filtered = example_config().edit(
        "# rule_filter = \"Brute force on SSH service\"",
        "rule_filter = \"Another rule\"",
    );
    let (code, stdout, stderr) = render_fixture(&filtered, "soar").await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("enricher.rule_filter filters this alert out"),
        "{stderr}"
    );
    assert_eq!(stdout, expected_soar());

    // The same filter naming the fixture's rule lets it through: no note.
    let passing = example_config().edit(
        "# rule_filter = \"Brute force on SSH service\"",
        "rule_filter = \"Brute force on SSH service\"",
    );
    let (code, stdout, stderr) = render_fixture(&passing, "soar").await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("filters this alert out"), "{stderr}");
    assert_eq!(stdout, expected_soar());
}

/// A destination that answers its 2xx with a body of some size (many create-alert APIs return
/// the created object) still gets every delivery over one kept-alive connection: a dropped,
/// half-read body would make hyper close it, and each delivery would then pay a new TCP (and
/// TLS) handshake.
#[tokio::test]
async fn deliveries_to_a_destination_answering_with_a_body_reuse_one_connection() {
    let receiver = Receiver::start().await;
    let answer = format!("{{\"id\":\"{}\"}}", "x".repeat(48 * 1024));
    receiver.always(
        "/soar",
        alertsync_standins::Reply::status(201).body(&answer),
    );
    let config = example_config().edit("https://soar.example/api/alerts", &receiver.url("/soar"));
    let parsed = Config::parse(&config, &env, &[Stage::Forwarder]).unwrap();
    let destinations = alertsync_forwarder::compile_destinations(&parsed).unwrap();
    let dest = destinations.iter().find(|d| d.name == "soar").unwrap();
    let alert: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture()).unwrap()).unwrap();
    let request = dest
        .render(&alertsync_template::Context::new(&alert), FIXTURE_UUID)
        .unwrap();
    for _ in 0..4 {
        let attempt = dest.send(&request, false).await;
        assert!(
            matches!(attempt, alertsync_http::CallOutcome::Done(ref a) if a.status == 201),
            "{attempt:?}"
        );
    }
    let peers: Vec<_> = receiver
        .requests_to("/soar")
        .iter()
        .map(|r| r.peer)
        .collect();
    assert_eq!(peers.len(), 4);
    assert!(peers[0].is_some(), "the receiver records the peer address");
    assert!(
        peers.iter().all(|p| *p == peers[0]),
        "one connection for all deliveries, got {peers:?}"
    );
}

/// The example config with the commented lifecycle lines of its `soar` destination on.
fn lifecycle_config() -> String {
    example_config()
        .edit(
            "# remote_id = \"{{ response.json.id }}\"\n# [destinations.on_update]\n# method = \"patch\"\n# url = \"https://soar.example/api/alerts/{{ remote.id }}\"",
            "remote_id = \"{{ response.json.id }}\"\n[destinations.on_update]\nmethod = \"patch\"\nurl = \"https://soar.example/api/alerts/{{ remote.id }}\"",
        )
        .edit(
            "# json = '''{\"status\": \"{{ alert.status.name }}\"",
            "json = '''{\"status\": \"{{ alert.status.name }}\"",
        )
        .edit("# changes = [\"status\"]", "changes = [\"status\"]")
        .edit(
            "# [destinations.on_comment]\n# url = ",
            "[destinations.on_comment]\nurl = ",
        )
        .edit(
            "# json = '''{\"message\"",
            "json = '''{\"message\"",
        )
}

#[tokio::test]
async fn render_prints_the_update_and_comment_requests_with_sample_values() {
    let config = lifecycle_config();
    let fixture = fixture();
    let fixture = fixture.to_str().unwrap();
    let (code, out, err) = render(
        &config,
        &[
            "--destination",
            "soar",
            "--alert",
            fixture,
            "--event",
            "updated",
            "--remote-id",
            "T 1/x",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let first = out.lines().next().unwrap();
    assert_eq!(
        first, "PATCH https://soar.example/api/alerts/T%201%2Fx",
        "{out}"
    );
    assert!(out.contains("authorization: [REDACTED]"), "{out}");
    let body: serde_json::Value =
        serde_json::from_str(out.split("\n\n").nth(1).unwrap().trim()).unwrap();
    assert!(body["status"].is_string(), "{out}");
    // The key the forwarder sends for this state: `<updated_at>-<digest>` of the alert.
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("idempotency-key: "))
        .unwrap_or_default();
    let state = key
        .strip_prefix(&format!("{FIXTURE_UUID}:soar:updated:"))
        .unwrap_or_else(|| panic!("{out}"));
    let (updated_at, digest) = state.split_once('-').unwrap_or_else(|| panic!("{out}"));
    assert!(updated_at.parse::<i64>().is_ok(), "{out}");
    assert!(
        digest.len() == 24 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{out}"
    );

    let (code, out, err) = render(
        &config,
        &[
            "--destination",
            "soar",
            "--alert",
            fixture,
            "--event",
            "comment",
            "--comment",
            "he said \"{{ 7*7 }}\"\r\nX-Evil: 1",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("POST https://soar.example/api/alerts/REMOTE-ID/comments"),
        "{out}"
    );
    let body: serde_json::Value =
        serde_json::from_str(out.split("\n\n").nth(1).unwrap().trim()).unwrap();
    assert_eq!(body["message"], "he said \"{{ 7*7 }}\"\r\nX-Evil: 1");
    assert!(
        out.contains(&format!(
            "idempotency-key: {FIXTURE_UUID}:soar:comment:00000000-0000-4000-8000-00000000c0de"
        )),
        "{out}"
    );

    // A destination without the request says so.
    let (code, _, err) = render(
        &example_config(),
        &[
            "--destination",
            "soar",
            "--alert",
            fixture,
            "--event",
            "updated",
        ],
    )
    .await;
    assert_ne!(code, Some(0));
    assert!(err.contains("has no [destinations.on_update]"), "{err}");
}
