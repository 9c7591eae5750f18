//! Cedar policies: loading and compiling a policy set, and evaluating one request against it.
//!
//! This module knows Cedar and nothing of HTTP. [`PolicySet::evaluate`] takes a [`PolicyRequest`] (who is
//! asking, for which method and route, in what context) and returns a plain [`PolicyOutcome`]. The entity
//! model is DESIGN §4: principal `User`, `Client` or `ApiKey` with `Role` parents, action
//! `Action::"<METHOD>"`, resource `Route::"<path>"`, and a context record.

mod entities;
mod reads;
mod reasons;
mod slices;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Decision, Effect, EntityTypeName, PolicyId, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;

pub use entities::{PreparedPrincipal, Unrepresentable};
pub use reads::{NameReads, PathReads, PathTest, PatternChar, Reads};
pub use reasons::{DenyCode, DenyReason};
pub use slices::slice_segment;

/// The annotation naming a policy in decisions and logs.
const ID_ANNOTATION: &str = "id";

/// A policy file's name and text.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    pub name: String,
    pub text: String,
}

impl PolicyFile {
    /// Reads every `*.cedar` file of `directory`; problems name the path they concern.
    pub fn read_dir(directory: &Path) -> Result<Vec<Self>, Vec<String>> {
        let entries = std::fs::read_dir(directory).map_err(|error| {
            vec![format!(
                "cannot read policy directory `{}`: {error}",
                directory.display()
            )]
        })?;
        let mut files = Vec::new();
        let mut problems = Vec::new();
        for entry in entries {
            let path = match entry {
                Ok(entry) => entry.path(),
                Err(error) => {
                    problems.push(format!("cannot list `{}`: {error}", directory.display()));
                    continue;
                }
            };
            if path
                .extension()
                .is_none_or(|extension| extension != "cedar")
            {
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(text) => files.push(Self {
                    name: file_name(&path),
                    text,
                }),
                Err(error) => problems.push(format!("cannot read `{}`: {error}", path.display())),
            }
        }
        if files.is_empty() && problems.is_empty() {
            problems.push(format!("no `*.cedar` files in `{}`", directory.display()));
        }
        if problems.is_empty() {
            Ok(files)
        } else {
            Err(problems)
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |name| name.to_string_lossy().into_owned())
}

/// A compiled, validated policy set, ready to evaluate requests.
#[derive(Debug)]
pub struct PolicySet {
    /// The policies, cut by the method and first path segment they can apply to.
    slices: slices::Slices,
    extensions: entities::ExtensionValues,
    authorizer: Authorizer,
    /// The deny reasons of annotated forbids, with their position in the files (earlier wins).
    forbid_reasons: HashMap<String, (usize, DenyReason)>,
    /// Permits with `@scope`, in file order, each alone in a set to try it with its scopes added.
    scope_permits: Vec<ScopePermit>,
    /// A short hash of every file's name and text.
    revision: String,
    /// Every policy's id, in file order.
    ids: Vec<String>,
    /// The request fields the policies read.
    reads: Reads,
}

#[derive(Debug)]
struct ScopePermit {
    id: String,
    reason: DenyReason,
    reach: slices::Reach,
    alone: cedar_policy::PolicySet,
}

/// The kind of principal a credential becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// An end user (`User::"<sub>"`).
    User,
    /// A client acting for itself, as in the client-credentials grant (`Client::"<client_id>"`).
    Client,
    /// An end-user API key (`ApiKey::"<id>"`).
    ApiKey,
}

/// Who is asking.
#[derive(Debug)]
pub struct Principal<'a> {
    pub kind: PrincipalKind,
    pub id: &'a str,
    pub issuer: &'a str,
    pub subject: &'a str,
    pub client_id: &'a str,
    pub tenant: &'a str,
    pub scopes: &'a [String],
    pub roles: &'a [String],
    pub claims: &'a serde_json::Map<String, serde_json::Value>,
}

/// Facts about the verified token, exposed as `context.token`.
#[derive(Debug, Clone, Copy)]
pub struct TokenFacts<'a> {
    pub kid: &'a str,
    pub typ: &'a str,
    pub iat: Option<i64>,
    pub exp: i64,
}

