//! The `issuers:` section: the token issuers Verdict trusts, where their keys come from and how they are
//! kept fresh, which claims carry what, and how their opaque tokens are introspected (RFC 7662).

use std::collections::HashSet;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use reqwest::Url;
use secrecy::ExposeSecret;
use serde_norway::Value;

use super::errors::Errors;
use super::secret::Secret;
use super::{defaults, raw};
use crate::outbound::{self, Unfetchable, discovery};

/// HMAC secrets shorter than this are refused (RFC 7518 §3.2 asks for at least the hash size).
const MIN_SHARED_SECRET_BYTES: usize = 32;

/// One trusted token issuer.
///
/// Equal to another when every field is (secrets by digest): a reload keeps the verifier and its token
/// cache only for issuers that are all equal, so every field takes part, as the derive makes sure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerConfig {
    /// A short name for logs and metrics.
    pub name: String,
    /// The exact `iss` value of its tokens.
    pub issuer: String,
    pub audiences: Vec<String>,
    pub keys: KeySource,
    pub algorithms: Vec<Algorithm>,
    pub leeway: Duration,
    pub max_token_age: Option<Duration>,
    /// When set, the token's `typ` header must name this type (e.g. `at+jwt`, RFC 9068).
    pub required_typ: Option<String>,
    pub claims: ClaimNames,
    pub shared_secret: Option<Secret>,
    pub jwks_refresh: JwksRefresh,
    /// How opaque tokens of this issuer are checked (RFC 7662), if it issues any.
    pub introspection: Option<IntrospectionConfig>,
}

/// An issuer's token introspection endpoint (RFC 7662) and Verdict's credentials for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntrospectionConfig {
    pub endpoint: IntrospectionEndpoint,
    pub client_id: String,
    pub client_secret: Secret,
    pub auth_method: ClientAuthMethod,
    /// The whole exchange, connection to last byte.
    pub timeout: Duration,
    /// The longest an active answer is reused (never past the token's `exp`).
    pub cache_ttl: Duration,
    /// How long an inactive answer is reused.
    pub inactive_ttl: Duration,
    /// Opaque tokens starting with this are introspected here.
    pub token_prefix: Option<String>,
    /// Opaque tokens no prefix claims are introspected here.
    pub default: bool,
    /// Refuse an active answer without `aud`; an `aud` that is present is always checked.
    pub require_audience: bool,
}

/// Where the introspection endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntrospectionEndpoint {
    Url(Url),
    /// `introspection_endpoint` of the issuer's discovery document at this URL.
    Discovery(Url),
}

/// How Verdict authenticates to the introspection endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
}

/// Where an issuer's verification keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// OIDC discovery at `<issuer>/.well-known/openid-configuration`.
    Discovery(Url),
    /// A configured JWKS URL.
    JwksUri(Url),
    /// No JWKS: the issuer signs JWTs with its `shared_secret` only, or issues only opaque tokens.
    NoJwks,
}

/// Which claims carry the subject, scopes, client id, roles and tenant: an issuer's `claims:`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(from = "raw::Claims")]
pub struct ClaimNames {
    pub subject: String,
    /// Tried in order; the first present claim is used.
    pub scope: Vec<String>,
    pub client_id: Vec<String>,
    pub roles: Vec<String>,
    pub tenant: Option<String>,
}

impl Default for ClaimNames {
    fn default() -> Self {
        Self::from(raw::Claims::default())
    }
}

impl From<raw::Claims> for ClaimNames {
    fn from(claims: raw::Claims) -> Self {
        Self {
            subject: claims
                .subject
                .unwrap_or_else(|| defaults::SUBJECT_CLAIM.to_owned()),
            scope: claims.scope.map_or_else(
                || Vec::from(defaults::SCOPE_CLAIMS.map(str::to_owned)),
                raw::OneOrMany::into_vec,
            ),
            client_id: claims.client_id.map_or_else(
                || Vec::from(defaults::CLIENT_ID_CLAIMS.map(str::to_owned)),
                raw::OneOrMany::into_vec,
            ),
            roles: claims.roles.map_or_else(
                || Vec::from(defaults::ROLES_CLAIMS.map(str::to_owned)),
                raw::OneOrMany::into_vec,
            ),
            tenant: claims.tenant,
        }
    }
}

