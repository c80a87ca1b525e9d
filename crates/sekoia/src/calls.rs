//! The Sekoia calls besides Get Alert and the alert list: the key's identity, an alert's
//! comments (read and write), its workflow (read and act), and the events search job. Each
//! answers a [`CallOutcome`] (the call path's terms) through [`CallOutcome::of_status`], with
//! reasons redacted of the key and Sekoia's `{"message"}` quoted.
//!
//! Alert uuids go into URL paths: anything but a canonical uuid is refused as a permanent
//! failure before any request, never put in a path. Request bodies are built with
//! `serde_json`, so whatever text they carry stays data.

use std::time::{Duration, Instant};

use alertsync_http::{CallOutcome, Class, describe_error};
use alertsync_proto::canonical_uuid;
use serde_json::{Value, json};

use crate::{MAX_ALERT_BYTES, SekoiaClient};

/// Which time the alert list is filtered and sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListBy {
    /// `created_at`: new alerts.
    Created,
    /// `updated_at`: changed alerts.
    Updated,
}

impl ListBy {
    /// The field name.
    pub fn field(self) -> &'static str {
        match self {
            ListBy::Created => "created_at",
            ListBy::Updated => "updated_at",
        }
    }
}

/// An events search: Sekoia's "Get Events" job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsQuery {
    /// The search, e.g. `alert_short_ids:"ALxxxx"`.
    pub term: String,
    /// Start: relative (`-1d`) or an ISO-8601 time.
    pub earliest: String,
    /// End: `now`, relative, or an ISO-8601 time.
    pub latest: String,
    /// Most events returned.
    pub limit: usize,
}

/// One action of an alert's workflow (a transition allowed from its current status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowAction {
    /// The action's uuid: what [`SekoiaClient::patch_workflow`] takes.
    pub id: String,
    /// Its name (`Acknowledge`, `Validate`, `Reject`, `Close`, or a tenant's own).
    pub name: String,
    /// What it does (empty when Sekoia gives none).
    pub description: String,
}

/// Largest page of events Sekoia serves.
const EVENTS_PAGE: usize = 100;
/// Longest comment author Sekoia takes, in characters.
const MAX_AUTHOR: usize = 32;
/// First wait between two looks at a running job; it doubles up to [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(200);
const POLL_MAX: Duration = Duration::from_secs(1);
/// First wait before a step of the search is tried again; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// What a call reads of a 2xx answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// JSON, or the call failed (a garbled answer to a read is worth another try).
    Json,
    /// Whatever comes: JSON if it is, else `null`. For writes: a 2xx means the write was made,
    /// and calling it failed would have it made twice.
    Anything,
}

impl SekoiaClient {
    /// One call: `method` on `url` with the JSON `body`, answering what a 2xx carries.
    async fn call(
        &self,
        what: &str,
        method: reqwest::Method,
        url: url::Url,
        body: Option<&Value>,
        expect: Expect,
    ) -> CallOutcome<Value> {
        let mut req = self
            .http
            .request(method, url)
            .header(reqwest::header::AUTHORIZATION, self.auth.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        let request = match req.build() {
            Ok(r) => r,
            Err(e) => {
                return CallOutcome::transport(
                    self.redact(format!("{what} {}", describe_error(&e))),
                );
            }
        };
        let answer = match self.send(what, request, MAX_ALERT_BYTES).await {
            Ok(a) => a,
            Err(reason) => return CallOutcome::transport(reason),
        };
        let (status, wait, class) = (answer.status, answer.retry_after, answer.class);
        if class == Class::Success && expect == Expect::Anything {
            let parsed = answer
                .body
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            return CallOutcome::Done(parsed.unwrap_or(Value::Null));
        }
        let body = match self.body_of(what, answer) {
            Ok(b) => b,
            Err(unread) => return unread.outcome(status, wait),
        };
        if class == Class::Success {
            return match serde_json::from_slice::<Value>(&body) {
                Ok(v) => CallOutcome::Done(v),
                Err(_) => garbled(what, status, "without JSON"),
            };
        }
        let reason = format!("{what} answered {status}{}", self.api_message(&body));
        CallOutcome::of_status(status, wait, reason)
    }

    /// `{base}/v1/sic/alerts/<uuid>/<tail...>`, or a permanent failure when `uuid` is not a
    /// uuid (it would go into the path).
    fn alert_url<T>(&self, uuid: &str, tail: &[&str]) -> Result<url::Url, CallOutcome<T>> {
        let Some(uuid) = canonical_uuid(uuid) else {
            return Err(CallOutcome::Permanent {
                status: None,
                reason: "the alert uuid is not a uuid".into(),
            });
        };
        let mut url = self.alerts.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push(&uuid);
            for t in tail {
                path.push(t);
            }
        }
        Ok(url)
    }

