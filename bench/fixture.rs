//! Benchmark tokens, shared by `benches/decide.rs` and `examples/bench_fixture.rs` (each includes this
//! file with `#[path]`): distinct, valid RS256 tokens minted on every core.

use serde_json::{Value, json};
use verdict::demo::signing::SigningKey;

/// The audience of the benchmark tokens and configurations.
pub const AUDIENCE: &str = "api://orders";

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
