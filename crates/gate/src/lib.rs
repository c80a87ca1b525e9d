//! A [`Gate`] in front of one consumer: what lets a stage stop pulling while the service it
//! calls cannot take work, without burning the attempts of the messages that wait.
//!
//! The handler reports how each call went, through the [`Pass`] it got from [`Gate::turn`]:
//! - credentials rejected (401/403) → [`GateState::Paused`];
//! - `circuit_failures` transient failures in a row (5xx, timeouts, connection errors) →
//!   [`GateState::CircuitOpen`];
//! - rate limited (429) → [`GateState::Throttled`] until the `Retry-After` has passed.
//!
//! While the gate is closed the worker (`alertsync-worker`) pulls nothing, so alerts wait in the stream,
//! and messages already pulled are *held* by the handler inside [`Gate::turn`] (with progress
//! acknowledgements, so the server neither redelivers them nor counts an attempt). A paused or
//! open circuit is probed with growing delays (`probe_base · 2^n`, capped at `probe_max`): one
//! held message at a time, or one freshly pulled message when none is held, goes through. A
//! probe that gets a 2xx (or any answer that is not about credentials, availability or rate)
//! opens the gate, and every held message goes at once. A throttled gate reopens by itself
//! when the wait is over.
//!
//! On shutdown [`Gate::release`] lets every held message go back to the server.
//!
//! A few bad messages must not hold a whole stage: an upstream that fails only some alerts
//! (Sekoia answering 500 for one alert, a destination rejecting one alert's content with 500)
//! looks like an outage to a plain circuit breaker, whose probe is then always the same bad
//! alert. So:
//! - the circuit opens after `circuit_failures` failures in a row **of distinct alerts** (one
//!   alert failing again does not count twice);
//! - while the gate is closed, held messages that already failed ("suspects") probe only when
//!   no fresh message can: first a held message that has not failed, then one pulled from the
//!   stream ([`Pull::One`]); a suspect probes only if neither came within [`SUSPECT_GRACE`]
//!   of the probe being due;
//! - an alert that fails again after the gate saw a success since its first failure fails on
//!   its own account ([`Gate::mark_poison`]): it burns its attempts like any transient failure,
//!   and its failures no longer count toward the circuit ([`Pass::failed`]).
//!
//! An upstream down for everyone still holds every alert without burning attempts: with no
//! success anywhere, no failure is an alert's own.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;

/// What a message held at a closed gate must be able to do: tell the server it is still being
/// worked on, so that the server neither redelivers it nor counts another attempt. The gate
/// needs nothing else of a message.
pub trait Hold: Sync {
    /// Resets the message's ack timer at the server.
    fn in_progress(&self) -> impl std::future::Future<Output = ()> + Send;
}

/// How often a held message tells the server it is still being worked on. Well below any
/// consumer's ack wait.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How long after a probe is due a suspect (a held message that failed) waits for a fresh
/// message to take the probe first: longer than the worker needs to pull one.
pub const SUSPECT_GRACE: Duration = Duration::from_secs(3);

/// Alerts remembered as failing on their own account ([`Gate::mark_poison`]), and alerts
/// remembered as having failed ([`Gate::failed_before`]); the oldest is forgotten first.
/// Bounded so that a flood of bad alerts cannot grow memory.
const POISON_REMEMBERED: usize = 4096;

/// How long an alert's failure is remembered: a failure again after successes of others within
/// this time is the alert's own. Long enough to span a redelivery's delay; short enough that
/// an old blip does not make an alert look poison in a later, real outage.
const FAILURE_MEMORY: Duration = Duration::from_secs(600);

/// Whether calls go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GateState {
    /// Calls go through.
    #[default]
    Open,
    /// The service asked us to slow down (429): nothing goes until its wait is over.
    Throttled,
    /// Too many transient failures in a row: probing with growing delays.
    CircuitOpen,
    /// The service rejected our credentials (401/403): probing with growing delays.
    Paused,
}

impl GateState {
    /// `open`, `throttled`, `circuit_open`, `paused` (for logs, readiness and metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            GateState::Open => "open",
            GateState::Throttled => "throttled",
            GateState::CircuitOpen => "circuit_open",
            GateState::Paused => "paused",
        }
    }

    /// 0 open, 1 throttled, 2 circuit open, 3 paused: a gauge value.
    pub fn code(self) -> u8 {
        match self {
            GateState::Open => 0,
            GateState::Throttled => 1,
            GateState::CircuitOpen => 2,
            GateState::Paused => 3,
        }
    }
}

