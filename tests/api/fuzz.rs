//! Property tests with generated inputs (proptest): the token path, the decide body and the
//! configuration loader never panic nor answer 500; a decide body with a key twice anywhere is a
//! 400; a mutated valid token never allows; and a decision is the same with the verified-token cache as
//! without it.
//!
//! Each property runs a bounded number of cases so that the suite stays quick in a debug build;
//! `PROPTEST_CASES` raises them for a long run (BENCHMARKS.md, "Fuzzing", says how and what they
//! found). The coverage-guided targets of the same properties are in `fuzz/`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestError, TestRunner};
use serde_json::{Map, Value, json};
use verdict::clock::ManualClock;
use verdict::config::{Config, ConfigErrors, PolicyOrigin};
use verdict::credential::TokenCache;
use verdict::demo::signing::{SigningKey, encode_json};
use verdict::fronts::service_callout::{DecideRequest, DecideResponse};

use crate::helpers::{
    AUDIENCE, CALLER_KEY, KeyServer, T0, TestApp, claims, config_yaml, ec_key, example_policies,
    parse_config, parse_config_with, rsa_key,
};

/// A runner for `default_cases` cases, or `PROPTEST_CASES`. Nothing is written to disk; shrinking is
/// bounded so that a failure is reported within seconds, not minutes.
fn runner(default_cases: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default_cases);
    TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        max_shrink_time: 30_000,
        ..ProptestConfig::default()
    })
}

/// Fails the test with proptest's report, which names the minimal failing input.
fn passed<T: Debug>(result: Result<(), TestError<T>>) {
    if let Err(error) = result {
        panic!("{error}");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A service trusting one issuer with an RSA and an EC key, and a token of each that the example
/// policies allow for `GET /orders/42`.
struct Service {
    app: TestApp,
    _server: KeyServer,
    rs256: String,
    es256: String,
}

impl Service {
    async fn start() -> Self {
        let rsa = rsa_key("fuzz-rsa");
        let ec = ec_key("fuzz-ec");
        let server = KeyServer::start(&[rsa, &ec]).await;
        let app = TestApp::start(&config_yaml(&server, "")).await;
        let claims = claims(&server.issuer(), T0);
        let service = Self {
            rs256: rsa.sign(&claims),
            es256: ec.sign(&claims),
            app,
            _server: server,
        };
        for token in [&service.rs256, &service.es256] {
            let decision = service.app.decide_token(token).await;
            assert_eq!(
                decision["allow"],
                json!(true),
                "the unmutated token: {decision}"
            );
        }
        service
    }

    fn token(&self, which: Alg) -> &str {
        match which {
            Alg::Rs256 => &self.rs256,
            Alg::Es256 => &self.es256,
        }
    }

    /// `GET /orders/42` with this `authorization`: the HTTP status, and the decision or error body.
    async fn decide(&self, authorization: &str) -> (StatusCode, Value) {
        let body = json!({ "authorization": authorization, "method": "GET", "path": "/orders/42" });
        self.app.post_decide(body.to_string()).await
    }
}

#[derive(Debug, Clone, Copy)]
enum Alg {
    Rs256,
    Es256,
}

fn any_alg() -> impl Strategy<Value = Alg> {
    prop_oneof![Just(Alg::Rs256), Just(Alg::Es256)]
}

/// An answer a proxy can act on: a decision (HTTP 200, with `allow` and a status it knows) or a
/// callout error below 500 in the error format. Returns whether it allows.
fn check_answer(http: StatusCode, answer: &Value) -> Result<bool, TestCaseError> {
    if http == StatusCode::OK {
        let allow = answer["allow"].as_bool();
        prop_assert!(allow.is_some(), "a 200 that is no decision: {answer}");
        let status = answer["status"].as_u64().unwrap_or_default();
        prop_assert!(
            [200, 400, 401, 403, 503].contains(&status),
            "decision status {status}: {answer}"
        );
        prop_assert_eq!(allow == Some(true), status == 200, "{}", answer);
        Ok(allow == Some(true))
    } else {
        prop_assert!(
            http.is_client_error(),
            "HTTP {http} is neither a decision nor a callout error: {answer}"
        );
        prop_assert!(answer["error"].is_string(), "HTTP {http}: {answer}");
        Ok(false)
    }
}

// ---------------------------------------------------------------------------------------------
// Token mutations.

/// One edit of a compact JWS.
#[derive(Debug, Clone)]
enum Mutation {
    /// XORs a byte of a segment (3: anywhere in the token, dots included) with a non-zero mask.
    Flip {
        segment: usize,
        at: Index,
        mask: u8,
    },
    Insert {
        segment: usize,
        at: Index,
        text: char,
    },
    Delete {
        segment: usize,
        at: Index,
    },
    Replace {
        segment: usize,
        at: Index,
        text: char,
    },
    SwapSegments(usize, usize),
    /// Re-encodes the header with another `alg` and/or `kid`, keeping the payload and signature.
    Header {
        alg: Option<&'static str>,
        kid: Option<Value>,
    },
    /// Changes one claim, keeping the header and signature.
    Claim {
        name: &'static str,
        value: Value,
    },
    /// Replaces an ECDSA signature's `s` with `n - s`: the other signature of the same message.
    HighS,
}

/// Characters a mutation inserts: mostly the base64url alphabet, then the ones a lenient decoder
/// might ignore or map, then anything.
fn any_text() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => select(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                .chars()
                .collect::<Vec<_>>()
        ),
        2 => select(vec!['.', '=', '+', '/', ' ', '\t', '%', '\0', '~']),
        1 => any::<char>(),
    ]
}

