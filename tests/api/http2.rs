//! HTTP/1.1 and HTTP/2 on one listener: h2c with prior knowledge on plain TCP (Cloud Run's end-to-end
//! HTTP/2), for the JSON callout and the forward-auth front alike. (`h2` by ALPN over TLS is in `tls`.)

use serde_json::{Value, json};

use crate::helpers::CALLER_KEY;
use crate::helpers::proxy::Stack;

#[tokio::test(flavor = "multi_thread")]
async fn h2c_with_prior_knowledge_and_http1_share_the_api_listener() {
    let stack = Stack::start("").await;
    let bearer = format!("Bearer {}", stack.token("orders:read"));
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let http1 = reqwest::Client::builder().http1_only().build().unwrap();
    for (client, version) in [
        (&h2c, reqwest::Version::HTTP_2),
        (&http1, reqwest::Version::HTTP_11),
    ] {
        let response = client
            .post(format!("http://{}/v1/decide", stack.verdict_address))
            .header("x-verdict-key", CALLER_KEY)
            .header("content-type", "application/json")
            .body(
                json!({ "authorization": bearer, "method": "GET", "path": "/orders/1" })
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), version);
        assert_eq!(response.status(), 200);
        let decision: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(decision["allow"], true, "{decision}");

        let response = client
            .get(format!(
                "http://{}/v1/forward-auth/orders/1",
                stack.verdict_address
            ))
            .header("x-verdict-key", CALLER_KEY)
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), version);
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-user-id"], "alice");

        // Caller authentication holds on either protocol.
        let response = client
            .get(format!(
                "http://{}/v1/forward-auth/orders/1",
                stack.verdict_address
            ))
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 500);
    }
}
