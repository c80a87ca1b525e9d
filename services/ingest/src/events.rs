//! The alert-created payloads ingest accepts, parsed into one [`AlertEvent`].
//!
//! Everything here is hostile input: values are validated (uuids must be uuids, short ids
//! short alphanumerics) before they go anywhere, and errors say what is wrong without echoing
//! the input back.

use alertsync_proto::canonical_uuid;
use serde_json::Value;

/// An alert-created event, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertEvent {
    /// Alert uuid, lower-case hyphenated.
    pub alert_uuid: String,
    /// Short id (`AL…`), empty when not given.
    pub short_id: String,
    /// Community uuid, empty when not given.
    pub community_uuid: String,
}

/// Parses one of:
/// - a LiveAPI v2 notification (`{"metadata": {"version": 2, "community_uuid"}, "type": "alert",
///   "action": "created", "attributes": {"uuid", "short_id"}}`);
/// - `{"alert_uuid": "...", "short_id"?: "...", "community_uuid"?: "..."}`;
/// - the Alert Created trigger output (it has `alert_uuid` and `short_id`).
pub fn parse(body: &[u8]) -> Result<AlertEvent, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = v.as_object().ok_or("expected a JSON object")?;
    if obj.contains_key("attributes") || obj.contains_key("metadata") {
        return parse_notification(&v);
    }
    if let Some(uuid) = obj.get("alert_uuid") {
        return Ok(AlertEvent {
            alert_uuid: uuid_field(uuid, "alert_uuid")?,
            short_id: optional_short_id(obj.get("short_id"))?,
            community_uuid: optional_uuid(obj.get("community_uuid"), "community_uuid")?,
        });
    }
    Err(
        "missing alert uuid: send a LiveAPI notification, {\"alert_uuid\": \"<uuid>\"} or the \
         Alert Created trigger payload"
            .into(),
    )
}

/// Parses a LiveAPI v2 "alert created" notification.
pub fn parse_notification(v: &Value) -> Result<AlertEvent, String> {
    let version = v.pointer("/metadata/version").and_then(Value::as_i64);
    if version != Some(2) {
        return Err("unsupported notification: metadata.version must be 2".into());
    }
    let kind = v.get("type").and_then(Value::as_str);
    let action = v.get("action").and_then(Value::as_str);
    if kind != Some("alert") || action != Some("created") {
        return Err(
            "not an alert-created notification: type must be \"alert\" and action \"created\""
                .into(),
        );
    }
    let uuid = v
        .pointer("/attributes/uuid")
        .ok_or("missing alert uuid: attributes.uuid is required")?;
    Ok(AlertEvent {
        alert_uuid: uuid_field(uuid, "attributes.uuid")?,
        short_id: optional_short_id(v.pointer("/attributes/short_id"))?,
        community_uuid: optional_uuid(
            v.pointer("/metadata/community_uuid"),
            "metadata.community_uuid",
        )?,
    })
}

/// The event for an alert object as `GET /v1/sic/alerts` lists it; `None` when its uuid is
/// not a uuid (the item is skipped).
pub fn from_alert(alert: &Value) -> Option<AlertEvent> {
    Some(AlertEvent {
        alert_uuid: alert.get("uuid")?.as_str().and_then(canonical_uuid)?,
        short_id: optional_short_id(alert.get("short_id")).unwrap_or_default(),
        community_uuid: optional_uuid(alert.get("community_uuid"), "community_uuid")
            .unwrap_or_default(),
    })
}

fn uuid_field(v: &Value, field: &str) -> Result<String, String> {
    v.as_str()
        .and_then(canonical_uuid)
        .ok_or_else(|| format!("malformed alert uuid: {field} must be a uuid string"))
}

fn optional_uuid(v: Option<&Value>, field: &str) -> Result<String, String> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(String::new()),
        Some(other) => other
            .as_str()
            .and_then(canonical_uuid)
            .ok_or_else(|| format!("malformed {field}: must be a uuid string")),
    }
}

fn optional_short_id(v: Option<&Value>) -> Result<String, String> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) if s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            Ok(s.clone())
        }
        Some(_) => Err("malformed short_id: must be up to 32 letters and digits".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "3b1f6c2e-8d4a-4f0b-9e37-5a2c7d91e604";

    #[test]
    fn reads_a_live_notification() {
        let body = format!(
            r#"{{"metadata":{{"version":2,"community_uuid":"D24E5C90-1A7B-4E63-B8F2-0C9A4E7F3B15"}},
               "type":"alert","action":"created","attributes":{{"uuid":"{UUID}","short_id":"ALq7Rt2mXw9K"}}}}"#
        );
        let e = parse(body.as_bytes()).unwrap();
        assert_eq!(e.alert_uuid, UUID);
        assert_eq!(e.short_id, "ALq7Rt2mXw9K");
        assert_eq!(e.community_uuid, "d24e5c90-1a7b-4e63-b8f2-0c9a4e7f3b15");
    }

    #[test]
    fn reads_the_bare_form_and_the_trigger_output() {
        let e = parse(format!(r#"{{"alert_uuid":"{UUID}"}}"#).as_bytes()).unwrap();
        assert_eq!(e.alert_uuid, UUID);
        assert_eq!(e.short_id, "");
    }

    #[test]
    fn rejects_what_is_not_an_alert_creation_with_a_reason() {
        for (body, reason) in [
            ("{", "invalid JSON"),
            ("[]", "expected a JSON object"),
            ("{}", "missing alert uuid"),
            (r#"{"alert_uuid":"nope"}"#, "malformed alert uuid"),
            (r#"{"alert_uuid":42}"#, "malformed alert uuid"),
            (
                r#"{"metadata":{"version":1},"type":"alert","action":"created","attributes":{"uuid":"x"}}"#,
                "metadata.version must be 2",
            ),
            (
                r#"{"metadata":{"version":2},"type":"alert","action":"updated","attributes":{"uuid":"x"}}"#,
                "not an alert-created notification",
            ),
        ] {
            let err = parse(body.as_bytes()).unwrap_err();
            assert!(err.contains(reason), "{body}: {err}");
        }
        let hostile = format!(r#"{{"alert_uuid":"{UUID}","community_uuid":"x.>"}}"#);
        assert!(
            parse(hostile.as_bytes())
                .unwrap_err()
                .contains("community_uuid")
        );
    }
}
