//! The alertsync benchmark (issue 7): measured throughput, latency and footprint of the three
//! services, against a ceiling, the same work written as the leanest code, measured in the same
//! invocation on the same nats-server and fakes.
//!
//! One invocation starts a private nats-server (file storage), a [`fakes::FastSekoia`] and a
//! [`fakes::FastDestination`], the three service binaries as separate processes (the seed's
//! main template) and the [`ceiling`] as a child process, then drives each scenario through
//! each pipeline in turn: as fast as possible with bounded client concurrency, then at fixed
//! rates. It reports throughput, webhook-accept → destination-receipt latency, CPU per 1000
//! alerts and resident memory per process, time to ready, lost and duplicated alerts, and the
//! project's figures as ratios of the ceiling's.
//!
//! Modules:
//! - [`cli`]: the command line.
//! - [`run`]: one invocation, from setup to [`report::Report`].
//! - [`load`]: the load generator (bounded in flight; as fast as possible or open-loop rate).
//! - [`tracker`]: per-run accept and receipt times by alert index, duplicates.
//! - [`fakes`]: the fast fake Sekoia API and fast fake destination.
//! - [`ceiling`]: the lean pipeline, run as `alertsync-bench ceiling-worker`.
//! - [`procs`]: child processes and `/proc` (CPU time, resident memory).
//! - [`report`]: medians, the table, the `BENCH_SUMMARY` line and the JSON.
//! - [`wire`]: lean HTTP/1.1 server and client plumbing over hyper.

pub mod ceiling;
pub mod cli;
pub mod fakes;
pub mod load;
pub mod procs;
pub mod report;
pub mod run;
pub mod tracker;
pub mod wire;
