//! The decision engine: credential → verified [`Credential`] → policy → [`Decision`]. It knows no
//! front: every gateway protocol maps its request to a [`DecisionInput`] and reads the `Decision`.
//!
//! [`Engine::decide`] is the one path every callout takes. It never fails: every problem becomes a deny
//! with the status, error code and `WWW-Authenticate` challenge the proxy returns to its client
//! (DESIGN §2). Nothing on this path answers allow after an error.

mod memo;
pub mod path;
mod prepared;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderName;
use serde_json::Value;
use uuid::Uuid;

use memo::{Kept, Memo};
use prepared::PreparedCache;

use crate::clock::SharedClock;
use crate::credential::ApiKeyStore;
use crate::credential::{self, Credential, CredentialError, Verifier};
use crate::digest::ShortDigest;
use crate::policy::{
    ApigeeContext, DenyCode, DenyReason, NameReads, PolicyRequest, PolicySet, PreparedPrincipal,
    PrincipalKind, TokenFacts, Unrepresentable,
};

/// The `error` of a decision (DESIGN §2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    #[default]
    None,
    InvalidRequest,
    InvalidToken,
    InsufficientScope,
    AccessDenied,
    TemporarilyUnavailable,
}

impl ErrorCode {
    pub const ALL: [Self; 6] = [
        Self::None,
        Self::InvalidRequest,
        Self::InvalidToken,
        Self::InsufficientScope,
        Self::AccessDenied,
        Self::TemporarilyUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "",
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::AccessDenied => "access_denied",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }
}

/// One request to decide, as the proxy described it.
#[derive(Debug, Default)]
pub struct DecisionInput {
    /// The client's `Authorization` header, verbatim.
    pub authorization: Option<String>,
    /// The client's API key, used when there is no bearer token.
    pub api_key: Option<String>,
    /// Upper-case HTTP method.
    pub method: String,
    /// The path as the front received it; the engine decides on its normal form ([`path::normalize`]).
    pub path: String,
    pub host: String,
    pub query: String,
    pub client_ip: Option<IpAddr>,
    /// Lower-case header names.
    pub headers: BTreeMap<String, String>,
    pub apigee: ApigeeContext,
    pub message_id: String,
}

/// The answer to one callout. Its `Default` is a base to build one on, not a decision: its id is nil and
/// its status 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub decision_id: Uuid,
    pub allow: bool,
    pub status: u16,
    pub error: ErrorCode,
    pub error_description: String,
    pub www_authenticate: String,
    /// The verified credential the decision is on, which names the subject, client, issuer, scopes
    /// and key id; `None` when none was verified. Shared, not copied: a memo hit copies nothing of it.
    pub credential: Option<Arc<Credential>>,
    /// Upstream headers for the proxy to set, from the configured claim mapping.
    pub headers: UpstreamHeaders,
    pub cache_ttl: u64,
    pub policies: Vec<String>,
    /// For the logs: how the decision came about.
    pub trace: DecisionTrace,
}

impl Decision {
    /// The credential's subject; empty without one.
    pub fn subject(&self) -> &str {
        self.credential.as_ref().map_or("", |token| &token.subject)
    }

    /// The credential's client id; empty without one.
    pub fn client_id(&self) -> &str {
        self.credential
            .as_ref()
            .map_or("", |token| &token.client_id)
    }

    /// The credential's issuer; empty without one.
    pub fn issuer(&self) -> &str {
        self.credential.as_ref().map_or("", |token| &token.issuer)
    }

    /// The key id the credential was verified with; empty without one.
    pub fn kid(&self) -> &str {
        self.credential.as_ref().map_or("", |token| &token.kid)
    }

    /// The credential's scopes, as OAuth writes them: separated by spaces.
    pub fn scope(&self) -> Scope<'_> {
        Scope(self.credential.as_ref().map_or(&[], |token| &token.scopes))
    }
}

/// A decision's scopes written as one space-separated text, as `Display` and as a JSON string.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a>(&'a [String]);

impl std::fmt::Display for Scope<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, scope) in self.0.iter().enumerate() {
            if index > 0 {
                formatter.write_str(" ")?;
            }
            formatter.write_str(scope)?;
        }
        Ok(())
    }
}

