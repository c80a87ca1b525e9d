//! An alert's later events at one destination: updates (`on_update`) and comments
//! (`on_comment`).
//!
//! What is guaranteed, per alert and destination:
//! - **after the creation**: a later event is sent only once the creation's record says it was
//!   delivered here. Without a record, it waits (delayed NAKs; these waits do not count as
//!   attempts, and are kept in the records so they still do not after a restart) while the alert's creation is in the created stream, for up to
//!   `forwarder.creation_wait`, then is dead-lettered (replayable). A creation this
//!   destination filtered out or dead-lettered, or one never seen (older than the deployment:
//!   not in the created stream), means the event is not sent, counted
//!   (`alertsync_lifecycle_skipped_total`) with that reason;
//! - **no older or identical state**: an update whose alert state (by `updated_at`, then a
//!   digest of the alert) is older than, or the same as, the last one sent here is skipped
//!   ([`crate::state`]); `on_update.changes` narrows "new" to a status or urgency change;
//! - **once**: a sent update moves the record's state (compare-and-swap), a sent comment gets
//!   its own record; both before the ack. Only a request in flight at a crash may repeat, with
//!   the same `Idempotency-Key` (`<alert>:<destination>:updated:<updated_at>-<digest>` or
//!   `<alert>:<destination>:comment:<comment uuid>`).
//!
//! A creation and the later events of one alert are handled one at a time in a replica
//! ([`Lifecycle::lock`]), so they never race on the record there; an alert's updates are also
//! sent one at a time across replicas ([`crate::turn`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use alertsync_gate::Hold;
use alertsync_nats::Subjects;
use alertsync_nats::async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use alertsync_proto::{DeadLetterClass, Stage, v1};
use alertsync_template::Context;
use alertsync_worker::{Attempted, CallSite, Delivery, Outcome, gated_call};
use serde_json::{Value, json};

use crate::handler::{ForwardHandler, read_alert};
use crate::records::{AlertRecord, DeliveryRecords};

/// Stripes of the per-alert lock.
const STRIPES: usize = 256;
/// Longest delay between two looks at the creation's record.
const MAX_WAIT_STEP: Duration = Duration::from_secs(30);
/// Waits remembered (per message); beyond, the oldest are forgotten.
const WAITS_CAPACITY: usize = 50_000;
/// NAK delay of an update while another replica sends one of its alert's updates.
const TURN_WAIT: Duration = Duration::from_millis(500);
/// NAK delay when a record cannot be read (NATS trouble).
const RECORD_UNKNOWN_DELAY: Duration = Duration::from_secs(2);

/// What the forwarder needs to handle later events.
pub struct Lifecycle {
    js: alertsync_nats::async_nats::jetstream::Context,
    created: Stream,
    subjects: Subjects,
    creation_wait: Duration,
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// Deliveries of a message spent waiting for its creation, by stream sequence: they are
    /// not attempts of its own request.
    waits: Mutex<HashMap<u64, u32>>,
}

impl Lifecycle {
    /// Later events of the alerts of the created stream `created`, waiting at most
    /// `creation_wait` for a creation.
    pub fn new(
        js: alertsync_nats::async_nats::jetstream::Context,
        created: Stream,
        subjects: Subjects,
        creation_wait: Duration,
    ) -> Self {
        Self {
            js,
            created,
            subjects,
            creation_wait,
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            waits: Mutex::new(HashMap::new()),
        }
    }

