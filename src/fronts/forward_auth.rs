//! The forward-auth front (DESIGN §9): nginx `auth_request`, Traefik `forwardAuth`, the HAProxy Lua
//! action and Envoy's HTTP ext_authz ask `/v1/forward-auth` (or `/v1/forward-auth/<anything>`), with any
//! method and no body, about the client request they hold, which they describe in headers.
//!
//! The original request is rebuilt from, in order: the method from `X-Forwarded-Method`,
//! `X-Original-Method`, else the asking request's own; the URI from `X-Forwarded-Uri`, `X-Original-URI`,
//! else the path after the prefix with its query (Envoy's `path_prefix` mode); the host from
//! `X-Forwarded-Host`, else `Host`; the client address from the first `X-Forwarded-For` entry, else
//! `X-Real-IP`. The client's `Authorization` and API key header come as they are. These headers are
//! trusted because the caller is authenticated, and each proxy's configuration sets them itself. A header
//! the front reads that comes more than once is refused: which copy the upstream would see is not known.
//!
//! An allow is 200 with the upstream headers, `x-verdict-decision-id`, and
//! `x-envoy-auth-headers-to-remove` naming the identity headers the decision does not set; a deny carries
//! the decision's status, its `WWW-Authenticate`, `Retry-After` on a 503, and a JSON error body.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Uri};

use super::{ErrorBody, FieldError, single};
use crate::config::ForwardAuthConfig;
use crate::decision::{Decision, DecisionInput};

/// The path of the front; `PREFIX/<anything>` is the same front.
pub const PREFIX: &str = "/v1/forward-auth";

/// The headers Envoy strips from the client's request when an allow names them in this one.
const HEADERS_TO_REMOVE: HeaderName = HeaderName::from_static("x-envoy-auth-headers-to-remove");

const FORWARDED_METHOD: [&str; 2] = ["x-forwarded-method", "x-original-method"];
const FORWARDED_URI: [&str; 2] = ["x-forwarded-uri", "x-original-uri"];

/// The original request, rebuilt from the asking request's method, URI and headers.
pub fn input(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    settings: &ForwardAuthConfig,
) -> Result<DecisionInput, FieldError> {
    let method = match first_present(headers, FORWARDED_METHOD)? {
        Some((field, value)) => super::method(field, value)?,
        None => method.as_str().to_owned(),
    };
    let (path, query) = match first_present(headers, FORWARDED_URI)? {
        Some((field, value)) => super::path_and_query(field, value)?,
        // The router sends only `PREFIX` and `PREFIX/...` here; what follows the prefix is the path.
        None => (
            uri.path()
                .strip_prefix(PREFIX)
                .unwrap_or_default()
                .to_owned(),
            uri.query().unwrap_or_default().to_owned(),
        ),
    };
    let host = match first_present(headers, ["x-forwarded-host", "host"])? {
        Some((_, host)) => host.to_owned(),
        None => String::new(),
    };
    let client_ip = match single(headers, "x-forwarded-for")? {
        Some(chain) => {
            // The first entry is the client, as the proxy that set the header saw it.
            let first = chain.split(',').next().unwrap_or_default().trim();
            Some(super::ip_address("x-forwarded-for", unbracketed(first))?)
        }
        None => match single(headers, "x-real-ip")? {
            Some(address) => Some(super::ip_address("x-real-ip", unbracketed(address.trim()))?),
            None => None,
        },
    };
    let client = super::client_headers(headers, settings)?;
    Ok(DecisionInput {
        authorization: client.authorization,
        api_key: client.api_key,
        method,
        path,
        host,
        query,
        client_ip,
        headers: client.context,
        apigee: Default::default(),
        message_id: client.request_id,
    })
}

/// The proxy's answer: on an allow, 200 with the upstream headers and, in
/// `x-envoy-auth-headers-to-remove`, those of `identity_headers` the decision does not set; on a deny,
/// the decision's status, challenge and error.
pub fn answer<'a>(
    decision: &Decision,
    identity_headers: impl Iterator<Item = &'a HeaderName>,
) -> Response<String> {
    let answer = super::answer_headers(decision, identity_headers);
    let mut headers = answer.set;
    let (status, body) = if decision.allow {
        // Header names joined by commas make a valid header value.
        if !answer.unset.is_empty()
            && let Ok(value) = HeaderValue::from_str(&answer.unset.join(", "))
        {
            headers.insert(HEADERS_TO_REMOVE, value);
        }
        (StatusCode::OK, String::new())
    } else {
        (
            super::deny_status(decision),
            ErrorBody::of(decision).to_json(),
        )
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The value of the first of `names` that the request has, with its name.
fn first_present<'h, const N: usize>(
    headers: &'h HeaderMap,
    names: [&'static str; N],
) -> Result<Option<(&'static str, &'h str)>, FieldError> {
    for name in names {
        if let Some(value) = single(headers, name)? {
            return Ok(Some((name, value)));
        }
    }
    Ok(None)
}

/// An IPv6 address as `X-Forwarded-For` may write it, in brackets.
fn unbracketed(address: &str) -> &str {
    address
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(address)
}
