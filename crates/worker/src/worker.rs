//! The bounded pull loop of every consuming stage.
//!
//! The loop only asks the server for as many messages as it has free permits, so nothing sits
//! in a client-side buffer: on shutdown it stops pulling, lets in-flight handlers finish and
//! returns, leaving nothing for the server to redeliver. The handler's [`Outcome`] picks the
//! acknowledgement:
//! - [`Outcome::Ack`] → ack. A plain one: the server's confirmation of a double ack would cost a
//!   round trip per message and buy nothing, because an ack that is lost (the connection
//!   dropped) is answered the same way either way: the server redelivers after the ack wait,
//!   and every stage's handler makes a redelivery harmless (message ids, delivery records).
//!   On shutdown the loop makes one request to the server after the last ack; the server
//!   reads a connection's messages in order, so its answer means it has every ack;
//! - [`Outcome::Retry`] → NAK with that delay (computed from the delivery count, so every
//!   replica computes the same);
//! - [`Outcome::DeadLetter`] → publish a `DeadLetter`, await its publish ack, then ack. If the
//!   dead-letter publish fails the message is NAKed instead: never dropped.
//!
//! A worker may have a [`Gate`]: while it is closed the loop pulls nothing (or one message
//! when a probe is due and no held message can make it), see `alertsync_gate`.
//!
//! Each [`Delivery`] says whether it can have been delivered before, by this consumer or by an
//! earlier one of the same name ([`Delivery::first_ever`]): handlers may skip a check that
//! only a repeat needs.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{
    self, AckKind,
    consumer::{PullConsumer, pull::BatchConfig},
};
use async_nats::{HeaderMap, StatusCode, Subject, Subscriber};
use bytes::Bytes;
use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use alertsync_gate::{Gate, Hold, Pull};
use alertsync_proto::DeadLetterClass;

use crate::dead_letter::DeadLetters;

/// How long one pull request waits for messages: bounds how long shutdown waits for the loop.
const PULL_EXPIRES: Duration = Duration::from_secs(2);
/// How long after a pull request's expiry the worker stops waiting for the server's answer
/// to it (the server's 408 was lost, e.g. in a reconnect), as async-nats does.
const PULL_ANSWER_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed pull (server unreachable, consumer deleted) before trying again.
const PULL_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// How often a worker reports its consumer's lag.
pub const LAG_EVERY: Duration = Duration::from_secs(5);
/// Delay of the NAK sent when a dead-letter publish failed.
const DLQ_FAILED_RETRY: Duration = Duration::from_secs(5);
/// Longest wait for more free handlers before pulling, when only a few are free.
///
/// Under load, handlers finish one at a time; pulling as soon as one is free would cost a
/// pull request (and a subscription) per message, which the benchmark showed as most of
/// nats-server's CPU. Waiting this long for a quarter of the handlers to be free makes batches
/// of several messages, and adds at most this much latency (only when all handlers are busy).
const GATHER_WAIT: Duration = Duration::from_millis(2);
/// A message stored this soon after its consumer was created may be older than the consumer
/// (the two times come from different servers' clocks in a cluster): it does not count as
/// [`Delivery::first_ever`].
pub const CREATION_MARGIN: Duration = Duration::from_secs(2);
/// After this long with no pull request at the server, the consumer's creation time is asked
/// again before the next one: a consumer deleted and created again meanwhile would hand out
/// its stream's messages anew, as first deliveries, and a pending request would have been told
/// (the server ends it), but an idle worker is not.
const RECHECK_AFTER: Duration = Duration::from_millis(50);

/// What a worker knows of the consumer it pulls from, to tell whether a message can have been
/// delivered before ([`Delivery::first_ever`]).
///
/// A durable consumer deleted and created again under the same name (an operator resetting
/// it) hands out every message of its stream anew, each as a first delivery. Those messages
/// were stored before the new consumer was created, so a message counts as never delivered
/// only when it was stored after the creation time asked of the server. That time is asked
/// again before a pull whenever the consumer may have changed: the last request ended other
/// than complete or expired (the server ends pending requests of a deleted consumer), a pull
/// failed, no request was pending for a while, or the consumer's delivery sequence went back
/// (a new consumer counts from 1).
struct Incarnation {
    consumer: PullConsumer,
    /// When the consumer was created, as last asked; `None` when that failed.
    created: Option<SystemTime>,
    /// Highest delivery sequence seen from it.
    last_sequence: u64,
    /// The consumer may have changed since `created` was asked: ask before the next pull, and
    /// count nothing as never delivered until then.
    stale: bool,
}

