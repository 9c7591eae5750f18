//! Hostile and broken bearer tokens: every one is denied, with a stable status, error code and description.
//!
//! One table drives each attack through the whole callout (body → verifier → decision), so a failing row
//! names itself. The accepted forms (the `Bearer` scheme in any case, tokens just inside the leeway) sit
//! in tables of their own, so that the denials cannot pass merely because nothing is ever allowed.

use std::time::Duration;

use aws_lc_rs::hmac;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Value, json};
use verdict::credential::CredentialError;
use verdict::demo::signing::{SigningKey, encode_json};

use crate::helpers::{AUDIENCE, KeyServer, T0, TestApp, claims, config_yaml, ec_key, rsa_key};

/// Issuer B's own HMAC secret: B accepts HS256, but only keyed with this.
const SHARED_SECRET_B: &str = "issuer-b-shared-secret-of-at-least-32-bytes";

/// How long after start-up the tables run: past the unknown-`kid` cooldown (30 s by default) of the
/// initial key load, so each issuer may refetch its keys exactly once while the table runs.
const STARTED_AGO: Duration = Duration::from_secs(60);

/// A base64url decoder that ignores non-zero spare bits and padding: what a lenient verifier would use.
/// The tests use it only to prove that a doctored segment still means the same bytes.
const LENIENT_BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Two trusted issuers and an attacker, and the service that trusts the issuers.
///
/// Issuer A publishes an RSA and an EC key and is the target of most rows; issuer B is a second trusted
/// issuer whose key must not vouch for A's tokens, and which also accepts HS256 under its own shared
/// secret; the attacker's key is published nowhere.
struct Fixture {
    app: TestApp,
    issuer_a: KeyServer,
    issuer_b: KeyServer,
    rsa: &'static SigningKey,
    ec: SigningKey,
    rsa_b: &'static SigningKey,
    attacker: &'static SigningKey,
    now: u64,
}

impl Fixture {
    async fn start() -> Self {
        let rsa = rsa_key("attacks-a-rsa");
        let ec = ec_key("attacks-a-ec");
        let rsa_b = rsa_key("attacks-b-rsa");
        let attacker = rsa_key("attacks-attacker");
        let issuer_a = KeyServer::start(&[rsa, &ec]).await;
        let issuer_b = KeyServer::start(&[rsa_b]).await;
        let app = TestApp::start(&config_yaml(&issuer_a, &second_issuer(&issuer_b))).await;
        app.advance(STARTED_AGO);
        Self {
            app,
            issuer_a,
            issuer_b,
            rsa,
            ec,
            rsa_b,
            attacker,
            now: T0 + STARTED_AGO.as_secs(),
        }
    }

    /// Claims that issuer A could have issued just now, which the example policies allow.
    fn valid_claims(&self) -> Value {
        claims(&self.issuer_a.issuer(), self.now)
    }

    fn claims_with(&self, name: &str, value: Value) -> Value {
        let mut claims = self.valid_claims();
        claims[name] = value;
        claims
    }

    fn claims_without(&self, name: &str) -> Value {
        let mut claims = self.valid_claims();
        claims.as_object_mut().unwrap().remove(name);
        claims
    }

    /// The header issuer A's RSA key signs with.
    fn header(&self) -> Value {
        json!({ "alg": "RS256", "kid": self.rsa.kid(), "typ": "JWT" })
    }

    /// Issuer A's header with `extra` members added or replaced.
    fn header_with(&self, extra: Value) -> Value {
        let mut header = self.header();
        for (name, value) in extra.as_object().unwrap() {
            header[name] = value.clone();
        }
        header
    }

    /// A token signed by issuer A's RSA key.
    fn signed(&self, claims: &Value) -> String {
        self.rsa.sign(claims)
    }

    /// Issuer A's valid claims under `header`, signed by A's RSA key whatever the header says.
    fn signed_with_header(&self, header: Value) -> String {
        self.rsa.sign_with_header(&header, &self.valid_claims())
    }

    /// A validly signed token whose claim `name` is the JSON text `raw`, spliced in verbatim because
    /// `serde_json::Value` cannot hold numbers such as 2^64 as written.
    fn signed_with_raw_claim(&self, name: &str, raw: &str) -> String {
        let others = self.claims_without(name).to_string();
        let payload = format!("{},\"{name}\":{raw}}}", others.strip_suffix('}').unwrap());
        self.signed_raw(&self.header().to_string(), &payload)
    }

    /// Header and payload JSON texts, as written, signed by issuer A's RSA key.
    fn signed_raw(&self, header: &str, payload: &str) -> String {
        self.rsa.sign_segments(
            &URL_SAFE_NO_PAD.encode(header),
            &URL_SAFE_NO_PAD.encode(payload),
        )
    }

    /// A valid token with its signature replaced by `signature`.
    fn with_signature(&self, signature: &str) -> String {
        let token = self.signed(&self.valid_claims());
        let (signing_input, _) = token.rsplit_once('.').unwrap();
        format!("{signing_input}.{signature}")
    }

    /// Claims that issuer B could have issued just now.
    fn claims_of_b(&self) -> Value {
        claims(&self.issuer_b.issuer(), self.now)
    }