    /// Stores what is to be written back to the Sekoia alert for this destination, once per
    /// subject (a creation delivered again stores nothing new).
    pub async fn write_back(&self, wb: v1::WriteBack) -> Result<(), String> {
        use alertsync_proto::Message as _;
        let subject = self
            .subjects
            .writeback(&wb.destination, &wb.alert_uuid, &wb.id);
        let msg_id = format!("writeback:{}:{}:{}", wb.destination, wb.alert_uuid, wb.id);
        alertsync_nats::publish::publish_first(
            &self.js,
            subject,
            &msg_id,
            None,
            wb.encode_to_vec().into(),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    /// The turn of `alert_uuid` in this replica.
    pub async fn lock(&self, alert_uuid: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let h = alert_uuid
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        self.stripes[h % STRIPES].lock().await
    }

    /// The deliveries of `d` spent waiting for its creation: remembered here, else (a message
    /// delivered before, perhaps to another replica or before a restart) as kept in the
    /// records.
    async fn waited(&self, records: &DeliveryRecords, d: &Delivery, uuid: &str) -> u32 {
        if let Some(n) = self.remembered(d) {
            return n;
        }
        if d.delivered <= 1 {
            return 0;
        }
        let n = records.waits(uuid, d.stream_sequence).await;
        self.remember(d, n);
        n
    }

    fn remembered(&self, d: &Delivery) -> Option<u32> {
        let waits = self.waits.lock().unwrap_or_else(|p| p.into_inner());
        waits.get(&d.stream_sequence).copied()
    }

    fn remember(&self, d: &Delivery, n: u32) {
        let mut waits = self.waits.lock().unwrap_or_else(|p| p.into_inner());
        if waits.len() >= WAITS_CAPACITY {
            // Forgotten here, they are still in the records.
            waits.clear();
        }
        waits.insert(d.stream_sequence, n);
    }

    /// One more delivery of `d` spent waiting: remembered, and kept in the records.
    async fn add_wait(&self, records: &DeliveryRecords, d: &Delivery, uuid: &str) -> u32 {
        let n = self.waited(records, d, uuid).await + 1;
        self.remember(d, n);
        records.keep_waits(uuid, d.stream_sequence, n).await;
        n
    }

    /// `d` is done: its waits are of no more use.
    async fn forget(&self, records: &DeliveryRecords, d: &Delivery, uuid: &str) {
        let had = self
            .waits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&d.stream_sequence);
        // Only a message that waited has waits kept (most never wait: no purge for them).
        if had.is_some_and(|n| n > 0) {
            records.forget_waits(uuid, d.stream_sequence).await;
        }
    }

    /// Whether the created stream holds the alert's creation (`Err`: cannot tell).
    async fn creation_seen(&self, alert_uuid: &str) -> Result<bool, String> {
        match self
            .created
            .get_last_raw_message_by_subject(&self.subjects.created(alert_uuid))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// A message's attempts at its own request: its deliveries less those spent waiting.
struct OwnAttempts<'a> {
    d: &'a Delivery,
    waited: u32,
}

impl Hold for OwnAttempts<'_> {
    async fn in_progress(&self) {
        self.d.in_progress().await
    }
}

impl Attempted for OwnAttempts<'_> {
    fn attempt(&self) -> u32 {
        self.d.delivered.saturating_sub(self.waited).max(1)
    }
}

