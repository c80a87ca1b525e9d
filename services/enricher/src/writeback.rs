//! The write-back stage: applies `WriteBack`s (after a creation was delivered, or a tool's
//! notification) to the Sekoia alert, through the same call path as Get Alert (a gate of its
//! own, retries, 429, a rejected key, dead letters with a reason, replay).
//!
//! For one write-back, in order, each step recorded once done (`….wb.<id>` in the delivery
//! records), so a redelivery or a replay redoes only what is left:
//! 1. the comment: an echo marker for the destination first, then
//!    `POST /v1/sic/alerts/{uuid}/comments {"content", "author"}`;
//! 2. the status: Get Alert (an alert already in that status gets no PATCH), the allowed
//!    transitions (`GET …/workflow`), the one leading to the status by name (Acknowledge →
//!    Acknowledged, Validate → Ongoing, Reject → Rejected, Close → Closed, or the transition
//!    bearing a tenant status's own name; none: dead-lettered `no_transition` naming the
//!    allowed ones), an echo marker, then `PATCH …/workflow {"action_uuid"}`.
//!
//! The echo markers hold the status or comment and the API key's identity (`GET /v1/me`):
//! the forwarder does not send the resulting `alert:updated` / `alert-comment:created` back to
//! the destination the write-back is for. They are written before the change, so the
//! notification of the change cannot arrive before them.

use std::sync::OnceLock;

use alertsync_gate::Gate;
use alertsync_nats::async_nats::jetstream::kv;
use alertsync_nats::keys;
use alertsync_proto::{DeadLetterClass, Message as _, Stage, canonical_uuid, v1};
use alertsync_sekoia::SekoiaClient;
use alertsync_telemetry::Metrics;
use alertsync_worker::{CallPolicy, CallSite, Delivery, Handler, Outcome, gated_call};
use serde_json::{Value, json};

/// NAK delay when a record cannot be read or written (NATS trouble).
const RECORD_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// The transition that leads to each of Sekoia's default statuses.
const DEFAULT_TRANSITIONS: [(&str, &str); 4] = [
    ("Acknowledged", "Acknowledge"),
    ("Ongoing", "Validate"),
    ("Rejected", "Reject"),
    ("Closed", "Close"),
];

/// Applies write-backs.
pub struct WriteBackHandler {
    sekoia: SekoiaClient,
    gate: Gate,
    policy: CallPolicy,
    records: kv::Store,
    metrics: Metrics,
    identity: OnceLock<String>,
}

/// The steps of a write-back already done.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Done {
    #[serde(default)]
    comment: bool,
    #[serde(default)]
    status: bool,
}

#[derive(serde::Deserialize, Default)]
struct StatusHead {
    #[serde(default)]
    status: Option<Value>,
}

impl WriteBackHandler {
    /// A handler calling `sekoia` behind `gate`, keeping its steps in `records` (the delivery
    /// records bucket).
    pub fn new(
        sekoia: SekoiaClient,
        gate: Gate,
        policy: CallPolicy,
        records: kv::Store,
        metrics: Metrics,
    ) -> Self {
        Self {
            sekoia,
            gate,
            policy,
            records,
            metrics,
            identity: OnceLock::new(),
        }
    }

    fn site<'a>(&'a self, what: &'a str) -> CallSite<'a> {
        CallSite {
            gate: &self.gate,
            policy: &self.policy,
            stage: Stage::WriteBack,
            destination: None,
            metrics: &self.metrics,
            what,
        }
    }

