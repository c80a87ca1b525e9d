//! One benchmark invocation: sets everything up, runs the project and the ceiling in turn on
//! every scenario (interleaved, so background load hits both alike), and gathers a
//! [`Report`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alertsync_nats_launcher::NatsServer;
use hyper::{Request, StatusCode};

use crate::ceiling::{Ceiling, WorkerArgs};
use crate::fakes::{FastDestination, FastSekoia};
use crate::load::{self, Pace};
use crate::procs::{self, RssSampler, Service};
use crate::report::{Latency, Machine, ProcessFigures, Report, RunResult, Startup, Who};
use crate::tracker::{self, Tracker};
use crate::wire::{self, Client};

/// The seed's main Request URL template (as in `alertsync.example.toml` and the end-to-end
/// tests' `MAIN_TEMPLATE`).
pub const MAIN_TEMPLATE: &str = r#"{"alert_short_id":"{{ node.0['alert_uuid'] }}", "rule_name":"{{ node.1['rule']['name'] }}","rule_severity":"{{ node.1['rule']['severity'] }}","description":"This is a description"}"#;

const WEBHOOK_TOKEN: &str = "bench-webhook-token-0123456789";
const SEKOIA_KEY: &str = "bench-sekoia-key-abcdef";
const DESTINATION_KEY: &str = "bench-destination-key-8887766";
/// The services, in pipeline order.
const SERVICES: [&str; 3] = [
    "alertsync-ingest",
    "alertsync-enricher",
    "alertsync-forwarder",
];
/// The one-process form of the project: `alertsync run`, reported under this name.
const ONE_PROCESS: &str = "alertsync-run";
/// Longest wait for a service to become ready.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long after the services' start the measured runs begin, at the earliest. Within 2 s of a
/// consumer's creation a stage counts a message as possibly delivered before, and the enricher
/// an alert created within 3 s of its stream's marking, so the forwarder reads the delivery
/// records then, as after a first start: the runs measure a deployment that has been running.
const SETTLE: Duration = Duration::from_secs(4);
/// A run ends when nothing new arrived for this long…
const DRAIN_IDLE: Duration = Duration::from_secs(15);
/// …or this long after the last request went out.
const DRAIN_MAX: Duration = Duration::from_secs(120);

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Alerts in the as-fast-as-possible run.
    pub alerts: usize,
    /// Requests in flight in the as-fast-as-possible run.
    pub concurrency: usize,
    /// Fixed rates, alerts/s.
    pub rates: Vec<f64>,
    /// Seconds per fixed-rate run.
    pub rate_seconds: f64,
    /// Requests in flight at most in fixed-rate runs.
    pub rate_concurrency: usize,
    /// Times each run is repeated.
    pub repeat: usize,
    /// Alerts sent before measuring (each pipeline).
    pub warmup: usize,
    /// Drive the project.
    pub project: bool,
    /// Drive the ceiling.
    pub ceiling: bool,
    /// Run the project as one `alertsync run` process instead of three.
    pub one_process: bool,
    /// Directory of the service binaries.
    pub bin_dir: PathBuf,
    /// `enricher.concurrency` and each destination's `concurrency`, if not the defaults.
    pub service_concurrency: Option<usize>,
    /// Messages in flight per ceiling stage.
    pub ceiling_concurrency: usize,
    /// Threads of the ceiling's runtime.
    pub ceiling_threads: u16,
    /// Where each run's per-alert times go (`--alert-times`).
    pub alert_times: Option<PathBuf>,
    /// `RUST_LOG` of the services.
    pub service_log: String,
    /// Extra environment of the services.
    pub service_env: Vec<(String, String)>,
    /// CI mode (recorded in the report).
    pub short: bool,
    /// The command line (recorded in the report).
    pub command: String,
}

/// One scenario: how many alerts, at which pace, with how many requests in flight.
#[derive(Debug, Clone)]
struct Scenario {
    name: String,
    alerts: usize,
    pace: Pace,
    concurrency: usize,
}

impl Plan {
    fn scenarios(&self) -> Vec<Scenario> {
        let mut out = vec![Scenario {
            name: "max".into(),
            alerts: self.alerts,
            pace: Pace::Max,
            concurrency: self.concurrency,
        }];
        for &rate in &self.rates {
            out.push(Scenario {
                name: format!("rate-{rate}"),
                alerts: ((rate * self.rate_seconds).round() as usize).max(1),
                pace: Pace::Rate(rate),
                concurrency: self.rate_concurrency,
            });
        }
        out
    }
}

/// A pipeline under test: where its webhook is and which processes are its own.
struct Target {
    who: Who,
    webhook: String,
    /// (name, pid) of the pipeline's processes.
    pids: Vec<(String, u32)>,
}

