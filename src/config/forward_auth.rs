//! The `forward_auth:` section: what the forward-auth front (nginx, Traefik, HAProxy, Envoy's HTTP
//! ext_authz) takes from the original request besides the headers DESIGN §9 names: the header with the
//! client's API key, and the headers policies see as `context.headers`.

use http::HeaderName;
use serde_norway::Value;

use super::errors::Errors;
use super::{defaults, raw};

/// The forward-auth front's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuthConfig {
    /// The header carrying an end-user API key, used when there is no bearer token.
    pub api_key_header: HeaderName,
    /// The client headers copied into `context.headers`, in file order.
    pub context_headers: Vec<HeaderName>,
}

impl Default for ForwardAuthConfig {
    fn default() -> Self {
        Self {
            api_key_header: HeaderName::from_static(defaults::FORWARD_AUTH_API_KEY_HEADER),
            context_headers: defaults::FORWARD_AUTH_CONTEXT_HEADERS
                .iter()
                .map(|name| HeaderName::from_static(name))
                .collect(),
        }
    }
}

/// Validates `forward_auth:`; its defaults when it is absent or wrong.
pub(super) fn validate_forward_auth(
    value: Option<Value>,
    errors: &mut Errors,
) -> ForwardAuthConfig {
    let defaults = ForwardAuthConfig::default();
    let Some(raw) = errors.section::<raw::ForwardAuth>("forward_auth", value) else {
        return defaults;
    };
    let mut header = |path: String, name: &str| match HeaderName::from_bytes(name.as_bytes()) {
        Ok(header) => Some(header),
        Err(_) => {
            errors.push(path, format!("`{name}` is not a valid header name"));
            None
        }
    };
    let api_key_header = raw
        .api_key_header
        .and_then(|name| header("forward_auth.api_key_header".to_owned(), &name))
        .unwrap_or(defaults.api_key_header);
    let context_headers = match raw.context_headers {
        None => defaults.context_headers,
        Some(names) => names
            .iter()
            .enumerate()
            .filter_map(|(index, name)| {
                header(format!("forward_auth.context_headers[{index}]"), name)
            })
            .collect(),
    };
    ForwardAuthConfig {
        api_key_header,
        context_headers,
    }
}
