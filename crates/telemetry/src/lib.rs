//! Observability of the alertsync services.
//!
//! - [`traces`]: the process-wide setup: OpenTelemetry spans exported over OTLP when
//!   configured by the standard `OTEL_*` variables (else spans keep only their trace and span
//!   ids, `ids`), log lines (human or JSON) with trace ids.
//! - [`propagation`]: W3C trace context into and out of NATS headers and HTTP requests.
//! - [`Metrics`]: every counter, gauge and histogram the services keep, one instance per
//!   service (so tests running several services in one process see each one's own numbers),
//!   served as Prometheus/OpenMetrics text by [`metrics_router`] on `GET /metrics`.
//!
//! Names follow Prometheus conventions (`alertsync_…_total`, `_seconds`); label values are
//! bounded (stage, source, destination name, status class), never a uuid.

mod ids;
pub mod propagation;
pub mod traces;

/// Whether spans that only an exported trace shows are worth creating: false when no
/// exporter is configured (the `ids` layer is installed).
///
/// Without an exporter a span is seen only through its trace id (log lines, `traceparent`), and
/// the one span each service opens per alert (the webhook request, the worker's `process`)
/// already carries it. The steps inside it (Sekoia's Get Alert, a publish, a render, a delivery
/// attempt) each cost the registry a slot, a parent link and an extensions map, a few percent
/// of each service's CPU in the benchmark for nothing anyone can see.
#[doc(hidden)]
pub fn detail_spans() -> bool {
    !ids::installed()
}

