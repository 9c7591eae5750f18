//! Shared test fixtures, the only module the test modules import from: a JWKS/discovery server on
//! loopback that counts its hits, issuer keys, token minting, and the service built around a manual
//! clock; with [`process`] (the `verdict` binary as a child process), [`files`] and [`certificates`].

mod certificates;
mod files;
pub mod grpc;
mod process;
pub mod proxy;

pub use certificates::{Authority, identity};
pub use files::tempdir;
pub use process::{Server, new_api_key, output, verdict, wait_ready, wait_readyz};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use verdict::api;
use verdict::clock::ManualClock;
use verdict::config::{Config, PolicyOrigin};
use verdict::demo::signing::SigningKey;
use verdict::policy::PolicyFile;
use verdict::state::AppState;

/// The time every test starts at: 2027-01-15T08:00:00Z.
pub const T0: u64 = 1_800_000_000;
/// The caller key the test configurations accept.
pub const CALLER_KEY: &str = "test-caller-key-0123456789";
/// The audience the test configurations accept.
pub const AUDIENCE: &str = "api://orders";

/// The real time, for tests against a `verdict serve` process, whose clock is the system's.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_else(|e| panic!("{e}"))
        .as_secs()
}

/// RSA keys are slow to generate; each test process makes each `kid` once.
pub fn rsa_key(kid: &str) -> &'static SigningKey {
    static KEYS: OnceLock<Mutex<HashMap<String, &'static SigningKey>>> = OnceLock::new();
    let mut keys = KEYS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    keys.entry(kid.to_owned()).or_insert_with(|| {
        Box::leak(Box::new(
            SigningKey::generate_rs256(kid).unwrap_or_else(|_| unreachable!()),
        ))
    })
}

/// A fresh P-256 key.
pub fn ec_key(kid: &str) -> SigningKey {
    SigningKey::generate_es256(kid).unwrap_or_else(|_| unreachable!())
}

/// What the key server answers for its JWKS.
#[derive(Debug, Clone)]
pub enum JwksAnswer {
    /// A key set, with an optional `Cache-Control: max-age`.
    Keys { jwks: Value, max_age: Option<u64> },
    /// An HTTP status with an empty body.
    Status(u16),
    /// A body that is not a key set.
    Body(&'static str),
    /// No answer at all: the request hangs until the client gives up.
    Hang,
}

#[derive(Debug)]
struct ServerState {
    answer: Mutex<JwksAnswer>,
    jwks_hits: AtomicUsize,
    discovery_hits: AtomicUsize,
    other_hits: AtomicUsize,
    base: String,
}

/// A JWKS and OIDC discovery server on loopback. Its issuer is its base URL.
#[derive(Debug, Clone)]
pub struct KeyServer {
    state: Arc<ServerState>,
    address: SocketAddr,
}

impl KeyServer {
    /// Starts a server publishing `keys`.
    pub async fn start(keys: &[&SigningKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("address: {e}"));
        let state = Arc::new(ServerState {
            answer: Mutex::new(JwksAnswer::Keys {
                jwks: verdict::demo::signing::jwks(keys),
                max_age: None,
            }),
            jwks_hits: AtomicUsize::new(0),
            discovery_hits: AtomicUsize::new(0),
            other_hits: AtomicUsize::new(0),
            base: format!("http://{address}"),
        });
        let router = Router::new()
            .route("/jwks.json", get(jwks))
            .route("/.well-known/openid-configuration", get(discovery))
            .fallback(other)
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { state, address }
    }

    /// The issuer URL (`iss`) of this server.
    pub fn issuer(&self) -> String {
        self.state.base.clone()
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks.json", self.state.base)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Changes what later JWKS requests get.
    pub fn answer(&self, answer: JwksAnswer) {
        *self.state.answer.lock().unwrap_or_else(|e| e.into_inner()) = answer;
    }

    /// Publishes this JWKS document from now on.
    pub fn publish_raw(&self, jwks: Value) {
        self.answer(JwksAnswer::Keys {
            jwks,
            max_age: None,
        });
    }

    /// Publishes `keys` from now on.
    pub fn publish(&self, keys: &[&SigningKey], max_age: Option<u64>) {
        self.answer(JwksAnswer::Keys {
            jwks: verdict::demo::signing::jwks(keys),
            max_age,
        });
    }

    pub fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    pub fn discovery_hits(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }

    /// Requests to any other path (for example a `jku` or `x5u` an attacker pointed here).
    pub fn other_hits(&self) -> usize {
        self.state.other_hits.load(Ordering::SeqCst)
    }
}

async fn jwks(State(state): State<Arc<ServerState>>) -> Response {
    state.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let answer = state
        .answer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    match answer {
        JwksAnswer::Keys { jwks, max_age } => {
            let mut headers = HeaderMap::new();
            if let Some(age) = max_age {
                headers.insert(
                    header::CACHE_CONTROL,
                    format!("public, max-age={age}")
                        .parse()
                        .unwrap_or_else(|_| unreachable!()),
                );
            }
            (headers, axum::Json(jwks)).into_response()
        }
        JwksAnswer::Status(status) => StatusCode::from_u16(status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response(),
        JwksAnswer::Body(body) => {
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        JwksAnswer::Hang => std::future::pending().await,
    }
}

async fn discovery(State(state): State<Arc<ServerState>>) -> Response {
    state.discovery_hits.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({ "issuer": state.base, "jwks_uri": format!("{}/jwks.json", state.base) }))
        .into_response()
}

async fn other(State(state): State<Arc<ServerState>>) -> Response {
    state.other_hits.fetch_add(1, Ordering::SeqCst);
    StatusCode::NOT_FOUND.into_response()
}

/// Standard valid claims for `issuer` at time `now`.
pub fn claims(issuer: &str, now: u64) -> Value {
    json!({
        "iss": issuer,
        "sub": "alice",
        "aud": AUDIENCE,
        "scope": "orders:read orders:write",
        "tenant": "acme",
        "iat": now,
        "exp": now + 600,
    })
}

/// The example policies of `examples/policies`.
pub fn example_policies() -> Vec<PolicyFile> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
    PolicyFile::read_dir(&directory).unwrap_or_else(|problems| panic!("{problems:?}"))
}

/// A configuration trusting one issuer served by `server`, in YAML. `extra` is appended to the issuer
/// entry (indented four spaces).
pub fn config_yaml(server: &KeyServer, issuer_extra: &str) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
callers:
  api_keys:
    keys: ["{CALLER_KEY}"]
issuers:
  - name: test
    issuer: "{issuer}"
    audiences: ["{AUDIENCE}"]
    jwks_uri: "{jwks}"
    leeway: 30s
    claims: {{ tenant: tenant }}
{issuer_extra}
headers:
  x-user-id: sub
  x-tenant: tenant
cache:
  decision_ttl: 60s
"#,
        issuer = server.issuer(),
        jwks = server.jwks_uri(),
    )
}