fn any_claim_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("bob")),
        Just(json!("admin")),
        Just(json!("orders:read orders:write orders:admin")),
        Just(json!("api://other")),
        Just(json!(["api://orders", "api://other"])),
        Just(json!(null)),
        Just(json!(T0 + 86_400)),
        Just(json!(T0 - 1)),
        Just(json!(1.8e9)),
        Just(json!("https://evil.example")),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ]
}

fn any_mutation() -> impl Strategy<Value = Mutation> {
    let segment = 0..4usize;
    prop_oneof![
        (segment.clone(), any::<Index>(), 1..=255u8)
            .prop_map(|(segment, at, mask)| Mutation::Flip { segment, at, mask }),
        (segment.clone(), any::<Index>(), any_text())
            .prop_map(|(segment, at, text)| Mutation::Insert { segment, at, text }),
        (segment.clone(), any::<Index>())
            .prop_map(|(segment, at)| Mutation::Delete { segment, at }),
        (segment, any::<Index>(), any_text()).prop_map(|(segment, at, text)| Mutation::Replace {
            segment,
            at,
            text
        }),
        (0..3usize, 0..3usize).prop_map(|(a, b)| Mutation::SwapSegments(a, b)),
        (
            proptest::option::of(select(vec![
                "RS256", "ES256", "HS256", "RS384", "RS512", "PS256", "ES384", "EdDSA", "none",
                "None", "rs256", "",
            ])),
            proptest::option::of(prop_oneof![
                Just(json!("fuzz-rsa")),
                Just(json!("fuzz-ec")),
                Just(json!("unknown")),
                Just(json!("")),
                Just(json!(1)),
                Just(json!(null)),
                Just(json!("k".repeat(300))),
            ]),
        )
            .prop_map(|(alg, kid)| Mutation::Header { alg, kid }),
        (
            select(vec![
                "iss", "sub", "aud", "exp", "nbf", "iat", "scope", "tenant", "extra"
            ]),
            any_claim_value()
        )
            .prop_map(|(name, value)| Mutation::Claim { name, value }),
        Just(Mutation::HighS),
    ]
}

/// The order of the P-256 group, big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// `n - s` for a big-endian `s < n`.
fn negate_mod_order(s: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for index in (0..32).rev() {
        let mut digit = i16::from(P256_ORDER[index]) - i16::from(s[index]) - borrow;
        borrow = i16::from(digit < 0);
        if digit < 0 {
            digit += 256;
        }
        out[index] = u8::try_from(digit).unwrap();
    }
    out
}