impl Incarnation {
    fn new(consumer: PullConsumer) -> Self {
        Self {
            consumer,
            created: None,
            last_sequence: 0,
            stale: true,
        }
    }

    async fn refresh(&mut self, worker: &str) {
        match self.consumer.info().await {
            Ok(info) => {
                let created = SystemTime::from(info.created);
                if self.created != Some(created) {
                    self.last_sequence = 0;
                }
                self.created = Some(created);
                self.stale = false;
            }
            Err(e) => {
                tracing::debug!(%worker, error = %e, "cannot ask the consumer's creation time; every message counts as possibly delivered before");
                self.created = None;
                self.stale = true;
            }
        }
    }

    /// Sets `d.first_ever`.
    fn judge(&mut self, d: &mut Delivery) {
        if d.consumer_sequence <= self.last_sequence {
            self.stale = true;
        }
        self.last_sequence = self.last_sequence.max(d.consumer_sequence);
        d.first_ever = d.delivered == 1
            && !self.stale
            && !d.is_replay()
            && self
                .created
                .is_some_and(|c| d.published > c + CREATION_MARGIN);
    }
}

/// One received message, as handlers see it.
pub struct Delivery {
    /// Subject it was published on.
    pub subject: String,
    /// Payload.
    pub payload: Bytes,
    /// Headers (trace context, message id).
    pub headers: Option<HeaderMap>,
    /// Delivery attempt, starting at 1.
    pub delivered: u32,
    /// Stream it came from.
    pub stream: String,
    /// Sequence in that stream.
    pub stream_sequence: u64,
    /// When the stream stored it.
    pub published: SystemTime,
    /// True only when no earlier delivery of this message can have happened, by any
    /// consumer: its first delivery (`delivered == 1`), by a consumer created before the
    /// message was stored (so not a consumer deleted and created again, which hands out
    /// its stream anew), and not a DLQ replay. Whenever the worker cannot tell, false.
    ///
    /// It says nothing about other messages for the same alert: a handler that skips a check
    /// on it must know that no other message can carry the same work (see the enricher's
    /// first-enrichment mark).
    pub first_ever: bool,
    /// The consumer's delivery sequence (every delivery, redeliveries included, gets the
    /// next one).
    consumer_sequence: u64,
    message: jetstream::Message,
}

impl Delivery {
    fn from_message(message: jetstream::Message) -> Result<Self, String> {
        let info = message.info().map_err(|e| e.to_string())?;
        let (delivered, stream, stream_sequence, consumer_sequence, published) = (
            u32::try_from(info.delivered.max(1)).unwrap_or(u32::MAX),
            info.stream.to_string(),
            info.stream_sequence,
            info.consumer_sequence,
            SystemTime::from(info.published),
        );
        Ok(Self {
            subject: message.subject.to_string(),
            payload: message.payload.clone(),
            headers: message.headers.clone(),
            delivered,
            stream,
            stream_sequence,
            published,
            first_ever: false,
            consumer_sequence,
            message,
        })
    }

    /// Whether a DLQ replay republished this message.
    pub fn is_replay(&self) -> bool {
        self.header(alertsync_proto::protocol::REPLAY_OF_HEADER)
            .is_some()
    }

    /// The first value of header `name`, if the message has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.as_ref()?.get(name).map(|v| v.as_str())
    }

    /// Tells the server the message is still being worked on (resets its ack timer). For
    /// handlers that hold a message longer than the consumer's ack wait.
    pub async fn in_progress(&self) {
        if let Err(e) = self.message.ack_with(AckKind::Progress).await {
            tracing::debug!(error = %e, "progress ack failed");
        }
    }
}

impl Hold for Delivery {
    async fn in_progress(&self) {
        Delivery::in_progress(self).await
    }
}

/// What a handler decided about one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done: acknowledge.
    Ack,
    /// Try again after this delay.
    Retry {
        /// Delay before redelivery.
        after: Duration,
    },
    /// Give up: dead-letter with this reason, then acknowledge.
    DeadLetter {
        /// Why, as a bounded class (the metric's label).
        class: DeadLetterClass,
        /// Why, for a human (redacted before it is stored).
        reason: String,
        /// Last HTTP status, if any.
        last_status: Option<u16>,
        /// The alert, when it could be decoded.
        alert_uuid: String,
    },
}

impl Outcome {
    /// Dead-letter for `class` and `reason`, about alert `alert_uuid` (empty when unknown),
    /// with no HTTP status.
    pub fn dead_letter(class: DeadLetterClass, reason: String, alert_uuid: &str) -> Outcome {
        Outcome::DeadLetter {
            class,
            reason,
            last_status: None,
            alert_uuid: alert_uuid.to_string(),
        }
    }
}

