//! The notification payloads ingest accepts, parsed into one [`AlertEvent`]: an alert was
//! created, updated (status, urgency, ...) or commented.
//!
//! Everything here is hostile input: values are validated (uuids must be uuids, short ids
//! short alphanumerics) before they go anywhere, and errors say what is wrong without echoing
//! the input back. Comment text is kept as data: it is never parsed, evaluated or logged.

use alertsync_proto::{canonical_uuid, v1};
use serde_json::Value;

/// Longest comment text taken (Sekoia's own comments are far shorter); a longer one is
/// refused with a reason rather than cut, so nothing is silently changed.
pub const MAX_COMMENT_BYTES: usize = 48 * 1024;

/// What happened to the alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happened {
    /// `alert:created`.
    Created,
    /// `alert:updated`: `updated` is the notification's `attributes.updated` object as JSON
    /// text (`{}` when unknown), `event_id` identifies this update across sources.
    Updated {
        /// JSON text of what changed.
        updated: String,
        /// A subject token: the notification uuid, or `poll-<updated_at>` from the poller.
        event_id: String,
    },
    /// `alert-comment:created`.
    Comment(v1::Comment),
}

/// A notification about an alert, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertEvent {
    /// Alert uuid, lower-case hyphenated.
    pub alert_uuid: String,
    /// Short id (`AL…`), empty when not given.
    pub short_id: String,
    /// Community uuid, empty when not given.
    pub community_uuid: String,
    /// What happened.
    pub happened: Happened,
}

impl AlertEvent {
    /// A creation.
    pub fn created(alert_uuid: String, short_id: String, community_uuid: String) -> Self {
        Self {
            alert_uuid,
            short_id,
            community_uuid,
            happened: Happened::Created,
        }
    }

    /// Its kind, as the protocol names it.
    pub fn kind(&self) -> v1::EventKind {
        match self.happened {
            Happened::Created => v1::EventKind::Created,
            Happened::Updated { .. } => v1::EventKind::Updated,
            Happened::Comment(_) => v1::EventKind::Comment,
        }
    }
}

/// The config name of a kind (`ingest.events`), also its metric label.
pub fn kind_name(kind: v1::EventKind) -> &'static str {
    match kind {
        v1::EventKind::Created => "alert-created",
        v1::EventKind::Updated => "alert-updated",
        v1::EventKind::Comment => "alert-comment-created",
    }
}

/// Parses one of:
/// - a LiveAPI v2 notification (`{"metadata": {"version": 2, "uuid", "community_uuid"},
///   "type", "action", "attributes"}`) of type `alert` / `created`, `alert` / `updated` or
///   `alert-comment` / `created`;
/// - `{"alert_uuid": "...", "short_id"?: "...", "community_uuid"?: "..."}` (a creation);
/// - the Alert Created trigger output (it has `alert_uuid` and `short_id`).
pub fn parse(body: &[u8]) -> Result<AlertEvent, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = v.as_object().ok_or("expected a JSON object")?;
    if obj.contains_key("attributes") || obj.contains_key("metadata") {
        return parse_notification(&v);
    }
    if let Some(uuid) = obj.get("alert_uuid") {
        return Ok(AlertEvent::created(
            uuid_field(uuid, "alert_uuid")?,
            optional_short_id(obj.get("short_id"))?,
            optional_uuid(obj.get("community_uuid"), "community_uuid")?,
        ));
    }
    Err(
        "missing alert uuid: send a LiveAPI notification, {\"alert_uuid\": \"<uuid>\"} or the \
         Alert Created trigger payload"
            .into(),
    )
}

