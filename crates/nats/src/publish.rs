//! Publishing to JetStream with a deterministic message id, waiting for the acknowledgement.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use bytes::Bytes;

/// A publish that did not get a positive acknowledgement; the message may not be stored.
#[derive(Debug, thiserror::Error)]
#[error("publish to {subject} was not acknowledged: {reason}")]
pub struct PublishError {
    /// Subject published to.
    pub subject: String,
    /// Why.
    pub reason: String,
    /// True when the failure was a timeout or a lost connection (worth retrying later).
    pub transient: bool,
}

/// What JetStream said about a stored message.
#[derive(Debug, Clone, Copy)]
pub struct Stored {
    /// Stream sequence (0 when [`publish_first`] found the subject taken).
    pub sequence: u64,
    /// True when nothing new was stored: the message id was seen within the duplicate window,
    /// or ([`publish_first`]) the subject already held a message.
    pub duplicate: bool,
}

/// Publishes `payload` with `Nats-Msg-Id: msg_id` (plus `headers`) and awaits the ack.
pub async fn publish_acked(
    js: &jetstream::Context,
    subject: String,
    msg_id: &str,
    headers: Option<HeaderMap>,
    payload: Bytes,
) -> Result<Stored, PublishError> {
    publish(js, subject, msg_id, headers, payload, false).await
}

/// Like [`publish_acked`], but the server stores the message only if its subject holds none
/// yet (`Nats-Expected-Last-Subject-Sequence: 0`), and answers a duplicate otherwise. With one
/// subject per key, the stream itself is then the record of what was published, for as long as
/// it keeps messages, checked and written in one atomic step.
pub async fn publish_first(
    js: &jetstream::Context,
    subject: String,
    msg_id: &str,
    headers: Option<HeaderMap>,
    payload: Bytes,
) -> Result<Stored, PublishError> {
    publish(js, subject, msg_id, headers, payload, true).await
}

async fn publish(
    js: &jetstream::Context,
    subject: String,
    msg_id: &str,
    headers: Option<HeaderMap>,
    payload: Bytes,
    first_on_subject: bool,
) -> Result<Stored, PublishError> {
    let mut msg = PublishMessage::build().payload(payload).message_id(msg_id);
    if first_on_subject {
        msg = msg.expected_last_subject_sequence(0);
    }
    if let Some(h) = headers {
        for (name, values) in h.iter() {
            for v in values {
                msg = msg.header(name.clone(), v.clone());
            }
        }
    }
    let fail = |reason: String, transient: bool| PublishError {
        subject: subject.clone(),
        reason,
        transient,
    };
    let ack = js
        .send_publish(subject.clone(), msg)
        .await
        .map_err(|e| fail(e.to_string(), is_transient(e.kind())))?
        .await;
    match ack {
        Ok(ack) => Ok(Stored {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        }),
        Err(e) if first_on_subject && e.kind() == PublishErrorKind::WrongLastSequence => {
            Ok(Stored {
                sequence: 0,
                duplicate: true,
            })
        }
        Err(e) => Err(fail(e.to_string(), is_transient(e.kind()))),
    }
}

fn is_transient(kind: PublishErrorKind) -> bool {
    matches!(
        kind,
        PublishErrorKind::TimedOut
            | PublishErrorKind::BrokenPipe
            | PublishErrorKind::StreamNotFound
            | PublishErrorKind::MaxAckPending
    )
}
