//! The state of an alert as an update sends it: what "older" and "identical" mean.
//!
//! Sekoia gives `updated_at` in whole seconds, so two states of one second are told apart by a
//! digest of the alert's content. Comments, history and counters of comments are left out:
//! comments are their own kind of event, and a comment must not make the same status look
//! like a new state.

use serde_json::{Map, Value};
use sha2::Digest as _;

use crate::records::AlertState;

/// Top-level fields that do not make a new state.
const NOT_STATE: [&str; 5] = [
    "comments",
    "history",
    "number_of_unseen_comments",
    "number_of_total_comments",
    "countermeasures",
];

/// The state of the alert whose Get Alert body is `text`; `None` when it is not a JSON object.
pub fn of_alert(text: &str) -> Option<AlertState> {
    let Value::Object(mut alert) = serde_json::from_str::<Value>(text).ok()? else {
        return None;
    };
    for key in NOT_STATE {
        alert.remove(key);
    }
    let status = alert.get("status").and_then(|s| {
        s.get("uuid")
            .or_else(|| s.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let urgency = alert
        .get("urgency")
        .and_then(|u| u.get("current_value"))
        .and_then(Value::as_i64);
    let updated_at = alert
        .get("updated_at")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    let canonical = serde_json::to_vec(&sorted(Value::Object(alert))).unwrap_or_default();
    let digest = sha2::Sha256::digest(&canonical)[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(AlertState {
        updated_at,
        digest,
        status,
        urgency,
    })
}

/// `v` with every object's keys in order, so the digest does not depend on key order.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<_> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sorted(v)))
                    .collect::<Map<_, _>>(),
            )
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Why an update is not sent, compared with the state last sent (`None`: send it).
pub fn skip_reason(
    new: &AlertState,
    last: Option<&AlertState>,
    changes: &[alertsync_config::Change],
) -> Option<&'static str> {
    let last = last?;
    if new.updated_at < last.updated_at {
        return Some("older_state");
    }
    if new.updated_at == last.updated_at && new.digest == last.digest {
        return Some("same_state");
    }
    if changes.is_empty() {
        return None;
    }
    let changed = changes.iter().any(|c| match c {
        alertsync_config::Change::Status => new.status != last.status,
        alertsync_config::Change::Urgency => new.urgency != last.urgency,
    });
    (!changed).then_some("unchanged")
}

#[cfg(test)]
mod tests {
    use super::*;
    use alertsync_config::Change;

    fn state(text: &str) -> AlertState {
        of_alert(text).unwrap()
    }

    #[test]
    fn older_and_identical_states_are_skipped_and_same_second_changes_are_not() {
        let ack =
            state(r#"{"updated_at":10,"status":{"uuid":"a"},"urgency":{"current_value":40}}"#);
        let closed =
            state(r#"{"updated_at":10,"status":{"uuid":"c"},"urgency":{"current_value":40}}"#);
        let later =
            state(r#"{"updated_at":11,"status":{"uuid":"c"},"urgency":{"current_value":40}}"#);
        assert_eq!(skip_reason(&ack, None, &[]), None);
        assert_eq!(skip_reason(&ack, Some(&ack), &[]), Some("same_state"));
        assert_eq!(
            skip_reason(&closed, Some(&ack), &[]),
            None,
            "same second, new status"
        );
        assert_eq!(skip_reason(&ack, Some(&later), &[]), Some("older_state"));
        assert_eq!(
            skip_reason(&later, Some(&closed), &[Change::Status]),
            Some("unchanged")
        );
        assert_eq!(skip_reason(&later, Some(&ack), &[Change::Status]), None);
    }

    #[test]
    fn comments_and_key_order_do_not_make_a_new_state() {
        let a = state(r#"{"updated_at":5,"b":1,"a":2,"comments":[]}"#);
        let b = state(
            r#"{"a":2,"updated_at":5,"b":1,"comments":[{"uuid":"x"}],"number_of_total_comments":1}"#,
        );
        assert_eq!(a, b);
    }
}
