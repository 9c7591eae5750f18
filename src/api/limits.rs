//! Load shedding and the request deadline for `/v1/decide`.
//!
//! At most `limits.max_concurrent_requests` callouts are served at once; one more is refused at once
//! with 503 and `Retry-After` rather than queued, so a burst cannot build a backlog that outlives the
//! proxy's own timeout. A callout not answered within `limits.request_timeout` gets 503 as well. Both
//! are callout failures, which the bundle treats as a deny.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::AppState;
use super::error::ApiError;

/// The permits and deadline every callout goes through.
#[derive(Debug)]
pub struct RequestLimits {
    permits: Arc<Semaphore>,
    max_concurrent: usize,
    timeout: Duration,
}

impl RequestLimits {
    pub fn new(max_concurrent: usize, timeout: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            timeout,
        }
    }

    /// Callouts being served now.
    pub fn in_flight(&self) -> usize {
        self.max_concurrent
            .saturating_sub(self.permits.available_permits())
    }
}

/// Middleware: sheds a callout over the concurrency limit, and bounds the rest by the deadline.
pub async fn within_limits(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let limits = &state.limits;
    let Ok(_permit) = Arc::clone(&limits.permits).try_acquire_owned() else {
        return ApiError::Overloaded.into_response();
    };
    match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                timeout_ms = limits.timeout.as_millis(),
                "a callout was not answered in time"
            );
            ApiError::TimedOut.into_response()
        }
    }
}
