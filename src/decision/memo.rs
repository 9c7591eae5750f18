//! The decision memo (DESIGN §10): the decision for a credential and an input seen before, so that a
//! repeated question costs a lookup instead of the policy step.
//!
//! An entry is keyed by the credential's digest, the method, the normal path, and exactly the fields
//! the running policy set reads ([`Reads`], found from the policies at load); it names the very
//! credential object it was decided for, and is used only for that object. It names it by a `Weak`, so
//! an entry keeps no credential alive after the token cache lets it go, and the allocation it points
//! at cannot be reused by another while the entry lasts. The memo is consulted after
//! the credential has been verified for this request, a cache hit re-checked as strictly as a fresh
//! verification (time, key identity, staleness: DESIGN §3), so an entry is never used past what the
//! credential's own checks allow; a credential verified anew (introspected again, say) is another
//! object and misses. What depends on the request or the time is not kept: the `decision_id` is minted
//! and `cache_ttl` computed afresh for each answer. A policy set that reads `context.time` gets no memo.
//! Each generation has its own (a reload starts empty), bounded in entries and in bytes. A key is kept
//! only on its second sighting (a doorkeeper of recent key hashes, as TinyLFU admits), so a stream of
//! questions that never recur costs a hash each, not an entry each that evicts the useful ones.
//!
//! A decision Cedar could not be asked for (a 400 naming the field) is not kept. A field the key leaves
//! out is one the policy step does not even build ([`Reads`] again), so such a 400 never depends on one.

use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use super::{Decision, DecisionInput, ErrorCode, UpstreamHeaders};
use crate::credential::Credential;
use crate::policy::{NameReads, Reads};

/// The bytes each entry is charged at least: the memo holds at most `max_decisions` entries and
/// `max_decisions` × this many bytes.
const ENTRY_BYTES: u64 = 1024;

/// The doorkeeper's slots at most: recent key hashes, one per slot, as many as the memo's entries (so
/// that a working set the memo can hold is admitted) rounded up to a power of two, within these bounds.
const DOORKEEPER_SLOTS: std::ops::RangeInclusive<usize> = (1 << 10)..=(1 << 20);

/// Decisions by credential and the input fields the policies read.
#[derive(Debug)]
pub(super) struct Memo {
    /// `None` when off: `cache.max_decisions` is 0, or the policies read the time.
    entries: Option<Cache<Key, Entry, Charge>>,
    reads: Reads,
    /// The hash of the last key seen in each slot; a key is kept when its slot already holds it.
    doorkeeper: Box<[AtomicU64]>,
    hasher: std::collections::hash_map::RandomState,
}

/// The credential's digest and the input fields, each length-prefixed so that no two inputs share a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key(Box<[u8]>);

#[derive(Debug, Clone)]
struct Entry {
    credential: Weak<Credential>,
    kept: Arc<Kept>,
    bytes: u64,
}

/// What an entry keeps of a policy decision: what the policies decided. What the credential says of
/// itself (the subject, client, issuer, scopes, key id) is taken from it again, and the upstream
/// headers are the ones shared by every decision on it, so an entry costs a few hundred bytes.
#[derive(Debug)]
pub(super) struct Kept {
    pub(super) allow: bool,
    pub(super) status: u16,
    pub(super) error: ErrorCode,
    pub(super) error_description: Box<str>,
    pub(super) www_authenticate: Box<str>,
    pub(super) headers: UpstreamHeaders,
    pub(super) policies: Box<[String]>,
    pub(super) policy_errors: Box<[String]>,
}

impl Kept {
    fn of(decision: &Decision) -> Self {
        Self {
            allow: decision.allow,
            status: decision.status,
            error: decision.error,
            error_description: decision.error_description.as_str().into(),
            www_authenticate: decision.www_authenticate.as_str().into(),
            headers: decision.headers.clone(),
            policies: decision.policies.as_slice().into(),
            policy_errors: decision.trace.policy_errors.as_slice().into(),
        }
    }

    /// What it holds, roughly, with the credential's own allocation, which stays while a `Weak` names
    /// it, and the headers, which the entry may be the last to hold.
    fn bytes(&self) -> u64 {
        let text = self.error_description.len()
            + self.www_authenticate.len()
            + self.headers.bytes()
            + self
                .policies
                .iter()
                .chain(&self.policy_errors)
                .map(|text| std::mem::size_of::<String>() + text.len())
                .sum::<usize>();
        (std::mem::size_of::<Self>() + std::mem::size_of::<Credential>() + text) as u64
    }
}

