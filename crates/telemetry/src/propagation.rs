//! W3C trace context (`traceparent`, `tracestate`) in NATS headers and HTTP requests, so one
//! trace follows an alert from the webhook through every stage into the destination.

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct NatsInjector<'a>(&'a mut async_nats::HeaderMap);

impl Injector for NatsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct NatsExtractor<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

struct HttpInjector<'a>(&'a mut reqwest::header::HeaderMap);

impl Injector for HttpInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(key.as_bytes()),
            reqwest::header::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// The context `span` propagates, from whichever layer `traces::init` installed.
pub(crate) fn span_context(span: &tracing::Span) -> opentelemetry::Context {
    if crate::ids::installed() {
        crate::ids::context(span)
    } else {
        span.context()
    }
}

/// Writes the current span's context into NATS headers.
pub fn inject_nats(headers: &mut async_nats::HeaderMap) {
    let cx = span_context(&tracing::Span::current());
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut NatsInjector(headers))
    });
}

/// Writes the current span's context into HTTP request headers.
pub fn inject_http(headers: &mut reqwest::header::HeaderMap) {
    let cx = span_context(&tracing::Span::current());
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HttpInjector(headers))
    });
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