    /// An HS256 token over A's valid claims, naming A's RSA `kid`, keyed with `secret`: the classic
    /// algorithm-confusion attack when `secret` is the issuer's public key.
    fn hs256_keyed_with(&self, secret: &[u8]) -> String {
        hs256(&self.valid_claims(), self.rsa.kid(), secret)
    }

    /// The same attack on issuer B, which does accept HS256, but only under its own secret.
    fn hs256_for_b_keyed_with(&self, secret: &[u8]) -> String {
        hs256(&self.claims_of_b(), self.rsa_b.kid(), secret)
    }
}

/// An HS256 token over `claims`, naming `kid`, keyed with `secret`.
fn hs256(claims: &Value, kid: &str, secret: &[u8]) -> String {
    let header = json!({ "alg": "HS256", "kid": kid, "typ": "JWT" });
    let signing_input = format!("{}.{}", encode_json(&header), encode_json(claims));
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, secret),
        signing_input.as_bytes(),
    );
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

impl Fixture {
    /// A token whose header carries the attacker's own public key, signed by the attacker.
    fn attacker_with_header(&self, extra: Value) -> String {
        let mut header = json!({ "alg": "RS256", "kid": self.attacker.kid(), "typ": "JWT" });
        for (name, value) in extra.as_object().unwrap() {
            header[name] = value.clone();
        }
        self.attacker
            .sign_with_header(&header, &self.valid_claims())
    }

    /// A URL on issuer A's own key server, off its JWKS path: a fetch would show in `other_hits`.
    fn attacker_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.issuer_a.address())
    }
}

/// Issuer B's entry in the `issuers` list, appended after issuer A's by `config_yaml`.
fn second_issuer(server: &KeyServer) -> String {
    format!(
        "  - name: other\n    issuer: \"{}\"\n    audiences: [\"{AUDIENCE}\"]\n    jwks_uri: \"{}\"\n    \
         algorithms: [RS256, HS256]\n    shared_secret: \"{SHARED_SECRET_B}\"\n",
        server.issuer(),
        server.jwks_uri()
    )
}

/// What one row must get back.
#[derive(Debug)]
enum Expected {
    /// A deny decision (HTTP 200) with this status, error code and description.
    Deny {
        status: u16,
        error: &'static str,
        description: String,
    },
    /// A callout-level refusal before any decision, for a body over the 64 KiB limit.
    Refused {
        http: StatusCode,
        error: &'static str,
    },
}

/// The usual answer to a bad token: 401 `invalid_token`, described by the verifier's reason.
fn invalid_token(reason: CredentialError) -> Expected {
    Expected::Deny {
        status: 401,
        error: "invalid_token",
        description: reason.to_string(),
    }
}

fn body_too_large() -> Expected {
    Expected::Refused {
        http: StatusCode::PAYLOAD_TOO_LARGE,
        error: "request_too_large",
    }
}

/// Builds a row's token from the fixture.
type Build = fn(&Fixture) -> String;

