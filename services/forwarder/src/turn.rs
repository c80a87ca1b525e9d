//! One replica's turn at an alert's updates for one destination, across replicas.
//!
//! Within a replica, an alert's events are handled one at a time ([`crate::later`]). With
//! several forwarder replicas, two states of one alert could otherwise be sent at the same
//! moment and reach the tool in either order, leaving it on the older one. So an update is
//! sent only under a lease in the delivery records (`<destination>.<alert uuid>.turn`): taken
//! with a create (or, once expired, a compare-and-swap), renewed while the update is held (a
//! closed gate can hold it for long), and given back after. A replica killed while holding it
//! delays that alert's updates by at most [`LEASE`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alertsync_nats::async_nats::jetstream::kv;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a turn lasts unless renewed.
pub const LEASE: Duration = Duration::from_secs(30);

/// A turn held; give it back with [`Turn::release`] (dropped, it lapses after [`LEASE`]).
pub struct Turn {
    store: kv::Store,
    key: String,
    revision: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    renewal: Option<JoinHandle<()>>,
}

fn lease_value() -> bytes::Bytes {
    let until = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(LEASE)
        .as_millis();
    until.to_string().into()
}

fn lapsed(value: &[u8]) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    // A value that does not read as a time is not a lease anyone holds.
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse::<u128>().ok())
        .is_none_or(|until| until <= now)
}

/// Takes the turn at `key`: `Ok(None)` while another replica holds it, `Err` when NATS
/// cannot tell.
pub async fn take(store: &kv::Store, key: String) -> Result<Option<Turn>, String> {
    use kv::CreateErrorKind;
    let revision = match store.create(&key, lease_value()).await {
        Ok(revision) => revision,
        Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
            let entry = store.entry(key.clone()).await.map_err(|e| e.to_string())?;
            let Some(entry) = entry else {
                // Given back in between: the next try takes it.
                return Ok(None);
            };
            let free = entry.operation != kv::Operation::Put || lapsed(&entry.value);
            if !free {
                return Ok(None);
            }
            match store.update(&key, lease_value(), entry.revision).await {
                Ok(revision) => revision,
                // Another replica took it first.
                Err(_) => return Ok(None),
            }
        }
        Err(e) => return Err(e.to_string()),
    };
    let revision = Arc::new(AtomicU64::new(revision));
    let (stop, mut stopped) = oneshot::channel();
    let renewal = tokio::spawn({
        let (store, key, revision) = (store.clone(), key.clone(), revision.clone());
        async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tokio::time::sleep(LEASE / 3) => {}
                }
                let current = revision.load(Ordering::SeqCst);
                match store.update(&key, lease_value(), current).await {
                    Ok(next) => revision.store(next, Ordering::SeqCst),
                    Err(e) => {
                        tracing::warn!(%key, error = %e, "cannot renew the turn at the alert's updates");
                        return;
                    }
                }
            }
        }
    });
    Ok(Some(Turn {
        store: store.clone(),
        key,
        revision,
        stop: Some(stop),
        renewal: Some(renewal),
    }))
}

impl Turn {
    /// Gives the turn back, unless it lapsed and another replica holds it now.
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(renewal) = self.renewal.take() {
            // A renewal under way finishes first, so the revision below is the last one.
            let _ = renewal.await;
        }
        let revision = self.revision.load(Ordering::SeqCst);
        if let Err(e) = self
            .store
            .delete_expect_revision(&self.key, Some(revision))
            .await
        {
            tracing::debug!(key = %self.key, error = %e, "the turn was not given back; it lapses");
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Not given back (the handler was dropped): stop renewing; the lease lapses.
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
    }
}
