//! Criterion benchmarks of one full decision (token verification plus Cedar policy) for a warm token and
//! for a new one, and of the policy evaluation alone. Run with `cargo bench --bench decide`; the method
//! and the latest figures are in `BENCHMARKS.md`.
//!
//! The engine is the real one, built from a YAML configuration like the service's: its issuer is a JWKS
//! server for a fresh RS256 key on 127.0.0.1, its policies the repository's `examples/policies`. Every
//! measured decision is checked (an allow, and a cache hit exactly when the benchmark means one) and the
//! run fails if any was not, so no figure can come from a path other than the one it is named after.

#[path = "../bench/fixture.rs"]
mod fixture;

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use criterion::Criterion;
use fixture::{claims, config_yaml, issuer_router, mint_tokens, unix_now};
use tokio::runtime::Runtime;
use verdict::clock::SystemClock;
use verdict::config::{Config, PolicyOrigin};
use verdict::decision::{DecisionInput, Engine};
use verdict::demo::signing::SigningKey;
use verdict::state::AppState;

/// Distinct tokens minted for `decide/new_token`, cycled through in order.
const NEW_TOKEN_COUNT: usize = 20_000;
/// `cache.max_tokens` of the engine that decides the warm token: the service's default.
const WARM_CACHE_CAPACITY: usize = 100_000;
/// `cache.max_tokens` of the engine that decides new tokens. A cache smaller than the token set is not
/// enough: cycling 20,000 tokens through a 1,024-token cache still hits about 4 % of the time, because
/// its eviction (a CLOCK-PRO variant) keeps some entries through a scan. A cache of one entry holds only
/// the token decided last, and the cycle never repeats a token back to back, so every `new_token`
/// decision misses and verifies the RS256 signature; each measured decision's `token_cache_hit`
/// confirms it.
const NEW_TOKEN_CACHE_CAPACITY: usize = 1;

/// The engines under test, each wrapped in the service's state, and the requests to decide.
struct Fixture {
    warm: AppState,
    cold: AppState,
    /// The token `warm_input` carries, which the warm engine has verified and cached.
    warm_token: String,
    warm_input: DecisionInput,
    new_inputs: Vec<DecisionInput>,
    /// An opaque token the warm engine has introspected.
    opaque_input: DecisionInput,
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let fixture = runtime.block_on(Fixture::start())?;
    let mut criterion = Criterion::default().configure_from_args();
    let mut wrong = bench_decide(&mut criterion, &runtime, &fixture);
    wrong.push((
        "policy/evaluate",
        bench_policy(&mut criterion, &runtime, &fixture)?,
    ));
    criterion.final_summary();
    let wrong: Vec<_> = wrong.into_iter().filter(|(_, count)| *count > 0).collect();
    if !wrong.is_empty() {
        bail!(
            "measured decisions that were not what their benchmark names (an allow, with or without a cache hit): {wrong:?}"
        );
    }
    Ok(())
}

impl Fixture {
    async fn start() -> anyhow::Result<Self> {
        let key = SigningKey::generate_rs256("bench-rs256").context("generating the RS256 key")?;
        let issuer = serve_issuer(&key).await?;
        let warm = engine_state(&issuer, WARM_CACHE_CAPACITY).await?;
        let cold = engine_state(&issuer, NEW_TOKEN_CACHE_CAPACITY).await?;
        // The issuer introspects opaque tokens too; the warm engine decides them.
        let opaque_input = decide_input("opaque-bench-token-0123456789abcdef");

        let now = unix_now()?;
        let warm_token = key.sign(&claims(&issuer, usize::MAX, now));
        let warm_input = decide_input(&warm_token);
        let new_inputs = mint_tokens(&key, &issuer, now, NEW_TOKEN_COUNT)
            .iter()
            .map(|token| decide_input(token))
            .collect();
        // The first decision of the warm token verifies and caches it; every measured one then hits.
        // So does the first decision of the opaque token, with one introspection.
        for input in [&warm_input, &opaque_input] {
            let first = warm.current().engine.decide(input).await;
            if !first.allow {
                bail!(
                    "the benchmark token is denied: {} ({})",
                    first.error_description,
                    first.status
                );
            }
        }
        Ok(Self {
            warm,
            cold,
            warm_token,
            warm_input,
            new_inputs,
            opaque_input,
        })
    }
}

/// The service's state for a configuration trusting `issuer`, with its keys loaded.
async fn engine_state(issuer: &str, max_tokens: usize) -> anyhow::Result<AppState> {
    let yaml = config_yaml(SocketAddr::from(([127, 0, 0, 1], 0)), issuer, max_tokens)?;
    let config = Config::parse(
        &yaml,
        Path::new("."),
        &HashMap::new(),
        PolicyOrigin::Configured,
    )
    .map_err(|errors| anyhow::anyhow!("the benchmark configuration is invalid:\n{errors}"))?;
    let state = verdict::app::state(config, Arc::new(SystemClock))?;
    for keys in state.current().engine.verifier().key_sets() {
        keys.refresh().await.context("loading the issuer's keys")?;
    }
    Ok(state)
}

