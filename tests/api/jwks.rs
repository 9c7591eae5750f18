//! Key lifecycle against a real JWKS server on loopback that counts its hits, with time moved by a
//! manual clock: loading, `Cache-Control` refresh, unknown-`kid` cooldown and coalescing, failures that
//! must not evict good keys, the staleness budget, and discovery.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinSet;

use verdict::demo::signing::SigningKey;

use crate::helpers::{JwksAnswer, KeyServer, T0, TestApp, claims, config_yaml, ec_key, rsa_key};

const REFRESH: &str = "    jwks_refresh: { default_interval: 5m, min_interval: 1m, max_interval: 1h, unknown_kid_cooldown: 30s, max_staleness: 2h }";

/// A token from `key` for `issuer`, unique per `sub` so that it never hits the verified-token cache.
fn token(key: &verdict::demo::signing::SigningKey, issuer: &str, now: u64, sub: &str) -> String {
    let mut claims = claims(issuer, now);
    claims["sub"] = json!(sub);
    claims["exp"] = json!(now + 24 * 3600);
    key.sign(&claims)
}

fn allowed(decision: &Value) -> bool {
    decision["allow"] == json!(true)
}

async fn refresh_if_due(app: &TestApp) {
    for keys in app.state.current().engine.verifier().key_sets() {
        keys.refresh_if_due().await;
    }
}

