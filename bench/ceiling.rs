//! The HTTP ceiling for `bench/load.sh`: a bare axum service that parses a `/v1/decide` body and answers
//! a constant allow, so the load test can tell Verdict's own cost from what HTTP and JSON cost here.
//!
//! It runs on the same multi-threaded tokio runtime as `verdict serve`, with the same axum and the same
//! strict body parsing (every field of `DecideRequest`, unknown fields refused), and answers a decision
//! of the shape and size of Verdict's allow for the benchmark tokens. It verifies nothing and evaluates
//! nothing. Usage: `ceiling [ADDRESS]`, default `127.0.0.1:8090`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

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
    let address: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or(DEFAULT_ADDRESS)
        .parse()
        .context("the first argument must be a socket address such as `127.0.0.1:8090`")?;
    // The same runtime `verdict serve` builds: multi-threaded, one worker per core.
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(serve(address))
}

async fn serve(address: SocketAddr) -> anyhow::Result<()> {
    let router = Router::new()
        .route("/v1/decide", post(decide))
        .route("/readyz", get(|| async { StatusCode::OK }));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    eprintln!("ceiling listening on {}", listener.local_addr()?);
    axum::serve(listener, router).await.context("serving HTTP")
}

/// Parses the body as Verdict's `StrictJson` does when it is well formed: one `serde_json` pass.
async fn decide(body: Bytes) -> Response {
    match serde_json::from_slice::<DecideRequest>(&body) {
        Ok(request) => {
            std::hint::black_box(request);
            ([(header::CONTENT_TYPE, "application/json")], ALLOW).into_response()
        }
        Err(error) => (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    }
}
