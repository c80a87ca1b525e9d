//! The alert state the fake keeps: statuses and the workflow between them, and the changes an
//! alert goes through (status, urgency, comments), each with the `updated_*` fields, the
//! history entry and the LiveAPI v2 notification Sekoia makes of it.
//!
//! History entries go first in `history`: Sekoia lists an alert's history newest first (the
//! Get Alert samples in `demisto/content:Packs/SekoiaXDR/.../SekoiaXDR_get_alert.json` and our
//! fixture). A comment does not change `updated_at`: in the same sample a comment made after
//! the last status change left `updated_at` at that change.

use serde_json::{Value, json};

/// The analyst every change made through [`crate::FakeSekoia`]'s helpers is attributed to (a
/// user, as when someone works on the alert in Sekoia's UI).
pub const ANALYST: &str = "5b7e0c1d-2f4a-4e86-9d3b-6a1c8e2f4b90";

/// Sekoia's default statuses (uuids from `automation-library:update_alert_status.py`).
const DEFAULT_STATUSES: [(&str, &str, &str); 5] = [
    (
        "2efc4930-1442-4abb-acf2-58ba219a4fd0",
        "Pending",
        "The alert is waiting for action",
    ),
    (
        "8f206505-af6d-433e-93f4-775d46dc7d0f",
        "Acknowledged",
        "The alert was checked by an operator",
    ),
    (
        "1f2f88d5-ff5b-48bf-bbbc-00c2fff82d9f",
        "Ongoing",
        "The alert is being handled",
    ),
    (
        "4f68da89-38e0-4703-a6ab-652f02bdf24e",
        "Rejected",
        "The alert was a false positive",
    ),
    (
        "1738b1c1-767d-489e-bada-19176621a007",
        "Closed",
        "The alert was handled",
    ),
];

/// Sekoia's default transitions (ids from `documentation:_shared_content/automate/actions.md`):
/// id, name, description, target status, statuses it leaves from. Rejected and Closed are
/// final: nothing reopens an alert (a tenant can add a way out with `define_status`).
const DEFAULT_TRANSITIONS: [(&str, &str, &str, &str, &[&str]); 4] = [
    (
        "937bdabf-6a08-434b-b6d3-d7447e4e452a",
        "Acknowledge",
        "Acknowledge the alert",
        "Acknowledged",
        &["Pending"],
    ),
    (
        "c39a0a95-aa2c-4d0d-8d2e-d3decf426eea",
        "Validate",
        "Validate the alert",
        "Ongoing",
        &["Acknowledged"],
    ),
    (
        "ade85d7b-7507-4026-bfc6-cc006d10ddac",
        "Reject",
        "Reject the alert",
        "Rejected",
        &["Pending", "Acknowledged", "Ongoing"],
    ),
    (
        "1390be4e-ced8-4dd6-9bed-573471b235ab",
        "Close",
        "Close the alert",
        "Closed",
        &["Acknowledged", "Ongoing"],
    ),
];

/// One status an alert can be in.
#[derive(Debug, Clone)]
pub(super) struct Status {
    pub uuid: String,
    pub name: String,
    pub description: String,
}

impl Status {
    /// As an alert carries it.
    fn to_json(&self) -> Value {
        json!({"uuid": self.uuid, "name": self.name, "description": self.description})
    }
}

/// One workflow action: from any of `from` (status names) to `to`.
#[derive(Debug, Clone)]
pub(super) struct Transition {
    pub id: String,
    pub name: String,
    pub description: String,
    pub to: String,
    pub from: Vec<String>,
}

impl Transition {
    /// As `GET .../workflow` lists it.
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "description": self.description})
    }
}

/// The tenant's statuses and the transitions between them.
#[derive(Debug)]
pub(super) struct Workflow {
    statuses: Vec<Status>,
    transitions: Vec<Transition>,
}

