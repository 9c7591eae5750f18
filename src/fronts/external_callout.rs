//! The Apigee ExternalCallout front (DESIGN §9): `apigee.ExternalCalloutService/ProcessMessage`, which
//! an ExternalCallout policy calls with the message's flow variables as a [`MessageContext`], and which
//! answers the same message with the decision as flow variables and the upstream headers set in its
//! request.
//!
//! The input is the client request's verb, URI and headers (the policy must set
//! `with.request.headers`), `client.ip`, `proxy.pathsuffix`, the proxy, organization and environment,
//! and `apiproduct.name`, `developer.app.name` and `developer.email` when the policy names them in
//! `<FlowVariable>`. The answer sets `verdict.allow` (a bool), `verdict.status` (an int),
//! `verdict.error`, `verdict.error_description`, `verdict.www_authenticate`, `verdict.decision_id`,
//! `verdict.subject`, `verdict.client_id`, `verdict.scope`, `verdict.cache_ttl` (an int) and
//! `verdict.header.<name>`, the names the ServiceCallout flow extracts; an allow's upstream headers
//! replace the client's copies in every case variant it sent, and the client's copies of every other
//! identity header are deleted. A deny is a normal answer, a 503 included: the flow raises it.

use std::collections::HashMap;

use http::{HeaderMap, HeaderName};

use super::FieldError;
use crate::config::ForwardAuthConfig;
use crate::decision::{Decision, DecisionInput};
use crate::policy::ApigeeContext;
use proto::flow_variable::Value;
use proto::{FlowVariable, MessageContext, Strings};

/// Apigee's ExternalCallout interface, compiled from `proto/apigee/external_callout.proto` by
/// `build.rs`.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::allow_attributes_without_reason,
    reason = "generated code, as prost and tonic write it"
)]
pub mod proto {
    tonic::include_proto!("apigee");
}

/// The prefix of every flow variable the answer sets.
pub const VARIABLE_PREFIX: &str = "verdict.";

/// The client request the message describes.
pub fn input(
    message: &MessageContext,
    settings: &ForwardAuthConfig,
) -> Result<DecisionInput, FieldError> {
    let request = message.request.as_ref().ok_or(FieldError {
        field: "request",
        problem: "must be present: run the ExternalCallout on a request flow",
    })?;
    let method = super::method("request.verb", &request.verb)?;
    let headers = headers(&request.headers)?;
    let client = super::client_headers(&headers, settings)?;
    let proxy = message.proxy.clone().unwrap_or_default();
    // `proxy.pathsuffix` is empty for the base path (DESIGN §2); otherwise a path.
    if !proxy.path_suffix.is_empty() && !proxy.path_suffix.starts_with('/') {
        return Err(FieldError {
            field: "proxy.path_suffix",
            problem: "must start with `/`",
        });
    }
    let query = request
        .uri
        .split_once('?')
        .map(|(_, query)| query.to_owned())
        .unwrap_or_default();
    let host = super::single(&headers, "host")?
        .unwrap_or_default()
        .to_owned();
    let client_ip = match message.client.as_ref().map(|client| client.ip.trim()) {
        None | Some("") => None,
        Some(address) => Some(super::ip_address("client.ip", address)?),
    };
    let variable = |name: &str| match message
        .additional_flow_variables
        .get(name)
        .and_then(|variable| variable.value.as_ref())
    {
        Some(Value::String(text)) => text.clone(),
        _ => String::new(),
    };
    let api_proxy = message.api_proxy.as_ref();
    Ok(DecisionInput {
        authorization: client.authorization,
        api_key: client.api_key,
        method,
        path: proxy.path_suffix,
        host,
        query,
        client_ip,
        headers: client.context,
        apigee: ApigeeContext {
            proxy: api_proxy
                .map(|proxy| proxy.name.clone())
                .unwrap_or_default(),
            environment: message.environment_name.clone(),
            organization: message.organization_name.clone(),
            product: variable("apiproduct.name"),
            app: variable("developer.app.name"),
            developer: variable("developer.email"),
        },
        message_id: message.message_id.clone(),
    })
}

/// The request's headers; Apigee sends each header's values under the name as the client wrote it.
fn headers(sent: &HashMap<String, Strings>) -> Result<HeaderMap, FieldError> {
    let mut headers = HeaderMap::new();
    for (name, values) in sent {
        let invalid = || FieldError {
            field: "request.headers",
            problem: "must be valid HTTP header names and values",
        };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        for value in &values.strings {
            headers.append(
                name.clone(),
                http::HeaderValue::from_str(value).map_err(|_| invalid())?,
            );
        }
    }
    Ok(headers)
}

