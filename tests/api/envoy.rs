//! Envoy 1.40 with its ext_authz filter in front of a real Verdict, from the shipped configurations
//! (rendered only for ports): `deploy/envoy/envoy-http.yaml` (HTTP mode, the forward-auth front) and
//! `deploy/envoy/envoy-grpc.yaml` (gRPC mode, the ext_authz `Check` front). Both pass the proxy contract
//! and the cases below them, `http::<case>` and `grpc::<case>`: a Verdict that is down, slow or called
//! with a wrong key, and the path and header handling the configurations add. Where the modes differ,
//! each has its own test: what a 503 decision becomes, and the authorization request Envoy builds.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse, OkHttpResponse};
use envoy_types::pb::google::rpc;
use serde_json::{Value, json};

use crate::helpers::proxy::{
    Process, Stack, Upstream, contract, free_port, render, require, same_decisions_as_decide, send,
    send_raw,
};
use crate::helpers::{CALLER_KEY, claims, rsa_key, unix_now};

/// How Envoy asks Verdict: which shipped configuration it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `http_service`, to `/v1/forward-auth`.
    Http,
    /// `grpc_service`, `envoy.service.auth.v3.Authorization/Check` over h2c.
    Grpc,
}

impl Mode {
    fn configuration(self) -> &'static str {
        match self {
            Self::Http => "deploy/envoy/envoy-http.yaml",
            Self::Grpc => "deploy/envoy/envoy-grpc.yaml",
        }
    }
}

/// A running Envoy from a shipped configuration.
struct Envoy {
    process: Process,
    /// `http://127.0.0.1:<port>` of the public listener.
    base: String,
}

