//! Hot reload through `Reloader::reload`: atomic under concurrent requests, a failed reload keeps the
//! running set and says why, and what did not change (keys, the token cache) is kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::StatusCode;
use serde_json::{Value, json};
use verdict::config::Config;
use verdict::reload::Reloader;

use crate::helpers::tempdir;
use crate::helpers::{KeyServer, TestApp, claims, config_yaml, rsa_key};

/// A configuration file with a policy directory beside it, served by a [`TestApp`] with a reloader.
struct Reloadable {
    directory: PathBuf,
    /// The configuration without its `policies` section.
    yaml: String,
    app: TestApp,
    reloader: Reloader,
}

impl Reloadable {
    async fn start(server: &KeyServer, policies: &[(&str, &str)]) -> Self {
        Self::start_with_environment(server, policies, HashMap::new()).await
    }

    /// As [`Self::start`], with `${VAR}` references read from `environment` on reload.
    async fn start_with_environment(
        server: &KeyServer,
        policies: &[(&str, &str)],
        environment: HashMap<String, String>,
    ) -> Self {
        let directory = tempdir();
        std::fs::create_dir_all(directory.join("policies")).unwrap();
        write_policies(&directory, policies);
        let yaml = config_yaml(server, "");
        write_config(&directory, &yaml, "{ path: policies }");
        let config = Config::load(&directory.join("verdict.yaml"), &HashMap::new())
            .unwrap_or_else(|errors| panic!("{errors}"));
        let app = TestApp::from_config(config).with_keys_loaded().await;
        let reloader = Reloader::new(
            &directory.join("verdict.yaml"),
            app.state.clone(),
            app.clock.clone(),
            Arc::new(environment),
        )
        .unwrap();
        Self {
            directory,
            yaml,
            app,
            reloader,
        }
    }

    fn policy_dir(&self) -> PathBuf {
        self.directory.join("policies")
    }

    async fn readyz(&self) -> Value {
        let (status, body) = self.app.readyz().await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

/// Writes `verdict.yaml`: `yaml` and a `policies` section.
fn write_config(directory: &Path, yaml: &str, policies: &str) {
    std::fs::write(
        directory.join("verdict.yaml"),
        format!("{yaml}\npolicies: {policies}\n"),
    )
    .unwrap();
}

/// Replaces the policy directory's files with `files`.
fn write_policies(directory: &Path, files: &[(&str, &str)]) {
    let policies = directory.join("policies");
    for entry in std::fs::read_dir(&policies).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    for (name, text) in files {
        std::fs::write(policies.join(name), text).unwrap();
    }
}

/// Two files whose policies both apply to every request and carry the generation in their ids, so a
/// decision mixing two generations would show it.
fn generation(number: usize) -> [(String, String); 2] {
    [
        (
            "a.cedar".to_owned(),
            format!("@id(\"a-{number}\") permit(principal, action, resource);\n"),
        ),
        (
            "b.cedar".to_owned(),
            format!(
                "@id(\"b-{number}\") permit(principal, action, resource) when {{ principal.scopes.contains(\"orders:read\") }};\n"
            ),
        ),
    ]
}

fn as_refs(files: &[(String, String)]) -> Vec<(&str, &str)> {
    files
        .iter()
        .map(|(name, text)| (name.as_str(), text.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_concurrent_requests_never_fail_a_request_or_mix_two_sets() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let service = Arc::new(Reloadable::start(&server, &as_refs(&generation(0))).await);
    let token = key.sign(&claims(&server.issuer(), crate::helpers::T0));

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let app = service.app.clone();
        let stop = Arc::clone(&stop);
        let token = token.clone();
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let decision = app.decide_token(&token).await;
                seen.push(decision);
            }
            seen
        }));
    }

    const RELOADS: usize = 120;
    let mut failed_on_purpose = 0;
    for number in 1..=RELOADS {
        write_policies(&service.directory, &as_refs(&generation(number)));
        service.reloader.reload().await.unwrap();
        if number % 20 == 0 {
            // A broken set in between: refused, and the last good one keeps serving.
            write_policies(
                &service.directory,
                &[("a.cedar", "permit(principal, action, resource)")],
            );
            let error = service.reloader.reload().await.unwrap_err().to_string();
            assert!(error.contains("a.cedar:1:"), "{error}");
            failed_on_purpose += 1;
        }
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::SeqCst);

    let mut decisions = 0;
    let mut generations_seen = std::collections::BTreeSet::new();
    for client in clients {
        for decision in client.await.unwrap() {
            decisions += 1;
            assert_eq!(decision["allow"], true, "{decision}");
            let policies: Vec<&str> = decision["policies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_str().unwrap())
                .collect();
            let [a, b] = policies[..] else {
                panic!("two policies determine every decision: {decision}");
            };
            let (Some(a), Some(b)) = (a.strip_prefix("a-"), b.strip_prefix("b-")) else {
                panic!("unexpected policies: {decision}");
            };
            assert_eq!(a, b, "a decision saw two generations at once: {decision}");
            generations_seen.insert(a.parse::<usize>().unwrap());
        }
    }
    assert!(decisions > RELOADS, "only {decisions} decisions were made");
    assert!(
        generations_seen.len() > 1,
        "the requests saw only generations {generations_seen:?}"
    );

    let readyz = service.readyz().await;
    assert_eq!(readyz["reloads"]["succeeded"], RELOADS, "{readyz}");
    assert_eq!(readyz["reloads"]["failed"], failed_on_purpose, "{readyz}");
    // The last reload failed, and the set from just before it is the one running.
    assert_eq!(
        service.app.decide_token(&token).await["policies"],
        json!([format!("a-{RELOADS}"), format!("b-{RELOADS}")])
    );
}

