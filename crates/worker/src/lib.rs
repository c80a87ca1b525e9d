//! The consuming side of every stage that reads a stream (enricher, forwarder).
//!
//! - [`mod@worker`]: the bounded pull loop; a [`Handler`] returns an [`Outcome`] and the outcome
//!   picks the acknowledgement (ack, delayed NAK, dead-letter then ack).
//! - [`dead_letter`]: building and publishing `DeadLetter` entries; the dead-letter metric is
//!   counted once the entry is stored.
//! - [`call`]: the one path of every outside call ([`gated_call`]): gate, retries, holds and
//!   dead-letter decisions from a [`alertsync_http::CallOutcome`].
//! - [`stage`]: [`StageRunner`], the listener, health, metrics, gates, workers, tasks and final
//!   flush every service process has.
//!
//! The gate a worker pulls through is `alertsync-gate`; the NATS plumbing is `alertsync-nats`.

pub mod call;
pub mod dead_letter;
pub mod stage;
pub mod worker;

pub use call::{Attempted, CallPolicy, CallSite, gated_call};
pub use dead_letter::DeadLetters;
pub use stage::StageRunner;
pub use worker::{Delivery, Handler, Outcome, Worker, WorkerConfig};