    /// The key's identity (`GET /v1/me`), e.g. `{"uuid": ..., "type": "apikey", ...}`: what
    /// Sekoia writes as `created_by` of what the key writes, to tell our own writes when they
    /// come back as notifications.
    pub async fn me(&self) -> CallOutcome<Value> {
        self.call(
            "reading the key's identity",
            reqwest::Method::GET,
            self.url("v1/me"),
            None,
            Expect::Json,
        )
        .await
    }

    /// The comments of an alert (`GET /v1/sic/alerts/{uuid}/comments`, answered as
    /// `{"items": [...], "total": n}` or a bare array), each as Sekoia gives it: `{uuid,
    /// content, author, date, created_by, created_by_type, unseen}`.
    pub async fn list_comments(&self, alert_uuid: &str) -> CallOutcome<Vec<Value>> {
        let what = "listing comments";
        let url = match self.alert_url(alert_uuid, &["comments"]) {
            Ok(u) => u,
            Err(refused) => return refused,
        };
        match self
            .call(what, reqwest::Method::GET, url, None, Expect::Json)
            .await
        {
            CallOutcome::Done(v) => match items(v) {
                Some(comments) => CallOutcome::Done(comments),
                None => garbled(what, 200, "without a list of comments"),
            },
            other => other.map(|_| Vec::new()),
        }
    }

    /// Comments alert `alert_uuid` (`POST /v1/sic/alerts/{uuid}/comments` `{"content",
    /// "author"}`) and answers the comment Sekoia made (`null` if its answer was not JSON).
    /// `author` is cut to Sekoia's 32 characters.
    pub async fn post_comment(
        &self,
        alert_uuid: &str,
        content: &str,
        author: &str,
    ) -> CallOutcome<Value> {
        let url = match self.alert_url(alert_uuid, &["comments"]) {
            Ok(u) => u,
            Err(refused) => return refused,
        };
        let author: String = author.chars().take(MAX_AUTHOR).collect();
        let body = json!({"content": content, "author": author});
        self.call(
            "posting a comment",
            reqwest::Method::POST,
            url,
            Some(&body),
            Expect::Anything,
        )
        .await
    }

    /// The workflow actions allowed from the alert's current status (`GET
    /// /v1/sic/alerts/{uuid}/workflow` → `{"actions": [{"id", "name", "description"}]}`).
    /// Actions without a string id and name are left out.
    pub async fn get_workflow(&self, alert_uuid: &str) -> CallOutcome<Vec<WorkflowAction>> {
        let what = "reading the workflow";
        let url = match self.alert_url(alert_uuid, &["workflow"]) {
            Ok(u) => u,
            Err(refused) => return refused,
        };
        match self
            .call(what, reqwest::Method::GET, url, None, Expect::Json)
            .await
        {
            CallOutcome::Done(v) => match v.get("actions").and_then(Value::as_array) {
                Some(actions) => CallOutcome::Done(actions.iter().filter_map(action).collect()),
                None => garbled(what, 200, "without actions"),
            },
            other => other.map(|_| Vec::new()),
        }
    }

