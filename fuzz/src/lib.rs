//! What the fuzz targets share: one service with a fixed issuer and key set, valid tokens to mutate,
//! and the seeds each target starts from.
//!
//! AFL++ forks each test process from a parent that has already run [`Fixture::new`] (afl.rs defers
//! the fork server to the `fuzz` call), so the RSA keys are generated and the key set is fetched once.
//! Threads do not survive a fork, so the fixture keeps no runtime: the key server lives only while the
//! keys load, and each test process builds its own current-thread runtime on first use.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use verdict::api;
use verdict::state::AppState;
use verdict::clock::ManualClock;
use verdict::config::{Config, ConfigErrors, PolicyOrigin};
use verdict::demo::signing::{SigningKey, encode_json};
use verdict::policy::PolicyFile;

/// The time the fixture's clock stands at, for ever: 2027-01-15T08:00:00Z.
pub const T0: u64 = 1_800_000_000;
/// The caller key the fixture accepts.
pub const CALLER_KEY: &str = "fuzz-caller-key-0123456789";
/// The audience the fixture accepts.
pub const AUDIENCE: &str = "api://orders";
/// The issuer's HMAC secret: HS256 tokens are deterministic, so seed files can hold a valid one.
pub const HMAC_SECRET: &str = "fuzz-hmac-secret-of-at-least-32-bytes";
/// The `iss` of every fixture token.
pub const ISSUER: &str = "https://idp.fuzz.test";

/// The service, its valid tokens, and the clock it runs on.
#[derive(Debug)]
pub struct Fixture {
    pub state: AppState,
    pub clock: Arc<ManualClock>,
    /// Tokens the service allows for `GET /orders/42`: RS256, ES256 and HS256.
    pub valid_tokens: Vec<String>,
    /// The ES256 token with its signature's `s` replaced by `n - s`, which ECDSA accepts as well
    /// (BENCHMARKS.md, "Fuzzing"). Any token that verifies and is none of these is a finding.
    pub equivalent_tokens: Vec<String>,
}

impl Fixture {
    /// Builds the service around a fixed clock, loads its keys from a key server on loopback, and
    /// stops that server.
    pub fn new() -> Self {
        let rsa = SigningKey::generate_rs256("fuzz-rsa").unwrap_or_else(|e| panic!("{e}"));
        let ec = SigningKey::generate_es256("fuzz-ec").unwrap_or_else(|e| panic!("{e}"));
        let runtime = runtime();
        let (state, clock) = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("bind: {e}"));
            let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
            let jwks = verdict::demo::signing::jwks(&[&rsa, &ec]);
            // `Connection: close` leaves no pooled connection tied to this runtime.
            let router = Router::new().route(
                "/jwks.json",
                get(move || {
                    let jwks = jwks.clone();
                    async move { ([(header::CONNECTION, "close")], axum::Json(jwks)) }
                }),
            );
            let server = tokio::spawn(async move { axum::serve(listener, router).await });
            let config = parse_config(&config_yaml(&format!("http://{address}/jwks.json")))
                .unwrap_or_else(|errors| panic!("fixture configuration: {errors}"));
            let clock = ManualClock::starting_at(T0);
            let state =
                verdict::app::state(config, clock.clone()).unwrap_or_else(|e| panic!("{e}"));
            for keys in state.current().key_sets() {
                keys.refresh()
                    .await
                    .unwrap_or_else(|e| panic!("loading keys: {e}"));
            }
            server.abort();
            (state, clock)
        });
        drop(runtime);
        let claims = valid_claims();
        let es256 = ec.sign(&claims);
        let equivalent_tokens = vec![high_s_twin(&es256)];
        let valid_tokens = vec![rsa.sign(&claims), es256, hmac_token()];
        Self {
            state,
            clock,
            valid_tokens,
            equivalent_tokens,
        }
    }

    /// Whether `token` is one the fixture minted, or the high-`s` twin of its ES256 token.
    pub fn is_valid_token(&self, token: &str) -> bool {
        self.valid_tokens
            .iter()
            .chain(&self.equivalent_tokens)
            .any(|valid| valid == token)
    }

    /// Posts `body` to `/v1/decide` through the router, as the proxy would; returns the HTTP status and
    /// the response body.
    pub async fn post_decide(&self, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        let request = Request::post("/v1/decide")
            .header("x-verdict-key", CALLER_KEY)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap_or_else(|e| panic!("{e}"));
        let response = api::router(self.state.clone())
            .oneshot(request)
            .await
            .unwrap_or_else(|e| match e {});
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .map(|bytes| bytes.to_vec())
            .unwrap_or_default();
        (status, bytes)
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

/// A current-thread runtime, as a test process needs one.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// The fixture's configuration: one issuer with RS256, ES256 and its own HS256 secret.
pub fn config_yaml(jwks_uri: &str) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
callers:
  api_keys:
    keys: ["{CALLER_KEY}"]
issuers:
  - name: fuzz
    issuer: "{ISSUER}"
    audiences: ["{AUDIENCE}"]
    jwks_uri: "{jwks_uri}"
    algorithms: [RS256, ES256, HS256]
    shared_secret: "{HMAC_SECRET}"
    leeway: 30s
    max_token_age: 1h
    claims: {{ tenant: tenant }}
headers:
  x-user-id: sub
  x-tenant: tenant
cache:
  decision_ttl: 60s
decision_log: off
"#
    )
}

