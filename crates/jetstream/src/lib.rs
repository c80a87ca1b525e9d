//! Everything alertsync does with NATS JetStream.
//!
//! - [`subjects`]: subject, stream and consumer names, all derived from the configured prefix.
//! - [`connect`]: connecting (with credentials) and refusing servers older than 2.10.
//! - [`topology`]: creating the streams and durable pull consumers, idempotently.
//! - [`publish`]: publishing with a message id and awaiting the JetStream acknowledgement.
//! - [`worker`]: the bounded pull loop every consuming stage runs; a handler returns an
//!   [`Outcome`] and the outcome picks the acknowledgement (ack, delayed NAK, dead-letter).
//! - [`dead_letter`]: building and publishing `DeadLetter` entries.

pub mod connect;
pub mod dead_letter;
pub mod publish;
pub mod subjects;
pub mod topology;
pub mod worker;

pub use connect::{ConnectError, connect};
pub use subjects::Subjects;
pub use topology::Topology;
pub use worker::{Delivery, Handler, Outcome, Worker, WorkerConfig};

/// Re-exported so services need no direct async-nats dependency for common types.
pub use async_nats;
