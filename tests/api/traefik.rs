//! Traefik 3 in front of Verdict, from the shipped `deploy/traefik/` configuration: `forwardAuth` asks
//! `/v1/forward-auth` over mutual TLS (Traefik cannot add a caller key header to its auth request), and
//! the real `traefik` binary runs on loopback between a client and the recording upstream.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::helpers::proxy::{
    Process, Stack, contract, free_port, render, require, same_decisions_as_decide, send,
};
use crate::helpers::{Authority, CALLER_KEY, identity};

/// The certificates of one test, as files in `directory`: Verdict's server identity (self-signed, for
/// 127.0.0.1), the CA Verdict trusts for callers, and Traefik's client certificate (`CN=traefik`).
struct Certificates {
    directory: PathBuf,
    authority: Authority,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Certificates {
    fn new() -> Self {
        let directory = crate::helpers::tempdir();
        let (cert, key) = identity("verdict");
        std::fs::write(directory.join("verdict.crt"), cert).unwrap();
        std::fs::write(directory.join("verdict.key"), key).unwrap();
        let authority = Authority::new("verdict-callers");
        std::fs::write(directory.join("callers-ca.pem"), &authority.pem).unwrap();
        let (client_cert, client_key) = write_client(&directory, "traefik", &authority, "traefik");
        Self {
            directory,
            authority,
            client_cert,
            client_key,
        }
    }

    /// Verdict's server certificate: what Traefik checks Verdict against (`tls.ca`).
    fn server_cert(&self) -> PathBuf {
        self.directory.join("verdict.crt")
    }

    /// What Verdict's configuration gets beside the Stack's: HTTPS on its listener, and callers
    /// admitted by a `CN=traefik` certificate of the callers' CA, or by the caller key.
    fn verdict_extra(&self) -> String {
        let path = |name: &str| self.directory.join(name).display().to_string();
        format!(
            "tls:\n  cert: {}\n  key: {}\ncallers:\n  api_keys:\n    keys: [\"{CALLER_KEY}\"]\n  mtls:\n    ca: {}\n    allowed_subjects: [\"CN=traefik\"]\n",
            path("verdict.crt"),
            path("verdict.key"),
            path("callers-ca.pem"),
        )
    }

    /// The shipped dynamic configuration for Verdict on `verdict_port`, with Traefik's own certificate.
    fn dynamic(&self, verdict_port: u16, stack: &Stack) -> String {
        self.dynamic_with(verdict_port, stack, (&self.client_cert, &self.client_key))
    }

    /// The shipped dynamic configuration, presenting the client certificate and key `client`.
    fn dynamic_with(&self, verdict_port: u16, stack: &Stack, client: (&Path, &Path)) -> String {
        render(
            "deploy/traefik/dynamic.yml",
            &[
                ("VERDICT_PORT", verdict_port.to_string()),
                ("VERDICT_CA", self.server_cert().display().to_string()),
                ("CLIENT_CERT", client.0.display().to_string()),
                ("CLIENT_KEY", client.1.display().to_string()),
                ("UPSTREAM_PORT", stack.upstream.address.port().to_string()),
            ],
        )
    }
}

/// A client certificate of `common_name` signed by `authority`, as `<name>.crt` and `<name>.key`.
fn write_client(
    directory: &Path,
    name: &str,
    authority: &Authority,
    common_name: &str,
) -> (PathBuf, PathBuf) {
    let pem = authority.client(common_name, false);
    let start = pem.find("-----BEGIN PRIVATE KEY-----").unwrap();
    let cert = directory.join(format!("{name}.crt"));
    let key = directory.join(format!("{name}.key"));
    std::fs::write(&cert, &pem[..start]).unwrap();
    std::fs::write(&key, &pem[start..]).unwrap();
    (cert, key)
}

/// `text` without the one line containing `needle`: a test's variant of a shipped file.
fn without_line(text: &str, needle: &str) -> String {
    edit_line(text, needle, false, &[])
}

/// `text` with `lines` inserted after the one line containing `needle`.
fn insert_after(text: &str, needle: &str, lines: &[&str]) -> String {
    edit_line(text, needle, true, lines)
}

/// `text` with `lines` in place of (or after, with `keep`) the one line containing `needle`. The needle
/// must be on exactly one line, so that a change to the shipped file shows here rather than silently
/// testing something else.
fn edit_line(text: &str, needle: &str, keep: bool, lines: &[&str]) -> String {
    assert_eq!(
        text.lines().filter(|line| line.contains(needle)).count(),
        1,
        "`{needle}` in {text}"
    );
    let mut out = String::new();
    for line in text.lines() {
        if !line.contains(needle) || keep {
            out.push_str(line);
            out.push('\n');
        }
        if line.contains(needle) {
            for inserted in lines {
                out.push_str(inserted);
                out.push('\n');
            }
        }
    }
    out
}

/// A running Traefik and the base URL clients send to.
struct Traefik {
    process: Process,
    base: String,
}

impl Traefik {
    /// Starts `traefik` with the shipped static configuration and `dynamic`, a rendered dynamic
    /// configuration.
    async fn start(directory: &Path, dynamic: &str) -> Self {
        Self::start_with(directory, dynamic, |text| text).await
    }

