//! `alertsync`: the operator CLI.
//!
//! - `alertsync demo`: the whole pipeline on this machine (see [`demo`]).
//! - `alertsync check --config F [--destinations]`: is this config ready to run (see [`check`]).
//! - `alertsync render --config F --destination D --alert FILE`: the exact request a
//!   destination would get, secrets redacted (see [`render`]).
//! - `alertsync stand-ins`: the demo's fake Sekoia, alert generator and printing receiver as one
//!   process, for the compose `demo` profile (see [`standins`]).
//! - `alertsync run --config F [--stages ingest,enricher,forwarder]`: several stages in one
//!   process, for small installs (see [`run`]).
//! - `alertsync dlq --config F list|show|replay|purge`: the dead-letter queue (see [`dlq`]).

mod check;
mod demo;
mod dlq;
mod render;
mod run;
mod standins;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "alertsync",
    version,
    about = "Push Sekoia.io alerts into the tools where analysts work",
    after_help = "Examples:\n  alertsync demo\n  alertsync check --config alertsync.toml --destinations\n  alertsync render --config alertsync.toml --destination soar --alert alert.json\n  alertsync run --config alertsync.toml\n  alertsync run --config alertsync.toml --stages enricher,forwarder\n\n`alertsync <command> --help` has the details and examples of each command."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline locally with a fake Sekoia and a printing receiver.
    Demo(demo::DemoArgs),
    /// Run some or all stages in one process.
    #[command(
        after_help = "Examples:\n  alertsync run --config alertsync.toml\n  alertsync run --config alertsync.toml --stages enricher,forwarder\n  ALERTSYNC_CONFIG=/etc/alertsync/alertsync.toml alertsync run --stages ingest\n\nServes /healthz and /readyz on each stage's listen address; SIGTERM or SIGINT stops\npulling, finishes in-flight work and exits 0."
    )]
    Run(run::RunArgs),
    /// Check a config: fields, templates, NATS, the Sekoia key and, optionally, destinations.
    Check(check::CheckArgs),
    /// Print the exact request a destination would get for an alert, without sending it.
    Render(render::RenderArgs),
    /// Run the demo's fake Sekoia, alert generator and printing receiver (compose demo profile).
    #[command(name = "stand-ins")]
    StandIns(standins::StandInsArgs),
    /// List, show, replay or purge dead-letter entries.
    Dlq(dlq::DlqArgs),
}

#[global_allocator]
static ALLOC: alertsync_runtime::Allocator = alertsync_runtime::Allocator;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let worker_threads = match &cli.command {
        Command::Run(args) => args.worker_threads(),
        _ => None,
    };
    let runtime = match alertsync_runtime::build_runtime(worker_threads) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::demo(args).await,
            Command::Run(args) => run::run(args).await,
            Command::Check(args) => check::check(args).await,
            Command::Render(args) => render::render(args).await,
            Command::StandIns(args) => standins::stand_ins(args).await,
            Command::Dlq(args) => dlq::dlq(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
