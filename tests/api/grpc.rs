//! The gRPC fronts on a real `verdict serve`: Envoy's ext_authz `Check` and Apigee's ExternalCallout
//! `ProcessMessage`, over h2c on the port that serves HTTP/1.1 too. Their answers for allow and every
//! deny, caller authentication, messages over the limit or not gRPC at all, and the same decision
//! through every front. (Deadlines and shedding are with the other limits, in `operations`.)

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use serde_json::{Value, json};
use tonic::transport::Channel;
use verdict::fronts::external_callout::proto::MessageContext;
use verdict::fronts::external_callout::proto::external_callout_service_client::ExternalCalloutServiceClient;
use verdict::fronts::external_callout::proto::flow_variable::Value as FlowValue;

use crate::helpers::grpc::{self, Reply};
use crate::helpers::proxy::Stack;
use crate::helpers::{CALLER_KEY, claims, rsa_key, unix_now};

/// An h2c channel to Verdict's API listener.
async fn channel(stack: &Stack) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", stack.verdict_address))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// `message` with the caller key in its metadata, as Envoy's `initial_metadata` sends it.
fn with_key<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-verdict-key", CALLER_KEY.parse().unwrap());
    request
}

async fn check(stack: &Stack, method: &str, path: &str, headers: &[(&str, &str)]) -> CheckResponse {
    AuthorizationClient::new(channel(stack).await)
        .check(with_key(grpc::check_request(method, path, headers)))
        .await
        .unwrap()
        .into_inner()
}

