//! Which request fields a policy set can read, found at load from the policies themselves (DESIGN §10):
//! what a decision for one credential depends on besides the method and the path, so the decision
//! memo keys on exactly that.
//!
//! A policy reads a field by an attribute access (`resource.host`, `context.headers["x-tenant"]`,
//! `context has client_ip`). Any other use of `resource` or `context` (comparing the whole record,
//! passing it on) counts as reading every field under it: the analysis may read too much, never too
//! little. The principal and `context.token` come from the credential, which the memo keys on whole;
//! the principal's `claims` are read the same way, so that its Cedar entity holds only those.

use std::collections::BTreeSet;

use cedar_policy::Policy;
use serde_json::Value;

/// The request fields a policy set reads, beyond the method, the path and the credential. The memo
/// keys on those; the policy step builds only the attributes a policy reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    /// `resource.segments` (from the path).
    pub segments: bool,
    /// `context.token` (from the credential).
    pub token: bool,
    /// `resource.host`.
    pub host: bool,
    /// `resource.apigee`, any of its fields.
    pub apigee: bool,
    /// `context.query`.
    pub query: bool,
    /// `context.client_ip`.
    pub client_ip: bool,
    /// `context.time`: the decision may change from one second to the next.
    pub time: bool,
    /// `context.headers`.
    pub headers: NameReads,
    /// `principal.claims`.
    pub claims: NameReads,
}

/// Which names of a record (`context.headers`, `principal.claims`) a policy set reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NameReads {
    #[default]
    None,
    /// Only these names, as the policies write them.
    Named(BTreeSet<String>),
    /// The record as a whole.
    All,
}

impl NameReads {
    /// Whether a policy may read `name`.
    pub fn includes(&self, name: &str) -> bool {
        match self {
            Self::None => false,
            Self::Named(names) => names.contains(name),
            Self::All => true,
        }
    }

    /// Adds `name` to those read.
    pub fn add(&mut self, name: &str) {
        match self {
            Self::All => {}
            Self::Named(names) => {
                names.insert(name.to_owned());
            }
            Self::None => *self = Self::Named(BTreeSet::from([name.to_owned()])),
        }
    }
}

impl Reads {
    /// Everything: what a policy that cannot be read (no JSON form) is taken to read.
    fn everything() -> Self {
        Self {
            segments: true,
            token: true,
            host: true,
            apigee: true,
            query: true,
            client_ip: true,
            time: true,
            headers: NameReads::All,
            claims: NameReads::All,
        }
    }

    /// Whether a decision can depend on more than the credential, the method and the path: what a
    /// proxy keys a reused decision by (DESIGN §2, `cache_ttl`), so with such reads it may reuse none.
    pub fn beyond_route(&self) -> bool {
        self.host
            || self.apigee
            || self.query
            || self.client_ip
            || self.time
            || self.headers != NameReads::None
    }

    /// What `policies` read, together.
    pub(super) fn of<'a>(policies: impl Iterator<Item = &'a Policy>) -> Self {
        let mut reads = Self::default();
        for policy in policies {
            match policy.to_json() {
                Ok(est) => reads.walk(&est),
                Err(_) => return Self::everything(),
            }
        }
        reads
    }

    /// Records what the expression (or policy) `value`, in Cedar's JSON form, reads.
    fn walk(&mut self, value: &Value) {
        match value {
            Value::Object(fields) => {
                for (key, inner) in fields {
                    if (key == "." || key == "has") && self.access(inner) {
                        continue;
                    }
                    if key == "Var" {
                        self.variable(inner.as_str().unwrap_or_default());
                        continue;
                    }
                    self.walk(inner);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| self.walk(item)),
            _ => {}
        }
    }

    /// An attribute access `{"left": ..., "attr": ...}` on `resource`, `context`, `context.headers`,
    /// `principal.claims` or of `principal.claims` itself: records it and answers true; false for any
    /// other, to be walked.
    fn access(&mut self, access: &Value) -> bool {
        let (Some(left), Some(attribute)) = (
            access.get("left"),
            access.get("attr").and_then(Value::as_str),
        ) else {
            return false;
        };
        match variable_of(left) {
            Some("resource") => {
                match attribute {
                    "host" => self.host = true,
                    "apigee" => self.apigee = true,
                    "segments" => self.segments = true,
                    // `path` is always there.
                    _ => {}
                }
                true
            }
            Some("context") => {
                match attribute {
                    "query" => self.query = true,
                    "client_ip" => self.client_ip = true,
                    "time" => self.time = true,
                    "headers" => self.headers = NameReads::All,
                    "token" => self.token = true,
                    // Another name is in no request.
                    _ => {}
                }
                true
            }
            Some("principal") if attribute == "claims" => {
                // The record used whole: an access into it is matched below, before this.
                self.claims = NameReads::All;
                true
            }
            _ if is_access(left, "context", "headers") => {
                self.headers.add(attribute);
                true
            }
            _ if is_access(left, "principal", "claims") => {
                self.claims.add(attribute);
                true
            }
            _ => false,
        }
    }

    /// `resource` or `context` used whole.
    fn variable(&mut self, name: &str) {
        match name {
            "resource" => {
                self.host = true;
                self.apigee = true;
                self.segments = true;
            }
            "context" => *self = Self::everything(),
            _ => {}
        }
    }
}

