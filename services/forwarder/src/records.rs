//! Delivery records: what makes a JetStream redelivery (or a DLQ replay) of an alert that was
//! already delivered harmless.
//!
//! After a 2xx and before the ack, the forwarder writes `<destination>.<alert uuid>` into the
//! KV bucket `<PREFIX>_DELIVERED` (kept `forwarder.delivery_record_max_age`), and it skips an
//! alert whose record exists. The record is read only when the alert may have been delivered
//! before: not for the first delivery of an `EnrichedAlert` that the enricher marked as its
//! alert's only one (`FIRST_ENRICHMENT_HEADER`), where no earlier delivery can exist and the
//! read was a third of the median latency at 1000 alerts/s (BENCHMARKS.md, step 16). The only window left is between the 2xx and the record (a crash,
//! or NATS unreachable right then); the `Idempotency-Key` header covers it for receivers that
//! honour it. A delivery whose record could not be written (NATS away) is remembered in memory
//! instead, so that it still stops a redelivery to the same process, and its record is written
//! when that redelivery comes. Only those: remembering every delivery cost about 175 bytes
//! each, which over 100 000 deliveries made the forwarder's memory grow by 17 MiB per
//! destination.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use alertsync_nats::async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

/// Unrecorded deliveries remembered in memory per destination (about 175 bytes each).
const RECENT_CAPACITY: usize = 100_000;
/// Attempts to write a record before giving up (the delivery itself already happened).
const RECORD_ATTEMPTS: u32 = 3;
/// Pause between those attempts.
const RECORD_RETRY: Duration = Duration::from_millis(500);

/// The delivery record of one alert could not be read: whether it was delivered is unknown.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the delivery record {key}: {reason}")]
pub struct RecordError {
    /// The key.
    pub key: String,
    /// Why.
    pub reason: String,
}

#[derive(Default)]
struct Recent {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Recent {
    fn insert(&mut self, key: String) {
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
            if self.order.len() > RECENT_CAPACITY
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }
}

/// The delivery records of one destination.
pub struct DeliveryRecords {
    store: kv::Store,
    destination: String,
    recent: Mutex<Recent>,
}

impl DeliveryRecords {
    /// Records of `destination` in `store`.
    pub fn new(store: kv::Store, destination: &str) -> Self {
        Self {
            store,
            destination: destination.to_string(),
            recent: Mutex::new(Recent::default()),
        }
    }

    /// The KV key of `alert_uuid` for this destination (uuid and destination name are both
    /// valid key tokens: the config and the decoder checked them).
    pub fn key(&self, alert_uuid: &str) -> String {
        alertsync_nats::keys::delivery(&self.destination, alert_uuid)
    }

    /// Keeps which alert the tool's id `remote_id` stands for (the sync endpoint looks it up).
    /// Best effort: without it, the tool's notifications about this alert are refused (403).
    pub async fn index_remote(&self, remote_id: &str, alert_uuid: &str) {
        let key = alertsync_nats::keys::remote(&self.destination, remote_id);
        if let Err(e) = self.store.put(&key, alert_uuid.to_string().into()).await {
            tracing::warn!(%key, error = %e, "cannot keep the remote id's alert");
        }
    }

    /// Whether a write-back for this destination set `status` on the alert, as the API key
    /// `identity` (then the change is not sent back here).
    pub async fn echoes_status(&self, alert_uuid: &str, status: &str, identity: &str) -> bool {
        let key = alertsync_nats::keys::echo_status(&self.destination, alert_uuid);
        self.echo_matches(&key, Some(status), identity).await
    }

    /// Whether a write-back for this destination added a comment with `content`, as `identity`.
    pub async fn echoes_comment(&self, alert_uuid: &str, content: &str, identity: &str) -> bool {
        let key = alertsync_nats::keys::echo_comment(&self.destination, alert_uuid, content);
        self.echo_matches(&key, None, identity).await
    }

    async fn echo_matches(&self, key: &str, status: Option<&str>, identity: &str) -> bool {
        let Ok(Some(v)) = self.store.get(key).await else {
            return false;
        };
        let Ok(marker) = serde_json::from_slice::<serde_json::Value>(&v) else {
            return false;
        };
        let same_status = status.is_none_or(|s| {
            marker["status"]
                .as_str()
                .is_some_and(|m| m.eq_ignore_ascii_case(s))
        });
        same_status && marker["identity"].as_str() == Some(identity)
    }

