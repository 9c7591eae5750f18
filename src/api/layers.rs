//! The layer every callout passes before its front reads it: one hand-written step, [`guard`], that
//! does in this order, outermost first:
//!
//! 1. takes the running generation, once; everything after reads that one
//!    (INVARIANT: one request, one generation);
//! 2. runs the callout in its span, continuing the caller's `traceparent`;
//! 3. counts every callout refused below it, by reason;
//! 4. sheds a callout over `max_concurrent_requests` and bounds the rest by `request_timeout`, or by
//!    a gRPC caller's shorter deadline;
//! 5. authenticates the caller by the generation's rules, before the body is read.
//!
//! Then the body limit (`max_body_bytes`) applies, for a JSON front that reads one (the gRPC services
//! bound their messages themselves). The steps are one middleware, not five: each `from_fn` layer
//! boxes a future and clones the layers inside it on every request.
//!
//! A callout the guard refuses gets its front's kind of answer, [`Refusals`].

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use super::error::{ApiError, Rejected};
use super::grpc;
use crate::callers::Caller;
use crate::config::ServerLimits;
use crate::server::tls::ClientCertificate;
use crate::state::{AppState, Generation};
use crate::telemetry::TraceId;

/// How a front answers a callout the layers refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusals {
    /// The service's JSON error; 401 for a caller that fails caller authentication, since the caller
    /// is the client of the answer (the ServiceCallout).
    Json,
    /// The JSON error, but 500 for a caller that fails caller authentication: the caller is a proxy
    /// that would pass a 401 on to its own client (forward auth).
    ProxyJson,
    /// A gRPC status ([`grpc::refusal`]); the caller's `grpc-timeout` bounds the callout too.
    Grpc,
}

impl Refusals {
    fn answer(self, error: ApiError) -> Response {
        match (self, error) {
            (Self::Json, error) => error.into_response(),
            (Self::ProxyJson, ApiError::UnauthenticatedCaller) => {
                ApiError::UnauthenticatedProxy.into_response()
            }
            (Self::ProxyJson, error) => error.into_response(),
            (Self::Grpc, error) => grpc::refusal(&error),
        }
    }
}

/// `callouts` behind the [`guard`] and the body limit.
pub(super) fn around_callouts(
    callouts: Router<AppState>,
    state: &AppState,
    limits: &ServerLimits,
    refusals: Refusals,
) -> Router<AppState> {
    callouts
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), refusals),
            guard,
        ))
}

/// What the [`guard`] hands the front of an admitted callout, as the request's one extension.
#[derive(Debug, Clone)]
pub(super) struct Admitted {
    /// The generation that decides the callout.
    pub(super) generation: Arc<Generation>,
    pub(super) caller: Caller,
    pub(super) trace_id: TraceId,
}

/// The steps of this module's list. Hands the front what it admitted as [`Admitted`].
async fn guard(
    State((state, refusals)): State<(AppState, Refusals)>,
    request: Request,
    next: Next,
) -> Response {
    let generation = state.current();
    let (span, trace_id) = crate::telemetry::callout_span(request.headers());
    let response = within_limits(&state, generation, trace_id, refusals, request, next)
        .instrument(span)
        .await;
    count_rejection(&response);
    response
}

/// Counts a refused callout in `verdict_requests_rejected_total`, by the reason its response carries,
/// or, for a gRPC service's own refusal, by its status code.
fn count_rejection(response: &Response) {
    let reason = match response.extensions().get::<Rejected>() {
        Some(Rejected(reason)) => Some(*reason),
        None => grpc::rejection(response),
    };
    if let Some(reason) = reason {
        crate::metrics::global().rejected(reason);
    }
}

/// Sheds a callout over the concurrency limit at once rather than queued (503 with `Retry-After`,
/// `UNAVAILABLE` in gRPC); bounds the rest by `request_timeout`, or by a gRPC caller's deadline when
/// that is sooner (503, `DEADLINE_EXCEEDED` in gRPC). Every gateway treats both as a deny.
async fn within_limits(
    state: &AppState,
    generation: Arc<Generation>,
    trace_id: TraceId,
    refusals: Refusals,
    request: Request,
    next: Next,
) -> Response {
    let limits = &state.limits;
    let Ok(_permit) = limits.admit() else {
        return refusals.answer(ApiError::Overloaded);
    };
    let caller_deadline = match refusals {
        Refusals::Grpc => grpc::deadline(request.headers()),
        Refusals::Json | Refusals::ProxyJson => None,
    };
    let timeout =
        caller_deadline.map_or(limits.timeout(), |deadline| deadline.min(limits.timeout()));
    let answer = require_caller(generation, trace_id, refusals, request, next);
    match tokio::time::timeout(timeout, answer).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                timeout_ms = timeout.as_millis(),
                caller_deadline = caller_deadline.is_some_and(|deadline| deadline == timeout),
                "a callout was not answered in time"
            );
            refusals.answer(ApiError::TimedOut)
        }
    }
}

/// Refuses an unauthenticated caller, by the rules of the generation that decides the request; hands
/// the admitted one on with the generation and the trace id, as [`Admitted`].
async fn require_caller(
    generation: Arc<Generation>,
    trace_id: TraceId,
    refusals: Refusals,
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
            request.extensions_mut().insert(Admitted {
                generation,
                caller,
                trace_id,
            });
            next.run(request).await
        }
        None => refusals.answer(ApiError::UnauthenticatedCaller),
    }
}
