//! Which request fields a policy set can read, found at load from the policies themselves (DESIGN §10):
//! what a decision for one credential depends on besides the method and the path, so the decision
//! memo keys on exactly that.
//!
//! A policy reads a field by an attribute access (`resource.host`, `context.headers["x-tenant"]`,
//! `context has client_ip`). Any other use of `resource` or `context` (comparing the whole record,
//! passing it on) counts as reading every field under it: the analysis may read too much, never too
//! little. The principal and `context.token` come from the credential, which the memo keys on whole;
//! the principal's `claims` are read the same way, so that its Cedar entity holds only those.
//!
//! The path is in every request, but a policy set that only tests it against constants
//! (`resource.path like "/orders/*"`, `resource.path == "/health"`, `resource == Route::"/health"`)
//! tells two paths apart only by those tests' results ([`PathReads`]): the memo keys on the results,
//! and `/orders/1` and `/orders/2` share an entry.

use std::collections::BTreeSet;

use cedar_policy::{Policy, ResourceConstraint};
use serde_json::Value;

/// The resource's entity type: its id is the path.
pub(super) const ROUTE_TYPE: &str = "Route";

/// The most path tests [`PathReads::Tests`] holds: past these, the memo keys on the whole path, since
/// running every test on each request would cost more than the memo saves.
const MAX_PATH_TESTS: usize = 64;

/// The request fields a policy set reads, beyond the method and the credential. The memo keys on
/// those; the policy step builds only the attributes a policy reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    /// `resource.path` (and the resource's id, which is the path).
    pub path: PathReads,
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

/// How a policy set reads the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathReads {
    /// Only by these tests against constants, each once: two paths that pass the same ones are the
    /// same to the policies. Empty when no policy reads the path.
    Tests(Vec<PathTest>),
    /// Some other way (`resource.segments`, the resource used whole, a comparison with another
    /// attribute), or by more than [`MAX_PATH_TESTS`] tests.
    Whole,
}

impl Default for PathReads {
    fn default() -> Self {
        Self::Tests(Vec::new())
    }
}

impl PathReads {
    /// The tests `path` passes, bit `i` for the `i`th; `None` when the path is read whole.
    pub fn passed(&self, path: &str) -> Option<u64> {
        let Self::Tests(tests) = self else {
            return None;
        };
        Some(
            tests
                .iter()
                .enumerate()
                .filter(|(_, test)| test.passes(path))
                .fold(0, |passed, (bit, _)| passed | 1 << bit),
        )
    }

    fn add(&mut self, test: PathTest) {
        if let Self::Tests(tests) = self
            && !tests.contains(&test)
        {
            tests.push(test);
            if tests.len() > MAX_PATH_TESTS {
                *self = Self::Whole;
            }
        }
    }
}

/// A test of the path against a constant, as Cedar runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathTest {
    /// `resource.path like "..."`.
    Like(Box<[PatternChar]>),
    /// `resource.path == "..."` (or `!=`, its negation), and `resource == Route::"..."`.
    Is(Box<str>),
}

/// An element of a `like` pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternChar {
    /// This character.
    Char(char),
    /// `*`: any run of characters, the empty one too.
    Any,
}

impl PathTest {
    /// Whether `path` passes, with Cedar's semantics (a pattern matches by characters, whole).
    pub fn passes(&self, path: &str) -> bool {
        match self {
            Self::Is(literal) => **literal == *path,
            Self::Like(pattern) => like(pattern, path),
        }
    }
}

