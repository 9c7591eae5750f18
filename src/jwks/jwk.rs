//! JSON Web Key sets (RFC 7517) turned into verification keys, refusing what must not be trusted.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::signature::{self as aws_signature, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

/// RSA moduli under this many bits are refused.
const MIN_RSA_BITS: usize = 2048;

/// A public key bound to the one algorithm it may verify.
pub struct VerificationKey {
    pub algorithm: Algorithm,
    /// Parsed once, when the key set is: verifying with unparsed components would rebuild the key for
    /// every signature (for RSA, its Montgomery constants too: a fifth of the cost of an RS256 check).
    key: ParsedPublicKey,
    /// A SHA-256 of the key type, algorithm and public components: tells whether a key fetched later
    /// under the same `kid` is the same key, so a cached token signed by a replaced key is not reused.
    pub fingerprint: [u8; 32],
}

impl VerificationKey {
    fn new(algorithm: Algorithm, key: ParsedPublicKey, kty: &str, components: &[&[u8]]) -> Self {
        let mut material = format!("{kty}|{algorithm:?}").into_bytes();
        for component in components {
            // Length-prefixed, so no two keys' components concatenate alike.
            material.extend_from_slice(&(component.len() as u64).to_be_bytes());
            material.extend_from_slice(component);
        }
        Self {
            algorithm,
            key,
            fingerprint: crate::digest::sha256(&material),
        }
    }

    /// Whether `signature_b64` (a JWS signature, base64url without padding) is this key's signature
    /// of `message` by its algorithm.
    pub fn verifies(&self, message: &[u8], signature_b64: &str) -> bool {
        URL_SAFE_NO_PAD
            .decode(signature_b64)
            .is_ok_and(|signature| self.key.verify_sig(message, &signature).is_ok())
    }

