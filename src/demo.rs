//! The embedded demo default: `verdict serve` with no config runs a local development issuer whose
//! fresh key's JWKS Verdict serves itself, the example policies, a caller key, and prints a sample
//! token with `curl` commands that get an allow and a deny.

pub mod signing;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::config::{Config, PolicyOrigin};
use crate::policy::PolicyFile;
use signing::SigningKey;

/// The caller key of the demo, printed in its `curl` commands. Demo only.
pub const DEMO_CALLER_KEY: &str = "demo-caller-key-not-for-production";
/// Where the demo listens unless told otherwise: this machine only.
pub const DEMO_LISTEN: &str = "127.0.0.1:8080";
/// The demo tokens' audience.
const DEMO_AUDIENCE: &str = "api://orders";
/// How long the printed sample token lasts.
const SAMPLE_TOKEN_SECONDS: u64 = 3600;

/// The example policies, compiled into the binary.
const EXAMPLE_POLICIES: &[(&str, &str)] = &[(
    "orders.cedar",
    include_str!("../examples/policies/orders.cedar"),
)];

/// The demo's configuration, its extra routes, and its development issuer.
#[derive(Debug)]
pub struct Demo {
    pub config: Config,
    /// `/demo/jwks.json`, the development issuer's key set.
    pub routes: Router,
    pub issuer: DemoIssuer,
}

/// The development issuer: its URL and its signing key.
#[derive(Debug)]
pub struct DemoIssuer {
    pub key: SigningKey,
    pub issuer: String,
}

impl Demo {
    /// A demo served at `listen` (already bound: the issuer URL names the real port), with a fresh key.
    pub fn new(listen: SocketAddr) -> anyhow::Result<Self> {
        let key =
            SigningKey::generate_es256("demo-key-1").context("generating the demo issuer key")?;
        // The issuer must be reachable by Verdict itself; a wildcard listen address is reached on loopback.
        let host = if listen.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            listen.ip().to_string()
        };
        let base = if listen.is_ipv6() {
            format!("http://[{host}]:{}", listen.port())
        } else {
            format!("http://{host}:{}", listen.port())
        };
        let issuer = format!("{base}/demo");
        let text = format!(
            r#"
listen: "{listen}"
callers:
  api_keys:
    keys: ["{DEMO_CALLER_KEY}"]
issuers:
  - name: demo
    issuer: "{issuer}"
    audiences: ["{DEMO_AUDIENCE}"]
    jwks_uri: "{issuer}/jwks.json"
    algorithms: [ES256]
    claims: {{ tenant: tenant }}
headers:
  x-user-id: sub
  x-tenant: tenant
"#
        );
        let files = EXAMPLE_POLICIES
            .iter()
            .map(|(name, text)| PolicyFile {
                name: (*name).to_owned(),
                text: (*text).to_owned(),
            })
            .collect();
        let config = Config::parse(
            &text,
            Path::new("."),
            &std::collections::HashMap::new(),
            PolicyOrigin::Embedded(files),
        )
        .map_err(|errors| {
            anyhow::anyhow!("the embedded demo configuration is invalid:\n{errors}")
        })?;
        let jwks = signing::jwks(&[&key]);
        let routes = Router::new().route(
            "/demo/jwks.json",
            get(move || std::future::ready(Json(jwks.clone()))),
        );
        Ok(Self {
            config,
            routes,
            issuer: DemoIssuer { key, issuer },
        })
    }
}

impl DemoIssuer {
    /// A token for `alice` of tenant `acme` with the `orders:read` scope.
    pub fn sample_token(&self, now: u64) -> String {
        self.key.sign(&json!({
            "iss": self.issuer,
            "sub": "alice",
            "aud": DEMO_AUDIENCE,
            "scope": "orders:read",
            "tenant": "acme",
            "iat": now,
            "exp": now + SAMPLE_TOKEN_SECONDS,
        }))
    }

    /// Prints the sample token and the two `curl` commands to standard output.
    pub fn print_instructions(&self, token: &str, address: SocketAddr) -> std::io::Result<()> {
        let url = format!("http://{address}/v1/decide");
        let curl = |method: &str| {
            format!(
                "curl -s {url} -H 'content-type: application/json' -H 'x-verdict-key: {DEMO_CALLER_KEY}' \\\n  \
                 -d '{{\"authorization\": \"Bearer {token}\", \"method\": \"{method}\", \"path\": \"/orders/42\"}}'"
            )
        };
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "\nVerdict demo: a development issuer at {}, policies from examples/policies.",
            self.issuer
        )?;
        writeln!(
            out,
            "\nA sample token (alice, scope orders:read, valid 1 hour):\n{token}"
        )?;
        writeln!(out, "\nAllowed (GET needs orders:read):\n{}", curl("GET"))?;
        writeln!(
            out,
            "\nDenied with 403 (DELETE needs the admin role):\n{}\n",
            curl("DELETE")
        )?;
        out.flush()
    }
}
