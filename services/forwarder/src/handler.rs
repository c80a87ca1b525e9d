//! One `EnrichedAlert` delivered to one destination.

use alertsync_http::Class;
use alertsync_jetstream::{Delivery, Handler, Outcome};
use alertsync_proto::{Message as _, canonical_uuid, v1};
use alertsync_template::Context;

use crate::destination::{Attempt, Destination};

/// Delivers to one destination.
pub struct ForwardHandler {
    dest: Destination,
}

impl ForwardHandler {
    /// A handler for `dest`.
    pub fn new(dest: Destination) -> Self {
        Self { dest }
    }
}

impl Handler for ForwardHandler {
    async fn handle(&self, d: &Delivery) -> Outcome {
        let dead = |reason: String, status: Option<u16>, uuid: &str| Outcome::DeadLetter {
            reason,
            last_status: status,
            alert_uuid: uuid.to_string(),
        };
        let enriched = match v1::EnrichedAlert::decode(d.payload.as_ref()) {
            Ok(m) => m,
            Err(e) => return dead(format!("poison: undecodable EnrichedAlert: {e}"), None, ""),
        };
        let Some(uuid) = enriched
            .created
            .as_ref()
            .and_then(|c| canonical_uuid(&c.alert_uuid))
        else {
            return dead(
                "poison: EnrichedAlert without a valid alert uuid".into(),
                None,
                "",
            );
        };
        let alert: serde_json::Value = match serde_json::from_slice(&enriched.alert_json) {
            Ok(v) => v,
            Err(e) => {
                return dead(
                    format!("poison: the alert body is not JSON: {e}"),
                    None,
                    &uuid,
                );
            }
        };
        let ctx = Context::new(&alert);
        let request = match self.dest.render(&ctx, &uuid) {
            Ok(r) => r,
            Err(reason) => return dead(reason, None, &uuid),
        };
        match self.dest.send(request).await {
            Attempt::Delivered(status) => {
                tracing::info!(alert.uuid = %uuid, destination = %self.dest.name, status, attempt = d.delivered, "delivered");
                Outcome::Ack
            }
            Attempt::Failed {
                status,
                class: Class::Transient,
                retry_after,
                reason,
            } if d.delivered < self.dest.max_attempts => {
                let after = self.dest.retry.delay(d.delivered, retry_after);
                tracing::info!(alert.uuid = %uuid, destination = %self.dest.name, ?status, attempt = d.delivered, retry_in = ?after, %reason, "delivery failed; will retry");
                Outcome::Retry { after }
            }
            Attempt::Failed {
                status,
                class,
                reason,
                ..
            } => {
                let reason = if class == Class::Transient {
                    format!("gave up after {} attempts: {reason}", d.delivered)
                } else {
                    reason
                };
                dead(reason, status, &uuid)
            }
        }
    }
}
