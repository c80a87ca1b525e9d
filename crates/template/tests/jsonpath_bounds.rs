//! `jsonpath` is bounded in memory and time whatever the alert (issue 24, item 2): `$..x` over
//! an alert nested thousands of levels deep took memory and time quadratic in the depth
//! (2,000 levels: 469 MiB; 10,000: 11.3 GB and two minutes on the forwarder's thread). Such an
//! alert is now refused when it is read, a query over a value too deep, a query that could take
//! too much work or a result too large are refused with a reason, before any of that work.

use alertsync_template::filters::{JSONPATH_MAX_DEPTH, JSONPATH_MAX_RESULT_BYTES};
use alertsync_template::raw::MAX_DEPTH;
use alertsync_template::{Context, Engine, RawAlert, RenderError};

/// `{"x":{"x":…{"x":1}…}}`, `depth` objects deep.
fn nested(depth: usize) -> String {
    format!("{}1{}", "{\"x\":".repeat(depth), "}".repeat(depth))
}

fn render(template: &str, alert: &str) -> Result<String, RenderError> {
    let ctx = Context::from_raw(&RawAlert::parse(alert.to_string()).expect("the alert is JSON"));
    Engine::new().compile_text(template).unwrap().render(&ctx)
}

#[test]
fn an_alert_nested_thousands_of_levels_deep_is_refused_when_it_is_read() {
    // What the forwarder dead-letters ("poison: the alert body is not JSON: …") before any
    // template walks it: `tojson` overflowed the stack on such an alert, `jsonpath('$..x')`
    // took memory and time quadratic in the depth.
    for depth in [2_000, 10_000] {
        let err = RawAlert::parse(nested(depth)).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "the document is nested more than {MAX_DEPTH} levels deep, deeper than alertsync \
                 reads"
            )
        );
    }
}

#[test]
fn a_descendant_query_over_a_value_nested_too_deep_is_refused_naming_the_depth_limit() {
    // A value built by code rather than read with `RawAlert::parse` (`Context::new`).
    let deep: serde_json::Value = {
        let mut v = serde_json::json!(1);
        for _ in 0..300 {
            v = serde_json::json!({ "x": v });
        }
        v
    };
    let ctx = Context::new(&deep);
    for template in [
        "{{ node.1 | jsonpath('$..x') }}",
        "{{ node.1 | jsonpath('$..x', return_first=True) }}",
        "{{ alert | jsonpath('$.x.x') }}",
        // Through the list that holds the alert, not the alert itself.
        "{{ node | jsonpath('$..x') | length }}",
    ] {
        let err = Engine::new()
            .compile_text(template)
            .unwrap()
            .render(&ctx)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "template render error at line 1: invalid operation: jsonpath: the value is \
                 nested deeper than {JSONPATH_MAX_DEPTH} levels"
            ),
            "{template}"
        );
    }
}

#[test]
fn a_descendant_query_within_the_depth_limit_still_answers() {
    let alert = nested(100);
    assert_eq!(
        render("{{ node.1 | jsonpath('$..x') | length }}", &alert).unwrap(),
        "100"
    );
    assert_eq!(
        render("{{ node.1 | jsonpath('$..x', True) | length }}", &alert).unwrap(),
        "1"
    );
    // Values that are not read from the alert's text are queried too.
    assert_eq!(
        render("{{ [1, [2, [3]]] | jsonpath('$..*') | length }}", "{}").unwrap(),
        "5"
    );
    assert_eq!(
        render("{{ node | jsonpath('$[1].x.x.x', True) | length }}", &alert).unwrap(),
        "1"
    );
}

#[test]
fn a_query_that_could_visit_too_many_values_is_refused_before_it_runs() {
    // 100 levels, each with 100 values beside the nested one: 10,201 values. One `..` visits
    // each once or so; four visit every value below every value below… the previous ones.
    let mut alert = String::from("1");
    for _ in 0..100 {
        alert = format!("{{\"pad\":[{}],\"x\":{alert}}}", vec!["0"; 100].join(","));
    }
    assert_eq!(
        render("{{ node.1 | jsonpath('$..pad') | length }}", &alert).unwrap(),
        "100"
    );
    let err = render("{{ node.1 | jsonpath('$..*..*..*..x') | length }}", &alert)
        .unwrap_err()
        .to_string();
    assert!(err.contains("jsonpath: the query could take too much work: 10201 values nested 102 deep with 4 `..` segments"), "{err}");
}

#[test]
fn a_result_larger_than_the_limit_is_refused() {
    // Every `x` holds the big string, and `$..x` returns each `x` whole: the string is in the
    // result as many times as there are levels.
    let big = "b".repeat(256 * 1024);
    let mut alert = format!("\"{big}\"");
    for _ in 0..5 {
        alert = format!("{{\"x\":{alert}}}");
    }
    let err = render("{{ node.1 | jsonpath('$..x') | length }}", &alert)
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(&format!(
            "jsonpath: the result is larger than {JSONPATH_MAX_RESULT_BYTES} bytes of JSON"
        )),
        "{err}"
    );
    // The first match alone is within the limit.
    assert_eq!(
        render(
            "{{ node.1 | jsonpath('$.x.x.x.x.x', True) | length }}",
            &alert
        )
        .unwrap(),
        (256 * 1024).to_string()
    );
}