/// The Apigee context of a request (`resource.apigee`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApigeeContext {
    pub proxy: String,
    pub environment: String,
    pub organization: String,
    pub product: String,
    pub app: String,
    pub developer: String,
}

/// One request to decide.
#[derive(Debug)]
pub struct PolicyRequest<'a> {
    pub principal: &'a PreparedPrincipal,
    pub token: TokenFacts<'a>,
    /// Upper-case HTTP method.
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub query: &'a str,
    pub apigee: &'a ApigeeContext,
    pub client_ip: Option<IpAddr>,
    /// Lower-case header names.
    pub headers: &'a BTreeMap<String, String>,
    /// Seconds since the Unix epoch.
    pub now: i64,
}

/// What the policies said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyOutcome {
    pub allow: bool,
    /// The ids of the policies that determined the decision: the permits that applied on an allow, the
    /// forbids that applied on a deny, or the `@scope` permit that would have applied with its scopes
    /// (empty when nothing explains the deny).
    pub determining: Vec<String>,
    /// Why a deny is a deny (`access_denied` unless an annotation says more); unused on an allow.
    pub reason: DenyReason,
    /// Policies that failed to evaluate (for example, reading an absent attribute); they count as not
    /// applying, which Cedar defines and which this service logs.
    pub errors: Vec<String>,
}

impl PolicySet {
    /// Loads every `*.cedar` file of `directory`, optionally validated against a Cedar schema file.
    pub fn load_dir(directory: &Path, schema: Option<&Path>) -> Result<Self, Vec<String>> {
        let (files, mut problems) = match PolicyFile::read_dir(directory) {
            Ok(files) => (files, Vec::new()),
            Err(problems) => (Vec::new(), problems),
        };
        let schema = match schema {
            None => None,
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => Some(PolicyFile {
                    name: file_name(path),
                    text,
                }),
                Err(error) => {
                    problems.push(format!("cannot read schema `{}`: {error}", path.display()));
                    None
                }
            },
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Self::compile_with_schema(files, schema)
    }

    /// Compiles policy files held in memory.
    pub fn compile(files: Vec<PolicyFile>) -> Result<Self, Vec<String>> {
        Self::compile_with_schema(files, None)
    }

