//! The contract between the Apigee shared flow (`apigee-bundles/`) and the service, for both kinds of
//! callout. ServiceCallout: the request the flow builds is one Verdict accepts, whatever the flow
//! variables hold; every JSONPath the flow extracts resolves, to the right field, in real allow, 401 and
//! 403 decisions; and every `verdict.*` name the flow reads is one it extracted. ExternalCallout: the
//! message each policy's configuration makes Apigee send (headers by its properties, additional flow
//! variables by its `<FlowVariable>`s) is decided by a real `verdict serve` over gRPC, which sets every
//! `verdict.*` variable the flow reads with the type the flow reads it as, and deletes or overwrites the
//! client's identity headers in any case. For both, the flow's steps are run on the real decisions by an
//! evaluator of Apigee's condition semantics, and must end where the decision says, failing closed
//! when the callout fails or the decision is incomplete. Renaming a field on either side fails here.
mod cache;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use verdict::fronts::external_callout::VARIABLE_PREFIX;
use verdict::fronts::external_callout::proto;
use verdict::fronts::external_callout::proto::external_callout_service_client::ExternalCalloutServiceClient;
use verdict::fronts::external_callout::proto::flow_variable::Value as FlowVariableValue;

use crate::helpers::proxy::Stack;
use crate::helpers::{CALLER_KEY, KeyServer, T0, TestApp, claims, config_yaml, rsa_key, unix_now};

fn shared_flow() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("apigee-bundles/sharedflows/verdict-authorize/sharedflowbundle")
}

/// The shared flow's policies by name, as XML text.
struct Bundle {
    policies: BTreeMap<String, String>,
    flow: String,
}

impl Bundle {
    fn load() -> Self {
        let root = shared_flow();
        let mut policies = BTreeMap::new();
        for entry in std::fs::read_dir(root.join("policies")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            policies.insert(name, std::fs::read_to_string(&path).unwrap());
        }
        let flow = std::fs::read_to_string(root.join("sharedflows/default.xml")).unwrap();
        Self { policies, flow }
    }

    fn policy(&self, name: &str) -> roxmltree::Document<'_> {
        let text = self
            .policies
            .get(name)
            .unwrap_or_else(|| panic!("the shared flow has no policy `{name}`"));
        roxmltree::Document::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// The policies whose name starts with `prefix`.
    fn named(&self, prefix: &str) -> Vec<&str> {
        self.policies
            .keys()
            .filter(|name| name.starts_with(prefix))
            .map(String::as_str)
            .collect()
    }
}

/// The text of the first element named `tag` under `node`.
fn text_of<'a>(node: roxmltree::Node<'a, 'a>, tag: &str) -> Option<&'a str> {
    node.descendants()
        .find(|n| n.has_tag_name(tag))
        .and_then(|n| n.text())
        .map(str::trim)
}

/// Renders an Apigee message template: `{name}`, `{escapeJSON(name)}` and `{sha256Hex(name)}` references;
/// a `{` not followed by a name is literal. An unset variable renders empty, as Apigee does. Any other
/// function is an error, so the template cannot come to rely on something this renderer does not check.
fn render(template: &str, variables: &HashMap<&str, &str>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let starts_name = after
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let Some(end) = after.find('}').filter(|_| starts_name) else {
            out.push('{');
            rest = after;
            continue;
        };
        let reference = &after[..end];
        let argument = |function: &str| {
            reference
                .strip_prefix(function)
                .and_then(|r| r.strip_prefix('('))
                .and_then(|r| r.strip_suffix(')'))
        };
        let value = |name: &str| variables.get(name).copied().unwrap_or_default();
        if let Some(name) = argument("escapeJSON") {
            let quoted = serde_json::to_string(value(name)).unwrap();
            out.push_str(&quoted[1..quoted.len() - 1]);
        } else if let Some(name) = argument("sha256Hex") {
            let digest =
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value(name).as_bytes());
            for byte in digest.as_ref() {
                write!(out, "{byte:02x}").unwrap();
            }
        } else if reference.contains('(') {
            return Err(format!(
                "unsupported template function in `{{{reference}}}`"
            ));
        } else {
            out.push_str(value(reference));
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The variable names a template or condition text references.
fn references(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        if let Some(end) = after.find('}') {
            let reference = &after[..end];
            let name = reference
                .strip_prefix("escapeJSON(")
                .and_then(|r| r.strip_suffix(')'))
                .unwrap_or(reference);
            if name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                names.insert(name.to_owned());
            }
        }
        rest = after;
    }
    names
}

/// Resolves the JSONPath forms the bundle may use: `$`, then `.name`, `['name']` or `["name"]` steps.
fn resolve<'a>(path: &str, document: &'a Value) -> Result<Option<&'a Value>, String> {
    let mut rest = path
        .strip_prefix('$')
        .ok_or_else(|| format!("`{path}` does not start with `$`"))?;
    let mut current = document;
    while !rest.is_empty() {
        let (name, tail) = if let Some(tail) = rest.strip_prefix('.') {
            let end = tail.find(['.', '[']).unwrap_or(tail.len());
            (&tail[..end], &tail[end..])
        } else if let Some(tail) = rest.strip_prefix("['").or_else(|| rest.strip_prefix("[\"")) {
            let end = tail
                .find(['\'', '"'])
                .ok_or_else(|| format!("`{path}`: unclosed bracket"))?;
            let closing = tail[end + 1..]
                .strip_prefix(']')
                .ok_or_else(|| format!("`{path}`: unclosed bracket"))?;
            (&tail[..end], closing)
        } else {
            return Err(format!("`{path}`: unsupported JSONPath step at `{rest}`"));
        };
        match current.get(name) {
            Some(next) => current = next,
            None => return Ok(None),
        }
        rest = tail;
    }
    Ok(Some(current))
}

/// A JSON value as ExtractVariables stores it in a flow variable.
fn as_flow_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// One `<Variable>` of the ExtractVariables policy: its flow variable and JSONPath.
#[derive(Debug)]
struct Extracted {
    variable: String,
    /// The variable's name without the prefix: which decision field it is meant to hold.
    field: String,
    json_path: String,
}

