//! HAProxy 2.6 in front of a real Verdict, from `deploy/haproxy/`: `haproxy.cfg` rendered only for its
//! ports and paths, loading the shipped `verdict.lua`, run as a child process on loopback. It passes the
//! shared [`contract`]; it denies, and never reaches the upstream, when Verdict is stopped, too slow, or
//! refuses the proxy's caller key, and when the Lua action itself fails; Verdict's own 503 reaches the
//! client with its `Retry-After`; the client's forwarding headers never reach Verdict.
//!
//! Debian installs the binary as `/usr/sbin/haproxy`, which [`require`] looks in too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::helpers::proxy::{
    Process, Stack, contract, free_port, render, require, same_decisions_as_decide, send,
};
use crate::helpers::{CALLER_KEY, JwksAnswer, claims, output, rsa_key, unix_now};

/// The shipped files.
const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haproxy");

fn haproxy() -> PathBuf {
    require("haproxy")
}

/// A client that gives up (failing the test) rather than wait forever on a proxy that hangs.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A running HAProxy.
struct Haproxy {
    process: Process,
    /// `http://127.0.0.1:<port>` of the frontend.
    base: String,
    /// The port of the `verdict` listen section.
    auth_port: u16,
}

/// `deploy/haproxy/haproxy.cfg` rendered for `stack`, with Verdict at `verdict_port` and `verdict.lua`
/// read from `config_dir`, written to the stack's directory: its path, the frontend's port and the
/// `verdict` listen section's.
fn configure(stack: &Stack, verdict_port: u16, config_dir: &str) -> (PathBuf, u16, u16) {
    let (listen_port, auth_port) = (free_port(), free_port());
    let config = render(
        "deploy/haproxy/haproxy.cfg",
        &[
            ("CONFIG_DIR", config_dir.to_owned()),
            ("LISTEN_PORT", listen_port.to_string()),
            ("AUTH_PORT", auth_port.to_string()),
            ("UPSTREAM_PORT", stack.upstream.address.port().to_string()),
            ("VERDICT_PORT", verdict_port.to_string()),
        ],
    );
    let path = stack.directory.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    (path, listen_port, auth_port)
}

/// HAProxy's environment: `caller_key` in `VERDICT_CALLER_KEY` (or none), and
/// `VERDICT_HAPROXY_UNPRIVILEGED` when the tests do not run as root, since the shipped file's `chroot`
/// and `user` need root; as root, the file runs as shipped.
fn environment(command: &mut Command, caller_key: Option<&str>) {
    use std::os::unix::fs::MetadataExt as _;
    command
        .env_remove("VERDICT_CALLER_KEY")
        .env_remove("VERDICT_HAPROXY_UNPRIVILEGED");
    if let Some(key) = caller_key {
        command.env("VERDICT_CALLER_KEY", key);
    }
    let root = std::fs::metadata("/proc/self").is_ok_and(|process| process.uid() == 0);
    if !root {
        command.env("VERDICT_HAPROXY_UNPRIVILEGED", "1");
    }
}

/// `haproxy -c` on `config`, warnings counting as errors (`-dW`), with `caller_key` in
/// `VERDICT_CALLER_KEY` (or none): whether it passed, and its report.
fn check(config: &Path, caller_key: Option<&str>) -> (bool, String) {
    let mut command = Command::new(haproxy());
    command.arg("-c").arg("-dW").arg("-f").arg(config);
    environment(&mut command, caller_key);
    let (status, stdout, stderr) = output(&mut command);
    (status.success(), format!("{stdout}{stderr}"))
}