/// Handles an update or a comment (see the module docs).
pub(crate) async fn handle(
    h: &ForwardHandler,
    d: &Delivery,
    enriched: &v1::EnrichedAlert,
    uuid: &str,
    kind: v1::EventKind,
) -> Outcome {
    let name = h.dest.name.as_str();
    let label = kind.label();
    let template = match kind {
        v1::EventKind::Updated => h.dest.on_update.as_ref(),
        v1::EventKind::Comment => h.dest.on_comment.as_ref(),
        v1::EventKind::Created => None,
    };
    let (Some(template), Some(lifecycle)) = (template, h.lifecycle.as_ref()) else {
        // No request for this kind here: acked and counted, like a filtered alert.
        h.metrics.filtered(Stage::Forward, Some(name), "kind");
        return Outcome::Ack;
    };
    let skipped = |reason: &'static str| {
        tracing::debug!(alert.uuid = %uuid, destination = %name, kind = label, reason, "not sent");
        h.metrics.lifecycle_skipped(name, label, reason);
        Outcome::Ack
    };
    let retry = |what: &str, e: String| {
        tracing::warn!(alert.uuid = %uuid, destination = %name, error = %e, "{what}; will retry");
        h.metrics.retry(Stage::Forward, Some(name));
        Outcome::Retry {
            after: RECORD_UNKNOWN_DELAY,
        }
    };
    let Some(notification) = enriched.created.as_ref() else {
        return Outcome::dead_letter(
            DeadLetterClass::Poison,
            "poison: no notification".into(),
            uuid,
        );
    };
    let comment = match (kind, notification.comment.as_ref()) {
        (v1::EventKind::Comment, None) => {
            let reason = "poison: a comment event without its comment".to_string();
            return Outcome::dead_letter(DeadLetterClass::Poison, reason, uuid);
        }
        (_, c) => c,
    };
    let _in_replica = lifecycle.lock(uuid).await;
    // Updates of one alert are sent one at a time across replicas too: never two states at
    // once, so the tool cannot end on the older one.
    let turn = if kind == v1::EventKind::Updated {
        match h.records.take_turn(uuid).await {
            Ok(Some(turn)) => Some(turn),
            Ok(None) => return wait_for_turn(h, lifecycle, d, uuid, label).await,
            Err(e) => return retry("cannot take the turn at the alert's updates", e),
        }
    } else {
        None
    };
    let outcome = async {
    if let Some(c) = comment {
        match h.records.comment_sent(uuid, &c.uuid).await {
            Ok(false) => {}
            Ok(true) => {
                h.metrics.delivery(name, label, "already_delivered");
                return Outcome::Ack;
            }
            Err(e) => return retry("cannot read the comment record", e.to_string()),
        }
    }
    let (record, revision) = match h.records.entry(uuid).await {
        Ok(Some(found)) => found,
        Ok(None) => return wait_for_creation(h, lifecycle, d, uuid, label).await,
        Err(e) => return retry("cannot read the delivery record", e.to_string()),
    };
    match record.outcome.as_deref() {
        Some(AlertRecord::FILTERED) => return skipped("creation_filtered"),
        Some(AlertRecord::DEAD_LETTERED) => return skipped("creation_dead_lettered"),
        _ => {}
    }
    let alert = match read_alert(enriched, uuid) {
        Ok(alert) => alert,
        Err(outcome) => return outcome,
    };
    let state = match kind {
        v1::EventKind::Updated => {
            let Some(state) = std::str::from_utf8(&enriched.alert_json)
                .ok()
                .and_then(crate::state::of_alert)
            else {
                let reason = "poison: the alert body is not a JSON object".to_string();
                return Outcome::dead_letter(DeadLetterClass::Poison, reason, uuid);
            };
            if let Some(reason) =
                crate::state::skip_reason(&state, record.state.as_ref(), &h.dest.changes)
            {
                return skipped(reason);
            }
            if echoed_update(h, uuid, &enriched.alert_json).await {
                // This destination asked for this status: the state is now what it has.
                h.records.record_state(uuid, &state, revision).await;
                return skipped("echo");
            }
            Some(state)
        }
        _ => None,
    };
    if let Some(c) = comment
        && c.created_by_type == "apikey"
        && h.records
            .echoes_comment(uuid, &c.content, &c.created_by)
            .await
    {
        // Written by a write-back for this destination: it has this comment already.
        return skipped("echo");
    }
    let key = idempotency_key(uuid, name, kind, state.as_ref(), comment);
    let ctx = context(&alert, enriched, notification, comment, &record);
    let request = match alertsync_telemetry::detail_span!("render", alertsync.destination = %name, alert.uuid = %uuid)
        .in_scope(|| h.dest.render_later(template, &ctx, &key))
    {
        Ok(r) => r,
        Err(reason) => return Outcome::dead_letter(DeadLetterClass::Render, reason, uuid),
    };
    let attempts = OwnAttempts {
        d,
        waited: lifecycle.waited(&h.records, d, uuid).await,
    };
    let site = CallSite {
        gate: &h.gate,
        policy: &h.policy,
        stage: Stage::Forward,
        destination: Some(name),
        metrics: &h.metrics,
        what: label,
    };
    let attempt = attempts.attempt();
    let sent = gated_call(site, &attempts, uuid, || {
        h.attempt(&request, uuid, attempt, label, false)
    })
    .await;
    match sent {
        Ok(answer) => {
            match (&state, comment) {
                (Some(s), _) => h.records.record_state(uuid, s, revision).await,
                (None, Some(c)) => {
                    h.records
                        .record_comment(uuid, &c.uuid, answer.status, d.delivered)
                        .await
                }
                (None, None) => {}
            }
            lifecycle.forget(&h.records, d, uuid).await;
            tracing::debug!(alert.uuid = %uuid, destination = %name, kind = label, status = answer.status, "delivered");
            h.metrics.delivery(name, label, "delivered");
            Outcome::Ack
        }
        Err(outcome) => outcome,
    }
    }
    .await;
    if let Some(turn) = turn {
        turn.release().await;
    }
    outcome
}

