//! `alertsync`: the operator CLI.
//!
//! - `alertsync demo`: the whole pipeline on this machine (see [`demo`]).
//! - `alertsync run --config F [--stages ingest,enricher,forwarder]`: several stages in one
//!   process, for small installs (see [`run`]).

mod demo;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "alertsync",
    version,
    about = "Push Sekoia.io alerts into the tools where analysts work",
    after_help = "Examples:\n  alertsync demo\n  alertsync run --config alertsync.toml\n  alertsync run --config alertsync.toml --stages enricher,forwarder"
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
    Run(run::RunArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
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
