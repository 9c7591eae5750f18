//! Credentials: what a client presents (a bearer JWT, an opaque token, an API key), how each is
//! verified, and the [`Credential`] a verified one becomes, whatever its kind.
//!
//! [`Verifier`] verifies bearer tokens: [`jwt`] checks a JWT (DESIGN §3), in order; an opaque token goes
//! to its issuer's [`Introspector`] (RFC 7662); both apply the time and audience rules of [`claims`].
//! [`ApiKeyStore`] checks end-user API keys. Each yields a [`Credential`] or a [`CredentialError`].

pub mod api_key;
mod cache;
pub mod claims;
mod introspect;
mod jwt;
mod verifier;

use std::sync::Arc;

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

pub use api_key::ApiKeyStore;
pub use cache::{TokenCache, TokenHash};
pub use claims::{Lifetime, TimeRules};
pub use introspect::Introspector;
pub use verifier::{CachedToken, Verifier};

use crate::config::ClaimNames;
use crate::policy::{NameReads, Principal, PrincipalKind};

/// The bearer token of an `Authorization` header value, if it carries one.
///
/// The scheme is matched case-insensitively and surrounding whitespace is tolerated (DESIGN §3):
/// HTTP's optional whitespace, spaces and tabs (RFC 9110 §5.6.3), and no other character, so a
/// Unicode space or a line break around the token stays part of it and fails its syntax check. A
/// header with another scheme carries no bearer token.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    const OWS: [char; 2] = [' ', '\t'];
    let trimmed = authorization.trim_matches(OWS);
    let (scheme, rest) = trimmed.split_once(OWS).unwrap_or((trimmed, ""));
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start_matches(OWS))
}

/// Why a credential was refused. Every variant maps to a stable reason and a description safe to show a
/// client; neither ever contains the token or key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the bearer token is empty")]
    Empty,
    #[error("the token is longer than allowed")]
    TooLarge,
    #[error("the token contains characters a JWT cannot contain")]
    InvalidCharacters,
    #[error("encrypted tokens (JWE) are not accepted")]
    Encrypted,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token header is invalid")]
    InvalidHeader,
    #[error("the token header has a `crit` parameter, which is not supported")]
    CriticalHeader,
    #[error("unsigned tokens (`alg: none`) are never accepted")]
    AlgorithmNone,
    #[error("the token's algorithm is not allowed for its issuer")]
    AlgorithmNotAllowed,
    #[error("the token payload is invalid")]
    InvalidPayload,
    #[error("the token has no `{0}` claim")]
    MissingClaim(&'static str),
    #[error("the token's `{0}` claim has the wrong type or value")]
    InvalidClaim(&'static str),
    #[error("the token's issuer is not trusted")]
    UnknownIssuer,
    #[error("the token has no usable `kid`")]
    MissingKeyId,
    #[error("the token was signed with an unknown key")]
    UnknownKey,
    #[error("the token's algorithm does not match its key")]
    KeyAlgorithmMismatch,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued in the future")]
    IssuedInFuture,
    #[error("the token is older than allowed")]
    TooOld,
    #[error("the token is not meant for this audience")]
    WrongAudience,
    #[error("the token has the wrong type")]
    WrongType,
    #[error("the issuer's signing keys are not available")]
    KeysUnavailable,
    #[error("the token is not active")]
    Inactive,
    #[error("the token could not be checked with its issuer")]
    IntrospectionUnavailable,
    #[error("the API key is not valid")]
    UnknownApiKey,
}

impl CredentialError {
    /// Whether the failure is ours (keys unavailable) rather than the token's: a 503, not a 401.
    pub fn is_temporary(self) -> bool {
        matches!(self, Self::KeysUnavailable | Self::IntrospectionUnavailable)
    }
}

/// A verified credential: a JWT whose signature and claims checked out, an active introspected token,
/// or a known API key; the principal it names, with how long a decision on it may be reused.
///
/// Two are equal when everything they say is: a token verified again is another object, equal to the
/// first; an opaque token introspected again may come back with other scopes, and is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// Index of the issuer in the configuration.
    pub issuer_index: usize,
    /// Shared by every credential of the issuer.
    pub issuer: Arc<str>,
    pub principal_kind: PrincipalKind,
    /// An API key's id; empty for a token, whose principal is named by its subject or client id
    /// ([`Self::principal_id`]).
    api_key_id: Box<str>,
    pub subject: String,
    pub client_id: String,
    pub tenant: String,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    pub kid: String,
    /// The algorithm the signature was verified with (`None` for claims taken on trust offline).
    pub algorithm: Option<Algorithm>,
    pub typ: String,
    pub lifetime: Lifetime,
    /// The first second at which a decision for this credential may no longer be reused (`exp`, or
    /// the end of the issuer's maximum token age).
    pub reusable_until: i64,
    /// The claims it keeps ([`Provenance::keep`]) as compact JSON text, a fraction of the memory of a
    /// parsed map: a cached credential is read again ([`Self::claims`]) only to prepare its principal
    /// for the policies.
    claims_json: Box<str>,
}

