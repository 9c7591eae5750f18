//! Real proxies in front of a real Verdict, for the end-to-end tests of the forward-auth front: a
//! [`Stack`] of an issuer, `verdict serve` and an [`Upstream`] that reports what reached it, each proxy
//! started as a child [`Process`] from the configuration under `deploy/`, rendered by [`render`] only
//! for ports and paths, and [`contract`], the cases every proxy must pass.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::process::Server;
use super::{AUDIENCE, CALLER_KEY, JwksAnswer, KeyServer, claims, rsa_key, tempdir, unix_now};

/// A port free on loopback now (for a child process to bind).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The program `name`: on `PATH`, in `/usr/sbin` (where Debian puts nginx and HAProxy), or in
/// `target/proxies/bin` (where `tests/run.sh` installs the pinned Traefik and Envoy). A test whose proxy
/// is missing fails, it never skips.
pub fn require(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let installed = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|target| target.join("proxies/bin"));
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .chain(installed)
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: `bash tests/run.sh` installs the proxies the tests run"
            )
        })
}

/// The file at `template` (relative to the repository) with every `{{NAME}}` replaced by its value; a
/// placeholder left over is a test error.
pub fn render(template: &str, values: &[(&str, String)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(template);
    let mut text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    for (name, value) in values {
        text = text.replace(&format!("{{{{{name}}}}}"), value);
    }
    assert!(
        !text.contains("{{"),
        "{template}: a placeholder is left: {text}"
    );
    text
}

/// A child process, killed when dropped; its output goes to `<directory>/<name>.log`.
pub struct Process {
    child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(mut command: Command, directory: &Path, name: &str) -> Self {
        let log = directory.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("starting {name}: {error}"));
        Self { child, log }
    }

    /// Waits (bounded) until something accepts connections on `port`.
    pub fn wait_port(&mut self, port: u16) {
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("exited with {status}: {}", self.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nothing listens on {port}: {}", self.output());
    }

    /// What the process wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    /// Lower-case names; every value of a repeated header, in order.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// Every value the upstream received for `name`.
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }
}

/// The protected service: answers every request 200 with `{"upstream": true}` and keeps what it saw.
#[derive(Clone)]
pub struct Upstream {
    pub address: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let router = Router::new().fallback(record).with_state(Arc::clone(&seen));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { address, seen }
    }

    /// What reached the upstream, and forgets it.
    pub fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

async fn record(State(seen): State<Arc<Mutex<Vec<Seen>>>>, request: Request) -> impl IntoResponse {
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    seen.lock().unwrap().push(Seen {
        method: request.method().to_string(),
        uri: request.uri().to_string(),
        headers,
    });
    axum::Json(json!({ "upstream": true }))
}

/// An issuer, `verdict serve` trusting it with the example policies and the identity headers
/// `x-user-id` and `x-tenant`, and the upstream.
pub struct Stack {
    pub directory: PathBuf,
    pub issuer: KeyServer,
    pub verdict: Server,
    /// `127.0.0.1:<port>` of Verdict's API listener.
    pub verdict_address: String,
    /// Whether that listener serves HTTPS (`tls:` in the configuration).
    pub verdict_https: bool,
    pub upstream: Upstream,
}

impl Stack {
    /// Starts the stack; `extra` is appended to Verdict's configuration (e.g. `tls:` and `callers.mtls`
    /// for Traefik, which then replaces the default `callers:`).
    pub async fn start(extra: &str) -> Self {
        Self::launch(extra, "examples/policies", true).await
    }

    /// [`Stack::start`] with the policies of `policies` (a directory of the repository) instead of
    /// the example ones.
    pub async fn start_with_policies(extra: &str, policies: &str) -> Self {
        Self::launch(extra, policies, true).await
    }

    /// [`Stack::start`] with an issuer whose key set answers 500 from the start: Verdict runs but never
    /// becomes ready, and answers every token with a 503 `temporarily_unavailable` decision.
    pub async fn start_without_keys(extra: &str) -> Self {
        Self::launch(extra, "examples/policies", false).await
    }

