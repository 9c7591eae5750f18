//! The HTTP API: `POST /v1/decide`, `GET /healthz`, `GET /readyz`.
//!
//! [`router`] builds the axum `Router` apart from any socket, so tests drive it with `oneshot`. Caller
//! authentication runs before the body is read; the body is capped at 64 KiB and parsed strictly.

mod caller;
mod error;
pub mod wire;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde_json::json;

pub use caller::CallerAuth;
pub use error::ApiError;

use crate::decision::Engine;
use error::StrictJson;
use wire::{DecideRequest, DecideResponse};

/// The largest `/v1/decide` body accepted (DESIGN §2).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

#[derive(Debug)]
pub struct Shared {
    pub engine: Engine,
    pub callers: CallerAuth,
    /// The configuration's revision, shown by `/readyz`.
    pub config_revision: String,
}

impl AppState {
    pub fn new(engine: Engine, callers: CallerAuth, config_revision: String) -> Self {
        Self(Arc::new(Shared {
            engine,
            callers,
            config_revision,
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The service's routes.
pub fn router(state: AppState) -> Router {
    let decide = Router::new()
        .route("/v1/decide", post(decide))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            caller::require_caller,
        ));
    Router::new()
        .merge(decide)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn decide(
    State(state): State<AppState>,
    StrictJson(request): StrictJson<DecideRequest>,
) -> Response {
    let input = match request.into_input() {
        Ok(input) => input,
        Err(error) => return ApiError::BadRequest(error.to_string()).into_response(),
    };
    let decision = state.engine.decide(&input).await;
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
    Json(DecideResponse::from(&decision)).into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let verifier = state.engine.verifier();
    let issuers: Vec<_> = verifier
        .key_sets()
        .map(|keys| {
            let status = keys.status();
            json!({
                "name": status.name,
                "ready": status.loaded && !status.stale,
                "keys": status.key_count,
                "key_age_seconds": status.age_seconds,
                "stale": status.stale,
                "last_error": status.last_error,
            })
        })
        .collect();
    let ready = verifier.key_sets().all(|keys| keys.is_ready());
    let policies = state.engine.policies();
    let body = json!({
        "ready": ready,
        "config_revision": state.config_revision,
        "policy_revision": policies.revision(),
        "policies": policies.len(),
        "issuers": issuers,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