impl Envoy {
    /// Envoy in `mode` asking the Verdict on `verdict_port` about requests for `upstream`, with
    /// `caller_key` in `VERDICT_CALLER_KEY` (or that variable unset).
    async fn start(
        mode: Mode,
        directory: &Path,
        verdict_port: u16,
        upstream: SocketAddr,
        caller_key: Option<&str>,
    ) -> Self {
        let program = require("envoy");
        let (listen, admin) = (free_port(), free_port());
        let config = render(
            mode.configuration(),
            &[
                ("LISTEN_PORT", listen.to_string()),
                ("ADMIN_PORT", admin.to_string()),
                ("VERDICT_PORT", verdict_port.to_string()),
                ("UPSTREAM_PORT", upstream.port().to_string()),
            ],
        );
        let path = directory.join("envoy.yaml");
        std::fs::write(&path, config).unwrap();
        let mut command = Command::new(program);
        command
            .arg("--config-path")
            .arg(&path)
            // Several tests run an Envoy at once: no shared memory for hot restarts, one worker each.
            .args(["--disable-hot-restart", "--concurrency", "1"])
            .env_remove("VERDICT_CALLER_KEY");
        if let Some(key) = caller_key {
            command.env("VERDICT_CALLER_KEY", key);
        }
        let mut process = Process::spawn(command, directory, "envoy");
        tokio::task::block_in_place(|| process.wait_port(listen));
        // The admin's `/ready` answers 200 once the listeners and clusters are initialized.
        let ready = format!("http://127.0.0.1:{admin}/ready");
        for _ in 0..400 {
            if reqwest::get(&ready)
                .await
                .is_ok_and(|response| response.status() == 200)
            {
                return Self {
                    process,
                    base: format!("http://127.0.0.1:{listen}"),
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("envoy never became ready: {}", process.output());
    }

    /// Envoy in `mode` in front of the stack's Verdict and upstream, with the right caller key.
    async fn before(mode: Mode, stack: &Stack) -> Self {
        Self::start(
            mode,
            &stack.directory,
            stack.verdict_port(),
            stack.upstream.address,
            Some(CALLER_KEY),
        )
        .await
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A request through the proxy, and the whole response: status, headers and body.
async fn exchange(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = client().request(method.parse().unwrap(), format!("{base}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// Every value of `name` in `headers`.
fn values<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .map(|value| value.to_str().unwrap())
        .collect()
}

/// What Envoy answers when it has no decision: 503 with `Retry-After: 1` and a JSON error in Verdict's
/// shape, from the configuration's local reply mapper; no decision id, since Verdict decided nothing.
fn assert_unavailable(
    envoy: &Envoy,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &str,
) {
    assert_eq!(
        status,
        503,
        "{headers:?} {body}\n{}",
        envoy.process.output()
    );
    assert_eq!(values(headers, "retry-after"), ["1"], "{headers:?}");
    assert_eq!(
        values(headers, "content-type"),
        ["application/json"],
        "{headers:?}"
    );
    assert!(
        values(headers, "x-verdict-decision-id").is_empty(),
        "{headers:?}"
    );
    let body: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert_eq!(
        body["error_description"], "the authorization service is unavailable",
        "{body}"
    );
}

/// For each case both modes pass, a test per mode: `http::<case>` and `grpc::<case>`.
macro_rules! in_both_modes {
    ($($case:ident),+ $(,)?) => {
        mod http {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $case() {
                    super::$case(super::Mode::Http).await;
                }
            )+
        }
        mod grpc {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $case() {
                    super::$case(super::Mode::Grpc).await;
                }
            )+
        }
    };
}

in_both_modes!(
    the_shipped_configuration_passes_the_proxy_contract,
    a_deny_reaches_the_client_with_verdicts_status_challenge_body_and_decision_id,
    a_stopped_verdict_is_a_503_and_never_reaches_the_upstream,
    a_verdict_slower_than_the_timeout_is_a_503_after_three_seconds,
    a_wrong_or_missing_caller_key_is_a_503_never_an_allow,
    the_upstream_gets_verdicts_decision_id_and_no_underscore_spelling_of_an_identity_header,
    envoy_normalizes_paths_before_verdict_judges_them_and_refuses_escaped_slashes,
    a_repeated_api_key_is_refused_by_verdict_not_joined_by_envoy,
    the_clients_identity_headers_never_reach_the_upstream_in_any_case,
);

async fn the_shipped_configuration_passes_the_proxy_contract(mode: Mode) {
    let stack = Stack::start("").await;
    let envoy = Envoy::before(mode, &stack).await;
    contract(&stack, &client(), &envoy.base).await;
    same_decisions_as_decide(&stack, &envoy.base).await;
}

async fn a_deny_reaches_the_client_with_verdicts_status_challenge_body_and_decision_id(mode: Mode) {
    let stack = Stack::start("").await;
    let envoy = Envoy::before(mode, &stack).await;
    let read_only = format!("Bearer {}", stack.token("orders:read"));

    let cases = [
        (
            "POST",
            "/orders",
            Some(read_only.as_str()),
            403,
            "insufficient_scope",
            concat!(
                r#"Bearer realm="api", error="insufficient_scope", "#,
                r#"error_description="the token lacks a scope this route requires", scope="orders:write""#
            ),
        ),
        (
            "GET",
            "/orders/1",
            None,
            401,
            // No credential, no error code (RFC 6750 §3.1): the challenge names only the realm.
            "",
            r#"Bearer realm="api""#,
        ),
    ];
    for (method, path, authorization, expected, error, challenge) in cases {
        let headers: Vec<(&str, &str)> = authorization
            .map(|value| ("authorization", value))
            .into_iter()
            .collect();
        let (status, headers, body) = exchange(&envoy.base, method, path, &headers).await;
        assert_eq!(status, expected, "{method} {path}: {body}");
        assert_eq!(
            values(&headers, "www-authenticate"),
            [challenge],
            "{headers:?}"
        );
        assert_eq!(
            values(&headers, "content-type"),
            ["application/json"],
            "{headers:?}"
        );
        assert_eq!(
            values(&headers, "x-verdict-decision-id").len(),
            1,
            "{headers:?}"
        );
        assert!(values(&headers, "retry-after").is_empty(), "{headers:?}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], error, "{body}");
    }
    assert!(
        stack.upstream.take().is_empty(),
        "a deny reached the upstream"
    );
}

async fn a_stopped_verdict_is_a_503_and_never_reaches_the_upstream(mode: Mode) {
    let mut stack = Stack::start("").await;
    let envoy = Envoy::before(mode, &stack).await;
    let bearer = format!("Bearer {}", stack.token("orders:read"));
    let (status, _, body) = exchange(
        &envoy.base,
        "GET",
        "/orders/1",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, 200, "allowed while Verdict runs: {body}");
    stack.upstream.take();

    stack.verdict.child.kill().unwrap();
    stack.verdict.child.wait().unwrap();
    let (status, headers, body) = exchange(
        &envoy.base,
        "GET",
        "/orders/1",
        &[("authorization", &bearer)],
    )
    .await;
    assert_unavailable(&envoy, status, &headers, &body);
    assert!(
        stack.upstream.take().is_empty(),
        "reached the upstream without a decision"
    );
}

async fn a_verdict_slower_than_the_timeout_is_a_503_after_three_seconds(mode: Mode) {
    let stack = Stack::start("").await;
    // Accepts connections and never answers on them.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let holder = Arc::clone(&held);
    tokio::spawn(async move {
        while let Ok((connection, _)) = silent.accept().await {
            holder.lock().unwrap().push(connection);
        }
    });
    let envoy = Envoy::start(
        mode,
        &stack.directory,
        silent_port,
        stack.upstream.address,
        Some(CALLER_KEY),
    )
    .await;
    let bearer = format!("Bearer {}", stack.token("orders:read"));

    let started = Instant::now();
    let (status, headers, body) = exchange(
        &envoy.base,
        "GET",
        "/orders/1",
        &[("authorization", &bearer)],
    )
    .await;
    let waited = started.elapsed();
    assert_unavailable(&envoy, status, &headers, &body);
    assert!(!held.lock().unwrap().is_empty(), "Envoy never asked");
    // Not Envoy's default of 200 ms: the configured timeout, above Verdict's own key fetch timeout.
    assert!(
        waited >= Duration::from_millis(2900),
        "answered after {waited:?}"
    );
    assert!(
        stack.upstream.take().is_empty(),
        "reached the upstream without a decision"
    );
}

/// Verdict refuses the caller: over HTTP with 500 `unauthenticated_caller`, over gRPC with
/// `UNAUTHENTICATED`. Envoy takes either for a failed authorizer, never for an allow.
async fn a_wrong_or_missing_caller_key_is_a_503_never_an_allow(mode: Mode) {
    let stack = Stack::start("").await;
    let bearer = format!("Bearer {}", stack.token("orders:read"));
    for key in [Some("not-the-caller-key-0000"), None] {
        let envoy = Envoy::start(
            mode,
            &stack.directory,
            stack.verdict_port(),
            stack.upstream.address,
            key,
        )
        .await;
        let (status, headers, body) = exchange(
            &envoy.base,
            "GET",
            "/orders/1",
            &[("authorization", &bearer)],
        )
        .await;
        assert_unavailable(&envoy, status, &headers, &body);
        drop(envoy);
    }
    assert!(stack.upstream.take().is_empty(), "reached the upstream");
}

async fn the_upstream_gets_verdicts_decision_id_and_no_underscore_spelling_of_an_identity_header(
    mode: Mode,
) {
    let stack = Stack::start("").await;
    let envoy = Envoy::before(mode, &stack).await;
    let bearer = format!("Bearer {}", stack.token("orders:read"));

    let (status, _, body) = exchange(
        &envoy.base,
        "GET",
        "/orders/1",
        &[
            ("authorization", &bearer),
            ("x-verdict-decision-id", "forged"),
            // Read as `x-user-id` by upstreams that map `-` and `_` alike (CGI, WSGI, Rack).
            ("x_user_id", "mallory"),
            ("x_tenant", "evil"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen = stack.upstream.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let id = seen[0].header("x-verdict-decision-id");
    assert_eq!(id.len(), 1, "{seen:?}");
    assert_ne!(id, ["forged"], "{seen:?}");
    assert!(seen[0].header("x_user_id").is_empty(), "{seen:?}");
    assert!(seen[0].header("x_tenant").is_empty(), "{seen:?}");
    assert_eq!(seen[0].header("x-user-id"), ["alice"], "{seen:?}");
}

async fn envoy_normalizes_paths_before_verdict_judges_them_and_refuses_escaped_slashes(mode: Mode) {
    let stack = Stack::start("").await;
    let envoy = Envoy::before(mode, &stack).await;
    let bearer = format!("Bearer {}", stack.token("orders:read"));
    let authorization = [("authorization", bearer.as_str())];

    // Dot segments, repeated slashes and encoded unreserved characters are resolved first: Verdict
    // judges, and the upstream gets, the one path they name.
    for (sent, judged) in [
        ("/admin/../orders/1", "/orders/1"),
        ("/orders/%2e%2e/orders/2", "/orders/2"),
        ("//orders///3", "/orders/3"),
        ("/%6Frders/4", "/orders/4"),
    ] {
        let answer = send_raw(&envoy.base, "GET", sent, &authorization).await;
        assert_eq!(answer.status, 200, "{sent}: {answer:?}");
        let seen = stack.upstream.take();
        assert_eq!(seen.len(), 1, "{sent}: {seen:?}");
        assert_eq!(seen[0].uri, judged, "{sent}");
    }
    let answer = send_raw(&envoy.base, "GET", "/orders/%2e%2e/admin", &authorization).await;
    assert_eq!(answer.status, 403, "judged as /admin: {answer:?}");

    // An escaped slash is refused by Envoy itself, with its own empty 400: Verdict is never asked.
    for sent in ["/orders/%2F1", "/orders/..%2fadmin", "/orders/%5c1"] {
        let answer = send_raw(&envoy.base, "GET", sent, &authorization).await;
        assert_eq!(answer.status, 400, "{sent}: {answer:?}");
        assert_eq!(answer.body, "", "{sent}: Verdict answered: {answer:?}");
        assert!(
            !answer.head.contains("x-verdict-decision-id"),
            "{sent}: Verdict answered: {answer:?}"
        );
    }
    assert!(
        stack.upstream.take().is_empty(),
        "a refused path reached the upstream"
    );
}

async fn a_repeated_api_key_is_refused_by_verdict_not_joined_by_envoy(mode: Mode) {
    let stack = Stack::start("").await;
    let envoy = Envoy::before(mode, &stack).await;
    let (status, _, body) = exchange(
        &envoy.base,
        "GET",
        "/orders/1",
        &[("x-api-key", "first"), ("x-api-key", "second")],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("must be sent once"), "{body}");
    assert!(stack.upstream.take().is_empty(), "reached the upstream");
}

/// A client's copies of the identity headers, however spelled and however many, are replaced by the
/// decision's, or removed when the decision sets none (a token without the `tenant` claim).
async fn the_clients_identity_headers_never_reach_the_upstream_in_any_case(mode: Mode) {
    let stack = Stack::start("").await;
    let envoy = Envoy::before(mode, &stack).await;
    let mut claims = claims(&stack.issuer.issuer(), unix_now());
    claims["exp"] = json!(unix_now() + 600);
    claims.as_object_mut().unwrap().remove("tenant");
    let bearer = format!("Bearer {}", rsa_key("proxy-rsa").sign(&claims));

    // As the client wrote them: the header names reach Envoy in these cases.
    let answer = send_raw(
        &envoy.base,
        "GET",
        "/orders/8",
        &[
            ("authorization", &bearer),
            ("X-User-Id", "mallory"),
            ("x-USER-id", "eve"),
            ("X-TENANT", "evil"),
            ("x-Tenant", "worse"),
            ("x-tenant", "worst"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = stack.upstream.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].header("x-tenant").is_empty(), "{seen:?}");
    assert_eq!(seen[0].header("x-user-id"), ["alice"], "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn in_http_mode_a_503_decision_becomes_envoys_own_503_with_retry_after() {
    let stack = Stack::start_without_keys("").await;
    let envoy = Envoy::before(Mode::Http, &stack).await;
    let bearer = format!("Bearer {}", stack.token("orders:read"));

    // Verdict itself, asked the same question, answers 503 `temporarily_unavailable`...
    let direct = send(
        &client(),
        &format!("http://{}", stack.verdict_address),
        "GET",
        "/v1/forward-auth/orders/1",
        &[("authorization", &bearer), ("x-verdict-key", CALLER_KEY)],
    )
    .await;
    assert_eq!(direct.status, 503, "{direct:?}");
    assert_eq!(
        direct.body["error"], "temporarily_unavailable",
        "{direct:?}"
    );
    assert_eq!(direct.retry_after.as_deref(), Some("1"), "{direct:?}");

    // ...which Envoy treats as an authorization error: `status_on_error`, with the local reply's
    // `Retry-After` and body in place of Verdict's.
    let (status, headers, body) = exchange(
        &envoy.base,
        "GET",
        "/orders/1",
        &[("authorization", &bearer)],
    )
    .await;
    assert_unavailable(&envoy, status, &headers, &body);
    assert!(
        stack.upstream.take().is_empty(),
        "a 503 reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn in_grpc_mode_a_503_decision_reaches_the_client_as_verdict_wrote_it() {
    let stack = Stack::start_without_keys("").await;
    let envoy = Envoy::before(Mode::Grpc, &stack).await;
    let bearer = format!("Bearer {}", stack.token("orders:read"));

    // Verdict itself, asked the same question over HTTP, answers 503 `temporarily_unavailable`.
    let direct = send(
        &client(),
        &format!("http://{}", stack.verdict_address),
        "GET",
        "/v1/forward-auth/orders/1",
        &[("authorization", &bearer), ("x-verdict-key", CALLER_KEY)],
    )
    .await;
    assert_eq!(direct.status, 503, "{direct:?}");

    // Over gRPC that decision is a `DeniedHttpResponse`, which Envoy passes on as it is: Verdict's
    // status, `Retry-After`, body and decision id, not the local reply of a failed authorizer.
    let (status, headers, body) = exchange(
        &envoy.base,
        "GET",
        "/orders/1",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, 503, "{headers:?} {body}");
    assert_eq!(values(&headers, "retry-after"), ["1"], "{headers:?}");
    assert_eq!(
        values(&headers, "content-type"),
        ["application/json"],
        "{headers:?}"
    );
    assert_eq!(
        values(&headers, "x-verdict-decision-id").len(),
        1,
        "{headers:?}"
    );
    assert_eq!(
        values(&headers, "www-authenticate"),
        direct.www_authenticate.as_slice(),
        "{headers:?}"
    );
    let body: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    assert_eq!(body, direct.body, "Verdict's own error and description");
    assert!(
        stack.upstream.take().is_empty(),
        "a 503 reached the upstream"
    );
}

/// A client request's headers: its credentials, which the authorizer must get as they are; its own
/// caller key, request id, forwarding and identity headers, which it must not; and a header Verdict
/// does not read.
const CLIENT_HEADERS: [(&str, &str); 13] = [
    ("authorization", "Bearer client-token"),
    ("x-api-key", "client-api-key"),
    ("x-verdict-key", "forged-caller-key"),
    ("x-forwarded-method", "GET"),
    ("x-original-method", "GET"),
    ("x-forwarded-uri", "/public"),
    ("x-original-uri", "/public"),
    ("x-forwarded-host", "evil.example"),
    ("x-forwarded-for", "203.0.113.9"),
    ("x-real-ip", "203.0.113.9"),
    ("x-request-id", "forged-request-id"),
    ("x-user-id", "mallory"),
    ("content-type", "application/json"),
];

#[tokio::test(flavor = "multi_thread")]
async fn in_http_mode_the_authorization_request_carries_what_verdict_reads_set_by_envoy() {
    let stack = Stack::start("").await;
    // A recording server in Verdict's place: it answers 200, an allow without identity headers.
    let authorizer = Upstream::start().await;
    let envoy = Envoy::start(
        Mode::Http,
        &stack.directory,
        authorizer.address.port(),
        stack.upstream.address,
        Some(CALLER_KEY),
    )
    .await;

    let (status, _, body) = exchange(
        &envoy.base,
        "DELETE",
        "/orders/42?expand=items",
        &CLIENT_HEADERS,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let asked = authorizer.take();
    assert_eq!(asked.len(), 1, "{asked:?}");
    let asked = &asked[0];
    // The client's method, and its path with the query after the prefix.
    assert_eq!(asked.method, "DELETE");
    assert_eq!(asked.uri, "/v1/forward-auth/orders/42?expand=items");
    // The caller key and the client's address are Envoy's own, whatever the client sent.
    assert_eq!(asked.header("x-verdict-key"), [CALLER_KEY], "{asked:?}");
    assert_eq!(asked.header("x-real-ip"), ["127.0.0.1"], "{asked:?}");
    // The client's credentials as they are.
    assert_eq!(asked.header("authorization"), ["Bearer client-token"]);
    assert_eq!(asked.header("x-api-key"), ["client-api-key"]);
    // None of the client's forwarding or identity headers.
    for name in [
        "x-forwarded-method",
        "x-original-method",
        "x-forwarded-uri",
        "x-original-uri",
        "x-forwarded-host",
        "x-forwarded-for",
        "x-user-id",
    ] {
        assert!(
            asked.header(name).is_empty(),
            "{name} was forwarded: {asked:?}"
        );
    }
    // The request id is Envoy's, the same the upstream sees, for the decision log.
    let seen = stack.upstream.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let request_id = asked.header("x-request-id");
    assert_eq!(request_id.len(), 1, "{asked:?}");
    assert_ne!(request_id, ["forged-request-id"]);
    assert_eq!(seen[0].header("x-request-id"), request_id, "{seen:?}");
}

/// A gRPC authorizer in Verdict's place: it records each `Check` call, its metadata and message, and
/// allows it without identity headers.
#[derive(Clone, Default)]
struct RecordingAuthorizer {
    calls: Arc<Mutex<Vec<Call>>>,
}

/// One `Check` call: its metadata and its message. (`::http`, since `mod http` of the tests above
/// shadows the crate's name in this module.)
type Call = (::http::HeaderMap, CheckRequest);

impl RecordingAuthorizer {
    /// Serves h2c (prior knowledge, as Envoy's cluster speaks it) on a port of its own.
    async fn start() -> (Self, u16) {
        let recorder = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let router =
            axum::Router::new().fallback_service(AuthorizationServer::new(recorder.clone()));
        tokio::spawn(async move { axum::serve(listener, router).await });
        (recorder, port)
    }

    /// The calls so far, and forgets them.
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

#[tonic::async_trait]
impl Authorization for RecordingAuthorizer {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let (metadata, _, message) = request.into_parts();
        self.calls
            .lock()
            .unwrap()
            .push((metadata.into_headers(), message));
        Ok(tonic::Response::new(CheckResponse {
            status: Some(rpc::Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            ..Default::default()
        }))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn in_grpc_mode_the_check_request_carries_what_verdict_reads_set_by_envoy() {
    let stack = Stack::start("").await;
    let (authorizer, port) = RecordingAuthorizer::start().await;
    let envoy = Envoy::start(
        Mode::Grpc,
        &stack.directory,
        port,
        stack.upstream.address,
        Some(CALLER_KEY),
    )
    .await;

    let (status, _, body) = exchange(
        &envoy.base,
        "DELETE",
        "/orders/42?expand=items",
        &CLIENT_HEADERS,
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", envoy.process.output());
    let calls = authorizer.take();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (metadata, check) = &calls[0];

    // The caller key is Envoy's own, in the call's metadata; the client's is nowhere.
    let keys: Vec<_> = metadata.get_all("x-verdict-key").iter().collect();
    assert_eq!(keys, [CALLER_KEY], "{metadata:?}");
    // The configured timeout goes along as the call's deadline, which Verdict keeps to.
    assert_eq!(metadata["grpc-timeout"], "3000m", "{metadata:?}");
    let attributes = check.attributes.as_ref().unwrap();
    // The client's address, from the connection.
    let Some(Address::SocketAddress(source)) = attributes
        .source
        .as_ref()
        .and_then(|source| source.address.as_ref())
        .and_then(|address| address.address.as_ref())
    else {
        panic!("no source address: {check:?}");
    };
    assert_eq!(source.address, "127.0.0.1", "{check:?}");
    // The client's method, path with its query, and host, in their own fields.
    let http = attributes.request.as_ref().unwrap().http.as_ref().unwrap();
    assert_eq!(http.method, "DELETE", "{http:?}");
    assert_eq!(http.path, "/orders/42?expand=items", "{http:?}");
    assert_eq!(
        http.host,
        envoy.base.trim_start_matches("http://"),
        "{http:?}"
    );
    // No body: Verdict reads none.
    assert!(http.body.is_empty() && http.raw_body.is_empty(), "{http:?}");
    // Of the client's headers only those Verdict reads, each copy its own entry (`header_map`, from
    // `encode_raw_headers`).
    assert!(http.headers.is_empty(), "{http:?}");
    let mut sent: Vec<(&str, &[u8])> = http
        .header_map
        .iter()
        .flat_map(|map| &map.headers)
        .map(|header| (header.key.as_str(), header.raw_value.as_slice()))
        .collect();
    sent.sort_unstable();
    let request_id = sent
        .iter()
        .find(|(name, _)| *name == "x-request-id")
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
        .unwrap_or_else(|| panic!("no x-request-id: {sent:?}"));
    assert_eq!(
        sent,
        [
            ("authorization", b"Bearer client-token".as_slice()),
            ("x-api-key", b"client-api-key".as_slice()),
            ("x-request-id", request_id.as_bytes()),
        ],
        "{http:?}"
    );
    // The request id is Envoy's, the same the upstream sees.
    assert_ne!(request_id, "forged-request-id");
    let seen = stack.upstream.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].header("x-request-id"), [request_id.as_str()]);
}