impl Default for Workflow {
    fn default() -> Self {
        Self {
            statuses: DEFAULT_STATUSES
                .iter()
                .map(|(uuid, name, description)| Status {
                    uuid: uuid.to_string(),
                    name: name.to_string(),
                    description: description.to_string(),
                })
                .collect(),
            transitions: DEFAULT_TRANSITIONS
                .iter()
                .map(|(id, name, description, to, from)| Transition {
                    id: id.to_string(),
                    name: name.to_string(),
                    description: description.to_string(),
                    to: to.to_string(),
                    from: from.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
        }
    }
}

impl Workflow {
    /// The status named `name`, made up (with a fresh uuid, the same on every later call) when
    /// the tenant has none of that name.
    pub fn status(&mut self, name: &str) -> Status {
        if let Some(s) = self.statuses.iter().find(|s| s.name == name) {
            return s.clone();
        }
        let s = Status {
            uuid: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            description: format!("Custom status {name}"),
        };
        self.statuses.push(s.clone());
        s
    }

    /// The uuid of the status named `name`, if the tenant has it.
    pub fn status_uuid(&self, name: &str) -> Option<String> {
        self.statuses
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.uuid.clone())
    }

    /// The id of the transition named `name`, if there is one.
    pub fn transition_id(&self, name: &str) -> Option<String> {
        self.transitions
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.id.clone())
    }

    /// The transitions allowed from the status named `from`, in definition order.
    pub fn allowed(&self, from: &str) -> Vec<Transition> {
        self.transitions
            .iter()
            .filter(|t| t.from.iter().any(|f| f == from))
            .cloned()
            .collect()
    }

    /// Adds the status `name` (if new) and a transition `transition` to it from each of
    /// `from`. A transition of that name to that status already there gains the new origins.
    pub fn define(&mut self, name: &str, transition: &str, from: &[&str]) {
        self.status(name);
        let from: Vec<String> = from.iter().map(|s| s.to_string()).collect();
        if let Some(t) = self
            .transitions
            .iter_mut()
            .find(|t| t.name == transition && t.to == name)
        {
            for f in from {
                if !t.from.contains(&f) {
                    t.from.push(f);
                }
            }
            return;
        }
        self.transitions.push(Transition {
            id: uuid::Uuid::new_v4().to_string(),
            name: transition.to_string(),
            description: format!("Move the alert to {name}"),
            to: name.to_string(),
            from,
        });
    }
}

/// Who makes a change: a user (the analyst in the UI) or an API key (a client of the API).
#[derive(Debug, Clone)]
pub(super) struct Actor {
    pub uuid: String,
    pub kind: &'static str,
}

impl Actor {
    /// The analyst of the helpers.
    pub fn analyst() -> Self {
        Self {
            uuid: ANALYST.into(),
            kind: "user",
        }
    }

    /// The API key with `identity`.
    pub fn apikey(identity: &str) -> Self {
        Self {
            uuid: identity.into(),
            kind: "apikey",
        }
    }

    /// How Sekoia names the author of a comment made without one (`apikey:<uuid>`).
    fn display_name(&self) -> String {
        format!("{}:{}", self.kind, self.uuid)
    }
}

/// Now, in epoch seconds (Sekoia's `created_at`/`updated_at` are whole seconds).
pub(super) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Now, as LiveAPI writes `metadata.created_at` (`2026-02-03T10:11:12.123456+00:00`).
fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}

/// Marks `alert` as changed by `by` now: `updated_at` moves to now but never backwards (a
/// clock step must not make a later state look older). Returns the time.
pub(super) fn touch(alert: &mut Value, by: &Actor) -> i64 {
    let at = now().max(alert["updated_at"].as_i64().unwrap_or(i64::MIN));
    alert["updated_at"] = json!(at);
    alert["updated_by"] = json!(by.uuid);
    alert["updated_by_type"] = json!(by.kind);
    at
}

/// Puts `entry` first in the alert's history, if the alert has one (Get Alert may be asked
/// without it; an alert without the array stays without it).
fn record(alert: &mut Value, entry: Value) {
    if let Some(history) = alert.get_mut("history").and_then(Value::as_array_mut) {
        history.insert(0, entry);
    }
}