/// A snapshot of a gate, for readiness and metrics (the default: open, nothing to report).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GateStatus {
    /// Current state.
    pub state: GateState,
    /// When the gate closed (the start of the episode), `None` while open.
    pub since: Option<SystemTime>,
    /// Why it is closed (redacted by the reporter), empty while open.
    pub reason: String,
    /// Last HTTP status that closed it or kept it closed.
    pub last_status: Option<u16>,
    /// Until the next probe (paused, circuit open) or the reopening (throttled).
    pub next_try_in: Option<Duration>,
    /// Probes that failed in this episode.
    pub failed_probes: u32,
}

/// Timings of a gate.
#[derive(Debug, Clone, Copy)]
pub struct GatePolicy {
    /// Wait before the first probe of a paused gate or open circuit; doubles per failed probe.
    pub probe_base: Duration,
    /// Largest wait between probes.
    pub probe_max: Duration,
    /// Transient failures in a row, of distinct alerts, that open the circuit.
    pub circuit_failures: u32,
    /// When set, a paused gate (credentials rejected) probes at this fixed interval instead of
    /// the growing probe delays: the enricher's `sekoia.rejected_key_retry`.
    pub paused_probe_every: Option<Duration>,
}

impl GatePolicy {
    /// Wait before the probe that follows `failed` failed probes.
    pub fn probe_delay(&self, failed: u32) -> Duration {
        let factor = 2u32.saturating_pow(failed.min(20));
        self.probe_base.saturating_mul(factor).min(self.probe_max)
    }
}

type Observer = Box<dyn Fn(&GateStatus) + Send + Sync>;

/// The default is a new gate: open, nothing pending.
#[derive(Default)]
struct State {
    state: GateState,
    since: Option<SystemTime>,
    reason: String,
    last_status: Option<u16>,
    next_try: Option<Instant>,
    failed_probes: u32,
    /// The distinct alerts that failed since the last success.
    streak: std::collections::HashSet<String>,
    probing: bool,
    waiters: usize,
    /// Held messages that have not failed yet: they probe before any suspect.
    fresh_waiters: usize,
    /// Held suspects in the order they take probes (tickets): the one that probed least
    /// recently goes first, so no single failing alert keeps the probe to itself.
    suspects: std::collections::VecDeque<u64>,
    next_ticket: u64,
    released: bool,
    /// Calls answered (2xx, or an answer that is the alert's, not the service's) since start.
    successes: u64,
    /// Alerts that failed on their own account, oldest first ([`POISON_REMEMBERED`]).
    poison: std::collections::VecDeque<String>,
    /// Alerts that failed: the successes counted then, and when ([`FAILURE_MEMORY`]).
    failed: std::collections::HashMap<String, (u64, Instant)>,
}

impl State {
    fn status(&self) -> GateStatus {
        GateStatus {
            state: self.state,
            since: self.since,
            reason: self.reason.clone(),
            last_status: self.last_status,
            next_try_in: self
                .next_try
                .map(|t| t.saturating_duration_since(Instant::now())),
            failed_probes: self.failed_probes,
        }
    }
}

struct Inner {
    name: String,
    policy: GatePolicy,
    state: Mutex<State>,
    changed: Notify,
    observer: Mutex<Option<Observer>>,
}

/// The gate of one consumer; cheap to clone (all clones are the same gate).
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("name", &self.inner.name)
            .field("status", &self.status())
            .finish()
    }
}

/// What [`Gate::turn`] gives a message.
#[derive(Debug)]
pub enum Turn {
    /// Go ahead, and report how it went with the pass.
    Go(Pass),
    /// The service is shutting down: give the message back to the server.
    Released,
}

/// What the worker should pull next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pull {
    /// As many messages as there are free permits.
    Batch,
    /// One message, to probe a closed gate.
    One,
    /// Nothing: shutting down.
    Stop,
}

/// Permission to make one call. Report the result with one of its methods; dropping it
/// unreported (no call was made) hands a probe to the next message.
#[derive(Debug)]
pub struct Pass {
    gate: Gate,
    probe: bool,
    reported: bool,
}

