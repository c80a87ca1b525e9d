//! The file as operators write it: the documented shapes load, problems name their field,
//! secrets stay out of errors and `Debug`.

use alertsync_config::{Config, Method, Stage};

const ISSUE_EXAMPLE: &str = r#"
[nats]
url = "nats://127.0.0.1:4222"
prefix = "alertsync"
[sekoia]
base_url = "https://api.sekoia.io"
api_key = "${SEKOIA_API_KEY}"
[ingest]
listen = "127.0.0.1:8080"
webhook_token = "${ALERTSYNC_WEBHOOK_TOKEN}"
[enricher]
listen = "127.0.0.1:8081"
[forwarder]
listen = "127.0.0.1:8082"
[[destinations]]
name = "soar"
url = "https://soar.example/api/alerts"
method = "post"
headers = { Authorization = "Bearer ${SOAR_API_KEY}" }
json = '''{"alert_short_id":"{{ node.0['alert_uuid'] }}", "rule_name":"{{ node.1['rule']['name'] }}","rule_severity":"{{ node.1['rule']['severity'] }}","description":"This is a description"}'''
"#;

fn env(k: &str) -> Option<String> {
    match k {
        "SEKOIA_API_KEY" => Some("sekoia-key-123456".into()),
        "ALERTSYNC_WEBHOOK_TOKEN" => Some("webhook-token-abcdefgh".into()),
        "SOAR_API_KEY" => Some("soar-key-987654".into()),
        _ => None,
    }
}

#[test]
fn the_documented_shape_loads_for_every_stage_and_knows_its_secrets() {
    let cfg = Config::parse(ISSUE_EXAMPLE, &env, &Stage::ALL).unwrap();
    assert_eq!(cfg.nats.prefix, "alertsync");
    let d = cfg.destination("soar").unwrap();
    assert_eq!(d.headers["Authorization"], "Bearer soar-key-987654");
    assert_eq!(d.method, Method::Post);
    let text = "key sekoia-key-123456 token webhook-token-abcdefgh soar-key-987654";
    let redacted = cfg.redactor.redact(text);
    assert!(!cfg.redactor.leaks(&redacted), "{redacted}");
    let debug = format!("{cfg:?}");
    for secret in [
        "sekoia-key-123456",
        "webhook-token-abcdefgh",
        "soar-key-987654",
    ] {
        assert!(!debug.contains(secret), "{debug}");
    }
}

#[test]
fn the_shipped_example_config_is_valid_and_its_templates_compile() {
    let text = include_str!("../../../alertsync.example.toml");
    let env = |k: &str| match k {
        "SEKOIA_API_KEY" | "ALERTSYNC_WEBHOOK_TOKEN" | "SOAR_API_KEY" | "SEKOIA_INTAKE_KEY" => {
            Some(format!("{k}-value-for-test"))
        }
        _ => None,
    };
    let cfg = Config::parse(text, &env, &Stage::ALL).unwrap();
    assert_eq!(cfg.destinations.len(), 2);
    assert!(cfg.redactor.leaks("SEKOIA_INTAKE_KEY-value-for-test"));
    assert_eq!(
        cfg.destination("sekoia-intake").unwrap().max_body_bytes,
        Some(250000)
    );
}

#[test]
fn an_api_key_with_a_line_break_is_refused_without_quoting_it() {
    let lookup = |name: &str| (name == "SEKOIA_API_KEY").then(|| "k-123-secret\n".to_string());
    let err = Config::parse(ISSUE_EXAMPLE, &lookup, &[Stage::Enricher]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("sekoia.api_key: holds a control character"),
        "{msg}"
    );
    assert!(!msg.contains("k-123-secret"), "{msg}");
}

#[test]
fn a_missing_variable_names_the_field_and_the_variable() {
    let err = Config::parse(ISSUE_EXAMPLE, &|_| None, &[Stage::Enricher]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("sekoia.api_key: environment variable SEKOIA_API_KEY is not set"),
        "{msg}"
    );
    // The enricher does not care about the webhook token or the SOAR key.
    assert!(!msg.contains("ALERTSYNC_WEBHOOK_TOKEN"), "{msg}");
    assert!(!msg.contains("SOAR_API_KEY"), "{msg}");
}

#[test]
fn unknown_fields_are_named() {
    let text = ISSUE_EXAMPLE.replace("prefix = \"alertsync\"", "prefx = \"x\"");
    let msg = Config::parse(&text, &env, &Stage::ALL)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("prefx"), "{msg}");
}

#[test]
fn invalid_values_name_their_field() {
    let text = ISSUE_EXAMPLE
        .replace("name = \"soar\"", "name = \"so.ar\"")
        .replace("prefix = \"alertsync\"", "prefix = \"a>b\"");
    let msg = Config::parse(&text, &env, &Stage::ALL)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("destinations[0] (so.ar).name"), "{msg}");
    assert!(msg.contains("nats.prefix"), "{msg}");
}

#[test]
fn the_removed_seen_retention_is_named_with_what_replaces_it() {
    let text = ISSUE_EXAMPLE.replace("[ingest]", "[ingest]\nseen_retention = \"30d\"");
    assert_ne!(text, ISSUE_EXAMPLE);
    let msg = Config::parse(&text, &env, &[Stage::Ingest])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("ingest.seen_retention"), "{msg}");
    assert!(msg.contains("nats.stream_max_age"), "{msg}");
    // The other stages do not read [ingest]'s dedup: they still start.
    assert!(Config::parse(&text, &env, &[Stage::Forwarder]).is_ok());
}

#[test]
fn durations_need_units() {
    let text = ISSUE_EXAMPLE.replace(
        "prefix = \"alertsync\"",
        "prefix = \"alertsync\"\nrequest_timeout = 5",
    );
    let msg = Config::parse(&text, &env, &Stage::ALL)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("durations need a unit"), "{msg}");
}
