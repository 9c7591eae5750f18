//! Signing keys that mint JWTs: the demo issuer's key, and the test and benchmark issuers'.
//!
//! Verdict never signs tokens in production; this exists so the demo default, the tests and the
//! benchmarks can play an issuer with real keys and real signatures.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256,
    RsaPublicKeyComponents,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// A private key with its `kid`, able to sign JWS compact tokens.
pub struct SigningKey {
    kid: String,
    pair: Pair,
}

enum Pair {
    Rs256(RsaKeyPair),
    Es256(EcdsaKeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.algorithm())
            .finish_non_exhaustive()
    }
}

/// Key generation failed in the crypto library.
#[derive(Debug, thiserror::Error)]
#[error("cannot generate a signing key")]
pub struct KeyGenerationError;

impl SigningKey {
    /// A fresh 2048-bit RSA key for RS256.
    pub fn generate_rs256(kid: impl Into<String>) -> Result<Self, KeyGenerationError> {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyGenerationError)?;
        Ok(Self {
            kid: kid.into(),
            pair: Pair::Rs256(pair),
        })
    }

    /// A fresh P-256 key for ES256.
    pub fn generate_es256(kid: impl Into<String>) -> Result<Self, KeyGenerationError> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| KeyGenerationError)?;
        Ok(Self {
            kid: kid.into(),
            pair: Pair::Es256(pair),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `RS256` or `ES256`.
    pub fn algorithm(&self) -> &'static str {
        match self.pair {
            Pair::Rs256(_) => "RS256",
            Pair::Es256(_) => "ES256",
        }
    }

    /// The public half as a JWK, as an issuer publishes it in its JWKS.
    pub fn public_jwk(&self) -> Value {
        match &self.pair {
            Pair::Rs256(pair) => {
                let components = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
                json!({
                    "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                    "n": URL_SAFE_NO_PAD.encode(&components.n),
                    "e": URL_SAFE_NO_PAD.encode(&components.e),
                })
            }
            Pair::Es256(pair) => {
                // An uncompressed P-256 point: 0x04 || x || y.
                let point = pair.public_key().as_ref();
                let x = point.get(1..33).unwrap_or_default();
                let y = point.get(33..65).unwrap_or_default();
                json!({
                    "kty": "EC", "use": "sig", "alg": "ES256", "kid": self.kid, "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(x),
                    "y": URL_SAFE_NO_PAD.encode(y),
                })
            }
        }
    }

    /// Signs `claims` with a standard header (`alg`, `kid`, `typ: JWT`).
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({ "alg": self.algorithm(), "kid": self.kid, "typ": "JWT" });
        self.sign_with_header(&header, claims)
    }

    /// Signs `claims` under an arbitrary header, whatever its `alg` says.
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        self.sign_segments(&encode_json(header), &encode_json(claims))
    }

    /// Signs already-encoded header and payload segments, returning the compact token.
    pub fn sign_segments(&self, header_b64: &str, payload_b64: &str) -> String {
        let signing_input = format!("{header_b64}.{payload_b64}");
        let signature = self.signature(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// The raw signature of `message`. Signing with a freshly generated key does not fail; if the crypto
    /// library ever did, the empty signature yields a token every verifier refuses.
    pub fn signature(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.pair {
            Pair::Rs256(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                match pair.sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature) {
                    Ok(()) => signature,
                    Err(_) => Vec::new(),
                }
            }
            Pair::Es256(pair) => pair
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .unwrap_or_default(),
        }
    }
}

/// base64url (unpadded) of a JSON value's compact serialization.
pub fn encode_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A JWKS document holding `keys`.
pub fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|key| key.public_jwk()).collect::<Vec<_>>() })
}
