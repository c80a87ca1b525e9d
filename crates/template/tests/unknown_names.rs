//! A filter or test that does not exist is refused when the template is compiled, naming it
//! and its line (issue 24, item 7a): minijinja would only fail when a render reaches it, so
//! the template passed `alertsync check` and startup, then dead-lettered every alert.

use alertsync_template::{CompileError, Engine};

fn refused(result: Result<impl std::fmt::Debug, CompileError>) -> String {
    match result {
        Err(e @ CompileError::Unknown { .. }) => e.to_string(),
        other => panic!("expected an unknown filter or test, got {other:?}"),
    }
}

#[test]
fn an_unknown_filter_in_a_json_body_is_refused_naming_it_and_its_line() {
    let engine = Engine::new();
    let body = "{\n  \"id\": \"{{ node.0.alert_uuid }}\",\n  \"t\": \"{{ node.1.title|uper }}\"\n}";
    assert_eq!(
        refused(engine.compile_json_body(body)),
        "unknown filter `uper` at line 3"
    );
    // A plain (not JSON) body too.
    assert_eq!(
        refused(engine.compile_json_body("{{ node.1|tojsn }}")),
        "unknown filter `tojsn` at line 1"
    );
}

#[test]
fn an_unknown_filter_is_refused_wherever_it_hides() {
    let engine = Engine::new();
    for (text, name) in [
        // In a branch no alert may ever take.
        ("{% if false %}{{ x|nope }}{% endif %}", "nope"),
        ("{% filter shout %}x{% endfilter %}", "shout"),
        (
            "{% macro m(v) %}{{ v|nope2 }}{% endmacro %}{{ m(1) }}",
            "nope2",
        ),
        ("{% for i in x|sorted %}{{ i }}{% endfor %}", "sorted"),
        ("{{ x|upper|jsonpth('$.a') }}", "jsonpth"),
    ] {
        let got = refused(engine.compile_text(text));
        assert!(
            got.starts_with(&format!("unknown filter `{name}`")),
            "{text}: {got}"
        );
    }
    assert_eq!(
        refused(engine.compile_text("{{ 'y' if x is evn else 'n' }}")),
        "unknown test `evn` at line 1"
    );
}

#[test]
fn known_filters_and_tests_and_bars_inside_strings_compile() {
    let engine = Engine::new();
    for text in [
        "{{ 'a|b|nope' }}",
        "{{ x|upper|lower|default('z')|length }}",
        "{{ node.1|jsonpath('$.rule.name') }}",
        "{{ x|timestamp_to_iso8601 }}{{ x|iso8601_to_timestamp }}{{ x|fromjson }}",
        "{{ x|regex_match('a') }}{{ x|time_with_delta(days=1) }}{{ x|jsonstr }}{{ x|tojson }}",
        "{{ 'y' if x is defined and x is number and x is even else 'n' }}",
        "{% filter upper %}x{% endfilter %}",
    ] {
        engine
            .compile_text(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"));
    }
}