fn history_entry(at: i64, by: &Actor, entry_type: &str, key: &str, detail: Value) -> Value {
    let mut entry = json!({
        "uuid": uuid::Uuid::new_v4().to_string(),
        "created_at": at,
        "created_by": by.uuid,
        "created_by_type": by.kind,
        "entry_type": entry_type,
        "history_comments": [],
    });
    entry[key] = detail;
    entry
}

/// Moves `alert` to `status` (by `by`, with `comment` attached to the history entry when the
/// change came with one). Returns the notification's `updated`.
pub(super) fn change_status(
    alert: &mut Value,
    status: &Status,
    by: &Actor,
    comment: Option<&Value>,
) -> Value {
    let previous = alert["status"]["name"].clone();
    alert["status"] = status.to_json();
    let at = touch(alert, by);
    let mut entry = history_entry(
        at,
        by,
        "alert",
        "alert",
        json!({"status": status.name, "previous_status": previous}),
    );
    if let Some(c) = comment {
        entry["history_comments"] = json!([c]);
    }
    record(alert, entry);
    json!({"status": status.uuid, "status_name": status.name})
}

/// Sets the alert's current urgency (and its display band). Returns the notification's
/// `updated`.
pub(super) fn change_urgency(alert: &mut Value, value: i64, by: &Actor) -> Value {
    let previous = alert["urgency"]["current_value"].clone();
    if !alert["urgency"].is_object() {
        alert["urgency"] = json!({});
    }
    alert["urgency"]["current_value"] = json!(value);
    alert["urgency"]["display"] = json!(urgency_display(value));
    let at = touch(alert, by);
    record(
        alert,
        history_entry(
            at,
            by,
            "urgency",
            "urgency",
            json!({"value": value, "previous_value": previous}),
        ),
    );
    json!({"dynamic_urgency_value": value})
}

/// Sekoia's urgency bands (`action_get_case.json`'s schema).
fn urgency_display(value: i64) -> &'static str {
    match value {
        i64::MIN..20 => "Low",
        20..40 => "Moderate",
        40..60 => "High",
        60..80 => "Major",
        _ => "Urgent",
    }
}

/// Adds a comment to `alert` and returns it. Only a comment made on its own gets a history
/// entry (one made with a status change is in that change's entry). `unseen` is false for
/// the author's own view (what Sekoia answers the API key that posted it).
pub(super) fn add_comment(
    alert: &mut Value,
    content: &str,
    author: Option<&str>,
    by: &Actor,
    unseen: bool,
    own_entry: bool,
) -> Value {
    let at = now();
    let comment = json!({
        "uuid": uuid::Uuid::new_v4().to_string(),
        "content": content,
        "author": author.map(str::to_string).unwrap_or_else(|| by.display_name()),
        "date": at,
        "created_by": by.uuid,
        "created_by_type": by.kind,
        "unseen": unseen,
    });
    match alert.get_mut("comments").and_then(Value::as_array_mut) {
        Some(list) => list.push(comment.clone()),
        None => alert["comments"] = json!([comment]),
    }
    let bump = |alert: &mut Value, key: &str| {
        let n = alert[key].as_u64().unwrap_or(0) + 1;
        alert[key] = json!(n);
    };
    bump(alert, "number_of_total_comments");
    if unseen {
        bump(alert, "number_of_unseen_comments");
    }
    if own_entry {
        record(
            alert,
            history_entry(
                at,
                by,
                "comment",
                "comment",
                json!({
                    "uuid": comment["uuid"],
                    "status": "created",
                    "display_name": by.display_name(),
                    "content": content,
                }),
            ),
        );
    }
    comment
}

