//! The HTTP API: `POST /v1/decide`, `GET /healthz`, `GET /readyz`.
//!
//! [`router`] builds the axum `Router` apart from any socket, so tests drive it with `oneshot`. Caller
//! authentication runs before the body is read; the body is capped at 64 KiB and parsed strictly.

mod caller;
mod error;
pub mod wire;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde_json::json;

pub use caller::CallerAuth;
pub use error::ApiError;

use crate::config::{PolicySource, ReloadConfig};
use crate::decision::Engine;
use crate::keys::{IssuerKeys, KeyRefreshers};
use crate::reload::ReloadHistory;
use error::StrictJson;
use wire::{DecideRequest, DecideResponse};

/// The largest `/v1/decide` body accepted (DESIGN §2).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler shares: the running [`Generation`], swapped whole by a reload, and the record of
/// reloads.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

#[derive(Debug)]
pub struct Shared {
    current: ArcSwap<Generation>,
    pub reloads: ReloadHistory,
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
    /// The configured listen address (a reload cannot move the listener).
    pub listen: SocketAddr,
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
    pub fn new(generation: Generation) -> Self {
        Self(Arc::new(Shared {
            current: ArcSwap::from_pointee(generation),
            reloads: ReloadHistory::default(),
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
    let decision = state.current().engine.decide(&input).await;
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
