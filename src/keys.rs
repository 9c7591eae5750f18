//! Issuer verification keys: discovery, JWKS fetching, background refresh, unknown-`kid` refetch with a
//! cooldown, and a staleness budget.
//!
//! The hot path ([`IssuerKeys::lookup`]) reads an immutable [`KeySnapshot`] through an `ArcSwap`, without
//! locks. Fetches are serialized by one async mutex per issuer; a request that finds an unknown `kid`
//! takes that mutex, and when it gets it either sees keys another request just fetched or, if the last
//! unknown-`kid` fetch is within the cooldown, gives up without fetching. So concurrent unknown-`kid`
//! requests cost at most one fetch per cooldown; scheduled refreshes do not count against it.
//!
//! INVARIANT: a failed fetch (transport error, non-2xx, garbage, or a set with no usable key) never
//! replaces the snapshot; only a successful fetch with at least one usable key does.

pub(crate) mod fetch;
pub mod jwk;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use reqwest::Url;
use serde::Deserialize;
use tokio::sync::Mutex;

pub use fetch::FetchError;
pub use jwk::VerificationKey;

use crate::clock::SharedClock;
use crate::config::{JwksRefresh, KeySource};

/// The longest pause between two attempts to load keys that have never loaded.
const MAX_INITIAL_BACKOFF: Duration = Duration::from_secs(30);

/// The keys of one issuer and how they are kept fresh.
#[derive(Debug)]
pub struct IssuerKeys {
    name: String,
    issuer: String,
    source: KeySource,
    refresh: JwksRefresh,
    http: reqwest::Client,
    clock: SharedClock,
    snapshot: ArcSwap<KeySnapshot>,
    fetch: Mutex<FetchState>,
    /// Why the last fetch failed, cleared by a success; read by `/readyz` without waiting on a fetch.
    last_error: ArcSwapOption<String>,
}

/// The keys in force, replaced whole on every successful fetch.
#[derive(Debug, Default)]
pub struct KeySnapshot {
    keys: HashMap<String, Arc<VerificationKey>>,
    /// When these keys were fetched; `None` until the first successful fetch.
    fetched_at: Option<u64>,
}

#[derive(Debug, Default)]
struct FetchState {
    /// The JWKS URL, configured or discovered.
    jwks_uri: Option<Url>,
    /// When an unknown `kid` last caused a fetch: the cooldown counts from it, not from the scheduled
    /// refreshes, so the first unknown `kid` after one is still fetched at once.
    last_refetch: Option<u64>,
    next_refresh_at: u64,
    consecutive_failures: u32,
}

/// The outcome of looking up a key.
#[derive(Debug, Clone)]
pub enum KeyLookup {
    Found(Arc<VerificationKey>),
    /// The keys are loaded and fresh, and none has this `kid`.
    Unknown,
    /// No key set has been loaded yet.
    NotLoaded,
    /// The keys are older than the staleness budget and no longer trusted.
    Stale,
}