/// Parses a LiveAPI v2 notification about an alert: created, updated or commented.
pub fn parse_notification(v: &Value) -> Result<AlertEvent, String> {
    let version = v.pointer("/metadata/version").and_then(Value::as_i64);
    if version != Some(2) {
        return Err("unsupported notification: metadata.version must be 2".into());
    }
    let community_uuid = optional_uuid(
        v.pointer("/metadata/community_uuid"),
        "metadata.community_uuid",
    )?;
    let kind = v.get("type").and_then(Value::as_str);
    let action = v.get("action").and_then(Value::as_str);
    match (kind, action) {
        (Some("alert"), Some("created")) => Ok(AlertEvent {
            community_uuid,
            ..alert_of(v)?
        }),
        (Some("alert"), Some("updated")) => {
            let updated = match v.pointer("/attributes/updated") {
                None | Some(Value::Null) => "{}".to_string(),
                Some(u @ Value::Object(_)) => u.to_string(),
                Some(_) => return Err("malformed attributes.updated: must be an object".into()),
            };
            let event_id = match v.pointer("/metadata/uuid") {
                Some(id) => uuid_field(id, "metadata.uuid")
                    .map_err(|_| "malformed metadata.uuid: must be a uuid string".to_string())?,
                // Without a notification uuid, the update is known by what it says: the same
                // notification seen twice is still one update.
                None => format!("n-{}", digest_hex(&updated)),
            };
            Ok(AlertEvent {
                community_uuid,
                happened: Happened::Updated { updated, event_id },
                ..alert_of(v)?
            })
        }
        (Some("alert-comment"), Some("created")) => {
            let a = v.pointer("/attributes").ok_or("missing attributes")?;
            let alert = a
                .get("alert_uuid")
                .ok_or("missing alert uuid: attributes.alert_uuid is required")?;
            let uuid = a
                .get("uuid")
                .ok_or("missing comment uuid: attributes.uuid is required")?;
            let comment = v1::Comment {
                uuid: uuid
                    .as_str()
                    .and_then(canonical_uuid)
                    .ok_or("malformed comment uuid: attributes.uuid must be a uuid string")?,
                content: text_field(a.get("content"), "attributes.content", MAX_COMMENT_BYTES)?,
                author: text_field(a.get("author"), "attributes.author", 256)?,
                created_by: text_field(a.get("created_by"), "attributes.created_by", 256)?,
                created_by_type: text_field(
                    a.get("created_by_type"),
                    "attributes.created_by_type",
                    64,
                )?,
                date: a.get("date").and_then(Value::as_i64).unwrap_or(0),
            };
            Ok(AlertEvent {
                alert_uuid: uuid_field(alert, "attributes.alert_uuid")?,
                short_id: optional_short_id(a.get("alert_short_id"))?,
                community_uuid,
                happened: Happened::Comment(comment),
            })
        }
        _ => Err(
            "not an alert notification: type/action must be alert/created, alert/updated or \
             alert-comment/created"
                .into(),
        ),
    }
}

/// The alert a created or updated notification is about (`attributes.uuid`, `short_id`).
fn alert_of(v: &Value) -> Result<AlertEvent, String> {
    let uuid = v
        .pointer("/attributes/uuid")
        .ok_or("missing alert uuid: attributes.uuid is required")?;
    Ok(AlertEvent::created(
        uuid_field(uuid, "attributes.uuid")?,
        optional_short_id(v.pointer("/attributes/short_id"))?,
        String::new(),
    ))
}

/// The event for an alert object as `GET /v1/sic/alerts` lists it; `None` when its uuid is
/// not a uuid (the item is skipped).
pub fn from_alert(alert: &Value) -> Option<AlertEvent> {
    Some(AlertEvent::created(
        alert.get("uuid")?.as_str().and_then(canonical_uuid)?,
        optional_short_id(alert.get("short_id")).unwrap_or_default(),
        optional_uuid(alert.get("community_uuid"), "community_uuid").unwrap_or_default(),
    ))
}