/// Whether `text` matches `pattern`: each character in turn, backtracking only to the last `*` seen
/// (a later `*` can match all that an earlier one could, so no other choice needs revisiting).
fn like(pattern: &[PatternChar], text: &str) -> bool {
    let mut rest = pattern;
    let mut text_at = text.chars();
    // After the last `*`: the pattern past it, and the text from where it next tries to match.
    let mut retry: Option<(&[PatternChar], std::str::Chars<'_>)> = None;
    loop {
        let mut ahead = text_at.clone();
        let next = ahead.next();
        match (rest.split_first(), next) {
            (Some((PatternChar::Any, after)), _) => {
                rest = after;
                retry = Some((after, text_at.clone()));
            }
            (Some((PatternChar::Char(expected), after)), Some(found)) if *expected == found => {
                rest = after;
                text_at = ahead;
            }
            (None, None) => return true,
            _ => {
                // Let the last `*` take one more character, if there is one left.
                let Some((after_star, mut from)) = retry.take() else {
                    return false;
                };
                if from.next().is_none() {
                    return false;
                }
                rest = after_star;
                text_at = from.clone();
                retry = Some((after_star, from));
            }
        }
    }
}

/// The pattern of `resource.path like "..."`, given the `like` operator's operands
/// (`{"left": ..., "pattern": [...]}` in Cedar's JSON form, whose elements are `{"Literal": "text"}`
/// and `"Wildcard"`); `None` for a `like` on anything else.
pub(super) fn path_pattern(like: &Value) -> Option<Box<[PatternChar]>> {
    if !like
        .get("left")
        .is_some_and(|left| is_access(left, "resource", "path"))
    {
        return None;
    }
    let mut pattern = Vec::new();
    for element in like.get("pattern")?.as_array()? {
        match element {
            Value::String(wildcard) if wildcard == "Wildcard" => pattern.push(PatternChar::Any),
            _ => pattern.extend(
                element
                    .get("Literal")?
                    .as_str()?
                    .chars()
                    .map(PatternChar::Char),
            ),
        }
    }
    Some(pattern.into())
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
            path: PathReads::Whole,
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
            match policy.resource_constraint() {
                ResourceConstraint::Any => {}
                ResourceConstraint::Eq(route) if route.type_name().to_string() == ROUTE_TYPE => {
                    reads.path.add(PathTest::Is(route.id().unescaped().into()));
                }
                // `in` and `is` are left to Cedar's entity semantics: the path is read whole.
                _ => reads.path = PathReads::Whole,
            }
            match policy.to_json() {
                Ok(est) => reads.walk(&est),
                Err(_) => return Self::everything(),
            }
        }
        if reads.segments {
            // The segments are the path too.
            reads.path = PathReads::Whole;
        }
        reads
    }

    /// Records what the expression (or policy) `value`, in Cedar's JSON form, reads.
    fn walk(&mut self, value: &Value) {
        match value {
            Value::Object(fields) => {
                for (key, inner) in fields {
                    if (key == "." || key == "has") && self.access(inner, key == "has") {
                        continue;
                    }
                    if let Some(test) = path_test(key, inner) {
                        self.path.add(test);
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

    /// An attribute access `{"left": ..., "attr": ...}` (or a `has` test, `only_has`) on `resource`,
    /// `context`, `context.headers`, `principal.claims` or of `principal.claims` itself: records it
    /// and answers true; false for any other, to be walked.
    fn access(&mut self, access: &Value, only_has: bool) -> bool {
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
                    // Read other than by a test against a constant (those are matched before this).
                    "path" if !only_has => self.path = PathReads::Whole,
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
                self.path = PathReads::Whole;
                self.host = true;
                self.apigee = true;
                self.segments = true;
            }
            "context" => *self = Self::everything(),
            _ => {}
        }
    }
}

/// The test `{key: inner}` makes of the path, if it is `resource.path like "..."` or `resource.path`
/// compared (`==`, `!=`) with a string constant, either way round.
fn path_test(key: &str, inner: &Value) -> Option<PathTest> {
    let is_path = |value: &Value| is_access(value, "resource", "path");
    match key {
        "like" => path_pattern(inner).map(PathTest::Like),
        "==" | "!=" => {
            let (left, right) = (inner.get("left")?, inner.get("right")?);
            let constant = if is_path(left) {
                right
            } else if is_path(right) {
                left
            } else {
                return None;
            };
            Some(PathTest::Is(constant.get("Value")?.as_str()?.into()))
        }
        _ => None,
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

    /// The fields read but the path, which the next test covers.
    fn fields(text: &str) -> Reads {
        Reads {
            path: PathReads::default(),
            ..reads(text)
        }
    }

    #[test]
    fn each_field_is_read_only_where_a_policy_reads_it() {
        let reads = fields;
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
            (
                r#"when { context == {} }"#,
                Reads {
                    path: PathReads::default(),
                    ..Reads::everything()
                },
            ),
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

    fn like_of(pattern: &str) -> PathTest {
        PathTest::Like(
            pattern
                .chars()
                .map(|c| match c {
                    '*' => PatternChar::Any,
                    c => PatternChar::Char(c),
                })
                .collect(),
        )
    }

    #[test]
    fn a_path_tested_only_against_constants_is_read_by_those_tests() {
        let path = |text: &str| reads(text).path;
        let is = |literal: &str| PathTest::Is(literal.into());
        assert_eq!(
            path(
                r#"permit (principal, action, resource == Route::"/status");
                    permit (principal, action, resource)
                    when { (resource.path like "/orders/*/items*" || "/health" == resource.path)
                           && resource has path && resource.path != "/status"
                           && resource.path like "/orders/*/items*" };
                    forbid (principal, action, resource) unless { resource.path like "/a\*b*" };"#
            ),
            PathReads::Tests(vec![
                is("/status"),
                like_of("/orders/*/items*"),
                is("/health"),
                PathTest::Like(
                    [
                        PatternChar::Char('/'),
                        PatternChar::Char('a'),
                        PatternChar::Char('*')
                    ]
                    .into_iter()
                    .chain([PatternChar::Char('b'), PatternChar::Any])
                    .collect()
                ),
            ])
        );
        assert_eq!(
            path(r#"permit (principal, action, resource) when { principal.subject == "a" };"#),
            PathReads::Tests(Vec::new())
        );
        let whole = [
            r#"when { resource.segments["0"] == "orders" }"#,
            r#"when { resource == Route::"/a" }"#,
            r#"when { resource.path == resource.host }"#,
            r#"when { resource.path == principal.subject }"#,
            r#"when { [resource.path].contains("/a") }"#,
            r#"when { (if principal.subject == "a" then resource.path else "/b") like "/a*" }"#,
            r#"when { resource.path == 1 }"#,
            r#"when { resource["path"] like "/a*" && context == {} }"#,
        ];
        for condition in whole {
            let text = format!(
                r#"permit (principal, action, resource) when {{ resource.path like "/x*" }};
                   forbid (principal, action, resource) {condition};"#
            );
            assert_eq!(path(&text), PathReads::Whole, "{condition}");
        }
        for head in [r#"resource in Route::"/a""#, "resource is Route"] {
            let text = format!("permit (principal, action, {head});");
            assert_eq!(path(&text), PathReads::Whole, "{head}");
        }
        let many: String = (0..=MAX_PATH_TESTS)
            .map(|n| {
                format!(
                    r#"permit (principal, action, resource) when {{ resource.path == "/{n}" }};"#
                )
            })
            .collect();
        assert_eq!(path(&many), PathReads::Whole);
    }

    #[test]
    fn the_tests_a_path_passes_are_its_bits() {
        let path = PathReads::Tests(vec![
            like_of("/orders*"),
            PathTest::Is("/health".into()),
            like_of("*/items/*"),
        ]);
        assert_eq!(path.passed("/orders/1"), Some(0b001));
        assert_eq!(path.passed("/orders/1/items/2"), Some(0b101));
        assert_eq!(path.passed("/health"), Some(0b010));
        assert_eq!(path.passed("/healthz"), Some(0));
        assert_eq!(PathReads::Whole.passed("/orders/1"), None);
    }

    /// A pattern of `a`, `é`, `/`, a literal `*` and the wildcard, in Cedar's source form and as
    /// [`PatternChar`]s.
    fn any_pattern() -> impl proptest::strategy::Strategy<Value = (String, Vec<PatternChar>)> {
        use proptest::prelude::*;
        proptest::collection::vec(0..5_u8, 0..8).prop_map(|elements| {
            elements
                .iter()
                .map(|element| match element {
                    0 => ("a", PatternChar::Char('a')),
                    1 => ("é", PatternChar::Char('é')),
                    2 => ("/", PatternChar::Char('/')),
                    3 => ("\\*", PatternChar::Char('*')),
                    _ => ("*", PatternChar::Any),
                })
                .unzip()
        })
    }

    proptest::proptest! {
        // As the integration tests' runner: a failure is reported, not written into the tree.
        #![proptest_config(proptest::prelude::ProptestConfig {
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// The memo keys on [`like`]'s answers in place of the path, so they must be Cedar's own.
        #[test]
        fn like_matches_as_cedar_does(
            (source, pattern) in any_pattern(),
            text in "[aé/*]{0,8}",
        ) {
            let expression = cedar_policy::Expression::from_str(&format!(r#""{text}" like "{source}""#))
                .unwrap_or_else(|error| panic!("{error}"));
            let anyone = cedar_policy::EntityUid::from_str(r#"User::"a""#).unwrap_or_else(|error| panic!("{error}"));
            let request = cedar_policy::Request::new(
                anyone.clone(),
                anyone.clone(),
                anyone,
                cedar_policy::Context::empty(),
                None,
            )
            .unwrap_or_else(|error| panic!("{error}"));
            let cedar = cedar_policy::eval_expression(&request, &cedar_policy::Entities::empty(), &expression);
            let cedar = matches!(cedar, Ok(cedar_policy::EvalResult::Bool(true)));
            proptest::prop_assert_eq!(like(&pattern, &text), cedar, "{:?} like {:?}", text, source);
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
