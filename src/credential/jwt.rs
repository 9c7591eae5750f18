//! The checks of a compact JWT (DESIGN §3), in their order: exactly three segments (five is JWE, refused
//! by name); a strict header (no duplicate keys, no `crit`; `jku`, `x5u`, `jwk` and `x5c` are never
//! read); the issuer by exact `iss`; the algorithm against that issuer's allowlist and the key's own
//! algorithm; the signature; then the claims: time, audience, `typ`, and the principal they name.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use super::claims::{self, Lifetime, TimeRules};
use super::{Credential, CredentialError, Provenance};
use crate::config::IssuerConfig;
use crate::jwks::{IssuerKeys, KeyLookup, VerificationKey};
use crate::policy::NameReads;

/// A `kid` longer than this is refused before any key lookup.
const MAX_KID_LENGTH: usize = 256;

/// One issuer as JWT verification sees it: its settings, its key set, and its HMAC key.
#[derive(Debug)]
pub(super) struct TrustedIssuer {
    pub(super) config: IssuerConfig,
    pub(super) keys: Option<Arc<IssuerKeys>>,
    pub(super) hmac_key: Option<DecodingKey>,
    /// `config.issuer`, shared by every credential of the issuer.
    pub(super) issuer: Arc<str>,
    /// The claims a credential of this issuer keeps ([`super::Provenance::keep`]).
    pub(super) keep_claims: Arc<NameReads>,
}

/// Verifies a compact JWT afresh against `issuers`, by the checks of DESIGN §3 in their order; with it,
/// the key from the issuer's key set that checked its signature (`None` for an HMAC token).
pub(super) async fn verify(
    token: &str,
    issuers: &[TrustedIssuer],
    by_iss: &HashMap<String, usize>,
    now: i64,
) -> Result<(Credential, Option<Arc<VerificationKey>>), CredentialError> {
    let segments = token.split('.').count();
    if segments == 5 {
        return Err(CredentialError::Encrypted);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(CredentialError::Malformed);
    };
    if header_b64.is_empty() || payload_b64.is_empty() || signature_b64.is_empty() {
        return Err(CredentialError::Malformed);
    }

    let header = decode_object(header_b64).ok_or(CredentialError::InvalidHeader)?;
    if header.contains_key("crit") {
        return Err(CredentialError::CriticalHeader);
    }
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg,
        _ => return Err(CredentialError::InvalidHeader),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(CredentialError::AlgorithmNone);
    }
    let algorithm: Algorithm = alg
        .parse()
        .map_err(|_| CredentialError::AlgorithmNotAllowed)?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) if !kid.is_empty() && kid.len() <= MAX_KID_LENGTH => {
            Some(kid.as_str())
        }
        Some(_) => return Err(CredentialError::MissingKeyId),
    };
    let typ = match header.get("typ") {
        None => String::new(),
        Some(Value::String(typ)) => typ.clone(),
        Some(_) => return Err(CredentialError::InvalidHeader),
    };

    let claims = decode_object(payload_b64).ok_or(CredentialError::InvalidPayload)?;
    let iss = match claims.get("iss") {
        Some(Value::String(iss)) => iss,
        Some(_) => return Err(CredentialError::InvalidClaim("iss")),
        None => return Err(CredentialError::MissingClaim("iss")),
    };
    let issuer_index = *by_iss
        .get(iss.as_str())
        .ok_or(CredentialError::UnknownIssuer)?;
    let issuer = issuers
        .get(issuer_index)
        .ok_or(CredentialError::UnknownIssuer)?;
    if !issuer.config.algorithms.contains(&algorithm) {
        return Err(CredentialError::AlgorithmNotAllowed);
    }

    let signing_input_length = header_b64.len() + 1 + payload_b64.len();
    let signing_input = token
        .get(..signing_input_length)
        .ok_or(CredentialError::Malformed)?;
    let key_set_key = if crate::config::is_hmac(algorithm) {
        None
    } else {
        let kid = kid.ok_or(CredentialError::MissingKeyId)?;
        let keys = issuer.keys.as_ref().ok_or(CredentialError::UnknownKey)?;
        let key = match keys.lookup_or_refetch(kid).await {
            KeyLookup::Found(key) => key,
            KeyLookup::Unknown => return Err(CredentialError::UnknownKey),
            KeyLookup::NotLoaded | KeyLookup::Stale => {
                return Err(CredentialError::KeysUnavailable);
            }
        };
        if key.algorithm != algorithm {
            return Err(CredentialError::KeyAlgorithmMismatch);
        }
        Some(key)
    };
    let signed = match &key_set_key {
        Some(key) => key.verifies(signing_input.as_bytes(), signature_b64),
        None => {
            let secret = issuer
                .hmac_key
                .as_ref()
                .ok_or(CredentialError::AlgorithmNotAllowed)?;
            jsonwebtoken::crypto::verify(signature_b64, signing_input.as_bytes(), secret, algorithm)
                .unwrap_or(false)
        }
    };
    if !signed {
        return Err(CredentialError::BadSignature);
    }

    let verified = check_claims(
        issuer,
        algorithm,
        &typ,
        claims,
        issuer_index,
        kid.unwrap_or_default(),
        now,
    )?;
    Ok((verified, key_set_key))
}

/// The checks of a signed token's claims, in order: time, audience, `typ`; then the principal they name.
fn check_claims(
    issuer: &TrustedIssuer,
    algorithm: Algorithm,
    typ: &str,
    claims: Map<String, Value>,
    issuer_index: usize,
    kid: &str,
    now: i64,
) -> Result<Credential, CredentialError> {
    let config = &issuer.config;
    let rules = TimeRules::of(config);
    rules.check(&Lifetime::from_claims(&claims)?, now)?;
    claims::check_audience(claims.get("aud"), &config.audiences, true)?;

    if let Some(required) = &config.required_typ
        && media_type(typ) != media_type(required)
    {
        return Err(CredentialError::WrongType);
    }

    Credential::from_claims(
        claims,
        &config.claims,
        Provenance {
            issuer_index,
            issuer: &issuer.issuer,
            kid,
            algorithm: Some(algorithm),
            typ,
            rules,
            keep: &issuer.keep_claims,
        },
    )
}

/// Decodes a base64url segment (canonical, unpadded) holding a JSON object without duplicate keys.
fn decode_object(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    crate::strict_json::parse_object(&bytes).ok()
}

/// A `typ` compared as RFC 7515 §4.1.9 says: case-insensitive, `application/` optional.
fn media_type(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    lower
        .strip_prefix("application/")
        .map_or_else(|| lower.clone(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typ_compares_media_types() {
        assert_eq!(media_type("application/AT+JWT"), media_type("at+jwt"));
        assert_ne!(media_type("JWT"), media_type("at+jwt"));
    }
}
