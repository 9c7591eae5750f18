//! Opaque tokens, checked by the issuer's introspection endpoint (RFC 7662).
//!
//! Only a JSON `true` in `active` counts; the answer's `iss`, `aud` and time claims go through the very
//! checks a JWT's do ([`super::claims`]), and its claims become the principal the same way. An answer
//! with a duplicate member name is refused, as a JWT is. Answers are cached under the token's SHA-256:
//! active ones until the token's `exp` or the configured cap, inactive ones briefly, failures never;
//! a cached answer's time claims are checked again on every use. Concurrent requests for one token
//! share one introspection. An endpoint that fails, answers anything but HTTP 200 with a JSON object,
//! or is slower than the timeout is a 503 decision.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use reqwest::Url;
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use super::cache::TokenHash;
use super::claims::{self, Lifetime, TimeRules};
use super::{Credential, CredentialError, Provenance, Verified};
use crate::clock::SharedClock;
use crate::config::{ClientAuthMethod, IntrospectionConfig, IntrospectionEndpoint, IssuerConfig};
use crate::outbound::{self, FetchError, discovery};
use crate::policy::NameReads;

/// What introspection said about one token, as cached.
#[derive(Debug, Clone)]
enum Answer {
    Active {
        token: Arc<Credential>,
        /// Seconds since the epoch after which the answer is asked again.
        until: i64,
    },
    Inactive {
        until: i64,
    },
}

/// One in-flight introspection, shared by every request for the same token.
type Pending = Arc<OnceCell<Result<Answer, CredentialError>>>;

/// Introspects the opaque tokens of one issuer.
#[derive(Debug)]
pub struct Introspector {
    issuer_index: usize,
    issuer: IssuerConfig,
    /// `issuer.issuer`, shared by every credential the answers yield.
    iss: Arc<str>,
    /// The claims a credential keeps ([`super::Provenance::keep`]).
    keep_claims: Arc<NameReads>,
    config: IntrospectionConfig,
    http: reqwest::Client,
    clock: SharedClock,
    endpoint: OnceCell<Url>,
    answers: quick_cache::sync::Cache<TokenHash, Answer>,
    pending: Mutex<HashMap<TokenHash, Pending>>,
}

