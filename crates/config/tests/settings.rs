//! Each stage gets its validated sections from the config, or every problem naming its
//! field: never an optional section to check again.

use alertsync_config::{Config, ConfigError, Stage};

const BASE: &str = r#"
[nats]
url = "nats://127.0.0.1:4222"
[ingest]
listen = "127.0.0.1:8080"
webhook_token = "a-webhook-token-of-length"
live = false
poll_interval = "0s"
[forwarder]
delivery_record_max_age = "7d"
[[destinations]]
name = "soar"
url = "https://soar.example/api"
"#;

fn env(_: &str) -> Option<String> {
    None
}

#[test]
fn a_webhook_only_ingest_needs_no_sekoia_section() {
    let cfg = Config::parse(BASE, &env, &[Stage::Ingest, Stage::Forwarder]).unwrap();
    let ingest = cfg.ingest_settings().unwrap();
    assert!(ingest.sekoia.is_none());
    assert!(ingest.communities.is_empty());
    assert_eq!(
        cfg.forwarder_settings().unwrap().destinations[0].name,
        "soar"
    );
}

#[test]
fn a_stage_whose_sections_are_missing_gets_the_problems_not_a_panic() {
    let cfg = Config::parse(BASE, &env, &[Stage::Ingest]).unwrap();
    match cfg.enricher_settings() {
        Err(ConfigError::Invalid { problems, .. }) => {
            assert_eq!(problems, ["sekoia: section [sekoia] is required"]);
        }
        other => panic!("{other:?}"),
    }
    let live = BASE.replace("live = false\n", "");
    let msg = Config::parse(&live, &env, &[Stage::Ingest])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("sekoia: section [sekoia] is required by ingest.live"),
        "{msg}"
    );
}

#[test]
fn the_forwarder_settings_name_the_field_that_is_wrong() {
    let text = BASE.replace("\"7d\"", "\"1d\"");
    let cfg = Config::parse(&text, &env, &[Stage::Ingest]).unwrap();
    let msg = cfg.forwarder_settings().unwrap_err().to_string();
    assert!(msg.contains("forwarder.delivery_record_max_age"), "{msg}");
    let msg = Config::parse(&text, &env, &[Stage::Forwarder])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("forwarder.delivery_record_max_age"), "{msg}");
}