/// What `/readyz` reports for one issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    pub name: String,
    pub loaded: bool,
    pub stale: bool,
    pub key_count: usize,
    pub age_seconds: Option<u64>,
    pub last_error: Option<String>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl IssuerKeys {
    /// Keys for an issuer whose `source` is discovery or a JWKS URL. Nothing is fetched until
    /// [`Self::refresh`] or a lookup asks.
    pub fn new(
        name: String,
        issuer: String,
        source: KeySource,
        refresh: JwksRefresh,
        http: reqwest::Client,
        clock: SharedClock,
    ) -> Self {
        let jwks_uri = match &source {
            KeySource::JwksUri(url) => Some(url.clone()),
            KeySource::Discovery(_) | KeySource::NoJwks => None,
        };
        Self {
            name,
            issuer,
            source,
            refresh,
            http,
            clock,
            snapshot: ArcSwap::from_pointee(KeySnapshot::default()),
            last_error: ArcSwapOption::empty(),
            fetch: Mutex::new(FetchState {
                jwks_uri,
                ..FetchState::default()
            }),
        }
    }

    /// Looks a key up without any I/O.
    pub fn lookup(&self, kid: &str) -> KeyLookup {
        let snapshot = self.snapshot.load();
        let Some(fetched_at) = snapshot.fetched_at else {
            return KeyLookup::NotLoaded;
        };
        if self.is_stale(fetched_at) {
            return KeyLookup::Stale;
        }
        match snapshot.keys.get(kid) {
            Some(key) => KeyLookup::Found(Arc::clone(key)),
            None => KeyLookup::Unknown,
        }
    }

    /// Looks a key up, and if it is unknown (or the keys are stale or not loaded), refetches the key set
    /// unless another such refetch happened within the unknown-`kid` cooldown.
    pub async fn lookup_or_refetch(&self, kid: &str) -> KeyLookup {
        let first = self.lookup(kid);
        if matches!(first, KeyLookup::Found(_)) {
            return first;
        }
        let mut state = self.fetch.lock().await;
        // Another request may have fetched while this one waited for the lock.
        let second = self.lookup(kid);
        if matches!(second, KeyLookup::Found(_)) {
            return second;
        }
        let now = self.clock.now();
        let cooldown = self.refresh.unknown_kid_cooldown.as_secs();
        if state
            .last_refetch
            .is_some_and(|last| now < last.saturating_add(cooldown))
        {
            return second;
        }
        state.last_refetch = Some(now);
        // The outcome is logged and kept for readiness; the lookup below reports what it left.
        let _ = self.fetch_locked(&mut state).await;
        self.lookup(kid)
    }

    /// Whether the keys were last refreshed longer ago than the staleness budget.
    fn is_stale(&self, fetched_at: u64) -> bool {
        self.clock.now().saturating_sub(fetched_at) > self.refresh.max_staleness.as_secs()
    }

    /// Fetches the key set now, whatever the schedule says.
    pub async fn refresh(&self) -> Result<usize, FetchError> {
        let mut state = self.fetch.lock().await;
        self.fetch_locked(&mut state).await
    }

    /// Fetches the key set if its refresh time has come; returns how long to wait before asking again.
    pub async fn refresh_if_due(&self) -> Duration {
        let mut state = self.fetch.lock().await;
        let now = self.clock.now();
        if now >= state.next_refresh_at {
            let _ = self.fetch_locked(&mut state).await;
        }
        Duration::from_secs(
            state
                .next_refresh_at
                .saturating_sub(self.clock.now())
                .max(1),
        )
    }

    /// What `/readyz` reports. Never waits on a fetch in progress.
    pub fn status(&self) -> KeyStatus {
        let snapshot = self.snapshot.load();
        let last_error = self
            .last_error
            .load_full()
            .map(|error| error.as_str().to_owned());
        KeyStatus {
            name: self.name.clone(),
            loaded: snapshot.fetched_at.is_some(),
            stale: snapshot.fetched_at.is_some_and(|at| self.is_stale(at)),
            key_count: snapshot.keys.len(),
            age_seconds: snapshot
                .fetched_at
                .map(|at| self.clock.now().saturating_sub(at)),
            last_error,
        }
    }

    /// Whether keys are loaded and within the staleness budget.
    pub fn is_ready(&self) -> bool {
        let snapshot = self.snapshot.load();
        snapshot.fetched_at.is_some_and(|at| !self.is_stale(at))
    }

    async fn fetch_locked(&self, state: &mut FetchState) -> Result<usize, FetchError> {
        let now = self.clock.now();
        match self.fetch_key_set(state).await {
            Ok((parsed, max_age)) => {
                let count = parsed.keys.len();
                for reason in &parsed.skipped {
                    tracing::debug!(issuer = %self.name, "skipped a JWK: {reason}");
                }
                self.snapshot.store(Arc::new(KeySnapshot {
                    keys: parsed.keys,
                    fetched_at: Some(now),
                }));
                let interval = max_age
                    .unwrap_or(self.refresh.default_interval)
                    .clamp(self.refresh.min_interval, self.refresh.max_interval);
                state.next_refresh_at = now.saturating_add(interval.as_secs());
                state.consecutive_failures = 0;
                self.last_error.store(None);
                crate::metrics::global().key_refresh(&self.name, true);
                tracing::info!(issuer = %self.name, keys = count, next_refresh_seconds = interval.as_secs(), "loaded signing keys");
                Ok(count)
            }
            Err(error) => {
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                let backoff = Duration::from_secs(1_u64 << state.consecutive_failures.min(10)).min(
                    if self.snapshot.load().fetched_at.is_some() {
                        self.refresh.min_interval
                    } else {
                        MAX_INITIAL_BACKOFF
                    },
                );
                state.next_refresh_at = now.saturating_add(backoff.as_secs());
                self.last_error.store(Some(Arc::new(error.to_string())));
                crate::metrics::global().key_refresh(&self.name, false);
                // A discovered JWKS URL may have moved; discover again next time.
                if matches!(self.source, KeySource::Discovery(_)) {
                    state.jwks_uri = None;
                }
                tracing::warn!(issuer = %self.name, retry_seconds = backoff.as_secs(), "keeping the current signing keys: {error}");
                Err(error)
            }
        }
    }

    async fn fetch_key_set(
        &self,
        state: &mut FetchState,
    ) -> Result<(jwk::ParsedKeySet, Option<Duration>), FetchError> {
        let jwks_uri = match (&state.jwks_uri, &self.source) {
            (Some(uri), _) => uri.clone(),
            (None, KeySource::Discovery(discovery_url)) => {
                let uri = self.discover(discovery_url).await?;
                state.jwks_uri = Some(uri.clone());
                uri
            }
            (None, KeySource::JwksUri(uri)) => uri.clone(),
            (None, KeySource::NoJwks) => {
                return Err(FetchError::Invalid {
                    url: String::new(),
                    reason: "the issuer has no key set".into(),
                });
            }
        };
        let fetched = fetch::get_json(&self.http, &jwks_uri, self.refresh.timeout).await?;
        let invalid = |reason: String| FetchError::Invalid {
            url: jwks_uri.to_string(),
            reason,
        };
        let parsed = jwk::parse_key_set(&fetched.body).map_err(invalid)?;
        if parsed.keys.is_empty() {
            return Err(invalid(format!(
                "no usable signing key ({} skipped)",
                parsed.skipped.len()
            )));
        }
        Ok((parsed, fetched.max_age))
    }

    async fn discover(&self, discovery_url: &Url) -> Result<Url, FetchError> {
        let invalid = |reason: String| FetchError::Invalid {
            url: discovery_url.to_string(),
            reason,
        };
        let fetched = fetch::get_json(&self.http, discovery_url, self.refresh.timeout).await?;
        let document: Discovery = serde_json::from_slice(&fetched.body)
            .map_err(|error| invalid(format!("not a discovery document: {error}")))?;
        // OIDC Discovery §4.3: the document must name exactly the issuer it was fetched for.
        if document.issuer != self.issuer {
            return Err(invalid(format!(
                "it names issuer `{}`, expected `{}`",
                document.issuer, self.issuer
            )));
        }
        let uri = Url::parse(&document.jwks_uri)
            .map_err(|error| invalid(format!("bad `jwks_uri`: {error}")))?;
        let secure =
            uri.scheme() == "https" || (uri.scheme() == "http" && crate::config::is_loopback(&uri));
        if !secure {
            return Err(invalid(format!("`jwks_uri` `{uri}` is not https")));
        }
        Ok(uri)
    }

    /// Loads keys until they load, then keeps them fresh. Runs until the task is dropped.
    pub async fn run_refresh(self: Arc<Self>) {
        loop {
            let wait = self.refresh_if_due().await;
            tokio::time::sleep(wait).await;
        }
    }
}

