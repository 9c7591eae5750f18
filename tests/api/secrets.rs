//! No token, key or secret in any log line: a real `verdict serve` at debug level meets each kind of
//! credential, good and bad, and its whole log and decision log are searched for them. Nor in
//! `/readyz`: not a URL's credentials, not what a remote endpoint answered, not a configuration value.

use std::time::Duration;

use axum::Router;
use axum::routing::post;
use serde_json::{Value, json};

use crate::helpers::tempdir;
use crate::helpers::{AUDIENCE, JwksAnswer, KeyServer, claims, rsa_key, unix_now};
use crate::helpers::{Server, wait_readyz};

const CALLER_KEY: &str = "caller-key-that-must-not-be-logged-0123";
const INTROSPECTION_SECRET: &str = "introspection-secret-not-for-logs-4567";

#[tokio::test(flavor = "multi_thread")]
async fn no_credential_reaches_the_log() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let (api_key, entry) = crate::helpers::new_api_key(&["--id", "p", "--scope", "orders:read"]);
    let directory = tempdir();
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
    let config = directory.join("verdict.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ncallers: {{ api_keys: {{ keys: [\"{CALLER_KEY}\"] }} }}\nissuers:\n  - name: t\n    issuer: \"{issuer}\"\n    audiences: [\"{AUDIENCE}\"]\n    jwks_uri: \"{jwks}\"\n    introspection: {{ url: \"http://127.0.0.1:9/introspect\", client_id: verdict, client_secret: \"{INTROSPECTION_SECRET}\", timeout: 200ms }}\npolicies: {{ path: {} }}\napi_keys:\n  keys:\n    {entry}\n",
            policies.display(),
            issuer = server.issuer(),
            jwks = server.jwks_uri(),
        ),
    )
    .unwrap();
    let serve = Server::serve(&config, Some("debug"));
    let address = serve.address();
    let now = unix_now();
    let jwt = key.sign(&claims(&server.issuer(), now));
    let expired = key.sign(&claims(&server.issuer(), now - 3600));
    let opaque = "opaque-token-that-must-not-be-logged-89";
    let wrong_api_key = format!("{api_key}x");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client
            .get(format!("http://{address}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bodies = [
        json!({ "authorization": format!("Bearer {jwt}"), "method": "GET", "path": "/orders/1" }),
        json!({ "authorization": format!("Bearer {expired}"), "method": "GET", "path": "/orders/1" }),
        json!({ "authorization": format!("Bearer {opaque}"), "method": "GET", "path": "/orders/1" }),
        json!({ "api_key": api_key, "method": "GET", "path": "/orders/1" }),
        json!({ "api_key": wrong_api_key, "method": "GET", "path": "/orders/1" }),
    ];
    for (caller, body) in [CALLER_KEY, "wrong-caller-key-0123456789"]
        .into_iter()
        .flat_map(|caller| bodies.iter().map(move |body| (caller, body)))
    {
        let response = client
            .post(format!("http://{address}/v1/decide"))
            .header("x-verdict-key", caller)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success() || response.status() == 401);
    }

    let mut log = Vec::new();
    while let Ok(line) = serve.stderr.recv_timeout(Duration::from_millis(500)) {
        log.push(line);
    }
    // The decision log, on standard output by default.
    let mut decisions = Vec::new();
    while let Ok(line) = serve.stdout.recv_timeout(Duration::from_millis(500)) {
        decisions.push(line);
    }
    assert_eq!(
        decisions.len(),
        bodies.len(),
        "one decision record per authenticated callout: {decisions:?}"
    );
    log.extend(decisions);
    let log = log.join("\n");
    assert!(
        log.contains("decision"),
        "the debug log has the decisions: {log}"
    );
    assert!(
        log.contains("introspection failed"),
        "the failed introspection is logged: {log}"
    );
    for secret in [
        CALLER_KEY,
        INTROSPECTION_SECRET,
        &jwt,
        &expired,
        opaque,
        &api_key,
        &wrong_api_key,
    ] {
        assert!(!log.contains(secret), "a secret reached the log: {secret}");
    }
    // Nor any long piece of one (a signature, a key body).
    for secret in [&jwt, &api_key] {
        let tail = &secret[secret.len() - 24..];
        assert!(!log.contains(tail), "a piece of a secret reached the log");
    }
}

