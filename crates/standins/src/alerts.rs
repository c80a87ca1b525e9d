//! Realistic alert bodies, built from a synthetic fixture in the shape of Sekoia's Get Alert.

use serde_json::{Value, json};

/// The fixture alert (`fixtures/alert_full.json`), as Get Alert returns it.
pub fn fixture() -> Value {
    serde_json::from_str(include_str!("../fixtures/alert_full.json")).expect("fixture is JSON")
}

/// A new alert like the fixture, with its own uuid and short id and the given rule name and
/// title. `created_at` is now.
pub fn new_alert(uuid: &str, short_id: &str, rule_name: &str, title: &str) -> Value {
    let mut a = fixture();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    a["uuid"] = json!(uuid);
    a["short_id"] = json!(short_id);
    a["title"] = json!(title);
    a["rule"]["name"] = json!(rule_name);
    a["created_at"] = json!(now);
    a["updated_at"] = json!(now);
    a
}

/// A random short id in Sekoia's shape (`AL` + 10 letters and digits).
pub fn random_short_id() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..10)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    format!("AL{tail}")
}

/// A LiveAPI v2 "alert created" notification for `alert` (what the socket pushes and what the
/// ingest webhook accepts).
pub fn live_notification(alert: &Value) -> Value {
    json!({
        "metadata": {
            "version": 2,
            "uuid": uuid::Uuid::new_v4().to_string(),
            "created_at": "2026-01-01T10:22:05.118342+00:00",
            "community_uuid": alert["community_uuid"],
        },
        "type": "alert",
        "action": "created",
        "attributes": {"uuid": alert["uuid"], "short_id": alert["short_id"]},
    })
}
