//! The layers every callout passes before its front reads it, in this order, outermost first:
//!
//! 1. [`with_generation`] takes the running generation, once; everything after reads that one
//!    (INVARIANT: one request, one generation).
//! 2. [`traced`] runs the callout in its span, continuing the caller's `traceparent`.
//! 3. [`count_rejections`] counts every callout refused below it, by reason.
//! 4. [`within_limits`] sheds a callout over `max_concurrent_requests` and bounds the rest by
//!    `request_timeout`.
//! 5. [`require_caller`] authenticates the caller by the generation's rules, before the body is read;
//!    a caller refused gets the front's [`CallerRefused`] answer.
//! 6. The body limit (`max_body_bytes`), for a front that reads one.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use tracing::Instrument as _;

use super::error::{ApiError, Rejected};
use crate::config::ServerLimits;
use crate::server::tls::ClientCertificate;
use crate::state::{AppState, Generation};

/// How a front answers a caller that fails caller authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallerRefused {
    /// 401: the caller is the client of the answer (a JSON callout).
    Unauthorized,
    /// 500: the caller is a proxy that would pass a 401 on to its own client (forward auth).
    ServerError,
}

/// `callouts` behind the layers, in the order of this module's list.
pub(super) fn around_callouts(
    callouts: Router<AppState>,
    state: &AppState,
    limits: &ServerLimits,
    refused: CallerRefused,
) -> Router<AppState> {
    // A layer added later wraps those added before it: this reads from the innermost out.
    callouts
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .route_layer(middleware::from_fn_with_state(refused, require_caller))
        .route_layer(middleware::from_fn_with_state(state.clone(), within_limits))
        .route_layer(middleware::from_fn(count_rejections))
        .route_layer(middleware::from_fn(traced))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            with_generation,
        ))
}

/// Takes the running generation for the whole request, as an `Arc<Generation>` extension.
async fn with_generation(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    request.extensions_mut().insert(state.current());
    next.run(request).await
}

/// Runs the callout in its `callout` span, and hands its trace id on as a `TraceId` extension.
async fn traced(mut request: Request, next: Next) -> Response {
    let (span, trace_id) = crate::telemetry::callout_span(request.headers());
    request.extensions_mut().insert(trace_id);
    next.run(request).instrument(span).await
}

/// Counts a refused callout in `verdict_requests_rejected_total`, by the reason its response carries.
async fn count_rejections(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(Rejected(reason)) = response.extensions().get::<Rejected>() {
        crate::metrics::global().rejected(reason);
    }
    response
}

/// Sheds a callout over the concurrency limit with 503 and `Retry-After`, at once rather than queued;
/// bounds the rest by the deadline (503 too). The bundle treats both as a deny.
async fn within_limits(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limits = &state.limits;
    let Ok(_permit) = limits.admit() else {
        return ApiError::Overloaded.into_response();
    };
    match tokio::time::timeout(limits.timeout(), next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                timeout_ms = limits.timeout().as_millis(),
                "a callout was not answered in time"
            );
            ApiError::TimedOut.into_response()
        }
    }
}

/// Refuses an unauthenticated caller, by the rules of the generation that decides the request, as the
/// front answers that; hands the admitted one on as a `Caller` extension.
async fn require_caller(
    State(refused): State<CallerRefused>,
    Extension(generation): Extension<Arc<Generation>>,
    mut request: Request,
    next: Next,
) -> Response {
    let certificate = request.extensions().get::<Arc<ClientCertificate>>();
    let admitted = generation
        .callers
        .admits(
            request.headers(),
            certificate.map(|certificate| &**certificate),
        )
        .await;
    match admitted {
        Some(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        None => match refused {
            CallerRefused::Unauthorized => ApiError::UnauthenticatedCaller.into_response(),
            CallerRefused::ServerError => ApiError::UnauthenticatedProxy.into_response(),
        },
    }
}