    fn compile_with_schema(
        mut files: Vec<PolicyFile>,
        schema: Option<PolicyFile>,
    ) -> Result<Self, Vec<String>> {
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let mut problems = Vec::new();
        let mut policies = cedar_policy::PolicySet::new();
        // Which file each policy came from, to locate validation errors.
        let mut origin: HashMap<PolicyId, usize> = HashMap::new();
        let mut forbid_reasons = HashMap::new();
        let mut scope_permits = Vec::new();
        let mut reaches = Vec::new();
        for (file_index, file) in files.iter().enumerate() {
            let parsed = match cedar_policy::PolicySet::from_str(&file.text) {
                Ok(parsed) => parsed,
                Err(errors) => {
                    for error in errors.iter() {
                        problems.push(locate(&file.name, &file.text, error));
                    }
                    continue;
                }
            };
            if parsed.templates().next().is_some() {
                problems.push(format!(
                    "`{}`: policy templates are not supported",
                    file.name
                ));
                continue;
            }
            // Cedar names a file's policies `policy0`, `policy1`, ... in source order.
            let mut in_file: Vec<_> = parsed.policies().collect();
            in_file.sort_by_key(|policy| {
                policy
                    .id()
                    .to_string()
                    .trim_start_matches("policy")
                    .parse::<usize>()
                    .unwrap_or(0)
            });
            for (index, policy) in in_file.into_iter().enumerate() {
                let id = match policy.annotation(ID_ANNOTATION) {
                    Some(id) => id.to_owned(),
                    None => format!("{}#{index}", file.name),
                };
                let policy_id = PolicyId::new(&id);
                if origin.contains_key(&policy_id) {
                    problems.push(format!("`{}`: duplicate policy id `{id}`", file.name));
                    continue;
                }
                let policy = policy.new_id(policy_id.clone());
                let reach = slices::Reach::of(&policy);
                match reasons::read(&policy) {
                    Ok(None) => {}
                    Ok(Some(reason)) if policy.effect() == Effect::Forbid => {
                        forbid_reasons.insert(id.clone(), (origin.len(), reason));
                    }
                    Ok(Some(reason)) => {
                        let mut alone = cedar_policy::PolicySet::new();
                        if let Err(error) = alone.add(policy.clone()) {
                            problems.push(format!("`{}`: {error}", file.name));
                        }
                        scope_permits.push(ScopePermit {
                            id: id.clone(),
                            reason,
                            reach: reach.clone(),
                            alone,
                        });
                    }
                    Err(problem) => {
                        problems.push(format!(
                            "{}: policy `{id}`: {problem}",
                            policy_location(file, &id)
                        ));
                    }
                }
                if let Err(error) = policies.add(policy.clone()) {
                    problems.push(format!("`{}`: {error}", file.name));
                    continue;
                }
                reaches.push((policy, reach));
                origin.insert(policy_id, file_index);
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }

        if let Some(schema_file) = &schema {
            let schema = match Schema::from_cedarschema_str(&schema_file.text) {
                Ok((schema, _warnings)) => schema,
                Err(error) => {
                    return Err(vec![locate(&schema_file.name, &schema_file.text, &error)]);
                }
            };
            let result = Validator::new(schema).validate(&policies, ValidationMode::Strict);
            for error in result.validation_errors() {
                let file = origin
                    .get(error.policy_id())
                    .and_then(|index| files.get(*index));
                problems.push(match file {
                    Some(file) => locate(&file.name, &file.text, error),
                    None => format!("policy `{}`: {error}", error.policy_id()),
                });
            }
            if !problems.is_empty() {
                return Err(problems);
            }
        }

        let mut fingerprint = String::new();
        for file in &files {
            let _ = write!(fingerprint, "{}\0{}\0", file.name, file.text);
        }
        if let Some(schema) = &schema {
            let _ = write!(fingerprint, "{}\0{}", schema.name, schema.text);
        }
        let slices = slices::Slices::build(
            reaches.iter().map(|(policy, reach)| (policy, reach)),
            slices::FOLD_BUDGET,
        )
        .map_err(|error| vec![format!("cannot index the policies: {error}")])?;
        Ok(Self {
            reads: Reads::of(reaches.iter().map(|(policy, _)| policy)),
            ids: reaches
                .iter()
                .map(|(policy, _)| policy.id().to_string())
                .collect(),
            slices,
            extensions: entities::ExtensionValues::new(),
            authorizer: Authorizer::new(),
            forbid_reasons,
            scope_permits,
            revision: crate::digest::revision_of(&fingerprint),
        })
    }

    /// A short hash of the loaded files.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The request fields the policies read, beyond the method, the path and the credential.
    pub fn reads(&self) -> &Reads {
        &self.reads
    }

    /// Every policy's id, in file order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// How many policies the set holds.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the set holds no policy (every request would be denied).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Decides one request; a request Cedar cannot represent is no decision, but the field at fault.
    pub fn evaluate(&self, request: &PolicyRequest<'_>) -> Result<PolicyOutcome, Unrepresentable> {
        let (cedar_request, entities) = entities::build(request, &self.reads, &self.extensions)?;
        let answer = self.slices.authorize(
            &self.authorizer,
            &cedar_request,
            &entities,
            request.method,
            request.path,
        );
        let allow = answer.allow();
        let mut determining = if allow {
            answer.satisfied_permits
        } else {
            answer.satisfied_forbids
        };
        determining.sort();
        let mut errors = answer.errors;
        let mut reason = DenyReason::default();
        if !allow {
            if determining.is_empty() {
                if let Some(permit) = self.permit_lacking_scope(request, &mut errors) {
                    determining.push(permit.id.clone());
                    reason = permit.reason.clone();
                }
            } else if let Some((_, forbid)) = determining
                .iter()
                .filter_map(|id| self.forbid_reasons.get(id))
                .min_by_key(|(position, _)| *position)
            {
                reason = forbid.clone();
            }
        }
        Ok(PolicyOutcome {
            allow,
            determining,
            reason,
            errors,
        })
    }

    /// The first `@scope` permit that would have applied had the token carried its scopes.
    fn permit_lacking_scope(
        &self,
        request: &PolicyRequest<'_>,
        errors: &mut Vec<String>,
    ) -> Option<&ScopePermit> {
        let segment = request
            .path
            .strip_prefix('/')
            .and_then(|path| path.split('/').next());
        let in_reach = self
            .scope_permits
            .iter()
            .filter(|permit| permit.reach.admits(request.method, segment));
        in_reach.into_iter().find(|permit| {
            match entities::build_with_scopes(
                request,
                &self.reads,
                &self.extensions,
                permit.reason.scopes(),
            ) {
                Ok((cedar_request, entities)) => {
                    self.authorizer
                        .is_authorized(&cedar_request, &permit.alone, &entities)
                        .decision()
                        == Decision::Allow
                }
                Err(error) => {
                    errors.push(error.to_string());
                    false
                }
            }
        })
    }
}

/// `file:line` of the policy named `id`, or the file alone for a policy without `@id`.
fn policy_location(file: &PolicyFile, id: &str) -> String {
    let annotation = format!("@{ID_ANNOTATION}(\"{id}\")");
    match file.text.find(&annotation) {
        Some(offset) => {
            let line = file
                .text
                .get(..offset)
                .unwrap_or_default()
                .matches('\n')
                .count()
                + 1;
            format!("{}:{line}", file.name)
        }
        None => file.name.clone(),
    }
}

/// `file:line:column: message` for an error carrying a source span into `text`.
fn locate(file: &str, text: &str, error: &dyn Diagnostic) -> String {
    let offset = error
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset());
    let mut message = error.to_string();
    if let Some(help) = error.help() {
        let _ = write!(message, " ({help})");
    }
    match offset {
        Some(offset) => {
            let before = text.get(..offset).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rfind('\n').map_or(before.chars().count(), |at| {
                before.get(at + 1..).map_or(0, |tail| tail.chars().count())
            }) + 1;
            format!("{file}:{line}:{column}: {message}")
        }
        None => format!("{file}: {message}"),
    }
}

