//! The claim checks a JWT and an introspection answer share (DESIGN §3): the time claims against an
//! issuer's leeway and maximum age, and the audience. A cache hit runs the same time check again, so a
//! cached credential is never weaker than a fresh one.

use std::time::Duration;

use serde_json::{Map, Value};

use super::CredentialError;
use crate::config::IssuerConfig;

/// The latest NumericDate accepted: 9999-12-31T23:59:59Z. Later values are nonsense, not long-lived
/// tokens.
const MAX_NUMERIC_DATE: i64 = 253_402_300_799;

/// When a credential is valid, from its `exp`, `nbf` and `iat`, in seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub exp: i64,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
}

impl Lifetime {
    /// The lifetime the claims state; `exp` must be present.
    pub fn from_claims(claims: &Map<String, Value>) -> Result<Self, CredentialError> {
        Ok(Self {
            exp: numeric_date(claims, "exp")?.ok_or(CredentialError::MissingClaim("exp"))?,
            nbf: numeric_date(claims, "nbf")?,
            iat: numeric_date(claims, "iat")?,
        })
    }
}

/// An issuer's rules for the time claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRules {
    leeway: i64,
    max_age: Option<i64>,
}

impl TimeRules {
    pub fn of(issuer: &IssuerConfig) -> Self {
        Self::new(issuer.leeway, issuer.max_token_age)
    }

    pub fn new(leeway: Duration, max_age: Option<Duration>) -> Self {
        let seconds = |duration: Duration| i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
        Self {
            leeway: seconds(leeway),
            max_age: max_age.map(seconds),
        }
    }

    /// Whether a credential with this lifetime is valid at `now`: before `exp`, not before `nbf`, not
    /// issued in the future, and no older than the maximum age, each within the leeway.
    pub fn check(&self, lifetime: &Lifetime, now: i64) -> Result<(), CredentialError> {
        // RFC 7519 §4.1.4: the token is valid only *before* `exp`.
        if now >= lifetime.exp.saturating_add(self.leeway) {
            return Err(CredentialError::Expired);
        }
        let latest_start = now.saturating_add(self.leeway);
        if lifetime.nbf.is_some_and(|nbf| nbf > latest_start) {
            return Err(CredentialError::NotYetValid);
        }
        if lifetime.iat.is_some_and(|iat| iat > latest_start) {
            return Err(CredentialError::IssuedInFuture);
        }
        if let Some(max_age) = self.max_age {
            let iat = lifetime.iat.ok_or(CredentialError::MissingClaim("iat"))?;
            if now.saturating_sub(iat) > max_age.saturating_add(self.leeway) {
                return Err(CredentialError::TooOld);
            }
        }
        Ok(())
    }

    /// The first second at which a decision for this credential may no longer be reused: its `exp`, or
    /// the end of its maximum age if sooner. Without leeway, which forgives clocks, not reuse.
    pub fn reusable_until(&self, lifetime: &Lifetime) -> i64 {
        match (self.max_age, lifetime.iat) {
            (Some(max_age), Some(iat)) => lifetime.exp.min(iat.saturating_add(max_age)),
            _ => lifetime.exp,
        }
    }
}

/// Whether the `aud` claim names one of `audiences`: exact string match, a string or a non-empty array
/// of strings. An absent `aud` passes only when `required` is false; a malformed one never does.
pub fn check_audience(
    aud: Option<&Value>,
    audiences: &[String],
    required: bool,
) -> Result<(), CredentialError> {
    let matched = match aud {
        None if required => return Err(CredentialError::MissingClaim("aud")),
        None => return Ok(()),
        Some(Value::String(aud)) => audiences.contains(aud),
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut matched = false;
            for item in items {
                let Value::String(aud) = item else {
                    return Err(CredentialError::InvalidClaim("aud"));
                };
                matched |= audiences.contains(aud);
            }
            matched
        }
        Some(_) => return Err(CredentialError::InvalidClaim("aud")),
    };
    if matched {
        Ok(())
    } else {
        Err(CredentialError::WrongAudience)
    }
}