fn extracted(bundle: &Bundle) -> (String, Vec<Extracted>, bool) {
    let ev = bundle.named("EV-");
    assert_eq!(
        ev.len(),
        1,
        "one ExtractVariables policy parses the decision: {ev:?}"
    );
    let document = bundle.policy(ev[0]);
    let root = document.root_element();
    let prefix = text_of(root, "VariablePrefix")
        .unwrap_or_default()
        .to_owned();
    let source = text_of(root, "Source").unwrap().to_owned();
    let ignore_unresolved = text_of(root, "IgnoreUnresolvedVariables") == Some("true");
    let variables = root
        .descendants()
        .filter(|n| n.has_tag_name("Variable"))
        .map(|node| {
            let field = node.attribute("name").unwrap().to_owned();
            let variable = if prefix.is_empty() {
                field.clone()
            } else {
                format!("{prefix}.{field}")
            };
            Extracted {
                variable,
                field,
                json_path: text_of(node, "JSONPath").unwrap().to_owned(),
            }
        })
        .collect();
    (source, variables, ignore_unresolved)
}

/// A flow variable's value as Apigee holds it: ExtractVariables stores text, an ExternalCallout's
/// answer keeps the type Verdict gave it.
#[derive(Debug, Clone, PartialEq)]
enum FlowValue {
    Bool(bool),
    Int(i64),
    Text(String),
}

impl FlowValue {
    /// The value as text, as Apigee adapts it to compare it with a string.
    fn text(&self) -> String {
        match self {
            Self::Bool(value) => value.to_string(),
            Self::Int(value) => value.to_string(),
            Self::Text(value) => value.clone(),
        }
    }

    /// The kind's name, for messages.
    fn kind(&self) -> &'static str {
        match self {
            Self::Bool(_) => "bool",
            Self::Int(_) => "int",
            Self::Text(_) => "string",
        }
    }
}

/// One side of a comparison: a flow variable, or a literal (`None` for `null`).
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Variable(String),
    Literal(Option<FlowValue>),
}

/// The conditions the shared flow may use: `=` and `!=` comparisons joined by `and`, `or`, `!` and
/// parentheses (Apigee's conditions reference). Any other operator is an error, so the flow cannot come
/// to rely on something this evaluator does not check.
#[derive(Debug)]
enum Condition {
    Compare {
        left: Operand,
        equal: bool,
        right: Operand,
    },
    Not(Box<Condition>),
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Not,
    And,
    Or,
    Equal,
    NotEqual,
    Operand(Operand),
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        let word_char = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
        match c {
            _ if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' => {
                chars.next();
                tokens.push(if c == '(' { Token::Open } else { Token::Close });
            }
            '!' => {
                chars.next();
                if chars.next_if_eq(&'=').is_some() {
                    tokens.push(Token::NotEqual);
                } else {
                    tokens.push(Token::Not);
                }
            }
            '=' => {
                chars.next();
                tokens.push(Token::Equal);
            }
            '"' => {
                chars.next();
                let literal: String = chars.by_ref().take_while(|&c| c != '"').collect();
                tokens.push(Token::Operand(Operand::Literal(Some(FlowValue::Text(
                    literal,
                )))));
            }
            _ if word_char(c) => {
                let mut word = String::new();
                while let Some(c) = chars.next_if(|&c| word_char(c)) {
                    word.push(c);
                }
                tokens.push(match word.to_ascii_lowercase().as_str() {
                    "and" => Token::And,
                    "or" => Token::Or,
                    "not" => Token::Not,
                    "true" => Token::Operand(Operand::Literal(Some(FlowValue::Bool(true)))),
                    "false" => Token::Operand(Operand::Literal(Some(FlowValue::Bool(false)))),
                    "null" => Token::Operand(Operand::Literal(None)),
                    _ => match word.parse::<i64>() {
                        Ok(number) => {
                            Token::Operand(Operand::Literal(Some(FlowValue::Int(number))))
                        }
                        Err(_) if word.starts_with(|c: char| c.is_ascii_digit()) => {
                            return Err(format!(
                                "`{word}` in `{text}`: only integers are supported"
                            ));
                        }
                        Err(_) => Token::Operand(Operand::Variable(word)),
                    },
                });
            }
            _ => return Err(format!("`{c}` in `{text}` is not supported here")),
        }
    }
    Ok(tokens)
}

impl Condition {
    fn parse(text: &str) -> Result<Self, String> {
        let tokens = tokens(text)?;
        let mut at = 0;
        let condition = Self::or(&tokens, &mut at)?;
        if at != tokens.len() {
            return Err(format!("`{text}`: unexpected {:?}", tokens[at]));
        }
        Ok(condition)
    }

    fn or(tokens: &[Token], at: &mut usize) -> Result<Self, String> {
        let mut left = Self::and(tokens, at)?;
        while tokens.get(*at) == Some(&Token::Or) {
            *at += 1;
            left = Self::Or(Box::new(left), Box::new(Self::and(tokens, at)?));
        }
        Ok(left)
    }

    fn and(tokens: &[Token], at: &mut usize) -> Result<Self, String> {
        let mut left = Self::unary(tokens, at)?;
        while tokens.get(*at) == Some(&Token::And) {
            *at += 1;
            left = Self::And(Box::new(left), Box::new(Self::unary(tokens, at)?));
        }
        Ok(left)
    }

    fn unary(tokens: &[Token], at: &mut usize) -> Result<Self, String> {
        match tokens.get(*at) {
            Some(Token::Not) => {
                *at += 1;
                Ok(Self::Not(Box::new(Self::unary(tokens, at)?)))
            }
            Some(Token::Open) => {
                *at += 1;
                let inner = Self::or(tokens, at)?;
                if tokens.get(*at) != Some(&Token::Close) {
                    return Err(format!("unclosed parenthesis before {:?}", tokens.get(*at)));
                }
                *at += 1;
                Ok(inner)
            }
            _ => {
                let (Some(Token::Operand(left)), Some(op), Some(Token::Operand(right))) =
                    (tokens.get(*at), tokens.get(*at + 1), tokens.get(*at + 2))
                else {
                    return Err(format!("a comparison is expected at {:?}", tokens.get(*at)));
                };
                let equal = match op {
                    Token::Equal => true,
                    Token::NotEqual => false,
                    other => return Err(format!("{other:?} is not a comparison operator")),
                };
                *at += 3;
                Ok(Self::Compare {
                    left: left.clone(),
                    equal,
                    right: right.clone(),
                })
            }
        }
    }