/// Whether the alert's last change was made by our API key for this destination (a
/// write-back of its own status): `updated_by_type` is `apikey`, and the status and key match
/// what the write-back recorded before making the change.
async fn echoed_update(h: &ForwardHandler, uuid: &str, alert_json: &[u8]) -> bool {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Who {
        updated_by: Option<String>,
        updated_by_type: Option<String>,
        status: Option<Value>,
    }
    let who: Who = serde_json::from_slice(alert_json).unwrap_or_default();
    let (Some(by), Some("apikey")) = (who.updated_by.as_deref(), who.updated_by_type.as_deref())
    else {
        return false;
    };
    let Some(status) = who
        .status
        .as_ref()
        .and_then(|s| s.get("name"))
        .and_then(Value::as_str)
    else {
        return false;
    };
    h.records.echoes_status(uuid, status, by).await
}

/// Another replica is sending one of this alert's updates: wait for it to finish (a wait,
/// not an attempt).
async fn wait_for_turn(
    h: &ForwardHandler,
    lifecycle: &Lifecycle,
    d: &Delivery,
    uuid: &str,
    label: &'static str,
) -> Outcome {
    let name = h.dest.name.as_str();
    lifecycle.add_wait(&h.records, d, uuid).await;
    tracing::debug!(alert.uuid = %uuid, destination = %name, kind = label, "another replica is sending an update of this alert; waiting");
    h.metrics.delivery(name, label, "waiting_for_turn");
    Outcome::Retry { after: TURN_WAIT }
}

/// No record of the creation yet: wait while it can still come, else say why not.
async fn wait_for_creation(
    h: &ForwardHandler,
    lifecycle: &Lifecycle,
    d: &Delivery,
    uuid: &str,
    label: &'static str,
) -> Outcome {
    let name = h.dest.name.as_str();
    match lifecycle.creation_seen(uuid).await {
        Ok(true) => {}
        Ok(false) => {
            // Created before this deployment (or expired from the stream): the destination
            // never got it, and never will.
            h.metrics
                .lifecycle_skipped(name, label, "creation_not_seen");
            return Outcome::Ack;
        }
        Err(e) => {
            h.metrics.retry(Stage::Forward, Some(name));
            tracing::warn!(alert.uuid = %uuid, destination = %name, error = %e, "cannot look for the creation; will retry");
            return Outcome::Retry {
                after: RECORD_UNKNOWN_DELAY,
            };
        }
    }
    let waited_for = SystemTime::now()
        .duration_since(d.published)
        .unwrap_or_default();
    if waited_for > lifecycle.creation_wait {
        lifecycle.forget(&h.records, d, uuid).await;
        return Outcome::dead_letter(
            DeadLetterClass::Exhausted,
            format!(
                "the alert's creation was not delivered to this destination within \
                 forwarder.creation_wait ({}s); replay this entry once it is",
                lifecycle.creation_wait.as_secs()
            ),
            uuid,
        );
    }
    let n = lifecycle.add_wait(&h.records, d, uuid).await;
    let after = (Duration::from_millis(500) * 2u32.saturating_pow(n.min(8))).min(MAX_WAIT_STEP);
    tracing::debug!(alert.uuid = %uuid, destination = %name, kind = label, ?after, "waiting for the creation to be delivered");
    h.metrics.delivery(name, label, "waiting_for_creation");
    Outcome::Retry { after }
}

