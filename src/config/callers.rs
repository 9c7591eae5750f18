//! The `callers:` section: who may call the decision API (DESIGN §5), by caller API key, Google-signed
//! ID token, or client certificate.

use std::path::{Path, PathBuf};

use axum::http::HeaderName;
use jsonwebtoken::Algorithm;
use reqwest::Url;
use serde_norway::Value;

use super::errors::Errors;
use super::issuers::{ClaimNames, IssuerConfig, JwksRefresh, KeySource, check_fetchable};
use super::secret::Secret;
use super::{defaults, raw};

/// Who may call the decision API (DESIGN §5).
#[derive(Debug, PartialEq, Eq)]
pub struct Callers {
    pub api_keys: Option<CallerApiKeys>,
    /// Callers proving themselves with a Google-signed ID token (Apigee to Cloud Run).
    pub google_id_token: Option<GoogleIdTokenCallers>,
    /// Callers proving themselves with a client certificate (mutual TLS on the listener).
    pub mtls: Option<MtlsCallers>,
    pub allow_unauthenticated: bool,
}

/// Caller API keys: any of `keys` in `header` authenticates the caller.
#[derive(Debug, PartialEq, Eq)]
pub struct CallerApiKeys {
    pub header: HeaderName,
    pub keys: Vec<Secret>,
}

/// Mutual TLS callers: certificates chained to `ca`; with `allowed_subjects`, only those matching one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtlsCallers {
    pub ca: PathBuf,
    pub allowed_subjects: Vec<String>,
}

/// Google ID token callers: tokens of `issuer` (Google's by default) for `audience`, whose verified
/// `email` is one of `emails`, sent as a bearer token in `header`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleIdTokenCallers {
    pub issuer: IssuerConfig,
    pub emails: Vec<String>,
    /// `Authorization`, or the header Apigee's `<GoogleIDToken><HeaderName>` names.
    pub header: HeaderName,
}

/// The header named `text` at `path` (case-insensitive), `default` when absent.
fn header_name(
    text: Option<&str>,
    default: &str,
    path: &str,
    errors: &mut Errors,
) -> Option<HeaderName> {
    let text = text.unwrap_or(default);
    match HeaderName::from_bytes(text.to_ascii_lowercase().as_bytes()) {
        Ok(header) => Some(header),
        Err(_) => {
            errors.push(path, format!("`{text}` is not a valid header name"));
            None
        }
    }
}

/// Validates `callers.google_id_token`, with the issuer its tokens are verified against: Google's,
/// unless `issuer` and `jwks_uri` name another.
fn validate_google_id_token(
    raw: raw::GoogleIdToken,
    errors: &mut Errors,
) -> Option<GoogleIdTokenCallers> {
    let path = "callers.google_id_token";
    let before = errors.0.len();
    if raw.audience.is_empty() {
        errors.push(
            format!("{path}.audience"),
            "must not be empty (the service URL)",
        );
    }
    if raw.emails.is_empty() || raw.emails.iter().any(String::is_empty) {
        errors.push(
            format!("{path}.emails"),
            "list the service accounts allowed to call, e.g. apigee@project.iam.gserviceaccount.com",
        );
    }
    let issuer = raw
        .issuer
        .unwrap_or_else(|| defaults::GOOGLE_ISSUER.to_owned());
    let jwks = raw
        .jwks_uri
        .unwrap_or_else(|| defaults::GOOGLE_JWKS_URI.to_owned());
    let jwks_uri = match Url::parse(&jwks) {
        Ok(url) => {
            check_fetchable(&url, &jwks, &format!("{path}.jwks_uri"), errors);
            Some(url)
        }
        Err(error) => {
            errors.push(
                format!("{path}.jwks_uri"),
                format!("`{jwks}` is not a URL: {error}"),
            );
            None
        }
    };
    let header = header_name(
        raw.header.as_deref(),
        defaults::GOOGLE_ID_TOKEN_HEADER,
        &format!("{path}.header"),
        errors,
    );
    if errors.0.len() > before {
        return None;
    }
    Some(GoogleIdTokenCallers {
        header: header?,
        issuer: IssuerConfig {
            name: "google_id_token caller".to_owned(),
            issuer,
            audiences: vec![raw.audience],
            keys: KeySource::JwksUri(jwks_uri?),
            algorithms: vec![Algorithm::RS256],
            leeway: defaults::LEEWAY,
            max_token_age: None,
            required_typ: None,
            claims: ClaimNames::default(),
            shared_secret: None,
            jwks_refresh: JwksRefresh::default(),
            introspection: None,
        },
        emails: raw.emails,
    })
}

/// Validates `callers:`; `None` when the section itself cannot be read.
pub(super) fn validate_callers(
    value: Option<Value>,
    base_dir: &Path,
    errors: &mut Errors,
) -> Option<Callers> {
    let raw = errors.section::<raw::Callers>("callers", value)?;
    let api_keys = match raw.api_keys {
        None => None,
        Some(api_keys) => {
            let header = header_name(
                api_keys.header.as_deref(),
                defaults::CALLER_KEY_HEADER,
                "callers.api_keys.header",
                errors,
            );
            if api_keys.keys.is_empty() {
                errors.push("callers.api_keys.keys", "at least one key is required");
            }
            for (index, key) in api_keys.keys.iter().enumerate() {
                if key.len() < 16 {
                    errors.push(
                        format!("callers.api_keys.keys[{index}]"),
                        "a caller key must be at least 16 characters",
                    );
                }
            }
            header.map(|header| CallerApiKeys {
                header,
                keys: api_keys.keys.into_iter().map(Secret::new).collect(),
            })
        }
    };
    let google_id_token = raw
        .google_id_token
        .and_then(|raw| validate_google_id_token(raw, errors));
    let mtls = raw.mtls.map(|raw| MtlsCallers {
        ca: base_dir.join(raw.ca),
        allowed_subjects: raw.allowed_subjects,
    });
    if api_keys.is_none()
        && google_id_token.is_none()
        && mtls.is_none()
        && !raw.allow_unauthenticated
    {
        errors.push(
            "callers",
            "no caller authentication is configured; add `api_keys`, or set `allow_unauthenticated: true` to accept any caller",
        );
    }
    Some(Callers {
        api_keys,
        google_id_token,
        mtls,
        allow_unauthenticated: raw.allow_unauthenticated,
    })
}