impl Gate {
    /// An open gate for the consumer called `name` (a destination name; used in logs).
    pub fn new(name: &str, policy: GatePolicy) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: name.to_string(),
                policy,
                state: Mutex::new(State::default()),
                changed: Notify::new(),
                observer: Mutex::new(None),
            }),
        }
    }

    /// Calls `f` with the new status after every change (readiness, metrics).
    pub fn on_change(&self, f: impl Fn(&GateStatus) + Send + Sync + 'static) {
        *self
            .inner
            .observer
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Box::new(f));
    }

    /// The current status.
    pub fn status(&self) -> GateStatus {
        self.lock().status()
    }

    /// Whether calls go through.
    pub fn is_open(&self) -> bool {
        self.lock().state == GateState::Open
    }

    /// Lets every held message go (shutdown): [`Gate::turn`] answers [`Turn::Released`] from
    /// now on.
    pub fn release(&self) {
        self.lock().released = true;
        self.inner.changed.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.inner.changed.notify_waiters();
        let status = self.status();
        if let Some(f) = self
            .inner
            .observer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            f(&status);
        }
    }

    /// Reopens a throttled gate whose wait is over. Returns whether the state changed.
    fn reopen_if_due(&self, s: &mut State, now: Instant) -> bool {
        if s.state == GateState::Throttled && s.next_try.is_none_or(|t| now >= t) {
            tracing::info!(destination = %self.inner.name, "rate limit wait over; resuming");
            // Open again, as new, but the waiters, a release and what was learnt still stand.
            *s = State {
                waiters: s.waiters,
                fresh_waiters: s.fresh_waiters,
                suspects: std::mem::take(&mut s.suspects),
                next_ticket: s.next_ticket,
                released: s.released,
                successes: s.successes,
                poison: std::mem::take(&mut s.poison),
                failed: std::mem::take(&mut s.failed),
                ..State::default()
            };
            return true;
        }
        false
    }

    /// Waits until this message may make its call: at once while the gate is open; while it
    /// is closed, until it opens or this message becomes the probe. Meanwhile the message is
    /// kept alive on the server (progress acknowledgements). A `suspect` (a message that
    /// already failed) probes only when no fresh message can (see the crate docs).
    pub async fn turn(&self, d: &impl Hold, suspect: bool) -> Turn {
        let mut counted = false;
        let mut ticket = None;
        let mut next_progress = Instant::now() + PROGRESS_EVERY;
        let result = loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let (wake, reopened) = {
                let mut s = self.lock();
                let reopened = self.reopen_if_due(&mut s, now);
                // Release only what would have to wait: a message drained from the last batch
                // during shutdown still goes out through an open gate, or it would sit NAKed
                // on the server.
                if s.released && s.state != GateState::Open {
                    break Turn::Released;
                }
                match s.state {
                    GateState::Open => {
                        drop(s);
                        if reopened {
                            self.changed();
                        }
                        break Turn::Go(self.pass(false));
                    }
                    GateState::Throttled => (s.next_try, reopened),
                    GateState::Paused | GateState::CircuitOpen => {
                        let due = s.next_try.is_none_or(|t| now >= t);
                        let fresh_first = suspect && s.fresh_waiters > 0;
                        let grace_over = s.next_try.is_none_or(|t| now >= t + SUSPECT_GRACE);
                        let first_in_line =
                            ticket.is_some() && s.suspects.front() == ticket.as_ref();
                        let mine = !suspect || (!fresh_first && grace_over && first_in_line);
                        if due && !s.probing && mine {
                            s.probing = true;
                            if counted {
                                Self::uncount(&mut s, suspect, ticket.take());
                                counted = false;
                            }
                            drop(s);
                            // Others waiting for the counts (the worker's pull) look again.
                            self.inner.changed.notify_waiters();
                            break Turn::Go(self.pass(true));
                        }
                        if !counted {
                            s.waiters += 1;
                            if suspect {
                                let t = s.next_ticket;
                                s.next_ticket += 1;
                                s.suspects.push_back(t);
                                ticket = Some(t);
                            } else {
                                s.fresh_waiters += 1;
                            }
                            counted = true;
                            drop(s);
                            self.inner.changed.notify_waiters();
                            continue;
                        }
                        let wake = match s.next_try {
                            _ if s.probing => None,
                            Some(t) if suspect && due => Some(t + SUSPECT_GRACE),
                            other => other,
                        };
                        (wake, reopened)
                    }
                }
            };
            if reopened {
                self.changed();
            }
            let wake = wake.map_or(next_progress, |w| w.min(next_progress));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            if Instant::now() >= next_progress {
                d.in_progress().await;
                next_progress = Instant::now() + PROGRESS_EVERY;
            }
        };
        if counted {
            Self::uncount(&mut self.lock(), suspect, ticket);
        }
        result
    }

    /// A held message leaves the waiters (its turn came, or it was released).
    fn uncount(s: &mut State, suspect: bool, ticket: Option<u64>) {
        s.waiters -= 1;
        if !suspect {
            s.fresh_waiters -= 1;
        }
        if let Some(t) = ticket {
            s.suspects.retain(|x| *x != t);
        }
    }

    /// Calls answered so far (see [`Gate::mark_poison`]).
    pub fn successes(&self) -> u64 {
        self.lock().successes
    }

    /// Remembers `key` (an alert) as failing on its own account: its failures no longer count
    /// toward the circuit.
    pub fn mark_poison(&self, key: &str) {
        let mut s = self.lock();
        if s.poison.iter().any(|k| k == key) {
            return;
        }
        if s.poison.len() >= POISON_REMEMBERED {
            s.poison.pop_front();
        }
        s.poison.push_back(key.to_string());
        drop(s);
        tracing::info!(destination = %self.inner.name, alert.uuid = %key, "this alert fails where others succeed: its failures no longer count toward the circuit");
    }

    /// Notes a transient failure of alert `key`; true when it is the alert's own: it failed
    /// before (within [`FAILURE_MEMORY`], in this delivery or an earlier one) and other calls
    /// succeeded since. Then it is also marked poison ([`Gate::mark_poison`]).
    pub fn failed_before(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut s = self.lock();
        let successes = s.successes;
        let own = match s.failed.get(key) {
            Some(&(seen, at)) if now.duration_since(at) < FAILURE_MEMORY => successes > seen,
            _ => {
                if s.failed.len() >= POISON_REMEMBERED {
                    // Forget the expired, or else the oldest.
                    s.failed
                        .retain(|_, (_, at)| now.duration_since(*at) < FAILURE_MEMORY);
                    if s.failed.len() >= POISON_REMEMBERED
                        && let Some(oldest) = s
                            .failed
                            .iter()
                            .min_by_key(|(_, (_, at))| *at)
                            .map(|(k, _)| k.clone())
                    {
                        s.failed.remove(&oldest);
                    }
                }
                s.failed.insert(key.to_string(), (successes, now));
                false
            }
        };
        drop(s);
        if own {
            self.mark_poison(key);
        }
        own
    }

    /// Alert `key`'s call succeeded: whatever was remembered of its failures is forgotten.
    pub fn succeeded(&self, key: &str) {
        let mut s = self.lock();
        if s.failed.remove(key).is_some() {
            s.poison.retain(|k| k != key);
        }
    }

    /// Whether `key` was marked with [`Gate::mark_poison`].
    pub fn is_poison(&self, key: &str) -> bool {
        self.lock().poison.iter().any(|k| k == key)
    }

    /// Makes a paused gate or open circuit due for a probe now (something outside the calls,
    /// such as the enricher's key check, saw the service work again).
    pub fn probe_now(&self) {
        let mut s = self.lock();
        if matches!(s.state, GateState::Paused | GateState::CircuitOpen) {
            s.next_try = Some(Instant::now());
            drop(s);
            self.inner.changed.notify_waiters();
        }
    }

    fn pass(&self, probe: bool) -> Pass {
        Pass {
            gate: self.clone(),
            probe,
            reported: false,
        }
    }

    /// What the worker may pull now; waits while the gate is closed and nothing is due.
    pub async fn wait_pull(&self, shutdown: &tokio_util::sync::CancellationToken) -> Pull {
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let (wake, reopened) = {
                let mut s = self.lock();
                if s.released || shutdown.is_cancelled() {
                    return Pull::Stop;
                }
                let reopened = self.reopen_if_due(&mut s, now);
                match s.state {
                    GateState::Open => {
                        drop(s);
                        if reopened {
                            self.changed();
                        }
                        return Pull::Batch;
                    }
                    GateState::Throttled => (s.next_try, reopened),
                    GateState::Paused | GateState::CircuitOpen => {
                        let due = s.next_try.is_none_or(|t| now >= t);
                        // Held messages that have not failed probe themselves; pull one only when
                        // none of them waits (suspects wait for the pulled one first).
                        if due && !s.probing && s.fresh_waiters == 0 {
                            return Pull::One;
                        }
                        (if due { None } else { s.next_try }, reopened)
                    }
                }
            };
            if reopened {
                self.changed();
            }
            let sleep = async {
                match wake {
                    Some(w) => tokio::time::sleep_until(w).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Pull::Stop,
                _ = &mut notified => {}
                _ = sleep => {}
            }
        }
    }

    /// Closes the gate in `state` (or moves a closed gate to it). A probe's failure pushes the
    /// next probe further out.
    fn close(&self, probe: bool, state: GateState, status: Option<u16>, reason: &str) {
        let policy = self.inner.policy;
        let now = Instant::now();
        let mut s = self.lock();
        let was = s.state;
        if probe {
            s.probing = false;
        }
        let delay = |failed: u32| match (state, policy.paused_probe_every) {
            (GateState::Paused, Some(every)) => every,
            _ => policy.probe_delay(failed),
        };
        if was == GateState::Open {
            s.since = Some(SystemTime::now());
            s.failed_probes = 0;
            s.next_try = Some(now + delay(0));
        } else if probe {
            s.failed_probes += 1;
            s.next_try = Some(now + delay(s.failed_probes));
        } else if was == GateState::Throttled {
            // A throttled gate had only a reopening time; now it needs probing.
            s.next_try = Some(now + delay(0));
        }
        s.state = state;
        s.reason = reason.to_string();
        s.last_status = status;
        s.streak.clear();
        let next = s.next_try.map(|t| t.saturating_duration_since(now));
        let failed_probes = s.failed_probes;
        drop(s);
        let name = &self.inner.name;
        if was == GateState::Open || was != state {
            tracing::error!(
                destination = %name,
                state = state.as_str(),
                ?status,
                %reason,
                next_probe_in = ?next,
                "destination {}: alerts wait in the stream until it works again",
                match state {
                    GateState::Paused => "rejects our credentials",
                    _ => "keeps failing; circuit open",
                }
            );
        } else if probe {
            tracing::info!(destination = %name, state = state.as_str(), ?status, %reason, failed_probes, next_probe_in = ?next, "probe failed");
        }
        self.changed();
    }
}

