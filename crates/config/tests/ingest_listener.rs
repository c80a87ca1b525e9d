//! The `[ingest]` keys of the webhook listener's limits (issue 24, item 5).

use alertsync_config::{Config, ConfigError, Stage};
use std::time::Duration;

const BASE: &str = r#"
[nats]
url = "nats://127.0.0.1:4222"
[ingest]
listen = "127.0.0.1:0"
webhook_token = "a-webhook-token-of-some-length"
live = false
poll_interval = "0"
"#;

fn parse(extra: &str) -> Result<Config, ConfigError> {
    Config::parse(&format!("{BASE}{extra}"), &|_| None, &[Stage::Ingest])
}

#[test]
fn the_listener_limits_default_to_10s_30s_60s_and_1024_connections() {
    let cfg = parse("").unwrap();
    let i = cfg.ingest.unwrap();
    assert_eq!(i.webhook_header_timeout.get(), Duration::from_secs(10));
    assert_eq!(i.webhook_body_timeout.get(), Duration::from_secs(30));
    assert_eq!(i.webhook_idle_timeout.get(), Duration::from_secs(60));
    assert_eq!(i.webhook_max_connections, 1024);
}

#[test]
fn the_listener_limits_are_read_from_ingest() {
    let cfg = parse(
        "webhook_header_timeout = \"2s\"\nwebhook_body_timeout = \"500ms\"\n\
         webhook_idle_timeout = \"5m\"\nwebhook_max_connections = 200\n",
    )
    .unwrap();
    let i = cfg.ingest.unwrap();
    assert_eq!(i.webhook_header_timeout.get(), Duration::from_secs(2));
    assert_eq!(i.webhook_body_timeout.get(), Duration::from_millis(500));
    assert_eq!(i.webhook_idle_timeout.get(), Duration::from_secs(300));
    assert_eq!(i.webhook_max_connections, 200);
}

#[test]
fn zero_limits_are_refused_naming_each_key() {
    let err = parse(
        "webhook_header_timeout = 0\nwebhook_body_timeout = 0\n\
         webhook_idle_timeout = 0\nwebhook_max_connections = 0\n",
    )
    .unwrap_err()
    .to_string();
    for key in [
        "ingest.webhook_header_timeout: must be more than 0",
        "ingest.webhook_body_timeout: must be more than 0",
        "ingest.webhook_idle_timeout: must be more than 0",
        "ingest.webhook_max_connections: must be at least 1",
    ] {
        assert!(err.contains(key), "{key} in {err}");
    }
}
