//! Logs and traces.
//!
//! `tracing` events go to standard error (standard output is for results and the decision log):
//! human-readable lines by default, or with `log.format: json` one JSON object per line whose
//! `severity` Cloud Logging reads. `RUST_LOG` overrides `log.level`. With `tracing.otlp_endpoint`,
//! spans are also exported by OTLP/HTTP; each callout's span continues the W3C `traceparent` the proxy
//! sent ([`callout_span`]).
//!
//! INVARIANT: one event is one line. Every record, in either format, is written through
//! [`EscapingWriter`], which escapes the control and line-breaking characters a field may carry (a
//! `message_id`, a claim, a header value) so that none can end the line early and forge another, and
//! hides URL credentials.

use std::borrow::Cow;

use anyhow::Context as _;
use http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Event, Level, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{LogFormat, LogSettings, TracingSettings};

/// The installed logging and tracing; [`Telemetry::shutdown`] sends the spans still buffered.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Installs human-readable logging at `info` (or `RUST_LOG`): for the commands that have no
/// configuration, and for a server before its configuration is read.
pub fn init() {
    let _ = install(&LogSettings::default(), None);
}

/// Installs logging and, when configured, span export. Must be called within a Tokio runtime when
/// `tracing.otlp_traces_url` is set. Only the first installation in a process takes effect.
pub fn init_with(log: &LogSettings, tracing: &TracingSettings) -> anyhow::Result<Telemetry> {
    let provider = match &tracing.otlp_traces_url {
        None => None,
        Some(url) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpJson)
                .with_endpoint(url.as_str())
                .with_http_client(crate::outbound::http_client()?)
                .build()
                .context("building the OTLP span exporter")?;
            let processor =
                opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                    exporter,
                    opentelemetry_sdk::runtime::Tokio,
                )
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_span_processor(processor)
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name(tracing.service_name.clone())
                            .build(),
                    )
                    .build(),
            )
        }
    };
    install(log, provider.as_ref())?;
    Ok(Telemetry { provider })
}

fn install(log: &LogSettings, provider: Option<&SdkTracerProvider>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&log.level))?;
    // No colours: the escaping writer cannot tell the formatter's ANSI sequences from ones a field
    // carries, and escapes every ESC.
    let events = match log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(Escaping(std::io::stderr))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(CloudLoggingJson)
            .with_writer(Escaping(std::io::stderr))
            .boxed(),
    };
    let spans = provider.map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer(env!("CARGO_PKG_NAME")))
    });
    // A second installation (tests start many servers in one process) keeps the first.
    let _ = tracing_subscriber::registry()
        .with(events.with_filter(filter))
        .with(spans)
        .try_init();
    Ok(())
}

impl Telemetry {
    /// Exports the spans still buffered, waiting at most a few seconds.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(error)) = flushed {
                tracing::warn!(%error, "exporting the last spans failed");
            }
        }
    }
}

/// Makes [`EscapingWriter`]s around the writers `M` makes.
#[derive(Debug, Clone, Copy)]
struct Escaping<M>(M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Escaping<M> {
    type Writer = EscapingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        EscapingWriter(self.0.make_writer_for(meta))
    }
}

/// Writes each record with its control characters escaped (see [`escape_record`]).
///
/// It relies on each `write` being one whole record: tracing-subscriber 0.3's `fmt::Layer::on_event`
/// (`fmt/fmt_layer.rs`) formats an event, span fields included, into one buffer and passes it to the
/// writer with a single `write_all`, and this `write` always takes the whole buffer, so `write_all`
/// never splits it.
#[derive(Debug)]
struct EscapingWriter<W>(W);

