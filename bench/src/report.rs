//! Figures: one [`RunResult`] per run, medians over repeats, the human table, the
//! `BENCH_SUMMARY` line and the JSON document.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// The targets of issue 7 (ratios against the ceiling measured in the same invocation).
pub mod targets {
    /// Project throughput at least this share of the ceiling's.
    pub const THROUGHPUT_RATIO: f64 = 0.70;
    /// Project p99 at 1000 alerts/s at most this multiple of the ceiling's.
    pub const P99_RATIO: f64 = 2.0;
    /// Peak resident memory per service, MiB.
    pub const RSS_MIB: f64 = 32.0;
    /// Time from spawn to `/readyz` 200, ms.
    pub const READY_MS: f64 = 1000.0;
}

/// Which pipeline a run drove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Who {
    /// The three alertsync services.
    Project,
    /// The lean ceiling.
    Ceiling,
}

impl Who {
    fn label(self) -> &'static str {
        match self {
            Who::Project => "project",
            Who::Ceiling => "ceiling",
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `ns` (sorted here).
    pub fn of(mut ns: Vec<u64>) -> Self {
        if ns.is_empty() {
            return Self::default();
        }
        ns.sort_unstable();
        let at = |p: f64| {
            let rank = ((p * ns.len() as f64).ceil() as usize).clamp(1, ns.len());
            ns[rank - 1] as f64 / 1e6
        };
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: ns[ns.len() - 1] as f64 / 1e6,
        }
    }
}

/// One process's share of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessFigures {
    /// Process name (`alertsync-ingest`, `ceiling`, `nats-server`, `bench`).
    pub name: String,
    /// CPU seconds (user + system) per 1000 delivered alerts.
    pub cpu_s_per_1k: f64,
    /// Peak resident memory during the run, MiB.
    pub rss_peak_mib: f64,
}

/// One run: one pipeline, one pace, one repeat.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// `max` or `rate-<n>`.
    pub scenario: String,
    /// Which pipeline.
    pub who: Who,
    /// Repeat number, from 1.
    pub repeat: usize,
    /// Alerts sent.
    pub alerts: usize,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Target rate, alerts/s (None: as fast as possible).
    pub rate: Option<f64>,
    /// Alerts the webhook accepted (202).
    pub accepted: usize,
    /// Extra webhook attempts (503s, connection errors).
    pub retries: u64,
    /// Distinct alerts the destination received.
    pub delivered: usize,
    /// Alerts sent but never delivered (including any never accepted).
    pub lost: usize,
    /// Receipts beyond the first, counted until the end of the invocation.
    pub duplicated: u64,
    /// Delivered alerts per second, first request to last receipt.
    pub throughput: f64,
    /// Accepted alerts per second, first request to last answer.
    pub send_rate: f64,
    /// Largest lateness of a request against the fixed-rate schedule, ms.
    pub max_schedule_lag_ms: f64,
    /// Webhook accept (202) → destination receipt.
    pub latency_ms: Latency,
    /// CPU seconds per 1000 alerts of the pipeline's own processes together.
    pub pipeline_cpu_s_per_1k: f64,
    /// Per process: the pipeline's, then nats-server and the benchmark itself.
    pub processes: Vec<ProcessFigures>,
}

impl RunResult {
    fn process(&self, name: &str) -> Option<&ProcessFigures> {
        self.processes.iter().find(|p| p.name == name)
    }
}

/// Time from spawn to ready, and memory right after, of one process.
#[derive(Debug, Clone, Serialize)]
pub struct Startup {
    /// Process name.
    pub name: String,
    /// Spawn → `/readyz` 200 (the ceiling: → its ready line), ms.
    pub ready_ms: f64,
    /// Resident memory once every process was ready, before any load, MiB.
    pub rss_idle_mib: f64,
    /// Exit code after SIGTERM (None: killed after the grace period, or not stopped yet).
    pub exit_code: Option<i32>,
}

/// The machine and its load.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// MemTotal, MiB.
    pub memory_mib: u64,
    /// /proc/loadavg at start.
    pub load_at_start: String,
    /// /proc/loadavg at the end.
    pub load_at_end: String,
    /// `nats-server --version`.
    pub nats_server: String,
}

