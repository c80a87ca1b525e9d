//! Sekoia's own templates rendered against the fixtures, hostile alert text, and the
//! failure modes the forwarder relies on.

use std::time::{Duration, Instant};

use alertsync_template::{CompileError, Context, Engine, RenderError};
use serde_json::{Value as Json, json};

/// Sekoia's "Synchronize Alerts with an external tool" body template.
const T1: &str = r#"{"alert_short_id":"{{ node.0['alert_uuid'] }}", "rule_name":"{{ node.1['rule']['name'] }}","rule_severity":"{{ node.1['rule']['severity'] }}","description":"This is a description"}"#;

/// The same use case's "Bonus": the HTTP intake body, JSON inside a single-quoted string.
const T2: &str = r#"{"json":"'{\"alert_short_id\":\"{{ node.0['alert_uuid'] }}\", \"rule_name\":\"{{ node.1['rule']['name'] }}\",\"rule_severity\":\"{{ node.1['rule']['severity'] }}\",\"description\":\"An HTTP request was made from Sekoia.io Playbook\"}'", "intake_key":"MYINTAKEKEY"}"#;

const UUID: &str = "3b1f6c2e-8d4a-4f0b-9e37-5a2c7d91e604";

fn alert() -> Json {
    serde_json::from_str(include_str!("fixtures/alert_full.json")).expect("fixture parses")
}

fn ctx() -> Context {
    Context::new(&alert())
}

fn alert_named(name: &str) -> Context {
    let mut alert = alert();
    alert["rule"]["name"] = json!(name);
    alert["title"] = json!(name);
    Context::new(&alert)
}

fn keys(value: &Json) -> Vec<&str> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

const HOSTILE: &[&str] = &[
    "quote \" inside",
    "back\\slash",
    "C:\\temp\\new",
    "new\nline",
    "tab\there",
    "control \u{1} char",
    "line\u{2028}separator",
    "{{ x }}",
    "{{ node.0.alert_uuid }}",
    "{% if %}",
    "{% raw %}",
    "\", \"admin\": true, \"x\": \"",
    "'}', \"admin\": true, \"x\": '",
    "\\\", \"admin\": true, \"x\": \\\"",
    "",
];

#[test]
fn t1_renders_byte_identical_to_jinja2_for_the_fixture() {
    let body = Engine::new().compile_json_body(T1).unwrap();
    assert!(body.is_structured());
    assert_eq!(
        body.render(&ctx()).unwrap(),
        r#"{"alert_short_id":"3b1f6c2e-8d4a-4f0b-9e37-5a2c7d91e604", "rule_name":"Brute force on SSH service","rule_severity":"65","description":"This is a description"}"#
    );
}

#[test]
fn t2_renders_byte_identical_to_jinja2_for_the_fixture() {
    let body = Engine::new().compile_json_body(T2).unwrap();
    assert!(body.is_structured());
    assert_eq!(
        body.render(&ctx()).unwrap(),
        r#"{"json":"'{\"alert_short_id\":\"3b1f6c2e-8d4a-4f0b-9e37-5a2c7d91e604\", \"rule_name\":\"Brute force on SSH service\",\"rule_severity\":\"65\",\"description\":\"An HTTP request was made from Sekoia.io Playbook\"}'", "intake_key":"MYINTAKEKEY"}"#
    );
}

#[test]
fn structured_output_equals_plain_output_for_ordinary_values() {
    let engine = Engine::new();
    let ctx = ctx();
    for template in [T1, T2] {
        let structured = engine.compile_json_body(template).unwrap();
        let plain = engine.compile_text(template).unwrap();
        assert_eq!(
            structured.render(&ctx).unwrap(),
            plain.render(&ctx).unwrap()
        );
    }
}