/// The code that handles one message of a stage.
pub trait Handler: Send + Sync + 'static {
    /// Handles `delivery`; must not panic on any payload.
    fn handle(&self, delivery: &Delivery) -> impl Future<Output = Outcome> + Send;
}

/// Settings of one worker loop.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Name used in logs ("enricher", "forward soar").
    pub name: String,
    /// Messages handled at once.
    pub concurrency: usize,
    /// Name of the consumer span of each message ("enrich_process", "forward_process").
    pub span_name: &'static str,
}

/// A pull loop over one durable consumer.
pub struct Worker {
    consumer: PullConsumer,
    config: WorkerConfig,
    dead_letters: DeadLetters,
    gate: Option<Gate>,
    metrics: Option<alertsync_telemetry::Metrics>,
}

impl Worker {
    /// A worker pulling from `consumer`.
    pub fn new(consumer: PullConsumer, config: WorkerConfig, dead_letters: DeadLetters) -> Self {
        Self {
            consumer,
            config,
            dead_letters,
            gate: None,
            metrics: None,
        }
    }

    /// Reports the consumer's lag (`alertsync_consumer_pending`) every [`LAG_EVERY`].
    pub fn with_metrics(mut self, metrics: alertsync_telemetry::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Pulls only while `gate` lets calls through; on shutdown the gate releases held
    /// messages.
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Runs until `shutdown`, then waits for in-flight handlers to finish.
    pub async fn run<H: Handler>(self, handler: Arc<H>, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let tracker = TaskTracker::new();
        let name = self.config.name.clone();
        if let Some(gate) = self.gate.clone() {
            // Messages held at a closed gate go back to the server as soon as shutdown starts.
            let signal = shutdown.clone();
            tokio::spawn(async move {
                signal.cancelled().await;
                gate.release();
            });
        }
        if let Some(metrics) = self.metrics.clone() {
            tokio::spawn(report_lag(self.consumer.clone(), metrics, shutdown.clone()));
        }
        let js = self.dead_letters.jetstream().clone();
        let Some(mut inbox) = Inbox::open(&js, &name, &shutdown).await else {
            return;
        };
        let mut incarnation = Incarnation::new(self.consumer.clone());
        // When the last pull request ended (nothing pending at the server since).
        let mut idle_since: Option<tokio::time::Instant> = None;
        'pull: loop {
            // Wait for room before asking the server for anything.
            let mut first = tokio::select! {
                _ = shutdown.cancelled() => break 'pull,
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break 'pull },
            };
            let pull = match &self.gate {
                None => Pull::Batch,
                Some(gate) => gate.wait_pull(&shutdown).await,
            };
            let wanted = match pull {
                Pull::Stop => break 'pull,
                Pull::One => 1,
                Pull::Batch => {
                    gather(&permits, &mut first, self.config.concurrency).await;
                    first.num_permits() + permits.available_permits()
                }
            };
            if incarnation.stale || idle_since.is_none_or(|t| t.elapsed() > RECHECK_AFTER) {
                incarnation.refresh(&name).await;
            }
            let request = BatchConfig {
                batch: wanted,
                expires: Some(PULL_EXPIRES),
                ..Default::default()
            };
            if let Err(e) = self
                .consumer
                .request_batch(request, inbox.subject.clone())
                .await
            {
                tracing::warn!(worker = %name, error = %e, "pull request failed");
                incarnation.stale = true;
                drop(first);
                pause(&shutdown).await;
                continue;
            }
            // The request's first messages use the permits gathered above, one each.
            let mut held = first;
            // Once requested, the request is drained even during shutdown: messages the server
            // already sent would otherwise wait a whole ack wait before redelivery.
            let mut answer = inbox.request(wanted);
            while let Some(message) = answer.next().await {
                let permit = match held.split(1) {
                    Some(p) => p,
                    None => match permits.clone().acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => break 'pull,
                    },
                };
                let message = jetstream::Message {
                    message,
                    context: js.clone(),
                };
                let mut delivery = match Delivery::from_message(message) {
                    Ok(d) => d,
                    Err(e) => {
                        // Not a JetStream message (no reply subject): nothing to ack.
                        tracing::warn!(worker = %name, error = %e, "skipping a message without JetStream metadata");
                        continue;
                    }
                };
                incarnation.judge(&mut delivery);
                let span = process_span(self.config.span_name, &delivery);
                let handler = handler.clone();
                let dead_letters = self.dead_letters.clone();
                let name = name.clone();
                tracker.spawn(
                    async move {
                        let outcome = handler.handle(&delivery).await;
                        settle(&name, &delivery, outcome, &dead_letters).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            idle_since = Some(tokio::time::Instant::now());
            if answer.end.is_some() {
                // Whatever ended it (a deleted consumer, a lost connection), the consumer may
                // not be the one it was.
                incarnation.stale = true;
            }
            match answer.end {
                None => {}
                Some(End::Closed) => {
                    // Only a closing client ends a subscription; if this one still runs, the
                    // inbox comes back.
                    tracing::debug!(worker = %name, "the pull inbox was closed");
                    pause(&shutdown).await;
                    match Inbox::open(&js, &name, &shutdown).await {
                        Some(reopened) => inbox = reopened,
                        None => break,
                    }
                }
                Some(end) => {
                    // The consumer is gone or moving (a deleted consumer, a leadership change)
                    // or the server did not answer: asking again at once would spin.
                    tracing::debug!(worker = %name, "pull request ended: {end}");
                    pause(&shutdown).await;
                }
            }
            if shutdown.is_cancelled() {
                break;
            }
        }
        // Anything the server sent after the loop stopped goes back at once (not after the ack
        // wait); the subscription ends here.
        inbox.release().await;
        tracker.close();
        tracker.wait().await;
        // Acks are not confirmed one by one. The server reads a connection's messages in order,
        // so its answer to this request, sent after all of them, means it has every ack (it
        // processes a received ack even if the connection closes right after).
        let mut consumer = self.consumer;
        match consumer.info().await {
            Ok(_) => tracing::info!(worker = %name, "worker stopped"),
            Err(e) => tracing::warn!(
                worker = %name,
                error = %e,
                "worker stopped, but the server did not answer after the last acks: unacknowledged messages come back after the ack wait"
            ),
        }
    }
}

/// The one subscription all of a worker's pull requests are answered on.
///
/// async-nats's `batch()` subscribes a new inbox for every pull request and unsubscribes it
/// after: two more protocol messages and a change to nats-server's subscription table per
/// request. With one inbox per worker, a pull request is a single publish. Requests are still
/// one at a time and never for more messages than free handlers, so nothing is prefetched.
struct Inbox {
    client: async_nats::Client,
    subject: Subject,
    messages: Subscriber,
}

impl Inbox {
    /// Subscribes the worker's inbox; `None` only if shutdown came first.
    async fn open(
        js: &jetstream::Context,
        name: &str,
        shutdown: &CancellationToken,
    ) -> Option<Self> {
        let client = js.client();
        loop {
            let subject = Subject::from(client.new_inbox());
            match client.subscribe(subject.clone()).await {
                Ok(messages) => {
                    return Some(Self {
                        client,
                        subject,
                        messages,
                    });
                }
                Err(e) => {
                    tracing::warn!(worker = %name, error = %e, "cannot subscribe the pull inbox");
                    pause(shutdown).await;
                    if shutdown.is_cancelled() {
                        return None;
                    }
                }
            }
        }
    }

    /// The answer to the request for `wanted` messages just sent.
    fn request(&mut self, wanted: usize) -> Answer<'_> {
        Answer {
            inbox: self,
            remaining: wanted,
            deadline: tokio::time::Instant::now() + PULL_EXPIRES + PULL_ANSWER_GRACE,
            end: None,
        }
    }

    /// NAKs, for immediate redelivery, the messages received that no request drained (the
    /// answer to a request given up on, arriving late), then unsubscribes.
    async fn release(mut self) {
        while let Some(Some(message)) = self.messages.next().now_or_never() {
            if message.status.is_none_or(|s| s == StatusCode::OK)
                && let Some(reply) = message.reply
            {
                let _ = self
                    .client
                    .publish(reply, Bytes::from_static(b"-NAK"))
                    .await;
            }
        }
        let _ = self.messages.unsubscribe().await;
    }
}

/// The messages answering one pull request, read as async-nats's `batch()` reads them.
struct Answer<'a> {
    inbox: &'a mut Inbox,
    remaining: usize,
    deadline: tokio::time::Instant,
    /// Why the answer ended before all the messages asked for came, if it did other than by
    /// expiring.
    end: Option<End>,
}

