//! Opaque tokens checked by RFC 7662 introspection, against a loopback endpoint that counts its hits and
//! answers what each test tells it to.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::helpers::{AUDIENCE, T0, TestApp};

const CLIENT_ID: &str = "verdict";
const CLIENT_SECRET: &str = "introspection-secret-0123456789";

/// What the endpoint answers.
#[derive(Debug, Clone)]
enum Answer {
    Json(Value),
    /// A JSON answer with another status than 200.
    JsonWithStatus(u16, Value),
    Status(u16),
    Body(String),
    Huge,
    Slow(Duration, Value),
}

struct EndpointState {
    base: String,
    hits: AtomicUsize,
    answer: Mutex<Answer>,
    /// `basic` or `post`: how the endpoint expects Verdict to authenticate.
    auth: &'static str,
}

/// A loopback introspection endpoint with OIDC discovery.
#[derive(Clone)]
struct Endpoint(Arc<EndpointState>);

impl Endpoint {
    async fn start(auth: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(EndpointState {
            base,
            hits: AtomicUsize::new(0),
            answer: Mutex::new(Answer::Status(500)),
            auth,
        });
        let router = Router::new()
            .route("/introspect", post(introspect))
            .route("/.well-known/openid-configuration", get(discovery))
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self(state)
    }

    fn issuer(&self) -> String {
        self.0.base.clone()
    }

    fn answer(&self, answer: Answer) {
        *self.0.answer.lock().unwrap() = answer;
    }

    fn hits(&self) -> usize {
        self.0.hits.load(Ordering::SeqCst)
    }

    /// An active answer for alice with `scope`, valid until `exp`.
    fn active(&self, scope: &str, exp: u64) -> Value {
        json!({ "active": true, "sub": "alice", "client_id": "mobile", "scope": scope, "exp": exp,
                "iat": T0, "aud": AUDIENCE, "iss": self.issuer(), "token_type": "Bearer" })
    }
}

async fn discovery(State(state): State<Arc<EndpointState>>) -> Json<Value> {
    Json(
        json!({ "issuer": state.base, "introspection_endpoint": format!("{}/introspect", state.base) }),
    )
}

async fn introspect(
    State(state): State<Arc<EndpointState>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let field = |name: &str| {
        form.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let expected = format!("{CLIENT_ID}:{CLIENT_SECRET}");
    let authenticated = match state.auth {
        "basic" => headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Basic "))
            .and_then(|encoded| {
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .ok()
            })
            .is_some_and(|decoded| decoded == expected.as_bytes()),
        _ => {
            field("client_id").as_deref() == Some(CLIENT_ID)
                && field("client_secret").as_deref() == Some(CLIENT_SECRET)
        }
    };
    if !authenticated || field("token").is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let answer = state.answer.lock().unwrap().clone();
    match answer {
        Answer::Json(value) => Json(value).into_response(),
        Answer::JsonWithStatus(status, value) => {
            (StatusCode::from_u16(status).unwrap(), Json(value)).into_response()
        }
        Answer::Status(status) => StatusCode::from_u16(status).unwrap().into_response(),
        Answer::Body(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Answer::Huge => {
            let padding = "x".repeat(10 * 1024 * 1024);
            Json(json!({ "active": true, "sub": "alice", "padding": padding })).into_response()
        }
        Answer::Slow(delay, value) => {
            tokio::time::sleep(delay).await;
            Json(value).into_response()
        }
    }
}

fn config(endpoint: &Endpoint, introspection_extra: &str) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
callers: {{ api_keys: {{ keys: ["{caller}"] }} }}
issuers:
  - name: legacy
    issuer: "{issuer}"
    audiences: ["{AUDIENCE}"]
    discovery: false
    introspection:
      url: "{issuer}/introspect"
      client_id: {CLIENT_ID}
      client_secret: "{CLIENT_SECRET}"
      timeout: 300ms
      cache_ttl: 60s
      inactive_ttl: 10s
{introspection_extra}
"#,
        caller = crate::helpers::CALLER_KEY,
        issuer = endpoint.issuer(),
    )
}