#[test]
fn hostile_values_stay_inside_their_t1_field() {
    let body = Engine::new().compile_json_body(T1).unwrap();
    for &name in HOSTILE {
        let out = body.render(&alert_named(name)).unwrap();
        let parsed: Json = serde_json::from_str(&out).unwrap();
        assert_eq!(
            keys(&parsed),
            [
                "alert_short_id",
                "rule_name",
                "rule_severity",
                "description"
            ],
            "for {name:?}"
        );
        assert_eq!(parsed["rule_name"], json!(name), "for {name:?}");
        assert_eq!(parsed["alert_short_id"], json!(UUID));
    }
}

#[test]
fn hostile_values_stay_inside_their_t2_inner_field() {
    let body = Engine::new().compile_json_body(T2).unwrap();
    for &name in HOSTILE {
        let out = body.render(&alert_named(name)).unwrap();
        let outer: Json = serde_json::from_str(&out).unwrap();
        assert_eq!(keys(&outer), ["json", "intake_key"], "for {name:?}");
        assert_eq!(outer["intake_key"], json!("MYINTAKEKEY"));
        let wrapped = outer["json"].as_str().unwrap();
        let inner = wrapped
            .strip_prefix('\'')
            .and_then(|s| s.strip_suffix('\''))
            .unwrap_or_else(|| panic!("not in single quotes for {name:?}: {wrapped}"));
        let inner: Json = serde_json::from_str(inner).unwrap();
        assert_eq!(
            keys(&inner),
            [
                "alert_short_id",
                "rule_name",
                "rule_severity",
                "description"
            ],
            "for {name:?}"
        );
        assert_eq!(inner["rule_name"], json!(name), "for {name:?}");
        assert_eq!(inner["alert_short_id"], json!(UUID));
        assert_eq!(inner["rule_severity"], json!("65"));
    }
}

#[test]
fn hostile_values_in_templated_keys_and_mixed_text_stay_strings() {
    let template = r#"{"{{ node.1.title }}": "Alert: {{ node.1.title }} ({{ node.1.short_id }})"}"#;
    let body = Engine::new().compile_json_body(template).unwrap();
    for &name in HOSTILE {
        let out = body.render(&alert_named(name)).unwrap();
        let parsed: Json = serde_json::from_str(&out).unwrap();
        let expected = json!({ name: format!("Alert: {name} (ALq7Rt2mXw9K)") });
        assert_eq!(parsed, expected, "for {name:?}");
    }
}