    /// Evaluates the condition as Apigee does: an unset variable is `null`, equal only to `null`; a
    /// string compared with a boolean or an integer is compared with its text; comparing a boolean with
    /// an integer is an error here (Apigee would compare them as integers, which no flow should need).
    fn holds(&self, variables: &HashMap<String, FlowValue>) -> Result<bool, String> {
        Ok(match self {
            Self::Not(inner) => !inner.holds(variables)?,
            Self::And(left, right) => left.holds(variables)? && right.holds(variables)?,
            Self::Or(left, right) => left.holds(variables)? || right.holds(variables)?,
            Self::Compare { left, equal, right } => {
                let value = |operand: &Operand| match operand {
                    Operand::Variable(name) => variables.get(name).cloned(),
                    Operand::Literal(literal) => literal.clone(),
                };
                let same = match (value(left), value(right)) {
                    (None, None) => true,
                    (None, Some(_)) | (Some(_), None) => false,
                    (Some(FlowValue::Text(text)), Some(other))
                    | (Some(other), Some(FlowValue::Text(text))) => text == other.text(),
                    (Some(left), Some(right)) if left.kind() == right.kind() => left == right,
                    (Some(left), Some(right)) => {
                        return Err(format!("{left:?} and {right:?} are compared"));
                    }
                };
                same == *equal
            }
        })
    }

    /// Every comparison of a variable with a literal in the condition.
    fn comparisons(&self, out: &mut Vec<(String, Option<FlowValue>)>) {
        match self {
            Self::Not(inner) => inner.comparisons(out),
            Self::And(left, right) | Self::Or(left, right) => {
                left.comparisons(out);
                right.comparisons(out);
            }
            Self::Compare { left, right, .. } => match (left, right) {
                (Operand::Variable(name), Operand::Literal(literal))
                | (Operand::Literal(literal), Operand::Variable(name)) => {
                    out.push((name.clone(), literal.clone()));
                }
                _ => {}
            },
        }
    }
}

/// The shared flow's steps, in order: each policy's name and its condition (`None`: always runs).
fn steps(flow: &roxmltree::Document<'_>) -> Vec<(String, Option<Condition>)> {
    flow.descendants()
        .filter(|n| n.has_tag_name("Step"))
        .map(|step| {
            let name = text_of(step, "Name").unwrap().to_owned();
            let condition = text_of(step, "Condition").map(|text| {
                Condition::parse(text).unwrap_or_else(|e| panic!("step `{name}`: {e}"))
            });
            (name, condition)
        })
        .collect()
}

/// How a run of the flow ended: the steps that ran, and the RaiseFault that answered the client
/// (`None`: the request goes on to the target).
#[derive(Debug)]
struct Run {
    ran: Vec<String>,
    fault: Option<String>,
    /// The variables the condition of the step that raised the fault compares.
    fault_reads: Vec<String>,
}

/// Runs the flow's steps in order on `variables`, as Apigee would: a step runs when its condition holds,
/// a RaiseFault ends the flow, and `effect` applies what any other step does to the variables.
fn run_flow(
    steps: &[(String, Option<Condition>)],
    mut variables: HashMap<String, FlowValue>,
    mut effect: impl FnMut(&str, &mut HashMap<String, FlowValue>),
) -> Run {
    let mut ran = Vec::new();
    for (name, condition) in steps {
        let runs = condition.as_ref().is_none_or(|condition| {
            condition
                .holds(&variables)
                .unwrap_or_else(|e| panic!("step `{name}`: {e} ({variables:?})"))
        });
        if !runs {
            continue;
        }
        ran.push(name.clone());
        if name.starts_with("RF-") {
            let mut compared = Vec::new();
            if let Some(condition) = condition {
                condition.comparisons(&mut compared);
            }
            return Run {
                ran,
                fault: Some(name.clone()),
                fault_reads: compared.into_iter().map(|(name, _)| name).collect(),
            };
        }
        effect(name, &mut variables);
    }
    Run {
        ran,
        fault: None,
        fault_reads: Vec::new(),
    }
}