async fn decide(app: &TestApp, token: &str, method: &str) -> Value {
    app.decide(json!({ "authorization": format!("Bearer {token}"), "method": method, "path": "/orders/42" }))
        .await
}

#[tokio::test]
async fn only_a_json_true_is_active_and_every_failure_is_closed() {
    let endpoint = Endpoint::start("basic").await;
    let app = TestApp::start(&config(&endpoint, "")).await;
    let good = endpoint.active("orders:read", T0 + 600);
    let with = |field: &str, value: Value| {
        let mut answer = good.clone();
        answer[field] = value;
        Answer::Json(answer)
    };
    let without = |field: &str| {
        let mut answer = good.clone();
        answer.as_object_mut().unwrap().remove(field);
        Answer::Json(answer)
    };
    let cases = [
        ("active", Answer::Json(good.clone()), 200, ""),
        (
            "active as the string \"true\"",
            with("active", json!("true")),
            401,
            "invalid_token",
        ),
        (
            "active as 1",
            with("active", json!(1)),
            401,
            "invalid_token",
        ),
        (
            "active as null",
            with("active", Value::Null),
            401,
            "invalid_token",
        ),
        ("active missing", without("active"), 401, "invalid_token"),
        (
            "active false",
            with("active", json!(false)),
            401,
            "invalid_token",
        ),
        (
            "another issuer",
            with("iss", json!("https://evil.example")),
            401,
            "invalid_token",
        ),
        (
            "another audience",
            with("aud", json!(["api://other"])),
            401,
            "invalid_token",
        ),
        ("expired", with("exp", json!(T0 - 60)), 401, "invalid_token"),
        (
            "an `aud` array holding a number",
            with("aud", json!([AUDIENCE, 1])),
            401,
            "invalid_token",
        ),
        (
            "an `aud` array holding null",
            with("aud", json!([null, AUDIENCE])),
            401,
            "invalid_token",
        ),
        (
            "an `aud` array holding an object",
            with("aud", json!([AUDIENCE, { "aud": AUDIENCE }])),
            401,
            "invalid_token",
        ),
        (
            "an empty `aud` array",
            with("aud", json!([])),
            401,
            "invalid_token",
        ),
        (
            "`aud` as a number",
            with("aud", json!(7)),
            401,
            "invalid_token",
        ),
        (
            "`iss` as a number",
            with("iss", json!(1)),
            401,
            "invalid_token",
        ),
        (
            "not valid before a minute from now",
            with("nbf", json!(T0 + 60)),
            401,
            "invalid_token",
        ),
        (
            "issued a minute from now",
            with("iat", json!(T0 + 60)),
            401,
            "invalid_token",
        ),
        (
            "`exp` as a string",
            with("exp", json!("1800000600")),
            401,
            "invalid_token",
        ),
        (
            "`exp` as a float",
            with("exp", json!(1.8e9)),
            401,
            "invalid_token",
        ),
        (
            "a duplicated `active`",
            Answer::Body(format!(
                r#"{{"active":false,"active":true,"sub":"alice","aud":"{AUDIENCE}","exp":{}}}"#,
                T0 + 600
            )),
            503,
            "temporarily_unavailable",
        ),
        (
            "a duplicated `sub` in a nested object",
            Answer::Body(format!(
                r#"{{"active":true,"sub":"alice","aud":"{AUDIENCE}","exp":{},"ext":{{"role":"user","role":"admin"}}}}"#,
                T0 + 600
            )),
            503,
            "temporarily_unavailable",
        ),
        (
            "HTTP 201 with an active answer",
            Answer::JsonWithStatus(201, good.clone()),
            503,
            "temporarily_unavailable",
        ),
        (
            "HTTP 203 with an active answer",
            Answer::JsonWithStatus(203, good.clone()),
            503,
            "temporarily_unavailable",
        ),
        (
            "HTTP 206 with an active answer",
            Answer::JsonWithStatus(206, good.clone()),
            503,
            "temporarily_unavailable",
        ),
        (
            "no subject or client",
            {
                let mut answer = good.clone();
                answer.as_object_mut().unwrap().remove("sub");
                answer.as_object_mut().unwrap().remove("client_id");
                Answer::Json(answer)
            },
            401,
            "invalid_token",
        ),
        (
            "not JSON",
            Answer::Body("<html>".into()),
            503,
            "temporarily_unavailable",
        ),
        (
            "a JSON array",
            Answer::Body("[true]".into()),
            503,
            "temporarily_unavailable",
        ),
        (
            "HTTP 500",
            Answer::Status(500),
            503,
            "temporarily_unavailable",
        ),
        (
            "HTTP 401",
            Answer::Status(401),
            503,
            "temporarily_unavailable",
        ),
        ("10 MB", Answer::Huge, 503, "temporarily_unavailable"),
        (
            "never in time",
            Answer::Slow(Duration::from_secs(5), good.clone()),
            503,
            "temporarily_unavailable",
        ),
    ];
    for (index, (name, answer, status, error)) in cases.into_iter().enumerate() {
        endpoint.answer(answer);
        let decision = decide(&app, &format!("opaque-{index}-abcdefghijklmnop"), "GET").await;
        assert_eq!(decision["status"], status, "{name}: {decision}");
        assert_eq!(decision["error"], error, "{name}: {decision}");
        assert_eq!(decision["allow"], status == 200, "{name}: {decision}");
        let text = decision.to_string();
        assert!(
            !text.contains(CLIENT_SECRET) && !text.contains("/introspect"),
            "{name}: {text}"
        );
    }
}

