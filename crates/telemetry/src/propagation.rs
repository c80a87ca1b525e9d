//! W3C trace context (`traceparent`, `tracestate`) in NATS headers and HTTP requests, so one
//! trace follows an alert from the webhook through every stage into the destination.

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{SpanContext, TraceContextExt as _, TraceFlags};
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

struct NatsExtractor<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

/// The span context `span` propagates, from whichever layer `traces::init` installed
/// (invalid when it has none).
pub(crate) fn span_context(span: &tracing::Span) -> SpanContext {
    if crate::ids::installed() {
        crate::ids::span_context(span).unwrap_or_else(SpanContext::empty_context)
    } else {
        span.context().span().span_context().clone()
    }
}

/// `traceparent` and `tracestate` (when not empty) of the current span, formatted as the
/// W3C trace-context propagator formats them (version 00, only the sampled flag), without
/// its per-call boxing and `String` per header: this runs for every message and request.
fn current_headers() -> Option<(String, Option<String>)> {
    let sc = span_context(&tracing::Span::current());
    if !sc.is_valid() {
        return None;
    }
    let parent = format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags() & TraceFlags::SAMPLED
    );
    let state = sc.trace_state().header();
    Some((parent, (!state.is_empty()).then_some(state)))
}

/// Writes the current span's context into NATS headers.
pub fn inject_nats(headers: &mut async_nats::HeaderMap) {
    if let Some((parent, state)) = current_headers() {
        headers.insert(TRACEPARENT, parent.as_str());
        if let Some(state) = state {
            headers.insert(TRACESTATE, state.as_str());
        }
    }
}

/// Writes the current span's context into HTTP request headers.
pub fn inject_http(headers: &mut reqwest::header::HeaderMap) {
    use reqwest::header::{HeaderName, HeaderValue};
    if let Some((parent, state)) = current_headers() {
        if let Ok(v) = HeaderValue::try_from(parent) {
            headers.insert(HeaderName::from_static(TRACEPARENT), v);
        }
        if let Some(v) = state.and_then(|s| HeaderValue::try_from(s).ok()) {
            headers.insert(HeaderName::from_static(TRACESTATE), v);
        }
    }
}

/// Makes the context carried by `headers` (if any) the parent of `span`. Call before the span
/// is entered. Every redelivery of a message carries the same headers, so retries land in the
/// same trace.
pub fn set_parent_from_nats(span: &tracing::Span, headers: Option<&async_nats::HeaderMap>) {
    let Some(headers) = headers else { return };
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&NatsExtractor(headers)));
    let parent = opentelemetry::trace::TraceContextExt::span(&cx)
        .span_context()
        .clone();
    if !parent.is_valid() {
        return;
    }
    if crate::ids::installed() {
        crate::ids::set_parent(span, &parent);
    } else {
        let _ = span.set_parent(cx);
    }
}
