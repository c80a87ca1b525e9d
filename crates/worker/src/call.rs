//! The one path every outside call of a consuming stage takes (Get Alert, a destination, and
//! whatever comes next: Sekoia write-back, destination updates, token endpoints).
//!
//! [`gated_call`] waits for the stage's [`Gate`], makes the call, and turns its
//! [`CallOutcome`] into either the call's value or the message's [`Outcome`]:
//!
//! | the call came to | the gate | the message |
//! |---|---|---|
//! | `Done` | success (a probe reopens it) | the caller goes on with the value |
//! | `CredentialsRejected` (401/403) | paused | held, no attempt burnt, probed again |
//! | `Throttled` (429) | throttled for `Retry-After` (capped) or the retry delay | held, then called again |
//! | `Transient` (408, 5xx, timeout, transport) | counts toward the circuit | held while the circuit is open; otherwise a delayed NAK, dead-lettered `exhausted` when attempts run out |
//! | `NotYet` (Get Alert's 404) | answered | delayed NAK, dead-lettered `not_found` after its own attempts |
//! | `TooLarge` (413, over a cap) | answered | dead-lettered `too_large` |
//! | `Permanent` (other 4xx, 501) | answered | dead-lettered by status class |
//!
//! An alert that keeps failing where others succeed is the alert's problem, not the service's:
//! it burns its attempts and stops counting toward the circuit (see `alertsync-gate`).
//!
//! What is particular to a stage (its metrics, spans, how a 413 is explained) stays in the
//! closure that makes the call.

use std::future::Future;
use std::time::Duration;

use alertsync_gate::{Gate, Hold, Turn};
use alertsync_http::{CallOutcome, RetryPolicy};
use alertsync_proto::{DeadLetterClass, Stage};
use alertsync_telemetry::Metrics;

use crate::worker::{Delivery, Outcome};

/// NAK delay of a message held at a closed gate when the service shuts down.
pub const RELEASE_DELAY: Duration = Duration::from_secs(5);

/// A message as the call path needs it: kept alive while held, and which attempt it is.
pub trait Attempted: Hold {
    /// The delivery attempt, from 1.
    fn attempt(&self) -> u32;
}

impl Attempted for Delivery {
    fn attempt(&self) -> u32 {
        self.delivered
    }
}

/// How a stage retries one kind of call.
#[derive(Debug, Clone, Copy)]
pub struct CallPolicy {
    /// Delays between attempts, and the cap on `Retry-After`.
    pub retry: RetryPolicy,
    /// Attempts before a transient failure is dead-lettered.
    pub max_attempts: u32,
    /// Attempts before a `NotYet` answer is dead-lettered.
    pub not_yet_attempts: u32,
}

/// Where a call is made from: the stage's gate, policy and counters.
#[derive(Clone, Copy)]
pub struct CallSite<'a> {
    /// The gate in front of the called service.
    pub gate: &'a Gate,
    /// Retries and attempts.
    pub policy: &'a CallPolicy,
    /// The stage making the call (metrics).
    pub stage: Stage,
    /// The destination, for the forwarder (metrics, logs).
    pub destination: Option<&'a str>,
    /// Counters.
    pub metrics: &'a Metrics,
    /// What the call is, for logs ("Get Alert", "delivery").
    pub what: &'a str,
}

/// Makes `call` for the alert `alert_uuid` of message `d` through the gate, as many times as
/// the outcomes allow (see the module docs). `Ok` carries the value of the successful call;
/// `Err` is what the worker does with the message.
pub async fn gated_call<T, F, Fut>(
    site: CallSite<'_>,
    d: &impl Attempted,
    alert_uuid: &str,
    mut call: F,
) -> Result<T, Outcome>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = CallOutcome<T>>,
{
    let (gate, policy) = (site.gate, site.policy);
    let attempt = d.attempt();
    // Whether this message failed already: it then waits for fresher messages to probe.
    let mut failed = false;
    let dead = |class: DeadLetterClass, reason: String, status: Option<u16>| Outcome::DeadLetter {
        class,
        reason,
        last_status: status,
        alert_uuid: alert_uuid.to_string(),
    };
    let retry = |after: Duration| {
        site.metrics.retry(site.stage, site.destination);
        Outcome::Retry { after }
    };
    loop {
        let pass = match gate.turn(d, failed).await {
            Turn::Go(pass) => pass,
            Turn::Released => {
                return Err(Outcome::Retry {
                    after: RELEASE_DELAY,
                });
            }
        };
        match call().await {
            CallOutcome::Done(value) => {
                pass.delivered();
                if failed || gate.is_poison(alert_uuid) {
                    gate.succeeded(alert_uuid);
                }
                return Ok(value);
            }
            CallOutcome::CredentialsRejected { status, reason } => {
                // Not the alert's fault: held (no attempt burnt) until the credentials work.
                tracing::debug!(alert.uuid = %alert_uuid, destination = site.destination, status, "{}: credentials rejected; holding the alert", site.what);
                pass.rejected(status, &reason);
            }
            CallOutcome::Throttled {
                retry_after,
                reason,
            } => {
                // About us, not this alert: every call waits, and no attempt is burnt.
                let wait = match retry_after {
                    Some(ra) => ra.min(policy.retry.max_retry_after),
                    None => policy.retry.delay(attempt, None),
                };
                tracing::debug!(alert.uuid = %alert_uuid, destination = site.destination, ?wait, "{}: rate limited; holding the alert", site.what);
                pass.throttled(wait, &reason);
            }
            CallOutcome::Transient {
                status,
                retry_after,
                reason,
            } => {
                // Remembered across deliveries: a poison alert comes back after its delay.
                if !gate.is_poison(alert_uuid) {
                    gate.failed_before(alert_uuid);
                }
                failed = true;
                if pass.failed(alert_uuid, status, &reason) {
                    // The circuit is open: hold the alert until a probe gets an answer.
                    continue;
                }
                if attempt >= policy.max_attempts {
                    return Err(dead(
                        DeadLetterClass::Exhausted,
                        format!("gave up after {attempt} attempts: {reason}"),
                        status,
                    ));
                }
                let after = policy.retry.delay(attempt, retry_after);
                tracing::info!(alert.uuid = %alert_uuid, destination = site.destination, ?status, attempt, retry_in = ?after, %reason, "{} failed; will retry", site.what);
                return Err(retry(after));
            }
            CallOutcome::NotYet { status, reason } => {
                pass.answered();
                if attempt >= policy.not_yet_attempts {
                    return Err(dead(
                        DeadLetterClass::NotFound,
                        format!("{reason} on {attempt} attempts"),
                        Some(status),
                    ));
                }
                return Err(retry(policy.retry.delay(attempt, None)));
            }
            CallOutcome::TooLarge { status, reason } => {
                pass.answered();
                return Err(dead(DeadLetterClass::TooLarge, reason, status));
            }
            CallOutcome::Permanent { status, reason } => {
                pass.answered();
                return Err(dead(DeadLetterClass::of_status(status), reason, status));
            }
        }
    }
}
