//! Malformed callouts: bodies, content types and caller keys that get a callout-level error, not a decision.
//!
//! DESIGN §2: a callout that fails caller authentication or does not parse gets an HTTP error status
//! and `{"error", "error_description"}`, which the bundle treats as a deny. A callout that parses gets a
//! decision, even when the request it describes is refused, as a path with dot segments is.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{CALLER_KEY, KeyServer, T0, TestApp, claims, config_yaml, rsa_key};

/// A service trusting one issuer, and a token from that issuer that the example policies allow for
/// `GET /orders/...`.
/// The default body limit, 64 KiB as DESIGN §2 gives it.
const MAX_BODY_BYTES: usize = 64 * 1024;

async fn start() -> (TestApp, String) {
    let key = rsa_key("bodies-rsa");
    let server = KeyServer::start(&[key]).await;
    let app = TestApp::start(&config_yaml(&server, "")).await;
    let token = key.sign(&claims(&server.issuer(), T0));
    (app, token)
}

/// A `POST /v1/decide` with exactly these headers.
fn request(headers: &[(&str, &str)], body: impl Into<Body>) -> Request<Body> {
    let mut request = Request::post("/v1/decide");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(body.into()).unwrap()
}

/// A valid body of exactly `length` bytes, padded in `query`.
fn body_of_length(length: usize) -> Vec<u8> {
    let empty = json!({ "method": "GET", "path": "/orders/42", "query": "" }).to_string();
    let padding = "q".repeat(length - empty.len());
    let body = json!({ "method": "GET", "path": "/orders/42", "query": padding }).to_string();
    assert_eq!(body.len(), length);
    body.into_bytes()
}

/// Holds a callout-level error to its status and code. `names`, when given, must appear in the
/// description, so that the Apigee developer learns which field to fix.
fn check_refused(
    case: &str,
    (http, answer): &(StatusCode, Value),
    expected_http: StatusCode,
    expected_error: &str,
    names: Option<&str>,
) {
    assert_eq!(*http, expected_http, "{case}: {answer}");
    assert_eq!(answer["error"], expected_error, "{case}: {answer}");
    let description = answer["error_description"].as_str().unwrap_or_default();
    assert!(
        !description.is_empty(),
        "{case}: no error_description: {answer}"
    );
    // Only the error format: nothing a proxy could mistake for a decision.
    let fields: Vec<&str> = answer
        .as_object()
        .map(|object| object.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        fields,
        ["error", "error_description"],
        "{case}: not the callout error format: {answer}"
    );
    if let Some(names) = names {
        assert!(
            description.contains(names),
            "{case}: the description does not name {names}: {description}"
        );
    }
}

/// One malformed body: the case, the body, and the HTTP status, `error` and named field expected.
type Refusal = (
    &'static str,
    Vec<u8>,
    StatusCode,
    &'static str,
    Option<&'static str>,
);

/// The request headers of one row.
type Headers<'a> = Vec<(&'a str, &'a str)>;