#[tokio::test]
async fn keys_load_at_start_and_readiness_waits_for_them() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let app = TestApp::start_without_keys(&config_yaml(&server, REFRESH));

    let (status, body) = app.readyz().await;
    assert_eq!(status, 503, "not ready before the keys load: {body}");
    assert_eq!(body["issuers"][0]["ready"], json!(false));

    refresh_if_due(&app).await;
    assert_eq!(server.jwks_hits(), 1);
    let (status, body) = app.readyz().await;
    assert_eq!(status, 200, "ready once loaded: {body}");
    assert_eq!(body["issuers"][0]["keys"], json!(1));
    assert!(
        body["config_revision"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn an_issuer_whose_keys_never_loaded_gets_temporarily_unavailable() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    server.answer(JwksAnswer::Status(500));
    let app = TestApp::start_without_keys(&config_yaml(&server, REFRESH));

    let decision = app
        .decide_token(&token(key, &server.issuer(), T0, "alice"))
        .await;
    assert_eq!(
        (decision["status"].clone(), decision["error"].clone()),
        (json!(503), json!("temporarily_unavailable"))
    );
    assert!(!allowed(&decision));
}

#[tokio::test]
async fn refresh_honours_max_age_clamped_to_the_configured_bounds() {
    let key = rsa_key("k1");
    // (max-age the server sends, the interval Verdict must use): within bounds, under the minimum,
    // over the maximum, and absent (the default).
    for (max_age, expected) in [
        (Some(600), 600),
        (Some(10), 60),
        (Some(100_000), 3600),
        (None, 300),
    ] {
        let server = KeyServer::start(&[key]).await;
        server.publish(&[key], max_age);
        let app = TestApp::start(&config_yaml(&server, REFRESH)).await;
        assert_eq!(server.jwks_hits(), 1);

        app.advance(Duration::from_secs(expected - 1));
        refresh_if_due(&app).await;
        assert_eq!(
            server.jwks_hits(),
            1,
            "max-age {max_age:?}: no refresh before {expected}s"
        );

        app.advance(Duration::from_secs(1));
        refresh_if_due(&app).await;
        assert_eq!(
            server.jwks_hits(),
            2,
            "max-age {max_age:?}: a refresh at {expected}s"
        );
    }
}

#[tokio::test]
async fn unknown_kids_cause_at_most_one_fetch_per_cooldown_across_concurrent_requests() {
    let known = rsa_key("k1");
    let unpublished = rsa_key("k-unpublished");
    let server = KeyServer::start(&[known]).await;
    let app = TestApp::start(&config_yaml(&server, REFRESH)).await;
    assert_eq!(server.jwks_hits(), 1);

    // The cooldown counts from unknown-kid fetches, not from the load: the first unknown kid fetches.
    let decision = app
        .decide_token(&token(unpublished, &server.issuer(), T0, "u0"))
        .await;
    assert_eq!(decision["error"], json!("invalid_token"));
    assert_eq!(server.jwks_hits(), 2, "the first unknown kid refetches");

    // Within its cooldown, fifty concurrent requests with unknown kids fetch nothing more.
    app.advance(Duration::from_secs(29));
    let mut requests = JoinSet::new();
    for index in 0..50 {
        let app = app.clone();
        let token = token(unpublished, &server.issuer(), T0 + 29, &format!("w{index}"));
        requests.spawn(async move { app.decide_token(&token).await });
    }
    while let Some(decision) = requests.join_next().await {
        assert_eq!(decision.unwrap()["error"], json!("invalid_token"));
    }
    assert_eq!(server.jwks_hits(), 2, "within the cooldown");

    // After the cooldown, fifty concurrent requests with unknown kids share one fetch.
    app.advance(Duration::from_secs(2));
    let mut requests = JoinSet::new();
    for index in 0..50 {
        let app = app.clone();
        let token = token(unpublished, &server.issuer(), T0 + 31, &format!("u{index}"));
        requests.spawn(async move { app.decide_token(&token).await });
    }
    while let Some(decision) = requests.join_next().await {
        let decision = decision.unwrap();
        assert_eq!(
            (decision["status"].clone(), decision["error"].clone()),
            (json!(401), json!("invalid_token"))
        );
    }
    assert_eq!(
        server.jwks_hits(),
        3,
        "one fetch for fifty concurrent unknown-kid requests"
    );

    // Still within the new cooldown: nothing more.
    app.advance(Duration::from_secs(29));
    app.decide_token(&token(unpublished, &server.issuer(), T0 + 60, "u-late"))
        .await;
    assert_eq!(server.jwks_hits(), 3);

    // The issuer rotates in the new key; after the cooldown the first request for it fetches and succeeds.
    server.publish(&[known, unpublished], None);
    app.advance(Duration::from_secs(2));
    let decision = app
        .decide_token(&token(unpublished, &server.issuer(), T0 + 62, "rotated"))
        .await;
    assert!(allowed(&decision), "{decision}");
    assert_eq!(server.jwks_hits(), 4);
}

#[tokio::test]
async fn inside_the_cooldown_an_unknown_kid_is_answered_without_waiting_on_a_hanging_fetch() {
    let known = rsa_key("k1");
    let unpublished = rsa_key("k-unpublished");
    let server = KeyServer::start(&[known]).await;
    let app = TestApp::start(&config_yaml(
        &server,
        "    jwks_refresh: { unknown_kid_cooldown: 30s, timeout: 60s }",
    ))
    .await;
    let decision = app
        .decide_token(&token(unpublished, &server.issuer(), T0, "u0"))
        .await;
    assert_eq!(decision["error"], json!("invalid_token"));
    assert_eq!(server.jwks_hits(), 2, "the unknown kid refetched");

    // A refresh begins against an endpoint that no longer answers, and holds the fetch.
    server.answer(JwksAnswer::Hang);
    let keys = Arc::clone(
        app.state
            .current()
            .engine
            .verifier()
            .key_sets()
            .next()
            .unwrap(),
    );
    let hanging = tokio::spawn(async move { keys.refresh().await });
    while server.jwks_hits() < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Inside the cooldown there is nothing to wait for: the answer comes at once, not after the
    // 60 s fetch timeout (the bound below only keeps a regression from hanging the suite).
    app.advance(Duration::from_secs(10));
    let decision = tokio::time::timeout(
        Duration::from_secs(20),
        app.decide_token(&token(unpublished, &server.issuer(), T0 + 10, "u1")),
    )
    .await
    .expect("the unknown kid waited on the hanging fetch");
    assert_eq!(decision["error"], json!("invalid_token"));
    // Known kids never wait either.
    let decision = app
        .decide_token(&token(known, &server.issuer(), T0 + 10, "k"))
        .await;
    assert!(allowed(&decision), "{decision}");
    hanging.abort();
}

#[tokio::test]
async fn failed_or_empty_fetches_never_evict_good_keys() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let app = TestApp::start(&config_yaml(&server, REFRESH)).await;

    let bad_answers = [
        ("server error", JwksAnswer::Status(500)),
        ("bad gateway", JwksAnswer::Status(502)),
        ("not found", JwksAnswer::Status(404)),
        ("garbage", JwksAnswer::Body("<html>oops</html>")),
        ("not a key set", JwksAnswer::Body(r#"{"hello": "world"}"#)),
        ("empty key set", JwksAnswer::Body(r#"{"keys": []}"#)),
        (
            "only an oct key",
            JwksAnswer::Body(
                r#"{"keys": [{"kty": "oct", "kid": "k1", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}"#,
            ),
        ),
    ];
    let mut now = T0;
    for (index, (case, answer)) in bad_answers.into_iter().enumerate() {
        server.answer(answer);
        let hits = server.jwks_hits();
        // Within the staleness budget (2h) across all cases, so only the failures are under test.
        app.advance(Duration::from_secs(600));
        now += 600;
        for keys in app.state.current().engine.verifier().key_sets() {
            assert!(
                keys.refresh().await.is_err(),
                "{case}: the fetch must count as failed"
            );
        }
        assert_eq!(
            server.jwks_hits(),
            hits + 1,
            "{case}: the refresh reached the server"
        );
        // A token never seen before, so the key itself is used, not the verified-token cache.
        let decision = app
            .decide_token(&token(
                key,
                &server.issuer(),
                now,
                &format!("fresh-{index}"),
            ))
            .await;
        assert!(
            allowed(&decision),
            "{case}: the good key must still verify: {decision}"
        );
    }
}

#[tokio::test]
async fn keys_past_the_staleness_budget_stop_being_trusted() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let app = TestApp::start(&config_yaml(&server, REFRESH)).await;
    let warm = token(key, &server.issuer(), T0, "warm");
    assert!(
        allowed(&app.decide_token(&warm).await),
        "a cached token to begin with"
    );

    server.answer(JwksAnswer::Status(503));
    app.advance(Duration::from_secs(2 * 3600));
    refresh_if_due(&app).await;
    assert!(
        allowed(
            &app.decide_token(&token(key, &server.issuer(), T0 + 7200, "at-budget"))
                .await
        ),
        "exactly at the budget the keys still count"
    );

    app.advance(Duration::from_secs(1));
    let fresh = app
        .decide_token(&token(key, &server.issuer(), T0 + 7201, "past-budget"))
        .await;
    assert_eq!(
        (fresh["status"].clone(), fresh["error"].clone()),
        (json!(503), json!("temporarily_unavailable")),
        "{fresh}"
    );
    let cached = app.decide_token(&warm).await;
    assert_eq!(
        cached["status"],
        json!(503),
        "a cached token is not a way around stale keys: {cached}"
    );

    let (status, body) = app.readyz().await;
    assert_eq!(status, 503);
    assert_eq!(body["issuers"][0]["stale"], json!(true), "{body}");
    assert!(
        body["issuers"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 503")),
        "{body}"
    );

    // The issuer recovers: the next attempt reloads and trust returns.
    server.publish(&[key], None);
    app.advance(Duration::from_secs(60));
    refresh_if_due(&app).await;
    assert!(allowed(&app.decide_token(&warm).await));
}

#[tokio::test]
async fn discovery_finds_the_key_set_and_must_name_the_same_issuer() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let yaml = config_yaml(&server, REFRESH)
        .replace(&format!("    jwks_uri: \"{}\"\n", server.jwks_uri()), "");
    assert!(
        !yaml.contains("jwks_uri"),
        "the configuration relies on discovery"
    );
    let app = TestApp::start(&yaml).await;
    assert_eq!((server.discovery_hits(), server.jwks_hits()), (1, 1));
    assert!(allowed(
        &app.decide_token(&token(key, &server.issuer(), T0, "alice"))
            .await
    ));

    // Configured with a trailing slash, the issuer differs from what the discovery document names
    // (OIDC Discovery §4.3), so no keys are trusted.
    let slashed = yaml.replace(
        &format!("issuer: \"{}\"", server.issuer()),
        &format!("issuer: \"{}/\"", server.issuer()),
    );
    let app = TestApp::start_without_keys(&slashed);
    for keys in app.state.current().engine.verifier().key_sets() {
        let error = keys
            .refresh()
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("names another issuer"), "{error}");
    }
}

#[tokio::test]
async fn verified_tokens_are_cached_but_policy_runs_on_every_request() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let app = TestApp::start(&config_yaml(&server, REFRESH)).await;
    let token = token(key, &server.issuer(), T0, "alice");
    let cache = || app.state.current().engine.verifier().cache().len();

    assert!(allowed(&app.decide_token(&token).await));
    assert_eq!(cache(), 1);
    // Same token, another route: served from the cache, yet the policy denies it.
    let delete = app
        .decide(json!({ "authorization": format!("Bearer {token}"), "method": "DELETE", "path": "/orders/42" }))
        .await;
    assert_eq!(
        (delete["status"].clone(), delete["error"].clone()),
        (json!(403), json!("access_denied"))
    );
    assert_eq!(cache(), 1, "the second request was a cache hit");
}

#[tokio::test]
async fn cached_tokens_never_outlive_their_exp() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let app =
        TestApp::start(&config_yaml(&server, REFRESH).replace("leeway: 30s", "leeway: 0s")).await;
    let mut claims = claims(&server.issuer(), T0);
    claims["exp"] = json!(T0 + 20);
    let token = key.sign(&claims);

    let decision = app.decide_token(&token).await;
    assert!(allowed(&decision));
    assert_eq!(
        decision["cache_ttl"],
        json!(20),
        "the decision TTL (60s) is capped by exp"
    );

    app.advance(Duration::from_secs(20));
    let decision = app.decide_token(&token).await;
    assert_eq!(
        decision["error_description"],
        json!("the token has expired"),
        "{decision}"
    );
}