/// The `Idempotency-Key` of a later request: it names the alert, the destination, the kind
/// and the state (`<updated_at>-<digest>`) or the comment, so a repeat carries the key of the
/// request it repeats. Also what `alertsync render --event` prints.
pub fn idempotency_key(
    uuid: &str,
    destination: &str,
    kind: v1::EventKind,
    state: Option<&crate::records::AlertState>,
    comment: Option<&v1::Comment>,
) -> String {
    match (state, comment) {
        (Some(s), _) => format!("{uuid}:{destination}:updated:{}-{}", s.updated_at, s.digest),
        (None, Some(c)) => format!("{uuid}:{destination}:comment:{}", c.uuid),
        (None, None) => format!("{uuid}:{destination}:{}", kind.label()),
    }
}

/// The context of a later request: the alert as it is now (`alert`, `node.1`), and `event`
/// (`kind`, `updated`), `comment`, `remote` (`id`), and `events` / `events_error` when the
/// enricher searched them. Also what `alertsync render --event` renders with.
pub fn later_context(
    alert: &alertsync_template::RawAlert,
    kind: v1::EventKind,
    updated: &Value,
    comment: Option<&v1::Comment>,
    remote_id: Option<&str>,
    events: Option<(&Value, &str)>,
) -> Context {
    let event = json!({"kind": kind.label(), "updated": updated});
    let mut ctx = Context::from_raw(alert)
        .with_json("event", &event)
        .with_json("remote", &json!({"id": remote_id}));
    if let Some(c) = comment {
        ctx = ctx.with_json(
            "comment",
            &json!({
                "uuid": c.uuid,
                "content": c.content,
                "author": c.author,
                "created_by": c.created_by,
                "created_by_type": c.created_by_type,
                "date": c.date,
            }),
        );
    }
    if let Some((events, error)) = events {
        ctx = ctx.with_json("events", events);
        if !error.is_empty() {
            ctx = ctx.with_json("events_error", &json!(error));
        }
    }
    ctx
}

/// `ctx` with the events the enricher found (`events`, and `events_error` when the search
/// failed).
pub fn with_events(ctx: Context, enriched: &v1::EnrichedAlert) -> Context {
    let events = serde_json::from_slice::<Value>(&enriched.events_json).unwrap_or(json!([]));
    let ctx = ctx.with_json("events", &events);
    if enriched.events_error.is_empty() {
        ctx
    } else {
        ctx.with_json("events_error", &json!(enriched.events_error))
    }
}

/// [`later_context`] of a stored event.
fn context(
    alert: &alertsync_template::RawAlert,
    enriched: &v1::EnrichedAlert,
    notification: &v1::AlertNotification,
    comment: Option<&v1::Comment>,
    record: &AlertRecord,
) -> Context {
    let updated = serde_json::from_str::<Value>(&notification.updated_json).unwrap_or(json!({}));
    let events = enriched
        .events_enabled
        .then(|| serde_json::from_slice::<Value>(&enriched.events_json).unwrap_or(json!([])));
    later_context(
        alert,
        notification.kind(),
        &updated,
        comment,
        record.remote_id.as_deref(),
        events.as_ref().map(|e| (e, enriched.events_error.as_str())),
    )
}
