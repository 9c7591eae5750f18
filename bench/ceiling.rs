//! The HTTP ceiling for `bench/load.sh`: a bare axum service that parses a `/v1/decide` body and answers
//! a constant allow, so the load test can tell Verdict's own cost from what HTTP and JSON cost here.
//!
//! It runs on the same multi-threaded tokio runtime as `verdict serve`, with the same axum and the same
//! strict body parsing (every field of `DecideRequest`, unknown fields refused), and answers a decision
//! of the shape and size of Verdict's allow for the benchmark tokens. It verifies nothing and evaluates
//! nothing. Usage: `ceiling [ADDRESS] [WORK_US]`, default `127.0.0.1:8090` and no work.
//!
//! With `WORK_US`, each answer first spends about that many microseconds of user-space CPU on a
//! computation calibrated at start: what a service doing that much work of its own per request, and
//! nothing else, can serve on this machine (`bench/load.sh`'s `ceiling+N` targets).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

const DEFAULT_ADDRESS: &str = "127.0.0.1:8090";

/// An allow as Verdict answers it for a benchmark token (`bench/load.sh` prints both sizes).
const ALLOW: &str = concat!(
    r#"{"decision_id":"019ab1f4-7c2e-7b6a-9f1e-2d4c5b6a7e80","allow":true,"status":200,"error":"","#,
    r#""error_description":"","www_authenticate":"","subject":"user-00042","client_id":"","#,
    r#""issuer":"http://127.0.0.1:18091","scope":"orders:read","#,
    r#""headers":{"x-tenant":"acme","x-user-id":"user-00042"},"cache_ttl":60,"policies":["orders-read"]}"#,
);

/// The fields of Verdict's `DecideRequest` (`src/fronts/service_callout.rs`), parsed the same strict
/// way.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "the ceiling parses every field, as Verdict does, and reads none"
)]
struct DecideRequest {
    authorization: Option<String>,
    api_key: Option<String>,
    method: String,
    path: String,
    host: Option<String>,
    query: Option<String>,
    client_ip: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    apigee: Option<ApigeeFields>,
    message_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(dead_code, reason = "parsed like Verdict's, never read")]
struct ApigeeFields {
    proxy: Option<String>,
    environment: Option<String>,
    organization: Option<String>,
    product: Option<String>,
    app: Option<String>,
    developer: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let address: SocketAddr = args
        .next()
        .as_deref()
        .unwrap_or(DEFAULT_ADDRESS)
        .parse()
        .context("the first argument must be a socket address such as `127.0.0.1:8090`")?;
    let work_us: u64 = match args.next() {
        Some(work) => work
            .parse()
            .context("the second argument must be whole microseconds of work, such as `4`")?,
        None => 0,
    };
    let work = Work::calibrated(Duration::from_micros(work_us));
    if work_us > 0 {
        eprintln!(
            "ceiling: {work_us} µs of work per answer ({} rounds)",
            work.rounds
        );
    }
    // The same runtime `verdict serve` builds: multi-threaded, one worker per core.
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(serve(address, Arc::new(work)))
}

/// A fixed amount of CPU work: `rounds` steps of a dependent chain of multiplications, which neither
/// the compiler nor the processor can skip or overlap.
#[derive(Debug)]
struct Work {
    rounds: u64,
}

impl Work {
    /// The rounds that take `duration` on this machine: the fastest of a few timed trials, so that a
    /// trial the scheduler interrupted does not inflate the count.
    fn calibrated(duration: Duration) -> Self {
        if duration.is_zero() {
            return Self { rounds: 0 };
        }
        const TRIAL_ROUNDS: u64 = 1 << 20;
        let trial = Self {
            rounds: TRIAL_ROUNDS,
        };
        let fastest = (0..5)
            .map(|_| {
                let start = Instant::now();
                trial.run();
                start.elapsed()
            })
            .min()
            .unwrap_or(Duration::from_millis(1));
        let rounds = duration.as_nanos() * u128::from(TRIAL_ROUNDS) / fastest.as_nanos().max(1);
        Self {
            rounds: u64::try_from(rounds).unwrap_or(u64::MAX).max(1),
        }
    }

    fn run(&self) {
        let mut state = std::hint::black_box(0x9e37_79b9_7f4a_7c15_u64);
        for _ in 0..self.rounds {
            state = state.wrapping_mul(0x5851_f42d_4c95_7f2d).rotate_left(17) ^ 1;
        }
        std::hint::black_box(state);
    }
}

async fn serve(address: SocketAddr, work: Arc<Work>) -> anyhow::Result<()> {
    let router = Router::new()
        .route(
            "/v1/decide",
            post(move |body: Bytes| decide(body, Arc::clone(&work))),
        )
        .route("/readyz", get(|| async { StatusCode::OK }));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    eprintln!("ceiling listening on {}", listener.local_addr()?);
    axum::serve(listener, router).await.context("serving HTTP")
}

/// Parses the body as Verdict's `StrictJson` does when it is well formed: one `serde_json` pass; then
/// does the configured work.
async fn decide(body: Bytes, work: Arc<Work>) -> Response {
    match serde_json::from_slice::<DecideRequest>(&body) {
        Ok(request) => {
            std::hint::black_box(request);
            work.run();
            ([(header::CONTENT_TYPE, "application/json")], ALLOW).into_response()
        }
        Err(error) => (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    }
}