/// Everything an invocation measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The command line.
    pub command: String,
    /// Short (CI) mode.
    pub short: bool,
    /// Where it ran.
    pub machine: Machine,
    /// Startup of each process.
    pub startup: Vec<Startup>,
    /// Every run, in order.
    pub runs: Vec<RunResult>,
    /// Warm-up runs (not in the figures; their losses and duplicates still count).
    pub warmups: Vec<RunResult>,
    /// Dead-letter entries the project made (should be 0).
    pub project_dead_letters: u64,
    /// Requests the destination could not credit to any run (should be 0).
    pub destination_strays: u64,
}

/// Median of some values (0 for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Medians over the repeats of one scenario for one pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct Medians {
    /// Scenario.
    pub scenario: String,
    /// Pipeline.
    pub who: Who,
    /// Repeats it is the median of.
    pub repeats: usize,
    /// Lost, summed over repeats.
    pub lost: usize,
    /// Duplicated, summed over repeats.
    pub duplicated: u64,
    /// Delivered alerts/s.
    pub throughput: f64,
    /// Latency percentiles (each the median of the repeats' percentile).
    pub latency_ms: Latency,
    /// Pipeline CPU s per 1000 alerts.
    pub pipeline_cpu_s_per_1k: f64,
    /// nats-server CPU s per 1000 alerts.
    pub nats_cpu_s_per_1k: f64,
    /// Per pipeline process: median CPU s/1k and the largest peak RSS over repeats.
    pub processes: Vec<ProcessFigures>,
}

impl Report {
    /// Lost alerts over every run and warm-up.
    pub fn lost(&self) -> usize {
        self.runs.iter().chain(&self.warmups).map(|r| r.lost).sum()
    }

    /// Duplicated receipts over every run and warm-up.
    pub fn duplicated(&self) -> u64 {
        self.runs
            .iter()
            .chain(&self.warmups)
            .map(|r| r.duplicated)
            .sum()
    }

    /// Scenarios in the order they ran.
    fn scenarios(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.runs {
            if !out.contains(&r.scenario) {
                out.push(r.scenario.clone());
            }
        }
        out
    }

    /// Medians of `scenario` for `who`, if it ran.
    pub fn medians(&self, scenario: &str, who: Who) -> Option<Medians> {
        let runs: Vec<&RunResult> = self
            .runs
            .iter()
            .filter(|r| r.scenario == scenario && r.who == who)
            .collect();
        if runs.is_empty() {
            return None;
        }
        let m = |f: &dyn Fn(&RunResult) -> f64| median(runs.iter().map(|r| f(r)).collect());
        let mut processes = Vec::new();
        for p in &runs[0].processes {
            let name = p.name.clone();
            processes.push(ProcessFigures {
                cpu_s_per_1k: m(&|r| r.process(&name).map_or(0.0, |p| p.cpu_s_per_1k)),
                rss_peak_mib: runs
                    .iter()
                    .filter_map(|r| r.process(&name))
                    .map(|p| p.rss_peak_mib)
                    .fold(0.0, f64::max),
                name,
            });
        }
        Some(Medians {
            scenario: scenario.to_string(),
            who,
            repeats: runs.len(),
            lost: runs.iter().map(|r| r.lost).sum(),
            duplicated: runs.iter().map(|r| r.duplicated).sum(),
            throughput: m(&|r| r.throughput),
            latency_ms: Latency {
                p50: m(&|r| r.latency_ms.p50),
                p90: m(&|r| r.latency_ms.p90),
                p99: m(&|r| r.latency_ms.p99),
                max: m(&|r| r.latency_ms.max),
            },
            pipeline_cpu_s_per_1k: m(&|r| r.pipeline_cpu_s_per_1k),
            nats_cpu_s_per_1k: m(&|r| r.process("nats-server").map_or(0.0, |p| p.cpu_s_per_1k)),
            processes,
        })
    }

