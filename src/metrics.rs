//! Prometheus metrics for `GET /metrics`.
//!
//! Events are counted where they happen, in one process-wide [`Metrics`] ([`global`]): decisions,
//! rejected callouts, key-set refreshes, token-cache lookups, introspections and decision-log drops.
//! What is a state rather than an event — key-set age, cache size, requests in flight, reloads — is
//! read from the running service at each scrape ([`render`]). Every label value comes from a bounded
//! set: outcomes, error codes, configured issuer names; never a path or a subject.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// The counters and histograms the service updates as things happen.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    decision_seconds: Histogram,
    rejected: Family<ReasonLabels, Counter>,
    key_refreshes: Family<RefreshLabels, Counter>,
    /// The `hit` and `miss` series of `token_cache_lookups`, looked up once: they count every decision.
    token_cache_hits: Counter,
    token_cache_misses: Counter,
    introspection_seconds: Family<IssuerLabels, Histogram, fn() -> Histogram>,
    introspection_errors: Family<IssuerLabels, Counter>,
    decision_log_dropped: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    outcome: &'static str,
    error: &'static str,
    issuer: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    issuer: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabels {
    issuer: String,
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Buckets from 25 µs to about 3.3 s, doubling: a cached decision takes tens of microseconds, an
/// introspection or a key fetch milliseconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(25e-6, 2.0, 18))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("verdict");
        let decisions = Family::default();
        registry.register(
            "decisions",
            "Decisions answered, by outcome, error code and issuer name",
            Family::clone(&decisions),
        );
        let decision_seconds = latency_histogram();
        registry.register_with_unit(
            "decision_duration",
            "Time to decide one callout, from its parsed body to its decision",
            Unit::Seconds,
            decision_seconds.clone(),
        );
        let rejected = Family::default();
        registry.register(
            "requests_rejected",
            "Callouts refused before a decision, by reason",
            Family::clone(&rejected),
        );
        let key_refreshes = Family::default();
        registry.register(
            "jwks_refreshes",
            "Key-set fetches, by issuer name and result",
            Family::clone(&key_refreshes),
        );
        let token_cache = Family::<ResultLabels, Counter>::default();
        registry.register(
            "token_cache_lookups",
            "Verified-token cache lookups, by result (hit or miss)",
            Family::clone(&token_cache),
        );
        let token_cache_hits = token_cache.get_or_create_owned(&ResultLabels { result: "hit" });
        let token_cache_misses = token_cache.get_or_create_owned(&ResultLabels { result: "miss" });
        let introspection_seconds = Family::new_with_constructor(latency_histogram as fn() -> _);
        registry.register_with_unit(
            "introspection_duration",
            "Time of one token introspection request, by issuer name",
            Unit::Seconds,
            Family::clone(&introspection_seconds),
        );
        let introspection_errors = Family::default();
        registry.register(
            "introspection_errors",
            "Introspections that got no usable answer, by issuer name",
            Family::clone(&introspection_errors),
        );
        let decision_log_dropped = Counter::default();
        registry.register(
            "decision_log_dropped",
            "Decision records dropped because the decision log could not keep up",
            decision_log_dropped.clone(),
        );
        registry.register(
            "build",
            "The running build",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Self {
            registry,
            decisions,
            decision_seconds,
            rejected,
            key_refreshes,
            token_cache_hits,
            token_cache_misses,
            introspection_seconds,
            introspection_errors,
            decision_log_dropped,
        }
    }

    /// Counts a decision and its duration: `error` is its code (empty for none), `issuer` the
    /// configured name of the credential's issuer (empty when unverified); either is `none` if empty.
    pub fn decided(&self, allow: bool, error: &'static str, issuer: &str, seconds: f64) {
        self.decisions
            .get_or_create(&DecisionLabels {
                outcome: if allow { "allow" } else { "deny" },
                error: if error.is_empty() { "none" } else { error },
                issuer: if issuer.is_empty() { "none" } else { issuer }.to_owned(),
            })
            .inc();
        self.decision_seconds.observe(seconds);
    }

    /// Counts a callout refused before a decision (`reason` is a fixed code such as `overloaded`).
    pub fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn key_refresh(&self, issuer: &str, succeeded: bool) {
        self.key_refreshes
            .get_or_create(&RefreshLabels {
                issuer: issuer.to_owned(),
                result: if succeeded { "success" } else { "failure" },
            })
            .inc();
    }

    pub fn token_cache_lookup(&self, hit: bool) {
        if hit {
            self.token_cache_hits.inc();
        } else {
            self.token_cache_misses.inc();
        }
    }

    /// Records one introspection request: how long it took and whether it got a usable answer.
    pub fn introspected(&self, issuer: &str, seconds: f64, failed: bool) {
        let labels = IssuerLabels {
            issuer: issuer.to_owned(),
        };
        self.introspection_seconds
            .get_or_create(&labels)
            .observe(seconds);
        if failed {
            self.introspection_errors.get_or_create(&labels).inc();
        }
    }

    pub fn decision_log_dropped(&self) {
        self.decision_log_dropped.inc();
    }
}

