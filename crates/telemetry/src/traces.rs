//! Process-wide tracing setup: when an endpoint is configured, `tracing` spans become
//! OpenTelemetry spans exported over OTLP/HTTP (protobuf); every log line carries the trace id
//! of the span it was written in.
//!
//! Configured by the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (no endpoint: nothing is exported and nothing tries
//! to connect), `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`
//! (read by the SDK). Logs: `RUST_LOG` filtering, human lines by default, JSON with
//! `ALERTSYNC_LOG_FORMAT=json`.
//!
//! Without an exporter, spans carry only their trace and span ids ([`crate::ids`]): the trace
//! context must flow through NATS and into the destination's `traceparent` either way, and
//! logs need their trace id, but building OpenTelemetry spans only to drop them cost 13 to
//! 20 % of the services' CPU.

use std::fmt;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, format::Writer};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the tracer provider alive; dropping it flushes and shuts the exporter down.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            // Flushes buffered spans (bounded by the exporter's timeout).
            let _ = p.shutdown();
        }
    }
}

/// Whether an OTLP endpoint is configured.
pub fn exporter_configured() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim() == "none");
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Installs the global subscriber and propagator. `service` names the process when
/// `OTEL_SERVICE_NAME` is not set; `default_filter` applies when `RUST_LOG` is not set.
/// Calling it again does nothing (the first setup stays).
pub fn init(service: &str, default_filter: &str) -> TelemetryGuard {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("ALERTSYNC_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    if !exporter_configured() {
        // Nothing to export: each span keeps only its ids (crate::ids), no OpenTelemetry span.
        let installed = tracing_subscriber::registry()
            .with(crate::ids::IdsLayer::default())
            .with(line_layer(json).with_filter(filter()))
            .try_init()
            .is_ok();
        if installed {
            crate::ids::mark_installed();
        }
        return TelemetryGuard { provider: None };
    }
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service.to_string());
    }
    let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
    let mut export_error = None;
    // The blocking client runs on the SDK's own export thread, as the crate requires.
    alertsync_http::install_crypto();
    match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => builder = builder.with_batch_exporter(exporter),
        Err(e) => export_error = Some(e.to_string()),
    }
    let provider = builder.build();
    let tracer = provider.tracer("alertsync");
    let fmt_layer = line_layer(json).with_filter(filter());
    // Spans reach OpenTelemetry whatever RUST_LOG says: filtering is for log lines.
    // Without busy/idle time (two clock reads and a span-extension update on every poll of
    // an instrumented future) and thread attributes (a string per span): per alert, the
    // spans' own cost is what a trace adds to the hot path, and neither attribute tells
    // anything an async service's span duration does not. Nor does each poll make the span's
    // OpenTelemetry context the thread's current one (a mutex, an Arc clone and a guard push
    // and pop per poll; entering and leaving spans was about 5 % of the enricher's and the
    // forwarder's samples in the benchmark's profile, most of it this): that serves
    // other OpenTelemetry instrumentation reading `Context::current()`, and there is none here;
    // our propagation reads each span's own context.
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_context_activation(false)
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let installed = tracing_subscriber::registry()
        .with(otel_layer)
        .with(fmt_layer)
        .try_init()
        .is_ok();
    if let Some(e) = export_error {
        tracing::error!(error = %e, "cannot set up the OTLP trace exporter; traces are not exported");
    }
    if installed {
        opentelemetry::global::set_tracer_provider(provider.clone());
        TelemetryGuard {
            provider: Some(provider),
        }
    } else {
        TelemetryGuard { provider: None }
    }
}

/// The log layer: one line per event (human or JSON), written to stdout, no colours.
fn line_layer<S>(json: bool) -> tracing_subscriber::fmt::Layer<S, NoSpanFields, LineFormat>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .fmt_fields(NoSpanFields)
        .event_format(LineFormat { json })
}