    /// The scenario the p99 target is judged on: `rate-1000` if it ran, else the fastest
    /// fixed rate, else `max`.
    fn p99_scenario(&self) -> Option<String> {
        let scenarios = self.scenarios();
        if scenarios.iter().any(|s| s == "rate-1000") {
            return Some("rate-1000".into());
        }
        self.runs
            .iter()
            .filter_map(|r| r.rate.map(|rate| (rate, r.scenario.clone())))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, s)| s)
            .or_else(|| scenarios.first().cloned())
    }

    /// The machine-readable summary (also the body of the `BENCH_SUMMARY` line).
    pub fn summary(&self) -> serde_json::Value {
        let pair = |scenario: &str| {
            (
                self.medians(scenario, Who::Project),
                self.medians(scenario, Who::Ceiling),
            )
        };
        let ratio = |a: f64, b: f64| if b > 0.0 { Some(a / b) } else { None };
        let mut out = serde_json::Map::new();
        out.insert("short".into(), self.short.into());
        out.insert("lost".into(), self.lost().into());
        out.insert("duplicated".into(), self.duplicated().into());
        out.insert("dead_letters".into(), self.project_dead_letters.into());
        let (p, c) = pair("max");
        let throughput = serde_json::json!({
            "project": p.as_ref().map(|m| m.throughput),
            "ceiling": c.as_ref().map(|m| m.throughput),
            "ratio": p.as_ref().zip(c.as_ref()).and_then(|(p, c)| ratio(p.throughput, c.throughput)),
        });
        out.insert("throughput_per_s".into(), throughput);
        let cpu = serde_json::json!({
            "project": p.as_ref().map(|m| m.pipeline_cpu_s_per_1k),
            "ceiling": c.as_ref().map(|m| m.pipeline_cpu_s_per_1k),
            "ratio": p.as_ref().zip(c.as_ref()).and_then(|(p, c)| ratio(p.pipeline_cpu_s_per_1k, c.pipeline_cpu_s_per_1k)),
        });
        out.insert("cpu_s_per_1k_max".into(), cpu);
        if let Some(s) = self.p99_scenario() {
            let (p, c) = pair(&s);
            out.insert(
                "p99_ms".into(),
                serde_json::json!({
                    "scenario": s,
                    "project": p.as_ref().map(|m| m.latency_ms.p99),
                    "ceiling": c.as_ref().map(|m| m.latency_ms.p99),
                    "ratio": p.as_ref().zip(c.as_ref()).and_then(|(p, c)| ratio(p.latency_ms.p99, c.latency_ms.p99)),
                }),
            );
        }
        let mut rss = serde_json::Map::new();
        let mut ready = serde_json::Map::new();
        for s in &self.startup {
            ready.insert(s.name.clone(), s.ready_ms.into());
            let peak = self
                .runs
                .iter()
                .filter_map(|r| r.process(&s.name))
                .map(|p| p.rss_peak_mib)
                .fold(s.rss_idle_mib, f64::max);
            rss.insert(
                s.name.clone(),
                serde_json::json!({"idle": s.rss_idle_mib, "peak": peak}),
            );
        }
        out.insert("rss_mib".into(), rss.into());
        out.insert("ready_ms".into(), ready.into());
        out.insert("targets".into(), self.targets().into());
        out.insert(
            "load_at_start".into(),
            self.machine.load_at_start.clone().into(),
        );
        serde_json::Value::Object(out)
    }

    /// Each target of issue 7 and whether this invocation met it (absent when not measured).
    pub fn targets(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut t = serde_json::Map::new();
        let mut set = |k: &str, ok: bool| {
            t.insert(k.into(), ok.into());
        };
        if let (Some(p), Some(c)) = (
            self.medians("max", Who::Project),
            self.medians("max", Who::Ceiling),
        ) {
            set(
                "throughput_ratio",
                p.throughput >= targets::THROUGHPUT_RATIO * c.throughput,
            );
        }
        if let Some(s) = self.p99_scenario()
            && let (Some(p), Some(c)) = (
                self.medians(&s, Who::Project),
                self.medians(&s, Who::Ceiling),
            )
        {
            set(
                "p99_ratio",
                p.latency_ms.p99 <= targets::P99_RATIO * c.latency_ms.p99,
            );
        }
        let services: Vec<&Startup> = self
            .startup
            .iter()
            .filter(|s| s.name.starts_with("alertsync-"))
            .collect();
        if !services.is_empty() {
            let peak_ok = services.iter().all(|s| {
                self.runs
                    .iter()
                    .filter_map(|r| r.process(&s.name))
                    .map(|p| p.rss_peak_mib)
                    .fold(s.rss_idle_mib, f64::max)
                    <= targets::RSS_MIB
            });
            set("rss", peak_ok);
            set(
                "ready",
                services.iter().all(|s| s.ready_ms < targets::READY_MS),
            );
        }
        set(
            "no_loss_no_duplicate",
            self.lost() == 0 && self.duplicated() == 0,
        );
        t
    }

    /// The human-readable tables.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(
            s,
            "machine: {} CPUs ({}), {} MiB; load average at start {} / at end {}; {}",
            m.cpus, m.cpu_model, m.memory_mib, m.load_at_start, m.load_at_end, m.nats_server
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<10} {:<8} {:>3} {:>9} {:>5} {:>4} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
            "run",
            "who",
            "n",
            "delivered",
            "lost",
            "dup",
            "alerts/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "cpu s/1k",
            "nats s/1k"
        );
        for scenario in self.scenarios() {
            let p = self.medians(&scenario, Who::Project);
            let c = self.medians(&scenario, Who::Ceiling);
            for m in [&p, &c].into_iter().flatten() {
                let delivered: usize = self
                    .runs
                    .iter()
                    .filter(|r| r.scenario == scenario && r.who == m.who)
                    .map(|r| r.delivered)
                    .sum();
                let _ = writeln!(
                    s,
                    "{:<10} {:<8} {:>3} {:>9} {:>5} {:>4} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.3} {:>9.3}",
                    scenario,
                    m.who.label(),
                    m.repeats,
                    delivered,
                    m.lost,
                    m.duplicated,
                    m.throughput,
                    m.latency_ms.p50,
                    m.latency_ms.p90,
                    m.latency_ms.p99,
                    m.latency_ms.max,
                    m.pipeline_cpu_s_per_1k,
                    m.nats_cpu_s_per_1k
                );
            }
            if let (Some(p), Some(c)) = (&p, &c) {
                let r = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
                let _ = writeln!(
                    s,
                    "{:<10} {:<8} {:>3} {:>9} {:>5} {:>4} {:>9.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>9.2}",
                    scenario,
                    "ratio",
                    "",
                    "",
                    "",
                    "",
                    r(p.throughput, c.throughput),
                    r(p.latency_ms.p50, c.latency_ms.p50),
                    r(p.latency_ms.p90, c.latency_ms.p90),
                    r(p.latency_ms.p99, c.latency_ms.p99),
                    r(p.latency_ms.max, c.latency_ms.max),
                    r(p.pipeline_cpu_s_per_1k, c.pipeline_cpu_s_per_1k),
                    r(p.nats_cpu_s_per_1k, c.nats_cpu_s_per_1k)
                );
            }
        }
        let _ = writeln!(
            s,
            "(n: repeats; figures are medians over them, lost/dup are totals; latency is webhook 202 → destination receipt; ratio = project / ceiling)"
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<20} {:>9} {:>13} {:>13} {:>14} {:>6}",
            "process", "ready ms", "idle RSS MiB", "peak RSS MiB", "cpu s/1k (max)", "exit"
        );
        for st in &self.startup {
            let peak = self
                .runs
                .iter()
                .filter_map(|r| r.process(&st.name))
                .map(|p| p.rss_peak_mib)
                .fold(st.rss_idle_mib, f64::max);
            let cpu = [Who::Project, Who::Ceiling]
                .into_iter()
                .filter_map(|w| self.medians("max", w))
                .flat_map(|m| m.processes)
                .find(|p| p.name == st.name)
                .map_or("-".to_string(), |p| format!("{:.3}", p.cpu_s_per_1k));
            let exit = st.exit_code.map_or("-".to_string(), |c| c.to_string());
            let _ = writeln!(
                s,
                "{:<20} {:>9.0} {:>13.1} {:>13.1} {:>14} {:>6}",
                st.name, st.ready_ms, st.rss_idle_mib, peak, cpu, exit
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "dead letters: {}   destination strays: {}   lost: {}   duplicated: {}",
            self.project_dead_letters,
            self.destination_strays,
            self.lost(),
            self.duplicated()
        );
        let targets: BTreeMap<String, serde_json::Value> = self.targets().into_iter().collect();
        let line: Vec<String> = targets
            .iter()
            .map(|(k, v)| format!("{k}: {}", if *v == true { "met" } else { "MISSED" }))
            .collect();
        let _ = writeln!(s, "targets (issue 7): {}", line.join(", "));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let l = Latency::of((1..=100).map(|i| i * 1_000_000).collect());
        assert_eq!((l.p50, l.p90, l.p99, l.max), (50.0, 90.0, 99.0, 100.0));
        let one = Latency::of(vec![3_000_000]);
        assert_eq!((one.p50, one.p99), (3.0, 3.0));
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }
}
