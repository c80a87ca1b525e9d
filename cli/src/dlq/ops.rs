//! The dead-letter stream as an operator works with it (`alertsync dlq`): list entries, fetch
//! one by sequence, replay, purge.
//!
//! Replay republishes the entry's original payload to the stage that failed, as a new message
//! (so it starts over with fresh attempts), and deletes the entry once JetStream acknowledged
//! the republish:
//! - an `enrich` entry goes back to the created subject it came from;
//! - a `forward` entry goes to `<prefix>.replay.forward.<destination>`, which only that
//!   destination's consumer reads, so no other destination gets it a second time.
//!
//! The republish carries `Nats-Msg-Id: replay:<dlq sequence>`: replaying the same entry twice
//! within the duplicate window (a crash between the publish and the delete) stores it once.

use std::time::{Duration, SystemTime};

use alertsync_proto::{Message as _, v1::DeadLetter};
use async_nats::HeaderMap;
use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, pull},
    stream::{LastRawMessageErrorKind, Stream},
};
use futures::StreamExt;

use alertsync_nats::Subjects;
use alertsync_nats::publish::publish_acked;
use alertsync_proto::Stage;
use alertsync_proto::protocol::REPLAY_OF_HEADER;

/// Why a DLQ operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// The stream does not exist on this server.
    #[error(
        "the dead-letter stream {stream} does not exist: no alertsync service has run against \
         this server with nats.prefix = {prefix:?}"
    )]
    NoStream {
        /// The stream name.
        stream: String,
        /// The configured prefix.
        prefix: String,
    },
    /// No entry has this sequence (never existed, replayed, or purged).
    #[error(
        "no dead-letter entry with sequence {sequence} in {stream} (it may have been replayed \
         or purged; `alertsync dlq list` shows the entries)"
    )]
    NotFound {
        /// The sequence asked for.
        sequence: u64,
        /// The stream.
        stream: String,
    },
    /// The entry is not a `DeadLetter`.
    #[error("dead-letter entry {sequence} cannot be decoded: {reason}")]
    Undecodable {
        /// Its sequence.
        sequence: u64,
        /// Why.
        reason: String,
    },
    /// The entry cannot be replayed.
    #[error("dead-letter entry {sequence} cannot be replayed: {reason}")]
    NotReplayable {
        /// Its sequence.
        sequence: u64,
        /// Why.
        reason: String,
    },
    /// A JetStream request failed.
    #[error("{what} failed: {reason}")]
    Nats {
        /// What was attempted.
        what: String,
        /// Why.
        reason: String,
    },
}

fn nats(what: impl Into<String>, e: impl std::fmt::Display) -> DlqError {
    DlqError::Nats {
        what: what.into(),
        reason: e.to_string(),
    }
}

/// One entry of the dead-letter stream.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its sequence in the DLQ stream (what `show`, `replay` take).
    pub sequence: u64,
    /// The subject it was stored on (`<prefix>.dlq.<stage>[.<destination>]`).
    pub subject: String,
    /// When it was stored.
    pub stored_at: SystemTime,
    /// The entry.
    pub letter: DeadLetter,
}

/// An entry of the dead-letter stream that is not a `DeadLetter` (written by something else, or
/// damaged): listed as such, never replayed, never a reason to hide the others.
#[derive(Debug, Clone)]
pub struct Undecodable {
    /// Its sequence in the DLQ stream.
    pub sequence: u64,
    /// The subject it was stored on.
    pub subject: String,
    /// When it was stored.
    pub stored_at: SystemTime,
    /// Why it cannot be read.
    pub reason: String,
}

/// What [`Dlq::list`] found.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The entries, in stream order.
    pub entries: Vec<Entry>,
    /// The entries that could not be decoded, in stream order.
    pub undecodable: Vec<Undecodable>,
}

/// Where a replay went.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// The DLQ sequence that was replayed (and deleted).
    pub sequence: u64,
    /// Subject republished to.
    pub subject: String,
    /// Sequence of the republished message in its stream.
    pub new_sequence: u64,
}

/// The dead-letter stream of one deployment.
pub struct Dlq {
    js: jetstream::Context,
    subjects: Subjects,
}

impl Dlq {
    /// The DLQ of the deployment named by `subjects`.
    pub fn new(js: jetstream::Context, subjects: Subjects) -> Self {
        Self { js, subjects }
    }

    async fn stream(&self) -> Result<Stream, DlqError> {
        let name = self.subjects.dead_letter_stream();
        self.js.get_stream(&name).await.map_err(|e| {
            if let jetstream::context::GetStreamErrorKind::JetStream(j) = e.kind()
                && j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            {
                DlqError::NoStream {
                    stream: name.clone(),
                    prefix: self.subjects.prefix().to_string(),
                }
            } else {
                nats(format!("looking up stream {name}"), e)
            }
        })
    }

