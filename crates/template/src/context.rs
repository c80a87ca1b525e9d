//! The render context: what a Sekoia playbook exposes to the "Request URL" node.
//!
//! In the reproduced playbook node 0 is the "Alert Created" trigger and node 1 is "Get
//! Alert", so templates read `node.0.alert_uuid` and `node.1.rule.name`. `node` must be a
//! list, not a map with keys "0" and "1": `node.0` looks up the integer 0.

use std::fmt;

use minijinja::Value;
use minijinja::value::Serde;
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
        let trigger = Value::from(Serde(trigger_output(alert)));
        let alert = Value::from(Serde(alert));
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
