//! Sekoia's events search jobs, as "Get Events" uses them:
//! - `POST /v1/sic/conf/events/search/jobs` `{"term", "earliest_time", "latest_time",
//!   "visible", "max_last_events"}` starts a job and answers it (`{"uuid", "status": 0, ...}`);
//! - `GET .../jobs/{job}` answers its state, `status` 0 (not started), 1 (running), 2 (done),
//!   3 or 4 (ended without results);
//! - `GET .../jobs/{job}/events?limit&offset` pages a done job's events (`{"items", "total"}`),
//!   at most 100 a page as Sekoia.
//!
//! A job finds the events given to [`crate::FakeSekoia::set_events`] for the short id in
//! `alert_short_ids:"<short id>"` in its term (none for any other term), at most
//! `max_last_events` of them. A job scripted for that short id
//! ([`crate::FakeSekoia::script_events_job`]) fails, runs slowly, or has its start refused.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{Inner, authorized, message, scripted, unauthorized};

/// Largest page of events Sekoia serves.
const MAX_PAGE: usize = 100;

/// How the next events search job for a short id goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsJob {
    /// The job ends with this status (3 or 4) instead of 2.
    Fail(u8),
    /// The job runs this long (status 0 on the first look, then 1), then is done.
    Slow(Duration),
    /// Starting the job is answered this HTTP status, once (no job is made).
    Status(u16),
}

/// What the fake knows of events searches.
#[derive(Default)]
pub(super) struct Events {
    /// Events per alert short id.
    by_short_id: HashMap<String, Vec<Value>>,
    scripts: HashMap<String, VecDeque<EventsJob>>,
    jobs: HashMap<String, Job>,
    /// Bodies of the job starts, in order.
    requests: Vec<Value>,
    started: usize,
}

struct Job {
    uuid: String,
    request: Value,
    created_at: String,
    started: Instant,
    ends: Ending,
    /// Status reads so far (a slow job says "not started" on the first).
    looks: usize,
    results: Vec<Value>,
}

enum Ending {
    Done,
    Fail(u8),
    Slow(Duration),
}

impl Job {
    fn status(&self) -> u8 {
        match self.ends {
            Ending::Done => 2,
            Ending::Fail(s) => s,
            Ending::Slow(_) if self.looks <= 1 => 0,
            Ending::Slow(d) if self.started.elapsed() < d => 1,
            Ending::Slow(_) => 2,
        }
    }

    /// The job as `GET .../jobs/{job}` answers it (fields as Sekoia's, e.g.
    /// `demisto/content:.../SekoiaXDR_query_events_status.json`).
    fn to_json(&self, identity: &str) -> Value {
        let status = self.status();
        json!({
            "uuid": self.uuid,
            "status": status,
            "total": if status == 2 { self.results.len() } else { 0 },
            "term": self.request["term"],
            "term_lang": "es-query-string",
            "filters": [],
            "created_by": identity,
            "created_by_type": "apikey",
            "created_at": self.created_at,
            "earliest_time": self.request["earliest_time"],
            "latest_time": self.request["latest_time"],
            "max_last_events": self.request.get("max_last_events").cloned().unwrap_or(Value::Null),
            "results_ttl": 1800,
            "expired": false,
            "community_uuids": [],
        })
    }
}

impl Events {
    pub fn set(&mut self, short_id: &str, events: Vec<Value>) {
        self.by_short_id.insert(short_id.to_string(), events);
    }

    pub fn script(&mut self, short_id: &str, job: EventsJob) {
        self.scripts
            .entry(short_id.to_string())
            .or_default()
            .push_back(job);
    }

    pub fn started(&self) -> usize {
        self.started
    }

    pub fn requests(&self) -> Vec<Value> {
        self.requests.clone()
    }
}

/// The short id in `alert_short_ids:"<short id>"`, if the term has one.
fn short_id_in(term: &str) -> Option<&str> {
    let start = term.find("alert_short_ids:\"")? + "alert_short_ids:\"".len();
    let rest = &term[start..];
    rest.find('"').map(|end| &rest[..end])
}