    async fn launch(extra: &str, policies: &str, keys_served: bool) -> Self {
        let issuer = KeyServer::start(&[rsa_key("proxy-rsa")]).await;
        if !keys_served {
            issuer.answer(JwksAnswer::Status(500));
        }
        let directory = tempdir();
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join(policies);
        let callers = if extra.contains("callers:") {
            String::new()
        } else {
            format!("callers:\n  api_keys:\n    keys: [\"{CALLER_KEY}\"]\n")
        };
        let config = format!(
            r#"listen: 127.0.0.1:0
{callers}issuers:
  - name: test
    issuer: "{iss}"
    audiences: ["{AUDIENCE}"]
    jwks_uri: "{jwks}"
    claims: {{ tenant: tenant }}
policies: {{ path: {policies} }}
headers:
  x-user-id: sub
  x-tenant: tenant
decision_log: off
reload: {{ watch: false }}
{extra}
"#,
            iss = issuer.issuer(),
            jwks = issuer.jwks_uri(),
            policies = policies.display(),
        );
        let path = directory.join("verdict.yaml");
        std::fs::write(&path, config).unwrap();
        let verdict = Server::serve(&path, Some("info"));
        let verdict_address = verdict.address();
        let https = extra.lines().any(|line| line.starts_with("tls:"));
        match (keys_served, https) {
            // Without keys it is never ready.
            (false, _) => {}
            (true, true) => wait_ready_https(&verdict_address).await,
            (true, false) => {
                super::wait_ready(&verdict_address).await;
            }
        }
        Self {
            directory,
            issuer,
            verdict,
            verdict_address,
            verdict_https: https,
            upstream: Upstream::start().await,
        }
    }

    /// The port of Verdict's API listener.
    pub fn verdict_port(&self) -> u16 {
        self.verdict_address
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap()
    }

    /// Verdict's decision on `method` `path` with `authorization`, asked at `/v1/decide` with the caller
    /// key (over HTTPS when Verdict serves it; the certificate is not what this checks).
    pub async fn decide(&self, authorization: &str, method: &str, path: &str) -> Value {
        let client = reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        let scheme = if self.verdict_https { "https" } else { "http" };
        let response = client
            .post(format!("{scheme}://{}/v1/decide", self.verdict_address))
            .header("x-verdict-key", CALLER_KEY)
            .header("content-type", "application/json")
            .body(
                json!({ "authorization": authorization, "method": method, "path": path })
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
    }

    /// A valid token for alice of tenant acme, with `scope`.
    pub fn token(&self, scope: &str) -> String {
        let mut claims = claims(&self.issuer.issuer(), unix_now());
        claims["scope"] = json!(scope);
        self.sign(&claims)
    }

    /// `claims` signed by the issuer's key.
    pub fn sign(&self, claims: &Value) -> String {
        rsa_key("proxy-rsa").sign(claims)
    }
}

/// Polls `/readyz` over HTTPS (Verdict with `tls:`) until it answers 200; a bounded wait for the
/// process. Readiness only: the certificate is not checked here, the proxy under test checks it.
async fn wait_ready_https(address: &str) {
    let client = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    for _ in 0..600 {
        if let Ok(response) = client.get(format!("https://{address}/readyz")).send().await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{address} never became ready over HTTPS");
}

/// What a client got back through the proxy.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub www_authenticate: Option<String>,
    pub retry_after: Option<String>,
    pub body: Value,
}

/// Sends a client request through the proxy at `base` (`http://127.0.0.1:<port>`).
pub async fn send(
    client: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = client.request(method.parse().unwrap(), format!("{base}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let (status, www_authenticate, retry_after) = (
        response.status().as_u16(),
        header("www-authenticate"),
        header("retry-after"),
    );
    let bytes = response.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Answer {
        status,
        www_authenticate,
        retry_after,
        body,
    }
}

/// What a client got back for a request sent with [`send_raw`]: the status, the head (status line and
/// headers, as received) and the body (not de-chunked).
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Sends `method target` through the proxy at `base` (`http://127.0.0.1:<port>`) on a connection of its
/// own, with the request target exactly as written. [`send`] cannot send every path: its URL parser
/// resolves `..`, `.` and their encoded spellings such as `%2e%2e` before the request leaves, so the
/// proxy would never see them.
pub async fn send_raw(
    base: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> RawAnswer {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let authority = base.strip_prefix("http://").unwrap_or(base);
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {target}: no answer within 30 s"));
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or((answer.as_str(), ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("{method} {target}: not an HTTP answer: {answer:?}"));
    RawAnswer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// The cases every proxy's shipped configuration must pass, through the proxy at `base` in front of
/// `stack`: the identity of a valid token reaches the upstream, and only it; every deny reaches the
/// client with its status and challenge and never the upstream; a client's own identity and
/// forwarding headers change nothing; paths with another reading are never allowed.
pub async fn contract(stack: &Stack, client: &reqwest::Client, base: &str) {
    let full = format!("Bearer {}", stack.token("orders:read orders:write"));
    let read_only = format!("Bearer {}", stack.token("orders:read"));
    stack.upstream.take();

    // A valid token: the upstream sees the identity from its claims, and the request as sent.
    let answer = send(
        client,
        base,
        "GET",
        "/orders/42?expand=items",
        &[("authorization", &full)],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, json!({ "upstream": true }));
    let seen = stack.upstream.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].uri, "/orders/42?expand=items");
    assert_eq!(seen[0].header("x-user-id"), ["alice"], "{seen:?}");
    assert_eq!(seen[0].header("x-tenant"), ["acme"], "{seen:?}");

    // No token: 401 with a challenge at the client; the upstream never reached.
    let answer = send(client, base, "GET", "/orders/42", &[]).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(
        answer
            .www_authenticate
            .as_deref()
            .is_some_and(|value| value.starts_with("Bearer")),
        "{answer:?}"
    );
    // A bad token: 401 `invalid_token`.
    let answer = send(
        client,
        base,
        "GET",
        "/orders/42",
        &[("authorization", "Bearer not.a.token")],
    )
    .await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(
        answer
            .www_authenticate
            .as_deref()
            .is_some_and(|value| value.contains("invalid_token")),
        "{answer:?}"
    );
    // A missing scope: 403 `insufficient_scope`, naming the scope.
    let answer = send(
        client,
        base,
        "POST",
        "/orders",
        &[("authorization", &read_only)],
    )
    .await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(
        answer.www_authenticate.as_deref().is_some_and(|value| value
            .contains("insufficient_scope")
            && value.contains("orders:write")),
        "{answer:?}"
    );
    // A path no policy permits: 403.
    let answer = send(client, base, "GET", "/admin", &[("authorization", &full)]).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(
        stack.upstream.take().is_empty(),
        "a deny reached the upstream"
    );

    // The client's own identity and forwarding headers change neither who the upstream sees nor which
    // request is judged.
    let forged = [
        ("authorization", full.as_str()),
        ("x-user-id", "mallory"),
        ("x-tenant", "evil"),
        ("x-forwarded-uri", "/orders/1"),
        ("x-original-uri", "/orders/1"),
        ("x-forwarded-method", "GET"),
        ("x-original-method", "GET"),
    ];
    let answer = send(client, base, "DELETE", "/orders/42", &forged).await;
    assert_eq!(
        answer.status, 403,
        "the forged method or URI was judged: {answer:?}"
    );
    let answer = send(client, base, "GET", "/admin", &forged).await;
    assert_eq!(answer.status, 403, "the forged URI was judged: {answer:?}");
    assert!(
        stack.upstream.take().is_empty(),
        "a deny reached the upstream"
    );
    let answer = send(client, base, "GET", "/orders/7", &forged).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = stack.upstream.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].header("x-user-id"), ["alice"], "{seen:?}");
    assert_eq!(seen[0].header("x-tenant"), ["acme"], "{seen:?}");

    // A token without the claim behind an identity header: the client's copy does not survive.
    let mut claims = claims(&stack.issuer.issuer(), unix_now());
    claims.as_object_mut().unwrap().remove("tenant");
    let no_tenant = format!("Bearer {}", rsa_key("proxy-rsa").sign(&claims));
    let answer = send(
        client,
        base,
        "GET",
        "/orders/8",
        &[("authorization", &no_tenant), ("x-tenant", "evil")],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = stack.upstream.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].header("x-tenant"), Vec::<&str>::new(), "{seen:?}");