/// Parses a configuration against the example policies, panicking with every error on failure.
pub fn parse_config(yaml: &str) -> Config {
    parse_config_with(yaml, example_policies())
}

/// Parses a configuration against the given policies.
pub fn parse_config_with(yaml: &str, policies: Vec<PolicyFile>) -> Config {
    Config::parse(
        yaml,
        Path::new("."),
        &HashMap::new(),
        PolicyOrigin::Embedded(policies),
    )
    .unwrap_or_else(|errors| panic!("test configuration is invalid:\n{errors}"))
}

/// The service around a manual clock, driven through its router.
#[derive(Debug, Clone)]
pub struct TestApp {
    pub state: AppState,
    pub clock: Arc<ManualClock>,
}

impl TestApp {
    /// Builds the service and loads every issuer's keys.
    pub async fn start(yaml: &str) -> Self {
        Self::from_config(parse_config(yaml))
            .with_keys_loaded()
            .await
    }

    /// Builds the service with the given policies instead of the examples, and loads its keys.
    pub async fn start_with_policies(yaml: &str, policies: &str) -> Self {
        let files = vec![PolicyFile {
            name: "test.cedar".into(),
            text: policies.into(),
        }];
        Self::from_config(parse_config_with(yaml, files))
            .with_keys_loaded()
            .await
    }

    /// Builds the service without loading any keys.
    pub fn start_without_keys(yaml: &str) -> Self {
        Self::from_config(parse_config(yaml))
    }

    pub fn from_config(config: Config) -> Self {
        Self::on_clock(config, ManualClock::starting_at(T0))
    }

    /// Builds the service on a clock it shares with others, without loading any keys.
    pub fn on_clock(config: Config, clock: Arc<ManualClock>) -> Self {
        let state = verdict::app::state(config, clock.clone()).unwrap_or_else(|e| panic!("{e:#}"));
        Self { state, clock }
    }

    pub async fn with_keys_loaded(self) -> Self {
        for keys in self.state.current().key_sets() {
            keys.refresh()
                .await
                .unwrap_or_else(|e| panic!("loading keys: {e}"));
        }
        self
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Sends a raw request through the router.
    pub async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let (status, _, body) = self.exchange(request).await;
        (status, body)
    }

    /// Sends a raw request through the router: the answer's status, headers and body (JSON, or the
    /// text as a JSON string).
    pub async fn exchange(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let response = api::router(self.state.clone())
            .oneshot(request)
            .await
            .unwrap_or_else(|e| match e {});
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, headers, body)
    }

    /// `GET /readyz`.
    pub async fn readyz(&self) -> (StatusCode, Value) {
        self.send(
            Request::get("/readyz")
                .body(Body::empty())
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await
    }

    /// Posts `body` bytes to `/v1/decide` with the caller key and a JSON content type.
    pub async fn post_decide(&self, body: impl Into<Body>) -> (StatusCode, Value) {
        let request = Request::post("/v1/decide")
            .header("x-verdict-key", CALLER_KEY)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap_or_else(|e| panic!("{e}"));
        self.send(request).await
    }

    /// Posts a decide request; the HTTP status must be 200 and the decision is returned.
    pub async fn decide(&self, body: Value) -> Value {
        let (status, decision) = self.post_decide(body.to_string()).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "a decision is always HTTP 200: {decision}"
        );
        decision
    }

    /// Decides `GET /orders/42` for `token`.
    pub async fn decide_token(&self, token: &str) -> Value {
        self.decide(json!({ "authorization": format!("Bearer {token}"), "method": "GET", "path": "/orders/42" })).await
    }
}