impl Pass {
    /// Whether this call is the probe of a closed gate.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The call succeeded (2xx). A probe's success opens the gate.
    pub fn delivered(self) {
        self.answered();
    }

    /// The service answered with something that is neither success nor about credentials,
    /// availability or rate (400, 404, 413…): it is up, so a probe's answer opens the gate.
    pub fn answered(mut self) {
        self.reported = true;
        let gate = self.gate.clone();
        let mut s = gate.lock();
        s.streak.clear();
        s.successes += 1;
        if !self.probe {
            return;
        }
        s.probing = false;
        if s.state == GateState::Open {
            return;
        }
        let closed_for = s.since.and_then(|t| t.elapsed().ok()).unwrap_or_default();
        let was = s.state;
        s.state = GateState::Open;
        s.since = None;
        s.reason.clear();
        s.last_status = None;
        s.next_try = None;
        s.failed_probes = 0;
        drop(s);
        tracing::info!(destination = %gate.inner.name, was = was.as_str(), closed_for = ?closed_for, "destination works again; resuming");
        gate.changed();
    }

    /// The service rejected our credentials (401/403): pause. The caller holds the message
    /// (calls [`Gate::turn`] again).
    pub fn rejected(mut self, status: u16, reason: &str) {
        self.reported = true;
        self.gate
            .close(self.probe, GateState::Paused, Some(status), reason);
    }

