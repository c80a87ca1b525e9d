//! Rendering the seed's main template for one alert, as the forwarder does for every message.
//!
//! - `context/new`: building the render context from a parsed Get Alert body, as the CLI does
//!   (the body is written back to text and its top level indexed).
//! - `render/structured`: the seed template as configured: its text is JSON, so each templated
//!   string is rendered on its own and JSON-escaped, and the output is checked to be JSON.
//! - `render/plain`: the same template forced to plain rendering (a leading Jinja comment
//!   makes the text not JSON): one pass of minijinja, then the JSON check.
//! - `per_alert/forwarder`: what the forwarder does per message from the alert text: check
//!   it and index its top level ([`RawAlert`]), build the context, render structured.
//! - `per_alert/hand_built`: the benchmark ceiling's equivalent: a typed parse of the two
//!   fields and a `format!` (the floor for this work).
//!
//! `cargo bench -p alertsync-template`.

use std::hint::black_box;

use alertsync_template::{Context, Engine, RawAlert};
use criterion::{Criterion, criterion_group, criterion_main};

/// The seed's main Request URL template.
const MAIN_TEMPLATE: &str = r#"{"alert_short_id":"{{ node.0['alert_uuid'] }}", "rule_name":"{{ node.1['rule']['name'] }}","rule_severity":"{{ node.1['rule']['severity'] }}","description":"This is a description"}"#;

/// A realistic Get Alert body (about 5.5 KiB).
const ALERT: &str = include_str!("../tests/fixtures/alert_full.json");

fn render(c: &mut Criterion) {
    let engine = Engine::new();
    let structured = engine.compile_json_body(MAIN_TEMPLATE).unwrap();
    let plain = engine
        .compile_json_body(&format!("{{# plain #}}{MAIN_TEMPLATE}"))
        .unwrap();
    assert!(structured.is_structured() && !plain.is_structured());
    let alert: serde_json::Value = serde_json::from_str(ALERT).unwrap();
    let ctx = Context::new(&alert);
    // Both give the same body for an ordinary alert.
    assert_eq!(
        structured.render(&ctx).unwrap(),
        plain.render(&ctx).unwrap()
    );
    // Reading the text in place gives the same body as the parsed tree.
    assert_eq!(
        structured
            .render(&Context::from_raw(&RawAlert::parse(ALERT).unwrap()))
            .unwrap(),
        structured.render(&ctx).unwrap()
    );

    c.bench_function("context/new", |b| {
        b.iter(|| Context::new(black_box(&alert)))
    });
    let mut g = c.benchmark_group("render");
    g.bench_function("structured", |b| {
        b.iter(|| structured.render(black_box(&ctx)).unwrap())
    });
    g.bench_function("plain", |b| {
        b.iter(|| plain.render(black_box(&ctx)).unwrap())
    });
    g.finish();

    let bytes = ALERT.as_bytes();
    let mut g = c.benchmark_group("per_alert");
    g.bench_function("forwarder", |b| {
        b.iter(|| {
            let alert = RawAlert::parse(black_box(ALERT)).unwrap();
            structured.render(&Context::from_raw(&alert)).unwrap()
        })
    });
    g.bench_function("hand_built", |b| {
        #[derive(serde::Deserialize)]
        struct Alert<'a> {
            #[serde(borrow)]
            uuid: &'a str,
            rule: Rule,
        }
        #[derive(serde::Deserialize)]
        struct Rule {
            name: String,
            severity: serde_json::Value,
        }
        b.iter(|| {
            let a: Alert<'_> = serde_json::from_slice(black_box(bytes)).unwrap();
            format!(
                r#"{{"alert_short_id":"{}", "rule_name":{},"rule_severity":"{}","description":"This is a description"}}"#,
                a.uuid,
                serde_json::to_string(&a.rule.name).unwrap(),
                a.rule.severity
            )
        })
    });
    g.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
