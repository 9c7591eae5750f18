//! The HTTP edge: the routes of the API and admin listeners. Every callout passes the [`layers`], in
//! their order, before its front reads it; the front maps its request to the engine's input, and
//! `Callout::decide` decides it, logs and counts it, the same way for every front.
//!
//! [`router`] builds the axum `Router` apart from any socket, so tests drive it with `oneshot`.

mod body;
mod error;
mod grpc;
mod layers;
mod probes;
pub mod wire;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

pub use error::{ApiError, Rejected};

use crate::callers::Caller;
use crate::decision::{Decision, DecisionInput};
use crate::decision_log::DecisionRecord;
use crate::fronts::Front;
use crate::fronts::forward_auth;
use crate::fronts::service_callout::{DecideRequest, DecideResponse};
use crate::metrics;
use crate::state::{AppState, Generation};
use crate::telemetry::TraceId;
use body::StrictJson;
use layers::{Admitted, Refusals};

/// The service's routes; `/metrics` too unless the configuration gives it an `admin_listen` of its own.
pub fn router(state: AppState) -> Router {
    let generation = state.current();
    let limits = &generation.service.limits;
    let service_callout = Router::new().route("/v1/decide", post(service_callout));
    let forward_auth = Router::new()
        .route(forward_auth::PREFIX, any(forward_auth))
        .route(&format!("{}/", forward_auth::PREFIX), any(forward_auth))
        .route(
            &format!("{}/{{*path}}", forward_auth::PREFIX),
            any(forward_auth),
        );
    let grpc = grpc::services(&state, limits.max_body_bytes);
    let router = layers::around_callouts(service_callout, &state, limits, Refusals::Json)
        .merge(layers::around_callouts(
            forward_auth,
            &state,
            limits,
            Refusals::ProxyJson,
        ))
        .merge(layers::around_callouts(
            grpc,
            &state,
            limits,
            Refusals::Grpc,
        ))
        .merge(probes());
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
    callout: Callout,
    StrictJson(request): StrictJson<DecideRequest>,
) -> Response {
    let input = match request.into_input() {
        Ok(input) => input,
        Err(error) => return ApiError::BadRequest(error.to_string()).into_response(),
    };
    let decision = callout.decide(&input, Front::ServiceCallout).await;
    // One buffer, sized for a decision with a few headers: axum's `Json` starts at 128 bytes and grows
    // its buffer two or three times for one.
    let mut body = Vec::with_capacity(DECIDE_RESPONSE_BYTES);
    match serde_json::to_writer(&mut body, &DecideResponse::from(&decision)) {
        Ok(()) => ([(CONTENT_TYPE, "application/json")], body).into_response(),
        // As axum's `Json` answers; a decision's fields all serialize.
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

/// What a decide answer is given to start with: the benchmark's allow, with two upstream headers and
/// an issuer URL, is about 350 bytes.
const DECIDE_RESPONSE_BYTES: usize = 512;

/// `/v1/forward-auth[/<path>]`, any method: nginx, Traefik, HAProxy and Envoy's HTTP ext_authz. The
/// body is never read.
async fn forward_auth(callout: Callout, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let settings = &callout.generation.forward_auth;
    let input = match forward_auth::input(&method, &uri, &headers, settings) {
        Ok(input) => input,
        Err(error) => return ApiError::BadRequest(error.to_string()).into_response(),
    };
    let decision = callout.decide(&input, Front::ForwardAuth).await;
    let identity_headers = callout.generation.engine.upstream_headers();
    forward_auth::answer(&decision, identity_headers).into_response()
}

/// What the layers hand every front's handler: the state, the request's generation, its caller and
/// its trace id.
struct Callout {
    state: AppState,
    generation: Arc<Generation>,
    caller: Caller,
    trace_id: TraceId,
}

impl FromRequestParts<AppState> for Callout {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        Self::from_extensions(state, &mut parts.extensions)
            .ok_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }
}

impl Callout {
    /// The callout the layers prepared in a request's `extensions`, taken out of them; `None` if
    /// they did not run.
    fn from_extensions(state: &AppState, extensions: &mut http::Extensions) -> Option<Self> {
        let Admitted {
            generation,
            caller,
            trace_id,
        } = extensions.remove()?;
        Some(Self {
            state: state.clone(),
            generation,
            caller,
            trace_id,
        })
    }

    /// Decides `input` by the request's generation, and counts, logs and records the decision as
    /// asked by `front`: the one step every front takes.
    async fn decide(&self, input: &DecisionInput, front: Front) -> Decision {
        let started = Instant::now();
        let engine = &self.generation.engine;
        let decision = engine.decide(input).await;
        let issuer_name = engine.issuer_name(&decision);
        metrics::global().decided(
            decision.allow,
            decision.error.as_str(),
            issuer_name,
            started.elapsed().as_secs_f64(),
        );
        let log = &self.state.decision_log;
        if log.is_enabled() {
            let TraceId(trace_id) = &self.trace_id;
            log.record(&DecisionRecord::new(
                &decision,
                input,
                issuer_name,
                self.caller.as_str(),
                front.as_str(),
                trace_id,
            ));
        }
        tracing::debug!(
            decision_id = %decision.decision_id,
            message_id = %input.message_id,
            front = front.as_str(),
            allow = decision.allow,
            status = decision.status,
            error = decision.error.as_str(),
            subject = decision.subject(),
            kid = decision.kid(),
            cache_hit = decision.trace.token_cache_hit,
            memo_hit = decision.trace.memo_hit,
            verify_us = decision.trace.verify_micros,
            policy_us = decision.trace.policy_micros,
            "decision"
        );
        decision
    }
}
