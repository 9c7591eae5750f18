//! The request path and client address as policies see them (DESIGN §2): one normal form, so that no
//! spelling of a route slips past a policy written for it, and no input Cedar cannot represent turns
//! into a deny that no policy explains.

use serde_json::{Value, json};

use crate::helpers::{KeyServer, T0, TestApp, claims, config_yaml, rsa_key};

/// Reads are allowed everywhere except under `/admin`, and only from 10.0.0.0/8 under `/internal`.
const POLICIES: &str = r#"
@id("read-anything")
permit (principal, action == Action::"GET", resource);

@id("no-admin")
forbid (principal, action, resource) when { resource.path like "/admin*" };

@id("internal-from-the-private-network")
forbid (principal, action, resource)
when { resource.path like "/internal*" && !(context has client_ip && context.client_ip.isInRange(ip("10.0.0.0/8"))) };
"#;

async fn start() -> (TestApp, String) {
    let key = rsa_key("paths-rsa");
    let server = KeyServer::start(&[key]).await;
    let app = TestApp::start_with_policies(&config_yaml(&server, ""), POLICIES).await;
    let token = key.sign(&claims(&server.issuer(), T0));
    (app, token)
}

async fn decide(app: &TestApp, token: &str, fields: Value) -> Value {
    let mut body = json!({ "authorization": format!("Bearer {token}"), "method": "GET" });
    body.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    app.decide(body).await
}

#[tokio::test]
async fn encoded_spellings_of_a_forbidden_route_are_that_route() {
    let (app, token) = start().await;
    for path in [
        "/admin",
        "/%61dmin",
        "/adm%69n",
        "/%61%64%6D%69%6E/users",
        "/admin;jsessionid=1",
        "/admin%3Bx",
    ] {
        let decision = decide(&app, &token, json!({ "path": path })).await;
        assert_eq!(
            (decision["status"].clone(), decision["policies"].clone()),
            (json!(403), json!(["no-admin"])),
            "{path}: {decision}"
        );
    }
    for path in ["/orders/42", "/%6Frders/42", "/Admin", "/adminx%2Dy/../"] {
        let decision = decide(&app, &token, json!({ "path": path })).await;
        let expected = if path.contains("..") { 400 } else { 200 };
        assert_eq!(decision["status"], expected, "{path}: {decision}");
    }
}

#[tokio::test]
async fn paths_a_backend_resolves_to_another_route_are_refused_before_any_policy() {
    let (app, token) = start().await;
    for path in [
        "/orders/..;/admin",
        "/orders/..;a=b/admin",
        "/orders/.;/admin",
        "/orders/%2e%2e;/admin",
        "/orders/%2E./admin",
        "//admin",
        "/;x/admin",
        "/orders/%2fadmin",
        "/orders/%5c../admin",
        "/orders/\u{1b}[2J",
        "/orders/%7F",
    ] {
        let decision = decide(&app, &token, json!({ "path": path })).await;
        assert_eq!(
            (decision["status"].clone(), decision["error"].clone()),
            (json!(400), json!("invalid_request")),
            "{path}: {decision}"
        );
        assert_eq!(decision["policies"], json!([]), "{path}: {decision}");
    }
}

#[tokio::test]
async fn an_empty_path_is_the_root() {
    let (app, token) = start().await;
    let decision = decide(&app, &token, json!({ "path": "" })).await;
    assert_eq!(decision["allow"], true, "{decision}");
    assert_eq!(decision["policies"], json!(["read-anything"]));
}

#[tokio::test]
async fn an_ipv4_mapped_address_is_its_ipv4_address() {
    let (app, token) = start().await;
    for (client_ip, allow) in [
        ("10.1.2.3", true),
        ("::ffff:10.1.2.3", true),
        ("::FFFF:a01:203", true),
        ("0:0:0:0:0:ffff:10.1.2.3", true),
        ("::ffff:192.0.2.1", false),
        ("192.0.2.1", false),
        ("2001:db8::1", false),
        ("::10.1.2.3", false),
    ] {
        let decision = decide(
            &app,
            &token,
            json!({ "path": "/internal/x", "client_ip": client_ip }),
        )
        .await;
        assert_eq!(decision["allow"], allow, "{client_ip}: {decision}");
        let policies = if allow {
            json!(["read-anything"])
        } else {
            json!(["internal-from-the-private-network"])
        };
        assert_eq!(
            decision["policies"], policies,
            "every deny names the policy behind it: {client_ip}: {decision}"
        );
    }
}