    /// The API key's identity (its uuid, from `GET /v1/me`), asked once.
    async fn identity(&self, d: &Delivery, uuid: &str) -> Result<String, Outcome> {
        if let Some(id) = self.identity.get() {
            return Ok(id.clone());
        }
        let me = gated_call(self.site("reading the key's identity"), d, uuid, || {
            self.sekoia.me()
        })
        .await?;
        let id = me
            .get("uuid")
            .or_else(|| me.get("id"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(self.identity.get_or_init(|| id).clone())
    }

    async fn done(&self, key: &str) -> Result<Done, Outcome> {
        match self.records.get(key).await {
            Ok(Some(v)) => Ok(serde_json::from_slice(&v).unwrap_or_default()),
            Ok(None) => Ok(Done::default()),
            Err(e) => Err(self.retry("cannot read the write-back's record", &e.to_string())),
        }
    }

    async fn put(&self, key: &str, value: Value) -> Result<(), Outcome> {
        self.records
            .put(key, value.to_string().into())
            .await
            .map(|_| ())
            .map_err(|e| self.retry("cannot write a write-back record", &e.to_string()))
    }

    fn retry(&self, what: &str, error: &str) -> Outcome {
        tracing::warn!(error, "{what}; will retry");
        self.metrics.retry(Stage::WriteBack, None);
        Outcome::Retry {
            after: RECORD_RETRY,
        }
    }

    async fn comment(
        &self,
        d: &Delivery,
        wb: &v1::WriteBack,
        identity: &str,
    ) -> Result<(), Outcome> {
        let uuid = wb.alert_uuid.as_str();
        let marker = keys::echo_comment(&wb.destination, uuid, &wb.comment);
        self.put(&marker, json!({"identity": identity})).await?;
        let author = if wb.author.is_empty() {
            "alertsync"
        } else {
            wb.author.as_str()
        };
        gated_call(self.site("adding a comment"), d, uuid, || {
            self.sekoia.post_comment(uuid, &wb.comment, author)
        })
        .await
        .map(|_| ())
    }

    async fn status(
        &self,
        d: &Delivery,
        wb: &v1::WriteBack,
        identity: &str,
    ) -> Result<(), Outcome> {
        let uuid = wb.alert_uuid.as_str();
        let target = wb.status.as_str();
        let (_, head) = gated_call(self.site("reading the alert's status"), d, uuid, || {
            self.sekoia.get_alert::<StatusHead>(uuid)
        })
        .await?;
        let current = head
            .status
            .as_ref()
            .and_then(|s| s.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if current.eq_ignore_ascii_case(target) {
            tracing::debug!(alert.uuid = %uuid, status = target, "already in that status");
            return Ok(());
        }
        let actions = gated_call(self.site("reading the workflow"), d, uuid, || {
            self.sekoia.get_workflow(uuid)
        })
        .await?;
        let wanted = DEFAULT_TRANSITIONS
            .iter()
            .find(|(status, _)| status.eq_ignore_ascii_case(target))
            .map(|(_, transition)| *transition);
        let action = actions.iter().find(|a| {
            wanted.is_some_and(|w| a.name.eq_ignore_ascii_case(w))
                || a.name.eq_ignore_ascii_case(target)
        });
        let Some(action) = action else {
            let allowed: Vec<&str> = actions.iter().map(|a| a.name.as_str()).collect();
            return Err(Outcome::dead_letter(
                DeadLetterClass::NoTransition,
                format!(
                    "no transition leads the alert from {current:?} to {target:?}; allowed: {}",
                    if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    }
                ),
                uuid,
            ));
        };
        let marker = keys::echo_status(&wb.destination, uuid);
        self.put(&marker, json!({"identity": identity, "status": target}))
            .await?;
        gated_call(self.site("changing the alert's status"), d, uuid, || {
            self.sekoia.patch_workflow(uuid, &action.id, None)
        })
        .await
    }
}

impl WriteBackHandler {
    /// The steps of `wb` not yet done, each recorded in `key` once done.
    async fn apply(
        &self,
        d: &Delivery,
        wb: &v1::WriteBack,
        uuid: &str,
        key: &str,
    ) -> Result<(), Outcome> {
        let mut done = self.done(key).await?;
        let identity = self.identity(d, uuid).await?;
        if !wb.comment.is_empty() && !done.comment {
            self.comment(d, wb, &identity).await?;
            done.comment = true;
            self.step_done(key, done, &wb.destination, "comment")
                .await?;
        }
        if !wb.status.is_empty() && !done.status {
            self.status(d, wb, &identity).await?;
            done.status = true;
            self.step_done(key, done, &wb.destination, "status").await?;
        }
        Ok(())
    }

    /// Records the steps `done` so far and counts the step `what` just made.
    async fn step_done(
        &self,
        key: &str,
        done: Done,
        destination: &str,
        what: &str,
    ) -> Result<(), Outcome> {
        self.put(key, json!(done)).await?;
        self.metrics.writeback(destination, what);
        Ok(())
    }
}

impl Handler for WriteBackHandler {
    async fn handle(&self, d: &Delivery) -> Outcome {
        let wb = match v1::WriteBack::decode(d.payload.as_ref()) {
            Ok(wb) => wb,
            Err(e) => {
                let reason = format!("poison: undecodable WriteBack: {e}");
                return Outcome::dead_letter(DeadLetterClass::Poison, reason, "");
            }
        };
        let valid_destination = alertsync_nats::subjects::is_plain_token(&wb.destination);
        let Some(uuid) = canonical_uuid(&wb.alert_uuid).filter(|_| valid_destination) else {
            let reason = "poison: WriteBack without a valid alert uuid or destination".to_string();
            return Outcome::dead_letter(DeadLetterClass::Poison, reason, "");
        };
        let span = tracing::Span::current();
        span.record("alert.uuid", uuid.as_str());
        span.record("alertsync.destination", wb.destination.as_str());
        let key = keys::writeback(
            &wb.destination,
            &uuid,
            &alertsync_nats::keys::digest(&wb.id),
        );
        if let Err(outcome) = self.apply(d, &wb, &uuid, &key).await {
            return outcome;
        }
        tracing::debug!(alert.uuid = %uuid, destination = %wb.destination, "written back");
        Outcome::Ack
    }
}
