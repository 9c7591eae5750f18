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

pub mod jwk;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use reqwest::Url;
use tokio::sync::Mutex;

pub use crate::outbound::FetchError;
use crate::outbound::{self, discovery};
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
    /// When an unknown `kid` last caused a fetch (0: never). The cooldown counts from it, not from the
    /// scheduled refreshes, so the first unknown `kid` after one is still fetched at once. Read without
    /// the fetch lock, so a lookup inside the cooldown never waits on a fetch.
    last_refetch: AtomicU64,
    /// Whether that fetch is still running: lookups of an unknown `kid` wait for it, since it may be
    /// fetching the very key they need.
    refetching: AtomicBool,
    /// Fetch attempts finished, to tell whether one ended while a lookup waited for the lock.
    fetches: AtomicU64,
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
    next_refresh_at: u64,
    consecutive_failures: u32,
}

/// Raises a flag until dropped, even when the request holding it is cancelled (a request timeout).
struct Flag<'a>(&'a AtomicBool);

impl<'a> Flag<'a> {
    fn raise(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::Release);
        Self(flag)
    }
}

impl Drop for Flag<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
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
            last_refetch: AtomicU64::new(0),
            refetching: AtomicBool::new(false),
            fetches: AtomicU64::new(0),
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
    /// unless another such refetch began within the unknown-`kid` cooldown. Inside the cooldown it
    /// answers at once, unless that refetch is still running, which it waits for; it never waits on a
    /// scheduled refresh then, so a hanging JWKS endpoint holds up no more than the requests that
    /// asked for a fetch.
    pub async fn lookup_or_refetch(&self, kid: &str) -> KeyLookup {
        let first = self.lookup(kid);
        if matches!(first, KeyLookup::Found(_)) {
            return first;
        }
        if self.in_cooldown() && !self.refetching.load(Ordering::Acquire) {
            return first;
        }
        let seen = self.fetches.load(Ordering::Acquire);
        let mut state = self.fetch.lock().await;
        // A fetch that ended while this request waited for the lock answers for it too.
        let second = self.lookup(kid);
        if matches!(second, KeyLookup::Found(_))
            || self.fetches.load(Ordering::Acquire) != seen
            || self.in_cooldown()
        {
            return second;
        }
        self.last_refetch
            .store(self.clock.now().max(1), Ordering::Release);
        let _running = Flag::raise(&self.refetching);
        // The outcome is logged and kept for readiness; the lookup below reports what it left.
        let _ = self.fetch_locked(&mut state).await;
        self.lookup(kid)
    }

    /// Whether an unknown-`kid` refetch began within the cooldown.
    fn in_cooldown(&self) -> bool {
        let last = self.last_refetch.load(Ordering::Acquire);
        last != 0
            && self.clock.now() < last.saturating_add(self.refresh.unknown_kid_cooldown.as_secs())
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

    /// The first second at which the keys now held are stale; `None` before any are loaded.
    pub fn fresh_until(&self) -> Option<u64> {
        let fetched_at = self.snapshot.load().fetched_at?;
        Some(
            fetched_at
                .saturating_add(self.refresh.max_staleness.as_secs())
                .saturating_add(1),
        )
    }

    /// Whether keys are loaded and within the staleness budget.
    pub fn is_ready(&self) -> bool {
        let snapshot = self.snapshot.load();
        snapshot.fetched_at.is_some_and(|at| !self.is_stale(at))
    }

    async fn fetch_locked(&self, state: &mut FetchState) -> Result<usize, FetchError> {
        let now = self.clock.now();
        let fetched = self.fetch_key_set(state).await;
        self.fetches.fetch_add(1, Ordering::AcqRel);
        match fetched {
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
                let uri = discovery::endpoint(
                    &self.http,
                    discovery_url,
                    &self.issuer,
                    discovery::Endpoint::Jwks,
                    self.refresh.timeout,
                )
                .await?;
                state.jwks_uri = Some(uri.clone());
                uri
            }
            (None, KeySource::JwksUri(uri)) => uri.clone(),
            (None, KeySource::NoJwks) => return Err(FetchError::NoKeySet),
        };
        let fetched = outbound::get_json(&self.http, &jwks_uri, self.refresh.timeout).await?;
        let invalid = |reason: String| FetchError::invalid(&jwks_uri, reason);
        let parsed = jwk::parse_key_set(&fetched.body).map_err(invalid)?;
        if parsed.keys.is_empty() {
            return Err(invalid(format!(
                "no usable signing key ({} skipped)",
                parsed.skipped.len()
            )));
        }
        Ok((parsed, fetched.max_age))
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