#[tokio::test]
async fn malformed_bodies_are_refused_in_the_service_error_format() {
    let (app, _) = start().await;
    let bad_request = StatusCode::BAD_REQUEST;
    let cases: Vec<Refusal> = vec![
        // Wrong JSON types: serde names the field by its path.
        (
            "method a number",
            br#"{"method": 5, "path": "/orders"}"#.into(),
            bad_request,
            "invalid_request",
            Some("method"),
        ),
        (
            "method null",
            br#"{"method": null, "path": "/orders"}"#.into(),
            bad_request,
            "invalid_request",
            Some("method"),
        ),
        (
            "path a number",
            br#"{"method": "GET", "path": 42}"#.into(),
            bad_request,
            "invalid_request",
            Some("path"),
        ),
        (
            "authorization a number",
            br#"{"authorization": 1, "method": "GET", "path": "/"}"#.into(),
            bad_request,
            "invalid_request",
            Some("authorization"),
        ),
        (
            "headers an array",
            br#"{"method": "GET", "path": "/", "headers": ["x-tenant"]}"#.into(),
            bad_request,
            "invalid_request",
            Some("headers"),
        ),
        (
            "a header value a number",
            br#"{"method": "GET", "path": "/", "headers": {"x-tenant": 1}}"#.into(),
            bad_request,
            "invalid_request",
            Some("headers"),
        ),
        (
            "apigee a string",
            br#"{"method": "GET", "path": "/", "apigee": "orders-proxy"}"#.into(),
            bad_request,
            "invalid_request",
            Some("apigee"),
        ),
        // Missing, unknown and repeated fields.
        (
            "method missing",
            br#"{"path": "/orders"}"#.into(),
            bad_request,
            "invalid_request",
            Some("`method`"),
        ),
        (
            "path missing",
            br#"{"method": "GET"}"#.into(),
            bad_request,
            "invalid_request",
            Some("`path`"),
        ),
        (
            "unknown field authorisation",
            br#"{"authorisation": "Bearer x", "method": "GET", "path": "/"}"#.into(),
            bad_request,
            "invalid_request",
            Some("`authorisation`"),
        ),
        (
            "unknown field inside apigee",
            br#"{"method": "GET", "path": "/", "apigee": {"proxy": "orders", "env": "prod"}}"#
                .into(),
            bad_request,
            "invalid_request",
            Some("`env`"),
        ),
        (
            "method twice",
            br#"{"method": "GET", "method": "DELETE", "path": "/"}"#.into(),
            bad_request,
            "invalid_request",
            Some("`method`"),
        ),
        // Duplicate keys anywhere in the body: which copy wins differs between parsers (DESIGN §2).
        (
            "a header twice",
            br#"{"method": "GET", "path": "/", "headers": {"x-debug": "1", "x-debug": ""}}"#.into(),
            bad_request,
            "invalid_request",
            Some("duplicate key"),
        ),
        (
            "a header twice, once escaped",
            br#"{"method": "GET", "path": "/", "headers": {"x-debug": "1", "x-d\u0065bug": ""}}"#
                .into(),
            bad_request,
            "invalid_request",
            Some("duplicate key"),
        ),
        (
            "an apigee field twice",
            br#"{"method": "GET", "path": "/", "apigee": {"product": "gold", "product": "free"}}"#
                .into(),
            bad_request,
            "invalid_request",
            Some("duplicate field `product`"),
        ),
        (
            "path twice, escaped",
            br#"{"method": "GET", "path": "/orders", "p\u0061th": "/admin"}"#.into(),
            bad_request,
            "invalid_request",
            Some("duplicate field `path`"),
        ),
        (
            "a field twice, the first null",
            br#"{"authorization": null, "method": "GET", "path": "/", "authorization": "Bearer x"}"#
                .into(),
            bad_request,
            "invalid_request",
            Some("duplicate field `authorization`"),
        ),
        // Not a JSON object at all.
        (
            "an empty array",
            b"[]".into(),
            bad_request,
            "invalid_request",
            None,
        ),
        // serde reads a struct from an array of its fields in declaration order, past every field-name
        // check; the contract is a JSON object, so an array must be refused like any other shape.
        (
            "the fields as an array",
            br#"["Bearer x", null, "GET", "/orders/42", null, null, null, null, null, null]"#.into(),
            bad_request,
            "invalid_request",
            None,
        ),
        (
            "apigee as an array",
            br#"{"method": "GET", "path": "/", "apigee": ["orders", "prod", "acme", "gold", "app", "dev"]}"#.into(),
            bad_request,
            "invalid_request",
            Some("apigee"),
        ),
        ("null", b"null".into(), bad_request, "invalid_request", None),
        (
            "invalid UTF-8",
            b"{\"method\": \"GET\", \"path\": \"/orders/\xff\xfe\"}".into(),
            bad_request,
            "invalid_request",
            None,
        ),
        (
            "not JSON",
            b"method=GET&path=/orders".into(),
            bad_request,
            "invalid_request",
            None,
        ),
        (
            "empty body",
            Vec::new(),
            bad_request,
            "invalid_request",
            None,
        ),
        (
            "truncated JSON",
            br#"{"method": "GET", "path": "/or"#.into(),
            bad_request,
            "invalid_request",
            None,
        ),
        (
            "trailing characters",
            br#"{"method": "GET", "path": "/"} {}"#.into(),
            bad_request,
            "invalid_request",
            None,
        ),
        // Well-typed values that cannot be what they claim to be.
        (
            "method empty",
            br#"{"method": "", "path": "/"}"#.into(),
            bad_request,
            "invalid_request",
            Some("`method`"),
        ),
        (
            "method with a space",
            br#"{"method": "GE T", "path": "/"}"#.into(),
            bad_request,
            "invalid_request",
            Some("`method`"),
        ),
        (
            "path not starting with /",
            br#"{"method": "GET", "path": "orders/42"}"#.into(),
            bad_request,
            "invalid_request",
            Some("`path`"),
        ),
        (
            "path an absolute URL",
            br#"{"method": "GET", "path": "https://api.example.com/orders"}"#.into(),
            bad_request,
            "invalid_request",
            Some("`path`"),
        ),
        (
            "client_ip not an IP",
            br#"{"method": "GET", "path": "/", "client_ip": "not-an-ip"}"#.into(),
            bad_request,
            "invalid_request",
            Some("`client_ip`"),
        ),
        (
            "client_ip with a port",
            br#"{"method": "GET", "path": "/", "client_ip": "203.0.113.7:443"}"#.into(),
            bad_request,
            "invalid_request",
            Some("`client_ip`"),
        ),
        (
            "client_ip a forwarded list",
            br#"{"method": "GET", "path": "/", "client_ip": "203.0.113.7, 10.0.0.1"}"#.into(),
            bad_request,
            "invalid_request",
            Some("`client_ip`"),
        ),
        // DESIGN §2: at most 64 KiB.
        (
            "body one byte over 64 KiB",
            body_of_length(MAX_BODY_BYTES + 1),
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            None,
        ),
        (
            "body of 1 MB",
            body_of_length(1 << 20),
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            None,
        ),
    ];
    for (case, body, http, error, names) in cases {
        let answer = app.post_decide(body).await;
        check_refused(case, &answer, http, error, names);
    }
}

