//! How the process runs, as opposed to how it decides: its sockets, logs, traces, request limits and
//! shutdown. These are read at start and kept until exit; a reload that changes them says that a restart
//! is needed. The request limits are checked with the rest of `limits:`, in [`super::limits`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;

use super::errors::Errors;
use super::limits::{self, ServerLimits};
use super::{defaults, raw};

/// The process-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSettings {
    /// The decision API's address.
    pub listen: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are also served; without it `/metrics` is on `listen`.
    pub admin_listen: Option<SocketAddr>,
    pub decision_log: DecisionLogTarget,
    pub log: LogSettings,
    pub tracing: TracingSettings,
    pub limits: ServerLimits,
    /// How long a shutdown waits for requests in flight before closing their connections.
    pub shutdown_grace: Duration,
}

/// Where decision records go (`decision_log:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionLogTarget {
    Stdout,
    /// Appended to; the file is created if missing.
    File(PathBuf),
    Off,
}

/// `log:` — the process's own diagnostics, on standard error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `verdict=debug,info`), used when `RUST_LOG` is not set.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line with a `severity`, as Cloud Logging reads them.
    Json,
}

/// `tracing:` — span export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingSettings {
    /// The collector's OTLP/HTTP traces URL (`<otlp_endpoint>/v1/traces`); no export without it.
    pub otlp_traces_url: Option<Url>,
    pub service_name: String,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            listen: defaults::LISTEN,
            admin_listen: None,
            decision_log: DecisionLogTarget::Stdout,
            log: LogSettings::default(),
            tracing: TracingSettings {
                otlp_traces_url: None,
                service_name: defaults::TRACING_SERVICE_NAME.to_owned(),
            },
            limits: ServerLimits::default(),
            shutdown_grace: defaults::SHUTDOWN_GRACE_PERIOD,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: defaults::LOG_LEVEL.to_owned(),
        }
    }
}

/// The sections of the file that make up [`ServiceSettings`], as written.
pub(super) struct RawService {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub decision_log: Option<String>,
    pub log: Option<serde_norway::Value>,
    pub tracing: Option<serde_norway::Value>,
    pub shutdown: Option<serde_norway::Value>,
}

/// Validates the service sections and the server half of `limits`; `None` when any is wrong.
pub(super) fn validate(
    raw: RawService,
    limits: Option<&raw::Limits>,
    base_dir: &Path,
    errors: &mut Errors,
) -> Option<ServiceSettings> {
    let defaults = ServiceSettings::default();
    let listen = match raw.listen.as_deref() {
        None => Some(defaults.listen),
        Some(text) => socket_address("listen", text, errors),
    };
    let admin_listen = match raw.admin_listen.as_deref() {
        None => Some(None),
        Some(text) => socket_address("admin_listen", text, errors).map(Some),
    };
    if let (Some(listen), Some(Some(admin))) = (listen, admin_listen)
        && listen == admin
        && listen.port() != 0
    {
        errors.push("admin_listen", "must differ from `listen`");
    }
    let decision_log = match raw.decision_log.as_deref() {
        None | Some("stdout") => Some(DecisionLogTarget::Stdout),
        Some("off") => Some(DecisionLogTarget::Off),
        Some("") => {
            errors.push("decision_log", "write `stdout`, `off` or a file path");
            None
        }
        Some(path) => Some(DecisionLogTarget::File(base_dir.join(path))),
    };
    let log = errors
        .section::<raw::Log>("log", raw.log)
        .and_then(|raw| validate_log(raw, errors));
    let tracing = errors
        .section::<raw::Tracing>("tracing", raw.tracing)
        .and_then(|raw| validate_tracing(raw, errors));
    let server_limits = limits.and_then(|raw| limits::validate_server_limits(raw, errors));
    let shutdown_grace = errors
        .section::<raw::Shutdown>("shutdown", raw.shutdown)
        .and_then(|raw| {
            let grace = raw
                .grace_period
                .map_or(defaults.shutdown_grace, |grace| grace.0);
            if grace > Duration::from_secs(300) {
                errors.push("shutdown.grace_period", "must be at most 5m");
                return None;
            }
            Some(grace)
        });
    Some(ServiceSettings {
        listen: listen?,
        admin_listen: admin_listen?,
        decision_log: decision_log?,
        log: log?,
        tracing: tracing?,
        limits: server_limits?,
        shutdown_grace: shutdown_grace?,
    })
}

fn socket_address(path: &str, text: &str, errors: &mut Errors) -> Option<SocketAddr> {
    text.parse()
        .map_err(|error| {
            errors.push(
                path,
                format!("not a socket address ({error}); write it as `0.0.0.0:8080`"),
            );
        })
        .ok()
}

fn validate_log(raw: raw::Log, errors: &mut Errors) -> Option<LogSettings> {
    let format = match raw.format.as_deref() {
        None | Some("text") => Some(LogFormat::Text),
        Some("json") => Some(LogFormat::Json),
        Some(other) => {
            errors.push(
                "log.format",
                format!("`{other}` is not a log format: write `text` or `json`"),
            );
            None
        }
    };
    let level = raw.level.unwrap_or_else(|| LogSettings::default().level);
    if let Err(error) = tracing_subscriber::EnvFilter::try_new(&level) {
        errors.push(
            "log.level",
            format!(
                "`{level}` is not a log filter ({error}); write e.g. `info` or `verdict=debug,info`"
            ),
        );
        return None;
    }
    Some(LogSettings {
        format: format?,
        level,
    })
}

fn validate_tracing(raw: raw::Tracing, errors: &mut Errors) -> Option<TracingSettings> {
    let service_name = raw
        .service_name
        .unwrap_or_else(|| ServiceSettings::default().tracing.service_name);
    if service_name.is_empty() {
        errors.push("tracing.service_name", "must not be empty");
        return None;
    }
    let otlp_traces_url = match raw.otlp_endpoint {
        None => None,
        Some(endpoint) => match Url::parse(&endpoint) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                let base = endpoint.trim_end_matches('/');
                Some(Url::parse(&format!("{base}/v1/traces")).ok()?)
            }
            Ok(_) => {
                errors.push(
                    "tracing.otlp_endpoint",
                    "must be an http or https URL such as `http://127.0.0.1:4318`",
                );
                return None;
            }
            Err(error) => {
                errors.push("tracing.otlp_endpoint", format!("not a URL ({error})"));
                return None;
            }
        },
    };
    Some(TracingSettings {
        otlp_traces_url,
        service_name,
    })
}