    /// Applies workflow action `action_uuid` to the alert (`PATCH
    /// /v1/sic/alerts/{uuid}/workflow` `{"action_uuid", "comment"}`), with `comment` attached.
    /// An action not allowed from the alert's status is answered 400: permanent.
    pub async fn patch_workflow(
        &self,
        alert_uuid: &str,
        action_uuid: &str,
        comment: Option<&str>,
    ) -> CallOutcome<()> {
        let url = match self.alert_url(alert_uuid, &["workflow"]) {
            Ok(u) => u,
            Err(refused) => return refused,
        };
        let Some(action) = canonical_uuid(action_uuid) else {
            return CallOutcome::Permanent {
                status: None,
                reason: "the workflow action is not a uuid".into(),
            };
        };
        let body = json!({"action_uuid": action, "comment": comment});
        self.call(
            "acting on the workflow",
            reqwest::Method::PATCH,
            url,
            Some(&body),
            Expect::Anything,
        )
        .await
        .map(|_| ())
    }

    /// Runs the events search `query` within `deadline`, for the whole of it: start the job,
    /// wait for it (status 0 and 1 wait, 2 is done, anything else failed), then page its
    /// events (up to 100 a page) until `query.limit` are read or there are no more. A step
    /// answered 429, 5xx or not at all is tried again within the deadline (after its
    /// `Retry-After`, or a short backoff); 401/403 and other 4xx end the search at once.
    pub async fn search_events(
        &self,
        query: &EventsQuery,
        deadline: Duration,
    ) -> CallOutcome<Vec<Value>> {
        if query.limit == 0 {
            return CallOutcome::Done(Vec::new());
        }
        let until = Instant::now() + deadline;
        let jobs = self.url("v1/sic/conf/events/search/jobs");
        let body = json!({
            "term": query.term,
            "earliest_time": query.earliest,
            "latest_time": query.latest,
            "visible": false,
            "max_last_events": query.limit,
        });
        let what = "starting the events search";
        let started = match self
            .step(until, deadline, || {
                self.call(
                    what,
                    reqwest::Method::POST,
                    jobs.clone(),
                    Some(&body),
                    Expect::Json,
                )
            })
            .await
        {
            CallOutcome::Done(v) => v,
            other => return other.map(|_| Vec::new()),
        };
        // The job's uuid goes into the next paths.
        let Some(job) = started
            .get("uuid")
            .and_then(Value::as_str)
            .and_then(canonical_uuid)
        else {
            return CallOutcome::Permanent {
                status: Some(200),
                reason: format!("{what} answered without a job uuid"),
            };
        };
        let mut job_url = jobs;
        if let Ok(mut p) = job_url.path_segments_mut() {
            p.pop_if_empty().push(&job);
        }
        let what = "reading the events search";
        let mut pause = POLL_FIRST;
        loop {
            let state = match self
                .step(until, deadline, || {
                    self.call(
                        what,
                        reqwest::Method::GET,
                        job_url.clone(),
                        None,
                        Expect::Json,
                    )
                })
                .await
            {
                CallOutcome::Done(v) => v,
                other => return other.map(|_| Vec::new()),
            };
            match state.get("status").and_then(Value::as_i64) {
                Some(0 | 1) => {}
                Some(2) => break,
                Some(s) => {
                    return CallOutcome::Transient {
                        status: None,
                        retry_after: None,
                        reason: format!("the events search job {job} ended with status {s}"),
                    };
                }
                None => return garbled(what, 200, "without a job status"),
            }
            if Instant::now() + pause >= until {
                return too_slow(deadline);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
        }
        let what = "reading the events";
        let mut events = Vec::new();
        while events.len() < query.limit {
            let limit = (query.limit - events.len()).min(EVENTS_PAGE);
            let mut page_url = job_url.clone();
            if let Ok(mut p) = page_url.path_segments_mut() {
                p.push("events");
            }
            page_url
                .query_pairs_mut()
                .append_pair("limit", &limit.to_string())
                .append_pair("offset", &events.len().to_string());
            let page = match self
                .step(until, deadline, || {
                    self.call(
                        what,
                        reqwest::Method::GET,
                        page_url.clone(),
                        None,
                        Expect::Json,
                    )
                })
                .await
            {
                CallOutcome::Done(v) => v,
                other => return other.map(|_| Vec::new()),
            };
            let total = page.get("total").and_then(Value::as_u64);
            let Some(items) = items(page) else {
                return garbled(what, 200, "without items");
            };
            let got = items.len();
            // A server sending more than asked does not get more kept.
            events.extend(items.into_iter().take(limit));
            if got < limit || total.is_some_and(|t| events.len() as u64 >= t) {
                break;
            }
        }
        CallOutcome::Done(events)
    }

    /// One step of the events search, tried again on 429 and transient failures while the
    /// deadline allows; the last outcome when it does not.
    async fn step<F, Fut>(
        &self,
        until: Instant,
        deadline: Duration,
        mut call: F,
    ) -> CallOutcome<Value>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = CallOutcome<Value>>,
    {
        let mut pause = RETRY_FIRST;
        loop {
            let remaining = until.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return too_slow(deadline);
            }
            let outcome = match tokio::time::timeout(remaining, call()).await {
                Ok(o) => o,
                Err(_) => return too_slow(deadline),
            };
            let wait = match &outcome {
                CallOutcome::Throttled { retry_after, .. }
                | CallOutcome::Transient { retry_after, .. } => retry_after.unwrap_or(pause),
                _ => return outcome,
            };
            // Waiting past the deadline only to give up: say now what the last try came to
            // (with the server's Retry-After, for the caller to honour).
            if Instant::now() + wait >= until {
                return outcome;
            }
            tokio::time::sleep(wait).await;
            pause = (pause * 2).min(RETRY_MAX);
        }
    }
}

