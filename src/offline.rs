//! Decisions without an issuer or a network: policy test files (`verdict test`) and one-off decisions
//! (`verdict decide`).
//!
//! A [`Scenario`] is a token's claims, taken on trust (no signature), and a callout body. The claims are
//! read with an issuer's claim names into the same principal a verified credential becomes, and the same
//! [`Decider`] as the service's decides, so what passes here behaves the same in production.

pub mod suite;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{ClaimNames, Config};
use crate::credential::{Credential, Provenance, TimeRules};
use crate::decision::{Decider, Decision};
use crate::fronts::service_callout::DecideRequest;
use crate::policy::NameReads;
use crate::policy::PolicySet;

/// The realm of challenges when no configuration names one (the configuration's default).
const DEFAULT_REALM: &str = "api";
/// How long a scenario's token is valid when its claims carry no `exp`.
const DEFAULT_LIFETIME_SECONDS: i64 = 3600;

/// One request to decide offline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The token's claims.
    pub token: Map<String, Value>,
    /// The callout body, without `authorization` or `api_key`.
    pub request: DecideRequest,
    /// The decision time, RFC 3339 in UTC (`2026-03-04T09:30:00Z`); now when absent.
    pub time: Option<String>,
}

/// What decides offline: policies, the claim names to read tokens with, and the answer's shape.
#[derive(Debug)]
pub struct OfflineDecider {
    decider: Decider,
    /// Configured issuers: their `iss` and claim names.
    issuers: Vec<(String, ClaimNames)>,
    /// The issuer every token is read as, by index into `issuers`.
    pinned: Option<usize>,
    /// The claim names of a token whose `iss` matches no configured issuer.
    fallback: ClaimNames,
}

impl OfflineDecider {
    /// Decides with `policies`, reading every token with `claim_names`, and maps no upstream headers.
    pub fn new(policies: PolicySet, claim_names: ClaimNames) -> Self {
        Self {
            decider: Decider::new(
                policies,
                Vec::new(),
                DEFAULT_REALM.to_owned(),
                std::time::Duration::ZERO,
            ),
            issuers: Vec::new(),
            pinned: None,
            fallback: claim_names,
        }
    }

    /// Decides as a configured service would: its policies, upstream headers and realm. Tokens are read
    /// as the issuer named `issuer`, or else as the issuer matching their `iss`, or else the first.
    pub fn from_config(config: Config, issuer: Option<&str>) -> Result<Self, String> {
        let pinned = match issuer {
            Some(name) => Some(
                config
                    .issuers
                    .iter()
                    .position(|candidate| candidate.name == name)
                    .ok_or_else(|| format!("the configuration has no issuer named `{name}`"))?,
            ),
            None => None,
        };
        let issuers: Vec<(String, ClaimNames)> = config
            .issuers
            .iter()
            .map(|issuer| (issuer.issuer.clone(), issuer.claims.clone()))
            .collect();
        let fallback = issuers
            .first()
            .map(|(_, names)| names.clone())
            .unwrap_or_default();
        Ok(Self {
            decider: Decider::new(
                config.policies,
                config.headers,
                config.realm,
                config.cache.decision_ttl,
            ),
            issuers,
            pinned,
            fallback,
        })
    }

    /// The issuer a token is read as, and the claim names to read it with.
    fn issuer_of(&self, token: &Map<String, Value>) -> (String, &ClaimNames) {
        let iss = match token.get("iss") {
            Some(Value::String(iss)) => iss.as_str(),
            _ => "",
        };
        let configured = match self.pinned {
            Some(index) => self.issuers.get(index),
            None => self.issuers.iter().find(|(issuer, _)| issuer == iss),
        };
        match configured {
            Some((issuer, names)) => (issuer.clone(), names),
            None => (iss.to_owned(), &self.fallback),
        }
    }

    /// Decides one scenario. An error is a scenario that cannot be a request: bad claims, a bad body
    /// or a bad time.
    pub fn decide(&self, scenario: Scenario) -> Result<Decision, String> {
        let Scenario {
            mut token,
            request,
            time,
        } = scenario;
        if request.authorization.is_some() || request.api_key.is_some() {
            return Err(
                "`request`: give the token's claims in `token`, not a credential \
                        (`authorization`, `api_key`)"
                    .to_owned(),
            );
        }
        let now = match time.as_deref() {
            Some(text) => parse_time(text)?,
            None => unix_now(),
        };
        let input = request
            .into_input()
            .map_err(|error| format!("`request.{}`: {}", error.field, error.problem))?;
        let path = match crate::decision::path::normalize(&input.path) {
            Ok(path) => path,
            Err(error) => return Ok(self.decider.refuse_path(error)),
        };
        token
            .entry("exp")
            .or_insert_with(|| Value::from(now.saturating_add(DEFAULT_LIFETIME_SECONDS)));
        let (issuer, claim_names) = self.issuer_of(&token);
        let issuer = std::sync::Arc::from(issuer);
        let verified = Credential::from_claims(
            token,
            claim_names,
            Provenance {
                issuer_index: 0,
                issuer: &issuer,
                kid: "",
                algorithm: None,
                typ: "",
                rules: TimeRules::new(Duration::ZERO, None),
                keep: &NameReads::All,
            },
        )
        .map_err(|error| format!("`token`: {error}"))?;
        Ok(self
            .decider
            .decide_verified(&std::sync::Arc::new(verified), &input, &path, now))
    }
}

/// Loads a policy directory with an optional schema, every problem on its own line.
pub fn load_policies(directory: &Path, schema: Option<&Path>) -> Result<PolicySet, String> {
    PolicySet::load_dir(directory, schema).map_err(|problems| problems.join("\n"))
}

/// Seconds since the epoch of an RFC 3339 UTC time.
fn parse_time(text: &str) -> Result<i64, String> {
    let time = humantime::parse_rfc3339(text).map_err(|error| {
        format!(
            "`time`: `{text}` is not an RFC 3339 UTC time such as 2026-03-04T09:30:00Z ({error})"
        )
    })?;
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("`time`: `{text}` is before 1970"))?
        .as_secs();
    i64::try_from(seconds).map_err(|_| format!("`time`: `{text}` is too far ahead"))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}