/// `serde_json` writes it straight into the output, without a `String` in between.
impl serde::Serialize for Scope<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An allow's upstream headers, name and value, in the order of the configuration's `headers:`: one
/// allocation, prepared once per credential and shared by every decision on it. The text holds a
/// `name:value` line per header; a header name has no `:` and a valid header value no line break.
/// No headers is no allocation (`None`): a deny, the base every decision is built on, has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamHeaders(Option<Arc<str>>);

impl UpstreamHeaders {
    /// `headers`, each name a header name and each value a valid header value.
    fn new<'a>(headers: impl Iterator<Item = (&'a HeaderName, String)>) -> Self {
        let mut text = String::new();
        for (name, value) in headers {
            let _ = writeln!(text, "{}:{value}", name.as_str());
        }
        Self((!text.is_empty()).then(|| text.into()))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .as_deref()
            .unwrap_or_default()
            .split_terminator('\n')
            .filter_map(|line| line.split_once(':'))
    }

    /// The heap bytes they hold.
    fn bytes(&self) -> usize {
        self.0.as_deref().map_or(0, str::len)
    }
}

/// A JSON object, as DESIGN §2 writes `headers`.
impl serde::Serialize for UpstreamHeaders {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

/// What a decision's log line needs beyond the answer itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionTrace {
    /// A short hash of the credential, to correlate log lines without holding the credential; `None`
    /// when the request presented none.
    pub credential_hash: Option<ShortDigest>,
    pub token_cache_hit: bool,
    /// The decision came from the memo: the policy step did not run.
    pub memo_hit: bool,
    pub verify_micros: u64,
    pub policy_micros: u64,
    /// Policies that failed to evaluate.
    pub policy_errors: Vec<String>,
}

/// Verifies credentials, then lets the [`Decider`] decide.
#[derive(Debug)]
pub struct Engine {
    verifier: Arc<Verifier>,
    api_keys: ApiKeyStore,
    decider: Decider,
    memo: Memo,
    prepared: PreparedCache,
    clock: SharedClock,
}

impl Engine {
    /// The engine, with a decision memo of at most `max_decisions` entries (none for 0).
    pub fn new(
        verifier: Arc<Verifier>,
        api_keys: ApiKeyStore,
        decider: Decider,
        max_decisions: usize,
        clock: SharedClock,
    ) -> Self {
        Self {
            memo: Memo::new(decider.policies.reads(), max_decisions),
            prepared: PreparedCache::new(),
            verifier,
            api_keys,
            decider,
            clock,
        }
    }

    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    pub fn policies(&self) -> &PolicySet {
        &self.decider.policies
    }

    /// The decisions the memo holds, and their estimated bytes.
    pub fn memo_size(&self) -> (usize, u64) {
        self.memo.size()
    }

    /// What the policy step needs of `token` ([`Decider::prepare`]).
    pub fn prepare(&self, token: &Credential) -> Result<Prepared, CredentialError> {
        self.decider.prepare(token)
    }

    /// The configured name of the issuer of `decision`'s credential: `api_key` for an API key, empty
    /// when none was verified.
    pub fn issuer_name(&self, decision: &Decision) -> &str {
        match &decision.credential {
            None => "",
            Some(credential) if credential.principal_kind == PrincipalKind::ApiKey => "api_key",
            Some(credential) => self.verifier.issuer_name(credential.issuer_index),
        }
    }

