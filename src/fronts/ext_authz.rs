//! The Envoy ext_authz front over gRPC (DESIGN §9): `envoy.service.auth.v3.Authorization/Check`, with
//! the client request in `attributes.request.http` and its peer in `attributes.source`, answered with a
//! `CheckResponse`.
//!
//! An allow is `OK` with an `OkHttpResponse`: the upstream headers, overwriting the client's copies,
//! and `headers_to_remove` naming the identity headers the decision does not set. Every deny, a 503
//! included, is a `DeniedHttpResponse` with the decision's status, challenge and JSON error, and the
//! status code of its HTTP status; never a gRPC error, which Envoy's `failure_mode_allow` would turn
//! into an allow. A request that cannot be decided on is a deny too: 400, `INVALID_ARGUMENT`.

use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::rpc;
use http::{HeaderMap, HeaderName, StatusCode};
use tonic::Code;

use super::{ErrorBody, FieldError};
use crate::config::ForwardAuthConfig;
use crate::decision::{Decision, DecisionInput};

/// The client request Envoy describes.
pub fn input(
    check: &CheckRequest,
    settings: &ForwardAuthConfig,
) -> Result<DecisionInput, FieldError> {
    let attributes = check.attributes.as_ref();
    let http = attributes
        .and_then(|attributes| attributes.request.as_ref())
        .and_then(|request| request.http.as_ref())
        .ok_or(FieldError {
            field: "attributes.request.http",
            problem: "must describe the client's HTTP request",
        })?;
    let method = super::method("attributes.request.http.method", &http.method)?;
    let (path, query) = super::path_and_query("attributes.request.http.path", &http.path)?;
    let client = super::client_headers(&headers(http)?, settings)?;
    let client_ip = match attributes
        .and_then(|attributes| attributes.source.as_ref())
        .and_then(|source| source.address.as_ref())
        .and_then(|address| address.address.as_ref())
    {
        Some(Address::SocketAddress(socket)) if !socket.address.is_empty() => Some(
            super::ip_address("attributes.source.address", &socket.address)?,
        ),
        // A pipe, an internal listener, or no address: no client address.
        _ => None,
    };
    // `x-request-id`, which Envoy sets at the edge and logs; else Envoy's own stream id.
    let message_id = if client.request_id.is_empty() {
        http.id.clone()
    } else {
        client.request_id
    };
    Ok(DecisionInput {
        authorization: client.authorization,
        api_key: client.api_key,
        method,
        path,
        host: http.host.clone(),
        query,
        client_ip,
        headers: client.context,
        apigee: Default::default(),
        message_id,
    })
}

/// The client's headers: from `headers`, where Envoy has merged repeated ones, or from `header_map`
/// (Envoy's `encode_raw_headers`), where each copy is its own entry. HTTP/2's pseudo-headers
/// (`:authority`, `:path`, ...), which Envoy sends among them, are read from their own fields instead.
fn headers(http: &HttpRequest) -> Result<HeaderMap, FieldError> {
    let invalid = FieldError {
        field: "attributes.request.http.headers",
        problem: "must be valid HTTP header names and values",
    };
    let mut headers = HeaderMap::new();
    let raw = http
        .header_map
        .iter()
        .flat_map(|map| &map.headers)
        .filter(|header| !header.key.starts_with(':'));
    for header in raw {
        let value = if header.raw_value.is_empty() {
            header.value.as_bytes()
        } else {
            &header.raw_value
        };
        headers.append(
            HeaderName::from_bytes(header.key.as_bytes()).map_err(|_| invalid.clone())?,
            http::HeaderValue::from_bytes(value).map_err(|_| invalid.clone())?,
        );
    }
    for (name, value) in http
        .headers
        .iter()
        .filter(|(name, _)| !name.starts_with(':'))
    {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid.clone())?,
            http::HeaderValue::from_str(value).map_err(|_| invalid.clone())?,
        );
    }
    Ok(headers)
}

/// Envoy's answer: on an allow, `OK` with the upstream headers and, in `headers_to_remove`, those of
/// `identity_headers` the decision does not set; on a deny, the decision's status, challenge and error.
pub fn answer<'a>(
    decision: &Decision,
    identity_headers: impl Iterator<Item = &'a HeaderName>,
) -> CheckResponse {
    let answer = super::answer_headers(decision, identity_headers);
    if decision.allow {
        let ok = OkHttpResponse {
            headers: header_options(&answer.set),
            headers_to_remove: answer.unset.into_iter().map(str::to_owned).collect(),
            ..Default::default()
        };
        CheckResponse {
            status: Some(rpc::Status {
                code: Code::Ok as i32,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::OkResponse(ok)),
            ..Default::default()
        }
    } else {
        denied(
            super::deny_status(decision),
            &answer.set,
            &ErrorBody::of(decision),
        )
    }
}

/// The deny for a request that cannot be decided on: 400 `invalid_request`, naming the part.
pub fn invalid(error: &FieldError) -> CheckResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let description = error.to_string();
    denied(
        StatusCode::BAD_REQUEST,
        &headers,
        &ErrorBody {
            error: "invalid_request",
            error_description: &description,
        },
    )
}