fn decode_segment(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Applies `mutation` to a compact token.
fn mutate(token: &str, mutation: &Mutation) -> String {
    let mut segments: Vec<Vec<u8>> = token.split('.').map(|s| s.as_bytes().to_vec()).collect();
    let mut whole = token.as_bytes().to_vec();
    let mut edit = |segment: usize, edit: &dyn Fn(&mut Vec<u8>)| {
        if segment < 3 && segments.len() == 3 {
            edit(&mut segments[segment]);
            whole = segments.join(&b'.');
        } else {
            edit(&mut whole);
        }
    };
    match mutation {
        Mutation::Flip { segment, at, mask } => edit(*segment, &|bytes| {
            if !bytes.is_empty() {
                let at = at.index(bytes.len());
                bytes[at] ^= mask;
            }
        }),
        Mutation::Insert { segment, at, text } => edit(*segment, &|bytes| {
            let at = at.index(bytes.len() + 1);
            let mut buffer = [0; 4];
            for (offset, byte) in text.encode_utf8(&mut buffer).bytes().enumerate() {
                bytes.insert(at + offset, byte);
            }
        }),
        Mutation::Delete { segment, at } => edit(*segment, &|bytes| {
            if !bytes.is_empty() {
                bytes.remove(at.index(bytes.len()));
            }
        }),
        Mutation::Replace { segment, at, text } => edit(*segment, &|bytes| {
            if !bytes.is_empty() {
                let at = at.index(bytes.len());
                let mut buffer = [0; 4];
                bytes.splice(at..=at, text.encode_utf8(&mut buffer).bytes());
            }
        }),
        Mutation::SwapSegments(a, b) => {
            if segments.len() == 3 {
                segments.swap(*a, *b);
                whole = segments.join(&b'.');
            }
        }
        Mutation::Header { alg, kid } => {
            let text = String::from_utf8_lossy(&whole).into_owned();
            let parts: Vec<&str> = text.split('.').collect();
            if let [header, payload, signature] = parts[..]
                && let Some(mut header) = decode_segment(header)
            {
                if let Some(alg) = alg {
                    header.insert("alg".into(), json!(alg));
                }
                if let Some(kid) = kid {
                    header.insert("kid".into(), kid.clone());
                }
                whole = format!(
                    "{}.{payload}.{signature}",
                    encode_json(&Value::Object(header))
                )
                .into_bytes();
            }
        }
        Mutation::Claim { name, value } => {
            let text = String::from_utf8_lossy(&whole).into_owned();
            let parts: Vec<&str> = text.split('.').collect();
            if let [header, payload, signature] = parts[..]
                && let Some(mut claims) = decode_segment(payload)
            {
                claims.insert((*name).into(), value.clone());
                whole = format!(
                    "{header}.{}.{signature}",
                    encode_json(&Value::Object(claims))
                )
                .into_bytes();
            }
        }
        Mutation::HighS => {
            if let Some(signature) = segments.get(2)
                && let Ok(signature) = URL_SAFE_NO_PAD.decode(signature)
                && signature.len() == 64
            {
                let (r, s) = signature.split_at(32);
                let twin = [r, &negate_mod_order(s)].concat();
                segments[2] = URL_SAFE_NO_PAD.encode(twin).into_bytes();
                whole = segments.join(&b'.');
            }
        }
    }
    String::from_utf8_lossy(&whole).into_owned()
}

/// Whether `mutated` must verify as `original` does: the same text once the spaces and tabs around
/// it are cut (the `Authorization` header's optional whitespace, DESIGN §3), or for ES256 the same
/// signature with `s` replaced by `n - s`. ECDSA accepts both signatures of a message, and neither
/// RFC 7518 nor aws-lc asks for the low one, so the twin of a valid ES256 token is valid too
/// (BENCHMARKS.md, "Fuzzing", findings); it is the only such twin, since canonical base64url has no
/// other.
fn equivalent(original: &str, mutated: &str) -> bool {
    let token = mutated.trim_matches([' ', '\t']);
    token == original || token == mutate(original, &Mutation::HighS)
}

#[test]
fn a_mutated_valid_token_never_allows() {
    let runtime = runtime();
    let service = runtime.block_on(Service::start());
    let strategy = (any_alg(), proptest::collection::vec(any_mutation(), 1..4));
    passed(runner(1024).run(&strategy, |(alg, mutations)| {
        let original = service.token(alg);
        let mutated = mutations
            .iter()
            .fold(original.to_owned(), |token, mutation| {
                mutate(&token, mutation)
            });
        let (http, answer) = runtime.block_on(service.decide(&format!("Bearer {mutated}")));
        let allowed = check_answer(http, &answer)?;
        prop_assert!(
            !allowed || equivalent(original, &mutated),
            "a mutated token was allowed: {mutated}\n{answer}"
        );
        Ok(())
    }));
}

#[test]
fn no_authorization_value_panics_or_answers_500() {
    let runtime = runtime();
    let service = runtime.block_on(Service::start());
    let text = prop_oneof![
        any::<String>(),
        "[Bb][Ee][Aa][Rr][Ee][Rr][ \t]{0,3}[A-Za-z0-9._~+/=-]{0,400}",
        "Bearer [A-Za-z0-9_-]{1,40}\\.[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,40}(\\.[A-Za-z0-9_-]{0,8}){0,3}",
        (0..20_000usize).prop_map(|length| format!("Bearer {}", "a.".repeat(length / 2))),
    ];
    let strategy = prop_oneof![
        text.prop_map(Authorization::Text),
        (any_alg(), proptest::collection::vec(any_mutation(), 1..8))
            .prop_map(|(alg, mutations)| Authorization::Mutated(alg, mutations)),
    ];
    passed(runner(1024).run(&strategy, |authorization| {
        let (text, original) = match &authorization {
            Authorization::Text(text) => (text.clone(), None),
            Authorization::Mutated(alg, mutations) => {
                let original = service.token(*alg);
                let mutated = mutations
                    .iter()
                    .fold(original.to_owned(), |token, mutation| {
                        mutate(&token, mutation)
                    });
                (format!("Bearer {mutated}"), Some(original))
            }
        };
        let (http, answer) = runtime.block_on(service.decide(&text));
        let allowed = check_answer(http, &answer)?;
        prop_assert!(
            !allowed
                || original.is_some_and(|original| text
                    .strip_prefix("Bearer ")
                    .is_some_and(|mutated| equivalent(original, mutated))),
            "allowed: {text}\n{answer}"
        );
        Ok(())
    }));
}

#[derive(Debug, Clone)]
enum Authorization {
    Text(String),
    Mutated(Alg, Vec<Mutation>),
}

// ---------------------------------------------------------------------------------------------
// Decide bodies and configuration text: generated JSON-ish trees, rendered by hand so that they can
// hold duplicate keys, raw escapes and numbers serde_json would never write.

/// A JSON-ish value.
#[derive(Debug, Clone)]
enum Tree {
    Null,
    Bool(bool),
    /// Number text, written as is.
    Number(String),
    Text(String),
    /// Written between quotes without escaping: bad escapes, lone surrogates, control characters.
    RawText(String),
    Array(Vec<Tree>),
    /// Keys may repeat.
    Object(Vec<(String, Tree)>),
}

impl Tree {
    fn render(&self, out: &mut String) {
        match self {
            Self::Null => out.push_str("null"),
            Self::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
            Self::Number(text) => out.push_str(text),
            Self::Text(text) => out.push_str(&Value::from(text.as_str()).to_string()),
            Self::RawText(text) => {
                out.push('"');
                out.push_str(text);
                out.push('"');
            }
            Self::Array(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    item.render(out);
                }
                out.push(']');
            }
            Self::Object(fields) => {
                out.push('{');
                for (index, (key, value)) in fields.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::from(key.as_str()).to_string());
                    out.push(':');
                    value.render(out);
                }
                out.push('}');
            }
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        self.render(&mut out);
        out
    }
}

fn any_number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |n| n.is_finite())
            .prop_map(|n| n.to_string()),
        select(vec![
            "1e999",
            "-0",
            "1.5e-400",
            "18446744073709551616",
            "1800000000",
            "01",
            "1.",
            "+1",
            "0x10",
            "NaN",
            "-",
        ])
        .prop_map(str::to_owned),
    ]
}