/// `decide/warm_token`, `decide/warm_token_new_route`, `decide/new_token` and `decide/opaque_warm`;
/// returns, per benchmark, how many measured decisions were
/// not what it names.
fn bench_decide(
    criterion: &mut Criterion,
    runtime: &Runtime,
    fixture: &Fixture,
) -> Vec<(&'static str, u64)> {
    let mut group = criterion.benchmark_group("decide");

    // The same token on the same route every time: the verified-token cache answers, then the memo.
    let warm = fixture.warm.current();
    let warm_wrong = bench_cached(
        &mut group,
        runtime,
        "warm_token",
        &warm.engine,
        &fixture.warm_input,
    );

    // The same token on a route it has not asked for before, every time: the verified-token cache
    // answers, the memo has not seen the question, so the policy step runs (the load test's `unique`).
    let mut input = decide_input(&fixture.warm_token);
    // Past the one route the other benchmarks ask for (`/orders/42`), which the memo holds.
    let mut route = 1_000_u64;
    let new_route_wrong = Cell::new(0_u64);
    group.bench_function("warm_token_new_route", |bencher| {
        bencher.iter_custom(|iterations| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iterations {
                    route += 1;
                    input.path.clear();
                    let _ = write!(input.path, "/orders/{route}");
                    let decision = warm.engine.decide(black_box(&input)).await;
                    if !(decision.allow && decision.trace.token_cache_hit)
                        || decision.trace.memo_hit
                    {
                        new_route_wrong.set(new_route_wrong.get() + 1);
                    }
                    black_box(decision);
                }
                started.elapsed()
            })
        });
    });

    // A token the cache does not hold every time: the full RS256 verification, then the policy.
    let cold = fixture.cold.current();
    let cold_engine = &cold.engine;
    let new_wrong = Cell::new(0_u64);
    let mut new_inputs = fixture.new_inputs.iter().cycle();
    group.bench_function("new_token", |bencher| {
        bencher.iter_custom(|iterations| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iterations {
                    let Some(input) = new_inputs.next() else {
                        break;
                    };
                    let decision = cold_engine.decide(black_box(input)).await;
                    if !decision.allow || decision.trace.token_cache_hit {
                        new_wrong.set(new_wrong.get() + 1);
                    }
                    black_box(decision);
                }
                started.elapsed()
            })
        });
    });

    // An opaque token whose introspection answer is cached: the answer lookup, then the policy.
    let opaque_wrong = bench_cached(
        &mut group,
        runtime,
        "opaque_warm",
        &warm.engine,
        &fixture.opaque_input,
    );
    group.finish();
    vec![
        ("decide/warm_token", warm_wrong),
        ("decide/warm_token_new_route", new_route_wrong.get()),
        ("decide/new_token", new_wrong.get()),
        ("decide/opaque_warm", opaque_wrong),
    ]
}

/// One benchmark deciding the same `input` again and again, each decision an allow from a cache (the
/// verified-token cache or the introspection cache); returns how many measured decisions were not.
fn bench_cached(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &Runtime,
    name: &str,
    engine: &Engine,
    input: &DecisionInput,
) -> u64 {
    let wrong = Cell::new(0_u64);
    group.bench_function(name, |bencher| {
        bencher.iter_custom(|iterations| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iterations {
                    let decision = engine.decide(black_box(input)).await;
                    if !(decision.allow && decision.trace.token_cache_hit) {
                        wrong.set(wrong.get() + 1);
                    }
                    black_box(decision);
                }
                started.elapsed()
            })
        });
    });
    wrong.get()
}

/// `policy/evaluate`: the policy step of a decision alone (building the Cedar request and entities,
/// then authorizing), for a token verified beforehand. Returns how many evaluations did not allow.
fn bench_policy(
    criterion: &mut Criterion,
    runtime: &Runtime,
    fixture: &Fixture,
) -> anyhow::Result<u64> {
    let warm = fixture.warm.current();
    let engine = &warm.engine;
    let input = &fixture.warm_input;
    let bearer = input
        .authorization
        .as_deref()
        .and_then(verdict::credential::bearer_token)
        .context("the warm input has no bearer token")?;
    let verified = runtime
        .block_on(engine.verifier().verify(bearer))
        .map_err(|error| anyhow::anyhow!("the warm token does not verify: {error}"))?;
    let now = i64::try_from(unix_now()?).unwrap_or(i64::MAX);
    // The same mapping from token and input to a policy request that `Engine::decide` uses.
    let prepared = engine
        .prepare(&verified.credential)
        .map_err(|error| anyhow::anyhow!("the warm token cannot be prepared: {error}"))?;
    let request = verdict::decision::policy_request(
        &prepared.principal,
        &verified.credential,
        input,
        &input.path,
        now,
    );
    let wrong = Cell::new(0_u64);
    criterion.bench_function("policy/evaluate", |bencher| {
        bencher.iter(|| {
            let outcome = engine.policies().evaluate(black_box(&request));
            if !outcome.as_ref().is_ok_and(|outcome| outcome.allow) {
                wrong.set(wrong.get() + 1);
            }
            outcome
        });
    });
    Ok(wrong.get())
}

/// Serves the benchmark issuer for `key` (JWKS and introspection) on an ephemeral loopback port, for
/// the life of the runtime; returns the issuer.
async fn serve_issuer(key: &SigningKey) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the issuer")?;
    let issuer = format!("http://{}", listener.local_addr()?);
    let router = issuer_router(key, &issuer, unix_now()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(issuer)
}

/// The decision input the Apigee bundle sends for `GET /orders/42` with `token`.
fn decide_input(token: &str) -> DecisionInput {
    DecisionInput {
        authorization: Some(format!("Bearer {token}")),
        method: "GET".into(),
        path: "/orders/42".into(),
        host: "api.example.com".into(),
        client_ip: "203.0.113.7".parse().ok(),
        headers: [("user-agent".to_owned(), "bench".to_owned())].into(),
        message_id: "rrt-bench-0001".into(),
        ..DecisionInput::default()
    }
}