    /// The upstream headers an allow may set (`headers:`), in file order; a decision sets those whose
    /// claim the credential has.
    pub fn upstream_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.decider.headers.iter().map(|(header, _)| header)
    }

    /// Decides one request.
    pub async fn decide(&self, input: &DecisionInput) -> Decision {
        let decider = &self.decider;
        let path = match path::normalize(&input.path) {
            Ok(path) => path,
            Err(error) => return decider.refuse_path(error),
        };
        let bearer = input
            .authorization
            .as_deref()
            .and_then(credential::bearer_token);
        let api_key = input
            .api_key
            .as_deref()
            .filter(|_| !self.api_keys.is_empty());
        if bearer.is_none() && api_key.is_none() {
            return decider.deny(401, ErrorCode::None, "no bearer token");
        }

        let started = Instant::now();
        // One SHA-256 of the credential serves the caches, the key store and the decision log.
        let digest = crate::digest::sha256(bearer.or(api_key).unwrap_or_default().as_bytes());
        let credential_hash = Some(ShortDigest::of(&digest));
        let now = i64::try_from(self.clock.now()).unwrap_or(i64::MAX);
        let verified = match (bearer, api_key) {
            (Some(token), _) => self.verifier.verify_hashed(token, &digest).await,
            (None, Some(_)) => self.api_keys.verify(&digest, now),
            (None, None) => Err(CredentialError::Empty),
        };
        let verify_micros = micros_since(started);
        let verified = match verified {
            Ok(verified) => verified,
            Err(error) => {
                let mut decision = decider.token_error(error);
                decision.trace.verify_micros = verify_micros;
                decision.trace.credential_hash = credential_hash;
                return decision;
            }
        };
        let token = &verified.credential;
        let key = self.memo.key(&digest, input, &path);
        let kept = key.as_ref().and_then(|key| self.memo.get(key, token));
        let mut decision = match (kept, key) {
            (Some(kept), _) => decider.reissue(&kept, token, now),
            (None, key) => match self.prepared.get(&digest, token, || decider.prepare(token)) {
                Err(error) => decider.token_error(error),
                Ok(prepared) => {
                    match decider.evaluate_verified(token, &prepared, input, &path, now) {
                        Evaluated::ByPolicy(decision) => {
                            if let Some(key) = key {
                                self.memo.insert(key, token, &decision);
                            }
                            decision
                        }
                        Evaluated::Unrepresentable(decision) => decision,
                    }
                }
            },
        };
        // Nor past the freshness of the keys that verified the token.
        decision.cache_ttl = decision
            .cache_ttl
            .min(seconds_until(verified.reusable_until(), now));
        decision.trace.credential_hash = credential_hash;
        decision.trace.token_cache_hit = verified.cache_hit;
        decision.trace.verify_micros = verify_micros;
        decision
    }
}

/// A new decision id: a UUIDv7 whose random bits come from aws-lc's generator (`Uuid::now_v7` makes a
/// `getrandom` system call each time). The generator is asked for [`RANDOM_BATCH`] ids' worth of bits
/// at once, per thread: each call has a fixed cost (its locks, the fork and reseed checks) far above
/// that of ten bytes.
fn decision_id() -> Uuid {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
    match RANDOM.with_borrow_mut(RandomBits::take) {
        Some(random) => uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid(),
        None => Uuid::now_v7(),
    }
}

/// The decision ids one draw from the generator serves.
const RANDOM_BATCH: usize = 64;

thread_local! {
    static RANDOM: std::cell::RefCell<RandomBits> = const {
        std::cell::RefCell::new(RandomBits { bits: [0; 10 * RANDOM_BATCH], used: 10 * RANDOM_BATCH })
    };
}

/// Random bits drawn ahead for this thread's next decision ids; each id's ten bytes are used once.
struct RandomBits {
    bits: [u8; 10 * RANDOM_BATCH],
    used: usize,
}

impl RandomBits {
    /// The next ten bytes, drawing a new batch when these are spent; `None` if the generator fails.
    fn take(&mut self) -> Option<[u8; 10]> {
        if self.used == self.bits.len() {
            aws_lc_rs::rand::fill(&mut self.bits).ok()?;
            self.used = 0;
        }
        let mut random = [0_u8; 10];
        random.copy_from_slice(self.bits.get(self.used..self.used + 10)?);
        self.used += 10;
        Some(random)
    }
}

/// What the policy step needs of one credential under one generation's policies and header mapping:
/// its principal with the claims the policies read, and the upstream headers of an allow.
#[derive(Debug)]
pub struct Prepared {
    pub principal: PreparedPrincipal,
    headers: UpstreamHeaders,
}