#[tokio::test]
async fn the_answer_becomes_the_principal_and_the_policy_decides() {
    let endpoint = Endpoint::start("post").await;
    let app = TestApp::start(&config(&endpoint, "      auth_method: client_secret_post")).await;
    endpoint.answer(Answer::Json(endpoint.active("orders:read", T0 + 600)));
    let read = decide(&app, "reader-token", "GET").await;
    assert_eq!(read["allow"], true, "{read}");
    assert_eq!(read["subject"], "alice");
    assert_eq!(read["client_id"], "mobile");
    assert_eq!(read["scope"], "orders:read");
    let write = decide(&app, "reader-token", "POST").await;
    assert_eq!(write["error"], "insufficient_scope", "{write}");
    assert_eq!(
        endpoint.hits(),
        1,
        "the second decision used the cached answer"
    );
}

#[tokio::test]
async fn answers_are_cached_until_exp_or_the_cap_inactive_ones_briefly_and_failures_never() {
    let endpoint = Endpoint::start("basic").await;
    let app = TestApp::start(&config(&endpoint, "")).await;

    // Active: reused until the cap (60 s) even though `exp` is later.
    endpoint.answer(Answer::Json(endpoint.active("orders:read", T0 + 600)));
    for _ in 0..3 {
        assert_eq!(decide(&app, "capped", "GET").await["allow"], true);
    }
    assert_eq!(endpoint.hits(), 1);
    app.advance(Duration::from_secs(61));
    assert_eq!(decide(&app, "capped", "GET").await["allow"], true);
    assert_eq!(endpoint.hits(), 2);

    // Active with an `exp` before the cap: not reused past it, and refused once past the leeway (30 s).
    let now = T0 + 61;
    endpoint.answer(Answer::Json(endpoint.active("orders:read", now + 20)));
    assert_eq!(decide(&app, "short", "GET").await["allow"], true);
    app.advance(Duration::from_secs(51));
    let expired = decide(&app, "short", "GET").await;
    assert_eq!(expired["error"], "invalid_token", "{expired}");
    assert_eq!(endpoint.hits(), 4);

    // Inactive: reused for `inactive_ttl` (10 s), then asked again.
    endpoint.answer(Answer::Json(json!({ "active": false })));
    for _ in 0..3 {
        assert_eq!(decide(&app, "revoked", "GET").await["status"], 401);
    }
    assert_eq!(endpoint.hits(), 5);
    app.advance(Duration::from_secs(11));
    assert_eq!(decide(&app, "revoked", "GET").await["status"], 401);
    assert_eq!(endpoint.hits(), 6);

    // A failure is never cached: the next request asks again.
    endpoint.answer(Answer::Status(503));
    for expected_hits in 7..=9 {
        assert_eq!(decide(&app, "flaky", "GET").await["status"], 503);
        assert_eq!(endpoint.hits(), expected_hits);
    }
}

