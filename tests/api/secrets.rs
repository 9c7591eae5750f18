//! No token, key or secret in any log line: a real `verdict serve` at debug level meets each kind of
//! credential, good and bad, and its whole log and decision log are searched for them.

use std::time::Duration;

use serde_json::json;

use crate::cli::{Server, verdict};
use crate::config::tempdir;
use crate::helpers::{AUDIENCE, KeyServer, claims, rsa_key, unix_now};

const CALLER_KEY: &str = "caller-key-that-must-not-be-logged-0123";
const INTROSPECTION_SECRET: &str = "introspection-secret-not-for-logs-4567";

#[tokio::test(flavor = "multi_thread")]
async fn no_credential_reaches_the_log() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let (api_key, entry) = {
        let (status, stdout, _) = crate::cli::output(verdict().args([
            "apikey",
            "new",
            "--id",
            "p",
            "--scope",
            "orders:read",
        ]));
        assert!(status.success());
        let mut lines = stdout.lines();
        (
            lines.next().unwrap().to_owned(),
            lines.next().unwrap().to_owned(),
        )
    };
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
    let serve = Server::spawn({
        let mut command = verdict();
        command
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "debug");
        command
    });
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
