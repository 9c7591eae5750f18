//! The configuration file as written: serde structs that reject unknown keys.

use std::path::PathBuf;

use serde::Deserialize;
use serde_norway::Value;

use super::duration::HumanDuration;

/// The top level. Sections stay as YAML values here and are deserialized one by one, so that an error in
/// one section does not hide the errors in the others.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Top {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub callers: Option<Value>,
    pub issuers: Option<Vec<Value>>,
    pub policies: Option<Value>,
    pub headers: Option<Value>,
    pub cache: Option<Value>,
    pub limits: Option<Value>,
    pub realm: Option<String>,
    pub reload: Option<Value>,
    pub api_keys: Option<Value>,
    pub tls: Option<Value>,
    pub forward_auth: Option<Value>,
    pub decision_log: Option<String>,
    pub log: Option<Value>,
    pub tracing: Option<Value>,
    pub shutdown: Option<Value>,
}

/// `forward_auth`: what the forward-auth front reads of the original request besides DESIGN §9's
/// headers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ForwardAuth {
    pub api_key_header: Option<String>,
    pub context_headers: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `callers.mtls`: client certificates chained to `ca`, optionally only some.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Mtls {
    pub ca: PathBuf,
    #[serde(default)]
    pub allowed_subjects: Vec<String>,
}

/// `callers.google_id_token`: Google-signed ID tokens, as Apigee's `GoogleIDToken` authentication sends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GoogleIdToken {
    pub audience: String,
    pub emails: Vec<String>,
    pub issuer: Option<String>,
    pub jwks_uri: Option<String>,
    pub header: Option<String>,
}

/// Top-level `api_keys`: end-user keys inline, in a separate file, or both.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EndUserKeys {
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub keys: Vec<EndUserKey>,
}

/// The separate API key file: `keys:` only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EndUserKeyFile {
    pub keys: Vec<EndUserKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EndUserKey {
    pub id: String,
    pub hash: String,
    pub subject: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    pub tenant: Option<String>,
    pub expires: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Reload {
    pub watch: Option<bool>,
    pub interval: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Callers {
    pub api_keys: Option<ApiKeys>,
    pub google_id_token: Option<GoogleIdToken>,
    pub mtls: Option<Mtls>,
    #[serde(default)]
    pub allow_unauthenticated: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApiKeys {
    pub header: Option<String>,
    pub keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Issuer {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks_uri: Option<String>,
    pub discovery: Option<bool>,
    pub algorithms: Option<Vec<String>>,
    pub leeway: Option<HumanDuration>,
    pub max_token_age: Option<HumanDuration>,
    pub typ: Option<String>,
    pub claims: Option<Claims>,
    pub shared_secret: Option<String>,
    pub jwks_refresh: Option<JwksRefresh>,
    pub introspection: Option<Introspection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Introspection {
    pub url: Option<String>,
    pub client_id: String,
    pub client_secret: String,
    pub auth_method: Option<String>,
    pub timeout: Option<HumanDuration>,
    pub cache_ttl: Option<HumanDuration>,
    pub inactive_ttl: Option<HumanDuration>,
    pub token_prefix: Option<String>,
    pub default: Option<bool>,
    pub require_audience: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Claims {
    pub subject: Option<String>,
    pub scope: Option<OneOrMany>,
    pub client_id: Option<OneOrMany>,
    pub roles: Option<OneOrMany>,
    pub tenant: Option<String>,
}

/// A claim name, or a list of them tried in order.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(name) => vec![name],
            Self::Many(names) => names,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JwksRefresh {
    pub default_interval: Option<HumanDuration>,
    pub min_interval: Option<HumanDuration>,
    pub max_interval: Option<HumanDuration>,
    pub unknown_kid_cooldown: Option<HumanDuration>,
    pub max_staleness: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Policies {
    pub path: PathBuf,
    pub schema: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Cache {
    pub max_tokens: Option<u64>,
    pub max_decisions: Option<u64>,
    pub decision_ttl: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Limits {
    pub max_token_bytes: Option<usize>,
    pub max_body_bytes: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub request_timeout: Option<HumanDuration>,
    pub max_concurrent_requests: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Log {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Tracing {
    pub otlp_endpoint: Option<String>,
    pub service_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Shutdown {
    pub grace_period: Option<HumanDuration>,
}
