//! gRPC by hand, for the tests of the gRPC fronts that a generated client cannot send (garbage frames,
//! deadlines, the in-process router): a message in its length-prefixed frame, the HTTP/2 request that
//! carries it, and what came back, its status from the headers (trailers-only) or the trailers. With
//! the requests both services take, as a gateway would build them.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::{self as core, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use http::HeaderMap;
use http_body_util::BodyExt as _;
use verdict::fronts::external_callout::proto::{self as apigee, MessageContext, Strings};

pub const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";
pub const PROCESS_MESSAGE: &str = "/apigee.ExternalCalloutService/ProcessMessage";

/// `bytes` as one uncompressed gRPC message frame.
pub fn frame(bytes: &[u8]) -> Vec<u8> {
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(bytes);
    framed
}

/// A unary call of `path` with `body` (already framed) and `metadata`, as gRPC clients send it.
pub fn request(path: &str, body: Vec<u8>, metadata: &[(&str, &str)]) -> http::Request<Body> {
    let mut request = http::Request::post(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in metadata {
        request = request.header(*name, *value);
    }
    request.body(Body::from(body)).unwrap()
}

/// What a unary call got back.
#[derive(Debug)]
pub struct Reply {
    pub http_status: u16,
    /// `grpc-status`, from the headers of a trailers-only answer or from the trailers.
    pub code: Option<i32>,
    /// The answer's message, without its frame; empty when there is none.
    pub body: Bytes,
}

impl Reply {
    pub async fn read(response: http::Response<Body>) -> Self {
        let http_status = response.status().as_u16();
        let headers = response.headers().clone();
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let framed = collected.to_bytes();
        let body = if framed.len() >= 5 {
            framed.slice(5..)
        } else {
            Bytes::new()
        };
        let status_of = |headers: &HeaderMap| {
            headers
                .get("grpc-status")
                .map(|value| value.to_str().unwrap().parse::<i32>().unwrap())
        };
        Self {
            http_status,
            code: status_of(&headers).or_else(|| status_of(&trailers)),
            body,
        }
    }

    pub fn decode<M: prost::Message + Default>(&self) -> M {
        M::decode(self.body.clone()).unwrap()
    }
}

/// An Envoy `CheckRequest` for `method` `path` (with its query) from 203.0.113.7 with `headers`
/// (lower-case names, as Envoy sends them).
pub fn check_request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let http = HttpRequest {
        id: "envoy-request-1".into(),
        method: method.into(),
        path: path.into(),
        host: "api.example.com".into(),
        scheme: "https".into(),
        protocol: "HTTP/1.1".into(),
        headers: headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
        ..Default::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(core::Address {
                    address: Some(Address::SocketAddress(SocketAddress {
                        address: "203.0.113.7".into(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// An ExternalCallout `MessageContext` for `verb` `/base<path>` (with its query) from 203.0.113.7 with
/// `headers` (names as the client wrote them), as a policy with `with.request.headers` sends it.
pub fn message(verb: &str, path: &str, headers: &[(&str, &str)]) -> MessageContext {
    let mut sent: HashMap<String, Strings> = HashMap::new();
    for (name, value) in headers {
        sent.entry((*name).to_owned())
            .or_default()
            .strings
            .push((*value).to_owned());
    }
    let path_suffix = path.split_once('?').map_or(path, |(path, _)| path);
    MessageContext {
        request: Some(apigee::Request {
            uri: format!("/base{path}"),
            verb: verb.into(),
            http_version: "1.1".into(),
            headers: sent,
            ..Default::default()
        }),
        client: Some(apigee::Client {
            ip: "203.0.113.7".into(),
            ..Default::default()
        }),
        proxy: Some(apigee::Proxy {
            base_path: "/base".into(),
            path_suffix: path_suffix.into(),
            ..Default::default()
        }),
        api_proxy: Some(apigee::ApiProxy {
            name: "orders".into(),
            revision: "3".into(),
        }),
        message_id: "apigee-message-1".into(),
        organization_name: "example-org".into(),
        environment_name: "prod".into(),
        ..Default::default()
    }
}

/// `message` encoded and framed.
pub fn framed(message: &impl prost::Message) -> Vec<u8> {
    frame(&message.encode_to_vec())
}

/// A unary call to `url` over `client` (h2c with prior knowledge, or TLS with ALPN) with `body`
/// (already framed) and `metadata`: what came back.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    metadata: &[(&str, &str)],
) -> reqwest::Result<Reply> {
    let mut request = client
        .post(url)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body);
    for (name, value) in metadata {
        request = request.header(*name, *value);
    }
    let response = request.send().await?;
    assert_eq!(
        response.version(),
        reqwest::Version::HTTP_2,
        "gRPC is HTTP/2"
    );
    let response: http::Response<reqwest::Body> = response.into();
    Ok(Reply::read(response.map(Body::new)).await)
}

/// A client speaking HTTP/2 with prior knowledge, for h2c.
pub fn h2c() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
}
