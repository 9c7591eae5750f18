//! The `verdict` binary end to end: `--version`, `check`, `serve` with a configuration and with the
//! embedded demo, talking real HTTP on loopback.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    AUDIENCE, CALLER_KEY, KeyServer, Server, claims, output, rsa_key, tempdir, unix_now, verdict,
    wait_ready, wait_readyz,
};

async fn post_decide(address: &str, caller_key: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{address}/v1/decide"))
        .header("x-verdict-key", caller_key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null),
    )
}

#[test]
fn version_names_the_package_version() {
    let (status, stdout, _) = output(verdict().arg("--version"));
    assert!(status.success());
    assert_eq!(
        stdout.trim(),
        format!("verdict {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_accepts_the_example_and_lists_every_error_of_a_bad_file() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/verdict.yaml");
    let (status, stdout, stderr) = output(
        verdict()
            .args(["check", "--config"])
            .arg(&example)
            .env("VERDICT_CALLER_KEY", "an-example-caller-key-0123"),
    );
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains(": ok (2 issuers"), "{stdout}");

    let (status, _, stderr) = output(
        verdict()
            .args(["check", "--config"])
            .arg(&example)
            .env_remove("VERDICT_CALLER_KEY"),
    );
    assert!(!status.success());
    assert!(
        stderr.contains(
            "callers.api_keys.keys[0]: environment variable `VERDICT_CALLER_KEY` is not set"
        ),
        "{stderr}"
    );

    let bad = tempdir().join("bad.yaml");
    std::fs::write(&bad, "listen: nowhere\nissuers: []\nsurprise: true\n").unwrap();
    let (status, _, stderr) = output(verdict().args(["check", "--config"]).arg(&bad));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("surprise: unknown field `surprise`"),
        "{stderr}"
    );

    let bad = tempdir().join("bad.yaml");
    std::fs::write(&bad, "listen: nowhere\nissuers: []\n").unwrap();
    let (_, _, stderr) = output(verdict().args(["check", "--config"]).arg(&bad));
    for expected in [
        "listen: not a socket address",
        "callers: no caller authentication",
        "issuers: at least one issuer",
        "policies: required",
    ] {
        assert!(stderr.contains(expected), "missing `{expected}`:\n{stderr}");
    }
}