#[tokio::test]
async fn hostile_and_broken_tokens_are_denied_with_a_stable_error() {
    use CredentialError::*;
    let fixture = Fixture::start().await;
    let jwks_loads_before = fixture.issuer_a.jwks_hits() + fixture.issuer_b.jwks_hits();

    let cases: &[(&str, Build, Expected)] = &[
        // `alg: none` in any spelling. With its empty signature the token is malformed before its
        // header is even read; with a signature attached, the header is read and refused by name.
        (
            "alg none, empty signature",
            |f| unsigned(json!({ "alg": "none" }), &f.valid_claims()),
            invalid_token(Malformed),
        ),
        (
            "alg None, empty signature",
            |f| unsigned(json!({ "alg": "None" }), &f.valid_claims()),
            invalid_token(Malformed),
        ),
        (
            "alg NONE, empty signature",
            |f| unsigned(json!({ "alg": "NONE" }), &f.valid_claims()),
            invalid_token(Malformed),
        ),
        (
            "alg nOnE, empty signature",
            |f| unsigned(json!({ "alg": "nOnE" }), &f.valid_claims()),
            invalid_token(Malformed),
        ),
        (
            "alg none, with a signature",
            |f| f.signed_with_header(json!({ "alg": "none", "kid": f.rsa.kid() })),
            invalid_token(AlgorithmNone),
        ),
        (
            "alg None, with a signature",
            |f| f.signed_with_header(json!({ "alg": "None", "kid": f.rsa.kid() })),
            invalid_token(AlgorithmNone),
        ),
        (
            "alg NONE, with a signature",
            |f| f.signed_with_header(json!({ "alg": "NONE", "kid": f.rsa.kid() })),
            invalid_token(AlgorithmNone),
        ),
        (
            "alg nOnE, with a signature",
            |f| f.signed_with_header(json!({ "alg": "nOnE", "kid": f.rsa.kid() })),
            invalid_token(AlgorithmNone),
        ),
        (
            "alg missing",
            |f| f.signed_with_header(json!({ "kid": f.rsa.kid() })),
            invalid_token(InvalidHeader),
        ),
        (
            "alg a number",
            |f| f.signed_with_header(json!({ "alg": 256, "kid": f.rsa.kid() })),
            invalid_token(InvalidHeader),
        ),
        (
            "alg unknown",
            |f| f.signed_with_header(f.header_with(json!({ "alg": "RS257" }))),
            invalid_token(AlgorithmNotAllowed),
        ),
        (
            "alg RS512, not in the allowlist",
            |f| f.signed_with_header(f.header_with(json!({ "alg": "RS512" }))),
            invalid_token(AlgorithmNotAllowed),
        ),
        // HS256 keyed with the issuer's public key, in each form an HMAC library might be handed it.
        (
            "HS256 keyed with the RSA public key as PEM",
            |f| f.hs256_keyed_with(rsa_public_key_pem(f.rsa).as_bytes()),
            invalid_token(AlgorithmNotAllowed),
        ),
        (
            "HS256 keyed with the RSA public key as DER",
            |f| f.hs256_keyed_with(&rsa_public_key_der(f.rsa)),
            invalid_token(AlgorithmNotAllowed),
        ),
        (
            "HS256 keyed with the JWK modulus bytes",
            |f| f.hs256_keyed_with(&jwk_modulus(f.rsa)),
            invalid_token(AlgorithmNotAllowed),
        ),
        (
            "HS256 keyed with the JWK `n` text",
            |f| f.hs256_keyed_with(f.rsa.public_jwk()["n"].as_str().unwrap().as_bytes()),
            invalid_token(AlgorithmNotAllowed),
        ),
        // An issuer that allows HS256 verifies it with its own secret, never with a public key.
        (
            "HS256 issuer keyed with its RSA public key as PEM",
            |f| f.hs256_for_b_keyed_with(rsa_public_key_pem(f.rsa_b).as_bytes()),
            invalid_token(BadSignature),
        ),
        (
            "HS256 issuer keyed with its JWK modulus bytes",
            |f| f.hs256_for_b_keyed_with(&jwk_modulus(f.rsa_b)),
            invalid_token(BadSignature),
        ),
        (
            "HS256 issuer keyed with a guessed secret",
            |f| f.hs256_for_b_keyed_with(b"secret"),
            invalid_token(BadSignature),
        ),
        // Headers that name a key instead of letting the issuer's key set decide: never read.
        (
            "embedded jwk, unknown kid",
            |f| f.attacker_with_header(json!({ "jwk": f.attacker.public_jwk() })),
            invalid_token(UnknownKey),
        ),
        (
            "embedded jwk, the issuer's kid",
            |f| {
                f.attacker_with_header(
                    json!({ "jwk": f.attacker.public_jwk(), "kid": f.rsa.kid() }),
                )
            },
            invalid_token(BadSignature),
        ),
        (
            "jku to the key server, unknown kid",
            |f| f.attacker_with_header(json!({ "jku": f.attacker_url("/attacker/jwks.json") })),
            invalid_token(UnknownKey),
        ),
        (
            "jku to the key server, the issuer's kid",
            |f| {
                f.attacker_with_header(
                    json!({ "jku": f.attacker_url("/attacker/jwks.json"), "kid": f.rsa.kid() }),
                )
            },
            invalid_token(BadSignature),
        ),
        (
            "x5u to the key server, unknown kid",
            |f| f.attacker_with_header(json!({ "x5u": f.attacker_url("/attacker/cert.pem") })),
            invalid_token(UnknownKey),
        ),
        (
            "x5u to the key server, the issuer's kid",
            |f| {
                f.attacker_with_header(
                    json!({ "x5u": f.attacker_url("/attacker/cert.pem"), "kid": f.rsa.kid() }),
                )
            },
            invalid_token(BadSignature),
        ),
        (
            "x5c chain, the issuer's kid",
            |f| {
                f.attacker_with_header(json!({ "x5c": [STANDARD.encode(rsa_public_key_der(f.attacker))], "kid": f.rsa.kid() }))
            },
            invalid_token(BadSignature),
        ),
        // `kid` is looked up, never interpreted.
        (
            "kid a path traversal",
            |f| f.signed_with_header(f.header_with(json!({ "kid": "../../etc/passwd" }))),
            invalid_token(UnknownKey),
        ),
        (
            "kid an SQL injection",
            |f| f.signed_with_header(f.header_with(json!({ "kid": "' OR 1=1 --" }))),
            invalid_token(UnknownKey),
        ),
        (
            "kid empty",
            |f| f.signed_with_header(f.header_with(json!({ "kid": "" }))),
            invalid_token(MissingKeyId),
        ),
        (
            "kid a number",
            |f| f.signed_with_header(f.header_with(json!({ "kid": 1 }))),
            invalid_token(MissingKeyId),
        ),
        (
            "kid missing",
            |f| f.signed_with_header(json!({ "alg": "RS256", "typ": "JWT" })),
            invalid_token(MissingKeyId),
        ),
        (
            "kid of 300 bytes",
            |f| f.signed_with_header(f.header_with(json!({ "kid": "k".repeat(300) }))),
            invalid_token(MissingKeyId),
        ),
        (
            "kid of 1 MB",
            |f| f.signed_with_header(f.header_with(json!({ "kid": "k".repeat(1 << 20) }))),
            body_too_large(),
        ),
        (
            "crit header",
            |f| f.signed_with_header(f.header_with(json!({ "crit": ["exp"], "exp": 1 }))),
            invalid_token(CriticalHeader),
        ),
        // ES256, whose verifier must not take r = s = 0, and keys used with the other key's algorithm.
        (
            "ES256 signature of 64 zero bytes",
            |f| {
                assemble(
                    &json!({ "alg": "ES256", "kid": f.ec.kid() }),
                    &f.valid_claims(),
                    &[0; 64],
                )
            },
            invalid_token(BadSignature),
        ),
        (
            "ES256 signed by the EC key, naming the RSA kid",
            |f| {
                f.ec.sign_with_header(
                    &json!({ "alg": "ES256", "kid": f.rsa.kid() }),
                    &f.valid_claims(),
                )
            },
            invalid_token(KeyAlgorithmMismatch),
        ),
        (
            "RS256 signed by the RSA key, naming the EC kid",
            |f| f.signed_with_header(f.header_with(json!({ "kid": f.ec.kid() }))),
            invalid_token(KeyAlgorithmMismatch),
        ),
        // Shapes that are not a JWS compact serialization.
        (
            "one segment",
            |f| {
                f.signed(&f.valid_claims())
                    .split('.')
                    .next()
                    .unwrap()
                    .to_owned()
            },
            invalid_token(Malformed),
        ),
        (
            "two segments",
            |f| {
                f.signed(&f.valid_claims())
                    .rsplit_once('.')
                    .unwrap()
                    .0
                    .to_owned()
            },
            invalid_token(Malformed),
        ),
        (
            "four segments",
            |f| format!("{}.c2ln", f.signed(&f.valid_claims())),
            invalid_token(Malformed),
        ),
        (
            "five segments (JWE)",
            |_| "eyJhbGciOiJSU0EtT0FFUCJ9.a2V5.aXY.Y2lwaGVy.dGFn".to_owned(),
            invalid_token(Encrypted),
        ),
        (
            "six segments",
            |f| format!("{}.c2ln.c2ln.c2ln", f.signed(&f.valid_claims())),
            invalid_token(Malformed),
        ),
        (
            "empty signature",
            |f| f.with_signature(""),
            invalid_token(Malformed),
        ),
        (
            "empty header",
            |f| {
                format!(
                    ".{}",
                    f.signed(&f.valid_claims()).split_once('.').unwrap().1
                )
            },
            invalid_token(Malformed),
        ),
        ("dots only", |_| "..".to_owned(), invalid_token(Malformed)),
        (
            "header not JSON",
            |f| f.signed_raw("not json", &f.valid_claims().to_string()),
            invalid_token(InvalidHeader),
        ),
        (
            "header a JSON array",
            |f| f.signed_raw(r#"["RS256"]"#, &f.valid_claims().to_string()),
            invalid_token(InvalidHeader),
        ),
        (
            "payload not JSON",
            |f| f.signed_raw(&f.header().to_string(), "not json"),
            invalid_token(InvalidPayload),
        ),
        (
            "whitespace inside the token",
            |f| f.signed(&f.valid_claims()).replacen('.', " .", 1),
            invalid_token(InvalidCharacters),
        ),
        // Signatures that do not cover what the token says.
        (
            "payload edited after signing",
            |f| {
                swap_payload(
                    &f.signed(&f.valid_claims()),
                    &f.claims_with("sub", json!("admin")),
                )
            },
            invalid_token(BadSignature),
        ),
        (
            "signature of another token",
            |f| {
                f.with_signature(
                    f.signed(&f.claims_with("sub", json!("admin")))
                        .rsplit_once('.')
                        .unwrap()
                        .1,
                )
            },
            invalid_token(BadSignature),
        ),
        (
            "signature truncated",
            |f| {
                let token = f.signed(&f.valid_claims());
                token[..token.len() - 8].to_owned()
            },
            invalid_token(BadSignature),
        ),
        // Time claims: integers within bounds only, never coerced.
        (
            "expired, exp plus the leeway reached",
            |f| f.signed(&f.claims_with("exp", json!(f.now - 30))),
            invalid_token(Expired),
        ),
        (
            "exp missing",
            |f| f.signed(&f.claims_without("exp")),
            invalid_token(MissingClaim("exp")),
        ),
        (
            "exp a string",
            |f| f.signed(&f.claims_with("exp", json!((f.now + 600).to_string()))),
            invalid_token(InvalidClaim("exp")),
        ),
        (
            "exp 1e30",
            |f| f.signed_with_raw_claim("exp", "1e30"),
            invalid_token(InvalidClaim("exp")),
        ),
        (
            "exp 2^64",
            |f| f.signed_with_raw_claim("exp", "18446744073709551616"),
            invalid_token(InvalidClaim("exp")),
        ),
        (
            "exp past the year 9999",
            |f| f.signed_with_raw_claim("exp", "253402300800"),
            invalid_token(InvalidClaim("exp")),
        ),
        (
            "exp negative",
            |f| f.signed_with_raw_claim("exp", "-1"),
            invalid_token(InvalidClaim("exp")),
        ),
        (
            "exp 1.5e9",
            |f| f.signed_with_raw_claim("exp", "1.5e9"),
            invalid_token(InvalidClaim("exp")),
        ),
        (
            "exp now + 0.5",
            |f| f.signed_with_raw_claim("exp", &format!("{}.5", f.now)),
            invalid_token(InvalidClaim("exp")),
        ),
        (
            "nbf in the future",
            |f| f.signed(&f.claims_with("nbf", json!(f.now + 3600))),
            invalid_token(NotYetValid),
        ),
        (
            "nbf a string",
            |f| f.signed(&f.claims_with("nbf", json!(f.now.to_string()))),
            invalid_token(InvalidClaim("nbf")),
        ),
        (
            "iat just beyond the leeway",
            |f| f.signed(&f.claims_with("iat", json!(f.now + 31))),
            invalid_token(IssuedInFuture),
        ),
        (
            "iat a float",
            |f| f.signed_with_raw_claim("iat", &format!("{}.5", f.now)),
            invalid_token(InvalidClaim("iat")),
        ),
        // Audience: exact strings only.
        (
            "aud missing",
            |f| f.signed(&f.claims_without("aud")),
            invalid_token(MissingClaim("aud")),
        ),
        (
            "aud wrong",
            |f| f.signed(&f.claims_with("aud", json!("api://payments"))),
            invalid_token(WrongAudience),
        ),
        (
            "aud in another case",
            |f| f.signed(&f.claims_with("aud", json!(AUDIENCE.to_uppercase()))),
            invalid_token(WrongAudience),
        ),
        (
            "aud numeric",
            |f| f.signed(&f.claims_with("aud", json!(5))),
            invalid_token(InvalidClaim("aud")),
        ),
        (
            "aud an object",
            |f| f.signed(&f.claims_with("aud", json!({ "aud": AUDIENCE }))),
            invalid_token(InvalidClaim("aud")),
        ),
        (
            "aud a mixed array",
            |f| f.signed(&f.claims_with("aud", json!([AUDIENCE, 5]))),
            invalid_token(InvalidClaim("aud")),
        ),
        (
            "aud an empty array",
            |f| f.signed(&f.claims_with("aud", json!([]))),
            invalid_token(InvalidClaim("aud")),
        ),
        // Issuer: exact match, and each issuer's keys vouch only for its own tokens.
        (
            "iss wrong",
            |f| f.signed(&f.claims_with("iss", json!("https://evil.example.com"))),
            invalid_token(UnknownIssuer),
        ),
        (
            "iss missing",
            |f| f.signed(&f.claims_without("iss")),
            invalid_token(MissingClaim("iss")),
        ),
        (
            "iss with a trailing slash",
            |f| f.signed(&f.claims_with("iss", json!(format!("{}/", f.issuer_a.issuer())))),
            invalid_token(UnknownIssuer),
        ),
        (
            "iss an array",
            |f| f.signed(&f.claims_with("iss", json!([f.issuer_a.issuer()]))),
            invalid_token(InvalidClaim("iss")),
        ),
        (
            "iss A, signed by issuer B's key",
            |f| f.rsa_b.sign(&f.valid_claims()),
            invalid_token(UnknownKey),
        ),
        (
            "iss A, signed by issuer B's key under A's kid",
            |f| f.rsa_b.sign_with_header(&f.header(), &f.valid_claims()),
            invalid_token(BadSignature),
        ),
        (
            "iss B, signed by issuer A's key",
            |f| f.signed(&f.claims_with("iss", json!(f.issuer_b.issuer()))),
            invalid_token(UnknownKey),
        ),
        (
            "sub missing",
            |f| f.signed(&f.claims_without("sub")),
            invalid_token(MissingClaim("sub")),
        ),
        (
            "sub a number",
            |f| f.signed(&f.claims_with("sub", json!(42))),
            invalid_token(InvalidClaim("sub")),
        ),
        // Non-canonical base64url, signed as written: a lenient decoder would accept the same bytes.
        (
            "header with spare bits set",
            |f| {
                let header = with_spare_bits_set(&encode_leaving_spare_bits(&f.header()));
                f.rsa
                    .sign_segments(&header, &encode_json(&f.valid_claims()))
            },
            invalid_token(InvalidHeader),
        ),
        (
            "payload with spare bits set",
            |f| {
                let payload = with_spare_bits_set(&encode_leaving_spare_bits(&f.valid_claims()));
                f.rsa.sign_segments(&encode_json(&f.header()), &payload)
            },
            invalid_token(InvalidPayload),
        ),
        (
            "signature with spare bits set",
            |f| {
                let token = f.signed(&f.valid_claims());
                f.with_signature(&with_spare_bits_set(token.rsplit_once('.').unwrap().1))
            },
            invalid_token(BadSignature),
        ),
        (
            "header padded with =",
            |f| {
                let header = padded(&encode_leaving_spare_bits(&f.header()));
                f.rsa
                    .sign_segments(&header, &encode_json(&f.valid_claims()))
            },
            invalid_token(InvalidCharacters),
        ),
        (
            "payload padded with =",
            |f| {
                let payload = padded(&encode_leaving_spare_bits(&f.valid_claims()));
                f.rsa.sign_segments(&encode_json(&f.header()), &payload)
            },
            invalid_token(InvalidCharacters),
        ),
        (
            "signature padded with =",
            |f| {
                let token = f.signed(&f.valid_claims());
                f.with_signature(&padded(token.rsplit_once('.').unwrap().1))
            },
            invalid_token(InvalidCharacters),
        ),
        // Duplicate members: parsers disagree on which one wins, so neither may.
        (
            "header with alg twice",
            |f| {
                f.signed_raw(
                    &format!(r#"{{"alg":"none","kid":"{}","alg":"RS256"}}"#, f.rsa.kid()),
                    &f.valid_claims().to_string(),
                )
            },
            invalid_token(InvalidHeader),
        ),
        (
            "payload with sub twice",
            |f| {
                let claims = f.valid_claims().to_string();
                f.signed_raw(
                    &f.header().to_string(),
                    &format!(r#"{},"sub":"admin"}}"#, claims.strip_suffix('}').unwrap()),
                )
            },
            invalid_token(InvalidPayload),
        ),
        // Size: the verifier's 8 KiB cap, and the callout's 64 KiB body cap before it.
        (
            "token of 9 KiB",
            |f| f.signed(&f.claims_with("padding", json!("p".repeat(9 * 1024)))),
            invalid_token(TooLarge),
        ),
        (
            "token of 1 MB",
            |f| f.signed(&f.claims_with("padding", json!("p".repeat(1 << 20)))),
            body_too_large(),
        ),
    ];

    for (case, build, expected) in cases {
        let token = build(&fixture);
        check_denied(&fixture, case, &token, expected).await;
    }

    // `jku` and `x5u` were never followed, and unknown `kid`s cost one refetch per issuer, not one each.
    for server in [&fixture.issuer_a, &fixture.issuer_b] {
        assert_eq!(
            server.other_hits(),
            0,
            "a token made the service fetch a URL it named"
        );
        assert_eq!(server.discovery_hits(), 0, "discovery is not configured");
    }
    assert_eq!(
        fixture.issuer_a.jwks_hits() + fixture.issuer_b.jwks_hits(),
        jwks_loads_before + 2,
        "each issuer refetches its keys at most once per unknown-kid cooldown"
    );
}

/// Posts `Bearer <token>` for `GET /orders/42` and holds the answer to `expected`.
async fn check_denied(fixture: &Fixture, case: &str, token: &str, expected: &Expected) {
    let body = json!({ "authorization": format!("Bearer {token}"), "method": "GET", "path": "/orders/42" });
    let (http, answer) = fixture.app.post_decide(body.to_string()).await;
    match expected {
        Expected::Refused {
            http: expected_http,
            error,
        } => {
            assert_eq!(http, *expected_http, "{case}: {answer}");
            assert_eq!(answer["error"], *error, "{case}: {answer}");
            assert!(
                answer.get("allow").is_none(),
                "{case}: a refused callout carries no decision: {answer}"
            );
        }
        Expected::Deny {
            status,
            error,
            description,
        } => {
            assert_eq!(
                http,
                StatusCode::OK,
                "{case}: a deny is a decision: {answer}"
            );
            assert_eq!(answer["allow"], false, "{case}: {answer}");
            assert_eq!(answer["status"], *status, "{case}: {answer}");
            assert_eq!(answer["error"], *error, "{case}: {answer}");
            assert_eq!(
                answer["error_description"],
                description.as_str(),
                "{case}: {answer}"
            );
            // Nothing from an unverified token may reach the proxy.
            for field in ["subject", "client_id", "issuer", "scope"] {
                assert_eq!(answer[field], "", "{case}: `{field}` of a deny: {answer}");
            }
            assert_eq!(answer["headers"], json!({}), "{case}: {answer}");
            assert_eq!(answer["cache_ttl"], 0, "{case}: {answer}");
            if *status == 401 && *error == "invalid_token" {
                let challenge = answer["www_authenticate"].as_str().unwrap_or_default();
                assert!(
                    challenge.starts_with("Bearer ")
                        && challenge.contains(r#"realm="api""#)
                        && challenge.contains(r#"error="invalid_token""#),
                    "{case}: challenge {challenge:?}"
                );
                assert!(
                    !challenge.contains(['\r', '\n']),
                    "{case}: challenge {challenge:?}"
                );
            }
        }
    }
    assert_nothing_secret_echoed(fixture, case, token, &answer);
}

/// Neither the description nor the challenge may quote the token, its attacker-chosen `kid`, or any
/// key material (DESIGN §2: safe to show a client).
fn assert_nothing_secret_echoed(fixture: &Fixture, case: &str, token: &str, answer: &Value) {
    let shown = format!(
        "{} {}",
        answer["error_description"].as_str().unwrap_or_default(),
        answer["www_authenticate"].as_str().unwrap_or_default()
    );
    let mut secrets: Vec<String> = token
        .split('.')
        .filter(|segment| segment.len() >= 8)
        .map(str::to_owned)
        .collect();
    if let Some(kid) = header_kid(token) {
        secrets.push(kid);
    }
    secrets.push(SHARED_SECRET_B.to_owned());
    for key in [fixture.rsa, &fixture.ec, fixture.rsa_b, fixture.attacker] {
        let jwk = key.public_jwk();
        for member in ["n", "x", "y"] {
            if let Some(value) = jwk[member].as_str() {
                secrets.push(value.to_owned());
            }
        }
    }
    for secret in secrets.iter().filter(|secret| secret.len() >= 4) {
        let excerpt: String = secret.chars().take(40).collect();
        assert!(
            !shown.contains(secret.as_str()),
            "{case}: the answer quotes `{excerpt}`: {shown}"
        );
    }
}

/// The `kid` an attacker put in the token's header, if it has one that decodes.
fn header_kid(token: &str) -> Option<String> {
    let header = LENIENT_BASE64URL.decode(token.split('.').next()?).ok()?;
    let header: Value = serde_json::from_slice(&header).ok()?;
    header["kid"].as_str().map(str::to_owned)
}

/// `header.payload.` with an empty signature, as an unsecured JWS is written.
fn unsigned(header: Value, claims: &Value) -> String {
    assemble(&header, claims, &[])
}

/// A compact token from its parts, with whatever signature bytes the row wants.
fn assemble(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        encode_json(header),
        encode_json(claims),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// `token` with its payload replaced by `claims`, keeping its header and signature.
fn swap_payload(token: &str, claims: &Value) -> String {
    let mut segments: Vec<String> = token.split('.').map(str::to_owned).collect();
    segments[1] = encode_json(claims);
    segments.join(".")
}

/// base64url of `value`'s JSON text, with trailing spaces added (still the same JSON) until the encoding
/// ends in a partial group, whose last character has spare bits.
fn encode_leaving_spare_bits(value: &Value) -> String {
    let mut text = value.to_string();
    while text.len().is_multiple_of(3) {
        text.push(' ');
    }
    URL_SAFE_NO_PAD.encode(text)
}

/// `segment` with the lowest spare bit of its last character set: the same bytes to a lenient decoder,
/// a different and non-canonical string to a strict one.
fn with_spare_bits_set(segment: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert!(
        !segment.len().is_multiple_of(4),
        "a segment of whole groups has no spare bits"
    );
    let (rest, last) = segment.split_at(segment.len() - 1);
    let value = ALPHABET
        .iter()
        .position(|&c| c == last.as_bytes()[0])
        .unwrap();
    let doctored = format!("{rest}{}", char::from(ALPHABET[value | 1]));
    assert_ne!(
        doctored, segment,
        "a canonical encoding has its spare bits clear"
    );
    assert_eq!(
        LENIENT_BASE64URL.decode(&doctored).unwrap(),
        URL_SAFE_NO_PAD.decode(segment).unwrap(),
        "the doctored segment must mean the same bytes"
    );
    doctored
}

/// `segment` with the `=` padding of standard base64.
fn padded(segment: &str) -> String {
    assert!(
        !segment.len().is_multiple_of(4),
        "a segment of whole groups needs no padding"
    );
    format!("{segment}{}", "=".repeat(4 - segment.len() % 4))
}

/// The modulus of an RSA key, as its JWK publishes it.
fn jwk_modulus(key: &SigningKey) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(key.public_jwk()["n"].as_str().unwrap())
        .unwrap()
}

/// An RSA public key as a DER `SubjectPublicKeyInfo`, the bytes inside its PEM form, rebuilt from its
/// JWK and checked by parsing it back.
fn rsa_public_key_der(key: &SigningKey) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption, NULL }.
    const RSA_ENCRYPTION: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let exponent = URL_SAFE_NO_PAD
        .decode(key.public_jwk()["e"].as_str().unwrap())
        .unwrap();
    let rsa_public_key = der(
        0x30,
        &[der_integer(&jwk_modulus(key)), der_integer(&exponent)].concat(),
    );
    let bit_string = der(0x03, &[&[0_u8][..], &rsa_public_key].concat());
    let spki = der(0x30, &[RSA_ENCRYPTION, &bit_string].concat());
    aws_lc_rs::rsa::PublicEncryptingKey::from_der(&spki)
        .unwrap_or_else(|e| panic!("the rebuilt public key does not parse: {e}"));
    spki
}

/// The PEM text of an RSA public key, as `openssl rsa -pubout` writes it.
fn rsa_public_key_pem(key: &SigningKey) -> String {
    let body = STANDARD.encode(rsa_public_key_der(key));
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

/// One DER element: tag, definite length, content.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut element = vec![tag];
    match u8::try_from(content.len()) {
        Ok(short) if short < 0x80 => element.push(short),
        _ => {
            let length = content.len().to_be_bytes();
            let significant: Vec<u8> = length.into_iter().skip_while(|&byte| byte == 0).collect();
            element.push(0x80 | u8::try_from(significant.len()).unwrap());
            element.extend(significant);
        }
    }
    element.extend_from_slice(content);
    element
}

/// A DER INTEGER holding the unsigned big-endian `magnitude`.
fn der_integer(magnitude: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = magnitude
        .iter()
        .copied()
        .skip_while(|&byte| byte == 0)
        .collect();
    let content = if trimmed.first().is_some_and(|&byte| byte & 0x80 != 0) {
        [&[0_u8][..], &trimmed].concat()
    } else {
        trimmed
    };
    der(0x02, &content)
}

#[tokio::test]
async fn bearer_scheme_in_any_case_with_extra_spaces_is_accepted() {
    let fixture = Fixture::start().await;
    let token = fixture.signed(&fixture.valid_claims());
    // Each form is the text before and after the token.
    let forms = [
        ("Bearer", "Bearer ", ""),
        ("bearer", "bearer ", ""),
        ("BEARER", "BEARER ", ""),
        ("extra spaces around and between", "  Bearer    ", "  "),
        ("a tab between", "Bearer\t", ""),
    ];
    for (case, before, after) in forms {
        let authorization = format!("{before}{token}{after}");
        let answer = fixture
            .app
            .decide(
                json!({ "authorization": authorization, "method": "GET", "path": "/orders/42" }),
            )
            .await;
        check_allowed(case, &answer);
    }
}

#[tokio::test]
async fn tokens_just_inside_the_limits_are_accepted() {
    let fixture = Fixture::start().await;
    let cases: &[(&str, Build)] = &[
        ("iat within the leeway", |f| {
            f.signed(&f.claims_with("iat", json!(f.now + 30)))
        }),
        ("nbf within the leeway", |f| {
            f.signed(&f.claims_with("nbf", json!(f.now + 30)))
        }),
        ("expired within the leeway", |f| {
            f.signed(&f.claims_with("exp", json!(f.now - 29)))
        }),
        ("aud an array holding the audience", |f| {
            f.signed(&f.claims_with("aud", json!(["api://other", AUDIENCE])))
        }),
        ("ES256 by the published EC key", |f| {
            f.ec.sign(&f.valid_claims())
        }),
        ("HS256 by issuer B's own shared secret", |f| {
            hs256(&f.claims_of_b(), "shared", SHARED_SECRET_B.as_bytes())
        }),
        ("token of 7 KiB, under the 8 KiB cap", |f| {
            f.signed(&f.claims_with("padding", json!("p".repeat(5 * 1024))))
        }),
    ];
    for (case, build) in cases {
        let answer = fixture.app.decide_token(&build(&fixture)).await;
        check_allowed(case, &answer);
    }
}

fn check_allowed(case: &str, answer: &Value) {
    assert_eq!(answer["allow"], true, "{case}: {answer}");
    assert_eq!(answer["status"], 200, "{case}: {answer}");
    assert_eq!(answer["error"], "", "{case}: {answer}");
    assert_eq!(answer["subject"], "alice", "{case}: {answer}");
}

/// Without a bearer credential the answer is RFC 6750 §3.1's bare challenge, with no error code; a
/// `Bearer` scheme with nothing after it is a credential, and an empty one.
#[tokio::test]
async fn authorization_without_a_usable_bearer_token() {
    let fixture = Fixture::start().await;
    let no_credential = Unauthorized {
        error: "",
        description: "no bearer token",
        challenge: r#"Bearer realm="api""#,
    };
    let empty_token = Unauthorized {
        error: "invalid_token",
        description: "the bearer token is empty",
        challenge: r#"Bearer realm="api", error="invalid_token", error_description="the bearer token is empty""#,
    };
    let cases = [
        ("no authorization field", None, &no_credential),
        ("an empty authorization", Some(""), &no_credential),
        ("only whitespace", Some("   "), &no_credential),
        ("Basic scheme", Some("Basic dXNlcjpwYXNz"), &no_credential),
        (
            "Digest scheme",
            Some(r#"Digest username="alice""#),
            &no_credential,
        ),
        (
            "scheme run into the token",
            Some("Bearerabc.def.ghi"),
            &no_credential,
        ),
        ("Bearer and a space", Some("Bearer "), &empty_token),
        ("Bearer alone", Some("Bearer"), &empty_token),
        ("bearer and spaces", Some("  bearer    "), &empty_token),
    ];
    for (case, authorization, expected) in cases {
        let mut body = json!({ "method": "GET", "path": "/orders/42" });
        if let Some(authorization) = authorization {
            body["authorization"] = json!(authorization);
        }
        let answer = fixture.app.decide(body).await;
        assert_eq!(answer["allow"], false, "{case}: {answer}");
        assert_eq!(answer["status"], 401, "{case}: {answer}");
        assert_eq!(answer["error"], expected.error, "{case}: {answer}");
        assert_eq!(
            answer["error_description"], expected.description,
            "{case}: {answer}"
        );
        assert_eq!(
            answer["www_authenticate"], expected.challenge,
            "{case}: {answer}"
        );
    }
}

/// What a 401 tells the client: its error code, description and challenge.
struct Unauthorized {
    error: &'static str,
    description: &'static str,
    challenge: &'static str,
}
