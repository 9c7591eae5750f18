//! Policy slices: each request is evaluated against only the policies that could apply to its method and
//! the first segment of its path, so a large policy set costs in proportion to what concerns a request.
//!
//! What a policy can apply to, its [`Reach`], is read at load from its action constraint (`action ==
//! Action::"GET"`, `action in [...]`) and from a literal path prefix: `resource == Route::"/a/b"` in its
//! head, or a `resource.path like "/a/..."` conjunct of a `when` clause. A policy left out of a request's
//! slice could not have been satisfied by it, so the decision is the same as evaluating every policy.
//! (Action entities carry no parents here, so `action in [...]` is membership in the list.)
//!
//! A request on a segment is one call to Cedar: the policies that require no segment are copied into
//! each segment's set at load, within [`FOLD_BUDGET`] copies (past it, two calls: the policies for any
//! path, then the segment's).

use std::collections::{BTreeSet, HashMap};

use cedar_policy::{
    ActionConstraint, Authorizer, Decision, Entities, EntityUid, Policy, PolicySet, Request,
    ResourceConstraint, Response,
};
use serde_json::Value;

use super::reads::{PatternChar, ROUTE_TYPE, path_pattern};

/// The entity type whose ids a policy's head names for methods (and [`ROUTE_TYPE`] for routes).
const ACTION_TYPE: &str = "Action";

/// The requests a policy can apply to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Reach {
    /// The methods it names, or `None` for any.
    methods: Option<BTreeSet<String>>,
    /// The first path segment it requires, if it requires one.
    segment: Option<String>,
}

impl Reach {
    pub(super) fn of(policy: &Policy) -> Self {
        let methods = match policy.action_constraint() {
            ActionConstraint::Any => None,
            ActionConstraint::Eq(action) => Some(action_ids([action].iter())),
            ActionConstraint::In(actions) => Some(action_ids(actions.iter())),
        };
        let head_segment = match policy.resource_constraint() {
            ResourceConstraint::Eq(route) if route.type_name().to_string() == ROUTE_TYPE => {
                first_segment(route.id().unescaped()).map(str::to_owned)
            }
            _ => None,
        };
        let segment = head_segment.or_else(|| {
            let est = policy.to_json().ok()?;
            condition_segment(&est)
        });
        Self { methods, segment }
    }

    /// Whether a request with `method` whose path's first segment is `segment` may be in reach.
    pub(super) fn admits(&self, method: &str, segment: Option<&str>) -> bool {
        let method_ok = self
            .methods
            .as_ref()
            .is_none_or(|methods| methods.contains(method));
        let segment_ok = self
            .segment
            .as_deref()
            .is_none_or(|required| segment == Some(required));
        method_ok && segment_ok
    }
}

fn action_ids<'a>(actions: impl Iterator<Item = &'a EntityUid>) -> BTreeSet<String> {
    actions
        .filter(|action| action.type_name().to_string() == ACTION_TYPE)
        .map(|action| action.id().unescaped().to_owned())
        .collect()
}

/// The first segment of a path, when the path is long enough to show all of it (`/a/...`).
fn first_segment(path: &str) -> Option<&str> {
    let (segment, _) = path.strip_prefix('/')?.split_once('/')?;
    (!segment.is_empty()).then_some(segment)
}

/// The segment a `resource.path like "/segment/..."` conjunct of some `when` clause requires, read from
/// the policy's JSON form.
fn condition_segment(est: &Value) -> Option<String> {
    est.get("conditions")?
        .as_array()?
        .iter()
        .filter(|condition| condition.get("kind").and_then(Value::as_str) == Some("when"))
        .filter_map(|condition| condition.get("body"))
        .find_map(conjunct_segment)
}