/// A decision for a verified credential, by how it came about: only the policies' may be kept.
enum Evaluated {
    ByPolicy(Decision),
    /// The 400 for a request Cedar cannot be asked.
    Unrepresentable(Decision),
}

/// Decides for a verified credential: evaluates the policies and shapes the answer. Needs no issuer, so
/// `verdict test` and `verdict decide` use it directly.
#[derive(Debug)]
pub struct Decider {
    policies: PolicySet,
    headers: Vec<(HeaderName, String)>,
    realm: String,
    decision_ttl: Duration,
}

impl Decider {
    pub fn new(
        policies: PolicySet,
        headers: Vec<(HeaderName, String)>,
        realm: String,
        decision_ttl: Duration,
    ) -> Self {
        Self {
            policies,
            headers,
            realm,
            decision_ttl,
        }
    }

    /// The claims a decision can read of a credential: those the policies read (`principal.claims`) and
    /// those the upstream headers are mapped from. A credential keeps no other.
    pub fn claims_read(&self) -> NameReads {
        let mut claims = self.policies.reads().claims.clone();
        for (_, claim) in &self.headers {
            claims.add(claim);
        }
        claims
    }

    /// The deny for a request path that could pass for another route ([`path::normalize`]), decided
    /// before any credential work.
    pub fn refuse_path(&self, error: path::PathError) -> Decision {
        tracing::debug!(%error, "refused the request path");
        self.deny(
            400,
            ErrorCode::InvalidRequest,
            "the request path is not in normal form",
        )
    }

    /// Decides one request for `token`, verified beforehand, on the normal form of its path
    /// ([`path::normalize`]) at `now` (seconds since the epoch).
    pub fn decide_verified(
        &self,
        token: &Arc<Credential>,
        input: &DecisionInput,
        path: &str,
        now: i64,
    ) -> Decision {
        let prepared = match self.prepare(token) {
            Ok(prepared) => prepared,
            Err(error) => return self.token_error(error),
        };
        match self.evaluate_verified(token, &prepared, input, path, now) {
            Evaluated::ByPolicy(decision) | Evaluated::Unrepresentable(decision) => decision,
        }
    }

    /// What the policy step needs of `token`: its claims are parsed again for it. A token whose claims
    /// Cedar cannot hold is refused as a malformed one is.
    pub fn prepare(&self, token: &Credential) -> Result<Prepared, CredentialError> {
        let claims = token.claims();
        let principal =
            PreparedPrincipal::new(&token.principal(&claims), &self.policies.reads().claims)
                .map_err(|_| CredentialError::InvalidPayload)?;
        Ok(Prepared {
            principal,
            headers: self.upstream_headers(&claims),
        })
    }

    /// [`Self::decide_verified`], telling the policies' decision from the 400 for a request Cedar
    /// cannot be asked.
    fn evaluate_verified(
        &self,
        token: &Arc<Credential>,
        prepared: &Prepared,
        input: &DecisionInput,
        path: &str,
        now: i64,
    ) -> Evaluated {
        let request = policy_request(&prepared.principal, token, input, path, now);
        let started = Instant::now();
        let outcome = match self.policies.evaluate(&request) {
            Ok(outcome) => outcome,
            Err(unrepresentable) => {
                return Evaluated::Unrepresentable(self.unrepresentable(&unrepresentable));
            }
        };
        let policy_micros = micros_since(started);
        if !outcome.errors.is_empty() {
            tracing::debug!(errors = ?outcome.errors, "some policies failed to evaluate and did not apply");
        }

        let mut decision = if outcome.allow {
            let mut allow = self.deny(200, ErrorCode::None, "");
            allow.allow = true;
            allow.headers = prepared.headers.clone();
            allow.cache_ttl = self.allow_ttl(token, now);
            allow
        } else {
            self.policy_deny(&outcome.reason)
        };
        decision.policies = outcome.determining;
        decision.trace.policy_micros = policy_micros;
        decision.trace.policy_errors = outcome.errors;
        decision.credential = Some(Arc::clone(token));
        Evaluated::ByPolicy(decision)
    }

