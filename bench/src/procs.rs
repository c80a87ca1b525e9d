//! Child processes and what `/proc` says about them: resident memory (`VmRSS`, sampled
//! periodically for peaks) and CPU time (`utime + stime`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

/// How often resident memory is sampled.
const RSS_EVERY: Duration = Duration::from_millis(50);

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, usually 100).
pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// CPU seconds (user + system) used so far by `pid`.
pub fn cpu_seconds(pid: u32, ticks: u64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    // After the name: state(3) … utime(14) stime(15); `rest` starts at field 3.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / ticks as f64)
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Samples the resident memory of some processes in the background and keeps each one's
/// peak since the last [`RssSampler::reset`].
pub struct RssSampler {
    peaks: Arc<Mutex<HashMap<u32, u64>>>,
    task: JoinHandle<()>,
}

impl RssSampler {
    /// Samples `pids` every 50 ms.
    pub fn start(pids: Vec<u32>) -> Self {
        let peaks = Arc::new(Mutex::new(HashMap::new()));
        let shared = peaks.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(RSS_EVERY);
            loop {
                tick.tick().await;
                let mut peaks = shared.lock().unwrap_or_else(|p| p.into_inner());
                for &pid in &pids {
                    if let Some(rss) = rss_kib(pid) {
                        let peak = peaks.entry(pid).or_insert(0);
                        *peak = (*peak).max(rss);
                    }
                }
            }
        });
        Self { peaks, task }
    }

    /// Forgets the peaks (the next samples start new ones).
    pub fn reset(&self) {
        self.peaks.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Peak resident memory of `pid` since the last reset, in KiB (at least its current one).
    pub fn peak_kib(&self, pid: u32) -> u64 {
        let sampled = self
            .peaks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&pid)
            .copied()
            .unwrap_or(0);
        sampled.max(rss_kib(pid).unwrap_or(0))
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A service binary running as a child, killed when dropped.
pub struct Service {
    /// Its name (`alertsync-ingest`…).
    pub name: String,
    /// Its health and readiness addresses (one per stage it runs; the first is where the
    /// ingest's webhook is when it runs the ingest).
    pub listen: Vec<std::net::SocketAddr>,
    child: Child,
    log: PathBuf,
}

impl Service {
    /// Starts `binary args.. --config config` with exactly `env` (nothing else is inherited,
    /// so no `OTEL_*` or `RUST_LOG` of the caller leaks in), logging to `dir/<name>.log`.
    pub fn spawn(
        binary: &Path,
        name: &str,
        args: &[&str],
        config: &Path,
        env: &[(&str, &str)],
        listen: &[std::net::SocketAddr],
        dir: &Path,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            binary.is_file(),
            "{} is missing: build the services first (`cargo build --release --bins`, or pass \
             --bin-dir target/debug after `cargo build --bins`)",
            binary.display()
        );
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(binary);
        cmd.args(args)
            .arg("--config")
            .arg(config)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", binary.display()))?;
        Ok(Self {
            name: name.to_string(),
            listen: listen.to_vec(),
            child,
            log,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The end of its log (for error messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then its exit code within `grace` (None: killed after the grace period).
    pub async fn terminate(mut self, grace: Duration) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            if let Some(status) = self.exited() {
                return status.code();
            }
            if tokio::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback address (the port may be taken by the time it is used; the caller's
/// readiness wait then fails clearly).
pub fn free_addr() -> std::io::Result<std::net::SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_cpu_and_memory() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(cpu_seconds(pid, clock_ticks()).unwrap() >= 0.0);
    }
}
