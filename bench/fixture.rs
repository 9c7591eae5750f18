//! The benchmark issuer's side, shared by `benches/decide.rs` and `examples/bench_fixture.rs` (each
//! includes this file with `#[path]`): distinct, valid RS256 tokens minted on every core, and the Verdict
//! configuration that trusts their issuer.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};
use verdict::demo::signing::{self, SigningKey};

/// The audience of the benchmark tokens and configurations.
pub const AUDIENCE: &str = "api://orders";
/// The caller key of the benchmark configurations (`bench/load.sh` sends it too).
pub const CALLER_KEY: &str = "bench-caller-key-0123456789";

/// A Verdict configuration trusting `issuer` (whose JWKS is `<issuer>/jwks.json`), with the repository's
/// example policies and a token cache of `max_tokens`.
pub fn config_yaml(
    listen: SocketAddr,
    issuer: &str,
    max_tokens: usize,
) -> serde_json::Result<String> {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
    // JSON strings are YAML double-quoted scalars, so any path or URL is quoted correctly.
    let quoted = |text: &str| serde_json::to_string(text);
    Ok(format!(
        r#"listen: {listen}
callers:
  api_keys:
    keys: [{caller_key}]
issuers:
  - name: bench
    issuer: {issuer}
    audiences: [{audience}]
    jwks_uri: {jwks_uri}
    algorithms: [RS256]
    claims: {{ tenant: tenant }}
policies:
  path: {policies}
headers:
  x-user-id: sub
  x-tenant: tenant
cache:
  max_tokens: {max_tokens}
  decision_ttl: 60s
"#,
        caller_key = quoted(CALLER_KEY)?,
        issuer = quoted(issuer)?,
        audience = quoted(AUDIENCE)?,
        jwks_uri = quoted(&format!("{issuer}/jwks.json"))?,
        policies = quoted(&policies.to_string_lossy())?,
    ))
}

/// Claims of a valid token for user `number`, good for six hours.
pub fn claims(issuer: &str, number: usize, now: u64) -> Value {
    json!({
        "iss": issuer,
        "sub": format!("user-{number:05}"),
        "jti": format!("bench-{number}"),
        "aud": AUDIENCE,
        "scope": "orders:read",
        "tenant": "acme",
        "iat": now,
        "exp": now + 6 * 60 * 60,
    })
}

/// Mints `count` distinct tokens on every core (RS256 signing is far slower than verifying), in order of
/// their number.
pub fn mint_tokens(key: &SigningKey, issuer: &str, now: u64, count: usize) -> Vec<String> {
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = count.div_ceil(workers).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .step_by(chunk)
            .map(|start| {
                scope.spawn(move || {
                    (start..count.min(start + chunk))
                        .map(|number| key.sign(&claims(issuer, number, now)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|handle| handle.join().ok())
            .flatten()
            .collect()
    })
}

/// Serves `key`'s JWKS at `/jwks.json`; the issuer is `http://<address>`.
pub fn jwks_router(key: &SigningKey) -> Router {
    let jwks = signing::jwks(&[key]);
    Router::new().route(
        "/jwks.json",
        get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    )
}

/// Seconds since the epoch.
pub fn unix_now() -> anyhow::Result<u64> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs())
}