/// The `connection` value of the property set that makes the flow run `policy`.
fn connection_of(steps: &[(String, Option<Condition>)], policy: &str) -> String {
    let (_, condition) = steps
        .iter()
        .find(|(name, _)| name == policy)
        .unwrap_or_else(|| panic!("no step runs `{policy}`"));
    let mut compared = Vec::new();
    condition
        .as_ref()
        .unwrap_or_else(|| panic!("`{policy}` runs whatever the connection"))
        .comparisons(&mut compared);
    let values: Vec<String> = compared
        .into_iter()
        .filter(|(name, _)| name == CONNECTION)
        .filter_map(|(_, value)| match value {
            Some(FlowValue::Text(text)) => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(
        values.len(),
        1,
        "`{policy}` runs for one connection: {values:?}"
    );
    values.into_iter().next().unwrap()
}

/// The property that selects the connection variant.
const CONNECTION: &str = "propertyset.verdict.connection";

/// The RaiseFault a decision must end in, or `None` for an allow, which goes on to the target.
fn expected_end(decision: &HashMap<String, FlowValue>) -> Option<&'static str> {
    match decision
        .get("verdict.allow")
        .map(FlowValue::text)
        .as_deref()
    {
        Some("true") => None,
        _ if decision
            .get("verdict.www_authenticate")
            .is_some_and(|challenge| !challenge.text().is_empty()) =>
        {
            Some("RF-Deny")
        }
        _ => Some("RF-DenyNoChallenge"),
    }
}

/// Flow variables a proxy would hold, with quotes, backslashes and newlines where a string may have them.
fn sample_variables(authorization: &str) -> HashMap<&str, &str> {
    HashMap::from([
        ("request.header.authorization", authorization),
        ("request.verb", "GET"),
        ("proxy.pathsuffix", "/orders/42"),
        ("request.path", "/orders/42"),
        ("request.uri", "/orders/42?q=\"x\""),
        ("request.header.host", "api.\"example\".com\\"),
        ("request.querystring", "q=\"x\"&path=C:\\dir\nnext"),
        ("client.ip", "203.0.113.7"),
        ("request.header.x-request-id", "id \"1\"\\\n\t"),
        ("request.header.x-tenant", "acme\"}, \"extra\": \"field"),
        ("request.header.x-api-key", ""),
        ("apiproxy.name", "orders \"v2\""),
        ("environment.name", "prod\\eu"),
        ("organization.name", "org\nname"),
        ("apiproduct.name", "orders-basic"),
        ("developer.app.name", "mobile \u{1f4f1} app"),
        ("developer.email", "dev\"@example.com"),
        ("messageid", "rrt-1\r\n-2"),
    ])
}

#[tokio::test]
async fn the_shared_flow_and_the_service_agree_on_the_contract() {
    let bundle = Bundle::load();
    let key = rsa_key("k1");
    let server = KeyServer::start(&[key]).await;
    let app = TestApp::start(&config_yaml(&server, "")).await;

    // The request: rendered with hostile variable values, it is JSON Verdict accepts as a decision.
    let am = bundle.policy("AM-BuildDecideRequest");
    let root = am.root_element();
    let request_variable = text_of(root, "AssignTo").unwrap().to_owned();
    let template = text_of(root, "Payload").unwrap();
    let reader = key.sign(&claims(&server.issuer(), T0));
    let mut reader_claims = claims(&server.issuer(), T0);
    reader_claims["scope"] = json!("orders:read");
    let reader_only = key.sign(&reader_claims);
    let bearer = format!("Bearer {reader}");
    let body = render(template, &sample_variables(&bearer)).unwrap();
    let parsed: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("the rendered request is not JSON ({e}):\n{body}"));
    assert_eq!(parsed["headers"]["x-tenant"], "acme\"}, \"extra\": \"field");
    let (status, allow) = app.post_decide(body).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "Verdict refused the bundle's request: {allow}"
    );
    assert_eq!(allow["allow"], true, "{allow}");

    // A 401 (no credential) and a 403 (a scope the route needs is missing), from the same template.
    let mut variables = sample_variables("");
    let (_, unauthenticated) = app.post_decide(render(template, &variables).unwrap()).await;
    assert_eq!(unauthenticated["status"], 401, "{unauthenticated}");
    let bearer = format!("Bearer {reader_only}");
    variables.insert("request.header.authorization", &bearer);
    variables.insert("request.verb", "POST");
    let (_, forbidden) = app.post_decide(render(template, &variables).unwrap()).await;
    assert_eq!(forbidden["status"], 403, "{forbidden}");
    assert_eq!(forbidden["error"], "insufficient_scope", "{forbidden}");

    // Every ServiceCallout sends the request AssignMessage built, into the variable ExtractVariables reads.
    let (source, variables, ignore_unresolved) = extracted(&bundle);
    let callouts = bundle.named("SC-");
    assert!(
        callouts.len() >= 2,
        "a callout per connection variant: {callouts:?}"
    );
    for name in &callouts {
        let document = bundle.policy(name);
        let root = document.root_element();
        let request = root
            .descendants()
            .find(|n| n.has_tag_name("Request"))
            .unwrap();
        assert_eq!(
            request.attribute("variable"),
            Some(request_variable.as_str()),
            "{name}"
        );
        assert_eq!(text_of(root, "Response"), Some(source.as_str()), "{name}");
    }

    // Every JSONPath resolves, to the field its variable is named after, in each kind of decision.
    let fields: BTreeSet<&str> = variables.iter().map(|v| v.field.as_str()).collect();
    for needed in [
        "allow",
        "status",
        "error",
        "error_description",
        "www_authenticate",
        "decision_id",
    ] {
        assert!(
            fields.contains(needed),
            "the flow does not extract `{needed}`: {fields:?}"
        );
    }
    for (kind, decision) in [
        ("allow", &allow),
        ("401", &unauthenticated),
        ("403", &forbidden),
    ] {
        for extracted in &variables {
            let resolved = resolve(&extracted.json_path, decision).unwrap();
            let expected = match extracted.field.strip_prefix("header.") {
                Some(header) => decision["headers"].get(header),
                None => decision.get(&extracted.field),
            };
            match (resolved, expected) {
                (Some(resolved), Some(expected)) => assert_eq!(
                    as_flow_value(resolved),
                    as_flow_value(expected),
                    "{kind}: {} ({}) resolves to another field",
                    extracted.variable,
                    extracted.json_path
                ),
                (None, None) if extracted.field.starts_with("header.") && kind != "allow" => {
                    assert!(
                        ignore_unresolved,
                        "{kind}: {} is absent from a deny, so ExtractVariables must ignore unresolved variables or the deny becomes a fault",
                        extracted.variable
                    )
                }
                _ => panic!(
                    "{kind}: {} ({}) does not resolve to the decision field `{}`: {decision}",
                    extracted.variable, extracted.json_path, extracted.field
                ),
            }
        }
    }
    assert_eq!(as_flow_value(&allow["allow"]), "true");
    assert_eq!(as_flow_value(&forbidden["status"]), "403");

    // The flow, run on each decision as the ServiceCallout and ExtractVariables leave it (every value
    // text), ends where the decision says: at the target on allow, in the RaiseFault with or without a
    // challenge on a deny. A failed callout, or an answer other than 200 even with a body that reads as
    // an allow, ends in RF-CalloutFailed.
    let flow_steps = steps(&roxmltree::Document::parse(&bundle.flow).unwrap());
    let parser = bundle.named("EV-")[0];
    let extract = |decision: &Value| -> HashMap<String, FlowValue> {
        variables
            .iter()
            .filter_map(|v| {
                resolve(&v.json_path, decision)
                    .unwrap()
                    .map(|value| (v.variable.clone(), FlowValue::Text(as_flow_value(value))))
            })
            .collect()
    };
    for callout in &callouts {
        let connection = connection_of(&flow_steps, callout);
        let start = HashMap::from([(CONNECTION.to_owned(), FlowValue::Text(connection))]);
        let answer = |code: i64, decision: &Value| {
            let extracted = extract(decision);
            let body = decision.to_string();
            run_flow(&flow_steps, start.clone(), move |name, flow| {
                if name == *callout {
                    flow.insert("verdictResponse.status.code".into(), FlowValue::Int(code));
                    flow.insert(
                        "verdictResponse.content".into(),
                        FlowValue::Text(body.clone()),
                    );
                } else if name == parser {
                    flow.extend(extracted.clone());
                }
            })
        };
        for (kind, decision) in [
            ("allow", &allow),
            ("401", &unauthenticated),
            ("403", &forbidden),
        ] {
            let run = answer(200, decision);
            assert_eq!(
                run.fault.as_deref(),
                expected_end(&extract(decision)),
                "{callout} {kind}: {run:?}"
            );
            assert_eq!(
                run.ran.contains(&"AM-SetUpstreamHeaders".to_owned()),
                kind == "allow",
                "{callout} {kind}: {run:?}"
            );
            assert!(
                !run.ran.iter().any(|name| name.starts_with("EC-")),
                "{callout} {kind}: an ExternalCallout runs in a ServiceCallout variant: {run:?}"
            );
        }
        assert_eq!(
            answer(401, &allow).fault.as_deref(),
            Some("RF-CalloutFailed"),
            "{callout}: a 401 answer"
        );
        let failed = run_flow(&flow_steps, start.clone(), |name, flow| {
            if name == *callout {
                flow.insert(
                    format!("servicecallout.{callout}.failed"),
                    FlowValue::Bool(true),
                );
            }
        });
        assert_eq!(
            failed.fault.as_deref(),
            Some("RF-CalloutFailed"),
            "{callout} failed: {failed:?}"
        );
        // By the step that tests the callout's failure, not only because no decision follows.
        assert!(
            failed
                .fault_reads
                .contains(&format!("servicecallout.{callout}.failed")),
            "{callout} failed: {failed:?}"
        );
    }

    // Every `verdict.*` name the flow reads is one ExtractVariables sets.
    let set: BTreeSet<&str> = variables.iter().map(|v| v.variable.as_str()).collect();
    let mut read = BTreeSet::new();
    for name in bundle
        .named("RF-")
        .into_iter()
        .chain(bundle.named("AM-SetUpstream"))
    {
        read.extend(references(&bundle.policies[name]));
    }
    let flow = roxmltree::Document::parse(&bundle.flow).unwrap();
    for condition in flow.descendants().filter(|n| n.has_tag_name("Condition")) {
        let text = condition.text().unwrap_or_default();
        read.extend(
            text.split(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
                .filter(|word| word.starts_with("verdict."))
                .map(str::to_owned),
        );
    }
    let unknown: Vec<&String> = read
        .iter()
        .filter(|name| name.starts_with("verdict.") && !set.contains(name.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "the flow reads names nothing sets: {unknown:?} (set: {set:?})"
    );
    assert!(
        read.contains("verdict.allow"),
        "the flow never tests `verdict.allow`: {read:?}"
    );

    // The upstream headers: the ones Verdict maps are set from the decision, and client copies removed.
    let am = bundle.policy("AM-SetUpstreamHeaders");
    let headers_in = |section: &str| -> BTreeSet<String> {
        am.descendants()
            .filter(|n| n.has_tag_name(section))
            .flat_map(|n| n.descendants().filter(|h| h.has_tag_name("Header")))
            .filter_map(|h| h.attribute("name"))
            .map(str::to_ascii_lowercase)
            .collect()
    };
    let mapped: BTreeSet<String> = allow["headers"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert!(
        mapped.is_subset(&headers_in("Set")),
        "{mapped:?} not all set"
    );
    assert!(
        mapped.is_subset(&headers_in("Remove")),
        "{mapped:?} not all stripped first"
    );

    // Every step of the flow names a policy of the bundle.
    for step in flow.descendants().filter(|n| n.has_tag_name("Step")) {
        let name = text_of(step, "Name").unwrap();
        assert!(
            bundle.policies.contains_key(name),
            "step `{name}` has no policy"
        );
    }
}

#[test]
fn conditions_are_evaluated_as_apigee_does() {
    let holds = |text: &str, variables: &[(&str, FlowValue)]| {
        let variables = variables
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect();
        Condition::parse(text).unwrap().holds(&variables).unwrap()
    };
    let allow = FlowValue::Bool(true);
    let allow_text = FlowValue::Text("true".into());
    // A boolean literal matches a bool and its text alike; so does a string literal.
    for value in [&allow, &allow_text] {
        assert!(holds("a = true", &[("a", value.clone())]));
        assert!(holds("a = \"true\"", &[("a", value.clone())]));
        assert!(!holds("a = false", &[("a", value.clone())]));
        assert!(holds(
            "!(a = false) and (a != null)",
            &[("a", value.clone())]
        ));
    }
    assert!(holds("s = 403", &[("s", FlowValue::Int(403))]));
    assert!(holds("s = 403", &[("s", FlowValue::Text("403".into()))]));
    // Unset is null: equal to null only, and unequal to everything else.
    assert!(!holds("a = true", &[]));
    assert!(!holds("a = false", &[]));
    assert!(holds("a = null", &[]));
    assert!(holds("a != \"\"", &[]));
    assert!(holds(
        "(a = true) OR (b-c.d = 1)",
        &[("b-c.d", FlowValue::Int(1))]
    ));
    assert!(
        Condition::parse("a = true")
            .unwrap()
            .holds(&HashMap::from([("a".to_owned(), FlowValue::Int(1))]))
            .is_err()
    );
    for unsupported in ["a > 1", "a ~~ \"x\"", "a = 1.5", "(a = 1", "a"] {
        assert!(Condition::parse(unsupported).is_err(), "{unsupported}");
    }
}

#[test]
fn the_renderer_and_resolver_follow_apigee() {
    let variables = HashMap::from([("a", "x\"y\\z\n")]);
    assert_eq!(
        render("{\"v\": \"{escapeJSON(a)}\", \"w\": \"{b}\"}", &variables).unwrap(),
        "{\"v\": \"x\\\"y\\\\z\\n\", \"w\": \"\"}"
    );
    assert_eq!(
        render("{sha256Hex(b)}", &HashMap::from([("b", "abc")])).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(render("{toUpperCase(a)}", &variables).is_err());
    let document = json!({ "a": { "b-c": 1 }, "d": true });
    assert_eq!(resolve("$.a['b-c']", &document).unwrap(), Some(&json!(1)));
    assert_eq!(resolve("$.d", &document).unwrap(), Some(&json!(true)));
    assert_eq!(resolve("$.missing", &document).unwrap(), None);
    assert!(resolve("$.a[0]", &document).is_err());
}

/// What an ExternalCallout policy of the shared flow makes Apigee send: whether the client's headers
/// and body go in the message, which additional flow variables (by prefix), and the deadline.
#[derive(Debug)]
struct CalloutConfiguration {
    with_request_headers: bool,
    with_request_content: bool,
    flow_variable_prefixes: Vec<String>,
    timeout: Duration,
}

impl CalloutConfiguration {
    fn of(bundle: &Bundle, policy: &str) -> Self {
        let document = bundle.policy(policy);
        let root = document.root_element();
        assert!(root.has_tag_name("ExternalCallout"), "{policy}");
        let property = |name: &str| {
            root.descendants()
                .filter(|n| n.has_tag_name("Property"))
                .find(|n| n.attribute("name") == Some(name))
                .and_then(|n| n.text())
                .map(str::trim)
                == Some("true")
        };
        let set: Vec<&str> = root
            .descendants()
            .filter(|n| n.has_tag_name("Property"))
            .filter(|n| n.text().map(str::trim) == Some("true"))
            .filter_map(|n| n.attribute("name"))
            .collect();
        // Verdict reads the client's headers and nothing of the body or of a response: a property it
        // does not need would only send the client's payload to it.
        assert_eq!(set, ["with.request.headers"], "{policy}: properties set");
        let timeout_ms: u64 = text_of(root, "TimeoutMs").unwrap().parse().unwrap();
        Self {
            with_request_headers: property("with.request.headers"),
            with_request_content: property("with.request.content"),
            flow_variable_prefixes: root
                .descendants()
                .filter(|n| n.has_tag_name("FlowVariable"))
                .filter_map(|n| n.text())
                .map(|text| text.trim().to_owned())
                .collect(),
            timeout: Duration::from_millis(timeout_ms),
        }
    }
}

/// One client request as the proxy received it, with the flow variables Apigee holds beside it.
struct ClientRequest<'a> {
    method: &'a str,
    path_suffix: &'a str,
    query: &'a str,
    /// Header names as the client wrote them, so in any case.
    headers: Vec<(&'a str, String)>,
    body: &'a str,
    /// Flow variables of the proxy's context (API product, app, developer and others); the policy's
    /// `<FlowVariable>`s decide which of them are sent.
    flow_variables: Vec<(&'a str, &'a str)>,
}

/// The message an ExternalCallout configured as `configuration` makes Apigee send for `client`.
fn message_context(
    configuration: &CalloutConfiguration,
    client: &ClientRequest<'_>,
) -> proto::MessageContext {
    let mut headers: HashMap<String, proto::Strings> = HashMap::new();
    if configuration.with_request_headers {
        for (name, value) in &client.headers {
            headers
                .entry((*name).to_owned())
                .or_default()
                .strings
                .push(value.clone());
        }
    }
    let additional_flow_variables = client
        .flow_variables
        .iter()
        .filter(|(name, _)| {
            configuration
                .flow_variable_prefixes
                .iter()
                .any(|prefix| name.starts_with(prefix.as_str()))
        })
        .map(|(name, value)| {
            (
                (*name).to_owned(),
                proto::FlowVariable {
                    value: Some(FlowVariableValue::String((*value).to_owned())),
                },
            )
        })
        .collect();
    let uri = match client.query {
        "" => format!("/verdict-sample{}", client.path_suffix),
        query => format!("/verdict-sample{}?{query}", client.path_suffix),
    };
    proto::MessageContext {
        request: Some(proto::Request {
            uri,
            verb: client.method.to_owned(),
            http_version: "1.1".to_owned(),
            headers,
            content: if configuration.with_request_content {
                client.body.to_owned()
            } else {
                String::new()
            },
            ..Default::default()
        }),
        api_proxy: Some(proto::ApiProxy {
            name: "verdict-sample".to_owned(),
            revision: "3".to_owned(),
        }),
        client: Some(proto::Client {
            ip: "203.0.113.7".to_owned(),
            port: 50_112,
            scheme: "https".to_owned(),
            ssl_enabled: true,
            ..Default::default()
        }),
        current_flow: Some(proto::CurrentFlow {
            name: "PreFlow".to_owned(),
            description: String::new(),
        }),
        message_id: "rrt-0a1b2c-42".to_owned(),
        organization_name: "example-org".to_owned(),
        environment_name: "prod".to_owned(),
        proxy: Some(proto::Proxy {
            endpoint_name: "default".to_owned(),
            client_ip: "203.0.113.7".to_owned(),
            base_path: "/verdict-sample".to_owned(),
            path_suffix: client.path_suffix.to_owned(),
            url: format!(
                "https://api.example.com/verdict-sample{}",
                client.path_suffix
            ),
        }),
        additional_flow_variables,
        ..Default::default()
    }
}

/// The answer's flow variables, typed as Apigee then holds them.
fn flow_values(answer: &proto::MessageContext) -> HashMap<String, FlowValue> {
    answer
        .additional_flow_variables
        .iter()
        .map(|(name, variable)| {
            let value = match &variable.value {
                Some(FlowVariableValue::Bool(value)) => FlowValue::Bool(*value),
                Some(FlowVariableValue::Int32(value)) => FlowValue::Int(i64::from(*value)),
                Some(FlowVariableValue::Int64(value)) => FlowValue::Int(*value),
                Some(FlowVariableValue::String(value)) => FlowValue::Text(value.clone()),
                other => panic!("`{name}` has a type the flow cannot read: {other:?}"),
            };
            (name.clone(), value)
        })
        .collect()
}

/// The kind each `verdict.*` variable the flow reads must have, from how the flow reads it: compared with
/// `true`/`false` a bool, with an integer or used as a `<StatusCode>` an int, otherwise a string.
fn kinds_read(
    bundle: &Bundle,
    steps: &[(String, Option<Condition>)],
) -> BTreeMap<String, &'static str> {
    let mut kinds: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut note = |name: &str, kind: &'static str| {
        if let Some(before) = kinds.insert(name.to_owned(), kind) {
            assert!(
                before == kind || before == "string" || kind == "string",
                "the flow reads `{name}` as a {before} and as a {kind}"
            );
            if before != "string" {
                kinds.insert(name.to_owned(), before);
            }
        }
    };
    for (_, condition) in steps {
        let mut compared = Vec::new();
        if let Some(condition) = condition {
            condition.comparisons(&mut compared);
        }
        for (name, literal) in compared {
            if !name.starts_with(VARIABLE_PREFIX) {
                continue;
            }
            match literal {
                Some(FlowValue::Bool(_)) => note(&name, "bool"),
                Some(FlowValue::Int(_)) => note(&name, "int"),
                Some(FlowValue::Text(_)) | None => note(&name, "string"),
            }
        }
    }
    for name in bundle
        .named("RF-")
        .into_iter()
        .chain(bundle.named("AM-SetUpstream"))
    {
        let document = bundle.policy(name);
        for node in document.descendants().filter(|n| n.is_element()) {
            let Some(text) = node.text() else { continue };
            let kind = if node.has_tag_name("StatusCode") {
                "int"
            } else {
                "string"
            };
            for referenced in references(text) {
                if referenced.starts_with(VARIABLE_PREFIX) {
                    note(&referenced, kind);
                }
            }
        }
    }
    kinds
}

/// One client request of the ExternalCallout contract test and the decision it must get.
struct Case<'a> {
    what: &'a str,
    authorization: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    /// `apiproduct.name`.
    product: &'a str,
    status: i64,
    /// The identity headers the decision sets.
    sets: &'a [&'a str],
}