#[tokio::test]
async fn bodies_that_are_not_json_by_content_type_are_refused() {
    let (app, _) = start().await;
    let body = r#"{"method": "GET", "path": "/orders/42"}"#;
    let cases: &[(&str, Option<&str>)] = &[
        ("no content type", None),
        ("text/plain", Some("text/plain")),
        ("a form", Some("application/x-www-form-urlencoded")),
        ("xml", Some("application/xml")),
    ];
    for (case, content_type) in cases {
        let mut headers = vec![("x-verdict-key", CALLER_KEY)];
        if let Some(content_type) = content_type {
            headers.push(("content-type", content_type));
        }
        let answer = app.send(request(&headers, body)).await;
        check_refused(
            case,
            &answer,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            None,
        );
    }
}

/// The other side of the tables above: bodies at the edges of what is accepted get a decision.
#[tokio::test]
async fn bodies_at_the_edges_of_the_contract_get_a_decision() {
    let (app, _) = start().await;
    let apigee_unset_variables = json!({
        "authorization": "", "api_key": "", "method": "GET", "path": "/orders/42", "host": "",
        "query": "", "client_ip": "", "headers": {}, "message_id": "",
        "apigee": { "proxy": "", "environment": "", "organization": "", "product": "", "app": "", "developer": "" },
    });
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "only the required fields",
            br#"{"method": "GET", "path": "/orders/42"}"#.into(),
            "application/json",
        ),
        (
            "every field, empty as Apigee renders unset variables",
            apigee_unset_variables.to_string().into_bytes(),
            "application/json",
        ),
        (
            "a lower-case method",
            br#"{"method": "get", "path": "/orders/42"}"#.into(),
            "application/json",
        ),
        (
            "an IPv6 client_ip",
            br#"{"method": "GET", "path": "/orders/42", "client_ip": "2001:db8::7"}"#.into(),
            "application/json",
        ),
        (
            "a body of exactly 64 KiB",
            body_of_length(MAX_BODY_BYTES),
            "application/json",
        ),
        (
            "a charset parameter",
            br#"{"method": "GET", "path": "/orders/42"}"#.into(),
            "application/json; charset=utf-8",
        ),
    ];
    for (case, body, content_type) in cases {
        let headers = [
            ("x-verdict-key", CALLER_KEY),
            ("content-type", content_type),
        ];
        let (http, answer) = app.send(request(&headers, body)).await;
        assert_eq!(http, StatusCode::OK, "{case}: {answer}");
        // Without a token the decision is the bare challenge; what matters here is that it is one.
        assert_eq!(answer["allow"], false, "{case}: {answer}");
        assert_eq!(answer["status"], 401, "{case}: {answer}");
        assert_eq!(answer["error"], "", "{case}: {answer}");
    }
}