impl Introspector {
    pub fn new(
        issuer_index: usize,
        issuer: &IssuerConfig,
        keep_claims: Arc<NameReads>,
        config: &IntrospectionConfig,
        capacity: usize,
        http: &reqwest::Client,
        clock: SharedClock,
    ) -> Self {
        Self {
            issuer_index,
            issuer: issuer.clone(),
            iss: issuer.issuer.as_str().into(),
            keep_claims,
            config: config.clone(),
            http: http.clone(),
            clock,
            endpoint: OnceCell::new(),
            answers: quick_cache::sync::Cache::new(capacity.max(1)),
            pending: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &IntrospectionConfig {
        &self.config
    }

    /// Checks an opaque token, from the cache when an answer for it is still fresh.
    pub async fn verify(&self, token: &str, hash: &TokenHash) -> Result<Verified, CredentialError> {
        let hash = *hash;
        let now = self.now();
        if let Some(answer) = self.answers.get(&hash) {
            match answer {
                Answer::Active { token, until }
                    if now < until && self.rules().check(&token.lifetime, now).is_ok() =>
                {
                    return Ok(Verified {
                        credential: token,
                        cache_hit: true,
                        keys_fresh_until: None,
                    });
                }
                Answer::Inactive { until } if now < until => return Err(CredentialError::Inactive),
                _ => {
                    self.answers.remove(&hash);
                }
            }
        }

        let pending = {
            let mut pending = self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(pending.entry(hash).or_default())
        };
        let answer = pending
            .get_or_init(|| async {
                let started = std::time::Instant::now();
                let answer = self.introspect(token).await;
                crate::metrics::global().introspected(
                    &self.issuer.name,
                    started.elapsed().as_secs_f64(),
                    answer.is_err(),
                );
                // Cached before the pending entry goes, so no request falls between the two.
                if let Ok(answer) = &answer {
                    self.answers.insert(hash, answer.clone());
                }
                answer
            })
            .await
            .clone();
        {
            let mut map = self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if map
                .get(&hash)
                .is_some_and(|current| Arc::ptr_eq(current, &pending))
            {
                map.remove(&hash);
            }
        }
        match answer? {
            Answer::Active { token, .. } => Ok(Verified {
                credential: token,
                cache_hit: false,
                keys_fresh_until: None,
            }),
            Answer::Inactive { .. } => Err(CredentialError::Inactive),
        }
    }

    /// One exchange with the endpoint, and the checks on its answer.
    async fn introspect(&self, token: &str) -> Result<Answer, CredentialError> {
        let unavailable = |error: FetchError| {
            tracing::warn!(issuer = %self.issuer.name, %error, "introspection failed");
            CredentialError::IntrospectionUnavailable
        };
        let endpoint = self
            .endpoint
            .get_or_try_init(|| self.resolve_endpoint())
            .await
            .map_err(unavailable)?;
        let secret = self.config.client_secret.expose_secret();
        let mut form = vec![("token", token), ("token_type_hint", "access_token")];
        let basic = match self.config.auth_method {
            ClientAuthMethod::ClientSecretBasic => Some((self.config.client_id.as_str(), secret)),
            ClientAuthMethod::ClientSecretPost => {
                form.push(("client_id", &self.config.client_id));
                form.push(("client_secret", secret));
                None
            }
        };
        let body = outbound::post_form(&self.http, endpoint, &form, basic, self.config.timeout)
            .await
            .map_err(unavailable)?;
        let answer: Map<String, Value> = outbound::parse_remote_json(&body).map_err(|reason| {
            unavailable(FetchError::invalid(
                endpoint,
                format!("not a JSON object: {reason}"),
            ))
        })?;
        self.check(answer)
    }

    fn rules(&self) -> TimeRules {
        TimeRules::of(&self.issuer)
    }

    fn check(&self, mut answer: Map<String, Value>) -> Result<Answer, CredentialError> {
        let now = self.now();
        // RFC 7662 §2.2: `active` is a boolean; anything but `true` is an inactive token.
        if answer.get("active") != Some(&Value::Bool(true)) {
            let ttl = i64::try_from(self.config.inactive_ttl.as_secs()).unwrap_or(i64::MAX);
            return Ok(Answer::Inactive {
                until: now.saturating_add(ttl),
            });
        }
        let cap = now.saturating_add(i64::try_from(self.config.cache_ttl.as_secs()).unwrap_or(0));
        // Without an `exp` the answer holds for the cache cap, and the principal carries that as `exp`.
        answer.entry("exp").or_insert_with(|| Value::from(cap));
        let lifetime = Lifetime::from_claims(&answer)?;
        let rules = self.rules();
        rules.check(&lifetime, now)?;
        // RFC 7662 §2.2: `iss` and `aud` are optional in an answer; present, they are checked.
        claims::check_issuer(answer.get("iss"), &self.issuer.issuer, false)?;
        claims::check_audience(
            answer.get("aud"),
            &self.issuer.audiences,
            self.config.require_audience,
        )?;
        let until = lifetime.exp.min(cap);
        answer.remove("active");
        let mut token = Credential::from_claims(
            answer,
            &self.issuer.claims,
            Provenance {
                issuer_index: self.issuer_index,
                issuer: &self.iss,
                kid: "",
                algorithm: None,
                typ: "",
                rules,
                keep: &self.keep_claims,
            },
        )?;
        // A decision is not reused past the point where the answer would be asked again.
        token.reusable_until = token.reusable_until.min(until);
        Ok(Answer::Active {
            token: Arc::new(token),
            until,
        })
    }

    async fn resolve_endpoint(&self) -> Result<Url, FetchError> {
        let discovery_url = match &self.config.endpoint {
            IntrospectionEndpoint::Url(url) => return Ok(url.clone()),
            IntrospectionEndpoint::Discovery(url) => url,
        };
        discovery::endpoint(
            &self.http,
            discovery_url,
            &self.issuer.issuer,
            discovery::Endpoint::Introspection,
            self.config.timeout,
        )
        .await
    }

    fn now(&self) -> i64 {
        i64::try_from(self.clock.now()).unwrap_or(i64::MAX)
    }
}