/// The name of `{"Var": name}`.
fn variable_of(value: &Value) -> Option<&str> {
    value.get("Var")?.as_str()
}

/// Whether `value` is `variable.attribute` (`context.headers`, say).
fn is_access(value: &Value, variable: &str, attribute: &str) -> bool {
    value.get(".").is_some_and(|access| {
        access.get("attr").and_then(Value::as_str) == Some(attribute)
            && access.get("left").and_then(variable_of) == Some(variable)
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use super::*;

    fn reads(text: &str) -> Reads {
        let set = cedar_policy::PolicySet::from_str(text).unwrap_or_else(|error| panic!("{error}"));
        Reads::of(set.policies())
    }

    #[test]
    fn each_field_is_read_only_where_a_policy_reads_it() {
        let base = r#"permit (principal, action == Action::"GET", resource)
            when { resource.path like "/orders*" && principal.scopes.contains("orders:read")
                   && resource.segments["1"] == "x" && context.token.kid == "k" };"#;
        assert_eq!(
            reads(base),
            Reads {
                segments: true,
                token: true,
                ..Reads::default()
            }
        );
        let base = r#"permit (principal, action == Action::"GET", resource)
            when { resource.path like "/orders*" && principal.scopes.contains("orders:read") };"#;
        assert_eq!(reads(base), Reads::default());

        let cases = [
            (
                r#"when { resource.host == "a" }"#,
                Reads {
                    host: true,
                    ..Reads::default()
                },
            ),
            (
                r#"when { resource.apigee.product == "gold" }"#,
                Reads {
                    apigee: true,
                    ..Reads::default()
                },
            ),
            (
                r#"when { context.query like "*debug*" }"#,
                Reads {
                    query: true,
                    ..Reads::default()
                },
            ),
            (
                r#"unless { context has client_ip && context.client_ip.isInRange(ip("10.0.0.0/8")) }"#,
                Reads {
                    client_ip: true,
                    ..Reads::default()
                },
            ),
            (
                r#"when { context.time.hour < 18 }"#,
                Reads {
                    time: true,
                    ..Reads::default()
                },
            ),
            (
                r#"when { context.headers has "x-tenant" && context.headers["x-tenant"] == principal.tenant }"#,
                Reads {
                    headers: NameReads::Named(BTreeSet::from(["x-tenant".to_owned()])),
                    ..Reads::default()
                },
            ),
            (
                r#"when { context.headers == {} }"#,
                Reads {
                    headers: NameReads::All,
                    ..Reads::default()
                },
            ),
            (
                r#"when { resource == Route::"/a" || resource in Route::"/b" }"#,
                Reads {
                    host: true,
                    apigee: true,
                    segments: true,
                    ..Reads::default()
                },
            ),
            (r#"when { context == {} }"#, Reads::everything()),
            (
                r#"when { resource.segments["0"] == "orders" && context.token.kid == "k" }"#,
                Reads {
                    segments: true,
                    token: true,
                    ..Reads::default()
                },
            ),
        ];
        for (condition, expected) in cases {
            let text = format!("{base}\nforbid (principal, action, resource) {condition};");
            assert_eq!(reads(&text), expected, "{condition}");
        }
    }

    #[test]
    fn the_claims_read_are_found_by_name() {
        let claims = |condition: &str| {
            reads(&format!(
                "permit (principal, action, resource) when {{ {condition} }};"
            ))
            .claims
        };
        let named = |names: &[&str]| {
            NameReads::Named(names.iter().map(|name| (*name).to_owned()).collect())
        };
        assert_eq!(claims(r#"principal.subject == "a""#), NameReads::None);
        assert_eq!(
            claims(r#"principal.claims.tenant == "acme" && principal.claims has dept"#),
            named(&["dept", "tenant"])
        );
        assert_eq!(
            claims(r#"principal.claims["org"].id == 1 && principal.claims.groups.contains("x")"#),
            named(&["groups", "org"])
        );
        assert_eq!(claims(r#"principal.claims == {}"#), NameReads::All);
        assert_eq!(
            claims(r#"principal.claims.a == principal.claims"#),
            NameReads::All
        );
        assert_eq!(claims(r#"context == {}"#), NameReads::All);
        assert!(named(&["a"]).includes("a") && !named(&["a"]).includes("b"));
        assert!(NameReads::All.includes("b") && !NameReads::None.includes("a"));
    }

    #[test]
    fn only_the_credential_the_method_and_the_path_stay_within_the_route() {
        let cases = [
            (r#"resource.path like "/orders*""#, false),
            (r#"resource.segments["0"] == "orders""#, false),
            (
                r#"context.token.kid == "k" && principal.claims.tenant == "acme""#,
                false,
            ),
            (r#"resource.host == "a""#, true),
            (r#"resource.apigee.app == "a""#, true),
            (r#"context.query == """#, true),
            (r#"context has client_ip"#, true),
            (r#"context.time.hour < 18"#, true),
            (r#"context.headers has "x-tenant""#, true),
            (r#"resource == Route::"/a""#, true),
        ];
        for (condition, beyond) in cases {
            let text = format!("permit (principal, action, resource) when {{ {condition} }};");
            assert_eq!(reads(&text).beyond_route(), beyond, "{condition}");
        }
    }
}
