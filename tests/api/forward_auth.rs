//! The forward-auth front (DESIGN §9) through the router: the original request rebuilt from the
//! proxy's headers (or from the path after the prefix), the allow with its upstream headers and the
//! identity headers to strip, every deny with its status, challenge and body, and the same decision as
//! `/v1/decide` gives for the same request.

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{CALLER_KEY, KeyServer, T0, TestApp, claims, config_yaml, rsa_key};

async fn start() -> (TestApp, KeyServer) {
    let server = KeyServer::start(&[rsa_key("forward-auth-rsa")]).await;
    let app = TestApp::start(&config_yaml(&server, "")).await;
    (app, server)
}

fn token(claims: &Value) -> String {
    rsa_key("forward-auth-rsa").sign(claims)
}

/// Asks `method uri` with `headers` (and the caller key unless `headers` gives another).
async fn ask(
    app: &TestApp,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if !headers.iter().any(|(name, _)| *name == "x-verdict-key") {
        request = request.header("x-verdict-key", CALLER_KEY);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    app.exchange(request.body(Body::empty()).unwrap()).await
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|value| value.to_str().unwrap())
}

#[tokio::test]
async fn an_allow_carries_the_identity_headers_and_the_decision_id() {
    let (app, server) = start().await;
    let bearer = format!("Bearer {}", token(&claims(&server.issuer(), T0)));
    let (status, headers, body) = ask(
        &app,
        "GET",
        "/v1/forward-auth",
        &[
            ("authorization", &bearer),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/orders/42?expand=items"),
            ("x-forwarded-host", "api.example.com"),
            ("x-forwarded-for", "203.0.113.7, 10.0.0.1"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(header(&headers, "x-user-id"), Some("alice"));
    assert_eq!(header(&headers, "x-tenant"), Some("acme"));
    assert!(header(&headers, "x-verdict-decision-id").is_some_and(|id| id.len() == 36));
    assert_eq!(header(&headers, "x-envoy-auth-headers-to-remove"), None);
    assert_eq!(body, json!(""), "an allow has no body");
}

#[tokio::test]
async fn an_allow_names_the_identity_headers_it_does_not_set_for_envoy_to_strip() {
    let (app, server) = start().await;
    let mut without_tenant = claims(&server.issuer(), T0);
    without_tenant.as_object_mut().unwrap().remove("tenant");
    let bearer = format!("Bearer {}", token(&without_tenant));
    let (status, headers, _) = ask(
        &app,
        "GET",
        "/v1/forward-auth/orders/42",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "x-user-id"), Some("alice"));
    assert_eq!(header(&headers, "x-tenant"), None);
    assert_eq!(
        header(&headers, "x-envoy-auth-headers-to-remove"),
        Some("x-tenant")
    );
}

#[tokio::test]
async fn without_forwarded_headers_the_method_and_the_path_after_the_prefix_are_judged() {
    let (app, server) = start().await;
    let bearer = format!("Bearer {}", token(&claims(&server.issuer(), T0)));
    let auth = [("authorization", bearer.as_str())];
    let cases = [
        ("GET", "/v1/forward-auth/orders/42?expand=items", 200),
        ("POST", "/v1/forward-auth/orders", 200),
        // Only the admin role may delete.
        ("DELETE", "/v1/forward-auth/orders/42", 403),
        // Nothing permits `/`.
        ("GET", "/v1/forward-auth", 403),
        ("GET", "/v1/forward-auth/", 403),
        ("GET", "/v1/forward-auth/admin", 403),
    ];
    for (method, uri, expected) in cases {
        let (status, _, body) = ask(&app, method, uri, &auth).await;
        assert_eq!(status.as_u16(), expected, "{method} {uri}: {body}");
    }
}

#[tokio::test]
async fn every_deny_has_its_status_challenge_and_error() {
    let (app, server) = start().await;
    let issuer = server.issuer();
    let read_only = {
        let mut claims = claims(&issuer, T0);
        claims["scope"] = json!("orders:read");
        format!("Bearer {}", token(&claims))
    };
    let expired = format!("Bearer {}", token(&claims(&issuer, T0 - 3600)));
    let cases: [(&str, Option<&str>, u16, &str, &str); 4] = [
        ("GET", None, 401, "", "Bearer realm=\"api\""),
        (
            "GET",
            Some("Bearer not-a-token"),
            401,
            "invalid_token",
            "error=\"invalid_token\"",
        ),
        (
            "GET",
            Some(expired.as_str()),
            401,
            "invalid_token",
            "error=\"invalid_token\"",
        ),
        (
            "POST",
            Some(read_only.as_str()),
            403,
            "insufficient_scope",
            "scope=\"orders:write\"",
        ),
    ];
    for (method, authorization, status, error, challenge) in cases {
        let mut headers = vec![
            ("x-forwarded-method", method),
            ("x-forwarded-uri", "/orders"),
        ];
        if let Some(authorization) = authorization {
            headers.push(("authorization", authorization));
        }
        let (got, answer_headers, body) = ask(&app, "GET", "/v1/forward-auth", &headers).await;
        assert_eq!(got.as_u16(), status, "{authorization:?}: {body}");
        let www_authenticate = header(&answer_headers, "www-authenticate").unwrap_or_default();
        assert!(
            www_authenticate.contains(challenge),
            "{authorization:?}: {www_authenticate}"
        );
        if !error.is_empty() {
            assert_eq!(body["error"], error, "{body}");
        }
        assert!(body["error_description"].is_string(), "{body}");
        assert_eq!(header(&answer_headers, "x-user-id"), None);
        assert_eq!(
            header(&answer_headers, "content-type"),
            Some("application/json")
        );
    }
}

#[tokio::test]
async fn a_proxy_that_fails_caller_authentication_gets_500_not_its_clients_401() {
    let (app, server) = start().await;
    let bearer = format!("Bearer {}", token(&claims(&server.issuer(), T0)));
    for key in ["", "wrong-caller-key-0123456789"] {
        let (status, _, body) = ask(
            &app,
            "GET",
            "/v1/forward-auth/orders/1",
            &[("x-verdict-key", key), ("authorization", &bearer)],
        )
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert_eq!(body["error"], "unauthenticated_caller");
    }
}

#[tokio::test]
async fn headers_the_front_reads_that_come_twice_or_say_nothing_sane_are_refused() {
    let (app, server) = start().await;
    let bearer = format!("Bearer {}", token(&claims(&server.issuer(), T0)));
    let refused: [&[(&str, &str)]; 6] = [
        &[
            ("x-forwarded-uri", "/orders/1"),
            ("x-forwarded-uri", "/admin"),
        ],
        &[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-method", "DELETE"),
        ],
        &[("x-forwarded-uri", "orders/1")],
        &[("x-forwarded-uri", "https://api.example.com/orders/1")],
        &[("x-forwarded-method", "GET /admin")],
        &[("x-forwarded-for", "not-an-address")],
    ];
    for extra in refused {
        let mut headers = vec![("authorization", bearer.as_str())];
        headers.extend_from_slice(extra);
        let (status, _, body) = ask(&app, "GET", "/v1/forward-auth/orders/1", &headers).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{extra:?}: {body}");
        assert_eq!(body["error"], "invalid_request", "{body}");
    }
    let twice = [
        ("authorization", bearer.as_str()),
        ("authorization", "Bearer another"),
    ];
    let (status, _, _) = ask(&app, "GET", "/v1/forward-auth/orders/1", &twice).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn paths_with_another_reading_are_refused_before_the_credential() {
    let (app, server) = start().await;
    let bearer = format!("Bearer {}", token(&claims(&server.issuer(), T0)));
    for uri in [
        "/orders/..;/admin",
        "/orders/%2e%2e/admin",
        "/orders/%2fadmin",
        "//admin",
        "/orders/1%00",
    ] {
        let (status, headers, body) = ask(
            &app,
            "GET",
            "/v1/forward-auth",
            &[("authorization", &bearer), ("x-forwarded-uri", uri)],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(header(&headers, "x-user-id"), None);
    }
}

#[tokio::test]
async fn the_same_request_gets_the_same_decision_as_through_decide() {
    let (app, server) = start().await;
    let issuer = server.issuer();
    let full = format!("Bearer {}", token(&claims(&issuer, T0)));
    let read_only = {
        let mut claims = claims(&issuer, T0);
        claims["scope"] = json!("orders:read");
        format!("Bearer {}", token(&claims))
    };
    let tokens = [full.as_str(), read_only.as_str(), "Bearer garbage", ""];
    let requests = [
        ("GET", "/orders/42"),
        ("POST", "/orders"),
        ("DELETE", "/orders/42"),
        ("GET", "/admin"),
        ("GET", "/orders/%7E1"),
    ];
    for authorization in tokens {
        for (method, path) in requests {
            let decision = app
                .decide(json!({ "authorization": authorization, "method": method, "path": path }))
                .await;
            let mut headers = vec![("x-forwarded-method", method), ("x-forwarded-uri", path)];
            if !authorization.is_empty() {
                headers.push(("authorization", authorization));
            }
            let (status, answer, body) = ask(&app, "GET", "/v1/forward-auth", &headers).await;
            let what = format!("{method} {path} with {authorization:.20}");
            assert_eq!(json!(status.as_u16()), decision["status"], "{what}");
            if decision["allow"] == json!(true) {
                for (name, value) in decision["headers"].as_object().unwrap() {
                    assert_eq!(header(&answer, name), value.as_str(), "{what}");
                }
            } else {
                assert_eq!(body["error"], decision["error"], "{what}");
                assert_eq!(
                    header(&answer, "www-authenticate").unwrap_or_default(),
                    decision["www_authenticate"],
                    "{what}"
                );
            }
        }
    }
}
