//! nginx (`auth_request`) in front of the upstream, asking Verdict's forward-auth front, with the
//! configuration shipped in `deploy/nginx/nginx.conf`: the contract every proxy passes, and nginx's own
//! limits worked around (the status, challenge and `Retry-After` of a deny restored).

use std::process::Command;

use crate::helpers::CALLER_KEY;
use crate::helpers::proxy::{
    Process, Stack, contract, free_port, render, require, same_decisions_as_decide, send, send_raw,
};

/// nginx on the shipped configuration, in front of `stack`'s upstream, asking Verdict at
/// `verdict_port` with `caller_key`.
fn start_nginx(stack: &Stack, verdict_port: u16, caller_key: &str) -> (Process, String) {
    let nginx = require("nginx");
    let run = stack.directory.join(format!("nginx-{verdict_port}"));
    std::fs::create_dir_all(&run).unwrap();
    let key_file = run.join("verdict-caller-key.conf");
    std::fs::write(
        &key_file,
        format!("proxy_set_header X-Verdict-Key \"{caller_key}\";\n"),
    )
    .unwrap();
    let port = free_port();
    let config = render(
        "deploy/nginx/nginx.conf",
        &[
            ("RUN_DIR", run.display().to_string()),
            ("VERDICT_PORT", verdict_port.to_string()),
            ("UPSTREAM_PORT", stack.upstream.address.port().to_string()),
            ("PORT", port.to_string()),
            ("CALLER_KEY_FILE", key_file.display().to_string()),
        ],
    );
    let path = run.join("nginx.conf");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(nginx);
    command
        .arg("-e")
        .arg(run.join("error.log"))
        .arg("-c")
        .arg(&path);
    let mut process = Process::spawn(command, &run, "nginx");
    process.wait_port(port);
    (process, format!("http://127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_passes_the_forward_auth_contract() {
    let stack = Stack::start("").await;
    let (_nginx, base) = start_nginx(&stack, stack.verdict_port(), CALLER_KEY);
    contract(&stack, &reqwest::Client::new(), &base).await;
    same_decisions_as_decide(&stack, &base).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_restores_what_it_would_turn_into_500() {
    let stack = Stack::start("").await;
    let (_nginx, base) = start_nginx(&stack, stack.verdict_port(), CALLER_KEY);
    let client = reqwest::Client::new();
    let bearer = format!("Bearer {}", stack.token("orders:read"));
    // A 400 decision (a path in no normal form) stays a 400.
    let answer = send_raw(
        &base,
        "GET",
        "/orders/%2e%2e/admin",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(answer.status, 400, "{answer:?}");
    // A client sending two `Authorization` headers: Verdict refuses to guess which one counts.
    let answer = send(
        &client,
        &base,
        "GET",
        "/orders/1",
        &[
            ("authorization", &bearer),
            ("authorization", "Bearer other"),
        ],
    )
    .await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(stack.upstream.take().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_caller_key_is_a_server_error_not_the_clients_401() {
    let stack = Stack::start("").await;
    let (_nginx, base) = start_nginx(
        &stack,
        stack.verdict_port(),
        "not-the-caller-key-0123456789",
    );
    let bearer = format!("Bearer {}", stack.token("orders:read"));
    let answer = send(
        &reqwest::Client::new(),
        &base,
        "GET",
        "/orders/1",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(answer.status, 500, "{answer:?}");
    assert!(stack.upstream.take().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_denies_when_verdict_is_down_or_too_slow() {
    let mut stack = Stack::start("").await;
    let client = reqwest::Client::new();
    let bearer = format!("Bearer {}", stack.token("orders:read"));

    // Slow: a listener that accepts and never answers, past `proxy_read_timeout`.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let (_slow_nginx, slow) = start_nginx(&stack, silent_port, CALLER_KEY);
    let answer = send(
        &client,
        &slow,
        "GET",
        "/orders/1",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.retry_after.as_deref(), Some("1"));

    // Down: Verdict stopped.
    let (_nginx, base) = start_nginx(&stack, stack.verdict_port(), CALLER_KEY);
    let answer = send(
        &client,
        &base,
        "GET",
        "/orders/1",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    stack.upstream.take();
    stack.verdict.child.kill().unwrap();
    stack.verdict.child.wait().unwrap();
    let answer = send(
        &client,
        &base,
        "GET",
        "/orders/1",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(
        stack.upstream.take().is_empty(),
        "a request reached the upstream without Verdict"
    );
    drop(silent);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_503_decision_reaches_the_client_with_its_retry_after() {
    // Verdict runs but its issuer's keys never load: every token is a 503 decision.
    let stack = Stack::start_without_keys("").await;
    let (_nginx, base) = start_nginx(&stack, stack.verdict_port(), CALLER_KEY);
    let bearer = format!("Bearer {}", stack.token("orders:read"));
    let answer = send(
        &reqwest::Client::new(),
        &base,
        "GET",
        "/orders/1",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.retry_after.as_deref(), Some("1"), "{answer:?}");
    assert_eq!(answer.body["error"], "temporarily_unavailable");
    assert_eq!(
        answer.body["error_description"], "the decision cannot be made now",
        "Verdict's 503 is told apart from no answer at all"
    );
    assert!(stack.upstream.take().is_empty());
}