/// What changed between `before` and `after`, as `alert:updated`'s `updated` says it: a status
/// by uuid and name, the urgency by its current value, anything else by its new value. The
/// bookkeeping fields (`updated_*`, history, comments and their counters) are left out.
pub(super) fn changes(before: &Value, after: &Value) -> Value {
    const BOOKKEEPING: [&str; 7] = [
        "updated_at",
        "updated_by",
        "updated_by_type",
        "history",
        "comments",
        "number_of_total_comments",
        "number_of_unseen_comments",
    ];
    let mut updated = serde_json::Map::new();
    let Some(fields) = after.as_object() else {
        return Value::Object(updated);
    };
    for (key, value) in fields {
        if BOOKKEEPING.contains(&key.as_str()) || before.get(key) == Some(value) {
            continue;
        }
        match key.as_str() {
            "status" => {
                updated.insert("status".into(), value["uuid"].clone());
                updated.insert("status_name".into(), value["name"].clone());
            }
            "urgency" => {
                updated.insert(
                    "dynamic_urgency_value".into(),
                    value["current_value"].clone(),
                );
            }
            _ => {
                updated.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(updated)
}

/// A LiveAPI v2 notification about `alert`.
fn notification(alert: &Value, kind: &str, action: &str, attributes: Value) -> Value {
    json!({
        "metadata": {
            "version": 2,
            "uuid": uuid::Uuid::new_v4().to_string(),
            "created_at": now_iso(),
            "community_uuid": alert["community_uuid"],
        },
        "type": kind,
        "action": action,
        "attributes": attributes,
    })
}

/// `alert:updated` with `updated`.
pub(super) fn updated_notification(alert: &Value, updated: Value) -> Value {
    notification(
        alert,
        "alert",
        "updated",
        json!({"uuid": alert["uuid"], "short_id": alert["short_id"], "updated": updated}),
    )
}

/// `alert-comment:created` for `comment` on `alert`.
pub(super) fn comment_notification(alert: &Value, comment: &Value) -> Value {
    notification(
        alert,
        "alert-comment",
        "created",
        json!({
            "uuid": comment["uuid"],
            "alert_uuid": alert["uuid"],
            "alert_short_id": alert["short_id"],
            "content": comment["content"],
            "created_by": comment["created_by"],
            "created_by_type": comment["created_by_type"],
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_workflow_allows_what_sekoia_allows() {
        let w = Workflow::default();
        let names =
            |from: &str| -> Vec<String> { w.allowed(from).into_iter().map(|t| t.name).collect() };
        assert_eq!(names("Pending"), ["Acknowledge", "Reject"]);
        assert_eq!(names("Acknowledged"), ["Validate", "Reject", "Close"]);
        assert_eq!(names("Ongoing"), ["Reject", "Close"]);
        assert!(names("Rejected").is_empty());
        assert!(names("Closed").is_empty());
        assert_eq!(
            w.transition_id("Close").as_deref(),
            Some("1390be4e-ced8-4dd6-9bed-573471b235ab")
        );
    }

    #[test]
    fn a_custom_status_keeps_its_uuid_and_a_defined_one_is_reachable() {
        let mut w = Workflow::default();
        let a = w.status("Escalated").uuid;
        assert_eq!(w.status("Escalated").uuid, a);
        assert_eq!(
            w.status("Pending").uuid,
            "2efc4930-1442-4abb-acf2-58ba219a4fd0"
        );
        w.define("Escalated", "Escalate", &["Ongoing"]);
        w.define("Escalated", "Escalate", &["Acknowledged"]);
        assert_eq!(w.status_uuid("Escalated"), Some(a));
        let escalate: Vec<_> = w
            .allowed("Acknowledged")
            .into_iter()
            .filter(|t| t.name == "Escalate")
            .collect();
        assert_eq!(escalate.len(), 1);
        assert_eq!(escalate[0].to, "Escalated");
        assert!(w.allowed("Ongoing").iter().any(|t| t.name == "Escalate"));
    }

    #[test]
    fn changes_name_a_status_by_uuid_and_leave_the_bookkeeping_out() {
        let before =
            json!({"status": {"uuid": "a", "name": "Pending"}, "title": "t", "updated_at": 1});
        let after =
            json!({"status": {"uuid": "b", "name": "Closed"}, "title": "t2", "updated_at": 2});
        assert_eq!(
            changes(&before, &after),
            json!({"status": "b", "status_name": "Closed", "title": "t2"})
        );
    }

    #[test]
    fn urgency_bands_follow_sekoia() {
        assert_eq!(urgency_display(0), "Low");
        assert_eq!(urgency_display(20), "Moderate");
        assert_eq!(urgency_display(65), "Major");
        assert_eq!(urgency_display(100), "Urgent");
    }
}