/// The result of verifying one token.
#[derive(Debug, Clone)]
pub struct Verified {
    pub credential: Arc<Credential>,
    pub cache_hit: bool,
    /// The first second at which the keys that verified the token are past their staleness budget;
    /// `None` when no key set was involved. A decision is not reused past it either.
    pub keys_fresh_until: Option<i64>,
}

impl Verified {
    /// The first second at which a decision for this credential may no longer be reused.
    pub fn reusable_until(&self) -> i64 {
        self.keys_fresh_until
            .map_or(self.credential.reusable_until, |fresh_until| {
                fresh_until.min(self.credential.reusable_until)
            })
    }
}

/// What is known of a token besides its claims.
#[derive(Debug, Clone, Copy)]
pub struct Provenance<'a> {
    /// Index of the issuer in the configuration.
    pub issuer_index: usize,
    pub issuer: &'a Arc<str>,
    pub kid: &'a str,
    /// The algorithm the signature was verified with; `None` for claims taken on trust offline.
    pub algorithm: Option<Algorithm>,
    pub typ: &'a str,
    /// The issuer's time rules, which bound how long a decision for the token may be reused.
    pub rules: TimeRules,
    /// The claims the credential keeps, for the policies and the upstream headers; the others are
    /// read for the principal and dropped.
    pub keep: &'a NameReads,
}

impl Credential {
    /// The claims, parsed again from their text.
    pub fn claims(&self) -> Map<String, Value> {
        serde_json::from_str(&self.claims_json).unwrap_or_default()
    }

    /// The id of the principal: a user's subject, a client's id, an API key's id.
    pub fn principal_id(&self) -> &str {
        match self.principal_kind {
            PrincipalKind::User => &self.subject,
            PrincipalKind::Client => &self.client_id,
            PrincipalKind::ApiKey => &self.api_key_id,
        }
    }

    /// The principal these `claims` (from [`Self::claims`]) name.
    pub fn principal<'a>(&'a self, claims: &'a Map<String, Value>) -> Principal<'a> {
        Principal {
            kind: self.principal_kind,
            id: self.principal_id(),
            issuer: &self.issuer,
            subject: &self.subject,
            client_id: &self.client_id,
            tenant: &self.tenant,
            scopes: &self.scopes,
            roles: &self.roles,
            claims,
        }
    }

    /// The credential an API key stands for, valid until `exp`.
    pub fn for_api_key(key: &crate::config::ApiKeyConfig, exp: i64) -> Self {
        Self {
            issuer_index: usize::MAX,
            issuer: Arc::from(""),
            principal_kind: PrincipalKind::ApiKey,
            api_key_id: key.id.as_str().into(),
            subject: key.subject.clone(),
            client_id: String::new(),
            tenant: key.tenant.clone(),
            scopes: key.scopes.clone(),
            roles: key.roles.clone(),
            kid: String::new(),
            algorithm: None,
            typ: String::new(),
            lifetime: Lifetime {
                exp,
                nbf: None,
                iat: None,
            },
            reusable_until: exp,
            claims_json: "{}".into(),
        }
    }

