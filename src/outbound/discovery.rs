//! OpenID Connect discovery (OpenID Connect Discovery 1.0 §4): the provider's document, fetched for
//! one issuer, and the endpoints Verdict reads from it: `jwks_uri` and `introspection_endpoint`.

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use super::{FetchError, fetchable, get_json, parse_remote_json};

/// An endpoint a discovery document names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `jwks_uri`: the issuer's signing keys.
    Jwks,
    /// `introspection_endpoint` (RFC 8414 §2): where opaque tokens are checked.
    Introspection,
}

impl Endpoint {
    fn field(self) -> &'static str {
        match self {
            Self::Jwks => "jwks_uri",
            Self::Introspection => "introspection_endpoint",
        }
    }
}

/// The fields of a discovery document Verdict reads; the rest is ignored.
#[derive(Deserialize)]
struct Document {
    issuer: String,
    jwks_uri: Option<String>,
    introspection_endpoint: Option<String>,
}

/// `<issuer>/.well-known/openid-configuration`, as §4 builds it from the issuer URL.
pub fn url_for(issuer: &Url) -> Url {
    let mut url = issuer.clone();
    let path = format!(
        "{}/.well-known/openid-configuration",
        issuer.path().trim_end_matches('/')
    );
    url.set_path(&path);
    url
}

/// Fetches the discovery document at `url` and gives the `endpoint` it names for `issuer`. The
/// document must name exactly that issuer (§4.3), and the endpoint must be fetchable (https, or plain
/// http on loopback).
pub async fn endpoint(
    http: &reqwest::Client,
    url: &Url,
    issuer: &str,
    endpoint: Endpoint,
    timeout: Duration,
) -> Result<Url, FetchError> {
    let invalid = |reason: String| FetchError::invalid(url, reason);
    let fetched = get_json(http, url, timeout).await?;
    let document: Document = parse_remote_json(&fetched.body)
        .map_err(|reason| invalid(format!("not a discovery document: {reason}")))?;
    if document.issuer != issuer {
        // The issuer it did name is the remote document's text, and is not repeated.
        return Err(invalid(format!(
            "it names another issuer than `{}`",
            crate::redact::url_credentials(issuer)
        )));
    }
    let field = endpoint.field();
    let named = match endpoint {
        Endpoint::Jwks => document.jwks_uri,
        Endpoint::Introspection => document.introspection_endpoint,
    }
    .ok_or_else(|| invalid(format!("it names no `{field}`")))?;
    let named = Url::parse(&named).map_err(|error| invalid(format!("bad `{field}`: {error}")))?;
    fetchable(&named).map_err(|problem| {
        invalid(format!(
            "`{field}` `{}` {problem}",
            crate::redact::redacted(&named)
        ))
    })?;
    Ok(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_sits_under_the_issuer_path() {
        let url = |issuer: &str| url_for(&Url::parse(issuer).unwrap()).to_string();
        assert_eq!(
            url("https://login.example.com"),
            "https://login.example.com/.well-known/openid-configuration"
        );
        assert_eq!(
            url("https://login.example.com/tenant/v2.0/"),
            "https://login.example.com/tenant/v2.0/.well-known/openid-configuration"
        );
    }
}