fn conjunct_segment(expression: &Value) -> Option<String> {
    if let Some(and) = expression.get("&&") {
        return and
            .get("left")
            .and_then(conjunct_segment)
            .or_else(|| and.get("right").and_then(conjunct_segment));
    }
    let pattern = path_pattern(expression.get("like")?)?;
    let prefix: String = pattern
        .iter()
        .map_while(|element| match element {
            PatternChar::Char(c) => Some(*c),
            PatternChar::Any => None,
        })
        .collect();
    first_segment(&prefix).map(str::to_owned)
}

/// The first segment of a request's path, which picks its slice: the decision memo keys on it too.
pub fn slice_segment(path: &str) -> Option<&str> {
    path.strip_prefix('/')?.split('/').next()
}

/// A policy set cut into slices by method and first path segment.
#[derive(Debug, Default)]
pub(super) struct Slices {
    by_method: HashMap<String, MethodSlices>,
    /// For a method no policy names: the policies that name none.
    other_methods: MethodSlices,
}

#[derive(Debug, Default)]
struct MethodSlices {
    /// Policies that require no path segment.
    any_path: Option<PolicySet>,
    by_segment: HashMap<String, PolicySet>,
    /// Whether each `by_segment` set also holds the `any_path` policies, so that a request on a
    /// segment is one call to Cedar rather than two.
    folded: bool,
}

impl MethodSlices {
    fn add(&mut self, policy: &Policy, segment: Option<&String>) -> Result<(), String> {
        let set = match segment {
            None => self.any_path.get_or_insert_with(PolicySet::new),
            Some(segment) => self.by_segment.entry(segment.clone()).or_default(),
        };
        insert(set, policy)
    }

    /// Copies the `any_path` policies into every segment's set, if that takes at most `budget`
    /// copies; returns the copies made.
    fn fold(&mut self, budget: usize) -> Result<usize, String> {
        let Some(any_path) = &self.any_path else {
            return Ok(0);
        };
        let copies = any_path.policies().count() * self.by_segment.len();
        if copies > budget {
            return Ok(0);
        }
        for set in self.by_segment.values_mut() {
            for policy in any_path.policies() {
                insert(set, policy)?;
            }
        }
        self.folded = true;
        Ok(copies)
    }
}

fn insert(set: &mut PolicySet, policy: &Policy) -> Result<(), String> {
    set.add(policy.clone()).map_err(|error| error.to_string())
}

/// The policy copies [`Slices::build`] may make to fold the policies that require no segment into
/// the segments' sets: a set with few of those (the usual case) is folded, one with many is not, and
/// pays a second call to Cedar per request rather than the memory.
pub(super) const FOLD_BUDGET: usize = 4096;

impl Slices {
    /// The slices of `policies`, folded within `fold_budget` policy copies.
    pub(super) fn build<'a>(
        policies: impl Iterator<Item = (&'a Policy, &'a Reach)> + Clone,
        fold_budget: usize,
    ) -> Result<Self, String> {
        let mut slices = Self::default();
        for (_, reach) in policies.clone() {
            for method in reach.methods.iter().flatten() {
                slices.by_method.entry(method.clone()).or_default();
            }
        }
        for (policy, reach) in policies {
            let segment = reach.segment.as_ref();
            match &reach.methods {
                Some(methods) => {
                    for method in methods {
                        if let Some(slice) = slices.by_method.get_mut(method) {
                            slice.add(policy, segment)?;
                        }
                    }
                }
                None => {
                    for slice in slices.by_method.values_mut() {
                        slice.add(policy, segment)?;
                    }
                    slices.other_methods.add(policy, segment)?;
                }
            }
        }
        // In the methods' order, so that which of them a tight budget folds is the same every time.
        let mut by_name: Vec<_> = slices.by_method.iter_mut().collect();
        by_name.sort_by_key(|(name, _)| *name);
        let mut budget = fold_budget;
        for slice in by_name
            .into_iter()
            .map(|(_, slice)| slice)
            .chain([&mut slices.other_methods])
        {
            budget -= slice.fold(budget)?;
        }
        Ok(slices)
    }

    /// Authorizes `request` for `method` and `path` against the policies in reach, with the answer
    /// evaluating every policy would give: allow when a permit and no forbid was satisfied, and the
    /// satisfied forbids (on a deny) or permits (on an allow) as the reasons.
    pub(super) fn authorize(
        &self,
        authorizer: &Authorizer,
        request: &Request,
        entities: &Entities,
        method: &str,
        path: &str,
    ) -> Outcome {
        let slices = self.by_method.get(method).unwrap_or(&self.other_methods);
        let segment_slice = slice_segment(path).and_then(|segment| slices.by_segment.get(segment));
        let sets = match segment_slice {
            Some(set) if slices.folded => [Some(set), None],
            _ => [slices.any_path.as_ref(), segment_slice],
        };
        let mut outcome = Outcome::default();
        for set in sets.into_iter().flatten() {
            outcome.merge(&authorizer.is_authorized(request, set, entities));
        }
        outcome
    }
}

