//! Protobuf messages of the alertsync pipeline (package `alertsync.v1`), generated at build time
//! from `proto/alertsync/v1/messages.proto` by prost.
//!
//! - [`v1::AlertNotification`]: ingest → enricher: an alert created, updated or commented
//!   ([`v1::EventKind`]).
//! - [`v1::EnrichedAlert`]: enricher → forwarder, carries the raw Get Alert JSON.
//! - [`v1::DeadLetter`]: any stage → the dead-letter stream.
//!
//! Helpers for timestamps live in [`time`]; [`canonical_uuid`] is the one uuid check.
//! [`protocol`] holds the rest of what stages agree on: headers, [`Stage`] names and
//! [`DeadLetterClass`]es.

pub mod protocol;

pub use protocol::{DeadLetterClass, Stage};

/// Generated types of package `alertsync.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/alertsync.v1.rs"));
}

impl v1::EventKind {
    /// Short, bounded name of the kind, for metric labels, spans, records and templates
    /// (`event.kind`): `created`, `updated`, `comment`.
    pub fn label(self) -> &'static str {
        match self {
            v1::EventKind::Created => "created",
            v1::EventKind::Updated => "updated",
            v1::EventKind::Comment => "comment",
        }
    }
}

pub use prost::Message;
pub use prost_types::Timestamp;

/// Conversions between `std::time::SystemTime` and protobuf timestamps.
pub mod time {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// The current time as a protobuf timestamp.
    pub fn now() -> prost_types::Timestamp {
        from_system(SystemTime::now())
    }

    /// A `SystemTime` as a protobuf timestamp (times before 1970 clamp to the epoch).
    pub fn from_system(t: SystemTime) -> prost_types::Timestamp {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        prost_types::Timestamp {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }
    }

    /// A protobuf timestamp as a `SystemTime` (negative values clamp to the epoch).
    pub fn to_system(t: &prost_types::Timestamp) -> SystemTime {
        let secs = t.seconds.max(0) as u64;
        let nanos = t.nanos.clamp(0, 999_999_999) as u32;
        UNIX_EPOCH + Duration::new(secs, nanos)
    }
}

/// `s` as a canonical lower-case hyphenated uuid, or `None`. Alert and community uuids are
/// checked with this wherever they enter (webhook, decoded messages), because they end up in
/// subjects and URL paths.
pub fn canonical_uuid(s: &str) -> Option<String> {
    // Only the 36-character hyphenated form: what Sekoia sends.
    if s.len() != 36 {
        return None;
    }
    uuid::Uuid::try_parse(s)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

#[cfg(test)]
mod tests {
    use super::v1::*;
    use prost::Message;

    #[test]
    fn enriched_alert_round_trips_with_the_raw_json_untouched() {
        let raw = br#"{"uuid":"x","rule":{"name":"a \"quoted\" name"}}"#.to_vec();
        let msg = EnrichedAlert {
            created: Some(AlertNotification {
                alert_uuid: "3b1f6c2e-8d4a-4f0b-9e37-5a2c7d91e604".into(),
                source: Source::Webhook as i32,
                ..Default::default()
            }),
            alert_json: raw.clone().into(),
            fetched_at: Some(super::time::now()),
            ..Default::default()
        };
        let back = EnrichedAlert::decode(msg.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.alert_json, raw);
        assert_eq!(back.created.unwrap().source(), Source::Webhook);
    }
}
