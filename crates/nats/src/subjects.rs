//! Names of subjects, streams and consumers. Everything derives from `nats.prefix`, so several
//! deployments (and parallel tests) can share one server without seeing each other.

use alertsync_proto::Stage;

/// The names used by one deployment.
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
    stream_base: String,
}

/// Subject token used when an alert's community (or uuid) is not known or not a uuid.
pub const UNKNOWN_TOKEN: &str = "unknown";

impl Subjects {
    /// Names for `prefix` (validated by the config: letters, digits, `_`, `-`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            stream_base: prefix.to_ascii_uppercase().replace('-', "_"),
        }
    }

    /// The upper-case base of stream and bucket names (`ALERTSYNC` for `alertsync`).
    pub fn stream_base(&self) -> &str {
        &self.stream_base
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>.alerts.created.<alert uuid>`: one subject per alert, so that the created
    /// stream is itself the record of which alerts were published (see
    /// [`crate::publish::publish_first`]). Anything but a uuid maps to `unknown`.
    pub fn created(&self, alert_uuid: &str) -> String {
        format!("{}.alerts.created.{}", self.prefix, uuid_token(alert_uuid))
    }

    /// `<prefix>.alerts.updated.<alert uuid>.<event id>`: one subject per update of an alert,
    /// published only when empty (like [`Subjects::created`]), so the same update seen by
    /// several sources is stored once. `event_id` is a notification uuid or `poll-<secs>`;
    /// anything else maps to `unknown`.
    pub fn updated(&self, alert_uuid: &str, event_id: &str) -> String {
        format!(
            "{}.alerts.updated.{}.{}",
            self.prefix,
            uuid_token(alert_uuid),
            plain_token(event_id)
        )
    }

    /// `<prefix>.alerts.comment.<alert uuid>.<comment uuid>`: one subject per comment.
    pub fn comment(&self, alert_uuid: &str, comment_uuid: &str) -> String {
        format!(
            "{}.alerts.comment.{}.{}",
            self.prefix,
            uuid_token(alert_uuid),
            uuid_token(comment_uuid)
        )
    }

    /// Every update subject.
    pub fn updated_all(&self) -> String {
        format!("{}.alerts.updated.>", self.prefix)
    }

    /// Every comment subject.
    pub fn comment_all(&self) -> String {
        format!("{}.alerts.comment.>", self.prefix)
    }

    /// `<prefix>.writeback.<destination>.<alert uuid>.<id>`: one subject per write-back, so
    /// the same one (a creation delivered twice, a notification posted twice) is stored once.
    pub fn writeback(&self, destination: &str, alert_uuid: &str, id: &str) -> String {
        format!(
            "{}.writeback.{}.{}.{}",
            self.prefix,
            plain_token(destination),
            uuid_token(alert_uuid),
            plain_token(id)
        )
    }

    /// Every write-back subject.
    pub fn writeback_all(&self) -> String {
        format!("{}.writeback.>", self.prefix)
    }

    /// Stream of write-backs.
    pub fn writeback_stream(&self) -> String {
        format!("{}_WRITEBACK", self.stream_base)
    }

    /// Durable consumer of the write-back stage.
    pub fn writeback_consumer(&self) -> String {
        "writeback".to_string()
    }

    /// `<prefix>.alerts.enriched.<community>`.
    pub fn enriched(&self, community: &str) -> String {
        format!("{}.alerts.enriched.{}", self.prefix, uuid_token(community))
    }

    /// `<prefix>.dlq.<stage>[.<destination>]`.
    pub fn dead_letter(&self, stage: Stage, destination: Option<&str>) -> String {
        match destination {
            Some(d) => format!("{}.dlq.{stage}.{d}", self.prefix),
            None => format!("{}.dlq.{stage}", self.prefix),
        }
    }

    /// Every created-alert subject.
    pub fn created_all(&self) -> String {
        format!("{}.alerts.created.>", self.prefix)
    }

    /// Every enriched-alert subject.
    pub fn enriched_all(&self) -> String {
        format!("{}.alerts.enriched.>", self.prefix)
    }

    /// Every dead-letter subject.
    pub fn dead_letter_all(&self) -> String {
        format!("{}.dlq.>", self.prefix)
    }

    /// `<prefix>.replay.forward.<destination>`: an `EnrichedAlert` replayed from the DLQ for
    /// one destination only. It is stored in the enriched stream, and only that destination's
    /// consumer filters on it, so no other destination sees the replay.
    pub fn replay_forward(&self, destination: &str) -> String {
        format!("{}.replay.forward.{destination}", self.prefix)
    }

    /// Every per-destination replay subject.
    pub fn replay_forward_all(&self) -> String {
        format!("{}.replay.forward.>", self.prefix)
    }

    /// Stream of created alerts.
    pub fn created_stream(&self) -> String {
        format!("{}_ALERTS_CREATED", self.stream_base)
    }

    /// Stream of enriched alerts.
    pub fn enriched_stream(&self) -> String {
        format!("{}_ALERTS_ENRICHED", self.stream_base)
    }

    /// Stream of dead letters.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}_DLQ", self.stream_base)
    }

    /// KV bucket of delivery records (`<destination>.<alert uuid>` → when it was delivered),
    /// which lets the forwarder skip an alert it already delivered when JetStream redelivers.
    pub fn delivery_records_bucket(&self) -> String {
        format!("{}_DELIVERED", self.stream_base)
    }

    /// Durable consumer of the enricher.
    pub fn enricher_consumer(&self) -> String {
        "enricher".to_string()
    }

    /// Durable consumer of one destination: one each, so a dead destination holds back no other.
    pub fn destination_consumer(&self, destination: &str) -> String {
        format!("forward-{destination}")
    }
}

/// Whether `uuid` can be a subject token as it is (hex digits and `-`, 1 to 64 bytes).
pub fn is_uuid_token(uuid: &str) -> bool {
    !uuid.is_empty() && uuid.len() <= 64 && uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Whether `token` can be a subject token as it is (letters, digits, `-`, `_`; 1 to 64 bytes).
pub fn is_plain_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 64
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn plain_token(token: &str) -> &str {
    if is_plain_token(token) {
        token
    } else {
        UNKNOWN_TOKEN
    }
}

/// Alert and community uuids are validated by the time they get here; anything else (or
/// nothing) maps to `unknown`, so hostile input can never inject `.`, `*` or `>` into a subject.
fn uuid_token(uuid: &str) -> &str {
    if is_uuid_token(uuid) {
        uuid
    } else {
        UNKNOWN_TOKEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_prefix() {
        let s = Subjects::new("t-1");
        assert_eq!(
            s.created("3b1f6c2e-8d4a-4f0b-9e37-5a2c7d91e604"),
            "t-1.alerts.created.3b1f6c2e-8d4a-4f0b-9e37-5a2c7d91e604"
        );
        assert_eq!(
            s.enriched("d24e5c90-1a7b"),
            "t-1.alerts.enriched.d24e5c90-1a7b"
        );
        assert_eq!(s.enriched(""), "t-1.alerts.enriched.unknown");
        assert_eq!(
            s.dead_letter(Stage::Forward, Some("soar")),
            "t-1.dlq.forward.soar"
        );
        assert_eq!(s.created_stream(), "T_1_ALERTS_CREATED");
        assert_eq!(s.replay_forward("soar"), "t-1.replay.forward.soar");
        assert_eq!(s.delivery_records_bucket(), "T_1_DELIVERED");
    }

    #[test]
    fn hostile_uuids_cannot_reach_the_subject() {
        let s = Subjects::new("a");
        assert_eq!(s.created("x.>"), "a.alerts.created.unknown");
        assert_eq!(s.created("*"), "a.alerts.created.unknown");
        assert_eq!(s.enriched("ab.cd"), "a.alerts.enriched.unknown");
        assert_eq!(s.enriched(&"a".repeat(65)), "a.alerts.enriched.unknown");
        assert!(!is_uuid_token(""));
        assert_eq!(s.updated("ab-1", "x.*"), "a.alerts.updated.ab-1.unknown");
        assert_eq!(
            s.updated("ab-1", "poll-17"),
            "a.alerts.updated.ab-1.poll-17"
        );
        assert_eq!(s.comment("ab", ">"), "a.alerts.comment.ab.unknown");
    }
}
