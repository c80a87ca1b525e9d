//! Whether Sekoia accepts our API key: a readiness check (`sekoia_key`), logged once per
//! episode, re-checked with `GET /v1/me` periodically (more often while rejected, so a fixed
//! key is noticed even when no alert is waiting). A rejected key is a not-ready state with a
//! message saying what to fix, never a crash loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use alertsync_runtime::Health;

use crate::{KeyCheck, SekoiaClient};
use tokio_util::sync::CancellationToken;

const CHECK: &str = "sekoia_key";

/// What runs when a rejected key is accepted again.
type OnAccepted = Box<dyn Fn() + Send + Sync>;

/// Shared key state of one enricher process.
#[derive(Clone)]
pub struct KeyState {
    health: Health,
    rejected: Arc<AtomicBool>,
    on_accepted: Arc<std::sync::Mutex<Vec<OnAccepted>>>,
}

impl KeyState {
    /// Starts as accepted-until-told-otherwise; the first check runs at once.
    pub fn new(health: Health) -> Self {
        health.set(CHECK, true, "not checked yet");
        Self {
            health,
            rejected: Arc::new(AtomicBool::new(false)),
            on_accepted: Arc::default(),
        }
    }

    /// Sekoia answered 401/403.
    pub fn rejected(&self, status: u16) {
        let message = format!(
            "Sekoia rejected the API key ({status}): set sekoia.api_key to a valid key with \
             the \"View alerts\" permission; alerts wait in the stream until then"
        );
        self.health.set(CHECK, false, message.clone());
        if !self.rejected.swap(true, Ordering::SeqCst) {
            tracing::error!("{message}");
        }
    }

    /// Calls `f` whenever a rejected key is seen accepted again (the enricher's gate probes
    /// Sekoia at once instead of waiting for its next probe).
    pub fn on_accepted(&self, f: impl Fn() + Send + Sync + 'static) {
        self.on_accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(f));
    }

    /// Sekoia accepted the key.
    pub fn accepted(&self) {
        if self.rejected.swap(false, Ordering::SeqCst) {
            tracing::info!("Sekoia accepts the API key again; resuming");
            for f in self
                .on_accepted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
            {
                f();
            }
        }
        self.health.set(CHECK, true, "accepted");
    }

    /// Whether the key is currently rejected.
    pub fn is_rejected(&self) -> bool {
        self.rejected.load(Ordering::SeqCst)
    }

    /// Checks the key now, then every `interval` (every `rejected_retry` while it is rejected),
    /// until `shutdown`.
    pub async fn watch(
        self,
        sekoia: SekoiaClient,
        interval: Duration,
        rejected_retry: Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            match sekoia.check_key().await {
                KeyCheck::Accepted => self.accepted(),
                KeyCheck::Rejected(s) => self.rejected(s),
                KeyCheck::Unavailable(reason) => {
                    tracing::warn!(%reason, "cannot check the Sekoia key right now")
                }
            }
            let wait = if self.is_rejected() {
                rejected_retry
            } else {
                interval
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