/// Strings that mean something somewhere: methods, paths, addresses, durations, URLs, `${ENV}`.
fn meaningful_string(token: String) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vec![
            "", " ", "GET", "get", "DELETE", "G E T", "/orders/42", "/", "orders", "/orders/%2e%2e/admin",
            "/a/../b", "/%61dmin", "/orders/42;x=..", "/a\u{0}b", "Bearer ", "Basic abc", "10.0.0.1",
            "::ffff:10.0.0.1", "999.1.1.1", "fe80::1%eth0", "\u{feff}", "é", "\u{10ffff}", "30s",
            "-1s", "0s", "99999999999999h", "1h30m", "${VERDICT_CALLER_KEY}", "${MISSING}", "${",
            "$${X}", "https://idp.example.com", "http://127.0.0.1:1/jwks.json", "RS256", "HS256",
            "none", "off", "stdout", "127.0.0.1:0", "0.0.0.0:99999", "[::1]:8080",
        ])
        .prop_map(str::to_owned),
        1 => Just(format!("Bearer {token}")),
        2 => any::<String>(),
        1 => (0..70_000usize).prop_map(|length| "x".repeat(length)),
    ]
}

fn any_tree(keys: Vec<&'static str>, token: String) -> BoxedStrategy<Tree> {
    let leaf = prop_oneof![
        Just(Tree::Null),
        any::<bool>().prop_map(Tree::Bool),
        any_number().prop_map(Tree::Number),
        meaningful_string(token).prop_map(Tree::Text),
        select(vec![
            "\\ud800",
            "\\u0000",
            "\\x41",
            "\\",
            "a\nb",
            "\t",
            "\\uDFFF\\uD800",
            "\\u12",
        ])
        .prop_map(|text| Tree::RawText(text.to_owned())),
    ];
    let key = prop_oneof![
        4 => select(keys).prop_map(str::to_owned),
        1 => any::<String>(),
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Tree::Array),
            proptest::collection::vec((key.clone(), inner), 0..8).prop_map(Tree::Object),
        ]
    })
    .boxed()
}

