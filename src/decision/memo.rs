//! The decision memo (DESIGN §10): the decision for a credential and an input seen before, so that a
//! repeated question costs a lookup instead of the policy step.
//!
//! An entry is keyed by the credential's digest, the method, the normal path, and exactly the fields
//! the running policy set reads ([`Reads`], found from the policies at load). Of the path, when the
//! policies only test it against constants (`like "/orders/*"`), the key holds just the tests it
//! passes and its first segment (which picks the slice of policies that run, and so which of them
//! may report an error), so that `/orders/1` and `/orders/2` share an entry.
//!
//! An entry names the very credential object it was decided for, and is used only for that object.
//! It names it by a `Weak`, so an entry keeps no credential alive after the token cache lets it go,
//! and the allocation it points at cannot be reused by another while the entry lasts. The memo is
//! consulted after the credential has been verified for this request, a cache hit re-checked as
//! strictly as a fresh verification (time, key identity, staleness: DESIGN §3), so an entry is never
//! used past what the credential's own checks allow; a credential verified anew (introspected again,
//! say) is another object and misses. What depends on the request or the time is not kept: the
//! `decision_id` is minted and `cache_ttl` computed afresh for each answer. A policy set that reads
//! `context.time` gets no memo. Each generation has its own (a reload starts empty), bounded in
//! entries and in bytes. A key is kept only on its second sighting (a doorkeeper of recent key hashes,
//! as TinyLFU admits), so a stream of questions that never recur costs a hash each, not an entry each
//! that evicts the useful ones.
//!
//! A decision Cedar could not be asked for (a 400 naming the field) is not kept. A field the key leaves
//! out is one the policy step does not even build ([`Reads`] again), so such a 400 never depends on one;
//! a path keyed by its tests is built as one string, which cannot fail (its segments, which can, are
//! read only with the whole path).

use std::collections::HashSet;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use super::{Decision, DecisionInput, ErrorCode, UpstreamHeaders};
use crate::credential::Credential;
use crate::policy::{NameReads, Reads, slice_segment};

/// The bytes each entry is charged at least: the memo holds at most `max_decisions` entries and
/// `max_decisions` × this many bytes.
const ENTRY_BYTES: u64 = 1024;

/// The distinct outcomes the memo shares; past these, an entry has its own.
const MAX_OUTCOMES: usize = 1024;

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
    /// Each distinct outcome once (up to [`MAX_OUTCOMES`]), shared by the entries that repeat it: a
    /// policy set has few (an allow by one permit, a deny by one forbid), its entries many.
    outcomes: Mutex<HashSet<Arc<Outcome>>>,
}

/// The credential's digest and the input fields, each length-prefixed so that no two inputs share a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key(Box<[u8]>);

#[derive(Debug, Clone)]
struct Entry {
    credential: Weak<Credential>,
    kept: Kept,
    bytes: u64,
}

/// What an entry keeps of a policy decision: what the policies decided, and the upstream headers,
/// shared by every decision on the credential. What the credential says of itself (the subject,
/// client, issuer, scopes, key id) is taken from it again, so an entry costs a key and a few pointers.
#[derive(Debug, Clone)]
pub(super) struct Kept {
    pub(super) outcome: Arc<Outcome>,
    pub(super) headers: UpstreamHeaders,
}

/// What the policies decided, less the upstream headers.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct Outcome {
    pub(super) allow: bool,
    pub(super) status: u16,
    pub(super) error: ErrorCode,
    pub(super) error_description: Box<str>,
    pub(super) www_authenticate: Box<str>,
    pub(super) policies: Box<[String]>,
    pub(super) policy_errors: Box<[String]>,
}

impl Outcome {
    fn of(decision: &Decision) -> Self {
        Self {
            allow: decision.allow,
            status: decision.status,
            error: decision.error,
            error_description: decision.error_description.as_str().into(),
            www_authenticate: decision.www_authenticate.as_str().into(),
            policies: decision.policies.as_slice().into(),
            policy_errors: decision.trace.policy_errors.as_slice().into(),
        }
    }
}

