//! The `cache:` section: the size of the verified-token cache and of the decision memo, and how long
//! the proxy may reuse an allow.

use std::time::Duration;

use serde_norway::Value;

use super::errors::Errors;
use super::{defaults, raw};

/// The verified-token cache and the decision reuse the callout may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    pub max_tokens: usize,
    /// The decision memo's entries (DESIGN §10); 0 turns it off.
    pub max_decisions: usize,
    /// The `cache_ttl` of an allow, capped by the token's `exp`; zero tells the proxy not to cache.
    pub decision_ttl: Duration,
}

/// Validates `cache:`; `None` when it is wrong.
pub(super) fn validate_cache(value: Option<Value>, errors: &mut Errors) -> Option<CacheConfig> {
    let raw = errors.section::<raw::Cache>("cache", value)?;
    let max_tokens = raw.max_tokens.unwrap_or(defaults::CACHE_MAX_TOKENS);
    if max_tokens == 0 {
        errors.push("cache.max_tokens", "must be at least 1");
        return None;
    }
    Some(CacheConfig {
        max_tokens: usize::try_from(max_tokens).unwrap_or(usize::MAX),
        max_decisions: usize::try_from(raw.max_decisions.unwrap_or(defaults::CACHE_MAX_DECISIONS))
            .unwrap_or(usize::MAX),
        decision_ttl: raw
            .decision_ttl
            .map_or(defaults::CACHE_DECISION_TTL, |ttl| ttl.0),
    })
}
