//! The deployment files run as written: the Docker image's command line and the systemd unit's
//! `ExecStart`, read from `deploy/`, are run against the built binary on the Cloud Run and EC2
//! configurations, with `/etc/verdict/` moved into a temporary directory and loopback servers standing in
//! for the identity provider and Google. Each must pass `verdict check`, become ready, decide, and exit 0
//! on SIGTERM.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::tempdir;
use crate::helpers::{AUDIENCE, CALLER_KEY, KeyServer, claims, rsa_key, unix_now};
use crate::helpers::{Authority, identity};
use crate::helpers::{Server, output, verdict};

/// Where the image and the unit install the binary.
const BINARY: &str = "/usr/local/bin/verdict";

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The rest of the one line of `text` that starts with `prefix`.
fn single_line<'a>(text: &'a str, prefix: &str) -> &'a str {
    let mut found = text.lines().filter_map(|line| line.strip_prefix(prefix));
    let rest = found.next().unwrap_or_else(|| panic!("no `{prefix}` line"));
    assert!(found.next().is_none(), "more than one `{prefix}` line");
    rest
}

/// `ENTRYPOINT` then `CMD`: what a container runs when its deployment overrides neither.
fn docker_command_line(dockerfile: &str) -> Vec<String> {
    let exec_form = |instruction: &str| -> Vec<String> {
        serde_json::from_str(single_line(dockerfile, instruction))
            .unwrap_or_else(|error| panic!("{instruction}is not a JSON array: {error}"))
    };
    [exec_form("ENTRYPOINT "), exec_form("CMD ")].concat()
}