#[tokio::test]
async fn a_failed_reload_keeps_the_running_set_and_reports_where_the_problem_is() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let good = "@id(\"read\") permit(principal, action == Action::\"GET\", resource);\n";
    let service = Reloadable::start(&server, &[("read.cedar", good)]).await;
    let token = key.sign(&claims(&server.issuer(), crate::helpers::T0));
    let running = service.readyz().await["policy_revision"].clone();
    std::fs::write(
        service.directory.join("schema.cedarschema"),
        "entity User;\nentity Route;\naction \"GET\" appliesTo { principal: [User], resource: [Route] };\n",
    )
    .unwrap();

    type Breakage<'a> = Box<dyn Fn(&Reloadable) + 'a>;
    // What broke it, how, what the message says (for the log), and where `/readyz` says it failed.
    let cases: Vec<(&str, Breakage<'_>, &str, &str)> = vec![
        (
            "a syntax error",
            Box::new(|s: &Reloadable| {
                std::fs::write(
                    s.policy_dir().join("read.cedar"),
                    "permit(principal,\n action resource);",
                )
                .unwrap();
            }),
            "read.cedar:2:",
            "policies",
        ),
        (
            "an annotation with an unknown error code",
            Box::new(|s: &Reloadable| {
                std::fs::write(
                    s.policy_dir().join("read.cedar"),
                    "// deny reasons\n@id(\"read\")\n@error(\"not_a_code\")\nforbid(principal, action, resource);",
                )
                .unwrap();
            }),
            "read.cedar:2: policy `read`: unknown error code `not_a_code`",
            "policies",
        ),
        (
            "an unknown entity type under a schema",
            Box::new(|s: &Reloadable| {
                std::fs::write(s.policy_dir().join("read.cedar"), good).unwrap();
                std::fs::write(
                    s.policy_dir().join("typo.cedar"),
                    "permit(principal is Usr, action, resource);",
                )
                .unwrap();
                write_config(
                    &s.directory,
                    &s.yaml,
                    "{ path: policies, schema: schema.cedarschema }",
                );
            }),
            "typo.cedar:1:",
            "policies",
        ),
        (
            "a deleted policy directory",
            Box::new(|s: &Reloadable| {
                std::fs::remove_dir_all(s.policy_dir()).unwrap();
            }),
            "cannot read policy directory",
            "policies",
        ),
        (
            "an unknown configuration key",
            Box::new(|s: &Reloadable| {
                std::fs::write(
                    s.directory.join("verdict.yaml"),
                    "listen: 127.0.0.1:0\nlisten_on: 1\n",
                )
                .unwrap();
            }),
            "listen_on",
            "listen_on",
        ),
    ];
    for (index, (name, break_it, expected, path)) in cases.iter().enumerate() {
        break_it(&service);
        let error = service.reloader.reload().await.unwrap_err().to_string();
        assert!(error.contains(expected), "{name}: {error}");

        let readyz = service.readyz().await;
        assert_eq!(readyz["policy_revision"], running, "{name}: {readyz}");
        assert_eq!(readyz["reloads"]["failed"], index + 1, "{name}");
        let last = &readyz["reloads"]["last_failure"];
        assert_eq!(last["paths"], json!([path]), "{name}: {last}");
        assert!(last["at"].as_str().unwrap().ends_with('Z'), "{last}");
        let decision = service.app.decide_token(&token).await;
        assert_eq!(decision["allow"], true, "{name}: {decision}");
        assert_eq!(decision["policies"], json!(["read"]), "{name}");
    }
}