fn too_slow<T>(deadline: Duration) -> CallOutcome<T> {
    CallOutcome::Transient {
        status: None,
        retry_after: None,
        reason: format!("the events search did not finish within {deadline:?}"),
    }
}

/// A 2xx answer the call cannot use: worth another try (the server answered, oddly).
fn garbled<T>(what: &str, status: u16, how: &str) -> CallOutcome<T> {
    CallOutcome::Transient {
        status: Some(status),
        retry_after: None,
        reason: format!("{what} answered {status} {how}"),
    }
}

/// `items` of a list answer (`{"items": [...]}`), or the answer itself when it is an array.
fn items(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(a) => Some(a),
        Value::Object(mut o) => match o.remove("items") {
            Some(Value::Array(a)) => Some(a),
            _ => None,
        },
        _ => None,
    }
}

/// One workflow action, if it has a string id and name.
fn action(v: &Value) -> Option<WorkflowAction> {
    Some(WorkflowAction {
        id: v.get("id")?.as_str()?.to_string(),
        name: v.get("name")?.as_str()?.to_string(),
        description: v
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_answers_are_read_as_an_object_with_items_or_a_bare_array() {
        assert_eq!(
            items(json!({"items": [1, 2], "total": 2})),
            Some(vec![json!(1), json!(2)])
        );
        assert_eq!(items(json!([3])), Some(vec![json!(3)]));
        assert_eq!(items(json!({"total": 0})), None);
        assert_eq!(items(json!({"items": {}})), None);
        assert_eq!(items(json!("x")), None);
    }

    #[test]
    fn workflow_actions_need_an_id_and_a_name() {
        assert_eq!(
            action(&json!({"id": "a", "name": "Close", "description": null})),
            Some(WorkflowAction {
                id: "a".into(),
                name: "Close".into(),
                description: String::new()
            })
        );
        assert_eq!(action(&json!({"id": 1, "name": "Close"})), None);
        assert_eq!(action(&json!({"name": "Close"})), None);
    }
}
