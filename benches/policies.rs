//! How policy evaluation grows with the size of the policy set: the policy step of one decision against
//! 10, 100 and 1,000 policies written like the example library. Run with `cargo bench --bench
//! policies`; the method and the latest figures are in `BENCHMARKS.md`.
//!
//! The set is built from services `svc0`, `svc1`, ...: each has a read and a write permit with `@scope`,
//! a role-gated delete, a tenant-isolation forbid on `/svcN/tenants/*` and an IP allowlist for its admin
//! routes, so five policies per service. The request reads `/svc0/items/42` with the read scope, which
//! one permit allows; every other policy is evaluated and does not apply. A deny that asks for a scope
//! (`@scope`, evaluated only on a deny) is measured too. Each measured outcome is checked.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context as _, bail};
use criterion::{BenchmarkId, Criterion};
use serde_json::json;
use verdict::config::ClaimNames;
use verdict::credential::{Credential, Provenance, TimeRules};
use verdict::decision::{DecisionInput, policy_request};
use verdict::policy::{DenyCode, NameReads, PolicyFile, PolicySet, PreparedPrincipal};

/// The policy-set sizes measured.
const SIZES: [usize; 3] = [10, 100, 1_000];
/// Policies written per service.
const POLICIES_PER_SERVICE: usize = 5;
/// 2027-01-15T10:00:00Z.
const NOW: i64 = 1_800_007_200;

fn main() -> anyhow::Result<()> {
    let mut criterion = Criterion::default().configure_from_args();
    let reader = token(&["svc0:read"])?;
    let no_scope = token(&[])?;
    let input = input();
    let mut group = criterion.benchmark_group("policies");
    let mut wrong = 0_u64;
    for size in SIZES {
        let policies = policy_set(size)?;
        if policies.len() != size {
            bail!("built {} policies, meant {size}", policies.len());
        }
        // The same mapping from token and input to a policy request that `Engine::decide` uses.
        let reader_principal = prepare(&reader, &policies)?;
        let allowed = policy_request(&reader_principal, &reader, &input, &input.path, NOW);
        group.bench_with_input(
            BenchmarkId::new("allow", size),
            &allowed,
            |bencher, request| {
                bencher.iter(|| {
                    let outcome = policies.evaluate(black_box(request));
                    wrong += u64::from(!outcome.as_ref().is_ok_and(|outcome| outcome.allow));
                    outcome
                });
            },
        );
        let no_scope_principal = prepare(&no_scope, &policies)?;
        let lacking = policy_request(&no_scope_principal, &no_scope, &input, &input.path, NOW);
        group.bench_with_input(
            BenchmarkId::new("deny_insufficient_scope", size),
            &lacking,
            |bencher, request| {
                bencher.iter(|| {
                    let outcome = policies.evaluate(black_box(request));
                    wrong += u64::from(!outcome.as_ref().is_ok_and(|outcome| {
                        !outcome.allow && outcome.reason.code == DenyCode::InsufficientScope
                    }));
                    outcome
                });
            },
        );
    }
    group.finish();
    criterion.final_summary();
    if wrong > 0 {
        bail!("{wrong} measured evaluations did not decide as expected");
    }
    Ok(())
}

/// `size` policies, five per service.
fn policy_set(size: usize) -> anyhow::Result<PolicySet> {
    let mut text = String::new();
    for service in 0..size.div_ceil(POLICIES_PER_SERVICE) {
        text.push_str(&format!(
            r#"
@id("svc{service}-read")
@scope("svc{service}:read")
permit (principal, action in [Action::"GET", Action::"HEAD"], resource)
when {{ resource.path like "/svc{service}/*" && principal.scopes.contains("svc{service}:read") }};

@id("svc{service}-write")
@scope("svc{service}:write")
permit (principal, action in [Action::"POST", Action::"PUT", Action::"PATCH"], resource)
when {{ resource.path like "/svc{service}/*" && principal.scopes.contains("svc{service}:write") }};

@id("svc{service}-delete")
permit (principal in Role::"svc{service}-admin", action == Action::"DELETE", resource)
when {{ resource.path like "/svc{service}/*" }};

@id("svc{service}-tenants")
@description("another tenant's data")
forbid (principal, action, resource)
when {{ resource.path like "/svc{service}/tenants/*" }}
unless {{ resource.segments has "2" && resource.segments["2"] == principal.tenant }};

@id("svc{service}-admin-network")
forbid (principal, action, resource)
when {{ resource.path like "/svc{service}/admin*" }}
unless {{ context has client_ip && context.client_ip.isInRange(ip("10.0.0.0/8")) }};
"#
        ));
    }
    PolicySet::compile(vec![PolicyFile {
        name: "services.cedar".into(),
        text,
    }])
    .map_err(|problems| anyhow::anyhow!(problems.join("\n")))
}

fn token(scopes: &[&str]) -> anyhow::Result<Credential> {
    let claims = json!({
        "iss": "https://idp.example.com",
        "sub": "alice",
        "scope": scopes.join(" "),
        "roles": ["staff"],
        "tenant": "acme",
        "iat": NOW - 60,
        "exp": NOW + 600,
    });
    verified(claims)
}

/// The principal of `token` with the claims `policies` read, as `Decider::prepare` builds it.
fn prepare(token: &Credential, policies: &PolicySet) -> anyhow::Result<PreparedPrincipal> {
    PreparedPrincipal::new(&token.principal(&token.claims()), &policies.reads().claims)
        .map_err(|error| anyhow::anyhow!("preparing the principal: {error}"))
}

fn verified(claims: serde_json::Value) -> anyhow::Result<Credential> {
    let serde_json::Value::Object(claims) = claims else {
        bail!("claims must be an object");
    };
    Credential::from_claims(
        claims,
        &ClaimNames::default(),
        Provenance {
            issuer_index: 0,
            issuer: &std::sync::Arc::from("https://idp.example.com"),
            kid: "k1",
            algorithm: None,
            typ: "at+jwt",
            rules: TimeRules::new(std::time::Duration::ZERO, None),
            keep: &NameReads::All,
        },
    )
    .context("reading the principal")
}

/// `GET /svc0/items/42` from 203.0.113.7, as the proxy describes it.
fn input() -> DecisionInput {
    DecisionInput {
        method: "GET".into(),
        path: "/svc0/items/42".into(),
        host: "api.example.com".into(),
        client_ip: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))),
        ..DecisionInput::default()
    }
}
