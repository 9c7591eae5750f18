//! Bearer tokens: extraction from the `Authorization` header, JWT verification (DESIGN §3), and opaque
//! tokens handed to their issuer's [`Introspector`].
//!
//! [`Verifier::verify`] checks, in order: size and charset before any decoding; exactly three segments
//! (five is JWE, refused by name); a strict header (no duplicate keys, no `crit`; `jku`, `x5u`, `jwk`
//! and `x5c` are never read); the issuer by exact `iss`; the algorithm against that issuer's allowlist
//! and the key's own algorithm; the signature; then the typed claims. Only then is a token cached.

mod cache;
pub mod claims;
mod introspect;

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

pub use cache::{TokenCache, TokenHash};
pub use claims::{Lifetime, TimeRules};
pub use introspect::Introspector;

use crate::clock::SharedClock;
use crate::config::{ClaimNames, IssuerConfig, KeySource};
use crate::keys::{IssuerKeys, KeyLookup, VerificationKey};
use crate::policy::{PreparedPrincipal, Principal, PrincipalKind};
/// A `kid` longer than this is refused before any key lookup.
const MAX_KID_LENGTH: usize = 256;

/// The bearer token of an `Authorization` header value, if it carries one.
///
/// The scheme is matched case-insensitively and surrounding whitespace is tolerated (DESIGN §3). A
/// header with another scheme carries no bearer token.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let trimmed = authorization.trim();
    let (scheme, rest) = trimmed.split_once([' ', '\t']).unwrap_or((trimmed, ""));
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Why a token was refused. Every variant maps to a stable reason and a description safe to show a
/// client; neither ever contains the token or key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
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

impl TokenError {
    /// Whether the failure is ours (keys unavailable) rather than the token's: a 503, not a 401.
    pub fn is_temporary(self) -> bool {
        matches!(self, Self::KeysUnavailable | Self::IntrospectionUnavailable)
    }
}

/// A token whose signature and claims checked out.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// Index of the issuer in the configuration.
    pub issuer_index: usize,
    pub issuer: String,
    pub principal_kind: PrincipalKind,
    /// `sub`, or the client id for a client acting for itself.
    pub principal_id: String,
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
    pub claims: Map<String, Value>,
    /// The token as Cedar entities, built once here rather than on every decision.
    pub principal: PreparedPrincipal,
}

/// A verified JWT as the cache holds it: with the key that verified its signature, so a hit can tell
/// whether that very key is still in its issuer's fresh set.
#[derive(Debug)]
pub struct CachedToken {
    token: Arc<VerifiedToken>,
    /// `None` for an HMAC token, whose key is the issuer's configured secret.
    key: Option<Arc<VerificationKey>>,
}

/// One issuer as the verifier sees it.
#[derive(Debug)]
struct TrustedIssuer {
    config: IssuerConfig,
    keys: Option<Arc<IssuerKeys>>,
    hmac_key: Option<DecodingKey>,
}

/// Verifies bearer JWTs against the configured issuers, caching verified tokens.
#[derive(Debug)]
pub struct Verifier {
    issuers: Vec<TrustedIssuer>,
    // INVARIANT: issuers are chosen by exact `iss` match; keys are looked up by (issuer, kid).
    by_iss: HashMap<String, usize>,
    max_token_bytes: usize,
    max_cached_tokens: usize,
    cache: TokenCache,
    /// One per issuer with `introspection`, for opaque tokens.
    introspectors: Vec<Arc<Introspector>>,
    clock: SharedClock,
}

/// The result of verifying one token.
#[derive(Debug, Clone)]
pub struct Verified {
    pub token: Arc<VerifiedToken>,
    pub cache_hit: bool,
    /// The first second at which the keys that verified the token are past their staleness budget;
    /// `None` when no key set was involved. A decision is not reused past it either.
    pub keys_fresh_until: Option<i64>,
}

impl Verified {
    /// The first second at which a decision for this credential may no longer be reused.
    pub fn reusable_until(&self) -> i64 {
        self.keys_fresh_until
            .map_or(self.token.reusable_until, |fresh_until| {
                fresh_until.min(self.token.reusable_until)
            })
    }
}

