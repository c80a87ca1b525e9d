//! Files written for earlier versions keep loading: the example config as shipped in
//! December 2026 (byte for byte), and the flat enricher retry keys, which now land in
//! `[enricher.retry]` with a deprecation naming the new spelling.

use std::time::Duration;

use alertsync_config::{Config, RetryConfig, Stage};

const EXAMPLE_2026_12: &str = include_str!("fixtures/example-2026-12.toml");

fn env(k: &str) -> Option<String> {
    Some(format!("{k}-value-for-test"))
}

#[test]
fn the_example_of_december_2026_loads_for_every_stage_with_its_defaults() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/example-2026-12.toml");
    // Through the file loader too, as the services read it (variables unset: only the
    // sections no stage reads may reference them, so parse below covers the stages).
    assert!(Config::load(&path, &[]).is_ok());
    let cfg = Config::parse(EXAMPLE_2026_12, &env, &Stage::ALL).unwrap();
    assert!(cfg.deprecations.is_empty(), "{:?}", cfg.deprecations);
    let e = cfg.enricher_settings().unwrap();
    assert_eq!(e.enricher.retry, RetryConfig::default());
    assert_eq!(e.enricher.not_found_attempts, 5);
    assert_eq!(e.sekoia.base_url.as_str(), "https://api.sekoia.io/");
    let f = cfg.forwarder_settings().unwrap();
    assert_eq!(f.destinations.len(), 2);
    assert_eq!(f.destinations[0].retry, RetryConfig::default());
    assert_eq!(
        f.forwarder.delivery_record_max_age.get(),
        Duration::from_secs(30 * 86400)
    );
    let i = cfg.ingest_settings().unwrap();
    assert!(i.sekoia.is_some(), "live and the poller are on by default");
    assert_eq!(i.ingest.listen.port(), 8080);
}

#[test]
fn the_flat_enricher_retry_keys_land_in_enricher_retry_with_one_warning_each() {
    let text = EXAMPLE_2026_12.replace(
        "listen = \"0.0.0.0:8081\"",
        "listen = \"0.0.0.0:8081\"\nmax_attempts = 3\nretry_base_delay = \"2s\"\n\
         retry_max_delay = \"1m\"\nnot_found_attempts = 4",
    );
    assert_ne!(text, EXAMPLE_2026_12);
    let cfg = Config::parse(&text, &env, &[Stage::Enricher]).unwrap();
    let e = cfg.enricher_settings().unwrap().enricher;
    assert_eq!(
        e.retry,
        RetryConfig {
            max_attempts: 3,
            base_delay: alertsync_config::HumanDuration::secs(2),
            max_delay: alertsync_config::HumanDuration::secs(60),
            ..RetryConfig::default()
        }
    );
    assert_eq!(e.not_found_attempts, 4);
    assert_eq!(
        cfg.deprecations,
        [
            "enricher.max_attempts is deprecated; use enricher.retry.max_attempts",
            "enricher.retry_base_delay is deprecated; use enricher.retry.base_delay",
            "enricher.retry_max_delay is deprecated; use enricher.retry.max_delay",
        ]
    );
    // A stage that does not read [enricher] loads the same file without warning about it.
    let forwarder = Config::parse(&text, &env, &[Stage::Forwarder]).unwrap();
    assert!(forwarder.deprecations.is_empty());
}

#[test]
fn the_nested_spelling_loads_without_warnings() {
    let text = EXAMPLE_2026_12.replace(
        "\n[forwarder]\n",
        "\n[enricher.retry]\nmax_attempts = 3\nbase_delay = \"2s\"\nmax_retry_after = \"1m\"\n\n[forwarder]\n",
    );
    let cfg = Config::parse(&text, &env, &Stage::ALL).unwrap();
    assert!(cfg.deprecations.is_empty(), "{:?}", cfg.deprecations);
    let retry = &cfg.enricher_settings().unwrap().enricher.retry;
    assert_eq!(retry.max_attempts, 3);
    assert_eq!(retry.max_retry_after.get(), Duration::from_secs(60));
    assert_eq!(retry.max_delay, RetryConfig::default().max_delay);
}

#[test]
fn both_spellings_of_one_retry_key_is_an_error_naming_both() {
    let text = EXAMPLE_2026_12.replace(
        "\n[forwarder]\n",
        "\nretry_base_delay = \"2s\"\n[enricher.retry]\nbase_delay = \"3s\"\n\n[forwarder]\n",
    );
    let msg = Config::parse(&text, &env, &[Stage::Enricher])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("enricher.retry_base_delay and enricher.retry.base_delay are both set"),
        "{msg}"
    );
}

#[test]
fn enricher_retry_problems_name_the_new_fields() {
    let text = EXAMPLE_2026_12.replace(
        "\n[forwarder]\n",
        "\nnot_found_attempts = 0\n[enricher.retry]\nmax_attempts = 0\nbase_delay = \"10m\"\n\n[forwarder]\n",
    );
    let msg = Config::parse(&text, &env, &[Stage::Enricher])
        .unwrap_err()
        .to_string();
    for field in [
        "enricher.not_found_attempts: must be at least 1",
        "enricher.retry.max_attempts: must be at least 1",
        "enricher.retry.base_delay: must not exceed enricher.retry.max_delay",
    ] {
        assert!(msg.contains(field), "{field} in {msg}");
    }
}
