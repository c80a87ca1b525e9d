//! The trace context of each span without OpenTelemetry spans, for when no exporter is
//! configured.
//!
//! Without an exporter, every span built for OpenTelemetry was dropped at its end; what the
//! services use of it is each span's trace id and span id: in log lines, in `traceparent` on
//! NATS messages and HTTP requests, and taken from incoming headers. [`IdsLayer`] keeps just
//! those in each span's extensions. The benchmark measured the OpenTelemetry layer at 13 to
//! 20 % of the services' CPU (BENCHMARKS.md, round five). With an exporter configured, the
//! OpenTelemetry layer is installed instead and this module is not used.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
use tracing::Subscriber;
use tracing::span::{Attributes, Id};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, SpanRef};

/// Whether [`IdsLayer`] is the installed layer (set once, by `traces::init`).
static INSTALLED: AtomicBool = AtomicBool::new(false);

pub(crate) fn mark_installed() {
    INSTALLED.store(true, Ordering::Relaxed);
}

pub(crate) fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// One span's place in its trace.
#[derive(Clone)]
struct Ids {
    trace: TraceId,
    span: SpanId,
    flags: TraceFlags,
    state: TraceState,
}

/// Gives each new span a span id, and the trace id of its parent span (a new trace when it
/// has none), as the OpenTelemetry SDK does with its default sampler.
#[derive(Default)]
pub(crate) struct IdsLayer {
    ids: RandomIdGenerator,
}

impl<S> Layer<S> for IdsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, _attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<Ids>().cloned());
        let ids = match parent {
            Some(parent) => Ids {
                span: self.ids.new_span_id(),
                ..parent
            },
            None => Ids {
                trace: self.ids.new_trace_id(),
                span: self.ids.new_span_id(),
                flags: TraceFlags::SAMPLED,
                state: TraceState::default(),
            },
        };
        span.extensions_mut().insert(ids);
    }
}

/// Runs `f` on `span`'s entry in the registry, if it has one.
fn with_span<T>(
    span: &tracing::Span,
    f: impl FnOnce(SpanRef<'_, tracing_subscriber::Registry>) -> Option<T>,
) -> Option<T> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        f(registry.span(id)?)
    })
    .flatten()
}

/// The span context `span` propagates, if it has ids (read under the extensions' read lock:
/// this runs for every message and request, `set_parent` once per span).
pub(crate) fn span_context(span: &tracing::Span) -> Option<SpanContext> {
    with_span(span, |span| {
        let extensions = span.extensions();
        let ids = extensions.get::<Ids>()?;
        Some(SpanContext::new(
            ids.trace,
            ids.span,
            ids.flags,
            false,
            ids.state.clone(),
        ))
    })
}

/// Makes `parent` (from incoming headers) the parent of `span`: its trace, sampling flag and
/// trace state. Spans created under `span` afterwards inherit them.
pub(crate) fn set_parent(span: &tracing::Span, parent: &SpanContext) {
    with_span(span, |span| {
        let mut extensions = span.extensions_mut();
        let ids = extensions.get_mut::<Ids>()?;
        ids.trace = parent.trace_id();
        ids.flags = parent.trace_flags();
        ids.state = parent.trace_state().clone();
        Some(())
    });
}
