//! Everything alertsync does with NATS JetStream.
//!
//! - [`subjects`]: subject, stream and consumer names, all derived from the configured prefix.
//! - [`mod@connect`]: connecting (with credentials) and refusing servers older than 2.10.
//! - [`topology`]: creating the streams and durable pull consumers, idempotently.
//! - [`publish`]: publishing with a message id and awaiting the JetStream acknowledgement.
//! - [`worker`]: the bounded pull loop every consuming stage runs; a handler returns an
//!   [`Outcome`] and the outcome picks the acknowledgement (ack, delayed NAK, dead-letter).
//! - [`gate`]: pausing a consumer while the service it calls rejects our credentials, keeps
//!   failing (circuit breaker) or rate-limits us, with probes that resume it by itself.
//! - [`dead_letter`]: building and publishing `DeadLetter` entries.
//! - [`dlq`]: reading, replaying and purging the dead-letter stream (`alertsync dlq`).

pub mod connect;
pub mod dead_letter;
pub mod dlq;
pub mod gate;
pub mod publish;
pub mod subjects;
pub mod topology;
pub mod worker;

pub use connect::{ConnectError, Connection, connect};
pub use gate::{Gate, GatePolicy, GateState, GateStatus, Pass, Turn};
pub use subjects::Subjects;
pub use topology::Topology;
pub use worker::{Delivery, Handler, Outcome, Worker, WorkerConfig};

/// Re-exported so services need no direct async-nats dependency for common types.
pub use async_nats;