/// A `DeniedHttpResponse` with `status`, `headers` and `body`, under the status code of `status`.
fn denied(status: StatusCode, headers: &HeaderMap, body: &ErrorBody<'_>) -> CheckResponse {
    let code = code_of(status);
    CheckResponse {
        status: Some(rpc::Status {
            code: code as i32,
            message: body.error.to_owned(),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(status.as_u16()),
            }),
            headers: header_options(headers),
            body: body.to_json(),
        })),
        ..Default::default()
    }
}

/// The status code of a deny's HTTP status (DESIGN §9).
fn code_of(status: StatusCode) -> Code {
    match status {
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::BAD_REQUEST => Code::InvalidArgument,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        _ => Code::PermissionDenied,
    }
}

/// `headers` as Envoy's header options, each overwriting any copy the request has.
fn header_options(headers: &HeaderMap) -> Vec<HeaderValueOption> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            Some(HeaderValueOption {
                header: Some(HeaderValue {
                    key: name.as_str().to_owned(),
                    value: value.to_str().ok()?.to_owned(),
                    ..Default::default()
                }),
                append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                ..Default::default()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::{
        self as core, HeaderMap as RawHeaders, SocketAddress,
    };
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{Peer, Request};

    use super::*;

    fn check(http: HttpRequest, source: &str) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    address: Some(core::Address {
                        address: Some(Address::SocketAddress(SocketAddress {
                            address: source.into(),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                }),
                request: Some(Request {
                    http: Some(http),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    fn raw(headers: &[(&str, &str)]) -> Option<RawHeaders> {
        Some(RawHeaders {
            headers: headers
                .iter()
                .map(|(key, value)| HeaderValue {
                    key: (*key).into(),
                    raw_value: value.as_bytes().to_vec(),
                    ..Default::default()
                })
                .collect(),
        })
    }

    #[test]
    fn the_request_is_read_from_the_attributes_with_merged_or_raw_headers() {
        let settings = ForwardAuthConfig::default();
        let merged = HttpRequest {
            id: "req-1".into(),
            method: "post".into(),
            path: "/orders?page=2".into(),
            host: "api.example.com".into(),
            headers: [
                (":method", "POST"),
                ("authorization", "Bearer abc"),
                ("x-api-key", "k"),
                ("x-tenant", "acme"),
            ]
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect(),
            ..Default::default()
        };
        let read = input(&check(merged, "::ffff:10.1.2.3"), &settings).unwrap();
        assert_eq!(read.method, "POST");
        assert_eq!(
            (read.path.as_str(), read.query.as_str()),
            ("/orders", "page=2")
        );
        assert_eq!(read.host, "api.example.com");
        assert_eq!(read.authorization.as_deref(), Some("Bearer abc"));
        assert_eq!(read.api_key.as_deref(), Some("k"));
        assert_eq!(read.headers["x-tenant"], "acme");
        assert_eq!(read.client_ip, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(read.message_id, "req-1");

        // Envoy sends HTTP/2's pseudo-headers among the others when no `allowed_headers` limits them.
        let encoded = HttpRequest {
            id: "14032279302027928674".into(),
            method: "GET".into(),
            path: "/".into(),
            header_map: raw(&[
                (":authority", "api.example.com"),
                (":path", "/"),
                ("authorization", "Bearer raw"),
                ("x-request-id", "r-9"),
            ]),
            ..Default::default()
        };
        let read = input(&check(encoded, ""), &settings).unwrap();
        assert_eq!(read.authorization.as_deref(), Some("Bearer raw"));
        assert_eq!(read.message_id, "r-9");
        assert_eq!(read.client_ip, None);
    }

    #[test]
    fn what_cannot_be_decided_on_is_refused_naming_its_field() {
        let settings = ForwardAuthConfig::default();
        let request = |method: &str, path: &str, header_map| HttpRequest {
            method: method.into(),
            path: path.into(),
            header_map,
            ..Default::default()
        };
        let cases = [
            (
                check(request("GET", "orders", None), ""),
                "attributes.request.http.path",
            ),
            (
                check(request("GE T", "/", None), ""),
                "attributes.request.http.method",
            ),
            (
                check(request("GET", "/", None), "not-an-ip"),
                "attributes.source.address",
            ),
            (
                // Raw headers keep each copy: two tokens, and which one the upstream sees is not known.
                check(
                    request(
                        "GET",
                        "/",
                        raw(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]),
                    ),
                    "",
                ),
                "authorization",
            ),
            (CheckRequest::default(), "attributes.request.http"),
        ];
        for (check, field) in cases {
            let error = input(&check, &settings).unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
    }
}
