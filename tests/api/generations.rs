//! One request, one generation: caller authentication and the decision of a request read the
//! generation that was running when it arrived, whatever a reload installs while it is in flight.

use std::convert::Infallible;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tower::ServiceExt as _;
use verdict::policy::PolicyFile;
use verdict::state::Generation;

use crate::helpers::{
    CALLER_KEY, KeyServer, T0, TestApp, claims, config_yaml, parse_config_with, rsa_key,
};

/// A request body whose second half is sent only once `gate` opens.
struct GatedBody {
    first: Option<Bytes>,
    rest: Option<(oneshot::Receiver<()>, Bytes)>,
}

impl hyper::body::Body for GatedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        let Some((gate, _)) = self.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let _ = ready!(Pin::new(gate).poll(context));
        let (_, rest) = self.rest.take().unwrap();
        Poll::Ready(Some(Ok(Frame::data(rest))))
    }
}

fn callout(key: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post("/v1/decide")
        .header("x-verdict-key", key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

async fn answer(response: axum::response::Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn a_reload_during_a_request_changes_neither_who_it_admits_nor_how_it_is_decided() {
    let key = rsa_key("generations-rsa");
    let server = KeyServer::start(&[key]).await;
    let yaml = config_yaml(&server, "");
    let app = TestApp::start_with_policies(&yaml, "permit (principal, action, resource);").await;
    let token = key.sign(&claims(&server.issuer(), T0));
    let body =
        json!({ "authorization": format!("Bearer {token}"), "method": "GET", "path": "/orders/1" })
            .to_string();

    // The request is admitted by the running generation, then waits for the rest of its body.
    let (half, rest) = body.split_at(body.len() / 2);
    let (open, gate) = oneshot::channel();
    let gated = Body::new(GatedBody {
        first: Some(Bytes::from(half.to_owned())),
        rest: Some((gate, Bytes::from(rest.to_owned()))),
    });
    let router = verdict::api::router(app.state.clone());
    let in_flight = tokio::spawn(router.oneshot(callout(CALLER_KEY, gated)));
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!in_flight.is_finished());

    // Meanwhile a reload installs another caller key and a policy set that forbids everything.
    let next = parse_config_with(
        &yaml.replace(CALLER_KEY, "the-next-caller-key-0123456789"),
        vec![PolicyFile {
            name: "forbid.cedar".into(),
            text: "@id(\"nothing\") forbid (principal, action, resource);".into(),
        }],
    );
    let http = verdict::outbound::http_client().unwrap();
    let generation =
        Generation::build(next, Some(&app.state.current()), &http, app.clock.clone()).unwrap();
    app.state.install(generation);
    open.send(()).unwrap();

    let (status, decision) = answer(in_flight.await.unwrap().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{decision}");
    assert_eq!(
        decision["allow"], true,
        "decided by the generation that admitted it: {decision}"
    );
    // A request arriving now meets the new rules.
    let (status, _) = app.send(callout(CALLER_KEY, body.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, decision) = app
        .send(callout("the-next-caller-key-0123456789", body))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(decision["policies"], json!(["nothing"]), "{decision}");
}
