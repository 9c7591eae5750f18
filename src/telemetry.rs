//! Logs and traces.
//!
//! `tracing` events go to standard error (standard output is for results and the decision log):
//! human-readable lines by default, or with `log.format: json` one JSON object per line whose
//! `severity` Cloud Logging reads. `RUST_LOG` overrides `log.level`. With `tracing.otlp_endpoint`,
//! spans are also exported by OTLP/HTTP; each callout's span continues the W3C `traceparent` the proxy
//! sent ([`callout_span`]).

use std::io::IsTerminal as _;

use anyhow::Context as _;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Event, Instrument as _, Level, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
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
                .with_http_client(crate::app::http_client()?)
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
    let events = match log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(CloudLoggingJson)
            .with_writer(std::io::stderr)
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

/// The W3C trace id of a callout, when it has one.
#[derive(Debug, Clone, Default)]
pub struct TraceId(pub String);

/// Middleware: runs the callout in a `callout` span that continues the proxy's `traceparent`, and
/// hands its trace id to the handler (for the decision log) as a [`TraceId`] extension.
pub async fn callout_span(mut request: Request, next: Next) -> Response {
    let span = tracing::info_span!("callout", trace_id = tracing::field::Empty);
    let remote = TraceContextPropagator::new().extract(&Headers(request.headers()));
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
    request.extensions_mut().insert(TraceId(trace_id));
    next.run(request).instrument(span).await
}

/// A request's headers, as the propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
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
