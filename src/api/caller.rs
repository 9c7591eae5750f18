//! Authentication of the caller (the Apigee proxy) before any decision is made (DESIGN §5).

use aws_lc_rs::constant_time::verify_slices_are_equal;
use axum::extract::{Request, State};
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;

use super::AppState;
use super::error::ApiError;
use crate::config::Callers;
use crate::digest::sha256;

/// How callers prove who they are.
#[derive(Debug)]
pub struct CallerAuth {
    api_key: Option<ApiKeyCheck>,
}

#[derive(Debug)]
struct ApiKeyCheck {
    header: HeaderName,
    /// SHA-256 of each accepted key: comparing fixed-size digests in constant time hides both the key
    /// and its length.
    key_digests: Vec<[u8; 32]>,
}

impl CallerAuth {
    pub fn new(callers: &Callers) -> Self {
        if callers.allow_unauthenticated && callers.api_keys.is_none() {
            tracing::warn!(
                "caller authentication is off (`allow_unauthenticated: true`): anyone who reaches this port gets decisions"
            );
        }
        let api_key = callers.api_keys.as_ref().map(|api_keys| ApiKeyCheck {
            header: api_keys.header.clone(),
            key_digests: api_keys
                .keys
                .iter()
                .map(|key| sha256(key.expose_secret().as_bytes()))
                .collect(),
        });
        Self { api_key }
    }

    /// Whether the request's headers authenticate its caller.
    fn admits(&self, request: &Request) -> bool {
        let Some(check) = &self.api_key else {
            return true;
        };
        let Some(presented) = request.headers().get(&check.header) else {
            return false;
        };
        let presented = sha256(presented.as_bytes());
        // Every key is compared, whatever the outcome, so timing does not tell which key matched.
        check.key_digests.iter().fold(false, |matched, key| {
            verify_slices_are_equal(key, &presented).is_ok() | matched
        })
    }
}

/// Middleware refusing unauthenticated callers with 401 before the body is read.
pub async fn require_caller(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if state.current().callers.admits(&request) {
        next.run(request).await
    } else {
        ApiError::UnauthenticatedCaller.into_response()
    }
}
