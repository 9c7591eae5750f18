//! Configuration loading: every error at once with its path, `${ENV}` interpolation, and the rules that
//! refuse unsafe settings before anything starts.

use std::collections::HashMap;
use std::path::Path;

use verdict::config::{Config, ConfigErrors, PolicyOrigin};

use crate::helpers::{example_policies, tempdir};

fn parse(yaml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    Config::parse(
        yaml,
        Path::new("."),
        &env,
        PolicyOrigin::Embedded(example_policies()),
    )
}

fn errors(yaml: &str) -> Vec<String> {
    match parse(yaml, &[]) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn every_error_is_reported_at_once_with_its_path() {
    let yaml = r#"
listen: "not an address"
callers: { google_id_token: { audience: a, emails: [e@example.com], header: "bad header" } }
issuers:
  - name: good
    issuer: https://idp.example.com
    audiences: ["api://orders"]
  - name: bad
    issuer: https://other.example.com
    audiences: []
    algorithms: [none, HS256, RS257]
    leeway: thirty
  - name: insecure
    issuer: http://idp.example.net
    audiences: [a]
    jwks_uri: http://idp.example.net/keys
  - name: typo
    issuer: https://typo.example.com
    audience: [a]
headers:
  "bad header": sub
cache:
  max_tokens: 0
"#;
    let errors = errors(yaml);
    let expected = [
        "listen: not a socket address",
        "callers.google_id_token.header: `bad header` is not a valid header name",
        "callers: no caller authentication is configured",
        // One issuer entry that fails to deserialize reports its first error; the others still report.
        "issuers[1].leeway: `thirty` is not a duration",
        "issuers[2].issuer: `http://idp.example.net` must use https",
        "issuers[2].jwks_uri: `http://idp.example.net/keys` must use https",
        "issuers[3].audience: unknown field `audience`",
        "headers.bad header: `bad header` is not a valid header name",
        "cache.max_tokens: must be at least 1",
    ];
    for prefix in expected {
        assert!(
            errors.iter().any(|e| e.starts_with(prefix)),
            "missing `{prefix}` in:\n{}",
            errors.join("\n")
        );
    }
}

#[test]
fn issuer_rules_are_each_reported() {
    let yaml = r#"
callers: { allow_unauthenticated: true }
issuers:
  - name: a
    issuer: https://idp.example.com
    audiences: []
    algorithms: [none, HS256, RS257]
    shared_secret: short
    jwks_refresh: { min_interval: 2h, max_interval: 1h, max_staleness: 30m }
"#;
    let errors = errors(yaml);
    for expected in [
        "issuers[0].audiences: at least one audience is required",
        "issuers[0].algorithms[0]: `none` is never allowed",
        "issuers[0].algorithms[2]: unknown algorithm `RS257`",
        "issuers[0].shared_secret: must be at least 32 bytes",
        "issuers[0].jwks_refresh: `min_interval` must not exceed `max_interval`",
        "issuers[0].jwks_refresh.max_staleness: must exceed `max_interval`",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "missing `{expected}` in:\n{}",
            errors.join("\n")
        );
    }
}

#[test]
fn hmac_needs_the_issuers_own_secret() {
    let yaml = r#"
callers: { allow_unauthenticated: true }
issuers:
  - { name: a, issuer: "https://idp.example.com", audiences: [x], algorithms: [HS256] }
"#;
    assert_eq!(
        errors(yaml),
        vec!["issuers[0].algorithms[0]: `HS256` needs the issuer's own `shared_secret`"]
    );
}

#[test]
fn environment_variables_are_interpolated_and_missing_ones_named() {
    let yaml = r#"
callers:
  api_keys:
    keys: ["${CALLER_KEY}", "${NEXT_CALLER_KEY}"]
issuers:
  - { name: a, issuer: "https://idp.example.com", audiences: ["${AUDIENCE}"] }
"#;
    let config = parse(
        yaml,
        &[
            ("CALLER_KEY", "0123456789abcdef0123"),
            ("NEXT_CALLER_KEY", "fedcba9876543210fedc"),
            ("AUDIENCE", "api://x"),
        ],
    );
    let config = config.unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(config.issuers[0].audiences, vec!["api://x".to_owned()]);
    assert_eq!(config.callers.api_keys.map(|keys| keys.keys.len()), Some(2));

    let missing = match parse(yaml, &[("CALLER_KEY", "0123456789abcdef0123")]) {
        Ok(_) => panic!("missing variables must be errors"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    assert!(
        missing.contains(
            &"callers.api_keys.keys[1]: environment variable `NEXT_CALLER_KEY` is not set"
                .to_owned()
        ),
        "{missing:?}"
    );
    assert!(
        missing.contains(
            &"issuers[0].audiences[0]: environment variable `AUDIENCE` is not set".to_owned()
        ),
        "{missing:?}"
    );
}

#[test]
fn an_interpolated_secret_cannot_change_the_structure() {
    let yaml = "callers:\n  api_keys:\n    keys: [\"${KEY}\"]\nissuers:\n  - { name: a, issuer: \"https://idp.example.com\", audiences: [x] }\n";
    let config = parse(yaml, &[("KEY", "abc\"]\n  allow_unauthenticated: true #")])
        .unwrap_or_else(|errors| panic!("{errors}"));
    assert!(!config.callers.allow_unauthenticated);
}

#[test]
fn the_example_configuration_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/verdict.yaml");
    let env: HashMap<String, String> = [(
        "VERDICT_CALLER_KEY".to_owned(),
        "an-example-caller-key-0123".to_owned(),
    )]
    .into();
    let config = Config::load(&path, &env).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(config.issuers.len(), 2);
    assert!(!config.policies.is_empty());
}

#[test]
fn policy_errors_carry_file_line_and_column() {
    let directory = tempdir();
    std::fs::write(
        directory.join("ok.cedar"),
        "permit(principal, action, resource);\n",
    )
    .unwrap();
    std::fs::write(
        directory.join("broken.cedar"),
        "// a comment\npermit(principal, action resource);\n",
    )
    .unwrap();
    let errors = load_policies(&directory, None).err().unwrap_or_default();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("policies: broken.cedar:2:"),
        "{errors:?}"
    );
}