    /// The principal that checked claims name, read with the issuer's claim names: the subject or
    /// client, scopes, roles and tenant. The caller has checked the signature and the time and audience
    /// claims; `exp` must be present.
    pub fn from_claims(
        mut claims: Map<String, Value>,
        claim_names: &ClaimNames,
        provenance: Provenance<'_>,
    ) -> Result<Self, CredentialError> {
        let lifetime = Lifetime::from_claims(&claims)?;
        let subject = optional_string(&claims, &claim_names.subject, "sub")?;
        let mut client_id = String::new();
        for name in &claim_names.client_id {
            if let Some(value) = claims.get(name) {
                let Value::String(value) = value else {
                    return Err(CredentialError::InvalidClaim("client_id"));
                };
                client_id = value.clone();
                break;
            }
        }
        let principal_kind = match (subject.is_empty(), client_id.is_empty()) {
            (true, true) => return Err(CredentialError::MissingClaim("sub")),
            // A client-credentials token has no user: either no subject, or the client as its subject.
            (true, false) => PrincipalKind::Client,
            (false, _) if subject == client_id => PrincipalKind::Client,
            (false, _) => PrincipalKind::User,
        };
        let scopes = first_list(&claims, &claim_names.scope, true)
            .map_err(|()| CredentialError::InvalidClaim("scope"))?;
        let roles = first_list(&claims, &claim_names.roles, false)
            .map_err(|()| CredentialError::InvalidClaim("roles"))?;
        let tenant = match &claim_names.tenant {
            Some(name) => optional_string(&claims, name, "tenant")?,
            None => String::new(),
        };
        claims.retain(|name, _| provenance.keep.includes(name));

        Ok(Self {
            issuer_index: provenance.issuer_index,
            issuer: Arc::clone(provenance.issuer),
            principal_kind,
            api_key_id: Box::default(),
            subject,
            client_id,
            tenant,
            scopes,
            roles,
            kid: provenance.kid.to_owned(),
            algorithm: provenance.algorithm,
            typ: provenance.typ.to_owned(),
            reusable_until: provenance.rules.reusable_until(&lifetime),
            lifetime,
            claims_json: Value::Object(claims).to_string().into(),
        })
    }
}

fn optional_string(
    claims: &Map<String, Value>,
    name: &str,
    label: &'static str,
) -> Result<String, CredentialError> {
    match claims.get(name) {
        None => Ok(String::new()),
        Some(Value::String(value)) => Ok(value.clone()),
        Some(_) => Err(CredentialError::InvalidClaim(label)),
    }
}

/// The first present claim of `names` as a list: an array of strings, or a string (split on spaces
/// when `space_delimited`, as OAuth `scope` is).
fn first_list(
    claims: &Map<String, Value>,
    names: &[String],
    space_delimited: bool,
) -> Result<Vec<String>, ()> {
    for name in names {
        match claims.get(name) {
            None => continue,
            Some(Value::String(value)) if space_delimited => {
                return Ok(value.split_ascii_whitespace().map(str::to_owned).collect());
            }
            Some(Value::String(value)) => return Ok(vec![value.clone()]),
            Some(Value::Array(items)) => {
                return items
                    .iter()
                    .map(|item| match item {
                        Value::String(value) => Ok(value.clone()),
                        _ => Err(()),
                    })
                    .collect();
            }
            Some(_) => return Err(()),
        }
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_tolerates_spaces() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("  bEaReR    abc  "), Some("abc"));
        assert_eq!(bearer_token("BEARER\tabc"), Some("abc"));
        assert_eq!(bearer_token("Bearer"), Some(""));
        assert_eq!(bearer_token("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
        assert_eq!(bearer_token(""), None);
        // Only spaces and tabs are whitespace here: other characters stay in the token.
        assert_eq!(bearer_token("Bearer \u{a0}abc"), Some("\u{a0}abc"));
        assert_eq!(bearer_token("Bearer abc\n"), Some("abc\n"));
        assert_eq!(bearer_token("Bearer\u{2003}abc"), None);
    }
}