/// Charges an entry its estimated size, at least [`ENTRY_BYTES`].
#[derive(Debug, Clone, Copy)]
struct Charge;

impl Weighter<Key, Entry> for Charge {
    fn weight(&self, key: &Key, entry: &Entry) -> u64 {
        (key.0.len() as u64 + entry.bytes).max(ENTRY_BYTES)
    }
}

impl Memo {
    /// A memo of at most `max_decisions` entries for a policy set that reads `reads`.
    pub(super) fn new(reads: &Reads, max_decisions: usize) -> Self {
        let entries = (max_decisions > 0 && !reads.time).then(|| {
            let capacity = (max_decisions as u64).saturating_mul(ENTRY_BYTES);
            Cache::with_weighter(max_decisions, capacity, Charge)
        });
        let slots = if entries.is_some() {
            max_decisions
                .next_power_of_two()
                .clamp(*DOORKEEPER_SLOTS.start(), *DOORKEEPER_SLOTS.end())
        } else {
            0
        };
        Self {
            entries,
            reads: reads.clone(),
            doorkeeper: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The key of `input` (on its normal `path`) for the credential of `digest`; `None` when the memo
    /// is off.
    pub(super) fn key(&self, digest: &[u8; 32], input: &DecisionInput, path: &str) -> Option<Key> {
        self.entries.as_ref()?;
        let reads = &self.reads;
        let mut key = KeyWriter(Vec::with_capacity(96 + path.len()));
        key.0.extend_from_slice(digest);
        key.field(input.method.as_bytes());
        key.field(path.as_bytes());
        if reads.host {
            key.field(input.host.as_bytes());
        }
        if reads.apigee {
            let apigee = &input.apigee;
            for field in [
                &apigee.proxy,
                &apigee.environment,
                &apigee.organization,
                &apigee.product,
                &apigee.app,
                &apigee.developer,
            ] {
                key.field(field.as_bytes());
            }
        }
        if reads.query {
            key.field(input.query.as_bytes());
        }
        if reads.client_ip {
            match input.client_ip.map(|address| address.to_canonical()) {
                Some(std::net::IpAddr::V4(address)) => key.field(&address.octets()),
                Some(std::net::IpAddr::V6(address)) => key.field(&address.octets()),
                None => key.absent(),
            }
        }
        match &reads.headers {
            NameReads::None => {}
            NameReads::Named(names) => {
                for name in names {
                    match input.headers.get(name) {
                        Some(value) => key.field(value.as_bytes()),
                        None => key.absent(),
                    }
                }
            }
            NameReads::All => {
                key.field(&input.headers.len().to_le_bytes());
                for (name, value) in &input.headers {
                    key.field(name.as_bytes());
                    key.field(value.as_bytes());
                }
            }
        }
        Some(Key(key.0.into_boxed_slice()))
    }

    /// The entries held, and their estimated bytes.
    pub(super) fn size(&self) -> (usize, u64) {
        self.entries
            .as_ref()
            .map_or((0, 0), |entries| (entries.len(), entries.weight()))
    }

    /// The decision kept under `key` for this very `credential`.
    pub(super) fn get(&self, key: &Key, credential: &Arc<Credential>) -> Option<Arc<Kept>> {
        let entry = self.entries.as_ref()?.get(key)?;
        std::ptr::eq(entry.credential.as_ptr(), Arc::as_ptr(credential)).then_some(entry.kept)
    }

    /// Keeps `decision` under `key` for `credential`, replacing an entry for another credential object,
    /// if `key` was seen recently: the first time, only its hash is noted.
    pub(super) fn insert(&self, key: Key, credential: &Arc<Credential>, decision: &Decision) {
        let Some(entries) = &self.entries else {
            return;
        };
        let hash = self.hasher.hash_one(&key);
        let slot = usize::try_from(hash).unwrap_or_default() % self.doorkeeper.len().max(1);
        let first_sighting = self
            .doorkeeper
            .get(slot)
            .is_none_or(|seen| seen.swap(hash, Ordering::Relaxed) != hash);
        if first_sighting {
            return;
        }
        let kept = Kept::of(decision);
        entries.insert(
            key,
            Entry {
                credential: Arc::downgrade(credential),
                bytes: kept.bytes(),
                kept: Arc::new(kept),
            },
        );
    }
}

struct KeyWriter(Vec<u8>);

impl KeyWriter {
    fn field(&mut self, bytes: &[u8]) {
        self.0.push(1);
        self.0
            .extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
        self.0.extend_from_slice(bytes);
    }

    fn absent(&mut self) {
        self.0.push(0);
    }
}
