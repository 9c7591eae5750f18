//! Fronts: one module per gateway protocol, each turning its gateway's request into the engine's
//! [`DecisionInput`](crate::decision::DecisionInput) and the engine's
//! [`Decision`](crate::decision::Decision) into its gateway's answer (DESIGN §9). A front holds no
//! policy logic; the engine, credentials and policies know no front.
//!
//! - [`service_callout`]: Apigee's ServiceCallout, `POST /v1/decide` with a JSON description.
//! - [`forward_auth`]: nginx `auth_request`, Traefik `forwardAuth`, HAProxy and Envoy's HTTP ext_authz,
//!   `/v1/forward-auth`, the original request in headers.

pub mod forward_auth;
pub mod service_callout;

use std::net::IpAddr;

/// Which front asked, as the decision log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    ServiceCallout,
    ForwardAuth,
}

impl Front {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ServiceCallout => "service_callout",
            Self::ForwardAuth => "forward_auth",
        }
    }
}

/// The JSON body of a deny or of a callout-level failure (400, 401, 413, 415, 500, 503), wherever a
/// front answers in JSON: `{"error", "error_description"}`.
#[derive(Debug, serde::Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a str,
    pub error_description: &'a str,
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
