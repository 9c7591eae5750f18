//! The running state: the [`Generation`] built from one configuration, swapped whole by a reload, and
//! what lasts as long as the process beside it ([`AppState`]): the decision log, the request limits,
//! the record of reloads and the key refresh tasks.
//!
//! INVARIANT: one request, one generation. A request takes the running generation once, at its start
//! ([`AppState::current`]), and reads that one to its end, whatever a reload installs meanwhile.

mod limits;
mod reloads;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

pub use limits::{Overloaded, RequestLimits};
pub use reloads::{FailedReload, ReloadHistory, ReloadRecord};

use crate::callers::CallerAuth;
use crate::clock::SharedClock;
use crate::config::{Config, ForwardAuthConfig, PolicySource, ReloadConfig, ServiceSettings};
use crate::credential::{ApiKeyStore, Verifier};
use crate::decision::{Decider, Engine};
use crate::decision_log::DecisionLog;
use crate::jwks::{IssuerKeys, KeyRefreshers};
use crate::server::tls::{TlsSettings, TlsSource};

/// What every request shares: the running [`Generation`] and what lasts as long as the process.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// The process-long part of [`AppState`].
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
    pub referenced_files: Vec<PathBuf>,
    /// The listener's TLS settings, when it serves HTTPS.
    pub tls: Option<Arc<TlsSettings>>,
    /// What the forward-auth front reads of the original request.
    pub forward_auth: ForwardAuthConfig,
}

impl Generation {
    /// Builds what serves requests from a configuration, taking over from `previous` what did not
    /// change: the whole verifier, with its token cache, when the issuer and limit settings are the
    /// same, or else the key sets of each issuer whose key settings are the same. Keys are not loaded.
    pub fn build(
        config: Config,
        previous: Option<&Self>,
        http: &reqwest::Client,
        clock: SharedClock,
    ) -> Result<Self, String> {
        let previous_callers = previous.map(|generation| &generation.callers);
        let previous = previous.map(|generation| generation.engine.verifier());
        let decider = Decider::new(
            config.policies,
            config.headers,
            config.realm,
            config.cache.decision_ttl,
        );
        let verifier = Verifier::succeeding(
            previous,
            &config.issuers,
            config.limits.max_token_bytes,
            config.cache.max_tokens,
            &decider.claims_read(),
            http,
            Arc::clone(&clock),
        );
        let api_keys = ApiKeyStore::new(&config.api_keys);
        Ok(Self {
            engine: Engine::new(
                verifier,
                api_keys,
                decider,
                config.cache.max_decisions,
                Arc::clone(&clock),
            ),
            callers: CallerAuth::new(
                &config.callers,
                config.tls.as_ref().and_then(|tls| tls.clients.clone()),
                previous_callers,
                http,
                clock,
            ),
            config_revision: config.revision,
            service: config.service,
            policy_source: config.policy_source,
            reload: config.reload,
            referenced_files: config.referenced_files,
            tls: config.tls,
            forward_auth: config.forward_auth,
        })
    }

    /// Every key set this generation needs loaded and fresh: the issuers' and the caller check's.
    pub fn key_sets(&self) -> impl Iterator<Item = &Arc<IssuerKeys>> {
        self.engine
            .verifier()
            .key_sets()
            .chain(self.callers.key_sets())
    }

    /// Whether every key set is loaded and fresh.
    pub fn is_ready(&self) -> bool {
        self.key_sets().all(|keys| keys.is_ready())
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

impl TlsSource for AppState {
    fn tls(&self) -> Option<Arc<TlsSettings>> {
        self.current().tls.clone()
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
