//! [`Verifier`]: one issuer set's verification of bearer tokens. A token shaped like a JWT is checked by
//! [`super::jwt`] (or answered from the token cache, when the very key that verified it is still
//! trusted and its time claims still hold); any other goes to the [`Introspector`] of the issuer its
//! prefix names.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::DecodingKey;
use secrecy::ExposeSecret;

use super::cache::{TokenCache, TokenHash};
use super::claims::TimeRules;
use super::introspect::Introspector;
use super::jwt::{self, TrustedIssuer};
use super::{Credential, CredentialError, Verified};
use crate::clock::SharedClock;
use crate::config::{IssuerConfig, KeySource};
use crate::jwks::{IssuerKeys, KeyLookup, VerificationKey};
use crate::policy::NameReads;

/// A verified JWT as the cache holds it: with the key that verified its signature, so a hit can tell
/// whether that very key is still in its issuer's fresh set.
#[derive(Debug)]
pub struct CachedToken {
    credential: Arc<Credential>,
    /// `None` for an HMAC token, whose key is the issuer's configured secret.
    key: Option<Arc<VerificationKey>>,
}

/// Verifies bearer tokens against the configured issuers: JWTs by their signature and claims, opaque
/// tokens by introspection; caches verified JWTs.
#[derive(Debug)]
pub struct Verifier {
    issuers: Vec<TrustedIssuer>,
    // INVARIANT: issuers are chosen by exact `iss` match; keys are looked up by (issuer, kid).
    by_iss: HashMap<String, usize>,
    max_token_bytes: usize,
    max_cached_tokens: usize,
    /// The claims a credential keeps ([`super::Provenance::keep`]).
    keep_claims: Arc<NameReads>,
    cache: TokenCache,
    /// One per issuer with `introspection`, for opaque tokens.
    introspectors: Vec<Arc<Introspector>>,
    clock: SharedClock,
}

impl Verifier {
    /// The verifier for these settings after `previous`: `previous` itself, with its token cache, when
    /// it was built from exactly these settings; otherwise a new one (see [`Self::replacing`]). The
    /// settings include `keep_claims`, the claims a credential keeps: a cached credential holds no
    /// other, so one built for fewer cannot serve policies that read more.
    pub fn succeeding(
        previous: Option<&Arc<Self>>,
        issuers: &[IssuerConfig],
        max_token_bytes: usize,
        max_cached_tokens: usize,
        keep_claims: &NameReads,
        http: &reqwest::Client,
        clock: SharedClock,
    ) -> Arc<Self> {
        match previous {
            Some(verifier)
                if verifier.has_settings(
                    issuers,
                    max_token_bytes,
                    max_cached_tokens,
                    keep_claims,
                ) =>
            {
                Arc::clone(verifier)
            }
            _ => Arc::new(Self::replacing(
                previous.map(|verifier| &**verifier),
                issuers,
                max_token_bytes,
                max_cached_tokens,
                keep_claims,
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
        keep_claims: &NameReads,
        http: &reqwest::Client,
        clock: SharedClock,
    ) -> Self {
        let keep_claims = Arc::new(keep_claims.clone());
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
                issuer: config.issuer.as_str().into(),
                config: config.clone(),
                keep_claims: Arc::clone(&keep_claims),
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
                    Arc::clone(&keep_claims),
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
            keep_claims,
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
        keep_claims: &NameReads,
    ) -> bool {
        self.max_token_bytes == max_token_bytes
            && self.max_cached_tokens == max_cached_tokens
            && *self.keep_claims == *keep_claims
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
    pub async fn verify(&self, token: &str) -> Result<Verified, CredentialError> {
        self.verify_hashed(token, &TokenCache::hash(token)).await
    }

    /// [`Self::verify`], for a caller that has the token's SHA-256 already.
    pub async fn verify_hashed(
        &self,
        token: &str,
        hash: &TokenHash,
    ) -> Result<Verified, CredentialError> {
        if token.is_empty() {
            return Err(CredentialError::Empty);
        }
        if token.len() > self.max_token_bytes {
            return Err(CredentialError::TooLarge);
        }
        // A cached token passed the checks of its form below when it was verified, and its digest
        // names exactly its bytes, so a hit skips them (a scan of every byte); it is still re-checked
        // on what time and the key set change.
        if let Some(cached) = self.cache.get(hash) {
            if let Some(hit) = self.hit_if_still_valid(&cached) {
                crate::metrics::global().token_cache_lookup(true);
                return Ok(hit);
            }
            // Whatever made the hit fail (expiry, age, a replaced key) a fresh verification decides.
            self.cache.remove(hash);
        }
        let segments = token.split('.').count();
        if segments != 3
            && segments != 5
            && let Some(introspector) = self.introspector_for(token)
        {
            if !is_b64token(token) {
                return Err(CredentialError::InvalidCharacters);
            }
            return introspector.verify(token, hash).await;
        }
        if !token
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
        {
            return Err(CredentialError::InvalidCharacters);
        }
        crate::metrics::global().token_cache_lookup(false);
        let (verified, key) = jwt::verify(token, &self.issuers, &self.by_iss, self.now()).await?;
        let verified = Arc::new(verified);
        let keys_fresh_until = self.keys_fresh_until(verified.issuer_index, key.as_deref());
        self.cache.insert(
            *hash,
            Arc::new(CachedToken {
                credential: Arc::clone(&verified),
                key,
            }),
        );
        Ok(Verified {
            credential: verified,
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
        let token = &cached.credential;
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
            credential: Arc::clone(token),
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
}

/// RFC 6750 §2.1 `b64token`: the characters a bearer token may have.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-._~+/".contains(&byte))
}
