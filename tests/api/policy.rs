//! The Cedar entity model of DESIGN §4, exercised through real decisions: principal kinds, scopes,
//! roles as parents, claims, the route and its Apigee fields, the context, and which policies determined
//! a decision.

use serde_json::{Value, json};

use crate::helpers::{KeyServer, T0, TestApp, claims, config_yaml, rsa_key};

const POLICIES: &str = r#"
@id("users-read-with-scope")
permit (principal is User, action == Action::"GET", resource)
when { principal.scopes.contains("orders:read") && resource.path like "/orders/*" };

@id("admins-delete")
permit (principal in Role::"admin", action == Action::"DELETE", resource);

@id("clients-in-product")
permit (principal is Client, action == Action::"POST", resource)
when { resource.apigee.product == "orders-product" && principal.client_id == "batch-job" };

@id("office-network-reports")
permit (principal, action == Action::"GET", resource == Route::"/reports")
when { context has client_ip && context.client_ip.isInRange(ip("10.0.0.0/8")) };

@id("tenant-header-must-match")
forbid (principal, action, resource)
when { context.headers has "x-tenant" && context.headers["x-tenant"] != principal.claims.tenant };

@id("business-hours-exports")
permit (principal, action == Action::"GET", resource == Route::"/exports")
when { context.time.hour >= 8 && context.time.hour < 18 && context.token.kid == "k1" };
"#;

struct Case {
    name: &'static str,
    claims: Value,
    request: Value,
    allow: bool,
    policies: &'static [&'static str],
}

#[tokio::test]
async fn the_entity_model_reaches_the_policies() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let app = TestApp::start_with_policies(&config_yaml(&server, ""), POLICIES).await;
    let base = claims(&server.issuer(), T0);
    let with = |changes: Value| {
        let mut claims = base.clone();
        for (name, value) in changes.as_object().into_iter().flatten() {
            if value.is_null() {
                claims.as_object_mut().map(|c| c.remove(name));
            } else {
                claims[name] = value.clone();
            }
        }
        claims
    };
    let get = |path: &str| json!({ "method": "GET", "path": path });

    let cases = [
        Case {
            name: "scope grants a read",
            claims: with(json!({})),
            request: get("/orders/1"),
            allow: true,
            policies: &["users-read-with-scope"],
        },
        Case {
            name: "no scope, no read",
            claims: with(json!({ "scope": "profile" })),
            request: get("/orders/1"),
            allow: false,
            policies: &[],
        },
        Case {
            name: "scp array as scopes",
            claims: with(json!({ "scope": null, "scp": ["orders:read"] })),
            request: get("/orders/1"),
            allow: true,
            policies: &["users-read-with-scope"],
        },
        Case {
            name: "roles claim makes Role parents",
            claims: with(json!({ "roles": ["admin"] })),
            request: json!({ "method": "delete", "path": "/orders/1" }),
            allow: true,
            policies: &["admins-delete"],
        },
        Case {
            name: "groups claim also works",
            claims: with(json!({ "groups": ["admin"] })),
            request: json!({ "method": "DELETE", "path": "/orders/1" }),
            allow: true,
            policies: &["admins-delete"],
        },
        Case {
            name: "no role, no delete",
            claims: with(json!({})),
            request: json!({ "method": "DELETE", "path": "/orders/1" }),
            allow: false,
            policies: &[],
        },
        Case {
            name: "client credentials become a Client restricted to its product",
            claims: with(json!({ "sub": null, "client_id": "batch-job" })),
            request: json!({ "method": "POST", "path": "/orders", "apigee": { "product": "orders-product" } }),
            allow: true,
            policies: &["clients-in-product"],
        },
        Case {
            name: "a client whose sub is its own id is a Client too",
            claims: with(json!({ "sub": "batch-job", "client_id": "batch-job" })),
            request: json!({ "method": "POST", "path": "/orders", "apigee": { "product": "orders-product" } }),
            allow: true,
            policies: &["clients-in-product"],
        },
        Case {
            name: "a client outside the product is denied",
            claims: with(json!({ "sub": null, "client_id": "batch-job" })),
            request: json!({ "method": "POST", "path": "/orders", "apigee": { "product": "other" } }),
            allow: false,
            policies: &[],
        },
        Case {
            name: "client_ip is an ipaddr",
            claims: with(json!({})),
            request: json!({ "method": "GET", "path": "/reports", "client_ip": "10.1.2.3" }),
            allow: true,
            policies: &["office-network-reports"],
        },
        Case {
            name: "outside the range",
            claims: with(json!({})),
            request: json!({ "method": "GET", "path": "/reports", "client_ip": "192.0.2.1" }),
            allow: false,
            policies: &[],
        },
        Case {
            name: "no client_ip: the permit does not apply",
            claims: with(json!({})),
            request: get("/reports"),
            allow: false,
            policies: &[],
        },
        Case {
            name: "a forbid on a header overrides a permit and is reported",
            claims: with(json!({})),
            request: json!({ "method": "GET", "path": "/orders/1", "headers": { "X-Tenant": "globex" } }),
            allow: false,
            policies: &["tenant-header-must-match"],
        },
        Case {
            name: "an empty header value is a header the client did not send",
            claims: with(json!({})),
            request: json!({ "method": "GET", "path": "/orders/1", "headers": { "x-tenant": "" } }),
            allow: true,
            policies: &["users-read-with-scope"],
        },
        Case {
            name: "header names are matched case-insensitively",
            claims: with(json!({})),
            request: json!({ "method": "GET", "path": "/orders/1", "headers": { "X-TENANT": "acme" } }),
            allow: true,
            policies: &["users-read-with-scope"],
        },
        Case {
            name: "time and token facts are in the context (T0 is 08:00 UTC)",
            claims: with(json!({})),
            request: get("/exports"),
            allow: true,
            policies: &["business-hours-exports"],
        },
    ];

    for case in cases {
        let token = key.sign(&case.claims);
        let mut request = case.request.clone();
        request["authorization"] = json!(format!("Bearer {token}"));
        let decision = app.decide(request).await;
        assert_eq!(
            decision["allow"],
            json!(case.allow),
            "{}: {decision}",
            case.name
        );
        assert_eq!(
            decision["policies"],
            json!(case.policies),
            "{}: {decision}",
            case.name
        );
        let expected_status = if case.allow { 200 } else { 403 };
        assert_eq!(
            decision["status"],
            json!(expected_status),
            "{}: {decision}",
            case.name
        );
    }
}

