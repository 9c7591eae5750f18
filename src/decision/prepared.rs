//! The prepared principals of the credentials used most recently: the policy step's Cedar entities
//! cost more to build than the policies cost to evaluate, and more memory than the rest of a cached
//! credential, so they are kept for a bounded few rather than for every credential the token cache
//! holds.
//!
//! Like the memo, each generation has its own, since what is prepared depends on its policies (the
//! claims they read) and its header mapping; and an entry is keyed by the credential's digest and used
//! only for the very credential object it was prepared from, named by a `Weak`.

use std::sync::{Arc, Weak};

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
    credential: Weak<Credential>,
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
        if let Some(entry) = self.entries.get(digest)
            && std::ptr::eq(entry.credential.as_ptr(), Arc::as_ptr(credential))
        {
            return Ok(entry.prepared);
        }
        let prepared = Arc::new(prepare()?);
        self.entries.insert(
            *digest,
            Entry {
                credential: Arc::downgrade(credential),
                prepared: Arc::clone(&prepared),
            },
        );
        Ok(prepared)
    }
}