/// Whether the `iss` claim, when `required` or present, is exactly `issuer`.
pub fn check_issuer(
    iss: Option<&Value>,
    issuer: &str,
    required: bool,
) -> Result<(), CredentialError> {
    match iss {
        None if required => Err(CredentialError::MissingClaim("iss")),
        None => Ok(()),
        Some(Value::String(iss)) if iss == issuer => Ok(()),
        Some(Value::String(_)) => Err(CredentialError::UnknownIssuer),
        Some(_) => Err(CredentialError::InvalidClaim("iss")),
    }
}

/// A NumericDate claim: an integer number of seconds, within sane bounds. Floats, strings, negative
/// and absurd values are refused rather than coerced.
pub fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, CredentialError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(number)) => match number.as_i64() {
            Some(seconds) if (0..=MAX_NUMERIC_DATE).contains(&seconds) => Ok(Some(seconds)),
            _ => Err(CredentialError::InvalidClaim(name)),
        },
        Some(_) => Err(CredentialError::InvalidClaim(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_dates_must_be_sane_integers() {
        let claims = |value: Value| Map::from_iter([("exp".to_owned(), value)]);
        assert_eq!(
            numeric_date(&claims(1_700_000_000.into()), "exp"),
            Ok(Some(1_700_000_000))
        );
        for bad in [
            Value::from("1700000000"),
            Value::from(1.7e9),
            Value::from(-1),
            Value::from(1e30),
            Value::from(u64::MAX),
            Value::from(MAX_NUMERIC_DATE + 1),
        ] {
            assert_eq!(
                numeric_date(&claims(bad.clone()), "exp"),
                Err(CredentialError::InvalidClaim("exp")),
                "{bad}"
            );
        }
    }

    #[test]
    fn time_rules_hold_at_every_edge() {
        let rules = TimeRules::new(Duration::from_secs(10), Some(Duration::from_secs(100)));
        let lifetime = Lifetime {
            exp: 1_000,
            nbf: Some(500),
            iat: Some(500),
        };
        let cases = [
            (489, Err(CredentialError::NotYetValid)),
            (490, Ok(())),
            (610, Ok(())),
            (611, Err(CredentialError::TooOld)),
        ];
        for (now, expected) in cases {
            assert_eq!(rules.check(&lifetime, now), expected, "at {now}");
        }
        let long = Lifetime {
            iat: Some(950),
            nbf: None,
            ..lifetime
        };
        assert_eq!(rules.check(&long, 1_009), Ok(()));
        assert_eq!(rules.check(&long, 1_010), Err(CredentialError::Expired));
        assert_eq!(rules.reusable_until(&lifetime), 600);
        assert_eq!(rules.reusable_until(&long), 1_000);
        let no_iat = Lifetime { iat: None, ..long };
        assert_eq!(
            rules.check(&no_iat, 900),
            Err(CredentialError::MissingClaim("iat"))
        );
    }

    #[test]
    fn audiences_match_exactly_and_malformed_ones_never_do() {
        let audiences = ["api://orders".to_owned()];
        let check = |aud: Value| check_audience(Some(&aud), &audiences, true);
        assert_eq!(check("api://orders".into()), Ok(()));
        assert_eq!(check(serde_json::json!(["x", "api://orders"])), Ok(()));
        assert_eq!(
            check("api://Orders".into()),
            Err(CredentialError::WrongAudience)
        );
        for malformed in [
            serde_json::json!([]),
            serde_json::json!(["api://orders", 1]),
            serde_json::json!(["api://orders", null]),
            serde_json::json!({ "aud": "api://orders" }),
            serde_json::json!(null),
            serde_json::json!(7),
        ] {
            assert_eq!(
                check(malformed.clone()),
                Err(CredentialError::InvalidClaim("aud")),
                "{malformed}"
            );
        }
        assert_eq!(
            check_audience(None, &audiences, true),
            Err(CredentialError::MissingClaim("aud"))
        );
        assert_eq!(check_audience(None, &audiences, false), Ok(()));
    }
}