#[test]
fn plain_rendering_is_used_when_the_template_is_not_json() {
    let body = Engine::new()
        .compile_json_body(r#"{"sev": {{ node.1.rule.severity }}}"#)
        .unwrap();
    assert!(!body.is_structured());
    assert_eq!(body.render(&ctx()).unwrap(), r#"{"sev": 65}"#);
}

#[test]
fn a_block_spanning_two_strings_falls_back_to_plain_rendering() {
    let template =
        r#"{"a":"{% if node.1.similar > 1 %}many","b":"{% else %}one","b":"{% endif %}"}"#;
    let body = Engine::new().compile_json_body(template).unwrap();
    assert!(!body.is_structured());
    assert_eq!(body.render(&ctx()).unwrap(), r#"{"a":"many","b":""}"#);
}

#[test]
fn a_plain_template_that_produces_invalid_json_is_an_error_that_does_not_quote_it() {
    let body = Engine::new()
        .compile_json_body(r#"{"key": "MYINTAKEKEY", "sev": {{ node.1.nope }}}"#)
        .unwrap();
    let err = body.render(&ctx()).unwrap_err();
    assert!(matches!(err, RenderError::InvalidJson(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("template produced invalid JSON: "),
        "{message}"
    );
    assert!(!message.contains("MYINTAKEKEY"), "{message}");
    assert!(!format!("{err:?}").contains("MYINTAKEKEY"));
}

#[test]
fn a_syntax_error_is_a_compile_error_naming_the_line() {
    let engine = Engine::new();
    let err = engine
        .compile_json_body("{\n\"a\": \"ok\",\n\"b\": \"{{ node.1. }}\"\n}")
        .unwrap_err();
    let CompileError::Syntax { line, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*line, Some(3));
    assert!(
        err.to_string()
            .starts_with("template syntax error at line 3: ")
    );
    assert!(engine.compile_text("Bearer {% if %}").is_err());
    assert!(engine.compile_json_body("{{ unclosed").is_err());
}

#[test]
fn templates_jinja2_rejects_are_rejected_even_when_their_decoded_strings_compile() {
    // Decoded, the leaf is `{{ node.1["rule"] }}`; as written Jinja sees `\"` in an expression.
    let err = Engine::new()
        .compile_json_body(r#"{"a":"{{ node.1[\"rule\"] }}"}"#)
        .unwrap_err();
    assert!(matches!(err, CompileError::Syntax { .. }));
}

#[test]
fn a_runaway_template_runs_out_of_fuel_quickly() {
    let engine = Engine::new();
    let template =
        "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}";
    let started = Instant::now();
    let err = engine
        .compile_text(template)
        .unwrap()
        .render(&ctx())
        .unwrap_err();
    assert!(
        matches!(err, RenderError::OutOfFuel { limit: 100_000, .. }),
        "{err:?}"
    );
    let body = format!(r#"{{"a": "{template}"}}"#);
    let err = engine
        .compile_json_body(&body)
        .unwrap()
        .render(&ctx())
        .unwrap_err();
    assert!(matches!(err, RenderError::OutOfFuel { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn the_fuel_budget_is_configurable() {
    let small = Engine::with_fuel(5).compile_json_body(T1).unwrap();
    assert!(matches!(
        small.render(&ctx()),
        Err(RenderError::OutOfFuel { limit: 5, .. })
    ));
    let enough = Engine::with_fuel(1_000).compile_json_body(T1).unwrap();
    assert!(enough.render(&ctx()).is_ok());
}

#[test]
fn undefined_values_print_as_nothing_and_python_literals_as_python() {
    let template = r#"{"missing":"{{ node.1.nope }}","flag":"{{ node.1.is_incident }}","null":"{{ node.1.kill_chain_short_id }}","float":"{{ 1e20 }}"}"#;
    let out = Engine::new()
        .compile_json_body(template)
        .unwrap()
        .render(&ctx())
        .unwrap();
    assert_eq!(
        out,
        r#"{"missing":"","flag":"False","null":"None","float":"1e+20"}"#
    );
}

#[test]
fn an_operation_on_an_undefined_value_is_a_render_error_with_its_line() {
    let err = Engine::new()
        .compile_json_body("{\n\"a\": \"{{ node.1.nope.deeper }}\"\n}")
        .unwrap()
        .render(&ctx())
        .unwrap_err();
    match &err {
        RenderError::Template { line, message } => {
            assert_eq!(*line, Some(2));
            assert!(message.contains("undefined"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn python_methods_and_sekoia_filters_work_on_the_context() {
    let template = r#"{"first":"{{ node.1.rule.name.split(' ')[0] }}","keys":"{{ node.0.rule.keys() | join(',') }}","created":"{{ node.1.created_at | timestamp_to_iso8601 }}","seen":"{{ node.0.first_seen_at | iso8601_to_timestamp }}","ttp":"{{ node.1 | jsonpath('$.ttps[0].name', True) }}","ssh":"{{ node.1.title | regex_match('brute', ignore_case=True) }}"}"#;
    let out = Engine::new()
        .compile_json_body(template)
        .unwrap()
        .render(&ctx())
        .unwrap();
    assert_eq!(
        out,
        r#"{"first":"Brute","keys":"name,uuid","created":"2026-01-01T10:22:05+00:00","seen":"1767262908","ttp":"Password Guessing","ssh":"True"}"#
    );
}

#[test]
fn trigger_and_alert_are_also_available_by_name() {
    let text = Engine::new()
        .compile_text("{{ trigger.short_id }}/{{ alert.entity.name }}/{{ node.0.urgency }}")
        .unwrap();
    assert_eq!(
        text.render(&ctx()).unwrap(),
        "ALq7Rt2mXw9K/Lyon datacenter/65"
    );
}

#[test]
fn a_set_in_one_string_is_visible_in_later_strings_as_in_jinja2() {
    let template = r#"{"a":"{% set sid = node.1.short_id %}{{ sid }}","b":"{{ sid }}"}"#;
    let body = Engine::new().compile_json_body(template).unwrap();
    assert!(body.is_structured());
    assert_eq!(
        body.render(&ctx()).unwrap(),
        r#"{"a":"ALq7Rt2mXw9K","b":"ALq7Rt2mXw9K"}"#
    );
}

#[test]
fn strings_without_template_syntax_keep_their_bytes() {
    let template =
        r#"{"caf\u00e9": "x\/y", "n": [1, 2.50, true, null], "id": "{{ node.1.short_id }}"}"#;
    let out = Engine::new()
        .compile_json_body(template)
        .unwrap()
        .render(&ctx())
        .unwrap();
    assert_eq!(
        out,
        r#"{"caf\u00e9": "x\/y", "n": [1, 2.50, true, null], "id": "ALq7Rt2mXw9K"}"#
    );
}

#[test]
fn text_templates_render_plainly_and_know_when_they_are_static() {
    let engine = Engine::new();
    let header = engine.compile_text("Bearer abc").unwrap();
    assert!(header.is_static());
    assert_eq!(header.render(&ctx()).unwrap(), "Bearer abc");
    let url = engine
        .compile_text(
            "https://example.test/alerts/{{ node.1.short_id }}?q=\"{{ node.1.rule.severity }}\"",
        )
        .unwrap();
    assert!(!url.is_static());
    assert_eq!(
        url.render(&ctx()).unwrap(),
        "https://example.test/alerts/ALq7Rt2mXw9K?q=\"65\""
    );
}

#[test]
fn one_context_serves_many_renders() {
    let engine = Engine::new();
    let body = engine.compile_json_body(T1).unwrap();
    let shared = body.clone();
    let ctx = ctx();
    let first = body.render(&ctx).unwrap();
    assert_eq!(shared.render(&ctx).unwrap(), first);
    let handle = std::thread::spawn(move || shared.render(&ctx).unwrap());
    assert_eq!(handle.join().unwrap(), first);
}

#[test]
fn debug_output_never_shows_template_source() {
    let engine = Engine::new();
    let body = engine.compile_json_body(T2).unwrap();
    let text = engine.compile_text("Bearer SECRETTOKEN").unwrap();
    assert!(!format!("{body:?}").contains("MYINTAKEKEY"));
    assert!(!format!("{text:?}").contains("SECRETTOKEN"));
}

#[test]
fn url_templates_percent_encode_every_value_and_later_contexts_add_names() {
    let ctx = alertsync_template::Context::new(&serde_json::json!({"uuid": "u", "title": "a/b"}))
        .with_json("remote", &serde_json::json!({"id": "T 42/../x?y#z%"}))
        .with_json("empty", &serde_json::json!({"id": null}));
    let url = Engine::new()
        .compile_url("https://h.example/api/{{ remote.id }}/{{ alert.title }}?q={{ remote.id }}")
        .unwrap();
    assert_eq!(
        url.render(&ctx).unwrap(),
        "https://h.example/api/T%2042%2F..%2Fx%3Fy%23z%25/a%2Fb?q=T%2042%2F..%2Fx%3Fy%23z%25"
    );
    let dots = Engine::new().compile_url("https://h/{{ d }}").unwrap();
    let ctx = ctx.with_json("d", &serde_json::json!(".."));
    assert_eq!(dots.render(&ctx).unwrap(), "https://h/%2E%2E");
    // As in Jinja2: a missing name prints nothing, an attribute of it is an error.
    let missing = Engine::new()
        .compile_url("https://h/{{ nothing }}")
        .unwrap();
    assert_eq!(missing.render(&ctx).unwrap(), "https://h/");
}
