//! The render context: what a Sekoia playbook exposes to the "Request URL" node.
//!
//! In the reproduced playbook node 0 is the "Alert Created" trigger and node 1 is "Get
//! Alert", so templates read `node.0.alert_uuid` and `node.1.rule.name`. `node` must be a
//! list, not a map with keys "0" and "1": `node.0` looks up the integer 0.

use std::fmt;
use std::sync::Arc;

use minijinja::Value;
use minijinja::value::{Enumerator, Object};
use serde_json::{Map, Value as Json};

use crate::raw::RawAlert;

/// The variables a template sees: `node` = `[trigger output, alert]`, and the same two
/// values as `trigger` and `alert`. Build it once per alert and reuse it for every template
/// of that alert; cloning is cheap (reference counted).
#[derive(Clone)]
pub struct Context {
    value: Value,
}

impl Context {
    /// Builds the context from a parsed Get Alert body, deriving the trigger output as
    /// [`trigger_output`] does. It reads the alert like [`Context::from_raw`] (from its text),
    /// so templates see the same values whichever way the alert arrives.
    pub fn new(alert: &Json) -> Context {
        Context::from_raw(&RawAlert::from_json(alert))
    }

    /// The context of the alert's text read in place ([`RawAlert`]): only the fields
    /// templates look up are ever parsed. Converting the whole alert up front was most of the
    /// forwarder's CPU per message (BENCHMARKS.md).
    pub fn from_raw(alert: &RawAlert) -> Context {
        let trigger = Value::from_object(TriggerNode {
            alert: alert.clone(),
        });
        let alert = alert.value();
        let node = Value::from(vec![trigger.clone(), alert.clone()]);
        Context {
            value: minijinja::context! { node, trigger, alert },
        }
    }

    /// This context with `name` bound to `value` as well (a later binding of a name wins):
    /// `event`, `comment`, `remote`, `events`, `response`… for the requests about an alert's
    /// later events. The value is data: it is never evaluated as a template.
    pub fn with(self, name: &str, value: Value) -> Context {
        let extra = Value::from(std::collections::BTreeMap::from([(
            name.to_string(),
            value,
        )]));
        Context {
            value: minijinja::value::merge_maps([extra, self.value]),
        }
    }

    /// [`Context::with`] for a JSON value.
    pub fn with_json(self, name: &str, value: &Json) -> Context {
        self.with(name, Value::from(minijinja::value::Serde(value)))
    }

    pub(crate) fn value(&self) -> &Value {
        &self.value
    }
}

impl fmt::Debug for Context {
    // The alert can be large; its content is not useful in a Debug dump.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

/// The keys of [`trigger_output`], in its order.
const TRIGGER_KEYS: [&str; 12] = [
    "file_path",
    "event_type",
    "alert_uuid",
    "short_id",
    "status",
    "created_at",
    "urgency",
    "entity",
    "alert_type",
    "rule",
    "last_seen_at",
    "first_seen_at",
];

/// [`trigger_output`] of a [`RawAlert`] as a template value, each key derived from the alert
/// only when a template reads it (the seed template reads one).
struct TriggerNode {
    alert: RawAlert,
}

impl fmt::Debug for TriggerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TriggerNode").finish_non_exhaustive()
    }
}

impl TriggerNode {
    /// The trigger's value of `key` (one of [`TRIGGER_KEYS`]), as [`trigger_output`] makes it.
    fn derive(&self, key: &str) -> Option<Value> {
        let a = &self.alert;
        let field = |k: &str| a.field(k).unwrap_or_else(|| Value::from(()));
        let sub = |k: &str, s: &str| a.sub_field(k, s).unwrap_or_else(|| Value::from(()));
        // Keys in alphabetical order, so a BTreeMap keeps trigger_output's order.
        let name_uuid = |k: &str| {
            Value::from(std::collections::BTreeMap::from([
                ("name", sub(k, "name")),
                ("uuid", sub(k, "uuid")),
            ]))
        };
        Some(match key {
            "file_path" => Value::from("alert.json"),
            "event_type" => Value::from("alert"),
            "alert_uuid" => field("uuid"),
            "short_id" | "created_at" | "last_seen_at" | "first_seen_at" => field(key),
            "status" | "rule" => name_uuid(key),
            "urgency" => sub("urgency", "current_value"),
            "entity" | "alert_type" => a
                .field(key)
                .unwrap_or_else(|| Value::from(std::collections::BTreeMap::<&str, Value>::new())),
            _ => return None,
        })
    }
}

impl Object for TriggerNode {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.derive(key.as_str()?)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&TRIGGER_KEYS)
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(TRIGGER_KEYS.len())
    }
}

