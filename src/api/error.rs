//! Callout-level failures, rendered in the service's own JSON error format. Rendering one has no side
//! effect: the response carries its [`Rejected`] reason, which a layer counts.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::fronts::ErrorBody;

/// A failure of the callout itself, not a decision: the bundle treats any of these as a deny.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("the caller is not authenticated")]
    UnauthenticatedCaller,
    /// The proxy asking a forward-auth question is not authenticated: a 500, since the proxy would
    /// pass a 401 on to its client, who is not at fault (DESIGN §9).
    #[error("the proxy is not authenticated as a caller")]
    UnauthenticatedProxy,
    #[error("the request body is larger than allowed")]
    TooLarge,
    #[error("the request body must be `application/json`")]
    UnsupportedMediaType,
    /// More decisions are in progress than `limits.max_concurrent_requests` allows.
    #[error("too many requests in progress; retry shortly")]
    Overloaded,
    /// The request was not answered within `limits.request_timeout`.
    #[error("the decision took too long")]
    TimedOut,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::UnauthenticatedCaller => (StatusCode::UNAUTHORIZED, "unauthenticated_caller"),
            Self::UnauthenticatedProxy => {
                (StatusCode::INTERNAL_SERVER_ERROR, "unauthenticated_caller")
            }
            Self::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large"),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::Overloaded | Self::TimedOut => {
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable")
            }
        }
    }

    /// Why the callout was refused, for `verdict_requests_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::UnauthenticatedCaller | Self::UnauthenticatedProxy => "unauthenticated_caller",
            Self::TooLarge => "too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Overloaded => "overloaded",
            Self::TimedOut => "timeout",
        }
    }

    /// Seconds after which a retry may succeed, for `Retry-After`.
    fn retry_after(&self) -> Option<&'static str> {
        match self {
            Self::Overloaded | Self::TimedOut => Some("1"),
            _ => None,
        }
    }
}

/// On the response to a refused callout: why it was refused, for the layer that counts rejections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected(pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error) = self.status_and_code();
        let description = self.to_string();
        let mut response = (
            status,
            Json(ErrorBody {
                error,
                error_description: &description,
            }),
        )
            .into_response();
        response.extensions_mut().insert(Rejected(self.reason()));
        if let Some(seconds) = self.retry_after() {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from_static(seconds),
            );
        }
        response
    }
}
