//! The policy toolkit on the command line: `verdict test` over test files, and `verdict decide`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::helpers::tempdir;
use crate::helpers::{output, verdict};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies")
}

/// A directory holding `policy.cedar` and `policy.test.yaml`.
fn suite(policy: &str, tests: &str) -> PathBuf {
    let directory = tempdir();
    std::fs::write(directory.join("policy.cedar"), policy).unwrap();
    std::fs::write(directory.join("policy.test.yaml"), tests).unwrap();
    directory
}

const READS: &str = "@id(\"reads\")\n@scope(\"orders:read\")\npermit(principal, action == Action::\"GET\", resource)\nwhen { principal.scopes.contains(\"orders:read\") };\n";

#[test]
fn the_example_library_passes_its_own_tests() {
    let (status, stdout, stderr) = output(verdict().arg("test").arg(examples()));
    assert!(status.success(), "{stdout}{stderr}");
    for example in [
        "orders.test.yaml",
        "scopes/",
        "roles/",
        "tenants/",
        "api-products/",
        "ip-allowlist/",
        "time-window/",
    ] {
        assert!(stdout.contains(example), "{example} did not run:\n{stdout}");
    }
    let summary = stdout.lines().last().unwrap();
    assert!(summary.ends_with(" passed, 0 failed"), "{summary}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn a_failing_case_is_reported_with_what_was_expected_and_what_came() {
    let directory = suite(
        READS,
        "cases:\n  - name: a reader reads\n    token: { sub: alice, scope: orders:read }\n    request: { method: GET, path: /orders }\n    expect: { allow: true, policies: [reads] }\n  - name: a writer writes\n    token: { sub: alice, scope: orders:read }\n    request: { method: POST, path: /orders }\n    expect: { allow: true, policies: [writes] }\n",
    );
    let (status, stdout, _) = output(verdict().arg("test").arg(&directory));
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("  ok    a reader reads"), "{stdout}");
    assert!(stdout.contains("  FAIL  a writer writes"), "{stdout}");
    assert!(stdout.contains("expected allow, got deny"), "{stdout}");
    assert!(
        stdout.contains("expected policies [writes], got []"),
        "{stdout}"
    );
    assert!(
        stdout.contains("got: deny, status 403, error `access_denied` (no policy permitted it)"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("1 file(s), 2 case(s): 1 passed, 1 failed\n"),
        "{stdout}"
    );
}

#[test]
fn a_bad_test_file_or_policy_is_an_error_that_says_where() {
    let case =
        "  - name: c\n    token: { sub: alice }\n    request: { method: GET, path: /orders }\n";
    let cases = [
        (
            READS.to_owned(),
            format!("cases:\n{case}    expect: {{ allow: true, stauts: 200 }}\n"),
            "cases[0].expect: unknown field `stauts`",
        ),
        (
            READS.to_owned(),
            format!("cases:\n{case}    expect: {{ allow: false, error: forbidden }}\n"),
            "cases[0].expect.error: unknown error `forbidden`",
        ),
        (
            READS.to_owned(),
            format!("cases:\n{case}    expect: {{ allow: false }}\n    tokne: {{}}\n"),
            "cases[0]: unknown field `tokne`",
        ),
        (
            READS.to_owned(),
            "cases:\n  - name: c\n    token: { sub: alice }\n    request: { method: GET, path: orders }\n    expect: { allow: false }\n".to_owned(),
            "cases[0].`request.path`: must start with `/`",
        ),
        (
            "permit(principal, action, resource) when { principal.x ==  };".to_owned(),
            format!("cases:\n{case}    expect: {{ allow: false }}\n"),
            "policy.cedar:1:",
        ),
        (
            "@error(\"nope\") forbid(principal, action, resource);".to_owned(),
            format!("cases:\n{case}    expect: {{ allow: false }}\n"),
            "policy `policy.cedar#0`: unknown error code `nope` in @error",
        ),
    ];
    for (policy, tests, expected) in cases {
        let directory = suite(&policy, &tests);
        let (status, stdout, _) = output(verdict().arg("test").arg(&directory));
        assert_eq!(status.code(), Some(1), "{expected}:\n{stdout}");
        assert!(stdout.contains(expected), "{expected}:\n{stdout}");
        assert!(
            stdout.contains("could not run") || stdout.contains("FAIL"),
            "{stdout}"
        );
    }

    let (status, _, stderr) = output(verdict().arg("test").arg(tempdir()));
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("no test files"), "{stderr}");
}

#[test]
fn decide_prints_the_decision_and_why() {
    let (status, stdout, stderr) = output(verdict().args([
        "decide",
        "--policies",
        examples().to_str().unwrap(),
        "--token",
        r#"{"sub": "alice", "scope": "orders:read"}"#,
        "--method",
        "post",
        "--path",
        "/orders",
    ]));
    assert!(status.success(), "{stderr}");
    let decision: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(decision["allow"], false);
    assert_eq!(decision["status"], 403);
    assert_eq!(decision["error"], "insufficient_scope");
    assert!(
        decision["www_authenticate"]
            .as_str()
            .unwrap()
            .ends_with("scope=\"orders:write\""),
        "{decision}"
    );
    assert_eq!(decision["policies"][0], "orders-write");
    assert!(
        stderr.contains("deny, status 403, error `insufficient_scope`, scope `orders:write` (policies: orders-write)"),
        "{stderr}"
    );

    // From a file, as a configured service would decide: the configuration's headers mapping applies.
    let directory = tempdir();
    let config = directory.join("verdict.yaml");
    std::fs::write(
        &config,
        format!(
            "callers: {{ allow_unauthenticated: true }}\nissuers:\n  - {{ name: idp, issuer: \"https://idp.example.com\", audiences: [x], jwks_uri: \"https://idp.example.com/keys\", claims: {{ tenant: tid }} }}\npolicies: {{ path: {} }}\nheaders: {{ x-user: sub }}\n",
            examples().display()
        ),
    )
    .unwrap();
    let input = directory.join("input.yaml");
    std::fs::write(
        &input,
        "token: { iss: \"https://idp.example.com\", sub: bob, tid: suspended, scope: orders:read }\nrequest: { method: GET, path: /orders/1 }\ntime: 2026-03-04T09:30:00Z\n",
    )
    .unwrap();
    let (status, stdout, stderr) = output(
        verdict()
            .args(["decide", "--config"])
            .arg(&config)
            .arg("--input")
            .arg(&input),
    );
    assert!(status.success(), "{stderr}");
    let decision: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(decision["policies"][0], "suspended-tenant", "{decision}");
    assert_eq!(decision["issuer"], "https://idp.example.com");

    std::fs::write(
        &input,
        "token: { iss: \"https://idp.example.com\", sub: bob, tid: acme, scope: orders:read }\nrequest: { method: GET, path: /orders/1 }\n",
    )
    .unwrap();
    let (_, stdout, _) = output(
        verdict()
            .args(["decide", "--config"])
            .arg(&config)
            .arg("--input")
            .arg(&input),
    );
    let decision: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(decision["allow"], true, "{decision}");
    assert_eq!(decision["headers"]["x-user"], "bob");

    // Input that cannot be a request is an error, not a decision.
    let (status, stdout, stderr) = output(verdict().args([
        "decide",
        "--policies",
        examples().to_str().unwrap(),
        "--token",
        r#"{"scope": "orders:read"}"#,
        "--method",
        "GET",
        "--path",
        "/orders",
    ]));
    assert_eq!(status.code(), Some(1));
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("`token`"), "{stderr}");
}
