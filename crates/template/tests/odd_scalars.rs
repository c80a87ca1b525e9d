//! Numbers and strings serde_json cannot read render as Python's `json` module reads them, or
//! fail the render saying why: never silently `None` (issue 24, item 7d).

use alertsync_template::{Context, Engine, RawAlert, RenderError};

fn render(template: &str, alert: &str) -> Result<String, RenderError> {
    let ctx = Context::from_raw(&RawAlert::parse(alert.to_string()).expect("the alert parses"));
    Engine::new().compile_text(template).unwrap().render(&ctx)
}

#[test]
fn numbers_beyond_a_float_render_as_python_reads_them() {
    let alert = r#"{"n": 1e400, "m": -1E+400, "tiny": 1e-400, "e": 1e2,
        "big": 123456789012345678901234567890, "neg": -123456789012345678901234567890}"#;
    // json.loads gives inf, -inf, 0.0, 100.0 and the exact integers; Jinja2 prints them so.
    for (template, expected) in [
        ("{{ node.1.n }}", "inf"),
        ("{{ node.1.m }}", "-inf"),
        ("{{ node.1.tiny }}", "0.0"),
        ("{{ node.1.e }}", "100.0"),
        ("{{ node.1.big }}", "123456789012345678901234567890"),
        ("{{ node.1.neg }}", "-123456789012345678901234567890"),
        ("{{ node.1.big + 1 }}", "123456789012345678901234567891"),
        ("{{ node.1.n > 10 }}", "True"),
    ] {
        assert_eq!(render(template, alert).unwrap(), expected, "{template}");
    }
    // In a structured body too.
    let ctx = Context::from_raw(&RawAlert::parse(alert.to_string()).unwrap());
    let body = Engine::new()
        .compile_json_body(r#"{"n": "{{ node.1.n }}", "big": "{{ node.1.big }}"}"#)
        .unwrap();
    assert_eq!(
        body.render(&ctx).unwrap(),
        r#"{"n": "inf", "big": "123456789012345678901234567890"}"#
    );
}

#[test]
fn an_integer_beyond_128_bits_fails_the_render_saying_so() {
    let alert = format!(r#"{{"huge": {}}}"#, "9".repeat(50));
    let err = render("{{ node.1.huge }}", &alert).unwrap_err().to_string();
    assert!(err.contains("an integer larger than 128 bits"), "{err}");
}

#[test]
fn a_lone_surrogate_fails_the_render_saying_so_wherever_it_is_read() {
    let alert = r#"{"title": "a\ud800b", "ok": "fine \ud83d\ude00",
        "rule": {"name": "\udc00", "uuid": "u"}}"#;
    for template in [
        "{{ node.1.title }}",
        "{{ alert.title | upper }}",
        "{{ node.0.rule.name }}",
        "{{ node.1.rule.name }}",
    ] {
        let err = render(template, alert).unwrap_err().to_string();
        assert!(
            err.contains("a string with a lone UTF-16 surrogate escape"),
            "{template}: {err}"
        );
    }
    // A surrogate pair is one character; fields around the bad one still read.
    assert_eq!(render("{{ node.1.ok }}", alert).unwrap(), "fine 😀");
    assert_eq!(render("{{ node.0.rule.uuid }}", alert).unwrap(), "u");
}