/// How an issuer's JWKS is kept fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksRefresh {
    /// The refresh interval when the response carries no `Cache-Control: max-age`.
    pub default_interval: Duration,
    /// `max-age` is clamped into `min_interval..=max_interval`.
    pub min_interval: Duration,
    pub max_interval: Duration,
    /// An unknown `kid` causes at most one fetch per this period.
    pub unknown_kid_cooldown: Duration,
    /// Keys not refreshed for this long stop being trusted.
    pub max_staleness: Duration,
    /// Timeout of one discovery or JWKS request.
    pub timeout: Duration,
}

impl Default for JwksRefresh {
    fn default() -> Self {
        Self {
            default_interval: defaults::JWKS_DEFAULT_INTERVAL,
            min_interval: defaults::JWKS_MIN_INTERVAL,
            max_interval: defaults::JWKS_MAX_INTERVAL,
            unknown_kid_cooldown: defaults::JWKS_UNKNOWN_KID_COOLDOWN,
            max_staleness: defaults::JWKS_MAX_STALENESS,
            timeout: defaults::JWKS_TIMEOUT,
        }
    }
}

/// Validates every entry of `issuers:`, then the rules between them: distinct names and `iss` values, at
/// most one default introspection issuer, and no token prefix claimed twice.
pub(super) fn validate_issuers(
    raw_issuers: Option<Vec<Value>>,
    errors: &mut Errors,
) -> Vec<IssuerConfig> {
    let mut issuers = Vec::new();
    let raw_issuers = raw_issuers.unwrap_or_default();
    if raw_issuers.is_empty() {
        errors.push("issuers", "at least one issuer is required");
    }
    let mut names = HashSet::new();
    let mut issuer_urls = HashSet::new();
    for (index, value) in raw_issuers.into_iter().enumerate() {
        let path = format!("issuers[{index}]");
        let Some(raw) = errors.deserialize::<raw::Issuer>(&path, value) else {
            continue;
        };
        if !names.insert(raw.name.clone()) {
            errors.push(
                format!("{path}.name"),
                format!("duplicate issuer name `{}`", raw.name),
            );
        }
        if !issuer_urls.insert(raw.issuer.clone()) {
            errors.push(
                format!("{path}.issuer"),
                format!("duplicate issuer `{}`", raw.issuer),
            );
        }
        if let Some(issuer) = validate_issuer(raw, &path, errors) {
            issuers.push(issuer);
        }
    }

    let introspecting: Vec<(usize, &IntrospectionConfig)> = issuers
        .iter()
        .enumerate()
        .filter_map(|(index, issuer)| issuer.introspection.as_ref().map(|config| (index, config)))
        .collect();
    if introspecting
        .iter()
        .filter(|(_, config)| config.default)
        .count()
        > 1
    {
        errors.push(
            "issuers",
            "more than one issuer has `introspection.default: true`",
        );
    }
    let mut prefixes = HashSet::new();
    for (index, config) in &introspecting {
        if let Some(prefix) = &config.token_prefix
            && !prefixes.insert(prefix)
        {
            errors.push(
                format!("issuers[{index}].introspection.token_prefix"),
                format!("`{prefix}` is another issuer's prefix too"),
            );
        }
    }
    issuers
}

