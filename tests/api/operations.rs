//! Running it in production (DESIGN §7): the decision log, Prometheus metrics, JSON logs and OTLP
//! traces, graceful shutdown, and the request limits, on a real `verdict serve` or an in-process
//! server.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use envoy_types::pb::envoy::service::auth::v3::CheckResponse;

use crate::helpers::grpc::{self, Reply};
use crate::helpers::tempdir;
use crate::helpers::{Server, new_api_key, verdict, wait_ready};
use verdict::demo::signing::SigningKey;

use crate::helpers::{AUDIENCE, CALLER_KEY, KeyServer, TestApp, claims, rsa_key, unix_now};

/// The trace and parent span of the `traceparent` the tests send.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
}

/// An introspection endpoint that answers every token as active for alice after `delay`, counting the
/// requests it has begun.
#[derive(Clone)]
struct SlowIntrospection {
    base: String,
    begun: Arc<AtomicUsize>,
}

impl SlowIntrospection {
    async fn start(delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let begun = Arc::new(AtomicUsize::new(0));
        let answer = json!({ "active": true, "sub": "alice", "scope": "orders:read",
                             "aud": AUDIENCE, "iss": base, "exp": unix_now() + 600 });
        let router = Router::new()
            .route(
                "/introspect",
                post(move |State(begun): State<Arc<AtomicUsize>>| async move {
                    begun.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    axum::Json(answer)
                }),
            )
            .with_state(Arc::clone(&begun));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { base, begun }
    }

    /// The issuer section trusting this endpoint for opaque tokens.
    fn issuer_yaml(&self) -> String {
        format!(
            "  - name: slow\n    issuer: \"{base}\"\n    audiences: [\"{AUDIENCE}\"]\n    discovery: false\n    introspection: {{ url: \"{base}/introspect\", client_id: verdict, client_secret: introspection-secret, timeout: 60s }}\n",
            base = self.base
        )
    }

