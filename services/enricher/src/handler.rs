//! One `AlertCreated` → Get Alert → `EnrichedAlert`.

use std::time::Duration;

use alertsync_config::EnricherConfig;
use alertsync_http::RetryPolicy;
use alertsync_jetstream::{
    Delivery, Handler, Outcome, Subjects, async_nats::jetstream, publish::publish_acked,
};
use alertsync_proto::{Message as _, canonical_uuid, time, v1};
use alertsync_sekoia::{GetAlert, SekoiaClient};
use tokio_util::sync::CancellationToken;

use crate::key::KeyState;

/// How often a message held during a rejected-key episode tells the server it is still alive.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// NAK delay for a held message when the service shuts down.
const RELEASE_DELAY: Duration = Duration::from_secs(5);

/// Handles `AlertCreated` messages.
pub struct EnrichHandler {
    js: jetstream::Context,
    subjects: Subjects,
    sekoia: SekoiaClient,
    key: KeyState,
    cfg: EnricherConfig,
    retry: RetryPolicy,
    stop: CancellationToken,
}

impl EnrichHandler {
    /// A handler publishing with `js`; `stop` releases held messages on shutdown.
    pub fn new(
        js: jetstream::Context,
        subjects: Subjects,
        sekoia: SekoiaClient,
        key: KeyState,
        cfg: EnricherConfig,
        stop: CancellationToken,
    ) -> Self {
        let retry = RetryPolicy {
            base: cfg.retry_base_delay.get(),
            max: cfg.retry_max_delay.get(),
            max_retry_after: cfg.retry_max_delay.get(),
        };
        Self {
            js,
            subjects,
            sekoia,
            key,
            cfg,
            retry,
            stop,
        }
    }

    /// The Sekoia client.
    pub fn sekoia(&self) -> &SekoiaClient {
        &self.sekoia
    }

    /// Wait between checks of a rejected key.
    pub fn rejected_key_retry(&self) -> Duration {
        self.cfg.rejected_key_retry.get()
    }

    /// Holds `d` for one rejected-key wait, keeping it alive on the server. False when the
    /// service is stopping (the caller releases the message).
    async fn hold(&self, d: &Delivery) -> bool {
        let until = tokio::time::Instant::now() + self.cfg.rejected_key_retry.get();
        loop {
            let now = tokio::time::Instant::now();
            if now >= until {
                return true;
            }
            let step = PROGRESS_EVERY.min(until - now);
            tokio::select! {
                _ = self.stop.cancelled() => return false,
                _ = tokio::time::sleep(step) => d.in_progress().await,
            }
            // The key watcher may have seen the key accepted again: retry right away.
            if !self.key.is_rejected() {
                return true;
            }
        }
    }

    async fn publish(
        &self,
        mut created: v1::AlertCreated,
        body: bytes::Bytes,
        d: &Delivery,
    ) -> Outcome {
        if created.community_uuid.is_empty() {
            // Sources like the bare webhook form don't carry the community; the alert does.
            created.community_uuid = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("community_uuid")?.as_str().and_then(canonical_uuid))
                .unwrap_or_default();
        }
        let uuid = created.alert_uuid.clone();
        let subject = self.subjects.enriched(&created.community_uuid);
        let msg = v1::EnrichedAlert {
            created: Some(created),
            alert_json: body.to_vec(),
            fetched_at: Some(time::now()),
        };
        match publish_acked(
            &self.js,
            subject,
            &format!("enriched:{uuid}"),
            None,
            msg.encode_to_vec().into(),
        )
        .await
        {
            Ok(_) => {
                tracing::info!(alert.uuid = %uuid, "alert enriched");
                Outcome::Ack
            }
            Err(e) => {
                tracing::warn!(alert.uuid = %uuid, error = %e, "enriched publish failed; will retry");
                Outcome::Retry {
                    after: self.retry.delay(d.delivered, None),
                }
            }
        }
    }
}

fn poison(reason: String) -> Outcome {
    Outcome::DeadLetter {
        reason,
        last_status: None,
        alert_uuid: String::new(),
    }
}

impl Handler for EnrichHandler {
    async fn handle(&self, d: &Delivery) -> Outcome {
        let created = match v1::AlertCreated::decode(d.payload.as_ref()) {
            Ok(m) => m,
            Err(e) => return poison(format!("poison: undecodable AlertCreated: {e}")),
        };
        let Some(uuid) = canonical_uuid(&created.alert_uuid) else {
            return poison("poison: AlertCreated without a valid alert uuid".into());
        };
        let dead = |reason: String, status: Option<u16>| Outcome::DeadLetter {
            reason,
            last_status: status,
            alert_uuid: uuid.clone(),
        };
        loop {
            match self.sekoia.get_alert(&uuid).await {
                GetAlert::Found(body) => {
                    self.key.accepted();
                    return self.publish(created, body, d).await;
                }
                GetAlert::NotFound => {
                    self.key.accepted();
                    if d.delivered >= self.cfg.not_found_attempts {
                        return dead(
                            format!("Get Alert answered 404 on {} attempts", d.delivered),
                            Some(404),
                        );
                    }
                    return Outcome::Retry {
                        after: self.retry.delay(d.delivered, None),
                    };
                }
                GetAlert::KeyRejected(status) => {
                    // Not the alert's fault: hold it (attempts are not burnt) until the key
                    // works again.
                    self.key.rejected(status);
                    if !self.hold(d).await {
                        return Outcome::Retry {
                            after: RELEASE_DELAY,
                        };
                    }
                }
                GetAlert::Transient {
                    status,
                    retry_after,
                    reason,
                } => {
                    if d.delivered >= self.cfg.max_attempts {
                        return dead(
                            format!("gave up after {} attempts: {reason}", d.delivered),
                            status,
                        );
                    }
                    tracing::debug!(alert.uuid = %uuid, %reason, attempt = d.delivered, "Get Alert failed; will retry");
                    return Outcome::Retry {
                        after: self.retry.delay(d.delivered, retry_after),
                    };
                }
                GetAlert::Permanent { status, reason } => return dead(reason, Some(status)),
            }
        }
    }
}