    /// Whether `alert_uuid` was already delivered to this destination. `never_delivered`:
    /// the caller knows no earlier delivery can exist, so NATS is not asked.
    pub async fn is_delivered(
        &self,
        alert_uuid: &str,
        never_delivered: bool,
    ) -> Result<bool, RecordError> {
        let key = self.key(alert_uuid);
        let remembered = self
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set
            .contains(&key);
        if remembered {
            // Delivered by this process; its record may not have reached NATS then (it was
            // unreachable): write it now, so that another replica skips the alert too.
            if let Ok(None) = self.store.get(&key).await {
                let _ = self.store.put(&key, value(0, 0).into()).await;
            }
            return Ok(true);
        }
        if never_delivered {
            return Ok(false);
        }
        match self.store.get(&key).await {
            // A creation filtered out or dead-lettered here is not delivered: a replay of it
            // is sent.
            Ok(v) => Ok(v.is_some_and(|v| AlertRecord::parse(&v).is_delivered())),
            Err(e) => Err(RecordError {
                key,
                reason: e.to_string(),
            }),
        }
    }

    /// The record of `alert_uuid` and its revision, for a destination that follows
    /// lifecycles.
    pub async fn entry(&self, alert_uuid: &str) -> Result<Option<(AlertRecord, u64)>, RecordError> {
        let key = self.key(alert_uuid);
        match self.store.entry(&key).await {
            Ok(Some(e)) if e.operation == kv::Operation::Put => {
                Ok(Some((AlertRecord::parse(&e.value), e.revision)))
            }
            Ok(_) => Ok(None),
            Err(e) => Err(RecordError {
                key,
                reason: e.to_string(),
            }),
        }
    }

    /// Records how the creation of `alert_uuid` ended, with its remote id and the state
    /// sent (a destination that follows lifecycles). Like [`DeliveryRecords::record`], a
    /// delivery whose record cannot be written is remembered in memory.
    pub async fn record_full(&self, alert_uuid: &str, record: &AlertRecord) -> bool {
        let key = self.key(alert_uuid);
        let value = record.to_bytes();
        for n in 1..=RECORD_ATTEMPTS {
            match self.store.put(&key, value.clone().into()).await {
                Ok(_) => return true,
                Err(e) if n < RECORD_ATTEMPTS => {
                    tracing::debug!(%key, error = %e, "writing the delivery record failed; retrying");
                    tokio::time::sleep(RECORD_RETRY).await;
                }
                Err(e) => {
                    tracing::warn!(%key, error = %e, "cannot write the delivery record; a redelivery to another replica may send this alert again (with the same Idempotency-Key)");
                }
            }
        }
        if record.is_delivered() {
            self.recent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key);
        }
        false
    }

    /// Records that the creation of `alert_uuid` was not delivered here (`filtered`,
    /// `dead_lettered`), unless a record exists: later events then know not to wait for it.
    /// Best effort: without it they wait `forwarder.creation_wait`, then are dead-lettered.
    pub async fn mark_not_delivered(&self, alert_uuid: &str, outcome: &str) {
        let key = self.key(alert_uuid);
        let record = AlertRecord {
            outcome: Some(outcome.to_string()),
            ..Default::default()
        };
        if let Err(e) = self.store.create(&key, record.to_bytes().into()).await
            && e.kind() != kv::CreateErrorKind::AlreadyExists
        {
            tracing::warn!(%key, error = %e, "cannot record how the creation ended");
        }
    }