/// Edits of text: a character inserted, deleted or replaced somewhere.
fn mutate_text(text: &str, edits: &[(u8, Index, char)]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for (operation, at, character) in edits {
        match operation % 3 {
            0 => chars.insert(at.index(chars.len() + 1), *character),
            1 if !chars.is_empty() => {
                chars.remove(at.index(chars.len()));
            }
            _ if !chars.is_empty() => {
                let at = at.index(chars.len());
                chars[at] = *character;
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

fn any_edits() -> impl Strategy<Value = Vec<(u8, Index, char)>> {
    let character = prop_oneof![
        3 => select(":-[]{}#&*!|>'\"%@,. \n\t$0aZ".chars().collect::<Vec<_>>()),
        1 => any::<char>(),
    ];
    proptest::collection::vec((any::<u8>(), any::<Index>(), character), 1..8)
}

const DECIDE_FIELDS: &[&str] = &[
    "authorization",
    "api_key",
    "method",
    "path",
    "host",
    "query",
    "client_ip",
    "headers",
    "apigee",
    "message_id",
    "proxy",
    "environment",
    "organization",
    "product",
    "app",
    "developer",
    "authorisation",
    "x-tenant",
];

#[derive(Debug, Clone)]
enum Body {
    /// A generated object, after the fields that reach the engine when they are well typed.
    Generated {
        complete: bool,
        tree: Tree,
    },
    /// A rendered body with text edits.
    Edited {
        tree: Tree,
        edits: Vec<(u8, Index, char)>,
    },
    Bytes(Vec<u8>),
}

#[test]
fn no_decide_body_panics_answers_500_or_is_decided_with_a_key_twice() {
    let runtime = runtime();
    let service = runtime.block_on(Service::start());
    let token = service.rs256.clone();
    let tree = any_tree(DECIDE_FIELDS.to_vec(), token.clone());
    let strategy = prop_oneof![
        3 => (any::<bool>(), tree.clone())
            .prop_map(|(complete, tree)| Body::Generated { complete, tree }),
        1 => (tree, any_edits()).prop_map(|(tree, edits)| Body::Edited { tree, edits }),
        1 => proptest::collection::vec(any::<u8>(), 0..512).prop_map(Body::Bytes),
    ];
    passed(runner(1024).run(&strategy, |body| {
        let bytes = match &body {
            Body::Generated { complete, tree } => {
                let mut fields = Vec::new();
                if *complete {
                    fields.push((
                        "authorization".to_owned(),
                        Tree::Text(format!("Bearer {token}")),
                    ));
                    fields.push(("method".to_owned(), Tree::Text("GET".into())));
                    fields.push(("path".to_owned(), Tree::Text("/orders/42".into())));
                }
                match tree {
                    Tree::Object(more) => fields.extend(more.iter().cloned()),
                    other => fields.push(("headers".to_owned(), other.clone())),
                }
                Tree::Object(fields).text().into_bytes()
            }
            Body::Edited { tree, edits } => mutate_text(&tree.text(), edits).into_bytes(),
            Body::Bytes(bytes) => bytes.clone(),
        };
        let (http, answer) = runtime.block_on(service.app.post_decide(bytes.clone()));
        let allowed = check_answer(http, &answer)?;
        prop_assert!(
            !allowed || String::from_utf8_lossy(&bytes).contains(token.as_str()),
            "allowed without the valid token: {answer}"
        );
        // The typed parse refuses a key twice as it reads (DESIGN §2), so such a body is never
        // decided (a 400, or a 413 when it is also too large); the generic pass that checks
        // remote documents is the oracle.
        if verdict::strict_json::check_unique_keys(&bytes)
            .is_err_and(|error| error.to_string().contains("duplicate key"))
        {
            prop_assert!(
                http.is_client_error(),
                "a body with a key twice was decided: {}",
                answer
            );
        }
        Ok(())
    }));
}

/// A JSON object written by hand as (key, rendered value) pairs, so that a key can repeat.
fn render_object(fields: &[(String, String)]) -> String {
    let fields: Vec<String> = fields
        .iter()
        .map(|(key, value)| format!("\"{key}\":{value}"))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// A body the example policies allow with one of its keys written twice: at the top, in `headers`
/// or in `apigee`, before or after the first, its name plain or with an escape (`\u0070ath` is
/// `path`), holding the same value or another. Which copy wins differs between parsers, so the
/// body is refused whatever the copy holds (DESIGN §2).
#[test]
fn a_decide_body_with_a_key_twice_anywhere_is_refused() {
    let runtime = runtime();
    let service = runtime.block_on(Service::start());
    let text = |value: &str| Value::from(value).to_string();
    let pairs = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.clone()))
            .collect()
    };
    let headers = pairs(&[("x-debug", text("1")), ("x-tenant", text("acme"))]);
    let apigee = pairs(&[("proxy", text("orders")), ("product", text("gold"))]);
    let top = pairs(&[
        ("authorization", text(&format!("Bearer {}", service.rs256))),
        ("method", text("GET")),
        ("path", text("/orders/42")),
        ("host", text("api.example.com")),
        ("headers", render_object(&headers)),
        ("apigee", render_object(&apigee)),
    ]);
    let allowed = render_object(&top);
    let (http, answer) = runtime.block_on(service.app.post_decide(allowed));
    assert!(
        http == StatusCode::OK && answer["allow"] == true,
        "the body without a repeated key must be allowed: {answer}"
    );

    let strategy = (
        0..3usize,
        any::<Index>(),
        any::<Index>(),
        any::<bool>(),
        any::<bool>(),
    );
    passed(
        runner(256).run(&strategy, |(object, which, at, escaped, same)| {
            let fields = [&top, &headers, &apigee][object];
            let (key, value) = fields[which.index(fields.len())].clone();
            let key = if escaped {
                let first = key.chars().next().unwrap_or('a');
                format!("\\u{:04x}{}", u32::from(first), &key[first.len_utf8()..])
            } else {
                key
            };
            let value = match (same, value.starts_with('{')) {
                (true, _) => value,
                (false, true) => "{}".to_owned(),
                (false, false) => text("/admin"),
            };
            let mut fields = fields.clone();
            fields.insert(at.index(fields.len() + 1), (key, value));
            let body = match object {
                0 => render_object(&fields),
                _ => {
                    let name = if object == 1 { "headers" } else { "apigee" };
                    let mut top = top.clone();
                    for (key, value) in &mut top {
                        if key == name {
                            *value = render_object(&fields);
                        }
                    }
                    render_object(&top)
                }
            };
            let (http, answer) = runtime.block_on(service.app.post_decide(body.clone()));
            prop_assert_eq!(http, StatusCode::BAD_REQUEST, "{}\n{}", body, answer);
            let description = answer["error_description"].as_str().unwrap_or_default();
            prop_assert!(description.contains("duplicate"), "{}\n{}", body, answer);
            Ok(())
        }),
    );
}

const CONFIG_KEYS: &[&str] = &[
    "listen",
    "admin_listen",
    "callers",
    "issuers",
    "policies",
    "headers",
    "cache",
    "limits",
    "realm",
    "reload",
    "api_keys",
    "tls",
    "decision_log",
    "log",
    "tracing",
    "shutdown",
    "name",
    "issuer",
    "audiences",
    "jwks_uri",
    "discovery",
    "algorithms",
    "leeway",
    "max_token_age",
    "required_typ",
    "claims",
    "subject",
    "scope",
    "roles",
    "tenant",
    "client_id",
    "shared_secret",
    "jwks_refresh",
    "default_interval",
    "min_interval",
    "max_interval",
    "unknown_kid_cooldown",
    "max_staleness",
    "introspection",
    "url",
    "client_secret",
    "auth_method",
    "token_prefix",
    "default",
    "keys",
    "header",
    "mtls",
    "ca",
    "allowed_subjects",
    "google_id_token",
    "audience",
    "emails",
    "allow_unauthenticated",
    "max_tokens",
    "decision_ttl",
    "max_token_bytes",
    "max_body_bytes",
    "max_header_bytes",
    "request_timeout",
    "max_concurrent_requests",
    "watch",
    "interval",
    "format",
    "level",
    "grace_period",
    "path",
    "schema",
    "id",
    "hash",
    "expires",
    "cert",
    "key",
    "file",
    "otlp_endpoint",
    "service_name",
];

/// A configuration like the tests', whose key server need not exist: nothing here fetches.
fn test_config_text() -> String {
    r#"
listen: 127.0.0.1:0
callers:
  api_keys:
    keys: ["test-caller-key-0123456789"]
issuers:
  - name: test
    issuer: "http://127.0.0.1:1"
    audiences: ["api://orders"]
    jwks_uri: "http://127.0.0.1:1/jwks.json"
    leeway: 30s
    max_token_age: 1h
    claims: { tenant: tenant }
    jwks_refresh: { default_interval: 5m, min_interval: 1m, max_interval: 1h, unknown_kid_cooldown: 30s, max_staleness: 2h }
headers:
  x-user-id: sub
  x-tenant: tenant
cache:
  decision_ttl: 60s
"#
    .to_owned()
}

#[derive(Debug, Clone)]
enum ConfigText {
    Text(String),
    /// `examples/verdict.yaml` (0) or the test configuration (1), edited.
    Edited {
        seed: usize,
        edits: Vec<(u8, Index, char)>,
    },
    /// A generated structure with the configuration's keys, written as JSON, which is YAML.
    Shaped(Tree),
}

#[test]
fn no_configuration_text_panics() {
    let seeds = [
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/verdict.yaml"),
        )
        .unwrap(),
        test_config_text(),
    ];
    let policies = example_policies();
    let environment = HashMap::from([
        ("VERDICT_CALLER_KEY".to_owned(), CALLER_KEY.to_owned()),
        ("X".to_owned(), "${Y}".to_owned()),
        ("EMPTY".to_owned(), String::new()),
        ("NEWLINE".to_owned(), "a\nkeys: [b]".to_owned()),
    ]);
    let parse = |text: &str| -> Result<Config, ConfigErrors> {
        Config::parse(
            text,
            Path::new(env!("CARGO_MANIFEST_DIR")),
            &environment,
            PolicyOrigin::Embedded(policies.clone()),
        )
    };
    for seed in &seeds {
        assert!(parse(seed).is_ok(), "the seeds are valid");
    }
    let strategy = prop_oneof![
        1 => any::<String>().prop_map(ConfigText::Text),
        1 => "[a-z_:\\-\\[\\]{}#&*!|>'\"%@,. \n\t$0-9]{0,200}".prop_map(ConfigText::Text),
        3 => (0..2usize, any_edits()).prop_map(|(seed, edits)| ConfigText::Edited { seed, edits }),
        3 => any_tree(CONFIG_KEYS.to_vec(), String::new()).prop_map(ConfigText::Shaped),
    ];
    passed(runner(512).run(&strategy, |config| {
        let text = match &config {
            ConfigText::Text(text) => text.clone(),
            ConfigText::Edited { seed, edits } => mutate_text(&seeds[*seed], edits),
            ConfigText::Shaped(tree) => tree.text(),
        };
        if let Err(errors) = parse(&text) {
            prop_assert!(!errors.0.is_empty(), "refused without an error");
            for error in &errors.0 {
                prop_assert!(
                    !error.message.is_empty(),
                    "an empty message at `{}`",
                    error.path
                );
            }
        }
        Ok(())
    }));
}

// ---------------------------------------------------------------------------------------------
// Cache equivalence.

/// A token of the pool the cache property draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Pooled {
    Valid,
    /// `exp` 40 s after the start: inside the 30 s leeway until 70 s.
    ExpiresSoon,
    /// `nbf` 100 s after the start.
    NotYetValid,
    WrongAudience,
    /// Issued 3500 s before the start: past `max_token_age` (1 h, plus leeway) after 130 s.
    NearlyTooOld,
    /// Signed by the EC key that a rotation replaces under the same `kid`.
    RotatedOut,
    /// Signed by the EC key that a rotation publishes under that `kid`.
    RotatedIn,
}