#[tokio::test]
async fn an_allow_carries_the_principal_and_the_mapped_headers() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let app = TestApp::start(&config_yaml(&server, "")).await;
    let mut claims = claims(&server.issuer(), T0);
    claims["client_id"] = json!("mobile-app");
    let decision = app.decide_token(&key.sign(&claims)).await;

    assert_eq!(decision["allow"], json!(true), "{decision}");
    assert_eq!(decision["subject"], json!("alice"));
    assert_eq!(decision["client_id"], json!("mobile-app"));
    assert_eq!(decision["issuer"], json!(server.issuer()));
    assert_eq!(decision["scope"], json!("orders:read orders:write"));
    assert_eq!(
        decision["headers"],
        json!({ "x-user-id": "alice", "x-tenant": "acme" })
    );
    assert_eq!(decision["cache_ttl"], json!(60));
    assert_eq!(decision["www_authenticate"], json!(""));
    let id = decision["decision_id"].as_str().unwrap_or_default();
    assert_eq!(
        uuid::Uuid::parse_str(id).map(|u| u.get_version_num()).ok(),
        Some(7),
        "{id}"
    );
}

const ANNOTATED: &str = r#"
@id("read")
@scope("orders:read")
permit (principal, action == Action::"GET", resource) when { principal.scopes.contains("orders:read") };

@id("write")
@scope("orders:write orders:audit")
permit (principal, action == Action::"POST", resource)
when { principal.scopes.contains("orders:write") && principal.scopes.contains("orders:audit") };

@id("fresh-token-for-refunds")
@error("invalid_token")
@description("refunds need a token issued in the last 5 minutes")
forbid (principal, action, resource == Route::"/refunds")
when { context.time.unix - context.token.iat > 300 };

@id("no-acme-deletes")
forbid (principal, action == Action::"DELETE", resource) when { principal.tenant == "acme" };
"#;

