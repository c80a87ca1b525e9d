//! An alert's comments and workflow, read and written through the API:
//! - `GET /v1/sic/alerts/{uuid}/comments` → `{"items": [...], "total": n}`;
//! - `POST /v1/sic/alerts/{uuid}/comments` `{"content", "author"}` → the comment, made by the
//!   API key (`created_by_type: "apikey"`); an author over 32 characters is refused (400);
//! - `GET /v1/sic/alerts/{uuid}/workflow` → `{"actions": [{"id", "name", "description"}]}`, the
//!   transitions allowed from the alert's status;
//! - `PATCH /v1/sic/alerts/{uuid}/workflow` `{"action_uuid", "comment"}` applies an allowed
//!   transition (400 otherwise) and answers the actions allowed from the new status.
//!
//! Writes are recorded (whatever they answered, once the key is accepted), can be scripted
//! ([`crate::FakeSekoia::script_writes`]) and are announced on the socket as Sekoia does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::state::{self, Actor};
use super::{Inner, authorized, message, not_found, scripted, unauthorized};

/// Longest comment author Sekoia takes, in characters.
const MAX_AUTHOR: usize = 32;

/// The body as JSON, or as the text it is (what a test wants to see of a garbled write).
fn recorded(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// The answer to a write that is scripted, if the next one is.
fn scripted_write(inner: &Inner) -> Option<Response> {
    let status = inner.write_script.lock().unwrap().pop_front()?;
    Some(scripted(inner, status))
}

/// What both write endpoints do first: check the key, record the request in `log` (also one
/// then refused: a test sees what was tried), and answer from the write script if one is set.
/// `Ok`: the request's JSON, to apply.
fn accept_write(
    inner: &Inner,
    headers: &HeaderMap,
    body: &Bytes,
    log: &Mutex<HashMap<String, Vec<Value>>>,
    uuid: &str,
) -> Result<Value, Box<Response>> {
    if !authorized(inner, headers) {
        return Err(Box::new(unauthorized()));
    }
    let request = recorded(body);
    log.lock()
        .unwrap()
        .entry(uuid.to_string())
        .or_default()
        .push(request.clone());
    match scripted_write(inner) {
        Some(answer) => Err(Box::new(answer)),
        None => Ok(request),
    }
}

pub(super) async fn list_comments(
    State(inner): State<Arc<Inner>>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&inner, &headers) {
        return unauthorized();
    }
    let alerts = inner.alerts.lock().unwrap();
    let Some(alert) = alerts.get(&uuid) else {
        return not_found();
    };
    let items = alert["comments"].as_array().cloned().unwrap_or_default();
    let total = items.len();
    Json(json!({"items": items, "total": total})).into_response()
}

pub(super) async fn post_comment(
    State(inner): State<Arc<Inner>>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match accept_write(&inner, &headers, &body, &inner.comments_posted, &uuid) {
        Ok(request) => request,
        Err(answer) => return *answer,
    };
    if !inner.alerts.lock().unwrap().contains_key(&uuid) {
        return not_found();
    }
    let Some(content) = request.get("content").and_then(Value::as_str) else {
        return message(StatusCode::BAD_REQUEST, "content: a string is required");
    };
    let author = match request.get("author") {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) if a.chars().count() <= MAX_AUTHOR => Some(a.as_str()),
        Some(Value::String(_)) => {
            return message(
                StatusCode::BAD_REQUEST,
                &format!("author: longer than {MAX_AUTHOR} characters"),
            );
        }
        Some(_) => return message(StatusCode::BAD_REQUEST, "author: a string is required"),
    };
    let by = Actor::apikey(&inner.identity);
    let (comment, notification) = {
        let mut alerts = inner.alerts.lock().unwrap();
        let Some(alert) = alerts.get_mut(&uuid) else {
            return not_found();
        };
        let comment = state::add_comment(alert, content, author, &by, false, true);
        let notification = state::comment_notification(alert, &comment);
        (comment, notification)
    };
    inner.announce(&notification);
    Json(comment).into_response()
}

pub(super) async fn get_workflow(
    State(inner): State<Arc<Inner>>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&inner, &headers) {
        return unauthorized();
    }
    let alerts = inner.alerts.lock().unwrap();
    let Some(alert) = alerts.get(&uuid) else {
        return not_found();
    };
    let from = alert["status"]["name"].as_str().unwrap_or_default();
    let actions = actions(&inner.workflow.lock().unwrap().allowed(from));
    Json(json!({"actions": actions})).into_response()
}

fn actions(transitions: &[state::Transition]) -> Vec<Value> {
    transitions.iter().map(state::Transition::to_json).collect()
}

pub(super) async fn patch_workflow(
    State(inner): State<Arc<Inner>>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match accept_write(&inner, &headers, &body, &inner.workflow_patches, &uuid) {
        Ok(request) => request,
        Err(answer) => return *answer,
    };
    let comment = match request.get("comment") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) => Some(c.as_str()),
        Some(_) => return message(StatusCode::BAD_REQUEST, "comment: a string is required"),
    };
    let by = Actor::apikey(&inner.identity);
    let (notifications, actions) = {
        // Alerts before the workflow, as everywhere: the check and the change are one step.
        let mut alerts = inner.alerts.lock().unwrap();
        let Some(alert) = alerts.get_mut(&uuid) else {
            return not_found();
        };
        let Some(action) = request.get("action_uuid").and_then(Value::as_str) else {
            return message(StatusCode::BAD_REQUEST, "action_uuid: a string is required");
        };
        let from = alert["status"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut workflow = inner.workflow.lock().unwrap();
        let Some(transition) = workflow.allowed(&from).into_iter().find(|t| t.id == action) else {
            return message(
                StatusCode::BAD_REQUEST,
                &format!("Action {action} is not allowed from the status {from}"),
            );
        };
        let status = workflow.status(&transition.to);
        let actions = actions(&workflow.allowed(&status.name));
        drop(workflow);
        let comment = comment.map(|c| state::add_comment(alert, c, None, &by, false, false));
        let updated = state::change_status(alert, &status, &by, comment.as_ref());
        let mut notifications = vec![state::updated_notification(alert, updated)];
        if let Some(c) = &comment {
            notifications.push(state::comment_notification(alert, c));
        }
        (notifications, actions)
    };
    for n in &notifications {
        inner.announce(n);
    }
    Json(json!({"actions": actions})).into_response()
}
