//! End to end with a real OpenID provider: the npm package `oidc-provider` (`tests/oidc/provider.mjs`,
//! installed by `npm ci`) issues client-credentials tokens as RFC 9068 JWTs and as opaque tokens, and
//! Verdict, configured with only the provider's issuer URL and its introspection credentials, decides
//! on both, also while the provider rotates its signing keys.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, header};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use verdict::clock::SystemClock;
use verdict::state::AppState;

use crate::helpers::{CALLER_KEY, example_policies, parse_config_with};

const API: &str = "https://api.verdict.test";
const OTHER_API: &str = "https://opaque-api.verdict.test";

/// The provider process, stopped when dropped (its stdin closing stops it too).
struct Provider {
    child: Child,
    _stdin: ChildStdin,
    issuer: String,
    http: reqwest::Client,
}

impl Provider {
    fn start() -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/provider.mjs");
        let mut child = Command::new("node")
            .arg(script)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs tests/oidc/provider.mjs (run `npm ci` first)");
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the provider did not start ({e}): {line:?}; run `npm ci`"));
        Self {
            child,
            _stdin: stdin,
            issuer: ready["issuer"].as_str().unwrap().to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// A client-credentials token: a JWT for `resource` = [`API`], opaque otherwise.
    async fn token(&self, client: &str, scope: &str, resource: Option<&str>) -> String {
        let mut form = vec![("grant_type", "client_credentials"), ("scope", scope)];
        if let Some(resource) = resource {
            form.push(("resource", resource));
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&form)
            .finish();
        let response = self
            .http
            .post(format!("{}/token", self.issuer))
            .basic_auth(client, Some(format!("{client}-secret-0123456789abcdef")))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let answer: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        answer["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {answer}"))
            .to_owned()
    }

    async fn rotate(&self) -> String {
        let response = self
            .http
            .post(format!("{}/test/rotate", self.issuer))
            .send()
            .await
            .unwrap();
        let answer: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        answer["kid"].as_str().unwrap().to_owned()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Verdict on the real clock, trusting the provider by its issuer URL alone.
async fn verdict_for(provider: &Provider) -> AppState {
    let yaml = format!(
        r#"
listen: 127.0.0.1:0
callers: {{ api_keys: {{ keys: ["{CALLER_KEY}"] }} }}
issuers:
  - name: provider
    issuer: "{issuer}"
    audiences: ["{API}"]
    introspection:
      client_id: verdict
      client_secret: verdict-introspection-secret-0123456789
"#,
        issuer = provider.issuer
    );
    let config = parse_config_with(&yaml, example_policies());
    let state = verdict::app::state(config, Arc::new(SystemClock)).unwrap();
    for keys in state.current().engine.verifier().key_sets() {
        keys.refresh().await.unwrap();
    }
    state
}

async fn decide(state: &AppState, token: &str, method: &str) -> Value {
    let body = json!({ "authorization": format!("Bearer {token}"), "method": method, "path": "/orders/7" });
    let request = Request::post("/v1/decide")
        .header("x-verdict-key", CALLER_KEY)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = verdict::api::router(state.clone())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_and_opaque_tokens_from_a_real_provider_are_decided_right() {
    let provider = Provider::start();
    let state = verdict_for(&provider).await;
    let cases = [
        (
            "a JWT with orders:read reads",
            "jwt-client",
            "orders:read",
            Some(API),
            "GET",
            200,
            "",
        ),
        (
            "a JWT with orders:read may not write",
            "jwt-client",
            "orders:read",
            Some(API),
            "POST",
            403,
            "insufficient_scope",
        ),
        (
            "a JWT with orders:write may not read",
            "jwt-client",
            "orders:write",
            Some(API),
            "GET",
            403,
            "insufficient_scope",
        ),
        (
            "an opaque token with orders:read reads",
            "opaque-client",
            "orders:read",
            None,
            "GET",
            200,
            "",
        ),
        (
            "an opaque token with orders:read may not write",
            "opaque-client",
            "orders:read",
            None,
            "POST",
            403,
            "insufficient_scope",
        ),
        (
            "an opaque token for another API is refused",
            "opaque-client",
            "orders:read",
            Some(OTHER_API),
            "GET",
            401,
            "invalid_token",
        ),
    ];
    for (name, client, scope, resource, method, status, error) in cases {
        let token = provider.token(client, scope, resource).await;
        let opaque = token.split('.').count() != 3;
        assert_eq!(opaque, client == "opaque-client", "{name}: {token}");
        let decision = decide(&state, &token, method).await;
        assert_eq!(decision["status"], status, "{name}: {decision}");
        assert_eq!(decision["error"], error, "{name}: {decision}");
        if status != 401 {
            assert_eq!(decision["client_id"], client, "{name}: {decision}");
            assert_eq!(decision["issuer"], provider.issuer, "{name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_providers_keys_while_requests_flow_causes_no_wrong_decision() {
    let provider = Arc::new(Provider::start());
    let state = verdict_for(&provider).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in ["jwt-client", "opaque-client", "jwt-client"] {
        let (provider, state, stop) = (Arc::clone(&provider), state.clone(), Arc::clone(&stop));
        clients.push(tokio::spawn(async move {
            let resource = (client == "jwt-client").then_some(API);
            let mut previous = provider.token(client, "orders:read", resource).await;
            let mut decided = 0;
            while !stop.load(Ordering::SeqCst) {
                // A fresh token, signed with whatever key is current, and the one issued before it,
                // perhaps with the key just rotated out (still published beside the new one).
                let fresh = provider.token(client, "orders:read", resource).await;
                for token in [&fresh, &previous] {
                    let decision = decide(&state, token, "GET").await;
                    assert_eq!(decision["allow"], true, "{client}: {decision}");
                    decided += 1;
                }
                previous = fresh;
            }
            decided
        }));
    }
    let mut kids = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        kids.push(provider.rotate().await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut decided = 0;
    for client in clients {
        decided += client.await.unwrap();
    }
    assert!(decided > 20, "only {decided} decisions while rotating");
    // The tokens are signed with the key the last rotation named.
    let token = provider.token("jwt-client", "orders:read", Some(API)).await;
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap(),
    )
    .unwrap();
    assert_eq!(
        Some(&header["kid"]),
        kids.last().map(|kid| json!(kid)).as_ref()
    );
}