/// How an answer ended, other than complete or expired.
enum End {
    /// A status from the server other than "expired" (a deleted consumer, a leadership
    /// change, no JetStream).
    Status(String),
    /// Nothing, not even the expiry, within the grace period (the request was lost, e.g. in
    /// a reconnect).
    NoAnswer,
    /// The subscription ended (the client is closing).
    Closed,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Status(s) => write!(f, "the server answered {s}"),
            End::NoAnswer => f.write_str("no answer from the server"),
            End::Closed => f.write_str("the subscription is closed"),
        }
    }
}

impl Answer<'_> {
    /// The next message, or `None` once the request is answered: all its messages came, the
    /// server ended it (expired, or a status such as a deleted consumer), or it never answered.
    async fn next(&mut self) -> Option<async_nats::Message> {
        while self.remaining > 0 && self.end.is_none() {
            let received = tokio::time::timeout_at(self.deadline, self.inbox.messages.next()).await;
            let message = match received {
                Ok(Some(m)) => m,
                Ok(None) => {
                    self.end = Some(End::Closed);
                    break;
                }
                Err(_) => {
                    self.end = Some(End::NoAnswer);
                    break;
                }
            };
            match message.status.unwrap_or(StatusCode::OK) {
                StatusCode::OK => {
                    self.remaining -= 1;
                    return Some(message);
                }
                StatusCode::IDLE_HEARTBEAT => {}
                // Expired with fewer messages than asked for: the usual end when idle.
                StatusCode::TIMEOUT | StatusCode::NOT_FOUND => {
                    self.remaining = 0;
                }
                status => {
                    self.end = Some(End::Status(format!(
                        "{status} {}",
                        message.description.as_deref().unwrap_or_default()
                    )));
                }
            }
        }
        None
    }
}