    /// Moves the state last sent for `alert_uuid` to `state`, unless a newer one was recorded
    /// meanwhile (compare-and-swap on `revision`, re-read on conflict).
    pub async fn record_state(&self, alert_uuid: &str, state: &AlertState, mut revision: u64) {
        let key = self.key(alert_uuid);
        for _ in 0..RECORD_ATTEMPTS * 2 {
            let current = match self.store.entry(&key).await {
                Ok(Some(e)) if e.revision == revision || revision == 0 => {
                    AlertRecord::parse(&e.value)
                }
                Ok(Some(e)) => {
                    revision = e.revision;
                    AlertRecord::parse(&e.value)
                }
                Ok(None) => AlertRecord::default(),
                Err(e) => {
                    tracing::debug!(%key, error = %e, "reading the record failed; retrying");
                    tokio::time::sleep(RECORD_RETRY).await;
                    continue;
                }
            };
            if current
                .state
                .as_ref()
                .is_some_and(|old| old.updated_at > state.updated_at)
            {
                return;
            }
            let updated = AlertRecord {
                state: Some(state.clone()),
                ..current
            };
            match self
                .store
                .update(&key, updated.to_bytes().into(), revision)
                .await
            {
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!(%key, error = %e, "the record changed meanwhile; merging");
                    revision = 0;
                }
            }
        }
        tracing::warn!(%key, "cannot record the state sent; an identical update may be sent again");
    }

    /// The deliveries of the later event at stream sequence `sequence` spent waiting for the
    /// creation, as last kept (0: none, or NATS cannot tell: then they count as attempts).
    pub async fn waits(&self, alert_uuid: &str, sequence: u64) -> u32 {
        let key = alertsync_nats::keys::waits(&self.destination, alert_uuid, sequence);
        match self.store.get(&key).await {
            Ok(Some(v)) => std::str::from_utf8(&v)
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
            _ => 0,
        }
    }

    /// Keeps `n` as the waits of the later event at `sequence`, so that another replica (or
    /// this one restarted) does not count them as attempts. Best effort.
    pub async fn keep_waits(&self, alert_uuid: &str, sequence: u64, n: u32) {
        let key = alertsync_nats::keys::waits(&self.destination, alert_uuid, sequence);
        if let Err(e) = self.store.put(&key, n.to_string().into()).await {
            tracing::debug!(%key, error = %e, "cannot keep the waits; they may count as attempts");
        }
    }

    /// Drops the waits of the later event at `sequence` (it is done). Best effort: the bucket's
    /// age limit removes what is left.
    pub async fn forget_waits(&self, alert_uuid: &str, sequence: u64) {
        let key = alertsync_nats::keys::waits(&self.destination, alert_uuid, sequence);
        if let Err(e) = self.store.purge(&key).await {
            tracing::debug!(%key, error = %e, "cannot drop the waits");
        }
    }

    /// This replica's turn at the alert's updates here (see [`crate::turn`]): `Ok(None)`
    /// while another replica holds it.
    pub async fn take_turn(&self, alert_uuid: &str) -> Result<Option<crate::turn::Turn>, String> {
        let key = alertsync_nats::keys::turn(&self.destination, alert_uuid);
        crate::turn::take(&self.store, key).await
    }

    /// The key of a comment's record.
    fn comment_key(&self, alert_uuid: &str, comment_uuid: &str) -> String {
        alertsync_nats::keys::comment(&self.destination, alert_uuid, comment_uuid)
    }

    /// Whether the comment was already delivered here.
    pub async fn comment_sent(
        &self,
        alert_uuid: &str,
        comment_uuid: &str,
    ) -> Result<bool, RecordError> {
        let key = self.comment_key(alert_uuid, comment_uuid);
        match self.store.get(&key).await {
            Ok(v) => Ok(v.is_some()),
            Err(e) => Err(RecordError {
                key,
                reason: e.to_string(),
            }),
        }
    }

    /// Records that the comment was delivered (answered `status`).
    pub async fn record_comment(
        &self,
        alert_uuid: &str,
        comment_uuid: &str,
        status: u16,
        attempt: u32,
    ) {
        let key = self.comment_key(alert_uuid, comment_uuid);
        for n in 1..=RECORD_ATTEMPTS {
            match self.store.put(&key, value(status, attempt).into()).await {
                Ok(_) => return,
                Err(e) if n < RECORD_ATTEMPTS => {
                    tracing::debug!(%key, error = %e, "writing the comment record failed; retrying");
                    tokio::time::sleep(RECORD_RETRY).await;
                }
                Err(e) => {
                    tracing::warn!(%key, error = %e, "cannot write the comment record; a redelivery may send it again (with the same Idempotency-Key)");
                }
            }
        }
    }

    /// Records that `alert_uuid` was delivered (answered `status` on attempt `attempt`).
    /// Returns whether the record reached NATS; when it did not, the delivery is remembered in
    /// memory instead.
    pub async fn record(&self, alert_uuid: &str, status: u16, attempt: u32) -> bool {
        let key = self.key(alert_uuid);
        let value = value(status, attempt);
        for n in 1..=RECORD_ATTEMPTS {
            match self.store.put(&key, value.clone().into()).await {
                Ok(_) => return true,
                Err(e) if n < RECORD_ATTEMPTS => {
                    tracing::debug!(%key, error = %e, "writing the delivery record failed; retrying");
                    tokio::time::sleep(RECORD_RETRY).await;
                }
                Err(e) => {
                    tracing::warn!(%key, error = %e, "cannot write the delivery record; a redelivery to another replica may send this alert again (with the same Idempotency-Key)");
                }
            }
        }
        // Before the ack goes: the redelivery that a lost ack would bring is then skipped.
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key);
        false
    }
}