/// The message to return: `message` with the decision's flow variables (and only them, so no variable
/// Apigee sent is written back) and, in its request, only the header changes: on an allow, the
/// upstream headers under every case variant of their name the client sent; the client's copies of
/// every identity header the decision does not set, deleted.
pub fn answer<'a>(
    mut message: MessageContext,
    decision: &Decision,
    identity_headers: impl Iterator<Item = &'a HeaderName>,
) -> MessageContext {
    let upstream = super::upstream(decision, identity_headers);
    let sent: Vec<String> = message
        .request
        .as_ref()
        .map(|request| request.headers.keys().cloned().collect())
        .unwrap_or_default();
    let variants = |name: &str| {
        sent.iter()
            .filter(|sent| sent.eq_ignore_ascii_case(name))
            .cloned()
            .collect::<Vec<_>>()
    };
    let mut changes = HashMap::new();
    for (name, value) in &upstream.set {
        let Ok(value) = value.to_str() else { continue };
        let mut names = variants(name.as_str());
        names.push(name.as_str().to_owned());
        for name in names {
            changes.insert(
                name,
                Strings {
                    strings: vec![value.to_owned()],
                },
            );
        }
    }
    for name in upstream.unset {
        for variant in variants(name) {
            changes.insert(variant, Strings::default());
        }
    }
    if let Some(request) = message.request.as_mut() {
        request.headers = changes;
    }
    message.additional_flow_variables = variables(decision);
    message
}

/// The decision as flow variables, under [`VARIABLE_PREFIX`].
fn variables(decision: &Decision) -> HashMap<String, FlowVariable> {
    let text = |text: &str| Value::String(text.to_owned());
    let mut values = vec![
        ("allow".to_owned(), Value::Bool(decision.allow)),
        (
            "status".to_owned(),
            Value::Int32(i32::from(decision.status)),
        ),
        ("error".to_owned(), text(decision.error.as_str())),
        (
            "error_description".to_owned(),
            text(&decision.error_description),
        ),
        (
            "www_authenticate".to_owned(),
            text(&decision.www_authenticate),
        ),
        (
            "decision_id".to_owned(),
            Value::String(decision.decision_id.to_string()),
        ),
        ("subject".to_owned(), text(decision.subject())),
        ("client_id".to_owned(), text(decision.client_id())),
        (
            "scope".to_owned(),
            Value::String(decision.scope().to_string()),
        ),
        (
            "cache_ttl".to_owned(),
            Value::Int64(i64::try_from(decision.cache_ttl).unwrap_or(i64::MAX)),
        ),
    ];
    for (name, value) in decision.headers.iter() {
        values.push((format!("header.{name}"), text(value)));
    }
    values
        .into_iter()
        .map(|(name, value)| {
            (
                format!("{VARIABLE_PREFIX}{name}"),
                FlowVariable { value: Some(value) },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::proto::{ApiProxy, Client, Proxy, Request};
    use super::*;

    fn message(headers: &[(&str, &[&str])]) -> MessageContext {
        MessageContext {
            request: Some(Request {
                uri: "/base/orders/7?expand=items".into(),
                verb: "delete".into(),
                headers: headers
                    .iter()
                    .map(|(name, values)| {
                        let strings = values.iter().map(|value| (*value).to_owned()).collect();
                        ((*name).to_owned(), Strings { strings })
                    })
                    .collect(),
                ..Default::default()
            }),
            client: Some(Client {
                ip: "203.0.113.9".into(),
                ..Default::default()
            }),
            proxy: Some(Proxy {
                path_suffix: "/orders/7".into(),
                ..Default::default()
            }),
            api_proxy: Some(ApiProxy {
                name: "orders".into(),
                revision: "2".into(),
            }),
            organization_name: "org".into(),
            environment_name: "prod".into(),
            message_id: "m-1".into(),
            additional_flow_variables: [
                ("apiproduct.name", "gold"),
                ("developer.app.name", "shop"),
                ("developer.email", "dev@example.com"),
            ]
            .into_iter()
            .map(|(name, value)| {
                let value = Some(Value::String(value.to_owned()));
                (name.to_owned(), FlowVariable { value })
            })
            .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_request_and_the_apigee_context_are_read_from_the_message() {
        let message = message(&[
            ("Authorization", &["Bearer abc"]),
            ("Host", &["api.example.com"]),
            ("X-Tenant", &["acme", "globex"]),
        ]);
        let read = input(&message, &ForwardAuthConfig::default()).unwrap();
        assert_eq!(read.method, "DELETE");
        assert_eq!(read.path, "/orders/7");
        assert_eq!(read.query, "expand=items");
        assert_eq!(read.host, "api.example.com");
        assert_eq!(read.authorization.as_deref(), Some("Bearer abc"));
        assert_eq!(read.headers["x-tenant"], "acme, globex");
        assert_eq!(read.client_ip, Some("203.0.113.9".parse().unwrap()));
        assert_eq!(read.message_id, "m-1");
        let apigee = &read.apigee;
        assert_eq!(
            [&apigee.proxy, &apigee.environment, &apigee.organization],
            ["orders", "prod", "org"]
        );
        assert_eq!(
            [&apigee.product, &apigee.app, &apigee.developer],
            ["gold", "shop", "dev@example.com"]
        );
    }

    #[test]
    fn a_credential_sent_twice_in_any_case_is_refused() {
        for headers in [
            &[("Authorization", &["Bearer a", "Bearer b"][..])][..],
            &[
                ("Authorization", &["Bearer a"][..]),
                ("authorization", &["Bearer b"][..]),
            ][..],
        ] {
            let error = input(&message(headers), &ForwardAuthConfig::default()).unwrap_err();
            assert_eq!(error.field, "authorization", "{error}");
        }
        let error = input(
            &message(&[("x-bad", &["line\nbreak"][..])]),
            &ForwardAuthConfig::default(),
        )
        .unwrap_err();
        assert_eq!(error.field, "request.headers");
    }
}