/// When fewer than a quarter of the handlers are free, waits up to [`GATHER_WAIT`] for that
/// many and adds them to `held`, so that one pull request fetches several messages.
async fn gather(permits: &Arc<Semaphore>, held: &mut OwnedSemaphorePermit, concurrency: usize) {
    let target = concurrency.div_ceil(4);
    let have = held.num_permits() + permits.available_permits();
    if have >= target {
        return;
    }
    let more = u32::try_from(target - held.num_permits()).unwrap_or(u32::MAX);
    if let Ok(Ok(p)) =
        tokio::time::timeout(GATHER_WAIT, permits.clone().acquire_many_owned(more)).await
    {
        held.merge(p);
    }
}

/// Asks the server for the consumer's pending count (messages not yet delivered to it) and
/// publishes it as a gauge, until shutdown. A failed ask keeps the last value: the server
/// being away shows elsewhere (readiness, logs).
async fn report_lag(
    mut consumer: PullConsumer,
    metrics: alertsync_telemetry::Metrics,
    shutdown: CancellationToken,
) {
    let name = consumer.cached_info().name.clone();
    loop {
        if let Ok(info) = consumer.info().await {
            metrics.consumer_pending(&name, info.num_pending);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(LAG_EVERY) => {}
        }
    }
}

/// The consumer span of one delivery, child of the span that published the message. Every
/// redelivery carries the same headers, so each attempt is one more child in the same trace.
/// Handlers fill `alert.uuid` (and the forwarder `alertsync.destination`) once they know them.
fn process_span(name: &'static str, d: &Delivery) -> tracing::Span {
    let span = tracing::info_span!(
        "process",
        otel.name = name,
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.destination.name = %d.subject,
        alertsync.attempt = d.delivered,
        alert.uuid = tracing::field::Empty,
        alert.short_id = tracing::field::Empty,
        alertsync.destination = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    alertsync_telemetry::propagation::set_parent_from_nats(&span, d.headers.as_ref());
    span
}

async fn pause(shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(PULL_ERROR_PAUSE) => {}
    }
}

async fn settle(name: &str, d: &Delivery, outcome: Outcome, dead_letters: &DeadLetters) {
    let result = match outcome {
        Outcome::Ack => d.message.ack().await,
        Outcome::Retry { after } => d.message.ack_with(AckKind::Nak(Some(after))).await,
        Outcome::DeadLetter {
            class,
            reason,
            last_status,
            alert_uuid,
        } => match dead_letters
            .publish(d, class, &reason, last_status, &alert_uuid)
            .await
        {
            Ok(()) => {
                tracing::Span::current().record("otel.status_code", "ERROR");
                tracing::warn!(
                    worker = %name,
                    alert.uuid = %alert_uuid,
                    attempts = d.delivered,
                    "dead-lettered"
                );
                d.message.ack().await
            }
            Err(e) => {
                tracing::error!(worker = %name, error = %e, "dead-letter publish failed; will retry the message");
                d.message
                    .ack_with(AckKind::Nak(Some(DLQ_FAILED_RETRY)))
                    .await
            }
        },
    };
    if let Err(e) = result {
        // Could not even be queued (the client is closing): the server will redeliver after
        // the ack wait, and handlers are idempotent.
        tracing::warn!(worker = %name, error = %e, "acknowledgement failed");
    }
}
