//! The prepared principals of the credentials used most recently: the policy step's Cedar entities
//! cost more to build than the policies cost to evaluate, and more memory than the rest of a cached
//! credential, so they are kept for a bounded few rather than for every credential the token cache
//! holds.
//!
//! Like the memo, each generation has its own, since what is prepared depends on its policies (the
//! claims they read) and its header mapping. An entry is keyed by the credential's digest, and serves
//! a credential equal to the one it was prepared from: the same object, or the same token verified
//! again once the token cache let the first go (which, under a token cache too small for the tokens
//! in use, is every request: building the entities and freeing those of the entry it evicts cost more
//! than the signature check). An entry holds its credential, so at most [`CAPACITY`] credentials stay
//! alive past the token cache, a few MiB.

use std::sync::Arc;

use quick_cache::sync::Cache;

use super::Prepared;
use crate::credential::{Credential, CredentialError};

/// How many credentials keep their principal prepared: at about 4 KiB each (BENCHMARKS.md §4), 16 MiB
/// at most, however many tokens the token cache holds.
const CAPACITY: usize = 4096;

#[derive(Debug)]
pub(super) struct PreparedCache {
    entries: Cache<[u8; 32], Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    credential: Arc<Credential>,
    prepared: Arc<Prepared>,
}

impl PreparedCache {
    pub(super) fn new() -> Self {
        Self {
            entries: Cache::new(CAPACITY),
        }
    }

    /// What is prepared for `credential`, whose digest is `digest`: kept, or `prepare`d now and kept.
    pub(super) fn get(
        &self,
        digest: &[u8; 32],
        credential: &Arc<Credential>,
        prepare: impl FnOnce() -> Result<Prepared, CredentialError>,
    ) -> Result<Arc<Prepared>, CredentialError> {
        // `Arc<T: Eq>` compares the pointers before the contents: the same object costs no more.
        if let Some(entry) = self.entries.get(digest)
            && entry.credential == *credential
        {
            return Ok(entry.prepared);
        }
        let prepared = Arc::new(prepare()?);
        self.entries.insert(
            *digest,
            Entry {
                credential: Arc::clone(credential),
                prepared: Arc::clone(&prepared),
            },
        );
        Ok(prepared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{UpstreamHeaders, test_credential};
    use crate::policy::{NameReads, PreparedPrincipal};

    fn token(scope: &str) -> Arc<Credential> {
        test_credential(serde_json::json!({
            "sub": "alice", "scope": scope, "exp": 2_000_000_000_i64
        }))
    }

    fn prepare(credential: &Credential, calls: &mut usize) -> Result<Prepared, CredentialError> {
        *calls += 1;
        let claims = credential.claims();
        let principal = PreparedPrincipal::new(&credential.principal(&claims), &NameReads::All)
            .map_err(|_| CredentialError::InvalidPayload)?;
        Ok(Prepared {
            principal,
            headers: UpstreamHeaders::default(),
        })
    }

    #[test]
    fn a_token_verified_again_reuses_its_principal_and_one_that_says_otherwise_does_not() {
        let cache = PreparedCache::new();
        let digest = [7; 32];
        let mut calls = 0;
        let first = token("orders:read");
        let prepared = cache.get(&digest, &first, || prepare(&first, &mut calls));
        let prepared = prepared.unwrap_or_else(|error| panic!("{error}"));

        // The same token verified again once the token cache let it go: another, equal object.
        let again = Arc::new((*first).clone());
        let reused = cache.get(&digest, &again, || prepare(&again, &mut calls));
        assert!(reused.is_ok_and(|reused| Arc::ptr_eq(&reused, &prepared)));
        assert_eq!(calls, 1);

        // The same opaque token introspected again, now with another scope: prepared anew.
        let changed = token("orders:read orders:write");
        let fresh = cache.get(&digest, &changed, || prepare(&changed, &mut calls));
        assert!(fresh.is_ok_and(|fresh| !Arc::ptr_eq(&fresh, &prepared)));
        assert_eq!(calls, 2);
    }
}