#[tokio::test]
async fn a_reload_keeps_keys_and_cached_tokens_that_the_change_does_not_touch() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let allow_all = "@id(\"all\") permit(principal, action, resource);\n";
    let service = Reloadable::start(&server, &[("all.cedar", allow_all)]).await;
    let token = key.sign(&claims(&server.issuer(), crate::helpers::T0));
    assert_eq!(service.app.decide_token(&token).await["allow"], true);
    let verifier = Arc::clone(service.app.state.current().engine.verifier());
    let fetches = server.jwks_hits();

    // Policies only: the same verifier, so the same keys and the same cached token.
    write_policies(
        &service.directory,
        &[(
            "all.cedar",
            "@id(\"gets\") permit(principal, action == Action::\"GET\", resource);\n",
        )],
    );
    service.reloader.reload().await.unwrap();
    let current = service.app.state.current();
    assert!(Arc::ptr_eq(current.engine.verifier(), &verifier));
    assert_eq!(current.engine.verifier().cache().len(), 1);
    assert_eq!(
        service.app.decide_token(&token).await["policies"],
        json!(["gets"])
    );

    // An issuer setting that changes what a token is worth: a new verifier and an empty cache, but the
    // key set (whose settings did not change) is carried over without a fetch.
    let yaml = std::fs::read_to_string(service.directory.join("verdict.yaml")).unwrap();
    std::fs::write(
        service.directory.join("verdict.yaml"),
        yaml.replace("leeway: 30s", "leeway: 10s"),
    )
    .unwrap();
    service.reloader.reload().await.unwrap();
    let current = service.app.state.current();
    assert!(!Arc::ptr_eq(current.engine.verifier(), &verifier));
    assert_eq!(current.engine.verifier().cache().len(), 0);
    let before = verifier.key_sets().next().unwrap();
    let after = current.engine.verifier().key_sets().next().unwrap();
    assert!(Arc::ptr_eq(before, after));
    assert_eq!(service.app.decide_token(&token).await["allow"], true);
    assert_eq!(server.jwks_hits(), fetches, "no key set was fetched again");
}

/// A cached credential keeps only the claims the running policies and header mapping read, so a reload
/// that reads another claim starts an empty token cache and judges the token on that claim, while one
/// that reads the same claims keeps the cache.
#[tokio::test]
async fn a_reload_that_reads_other_claims_judges_a_cached_token_on_them() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let reads_tenant = r#"@id("tenant") permit(principal, action, resource) when { principal.claims.tenant == "acme" };
"#;
    let service = Reloadable::start(&server, &[("p.cedar", reads_tenant)]).await;
    let mut token_claims = claims(&server.issuer(), crate::helpers::T0);
    token_claims["department"] = json!("sales");
    let token = key.sign(&token_claims);
    let decision = service.app.decide_token(&token).await;
    assert_eq!(decision["policies"], json!(["tenant"]), "{decision}");

    // `department` was not kept: the cache starts empty. Then the same claims: the cache stays.
    for (department, allowed, cached) in [("sales", true, 0), ("legal", false, 1)] {
        let reads_department = format!(
            "@id(\"department\") permit(principal, action, resource) when {{ principal.claims.department == \"{department}\" }};\n"
        );
        write_policies(&service.directory, &[("p.cedar", &reads_department)]);
        service.reloader.reload().await.unwrap();
        let verifier = Arc::clone(service.app.state.current().engine.verifier());
        assert_eq!(verifier.cache().len(), cached, "{department}");
        let decision = service.app.decide_token(&token).await;
        assert_eq!(
            decision["allow"],
            json!(allowed),
            "{department}: {decision}"
        );
    }
}

