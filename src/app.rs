//! Assembling and running the service: build the engine from a validated [`Config`], bind the API and
//! admin listeners, serve until a shutdown signal and drain, with one background task per issuer
//! keeping its keys fresh.

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
use crate::decision_log::DecisionLog;
use crate::server::{self, Transport};
use crate::token::Verifier;

pub use crate::keys::fetch::http_client;

/// Builds the shared state from a configuration, with no decision log. Keys are not loaded yet.
pub fn state(config: Config, clock: SharedClock) -> anyhow::Result<AppState> {
    Ok(AppState::new(
        generation(config, None, &http_client()?, clock)?,
        DecisionLog::off(),
    ))
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
    })
}

/// A bound, ready-to-run service.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    router: Router,
    state: AppState,
}

impl Application {
    /// Builds the service, opens its decision log and binds its configured listen addresses;
    /// `extra_routes` are served beside the API.
    pub async fn build(
        config: Config,
        clock: SharedClock,
        extra_routes: Router,
    ) -> anyhow::Result<Self> {
        let listen = config.service.listen;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        Self::build_on(listener, config, clock, extra_routes).await
    }

    /// Builds the service on an API listener bound beforehand (the demo binds first, to know its
    /// address).
    pub async fn build_on(
        listener: TcpListener,
        config: Config,
        clock: SharedClock,
        extra_routes: Router,
    ) -> anyhow::Result<Self> {
        let admin_listener = match config.service.admin_listen {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("binding the admin listener {address}"))?,
            ),
            None => None,
        };
        let decision_log = DecisionLog::open(&config.service.decision_log)?;
        let state = AppState::new(
            generation(config, None, &http_client()?, clock)?,
            decision_log,
        );
        let router = api::router(state.clone()).merge(extra_routes);
        Ok(Self {
            listener,
            admin_listener,
            router,
            state,
        })
    }

    /// The state the service runs on.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The bound address (useful when the configuration asked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin listener's bound address, when there is one.
    pub fn admin_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.admin_listener.as_ref().map(TcpListener::local_addr)
    }

    /// Serves until `shutdown` resolves, then lets requests in flight finish within the grace period
    /// and writes out the decision log.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let generation = self.state.current();
        let settings = generation.service.clone();
        let transport = match &generation.tls {
            Some(first) => Transport::Tls {
                source: Arc::new(self.state.clone()),
                first: Arc::clone(first),
            },
            None => Transport::Plain,
        };
        drop(generation);
        self.state.start_refreshing();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let admin = self.admin_listener.map(|listener| {
            let mut stopped = stopped.clone();
            tokio::spawn(server::serve(
                listener,
                api::admin_router(self.state.clone()),
                Transport::Plain,
                settings.limits,
                settings.shutdown_grace,
                async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                },
            ))
        });
        let signalled = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        let served = server::serve(
            self.listener,
            self.router,
            transport,
            settings.limits,
            settings.shutdown_grace,
            signalled,
        )
        .await;
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        self.state.stop_refreshing();
        let state = self.state.clone();
        let _ = tokio::task::spawn_blocking(move || state.decision_log.close()).await;
        served.context("serving HTTP")
    }
}