    /// Starts `traefik` with the shipped static configuration as `edit` changes it, and `dynamic`;
    /// waits (bounded) until its router answers: until the file provider's configuration is applied,
    /// Traefik answers 404 to every request.
    async fn start_with(
        directory: &Path,
        dynamic: &str,
        edit: impl FnOnce(String) -> String,
    ) -> Self {
        let dynamic_path = directory.join("dynamic.yml");
        std::fs::write(&dynamic_path, dynamic).unwrap();
        let port = free_port();
        let static_path = directory.join("traefik.yml");
        let text = render(
            "deploy/traefik/traefik.yml",
            &[
                ("LISTEN_PORT", port.to_string()),
                ("DYNAMIC_CONFIG", dynamic_path.display().to_string()),
            ],
        );
        std::fs::write(&static_path, edit(text)).unwrap();
        let mut command = Command::new(require("traefik"));
        command.arg(format!("--configFile={}", static_path.display()));
        let mut process = Process::spawn(command, directory, "traefik");
        process.wait_port(port);
        let base = format!("http://127.0.0.1:{port}");
        let client = client();
        for _ in 0..400 {
            let answer = client.get(format!("{base}/")).send().await;
            if answer.is_ok_and(|response| response.status() != 404) {
                return Self { process, base };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("Traefik never routed a request: {}", process.output());
    }
}

/// The client's HTTP client: bounded, so that a proxy that hangs fails the test rather than stalls it
/// (Traefik's own limit on a Verdict that does not answer is 30 s).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .unwrap()
}

/// The stack with Verdict on HTTPS and mutual TLS, and Traefik in front with the shipped configuration.
async fn start() -> (Certificates, Stack, Traefik) {
    let certificates = Certificates::new();
    let stack = Stack::start(&certificates.verdict_extra()).await;
    let dynamic = certificates.dynamic(stack.verdict_port(), &stack);
    let traefik = Traefik::start(&stack.directory, &dynamic).await;
    (certificates, stack, traefik)
}

/// A valid token for `/orders/1`.
fn reader(stack: &Stack) -> String {
    format!("Bearer {}", stack.token("orders:read"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_configuration_passes_the_proxy_contract() {
    let (_certificates, stack, traefik) = start().await;
    contract(&stack, &client(), &traefik.base).await;
    same_decisions_as_decide(&stack, &traefik.base).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_load_balancer_traefik_trusts_the_contract_still_holds() {
    // Traefik trusting the X-Forwarded-* headers of the address in front of it (a load balancer, here
    // the test's client): its forwardAuth still writes the method, URI, host and client address itself.
    let certificates = Certificates::new();
    let stack = Stack::start(&certificates.verdict_extra()).await;
    let dynamic = certificates.dynamic(stack.verdict_port(), &stack);
    let traefik = Traefik::start_with(&stack.directory, &dynamic, |text| {
        insert_after(
            &text,
            "address: ",
            &[
                "    forwardedHeaders:",
                "      trustedIPs: [\"127.0.0.1/32\"]",
            ],
        )
    })
    .await;
    contract(&stack, &client(), &traefik.base).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_verdict_stopped_traefik_denies_and_the_upstream_is_never_reached() {
    let (_certificates, mut stack, traefik) = start().await;
    let token = reader(&stack);
    let client = client();
    let answer = send(
        &client,
        &traefik.base,
        "GET",
        "/orders/1",
        &[("authorization", &token)],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(stack.upstream.take().len(), 1);

    stack.verdict.child.kill().unwrap();
    stack.verdict.child.wait().unwrap();
    let answer = send(
        &client,
        &traefik.base,
        "GET",
        "/orders/1",
        &[("authorization", &token)],
    )
    .await;
    // Traefik's own answer when it gets none from Verdict: a bare 500, no retry hint.
    assert_eq!(
        answer.status,
        500,
        "{answer:?}: {}",
        traefik.process.output()
    );
    assert_eq!(answer.retry_after, None, "{answer:?}");
    assert_eq!(answer.body, "", "{answer:?}");
    assert!(
        stack.upstream.take().is_empty(),
        "the upstream was reached without Verdict"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verdict_slower_than_traefiks_timeout_is_a_deny_and_the_upstream_is_never_reached() {
    let certificates = Certificates::new();
    let stack = Stack::start(&certificates.verdict_extra()).await;
    // A listener that accepts connections and never answers: the TLS handshake never completes, and
    // Traefik gives up on it after its fixed 10 s.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let traefik = Traefik::start(&stack.directory, &certificates.dynamic(port, &stack)).await;
    stack.upstream.take();

    let token = reader(&stack);
    let answer = send(
        &client(),
        &traefik.base,
        "GET",
        "/orders/1",
        &[("authorization", &token)],
    )
    .await;
    assert_eq!(
        answer.status,
        500,
        "{answer:?}: {}",
        traefik.process.output()
    );
    assert!(
        accepted.load(Ordering::SeqCst) > 0,
        "Traefik never asked the slow Verdict"
    );
    assert!(
        stack.upstream.take().is_empty(),
        "the upstream was reached without a decision"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn traefik_without_its_client_certificate_is_refused_by_verdict() {
    let certificates = Certificates::new();
    let stack = Stack::start(&certificates.verdict_extra()).await;
    // The shipped configuration less its `tls.cert` and `tls.key`: Traefik still checks Verdict's
    // certificate, and presents none of its own.
    let dynamic = certificates.dynamic(stack.verdict_port(), &stack);
    let dynamic = without_line(&without_line(&dynamic, "cert: "), "key: ");
    let traefik = Traefik::start(&stack.directory, &dynamic).await;
    let token = reader(&stack);
    let answer = send(
        &client(),
        &traefik.base,
        "GET",
        "/orders/1",
        &[("authorization", &token)],
    )
    .await;
    // Verdict's 500, which Traefik passes on as any deny.
    assert_eq!(answer.status, 500, "{answer:?}");
    assert_eq!(answer.body["error"], "unauthenticated_caller", "{answer:?}");
    assert!(
        stack.upstream.take().is_empty(),
        "the upstream was reached without caller authentication"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_of_another_subject_or_another_ca_is_refused_by_verdict() {
    let certificates = Certificates::new();
    let stack = Stack::start(&certificates.verdict_extra()).await;
    let token = reader(&stack);
    let other_ca = Authority::new("other-ca");
    let cases = [
        ("mallory", &certificates.authority, "mallory"),
        ("other-ca", &other_ca, "traefik"),
    ];
    for (name, authority, common_name) in cases {
        let directory = stack.directory.join(name);
        std::fs::create_dir(&directory).unwrap();
        let (cert, key) = write_client(&directory, name, authority, common_name);
        let dynamic = certificates.dynamic_with(stack.verdict_port(), &stack, (&cert, &key));
        let traefik = Traefik::start(&directory, &dynamic).await;
        let answer = send(
            &client(),
            &traefik.base,
            "GET",
            "/orders/1",
            &[("authorization", &token)],
        )
        .await;
        // Verdict's listener refuses both at the handshake, which Traefik answers 500 itself.
        assert_eq!(answer.status, 500, "{name}: {answer:?}");
        assert!(
            stack.upstream.take().is_empty(),
            "{name}: the upstream was reached"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn aliases_of_the_identity_headers_a_client_sends_never_reach_the_upstream() {
    let (_certificates, stack, traefik) = start().await;
    stack.upstream.take();
    // Upstreams that derive variable names from header names (CGI, WSGI, Rack, PHP, nginx) read each
    // of these as `X-User-Id` or `X-Tenant`.
    let answer = send(
        &client(),
        &traefik.base,
        "GET",
        "/orders/1",
        &[
            ("authorization", &reader(&stack)),
            ("x_user_id", "mallory"),
            ("X.Tenant", "evil"),
            ("x-user~id", "eve"),
            ("x+tenant", "evil"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = stack.upstream.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let alias = |name: &str| -> String {
        name.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect()
    };
    let mut identity: Vec<(&str, &str)> = seen[0]
        .headers
        .iter()
        .filter(|(name, _)| ["x-user-id", "x-tenant"].contains(&alias(name).as_str()))
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    identity.sort_unstable();
    assert_eq!(
        identity,
        [("x-tenant", "acme"), ("x-user-id", "alice")],
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_sees_the_client_address_traefik_saw_not_one_the_client_claims() {
    let (_certificates, stack, traefik) = start().await;
    stack.upstream.take();
    let answer = send(
        &client(),
        &traefik.base,
        "GET",
        "/orders/1",
        &[
            ("authorization", &reader(&stack)),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-real-ip", "203.0.113.9"),
            ("x-forwarded-host", "evil.example"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = stack.upstream.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].header("x-forwarded-for"), ["127.0.0.1"], "{seen:?}");
    assert_eq!(seen[0].header("x-real-ip"), ["127.0.0.1"], "{seen:?}");
    let host = traefik.base.trim_start_matches("http://");
    assert_eq!(seen[0].header("x-forwarded-host"), [host], "{seen:?}");
}
