//! `alertsync demo` as a newcomer runs it: alerts flow from the fake Sekoia to both
//! destinations, and `--count` ends it cleanly.

use std::process::Command;

#[test]
fn the_demo_delivers_alerts_to_both_destinations_and_stops_cleanly() {
    if std::env::var_os("NATS_SERVER_BIN").is_none() {
        panic!("NATS_SERVER_BIN is not set: run the tests with scripts/test");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_alertsync"))
        .args(["demo", "--every", "200ms", "--count", "3"])
        .output()
        .expect("alertsync runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let soar: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("POST /soar"))
        .collect();
    let intake: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("POST /intake"))
        .collect();
    assert!(soar.len() >= 3 && intake.len() >= 3, "{stdout}");
    // Each alert, acknowledged and commented in Sekoia, reaches the SOAR's ticket as a PATCH
    // and a comment, at the ticket the SOAR answered the creation with.
    let patches = stdout
        .lines()
        .filter(|l| l.contains("PATCH /soar/SOAR-"))
        .count();
    let comments = stdout
        .lines()
        .filter(|l| l.contains("POST /soar/SOAR-") && l.contains("/comments"))
        .count();
    assert!(patches >= 3 && comments >= 3, "{stdout}");
    assert!(
        stdout.contains("\"status\":\"Acknowledged\"")
            || stdout.contains("\"status\": \"Acknowledged\""),
        "{stdout}"
    );
    // Every printed body is valid JSON, including the alert whose rule name holds quotes.
    let bodies: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with("           {"))
        .map(|l| serde_json::from_str(l.trim()).expect("printed body is JSON"))
        .collect();
    assert!(bodies.len() >= 6, "{stdout}");
    // The SOAR closed its tickets: the alerts turned Closed in Sekoia, with the ticket first
    // commented back on them, and the SOAR was not told of its own change.
    assert!(
        stdout.matches("is now Closed (from the SOAR)").count() >= 3,
        "{stdout}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let patched: Vec<serde_json::Value> = lines
        .windows(2)
        .filter(|w| w[0].contains("PATCH /soar/"))
        .map(|w| serde_json::from_str(w[1].trim()).expect("printed body is JSON"))
        .collect();
    assert!(patched.len() >= 3, "{stdout}");
    assert!(
        patched.iter().all(|b| b["status"] != "Closed"),
        "a change made by the SOAR was echoed back to it:\n{stdout}"
    );
    assert!(
        stdout
            .matches("commented by alertsync: SOAR ticket SOAR-")
            .count()
            >= 3,
        "the ticket keys were not commented back:\n{stdout}"
    );
    assert!(
        stdout
            .contains("3 alerts delivered to both destinations, their ticket keys commented back"),
        "{stdout}"
    );
    // It stops as it says: nothing after the last line tries to reach a stopped service.
    let stopping = stdout.find("; stopping.").expect("the demo says it stops");
    assert!(!stdout[stopping..].contains("unreachable"), "{stdout}");
}
