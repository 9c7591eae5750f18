//! Assembling and running the service: build the engine from a validated [`Config`], bind, serve until
//! a shutdown signal, with one background task per issuer keeping its keys fresh.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;

use crate::api::{self, AppState, CallerAuth, Generation};
use crate::apikeys::ApiKeyStore;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::decision::{Decider, Engine};
use crate::token::Verifier;

/// The HTTP client used for discovery and JWKS fetches.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("verdict/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client")
}

/// Builds the shared state from a configuration. Keys are not loaded yet.
pub fn state(config: Config, clock: SharedClock) -> anyhow::Result<AppState> {
    Ok(AppState::new(generation(
        config,
        None,
        &http_client()?,
        clock,
    )?))
}

/// Builds what serves requests from a configuration, taking over from `previous` what did not change:
/// the whole verifier, with its token cache, when the issuer and limit settings are the same, or else
/// the key sets of each issuer whose key settings are the same.
pub fn generation(
    config: Config,
    previous: Option<&Generation>,
    http: &reqwest::Client,
    clock: SharedClock,
) -> anyhow::Result<Generation> {
    let previous_callers = previous.map(|generation| &generation.callers);
    let previous = previous.map(|generation| generation.engine.verifier());
    let verifier = Verifier::succeeding(
        previous,
        &config.issuers,
        config.limits.max_token_bytes,
        config.cache.max_tokens,
        http,
        Arc::clone(&clock),
    );
    let decider = Decider::new(
        config.policies,
        config.headers,
        config.realm,
        config.cache.decision_ttl,
    );
    let api_keys = ApiKeyStore::new(&config.api_keys).map_err(anyhow::Error::msg)?;
    Ok(Generation {
        engine: Engine::new(verifier, api_keys, decider, Arc::clone(&clock)),
        callers: CallerAuth::new(&config.callers, previous_callers, http, clock),
        config_revision: config.revision,
        listen: config.listen,
        policy_source: config.policy_source,
        reload: config.reload,
        referenced_files: config.referenced_files,
        tls: config.tls,
    })
}

/// A bound, ready-to-run service.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
}

impl Application {
    /// Builds the service and binds its configured listen address; `extra_routes` are served beside the
    /// API.
    pub async fn build(
        config: Config,
        clock: SharedClock,
        extra_routes: Router,
    ) -> anyhow::Result<Self> {
        let listen = config.listen;
        let state = state(config, clock)?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        Ok(Self::assemble(listener, state, extra_routes))
    }

    /// Builds the service on a listener bound beforehand (the demo binds first, to know its address).
    pub fn build_on(
        listener: TcpListener,
        config: Config,
        clock: SharedClock,
        extra_routes: Router,
    ) -> anyhow::Result<Self> {
        Ok(Self::assemble(
            listener,
            state(config, clock)?,
            extra_routes,
        ))
    }

    fn assemble(listener: TcpListener, state: AppState, extra_routes: Router) -> Self {
        let router = api::router(state.clone()).merge(extra_routes);
        Self {
            listener,
            router,
            state,
        }
    }

    /// The state the service runs on.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The bound address (useful when the configuration asked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.state.start_refreshing();
        let served = if self.state.current().tls.is_some() {
            crate::tls::serve(self.listener, self.router, self.state.clone(), shutdown).await
        } else {
            axum::serve(self.listener, self.router)
                .with_graceful_shutdown(shutdown)
                .await
        };
        self.state.stop_refreshing();
        served.context("serving HTTP")
    }
}
