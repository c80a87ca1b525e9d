//! The render context: what a Sekoia playbook exposes to the "Request URL" node.
//!
//! In the reproduced playbook node 0 is the "Alert Created" trigger and node 1 is "Get
//! Alert", so templates read `node.0.alert_uuid` and `node.1.rule.name`. `node` must be a
//! list, not a map with keys "0" and "1": `node.0` looks up the integer 0.

use std::fmt;
use std::sync::Arc;

use minijinja::Value;
use minijinja::value::{Enumerator, Object, ObjectRepr};
use serde_json::{Map, Value as Json};

/// The variables a template sees: `node` = `[trigger output, alert]`, and the same two
/// values as `trigger` and `alert`. Build it once per alert and reuse it for every template
/// of that alert; cloning is cheap (reference counted).
#[derive(Clone)]
pub struct Context {
    value: Value,
}

impl Context {
    /// Builds the context from a Get Alert body, deriving the trigger output with
    /// [`trigger_output`].
    pub fn new(alert: &Json) -> Context {
        Context::from_json(alert.clone())
    }

    /// [`Context::new`] from an owned Get Alert body, without copying it: templates read the
    /// JSON in place, and only the parts they touch become template values. Converting the
    /// whole alert up front was most of the forwarder's CPU per message (BENCHMARKS.md).
    pub fn from_json(alert: Json) -> Context {
        let trigger = JsonNode::value_of(Arc::new(trigger_output(&alert)));
        let alert = JsonNode::value_of(Arc::new(alert));
        let node = Value::from(vec![trigger.clone(), alert.clone()]);
        Context {
            value: minijinja::context! { node, trigger, alert },
        }
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

/// One step from a JSON node to a child.
#[derive(Debug, Clone)]
enum Step {
    Key(Arc<str>),
    Index(usize),
}

/// A JSON object or array as a template value, read in place: a child becomes a template
/// value only when a template looks it up. Scalars convert as minijinja's serde conversion
/// converts them, so templates see the same values either way.
#[derive(Debug)]
struct JsonNode {
    root: Arc<Json>,
    path: Vec<Step>,
}

impl JsonNode {
    /// `json` as a template value: scalars directly, objects and arrays lazily.
    fn value_of(root: Arc<Json>) -> Value {
        JsonNode::child(&root, Vec::new())
    }

    fn child(root: &Arc<Json>, path: Vec<Step>) -> Value {
        let node = JsonNode {
            root: root.clone(),
            path,
        };
        match node.node() {
            Json::Object(_) | Json::Array(_) => Value::from_object(node),
            scalar => scalar_value(scalar),
        }
    }

    fn node(&self) -> &Json {
        let mut node = &*self.root;
        for step in &self.path {
            node = match (node, step) {
                (Json::Object(m), Step::Key(k)) => &m[&**k],
                (Json::Array(a), Step::Index(i)) => &a[*i],
                // Paths are only built from lookups that succeeded on this same tree.
                _ => unreachable!("a JsonNode path always leads to an existing node"),
            };
        }
        node
    }

    fn step(&self, step: Step) -> Value {
        let mut path = self.path.clone();
        path.push(step);
        JsonNode::child(&self.root, path)
    }
}

fn scalar_value(json: &Json) -> Value {
    match json {
        Json::Null => Value::from(()),
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::from(s.as_str()),
        // Not reached: objects and arrays are JsonNodes.
        other => Value::from(minijinja::value::Serde(other)),
    }
}

impl Object for JsonNode {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        match self.node() {
            Json::Array(_) => ObjectRepr::Seq,
            _ => ObjectRepr::Map,
        }
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match self.node() {
            Json::Object(m) => {
                let (k, _) = m.get_key_value(key.as_str()?)?;
                Some(self.step(Step::Key(Arc::from(k.as_str()))))
            }
            Json::Array(a) => {
                let i = i64::try_from(key.clone()).ok()?;
                // Python-style negative indices, as minijinja's own lists have.
                let i = if i < 0 { i + a.len() as i64 } else { i };
                let i = usize::try_from(i).ok().filter(|i| *i < a.len())?;
                Some(self.step(Step::Index(i)))
            }
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.node() {
            Json::Object(m) => {
                Enumerator::Values(m.keys().map(|k| Value::from(k.as_str())).collect())
            }
            Json::Array(a) => Enumerator::Seq(a.len()),
            _ => Enumerator::Empty,
        }
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        match self.node() {
            Json::Object(m) => Some(m.len()),
            Json::Array(a) => Some(a.len()),
            _ => Some(0),
        }
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

    /// Templates see the same values whether the alert is read in place or converted whole.
    #[test]
    fn reading_the_alert_in_place_renders_like_converting_it_whole() {
        let alert: Json =
            serde_json::from_str(include_str!("../tests/fixtures/alert_full.json")).unwrap();
        let lazy = JsonNode::value_of(Arc::new(alert.clone()));
        let eager = Value::from(minijinja::value::Serde(&alert));
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        for t in [
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
        ] {
            let tmpl = env.template_from_str(t).unwrap();
            assert_eq!(
                tmpl.render(minijinja::context! { a => lazy.clone() })
                    .unwrap(),
                tmpl.render(minijinja::context! { a => eager.clone() })
                    .unwrap(),
                "{t}"
            );
        }
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