pub(super) async fn start_job(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&inner, &headers) {
        return unauthorized();
    }
    let request: Option<Value> = serde_json::from_slice(&body).ok();
    let mut events = inner.events.lock().unwrap();
    events.requests.push(
        request
            .clone()
            .unwrap_or_else(|| Value::String(String::from_utf8_lossy(&body).into_owned())),
    );
    let Some(request) = request.filter(Value::is_object) else {
        return message(StatusCode::BAD_REQUEST, "the body must be a JSON object");
    };
    let short_id = request["term"]
        .as_str()
        .and_then(short_id_in)
        .map(str::to_string);
    let script = short_id
        .as_deref()
        .and_then(|s| events.scripts.get_mut(s))
        .and_then(VecDeque::pop_front);
    if let Some(EventsJob::Status(status)) = script {
        drop(events);
        return scripted(&inner, status);
    }
    for field in ["term", "earliest_time", "latest_time"] {
        if !request[field].is_string() {
            return message(
                StatusCode::BAD_REQUEST,
                &format!("{field}: a string is required"),
            );
        }
    }
    let max = match &request["max_last_events"] {
        Value::Null => None,
        v => match v.as_u64() {
            Some(n) => Some(n as usize),
            None => {
                return message(
                    StatusCode::BAD_REQUEST,
                    "max_last_events: a positive integer is required",
                );
            }
        },
    };
    let mut results = short_id
        .as_deref()
        .and_then(|s| events.by_short_id.get(s))
        .cloned()
        .unwrap_or_default();
    if let Some(max) = max {
        results.truncate(max);
    }
    let job = Job {
        uuid: uuid::Uuid::new_v4().to_string(),
        request,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        started: Instant::now(),
        ends: match script {
            Some(EventsJob::Fail(s)) => Ending::Fail(s),
            Some(EventsJob::Slow(d)) => Ending::Slow(d),
            _ => Ending::Done,
        },
        looks: 0,
        results,
    };
    let mut answer = job.to_json(&inner.identity);
    // Just started: nothing is known yet, whatever the job turns into.
    answer["status"] = json!(0);
    answer["total"] = json!(0);
    events.started += 1;
    events.jobs.insert(job.uuid.clone(), job);
    Json(answer).into_response()
}

pub(super) async fn job_state(
    State(inner): State<Arc<Inner>>,
    Path(job): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&inner, &headers) {
        return unauthorized();
    }
    let mut events = inner.events.lock().unwrap();
    match events.jobs.get_mut(&job) {
        Some(j) => {
            j.looks += 1;
            Json(j.to_json(&inner.identity)).into_response()
        }
        None => message(StatusCode::NOT_FOUND, "Search job not found"),
    }
}

pub(super) async fn job_events(
    State(inner): State<Arc<Inner>>,
    Path(job): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !authorized(&inner, &headers) {
        return unauthorized();
    }
    let number = |key: &str, default: usize| match q.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| format!("{key}: an integer is required")),
    };
    let (limit, offset) = match (number("limit", MAX_PAGE), number("offset", 0)) {
        (Ok(l), Ok(o)) => (l, o),
        (Err(m), _) | (_, Err(m)) => return message(StatusCode::BAD_REQUEST, &m),
    };
    if limit > MAX_PAGE {
        return message(
            StatusCode::BAD_REQUEST,
            &format!("limit: must be at most {MAX_PAGE}"),
        );
    }
    let events = inner.events.lock().unwrap();
    let Some(j) = events.jobs.get(&job) else {
        return message(StatusCode::NOT_FOUND, "Search job not found");
    };
    if j.status() != 2 {
        return message(
            StatusCode::BAD_REQUEST,
            &format!("the search job has no results (status {})", j.status()),
        );
    }
    let items: Vec<Value> = j.results.iter().skip(offset).take(limit).cloned().collect();
    let total = j.results.len();
    drop(events);
    inner.events_pages.fetch_add(1, Ordering::SeqCst);
    Json(json!({"items": items, "total": total})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_short_id_is_read_from_the_term() {
        assert_eq!(
            short_id_in(r#"alert_short_ids:"ALq7Rt2mXw9K""#),
            Some("ALq7Rt2mXw9K")
        );
        assert_eq!(
            short_id_in(r#"x AND alert_short_ids:"AL1" OR y"#),
            Some("AL1")
        );
        assert_eq!(short_id_in(r#"alert_short_ids:"AL1"#), None);
        assert_eq!(short_id_in("source.ip:1.2.3.4"), None);
    }
}