    /// Waits (bounded) until `count` introspections have begun.
    async fn wait_begun(&self, count: usize) {
        for _ in 0..600 {
            if self.begun.load(Ordering::SeqCst) >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{count} introspections never began");
    }
}

/// A configuration trusting `jwks` (as issuer `t`) and `introspection` (as `slow`), with the example
/// policies, the caller key, and `extra` at the top level. Written into a directory of its own.
fn write_config(
    jwks: &KeyServer,
    introspection: Option<&SlowIntrospection>,
    extra: &str,
) -> PathBuf {
    let path = tempdir().join("verdict.yaml");
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
    let yaml = format!(
        "listen: 127.0.0.1:0\ncallers: {{ api_keys: {{ keys: [\"{CALLER_KEY}\"] }} }}\nissuers:\n  - {{ name: t, issuer: \"{}\", audiences: [\"{AUDIENCE}\"], jwks_uri: \"{}\" }}\n{}policies: {{ path: \"{}\" }}\n{extra}",
        jwks.issuer(),
        jwks.jwks_uri(),
        introspection
            .map(SlowIntrospection::issuer_yaml)
            .unwrap_or_default(),
        policies.display()
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

fn serve(config: &Path) -> Server {
    Server::spawn({
        let mut command = verdict();
        command.args(["serve", "--config"]).arg(config);
        command
    })
}

/// `verdict serve` on `config`, ready, and its address.
async fn serve_ready(config: &Path) -> (Server, String) {
    let server = serve(config);
    let address = server.address();
    wait_ready(&address).await;
    (server, address)
}

fn decide_body(token: &str) -> Value {
    json!({ "authorization": format!("Bearer {token}"), "method": "GET", "path": "/orders/1",
            "message_id": "rrt-1" })
}

async fn send_decide(
    address: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Result<reqwest::Response> {
    let mut request = reqwest::Client::new()
        .post(format!("http://{address}/v1/decide"))
        .header("x-verdict-key", CALLER_KEY)
        .header("content-type", "application/json")
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await
}

/// Posts a callout that `key`'s token allows, with the test `traceparent`.
async fn decide_traced(address: &str, key: &SigningKey, jwks: &KeyServer) {
    let token = key.sign(&claims(&jwks.issuer(), unix_now()));
    let response = send_decide(
        address,
        &decide_body(&token),
        &[("traceparent", &traceparent())],
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
}

async fn json_of(response: reqwest::Response) -> Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_decision_log_has_a_line_per_decision_with_its_context_and_never_the_token() {
    let key = rsa_key("k1");
    let jwks = KeyServer::start(&[key]).await;
    let config = write_config(&jwks, None, "decision_log: decisions.log\n");
    let (mut server, address) = serve_ready(&config).await;
    let good = key.sign(&claims(&jwks.issuer(), unix_now()));
    let expired = key.sign(&claims(&jwks.issuer(), unix_now() - 3600));
    let parent = traceparent();
    let mut answers = Vec::new();
    for token in [&good, &expired, &good] {
        let response = send_decide(&address, &decide_body(token), &[("traceparent", &parent)])
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        answers.push(json_of(response).await);
    }
    let metrics = reqwest::get(format!("http://{address}/metrics"))
        .await
        .unwrap();
    assert_eq!(
        metrics.status(),
        200,
        "without admin_listen, /metrics is on listen"
    );
    assert!(server.terminate().success());

    let (log, records) = decision_records(&config, &[&good, &expired]);
    assert_eq!(records.len(), 3, "{log}");
    let (allowed, denied, again) = (&records[0], &records[1], &records[2]);
    for (record, answer) in records.iter().zip(&answers) {
        assert_eq!(record["decision_id"], answer["decision_id"]);
        assert_eq!(record["allow"], answer["allow"]);
        assert_eq!(record["status"], answer["status"]);
        assert_eq!(record["error"], answer["error"]);
        assert_eq!(record["message_id"], "rrt-1");
        assert_eq!(record["caller"], "api_key#1");
        assert_eq!(record["front"], "service_callout");
        assert_eq!(record["method"], "GET");
        assert_eq!(record["path"], "/orders/1");
        assert_eq!(record["trace_id"], TRACE_ID);
        assert!(record["verify_us"].is_u64() && record["policy_us"].is_u64());
        assert!(record["time"].as_str().unwrap().ends_with('Z'));
        let hash = record["token_hash"].as_str().unwrap();
        assert!(hash.len() == 12 && hash.bytes().all(|byte| byte.is_ascii_hexdigit()));
    }
    assert_eq!(allowed["allow"], true);
    assert_eq!(allowed["issuer_name"], "t");
    assert_eq!(allowed["issuer"], jwks.issuer());
    assert_eq!(allowed["subject"], "alice");
    assert_eq!(allowed["kid"], "k1");
    assert_eq!(allowed["token_cache_hit"], false);
    assert!(!allowed["policies"].as_array().unwrap().is_empty());
    assert_eq!(denied["allow"], false);
    assert_eq!(denied["status"], 401);
    assert_eq!(denied["error"], "invalid_token");
    assert_ne!(denied["token_hash"], allowed["token_hash"]);
    assert_eq!(again["token_cache_hit"], true);
    assert_eq!(again["token_hash"], allowed["token_hash"]);
}

/// The decision log `decisions.log` beside `config`, and its records, checked to hold none of `tokens`.
fn decision_records(config: &Path, tokens: &[&String]) -> (String, Vec<Value>) {
    let log = std::fs::read_to_string(config.parent().unwrap().join("decisions.log")).unwrap();
    for token in tokens {
        assert!(
            !log.contains(token.as_str()),
            "a token reached the decision log"
        );
    }
    let records = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (log, records)
}

/// The `admin=` address of the "verdict listening" line.
fn admin_address(server: &Server) -> (String, String) {
    let line = Server::wait_for(&server.stderr, "verdict listening");
    let field = |name: &str| {
        line.split(&format!("{name}="))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .to_owned()
    };
    (field("address"), field("admin"))
}

/// Every sample of the exposition, by its name and labels.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    let mut described = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap();
            assert!(
                described.insert(name.to_owned()),
                "{name} is described twice"
            );
        } else if !line.starts_with('#') {
            let (series, value) = line.rsplit_once(' ').unwrap();
            samples.insert(series.to_owned(), value.parse().unwrap());
        }
    }
    assert_eq!(text.lines().last(), Some("# EOF"));
    samples
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_on_the_admin_listener_count_decisions_keys_caches_and_rejections() {
    let key = rsa_key("k1");
    let jwks = KeyServer::start(&[key]).await;
    let (api_key, api_key_entry) = new_api_key(&["--id", "partner", "--scope", "orders:read"]);
    let config = write_config(
        &jwks,
        None,
        &format!(
            "admin_listen: 127.0.0.1:0\ndecision_log: off\napi_keys:\n  keys:\n    {api_key_entry}\n"
        ),
    );
    let server = serve(&config);
    let (address, admin) = admin_address(&server);
    wait_ready(&address).await;
    let good = key.sign(&claims(&jwks.issuer(), unix_now()));
    let expired = key.sign(&claims(&jwks.issuer(), unix_now() - 3600));
    let by_api_key = json!({ "api_key": api_key, "method": "GET", "path": "/orders/1" });
    for body in [
        decide_body(&good),
        decide_body(&good),
        decide_body(&expired),
        by_api_key,
    ] {
        let response = send_decide(&address, &body, &[]).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let unauthenticated = reqwest::Client::new()
        .post(format!("http://{address}/v1/decide"))
        .header("content-type", "application/json")
        .body(decide_body(&good).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);

    let on_api = reqwest::get(format!("http://{address}/metrics"))
        .await
        .unwrap();
    assert_eq!(
        on_api.status(),
        404,
        "with admin_listen, /metrics is only there"
    );
    let response = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    let samples = samples(&text);
    let value = |series: &str| {
        *samples
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(
        value(r#"verdict_decisions_total{outcome="allow",error="none",issuer="t"}"#),
        2.0
    );
    assert_eq!(
        value(r#"verdict_decisions_total{outcome="deny",error="invalid_token",issuer="none"}"#),
        1.0
    );
    // An API key's decisions are counted under `api_key`, the issuer name of the decision log too.
    assert_eq!(
        value(r#"verdict_decisions_total{outcome="allow",error="none",issuer="api_key"}"#),
        1.0
    );
    assert_eq!(value("verdict_decision_duration_seconds_count"), 4.0);
    assert_eq!(
        value(r#"verdict_requests_rejected_total{reason="unauthenticated_caller"}"#),
        1.0
    );
    assert_eq!(
        value(r#"verdict_jwks_refreshes_total{issuer="t",result="success"}"#),
        1.0
    );
    assert!(value(r#"verdict_jwks_age_seconds{issuer="t"}"#) >= 0.0);
    assert_eq!(value(r#"verdict_jwks_keys{issuer="t"}"#), 1.0);
    assert_eq!(
        value(r#"verdict_token_cache_lookups_total{result="hit"}"#),
        1.0
    );
    assert_eq!(
        value(r#"verdict_token_cache_lookups_total{result="miss"}"#),
        2.0
    );
    assert_eq!(value("verdict_token_cache_entries"), 1.0);
    // The memo keeps a question on its second sighting: the second allow.
    assert_eq!(value("verdict_decision_memo_entries"), 1.0);
    assert!(value("verdict_decision_memo_bytes") >= 1024.0);
    assert_eq!(value(r#"verdict_reloads_total{result="failure"}"#), 0.0);
    assert_eq!(value("verdict_requests_in_flight"), 0.0);
    assert_eq!(
        value(&format!(
            r#"verdict_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    for unbounded in ["alice", "/orders", "rrt-1"] {
        assert!(!text.contains(unbounded), "`{unbounded}` is a label value");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_a_severity_and_the_callouts_trace_id() {
    let key = rsa_key("k1");
    let jwks = KeyServer::start(&[key]).await;
    let config = write_config(
        &jwks,
        None,
        "decision_log: off\nlog: { format: json, level: \"verdict=debug,info\" }\n",
    );
    let server = Server::serve(&config, None);
    let listening: Value =
        serde_json::from_str(&Server::wait_for(&server.stderr, "verdict listening")).unwrap();
    assert_eq!(listening["severity"], "INFO");
    let address = listening["address"].as_str().unwrap().to_owned();
    wait_ready(&address).await;
    decide_traced(&address, key, &jwks).await;
    let decision: Value =
        serde_json::from_str(&Server::wait_for(&server.stderr, "\"decision\"")).unwrap();
    assert_eq!(decision["severity"], "DEBUG");
    assert_eq!(decision["message"], "decision");
    assert_eq!(decision["trace_id"], TRACE_ID);
    assert_eq!(decision["allow"], true);
    assert!(decision["time"].is_string() && decision["target"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_are_exported_by_otlp_as_children_of_the_callouts_traceparent() {
    let exported = Arc::new(Mutex::new(Vec::<Value>::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    let router = Router::new()
        .route(
            "/v1/traces",
            post(
                |State(exported): State<Arc<Mutex<Vec<Value>>>>, body: axum::body::Bytes| async move {
                    exported.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                    axum::Json(json!({}))
                },
            ),
        )
        .with_state(Arc::clone(&exported));
    tokio::spawn(async move { axum::serve(listener, router).await });

    let key = rsa_key("k1");
    let jwks = KeyServer::start(&[key]).await;
    let config = write_config(
        &jwks,
        None,
        &format!(
            "decision_log: off\ntracing: {{ otlp_endpoint: \"{collector}\", service_name: verdict-test }}\n"
        ),
    );
    let (mut server, address) = serve_ready(&config).await;
    decide_traced(&address, key, &jwks).await;
    assert!(
        server.terminate().success(),
        "spans are flushed at shutdown"
    );

    let exported = exported.lock().unwrap();
    let spans: Vec<(&Value, &Value)> = exported
        .iter()
        .flat_map(|body| body["resourceSpans"].as_array().unwrap())
        .flat_map(|resource| {
            resource["scopeSpans"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|scope| scope["spans"].as_array().unwrap())
                .map(move |span| (&resource["resource"], span))
        })
        .collect();
    let (resource, callout) = spans
        .iter()
        .find(|(_, span)| span["name"] == "callout")
        .unwrap_or_else(|| panic!("no callout span in {exported:?}"));
    assert_eq!(
        callout["traceId"].as_str().unwrap().to_lowercase(),
        TRACE_ID
    );
    assert_eq!(
        callout["parentSpanId"].as_str().unwrap().to_lowercase(),
        PARENT_SPAN_ID
    );
    let service_name = resource["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|attribute| attribute["key"] == "service.name")
        .unwrap();
    assert_eq!(service_name["value"]["stringValue"], "verdict-test");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_accepting_finishes_the_decisions_in_flight_over_http1_and_grpc_and_exits_zero()
 {
    let jwks = KeyServer::start(&[rsa_key("k1")]).await;
    let introspection = SlowIntrospection::start(Duration::from_millis(1500)).await;
    let config = write_config(&jwks, Some(&introspection), "decision_log: off\n");
    let (mut server, address) = serve_ready(&config).await;
    let in_flight = tokio::spawn({
        let address = address.clone();
        async move { send_decide(&address, &decide_body("opaque-in-flight"), &[]).await }
    });
    let grpc_in_flight = tokio::spawn({
        let check = grpc::check_request(
            "GET",
            "/orders/1",
            &[("authorization", "Bearer opaque-grpc-in-flight")],
        );
        let url = format!("http://{address}{}", grpc::CHECK);
        async move {
            let metadata = [("x-verdict-key", CALLER_KEY)];
            grpc::send(&grpc::h2c(), &url, grpc::framed(&check), &metadata).await
        }
    });
    introspection.wait_begun(2).await;
    let pid = server.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );

    // The listener closes at once: a bounded wait for a refused connection, while the decision is
    // still waiting on its introspection.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&address).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "new connections are refused after SIGTERM");
    assert!(!in_flight.is_finished());

    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let decision = json_of(response).await;
    assert_eq!(decision["allow"], true, "{decision}");
    let reply = grpc_in_flight.await.unwrap().unwrap();
    let response: CheckResponse = reply.decode();
    assert_eq!(
        response.status.unwrap().code,
        0,
        "the gRPC call in flight is answered too"
    );
    assert_eq!(server.wait_exit().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_decision_still_in_flight_after_the_grace_period_is_cut_off_and_the_process_exits_zero() {
    let jwks = KeyServer::start(&[rsa_key("k1")]).await;
    let introspection = SlowIntrospection::start(Duration::from_secs(60)).await;
    let config = write_config(
        &jwks,
        Some(&introspection),
        "decision_log: off\nshutdown: { grace_period: 300ms }\nlimits: { request_timeout: 120s }\n",
    );
    let (mut server, address) = serve_ready(&config).await;
    let in_flight = tokio::spawn({
        let address = address.clone();
        async move { send_decide(&address, &decide_body("opaque-never-answered"), &[]).await }
    });
    introspection.wait_begun(1).await;
    let status = server.terminate();
    assert_eq!(status.code(), Some(0));
    assert!(
        in_flight.await.unwrap().is_err(),
        "the connection closed without an answer"
    );
    let log: Vec<String> = server.stderr.try_iter().collect();
    assert!(
        log.iter().any(|line| line.contains("grace period")),
        "the cut-off is logged: {log:?}"
    );
}

#[tokio::test]
async fn callouts_beyond_the_concurrency_limit_are_shed_with_503_and_retry_after() {
    let app = slow_app(
        Duration::from_millis(500),
        "limits: { max_concurrent_requests: 2 }\n",
    )
    .await;
    let requests: Vec<_> = (0..6)
        .map(|index| tokio::spawn(callout(app.clone(), format!("opaque-{index}"))))
        .collect();
    let mut responses = Vec::new();
    for request in requests {
        responses.push(request.await.unwrap());
    }
    let statuses: Vec<u16> = responses.iter().map(|(status, _, _)| *status).collect();
    assert_eq!(
        statuses.iter().filter(|status| **status == 200).count(),
        2,
        "{statuses:?}"
    );
    for (status, retry_after, body) in responses.iter().filter(|(status, _, _)| *status != 200) {
        assert_eq!(*status, 503);
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(body["error"], "temporarily_unavailable");
    }
    // The permits come back: the next callout is served.
    let (status, _, _) = callout(app, "opaque-0".to_owned()).await;
    assert_eq!(status, 200);

    // The introspections and the shed callouts are counted (the metrics are the process's: other tests
    // in this binary add to them, so these are lower bounds).
    let text = verdict::metrics::render(&verdict::metrics::Snapshot::default());
    let samples = samples(&text);
    assert!(samples[r#"verdict_introspection_duration_seconds_count{issuer="slow"}"#] >= 2.0);
    assert!(samples[r#"verdict_requests_rejected_total{reason="overloaded"}"#] >= 4.0);
}

/// The service in process, trusting an introspection endpoint that answers after `delay`, with
/// `extra` in its configuration.
async fn slow_app(delay: Duration, extra: &str) -> TestApp {
    let jwks = KeyServer::start(&[rsa_key("k1")]).await;
    let introspection = SlowIntrospection::start(delay).await;
    let yaml = std::fs::read_to_string(write_config(&jwks, Some(&introspection), extra)).unwrap();
    TestApp::start_without_keys(&yaml)
}

/// A callout with `token` through the in-process router: status, `Retry-After` and body.
async fn callout(app: TestApp, token: String) -> (u16, Option<String>, Value) {
    use tower::ServiceExt as _;
    let request = axum::http::Request::post("/v1/decide")
        .header("x-verdict-key", CALLER_KEY)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(decide_body(&token).to_string()))
        .unwrap();
    let response = verdict::api::router(app.state.clone())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, retry_after, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn a_callout_not_answered_within_the_request_timeout_gets_503() {
    let app = slow_app(
        Duration::from_secs(30),
        "limits: { request_timeout: 200ms }\n",
    )
    .await;
    let (status, retry_after, body) = callout(app, "opaque-slow".to_owned()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(body["error"], "temporarily_unavailable");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_heads_and_bodies_over_their_limits_are_refused() {
    let key = rsa_key("k1");
    let jwks = KeyServer::start(&[key]).await;
    let config = write_config(
        &jwks,
        None,
        "decision_log: off\nlimits: { max_header_bytes: 8192, max_body_bytes: 2048 }\n",
    );
    let (mut server, address) = serve_ready(&config).await;
    let token = key.sign(&claims(&jwks.issuer(), unix_now()));

    let big_header = "x".repeat(9 * 1024);
    let response = send_decide(
        &address,
        &decide_body(&token),
        &[("x-padding", &big_header)],
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 431);

    // The byte limit alone bounds the head: many small headers that fit in it are served, and as many
    // as it takes to pass it are refused.
    for (count, status) in [(150, 200), (600, 200), (1200, 431)] {
        let names: Vec<String> = (0..count).map(|index| format!("h{index}")).collect();
        let headers: Vec<(&str, &str)> = names.iter().map(|name| (name.as_str(), "1")).collect();
        let response = send_decide(&address, &decide_body(&token), &headers)
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{count} headers");
    }

    let mut body = decide_body(&token);
    body["headers"] = json!({ "x-padding": "y".repeat(2048) });
    let response = send_decide(&address, &body, &[]).await.unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(json_of(response).await["error"], "request_too_large");

    let response = send_decide(&address, &decide_body(&token), &[])
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(server.terminate().success());
}

/// A line break or control character in a field of a callout, followed by what looks like a record.
const FORGERIES: [&str; 6] = [
    "\n2001-01-01T00:00:00.000000Z  INFO verdict: forged record",
    "\r\n2001-01-01T00:00:00.000000Z  INFO verdict: forged record",
    "\r2001-01-01T00:00:00.000000Z  INFO verdict: forged record",
    "\u{2028}2001-01-01T00:00:00.000000Z  INFO verdict: forged record",
    "\u{85}2001-01-01T00:00:00.000000Z  INFO verdict: forged record",
    "\u{1b}[2K\u{1b}[1G2001-01-01T00:00:00.000000Z  INFO verdict: forged record",
];

#[tokio::test(flavor = "multi_thread")]
async fn no_field_of_a_callout_forges_a_log_line() {
    let key = rsa_key("k1");
    let jwks = KeyServer::start(&[key]).await;
    for format in ["text", "json"] {
        let config = write_config(
            &jwks,
            None,
            &format!("decision_log: off\nlog: {{ format: {format}, level: debug }}\n"),
        );
        let mut server = Server::serve(&config, None);
        let address = server.address();
        wait_ready(&address).await;
        // Each forgery in the two fields the debug log of a decision quotes from the callout: the
        // proxy's `message_id`, and the `sub` of a token the issuer signed.
        let mut sent = Vec::new();
        for forgery in FORGERIES {
            let message_id = format!("m{forgery}");
            let mut subject_claims = claims(&jwks.issuer(), unix_now());
            subject_claims["sub"] = json!(format!("alice{forgery}"));
            for (token, message_id) in [
                (
                    key.sign(&claims(&jwks.issuer(), unix_now())),
                    message_id.clone(),
                ),
                (key.sign(&subject_claims), "m".to_owned()),
            ] {
                let mut body = decide_body(&token);
                body["message_id"] = json!(message_id);
                let response = send_decide(&address, &body, &[]).await.unwrap();
                assert_eq!(response.status(), 200, "{format}: {forgery:?}");
            }
            sent.push((message_id, format!("alice{forgery}")));
        }
        server.terminate();
        let log: Vec<String> = server.stderr.iter().collect();
        let decisions = log.iter().filter(|line| line.contains("decision")).count();
        assert!(decisions >= 2 * FORGERIES.len(), "{format}: {log:#?}");
        for line in &log {
            assert!(
                !line.starts_with("2001-") && !line.contains('\r'),
                "{format}: a forged line: {line:?}"
            );
            assert!(
                !line
                    .chars()
                    .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')),
                "{format}: a control character or line separator in {line:?}"
            );
        }
        match format {
            "json" => {
                let records: Vec<Value> = log
                    .iter()
                    .map(|line| {
                        serde_json::from_str(line)
                            .unwrap_or_else(|error| panic!("not one record ({error}): {line:?}"))
                    })
                    .collect();
                // The escapes are JSON's: each record reads back the very values the callout sent.
                for (message_id, subject) in &sent {
                    for (field, value) in [("message_id", message_id), ("subject", subject)] {
                        assert!(
                            records.iter().any(|record| record[field] == json!(value)),
                            "no record has {field} {value:?}"
                        );
                    }
                }
            }
            _ => {
                // One record per line: each starts with its timestamp and level.
                for line in &log {
                    let mut words = line.split_whitespace();
                    let time = words.next().unwrap_or_default();
                    let level = words.next().unwrap_or_default();
                    assert!(
                        time.ends_with('Z')
                            && humantime::parse_rfc3339(time).is_ok()
                            && ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
                        "not one record: {line:?}"
                    );
                }
            }
        }
    }
}

/// An ext_authz `Check` for the opaque `token` through the in-process router, with the caller key and
/// `metadata`: what came back.
async fn grpc_check(app: TestApp, token: String, metadata: &[(&str, &str)]) -> Reply {
    use tower::ServiceExt as _;
    let authorization = format!("Bearer {token}");
    let check = grpc::check_request("GET", "/orders/1", &[("authorization", &authorization)]);
    let mut metadata = metadata.to_vec();
    metadata.push(("x-verdict-key", CALLER_KEY));
    let request = grpc::request(grpc::CHECK, grpc::framed(&check), &metadata);
    let response = verdict::api::router(app.state.clone())
        .oneshot(request)
        .await
        .unwrap();
    Reply::read(response).await
}

#[tokio::test]
async fn grpc_callouts_beyond_the_concurrency_limit_are_shed_as_unavailable() {
    let app = slow_app(
        Duration::from_millis(500),
        "limits: { max_concurrent_requests: 2 }\n",
    )
    .await;
    let calls: Vec<_> = (0..6)
        .map(|index| tokio::spawn(grpc_check(app.clone(), format!("opaque-{index}"), &[])))
        .collect();
    let mut codes = Vec::new();
    for call in calls {
        codes.push(call.await.unwrap().code);
    }
    assert_eq!(
        codes.iter().filter(|code| **code == Some(0)).count(),
        2,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|code| **code == Some(14)).count(),
        4,
        "{codes:?}"
    );
    // The permits come back.
    assert_eq!(grpc_check(app, "opaque-0".into(), &[]).await.code, Some(0));
    let text = verdict::metrics::render(&verdict::metrics::Snapshot::default());
    assert!(samples(&text)[r#"verdict_requests_rejected_total{reason="overloaded"}"#] >= 4.0);
}

#[tokio::test]
async fn a_grpc_callers_deadline_bounds_the_callout_when_it_is_sooner_than_the_request_timeout() {
    let app = slow_app(
        Duration::from_secs(30),
        "limits: { request_timeout: 20s }\n",
    )
    .await;
    let started = std::time::Instant::now();
    let reply = grpc_check(
        app.clone(),
        "opaque-slow".into(),
        &[("grpc-timeout", "200m")],
    )
    .await;
    assert_eq!(reply.code, Some(4), "DEADLINE_EXCEEDED: {reply:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the deadline, not the timeout"
    );

    // Verdict's own request_timeout when the caller's deadline is later, or absent.
    let app = slow_app(
        Duration::from_secs(30),
        "limits: { request_timeout: 200ms }\n",
    )
    .await;
    for metadata in [&[("grpc-timeout", "10S")][..], &[]] {
        let reply = grpc_check(app.clone(), "opaque-slow".into(), metadata).await;
        assert_eq!(reply.code, Some(4), "{metadata:?}: {reply:?}");
    }
    let text = verdict::metrics::render(&verdict::metrics::Snapshot::default());
    assert!(samples(&text)[r#"verdict_requests_rejected_total{reason="timeout"}"#] >= 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_decisions_are_logged_with_their_front_and_the_callers_trace() {
    let key = rsa_key("k1");
    let jwks = KeyServer::start(&[key]).await;
    let config = write_config(&jwks, None, "decision_log: decisions.log\n");
    let (mut server, address) = serve_ready(&config).await;
    let token = key.sign(&claims(&jwks.issuer(), unix_now()));
    let authorization = format!("Bearer {token}");
    let client = grpc::h2c();
    let calls = [
        (
            grpc::CHECK,
            grpc::framed(&grpc::check_request(
                "GET",
                "/orders/1",
                &[("authorization", &authorization)],
            )),
        ),
        (
            grpc::PROCESS_MESSAGE,
            grpc::framed(&grpc::message(
                "GET",
                "/orders/1",
                &[("Authorization", &authorization)],
            )),
        ),
    ];
    for (path, body) in calls {
        let url = format!("http://{address}{path}");
        let metadata = [
            ("x-verdict-key", CALLER_KEY),
            ("traceparent", &traceparent()),
        ];
        let reply = grpc::send(&client, &url, body, &metadata).await.unwrap();
        assert_eq!(reply.code, Some(0), "{path}: {reply:?}");
    }
    assert!(server.terminate().success());
    let (log, records) = decision_records(&config, &[&token]);
    assert_eq!(records.len(), 2, "{log}");
    for (record, (front, message_id)) in records.iter().zip([
        ("ext_authz", "envoy-request-1"),
        ("external_callout", "apigee-message-1"),
    ]) {
        assert_eq!(record["front"], front, "{record}");
        assert_eq!(record["message_id"], message_id, "{record}");
        assert_eq!(record["allow"], true, "{record}");
        assert_eq!(record["caller"], "api_key#1");
        assert_eq!(record["path"], "/orders/1");
        assert_eq!(record["trace_id"], TRACE_ID);
    }
}
