//! The HTTP API: `POST /v1/decide`, `GET /healthz`, `GET /readyz`, `GET /metrics`.
//!
//! [`router`] builds the axum `Router` apart from any socket, so tests drive it with `oneshot`. A
//! callout takes the running generation once, first, and keeps it to the end: caller authentication
//! and the decision read that one generation, whatever a reload installs meanwhile. It then goes
//! through its trace span, load shedding and deadline, and caller authentication before its body is
//! read; the body is capped (64 KiB by default) and parsed strictly.

mod caller;
mod error;
mod limits;
mod reloads;
pub mod wire;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router, middleware};
use serde_json::json;

pub use caller::{Caller, CallerAuth};
pub use error::ApiError;
pub use limits::RequestLimits;
pub use reloads::ReloadHistory;

use crate::config::{PolicySource, ReloadConfig, ServiceSettings};
use crate::decision::Engine;
use crate::decision_log::{DecisionLog, DecisionRecord};
use crate::keys::{IssuerKeys, KeyRefreshers};
use crate::metrics::{self, Snapshot};
use crate::telemetry::TraceId;
use error::StrictJson;
use wire::{DecideRequest, DecideResponse};

/// What every handler shares: the running [`Generation`], swapped whole by a reload, the record of
/// reloads, and what lasts as long as the process: the decision log and the request limits.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

#[derive(Debug)]
pub struct Shared {
    current: ArcSwap<Generation>,
    pub reloads: ReloadHistory,
    pub decision_log: DecisionLog,
    pub limits: RequestLimits,
    /// The refresh tasks of the running generation's key sets, while the service runs.
    refreshers: Mutex<Option<KeyRefreshers>>,
}

/// Everything built from one configuration. A request holds the generation it started with until it
/// ends, so a reload never changes the rules under a request in flight.
#[derive(Debug)]
pub struct Generation {
    pub engine: Engine,
    pub callers: CallerAuth,
    /// The configuration's revision, shown by `/readyz`.
    pub config_revision: String,
    /// The process settings as configured; only those of the first generation are in force (a reload
    /// cannot move a listener or change the limits).
    pub service: ServiceSettings,
    /// Where the policies came from, for the reloader to watch.
    pub policy_source: Option<PolicySource>,
    pub reload: ReloadConfig,
    /// Other files the configuration read (an API key file, TLS files), for the reloader to watch.
    pub referenced_files: Vec<std::path::PathBuf>,
    /// The listener's TLS settings, when it serves HTTPS.
    pub tls: Option<Arc<crate::tls::TlsSettings>>,
}

impl Generation {
    /// Every key set this generation needs loaded and fresh: the issuers' and the caller check's.
    pub fn key_sets(&self) -> impl Iterator<Item = &Arc<IssuerKeys>> {
        self.engine
            .verifier()
            .key_sets()
            .chain(self.callers.key_sets())
    }
}

impl AppState {
    /// The state of a service starting on `generation`, recording decisions to `decision_log`.
    pub fn new(generation: Generation, decision_log: DecisionLog) -> Self {
        let limits = generation.service.limits;
        Self(Arc::new(Shared {
            current: ArcSwap::from_pointee(generation),
            reloads: ReloadHistory::default(),
            decision_log,
            limits: RequestLimits::new(limits.max_concurrent_requests, limits.request_timeout),
            refreshers: Mutex::new(None),
        }))
    }

    /// The running generation.
    pub fn current(&self) -> Arc<Generation> {
        self.0.current.load_full()
    }

    /// Makes `generation` the running one, in one step, and moves key refreshing over to its key sets.
    pub fn install(&self, generation: Generation) {
        let generation = Arc::new(generation);
        let mut refreshers = self.lock_refreshers();
        self.0.current.store(Arc::clone(&generation));
        if let Some(refreshers) = refreshers.as_mut() {
            refreshers.keep(generation.key_sets());
        }
    }

    /// Starts refreshing the running generation's keys in the background; [`Self::stop_refreshing`]
    /// ends it. Must be called within a Tokio runtime.
    pub fn start_refreshing(&self) {
        let mut refreshers = self.lock_refreshers();
        refreshers
            .get_or_insert_with(KeyRefreshers::default)
            .keep(self.current().key_sets());
    }

    pub fn stop_refreshing(&self) {
        self.lock_refreshers().take();
    }

    fn lock_refreshers(&self) -> std::sync::MutexGuard<'_, Option<KeyRefreshers>> {
        // The guarded value stays consistent even if a holder panicked: `keep` only adds or removes
        // whole entries.
        self.0
            .refreshers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl crate::tls::TlsSource for AppState {
    fn tls(&self) -> Option<Arc<crate::tls::TlsSettings>> {
        self.current().tls.clone()
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The service's routes; `/metrics` too unless the configuration gives it an `admin_listen` of its own.
pub fn router(state: AppState) -> Router {
    let generation = state.current();
    let decide = Router::new()
        .route("/v1/decide", post(decide))
        .layer(DefaultBodyLimit::max(
            generation.service.limits.max_body_bytes,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            caller::require_caller,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            limits::within_limits,
        ))
        .route_layer(middleware::from_fn(crate::telemetry::callout_span))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            with_generation,
        ));
    let router = decide.merge(probes());
    let router = if generation.service.admin_listen.is_none() {
        router.route("/metrics", get(metrics))
    } else {
        router
    };
    router.with_state(state)
}

/// The admin listener's routes: `/metrics`, `/healthz`, `/readyz`.
pub fn admin_router(state: AppState) -> Router {
    probes().route("/metrics", get(metrics)).with_state(state)
}

/// `/healthz` and `/readyz`, served on both listeners.
fn probes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// Takes the running generation for the whole request (INVARIANT: one request, one generation).
async fn with_generation(
    State(state): State<AppState>,
    mut request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    request.extensions_mut().insert(state.current());
    next.run(request).await
}

async fn decide(
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
    let started = Instant::now();
    let decision = generation.engine.decide(&input).await;
    metrics::global().decided(
        decision.allow,
        decision.error.as_str(),
        &decision.trace.issuer_name,
        started.elapsed().as_secs_f64(),
    );
    if state.decision_log.is_enabled() {
        let trace_id = trace_id.as_ref().map_or("", |Extension(TraceId(id))| id);
        state.decision_log.record(&DecisionRecord::new(
            &decision,
            &input,
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
    Json(DecideResponse::from(&decision)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let generation = state.current();
    let snapshot = Snapshot {
        key_sets: generation
            .key_sets()
            .map(|keys| {
                let status = keys.status();
                (status.name, status.age_seconds, status.key_count)
            })
            .collect(),
        cached_tokens: generation.engine.verifier().cache().len(),
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

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let generation = state.current();
    let issuers: Vec<_> = generation
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
    let ready = generation.key_sets().all(|keys| keys.is_ready());
    let policies = generation.engine.policies();
    let body = json!({
        "ready": ready,
        "config_revision": generation.config_revision,
        "policy_revision": policies.revision(),
        "policies": policies.len(),
        "issuers": issuers,
        "reloads": state.reloads.to_json(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
