//! `alertsync-bench`: see the crate documentation and `--help`.

use std::process::ExitCode;

use alertsync_bench::cli::{Args, Worker};
use clap::Parser as _;

fn main() -> ExitCode {
    let args = Args::parse();
    // The ceiling's worker runs on one thread by default, as the stage binaries do: measured
    // on 2 cores, that is its cheapest form too (BENCHMARKS.md, step 15), and the ratios
    // should compare code, not runtime settings. The load generator and fakes use the cores.
    let runtime = match &args.worker {
        Some(Worker::CeilingWorker(w)) if w.threads > 1 => {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(w.threads.into())
                .enable_all()
                .build()
        }
        Some(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        None => tokio::runtime::Runtime::new(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Worker::CeilingWorker(w)) = args.worker {
        return match runtime.block_on(alertsync_bench::ceiling::run_worker(w)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: ceiling worker: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let result = args
        .plan()
        .and_then(|plan| runtime.block_on(alertsync_bench::run::run(plan)));
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    println!("{}", report.table());
    println!("BENCH_SUMMARY {}", report.summary());
    if let Some(path) = &args.json {
        let doc = serde_json::json!({"summary": report.summary(), "report": report});
        let text = serde_json::to_string_pretty(&doc).expect("the report serialises");
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.lost() > 0 || report.duplicated() > 0 {
        eprintln!(
            "error: {} alert(s) lost and {} duplicated",
            report.lost(),
            report.duplicated()
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
