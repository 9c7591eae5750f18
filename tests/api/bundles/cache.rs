//! The shared flow's reuse of an allow: a LookupCache before the callout and a PopulateCache after a
//! fresh allow that Verdict lets be reused. The flow's steps run as in the contract tests, with the
//! policies the cache needs (AssignMessage, LookupCache, PopulateCache, ExtractVariables) carried out
//! from their own configuration on a model of Apigee's cache, and the callouts answered by a real
//! `verdict serve` with `cache.decision_ttl` set, over JSON and over gRPC. A repeated request calls
//! nothing, ends where the fresh allow ended and sets the same upstream headers; another credential,
//! method or path misses; a deny and a `cache_ttl` of 0 or none cache nothing; and no cache key or
//! cached value holds a credential.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value, json};
use verdict::fronts::external_callout::proto::external_callout_service_client::ExternalCalloutServiceClient;

use super::{
    Bundle, CONNECTION, CalloutConfiguration, ClientRequest, FlowValue, Run, as_flow_value,
    asks_verdict, connection_of, extracted, flow_values, message_context, render, resolve,
    run_flow, sample_variables, steps, text_of,
};
use crate::helpers::proxy::Stack;
use crate::helpers::{CALLER_KEY, claims, new_api_key, unix_now};

/// Apigee's cache as the flow uses it: each key's value and the second it expires at.
#[derive(Debug, Default, Clone, PartialEq)]
struct Cache {
    entries: BTreeMap<String, (String, u64)>,
}

/// Carries out what a policy of the kinds the cache relies on does to the flow's variables, from the
/// policy's configuration: AssignMessage (AssignVariable, a message's headers, verb, payload and
/// status), LookupCache, PopulateCache, and ExtractVariables of a JSON payload. Any other kind is an
/// error, so the flow cannot come to rely on something this does not model; the callouts are the
/// test's to answer.
struct Policies<'a> {
    bundle: &'a Bundle,
    cache: Cache,
    /// The current time, in seconds.
    now: u64,
}

impl<'a> Policies<'a> {
    fn new(bundle: &'a Bundle) -> Self {
        Self {
            bundle,
            cache: Cache::default(),
            now: 1_000,
        }
    }

    fn apply(&mut self, name: &str, variables: &mut HashMap<String, FlowValue>) {
        let bundle = self.bundle;
        let document = bundle.policy(name);
        let root = document.root_element();
        match root.tag_name().name() {
            "AssignMessage" => assign_message(root, variables),
            "LookupCache" => {
                let key = cache_key(root, variables);
                let found = self
                    .cache
                    .entries
                    .get(&key)
                    .filter(|(_, expires)| self.now < *expires)
                    .map(|(value, _)| value.clone());
                variables.insert(
                    format!("lookupcache.{name}.cachehit"),
                    FlowValue::Bool(found.is_some()),
                );
                // On a miss the variable is not set (LookupCache reference, `<AssignTo>`).
                if let Some(value) = found {
                    let assign_to = text_of(root, "AssignTo").unwrap();
                    variables.insert(assign_to.to_owned(), FlowValue::Text(value));
                }
            }
            "PopulateCache" => {
                let key = cache_key(root, variables);
                let timeout = root
                    .descendants()
                    .find(|n| n.has_tag_name("TimeoutInSeconds"))
                    .unwrap_or_else(|| panic!("{name}: no TimeoutInSeconds"));
                // The referenced variable when it resolves, the element's text otherwise.
                let seconds = timeout
                    .attribute("ref")
                    .and_then(|reference| variables.get(reference))
                    .map_or_else(
                        || timeout.text().unwrap_or_default().trim().to_owned(),
                        FlowValue::text,
                    );
                let seconds: u64 = seconds
                    .parse()
                    .unwrap_or_else(|e| panic!("{name}: expiry `{seconds}`: {e}"));
                let source = text_of(root, "Source").unwrap();
                let value = variables
                    .get(source)
                    .unwrap_or_else(|| panic!("{name}: `{source}` is not set"))
                    .text();
                self.cache.entries.insert(key, (value, self.now + seconds));
            }
            "ExtractVariables" => extract_json(bundle, name, variables),
            other => panic!("`{name}` is a {other}, which this model does not carry out"),
        }
    }
}