const POOL: [Pooled; 7] = [
    Pooled::Valid,
    Pooled::ExpiresSoon,
    Pooled::NotYetValid,
    Pooled::WrongAudience,
    Pooled::NearlyTooOld,
    Pooled::RotatedOut,
    Pooled::RotatedIn,
];

#[derive(Debug, Clone, Copy)]
enum Route {
    GetOrder,
    DeleteOrder,
    GetAdmin,
}

#[derive(Debug, Clone)]
enum Step {
    Decide(Pooled, Route),
    Advance(u64),
    /// The key server publishes the new EC key under the rotating `kid`; both services refresh.
    RotateKey,
}

fn any_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (select(POOL.to_vec()), select(vec![Route::GetOrder, Route::DeleteOrder, Route::GetAdmin]))
            .prop_map(|(token, route)| Step::Decide(token, route)),
        3 => prop_oneof![
            4 => select(vec![1u64, 29, 31, 41, 61, 71, 101, 131, 301, 601, 3_601]),
            1 => 0..4_000u64,
        ]
        .prop_map(Step::Advance),
        1 => Just(Step::RotateKey),
    ]
}

/// A token of each kind of [`POOL`] for `issuer`, signed by `rsa`, or by the EC key a rotation removes
/// or publishes.
fn pooled_tokens(
    issuer: &str,
    rsa: &SigningKey,
    rotated_out: &SigningKey,
    rotated_in: &SigningKey,
) -> HashMap<Pooled, String> {
    let token = |pooled: Pooled| {
        let mut claims = claims(issuer, T0);
        match pooled {
            Pooled::ExpiresSoon => claims["exp"] = json!(T0 + 40),
            Pooled::NotYetValid => claims["nbf"] = json!(T0 + 100),
            Pooled::WrongAudience => claims["aud"] = json!(format!("{AUDIENCE}-other")),
            Pooled::NearlyTooOld => claims["iat"] = json!(T0 - 3_500),
            Pooled::Valid | Pooled::RotatedOut | Pooled::RotatedIn => {}
        }
        match pooled {
            Pooled::RotatedOut => rotated_out.sign(&claims),
            Pooled::RotatedIn => rotated_in.sign(&claims),
            _ => rsa.sign(&claims),
        }
    };
    POOL.iter().map(|&pooled| (pooled, token(pooled))).collect()
}

/// The key server publishes `keys`, and both services refresh their key sets.
async fn rotate(server: &KeyServer, keys: &[&SigningKey], apps: [&TestApp; 2]) {
    server.publish(keys, None);
    for app in apps {
        for keys in app.state.current().key_sets() {
            keys.refresh().await.unwrap();
        }
    }
}