/// Loads a configuration whose policies are the files of `directory`, returning its errors as text.
fn load_policies(directory: &Path, schema: Option<&Path>) -> Result<Config, Vec<String>> {
    let mut yaml = format!(
        "callers: {{ allow_unauthenticated: true }}\nissuers:\n  - {{ name: a, issuer: \"https://idp.example.com\", audiences: [x] }}\npolicies:\n  path: {}\n",
        directory.display()
    );
    if let Some(schema) = schema {
        yaml.push_str(&format!("  schema: {}\n", schema.display()));
    }
    Config::parse(
        &yaml,
        Path::new("."),
        &HashMap::new(),
        PolicyOrigin::Configured,
    )
    .map_err(|errors| errors.0.iter().map(ToString::to_string).collect())
}

#[test]
fn a_schema_validates_the_policies_and_locates_the_problem() {
    let directory = tempdir();
    std::fs::write(directory.join("schema.cedarschema"), "entity User;\nentity Route { path: String };\naction \"GET\" appliesTo { principal: [User], resource: [Route] };\n").unwrap();
    std::fs::write(directory.join("ok.cedar"), "@id(\"ok\")\npermit(principal is User, action == Action::\"GET\", resource) when { resource.path == \"/\" };\n").unwrap();
    std::fs::write(directory.join("typo.cedar"), "// unknown attribute\npermit(principal, action == Action::\"GET\", resource) when { resource.pth == \"/\" };\n").unwrap();
    let schema = directory.join("schema.cedarschema");
    let errors = load_policies(&directory, Some(&schema))
        .err()
        .unwrap_or_default();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("policies: typo.cedar:2:"),
        "{errors:?}"
    );

    std::fs::remove_file(directory.join("typo.cedar")).unwrap();
    assert!(load_policies(&directory, Some(&schema)).is_ok());
}

#[test]
fn the_service_settings_have_defaults_and_their_errors_are_each_reported() {
    let minimal = r#"
callers: { allow_unauthenticated: true }
issuers: [{ name: a, issuer: "https://idp.example.com", audiences: [x] }]
"#;
    let service = parse(minimal, &[]).unwrap().service;
    assert_eq!(service.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(service.admin_listen, None);
    assert_eq!(
        service.decision_log,
        verdict::config::DecisionLogTarget::Stdout
    );
    assert_eq!(service.log.format, verdict::config::LogFormat::Text);
    assert_eq!(service.tracing.otlp_traces_url, None);
    assert_eq!(service.limits.max_body_bytes, 64 * 1024);
    assert_eq!(service.limits.max_header_bytes, 16 * 1024);
    assert_eq!(service.limits.request_timeout.as_secs(), 5);
    assert_eq!(service.limits.max_concurrent_requests, 1024);
    assert_eq!(service.shutdown_grace.as_secs(), 8);

    let configured = parse(
        &format!(
            "{minimal}admin_listen: 127.0.0.1:9090\ndecision_log: off\nlog: {{ format: json }}\ntracing: {{ otlp_endpoint: \"http://collector:4318/\" }}\n"
        ),
        &[],
    )
    .unwrap()
    .service;
    assert_eq!(
        configured.tracing.otlp_traces_url.unwrap().as_str(),
        "http://collector:4318/v1/traces"
    );
    assert_eq!(
        configured.decision_log,
        verdict::config::DecisionLogTarget::Off
    );

    let errors = errors(&format!(
        r#"{minimal}admin_listen: nowhere
decision_log: ""
log: {{ format: xml, level: "verdict=loud" }}
tracing: {{ otlp_endpoint: "ftp://collector" }}
limits: {{ max_header_bytes: 100, max_body_bytes: 0, max_concurrent_requests: 0, request_timeout: 1ms }}
shutdown: {{ grace_period: 1h }}
"#
    ));
    let expected = [
        "admin_listen: not a socket address",
        "decision_log: write `stdout`, `off` or a file path",
        "log.format: `xml` is not a log format",
        "log.level: `verdict=loud` is not a log filter",
        "tracing.otlp_endpoint: must be an http or https URL",
        "limits.max_body_bytes: must be between",
        "limits.max_header_bytes: must be between",
        "limits.max_concurrent_requests: must be between",
        "limits.request_timeout: must be between 10ms and 5m",
        "shutdown.grace_period: must be at most 5m",
    ];
    for prefix in expected {
        assert!(
            errors.iter().any(|e| e.starts_with(prefix)),
            "missing `{prefix}` in:\n{}",
            errors.join("\n")
        );
    }
}