/// The update the poller saw for a listed alert: known by its `updated_at`, so that the same
/// state listed again is the same update.
pub fn update_from_alert(alert: &Value) -> Option<AlertEvent> {
    let updated_at = alert.get("updated_at").and_then(Value::as_i64)?;
    Some(AlertEvent {
        happened: Happened::Updated {
            updated: "{}".into(),
            event_id: format!("poll-{updated_at}"),
        },
        ..from_alert(alert)?
    })
}

/// A comment object as `GET /v1/sic/alerts/{uuid}/comments` lists it, on `alert`; `None` when
/// it is malformed (skipped).
pub fn comment_from_list(alert: &AlertEvent, c: &Value) -> Option<AlertEvent> {
    let comment = v1::Comment {
        uuid: c.get("uuid")?.as_str().and_then(canonical_uuid)?,
        content: text_field(c.get("content"), "content", MAX_COMMENT_BYTES).ok()?,
        author: text_field(c.get("author"), "author", 256).ok()?,
        created_by: text_field(c.get("created_by"), "created_by", 256).ok()?,
        created_by_type: text_field(c.get("created_by_type"), "created_by_type", 64).ok()?,
        date: c.get("date").and_then(Value::as_i64).unwrap_or(0),
    };
    Some(AlertEvent {
        happened: Happened::Comment(comment),
        ..alert.clone()
    })
}

/// Hex of the first 16 bytes of SHA-256 of `text`: a subject token naming that text.
fn digest_hex(text: &str) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(text.as_bytes());
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// An optional string field, at most `max` bytes.
fn text_field(v: Option<&Value>, field: &str, max: usize) -> Result<String, String> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) if s.len() <= max => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("{field} is over {max} bytes")),
        Some(_) => Err(format!("malformed {field}: must be a string")),
    }
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
    fn reads_updates_and_comments() {
        let body = format!(
            r#"{{"metadata":{{"version":2,"uuid":"0B5E3C57-7E4A-4F63-9A2C-3C7D2F4E9A10"}},"type":"alert","action":"updated",
               "attributes":{{"uuid":"{UUID}","short_id":"ALq7Rt2mXw9K","updated":{{"status":"8f206505-af6d-433e-93f4-775d46dc7d0f","status_name":"Acknowledged"}}}}}}"#
        );
        let e = parse(body.as_bytes()).unwrap();
        assert_eq!(e.kind(), v1::EventKind::Updated);
        let Happened::Updated { updated, event_id } = &e.happened else {
            panic!("{e:?}")
        };
        assert_eq!(event_id, "0b5e3c57-7e4a-4f63-9a2c-3c7d2f4e9a10");
        assert!(updated.contains("Acknowledged"));
        let hostile = "say \"hi\" {{ 7*7 }}\r\nX-Evil: 1";
        let body = serde_json::json!({
            "metadata": {"version": 2},
            "type": "alert-comment", "action": "created",
            "attributes": {"uuid": "9a7c1e52-3b0d-4c8e-a1f6-2d5b7e9c0f34", "alert_uuid": UUID,
                           "alert_short_id": "ALq7Rt2mXw9K", "content": hostile,
                           "created_by": "u1", "created_by_type": "user"}
        });
        let e = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(e.alert_uuid, UUID);
        let Happened::Comment(c) = &e.happened else {
            panic!("{e:?}")
        };
        assert_eq!(c.content, hostile);
        assert_eq!(c.created_by_type, "user");
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
                r#"{"metadata":{"version":2},"type":"alert","action":"deleted","attributes":{"uuid":"x"}}"#,
                "not an alert notification",
            ),
            (
                r#"{"metadata":{"version":2},"type":"alert","action":"updated","attributes":{"uuid":"3b1f6c2e-8d4a-4f0b-9e37-5a2c7d91e604","updated":[1]}}"#,
                "attributes.updated",
            ),
            (
                r#"{"metadata":{"version":2},"type":"alert-comment","action":"created","attributes":{"alert_uuid":"3b1f6c2e-8d4a-4f0b-9e37-5a2c7d91e604","uuid":"nope"}}"#,
                "malformed comment uuid",
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
