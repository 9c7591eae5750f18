//! Fuzz target: a `/v1/decide` body through the router, with the caller key and a JSON content type.
//!
//! Properties: no panic; the answer is a decision (HTTP 200) or a callout error below 500; and an
//! allow names one of the fixture's valid tokens as its credential.

use std::panic::AssertUnwindSafe;

use serde_json::{Value, json};
use verdict_fuzz::{Fixture, seeds_directory, write_seeds};

fn main() {
    let fixture = Fixture::new();
    if let Some(directory) = seeds_directory() {
        let token = fixture.valid_tokens.get(2).cloned().unwrap_or_default();
        let body = |value: Value| value.to_string().into_bytes();
        write_seeds(
            &directory,
            &[
                body(
                    json!({ "authorization": format!("Bearer {token}"), "method": "GET", "path": "/orders/42" }),
                ),
                body(json!({
                    "authorization": format!("bearer {token}"), "method": "DELETE", "path": "/orders/42",
                    "host": "api.example.com", "query": "a=1", "client_ip": "::ffff:10.0.0.1",
                    "headers": { "X-Tenant": "acme", "x-tenant": "other" },
                    "apigee": { "proxy": "orders", "environment": "prod", "product": "gold" },
                    "message_id": "m-1"
                })),
                body(json!({ "api_key": "k", "method": "GET", "path": "/orders/%2e%2e/admin" })),
                br#"{"method":"GET","path":"/","path":"/admin"}"#.to_vec(),
                br#"{"authorisation":"Bearer x","method":"GET","path":"/"}"#.to_vec(),
            ],
        );
        return;
    }
    let fixture = AssertUnwindSafe(fixture);
    let mut runtime = AssertUnwindSafe(None);
    afl::fuzz(true, move |data: &[u8]| {
        let runtime = runtime.get_or_insert_with(verdict_fuzz::runtime);
        let (status, body) = runtime.block_on(fixture.post_decide(data.to_vec()));
        assert!(
            status.as_u16() < 500,
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
        if status.is_success() {
            let decision: Value = serde_json::from_slice(&body).unwrap_or_default();
            if decision["allow"] == json!(true) {
                let request: Value = serde_json::from_slice(data).unwrap_or_default();
                let token = request["authorization"]
                    .as_str()
                    .and_then(verdict::credential::bearer_token)
                    .unwrap_or_default();
                assert!(
                    fixture.is_valid_token(token),
                    "allowed with a token the fixture never minted: {decision}"
                );
            }
        }
    });
}