#[tokio::test]
async fn the_token_cache_is_bounded() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let app = TestApp::start(&format!(
        "{}  max_tokens: 16\n",
        config_yaml(&server, REFRESH)
    ))
    .await;
    for index in 0..100 {
        assert!(allowed(
            &app.decide_token(&token(key, &server.issuer(), T0, &format!("user-{index}")))
                .await
        ));
    }
    let cached = app.state.current().engine.verifier().cache().len();
    assert!((1..=16).contains(&cached), "{cached} tokens cached");
}

#[tokio::test]
async fn hmac_tokens_with_a_kid_are_served_from_the_cache() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use verdict::demo::signing::encode_json;

    const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!";
    let server = KeyServer::start(&[rsa_key("k1")]).await;
    let extra = format!("    algorithms: [RS256, HS256]\n    shared_secret: \"{SECRET}\"");
    let app = TestApp::start(&config_yaml(&server, &extra)).await;
    let signing_input = format!(
        "{}.{}",
        encode_json(&json!({ "alg": "HS256", "kid": "hmac-1", "typ": "JWT" })),
        encode_json(&claims(&server.issuer(), T0))
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
    let signature = aws_lc_rs::hmac::sign(&key, signing_input.as_bytes());
    let token = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    );

    let first = app.state.current().engine.decide(&input(&token)).await;
    let second = app.state.current().engine.decide(&input(&token)).await;
    assert!(first.allow && second.allow, "{first:?}");
    assert_eq!(
        (first.trace.token_cache_hit, second.trace.token_cache_hit),
        (false, true)
    );
}