/// Cedar's answer over several slices.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub(super) satisfied_permits: Vec<String>,
    pub(super) satisfied_forbids: Vec<String>,
    pub(super) errors: Vec<String>,
}

impl Outcome {
    fn merge(&mut self, response: &Response) {
        // Cedar's reasons are the satisfied permits on an allow, and the satisfied forbids (or none) on
        // a deny.
        let reasons = response.diagnostics().reason().map(ToString::to_string);
        match response.decision() {
            Decision::Allow => self.satisfied_permits.extend(reasons),
            Decision::Deny => self.satisfied_forbids.extend(reasons),
        }
        self.errors
            .extend(response.diagnostics().errors().map(ToString::to_string));
    }

    pub(super) fn allow(&self) -> bool {
        self.satisfied_forbids.is_empty() && !self.satisfied_permits.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn reach(text: &str) -> Reach {
        Reach::of(&Policy::from_str(text).unwrap_or_else(|error| panic!("{error}")))
    }

    fn methods(names: &[&str]) -> Option<BTreeSet<String>> {
        Some(names.iter().map(|name| (*name).to_owned()).collect())
    }

    #[test]
    fn reach_comes_from_the_action_constraint_and_a_literal_path_prefix() {
        let cases = [
            ("permit(principal, action, resource);", None, None),
            (
                "permit(principal, action == Action::\"GET\", resource);",
                methods(&["GET"]),
                None,
            ),
            (
                "permit(principal, action in [Action::\"POST\", Action::\"PUT\"], resource) when { resource.path like \"/orders/*\" };",
                methods(&["POST", "PUT"]),
                Some("orders"),
            ),
            (
                "permit(principal, action, resource == Route::\"/reports/daily\");",
                None,
                Some("reports"),
            ),
            (
                "forbid(principal, action, resource) when { principal.tenant == \"x\" && (resource.path like \"/t/*\" && true) };",
                None,
                Some("t"),
            ),
            // A prefix that does not close its first segment, or a segment only an `unless` names, or
            // an `||`, requires nothing.
            (
                "permit(principal, action, resource) when { resource.path like \"/orders*\" };",
                None,
                None,
            ),
            (
                "forbid(principal, action, resource) unless { resource.path like \"/a/*\" };",
                None,
                None,
            ),
            (
                "permit(principal, action, resource) when { resource.path like \"/a/*\" || resource.path like \"/b/*\" };",
                None,
                None,
            ),
        ];
        for (text, methods, segment) in cases {
            assert_eq!(
                reach(text),
                Reach {
                    methods,
                    segment: segment.map(str::to_owned)
                },
                "{text}"
            );
        }
    }

    #[test]
    fn a_reach_admits_only_requests_it_could_apply_to() {
        let reach = reach(
            "permit(principal, action == Action::\"GET\", resource) when { resource.path like \"/a/*\" };",
        );
        assert!(reach.admits("GET", Some("a")));
        assert!(!reach.admits("GET", Some("b")));
        assert!(!reach.admits("POST", Some("a")));
        assert!(!reach.admits("GET", None));
    }
}