/// What a destination that follows lifecycles keeps per alert: how the creation ended, the
/// tool's id for the alert, and the alert state it was last sent. Records written before
/// lifecycles existed (`delivered_at`, `status`, `attempt` only) read as delivered.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AlertRecord {
    /// `delivered` (also when absent), `filtered`, `dead_lettered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// When the creation was delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
    /// Its 2xx status.
    #[serde(default)]
    pub status: u16,
    /// On which attempt.
    #[serde(default)]
    pub attempt: u32,
    /// The tool's id for the alert (`remote_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
    /// The alert state last sent (by the creation or an update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<AlertState>,
}

/// An alert state, as sent to a destination.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AlertState {
    /// The alert's `updated_at` (epoch seconds).
    pub updated_at: i64,
    /// A digest of the alert's content, besides its comments and history.
    pub digest: String,
    /// `status.uuid`, else `status.name`.
    #[serde(default)]
    pub status: Option<String>,
    /// `urgency.current_value`.
    #[serde(default)]
    pub urgency: Option<i64>,
}

impl AlertRecord {
    /// Outcome of a delivered creation.
    pub const DELIVERED: &str = "delivered";
    /// Outcome of a creation this destination's filter rejected.
    pub const FILTERED: &str = "filtered";
    /// Outcome of a dead-lettered creation.
    pub const DEAD_LETTERED: &str = "dead_lettered";

    /// Reads a record; an unreadable one counts as delivered (it can only have been written
    /// after a delivery by an older version, by hand-written JSON).
    pub fn parse(bytes: &[u8]) -> AlertRecord {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    /// Whether the creation was delivered.
    pub fn is_delivered(&self) -> bool {
        self.outcome.as_deref().is_none_or(|o| o == Self::DELIVERED)
    }

    /// A delivered creation's record.
    pub fn delivered(
        status: u16,
        attempt: u32,
        remote_id: Option<String>,
        state: Option<AlertState>,
    ) -> Self {
        AlertRecord {
            outcome: Some(Self::DELIVERED.into()),
            delivered_at: Some(
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ),
            status,
            attempt,
            remote_id,
            state,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A record: when (this write), the status and the attempt (0 when written late, from memory).
/// Written by hand, as every field is a number or a timestamp: one per delivery.
fn value(status: u16, attempt: u32) -> String {
    format!(
        r#"{{"delivered_at":"{}","status":{status},"attempt":{attempt}}}"#,
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_deliveries_are_bounded_oldest_first() {
        let mut r = Recent::default();
        for i in 0..RECENT_CAPACITY + 10 {
            r.insert(format!("k{i}"));
        }
        assert_eq!(r.set.len(), RECENT_CAPACITY);
        assert!(!r.set.contains("k0"));
        assert!(r.set.contains(&format!("k{}", RECENT_CAPACITY + 9)));
        r.insert(format!("k{}", RECENT_CAPACITY + 9));
        assert_eq!(r.order.len(), RECENT_CAPACITY);
    }

    #[test]
    fn a_record_is_a_json_object_with_when_what_and_which_attempt() {
        let v: serde_json::Value = serde_json::from_str(&value(201, 3)).unwrap();
        assert_eq!(v["status"], 201);
        assert_eq!(v["attempt"], 3);
        let at = v["delivered_at"].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(at).unwrap();
    }
}