/// A decision without its id, which is unique to each.
fn comparable(mut decision: Value) -> Value {
    if let Some(fields) = decision.as_object_mut() {
        fields.remove("decision_id");
    }
    decision
}

/// DESIGN §3: a cache hit is exactly as strict as a fresh verification. Two services on one clock and
/// one key server decide the same generated sequence; one of them forgets the token before each
/// decision, so it verifies afresh every time.
#[test]
fn a_decision_is_the_same_with_and_without_the_token_cache() {
    let runtime = runtime();
    let rsa = rsa_key("fuzz-cache-rsa");
    let rotated_out = ec_key("fuzz-cache-rotating");
    let rotated_in = ec_key("fuzz-cache-rotating");
    let server = runtime.block_on(KeyServer::start(&[rsa, &rotated_out]));
    let yaml = config_yaml(&server, "    max_token_age: 1h");
    let tokens = pooled_tokens(&server.issuer(), rsa, &rotated_out, &rotated_in);
    let strategy = proptest::collection::vec(any_step(), 1..24);
    passed(runner(64).run(&strategy, |steps| {
        runtime.block_on(async {
            server.publish(&[rsa, &rotated_out], None);
            let clock = ManualClock::starting_at(T0);
            let cached = TestApp::on_clock(parse_config(&yaml), clock.clone())
                .with_keys_loaded()
                .await;
            let fresh = TestApp::on_clock(parse_config(&yaml), clock.clone())
                .with_keys_loaded()
                .await;
            for (index, step) in steps.iter().enumerate() {
                match step {
                    Step::Decide(pooled, route) => {
                        let token = &tokens[pooled];
                        let (method, path) = match route {
                            Route::GetOrder => ("GET", "/orders/42"),
                            Route::DeleteOrder => ("DELETE", "/orders/42"),
                            Route::GetAdmin => ("GET", "/admin/users"),
                        };
                        let body = json!({ "authorization": format!("Bearer {token}"), "method": method, "path": path });
                        fresh
                            .state
                            .current()
                            .engine
                            .verifier()
                            .cache()
                            .remove(&TokenCache::hash(token));
                        let with_cache = comparable(cached.decide(body.clone()).await);
                        let without_cache = comparable(fresh.decide(body).await);
                        prop_assert_eq!(
                            &with_cache,
                            &without_cache,
                            "step {} of {:?}: with the cache (left), without (right)",
                            index,
                            steps
                        );
                    }
                    Step::Advance(seconds) => clock.advance(Duration::from_secs(*seconds)),
                    Step::RotateKey => rotate(&server, &[rsa, &rotated_in], [&cached, &fresh]).await,
                }
            }
            Ok(())
        })
    }));
}

/// Policies beside the example ones that read every request field a memo key may take or leave out:
/// one header (and not another), the host, the query, the client address and the Apigee product; and
/// the path only by tests against constants, which the memo keys on in its place (one of them on a
/// claim the tokens lack, so that it errs, and only in the `admin` slice).
const FIELD_POLICIES: &str = r#"
@id("tenant-header-mismatch")
forbid (principal, action, resource)
when { context.headers has "x-tenant" && context.headers["x-tenant"] != principal.tenant };

@id("blocked-host")
forbid (principal, action, resource) when { resource.host == "blocked.example" };

@id("no-debug-writes")
forbid (principal, action in [Action::"POST", Action::"DELETE"], resource)
when { context.query like "*debug=1*" };

@id("internal-admin")
permit (principal, action == Action::"GET", resource)
when { resource.path like "/admin*" && context has client_ip
       && context.client_ip.isInRange(ip("10.0.0.0/8")) };

@id("free-plan-read-only")
forbid (principal, action == Action::"POST", resource) when { resource.apigee.product == "free" };

@id("health")
permit (principal, action == Action::"GET", resource) when { resource.path == "/health" };

@id("status")
permit (principal, action, resource == Route::"/status");

@id("no-item-writes-for-globex")
forbid (principal, action == Action::"POST", resource)
when { resource.path like "/orders/*/items*" && context.headers["x-tenant"] == "globex" };

@id("admin-pages-need-a-level")
forbid (principal, action, resource)
when { principal.claims.level < 2 && resource.path like "/admin/*" };
"#;

/// The paths of the memo property: some the policies tell apart only by a test on their later
/// segments (`/health`, `/health/live`), some that pass the same tests and differ only in the slice
/// of policies they pick (`/admin`, `/adminx`), and some the policies cannot tell apart at all
/// (`/orders/42`, `/orders/7`).
const PATHS: [&str; 15] = [
    "/orders/42",
    "/orders/7",
    "/orders",
    "/ordersx",
    "/admin/users",
    "/admin",
    "/adminx",
    "/orders/%7E1",
    "/orders/42/items/1",
    "/orders/7/items",
    "/health",
    "/health/live",
    "/status",
    "/status/x",
    "/",
];

/// One request of the memo property: each field from a few values, so that inputs recur.
fn any_request() -> impl Strategy<Value = Value> {
    let optional = |values: &'static [&'static str]| {
        select(values.to_vec()).prop_map(|value| (!value.is_empty()).then_some(value))
    };
    (
        select(vec!["GET", "POST", "DELETE"]),
        select(PATHS.to_vec()),
        select(vec!["api.example.com", "blocked.example"]),
        select(vec!["", "debug=1", "a=b"]),
        optional(&["", "10.1.2.3", "192.0.2.1", "::ffff:10.9.9.9"]),
        optional(&["", "acme", "globex"]),
        optional(&["", "1", "2"]),
        select(vec!["", "free", "gold"]),
    )
        .prop_map(|(method, path, host, query, ip, tenant, other, product)| {
            let mut headers = Map::new();
            if let Some(tenant) = tenant {
                headers.insert("x-tenant".into(), json!(tenant));
            }
            if let Some(other) = other {
                headers.insert("x-other".into(), json!(other));
            }
            json!({ "method": method, "path": path, "host": host, "query": query,
                    "client_ip": ip.unwrap_or_default(), "headers": headers,
                    "apigee": { "product": product } })
        })
}

