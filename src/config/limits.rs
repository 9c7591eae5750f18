//! The `limits:` section: what one token may weigh before it is parsed ([`Limits`], which a reload
//! applies), and what one request may cost the server ([`ServerLimits`], part of the service settings,
//! kept until a restart).

use std::time::Duration;

use super::errors::Errors;
use super::{defaults, raw};

/// Size limits applied before any parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_token_bytes: usize,
}

/// Limits on what one request may cost the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    pub max_body_bytes: usize,
    /// The request line and headers together.
    pub max_header_bytes: usize,
    /// A request not answered by then gets 503.
    pub request_timeout: Duration,
    /// Decisions in progress at once; one more is refused at once with 503 and `Retry-After`.
    pub max_concurrent_requests: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: defaults::MAX_BODY_BYTES,
            max_header_bytes: defaults::MAX_HEADER_BYTES,
            request_timeout: defaults::REQUEST_TIMEOUT,
            max_concurrent_requests: defaults::MAX_CONCURRENT_REQUESTS,
        }
    }
}

/// Validates the token half of `limits:`; `None` when it is wrong.
pub(super) fn validate_limits(raw: &raw::Limits, errors: &mut Errors) -> Option<Limits> {
    let max_token_bytes = raw.max_token_bytes.unwrap_or(defaults::MAX_TOKEN_BYTES);
    if !(256..=64 * 1024).contains(&max_token_bytes) {
        errors.push("limits.max_token_bytes", "must be between 256 and 65536");
        return None;
    }
    Some(Limits { max_token_bytes })
}

/// Validates the server half of `limits:`; `None` when any of it is wrong.
pub(super) fn validate_server_limits(
    raw: &raw::Limits,
    errors: &mut Errors,
) -> Option<ServerLimits> {
    let defaults = ServerLimits::default();
    let mut valid = true;
    let mut within = |path: &str, value: usize, range: std::ops::RangeInclusive<usize>| {
        if !range.contains(&value) {
            errors.push(
                path,
                format!("must be between {} and {}", range.start(), range.end()),
            );
            valid = false;
        }
        value
    };
    let limits = ServerLimits {
        max_body_bytes: within(
            "limits.max_body_bytes",
            raw.max_body_bytes.unwrap_or(defaults.max_body_bytes),
            1024..=1024 * 1024,
        ),
        max_header_bytes: within(
            "limits.max_header_bytes",
            raw.max_header_bytes.unwrap_or(defaults.max_header_bytes),
            8 * 1024..=1024 * 1024,
        ),
        request_timeout: raw
            .request_timeout
            .map_or(defaults.request_timeout, |timeout| timeout.0),
        max_concurrent_requests: within(
            "limits.max_concurrent_requests",
            raw.max_concurrent_requests
                .unwrap_or(defaults.max_concurrent_requests),
            1..=1_000_000,
        ),
    };
    if !(Duration::from_millis(10)..=Duration::from_secs(300)).contains(&limits.request_timeout) {
        errors.push("limits.request_timeout", "must be between 10ms and 5m");
        valid = false;
    }
    valid.then_some(limits)
}