impl Kept {
    /// What it holds, roughly, charging it all of its outcome and headers, though it may share them,
    /// and the credential's own allocation, which stays while a `Weak` names it.
    fn bytes(&self) -> u64 {
        let outcome = &self.outcome;
        let text = outcome.error_description.len()
            + outcome.www_authenticate.len()
            + self.headers.bytes()
            + outcome
                .policies
                .iter()
                .chain(&outcome.policy_errors)
                .map(|text| std::mem::size_of::<String>() + text.len())
                .sum::<usize>();
        (std::mem::size_of::<Outcome>() + std::mem::size_of::<Credential>() + text) as u64
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
            outcomes: Mutex::default(),
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
        match reads.path.passed(path) {
            None => key.field(path.as_bytes()),
            Some(passed) => {
                // What the policies can tell of the path, and the slice of them it picks, whose
                // policies alone report errors.
                match slice_segment(path) {
                    Some(segment) => key.field(segment.as_bytes()),
                    None => key.absent(),
                }
                key.field(&passed.to_le_bytes());
            }
        }
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
    pub(super) fn get(&self, key: &Key, credential: &Arc<Credential>) -> Option<Kept> {
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
        let kept = Kept {
            outcome: self.shared(Outcome::of(decision)),
            headers: decision.headers.clone(),
        };
        entries.insert(
            key,
            Entry {
                credential: Arc::downgrade(credential),
                bytes: kept.bytes(),
                kept,
            },
        );
    }

    /// `outcome`, as the entries that repeat it share it.
    fn shared(&self, outcome: Outcome) -> Arc<Outcome> {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = outcomes.get(&outcome) {
            return Arc::clone(shared);
        }
        let outcome = Arc::new(outcome);
        if outcomes.len() < MAX_OUTCOMES {
            outcomes.insert(Arc::clone(&outcome));
        }
        outcome
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::test_credential;
    use crate::policy::PathReads;

    fn token(subject: &str) -> Arc<Credential> {
        test_credential(serde_json::json!({ "sub": subject, "exp": 2_000_000_000_i64 }))
    }

    fn decision(allow: bool, policy: &str) -> Decision {
        Decision {
            decision_id: uuid::Uuid::nil(),
            allow,
            status: if allow { 200 } else { 403 },
            error: if allow {
                ErrorCode::None
            } else {
                ErrorCode::AccessDenied
            },
            policies: vec![policy.to_owned()],
            ..Decision::default()
        }
    }

    fn input(path: &str) -> DecisionInput {
        DecisionInput {
            authorization: None,
            api_key: None,
            method: "GET".to_owned(),
            path: path.to_owned(),
            host: String::new(),
            query: String::new(),
            client_ip: None,
            headers: std::collections::BTreeMap::new(),
            apigee: crate::policy::ApigeeContext::default(),
            message_id: String::new(),
        }
    }

    /// Of the path, a key holds what the policies can tell of it, and the slice it picks.
    #[test]
    fn paths_the_policies_cannot_tell_apart_share_a_key() {
        let orders = crate::policy::PathTest::Like(
            "/orders/"
                .chars()
                .map(crate::policy::PatternChar::Char)
                .chain([crate::policy::PatternChar::Any])
                .collect(),
        );
        let tested = Memo::new(
            &Reads {
                path: PathReads::Tests(vec![orders]),
                ..Reads::default()
            },
            100,
        );
        let whole = Memo::new(
            &Reads {
                path: PathReads::Whole,
                ..Reads::default()
            },
            100,
        );
        let key = |memo: &Memo, path: &str| memo.key(&[7; 32], &input(path), path);
        assert!(key(&tested, "/orders/1").is_some());
        assert_eq!(key(&tested, "/orders/1"), key(&tested, "/orders/2/items"));
        assert_ne!(key(&tested, "/orders/1"), key(&tested, "/orders"));
        assert_ne!(
            key(&tested, "/admin"),
            key(&tested, "/adminx"),
            "another slice"
        );
        assert_eq!(key(&tested, "/admin"), key(&tested, "/admin/x"));
        assert_ne!(key(&whole, "/orders/1"), key(&whole, "/orders/2"));
    }

    /// Kept on its second sighting, for that credential object only, and sharing its outcome with every
    /// entry that repeats it.
    #[test]
    fn entries_share_the_outcomes_they_repeat() {
        let memo = Memo::new(
            &Reads {
                path: PathReads::Whole,
                ..Reads::default()
            },
            100,
        );
        let input = input("/orders/1");
        let (alice, bob) = (token("alice"), token("bob"));
        let cases = [
            (&alice, [1_u8; 32], "/orders/1", decision(true, "read")),
            (&bob, [2_u8; 32], "/orders/1", decision(true, "read")),
            (&bob, [2_u8; 32], "/orders/2", decision(false, "forbid")),
        ];
        for (credential, digest, path, decided) in &cases {
            let key = memo
                .key(digest, &input, path)
                .unwrap_or_else(|| panic!("on"));
            memo.insert(key.clone(), credential, decided);
            assert!(
                memo.get(&key, credential).is_none(),
                "kept on the first sighting"
            );
            memo.insert(key.clone(), credential, decided);
            let kept = memo
                .get(&key, credential)
                .unwrap_or_else(|| panic!("{path}"));
            assert_eq!(kept.outcome.allow, decided.allow);
            assert_eq!(*kept.outcome.policies, decided.policies);
            assert!(
                memo.get(&key, &token("alice")).is_none(),
                "another credential object"
            );
        }
        let outcomes: Vec<Option<Arc<Outcome>>> = cases
            .iter()
            .map(|(credential, digest, path, _)| {
                let key = memo.key(digest, &input, path)?;
                memo.get(&key, credential).map(|kept| kept.outcome)
            })
            .collect();
        let [first, second, third] = outcomes.as_slice() else {
            panic!("three cases")
        };
        assert!(matches!((first, second), (Some(a), Some(b)) if Arc::ptr_eq(a, b)));
        assert!(matches!((second, third), (Some(a), Some(b)) if !Arc::ptr_eq(a, b)));
        assert_eq!(memo.size().0, 3);
    }
}