/// The payload Sekoia's "Alert Created" trigger emits, derived from a Get Alert body.
///
/// Mirrors `SecurityAlertsTrigger.handle_event` in Sekoia's automation-library
/// (`Sekoia.io/sekoiaio/triggers/alerts.py`), key order included (`last_seen_at` comes
/// before `first_seen_at` there):
/// - `file_path` is `"alert.json"` and `event_type` the notification type `"alert"`;
/// - `alert_uuid` is the alert's `uuid`;
/// - `status` and `rule` keep only `name` and `uuid`;
/// - `urgency` is `urgency.current_value`;
/// - `entity` and `alert_type` are copied as they are (Python `alert.get("entity", {})`), so
///   a missing one becomes `{}`;
/// - any other missing field, or a field under a missing or non-object parent, is `null`.
pub fn trigger_output(alert: &Json) -> Json {
    let field = |key: &str| alert.get(key).cloned().unwrap_or(Json::Null);
    let sub = |key: &str, sub: &str| {
        alert
            .get(key)
            .and_then(|parent| parent.get(sub))
            .cloned()
            .unwrap_or(Json::Null)
    };
    let copied = |key: &str| {
        alert
            .get(key)
            .cloned()
            .unwrap_or_else(|| Json::Object(Map::new()))
    };
    let name_uuid = |key: &str| {
        let mut map = Map::new();
        map.insert("name".into(), sub(key, "name"));
        map.insert("uuid".into(), sub(key, "uuid"));
        Json::Object(map)
    };

    let mut out = Map::new();
    out.insert("file_path".into(), Json::from("alert.json"));
    out.insert("event_type".into(), Json::from("alert"));
    out.insert("alert_uuid".into(), field("uuid"));
    out.insert("short_id".into(), field("short_id"));
    out.insert("status".into(), name_uuid("status"));
    out.insert("created_at".into(), field("created_at"));
    out.insert("urgency".into(), sub("urgency", "current_value"));
    out.insert("entity".into(), copied("entity"));
    out.insert("alert_type".into(), copied("alert_type"));
    out.insert("rule".into(), name_uuid("rule"));
    out.insert("last_seen_at".into(), field("last_seen_at"));
    out.insert("first_seen_at".into(), field("first_seen_at"));
    Json::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Renders each of `templates` with `got` and with `expected` (both template contexts)
    /// and asserts the same output, or the same kind of error when a template cannot render
    /// (a loop over a number, say).
    fn assert_renders_alike(
        env: &minijinja::Environment,
        templates: &[&str],
        got: Value,
        expected: Value,
        what: &str,
    ) {
        for t in templates {
            let tmpl = env.template_from_str(t).unwrap();
            assert_eq!(
                tmpl.render(&got).map_err(|e| e.kind()),
                tmpl.render(&expected).map_err(|e| e.kind()),
                "{what} / {t}"
            );
        }
    }

    /// The context of an alert as minijinja's serde conversion makes it, whole and eager: the
    /// reference the lazy reading must match.
    fn eager_context(alert: &Json) -> Value {
        let trigger = Value::from(minijinja::value::Serde(&trigger_output(alert)));
        let alert = Value::from(minijinja::value::Serde(&alert));
        let node = Value::from(vec![trigger.clone(), alert.clone()]);
        minijinja::context! { node, trigger, alert }
    }

    fn environment() -> minijinja::Environment<'static> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // Documents lack most of the paths the templates try; they must read as undefined.
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        env
    }

    /// Templates see the same values whether the alert is read in place or converted whole.
    #[test]
    fn reading_the_alert_in_place_renders_like_converting_it_whole() {
        let text = include_str!("../tests/fixtures/alert_full.json");
        let alert: Json = serde_json::from_str(text).unwrap();
        assert_renders_alike(
            &environment(),
            &[
                "{{ a }}",
                "{{ a | tojson }}",
                "{{ a.rule }}|{{ a['rule']['name'] }}|{{ a.rule.missing }}|{{ a.nope is defined }}",
                "{{ a | length }}|{{ a.keys() | list }}|{% for k, v in a | items %}{{ k }}={{ v }};{% endfor %}",
                "{{ a.urgency.current_value + 1 }}|{{ a.urgency.current_value is number }}",
                "{{ a.entity is mapping }}|{{ 'rule' in a }}|{{ a.rule == a['rule'] }}",
                "{% for x in a.values() %}{{ x is mapping }}{% endfor %}",
                "{{ a.assets }}|{{ a.assets | length }}|{{ a.assets[0] }}|{{ a.assets[-1] }}|{{ a.assets[99] is defined }}",
                "{{ a.alert_type | dictsort }}",
                "{{ a.ttps }}|{{ a.ttps[0].name }}|{{ a.stix | tojson }}|{% for t in a.ttps %}{{ loop.index }}{{ t }}{% endfor %}",
            ],
            minijinja::context! { a => RawAlert::parse(text).unwrap().value() },
            minijinja::context! { a => Value::from(minijinja::value::Serde(&alert)) },
            "alert_full.json",
        );
    }

    /// Odd but valid JSON reads from its text as from serde_json's tree: a repeated key keeps
    /// its first place and its last value, escaped keys and strings are unescaped, whitespace
    /// anywhere, scalars and arrays at the top. The trigger output derived key by key matches
    /// [`trigger_output`], whether the context comes from the text or from a parsed alert.
    #[test]
    fn odd_json_reads_from_its_text_like_from_the_tree() {
        let env = environment();
        // A large object with repeated keys, and fields of unexpected types where the trigger
        // output looks.
        let big = format!(
            "{{{}, \"k3\": \"last\", \"k0\": [0]}}",
            (0..40)
                .map(|i| format!("\"k{i}\": {i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let odd_types = r#"{"uuid": 7, "rule": ["r"], "status": {"name": {"x": 1}},
            "urgency": {"current_value": {"deep": true}}, "entity": "just text",
            "alert_type": null, "short_id": [1, 2], "last_seen_at": false}"#;
        for doc in [
            big.as_str(),
            odd_types,
            include_str!("../tests/fixtures/alert_full.json"),
            r#"{"a": 1, "b": {"x": "1"}, "a": {"y": [1, 2.5, -3, 18446744073709551615]}}"#,
            " {\n \"k\\\"ey\" : \"v\\u00e9\\n\\\"\" , \"\\u0041\": [ {\"z\" : null} , true ] } ",
            r#"[{"rule": {"name": "r"}}, 2, "three"]"#,
            r#""just a string""#,
            "12.5e3",
            "{}",
            "[]",
        ] {
            let tree: Json = serde_json::from_str(doc).unwrap();
            let raw = RawAlert::parse(doc).unwrap();
            assert_eq!(raw.to_json(), tree, "{doc}");
            assert_renders_alike(
                &env,
                &[
                    "{{ a }}",
                    "{{ a | tojson }}",
                    "{% for k in a %}{{ k }}:{{ a[k] | tojson }};{% endfor %}",
                    "{{ a.a.y[-1] }}|{{ a['k\"ey'] }}|{{ a.A[0].z is none }}|{{ a[0].rule.name }}",
                ],
                minijinja::context! { a => raw.value() },
                minijinja::context! { a => Value::from(minijinja::value::Serde(&tree)) },
                doc,
            );
            let contexts = [
                ("text", Context::from_raw(&raw)),
                ("parsed", Context::new(&tree)),
            ];
            for (how, ctx) in contexts {
                assert_renders_alike(
                    &env,
                    &[
                        "{{ node.0 | tojson }}",
                        "{{ node.0 }}|{{ node.0 | length }}|{{ node.0.keys() | list }}",
                        "{% for k, v in trigger | items %}{{ k }}={{ v }};{% endfor %}",
                        "{{ node.0['alert_uuid'] }}|{{ node.0.rule.name }}|{{ trigger.entity }}|{{ trigger.urgency }}",
                        "{{ node.1 | tojson }}|{{ alert == node.1 }}|{{ trigger.nope is defined }}",
                    ],
                    ctx.value().clone(),
                    eager_context(&tree),
                    &format!("{how}: {doc}"),
                );
            }
        }
        for bad in ["", "{", r#"{"a": }"#, "[1,]", "{} {}", "nul"] {
            assert!(RawAlert::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn fields_parses_only_the_named_top_level_fields() {
        let raw = RawAlert::parse(include_str!("../tests/fixtures/alert_full.json")).unwrap();
        let tree = raw.to_json();
        let got = raw.fields(&["rule", "urgency", "no_such_field"]);
        assert_eq!(
            got,
            serde_json::json!({"rule": tree["rule"], "urgency": tree["urgency"]})
        );
        assert_eq!(
            RawAlert::parse("[1]").unwrap().fields(&["rule"]),
            serde_json::json!({})
        );
    }

    #[test]
    fn trigger_output_of_the_full_fixture_is_the_created_event_fixture_in_key_order() {
        let alert: Json = serde_json::from_str(include_str!("../tests/fixtures/alert_full.json"))
            .expect("fixture parses");
        let expected = include_str!("../tests/fixtures/alert_created_event.json");
        let expected: Json = serde_json::from_str(expected).expect("fixture parses");
        let got = trigger_output(&alert);
        assert_eq!(got, expected);
        // Equality of maps ignores order; the serialized text does not.
        assert_eq!(
            serde_json::to_string(&got).unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
    }

    #[test]
    fn missing_fields_become_null_and_copied_objects_become_empty() {
        let got = trigger_output(&json!({"uuid": "u1", "status": null, "urgency": {}}));
        assert_eq!(
            got,
            json!({
                "file_path": "alert.json",
                "event_type": "alert",
                "alert_uuid": "u1",
                "short_id": null,
                "status": {"name": null, "uuid": null},
                "created_at": null,
                "urgency": null,
                "entity": {},
                "alert_type": {},
                "rule": {"name": null, "uuid": null},
                "last_seen_at": null,
                "first_seen_at": null
            })
        );
    }

    #[test]
    fn entity_is_copied_whole_like_sekoia_does() {
        let got = trigger_output(&json!({"entity": {"uuid": "e", "name": "n", "extra": 1}}));
        assert_eq!(got["entity"], json!({"uuid": "e", "name": "n", "extra": 1}));
    }
}