    /// A decision the memo kept for `token`, answered again at `now`: what the policies decided, with
    /// what the credential says of itself, its own `decision_id`, and the `cache_ttl` of now.
    fn reissue(&self, kept: &Kept, token: &Arc<Credential>, now: i64) -> Decision {
        let outcome = &kept.outcome;
        let mut decision = Decision {
            decision_id: decision_id(),
            allow: outcome.allow,
            status: outcome.status,
            error: outcome.error,
            error_description: outcome.error_description.to_string(),
            www_authenticate: outcome.www_authenticate.to_string(),
            credential: Some(Arc::clone(token)),
            headers: kept.headers.clone(),
            policies: outcome.policies.to_vec(),
            trace: DecisionTrace {
                memo_hit: true,
                policy_errors: outcome.policy_errors.to_vec(),
                ..DecisionTrace::default()
            },
            ..Decision::default()
        };
        if decision.allow {
            decision.cache_ttl = self.allow_ttl(token, now);
        }
        decision
    }

    /// The `cache_ttl` of an allow for `token` at `now`: `cache.decision_ttl`, never past the token's
    /// own reuse limit, and zero when the policies read more than a proxy keys a reused decision by
    /// (the credential, the method and the path): another request on the same route could be denied.
    fn allow_ttl(&self, token: &Credential, now: i64) -> u64 {
        if self.policies.reads().beyond_route() {
            return 0;
        }
        self.decision_ttl
            .as_secs()
            .min(seconds_until(token.reusable_until, now))
    }

    /// The deny a policy decided, as its annotations describe it.
    fn policy_deny(&self, reason: &DenyReason) -> Decision {
        let (status, error, default_description) = match reason.code {
            DenyCode::AccessDenied => (
                403,
                ErrorCode::AccessDenied,
                "access to this resource is denied by policy",
            ),
            DenyCode::InsufficientScope => (
                403,
                ErrorCode::InsufficientScope,
                "the token lacks a scope this route requires",
            ),
            DenyCode::InvalidToken => (
                401,
                ErrorCode::InvalidToken,
                "the token is not accepted for this route",
            ),
            DenyCode::InvalidRequest => (
                400,
                ErrorCode::InvalidRequest,
                "the request is not accepted for this route",
            ),
        };
        let description = reason.description.as_deref().unwrap_or(default_description);
        let mut deny = self.deny(status, error, description);
        if let Some(scope) = &reason.scope
            && !deny.www_authenticate.is_empty()
        {
            let _ = write!(deny.www_authenticate, ", scope=\"{scope}\"");
        }
        deny
    }

    /// A deny with its RFC 6750 challenge; with status 200, the base an allow is built on.
    fn deny(&self, status: u16, error: ErrorCode, description: &str) -> Decision {
        let www_authenticate = match (status, error) {
            (401, ErrorCode::None) => format!("Bearer realm=\"{}\"", self.realm),
            (400 | 401, _) | (403, ErrorCode::InsufficientScope) => {
                self.challenge(error, description)
            }
            _ => String::new(),
        };
        Decision {
            decision_id: decision_id(),
            allow: false,
            status,
            error,
            error_description: description.to_owned(),
            www_authenticate,
            ..Decision::default()
        }
    }

    /// `Bearer realm=..., error=..., error_description=...` (RFC 6750 §3).
    fn challenge(&self, error: ErrorCode, description: &str) -> String {
        format!(
            "Bearer realm=\"{}\", error=\"{}\", error_description=\"{description}\"",
            self.realm,
            error.as_str()
        )
    }

    /// The deny for a request the policies cannot be asked about: a 400 naming the field, so that no
    /// input turns into a deny nothing explains.
    fn unrepresentable(&self, problem: &Unrepresentable) -> Decision {
        self.deny(400, ErrorCode::InvalidRequest, &problem.to_string())
    }

    fn token_error(&self, error: CredentialError) -> Decision {
        let description = error.to_string();
        if error.is_temporary() {
            self.deny(503, ErrorCode::TemporarilyUnavailable, &description)
        } else {
            self.deny(401, ErrorCode::InvalidToken, &description)
        }
    }