/// The hex trace id of the current span, if it belongs to a valid trace.
pub fn current_trace_id() -> Option<String> {
    let sc = crate::propagation::span_context(&tracing::Span::current());
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Log lines: the default human format, or JSON; both with the current trace id.
struct LineFormat {
    json: bool,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let trace_id = current_trace_id();
        let meta = event.metadata();
        if self.json {
            let mut fields = JsonVisitor::default();
            event.record(&mut fields);
            let mut line = serde_json::Map::new();
            line.insert("timestamp".into(), now_rfc3339().into());
            line.insert("level".into(), meta.level().as_str().into());
            line.insert("target".into(), meta.target().into());
            if let Some(span) = ctx.lookup_current() {
                line.insert("span".into(), span.name().into());
            }
            if let Some(t) = trace_id {
                line.insert("trace_id".into(), t.into());
            }
            line.extend(fields.0);
            writeln!(writer, "{}", serde_json::Value::Object(line))
        } else {
            write!(
                writer,
                "{} {:>5} {}: ",
                now_rfc3339(),
                meta.level(),
                meta.target()
            )?;
            if let Some(t) = trace_id {
                write!(writer, "trace_id={t} ")?;
            }
            let mut fields = LineVisitor {
                writer: writer.by_ref(),
                result: Ok(()),
                first: true,
            };
            event.record(&mut fields);
            fields.result?;
            writeln!(writer)
        }
    }
}

fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    humantime_like(d)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` without a date crate.
fn humantime_like(d: std::time::Duration) -> String {
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The fields a span is created or recorded with, as the log layer keeps them: nothing.
///
/// The fmt layer formats every span's fields into a string when the span is created, for log
/// lines that print them, and `LineFormat` never does (a line carries the trace id instead).
/// With a few spans per alert in every service, that formatting was several percent of the
/// services' CPU. Events' fields are written by `LineFormat` itself.
struct NoSpanFields;

impl<'writer> FormatFields<'writer> for NoSpanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        _writer: Writer<'writer>,
        _fields: R,
    ) -> fmt::Result {
        Ok(())
    }
}

/// An event's fields on a human line: the message, then `name=value` for the others (strings
/// quoted, so that a value with spaces or `=` in it stays one field).
struct LineVisitor<'a> {
    writer: Writer<'a>,
    result: fmt::Result,
    first: bool,
}

impl LineVisitor<'_> {
    fn separate(&mut self) -> fmt::Result {
        if self.first {
            self.first = false;
            Ok(())
        } else {
            self.writer.write_char(' ')
        }
    }
}

impl tracing::field::Visit for LineVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        self.result = self.separate().and_then(|()| {
            if field.name() == "message" {
                write!(self.writer, "{value:?}")
            } else {
                write!(self.writer, "{}={value:?}", field.name())
            }
        });
    }
}

#[derive(Default)]
struct JsonVisitor(serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines `line_layer` writes for one event inside a span with fields.
    fn lines(json: bool) -> String {
        use std::sync::{Arc, Mutex};
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let layer = line_layer(json).with_writer(move || Sink(sink.clone()));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("deliver", alert.uuid = "a-uuid");
            let _entered = span.enter();
            tracing::warn!(
                status = 503,
                reason = "upstream said: a=b c",
                "delivery failed"
            );
        });
        let out = buf.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn human_lines_have_the_message_then_quoted_fields_and_no_colours() {
        let line = lines(false);
        assert!(
            line.ends_with(
                "WARN alertsync_telemetry::traces::tests: delivery failed status=503 \
                 reason=\"upstream said: a=b c\"\n"
            ),
            "{line:?}"
        );
        assert!(!line.contains('\u{1b}'), "no ANSI escapes: {line:?}");
    }

    #[test]
    fn json_lines_name_the_span_and_carry_the_fields() {
        let line = lines(true);
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["span"], "deliver");
        assert_eq!(v["message"], "delivery failed");
        assert_eq!(v["status"], 503);
        assert_eq!(v["reason"], "upstream said: a=b c");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(
            humantime_like(std::time::Duration::from_millis(1_767_262_925_123)),
            "2026-01-01T10:22:05.123Z"
        );
        assert_eq!(
            humantime_like(std::time::Duration::ZERO),
            "1970-01-01T00:00:00.000Z"
        );
    }
}