fn input(token: &str) -> verdict::decision::DecisionInput {
    verdict::decision::DecisionInput {
        authorization: Some(format!("Bearer {token}")),
        method: "GET".into(),
        path: "/orders/1".into(),
        ..Default::default()
    }
}

/// Decides `GET /orders/42` for `token` in-process, to see whether the token cache answered.
async fn decide_traced(app: &TestApp, token: &str) -> verdict::decision::Decision {
    let mut input = input(token);
    input.path = "/orders/42".into();
    app.state.current().engine.decide(&input).await
}

#[tokio::test]
async fn a_cached_token_is_refused_once_older_than_max_token_age_and_its_decision_is_not_reused_past_it()
 {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let extra = format!("{REFRESH}\n    max_token_age: 5m");
    let app = TestApp::start(&config_yaml(&server, &extra)).await;
    let token = token(key, &server.issuer(), T0, "alice");

    let first = decide_traced(&app, &token).await;
    assert!(first.allow, "{first:?}");
    assert_eq!(first.cache_ttl, 60);
    app.advance(Duration::from_secs(280));
    let cached = decide_traced(&app, &token).await;
    assert!(cached.allow && cached.trace.token_cache_hit, "{cached:?}");
    assert_eq!(
        cached.cache_ttl, 20,
        "the proxy may not reuse the allow past iat + max_token_age"
    );
    // 330 s: max_token_age (300 s) plus the leeway (30 s) have passed.
    app.advance(Duration::from_secs(51));
    let old = decide_traced(&app, &token).await;
    assert_eq!(
        (old.allow, old.error_description.as_str()),
        (false, "the token is older than allowed"),
        "{old:?}"
    );
}

