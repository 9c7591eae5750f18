//! End-user API keys: `verdict apikey new`, the hashed key store, and decisions for `ApiKey` principals.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use verdict::config::Config;

use crate::helpers::new_api_key;
use crate::helpers::tempdir;
use crate::helpers::{KeyServer, T0, TestApp, claims, config_yaml, rsa_key};

const POLICIES: &str = r#"
@id("keys-read")
permit (principal is ApiKey, action == Action::"GET", resource)
when { principal.scopes.contains("orders:read") && principal.tenant == "acme" };

@id("users-read")
permit (principal is User, action == Action::"GET", resource);
"#;

/// A key from `verdict apikey new`, and the entry it printed for the configuration.
fn new_key(args: &[&str]) -> (String, String) {
    let (key, entry) = new_api_key(args);
    assert!(key.starts_with("vk_") && key.len() > 40, "{key}");
    assert!(
        !entry.contains(&key),
        "the entry holds only the hash: {entry}"
    );
    (key, entry)
}

async fn decide(app: &TestApp, body: Value) -> Value {
    app.decide(body).await
}

#[tokio::test]
async fn a_key_from_apikey_new_is_the_principal_it_names_and_nothing_else_is() {
    let (key, entry) = new_key(&[
        "--id",
        "partner-a",
        "--scope",
        "orders:read",
        "--tenant",
        "acme",
        "--expires",
        "2027-02-01T00:00:00Z",
    ]);
    let (other_key, other_entry) = new_key(&["--id", "partner-b", "--scope", "orders:read"]);
    let server = KeyServer::start(&[rsa_key("k1")]).await;
    let yaml = format!(
        "{}\napi_keys:\n  keys:\n    {entry}\n    {other_entry}\n",
        config_yaml(&server, "")
    );
    let app = TestApp::start_with_policies(&yaml, POLICIES).await;
    let get = |api_key: &str| json!({ "api_key": api_key, "method": "GET", "path": "/orders/1" });

    let allowed = decide(&app, get(&key)).await;
    assert_eq!(allowed["allow"], true, "{allowed}");
    assert_eq!(allowed["subject"], "partner-a");
    assert_eq!(allowed["scope"], "orders:read");
    assert_eq!(allowed["policies"], json!(["keys-read"]));
    // Another key without the tenant: its own principal, which the policy does not permit.
    let other = decide(&app, get(&other_key)).await;
    assert_eq!(
        (other["status"].clone(), other["subject"].clone()),
        (json!(403), json!("partner-b"))
    );

    let mut off_by_one = key.clone().into_bytes();
    let last = off_by_one.len() - 1;
    off_by_one[last] = if off_by_one[last] == b'A' { b'B' } else { b'A' };
    let cases = [
        ("one character off", String::from_utf8(off_by_one).unwrap()),
        ("a prefix of the key", key[..key.len() - 1].to_owned()),
        (
            "the hash instead of the key",
            entry.split('"').nth(3).unwrap().to_owned(),
        ),
        ("20 KB", "k".repeat(20 * 1024)),
    ];
    for (name, wrong) in cases {
        let decision = decide(&app, get(&wrong)).await;
        assert_eq!(decision["status"], 401, "{name}: {decision}");
        assert_eq!(decision["error"], "invalid_token", "{name}: {decision}");
        assert_eq!(
            decision["error_description"], "the API key is not valid",
            "{name}"
        );
        assert!(
            !decision.to_string().contains(&key),
            "{name}: the key leaked"
        );
    }
    let (status, _) = app
        .post_decide(get(&"k".repeat(1024 * 1024)).to_string())
        .await;
    assert_eq!(status, 413, "a 1 MB key is refused with the body");

    // A bearer token, when there is one, is the credential, whatever key comes with it.
    let token = rsa_key("k1").sign(&claims(&server.issuer(), T0));
    let both = json!({ "authorization": format!("Bearer {token}"), "api_key": other_key, "method": "GET", "path": "/orders/1" });
    assert_eq!(decide(&app, both).await["policies"], json!(["users-read"]));

    // Past its expiry (T0 is 2027-01-15), the key is refused.
    app.advance(Duration::from_secs(20 * 24 * 3600));
    let expired = decide(&app, get(&key)).await;
    assert_eq!(expired["status"], 401, "{expired}");
    assert_eq!(decide(&app, get(&other_key)).await["subject"], "partner-b");
}

#[test]
fn a_key_file_is_read_and_its_mistakes_located() {
    let directory = tempdir();
    let (_, entry) = new_key(&["--id", "from-file"]);
    std::fs::write(directory.join("keys.yaml"), format!("keys:\n  {entry}\n")).unwrap();
    let base = "callers: { allow_unauthenticated: true }\nissuers:\n  - { name: a, issuer: \"https://idp.example.com\", audiences: [x] }\npolicies: { path: policies }\n";
    std::fs::create_dir_all(directory.join("policies")).unwrap();
    std::fs::write(directory.join("policies/p.cedar"), POLICIES).unwrap();
    let load = |yaml: &str| {
        std::fs::write(directory.join("verdict.yaml"), format!("{base}{yaml}")).unwrap();
        Config::load(&directory.join("verdict.yaml"), &HashMap::new())
    };
    let config = load("api_keys: { file: keys.yaml }\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.api_keys.len(), 1);
    assert_eq!(config.api_keys[0].id, "from-file");
    assert_eq!(config.referenced_files, vec![directory.join("keys.yaml")]);

    let cases = [
        (
            "api_keys: { keys: [{ id: a, hash: \"abc\" }] }\n",
            "api_keys.keys[0].hash",
        ),
        (
            &format!(
                "api_keys: {{ file: keys.yaml, keys: [{}] }}\n",
                entry.trim_start_matches("- ")
            ),
            "duplicate API key id `from-file`",
        ),
        ("api_keys: { file: missing.yaml }\n", "cannot read"),
        (
            "api_keys: { keys: [{ id: a, hash: \"sha256:0000000000000000000000000000000000000000000000000000000000000000\", expires: tomorrow }] }\n",
            "api_keys.keys[0].expires",
        ),
        (
            "api_keys: { keys: [{ id: a, hash: \"sha256:00\", scope: [x] }] }\n",
            "unknown field `scope`",
        ),
    ];
    for (yaml, expected) in cases {
        let errors = load(yaml)
            .err()
            .unwrap_or_else(|| panic!("{yaml} was accepted"));
        assert!(errors.to_string().contains(expected), "{yaml}: {errors}");
    }
}
