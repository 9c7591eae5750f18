//! The benchmark issuer's side, shared by `benches/decide.rs` and `bench/issuer.rs` (each
//! includes this file with `#[path]`): distinct, valid RS256 tokens minted on every core, and the Verdict
//! configuration that trusts their issuer.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::Router;
use axum::routing::{get, post};
use serde_json::{Value, json};
use verdict::demo::signing::{self, SigningKey};

/// The audience of the benchmark tokens and configurations.
pub(crate) const AUDIENCE: &str = "api://orders";
/// The caller key of the benchmark configurations (`bench/load.sh` sends it too).
pub(crate) const CALLER_KEY: &str = "bench-caller-key-0123456789";

/// A Verdict configuration trusting `issuer` (whose JWKS is `<issuer>/jwks.json` and introspection
/// endpoint `<issuer>/introspect`), with the repository's example policies and a token cache of
/// `max_tokens`.
pub(crate) fn config_yaml(
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
    introspection: {{ url: {introspect}, client_id: bench, client_secret: bench-introspection-secret }}
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
        introspect = quoted(&format!("{issuer}/introspect"))?,
        policies = quoted(&policies.to_string_lossy())?,
    ))
}

/// Claims of a valid token for user `number`, good for six hours.
pub(crate) fn claims(issuer: &str, number: usize, now: u64) -> Value {
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
pub(crate) fn mint_tokens(key: &SigningKey, issuer: &str, now: u64, count: usize) -> Vec<String> {
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

/// The benchmark issuer `issuer` (`http://<address>`): `key`'s JWKS at `/jwks.json`, and an
/// introspection endpoint at `/introspect` answering every opaque token as active for user 0.
pub(crate) fn issuer_router(key: &SigningKey, issuer: &str, now: u64) -> Router {
    let jwks = signing::jwks(&[key]);
    let mut active = claims(issuer, 0, now);
    if let Some(fields) = active.as_object_mut() {
        fields.insert("active".to_owned(), Value::Bool(true));
    }
    Router::new()
        .route(
            "/jwks.json",
            get(move || {
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        )
        .route(
            "/introspect",
            post(move || {
                let active = active.clone();
                async move { axum::Json(active) }
            }),
        )
}

/// Seconds since the epoch.
pub(crate) fn unix_now() -> anyhow::Result<u64> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs())
}
