//! The endpoints for the platform rather than the gateway: `/healthz`, `/readyz` and `/metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::wire::{Health, Readiness};
use crate::metrics::{self, Snapshot};
use crate::state::AppState;

/// The process is up.
pub(super) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// 200 when every key set is loaded and fresh, 503 before; the body says what the generation holds.
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    let generation = state.current();
    let body = Readiness::of(&generation, state.reloads.record());
    let status = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// The OpenMetrics text: the process-wide counters, and the states of the running generation.
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let generation = state.current();
    let (memo_entries, memo_bytes) = generation.engine.memo_size();
    let snapshot = Snapshot {
        key_sets: generation
            .key_sets()
            .map(|keys| {
                let status = keys.status();
                (status.name, status.age_seconds, status.key_count)
            })
            .collect(),
        cached_tokens: generation.engine.verifier().cache().len(),
        memo_entries,
        memo_bytes,
        requests_in_flight: state.limits.in_flight(),
        reloads_succeeded: state.reloads.succeeded(),
        reloads_failed: state.reloads.failed(),
        policies: generation.engine.policies().len(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics::render(&snapshot),
    )
        .into_response()
}