impl Verifier {
    /// The verifier for these settings after `previous`: `previous` itself, with its token cache, when
    /// it was built from exactly these settings; otherwise a new one (see [`Self::replacing`]).
    pub fn succeeding(
        previous: Option<&Arc<Self>>,
        issuers: &[IssuerConfig],
        max_token_bytes: usize,
        max_cached_tokens: usize,
        http: &reqwest::Client,
        clock: SharedClock,
    ) -> Arc<Self> {
        match previous {
            Some(verifier)
                if verifier.has_settings(issuers, max_token_bytes, max_cached_tokens) =>
            {
                Arc::clone(verifier)
            }
            _ => Arc::new(Self::replacing(
                previous.map(|verifier| &**verifier),
                issuers,
                max_token_bytes,
                max_cached_tokens,
                http,
                clock,
            )),
        }
    }

    /// A verifier for `issuers`. Key sets start empty ([`Self::key_sets`] lists what to load), except
    /// that it takes over the loaded key sets of `previous` for every issuer whose name and key settings
    /// are unchanged, so a reload refetches nothing it need not. Its token cache starts empty: a cached
    /// token was checked against the previous settings.
    fn replacing(
        previous: Option<&Self>,
        issuers: &[IssuerConfig],
        max_token_bytes: usize,
        max_cached_tokens: usize,
        http: &reqwest::Client,
        clock: SharedClock,
    ) -> Self {
        let reusable = |config: &IssuerConfig| {
            previous?
                .issuers
                .iter()
                .find(|old| {
                    old.config.name == config.name
                        && old.config.issuer == config.issuer
                        && old.config.keys == config.keys
                        && old.config.jwks_refresh == config.jwks_refresh
                })
                .and_then(|old| old.keys.clone())
        };
        let issuers: Vec<TrustedIssuer> = issuers
            .iter()
            .map(|config| TrustedIssuer {
                keys: match config.keys {
                    KeySource::NoJwks => None,
                    _ => Some(reusable(config).unwrap_or_else(|| {
                        Arc::new(IssuerKeys::new(
                            config.name.clone(),
                            config.issuer.clone(),
                            config.keys.clone(),
                            config.jwks_refresh,
                            http.clone(),
                            Arc::clone(&clock),
                        ))
                    })),
                },
                hmac_key: config
                    .shared_secret
                    .as_ref()
                    .map(|secret| DecodingKey::from_secret(secret.expose_secret().as_bytes())),
                config: config.clone(),
            })
            .collect();
        let by_iss = issuers
            .iter()
            .enumerate()
            .map(|(index, issuer)| (issuer.config.issuer.clone(), index))
            .collect();
        let introspectors = issuers
            .iter()
            .enumerate()
            .filter_map(|(index, issuer)| {
                let config = issuer.config.introspection.as_ref()?;
                Some(Arc::new(Introspector::new(
                    index,
                    &issuer.config,
                    config,
                    max_cached_tokens,
                    http,
                    Arc::clone(&clock),
                )))
            })
            .collect();
        Self {
            issuers,
            by_iss,
            max_token_bytes,
            max_cached_tokens,
            cache: TokenCache::new(max_cached_tokens),
            introspectors,
            clock,
        }
    }

    /// Whether this verifier was built from exactly these settings, so a reload can keep it, and its
    /// token cache, as it is.
    fn has_settings(
        &self,
        issuers: &[IssuerConfig],
        max_token_bytes: usize,
        max_cached_tokens: usize,
    ) -> bool {
        self.max_token_bytes == max_token_bytes
            && self.max_cached_tokens == max_cached_tokens
            && self.issuers.len() == issuers.len()
            && self
                .issuers
                .iter()
                .zip(issuers)
                .all(|(issuer, config)| issuer.config == *config)
    }

    /// Every issuer's key set, to load and refresh.
    pub fn key_sets(&self) -> impl Iterator<Item = &Arc<IssuerKeys>> {
        self.issuers
            .iter()
            .filter_map(|issuer| issuer.keys.as_ref())
    }

    /// The configured name of the issuer at `index`; empty for an index out of range.
    pub fn issuer_name(&self, index: usize) -> &str {
        self.issuers
            .get(index)
            .map_or("", |issuer| issuer.config.name.as_str())
    }