#[tokio::test]
async fn a_cached_token_is_refused_once_its_issuer_replaces_the_key_behind_its_kid() {
    let old_rsa = SigningKey::generate_rs256("1").unwrap();
    let new_rsa = SigningKey::generate_rs256("1").unwrap();
    let (old_ec, new_ec) = (ec_key("2"), ec_key("2"));
    let server = KeyServer::start(&[&old_rsa, &old_ec]).await;
    let app = TestApp::start(&config_yaml(&server, REFRESH)).await;
    let issuer = server.issuer();
    let old_tokens = [
        token(&old_rsa, &issuer, T0, "alice"),
        token(&old_ec, &issuer, T0, "bob"),
    ];
    for token in &old_tokens {
        assert!(decide_traced(&app, token).await.allow);
        assert!(decide_traced(&app, token).await.trace.token_cache_hit);
    }

    // The same `kid`s now name other keys, as after a compromise at an issuer that uses `kid: "1"`.
    server.publish(&[&new_rsa, &new_ec], None);
    for keys in app.state.current().engine.verifier().key_sets() {
        keys.refresh().await.unwrap();
    }
    for token in &old_tokens {
        let decision = decide_traced(&app, token).await;
        assert_eq!(
            (decision.allow, decision.error_description.as_str()),
            (false, "the token's signature is invalid"),
            "{decision:?}"
        );
    }
    for key in [&new_rsa, &new_ec] {
        assert!(
            decide_traced(&app, &token(key, &issuer, T0, "carol"))
                .await
                .allow
        );
    }
    // A refetch of the very same keys keeps cached tokens good.
    let kept = token(&new_rsa, &issuer, T0, "dave");
    assert!(decide_traced(&app, &kept).await.allow);
    for keys in app.state.current().engine.verifier().key_sets() {
        keys.refresh().await.unwrap();
    }
    let again = decide_traced(&app, &kept).await;
    assert!(again.allow && again.trace.token_cache_hit, "{again:?}");
}

#[tokio::test]
async fn a_decision_is_not_reused_past_the_staleness_of_the_keys_that_verified_it() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let app = TestApp::start(&config_yaml(&server, REFRESH)).await;
    let token = token(key, &server.issuer(), T0, "alice");
    assert_eq!(decide_traced(&app, &token).await.cache_ttl, 60);
    // The keys were fetched at T0 and are trusted for 2 h (`max_staleness`).
    app.advance(Duration::from_secs(2 * 3600 - 10));
    let late = decide_traced(&app, &token).await;
    assert!(late.allow, "{late:?}");
    assert_eq!(late.cache_ttl, 11);
}

#[tokio::test]
async fn only_keys_published_for_verifying_signatures_verify_tokens() {
    let key = ec_key("usage");
    let server = KeyServer::start(&[&key]).await;
    let app = TestApp::start(&config_yaml(&server, REFRESH)).await;
    let published = |extra: Value| {
        let mut jwk = key.public_jwk();
        jwk.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({ "keys": [jwk] })
    };
    let cases = [
        (json!({ "use": "sig" }), true),
        (json!({ "key_ops": ["verify"] }), true),
        (json!({ "use": "enc" }), false),
        (json!({ "key_ops": ["encrypt"] }), false),
        (json!({ "key_ops": ["sign"] }), false),
        (json!({ "key_ops": [] }), false),
        (json!({ "use": "sig", "key_ops": ["wrapKey"] }), false),
    ];
    for (index, (extra, usable)) in cases.into_iter().enumerate() {
        // A fresh verifier per case, so no cached token or key outlives its case.
        let app = TestApp::start_without_keys(&config_yaml(&server, REFRESH));
        server.publish_raw(published(extra.clone()));
        let keys = app
            .state
            .current()
            .engine
            .verifier()
            .key_sets()
            .next()
            .cloned()
            .unwrap();
        let loaded = keys.refresh().await.is_ok();
        let decision = app
            .decide_token(&token(&key, &server.issuer(), T0, &format!("user-{index}")))
            .await;
        assert_eq!(allowed(&decision), usable, "{extra}: {decision}");
        assert_eq!(
            loaded, usable,
            "a set with no usable key is refused: {extra}"
        );
    }
    // A key set with a duplicate member name is refused whole, and the keys it would replace stay.
    let jwk = key.public_jwk().to_string();
    let document = format!(
        r#"{{"keys":[{{"use":"enc","use":"sig",{}]}}"#,
        jwk.strip_prefix('{').unwrap()
    );
    server.answer(JwksAnswer::Body(Box::leak(document.into_boxed_str())));
    for keys in app.state.current().engine.verifier().key_sets() {
        assert!(keys.refresh().await.is_err());
    }
    assert!(allowed(
        &app.decide_token(&token(&key, &server.issuer(), T0, "kept"))
            .await
    ));
}