async fn process(
    stack: &Stack,
    verb: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> MessageContext {
    ExternalCalloutServiceClient::new(channel(stack).await)
        .process_message(with_key(grpc::message(verb, path, headers)))
        .await
        .unwrap()
        .into_inner()
}

/// The upstream headers of an allow, each with whether it overwrites; or the denied status, headers and
/// body.
enum Checked {
    Ok {
        code: i32,
        headers: BTreeMap<String, (String, bool)>,
        remove: Vec<String>,
    },
    Denied {
        code: i32,
        status: i32,
        headers: BTreeMap<String, String>,
        body: Value,
    },
}

fn checked(response: CheckResponse) -> Checked {
    let code = response.status.unwrap().code;
    match response.http_response.unwrap() {
        HttpResponse::OkResponse(ok) => Checked::Ok {
            code,
            headers: ok
                .headers
                .into_iter()
                .map(|option| {
                    let header = option.header.unwrap();
                    let overwrites =
                        option.append_action == HeaderAppendAction::OverwriteIfExistsOrAdd as i32;
                    (header.key, (header.value, overwrites))
                })
                .collect(),
            remove: ok.headers_to_remove,
        },
        HttpResponse::DeniedResponse(denied) => Checked::Denied {
            code,
            status: denied.status.unwrap().code,
            headers: denied
                .headers
                .into_iter()
                .map(|option| {
                    let header = option.header.unwrap();
                    (header.key, header.value)
                })
                .collect(),
            body: serde_json::from_str(&denied.body).unwrap(),
        },
        HttpResponse::ErrorResponse(error) => panic!("an error response: {error:?}"),
    }
}

/// The flow variables an answer sets, as JSON values of their types.
fn flow_variables(message: &MessageContext) -> BTreeMap<String, Value> {
    message
        .additional_flow_variables
        .iter()
        .map(|(name, variable)| {
            let value = match variable.value.clone().unwrap() {
                FlowValue::Bool(value) => json!({ "bool": value }),
                FlowValue::Int32(value) => json!({ "int32": value }),
                FlowValue::Int64(value) => json!({ "int64": value }),
                FlowValue::String(value) => json!({ "string": value }),
                FlowValue::Double(value) => json!({ "double": value }),
            };
            (name.clone(), value)
        })
        .collect()
}

/// The header changes an answer makes: `Some(values)` sets, `None` deletes.
fn header_changes(message: &MessageContext) -> BTreeMap<String, Option<Vec<String>>> {
    message
        .request
        .as_ref()
        .unwrap()
        .headers
        .iter()
        .map(|(name, values)| {
            let change = (!values.strings.is_empty()).then(|| values.strings.clone());
            (name.clone(), change)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ext_authz_allows_with_overwriting_headers_and_removes_those_the_decision_does_not_set() {
    let stack = Stack::start("").await;
    let bearer = format!("Bearer {}", stack.token("orders:read"));
    let Checked::Ok {
        code,
        headers,
        remove,
    } = checked(
        check(
            &stack,
            "GET",
            "/orders/42?expand=items",
            &[("authorization", &bearer), ("x-user-id", "mallory")],
        )
        .await,
    )
    else {
        panic!("not an allow")
    };
    assert_eq!(code, 0);
    assert_eq!(headers["x-user-id"], ("alice".to_owned(), true));
    assert_eq!(headers["x-tenant"], ("acme".to_owned(), true));
    assert!(headers["x-verdict-decision-id"].1);
    assert!(remove.is_empty(), "{remove:?}");

    // A token without the tenant claim: x-tenant is not set, so the client's copy is removed.
    let mut untenanted = claims(&stack.issuer.issuer(), unix_now());
    untenanted.as_object_mut().unwrap().remove("tenant");
    let bearer = format!("Bearer {}", rsa_key("proxy-rsa").sign(&untenanted));
    let Checked::Ok {
        headers, remove, ..
    } = checked(
        check(
            &stack,
            "GET",
            "/orders/42",
            &[("authorization", &bearer), ("x-tenant", "globex")],
        )
        .await,
    )
    else {
        panic!("not an allow")
    };
    assert!(!headers.contains_key("x-tenant"), "{headers:?}");
    assert_eq!(remove, ["x-tenant"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn ext_authz_denies_with_the_status_challenge_and_body_under_the_status_code_of_design_9() {
    let stack = Stack::start("").await;
    // No token: 401, UNAUTHENTICATED, with the challenge.
    let Checked::Denied {
        code,
        status,
        headers,
        body,
    } = checked(check(&stack, "GET", "/orders/42", &[]).await)
    else {
        panic!("not a deny")
    };
    assert_eq!((code, status), (16, 401));
    assert!(
        headers["www-authenticate"].starts_with("Bearer"),
        "{headers:?}"
    );
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers.contains_key("x-verdict-decision-id"));
    assert!(body["error_description"].is_string(), "{body}");

    // A token without the scope: 403, PERMISSION_DENIED.
    let bearer = format!("Bearer {}", stack.token("orders:read"));
    let Checked::Denied {
        code, status, body, ..
    } = checked(check(&stack, "POST", "/orders", &[("authorization", &bearer)]).await)
    else {
        panic!("not a deny")
    };
    assert_eq!((code, status), (7, 403), "{body}");

    // A request that cannot be decided on: a 400 deny, INVALID_ARGUMENT, never a gRPC error.
    let Checked::Denied {
        code, status, body, ..
    } = checked(check(&stack, "GET", "orders", &[("authorization", &bearer)]).await)
    else {
        panic!("not a deny")
    };
    assert_eq!((code, status), (3, 400));
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("attributes.request.http.path"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_503_decision_is_a_deny_in_both_grpc_fronts_not_an_error() {
    let stack = Stack::start_without_keys("").await;
    let bearer = format!("Bearer {}", stack.token("orders:read"));
    let Checked::Denied {
        code,
        status,
        headers,
        body,
    } = checked(check(&stack, "GET", "/orders/42", &[("authorization", &bearer)]).await)
    else {
        panic!("not a deny")
    };
    assert_eq!((code, status), (14, 503));
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["error"], "temporarily_unavailable");

    let answer = process(&stack, "GET", "/orders/42", &[("Authorization", &bearer)]).await;
    let variables = flow_variables(&answer);
    assert_eq!(variables["verdict.allow"], json!({ "bool": false }));
    assert_eq!(variables["verdict.status"], json!({ "int32": 503 }));
    assert_eq!(
        variables["verdict.error"],
        json!({ "string": "temporarily_unavailable" })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn external_callout_answers_typed_flow_variables_and_header_changes_in_every_case_variant() {
    let stack = Stack::start("").await;
    let bearer = format!("Bearer {}", stack.token("orders:read"));
    let mut untenanted = claims(&stack.issuer.issuer(), unix_now());
    untenanted.as_object_mut().unwrap().remove("tenant");
    untenanted["scope"] = json!("orders:read");
    let untenanted = format!("Bearer {}", rsa_key("proxy-rsa").sign(&untenanted));

    let answer = process(
        &stack,
        "GET",
        "/orders/42?expand=items",
        &[
            ("Authorization", &bearer),
            ("X-User-Id", "mallory"),
            ("x-user-id", "mallory"),
        ],
    )
    .await;
    let variables = flow_variables(&answer);
    assert_eq!(variables["verdict.allow"], json!({ "bool": true }));
    assert_eq!(variables["verdict.status"], json!({ "int32": 200 }));
    assert_eq!(variables["verdict.subject"], json!({ "string": "alice" }));
    assert_eq!(
        variables["verdict.scope"],
        json!({ "string": "orders:read" })
    );
    assert_eq!(variables["verdict.error"], json!({ "string": "" }));
    assert_eq!(
        variables["verdict.www_authenticate"],
        json!({ "string": "" })
    );
    assert!(
        variables["verdict.cache_ttl"]["int64"].is_i64(),
        "{variables:?}"
    );
    assert!(variables["verdict.decision_id"]["string"].is_string());
    assert!(variables.contains_key("verdict.client_id"));
    assert!(variables.contains_key("verdict.error_description"));
    assert_eq!(
        variables["verdict.header.x-user-id"],
        json!({ "string": "alice" })
    );
    assert_eq!(
        variables["verdict.header.x-tenant"],
        json!({ "string": "acme" })
    );
    let changes = header_changes(&answer);
    let alice = Some(vec!["alice".to_owned()]);
    assert_eq!(changes["X-User-Id"], alice);
    assert_eq!(changes["x-user-id"], alice);
    assert_eq!(changes["x-tenant"], Some(vec!["acme".to_owned()]));
    assert!(!changes.contains_key("Authorization"), "{changes:?}");
    // Apigee's own variables are not written back.
    assert!(
        variables.keys().all(|name| name.starts_with("verdict.")),
        "{variables:?}"
    );

    // An identity header the decision does not set: every case variant the client sent is deleted.
    let answer = process(
        &stack,
        "GET",
        "/orders/42",
        &[("authorization", &untenanted), ("X-TENANT", "globex")],
    )
    .await;
    let changes = header_changes(&answer);
    assert_eq!(changes["X-TENANT"], None, "{changes:?}");
    assert!(!changes.contains_key("x-tenant"), "{changes:?}");

    // A deny: 401 with its challenge; the client's identity headers are deleted all the same.
    let answer = process(&stack, "GET", "/orders/42", &[("x-user-id", "mallory")]).await;
    let variables = flow_variables(&answer);
    assert_eq!(variables["verdict.allow"], json!({ "bool": false }));
    assert_eq!(variables["verdict.status"], json!({ "int32": 401 }));
    assert!(
        variables["verdict.www_authenticate"]["string"]
            .as_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(header_changes(&answer)["x-user-id"], None);

    // 403.
    let answer = process(&stack, "POST", "/orders", &[("authorization", &bearer)]).await;
    assert_eq!(
        flow_variables(&answer)["verdict.status"],
        json!({ "int32": 403 })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn both_services_refuse_a_caller_without_the_key_as_unauthenticated() {
    let stack = Stack::start("").await;
    let channel = channel(&stack).await;
    fn wrong<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("x-verdict-key", "not-the-key".parse().unwrap());
        request
    }
    let mut envoy = AuthorizationClient::new(channel.clone());
    let mut apigee = ExternalCalloutServiceClient::new(channel);
    for request in [
        tonic::Request::new(grpc::check_request("GET", "/orders/1", &[])),
        wrong(grpc::check_request("GET", "/orders/1", &[])),
    ] {
        let status = envoy.check(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    }
    for request in [
        tonic::Request::new(grpc::message("GET", "/orders/1", &[])),
        wrong(grpc::message("GET", "/orders/1", &[])),
    ] {
        let status = apigee.process_message(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_that_cannot_be_decided_on_is_invalid_argument_for_the_external_callout() {
    let stack = Stack::start("").await;
    let mut apigee = ExternalCalloutServiceClient::new(channel(&stack).await);
    let mut without_request = grpc::message("GET", "/orders/1", &[]);
    without_request.request = None;
    let mut bad_verb = grpc::message("GET", "/orders/1", &[]);
    bad_verb.request.as_mut().unwrap().verb = "GE T".into();
    for (message, field) in [(without_request, "request"), (bad_verb, "request.verb")] {
        let status = apigee.process_message(with_key(message)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{status:?}");
    }
}

/// A raw gRPC call over h2c with the caller key.
async fn raw_call(stack: &Stack, path: &str, body: Vec<u8>) -> Reply {
    let url = format!("http://{}{path}", stack.verdict_address);
    grpc::send(&grpc::h2c(), &url, body, &[("x-verdict-key", CALLER_KEY)])
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_over_the_limit_garbage_frames_and_unknown_methods_are_refused_and_serving_goes_on()
 {
    let stack = Stack::start("limits: { max_body_bytes: 4096 }\n").await;
    let bearer = format!("Bearer {}", stack.token("orders:read"));
    let padding = "x".repeat(8 * 1024);
    let oversized = grpc::check_request(
        "GET",
        "/orders/1",
        &[("authorization", &bearer), ("x-padding", &padding)],
    );
    let cases: [(&str, Vec<u8>, i32); 5] = [
        // Over `max_body_bytes`: OUT_OF_RANGE, before any of it is decoded.
        (grpc::CHECK, grpc::framed(&oversized), 11),
        // Not protobuf: INTERNAL (a decode error).
        (grpc::PROCESS_MESSAGE, grpc::frame(&[0xff; 16]), 13),
        // A frame cut short.
        (grpc::CHECK, grpc::frame(&[0x0a; 64])[..20].to_vec(), 13),
        // Compressed, with no encoding agreed: INTERNAL (a protocol error).
        (grpc::CHECK, [&[1u8, 0, 0, 0, 1][..], &[0]].concat(), 13),
        // A method the service does not have: UNIMPLEMENTED.
        (
            "/envoy.service.auth.v3.Authorization/Nope",
            grpc::framed(&grpc::check_request("GET", "/", &[])),
            12,
        ),
    ];
    for (path, body, code) in cases {
        let reply = raw_call(&stack, path, body).await;
        assert_eq!(reply.http_status, 200, "{path}: {reply:?}");
        assert_eq!(reply.code, Some(code), "{path}: {reply:?}");
    }
    // The service goes on: a good call is answered.
    let good = grpc::check_request("GET", "/orders/1", &[("authorization", &bearer)]);
    let reply = raw_call(&stack, grpc::CHECK, grpc::framed(&good)).await;
    assert_eq!(reply.code, Some(0), "{reply:?}");
    let response: CheckResponse = reply.decode();
    assert_eq!(response.status.unwrap().code, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_and_http1_callouts_share_the_port() {
    let stack = Stack::start("").await;
    let bearer = format!("Bearer {}", stack.token("orders:read"));
    let http1 = reqwest::Client::builder().http1_only().build().unwrap();
    for _ in 0..2 {
        let response = http1
            .get(format!(
                "http://{}/v1/forward-auth/orders/1",
                stack.verdict_address
            ))
            .header("x-verdict-key", CALLER_KEY)
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_11);
        assert_eq!(response.status(), 200);
        let Checked::Ok { code, .. } =
            checked(check(&stack, "GET", "/orders/1", &[("authorization", &bearer)]).await)
        else {
            panic!("not an allow")
        };
        assert_eq!(code, 0);
    }
}

/// What every front must agree on for one request.
fn essence(
    allow: bool,
    status: i64,
    error: &str,
    challenge: &str,
    headers: BTreeMap<String, String>,
) -> Value {
    json!({ "allow": allow, "status": status, "error": error, "challenge": challenge,
            "headers": headers })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_token_and_request_get_the_same_decision_through_every_front() {
    let stack = Stack::start("").await;
    let http = reqwest::Client::new();
    let full = format!("Bearer {}", stack.token("orders:read orders:write"));
    let read_only = format!("Bearer {}", stack.token("orders:read"));
    let requests = [
        ("GET", "/orders/42"),
        ("POST", "/orders"),
        ("DELETE", "/orders/42"),
        ("GET", "/admin"),
        ("GET", "/orders/%7E1"),
    ];
    let identity = ["x-user-id", "x-tenant"];
    for authorization in [full.as_str(), read_only.as_str(), "Bearer not.a.token", ""] {
        let headers: Vec<(&str, &str)> = if authorization.is_empty() {
            Vec::new()
        } else {
            vec![("authorization", authorization)]
        };
        for (method, path) in requests {
            let context = format!("{method} {path} with {authorization:.20}");
            let decision = stack.decide(authorization, method, path).await;
            let upstream: BTreeMap<String, String> =
                serde_json::from_value(decision["headers"].clone()).unwrap();
            let expected = essence(
                decision["allow"].as_bool().unwrap(),
                decision["status"].as_i64().unwrap(),
                decision["error"].as_str().unwrap(),
                decision["www_authenticate"].as_str().unwrap(),
                upstream,
            );

            let mut forward = http
                .request(
                    method.parse().unwrap(),
                    format!("http://{}/v1/forward-auth{path}", stack.verdict_address),
                )
                .header("x-verdict-key", CALLER_KEY);
            for (name, value) in &headers {
                forward = forward.header(*name, *value);
            }
            let response = forward.send().await.unwrap();
            let status = response.status().as_u16();
            let challenge = response
                .headers()
                .get("www-authenticate")
                .map(|value| value.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let upstream: BTreeMap<String, String> = identity
                .iter()
                .filter(|_| status == 200)
                .filter_map(|name| {
                    let value = response.headers().get(*name)?.to_str().unwrap();
                    Some(((*name).to_owned(), value.to_owned()))
                })
                .collect();
            let body = response.text().await.unwrap();
            let error = if status == 200 {
                String::new()
            } else {
                serde_json::from_str::<Value>(&body).unwrap()["error"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            };
            let through_forward_auth =
                essence(status == 200, status.into(), &error, &challenge, upstream);
            assert_eq!(through_forward_auth, expected, "forward auth, {context}");

            let through_ext_authz = match checked(check(&stack, method, path, &headers).await) {
                Checked::Ok { headers, .. } => essence(
                    true,
                    200,
                    "",
                    "",
                    headers
                        .into_iter()
                        .filter(|(name, _)| identity.contains(&name.as_str()))
                        .map(|(name, (value, _))| (name, value))
                        .collect(),
                ),
                Checked::Denied {
                    status,
                    headers,
                    body,
                    ..
                } => essence(
                    false,
                    status.into(),
                    body["error"].as_str().unwrap(),
                    headers.get("www-authenticate").map_or("", String::as_str),
                    BTreeMap::new(),
                ),
            };
            assert_eq!(through_ext_authz, expected, "ext_authz, {context}");

            let answer = process(&stack, method, path, &headers).await;
            let variables = flow_variables(&answer);
            let text = |name: &str| variables[name]["string"].as_str().unwrap().to_owned();
            let through_external_callout = essence(
                variables["verdict.allow"]["bool"].as_bool().unwrap(),
                variables["verdict.status"]["int32"].as_i64().unwrap(),
                &text("verdict.error"),
                &text("verdict.www_authenticate"),
                variables
                    .iter()
                    .filter_map(|(name, value)| {
                        let header = name.strip_prefix("verdict.header.")?;
                        Some((header.to_owned(), value["string"].as_str()?.to_owned()))
                    })
                    .collect(),
            );
            assert_eq!(
                through_external_callout, expected,
                "external callout, {context}"
            );
        }
    }
}