/// Renders a template with the flow's variables as text.
fn render_flow(template: &str, variables: &HashMap<String, FlowValue>) -> String {
    let texts: Vec<(&str, String)> = variables
        .iter()
        .map(|(name, value)| (name.as_str(), value.text()))
        .collect();
    let view: HashMap<&str, &str> = texts
        .iter()
        .map(|(name, text)| (*name, text.as_str()))
        .collect();
    render(template, &view).unwrap_or_else(|e| panic!("{e}: {template}"))
}

/// AssignMessage: its operations in the order they appear, on the message `<AssignTo>` names (new and
/// empty with `createNew`), header names folded to lower case as Apigee matches them.
fn assign_message(root: roxmltree::Node<'_, '_>, variables: &mut HashMap<String, FlowValue>) {
    let assign_to = root.children().find(|n| n.has_tag_name("AssignTo"));
    let message = assign_to
        .and_then(|n| n.text())
        .map_or("message", str::trim)
        .to_owned();
    if assign_to.and_then(|n| n.attribute("createNew")) == Some("true") {
        variables.retain(|name, _| !name.starts_with(&format!("{message}.")));
    }
    let header_names = |section: roxmltree::Node<'_, '_>| -> Vec<(String, String)> {
        section
            .descendants()
            .filter(|n| n.has_tag_name("Header"))
            .map(|h| {
                (
                    h.attribute("name").unwrap().to_ascii_lowercase(),
                    h.text().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    for operation in root.children().filter(roxmltree::Node::is_element) {
        match operation.tag_name().name() {
            "AssignVariable" => {
                let name = text_of(operation, "Name").unwrap().to_owned();
                let template = operation
                    .children()
                    .find(|n| n.has_tag_name("Template"))
                    .and_then(|n| n.text())
                    .unwrap_or_else(|| panic!("`{name}`: only a Template is modelled"));
                let value = render_flow(template, variables);
                variables.insert(name, FlowValue::Text(value));
            }
            "Remove" => {
                for (header, _) in header_names(operation) {
                    variables.remove(&format!("{message}.header.{header}"));
                }
            }
            "Set" => {
                for part in operation.children().filter(roxmltree::Node::is_element) {
                    let text = part.text().unwrap_or_default();
                    match part.tag_name().name() {
                        "Headers" => {
                            for (header, template) in header_names(part) {
                                let value = render_flow(&template, variables);
                                variables.insert(
                                    format!("{message}.header.{header}"),
                                    FlowValue::Text(value),
                                );
                            }
                        }
                        "Verb" => {
                            variables.insert(
                                format!("{message}.verb"),
                                FlowValue::Text(text.trim().to_owned()),
                            );
                        }
                        "Payload" => {
                            let value = render_flow(text, variables);
                            variables.insert(format!("{message}.content"), FlowValue::Text(value));
                        }
                        "StatusCode" => {
                            let code = render_flow(text.trim(), variables).parse().unwrap();
                            variables
                                .insert(format!("{message}.status.code"), FlowValue::Int(code));
                        }
                        other => panic!("AssignMessage Set/{other} is not modelled"),
                    }
                }
            }
            "AssignTo" | "DisplayName" | "IgnoreUnresolvedVariables" => {}
            other => panic!("AssignMessage {other} is not modelled"),
        }
    }
}

/// A cache policy's key: its `<Prefix>`, then each `<KeyFragment>` (a variable, unset renders empty, or
/// a literal), joined by double underscores (Apigee, "Working with cache keys").
fn cache_key(root: roxmltree::Node<'_, '_>, variables: &HashMap<String, FlowValue>) -> String {
    let key = root
        .children()
        .find(|n| n.has_tag_name("CacheKey"))
        .expect("a CacheKey");
    // A Scope's prefix depends on where the policy runs; the shared flow names its own.
    let mut parts = vec![text_of(key, "Prefix").expect("a Prefix").to_owned()];
    for fragment in key.children().filter(|n| n.has_tag_name("KeyFragment")) {
        parts.push(match fragment.attribute("ref") {
            Some(reference) => variables
                .get(reference)
                .map(FlowValue::text)
                .unwrap_or_default(),
            None => fragment.text().unwrap_or_default().trim().to_owned(),
        });
    }
    parts.join("__")
}

/// ExtractVariables of the decision: the JSON content of its `<Source>` message, each JSONPath stored as
/// text; a body that is not JSON sets `extractvariables.<policy>.failed`.
fn extract_json(bundle: &Bundle, name: &str, variables: &mut HashMap<String, FlowValue>) {
    let (source, extracted, ignore_unresolved) = extracted(bundle);
    let content = variables
        .get(&format!("{source}.content"))
        .map(FlowValue::text)
        .unwrap_or_default();
    let Ok(document) = serde_json::from_str::<Value>(&content) else {
        variables.insert(
            format!("extractvariables.{name}.failed"),
            FlowValue::Bool(true),
        );
        return;
    };
    for variable in extracted {
        match resolve(&variable.json_path, &document).unwrap() {
            Some(value) => {
                variables.insert(variable.variable, FlowValue::Text(as_flow_value(value)));
            }
            None => assert!(ignore_unresolved, "{}: unresolved", variable.variable),
        }
    }
}

/// One client request: its credential headers (empty: not sent), method and path.
#[derive(Debug, Clone, Copy)]
struct Call<'a> {
    what: &'a str,
    authorization: &'a str,
    api_key: &'a str,
    method: &'a str,
    path: &'a str,
}

/// Verdict's answer to a callout, as the flow receives it.
#[derive(Debug, Clone)]
enum Answer {
    /// A ServiceCallout's 200 body.
    Json(Value),
    /// An ExternalCallout's flow variables.
    Variables(HashMap<String, FlowValue>),
}

impl Answer {
    fn cache_ttl(&self) -> Option<u64> {
        match self {
            Self::Json(decision) => decision["cache_ttl"].as_u64(),
            Self::Variables(values) => match values.get("verdict.cache_ttl") {
                Some(FlowValue::Int(ttl)) => u64::try_from(*ttl).ok(),
                _ => None,
            },
        }
    }

    /// The same answer without its `cache_ttl`, as a Verdict that sent none would give it.
    fn without_cache_ttl(&self) -> Self {
        match self {
            Self::Json(decision) => {
                let mut decision = decision.clone();
                decision.as_object_mut().unwrap().remove("cache_ttl");
                Self::Json(decision)
            }
            Self::Variables(values) => {
                let mut values = values.clone();
                values.remove("verdict.cache_ttl");
                Self::Variables(values)
            }
        }
    }
}

/// A `verdict serve` on the example policies (the orders policy reads the principal, the method and the
/// path, nothing else), asked as the shared flow's callouts ask it.
struct Service {
    stack: Stack,
    grpc: ExternalCalloutServiceClient<tonic::transport::Channel>,
}

impl Service {
    async fn start(extra: &str) -> Self {
        let stack = Stack::start(extra).await;
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", stack.verdict_address))
                .unwrap()
                .connect()
                .await
                .unwrap();
        Self {
            stack,
            grpc: ExternalCalloutServiceClient::new(channel),
        }
    }

    /// The answer the callout `policy` gets for `call`: the request AM-BuildDecideRequest renders, posted
    /// to `/v1/decide`, or the message the ExternalCallout's configuration makes Apigee send.
    async fn answer(&mut self, bundle: &Bundle, policy: &str, call: &Call<'_>) -> Answer {
        if policy.starts_with("SC-") {
            let am = bundle.policy("AM-BuildDecideRequest");
            let template = text_of(am.root_element(), "Payload").unwrap();
            let mut variables = sample_variables(call.authorization);
            variables.insert("request.header.x-api-key", call.api_key);
            variables.insert("request.verb", call.method);
            variables.insert("proxy.pathsuffix", call.path);
            let response = reqwest::Client::new()
                .post(format!("http://{}/v1/decide", self.stack.verdict_address))
                .header("x-verdict-key", CALLER_KEY)
                .header("content-type", "application/json")
                .body(render(template, &variables).unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{}", call.what);
            return Answer::Json(serde_json::from_slice(&response.bytes().await.unwrap()).unwrap());
        }
        let mut headers = vec![("Host", "api.example.com".to_owned())];
        for (name, value) in [
            ("Authorization", call.authorization),
            ("x-api-key", call.api_key),
        ] {
            if !value.is_empty() {
                headers.push((name, value.to_owned()));
            }
        }
        let message = message_context(
            &CalloutConfiguration::of(bundle, policy),
            &ClientRequest {
                method: call.method,
                path_suffix: call.path,
                query: "",
                headers,
                body: "",
                flow_variables: Vec::new(),
            },
        );
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("x-verdict-key", CALLER_KEY.parse().unwrap());
        let answer = self
            .grpc
            .process_message(request)
            .await
            .unwrap_or_else(|status| panic!("{policy} {}: {status:?}", call.what))
            .into_inner();
        Answer::Variables(flow_values(&answer))
    }
}

/// How one request went through the flow: the run, the variables at its end, and whether Verdict was
/// asked.
struct Outcome {
    run: Run,
    variables: HashMap<String, FlowValue>,
    asked: bool,
}

/// The run and whether Verdict was asked; the variables hold the credentials and are long.
impl std::fmt::Debug for Outcome {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Outcome")
            .field("run", &self.run)
            .field("asked", &self.asked)
            .finish_non_exhaustive()
    }
}

impl Outcome {
    fn ran(&self, step: &str) -> bool {
        self.run.ran.iter().any(|name| name == step)
    }
}

/// Runs the flow for `call` on connection `connection` (`None`: no property set), `answer` answering the
/// callout should it run.
fn go(
    flow: &[(String, Option<super::Condition>)],
    policies: &mut Policies<'_>,
    connection: Option<&str>,
    call: &Call<'_>,
    answer: &Answer,
) -> Outcome {
    let mut start = HashMap::from([
        (
            "request.verb".to_owned(),
            FlowValue::Text(call.method.to_owned()),
        ),
        (
            "proxy.pathsuffix".to_owned(),
            FlowValue::Text(call.path.to_owned()),
        ),
        // The client's own identity headers, which no decision may leave in place.
        (
            "request.header.x-user-id".to_owned(),
            FlowValue::Text("mallory".to_owned()),
        ),
        (
            "request.header.x-tenant".to_owned(),
            FlowValue::Text("someone-else".to_owned()),
        ),
    ]);
    if let Some(connection) = connection {
        start.insert(
            CONNECTION.to_owned(),
            FlowValue::Text(connection.to_owned()),
        );
    }
    for (name, value) in [
        ("request.header.authorization", call.authorization),
        ("request.header.x-api-key", call.api_key),
    ] {
        if !value.is_empty() {
            start.insert(name.to_owned(), FlowValue::Text(value.to_owned()));
        }
    }
    let mut asked = false;
    let mut last = start.clone();
    let run = run_flow(flow, start, |name, variables| {
        if name.starts_with("SC-") || name.starts_with("EC-") {
            asked = true;
            match answer {
                Answer::Json(decision) => {
                    variables.insert("verdictResponse.status.code".into(), FlowValue::Int(200));
                    variables.insert(
                        "verdictResponse.content".into(),
                        FlowValue::Text(decision.to_string()),
                    );
                }
                Answer::Variables(values) => variables.extend(values.clone()),
            }
        } else if !name.starts_with("KVM-") {
            // The caller key the KVM holds is not what these tests are about.
            policies.apply(name, variables);
        }
        last = variables.clone();
    });
    Outcome {
        run,
        variables: last,
        asked,
    }
}

/// The decision's `verdict.*` variables as text, by the names EV-ParseDecision sets.
fn decision_of(bundle: &Bundle, outcome: &Outcome) -> BTreeMap<String, Option<String>> {
    let (_, extracted, _) = extracted(bundle);
    extracted
        .into_iter()
        .map(|v| {
            let value = outcome.variables.get(&v.variable).map(FlowValue::text);
            (v.variable, value)
        })
        .collect()
}

/// The identity headers the upstream gets: every header AM-SetUpstreamHeaders removes or sets.
fn upstream_of(bundle: &Bundle, outcome: &Outcome) -> BTreeMap<String, Option<String>> {
    let am = bundle.policy("AM-SetUpstreamHeaders");
    am.descendants()
        .filter(|n| n.has_tag_name("Header"))
        .filter_map(|h| h.attribute("name"))
        .map(|name| {
            let name = name.to_ascii_lowercase();
            let value = outcome
                .variables
                .get(&format!("request.header.{name}"))
                .map(FlowValue::text);
            (name, value)
        })
        .collect()
}

/// A bearer token for `subject` with `scope`, signed by the stack's issuer.
fn bearer(stack: &Stack, subject: &str, scope: &str) -> String {
    let mut claims = claims(&stack.issuer.issuer(), unix_now());
    claims["sub"] = json!(subject);
    claims["scope"] = json!(scope);
    format!("Bearer {}", stack.sign(&claims))
}

/// Every piece of `credential` long enough to identify it: the whole, and each segment of a JWT.
fn pieces(credential: &str) -> Vec<&str> {
    let credential = credential.strip_prefix("Bearer ").unwrap_or(credential);
    let mut pieces = vec![credential];
    pieces.extend(credential.split('.').filter(|piece| piece.len() >= 16));
    pieces
}

#[tokio::test]
async fn an_allow_is_reused_for_its_cache_ttl_and_nothing_else_is() {
    let bundle = Bundle::load();
    let flow = steps(&roxmltree::Document::parse(&bundle.flow).unwrap());
    let (api_key, entry) = new_api_key(&[
        "--id",
        "partner-a",
        "--scope",
        "orders:read",
        "--tenant",
        "acme",
    ]);
    let mut caching = Service::start(&format!(
        "cache:\n  decision_ttl: 60s\napi_keys:\n  keys:\n    {entry}\n"
    ))
    .await;
    // Verdict's default: no decision is reused.
    let mut not_caching = Service::start("").await;

    let alice = bearer(&caching.stack, "alice", "orders:read orders:write");
    let bob = bearer(&caching.stack, "bob", "orders:read orders:write");
    let reader = bearer(&caching.stack, "alice", "orders:read");
    let call = |what, authorization, api_key, method, path| Call {
        what,
        authorization,
        api_key,
        method,
        path,
    };
    let first = call(
        "alice GET /orders/42",
        alice.as_str(),
        "",
        "GET",
        "/orders/42",
    );
    // Each differs from the first in one of the key's parts, and is an allow of its own.
    let others = [
        call("another path", alice.as_str(), "", "GET", "/orders/43"),
        call("another method", alice.as_str(), "", "POST", "/orders/42"),
        call("another token", bob.as_str(), "", "GET", "/orders/42"),
        call("an API key", "", api_key.as_str(), "GET", "/orders/42"),
    ];
    let denies = [
        call("403", reader.as_str(), "", "POST", "/orders/42"),
        call("401", "", "", "GET", "/orders/42"),
    ];
    // The first request, to the Verdict that lets nothing be reused (its own issuer).
    let alice_elsewhere = bearer(&not_caching.stack, "alice", "orders:read orders:write");
    let first_elsewhere = Call {
        authorization: alice_elsewhere.as_str(),
        ..first
    };
    let credentials: Vec<&str> = [
        alice.as_str(),
        bob.as_str(),
        reader.as_str(),
        api_key.as_str(),
    ]
    .into_iter()
    .flat_map(pieces)
    .collect();

    let callouts: Vec<&str> = bundle
        .named("SC-")
        .into_iter()
        .chain(bundle.named("EC-"))
        .collect();
    assert!(callouts.len() >= 4, "{callouts:?}");
    for callout in callouts {
        let connection = connection_of(&flow, callout);
        let connection = Some(connection.as_str());
        let mut answers = HashMap::new();
        for call in std::iter::once(&first).chain(&others).chain(&denies) {
            answers.insert(call.what, caching.answer(&bundle, callout, call).await);
        }
        let mut policies = Policies::new(&bundle);
        let ttl = answers[first.what]
            .cache_ttl()
            .filter(|ttl| *ttl > 0)
            .unwrap_or_else(|| panic!("{callout}: Verdict gives no cache_ttl: {answers:?}"));

        // A miss: Verdict decides, the allow goes through, and is cached for its cache_ttl.
        let fresh = go(
            &flow,
            &mut policies,
            connection,
            &first,
            &answers[first.what],
        );
        let context = format!("{callout} fresh: {fresh:?}");
        assert!(fresh.asked, "{context}");
        assert_eq!(fresh.run.fault, None, "{context}");
        assert!(fresh.ran("AM-SetUpstreamHeaders"), "{context}");
        assert_eq!(policies.cache.entries.len(), 1, "{context}");
        let (_, expires) = policies.cache.entries.values().next().unwrap();
        assert_eq!(
            *expires,
            policies.now + ttl,
            "{callout}: the entry's expiry"
        );

        // The same request again: a hit. Nothing of a callout runs, the decision the later steps read is
        // the fresh one, and the request ends as it did, with the same upstream headers.
        let cached = policies.cache.clone();
        let hit = go(
            &flow,
            &mut policies,
            connection,
            &first,
            &answers[first.what],
        );
        let context = format!("{callout} hit: {hit:?}");
        assert!(!hit.asked, "{context}");
        for name in &hit.run.ran {
            assert!(!asks_verdict(name), "{callout} hit: `{name}` runs");
        }
        assert_eq!(hit.run.fault, fresh.run.fault, "{context}");
        assert!(hit.ran("AM-SetUpstreamHeaders"), "{context}");
        assert_eq!(
            upstream_of(&bundle, &hit),
            upstream_of(&bundle, &fresh),
            "{callout}: the upstream headers"
        );
        assert_eq!(
            upstream_of(&bundle, &hit)["x-user-id"].as_deref(),
            Some("alice"),
            "{callout}"
        );
        let fresh_decision = decision_of(&bundle, &fresh);
        for (name, restored) in decision_of(&bundle, &hit) {
            let before = &fresh_decision[&name];
            match name.as_str() {
                // A reused decision's remaining lifetime is not known: nothing may reuse it further.
                "verdict.cache_ttl" => assert_eq!(restored.as_deref(), Some("0"), "{callout}"),
                // A template cannot leave a field out: a header the allow does not set comes back
                // empty, which AM-SetUpstreamHeaders sets as it sets an unset one.
                _ if name.starts_with("verdict.header.") && before.is_none() => {
                    assert_eq!(restored.as_deref(), Some(""), "{callout}: `{name}`");
                }
                _ => assert_eq!(&restored, before, "{callout}: `{name}`"),
            }
        }
        // A hit is not written back, so the entry still expires when the fresh allow said.
        assert_eq!(policies.cache, cached, "{callout}: a hit changed the cache");

        // Any other credential, method or path misses, and is an entry of its own.
        for other in &others {
            let before = policies.cache.entries.len();
            let miss = go(
                &flow,
                &mut policies,
                connection,
                other,
                &answers[other.what],
            );
            let context = format!("{callout} {}: {miss:?}", other.what);
            assert!(miss.asked, "{context}");
            assert_eq!(miss.run.fault, None, "{context}");
            assert_eq!(policies.cache.entries.len(), before + 1, "{context}");
            let again = go(
                &flow,
                &mut policies,
                connection,
                other,
                &answers[other.what],
            );
            assert!(!again.asked, "{callout} {} again: {again:?}", other.what);
        }

        // A deny is never cached: each time, Verdict is asked.
        for deny in &denies {
            let before = policies.cache.clone();
            for _ in 0..2 {
                let run = go(&flow, &mut policies, connection, deny, &answers[deny.what]);
                let context = format!("{callout} {}: {run:?}", deny.what);
                assert!(run.asked, "{context}");
                assert!(run.run.fault.is_some(), "{context}");
                assert_eq!(policies.cache, before, "{context}");
            }
        }

        // Without a connection the cached allow is not used: no request is let through undecided.
        let unconfigured = go(&flow, &mut policies, None, &first, &answers[first.what]);
        assert!(!unconfigured.asked, "{unconfigured:?}");
        assert_eq!(
            unconfigured.run.fault.as_deref(),
            Some("RF-CalloutFailed"),
            "{callout} without a connection: {unconfigured:?}"
        );

        // No key and no value holds a credential.
        for (key, (value, _)) in &policies.cache.entries {
            for piece in &credentials {
                assert!(
                    !key.contains(piece) && !value.contains(piece),
                    "{callout}: a credential is cached: {key} = {value}"
                );
            }
        }

        // Once the cache_ttl has passed, the entry is gone and Verdict is asked again.
        policies.now += ttl;
        let expired = go(
            &flow,
            &mut policies,
            connection,
            &first,
            &answers[first.what],
        );
        assert!(expired.asked, "{callout} expired: {expired:?}");

        // An allow with a cache_ttl of 0, or none, is not cached.
        let zero = not_caching.answer(&bundle, callout, &first_elsewhere).await;
        assert_eq!(zero.cache_ttl(), Some(0), "{callout}: {zero:?}");
        for answer in [zero.clone(), zero.without_cache_ttl()] {
            let mut policies = Policies::new(&bundle);
            for _ in 0..2 {
                let run = go(&flow, &mut policies, connection, &first_elsewhere, &answer);
                let context = format!("{callout} cache_ttl {:?}: {run:?}", answer.cache_ttl());
                assert!(run.asked, "{context}");
                assert_eq!(run.run.fault, None, "{context}");
                assert!(policies.cache.entries.is_empty(), "{context}");
            }
        }
    }
}

#[test]
fn the_cache_key_is_a_hash_that_tells_every_credential_and_route_apart() {
    let bundle = Bundle::load();
    let key_of =
        |authorization: &str, api_key: &str, method: &str, path: &str, connection: &str| {
            let mut variables: HashMap<String, FlowValue> = [
                ("request.header.authorization", authorization),
                ("request.header.x-api-key", api_key),
                ("request.verb", method),
                ("proxy.pathsuffix", path),
                (CONNECTION, connection),
            ]
            .into_iter()
            .map(|(name, value)| (name.to_owned(), FlowValue::Text(value.to_owned())))
            .collect();
            let before: BTreeSet<String> = variables.keys().cloned().collect();
            Policies::new(&bundle).apply("AM-SetCacheKey", &mut variables);
            // The key the lookup reads, and every variable the policy set that holds a credential (one
            // long enough not to turn up in a hash by chance) in the clear, which Debug must mask.
            let lookup = bundle.policy("LC-LookupDecision");
            let reference = lookup
                .descendants()
                .find(|n| n.has_tag_name("KeyFragment"))
                .and_then(|n| n.attribute("ref"))
                .unwrap()
                .to_owned();
            for (name, value) in &variables {
                let text = value.text();
                let holds_credential = [authorization, api_key]
                    .iter()
                    .any(|credential| credential.len() >= 16 && text.contains(credential));
                if holds_credential && !before.contains(name) {
                    assert!(
                        name.starts_with("private."),
                        "`{name}` holds the credential: {text}"
                    );
                }
            }
            variables[&reference].text()
        };
    let token = "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW9mLWFsaWNl";
    let cases = [
        (token, "", "GET", "/orders/42", "cloudrun"),
        // The same text as the other credential header, and no credential at all.
        ("", token, "GET", "/orders/42", "cloudrun"),
        ("", "", "GET", "/orders/42", "cloudrun"),
        // Quotes and commas inside a value do not move the boundary between two fields: joined
        // without escaping, these two would render the same text.
        ("a\",\"b", "", "GET", "/orders/42", "cloudrun"),
        ("a", "b\",\"", "GET", "/orders/42", "cloudrun"),
        (token, "", "POST", "/orders/42", "cloudrun"),
        (token, "", "GET", "/orders/43", "cloudrun"),
        (token, "", "GET", "/orders/42", "cloudrun-grpc"),
        (token, "", "GET", "/orders/42", ""),
    ];
    let keys: Vec<String> = cases
        .iter()
        .map(|&(authorization, api_key, method, path, connection)| {
            key_of(authorization, api_key, method, path, connection)
        })
        .collect();
    let distinct: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), cases.len(), "{keys:#?}");
    for key in &keys {
        assert!(
            key.len() == 64 && key.chars().all(|c| c.is_ascii_hexdigit()),
            "not a SHA-256: {key}"
        );
    }
    assert_eq!(
        key_of(token, "", "GET", "/orders/42", "cloudrun"),
        keys[0],
        "the key is the same for the same request"
    );
}
