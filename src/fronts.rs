//! Fronts: one module per gateway protocol, each turning its gateway's request into the engine's
//! [`DecisionInput`](crate::decision::DecisionInput) and the engine's
//! [`Decision`](crate::decision::Decision) into its gateway's answer (DESIGN §9). A front holds no
//! policy logic; the engine, credentials and policies know no front.
//!
//! - [`service_callout`]: Apigee's ServiceCallout, `POST /v1/decide` with a JSON description.
//! - [`forward_auth`]: nginx `auth_request`, Traefik `forwardAuth`, HAProxy and Envoy's HTTP ext_authz,
//!   `/v1/forward-auth`, the original request in headers.
//! - [`ext_authz`]: Envoy's ext_authz over gRPC, `envoy.service.auth.v3.Authorization/Check`.
//! - [`external_callout`]: Apigee's ExternalCallout over gRPC, `apigee.ExternalCalloutService/ProcessMessage`.
//!
//! The fronts given the client's own headers (all but the ServiceCallout, whose flow picks them) read
//! the credential and `context.headers` from them the one way, [`client_headers`].

pub mod ext_authz;
pub mod external_callout;
pub mod forward_auth;
pub mod service_callout;

use std::collections::BTreeMap;
use std::net::IpAddr;

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::ForwardAuthConfig;
use crate::decision::Decision;

/// Which front asked, as the decision log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    ServiceCallout,
    ForwardAuth,
    ExtAuthz,
    ExternalCallout,
}

impl Front {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ServiceCallout => "service_callout",
            Self::ForwardAuth => "forward_auth",
            Self::ExtAuthz => "ext_authz",
            Self::ExternalCallout => "external_callout",
        }
    }
}

/// The header with the decision's id, on every answer that has headers, to find its record.
const DECISION_ID: HeaderName = HeaderName::from_static("x-verdict-decision-id");

/// `Retry-After` on a 503 deny, in seconds.
const RETRY_AFTER_SECONDS: &str = "1";

/// The JSON body of a deny or of a callout-level failure (400, 401, 413, 415, 500, 503), wherever a
/// front answers in JSON: `{"error", "error_description"}`.
#[derive(Debug, serde::Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a str,
    pub error_description: &'a str,
}

impl<'a> ErrorBody<'a> {
    /// A deny's body.
    fn of(decision: &'a Decision) -> Self {
        Self {
            error: decision.error.as_str(),
            error_description: &decision.error_description,
        }
    }

    /// The body as JSON text.
    fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What a front reads from the client's own headers: the credential, and the headers policies see.
#[derive(Debug, Default)]
struct ClientHeaders {
    /// `Authorization`, unless empty.
    authorization: Option<String>,
    /// The API key header (`forward_auth.api_key_header`), unless empty.
    api_key: Option<String>,
    /// `forward_auth.context_headers` the client sent, by lower-case name; repeated values joined by
    /// `", "`.
    context: BTreeMap<String, String>,
    /// `X-Request-Id`, else empty.
    request_id: String,
}

/// Reads [`ClientHeaders`] from the client's headers. `Authorization`, the API key header and
/// `X-Request-Id` must come once: which copy the upstream would see is not known.
fn client_headers(
    headers: &HeaderMap,
    settings: &ForwardAuthConfig,
) -> Result<ClientHeaders, FieldError> {
    let authorization = single(headers, "authorization")?
        .filter(|value| !value.trim().is_empty())
        .map(str::to_owned);
    let api_key = single_named(
        headers,
        &settings.api_key_header,
        "forward_auth.api_key_header",
    )?
    .filter(|value| !value.is_empty())
    .map(str::to_owned);
    let mut context = BTreeMap::new();
    for name in &settings.context_headers {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .filter(|value| !value.is_empty())
            .collect();
        if !values.is_empty() {
            context.insert(name.as_str().to_owned(), values.join(", "));
        }
    }
    let request_id = single(headers, "x-request-id")?
        .unwrap_or_default()
        .to_owned();
    Ok(ClientHeaders {
        authorization,
        api_key,
        context,
        request_id,
    })
}

/// The one value of header `name`, if present; an error when it comes twice or is not visible ASCII.
fn single<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<Option<&'h str>, FieldError> {
    single_named(headers, &HeaderName::from_static(name), name)
}