#[tokio::test]
async fn the_external_callout_flow_and_the_service_agree_on_the_contract() {
    let bundle = Bundle::load();
    let flow = roxmltree::Document::parse(&bundle.flow).unwrap();
    let steps = steps(&flow);
    let callouts = bundle.named("EC-");
    assert!(
        callouts.len() >= 2,
        "an ExternalCallout per connection variant: {callouts:?}"
    );
    let kinds = kinds_read(&bundle, &steps);
    for (name, kind) in [("verdict.allow", "bool"), ("verdict.status", "int")] {
        assert_eq!(
            kinds.get(name).copied(),
            Some(kind),
            "how the flow reads `{name}`: {kinds:?}"
        );
    }

    // The API-products example policies read the Apigee product, so a FlowVariable the policy does not
    // send shows as a deny.
    let stack = Stack::start_with_policies("", "examples/policies/api-products").await;
    let address = &stack.verdict_address;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ExternalCalloutServiceClient::new(channel);

    let now = unix_now();
    let token = |subject: Option<&str>, client_id: Option<&str>, scope: &str| {
        let mut claims = claims(&stack.issuer.issuer(), now);
        match subject {
            Some(subject) => claims["sub"] = json!(subject),
            None => {
                claims.as_object_mut().unwrap().remove("sub");
            }
        }
        if let Some(client_id) = client_id {
            claims["client_id"] = json!(client_id);
        }
        claims["scope"] = json!(scope);
        format!("Bearer {}", stack.sign(&claims))
    };
    let alice = token(Some("alice"), None, "orders:read");
    let partner = token(None, Some("partner-acme"), "orders:read");
    // The identity headers Verdict sets, as the flow sets them after an allow.
    let identity: BTreeSet<String> = {
        let am = bundle.policy("AM-SetUpstreamHeaders");
        am.descendants()
            .filter(|n| n.has_tag_name("Set"))
            .flat_map(|n| n.descendants().filter(|h| h.has_tag_name("Header")))
            .filter_map(|h| h.attribute("name"))
            .map(str::to_ascii_lowercase)
            .collect()
    };
    assert!(
        identity.contains("x-user-id") && identity.contains("x-tenant"),
        "{identity:?}"
    );

    // (what, credential, method, path, API product, status, the identity headers the allow sets)
    let case = |what, authorization, method, path, product, status, sets| Case {
        what,
        authorization,
        method,
        path,
        product,
        status,
        sets,
    };
    let cases = [
        case(
            "allow, a user",
            Some(alice.as_str()),
            "GET",
            "/orders/42",
            "orders-web",
            200,
            &["x-user-id", "x-tenant"],
        ),
        // A client has no subject: x-user-id is not set, and the client's copies must still go.
        case(
            "allow, a client",
            Some(partner.as_str()),
            "GET",
            "/orders/o-1",
            "partner-orders",
            200,
            &["x-tenant"],
        ),
        case(
            "401",
            None,
            "GET",
            "/orders/o-1",
            "partner-orders",
            401,
            &[],
        ),
        case(
            "403 insufficient_scope",
            Some(partner.as_str()),
            "POST",
            "/orders",
            "partner-orders",
            403,
            &[],
        ),
        // The partner policy reads the API product: without `apiproduct.name` sent, every partner call
        // would be this deny.
        case(
            "403 access_denied",
            Some(partner.as_str()),
            "GET",
            "/orders/o-1",
            "orders-web",
            403,
            &[],
        ),
    ];
    for policy in &callouts {
        let configuration = CalloutConfiguration::of(&bundle, policy);
        let connection = connection_of(&steps, policy);
        for &Case {
            what,
            authorization,
            method,
            path,
            product,
            status,
            sets,
        } in &cases
        {
            let mut headers = vec![
                ("Host", "api.example.com".to_owned()),
                ("X-Request-Id", "req-7".to_owned()),
                ("Content-Type", "application/json".to_owned()),
                // A client's own identity headers, in several cases: none may reach the upstream.
                ("X-User-Id", "mallory".to_owned()),
                ("x-user-id", "mallory-again".to_owned()),
                ("X-TENANT", "someone-else".to_owned()),
            ];
            if let Some(authorization) = authorization {
                headers.push(("Authorization", authorization.to_owned()));
            }
            let sent = ClientRequest {
                method,
                path_suffix: path,
                query: "expand=items",
                headers,
                body: "{\"item\": 1}",
                flow_variables: vec![
                    ("apiproduct.name", product),
                    ("developer.app.name", "shop-app"),
                    ("developer.email", "dev@example.com"),
                    ("developer.id", "dev-1"),
                    ("client_id", "app-key-1"),
                ],
            };
            let message = message_context(&configuration, &sent);
            let mut request = tonic::Request::new(message);
            request.set_timeout(configuration.timeout);
            // Apigee authenticates as a caller by its Google ID token (Cloud Run) or its client
            // certificate (EC2), and cannot add metadata; the test's Verdict takes the caller key instead,
            // which every gRPC front accepts in the same place.
            request
                .metadata_mut()
                .insert("x-verdict-key", CALLER_KEY.parse().unwrap());
            let answer = client
                .process_message(request)
                .await
                .unwrap_or_else(|status| {
                    panic!("{policy} {what}: a gRPC error for a decision: {status:?}")
                })
                .into_inner();
            let values = flow_values(&answer);
            let context = format!("{policy} {what}: {values:?}");
            assert_eq!(
                values.get("verdict.status"),
                Some(&FlowValue::Int(status)),
                "{context}"
            );
            assert_eq!(
                values.get("verdict.allow"),
                Some(&FlowValue::Bool(status == 200)),
                "{context}"
            );

            // Every verdict.* variable the flow reads is set, with the kind it reads it as; a header
            // variable exactly when the allow sets that header.
            for (name, kind) in &kinds {
                let header = name.strip_prefix("verdict.header.");
                match (values.get(name), header) {
                    (Some(value), _) => assert_eq!(value.kind(), *kind, "`{name}`: {context}"),
                    (None, Some(header)) => {
                        assert!(!sets.contains(&header), "`{name}` unset: {context}")
                    }
                    (None, None) => {
                        panic!("the flow reads `{name}`, which the answer does not set: {context}")
                    }
                }
            }
            for header in sets {
                assert!(
                    values.contains_key(&format!("verdict.header.{header}")),
                    "`verdict.header.{header}`: {context}"
                );
            }

            // The returned request holds only header changes: each identity header, in every case
            // the client sent it, set to the decision's value when the allow sets it, else deleted.
            let changes = &answer.request.as_ref().unwrap().headers;
            let sent_names: Vec<&str> = sent.headers.iter().map(|(name, _)| *name).collect();
            for name in changes.keys() {
                assert!(
                    identity.contains(&name.to_ascii_lowercase()),
                    "{policy} {what}: the answer changes `{name}`, not an identity header: {changes:?}"
                );
            }
            for header in &identity {
                let set = sets.contains(&header.as_str());
                let expected: Vec<String> = match values.get(&format!("verdict.header.{header}")) {
                    Some(value) if set => vec![value.text()],
                    _ => Vec::new(),
                };
                let mut variants: Vec<&str> = sent_names
                    .iter()
                    .copied()
                    .filter(|name| name.eq_ignore_ascii_case(header))
                    .collect();
                if set {
                    variants.push(header);
                }
                for variant in variants {
                    let change = changes.get(variant).unwrap_or_else(|| {
                        panic!("{policy} {what}: the client's `{variant}` is left as it is: {changes:?}")
                    });
                    assert_eq!(change.strings, expected, "{policy} {what}: `{variant}`");
                }
            }
            if what == "allow, a user" {
                assert_eq!(
                    values["verdict.header.x-user-id"],
                    FlowValue::Text("alice".into())
                );
                assert_eq!(values["verdict.subject"], FlowValue::Text("alice".into()));
            }

            // The flow, run on the answer's variables, ends where the decision says.
            let start =
                HashMap::from([(CONNECTION.to_owned(), FlowValue::Text(connection.clone()))]);
            let run = run_flow(&steps, start.clone(), |name, variables| {
                if name == *policy {
                    variables.extend(values.clone());
                }
            });
            assert_eq!(
                run.fault.as_deref(),
                expected_end(&values),
                "{policy} {what}: {run:?}"
            );
            assert_eq!(
                run.ran.contains(&"AM-SetUpstreamHeaders".to_owned()),
                status == 200,
                "{policy} {what}: {run:?}"
            );
            for other in &run.ran {
                assert!(
                    other == policy
                        || !(other.starts_with("SC-")
                            || other.starts_with("EC-")
                            || other.starts_with("EV-")
                            || other.starts_with("KVM-")
                            || other.starts_with("AM-Build")),
                    "{policy} {what}: `{other}` runs in the ExternalCallout variant: {run:?}"
                );
            }
            // An answer without the decision's allow or status, were one to come, is no decision.
            for missing in ["verdict.allow", "verdict.status"] {
                let run = run_flow(&steps, start.clone(), |name, variables| {
                    if name == *policy {
                        variables.extend(values.clone());
                        variables.remove(missing);
                    }
                });
                assert_eq!(
                    run.fault.as_deref(),
                    Some("RF-CalloutFailed"),
                    "{policy} {what} without `{missing}`: {run:?}"
                );
            }
        }

        // A callout-level failure is a gRPC error, never a decision, and the flow fails closed on it:
        // here the caller is not authenticated.
        let message = message_context(
            &configuration,
            &ClientRequest {
                method: "GET",
                path_suffix: "/orders/42",
                query: "",
                headers: vec![("Authorization", alice.clone())],
                body: "",
                flow_variables: vec![("apiproduct.name", "orders-web")],
            },
        );
        let status = client
            .process_message(tonic::Request::new(message))
            .await
            .expect_err("a message without a caller key is answered");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        let start = HashMap::from([(CONNECTION.to_owned(), FlowValue::Text(connection.clone()))]);
        let run = run_flow(&steps, start, |name, variables| {
            if name == *policy {
                variables.insert(
                    format!("externalcallout.{policy}.failed"),
                    FlowValue::Bool(true),
                );
            }
        });
        assert_eq!(
            run.fault.as_deref(),
            Some("RF-CalloutFailed"),
            "{policy} failed: {run:?}"
        );
        // By the step that tests the callout's failure, not only because no decision follows.
        assert!(
            run.fault_reads
                .contains(&format!("externalcallout.{policy}.failed")),
            "{policy} failed: {run:?}"
        );
    }

    // Without a connection the flow calls nothing and fails closed. It computes the cache key and looks
    // it up, which misses: the cache module shows that even an entry cached before is not used.
    let run = run_flow(&steps, HashMap::new(), |name, _| {
        assert!(!asks_verdict(name), "`{name}` runs without a connection");
    });
    assert_eq!(run.fault.as_deref(), Some("RF-CalloutFailed"), "{run:?}");
}

/// Whether the step `name` is part of asking Verdict: reading the caller key, building the request,
/// calling.
fn asks_verdict(name: &str) -> bool {
    ["KVM-", "AM-Build", "SC-", "EC-"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}