#[tokio::test]
async fn a_cached_answer_is_checked_against_the_time_rules_on_every_use() {
    let endpoint = Endpoint::start("basic").await;
    // The cap (60 s) outlasts the maximum age (20 s, plus 30 s of leeway).
    let app = TestApp::start(&config(
        &endpoint,
        "    max_token_age: 20s\ncache: { decision_ttl: 60s }",
    ))
    .await;
    endpoint.answer(Answer::Json(endpoint.active("orders:read", T0 + 600)));
    let fresh = decide(&app, "aging", "GET").await;
    assert_eq!(fresh["allow"], true, "{fresh}");
    assert_eq!(
        fresh["cache_ttl"], 20,
        "not reused past iat + max_token_age"
    );
    app.advance(Duration::from_secs(45));
    let cached = decide(&app, "aging", "GET").await;
    assert_eq!(cached["allow"], true, "{cached}");
    assert_eq!(cached["cache_ttl"], 0);
    app.advance(Duration::from_secs(6));
    let old = decide(&app, "aging", "GET").await;
    assert_eq!(
        old["error_description"], "the token is older than allowed",
        "{old}"
    );
    assert_eq!(endpoint.hits(), 2, "the refused answer was asked afresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_for_one_token_share_one_introspection() {
    let endpoint = Endpoint::start("basic").await;
    let app = TestApp::start(&config(&endpoint, "")).await;
    endpoint.answer(Answer::Slow(
        Duration::from_millis(100),
        endpoint.active("orders:read", T0 + 600),
    ));
    let decisions = join_all((0..50).map(|_| {
        let app = app.clone();
        tokio::spawn(async move { decide(&app, "popular", "GET").await })
    }))
    .await;
    for decision in decisions {
        assert_eq!(decision["allow"], true, "{decision}");
    }
    assert_eq!(endpoint.hits(), 1);
}

async fn join_all(tasks: impl Iterator<Item = tokio::task::JoinHandle<Value>>) -> Vec<Value> {
    let mut out = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        out.push(task.await.unwrap());
    }
    out
}

#[tokio::test]
async fn opaque_tokens_go_to_the_issuer_their_prefix_names_or_the_default() {
    let first = Endpoint::start("basic").await;
    let second = Endpoint::start("basic").await;
    let yaml = format!(
        r#"
listen: 127.0.0.1:0
callers: {{ api_keys: {{ keys: ["{caller}"] }} }}
issuers:
  - name: first
    issuer: "{one}"
    audiences: ["{AUDIENCE}"]
    introspection: {{ client_id: {CLIENT_ID}, client_secret: "{CLIENT_SECRET}", default: true }}
  - name: second
    issuer: "{two}"
    audiences: ["{AUDIENCE}"]
    discovery: false
    introspection: {{ url: "{two}/introspect", client_id: {CLIENT_ID}, client_secret: "{CLIENT_SECRET}", token_prefix: "two_" }}
"#,
        caller = crate::helpers::CALLER_KEY,
        one = first.issuer(),
        two = second.issuer(),
    );
    // The first issuer's keys come from discovery, which has no JWKS here: only its introspection is used.
    let app = TestApp::start_without_keys(&yaml);
    first.answer(Answer::Json(first.active("orders:read", T0 + 600)));
    second.answer(Answer::Json(second.active("orders:read", T0 + 600)));

    let decision = decide(&app, "two_abcdef", "GET").await;
    assert_eq!(decision["issuer"], second.issuer(), "{decision}");
    let decision = decide(&app, "plain-abcdef", "GET").await;
    assert_eq!(decision["issuer"], first.issuer(), "{decision}");
    // The first issuer has no `url`: its endpoint came from its discovery document.
    assert_eq!((first.hits(), second.hits()), (1, 1));

    // An opaque token is still held to the bearer token characters (RFC 6750 §2.1).
    let refused = decide(&app, "bad!token", "GET").await;
    assert_eq!(refused["error"], "invalid_token", "{refused}");
}