/// What [`render`] reads from the running service at each scrape.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Per key set: issuer name, seconds since its last successful fetch (if any), keys held.
    pub key_sets: Vec<(String, Option<u64>, usize)>,
    pub cached_tokens: usize,
    /// Decisions in the running generation's memo, and their estimated bytes (the memo's bound).
    pub memo_entries: usize,
    pub memo_bytes: u64,
    pub requests_in_flight: usize,
    pub reloads_succeeded: u64,
    pub reloads_failed: u64,
    pub policies: usize,
}

/// The Prometheus text exposition (OpenMetrics) of the process's metrics and of `snapshot`.
pub fn render(snapshot: &Snapshot) -> String {
    let mut scrape = Registry::with_prefix("verdict");
    let key_age = Family::<IssuerLabels, Gauge>::default();
    let key_count = Family::<IssuerLabels, Gauge>::default();
    for (issuer, age, keys) in &snapshot.key_sets {
        let labels = IssuerLabels {
            issuer: issuer.clone(),
        };
        if let Some(age) = age {
            key_age
                .get_or_create(&labels)
                .set(i64::try_from(*age).unwrap_or(i64::MAX));
        }
        key_count
            .get_or_create(&labels)
            .set(i64::try_from(*keys).unwrap_or(i64::MAX));
    }
    scrape.register_with_unit(
        "jwks_age",
        "Time since the issuer's key set was last fetched successfully",
        Unit::Seconds,
        key_age,
    );
    scrape.register("jwks_keys", "Keys in the issuer's key set", key_count);
    let gauge = |value: usize| {
        let gauge = Gauge::<i64>::default();
        gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        gauge
    };
    scrape.register(
        "token_cache_entries",
        "Verified tokens held in the cache",
        gauge(snapshot.cached_tokens),
    );
    scrape.register(
        "decision_memo_entries",
        "Decisions held in the decision memo",
        gauge(snapshot.memo_entries),
    );
    scrape.register_with_unit(
        "decision_memo",
        "Estimated size of the decisions in the decision memo",
        Unit::Bytes,
        gauge(usize::try_from(snapshot.memo_bytes).unwrap_or(usize::MAX)),
    );
    scrape.register(
        "requests_in_flight",
        "Decision requests being served now",
        gauge(snapshot.requests_in_flight),
    );
    scrape.register(
        "policies",
        "Policies in the running policy set",
        gauge(snapshot.policies),
    );
    let reloads = Family::<ResultLabels, Counter>::default();
    reloads
        .get_or_create(&ResultLabels { result: "success" })
        .inc_by(snapshot.reloads_succeeded);
    reloads
        .get_or_create(&ResultLabels { result: "failure" })
        .inc_by(snapshot.reloads_failed);
    scrape.register("reloads", "Configuration reloads, by result", reloads);

    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode_registry(&mut text, &global().registry);
    let _ = encode_registry(&mut text, &scrape);
    let _ = encode_eof(&mut text);
    text
}