/// The background tasks that keep a changing collection of key sets fresh: one task per key set, started
/// when the set joins and stopped when it leaves (a reload can do either).
#[derive(Debug, Default)]
pub struct KeyRefreshers {
    tasks: Vec<(Arc<IssuerKeys>, tokio::task::AbortHandle)>,
}

impl KeyRefreshers {
    /// Refreshes exactly `key_sets` from now on. Must be called within a Tokio runtime.
    pub fn keep<'a>(&mut self, key_sets: impl Iterator<Item = &'a Arc<IssuerKeys>>) {
        let wanted: Vec<&Arc<IssuerKeys>> = key_sets.collect();
        self.tasks.retain(|(keys, task)| {
            let still_wanted = wanted.iter().any(|wanted| Arc::ptr_eq(wanted, keys));
            if !still_wanted {
                task.abort();
            }
            still_wanted
        });
        for keys in wanted {
            if !self
                .tasks
                .iter()
                .any(|(running, _)| Arc::ptr_eq(running, keys))
            {
                let task = tokio::spawn(Arc::clone(keys).run_refresh());
                self.tasks.push((Arc::clone(keys), task.abort_handle()));
            }
        }
    }
}

impl Drop for KeyRefreshers {
    fn drop(&mut self) {
        for (_, task) in &self.tasks {
            task.abort();
        }
    }
}
