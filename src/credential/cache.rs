//! The verified-token cache: bounded, keyed by a SHA-256 of the token, never trusted past `exp`.

use std::sync::Arc;

use super::CachedToken;

/// A SHA-256 of a token: the cache key, and (shortened) the token's name in logs.
pub type TokenHash = [u8; 32];

/// Verified tokens by hash. The cache holds no token text; an entry is only a shortcut past the
/// signature check, and its caller re-checks the time claims and the key on every hit.
#[derive(Debug)]
pub struct TokenCache {
    entries: quick_cache::sync::Cache<TokenHash, Arc<CachedToken>>,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: quick_cache::sync::Cache::new(capacity),
        }
    }

    pub fn hash(token: &str) -> TokenHash {
        crate::digest::sha256(token.as_bytes())
    }

    pub fn get(&self, hash: &TokenHash) -> Option<Arc<CachedToken>> {
        self.entries.get(hash)
    }

    pub fn insert(&self, hash: TokenHash, token: Arc<CachedToken>) {
        self.entries.insert(hash, token);
    }

    pub fn remove(&self, hash: &TokenHash) {
        self.entries.remove(hash);
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }
}
