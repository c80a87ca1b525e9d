//! NATS plumbing: everything alertsync does with a NATS connection that is not about handling
//! one message (that is `alertsync-worker`).
//!
//! - [`subjects`]: subject, stream and consumer names, all derived from the configured prefix.
//! - [`mod@connect`]: connecting (with credentials), refusing servers older than 2.10, and the
//!   bounded final flush of a stopping service.
//! - [`topology`]: creating the streams, the delivery-record bucket and the durable pull
//!   consumers, idempotently.
//! - [`publish`]: publishing with a message id and awaiting the JetStream acknowledgement.

pub mod connect;
pub mod keys;
pub mod publish;
pub mod subjects;
pub mod topology;

pub use connect::{ConnectError, Connection, connect};
pub use subjects::Subjects;
pub use topology::Topology;

/// Re-exported so services need no direct async-nats dependency for common types.
pub use async_nats;