/// Validates configuration text against the example policies, with `VERDICT_CALLER_KEY` set.
pub fn parse_config(text: &str) -> Result<Config, ConfigErrors> {
    let environment = HashMap::from([("VERDICT_CALLER_KEY".to_owned(), CALLER_KEY.to_owned())]);
    Config::parse(
        text,
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &environment,
        PolicyOrigin::Embedded(example_policies()),
    )
}

/// The example policies of `examples/policies`.
pub fn example_policies() -> Vec<PolicyFile> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    PolicyFile::read_dir(&directory).unwrap_or_else(|problems| panic!("{problems:?}"))
}

/// Claims the example policies allow for `GET /orders/42`.
pub fn valid_claims() -> Value {
    json!({
        "iss": ISSUER,
        "sub": "alice",
        "aud": AUDIENCE,
        "scope": "orders:read orders:write",
        "tenant": "acme",
        "iat": T0,
        "exp": T0 + 600,
    })
}

/// The valid HS256 token: the same on every run.
pub fn hmac_token() -> String {
    let signing_input = format!(
        "{}.{}",
        encode_json(&json!({ "alg": "HS256", "kid": "fuzz-hmac", "typ": "JWT" })),
        encode_json(&valid_claims())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, HMAC_SECRET.as_bytes());
    let signature = aws_lc_rs::hmac::sign(&key, signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    )
}

/// `--seeds DIR` as the only argument: the directory to write a target's starting corpus to.
pub fn seeds_directory() -> Option<PathBuf> {
    let mut arguments = std::env::args_os().skip(1);
    match (arguments.next(), arguments.next()) {
        (Some(flag), Some(directory)) if flag == "--seeds" => Some(directory.into()),
        _ => None,
    }
}

/// Writes `seeds` as files `0`, `1`, ... of `directory`.
pub fn write_seeds(directory: &Path, seeds: &[Vec<u8>]) {
    std::fs::create_dir_all(directory).unwrap_or_else(|e| panic!("{}: {e}", directory.display()));
    for (index, seed) in seeds.iter().enumerate() {
        let path = directory.join(index.to_string());
        std::fs::write(&path, seed).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// The order of the P-256 group, big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// An ES256 token with its signature `(r, s)` replaced by `(r, n - s)`.
fn high_s_twin(token: &str) -> String {
    let Some((signing_input, signature)) = token.rsplit_once('.') else {
        return String::new();
    };
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap_or_default();
    let Some((r, s)) = signature.split_at_checked(32) else {
        return String::new();
    };
    let mut negated = [0u8; 32];
    let mut borrow = 0u16;
    for ((out, &n), &s) in negated.iter_mut().zip(&P256_ORDER).zip(s).rev() {
        let subtrahend = u16::from(s) + borrow;
        let n = u16::from(n);
        borrow = u16::from(n < subtrahend);
        *out = u8::try_from((n + 256 - subtrahend) % 256).unwrap_or_default();
    }
    let twin = [r, &negated[..]].concat();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(twin))
}