    /// The verified-token cache.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    /// Verifies a compact JWT, answering from the cache when the same token was verified before and its
    /// key is still trusted.
    pub async fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        self.verify_hashed(token, &TokenCache::hash(token)).await
    }

    /// [`Self::verify`], for a caller that has the token's SHA-256 already.
    pub async fn verify_hashed(
        &self,
        token: &str,
        hash: &TokenHash,
    ) -> Result<Verified, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLarge);
        }
        let segments = token.split('.').count();
        if segments != 3
            && segments != 5
            && let Some(introspector) = self.introspector_for(token)
        {
            if !is_b64token(token) {
                return Err(TokenError::InvalidCharacters);
            }
            return introspector.verify(token, hash).await;
        }
        if !token
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
        {
            return Err(TokenError::InvalidCharacters);
        }
        if let Some(cached) = self.cache.get(hash) {
            if let Some(hit) = self.hit_if_still_valid(&cached) {
                crate::metrics::global().token_cache_lookup(true);
                return Ok(hit);
            }
            // Whatever made the hit fail (expiry, age, a replaced key) a fresh verification decides.
            self.cache.remove(hash);
        }
        crate::metrics::global().token_cache_lookup(false);
        let (verified, key) = self.verify_uncached(token).await?;
        let verified = Arc::new(verified);
        let keys_fresh_until = self.keys_fresh_until(verified.issuer_index, key.as_deref());
        self.cache.insert(
            *hash,
            Arc::new(CachedToken {
                token: Arc::clone(&verified),
                key,
            }),
        );
        Ok(Verified {
            token: verified,
            cache_hit: false,
            keys_fresh_until,
        })
    }

    /// The introspector of an opaque token: the issuer whose `token_prefix` it has (the longest), else
    /// the `default` one, else the only one.
    fn introspector_for(&self, token: &str) -> Option<&Introspector> {
        let by_prefix = self
            .introspectors
            .iter()
            .filter(|introspector| {
                introspector
                    .config()
                    .token_prefix
                    .as_deref()
                    .is_some_and(|prefix| token.starts_with(prefix))
            })
            .max_by_key(|introspector| {
                introspector.config().token_prefix.as_ref().map(String::len)
            });
        let fallback = || {
            self.introspectors
                .iter()
                .find(|introspector| introspector.config().default)
                .or(match self.introspectors.as_slice() {
                    [only] => Some(only),
                    _ => None,
                })
        };
        by_prefix
            .or_else(fallback)
            .map(|introspector| &**introspector)
    }

    /// The cache hit, if the cached token would still verify as it did (DESIGN §3): its time claims
    /// hold now under the issuer's rules, exactly as a fresh verification checks them, and the very
    /// key that verified its signature is still in the issuer's fresh set (a key replaced under the
    /// same `kid` is not). The issuer's settings are those the token was verified under: a verifier
    /// with other settings starts with an empty cache.
    fn hit_if_still_valid(&self, cached: &CachedToken) -> Option<Verified> {
        let token = &cached.token;
        let issuer = self.issuers.get(token.issuer_index)?;
        TimeRules::of(&issuer.config)
            .check(&token.lifetime, self.now())
            .ok()?;
        let key_in_force = match &cached.key {
            // An HMAC token's key is the issuer's configured secret, which the settings fix.
            None => true,
            Some(key) => matches!(
                issuer.keys.as_ref()?.lookup(&token.kid),
                KeyLookup::Found(current) if current.is_same_key(key)
            ),
        };
        key_in_force.then(|| Verified {
            token: Arc::clone(token),
            cache_hit: true,
            keys_fresh_until: self.keys_fresh_until(token.issuer_index, cached.key.as_deref()),
        })
    }

    /// When the key set of the issuer at `index` goes stale, if a key from it was used.
    fn keys_fresh_until(&self, index: usize, key: Option<&VerificationKey>) -> Option<i64> {
        key?;
        let keys = self.issuers.get(index)?.keys.as_ref()?;
        keys.fresh_until()
            .map(|at| i64::try_from(at).unwrap_or(i64::MAX))
    }

    fn now(&self) -> i64 {
        i64::try_from(self.clock.now()).unwrap_or(i64::MAX)
    }

    /// Verifies a token afresh; with it, the key from the issuer's key set that checked its signature.
    async fn verify_uncached(
        &self,
        token: &str,
    ) -> Result<(VerifiedToken, Option<Arc<VerificationKey>>), TokenError> {
        let segments = token.split('.').count();
        if segments == 5 {
            return Err(TokenError::Encrypted);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        if header_b64.is_empty() || payload_b64.is_empty() || signature_b64.is_empty() {
            return Err(TokenError::Malformed);
        }

        let header = decode_object(header_b64).ok_or(TokenError::InvalidHeader)?;
        if header.contains_key("crit") {
            return Err(TokenError::CriticalHeader);
        }
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg,
            _ => return Err(TokenError::InvalidHeader),
        };
        if alg.eq_ignore_ascii_case("none") {
            return Err(TokenError::AlgorithmNone);
        }
        let algorithm: Algorithm = alg.parse().map_err(|_| TokenError::AlgorithmNotAllowed)?;
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) if !kid.is_empty() && kid.len() <= MAX_KID_LENGTH => {
                Some(kid.as_str())
            }
            Some(_) => return Err(TokenError::MissingKeyId),
        };
        let typ = match header.get("typ") {
            None => String::new(),
            Some(Value::String(typ)) => typ.clone(),
            Some(_) => return Err(TokenError::InvalidHeader),
        };

        let claims = decode_object(payload_b64).ok_or(TokenError::InvalidPayload)?;
        let iss = match claims.get("iss") {
            Some(Value::String(iss)) => iss,
            Some(_) => return Err(TokenError::InvalidClaim("iss")),
            None => return Err(TokenError::MissingClaim("iss")),
        };
        let issuer_index = *self
            .by_iss
            .get(iss.as_str())
            .ok_or(TokenError::UnknownIssuer)?;
        let issuer = self
            .issuers
            .get(issuer_index)
            .ok_or(TokenError::UnknownIssuer)?;
        if !issuer.config.algorithms.contains(&algorithm) {
            return Err(TokenError::AlgorithmNotAllowed);
        }

        let signing_input_length = header_b64.len() + 1 + payload_b64.len();
        let signing_input = token
            .get(..signing_input_length)
            .ok_or(TokenError::Malformed)?;
        let key_set_key = if crate::config::is_hmac(algorithm) {
            None
        } else {
            let kid = kid.ok_or(TokenError::MissingKeyId)?;
            let keys = issuer.keys.as_ref().ok_or(TokenError::UnknownKey)?;
            let key = match keys.lookup_or_refetch(kid).await {
                KeyLookup::Found(key) => key,
                KeyLookup::Unknown => return Err(TokenError::UnknownKey),
                KeyLookup::NotLoaded | KeyLookup::Stale => return Err(TokenError::KeysUnavailable),
            };
            if key.algorithm != algorithm {
                return Err(TokenError::KeyAlgorithmMismatch);
            }
            Some(key)
        };
        let key = match &key_set_key {
            Some(key) => &key.key,
            None => issuer
                .hmac_key
                .as_ref()
                .ok_or(TokenError::AlgorithmNotAllowed)?,
        };
        match jsonwebtoken::crypto::verify(signature_b64, signing_input.as_bytes(), key, algorithm)
        {
            Ok(true) => {}
            Ok(false) | Err(_) => return Err(TokenError::BadSignature),
        }

        let verified = self.check_claims(
            issuer,
            algorithm,
            &typ,
            claims,
            issuer_index,
            kid.unwrap_or_default(),
        )?;
        Ok((verified, key_set_key))
    }

    fn check_claims(
        &self,
        issuer: &TrustedIssuer,
        algorithm: Algorithm,
        typ: &str,
        claims: Map<String, Value>,
        issuer_index: usize,
        kid: &str,
    ) -> Result<VerifiedToken, TokenError> {
        let config = &issuer.config;
        let rules = TimeRules::of(config);
        rules.check(&Lifetime::from_claims(&claims)?, self.now())?;
        claims::check_audience(claims.get("aud"), &config.audiences, true)?;

        if let Some(required) = &config.required_typ
            && media_type(typ) != media_type(required)
        {
            return Err(TokenError::WrongType);
        }

        VerifiedToken::from_claims(
            claims,
            &config.claims,
            Provenance {
                issuer_index,
                issuer: &config.issuer,
                kid,
                algorithm: Some(algorithm),
                typ,
                rules,
            },
        )
    }
}