/// Parses a Cedar entity type name known to be valid.
fn type_name(name: &str) -> EntityTypeName {
    #[expect(
        clippy::expect_used,
        reason = "called only with the fixed type names of the entity model"
    )]
    EntityTypeName::from_str(name).expect("a fixed, valid entity type name")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> PolicyFile {
        PolicyFile {
            name: name.into(),
            text: text.into(),
        }
    }

    #[test]
    fn syntax_errors_name_file_line_and_column() {
        let problems = PolicySet::compile(vec![file(
            "broken.cedar",
            "permit(principal, action, resource);\npermit(principal action, resource);",
        )])
        .err()
        .unwrap_or_default();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems.iter().all(|p| p.starts_with("broken.cedar:2:")),
            "{problems:?}"
        );
    }

    #[test]
    fn policies_are_named_by_their_id_annotation_or_position() {
        let set = PolicySet::compile(vec![file(
            "a.cedar",
            "@id(\"first\") permit(principal, action, resource);\npermit(principal, action, resource);",
        )]);
        let set = set.ok();
        let ids: Vec<String> = set.iter().flat_map(|s| s.ids().iter().cloned()).collect();
        assert!(ids.contains(&"first".to_owned()), "{ids:?}");
        assert!(ids.contains(&"a.cedar#1".to_owned()), "{ids:?}");
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let problems = PolicySet::compile(vec![
            file(
                "a.cedar",
                "@id(\"same\") permit(principal, action, resource);",
            ),
            file(
                "b.cedar",
                "@id(\"same\") forbid(principal, action, resource);",
            ),
        ])
        .err()
        .unwrap_or_default();
        assert_eq!(
            problems,
            vec!["`b.cedar`: duplicate policy id `same`".to_owned()]
        );
    }

    /// The texts of `items`, in order.
    fn sorted<T: ToString>(items: impl Iterator<Item = T>) -> Vec<String> {
        let mut texts: Vec<String> = items.map(|item| item.to_string()).collect();
        texts.sort();
        texts
    }

    /// Slicing must not change any decision: every request gets what evaluating all policies gives,
    /// whether the policies that name no segment are folded into the segments' sets or not.
    #[test]
    fn slices_decide_as_the_whole_set_does() {
        let text = r#"
            @id("get-a") permit(principal, action == Action::"GET", resource) when { resource.path like "/a/*" };
            @id("write-a") permit(principal, action in [Action::"POST", Action::"PUT"], resource)
                when { principal.scopes.contains("w") && resource.path like "/a/*" };
            @id("any-b") permit(principal, action, resource) when { resource.path like "/b/*" };
            @id("route-eq") permit(principal, action, resource == Route::"/c/exact");
            @id("prefix-no-segment") permit(principal, action == Action::"GET", resource) when { resource.path like "/a*" };
            @id("everything-delete") permit(principal, action == Action::"DELETE", resource);
            @id("forbid-admin") forbid(principal, action, resource) when { resource.path like "/a/admin*" };
            @id("forbid-no-w") forbid(principal, action == Action::"PUT", resource) unless { principal.scopes.contains("w") };
            @id("errors") permit(principal, action, resource) when { principal.claims.missing == 1 };
        "#;
        let folded =
            PolicySet::compile(vec![file("p.cedar", text)]).unwrap_or_else(|p| panic!("{p:?}"));
        let mut unfolded =
            PolicySet::compile(vec![file("p.cedar", text)]).unwrap_or_else(|p| panic!("{p:?}"));
        let mut whole = cedar_policy::PolicySet::new();
        for policy in cedar_policy::PolicySet::from_str(text)
            .unwrap_or_else(|e| panic!("{e}"))
            .policies()
        {
            let id = policy
                .annotation(ID_ANNOTATION)
                .unwrap_or_default()
                .to_owned();
            whole
                .add(policy.new_id(PolicyId::new(id)))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let reaches: Vec<_> = whole
            .policies()
            .map(|policy| (policy.clone(), slices::Reach::of(policy)))
            .collect();
        unfolded.slices =
            slices::Slices::build(reaches.iter().map(|(policy, reach)| (policy, reach)), 0)
                .unwrap_or_else(|e| panic!("{e}"));
        let claims = serde_json::Map::new();
        let apigee = ApigeeContext::default();
        let headers = BTreeMap::new();
        let mut checked = 0;
        for scopes in [vec![], vec!["w".to_owned()]] {
            let principal = PreparedPrincipal::new(
                &Principal {
                    kind: PrincipalKind::User,
                    id: "alice",
                    issuer: "",
                    subject: "alice",
                    client_id: "",
                    tenant: "",
                    scopes: &scopes,
                    roles: &[],
                    claims: &claims,
                },
                &NameReads::All,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            for method in ["GET", "POST", "PUT", "DELETE", "PURGE"] {
                for path in [
                    "/",
                    "/a",
                    "/a/x",
                    "/ab/x",
                    "/a/admin/y",
                    "/b/y",
                    "/c/exact",
                    "/c/other",
                ] {
                    let request = PolicyRequest {
                        principal: &principal,
                        token: TokenFacts {
                            kid: "",
                            typ: "",
                            iat: None,
                            exp: 0,
                        },
                        method,
                        path,
                        host: "",
                        query: "",
                        apigee: &apigee,
                        client_ip: None,
                        headers: &headers,
                        now: 0,
                    };
                    let (cedar_request, entities) =
                        entities::build(&request, &folded.reads, &folded.extensions)
                            .unwrap_or_else(|e| panic!("{e}"));
                    let expected =
                        Authorizer::new().is_authorized(&cedar_request, &whole, &entities);
                    let reasons = sorted(expected.diagnostics().reason());
                    let errors = sorted(expected.diagnostics().errors());
                    for (slicing, set) in [("folded", &folded), ("unfolded", &unfolded)] {
                        let case = format!("{slicing}: {method} {path} {scopes:?}");
                        let sliced = set.evaluate(&request).unwrap_or_else(|e| panic!("{e}"));
                        assert_eq!(
                            sliced.allow,
                            expected.decision() == Decision::Allow,
                            "{case}"
                        );
                        assert_eq!(sliced.determining, reasons, "{case}");
                        assert_eq!(sorted(sliced.errors.iter()), errors, "{case}");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 160);
    }
}