#[tokio::test]
async fn callers_without_the_key_are_refused_before_the_body_is_read() {
    let (app, token) = start().await;
    let valid = json!({ "authorization": format!("Bearer {token}"), "method": "GET", "path": "/orders/42" })
        .to_string();
    let one_off = {
        let (rest, last) = CALLER_KEY.split_at(CALLER_KEY.len() - 1);
        format!("{rest}{}", if last == "0" { "1" } else { "0" })
    };
    let truncated = &CALLER_KEY[..CALLER_KEY.len() - 1];
    let extended = format!("{CALLER_KEY}0");
    let upper = CALLER_KEY.to_uppercase();
    let json = ("content-type", "application/json");
    let cases: Vec<(&str, Headers, Vec<u8>)> = vec![
        ("no key header", vec![json], valid.clone().into()),
        (
            "a wrong key",
            vec![json, ("x-verdict-key", "wrong-key")],
            valid.clone().into(),
        ),
        (
            "the key one character off",
            vec![json, ("x-verdict-key", &one_off)],
            valid.clone().into(),
        ),
        (
            "the key without its last character",
            vec![json, ("x-verdict-key", truncated)],
            valid.clone().into(),
        ),
        (
            "the key with a character more",
            vec![json, ("x-verdict-key", &extended)],
            valid.clone().into(),
        ),
        (
            "the key in upper case",
            vec![json, ("x-verdict-key", &upper)],
            valid.clone().into(),
        ),
        (
            "an empty key",
            vec![json, ("x-verdict-key", "")],
            valid.clone().into(),
        ),
        (
            "the key in another header",
            vec![json, ("x-api-key", CALLER_KEY)],
            valid.clone().into(),
        ),
        (
            "the key as the authorization",
            vec![json, ("authorization", CALLER_KEY)],
            valid.clone().into(),
        ),
        // Caller authentication comes first, so a stranger learns nothing about body parsing.
        (
            "a wrong key and a malformed body",
            vec![json, ("x-verdict-key", "wrong-key")],
            b"not json".into(),
        ),
        (
            "a wrong key and a body over 64 KiB",
            vec![json, ("x-verdict-key", "wrong-key")],
            body_of_length(MAX_BODY_BYTES + 1),
        ),
        ("no key and no content type", vec![], valid.clone().into()),
    ];
    for (case, headers, body) in cases {
        let answer = app.send(request(&headers, body)).await;
        check_refused(
            case,
            &answer,
            StatusCode::UNAUTHORIZED,
            "unauthenticated_caller",
            None,
        );
    }

    // The same request with the right key is decided, so the refusals above are the key's doing.
    let (http, answer) = app
        .send(request(&[json, ("x-verdict-key", CALLER_KEY)], valid))
        .await;
    assert_eq!(http, StatusCode::OK, "{answer}");
    assert_eq!(answer["allow"], true, "{answer}");
}

/// Paths that a backend could normalize into another route are a decision, not a callout error: the
/// callout is well-formed, the client's request is not.
#[tokio::test]
async fn paths_with_dot_segments_are_denied_as_invalid_requests() {
    let (app, token) = start().await;
    let refused = [
        "/orders/../admin",
        "/orders/./42",
        "/orders/..",
        "/orders/%2e%2e/admin",
        "/orders/%2E%2E/admin",
        "/orders/.%2e/admin",
        "/orders%2f..%2fadmin",
        "/orders/..%5cadmin",
        "/orders\\..\\admin",
        "/orders/42%00",
        "/orders/..;/admin",
        "/orders/..;jsessionid=1/admin",
        "/orders/.;/42",
        "/orders/%2e%2e;/admin",
        "//admin",
        "/orders//../admin",
        "/;x/admin",
        "/orders/42%0d%0a",
        "/orders/42\n",
        "/orders/%zz",
    ];
    for path in refused {
        let answer = app
            .decide(json!({ "authorization": format!("Bearer {token}"), "method": "GET", "path": path }))
            .await;
        assert_eq!(answer["allow"], false, "{path}: {answer}");
        assert_eq!(answer["status"], 400, "{path}: {answer}");
        assert_eq!(answer["error"], "invalid_request", "{path}: {answer}");
        assert_eq!(
            answer["error_description"], "the request path is not in normal form",
            "{path}: {answer}"
        );
        let challenge = answer["www_authenticate"].as_str().unwrap_or_default();
        assert!(
            challenge.contains(r#"error="invalid_request""#),
            "{path}: {challenge}"
        );
    }

    // Dots inside a segment are only a name, and the same token is allowed on a normal path.
    for path in ["/orders/42", "/orders/v1..v2", "/orders/report.2027.csv"] {
        let answer = app
            .decide(json!({ "authorization": format!("Bearer {token}"), "method": "GET", "path": path }))
            .await;
        assert_eq!(answer["allow"], true, "{path}: {answer}");
    }
}
