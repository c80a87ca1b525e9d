//! A `${VAR}` value in a destination's templates is data: rendered as the exact text it holds,
//! never evaluated as template code, never able to add a JSON key; and still a secret.

use alertsync_config::{Config, Stage, TEMPLATE_VALUES};
use alertsync_template::{Context, Engine};
use serde_json::{Value, json};

const EVIL: &str = r#"a","evil":"{{ 7*7 }}"#;

const CONFIG: &str = r#"
[nats]
url = "nats://127.0.0.1:4222"
[forwarder]
[[destinations]]
name = "soar"
url = "https://soar.example/api"
headers = { Authorization = "Bearer ${TOKEN}", X-Note = "note: ${NOTE}" }
params = { q = "${NOTE}" }
json = '''{"title":"${NOTE}","rule":"{{ node.1['rule']['name'] }}","token":"${TOKEN}"}'''
[[destinations]]
name = "intake"
url = "https://intake.example"
json = '''{"json":"'{\"note\":\"${NOTE}\",\"rule\":\"{{ node.1['rule']['name'] }}\"}'", "intake_key":"${NOTE}"}'''
"#;

fn env(k: &str) -> Option<String> {
    match k {
        "NOTE" => Some(EVIL.to_string()),
        "TOKEN" => Some("plain-token-123456".to_string()),
        _ => None,
    }
}

fn parse() -> Config {
    Config::parse(CONFIG, &env, &[Stage::Forwarder]).unwrap()
}

fn engine(cfg: &Config) -> Engine {
    Engine::new().with_values(TEMPLATE_VALUES, cfg.template_values.to_map())
}

fn alert() -> Context {
    Context::new(&json!({"uuid": "0b1f", "rule": {"name": "SSH brute force"}}))
}

#[test]
fn a_value_that_looks_like_template_code_is_rendered_as_its_text() {
    let cfg = parse();
    let d = cfg.destination("soar").unwrap();
    let body = engine(&cfg)
        .compile_json_body(d.json.as_deref().unwrap())
        .unwrap();
    assert!(body.is_structured());
    let text = body.render(&alert()).unwrap();
    assert!(text.contains("{{ 7*7 }}"), "{text}");
    assert!(!text.contains("49"), "{text}");
    let rendered: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        rendered,
        json!({"title": EVIL, "rule": "SSH brute force", "token": "plain-token-123456"})
    );
    assert!(rendered.get("evil").is_none());

    for template in [&d.headers["X-Note"], &d.params["q"]] {
        let rendered = engine(&cfg)
            .compile_text(template)
            .unwrap()
            .render(&alert())
            .unwrap();
        assert!(rendered.ends_with(EVIL), "{rendered}");
    }
}

#[test]
fn json_embedded_in_a_string_keeps_the_value_as_data_one_level_down() {
    let cfg = parse();
    let d = cfg.destination("intake").unwrap();
    let text = engine(&cfg)
        .compile_json_body(d.json.as_deref().unwrap())
        .unwrap()
        .render(&alert())
        .unwrap();
    let outer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(outer["intake_key"], EVIL);
    let embedded = outer["json"].as_str().unwrap();
    let inner: Value = serde_json::from_str(&embedded[1..embedded.len() - 1]).unwrap();
    assert_eq!(inner, json!({"note": EVIL, "rule": "SSH brute force"}));
}

#[test]
fn ordinary_values_are_pasted_and_every_value_stays_a_secret() {
    let cfg = parse();
    let d = cfg.destination("soar").unwrap();
    // A plain token goes into the template as written, so the header stays static.
    assert_eq!(d.headers["Authorization"], "Bearer plain-token-123456");
    // The other is not in the template source at all, only in the values templates read.
    assert!(!d.json.as_deref().unwrap().contains("7*7"));
    assert_eq!(
        cfg.template_values.iter().collect::<Vec<_>>(),
        [("NOTE", EVIL)]
    );
    assert!(!format!("{cfg:?}").contains("7*7"));
    let rendered = engine(&cfg)
        .compile_json_body(d.json.as_deref().unwrap())
        .unwrap()
        .render(&alert())
        .unwrap();
    let redacted = cfg.redactor.redact(&rendered);
    assert!(!cfg.redactor.leaks(&redacted), "{redacted}");
    assert!(!redacted.contains("plain-token-123456"), "{redacted}");
    assert!(!redacted.contains("7*7"), "{redacted}");
}

#[test]
fn a_reference_inside_a_template_block_is_refused_naming_the_field() {
    let text = CONFIG.replace(
        r#""rule":"{{ node.1['rule']['name'] }}","token""#,
        r#""rule":"{{ node.1['${NOTE}'] }}","token""#,
    );
    assert_ne!(text, CONFIG);
    let msg = Config::parse(&text, &env, &[Stage::Forwarder])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("destinations[0].json: `${NOTE}` is inside a"),
        "{msg}"
    );
    assert!(!msg.contains("7*7"), "{msg}");
}