fn validate_issuer(raw: raw::Issuer, path: &str, errors: &mut Errors) -> Option<IssuerConfig> {
    let before = errors.0.len();
    if raw.name.is_empty() {
        errors.push(format!("{path}.name"), "must not be empty");
    }
    let issuer_url = match Url::parse(&raw.issuer) {
        Ok(url) => {
            check_fetchable(&url, &raw.issuer, &format!("{path}.issuer"), errors);
            Some(url)
        }
        Err(error) => {
            errors.push(
                format!("{path}.issuer"),
                format!("`{}` is not a URL: {error}", raw.issuer),
            );
            None
        }
    };
    if raw.audiences.is_empty() {
        errors.push(
            format!("{path}.audiences"),
            "at least one audience is required",
        );
    }
    if raw.audiences.iter().any(String::is_empty) {
        errors.push(format!("{path}.audiences"), "an audience must not be empty");
    }

    let shared_secret = raw.shared_secret.map(Secret::new);
    if let Some(secret) = &shared_secret
        && secret.expose_secret().len() < MIN_SHARED_SECRET_BYTES
    {
        errors.push(
            format!("{path}.shared_secret"),
            format!("must be at least {MIN_SHARED_SECRET_BYTES} bytes"),
        );
    }

    let algorithm_names = raw
        .algorithms
        .unwrap_or_else(|| Vec::from(defaults::ALGORITHMS.map(str::to_owned)));
    let mut algorithms = Vec::new();
    for (index, name) in algorithm_names.iter().enumerate() {
        let at = format!("{path}.algorithms[{index}]");
        match parse_algorithm(name) {
            Ok(algorithm) => {
                if is_hmac(algorithm) && shared_secret.is_none() {
                    errors.push(
                        at,
                        format!("`{name}` needs the issuer's own `shared_secret`"),
                    );
                } else {
                    algorithms.push(algorithm);
                }
            }
            Err(message) => errors.push(at, message),
        }
    }
    if algorithm_names.is_empty() {
        errors.push(
            format!("{path}.algorithms"),
            "at least one algorithm is required",
        );
    }

    let introspection = raw.introspection.and_then(|raw| {
        validate_introspection(
            raw,
            issuer_url.as_ref(),
            &format!("{path}.introspection"),
            errors,
        )
    });
    let keys = match (raw.jwks_uri, raw.discovery) {
        (Some(_), Some(true)) => {
            errors.push(
                format!("{path}.jwks_uri"),
                "give either `jwks_uri` or `discovery: true`, not both",
            );
            None
        }
        (Some(uri), _) => match Url::parse(&uri) {
            Ok(url) => {
                check_fetchable(&url, &uri, &format!("{path}.jwks_uri"), errors);
                Some(KeySource::JwksUri(url))
            }
            Err(error) => {
                errors.push(
                    format!("{path}.jwks_uri"),
                    format!("`{uri}` is not a URL: {error}"),
                );
                None
            }
        },
        (None, Some(false)) => {
            let hmac_only =
                algorithms.iter().all(|algorithm| is_hmac(*algorithm)) && shared_secret.is_some();
            let introspection_only = introspection
                .as_ref()
                .is_some_and(|config| matches!(config.endpoint, IntrospectionEndpoint::Url(_)));
            if hmac_only || introspection_only {
                Some(KeySource::NoJwks)
            } else {
                errors.push(
                    format!("{path}.discovery"),
                    "with discovery off, give `jwks_uri` (or `introspection.url` for an issuer of opaque tokens only)",
                );
                None
            }
        }
        (None, _) => issuer_url
            .as_ref()
            .map(|url| KeySource::Discovery(discovery::url_for(url))),
    };

    let claims = ClaimNames::from(raw.claims.unwrap_or_default());

    let defaults = JwksRefresh::default();
    let refresh = raw.jwks_refresh.unwrap_or_default();
    let jwks_refresh = JwksRefresh {
        default_interval: refresh
            .default_interval
            .map_or(defaults.default_interval, |d| d.0),
        min_interval: refresh.min_interval.map_or(defaults.min_interval, |d| d.0),
        max_interval: refresh.max_interval.map_or(defaults.max_interval, |d| d.0),
        unknown_kid_cooldown: refresh
            .unknown_kid_cooldown
            .map_or(defaults.unknown_kid_cooldown, |d| d.0),
        max_staleness: refresh
            .max_staleness
            .map_or(defaults.max_staleness, |d| d.0),
        timeout: refresh.timeout.map_or(defaults.timeout, |d| d.0),
    };
    if jwks_refresh.min_interval > jwks_refresh.max_interval {
        errors.push(
            format!("{path}.jwks_refresh"),
            "`min_interval` must not exceed `max_interval`",
        );
    }
    if jwks_refresh.max_staleness <= jwks_refresh.max_interval {
        errors.push(
            format!("{path}.jwks_refresh.max_staleness"),
            "must exceed `max_interval`, or keys would go stale between two refreshes",
        );
    }
    if jwks_refresh.timeout.is_zero() {
        errors.push(
            format!("{path}.jwks_refresh.timeout"),
            "must be more than zero",
        );
    }

    let required_typ = raw.typ.map(|typ| typ.to_ascii_lowercase());
    if errors.0.len() > before {
        return None;
    }
    Some(IssuerConfig {
        name: raw.name,
        issuer: raw.issuer,
        audiences: raw.audiences,
        keys: keys?,
        algorithms,
        leeway: raw.leeway.map_or(defaults::LEEWAY, |d| d.0),
        max_token_age: raw.max_token_age.map(|d| d.0),
        required_typ,
        claims,
        shared_secret,
        jwks_refresh,
        introspection,
    })
}