/// [`single`] for a header named by the configuration; errors name it by `field`.
fn single_named<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
    field: &'static str,
) -> Result<Option<&'h str>, FieldError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(FieldError {
            field,
            problem: "must be sent once: which copy the upstream would see is not known",
        });
    }
    value.to_str().map(Some).map_err(|_| FieldError {
        field,
        problem: "must be visible ASCII",
    })
}

/// An answer's headers for the upstream.
#[derive(Debug)]
struct Upstream<'a> {
    /// An allow's headers, those valid as HTTP headers; none for a deny.
    set: HeaderMap,
    /// The identity headers the answer leaves unset: the client's copies must still go.
    unset: Vec<&'a str>,
}

/// The upstream headers of `decision`, and those of `identity_headers` it does not set (on a deny,
/// every one).
fn upstream<'a>(
    decision: &Decision,
    identity_headers: impl Iterator<Item = &'a HeaderName>,
) -> Upstream<'a> {
    let mut set = HeaderMap::new();
    let granted = decision.headers.iter().filter(|_| decision.allow);
    for (name, value) in granted {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            set.insert(name, value);
        }
    }
    // A header whose value is not valid is not set: the client's copies must go all the same.
    let unset = identity_headers
        .map(HeaderName::as_str)
        .filter(|name| !set.contains_key(*name))
        .collect();
    Upstream { set, unset }
}

/// The headers of an answer in HTTP terms (forward auth, Envoy's ext_authz): the decision's id, then an
/// allow's upstream headers or a deny's [`deny_headers`]; with the identity headers an allow leaves
/// unset.
fn answer_headers<'a>(
    decision: &Decision,
    identity_headers: impl Iterator<Item = &'a HeaderName>,
) -> Upstream<'a> {
    let mut headers = HeaderMap::new();
    let mut text = uuid::Uuid::encode_buffer();
    let id = decision.decision_id.hyphenated().encode_lower(&mut text);
    if let Ok(id) = HeaderValue::from_str(id) {
        headers.insert(DECISION_ID, id);
    }
    let upstream = upstream(decision, identity_headers);
    if decision.allow {
        headers.extend(upstream.set);
    } else {
        headers.extend(deny_headers(decision));
    }
    Upstream {
        set: headers,
        unset: upstream.unset,
    }
}

/// A deny's status; one that is not an HTTP status is a 500.
fn deny_status(decision: &Decision) -> StatusCode {
    StatusCode::from_u16(decision.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A deny's headers besides its id: `WWW-Authenticate` when it has a challenge, `Retry-After` on a 503,
/// and the type of its JSON body.
fn deny_headers(decision: &Decision) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if !decision.www_authenticate.is_empty()
        && let Ok(challenge) = HeaderValue::from_str(&decision.www_authenticate)
    {
        headers.insert(header::WWW_AUTHENTICATE, challenge);
    }
    if deny_status(decision) == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers
}

/// Splits a request target into its path and query; the path must start with `/`.
fn path_and_query(field: &'static str, target: &str) -> Result<(String, String), FieldError> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !path.starts_with('/') {
        return Err(FieldError {
            field,
            problem: "must be a path starting with `/`, with its query",
        });
    }
    Ok((path.to_owned(), query.to_owned()))
}

/// A part of a front's request that cannot be decided on: a 400, naming the part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {problem}")]
pub struct FieldError {
    pub field: &'static str,
    pub problem: &'static str,
}

/// An HTTP method (RFC 9110 `token`), upper-cased.
fn method(field: &'static str, text: &str) -> Result<String, FieldError> {
    let method = text.trim();
    if method.is_empty() || method.len() > 32 || !method.bytes().all(is_token_char) {
        return Err(FieldError {
            field,
            problem: "must be an HTTP method such as `GET`",
        });
    }
    Ok(method.to_ascii_uppercase())
}

/// A client address; an IPv4-mapped IPv6 address (`::ffff:10.1.2.3`) is its IPv4 address (DESIGN §2).
fn ip_address(field: &'static str, text: &str) -> Result<IpAddr, FieldError> {
    text.parse::<IpAddr>()
        .map(|address| address.to_canonical())
        .map_err(|_| FieldError {
            field,
            problem: "must be an IPv4 or IPv6 address",
        })
}

/// RFC 9110 `tchar`.
fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}
