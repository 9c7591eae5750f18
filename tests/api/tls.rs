//! HTTPS on Verdict's own listener (`tls:`), its certificate renewed by a reload.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use verdict::fronts::external_callout::proto::MessageContext;
use verdict::fronts::external_callout::proto::flow_variable::Value as FlowValue;

use crate::helpers::grpc;

use crate::helpers::{
    AUDIENCE, Authority, CALLER_KEY, KeyServer, identity, output, rsa_key, tempdir, verdict,
};

fn client_trusting(cert_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap()])
        .build()
        .unwrap()
}

fn write_config(directory: &Path, server: &KeyServer) -> std::path::PathBuf {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
    let path = directory.join("verdict.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: 127.0.0.1:0\ncallers: {{ api_keys: {{ keys: [\"{CALLER_KEY}\"] }} }}\nissuers:\n  - {{ name: t, issuer: \"{}\", audiences: [\"{AUDIENCE}\"], jwks_uri: \"{}\" }}\npolicies: {{ path: {} }}\ntls: {{ cert: tls.crt, key: tls.key }}\nreload: {{ watch: false }}\n",
            server.issuer(),
            server.jwks_uri(),
            policies.display()
        ),
    )
    .unwrap();
    path
}

async fn readyz(client: &reqwest::Client, address: &str) -> Result<Value, reqwest::Error> {
    let response = client
        .get(format!("https://{address}/readyz"))
        .send()
        .await?;
    Ok(serde_json::from_slice(&response.bytes().await?).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_is_served_over_https_and_a_reload_renews_the_certificate() {
    let server = KeyServer::start(&[rsa_key("k1")]).await;
    let directory = tempdir();
    let (first_cert, first_key) = identity("verdict-1");
    std::fs::write(directory.join("tls.crt"), &first_cert).unwrap();
    std::fs::write(directory.join("tls.key"), &first_key).unwrap();
    let config = write_config(&directory, &server);
    let serve = crate::helpers::Server::serve(&config, None);
    let address = serve.address();
    let first = client_trusting(&first_cert);
    let mut ready = Value::Null;
    for _ in 0..200 {
        if let Ok(body) = readyz(&first, &address).await
            && body["ready"] == true
        {
            ready = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready["ready"], true, "never ready over HTTPS");

    let response = first
        .post(format!("https://{address}/v1/decide"))
        .header("x-verdict-key", CALLER_KEY)
        .header("content-type", "application/json")
        .body(json!({ "method": "GET", "path": "/orders/1" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.version(),
        reqwest::Version::HTTP_2,
        "h2 is chosen by ALPN"
    );
    // A client that offers only HTTP/1.1 gets HTTP/1.1 on the same listener.
    let http1 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(first_cert.as_bytes()).unwrap()])
        .http1_only()
        .build()
        .unwrap();
    let response = http1
        .get(format!("https://{address}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (response.status().as_u16(), response.version()),
        (200, reqwest::Version::HTTP_11)
    );
    let plain = reqwest::get(format!("http://{address}/readyz")).await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP was served"
    );

    // A renewed certificate, then SIGHUP: new connections get it.
    let (second_cert, second_key) = identity("verdict-2");
    std::fs::write(directory.join("tls.crt"), &second_cert).unwrap();
    std::fs::write(directory.join("tls.key"), &second_key).unwrap();
    serve.hangup();
    let second = client_trusting(&second_cert);
    let mut renewed = false;
    for _ in 0..200 {
        if readyz(&second, &address).await.is_ok() {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(renewed, "the renewed certificate was never served");
    // A new connection no longer gets the old certificate (an open one may finish on it).
    let fresh_first = client_trusting(&first_cert);
    assert!(
        readyz(&fresh_first, &address).await.is_err(),
        "the old certificate is still served"
    );
}

#[test]
fn bad_tls_files_are_configuration_errors() {
    let server_issuer = "https://idp.example.com";
    let directory = tempdir();
    let (cert, _) = identity("a");
    let (_, other_key) = identity("b");
    std::fs::write(directory.join("tls.crt"), &cert).unwrap();
    std::fs::write(directory.join("other.key"), &other_key).unwrap();
    std::fs::write(directory.join("garbage.crt"), "not a certificate").unwrap();
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
    for (tls, expected) in [
        ("{ cert: missing.crt, key: other.key }", "cannot read"),
        (
            "{ cert: garbage.crt, key: other.key }",
            "holds no certificate",
        ),
        (
            "{ cert: tls.crt, key: other.key }",
            "do not make a server identity",
        ),
        ("{ cert: tls.crt }", "missing field `key`"),
    ] {
        let path = directory.join("verdict.yaml");
        std::fs::write(
            &path,
            format!("callers: {{ allow_unauthenticated: true }}\nissuers:\n  - {{ name: a, issuer: \"{server_issuer}\", audiences: [x] }}\npolicies: {{ path: {} }}\ntls: {tls}\n", policies.display()),
        )
        .unwrap();
        let (status, _, stderr) = output(verdict().args(["check", "--config"]).arg(&path));
        assert!(!status.success(), "{tls}");
        assert!(
            stderr.contains("tls") && stderr.contains(expected),
            "{tls}: {stderr}"
        );
    }

    let path = directory.join("verdict.yaml");
    std::fs::write(
        &path,
        format!("callers: {{ mtls: {{ ca: tls.crt }} }}\nissuers:\n  - {{ name: a, issuer: \"{server_issuer}\", audiences: [x] }}\npolicies: {{ path: {} }}\n", policies.display()),
    )
    .unwrap();
    let (status, _, stderr) = output(verdict().args(["check", "--config"]).arg(&path));
    assert!(!status.success());
    assert!(stderr.contains("callers.mtls: needs `tls`"), "{stderr}");
}

/// A `verdict serve` over HTTPS whose caller section is rewritten by [`Self::callers`], with the CA
/// `apigee-ca` for client certificates.
struct HttpsServer {
    serve: crate::helpers::Server,
    address: String,
    server_cert: String,
    config: std::path::PathBuf,
    original: String,
    ca: Authority,
}

impl HttpsServer {
    async fn start(callers: &str) -> Self {
        let server = KeyServer::start(&[rsa_key("k1")]).await;
        let directory = tempdir();
        let (server_cert, server_key) = identity("verdict");
        let ca = Authority::new("apigee-ca");
        std::fs::write(directory.join("tls.crt"), &server_cert).unwrap();
        std::fs::write(directory.join("tls.key"), &server_key).unwrap();
        std::fs::write(directory.join("ca.pem"), &ca.pem).unwrap();
        let config = write_config(&directory, &server);
        let original = std::fs::read_to_string(&config).unwrap();
        write_callers(&config, &original, callers);
        let serve = crate::helpers::Server::serve(&config, None);
        let address = serve.address();
        Self {
            serve,
            address,
            server_cert,
            config,
            original,
            ca,
        }
    }

    /// Writes the configuration with `callers` as its caller section (a reload applies it).
    fn callers(&self, callers: &str) {
        write_callers(&self.config, &self.original, callers);
    }

    /// A client trusting the server, presenting `identity` (a PEM certificate and key) if given.
    fn client(&self, identity: Option<String>) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.server_cert.as_bytes()).unwrap()]);
        if let Some(pem) = identity {
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }

    /// The HTTP status of a callout through `client`, with the caller `key` if given.
    async fn decide(&self, client: &reqwest::Client, key: Option<&str>) -> reqwest::Result<u16> {
        let mut request = client
            .post(format!("https://{}/v1/decide", self.address))
            .header("content-type", "application/json")
            .body(json!({ "method": "GET", "path": "/orders/1" }).to_string());
        if let Some(key) = key {
            request = request.header("x-verdict-key", key);
        }
        request
            .send()
            .await
            .map(|response| response.status().as_u16())
    }
}

/// Writes `original` to `config` with `callers` as its caller section.
fn write_callers(config: &Path, original: &str, callers: &str) {
    let yaml = original.replace(
        &format!("callers: {{ api_keys: {{ keys: [\"{CALLER_KEY}\"] }} }}"),
        &format!("callers: {callers}"),
    );
    std::fs::write(config, yaml).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_lets_in_only_allowed_certificates_of_the_ca() {
    let https =
        HttpsServer::start(r#"{ mtls: { ca: ca.pem, allowed_subjects: ["CN=apigee-prod"] } }"#)
            .await;
    let (ca, other_ca) = (&https.ca, Authority::new("other-ca"));
    let client = |identity| https.client(identity);
    let https = &https;
    let decide = |client: reqwest::Client| async move { https.decide(&client, None).await };

    let apigee = client(Some(ca.client("apigee-prod", false)));
    let mut status = Err(String::new());
    for _ in 0..200 {
        match decide(apigee.clone()).await {
            Ok(code) => {
                status = Ok(code);
                break;
            }
            Err(error) => status = Err(error.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        status,
        Ok(200),
        "the allowed client certificate was not let in"
    );

    for (name, identity) in [
        ("no certificate", None),
        ("another CA", Some(other_ca.client("apigee-prod", false))),
        ("expired", Some(ca.client("apigee-prod", true))),
        (
            "a subject not on the list",
            Some(ca.client("someone-else", false)),
        ),
    ] {
        let outcome = decide(client(identity)).await;
        assert!(outcome.is_err(), "{name}: {outcome:?}");
    }
}

/// Waits (bounded), asking over `client`'s kept-alive connection, until `/readyz` counts `reloads`
/// successful reloads.
async fn wait_reloaded(client: &reqwest::Client, address: &str, reloads: u64) {
    for _ in 0..200 {
        if let Ok(body) = readyz(client, address).await
            && body["reloads"]["succeeded"] == reloads
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("reload {reloads} was never applied");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_of_callers_mtls_applies_to_connections_already_open() {
    let https = HttpsServer::start("{ allow_unauthenticated: true }").await;
    let (ca, address) = (&https.ca, &https.address);
    let decide = |client| https.decide(client, None);
    let anonymous = https.client(None);
    wait_reloaded(&anonymous, address, 0).await;
    assert_eq!(decide(&anonymous).await.unwrap(), 200);

    // `callers.mtls` switched on: the connection opened without a certificate is no longer admitted.
    https.callers(r#"{ mtls: { ca: ca.pem, allowed_subjects: ["CN=apigee-prod"] } }"#);
    https.serve.hangup();
    wait_reloaded(&anonymous, address, 1).await;
    assert_eq!(decide(&anonymous).await.unwrap(), 401);
    let prod = https.client(Some(ca.client("apigee-prod", false)));
    assert_eq!(decide(&prod).await.unwrap(), 200);

    // `allowed_subjects` changed: the open connection of a subject no longer listed is refused too.
    https.callers(r#"{ mtls: { ca: ca.pem, allowed_subjects: ["CN=apigee-next"] } }"#);
    https.serve.hangup();
    wait_reloaded(&prod, address, 2).await;
    assert_eq!(decide(&prod).await.unwrap(), 401);
    let fresh_prod = https.client(Some(ca.client("apigee-prod", false)));
    assert!(decide(&fresh_prod).await.is_err());
    let next = https.client(Some(ca.client("apigee-next", false)));
    assert_eq!(decide(&next).await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_caller_key_beside_mtls_a_certificate_is_asked_for_not_demanded() {
    let https = HttpsServer::start(&format!(
        r#"{{ api_keys: {{ keys: ["{CALLER_KEY}"] }}, mtls: {{ ca: ca.pem, allowed_subjects: ["CN=traefik"] }} }}"#
    ))
    .await;
    let (ca, other_ca) = (&https.ca, Authority::new("other-ca"));
    wait_reloaded(&https.client(None), &https.address, 0).await;
    let cases = [
        (
            "the caller key, no certificate",
            None,
            Some(CALLER_KEY),
            Some(200),
        ),
        ("neither", None, None, Some(401)),
        ("a wrong key", None, Some("not-the-key"), Some(401)),
        (
            "an allowed certificate",
            Some(ca.client("traefik", false)),
            None,
            Some(200),
        ),
        (
            "another CA, with the key",
            Some(other_ca.client("traefik", false)),
            Some(CALLER_KEY),
            None,
        ),
        (
            "expired, with the key",
            Some(ca.client("traefik", true)),
            Some(CALLER_KEY),
            None,
        ),
        (
            "a subject not on the list, with the key",
            Some(ca.client("nginx", false)),
            Some(CALLER_KEY),
            None,
        ),
    ];
    for (name, identity, key, expected) in cases {
        let outcome = https.decide(&https.client(identity), key).await.ok();
        assert_eq!(outcome, expected, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_caller_authenticates_by_its_certificate_over_h2_as_apigee_does_on_ec2() {
    let https = HttpsServer::start(&format!(
        r#"{{ api_keys: {{ keys: ["{CALLER_KEY}"] }}, mtls: {{ ca: ca.pem, allowed_subjects: ["CN=apigee-prod"] }} }}"#
    ))
    .await;
    wait_reloaded(&https.client(None), &https.address, 0).await;
    let message = grpc::framed(&grpc::message("GET", "/orders/1", &[]));
    let call = |client: reqwest::Client| {
        let url = format!("https://{}{}", https.address, grpc::PROCESS_MESSAGE);
        let message = message.clone();
        async move { grpc::send(&client, &url, message, &[]).await.unwrap() }
    };
    // The ExternalCallout policy adds no metadata: the TargetServer's client certificate is the caller.
    let apigee = https.client(Some(https.ca.client("apigee-prod", false)));
    let reply = call(apigee).await;
    assert_eq!(reply.code, Some(0), "{reply:?}");
    let answer: MessageContext = reply.decode();
    let status = &answer.additional_flow_variables["verdict.status"];
    assert_eq!(
        status.value,
        Some(FlowValue::Int32(401)),
        "no token: a deny"
    );

    let reply = call(https.client(None)).await;
    assert_eq!(
        reply.code,
        Some(16),
        "neither key nor certificate: {reply:?}"
    );
}