/// Shared by every run of the invocation.
struct Bench {
    client: Client,
    destination: FastDestination,
    sampler: RssSampler,
    ticks: u64,
    nats_pid: Option<u32>,
    invocation: u32,
    next_tag: u16,
}

impl Bench {
    /// Sends one scenario through `target` and measures it.
    async fn run(&mut self, target: &Target, scenario: &Scenario, repeat: usize) -> Tracked {
        self.next_tag += 1;
        let run = Arc::new(Tracker::new(
            tracker::tag(self.invocation, self.next_tag),
            scenario.alerts,
        ));
        self.destination.track(run.clone());
        let mut watched: Vec<(String, u32)> = target.pids.clone();
        if let Some(pid) = self.nats_pid {
            watched.push(("nats-server".into(), pid));
        }
        watched.push(("bench".into(), std::process::id()));
        let cpu_before: Vec<f64> = watched
            .iter()
            .map(|(_, pid)| procs::cpu_seconds(*pid, self.ticks).unwrap_or(0.0))
            .collect();
        self.sampler.reset();
        let sent = load::drive(
            &self.client,
            &target.webhook,
            WEBHOOK_TOKEN,
            run.clone(),
            scenario.concurrency,
            scenario.pace,
        )
        .await;
        let deadline = tokio::time::Instant::now() + DRAIN_MAX;
        run.wait_all(sent.accepted, DRAIN_IDLE, deadline).await;
        let delivered = run.distinct();
        let per_1k = |cpu: f64| {
            if delivered == 0 {
                0.0
            } else {
                cpu * 1000.0 / delivered as f64
            }
        };
        let processes: Vec<ProcessFigures> = watched
            .iter()
            .zip(&cpu_before)
            .map(|((name, pid), before)| ProcessFigures {
                name: name.clone(),
                cpu_s_per_1k: per_1k(
                    procs::cpu_seconds(*pid, self.ticks).unwrap_or(*before) - before,
                ),
                rss_peak_mib: self.sampler.peak_kib(*pid) as f64 / 1024.0,
            })
            .collect();
        let pipeline_cpu_s_per_1k = processes
            .iter()
            .filter(|p| target.pids.iter().any(|(n, _)| *n == p.name))
            .map(|p| p.cpu_s_per_1k)
            .sum();
        let span_s = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e9;
        let rate_of = |n: usize, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let result = RunResult {
            scenario: scenario.name.clone(),
            who: target.who,
            repeat,
            alerts: scenario.alerts,
            concurrency: scenario.concurrency,
            rate: match scenario.pace {
                Pace::Max => None,
                Pace::Rate(r) => Some(r),
            },
            accepted: sent.accepted,
            retries: sent.retries,
            delivered,
            lost: scenario.alerts - delivered,
            duplicated: run.duplicates(),
            throughput: rate_of(delivered, span_s(sent.first_ns, run.last_receipt_ns())),
            send_rate: rate_of(sent.accepted, span_s(sent.first_ns, sent.last_ns)),
            max_schedule_lag_ms: sent.max_lag.as_secs_f64() * 1e3,
            latency_ms: Latency::of(run.latencies_ns()),
            pipeline_cpu_s_per_1k,
            processes,
        };
        Tracked { result, run }
    }
}

/// Keeps the tracker of a result so late duplicates can be counted at the end.
struct Tracked {
    result: RunResult,
    run: Arc<Tracker>,
}

impl Tracked {
    /// The result with duplicates counted until now.
    fn finish(mut self) -> RunResult {
        self.result.duplicated = self.run.duplicates();
        self.result
    }
}

fn config_text(
    nats: &str,
    prefix: &str,
    sekoia: &str,
    destination: &str,
    listen: [std::net::SocketAddr; 3],
    concurrency: Option<usize>,
) -> String {
    let enricher_concurrency = concurrency
        .map(|c| format!("concurrency = {c}\n"))
        .unwrap_or_default();
    let destination_concurrency = concurrency
        .map(|c| format!("concurrency = {c}\n"))
        .unwrap_or_default();
    format!(
        r#"# Written by alertsync-bench.
[nats]
url = "{nats}"
prefix = "{prefix}"
[sekoia]
base_url = "{sekoia}"
api_key = "${{SEKOIA_API_KEY}}"
[ingest]
listen = "{ingest}"
webhook_token = "${{WEBHOOK_TOKEN}}"
live = false
poll_interval = "0"
[enricher]
listen = "{enricher}"
{enricher_concurrency}[forwarder]
listen = "{forwarder}"

[[destinations]]
name = "soar"
url = "{destination}"
method = "post"
headers = {{ Authorization = "Bearer ${{DESTINATION_KEY}}" }}
json = '''{MAIN_TEMPLATE}'''
{destination_concurrency}"#,
        ingest = listen[0],
        enricher = listen[1],
        forwarder = listen[2],
    )
}

