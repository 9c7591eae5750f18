//! HTTPS on Verdict's own listener (`tls:`): the certificate and key loaded into a rustls server
//! configuration, and the handshake of each connection the accept loop (`crate::server`) takes.
//!
//! Each connection takes the server configuration of the generation running when it arrives, so a
//! reload that brings a renewed certificate applies to new connections without a restart.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

use crate::api::AppState;
use crate::config::MtlsCallers;

/// The longest a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener's TLS settings: its identity and, for mutual TLS, which client certificates it lets in.
#[derive(Debug)]
pub struct TlsSettings {
    pub server: Arc<ServerConfig>,
    /// When not empty, a client certificate must match one (see [`client_allowed`]).
    pub allowed_clients: Vec<String>,
}

impl TlsSettings {
    /// Loads the identity from a PEM certificate chain and private key; with `mtls`, client
    /// certificates chained to its CA are required.
    pub fn load(cert: &Path, key: &Path, mtls: Option<&MtlsCallers>) -> Result<Self, String> {
        Ok(Self {
            server: server_config(cert, key, mtls.map(|mtls| mtls.ca.as_path()))?,
            allowed_clients: mtls
                .map(|mtls| mtls.allowed_subjects.clone())
                .unwrap_or_default(),
        })
    }
}

fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|error| format!("cannot read `{}`: {error}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|error| {
            format!(
                "`{}` is not a PEM certificate chain: {error}",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!("`{}` holds no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|error| {
        format!(
            "`{}` holds no usable PEM private key: {error}",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let certificates = CertificateDer::pem_file_iter(ca)
                .map_err(|error| format!("cannot read `{}`: {error}", ca.display()))?;
            for certificate in certificates {
                let certificate = certificate.map_err(|error| {
                    format!(
                        "`{}` is not a PEM certificate bundle: {error}",
                        ca.display()
                    )
                })?;
                roots
                    .add(certificate)
                    .map_err(|error| format!("`{}`: {error}", ca.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("`{}` holds no CA certificate", ca.display()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|error| format!("`{}`: {error}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|error| {
        format!("the certificate and key do not make a server identity: {error}")
    })?;
    Ok(Arc::new(config))
}

/// Completes the TLS handshake of a new connection with the running generation's identity (`first`
/// if a reload dropped `tls:`), and checks the client certificate against `allowed_subjects`. `None`
/// when the connection is refused; the reason is logged.
pub async fn accept(
    state: &AppState,
    first: &Arc<TlsSettings>,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    let settings = state
        .current()
        .tls
        .clone()
        .unwrap_or_else(|| Arc::clone(first));
    let acceptor = TlsAcceptor::from(Arc::clone(&settings.server));
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return None;
        }
    };
    if !settings.allowed_clients.is_empty() {
        let allowed = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(<[_]>::first)
            .is_some_and(|certificate| client_allowed(certificate, &settings.allowed_clients));
        if !allowed {
            tracing::info!(%peer, "refused a client certificate not in `callers.mtls.allowed_subjects`");
            return None;
        }
    }
    Some(stream)
}

/// Whether a verified client certificate matches one entry of `allowed`: `CN=<name>` against the
/// subject's common names, `DNS:<name>` or `URI:<uri>` against its subject alternative names, or a bare
/// name against any of them.
pub fn client_allowed(certificate: &CertificateDer<'_>, allowed: &[String]) -> bool {
    let Ok(certificate) = webpki::EndEntityCert::try_from(certificate) else {
        return false;
    };
    let common_names = common_names(certificate.subject());
    let dns: Vec<&str> = certificate.valid_dns_names().collect();
    let uris: Vec<&str> = certificate.valid_uri_names().collect();
    allowed.iter().any(|entry| {
        if let Some(name) = entry.strip_prefix("CN=") {
            common_names.iter().any(|cn| cn == name)
        } else if let Some(name) = entry.strip_prefix("DNS:") {
            dns.contains(&name)
        } else if let Some(uri) = entry.strip_prefix("URI:") {
            uris.contains(&uri)
        } else {
            common_names.iter().any(|cn| cn == entry)
                || dns.contains(&entry.as_str())
                || uris.contains(&entry.as_str())
        }
    })
}

/// The common names (OID 2.5.4.3) of a DER `Name`'s contents: a sequence of sets of
/// `SEQUENCE { OID, value }`.
fn common_names(name: &[u8]) -> Vec<String> {
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    let mut names = Vec::new();
    let mut rdns = name;
    while let Some((0x31, set, rest)) = der_element(rdns) {
        rdns = rest;
        let mut attributes = set;
        while let Some((0x30, attribute, rest)) = der_element(attributes) {
            attributes = rest;
            if let Some((0x06, oid, value)) = der_element(attribute)
                && oid == COMMON_NAME
                && let Some((_, text, _)) = der_element(value)
                && let Ok(text) = std::str::from_utf8(text)
            {
                names.push(text.to_owned());
            }
        }
    }
    names
}

/// The first DER element of `input`: its tag, its contents and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let length = bytes
            .iter()
            .fold(0_usize, |length, byte| (length << 8) | usize::from(*byte));
        (length, rest)
    };
    if rest.len() < length {
        return None;
    }
    let (contents, rest) = rest.split_at(length);
    Some((tag, contents, rest))
}