    fn upstream_headers(&self, claims: &serde_json::Map<String, Value>) -> UpstreamHeaders {
        UpstreamHeaders::new(self.headers.iter().filter_map(|(header, claim)| {
            let value = match claims.get(claim)? {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                Value::Array(items) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
                _ => return None,
            };
            // A claim that cannot be a header value is left out rather than passed on mangled.
            http::HeaderValue::from_str(&value)
                .is_ok()
                .then_some((header, value))
        }))
    }
}

/// What the policies see of one request: the verified credential as its prepared `principal`, the input
/// as the route and context.
pub fn policy_request<'a>(
    principal: &'a PreparedPrincipal,
    token: &'a Credential,
    input: &'a DecisionInput,
    path: &'a str,
    now: i64,
) -> PolicyRequest<'a> {
    PolicyRequest {
        principal,
        token: TokenFacts {
            kid: &token.kid,
            typ: &token.typ,
            iat: token.lifetime.iat,
            exp: token.lifetime.exp,
        },
        method: &input.method,
        path,
        host: &input.host,
        query: &input.query,
        apigee: &input.apigee,
        client_ip: input.client_ip,
        headers: &input.headers,
        now,
    }
}

/// Whole seconds from `now` to `at`; 0 once it has passed.
fn seconds_until(at: i64, now: i64) -> u64 {
    u64::try_from(at.saturating_sub(now)).unwrap_or(0)
}

fn micros_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// A credential of `claims` from one issuer, verified with no algorithm and keeping every claim: for
/// the tests of the memo and of the prepared principals.
#[cfg(test)]
fn test_credential(claims: Value) -> Arc<Credential> {
    let Value::Object(claims) = claims else {
        panic!("claims are an object: {claims}")
    };
    let credential = Credential::from_claims(
        claims,
        &crate::config::ClaimNames::default(),
        credential::Provenance {
            issuer_index: 0,
            issuer: &Arc::from("https://idp.example.com"),
            kid: "k1",
            algorithm: None,
            typ: "",
            rules: credential::TimeRules::new(Duration::ZERO, None),
            keep: &NameReads::All,
        },
    );
    Arc::new(credential.unwrap_or_else(|error| panic!("{error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_ids_are_distinct_version_7_uuids_in_time_order() {
        // Past several batches of random bits, and on two threads.
        let ids: Vec<Uuid> = (0..5 * RANDOM_BATCH).map(|_| decision_id()).collect();
        let other: Vec<Uuid> =
            std::thread::spawn(|| (0..RANDOM_BATCH).map(|_| decision_id()).collect())
                .join()
                .unwrap_or_default();
        assert_eq!(other.len(), RANDOM_BATCH);
        let distinct: std::collections::HashSet<_> = ids.iter().chain(&other).collect();
        assert_eq!(distinct.len(), ids.len() + other.len());
        for id in &ids {
            assert_eq!(id.get_version_num(), 7, "{id}");
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
        }
        let millis = |id: &Uuid| {
            id.get_timestamp()
                .map(|at| at.to_unix())
                .unwrap_or_default()
        };
        assert!(ids.windows(2).all(|pair| match pair {
            [earlier, later] => millis(earlier) <= millis(later),
            _ => true,
        }));
    }

    #[test]
    fn upstream_headers_keep_every_name_and_value_in_order() {
        let names: Vec<HeaderName> = ["x-user-id", "x-groups", "x-empty"]
            .iter()
            .map(|name| HeaderName::from_static(name))
            .collect();
        let values = ["urn:user:alice", "a, b\t:c", ""];
        let headers = UpstreamHeaders::new(
            names
                .iter()
                .zip(values.iter().map(|value| (*value).to_owned())),
        );
        let read: Vec<(&str, &str)> = headers.iter().collect();
        assert_eq!(
            read,
            [
                ("x-user-id", "urn:user:alice"),
                ("x-groups", "a, b\t:c"),
                ("x-empty", "")
            ]
        );
        assert_eq!(UpstreamHeaders::default().iter().count(), 0);
        assert_eq!(
            serde_json::to_value(&headers).ok(),
            Some(
                serde_json::json!({"x-user-id": "urn:user:alice", "x-groups": "a, b\t:c", "x-empty": ""})
            )
        );
    }
}