/// What is known of a token besides its claims.
#[derive(Debug, Clone, Copy)]
pub struct Provenance<'a> {
    /// Index of the issuer in the configuration.
    pub issuer_index: usize,
    pub issuer: &'a str,
    pub kid: &'a str,
    /// The algorithm the signature was verified with; `None` for claims taken on trust offline.
    pub algorithm: Option<Algorithm>,
    pub typ: &'a str,
    /// The issuer's time rules, which bound how long a decision for the token may be reused.
    pub rules: TimeRules,
}

impl VerifiedToken {
    /// The credential an API key stands for, valid until `exp`.
    pub fn for_api_key(
        key: &crate::config::ApiKeyConfig,
        exp: i64,
        principal: PreparedPrincipal,
    ) -> Self {
        Self {
            issuer_index: usize::MAX,
            issuer: String::new(),
            principal_kind: PrincipalKind::ApiKey,
            principal_id: key.id.clone(),
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
            claims: Map::new(),
            principal,
        }
    }

    /// The principal that checked claims name, read with the issuer's claim names: the subject or
    /// client, scopes, roles and tenant, and the Cedar entities for them. The caller has checked the
    /// signature and the time and audience claims; `exp` must be present.
    pub fn from_claims(
        claims: Map<String, Value>,
        claim_names: &ClaimNames,
        provenance: Provenance<'_>,
    ) -> Result<Self, TokenError> {
        let lifetime = Lifetime::from_claims(&claims)?;
        let subject = optional_string(&claims, &claim_names.subject, "sub")?;
        let mut client_id = String::new();
        for name in &claim_names.client_id {
            if let Some(value) = claims.get(name) {
                let Value::String(value) = value else {
                    return Err(TokenError::InvalidClaim("client_id"));
                };
                client_id = value.clone();
                break;
            }
        }
        let (principal_kind, principal_id) = match (subject.is_empty(), client_id.is_empty()) {
            (true, true) => return Err(TokenError::MissingClaim("sub")),
            // A client-credentials token has no user: either no subject, or the client as its subject.
            (true, false) => (PrincipalKind::Client, client_id.clone()),
            (false, _) if subject == client_id => (PrincipalKind::Client, client_id.clone()),
            (false, _) => (PrincipalKind::User, subject.clone()),
        };
        let scopes = first_list(&claims, &claim_names.scope, true)
            .map_err(|()| TokenError::InvalidClaim("scope"))?;
        let roles = first_list(&claims, &claim_names.roles, false)
            .map_err(|()| TokenError::InvalidClaim("roles"))?;
        let tenant = match &claim_names.tenant {
            Some(name) => optional_string(&claims, name, "tenant")?,
            None => String::new(),
        };

        let principal = PreparedPrincipal::new(&Principal {
            kind: principal_kind,
            id: &principal_id,
            issuer: provenance.issuer,
            subject: &subject,
            client_id: &client_id,
            tenant: &tenant,
            scopes: &scopes,
            roles: &roles,
            claims: &claims,
        })
        .map_err(|_| TokenError::InvalidPayload)?;
        Ok(Self {
            issuer_index: provenance.issuer_index,
            issuer: provenance.issuer.to_owned(),
            principal_kind,
            principal_id,
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
            claims,
            principal,
        })
    }
}

/// RFC 6750 §2.1 `b64token`: the characters a bearer token may have.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-._~+/".contains(&byte))
}

/// Decodes a base64url segment (canonical, unpadded) holding a JSON object without duplicate keys.
fn decode_object(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    crate::strict_json::parse_object(&bytes).ok()
}

fn optional_string(
    claims: &Map<String, Value>,
    name: &str,
    label: &'static str,
) -> Result<String, TokenError> {
    match claims.get(name) {
        None => Ok(String::new()),
        Some(Value::String(value)) => Ok(value.clone()),
        Some(_) => Err(TokenError::InvalidClaim(label)),
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

/// A `typ` compared as RFC 7515 §4.1.9 says: case-insensitive, `application/` optional.
fn media_type(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    lower
        .strip_prefix("application/")
        .map_or_else(|| lower.clone(), str::to_owned)
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
    }

    #[test]
    fn typ_compares_media_types() {
        assert_eq!(media_type("application/AT+JWT"), media_type("at+jwt"));
        assert_ne!(media_type("JWT"), media_type("at+jwt"));
    }
}
