//! The configuration files shipped for docker compose and Kubernetes stay valid and agree with
//! the manifests around them: every `alertsync.toml` loads for every stage and its templates
//! compile; the Kubernetes ports match the configs; the KEDA ScaledObjects name the streams and
//! consumers the code creates. (The manifests themselves are checked by `scripts/lint-deploy`.)

use std::path::{Path, PathBuf};

use alertsync_config::{Config, Stage};
use alertsync_nats::Subjects;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Loads a shipped config for every stage with `env`, compiling every template.
fn load(path: &str, env: &dyn Fn(&str) -> Option<String>) -> Config {
    let config = Config::parse(&read(path), env, &Stage::ALL)
        .unwrap_or_else(|e| panic!("{path} is invalid: {e}"));
    alertsync_forwarder::compile_destinations(&config)
        .unwrap_or_else(|e| panic!("{path}: a template does not compile: {e}"));
    config
}

/// Every variable set, as the Secrets would set them.
fn any_env(name: &str) -> Option<String> {
    Some(format!("{name}-value-for-test"))
}

#[test]
fn the_compose_config_loads_with_the_example_env_file_and_points_at_the_compose_services() {
    // The variables of .env.example, as `docker compose` passes them.
    let example = read(".env.example");
    let vars: Vec<(String, String)> = example
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    for needed in [
        "SEKOIA_API_KEY",
        "ALERTSYNC_WEBHOOK_TOKEN",
        "SOAR_API_KEY",
        "SEKOIA_INTAKE_KEY",
    ] {
        assert!(
            vars.iter().any(|(k, _)| k == needed),
            ".env.example lacks {needed}"
        );
    }
    let env = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let config = load("deploy/compose/alertsync.toml", &env);
    assert_eq!(config.nats.url, "nats://nats:4222");
    // Unset, the URLs point at the demo profile's stand-ins service.
    let sekoia = config.sekoia.as_ref().unwrap();
    assert_eq!(sekoia.base_url.as_str(), "http://stand-ins:9000/");
    for d in &config.destinations {
        assert_eq!(d.url.host_str(), Some("stand-ins"), "{}", d.name);
        assert_eq!(d.url.port(), Some(9100), "{}", d.name);
    }
    // The stand-ins service and the services agree on ports and the webhook.
    let compose = read("docker-compose.yml");
    assert!(compose.contains("--sekoia-listen=0.0.0.0:9000"));
    assert!(compose.contains("--receiver-listen=0.0.0.0:9100"));
    assert!(compose.contains("--webhook=http://ingest:8080/v1/alerts"));
    assert_eq!(config.ingest.as_ref().unwrap().listen.port(), 8080);
}

#[test]
fn the_kubernetes_configs_load_and_production_replicates_streams_three_times() {
    let base = load("deploy/kubernetes/base/alertsync.toml", &any_env);
    let production = load(
        "deploy/kubernetes/overlays/production/alertsync.toml",
        &any_env,
    );
    assert_eq!(base.nats.stream_replicas, 1);
    assert_eq!(production.nats.stream_replicas, 3);
    for config in [&base, &production] {
        assert_eq!(config.nats.url, "nats://nats:4222");
        // Probes and Services use these ports.
        let ports = [
            ("ingest", config.ingest.as_ref().unwrap().listen.port()),
            ("enricher", config.enricher.listen.port()),
            ("forwarder", config.forwarder.listen.port()),
        ];
        for (stage, port) in ports {
            let manifest = read(&format!("deploy/kubernetes/base/{stage}.yaml"));
            assert!(
                manifest.contains(&format!("containerPort: {port}")),
                "{stage}.yaml does not expose {port}"
            );
            assert!(manifest.contains("path: /healthz") && manifest.contains("path: /readyz"));
        }
    }
}

#[test]
fn the_keda_scaled_objects_name_the_streams_and_consumers_the_services_create() {
    let production = load(
        "deploy/kubernetes/overlays/production/alertsync.toml",
        &any_env,
    );
    let subjects = Subjects::new(&production.nats.prefix);
    let dir = "deploy/kubernetes/overlays/production-keda";

    let enricher = read(&format!("{dir}/scaledobject-enricher.yaml"));
    assert!(enricher.contains(&format!("stream: \"{}\"", subjects.created_stream())));
    assert!(enricher.contains(&format!("consumer: \"{}\"", subjects.enricher_consumer())));

    let forwarder = read(&format!("{dir}/scaledobject-forwarder.yaml"));
    let triggers = forwarder.matches("type: nats-jetstream").count();
    assert_eq!(
        triggers,
        production.destinations.len(),
        "one trigger per destination"
    );
    assert_eq!(
        forwarder
            .matches(&format!("stream: \"{}\"", subjects.enriched_stream()))
            .count(),
        triggers
    );
    for d in &production.destinations {
        let consumer = subjects.destination_consumer(&d.name);
        assert!(
            forwarder.contains(&format!("consumer: \"{consumer}\"")),
            "no trigger for {consumer}"
        );
    }
}