#[test]
fn serve_refuses_a_bad_configuration_before_binding() {
    // The configuration names a port this test holds: had Verdict bound before validating, it would
    // report the port in use instead of the configuration's errors.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = held.local_addr().unwrap();
    let bad = tempdir().join("no-callers.yaml");
    std::fs::write(
        &bad,
        format!("listen: {address}\nissuers:\n  - {{ name: a, issuer: \"https://idp.example.com\", audiences: [x] }}\npolicies: {{ path: {} }}\n", Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies").display()),
    )
    .unwrap();
    let (status, _, stderr) = output(verdict().args(["serve", "--config"]).arg(&bad));
    assert!(!status.success());
    assert!(
        stderr.contains("no caller authentication is configured"),
        "{stderr}"
    );
    assert!(!stderr.contains("binding"), "{stderr}");
}

/// Writes a configuration trusting `server`, with the example policies and the given `callers` section.
fn write_config(server: &KeyServer, callers: &str) -> std::path::PathBuf {
    let path = tempdir().join("verdict.yaml");
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
    let yaml = format!(
        "listen: 127.0.0.1:0\n{callers}issuers:\n  - {{ name: t, issuer: \"{}\", audiences: [\"{AUDIENCE}\"], jwks_uri: \"{}\" }}\npolicies: {{ path: {} }}\n",
        server.issuer(),
        server.jwks_uri(),
        policies.display()
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_loads_keys_in_the_background_and_decides_over_http() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let config = write_config(
        &server,
        "callers:\n  api_keys:\n    keys: [\"${CALLER}\"]\n",
    );
    let serve = Server::spawn({
        let mut command = verdict();
        command
            .args(["serve", "--config"])
            .arg(&config)
            .env("CALLER", CALLER_KEY);
        command
    });
    let address = serve.address();
    let ready = wait_ready(&address).await;
    assert_eq!(ready["issuers"][0]["keys"], json!(1), "{ready}");

    let now = unix_now();
    let token = key.sign(&claims(&server.issuer(), now));
    let request =
        json!({ "authorization": format!("Bearer {token}"), "method": "GET", "path": "/orders/7" });
    let (status, decision) = post_decide(&address, CALLER_KEY, request.clone()).await;
    assert_eq!(
        (status, decision["allow"].clone()),
        (200, json!(true)),
        "{decision}"
    );
    let (status, body) = post_decide(&address, "wrong-caller-key-0123456789", request).await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("unauthenticated_caller"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn allow_unauthenticated_starts_with_a_warning() {
    let server = KeyServer::start(&[rsa_key("k1")]).await;
    let config = write_config(&server, "callers: { allow_unauthenticated: true }\n");
    let serve = Server::spawn({
        let mut command = verdict();
        command.args(["serve", "--config"]).arg(&config);
        command
    });
    Server::wait_for(&serve.stderr, "caller authentication is off");
    let address = serve.address();
    let (status, decision) =
        post_decide(&address, "", json!({ "method": "GET", "path": "/" })).await;
    assert_eq!(
        (status, decision["status"].clone()),
        (200, json!(401)),
        "no caller key needed, and no token is a 401 decision"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_prints_a_token_and_curl_commands_that_allow_and_deny() {
    let demo = Server::spawn({
        let mut command = verdict();
        command.args(["serve", "--demo-listen", "127.0.0.1:0"]);
        command
    });
    let token_line = {
        Server::wait_for(&demo.stdout, "A sample token");
        demo.stdout.recv_timeout(Duration::from_secs(60)).unwrap()
    };
    let allow_curl = Server::wait_for(&demo.stdout, "\"method\": \"GET\"");
    let deny_curl = Server::wait_for(&demo.stdout, "\"method\": \"DELETE\"");
    assert!(allow_curl.contains(&token_line) && deny_curl.contains(&token_line));
    let address = demo.address();
    wait_ready(&address).await;

    // Run the printed commands' JSON bodies exactly as printed.
    let body_of = |curl: &str| -> Value {
        serde_json::from_str(
            curl.split("-d '")
                .nth(1)
                .and_then(|b| b.strip_suffix('\''))
                .unwrap(),
        )
        .unwrap()
    };
    let caller_key = verdict::demo::DEMO_CALLER_KEY;
    let (_, allowed) = post_decide(&address, caller_key, body_of(&allow_curl)).await;
    assert_eq!(allowed["allow"], json!(true), "{allowed}");
    let (_, denied) = post_decide(&address, caller_key, body_of(&deny_curl)).await;
    assert_eq!(
        (denied["allow"].clone(), denied["status"].clone()),
        (json!(false), json!(403)),
        "{denied}"
    );
}

/// A configuration trusting `server` with its own policy directory holding `policy`, plus `extra`.
fn write_reloadable_config(server: &KeyServer, policy: &str, extra: &str) -> std::path::PathBuf {
    let directory = tempdir();
    std::fs::create_dir_all(directory.join("policies")).unwrap();
    std::fs::write(directory.join("policies/main.cedar"), policy).unwrap();
    let path = directory.join("verdict.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:0\ncallers: {{ allow_unauthenticated: true }}\nissuers:\n  - {{ name: t, issuer: \"{}\", audiences: [\"{AUDIENCE}\"], jwks_uri: \"{}\" }}\npolicies: {{ path: policies }}\n{extra}",
        server.issuer(),
        server.jwks_uri(),
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

fn policy_named(id: &str) -> String {
    format!("@id(\"{id}\") permit(principal, action, resource);\n")
}

async fn decided_by(address: &str, token: &str) -> Value {
    let request =
        json!({ "authorization": format!("Bearer {token}"), "method": "GET", "path": "/orders/7" });
    let (status, decision) = post_decide(address, "", request).await;
    assert_eq!(status, 200, "{decision}");
    decision["policies"].clone()
}

/// `verdict serve` on a configuration with its own policy directory (one policy, `first`) and the
/// given `reload` section, ready, with a token its issuer signed now.
struct ReloadableServer {
    serve: Server,
    address: String,
    policy_file: std::path::PathBuf,
    token: String,
    started: Value,
    _issuer: KeyServer,
}

impl ReloadableServer {
    async fn start(reload: &str) -> Self {
        let key = rsa_key("k1");
        let issuer = KeyServer::start(&[key]).await;
        let config = write_reloadable_config(&issuer, &policy_named("first"), reload);
        let serve = Server::spawn({
            let mut command = verdict();
            command.args(["serve", "--config"]).arg(&config);
            command
        });
        let address = serve.address();
        let started = wait_ready(&address).await;
        let now = unix_now();
        let token = key.sign(&claims(&issuer.issuer(), now));
        assert_eq!(decided_by(&address, &token).await, json!(["first"]));
        Self {
            serve,
            address,
            policy_file: config.parent().unwrap().join("policies/main.cedar"),
            token,
            started,
            _issuer: issuer,
        }
    }

    async fn decided_by(&self) -> Value {
        decided_by(&self.address, &self.token).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_policies_and_a_bad_set_is_refused_while_serving_on() {
    let server = ReloadableServer::start("reload: { watch: false }\n").await;
    std::fs::write(&server.policy_file, policy_named("second")).unwrap();
    server.serve.hangup();
    let reloaded = wait_readyz(&server.address, "a reload on SIGHUP", |body| {
        body["reloads"]["succeeded"] == 1
    })
    .await;
    assert_ne!(
        reloaded["policy_revision"],
        server.started["policy_revision"]
    );
    assert_eq!(server.decided_by().await, json!(["second"]));

    std::fs::write(&server.policy_file, "permit(principal, action, resource").unwrap();
    server.serve.hangup();
    let refused = wait_readyz(&server.address, "a refused reload", |body| {
        body["reloads"]["failed"] == 1
    })
    .await;
    assert_eq!(refused["policy_revision"], reloaded["policy_revision"]);
    // Where it failed, never the message (which may quote the configuration); the log has that.
    let failure = &refused["reloads"]["last_failure"];
    assert_eq!(failure["paths"], json!(["policies"]), "{failure}");
    assert_eq!(
        failure.as_object().unwrap().len(),
        2,
        "only `at` and `paths`: {failure}"
    );
    let logged = Server::wait_for(&server.serve.stderr, "reload failed");
    assert!(logged.contains("main.cedar:1:"), "{logged}");
    assert_eq!(server.decided_by().await, json!(["second"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_policy_file_is_picked_up_without_a_signal() {
    let server = ReloadableServer::start("reload: { interval: 100ms }\n").await;
    std::fs::write(&server.policy_file, policy_named("watched")).unwrap();
    wait_readyz(&server.address, "a reload on a file change", |body| {
        body["reloads"]["succeeded"] == 1
    })
    .await;
    assert_eq!(server.decided_by().await, json!(["watched"]));
    Server::wait_for(&server.serve.stderr, "configuration reloaded");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_survives_sighup() {
    let serve = Server::spawn({
        let mut command = verdict();
        command.args(["serve", "--demo-listen", "127.0.0.1:0"]);
        command
    });
    let address = serve.address();
    wait_ready(&address).await;
    serve.hangup();
    Server::wait_for(&serve.stderr, "nothing to reload");
    wait_ready(&address).await;
}