#[tokio::test]
async fn annotations_decide_what_a_deny_reports() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let app = TestApp::start_with_policies(&config_yaml(&server, ""), ANNOTATED).await;
    let realm = "Bearer realm=\"api\"";
    let cases = [
        (
            "a permit that would apply with its scope: insufficient_scope naming it",
            json!({ "scope": "orders:read" }),
            "POST",
            "/orders",
            (403, "insufficient_scope", "write"),
            format!(
                "{realm}, error=\"insufficient_scope\", error_description=\"the token lacks a scope this route requires\", scope=\"orders:write orders:audit\""
            ),
        ),
        (
            "no scope at all: the first permit that would apply answers",
            json!({ "scope": "" }),
            "GET",
            "/orders",
            (403, "insufficient_scope", "read"),
            format!(
                "{realm}, error=\"insufficient_scope\", error_description=\"the token lacks a scope this route requires\", scope=\"orders:read\""
            ),
        ),
        (
            "an annotated forbid: its error, status and description",
            json!({ "scope": "orders:read", "iat": T0 - 600 }),
            "GET",
            "/refunds",
            (401, "invalid_token", "fresh-token-for-refunds"),
            format!(
                "{realm}, error=\"invalid_token\", error_description=\"refunds need a token issued in the last 5 minutes\""
            ),
        ),
        (
            "a plain forbid: access_denied without a challenge",
            json!({ "scope": "orders:read" }),
            "DELETE",
            "/orders/1",
            (403, "access_denied", "no-acme-deletes"),
            String::new(),
        ),
    ];
    for (name, overrides, method, path, (status, error, policy), challenge) in cases {
        let mut token_claims = claims(&server.issuer(), T0);
        for (claim, value) in overrides.as_object().unwrap() {
            token_claims[claim] = value.clone();
        }
        let token = key.sign(&token_claims);
        let decision = app
            .decide(json!({ "authorization": format!("Bearer {token}"), "method": method, "path": path }))
            .await;
        assert_eq!(decision["allow"], false, "{name}: {decision}");
        assert_eq!(decision["status"], status, "{name}: {decision}");
        assert_eq!(decision["error"], error, "{name}: {decision}");
        assert_eq!(decision["policies"], json!([policy]), "{name}: {decision}");
        assert_eq!(
            decision["www_authenticate"], challenge,
            "{name}: {decision}"
        );
    }
}

/// A proxy reuses an allow for the same credential, method and path (`cache_ttl`), so a policy set
/// that reads anything else of the request gets a `cache_ttl` of 0: the next request on the route
/// may differ where the policy looks.
#[tokio::test]
async fn an_allow_is_reusable_only_when_the_policies_read_no_more_than_the_route() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let token = key.sign(&claims(&server.issuer(), T0));
    let request = json!({
        "authorization": format!("Bearer {token}"),
        "method": "GET",
        "path": "/orders/42",
        "host": "api.example.com",
        "query": "a=1",
        "client_ip": "10.1.2.3",
        "headers": { "x-tenant": "acme" },
        "apigee": { "product": "gold" },
    });
    let cases = [
        (
            r#"resource.segments["0"] == "orders" && context.token.kid == "k1""#,
            60,
        ),
        (r#"principal.claims.tenant == "acme""#, 60),
        (r#"resource.host == "api.example.com""#, 0),
        (r#"context.query == "a=1""#, 0),
        (r#"context.client_ip.isInRange(ip("10.0.0.0/8"))"#, 0),
        (r#"context.headers["x-tenant"] == "acme""#, 0),
        (r#"resource.apigee.product == "gold""#, 0),
        (r#"context.time.unix > 0"#, 0),
    ];
    for (condition, ttl) in cases {
        let policies = format!("permit (principal, action, resource) when {{ {condition} }};");
        let app = TestApp::start_with_policies(&config_yaml(&server, ""), &policies).await;
        let decision = app.decide(request.clone()).await;
        assert_eq!(decision["allow"], json!(true), "{condition}: {decision}");
        assert_eq!(decision["cache_ttl"], json!(ttl), "{condition}: {decision}");
    }
}