    /// Whether `other` is this very key (not just a key with the same `kid`).
    pub fn is_same_key(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The usable keys of one JWKS document, by `kid`, and what was skipped and why.
#[derive(Debug, Default)]
pub struct ParsedKeySet {
    pub keys: HashMap<String, Arc<VerificationKey>>,
    pub skipped: Vec<String>,
}

#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawKey {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    key_ops: Option<Vec<String>>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Parses a JWKS document. Keys that cannot be used are skipped with a reason, never trusted: `oct`
/// (symmetric) keys, keys without `kid`, keys not for verifying signatures (`use` other than `sig`,
/// `key_ops` without `verify`), RSA keys under 2048 bits, unknown types. A document with a duplicate
/// member name anywhere is refused whole: which duplicate wins (`"use":"enc","use":"sig"`) differs
/// between parsers (RFC 7517 §4, RFC 8259 §4).
pub fn parse_key_set(document: &[u8]) -> Result<ParsedKeySet, String> {
    let raw: RawKeySet = crate::outbound::parse_remote_json(document)
        .map_err(|reason| format!("not a JWK set: {reason}"))?;
    let mut parsed = ParsedKeySet::default();
    for (index, value) in raw.keys.into_iter().enumerate() {
        let key: RawKey = match serde_json::from_value(value) {
            Ok(key) => key,
            Err(error) => {
                let reason = crate::outbound::describe_json_error(&error);
                parsed.skipped.push(format!("keys[{index}]: {reason}"));
                continue;
            }
        };
        let Some(kid) = key.kid.clone() else {
            parsed.skipped.push(format!("keys[{index}]: no `kid`"));
            continue;
        };
        match verification_key(&key) {
            Ok(verification_key) => {
                if let std::collections::hash_map::Entry::Vacant(slot) =
                    parsed.keys.entry(kid.clone())
                {
                    slot.insert(Arc::new(verification_key));
                } else {
                    parsed
                        .skipped
                        .push(format!("keys[{index}]: duplicate kid `{kid}`, first kept"));
                }
            }
            Err(reason) => parsed
                .skipped
                .push(format!("keys[{index}] (kid `{kid}`): {reason}")),
        }
    }
    Ok(parsed)
}

fn verification_key(key: &RawKey) -> Result<VerificationKey, String> {
    if key.usage.as_deref().is_some_and(|usage| usage != "sig") {
        return Err("not a signing key (`use` is not `sig`)".into());
    }
    // RFC 7517 §4.3: with `key_ops`, a key may do only the operations it lists.
    if key
        .key_ops
        .as_ref()
        .is_some_and(|operations| !operations.iter().any(|operation| operation == "verify"))
    {
        return Err("not a verification key (`key_ops` lacks `verify`)".into());
    }
    let declared = key
        .alg
        .as_deref()
        .map(|alg| {
            alg.parse::<Algorithm>()
                .map_err(|_| format!("unsupported algorithm `{alg}`"))
        })
        .transpose()?;
    match key.kty.as_str() {
        "RSA" => {
            let algorithm = declared.unwrap_or(Algorithm::RS256);
            let parameters = match algorithm {
                Algorithm::RS256 => &aws_signature::RSA_PKCS1_2048_8192_SHA256,
                Algorithm::RS384 => &aws_signature::RSA_PKCS1_2048_8192_SHA384,
                Algorithm::RS512 => &aws_signature::RSA_PKCS1_2048_8192_SHA512,
                Algorithm::PS256 => &aws_signature::RSA_PSS_2048_8192_SHA256,
                Algorithm::PS384 => &aws_signature::RSA_PSS_2048_8192_SHA384,
                Algorithm::PS512 => &aws_signature::RSA_PSS_2048_8192_SHA512,
                other => return Err(format!("algorithm {other:?} does not fit an RSA key")),
            };
            let n = decode(key.n.as_deref(), "n")?;
            let e = decode(key.e.as_deref(), "e")?;
            let bits = modulus_bits(&n);
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "RSA key of {bits} bits is under the minimum of {MIN_RSA_BITS}"
                ));
            }
            let parsed = RsaPublicKeyComponents { n: &n, e: &e }
                .to_parsed_public_key(parameters)
                .map_err(|error| format!("not a usable RSA public key: {error}"))?;
            Ok(VerificationKey::new(algorithm, parsed, "RSA", &[&n, &e]))
        }
        "EC" => {
            let (algorithm, size, parameters) = match key.crv.as_deref() {
                Some("P-256") => (
                    Algorithm::ES256,
                    32,
                    &aws_signature::ECDSA_P256_SHA256_FIXED,
                ),
                Some("P-384") => (
                    Algorithm::ES384,
                    48,
                    &aws_signature::ECDSA_P384_SHA384_FIXED,
                ),
                Some(other) => return Err(format!("unsupported curve `{other}`")),
                None => return Err("EC key without `crv`".into()),
            };
            if declared.is_some_and(|declared| declared != algorithm) {
                return Err("`alg` does not match the key's curve".into());
            }
            let x = decode(key.x.as_deref(), "x")?;
            let y = decode(key.y.as_deref(), "y")?;
            if x.len() != size || y.len() != size {
                return Err("EC coordinates of the wrong length".into());
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let parsed = ParsedPublicKey::new(parameters, &point)
                .map_err(|error| format!("not a point of the curve: {error}"))?;
            Ok(VerificationKey::new(algorithm, parsed, "EC", &[&point]))
        }
        "OKP" => {
            if key.crv.as_deref() != Some("Ed25519") {
                return Err("only the Ed25519 OKP curve is supported".into());
            }
            if declared.is_some_and(|declared| declared != Algorithm::EdDSA) {
                return Err("`alg` does not match an Ed25519 key".into());
            }
            let x = decode(key.x.as_deref(), "x")?;
            if x.len() != 32 {
                return Err("Ed25519 key of the wrong length".into());
            }
            let parsed = ParsedPublicKey::new(&aws_signature::ED25519, &x)
                .map_err(|error| format!("not a usable Ed25519 public key: {error}"))?;
            Ok(VerificationKey::new(Algorithm::EdDSA, parsed, "OKP", &[&x]))
        }
        "oct" => Err("symmetric (`oct`) keys are never taken from a JWKS".into()),
        other => Err(format!("unsupported key type `{other}`")),
    }
}