fn validate_introspection(
    raw: raw::Introspection,
    issuer: Option<&Url>,
    path: &str,
    errors: &mut Errors,
) -> Option<IntrospectionConfig> {
    let before = errors.0.len();
    let endpoint = match raw.url {
        Some(text) => match Url::parse(&text) {
            Ok(url) => {
                check_fetchable(&url, &text, &format!("{path}.url"), errors);
                Some(IntrospectionEndpoint::Url(url))
            }
            Err(error) => {
                errors.push(
                    format!("{path}.url"),
                    format!("`{text}` is not a URL: {error}"),
                );
                None
            }
        },
        None => issuer.map(|issuer| IntrospectionEndpoint::Discovery(discovery::url_for(issuer))),
    };
    if raw.client_id.is_empty() {
        errors.push(format!("{path}.client_id"), "must not be empty");
    }
    if raw.client_secret.is_empty() {
        errors.push(format!("{path}.client_secret"), "must not be empty");
    }
    let auth_method = match raw.auth_method.as_deref() {
        None | Some("client_secret_basic") => Some(ClientAuthMethod::ClientSecretBasic),
        Some("client_secret_post") => Some(ClientAuthMethod::ClientSecretPost),
        Some(other) => {
            errors.push(
                format!("{path}.auth_method"),
                format!("`{other}` is not one of `client_secret_basic`, `client_secret_post`"),
            );
            None
        }
    };
    let timeout = raw.timeout.map_or(defaults::INTROSPECTION_TIMEOUT, |d| d.0);
    if timeout.is_zero() {
        errors.push(format!("{path}.timeout"), "must be more than zero");
    }
    if raw.token_prefix.as_deref() == Some("") {
        errors.push(format!("{path}.token_prefix"), "must not be empty");
    }
    if errors.0.len() > before {
        return None;
    }
    Some(IntrospectionConfig {
        endpoint: endpoint?,
        client_id: raw.client_id,
        client_secret: Secret::new(raw.client_secret),
        auth_method: auth_method?,
        timeout,
        cache_ttl: raw
            .cache_ttl
            .map_or(defaults::INTROSPECTION_CACHE_TTL, |d| d.0),
        inactive_ttl: raw
            .inactive_ttl
            .map_or(defaults::INTROSPECTION_INACTIVE_TTL, |d| d.0),
        token_prefix: raw.token_prefix,
        default: raw.default.unwrap_or(defaults::INTROSPECTION_DEFAULT),
        require_audience: raw
            .require_audience
            .unwrap_or(defaults::INTROSPECTION_REQUIRE_AUDIENCE),
    })
}

/// Remote endpoints are reached over https, except on this machine (development and tests): the rule
/// of [`outbound::fetchable`], told in the words of the configuration.
pub(super) fn check_fetchable(url: &Url, written: &str, path: &str, errors: &mut Errors) {
    match outbound::fetchable(url) {
        Ok(()) => {}
        Err(problem @ Unfetchable::PlainHttp) => {
            errors.push(path, format!("`{written}` {problem}"))
        }
        Err(problem @ Unfetchable::Scheme(_)) => errors.push(path, problem.to_string()),
    }
}

fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    if name.eq_ignore_ascii_case("none") {
        return Err("`none` is never allowed".into());
    }
    match name {
        "RS256" => Ok(Algorithm::RS256),
        "RS384" => Ok(Algorithm::RS384),
        "RS512" => Ok(Algorithm::RS512),
        "PS256" => Ok(Algorithm::PS256),
        "PS384" => Ok(Algorithm::PS384),
        "PS512" => Ok(Algorithm::PS512),
        "ES256" => Ok(Algorithm::ES256),
        "ES384" => Ok(Algorithm::ES384),
        "EdDSA" => Ok(Algorithm::EdDSA),
        "HS256" => Ok(Algorithm::HS256),
        "HS384" => Ok(Algorithm::HS384),
        "HS512" => Ok(Algorithm::HS512),
        other => Err(format!("unknown algorithm `{other}`")),
    }
}

pub(crate) fn is_hmac(algorithm: Algorithm) -> bool {
    matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An issuer setting every field, as (key, YAML value) lines of its entry.
    const BASE: [(&str, &str); 11] = [
        ("name", "base"),
        ("issuer", "https://issuer.example"),
        ("audiences", "[api]"),
        ("algorithms", "[RS256, HS256]"),
        ("leeway", "30s"),
        ("max_token_age", "1h"),
        ("typ", "at+jwt"),
        ("claims", "{ tenant: tenant }"),
        ("shared_secret", "hmac-secret-0123456789abcdef-0123"),
        ("jwks_refresh", "{ timeout: 2s }"),
        (
            "introspection",
            "{ client_id: verdict, client_secret: introspection-secret, timeout: 2s, token_prefix: op_ }",
        ),
    ];

    /// The issuer of [`BASE`] with `key` set to `value` (added when `BASE` has no such key).
    fn issuer_with(change: Option<(&str, &str)>) -> IssuerConfig {
        let mut lines: Vec<(&str, &str)> = BASE.to_vec();
        if let Some((key, value)) = change {
            match lines.iter_mut().find(|(line_key, _)| *line_key == key) {
                Some(line) => line.1 = value,
                None => lines.push((key, value)),
            }
        }
        let yaml: String = lines
            .iter()
            .map(|(key, value)| format!("{key}: {value}\n"))
            .collect();
        let raw = serde_norway::from_str::<raw::Issuer>(&yaml)
            .unwrap_or_else(|error| panic!("{error}:\n{yaml}"));
        let mut errors = Errors::default();
        let issuer = validate_issuer(raw, "issuers[0]", &mut errors);
        assert!(errors.0.is_empty(), "{:?}:\n{yaml}", errors.0);
        issuer.unwrap_or_else(|| panic!("no issuer:\n{yaml}"))
    }

    #[test]
    fn the_same_entry_read_twice_is_equal() {
        assert_eq!(issuer_with(None), issuer_with(None));
    }

    #[test]
    fn changing_any_one_field_makes_issuers_unequal() {
        let base = issuer_with(None);
        let changes = [
            ("name", "renamed"),
            ("issuer", "https://other.example"),
            ("audiences", "[api, other]"),
            ("jwks_uri", "https://issuer.example/jwks"),
            ("algorithms", "[RS256, ES256, HS256]"),
            ("leeway", "31s"),
            ("max_token_age", "2h"),
            ("typ", "jwt"),
            ("claims", "{ tenant: org }"),
            ("shared_secret", "hmac-secret-0123456789abcdef-0124"),
            ("jwks_refresh", "{ timeout: 3s }"),
            (
                "introspection",
                "{ client_id: verdict, client_secret: introspection-secret, timeout: 3s, token_prefix: op_ }",
            ),
            (
                "introspection",
                "{ client_id: verdict, client_secret: introspection-secreT, timeout: 2s, token_prefix: op_ }",
            ),
            (
                "introspection",
                "{ client_id: verdict, client_secret: introspection-secret, timeout: 2s, token_prefix: op_, require_audience: true }",
            ),
        ];
        for (key, value) in changes {
            assert_ne!(
                issuer_with(Some((key, value))),
                base,
                "`{key}: {value}` left the issuer equal"
            );
        }
    }
}