/// `tracing::info_span!` for a step inside an alert's span (see [`detail_spans`]): the span
/// when traces are exported, else `Span::none()`, which the step's propagation and records
/// then skip, so that the enclosing span's context is the one that travels on.
#[macro_export]
macro_rules! detail_span {
    ($($arg:tt)*) => {
        if $crate::detail_spans() {
            ::tracing::info_span!($($arg)*)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// The producer span of a publish of an alert's message to `subject` (see [`detail_span!`]).
/// `alertsync.source` and `alertsync.duplicate` are recorded by the ingest, which knows them.
pub fn publish_span(subject: &str, alert_uuid: &str, short_id: &str) -> tracing::Span {
    detail_span!(
        "publish",
        otel.kind = "producer",
        messaging.system = "nats",
        messaging.operation.type = "send",
        messaging.destination.name = %subject,
        alert.uuid = %alert_uuid,
        alert.short_id = %short_id,
        alertsync.source = tracing::field::Empty,
        alertsync.kind = tracing::field::Empty,
        alertsync.duplicate = tracing::field::Empty,
    )
}

use std::sync::Arc;

use alertsync_proto::{DeadLetterClass, Stage};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::{
    counter::Counter, family::Family, gauge::Gauge, histogram::Histogram,
};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

fn latency_histogram() -> Histogram {
    // 5 ms … ~80 s: HTTP calls and end-to-end latencies.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 15,
    ))
}

/// The metrics of one service.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    received: Family<Labels, Counter>,
    published: Family<Labels, Counter>,
    duplicates: Family<Labels, Counter>,
    filtered: Family<Labels, Counter>,
    enriched: Counter,
    sekoia_errors: Family<Labels, Counter>,
    deliveries: Family<Labels, Counter>,
    lifecycle_skipped: Family<Labels, Counter>,
    writebacks: Family<Labels, Counter>,
    sync_notifications: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    dead_lettered: Family<Labels, Counter>,
    circuit_state: Family<Labels, Gauge>,
    sekoia_circuit_open: Gauge,
    live_connected: Gauge,
    live_skipped: Family<Labels, Counter>,
    consumer_pending: Family<Labels, Gauge>,
    created_to_delivered: Family<Labels, Histogram, fn() -> Histogram>,
    sekoia_latency: Histogram,
    delivery_latency: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics with its own registry.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("alertsync");
        let received = Family::<Labels, Counter>::default();
        let published = Family::<Labels, Counter>::default();
        let duplicates = Family::<Labels, Counter>::default();
        let filtered = Family::<Labels, Counter>::default();
        let enriched = Counter::default();
        let sekoia_errors = Family::<Labels, Counter>::default();
        let deliveries = Family::<Labels, Counter>::default();
        let lifecycle_skipped = Family::<Labels, Counter>::default();
        let writebacks = Family::<Labels, Counter>::default();
        let sync_notifications = Family::<Labels, Counter>::default();
        let retries = Family::<Labels, Counter>::default();
        let dead_lettered = Family::<Labels, Counter>::default();
        let circuit_state = Family::<Labels, Gauge>::default();
        let sekoia_circuit_open = Gauge::default();
        let live_connected = Gauge::default();
        let live_skipped = Family::<Labels, Counter>::default();
        let consumer_pending = Family::<Labels, Gauge>::default();
        let created_to_delivered =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let sekoia_latency = latency_histogram();
        let delivery_latency = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "alerts_received",
            "Notifications received, by source and kind",
            received.clone(),
        );
        registry.register(
            "alerts_published",
            "Notifications published (first sighting), by source and kind",
            published.clone(),
        );
        registry.register(
            "duplicates_dropped",
            "Notifications dropped as already seen, by source and kind",
            duplicates.clone(),
        );
        registry.register(
            "alerts_filtered",
            "Alerts not forwarded because of a filter, by stage, destination and filter",
            filtered.clone(),
        );
        registry.register(
            "alerts_enriched",
            "Alerts fetched from Sekoia and republished",
            enriched.clone(),
        );
        registry.register(
            "sekoia_errors",
            "Failed Sekoia API calls, by status (or transport)",
            sekoia_errors.clone(),
        );
        registry.register(
            "deliveries",
            "Delivery attempts, by destination, outcome and kind (created, updated, comment)",
            deliveries.clone(),
        );
        registry.register(
            "lifecycle_skipped",
            "Updates and comments not sent to a destination, by destination, kind and reason",
            lifecycle_skipped.clone(),
        );
        registry.register(
            "writebacks",
            "Changes written back to Sekoia alerts, by destination and what (comment, status)",
            writebacks.clone(),
        );
        registry.register(
            "sync_notifications",
            "Notifications from tools on /v1/sync, by destination and outcome",
            sync_notifications.clone(),
        );
        registry.register(
            "retries",
            "Messages scheduled for another attempt, by stage and destination",
            retries.clone(),
        );
        registry.register(
            "dead_lettered",
            "Messages dead-lettered, by stage, destination and reason class",
            dead_lettered.clone(),
        );
        registry.register(
            "destination_circuit_state",
            "Destination state: 0 closed (delivering), 1 open (paused), 2 probing",
            circuit_state.clone(),
        );
        registry.register(
            "sekoia_circuit_open",
            "1 while the enricher holds alerts because Get Alert keeps failing or Sekoia asked \
             it to wait (429)",
            sekoia_circuit_open.clone(),
        );
        registry.register(
            "live_socket_connected",
            "1 while the Sekoia LiveAPI socket is connected",
            live_connected.clone(),
        );
        registry.register(
            "live_messages_skipped",
            "LiveAPI messages skipped, by reason",
            live_skipped.clone(),
        );
        registry.register(
            "consumer_pending",
            "Messages waiting for a durable consumer (lag)",
            consumer_pending.clone(),
        );
        registry.register(
            "created_to_delivered_seconds",
            "Time from alert creation in Sekoia to delivery, by destination",
            created_to_delivered.clone(),
        );
        registry.register(
            "sekoia_request_seconds",
            "Sekoia API call latency",
            sekoia_latency.clone(),
        );
        registry.register(
            "delivery_seconds",
            "Destination request latency, by destination",
            delivery_latency.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                received,
                published,
                duplicates,
                filtered,
                enriched,
                sekoia_errors,
                deliveries,
                lifecycle_skipped,
                writebacks,
                sync_notifications,
                retries,
                dead_lettered,
                circuit_state,
                sekoia_circuit_open,
                live_connected,
                live_skipped,
                consumer_pending,
                created_to_delivered,
                sekoia_latency,
                delivery_latency,
            }),
        }
    }

    /// An event received from `source` (webhook, live, poll).
    pub fn received(&self, source: &str, kind: &str) {
        self.inner
            .received
            .get_or_create(&labels([("source", source), ("kind", kind)]))
            .inc();
    }
    /// An alert published (first sighting) from `source`.
    pub fn published(&self, source: &str, kind: &str) {
        self.inner
            .published
            .get_or_create(&labels([("source", source), ("kind", kind)]))
            .inc();
    }
    /// An event from `source` dropped as a duplicate.
    pub fn duplicate(&self, source: &str, kind: &str) {
        self.inner
            .duplicates
            .get_or_create(&labels([("source", source), ("kind", kind)]))
            .inc();
    }
    /// An alert filtered out at `stage` (for `destination`, "" for the enricher) by `filter`.
    pub fn filtered(&self, stage: Stage, destination: Option<&str>, filter: &str) {
        self.inner
            .filtered
            .get_or_create(&labels([
                ("stage", stage.as_str()),
                ("destination", destination.unwrap_or_default()),
                ("filter", filter),
            ]))
            .inc();
    }
    /// An alert enriched.
    pub fn enriched(&self) {
        self.inner.enriched.inc();
    }
    /// A failed Sekoia call (`status` as text, or "transport").
    pub fn sekoia_error(&self, status: &str) {
        self.inner
            .sekoia_errors
            .get_or_create(&labels([("status", status)]))
            .inc();
    }
    /// A Sekoia call took `d`.
    pub fn sekoia_latency(&self, d: Duration) {
        self.inner.sekoia_latency.observe(d.as_secs_f64());
    }
    /// A delivery attempt of a `kind` of event (created, updated, comment) to `destination`
    /// ended with `outcome` (delivered, failed, already_delivered…).
    pub fn delivery(&self, destination: &str, kind: &str, outcome: &str) {
        self.inner
            .deliveries
            .get_or_create(&labels([
                ("destination", destination),
                ("outcome", outcome),
                ("kind", kind),
            ]))
            .inc();
    }
    /// A later event (update, comment) of an alert not sent to `destination`, for `reason`
    /// (creation_filtered, creation_dead_lettered, creation_not_seen, older_state,
    /// same_state, unchanged, no_request).
    pub fn lifecycle_skipped(&self, destination: &str, kind: &str, reason: &str) {
        self.inner
            .lifecycle_skipped
            .get_or_create(&labels([
                ("destination", destination),
                ("kind", kind),
                ("reason", reason),
            ]))
            .inc();
    }
    /// A request to `destination` took `d`.
    pub fn delivery_latency(&self, destination: &str, d: Duration) {
        self.inner
            .delivery_latency
            .get_or_create(&labels([("destination", destination)]))
            .observe(d.as_secs_f64());
    }
    /// An alert reached `destination` `d` after Sekoia created it.
    pub fn created_to_delivered(&self, destination: &str, d: Duration) {
        self.inner
            .created_to_delivered
            .get_or_create(&labels([("destination", destination)]))
            .observe(d.as_secs_f64());
    }
    /// A change (`comment`, `status`) written back to a Sekoia alert for `destination`.
    pub fn writeback(&self, destination: &str, what: &str) {
        self.inner
            .writebacks
            .get_or_create(&labels([("destination", destination), ("what", what)]))
            .inc();
    }
    /// A tool's notification on `/v1/sync/<destination>` came to `outcome` (stored, duplicate,
    /// ignored_status, unauthorized, not_delivered, bad_request…).
    pub fn sync_notification(&self, destination: &str, outcome: &str) {
        self.inner
            .sync_notifications
            .get_or_create(&labels([
                ("destination", destination),
                ("outcome", outcome),
            ]))
            .inc();
    }
    /// A message of `stage` (for `destination`) scheduled for another attempt.
    pub fn retry(&self, stage: Stage, destination: Option<&str>) {
        self.inner
            .retries
            .get_or_create(&labels([
                ("stage", stage.as_str()),
                ("destination", destination.unwrap_or_default()),
            ]))
            .inc();
    }
    /// A message of `stage` dead-lettered (counted once its entry is stored), by class.
    pub fn dead_lettered(&self, stage: Stage, destination: Option<&str>, class: DeadLetterClass) {
        self.inner
            .dead_lettered
            .get_or_create(&labels([
                ("stage", stage.as_str()),
                ("destination", destination.unwrap_or_default()),
                ("reason", class.as_str()),
            ]))
            .inc();
    }
    /// The state of `destination`'s circuit (0 closed, 1 open, 2 probing).
    pub fn circuit_state(&self, destination: &str, state: i64) {
        self.inner
            .circuit_state
            .get_or_create(&labels([("destination", destination)]))
            .set(state);
    }
    /// Whether the enricher's circuit to Sekoia is open (or throttled): alerts wait.
    pub fn sekoia_circuit_open(&self, open: bool) {
        self.inner.sekoia_circuit_open.set(i64::from(open));
    }
    /// Whether the LiveAPI socket is connected.
    pub fn live_connected(&self, connected: bool) {
        self.inner.live_connected.set(i64::from(connected));
    }
    /// A LiveAPI message skipped for `reason`.
    pub fn live_skipped(&self, reason: &str) {
        self.inner
            .live_skipped
            .get_or_create(&labels([("reason", reason)]))
            .inc();
    }
    /// Messages pending for `consumer`.
    pub fn consumer_pending(&self, consumer: &str, pending: u64) {
        self.inner
            .consumer_pending
            .get_or_create(&labels([("consumer", consumer)]))
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }
}

/// `GET /metrics`.
pub fn metrics_router(metrics: Metrics) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_with_prometheus_names_and_bounded_labels() {
        let m = Metrics::new();
        m.received("webhook", "alert-created");
        m.received("webhook", "alert-created");
        m.delivery("soar", "created", "delivered");
        m.live_connected(true);
        let text = m.render();
        assert!(
            text.contains(
                "alertsync_alerts_received_total{source=\"webhook\",kind=\"alert-created\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "alertsync_deliveries_total{destination=\"soar\",outcome=\"delivered\",kind=\"created\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("alertsync_live_socket_connected 1"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"));
    }
}