/// HAProxy in front of `stack`, asking Verdict at `verdict_port` with `caller_key`, with the Lua
/// action from `config_dir`.
fn start_with(stack: &Stack, verdict_port: u16, config_dir: &str, caller_key: &str) -> Haproxy {
    let (config, listen_port, auth_port) = configure(stack, verdict_port, config_dir);
    let (valid, report) = check(&config, Some(caller_key));
    assert!(
        valid,
        "haproxy -c refuses the shipped configuration: {report}"
    );
    let mut command = Command::new(haproxy());
    command.arg("-db").arg("-f").arg(&config);
    environment(&mut command, Some(caller_key));
    let mut process = Process::spawn(command, &stack.directory, "haproxy");
    process.wait_port(listen_port);
    process.wait_port(auth_port);
    Haproxy {
        process,
        base: format!("http://127.0.0.1:{listen_port}"),
        auth_port,
    }
}

/// HAProxy as shipped, in front of `stack`.
fn start(stack: &Stack) -> Haproxy {
    start_with(stack, stack.verdict_port(), SHIPPED, CALLER_KEY)
}

#[tokio::test(flavor = "multi_thread")]
async fn haproxy_passes_the_contract() {
    let stack = Stack::start("").await;
    let proxy = start(&stack);
    let client = client();
    contract(&stack, &client, &proxy.base).await;
    same_decisions_as_decide(&stack, &proxy.base).await;

    // The client's own forwarding headers never reach Verdict (which refuses an address that is not
    // one), and the upstream sees the client's address as HAProxy saw it.
    let full = format!("Bearer {}", stack.token("orders:read orders:write"));
    let answer = send(
        &client,
        &proxy.base,
        "GET",
        "/orders/9",
        &[
            ("authorization", &full),
            ("x-forwarded-for", "not-an-address"),
            ("x-real-ip", "not-an-address"),
            ("x-forwarded-host", "elsewhere.example"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}: {}", proxy.process.output());
    let seen = stack.upstream.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].header("x-forwarded-for"), ["127.0.0.1"], "{seen:?}");
    // The decision's id goes on with the request, once, whatever the client sent.
    let ids = seen[0].header("x-verdict-decision-id");
    assert!(ids.len() == 1 && ids[0] != "forged", "{seen:?}");

    // Every copy of a client's identity header goes, not only the first.
    let answer = send(
        &client,
        &proxy.base,
        "GET",
        "/orders/10",
        &[
            ("authorization", &full),
            ("x-user-id", "mallory"),
            ("x-user-id", "eve"),
            ("x-verdict-decision-id", "forged"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = stack.upstream.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].header("x-user-id"), ["alice"], "{seen:?}");
    let ids = seen[0].header("x-verdict-decision-id");
    assert!(ids.len() == 1 && ids[0] != "forged", "{seen:?}");

    // Two Authorization headers reach Verdict as two, which it refuses: which one would the upstream
    // have read?
    let answer = send(
        &client,
        &proxy.base,
        "GET",
        "/orders/11",
        &[("authorization", &full), ("authorization", "Bearer other")],
    )
    .await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(answer.body["error"], "invalid_request", "{answer:?}");
    assert!(
        stack.upstream.take().is_empty(),
        "a deny reached the upstream"
    );

    // The listen section in front of Verdict passes on the forward-auth question only.
    let response = client
        .get(format!("http://127.0.0.1:{}/readyz", proxy.auth_port))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_writes_the_question_and_only_verdict_allows() {
    // The upstream stands in for Verdict: it records the question and answers 200 without a decision.
    let stack = Stack::start("").await;
    let proxy = start_with(&stack, stack.upstream.address.port(), SHIPPED, CALLER_KEY);
    let answer = send(
        &client(),
        &proxy.base,
        "PATCH",
        "/orders/5?x=1&y=%2F",
        &[
            ("authorization", "Bearer abc"),
            ("x-api-key", "key-1"),
            ("x-request-id", "request-1"),
            ("x-forwarded-method", "GET"),
            ("x-original-method", "GET"),
            ("x-forwarded-uri", "/orders"),
            ("x-original-uri", "/orders"),
            ("x-forwarded-host", "elsewhere.example"),
            ("x-forwarded-for", "192.0.2.1"),
            ("x-real-ip", "192.0.2.1"),
            ("x-verdict-key", "the-clients-guess"),
        ],
    )
    .await;
    assert_eq!(
        answer.status, 500,
        "a 200 without a decision is no allow: {answer:?}"
    );
    let seen = stack.upstream.take();
    assert!(
        seen.iter()
            .all(|seen| seen.uri == "/v1/forward-auth" || seen.uri == "/readyz"),
        "the client's request reached the upstream: {seen:?}"
    );
    let questions: Vec<_> = seen
        .iter()
        .filter(|seen| seen.uri == "/v1/forward-auth")
        .collect();
    assert_eq!(questions.len(), 1, "{seen:?}");
    let question = questions[0];
    let host = proxy.base.trim_start_matches("http://");
    for (name, expected) in [
        ("x-forwarded-method", vec!["PATCH"]),
        ("x-forwarded-uri", vec!["/orders/5?x=1&y=%2F"]),
        ("x-forwarded-host", vec![host]),
        ("x-forwarded-for", vec!["127.0.0.1"]),
        ("x-original-method", vec![]),
        ("x-original-uri", vec![]),
        ("x-real-ip", vec![]),
        ("x-verdict-key", vec![CALLER_KEY]),
        ("authorization", vec!["Bearer abc"]),
        ("x-api-key", vec!["key-1"]),
        ("x-request-id", vec!["request-1"]),
    ] {
        assert_eq!(question.header(name), expected, "{name}: {question:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_verdict_is_a_deny() {
    let mut stack = Stack::start("").await;
    let proxy = start(&stack);
    let client = client();
    let full = format!("Bearer {}", stack.token("orders:read"));
    let answer = send(
        &client,
        &proxy.base,
        "GET",
        "/orders/1",
        &[("authorization", &full)],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}: {}", proxy.process.output());
    stack.upstream.take();

    stack.verdict.child.kill().unwrap();
    stack.verdict.wait_exit();
    let answer = send(
        &client,
        &proxy.base,
        "GET",
        "/orders/1",
        &[("authorization", &full)],
    )
    .await;
    assert_eq!(answer.status, 503, "{answer:?}: {}", proxy.process.output());
    assert_eq!(answer.retry_after.as_deref(), Some("1"), "{answer:?}");
    assert_eq!(
        answer.body,
        json!({
            "error": "temporarily_unavailable",
            "error_description": "the authorization service is unavailable",
        })
    );
    assert!(
        stack.upstream.take().is_empty(),
        "the upstream was reached without Verdict"
    );
}

/// A stand-in for a Verdict that is up but never decides: a loopback listener that answers
/// `GET /readyz` and holds every other request, unanswered, until the proxy gives up on it.
fn silent_verdict() -> u16 {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut connection in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut buffer = [0; 4096];
                let Ok(read) = connection.read(&mut buffer) else {
                    return;
                };
                if buffer[..read].starts_with(b"GET /readyz ") {
                    let _ = connection.write_all(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n");
                    return;
                }
                // Until the proxy closes the connection.
                while connection.read(&mut buffer).is_ok_and(|read| read > 0) {}
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verdict_slower_than_the_timeout_is_a_deny() {
    let stack = Stack::start("").await;
    // Accepts the question and never answers it. It does answer the listen section's health check,
    // which would otherwise mark it down after a few seconds: this is the question's timeout.
    let silent_port = silent_verdict();
    let proxy = start_with(&stack, silent_port, SHIPPED, CALLER_KEY);
    let client = client();
    let full = format!("Bearer {}", stack.token("orders:read"));
    let answer = send(
        &client,
        &proxy.base,
        "GET",
        "/orders/1",
        &[("authorization", &full)],
    )
    .await;
    assert_eq!(answer.status, 503, "{answer:?}: {}", proxy.process.output());
    assert_eq!(answer.retry_after.as_deref(), Some("1"), "{answer:?}");
    // The listen section's `timeout server` ended the wait, not the Lua action's backstop.
    assert_eq!(
        answer.body,
        json!({
            "error": "temporarily_unavailable",
            "error_description": "the authorization service did not answer in time",
        })
    );
    assert!(
        stack.upstream.take().is_empty(),
        "the upstream was reached without Verdict"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_caller_key_is_a_server_error_not_the_clients() {
    let stack = Stack::start("").await;
    let proxy = start_with(&stack, stack.verdict_port(), SHIPPED, "not-the-caller-key");
    let client = client();
    let full = format!("Bearer {}", stack.token("orders:read"));
    let answer = send(
        &client,
        &proxy.base,
        "GET",
        "/orders/1",
        &[("authorization", &full)],
    )
    .await;
    assert_eq!(answer.status, 500, "{answer:?}: {}", proxy.process.output());
    assert_eq!(answer.body["error"], "server_error", "{answer:?}");
    assert!(
        stack.upstream.take().is_empty(),
        "the upstream was reached without an allow"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn haproxy_refuses_to_start_without_the_caller_key() {
    let stack = Stack::start("").await;
    let (config, _, _) = configure(&stack, stack.verdict_port(), SHIPPED);
    let (valid, report) = check(&config, None);
    assert!(
        !valid,
        "haproxy -c accepted a configuration without VERDICT_CALLER_KEY: {report}"
    );
    assert!(report.contains("VERDICT_CALLER_KEY"), "{report}");
    let (valid, report) = check(&config, Some(""));
    assert!(
        !valid,
        "haproxy -c accepted an empty VERDICT_CALLER_KEY: {report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_lua_action_is_a_deny() {
    let stack = Stack::start("").await;
    // The action haproxy.cfg names, failing as a bug in it would: HAProxy logs the error and carries
    // on with the next rule.
    let broken = stack.directory.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("verdict.lua"),
        r#"core.register_action("verdict-auth", { "http-req" }, function(txn, url, key, headers)
    error("a bug in the action")
end, 3)
"#,
    )
    .unwrap();
    let proxy = start_with(
        &stack,
        stack.verdict_port(),
        broken.to_str().unwrap(),
        CALLER_KEY,
    );
    let client = client();
    let full = format!("Bearer {}", stack.token("orders:read"));
    let answer = send(
        &client,
        &proxy.base,
        "GET",
        "/orders/1",
        &[("authorization", &full)],
    )
    .await;
    assert_eq!(answer.status, 500, "{answer:?}: {}", proxy.process.output());
    assert_eq!(answer.body["error"], "server_error", "{answer:?}");
    assert!(
        stack.upstream.take().is_empty(),
        "the upstream was reached without an allow"
    );
    assert!(
        proxy.process.output().contains("a bug in the action"),
        "{}",
        proxy.process.output()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verdicts_own_503_reaches_the_client_with_retry_after() {
    // Verdict answers 503 itself when a decision outlives `limits.request_timeout`: here, one waiting
    // on a key set that never comes, for a token whose key Verdict does not know yet.
    let stack = Stack::start("limits:\n  request_timeout: 300ms\n").await;
    let proxy = start(&stack);
    stack.issuer.answer(JwksAnswer::Hang);
    let mut claims = claims(&stack.issuer.issuer(), unix_now());
    claims["exp"] = json!(unix_now() + 600);
    claims["scope"] = json!("orders:read");
    let unknown_key = format!("Bearer {}", rsa_key("haproxy-unknown").sign(&claims));
    let answer = send(
        &client(),
        &proxy.base,
        "GET",
        "/orders/1",
        &[("authorization", &unknown_key)],
    )
    .await;
    assert_eq!(answer.status, 503, "{answer:?}: {}", proxy.process.output());
    assert_eq!(answer.retry_after.as_deref(), Some("1"), "{answer:?}");
    assert_eq!(
        answer.body,
        json!({
            "error": "temporarily_unavailable",
            "error_description": "the decision took too long",
        }),
        "Verdict's own answer, not the proxy's"
    );
    assert!(
        stack.upstream.take().is_empty(),
        "a deny reached the upstream"
    );
}