    /// A transient failure (5xx, timeout, connection error) of the call for alert `key`.
    /// Returns true when the gate is (now) closed: the caller holds the message instead of
    /// retrying it, so it burns no attempt while the circuit is open. An alert marked poison
    /// ([`Gate::mark_poison`]) fails on its own account: its failure changes nothing here and
    /// the caller retries it (false).
    pub fn failed(mut self, key: &str, status: Option<u16>, reason: &str) -> bool {
        self.reported = true;
        let gate = self.gate.clone();
        let mut s = gate.lock();
        if s.poison.iter().any(|k| k == key) {
            if self.probe {
                s.probing = false;
                drop(s);
                gate.inner.changed.notify_waiters();
            }
            return false;
        }
        if self.probe {
            drop(s);
            gate.close(true, GateState::CircuitOpen, status, reason);
            return true;
        }
        if s.state != GateState::Open {
            return true;
        }
        s.streak.insert(key.to_string());
        if s.streak.len() >= gate.inner.policy.circuit_failures.max(1) as usize {
            drop(s);
            gate.close(false, GateState::CircuitOpen, status, reason);
            return true;
        }
        false
    }

    /// The service asked us to wait (429): nothing goes before `wait` has passed. The caller
    /// holds the message.
    pub fn throttled(mut self, wait: Duration, reason: &str) {
        self.reported = true;
        let gate = self.gate.clone();
        let now = Instant::now();
        let mut s = gate.lock();
        if self.probe {
            s.probing = false;
        }
        let until = now + wait;
        let was = s.state;
        match s.state {
            GateState::Open | GateState::Throttled => {
                if was == GateState::Open {
                    s.since = Some(SystemTime::now());
                }
                s.state = GateState::Throttled;
                s.next_try = Some(s.next_try.map_or(until, |t| t.max(until)));
            }
            // Paused or circuit open: the service is up but busy; probe again after its wait.
            GateState::Paused | GateState::CircuitOpen => {
                s.state = GateState::CircuitOpen;
                s.next_try = Some(s.next_try.map_or(until, |t| t.max(until)));
            }
        }
        s.reason = reason.to_string();
        s.last_status = Some(429);
        drop(s);
        if was == GateState::Open {
            tracing::warn!(destination = %gate.inner.name, wait = ?wait, %reason, "rate limited; holding every call until the wait is over");
        }
        gate.changed();
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            // No call was made: let another message probe.
            self.gate.lock().probing = false;
            self.gate.inner.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> GatePolicy {
        GatePolicy {
            probe_base: Duration::from_secs(1),
            probe_max: Duration::from_secs(8),
            circuit_failures: 3,
            paused_probe_every: None,
        }
    }

    /// A message that only needs to be kept alive.
    struct Held;

    impl Hold for Held {
        async fn in_progress(&self) {}
    }

    #[tokio::test(start_paused = true)]
    async fn one_alert_failing_again_and_again_does_not_open_the_circuit() {
        let g = Gate::new("soar", policy());
        for _ in 0..10 {
            assert!(!g.pass(false).failed("bad", Some(500), "500"));
        }
        assert!(g.is_open());
        assert!(!g.pass(false).failed("a", Some(500), "500"));
        assert!(
            g.pass(false).failed("b", Some(500), "500"),
            "three distinct alerts"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn suspects_let_a_fresh_message_probe_first_and_poison_failures_do_not_count() {
        let g = Gate::new("soar", policy());
        let stop = tokio_util::sync::CancellationToken::new();
        for k in ["p1", "p2", "p3"] {
            g.pass(false).failed(k, Some(500), "500");
        }
        assert_eq!(g.status().state, GateState::CircuitOpen);
        // A suspect is held while the worker may pull a fresh message to probe.
        let suspect = {
            let g = g.clone();
            tokio::spawn(async move {
                match g.turn(&Held, true).await {
                    Turn::Go(pass) => pass.is_probe(),
                    Turn::Released => false,
                }
            })
        };
        let t0 = Instant::now();
        assert_eq!(g.wait_pull(&stop).await, Pull::One, "a fresh one is pulled");
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
        // The fresh message probes at once and succeeds: the gate opens.
        match g.turn(&Held, false).await {
            Turn::Go(pass) => {
                assert!(pass.is_probe());
                pass.delivered();
            }
            Turn::Released => panic!("released"),
        }
        assert!(g.is_open());
        assert!(
            !suspect.await.unwrap(),
            "the suspect goes through the open gate"
        );
        // Marked poison, the same alert no longer closes anything.
        g.mark_poison("p1");
        assert!(g.is_poison("p1"));
        for _ in 0..5 {
            assert!(!g.pass(false).failed("p1", Some(500), "500"));
        }
        assert!(g.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_fresh_message_a_suspect_probes_after_the_grace() {
        let g = Gate::new("soar", policy());
        for k in ["p1", "p2", "p3"] {
            g.pass(false).failed(k, Some(500), "500");
        }
        let t0 = Instant::now();
        match g.turn(&Held, true).await {
            Turn::Go(pass) => assert!(pass.is_probe()),
            Turn::Released => panic!("released"),
        }
        assert_eq!(t0.elapsed(), Duration::from_secs(1) + SUSPECT_GRACE);
    }

    #[test]
    fn probe_delays_double_up_to_the_cap() {
        let p = policy();
        let got: Vec<u64> = (0..6).map(|n| p.probe_delay(n).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 8, 8]);
        assert_eq!(p.probe_delay(u32::MAX), Duration::from_secs(8));
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_in_a_row_open_the_circuit_and_a_success_resets_the_count() {
        let g = Gate::new("soar", policy());
        let stop = tokio_util::sync::CancellationToken::new();
        assert!(!g.pass(false).failed("a1", Some(503), "503"));
        assert!(!g.pass(false).failed("a2", Some(503), "503"));
        g.pass(false).delivered();
        assert!(!g.pass(false).failed("a3", Some(503), "503"));
        assert!(!g.pass(false).failed("a4", Some(503), "503"));
        assert!(
            g.pass(false).failed("a5", Some(503), "503"),
            "third in a row"
        );
        let st = g.status();
        assert_eq!(st.state, GateState::CircuitOpen);
        assert!(st.since.is_some());
        // The worker pulls nothing until the first probe is due, then one message.
        let started = Instant::now();
        assert_eq!(g.wait_pull(&stop).await, Pull::One);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_gate_probes_with_growing_delays_and_a_probe_success_reopens_it() {
        let g = Gate::new("soar", policy());
        let stop = tokio_util::sync::CancellationToken::new();
        g.pass(false).rejected(401, "401");
        assert_eq!(g.status().state, GateState::Paused);
        let t0 = Instant::now();
        // First probe after 1 s, failing; the next after 2 s more, then 4 s.
        for expected in [1u64, 3, 7] {
            assert_eq!(g.wait_pull(&stop).await, Pull::One);
            assert_eq!(t0.elapsed(), Duration::from_secs(expected));
            let mut s = g.lock();
            assert!(!s.probing);
            s.probing = true;
            drop(s);
            Pass {
                gate: g.clone(),
                probe: true,
                reported: false,
            }
            .rejected(401, "401");
        }
        assert_eq!(g.status().failed_probes, 3);
        assert_eq!(g.wait_pull(&stop).await, Pull::One);
        g.lock().probing = true;
        Pass {
            gate: g.clone(),
            probe: true,
            reported: false,
        }
        .delivered();
        assert_eq!(g.status().state, GateState::Open);
        assert_eq!(g.wait_pull(&stop).await, Pull::Batch);
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_gate_lets_nothing_through_before_the_wait_and_reopens_by_itself() {
        let g = Gate::new("soar", policy());
        let stop = tokio_util::sync::CancellationToken::new();
        g.pass(false).throttled(Duration::from_secs(3), "429");
        assert_eq!(g.status().state, GateState::Throttled);
        let t0 = Instant::now();
        assert_eq!(g.wait_pull(&stop).await, Pull::Batch);
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
        assert!(g.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn release_stops_the_worker_and_an_unreported_probe_hands_over() {
        let g = Gate::new("soar", policy());
        let stop = tokio_util::sync::CancellationToken::new();
        g.pass(false).rejected(403, "403");
        tokio::time::sleep(Duration::from_secs(2)).await;
        g.lock().probing = true;
        drop(Pass {
            gate: g.clone(),
            probe: true,
            reported: false,
        });
        assert!(!g.lock().probing);
        g.release();
        assert_eq!(g.wait_pull(&stop).await, Pull::Stop);
    }
}
