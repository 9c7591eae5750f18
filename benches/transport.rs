//! What HTTPS and mutual TLS cost a callout, beside plain HTTP: one warm decision over a kept-alive
//! connection to a real `verdict` server on 127.0.0.1 in each mode, and the TLS handshake alone with and
//! without a client certificate. Run with `cargo bench --bench transport`; the method and the latest
//! figures are in `BENCHMARKS.md`.

#[path = "../bench/fixture.rs"]
mod fixture;

use std::collections::HashMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use criterion::Criterion;
use fixture::{CALLER_KEY, config_yaml, issuer_router, mint_tokens, unix_now};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use verdict::app::Application;
use verdict::clock::SystemClock;
use verdict::config::{Config, PolicyOrigin};
use verdict::demo::signing::SigningKey;

/// A server identity, a CA and a client certificate it signed, as PEM files in a directory.
struct Pki {
    directory: PathBuf,
    server_cert: String,
    client_cert: String,
    client_key: String,
}

impl Pki {
    fn create() -> anyhow::Result<Self> {
        let directory =
            std::env::temp_dir().join(format!("verdict-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&directory)?;
        let server_key = rcgen::KeyPair::generate()?;
        let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])?
            .self_signed(&server_key)?;
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let client_key = rcgen::KeyPair::generate()?;
        let mut client_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        client_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "apigee-bench");
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client = client_params.signed_by(&client_key, &issuer)?;
        std::fs::write(directory.join("tls.crt"), server.pem())?;
        std::fs::write(directory.join("tls.key"), server_key.serialize_pem())?;
        std::fs::write(directory.join("ca.pem"), ca.pem())?;
        Ok(Self {
            directory,
            server_cert: server.pem(),
            client_cert: client.pem(),
            client_key: client_key.serialize_pem(),
        })
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// The three listeners measured.
#[derive(Clone, Copy)]
enum Mode {
    Http,
    Https,
    MutualTls,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
            Self::MutualTls => "mtls",
        }
    }
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let pki = Pki::create()?;
    let key = SigningKey::generate_rs256("bench-rs256").context("generating the RS256 key")?;
    let issuer = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let issuer = format!("http://{}", listener.local_addr()?);
        let router = issuer_router(&key, &issuer, unix_now()?);
        tokio::spawn(async move { axum::serve(listener, router).await });
        anyhow::Ok(issuer)
    })?;
    let token = mint_tokens(&key, &issuer, unix_now()?, 1)
        .pop()
        .context("minting the benchmark token")?;
    let body = serde_json::json!({ "authorization": format!("Bearer {token}"), "method": "GET", "path": "/orders/42" })
        .to_string();

    let mut criterion = Criterion::default().configure_from_args();
    let mut wrong = 0_u64;
    let mut handshake_targets = Vec::new();
    {
        let mut group = criterion.benchmark_group("transport");
        for mode in [Mode::Http, Mode::Https, Mode::MutualTls] {
            let address = runtime.block_on(start_verdict(&issuer, &pki, mode))?;
            if !matches!(mode, Mode::Http) {
                handshake_targets.push((mode, address));
            }
            let client = client(&pki, mode)?;
            let scheme = if matches!(mode, Mode::Http) {
                "http"
            } else {
                "https"
            };
            let url = format!("{scheme}://{address}/v1/decide");
            group.bench_function(format!("decide_keepalive/{}", mode.name()), |bencher| {
                bencher.iter_custom(|iterations| {
                    runtime.block_on(async {
                        let started = Instant::now();
                        for _ in 0..iterations {
                            let allowed = decide(&client, &url, &body).await;
                            wrong += u64::from(!allowed);
                        }
                        started.elapsed()
                    })
                });
            });
        }
        for (mode, address) in handshake_targets {
            let connector = TlsConnector::from(client_config(&pki, mode)?);
            group.bench_function(format!("handshake/{}", mode.name()), |bencher| {
                bencher.iter_custom(|iterations| {
                    runtime.block_on(async {
                        let started = Instant::now();
                        for _ in 0..iterations {
                            wrong += u64::from(!handshake(&connector, address).await);
                        }
                        started.elapsed()
                    })
                });
            });
        }
        group.finish();
    }
    criterion.final_summary();
    if wrong > 0 {
        bail!("{wrong} measured callouts or handshakes failed");
    }
    Ok(())
}

/// A `verdict` server in `mode` trusting `issuer`, with its keys loaded; its address.
async fn start_verdict(issuer: &str, pki: &Pki, mode: Mode) -> anyhow::Result<SocketAddr> {
    let mut yaml = config_yaml(SocketAddr::from(([127, 0, 0, 1], 0)), issuer, 100_000)?;
    if !matches!(mode, Mode::Http) {
        yaml.push_str("tls: { cert: tls.crt, key: tls.key }\n");
    }
    if matches!(mode, Mode::MutualTls) {
        yaml = yaml.replacen(
            "callers:\n",
            "callers:\n  mtls: { ca: ca.pem, allowed_subjects: [\"CN=apigee-bench\"] }\n",
            1,
        );
    }
    let config = Config::parse(
        &yaml,
        &pki.directory,
        &HashMap::new(),
        PolicyOrigin::Configured,
    )
    .map_err(|errors| anyhow::anyhow!("the benchmark configuration is invalid:\n{errors}"))?;
    let application =
        Application::build(config, Arc::new(SystemClock), axum::Router::new()).await?;
    for keys in application.state().current().key_sets() {
        keys.refresh().await.context("loading the issuer's keys")?;
    }
    let address = application.local_addr()?;
    tokio::spawn(application.run_until_stopped(std::future::pending()));
    Ok(address)
}

fn client(pki: &Pki, mode: Mode) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder();
    if !matches!(mode, Mode::Http) {
        builder =
            builder.tls_certs_only([reqwest::Certificate::from_pem(pki.server_cert.as_bytes())?]);
    }
    if matches!(mode, Mode::MutualTls) {
        let identity = format!("{}{}", pki.client_cert, pki.client_key);
        builder = builder.identity(reqwest::Identity::from_pem(identity.as_bytes())?);
    }
    Ok(builder.build()?)
}

/// One callout: the caller key, the body, and whether the answer is an allow.
async fn decide(client: &reqwest::Client, url: &str, body: &str) -> bool {
    let response = client
        .post(url)
        .header("x-verdict-key", CALLER_KEY)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await;
    match response {
        Ok(response) if response.status() == 200 => {
            const ALLOW: &[u8] = b"\"allow\":true";
            response.bytes().await.is_ok_and(|bytes| {
                black_box(bytes)
                    .windows(ALLOW.len())
                    .any(|window| window == ALLOW)
            })
        }
        _ => false,
    }
}

fn client_config(pki: &Pki, mode: Mode) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(pki.server_cert.as_bytes())?)?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = if matches!(mode, Mode::MutualTls) {
        let chain = vec![CertificateDer::from_pem_slice(pki.client_cert.as_bytes())?];
        let key = PrivateKeyDer::from_pem_slice(pki.client_key.as_bytes())?;
        builder.with_client_auth_cert(chain, key)?
    } else {
        builder.with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// A new TCP connection and a complete TLS handshake; whether it succeeded.
async fn handshake(connector: &TlsConnector, address: SocketAddr) -> bool {
    let Ok(stream) = tokio::net::TcpStream::connect(address).await else {
        return false;
    };
    let name = ServerName::IpAddress(address.ip().into());
    connector.connect(name, stream).await.is_ok()
}
