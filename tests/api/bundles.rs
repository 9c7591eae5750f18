//! The contract between the Apigee shared flow (`apigee-bundles/`) and the service: the request the flow
//! builds is one Verdict accepts, whatever the flow variables hold; every JSONPath the flow extracts
//! resolves, to the right field, in real allow, 401 and 403 decisions; and every `verdict.*` name the
//! flow reads is one it extracted. Renaming a field on either side fails here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{KeyServer, T0, TestApp, claims, config_yaml, rsa_key};

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

/// Renders an Apigee message template: `{name}` and `{escapeJSON(name)}` references; a `{` not followed
/// by a name is literal. An unset variable renders empty, as Apigee does. Any other function is an error,
/// so the template cannot come to rely on something this renderer does not check.
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
        let (name, escape) = match reference
            .strip_prefix("escapeJSON(")
            .and_then(|r| r.strip_suffix(')'))
        {
            Some(name) => (name, true),
            None if reference.contains('(') => {
                return Err(format!(
                    "unsupported template function in `{{{reference}}}`"
                ));
            }
            None => (reference, false),
        };
        let value = variables.get(name).copied().unwrap_or_default();
        if escape {
            let quoted = serde_json::to_string(value).unwrap();
            out.push_str(&quoted[1..quoted.len() - 1]);
        } else {
            out.push_str(value);
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
fn the_renderer_and_resolver_follow_apigee() {
    let variables = HashMap::from([("a", "x\"y\\z\n")]);
    assert_eq!(
        render("{\"v\": \"{escapeJSON(a)}\", \"w\": \"{b}\"}", &variables).unwrap(),
        "{\"v\": \"x\\\"y\\\\z\\n\", \"w\": \"\"}"
    );
    assert!(render("{toUpperCase(a)}", &variables).is_err());
    let document = json!({ "a": { "b-c": 1 }, "d": true });
    assert_eq!(resolve("$.a['b-c']", &document).unwrap(), Some(&json!(1)));
    assert_eq!(resolve("$.d", &document).unwrap(), Some(&json!(true)));
    assert_eq!(resolve("$.missing", &document).unwrap(), None);
    assert!(resolve("$.a[0]", &document).is_err());
}
