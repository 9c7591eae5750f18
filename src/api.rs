//! The HTTP edge: the routes of the API and admin listeners. Every callout passes the [`layers`], in
//! their order, before its front reads it; the front maps its request to the engine's input, and
//! [`decide_and_record`] decides it, logs and counts it, the same way for every front.
//!
//! [`router`] builds the axum `Router` apart from any socket, so tests drive it with `oneshot`.

mod body;
mod error;
mod layers;
mod probes;
pub mod wire;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};

pub use error::{ApiError, Rejected};

use crate::callers::Caller;
use crate::decision::{Decision, DecisionInput};
use crate::decision_log::DecisionRecord;
use crate::fronts::service_callout::{DecideRequest, DecideResponse};
use crate::metrics;
use crate::state::{AppState, Generation};
use crate::telemetry::TraceId;
use body::StrictJson;

/// The service's routes; `/metrics` too unless the configuration gives it an `admin_listen` of its own.
pub fn router(state: AppState) -> Router {
    let generation = state.current();
    let callouts = Router::new().route("/v1/decide", post(service_callout));
    let router =
        layers::around_callouts(callouts, &state, &generation.service.limits).merge(probes());
    let router = if generation.service.admin_listen.is_none() {
        router.route("/metrics", get(probes::metrics))
    } else {
        router
    };
    router.with_state(state)
}

/// The admin listener's routes: `/metrics`, `/healthz`, `/readyz`.
pub fn admin_router(state: AppState) -> Router {
    probes()
        .route("/metrics", get(probes::metrics))
        .with_state(state)
}

/// `/healthz` and `/readyz`, served on both listeners.
fn probes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
}

/// `POST /v1/decide`, Apigee's ServiceCallout.
async fn service_callout(
    State(state): State<AppState>,
    Extension(generation): Extension<Arc<Generation>>,
    Extension(caller): Extension<Caller>,
    trace_id: Option<Extension<TraceId>>,
    StrictJson(request): StrictJson<DecideRequest>,
) -> Response {
    let input = match request.into_input() {
        Ok(input) => input,
        Err(error) => return ApiError::BadRequest(error.to_string()).into_response(),
    };
    let trace_id = trace_id.as_ref().map_or("", |Extension(TraceId(id))| id);
    let decision = decide_and_record(&state, &generation, &input, &caller, trace_id).await;
    Json(DecideResponse::from(&decision)).into_response()
}

/// Decides `input` by `generation`'s engine, and counts, logs and records the decision: the one step
/// every front takes.
pub async fn decide_and_record(
    state: &AppState,
    generation: &Generation,
    input: &DecisionInput,
    caller: &Caller,
    trace_id: &str,
) -> Decision {
    let started = Instant::now();
    let decision = generation.engine.decide(input).await;
    metrics::global().decided(
        decision.allow,
        decision.error.as_str(),
        &decision.trace.issuer_name,
        started.elapsed().as_secs_f64(),
    );
    if state.decision_log.is_enabled() {
        state.decision_log.record(&DecisionRecord::new(
            &decision,
            input,
            caller.as_str(),
            trace_id,
        ));
    }
    tracing::debug!(
        decision_id = %decision.decision_id,
        message_id = %input.message_id,
        allow = decision.allow,
        status = decision.status,
        error = decision.error.as_str(),
        subject = %decision.subject,
        kid = %decision.trace.kid,
        cache_hit = decision.trace.token_cache_hit,
        verify_us = decision.trace.verify_micros,
        policy_us = decision.trace.policy_micros,
        "decision"
    );
    decision
}