#[tokio::test]
async fn an_issuer_added_by_a_reload_has_its_keys_before_it_serves() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let other_key = rsa_key("k2");
    let other = KeyServer::start(&[other_key]).await;
    let allow_all = "@id(\"all\") permit(principal, action, resource);\n";
    let service = Reloadable::start(&server, &[("all.cedar", allow_all)]).await;
    let token = other_key.sign(&claims(&other.issuer(), crate::helpers::T0));
    assert_eq!(
        service.app.decide_token(&token).await["error"],
        "invalid_token"
    );

    let yaml = std::fs::read_to_string(service.directory.join("verdict.yaml")).unwrap();
    let added = format!(
        "  - name: other\n    issuer: \"{}\"\n    audiences: [\"{}\"]\n    jwks_uri: \"{}\"\nheaders:",
        other.issuer(),
        crate::helpers::AUDIENCE,
        other.jwks_uri()
    );
    std::fs::write(
        service.directory.join("verdict.yaml"),
        yaml.replacen("headers:", &added, 1),
    )
    .unwrap();
    service.reloader.reload().await.unwrap();

    let decision = service.app.decide_token(&token).await;
    assert_eq!(decision["allow"], true, "{decision}");
    assert_eq!(other.jwks_hits(), 1);
    let readyz = service.readyz().await;
    assert_eq!(readyz["issuers"].as_array().unwrap().len(), 2, "{readyz}");
    assert_eq!(readyz["ready"], true);
}

#[tokio::test]
async fn a_failed_reload_shows_where_it_failed_but_never_a_value_of_the_file() {
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let allow_all = "@id(\"all\") permit(principal, action, resource);\n";
    let environment = HashMap::from([(
        "VERDICT_TEST_SECRET".to_owned(),
        "env-secret-value-0003".to_owned(),
    )]);
    let service =
        Reloadable::start_with_environment(&server, &[("all.cedar", allow_all)], environment).await;
    let good = service.yaml.clone();
    let file = service.directory.join("verdict.yaml").display().to_string();
    let with_introspection = |url: &str| {
        good.replace(
            "leeway: 30s",
            &format!(
                "leeway: 30s\n    introspection: {{ url: \"{url}\", client_id: verdict, client_secret: s3cr3t }}"
            ),
        )
    };
    // What is wrong, the configuration, the secret in it, where `/readyz` says it failed, and whether
    // the message (for the log) may quote the secret: a value, yes; a URL's credentials, never.
    let cases = [
        (
            "a secret where a duration belongs",
            good.replace("leeway: 30s", "leeway: \"leeway-secret-0001\""),
            "leeway-secret-0001",
            "issuers[0].leeway".to_owned(),
            true,
        ),
        (
            "credentials in a plain-http JWKS URL",
            good.replace(
                &server.jwks_uri(),
                "http://verdict:jwks-password-0002@jwks.example.com/jwks.json",
            ),
            "jwks-password-0002",
            "issuers[0].jwks_uri".to_owned(),
            false,
        ),
        (
            "credentials in an introspection URL that does not parse",
            with_introspection(
                "https://verdict:introspection-password-0004@idp.example.com:99999/",
            ),
            "introspection-password-0004",
            "issuers[0].introspection.url".to_owned(),
            false,
        ),
        (
            "an environment secret where a number belongs",
            good.replace(
                "decision_ttl: 60s",
                "decision_ttl: 60s\n  max_tokens: \"${VERDICT_TEST_SECRET}\"",
            ),
            "env-secret-value-0003",
            "cache.max_tokens".to_owned(),
            true,
        ),
        (
            "a file that is not YAML",
            "listen: [\"yaml-secret-0005\"\n  : {".to_owned(),
            "yaml-secret-0005",
            file,
            true,
        ),
    ];
    for (name, yaml, secret, path, may_quote) in &cases {
        write_config(&service.directory, yaml, "{ path: policies }");
        let error = service.reloader.reload().await.unwrap_err().to_string();
        assert!(error.contains(path.as_str()), "{name}: {error}");
        if !may_quote {
            assert!(!error.contains(secret), "{name}: {error}");
        }
        let readyz = service.readyz().await;
        let last = &readyz["reloads"]["last_failure"];
        assert_eq!(last["paths"], json!([path]), "{name}: {last}");
        assert!(
            last["at"].as_str().unwrap().ends_with('Z'),
            "{name}: {last}"
        );
        assert!(
            !readyz.to_string().contains(secret),
            "{name}: /readyz shows `{secret}`: {readyz}"
        );
    }
}