/// Polls `GET http://<addr>/readyz` of each of the service's addresses every 5 ms until it
/// answers 200; returns the time since `spawned` at which the last one did. Fails if the
/// process exits or [`READY_DEADLINE`] passes.
async fn wait_ready(
    client: &Client,
    service: &mut Service,
    spawned: Instant,
) -> anyhow::Result<f64> {
    let deadline = spawned + READY_DEADLINE;
    let mut waiting = service.listen.clone();
    loop {
        let Some(addr) = waiting.first() else {
            return Ok(spawned.elapsed().as_secs_f64() * 1e3);
        };
        let uri: hyper::Uri = format!("http://{addr}/readyz").parse()?;
        let req = Request::get(uri).body(wire::Body::default())?;
        if let Ok(resp) = client.request(req).await {
            let ok = resp.status() == StatusCode::OK;
            let _ = wire::read_body(resp.into_body()).await;
            if ok {
                waiting.remove(0);
                continue;
            }
        }
        if let Some(status) = service.exited() {
            anyhow::bail!(
                "{} exited ({status}) before it was ready; its log:\n{}",
                service.name,
                service.log_tail()
            );
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{} was not ready after {READY_DEADLINE:?}; its log:\n{}",
                service.name,
                service.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn machine(nats_bin: Option<&Path>) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024);
    let nats_server = nats_bin
        .and_then(|b| std::process::Command::new(b).arg("--version").output().ok())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "nats-server ?".into());
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        memory_mib,
        load_at_start: loadavg(),
        load_at_end: String::new(),
        nats_server,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs the whole plan and returns its report.
pub async fn run(plan: Plan) -> anyhow::Result<Report> {
    tracker::now_ns();
    let nats_bin = alertsync_nats_launcher::find_binary().ok();
    let mut machine = machine(nats_bin.as_deref());
    let nats = tokio::task::spawn_blocking(NatsServer::start).await??;
    let sekoia = FastSekoia::start(SEKOIA_KEY).await?;
    let destination = FastDestination::start().await?;
    let client = wire::client();
    let dir = tempfile::Builder::new()
        .prefix("alertsync-bench-")
        .tempdir()?;
    let invocation = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id())
        & 0x7fff_ffff;
    let prefix = format!("bench{invocation:08x}");
    let mut startup = Vec::new();

    // The three services, started together as a deployment would.
    let mut services = Vec::new();
    let mut settled: Option<Instant> = None;
    if plan.project {
        let listen = [
            procs::free_addr()?,
            procs::free_addr()?,
            procs::free_addr()?,
        ];
        let config = dir.path().join("alertsync.toml");
        std::fs::write(
            &config,
            config_text(
                &nats.url(),
                &prefix,
                &sekoia.base_url(),
                &destination.url("/soar"),
                listen,
                plan.service_concurrency,
            ),
        )?;
        let mut env = vec![
            ("SEKOIA_API_KEY", SEKOIA_KEY),
            ("WEBHOOK_TOKEN", WEBHOOK_TOKEN),
            ("DESTINATION_KEY", DESTINATION_KEY),
            ("RUST_LOG", plan.service_log.as_str()),
        ];
        env.extend(
            plan.service_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let spawned = Instant::now();
        settled = Some(spawned + SETTLE);
        if plan.one_process {
            // Every stage in one process, each still serving its own listen address.
            services.push(Service::spawn(
                &plan.bin_dir.join("alertsync"),
                ONE_PROCESS,
                &["run"],
                &config,
                &env,
                &listen,
                dir.path(),
            )?);
        } else {
            for (name, addr) in SERVICES.iter().zip(listen) {
                services.push(Service::spawn(
                    &plan.bin_dir.join(name),
                    name,
                    &[],
                    &config,
                    &env,
                    &[addr],
                    dir.path(),
                )?);
            }
        }
        let mut ready = Vec::new();
        for s in &mut services {
            ready.push(wait_ready(&client, s, spawned).await?);
        }
        for (s, ms) in services.iter().zip(ready) {
            startup.push(Startup {
                name: s.name.clone(),
                ready_ms: ms,
                rss_idle_mib: 0.0,
                exit_code: None,
            });
        }
    }
    let ceiling = if plan.ceiling {
        let started = Instant::now();
        let c = Ceiling::spawn(
            &std::env::current_exe()?,
            &WorkerArgs {
                nats: nats.url(),
                sekoia: sekoia.base_url(),
                destination: destination.url("/ceiling"),
                prefix: format!("{prefix}ceil"),
                concurrency: plan.ceiling_concurrency,
                threads: plan.ceiling_threads,
            },
            WEBHOOK_TOKEN,
            SEKOIA_KEY,
            dir.path(),
        )
        .await?;
        startup.push(Startup {
            name: "ceiling".into(),
            ready_ms: started.elapsed().as_secs_f64() * 1e3,
            rss_idle_mib: 0.0,
            exit_code: None,
        });
        Some(c)
    } else {
        None
    };

    let mut pids: Vec<(String, u32)> = services.iter().map(|s| (s.name.clone(), s.pid())).collect();
    if let Some(c) = &ceiling {
        pids.push(("ceiling".into(), c.pid()));
    }
    for st in &mut startup {
        if let Some((_, pid)) = pids.iter().find(|(n, _)| *n == st.name) {
            st.rss_idle_mib = procs::rss_kib(*pid).unwrap_or(0) as f64 / 1024.0;
        }
    }
    let nats_pid = nats_pid(&nats);
    let mut sampled: Vec<u32> = pids.iter().map(|(_, p)| *p).collect();
    sampled.extend(nats_pid);
    sampled.push(std::process::id());
    let mut bench = Bench {
        client,
        destination,
        sampler: RssSampler::start(sampled),
        ticks: procs::clock_ticks(),
        nats_pid,
        invocation,
        next_tag: 0,
    };
    let mut targets = Vec::new();
    if plan.project {
        targets.push(Target {
            who: Who::Project,
            webhook: format!("http://{}/v1/alerts", services[0].listen[0]),
            pids: pids
                .iter()
                .filter(|(n, _)| n.starts_with("alertsync-"))
                .cloned()
                .collect(),
        });
    }
    if let Some(c) = &ceiling {
        targets.push(Target {
            who: Who::Ceiling,
            webhook: c.webhook_url(),
            pids: vec![("ceiling".into(), c.pid())],
        });
    }

    let mut warmups = Vec::new();
    if plan.warmup > 0 {
        let warm = Scenario {
            name: "warmup".into(),
            alerts: plan.warmup,
            pace: Pace::Max,
            concurrency: plan.concurrency,
        };
        for t in &targets {
            warmups.push(bench.run(t, &warm, 0).await);
        }
    }
    if let Some(at) = settled {
        tokio::time::sleep_until(at.into()).await;
    }
    let mut runs = Vec::new();
    for repeat in 1..=plan.repeat.max(1) {
        for scenario in plan.scenarios() {
            for t in &targets {
                let r = bench.run(t, &scenario, repeat).await;
                eprintln!(
                    "{:<10} {:<8} #{repeat}: {}/{} delivered, {:.0} alerts/s, p99 {:.2} ms",
                    r.result.scenario,
                    format!("{:?}", r.result.who).to_lowercase(),
                    r.result.delivered,
                    r.result.alerts,
                    r.result.throughput,
                    r.result.latency_ms.p99
                );
                if let Some(dir) = &plan.alert_times {
                    let who = format!("{:?}", r.result.who).to_lowercase();
                    let path = dir.join(format!("{}-{who}-{repeat}.tsv", r.result.scenario));
                    std::fs::write(&path, r.run.times_tsv())
                        .map_err(|e| anyhow::anyhow!("--alert-times: {}: {e}", path.display()))?;
                }
                runs.push(r);
            }
        }
    }

    let project_dead_letters = if plan.project {
        dead_letters(&nats.url(), &prefix).await.unwrap_or(u64::MAX)
    } else {
        0
    };
    let destination_strays = bench.destination.strays();
    let grace = Duration::from_secs(20);
    for s in services {
        let name = s.name.clone();
        let code = s.terminate(grace).await;
        if let Some(st) = startup.iter_mut().find(|st| st.name == name) {
            st.exit_code = code;
        }
    }
    if let Some(c) = ceiling {
        let code = c.stop(grace).await;
        if let Some(st) = startup.iter_mut().find(|st| st.name == "ceiling") {
            st.exit_code = code;
        }
    }
    machine.load_at_end = loadavg();
    drop(sekoia);
    Ok(Report {
        command: plan.command,
        short: plan.short,
        machine,
        startup,
        runs: runs.into_iter().map(Tracked::finish).collect(),
        warmups: warmups.into_iter().map(Tracked::finish).collect(),
        project_dead_letters,
        destination_strays,
    })
}

/// The nats-server's pid: the process listening on its port (found through /proc, as the
/// launcher does not expose it).
fn nats_pid(nats: &NatsServer) -> Option<u32> {
    let store = nats.store_dir().to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&store))
                .unwrap_or(false)
        })
}

/// Entries in the project's dead-letter stream.
async fn dead_letters(url: &str, prefix: &str) -> anyhow::Result<u64> {
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client);
    let name = alertsync_nats::Subjects::new(prefix).dead_letter_stream();
    let mut stream = js.get_stream(name).await?;
    Ok(stream.info().await?.state.messages)
}