impl<W: std::io::Write> std::io::Write for EscapingWriter<W> {
    fn write(&mut self, record: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(&escape_record(record))?;
        Ok(record.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// One formatted record, safe to write as one line: URL credentials hidden, and every control
/// character (C0, DEL, C1), line or paragraph separator and bidirectional formatting character
/// escaped, except the final line terminator. The escapes (`\n`, `\u001b`, `\u2028`) are JSON's, so a
/// JSON record, whose strings `serde_json` has already escaped but for DEL, C1 and U+2028/9, stays
/// valid JSON that reads back the original value.
fn escape_record(record: &[u8]) -> Cow<'_, [u8]> {
    let (body, terminator) = match record.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (record, &b""[..]),
    };
    let plain = |byte: &u8| (0x20..0x7f).contains(byte);
    if body.iter().all(plain) && !body.windows(3).any(|window| window == b"://") {
        return Cow::Borrowed(record);
    }
    let text = String::from_utf8_lossy(body);
    let text = crate::redact::url_credentials(&text);
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    let mut out = out.into_bytes();
    out.extend_from_slice(terminator);
    Cow::Owned(out)
}

/// Whether `c` could break a log line or disguise its text when shown.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// The W3C trace id of a callout, when it has one.
#[derive(Debug, Clone, Default)]
pub struct TraceId(pub String);

/// The span of one callout, continuing the W3C `traceparent` it carries (if any), and its trace id
/// (empty when the callout is traced neither by its caller nor by an exporter), which the decision
/// log records.
pub fn callout_span(headers: &HeaderMap) -> (tracing::Span, TraceId) {
    let span = tracing::info_span!("callout", trace_id = tracing::field::Empty);
    let remote = TraceContextPropagator::new().extract(&Headers(headers));
    let mut context = remote.span().span_context().clone();
    if context.is_valid() {
        // Fails only when no span exporter is installed, when the parent matters to nobody.
        let _ = span.set_parent(remote);
    }
    // With an exporter the span has a trace of its own even without a `traceparent`.
    let exported = span.context().span().span_context().clone();
    if exported.is_valid() {
        context = exported;
    }
    let trace_id = if context.is_valid() {
        let trace_id = context.trace_id().to_string();
        span.record("trace_id", trace_id.as_str());
        trace_id
    } else {
        String::new()
    };
    (span, TraceId(trace_id))
}

/// A request's headers, as the propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// One JSON object per event: `time`, `severity` (Cloud Logging's names), `message`, `target`, the
/// fields of the enclosing spans, outermost first, then the event's own.
struct CloudLoggingJson;

impl<S, N> FormatEvent<S, N> for CloudLoggingJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut object = serde_json::Map::new();
        object.insert(
            "time".to_owned(),
            humantime::format_rfc3339_micros(std::time::SystemTime::now())
                .to_string()
                .into(),
        );
        object.insert(
            "severity".to_owned(),
            severity(*event.metadata().level()).into(),
        );
        if let Some(scope) = context.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(serde_json::Value::Object(fields)) =
                    serde_json::from_str::<serde_json::Value>(fields)
                {
                    object.extend(fields);
                }
            }
        }
        event.record(&mut JsonVisitor(&mut object));
        object.insert(
            "target".to_owned(),
            event.metadata().target().to_owned().into(),
        );
        writeln!(writer, "{}", serde_json::Value::Object(object))
    }
}

/// Cloud Logging's `LogSeverity` for a `tracing` level.
fn severity(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_written_as_one_line() {
        let cases: &[(&str, &str)] = &[
            ("plain record\n", "plain record\n"),
            ("no terminator", "no terminator"),
            (
                "message_id=a\n2027-01-01T00:00:00Z  INFO forged\n",
                "message_id=a\\n2027-01-01T00:00:00Z  INFO forged\n",
            ),
            ("a\r\nb\n", "a\\r\\nb\n"),
            ("\x1b[31mred\x1b[0m\n", "\\u001b[31mred\\u001b[0m\n"),
            ("tab\there\n", "tab\\there\n"),
            ("nul\0 del\x7f\n", "nul\\u0000 del\\u007f\n"),
            ("nel\u{85} csi\u{9b}\n", "nel\\u0085 csi\\u009b\n"),
            ("ls\u{2028}ps\u{2029}\n", "ls\\u2028ps\\u2029\n"),
            ("rlo\u{202e}txt\n", "rlo\\u202etxt\n"),
            ("two terminators\n\n", "two terminators\\n\n"),
            ("caf\u{e9} \u{2713}\n", "caf\u{e9} \u{2713}\n"),
            (
                "fetch `https://user:pass@host/jwks` failed\n",
                "fetch `https://***@host/jwks` failed\n",
            ),
        ];
        for (record, expected) in cases {
            let written = escape_record(record.as_bytes());
            assert_eq!(String::from_utf8_lossy(&written), *expected, "{record:?}");
        }
    }

    #[test]
    fn a_json_record_stays_json_with_its_values() {
        let value = "id\n{\"severity\":\"ERROR\"}\r\u{2028}\u{85}\u{7f}\u{1b}[0m\\n";
        let record = format!("{}\n", serde_json::json!({ "message_id": value }));
        let written = escape_record(record.as_bytes());
        let text = std::str::from_utf8(&written).unwrap_or_default();
        let body = text.strip_suffix('\n').unwrap_or_default();
        assert!(!body.chars().any(needs_escape), "{body:?}");
        let parsed: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(parsed["message_id"], value, "{body}");
    }
}
