//! The benchmark's CI mode: `alertsync-bench --short` against the debug service binaries
//! (three processes, and `alertsync run` with `--one-process`) loses and duplicates nothing. Only that is asserted: timings on a shared CI machine say
//! nothing, so none is checked here.
//!
//! The service binaries must be built first (`cargo build --workspace --bins`; `scripts/test`
//! does it), and a nats-server found (`NATS_SERVER_BIN`, as `scripts/test` sets it).

use std::path::PathBuf;
use std::process::Command;

/// target/<profile>: test executables live in its `deps/`, the service binaries in it.
fn service_dir() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .to_path_buf()
}

/// Runs `alertsync-bench --short <args>` and returns its JSON report, with its output for
/// failure messages.
fn short_run(args: &[&str]) -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_alertsync-bench"))
        .arg("--short")
        .args(args)
        .arg("--bin-dir")
        .arg(service_dir())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let output = format!(
        "exit: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("the benchmark wrote no JSON ({e}); {output}"));
    (serde_json::from_str(&text).unwrap(), output)
}

#[test]
fn a_short_benchmark_run_loses_and_duplicates_nothing() {
    let (doc, output) = short_run(&[]);
    let summary = &doc["summary"];
    assert_eq!(summary["lost"], 0, "alerts were lost; {output}");
    assert_eq!(summary["duplicated"], 0, "alerts were duplicated; {output}");
}

#[test]
fn a_short_one_process_run_loses_and_duplicates_nothing() {
    // The ceiling is the same as in the test above; only the project's form changes.
    let (doc, output) = short_run(&["--one-process", "--no-ceiling"]);
    let started: Vec<&str> = doc["report"]["startup"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(started, ["alertsync-run"], "{output}");
    let summary = &doc["summary"];
    assert_eq!(summary["lost"], 0, "alerts were lost; {output}");
    assert_eq!(summary["duplicated"], 0, "alerts were duplicated; {output}");
}