/// A directory standing in for `/etc/verdict/`: the deployment's configuration `file` with `edits`
/// applied and every `/etc/verdict/` and `/var/log/verdict/` moved into the directory, and the example
/// policies, as the image and the install script put them.
fn stage(file: &str, edits: &[(&str, &str)]) -> PathBuf {
    let directory = tempdir();
    let mut yaml = read(file);
    for &(from, to) in edits {
        assert!(yaml.contains(from), "{file} has no `{from}`");
        yaml = yaml.replace(from, to);
    }
    let yaml = yaml
        .replace("/etc/verdict/", &format!("{}/", directory.display()))
        .replace(
            "/var/log/verdict/",
            &format!("{}/log/", directory.display()),
        );
    std::fs::write(directory.join("verdict.yaml"), yaml).unwrap();
    std::fs::create_dir(directory.join("log")).unwrap();
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies"),
        &directory.join("policies"),
    );
    directory
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// A deployment's command line, its staged `/etc/verdict/`, and how to talk to it.
struct Deployment {
    command_line: Vec<String>,
    directory: PathBuf,
    environment: Vec<(String, String)>,
    scheme: &'static str,
    client: reqwest::Client,
    caller_headers: Vec<(&'static str, String)>,
    /// An access token of the identity provider that the example policies let read orders.
    token: String,
}

/// Checks the staged configuration, serves it with the deployment's command line, decides one allowed
/// and one denied request, then sends SIGTERM, after which the process must exit 0 within Cloud Run's 10 s.
async fn check_serve_decide_and_stop(deployment: Deployment) {
    let Deployment {
        command_line,
        directory,
        environment,
        scheme,
        client,
        caller_headers,
        token,
    } = deployment;
    let (program, arguments) = command_line.split_first().unwrap();
    assert_eq!(program, BINARY);
    let etc = format!("{}/", directory.display());
    let arguments: Vec<String> = arguments
        .iter()
        .map(|argument| argument.replace("/etc/verdict/", &etc))
        .collect();
    let config = directory.join("verdict.yaml");
    assert!(
        arguments.contains(&config.display().to_string()),
        "{arguments:?} does not name /etc/verdict/verdict.yaml"
    );

    let (status, stdout, stderr) = output(
        verdict()
            .args(["check", "--config"])
            .arg(&config)
            .envs(environment.iter().cloned()),
    );
    assert!(status.success(), "verdict check: {stdout}{stderr}");

    let mut command = verdict();
    command.args(&arguments).envs(environment.iter().cloned());
    let mut server = Server::spawn(command);
    let base = format!("{scheme}://{}", server.address());
    wait_ready(&client, &base).await;
    for (method, allow, status) in [("GET", true, 200), ("DELETE", false, 403)] {
        let mut request = client
            .post(format!("{base}/v1/decide"))
            .header("content-type", "application/json");
        for (name, value) in &caller_headers {
            request = request.header(*name, value);
        }
        let body = json!({ "authorization": format!("Bearer {token}"), "method": method, "path": "/orders/7" });
        let response = request.body(body.to_string()).send().await.unwrap();
        assert_eq!(response.status(), 200, "{method}");
        let decision: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(decision["allow"], allow, "{method}: {decision}");
        assert_eq!(decision["status"], status, "{method}: {decision}");
    }
    // No idle connection is left for the shutdown to wait on.
    drop(client);

    assert_eq!(server.terminate().code(), Some(0), "the exit after SIGTERM");
}

/// Polls `/readyz` until it answers 200; a bounded wait for the process, not a timing assertion.
async fn wait_ready(client: &reqwest::Client, base: &str) {
    for _ in 0..600 {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{base} never became ready");
}

fn set(environment: &mut Vec<(String, String)>, name: &str, value: String) {
    environment.retain(|(existing, _)| existing != name);
    environment.push((name.to_owned(), value));
}

fn get<'a>(environment: &'a [(String, String)], name: &str) -> &'a str {
    environment
        .iter()
        .find(|(existing, _)| existing == name)
        .map(|(_, value)| value.as_str())
        .unwrap_or_else(|| panic!("the manifest sets no `{name}`"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_serves_the_cloud_run_configuration_with_the_environment_of_the_manifest() {
    let dockerfile = read("deploy/Dockerfile");
    for copy in [
        "COPY examples/policies /etc/verdict/policies",
        "COPY deploy/cloudrun/verdict.yaml /etc/verdict/verdict.yaml",
    ] {
        assert!(dockerfile.lines().any(|line| line == copy), "no `{copy}`");
    }
    let manifest: Value = serde_norway::from_str(&read("deploy/cloudrun/service.yaml")).unwrap();
    let revision = &manifest["spec"]["template"]["spec"];
    assert_eq!(revision["containers"].as_array().map(Vec::len), Some(1));
    let container = &revision["containers"][0];
    assert!(
        container.get("command").is_none() && container.get("args").is_none(),
        "the manifest overrides the image's command line"
    );
    assert_eq!(container["startupProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    let config: Value = serde_norway::from_str(&read("deploy/cloudrun/verdict.yaml")).unwrap();
    assert_eq!(
        config["listen"],
        format!("0.0.0.0:{}", container["ports"][0]["containerPort"])
    );
    assert_eq!(
        revision["containerConcurrency"],
        config["limits"]["max_concurrent_requests"]
    );
    // The port's name is the protocol Cloud Run speaks to the container: `h2c` is end-to-end HTTP/2
    // (with prior knowledge), which the gRPC fronts need; the test's client speaks what Cloud Run would.
    let cloud_run_client = match container["ports"][0]["name"].as_str() {
        Some("h2c") => reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap(),
        Some("http1") => reqwest::Client::new(),
        other => panic!("a port name Cloud Run does not know: {other:?}"),
    };

    // The manifest's environment, with secrets (from Secret Manager) stood in for, and the identity
    // provider on loopback.
    let idp = KeyServer::start(&[rsa_key("k1")]).await;
    let mut environment: Vec<(String, String)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|variable| {
            let value = variable["value"]
                .as_str()
                .unwrap_or("a-secret-from-secret-manager");
            (
                variable["name"].as_str().unwrap().to_owned(),
                value.to_owned(),
            )
        })
        .collect();
    set(&mut environment, "VERDICT_ISSUER", idp.issuer());
    set(
        &mut environment,
        "VERDICT_API_AUDIENCE",
        AUDIENCE.to_owned(),
    );

    // Apigee's ID token, from a loopback stand-in for Google, whose issuer and keys the test adds to
    // the configuration (in production they are Verdict's defaults, Google's).
    let google_key = rsa_key("google-1");
    let google = KeyServer::start(&[google_key]).await;
    let emails = r#"    emails: ["${APIGEE_SERVICE_ACCOUNT}"]"#;
    let emails_and_google = format!(
        "{emails}\n    issuer: \"{}\"\n    jwks_uri: \"{}\"",
        google.issuer(),
        google.jwks_uri()
    );
    let directory = stage(
        "deploy/cloudrun/verdict.yaml",
        &[
            ("listen: 0.0.0.0:8080", "listen: 127.0.0.1:0"),
            (emails, emails_and_google.as_str()),
        ],
    );
    let now = unix_now();
    let id_token = google_key.sign(&json!({
        "iss": google.issuer(), "aud": get(&environment, "VERDICT_AUDIENCE"), "sub": "1234567890",
        "email": get(&environment, "APIGEE_SERVICE_ACCOUNT"), "email_verified": true,
        "iat": now, "exp": now + 3600,
    }));

    check_serve_decide_and_stop(Deployment {
        command_line: docker_command_line(&dockerfile),
        directory,
        environment,
        scheme: "http",
        client: cloud_run_client,
        caller_headers: vec![("authorization", format!("Bearer {id_token}"))],
        token: rsa_key("k1").sign(&claims(&idp.issuer(), now)),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_unit_serves_the_ec2_configuration_over_mutual_tls_with_its_credentials() {
    let unit = read("deploy/ec2/verdict.service");
    let command_line = single_line(&unit, "ExecStart=")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let directory = stage(
        "deploy/ec2/verdict.yaml",
        &[
            ("listen: 0.0.0.0:8443", "listen: 127.0.0.1:0"),
            ("admin_listen: 127.0.0.1:9090", "admin_listen: 127.0.0.1:0"),
        ],
    );

    // The files the unit passes with LoadCredential=, in the directory systemd names in
    // CREDENTIALS_DIRECTORY; and the CA of Apigee's client certificates.
    let (server_cert, server_key) = identity("verdict");
    let credentials = directory.join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    for credential in unit
        .lines()
        .filter_map(|line| line.strip_prefix("LoadCredential="))
    {
        let (name, _) = credential.split_once(':').unwrap();
        let contents = match name {
            "tls.crt" => &server_cert,
            "tls.key" => &server_key,
            other => panic!("an unexpected credential `{other}`"),
        };
        std::fs::write(credentials.join(name), contents).unwrap();
    }
    let apigee_ca = Authority::new("apigee-ca");
    std::fs::write(directory.join("apigee-ca.pem"), &apigee_ca.pem).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(server_cert.as_bytes()).unwrap()])
        .identity(
            reqwest::Identity::from_pem(apigee_ca.client("apigee-prod", false).as_bytes()).unwrap(),
        )
        .build()
        .unwrap();

    let idp = KeyServer::start(&[rsa_key("k1")]).await;
    check_serve_decide_and_stop(Deployment {
        command_line,
        directory: directory.clone(),
        environment: vec![
            ("VERDICT_CALLER_KEY".to_owned(), CALLER_KEY.to_owned()),
            ("VERDICT_ISSUER".to_owned(), idp.issuer()),
            ("VERDICT_API_AUDIENCE".to_owned(), AUDIENCE.to_owned()),
            (
                "CREDENTIALS_DIRECTORY".to_owned(),
                credentials.display().to_string(),
            ),
        ],
        scheme: "https",
        client,
        caller_headers: vec![("x-verdict-key", CALLER_KEY.to_owned())],
        token: rsa_key("k1").sign(&claims(&idp.issuer(), unix_now())),
    })
    .await;

    let log = std::fs::read_to_string(directory.join("log/decisions.log")).unwrap();
    let records: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(records.len(), 2, "one record per decision:\n{log}");
}