    // Paths another component would read otherwise are never allowed.
    for path in [
        "/orders/..;/admin",
        "/orders/../admin",
        "/orders/%2e%2e/admin",
        "/orders/.%2E/admin",
        "/orders/%2Fadmin",
        "/orders/..%2fadmin",
        "/orders/..%5cadmin",
        "//admin",
    ] {
        let answer = send_raw(base, "GET", path, &[("authorization", &full)]).await;
        assert_ne!(answer.status, 200, "{path}: {answer:?}");
        let seen = stack.upstream.take();
        assert!(seen.is_empty(), "{path} reached the upstream: {seen:?}");
    }
}

/// The same token and request get the same decision through the proxy at `base` as through Verdict's
/// `/v1/decide` ([`Stack::decide`]).
pub async fn same_decisions_as_decide(stack: &Stack, base: &str) {
    let client = reqwest::Client::new();
    let full = format!("Bearer {}", stack.token("orders:read orders:write"));
    let read_only = format!("Bearer {}", stack.token("orders:read"));
    let requests = [
        ("GET", "/orders/42"),
        ("POST", "/orders"),
        ("DELETE", "/orders/42"),
        ("GET", "/admin"),
        ("GET", "/orders/%7E1"),
    ];
    for authorization in [full.as_str(), read_only.as_str(), "Bearer not.a.token", ""] {
        for (method, path) in requests {
            let decision = stack.decide(authorization, method, path).await;
            let headers: Vec<(&str, &str)> = if authorization.is_empty() {
                Vec::new()
            } else {
                vec![("authorization", authorization)]
            };
            let answer = send(&client, base, method, path, &headers).await;
            assert_eq!(
                json!(answer.status),
                decision["status"],
                "{method} {path} with {authorization:.20}: {answer:?}"
            );
            if decision["allow"] == json!(false) {
                let challenge = decision["www_authenticate"].as_str().unwrap_or_default();
                assert_eq!(
                    answer.www_authenticate.as_deref().unwrap_or_default(),
                    challenge,
                    "{method} {path}"
                );
            }
        }
    }
    stack.upstream.take();
}
