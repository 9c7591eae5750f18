//! Assembling and running the service: build the engine from a validated [`Config`], bind the API and
//! admin listeners, serve until a shutdown signal and drain, with one background task per issuer
//! keeping its keys fresh.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;

use crate::api;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::decision_log::DecisionLog;
use crate::outbound::http_client;
use crate::server::{self, HeadLimits, Transport};
use crate::state::{AppState, Generation};

/// Builds the shared state from a configuration, with no decision log. Keys are not loaded yet.
pub fn state(config: Config, clock: SharedClock) -> anyhow::Result<AppState> {
    Ok(AppState::new(
        Generation::build(config, None, &http_client()?, clock).map_err(anyhow::Error::msg)?,
        DecisionLog::off(),
    ))
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
            Generation::build(config, None, &http_client()?, clock).map_err(anyhow::Error::msg)?,
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
        let head = HeadLimits {
            max_bytes: settings.limits.max_header_bytes,
            read_timeout: settings.limits.request_timeout,
        };
        self.state.start_refreshing();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let admin = self.admin_listener.map(|listener| {
            let mut stopped = stopped.clone();
            tokio::spawn(server::serve(
                listener,
                api::admin_router(self.state.clone()),
                Transport::Plain,
                head,
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
            head,
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
