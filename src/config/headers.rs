//! What the decision API writes into headers besides the decision: the `headers:` section, upstream
//! headers set from claims on an allow, and `realm`, the realm of every `WWW-Authenticate` challenge.

use std::collections::BTreeMap;

use axum::http::HeaderName;
use serde_norway::Value;

use super::defaults;
use super::errors::Errors;

/// Validates `headers:`: (header, claim name) pairs in file order, without those whose name is not a
/// header name.
pub(super) fn validate_headers(
    value: Option<Value>,
    errors: &mut Errors,
) -> Vec<(HeaderName, String)> {
    let Some(raw) = errors.section::<BTreeMap<String, String>>("headers", value) else {
        return Vec::new();
    };
    let mut headers = Vec::new();
    for (name, claim) in raw {
        match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
            Ok(header) => headers.push((header, claim)),
            Err(_) => errors.push(
                format!("headers.{name}"),
                format!("`{name}` is not a valid header name"),
            ),
        }
    }
    headers
}

/// Validates `realm`, which is quoted into challenges as it is written.
pub(super) fn validate_realm(realm: Option<String>, errors: &mut Errors) -> String {
    let realm = realm.unwrap_or_else(|| defaults::REALM.to_owned());
    if realm.is_empty()
        || realm
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        errors.push(
            "realm",
            "must be non-empty, without quotes, backslashes or control characters",
        );
    }
    realm
}
