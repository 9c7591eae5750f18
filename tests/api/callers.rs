//! Callers proving themselves with a Google-signed ID token (Apigee's `GoogleIDToken` authentication to
//! Cloud Run), against a loopback key server standing in for Google.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::grpc::{self, Reply};
use crate::helpers::{CALLER_KEY, KeyServer, T0, TestApp, config_yaml, rsa_key};

const AUDIENCE: &str = "https://verdict-abc.a.run.app";
const APIGEE: &str = "apigee@project.iam.gserviceaccount.com";

/// The claims of the ID token Apigee sends for its service account.
fn id_token_claims(google: &KeyServer) -> Value {
    json!({ "iss": google.issuer(), "aud": AUDIENCE, "sub": "1234567890", "email": APIGEE,
            "email_verified": true, "iat": T0, "exp": T0 + 3600, "azp": "1234567890" })
}

/// A configuration trusting `idp` whose callers are the caller key and Google ID tokens signed by
/// `google`'s keys, with `extra` in `callers.google_id_token`.
fn with_google_callers(idp: &KeyServer, google: &KeyServer, extra: &str) -> String {
    let callers = format!(
        "callers:\n  api_keys:\n    keys: [\"{CALLER_KEY}\"]\n  google_id_token:\n    audience: \"{AUDIENCE}\"\n    emails: [\"{APIGEE}\"]\n    issuer: \"{}\"\n    jwks_uri: \"{}\"\n{extra}",
        google.issuer(),
        google.jwks_uri()
    );
    let yaml = config_yaml(idp, "").replace(
        &format!("callers:\n  api_keys:\n    keys: [\"{CALLER_KEY}\"]"),
        &callers,
    );
    assert!(yaml.contains("google_id_token"));
    yaml
}

async fn call(app: &TestApp, headers: &[(&str, String)]) -> (StatusCode, Value) {
    let mut request = Request::post("/v1/decide").header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let body = json!({ "method": "GET", "path": "/orders/1" }).to_string();
    app.send(request.body(Body::from(body)).unwrap()).await
}

#[tokio::test]
async fn a_google_id_token_for_the_service_from_an_allowed_account_admits_the_caller() {
    let google_key = rsa_key("google-1");
    let google = KeyServer::start(&[google_key]).await;
    let idp = KeyServer::start(&[rsa_key("k1")]).await;
    let app = TestApp::start(&with_google_callers(&idp, &google, "")).await;
    let (_, readyz) = app.readyz().await;
    assert_eq!(readyz["issuers"].as_array().unwrap().len(), 2, "{readyz}");

    let bearer = |claims: &Value| {
        (
            "authorization",
            format!("Bearer {}", google_key.sign(claims)),
        )
    };
    let (status, decision) = call(&app, &[bearer(&id_token_claims(&google))]).await;
    assert_eq!(status, StatusCode::OK, "{decision}");
    assert_eq!(
        decision["status"], 401,
        "a decision, for a request without a client token"
    );

    let with = |field: &str, value: Value| {
        let mut claims = id_token_claims(&google);
        claims[field] = value;
        claims
    };
    let refused = [
        (
            "another audience",
            vec![bearer(&with("aud", json!("https://other.a.run.app")))],
        ),
        (
            "an account not on the list",
            vec![bearer(&with(
                "email",
                json!("intruder@p.iam.gserviceaccount.com"),
            ))],
        ),
        (
            "an unverified email",
            vec![bearer(&with("email_verified", json!(false)))],
        ),
        (
            "no email",
            vec![bearer(&{
                let mut claims = id_token_claims(&google);
                claims.as_object_mut().unwrap().remove("email");
                claims
            })],
        ),
        ("expired", vec![bearer(&with("exp", json!(T0 - 120)))]),
        (
            "another issuer",
            vec![bearer(&with("iss", json!("https://accounts.example.com")))],
        ),
        (
            "signed by a key Google does not publish",
            vec![(
                "authorization",
                format!(
                    "Bearer {}",
                    rsa_key("other").sign(&id_token_claims(&google))
                ),
            )],
        ),
        ("no token", vec![]),
        (
            "a wrong caller key",
            vec![("x-verdict-key", "wrong-caller-key-0123456789".to_owned())],
        ),
    ];
    for (name, headers) in refused {
        let (status, body) = call(&app, &headers).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: {body}");
        assert_eq!(body["error"], "unauthenticated_caller", "{name}");
    }

    // The caller key, configured beside it, still admits on its own.
    let (status, _) = call(&app, &[("x-verdict-key", CALLER_KEY.to_owned())]).await;
    assert_eq!(status, StatusCode::OK);
}

/// Apigee's ExternalCallout can add no metadata: on Cloud Run its `GoogleIDToken` goes in the call's
/// `authorization` metadata, or in the header its `<HeaderName>` names.
#[tokio::test]
async fn a_grpc_caller_is_admitted_by_its_id_token_in_the_configured_metadata() {
    use tower::ServiceExt as _;
    let google_key = rsa_key("google-1");
    let google = KeyServer::start(&[google_key]).await;
    let idp = KeyServer::start(&[rsa_key("k1")]).await;
    let id_token = format!("Bearer {}", google_key.sign(&id_token_claims(&google)));
    let message = grpc::framed(&grpc::message("GET", "/orders/1", &[]));
    let code = |app: &TestApp, metadata: Vec<(&str, &str)>| {
        let request = grpc::request(grpc::PROCESS_MESSAGE, message.clone(), &metadata);
        let router = verdict::api::router(app.state.clone());
        async move {
            Reply::read(router.oneshot(request).await.unwrap())
                .await
                .code
        }
    };

    let app = TestApp::start(&with_google_callers(&idp, &google, "")).await;
    assert_eq!(
        code(&app, vec![("authorization", &id_token)]).await,
        Some(0)
    );
    assert_eq!(
        code(&app, vec![]).await,
        Some(16),
        "no token: UNAUTHENTICATED"
    );

    let app = TestApp::start(&with_google_callers(
        &idp,
        &google,
        "    header: X-Apigee-Id-Token\n",
    ))
    .await;
    assert_eq!(
        code(&app, vec![("x-apigee-id-token", &id_token)]).await,
        Some(0)
    );
    assert_eq!(
        code(&app, vec![("authorization", &id_token)]).await,
        Some(16),
        "only the configured header carries the caller's token"
    );
    let (status, _) = call(&app, &[("x-apigee-id-token", id_token.clone())]).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the JSON callout reads the same header"
    );
}