    /// Every entry, oldest first; only those of `destination` when given.
    pub async fn list(&self, destination: Option<&str>) -> Result<Listing, DlqError> {
        let stream = self.stream().await?;
        let filter = match destination {
            Some(d) => self.subjects.dead_letter(Stage::Forward, Some(d)),
            None => self.subjects.dead_letter_all(),
        };
        // An ephemeral, unacknowledged reader that the server forgets once we are done.
        let mut consumer = stream
            .create_consumer(pull::Config {
                filter_subject: filter,
                ack_policy: AckPolicy::None,
                deliver_policy: DeliverPolicy::All,
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|e| nats("reading the dead-letter stream", e))?;
        let mut remaining = consumer
            .info()
            .await
            .map_err(|e| nats("reading the dead-letter stream", e))?
            .num_pending;
        let mut out = Listing::default();
        while remaining > 0 {
            let mut batch = consumer
                .fetch()
                .max_messages(remaining.min(500) as usize)
                .messages()
                .await
                .map_err(|e| nats("reading the dead-letter stream", e))?;
            let mut got = 0;
            while let Some(m) = batch.next().await {
                let m = m.map_err(|e| nats("reading the dead-letter stream", e))?;
                let info = m
                    .info()
                    .map_err(|e| nats("reading the dead-letter stream", e))?;
                let sequence = info.stream_sequence;
                let stored_at = SystemTime::from(info.published);
                remaining = info.pending;
                got += 1;
                let subject = m.subject.to_string();
                match DeadLetter::decode(m.payload.as_ref()) {
                    Ok(letter) => out.entries.push(Entry {
                        sequence,
                        subject,
                        stored_at,
                        letter,
                    }),
                    Err(e) => out.undecodable.push(Undecodable {
                        sequence,
                        subject,
                        stored_at,
                        reason: e.to_string(),
                    }),
                }
            }
            if got == 0 {
                break;
            }
        }
        let name = consumer.cached_info().name.clone();
        let _ = stream.delete_consumer(&name).await;
        Ok(out)
    }

    /// The entry with `sequence`.
    pub async fn get(&self, sequence: u64) -> Result<Entry, DlqError> {
        let stream = self.stream().await?;
        let m = stream.get_raw_message(sequence).await.map_err(|e| {
            let not_found = match e.kind() {
                LastRawMessageErrorKind::NoMessageFound => true,
                LastRawMessageErrorKind::JetStream(j) => {
                    j.error_code() == jetstream::ErrorCode::NO_MESSAGE_FOUND
                }
                _ => false,
            };
            if not_found {
                DlqError::NotFound {
                    sequence,
                    stream: self.subjects.dead_letter_stream(),
                }
            } else {
                nats(format!("fetching dead-letter entry {sequence}"), e)
            }
        })?;
        Ok(Entry {
            sequence,
            subject: m.subject.to_string(),
            stored_at: SystemTime::from(m.time),
            letter: decode(sequence, &m.payload)?,
        })
    }

    /// Where replaying `entry` republishes it.
    pub fn replay_subject(&self, entry: &Entry) -> Result<String, DlqError> {
        let l = &entry.letter;
        let not = |reason: String| DlqError::NotReplayable {
            sequence: entry.sequence,
            reason,
        };
        match Stage::from_token(&l.stage) {
            Some(Stage::Enrich) => {
                // Creations, updates and comments go back to their own subjects.
                let alerts = format!("{}.alerts.", self.subjects.prefix());
                if l.original_subject.starts_with(&alerts)
                    && !l.original_subject.contains(".alerts.enriched.")
                {
                    Ok(l.original_subject.clone())
                } else {
                    Ok(self.subjects.created(""))
                }
            }
            Some(Stage::Forward) => {
                let d = &l.destination;
                let valid = !d.is_empty()
                    && d.len() <= 64
                    && d.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if valid {
                    Ok(self.subjects.replay_forward(d))
                } else {
                    Err(not(format!("invalid destination name {d:?}")))
                }
            }
            Some(Stage::WriteBack) => {
                let writeback = format!("{}.writeback.", self.subjects.prefix());
                if l.original_subject.starts_with(&writeback) {
                    Ok(l.original_subject.clone())
                } else {
                    Err(not("not a write-back subject".into()))
                }
            }
            _ => Err(not(format!("unknown stage {:?}", l.stage))),
        }
    }

    /// Republishes `entry` to the stage that failed and, once that is acknowledged, deletes it.
    pub async fn replay(&self, entry: &Entry) -> Result<Replayed, DlqError> {
        let subject = self.replay_subject(entry)?;
        let mut headers = HeaderMap::new();
        headers.insert(REPLAY_OF_HEADER, entry.sequence.to_string().as_str());
        let stored = publish_acked(
            &self.js,
            subject.clone(),
            &format!("replay:{}:{}", self.subjects.prefix(), entry.sequence),
            Some(headers),
            entry.letter.original_payload.clone().into(),
        )
        .await
        .map_err(|e| nats(format!("republishing entry {}", entry.sequence), e))?;
        let stream = self.stream().await?;
        stream
            .delete_message(entry.sequence)
            .await
            .map_err(|e| nats(format!("deleting replayed entry {}", entry.sequence), e))?;
        Ok(Replayed {
            sequence: entry.sequence,
            subject,
            new_sequence: stored.sequence,
        })
    }

    /// Removes every entry, or only those stored more than `older_than` ago. Returns how many.
    pub async fn purge(&self, older_than: Option<Duration>) -> Result<u64, DlqError> {
        let stream = self.stream().await?;
        let request = match older_than {
            None => stream.purge().await,
            Some(age) => {
                let cutoff = SystemTime::now()
                    .checked_sub(age)
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                // Entries are stored in time order: purge everything before the first one that
                // is recent enough.
                let listing = self.list(None).await?;
                let entries = listing.entries.iter().map(|e| (e.sequence, e.stored_at));
                let others = listing
                    .undecodable
                    .iter()
                    .map(|u| (u.sequence, u.stored_at));
                let first_kept = entries
                    .chain(others)
                    .filter(|(_, at)| *at >= cutoff)
                    .map(|(sequence, _)| sequence)
                    .min();
                match first_kept {
                    Some(sequence) => stream.purge().sequence(sequence).await,
                    None => stream.purge().await,
                }
            }
        };
        request
            .map(|r| r.purged)
            .map_err(|e| nats("purging the dead-letter stream", e))
    }
}

fn decode(sequence: u64, payload: &[u8]) -> Result<DeadLetter, DlqError> {
    DeadLetter::decode(payload).map_err(|e| DlqError::Undecodable {
        sequence,
        reason: e.to_string(),
    })
}