/// The request fields [`any_request`] varies.
const REQUEST_FIELDS: [&str; 7] = [
    "method",
    "path",
    "host",
    "query",
    "client_ip",
    "headers",
    "apigee",
];

#[derive(Debug, Clone)]
enum MemoStep {
    /// Decides the request, then the request with one field taken from the other, in turn, twice: a
    /// field the memo keys on wrongly shows as the neighbour's decision.
    Decide(Pooled, Value, usize, Value),
    /// Decides the request on each of [`PATHS`] in turn, twice: a path the memo takes for another
    /// shows as the other's decision.
    Sweep(Pooled, Value),
    Advance(u64),
    RotateKey,
}

/// DESIGN §10: the decision memo has no visible effect. Two services on one clock and one key server
/// decide the same generated sequence of requests, with policies that read some fields and not others;
/// one of them has no memo (`cache.max_decisions: 0`).
#[test]
fn a_decision_is_the_same_with_and_without_the_decision_memo() {
    let runtime = runtime();
    let rsa = rsa_key("fuzz-memo-rsa");
    let rotated_out = ec_key("fuzz-memo-rotating");
    let rotated_in = ec_key("fuzz-memo-rotating");
    let server = runtime.block_on(KeyServer::start(&[rsa, &rotated_out]));
    let yaml = config_yaml(&server, "    max_token_age: 1h");
    let without_memo = yaml.replace("cache:\n", "cache:\n  max_decisions: 0\n");
    assert_ne!(yaml, without_memo);
    let mut policies = example_policies();
    policies.push(verdict::policy::PolicyFile {
        name: "fields.cedar".into(),
        text: FIELD_POLICIES.into(),
    });
    let tokens = pooled_tokens(&server.issuer(), rsa, &rotated_out, &rotated_in);
    let step = prop_oneof![
        8 => (select(POOL.to_vec()), any_request(), 0..REQUEST_FIELDS.len(), any_request())
            .prop_map(|(token, request, field, other)| MemoStep::Decide(token, request, field, other)),
        1 => (select(POOL.to_vec()), any_request())
            .prop_map(|(token, request)| MemoStep::Sweep(token, request)),
        2 => select(vec![1u64, 31, 41, 71, 131, 601]).prop_map(MemoStep::Advance),
        1 => Just(MemoStep::RotateKey),
    ];
    let strategy = proptest::collection::vec(step, 1..32);
    let memo_hits = AtomicUsize::new(0);
    passed(runner(64).run(&strategy, |steps| {
        runtime.block_on(async {
            server.publish(&[rsa, &rotated_out], None);
            let clock = ManualClock::starting_at(T0);
            let app = |yaml: &str| {
                let config = parse_config_with(yaml, policies.clone());
                TestApp::on_clock(config, clock.clone()).with_keys_loaded()
            };
            let memo = app(&yaml).await;
            let plain = app(&without_memo).await;
            let decide_both = async |body: &Value, index: usize| {
                let input = || {
                    serde_json::from_value::<DecideRequest>(body.clone())
                        .unwrap()
                        .into_input()
                        .unwrap()
                };
                let with_memo = memo.state.current().engine.decide(&input()).await;
                let without = plain.state.current().engine.decide(&input()).await;
                prop_assert!(!without.trace.memo_hit);
                memo_hits.fetch_add(usize::from(with_memo.trace.memo_hit), Ordering::Relaxed);
                prop_assert_eq!(
                    (answer(&with_memo), &with_memo.trace.policy_errors),
                    (answer(&without), &without.trace.policy_errors),
                    "step {} of {:?}: with the memo (left), without (right)",
                    index,
                    steps
                );
                Ok(())
            };
            for (index, step) in steps.iter().enumerate() {
                match step {
                    MemoStep::Decide(pooled, request, field, other) => {
                        let mut body = request.clone();
                        body["authorization"] = json!(format!("Bearer {}", tokens[pooled]));
                        let mut neighbour = body.clone();
                        let field = REQUEST_FIELDS[*field];
                        neighbour[field] = other[field].clone();
                        for body in [&body, &neighbour, &body, &neighbour] {
                            decide_both(body, index).await?;
                        }
                    }
                    MemoStep::Sweep(pooled, request) => {
                        let mut body = request.clone();
                        body["authorization"] = json!(format!("Bearer {}", tokens[pooled]));
                        for path in PATHS.iter().chain(&PATHS) {
                            body["path"] = json!(path);
                            decide_both(&body, index).await?;
                        }
                    }
                    MemoStep::Advance(seconds) => clock.advance(Duration::from_secs(*seconds)),
                    MemoStep::RotateKey => {
                        rotate(&server, &[rsa, &rotated_in], [&memo, &plain]).await
                    }
                }
            }
            Ok(())
        })
    }));
    assert!(
        memo_hits.load(Ordering::Relaxed) > 0,
        "the memo never answered: the property compared nothing"
    );
}

/// A decision as the front answers it, less its id.
fn answer(decision: &verdict::decision::Decision) -> Value {
    comparable(serde_json::to_value(DecideResponse::from(decision)).unwrap())
}