fn decode(value: Option<&str>, name: &str) -> Result<Vec<u8>, String> {
    let value = value.ok_or_else(|| format!("missing `{name}`"))?;
    // Some issuers pad their base64url; the padding carries no information.
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| format!("`{name}` is not base64url"))
}

fn modulus_bits(modulus: &[u8]) -> usize {
    let significant: Vec<u8> = modulus
        .iter()
        .copied()
        .skip_while(|byte| *byte == 0)
        .collect();
    match significant.first() {
        None => 0,
        Some(first) => significant.len() * 8 - first.leading_zeros() as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key from a JWKS verifies its own signatures and no other: a changed message, a changed
    /// signature, one not in canonical base64url.
    #[test]
    fn a_parsed_key_verifies_its_signatures_only() {
        for signer in [
            crate::demo::signing::SigningKey::generate_rs256("rsa"),
            crate::demo::signing::SigningKey::generate_es256("ec"),
        ] {
            let signer = signer.unwrap_or_else(|error| panic!("{error}"));
            let document = serde_json::json!({ "keys": [signer.public_jwk()] });
            let parsed = parse_key_set(document.to_string().as_bytes()).unwrap_or_default();
            let key = parsed
                .keys
                .get(signer.kid())
                .unwrap_or_else(|| panic!("{:?}", parsed.skipped));
            let signature = URL_SAFE_NO_PAD.encode(signer.signature(b"header.payload"));
            assert!(
                key.verifies(b"header.payload", &signature),
                "{}",
                signer.kid()
            );
            assert!(!key.verifies(b"header.payloaD", &signature));
            let mut changed = signature.clone().into_bytes();
            if let Some(first) = changed.first_mut() {
                *first = if *first == b'A' { b'B' } else { b'A' };
            }
            let changed = String::from_utf8(changed).unwrap_or_default();
            assert!(!key.verifies(b"header.payload", &changed));
            assert!(!key.verifies(b"header.payload", &format!("{signature}=")));
            assert!(!key.verifies(b"header.payload", ""));
        }
    }

    /// A key the crypto library cannot use is skipped when the set is read, with the reason, rather
    /// than taken and failing every signature.
    #[test]
    fn an_ec_point_off_its_curve_is_skipped() {
        let coordinate = URL_SAFE_NO_PAD.encode([1_u8; 32]);
        let document = serde_json::json!({ "keys": [
            { "kty": "EC", "kid": "off", "crv": "P-256", "x": coordinate, "y": coordinate }
        ]});
        let parsed = parse_key_set(document.to_string().as_bytes()).unwrap_or_default();
        assert!(parsed.keys.is_empty());
        assert!(
            parsed
                .skipped
                .iter()
                .any(|reason| reason.contains("not a point of the curve")),
            "{:?}",
            parsed.skipped
        );
    }

    #[test]
    fn refuses_oct_small_rsa_and_encryption_keys() {
        let small_modulus = URL_SAFE_NO_PAD.encode([0xc1_u8; 128]);
        let document = serde_json::json!({ "keys": [
            { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" },
            { "kty": "RSA", "kid": "small", "n": small_modulus, "e": "AQAB" },
            { "kty": "RSA", "kid": "enc", "use": "enc", "n": URL_SAFE_NO_PAD.encode([0xc1_u8; 256]), "e": "AQAB" },
            { "kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xc1_u8; 256]), "e": "AQAB" },
            { "kty": "RSA", "kid": "ec-alg", "alg": "ES256", "n": URL_SAFE_NO_PAD.encode([0xc1_u8; 256]), "e": "AQAB" },
            { "kty": "RSA", "kid": "good", "n": URL_SAFE_NO_PAD.encode([0xc1_u8; 256]), "e": "AQAB" }
        ]});
        let parsed = parse_key_set(document.to_string().as_bytes()).unwrap_or_default();
        assert_eq!(parsed.keys.keys().collect::<Vec<_>>(), vec!["good"]);
        assert_eq!(parsed.skipped.len(), 5, "{:?}", parsed.skipped);
        for reason in ["1024 bits", "ES256 does not fit an RSA key"] {
            assert!(
                parsed
                    .skipped
                    .iter()
                    .any(|skipped| skipped.contains(reason)),
                "{reason}: {:?}",
                parsed.skipped
            );
        }
    }

    #[test]
    fn only_keys_for_verifying_signatures_are_taken() {
        let modulus = URL_SAFE_NO_PAD.encode([0xc1_u8; 256]);
        let key = |extra: serde_json::Value| {
            let mut key =
                serde_json::json!({ "kty": "RSA", "kid": "k", "n": modulus, "e": "AQAB" });
            if let (Some(key), Some(extra)) = (key.as_object_mut(), extra.as_object()) {
                key.extend(extra.clone());
            }
            serde_json::json!({ "keys": [key] }).to_string()
        };
        let cases = [
            (serde_json::json!({}), true),
            (serde_json::json!({ "use": "sig" }), true),
            (serde_json::json!({ "key_ops": ["verify"] }), true),
            (
                serde_json::json!({ "key_ops": ["sign", "verify"], "use": "sig" }),
                true,
            ),
            (serde_json::json!({ "use": "enc" }), false),
            (serde_json::json!({ "use": "SIG" }), false),
            (serde_json::json!({ "use": "" }), false),
            (serde_json::json!({ "key_ops": [] }), false),
            (
                serde_json::json!({ "key_ops": ["encrypt", "wrapKey"] }),
                false,
            ),
            (serde_json::json!({ "key_ops": ["sign"] }), false),
            (serde_json::json!({ "key_ops": "verify" }), false),
            (
                serde_json::json!({ "use": "sig", "key_ops": ["decrypt"] }),
                false,
            ),
        ];
        for (extra, usable) in cases {
            let parsed = parse_key_set(key(extra.clone()).as_bytes()).unwrap_or_default();
            assert_eq!(
                parsed.keys.contains_key("k"),
                usable,
                "{extra}: {:?}",
                parsed.skipped
            );
        }
    }

    #[test]
    fn a_key_set_with_a_duplicate_member_is_refused() {
        let modulus = URL_SAFE_NO_PAD.encode([0xc1_u8; 256]);
        let document = format!(
            r#"{{"keys":[{{"kty":"RSA","kid":"k","use":"enc","use":"sig","n":"{modulus}","e":"AQAB"}}]}}"#
        );
        assert!(parse_key_set(document.as_bytes()).is_err());
        let document = format!(
            r#"{{"keys":[],"keys":[{{"kty":"RSA","kid":"k","n":"{modulus}","e":"AQAB"}}]}}"#
        );
        assert!(parse_key_set(document.as_bytes()).is_err());
    }

    #[test]
    fn a_key_is_the_same_key_only_with_the_same_material() {
        let set = |modulus: &[u8]| {
            let document = serde_json::json!({ "keys": [
                { "kty": "RSA", "kid": "1", "n": URL_SAFE_NO_PAD.encode(modulus), "e": "AQAB" }
            ]});
            parse_key_set(document.to_string().as_bytes()).unwrap_or_default()
        };
        let (first, again, other) = (set(&[0xc1; 256]), set(&[0xc1; 256]), set(&[0xc3; 256]));
        let key = |parsed: &ParsedKeySet| parsed.keys.get("1").cloned();
        let (Some(first), Some(again), Some(other)) = (key(&first), key(&again), key(&other))
        else {
            panic!("every key set has key 1");
        };
        assert!(first.is_same_key(&again));
        assert!(!first.is_same_key(&other));
    }

    #[test]
    fn counts_modulus_bits_without_leading_zeros() {
        assert_eq!(modulus_bits(&[0, 0x01, 0xff]), 9);
        assert_eq!(modulus_bits(&[0x80; 256]), 2048);
        assert_eq!(modulus_bits(&[]), 0);
    }
}