/// An introspection endpoint that answers the token it was asked about, as a JSON string: an answer
/// of the wrong shape that quotes the token.
async fn echoing_introspection() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = Router::new().route(
        "/introspect",
        post(|body: String| async move {
            let token = url::form_urlencoded::parse(body.as_bytes())
                .find(|(name, _)| name == "token")
                .map(|(_, token)| token.into_owned())
                .unwrap_or_default();
            axum::Json(Value::String(token))
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    address.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn url_credentials_remote_documents_and_config_values_reach_neither_readyz_nor_the_log() {
    let key = rsa_key("k1");
    // A JWKS endpoint whose document is of the wrong shape and quotable.
    let garbage = KeyServer::start(&[]).await;
    garbage.answer(JwksAnswer::Body(r#"{"keys": "remote-jwks-content-0002"}"#));
    // A good key set with one key of the wrong shape beside the good one: loaded, the other skipped.
    let mixed = KeyServer::start(&[key]).await;
    let mut jwks = verdict::demo::signing::jwks(&[key]);
    jwks["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "kty": 4_242_424_242_424_242_u64, "kid": "bad" }));
    mixed.answer(JwksAnswer::Keys {
        jwks,
        max_age: None,
    });
    let echo = echoing_introspection().await;
    let opaque = "opaque-token-the-endpoint-echoes-0005";
    let secrets = [
        "jwks-password-0001",
        "jwks-password-0002",
        "remote-jwks-content-0002",
        "discovery-password-0003",
        "4242424242424242",
        "introspection-password-0004",
        opaque,
        "reload-password-0006",
    ];
    let issuers = format!(
        r#"issuers:
  - {{ name: refused, issuer: "https://refused.example.com", audiences: ["{AUDIENCE}"], jwks_uri: "http://verdict:jwks-password-0001@127.0.0.1:9/jwks.json" }}
  - {{ name: garbage, issuer: "{garbage}", audiences: ["{AUDIENCE}"], jwks_uri: "http://verdict:jwks-password-0002@{garbage_host}/jwks.json" }}
  - {{ name: discovered, issuer: "http://verdict:discovery-password-0003@127.0.0.1:9", audiences: ["{AUDIENCE}"] }}
  - {{ name: mixed, issuer: "{mixed}", audiences: ["{AUDIENCE}"], jwks_uri: "{mixed_jwks}" }}
  - name: opaque
    issuer: "https://opaque.example.com"
    audiences: ["{AUDIENCE}"]
    discovery: false
    introspection: {{ url: "http://verdict:introspection-password-0004@{echo}/introspect", client_id: verdict, client_secret: "{INTROSPECTION_SECRET}", default: true }}
"#,
        garbage = garbage.issuer(),
        garbage_host = garbage.address(),
        mixed = mixed.issuer(),
        mixed_jwks = mixed.jwks_uri(),
    );
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
    let rest = format!(
        "listen: 127.0.0.1:0\ncallers: {{ api_keys: {{ keys: [\"{CALLER_KEY}\"] }} }}\npolicies: {{ path: {} }}\nreload: {{ watch: false }}\n",
        policies.display()
    );
    let config = tempdir().join("verdict.yaml");
    std::fs::write(&config, format!("{rest}{issuers}")).unwrap();
    let mut serve = Server::serve(&config, Some("debug"));
    let address = serve.address();
    let failing = ["refused", "garbage", "discovered"];
    let loaded = wait_readyz(&address, "every key set tried", |body| {
        body["issuers"].as_array().is_some_and(|issuers| {
            issuers.iter().all(|issuer| {
                let name = issuer["name"].as_str().unwrap_or_default();
                !failing.contains(&name) || issuer["last_error"].is_string()
            }) && issuers
                .iter()
                .any(|issuer| issuer["name"] == "mixed" && issuer["keys"] == 1)
        })
    })
    .await;
    for name in failing {
        let issuer = loaded["issuers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|issuer| issuer["name"] == name)
            .unwrap();
        let error = issuer["last_error"].as_str().unwrap();
        assert!(error.contains("://***@"), "{name}: {error}");
    }

    let response = reqwest::Client::new()
        .post(format!("http://{address}/v1/decide"))
        .header("x-verdict-key", CALLER_KEY)
        .header("content-type", "application/json")
        .body(json!({ "authorization": format!("Bearer {opaque}"), "method": "GET", "path": "/orders/1" }).to_string())
        .send()
        .await
        .unwrap();
    let decision: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(decision["status"], 503, "{decision}");

    // A reload refused for a plain-http URL with credentials in it.
    std::fs::write(
        &config,
        format!("{rest}{issuers}").replace(
            "http://verdict:jwks-password-0001@127.0.0.1:9/jwks.json",
            "http://verdict:reload-password-0006@jwks.example.com/jwks.json",
        ),
    )
    .unwrap();
    serve.hangup();
    let refused = wait_readyz(&address, "a refused reload", |body| {
        body["reloads"]["failed"] == 1
    })
    .await;
    assert_eq!(
        refused["reloads"]["last_failure"]["paths"],
        json!(["issuers[0].jwks_uri"]),
        "{refused}"
    );
    for secret in secrets {
        assert!(
            !refused.to_string().contains(secret),
            "/readyz shows `{secret}`: {refused}"
        );
    }

    serve.terminate();
    let log: Vec<String> = serve.stderr.iter().collect();
    let log = log.join("\n");
    for logged in [
        "keeping the current signing keys",
        "skipped a JWK",
        "introspection failed",
        "reload failed",
    ] {
        assert!(log.contains(logged), "`{logged}` is logged: {log}");
    }
    for secret in secrets {
        assert!(!log.contains(secret), "the log shows `{secret}`: {log}");
    }
}
