//! HTTPS on Verdict's own listener (`tls:`): the certificate and key loaded into a rustls server
//! configuration, and the handshake of each connection the accept loop (`crate::server`) takes.
//!
//! Each connection takes the server configuration of the generation running when it arrives, so a
//! reload that brings a renewed certificate applies to new connections without a restart. A client
//! certificate is checked at the handshake, and then again, as a [`ClientCertificate`], by the
//! generation that decides each request on the connection: a reload that changes `callers.mtls`
//! applies to connections already open too.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::danger::ClientCertVerifier;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

/// The longest a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener's TLS settings: its identity and, for mutual TLS, which client certificates it lets in.
#[derive(Debug)]
pub struct TlsSettings {
    pub server: Arc<ServerConfig>,
    /// The client certificates let in, with `callers.mtls`.
    pub clients: Option<Arc<ClientCertificates>>,
}

/// Which client certificates authenticate a caller: those chained to the CA of `callers.mtls` and, if
/// it lists `allowed_subjects`, matching one.
#[derive(Debug)]
pub struct ClientCertificates {
    verifier: Arc<dyn ClientCertVerifier>,
    allowed_subjects: Vec<String>,
}

impl ClientCertificates {
    /// Whether `chain` (end entity first) is chained to the CA, valid now and allowed.
    fn admit(&self, chain: &[CertificateDer<'_>]) -> bool {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return false;
        };
        self.verifier
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
            .is_ok()
            && (self.allowed_subjects.is_empty()
                || client_allowed(end_entity, &self.allowed_subjects))
    }
}

/// Which client certificates `callers.mtls` lets in, as [`TlsSettings::load`] takes them.
#[derive(Debug, Clone, Copy)]
pub struct ClientRules<'a> {
    /// The PEM bundle of the CAs a client certificate must chain to.
    pub ca: &'a Path,
    /// When not empty, a certificate must match one (see [`client_allowed`]).
    pub allowed_subjects: &'a [String],
    /// A caller may authenticate another way (DESIGN §9), so a certificate is asked for, not demanded.
    pub certificate_optional: bool,
}

/// The certificate chain a client presented when its connection opened, carried by every request on
/// that connection so that the generation deciding the request can check it by its own rules.
#[derive(Debug)]
pub struct ClientCertificate {
    chain: Vec<CertificateDer<'static>>,
    /// The last check: by which rules, in which second, with what outcome. A connection's requests
    /// are checked again when the rules change, and at most once a second otherwise, so that a
    /// certificate expiring on a kept-alive connection stops being accepted.
    last_check: Mutex<Option<(Weak<ClientCertificates>, u64, bool)>>,
}

impl ClientCertificate {
    fn new(chain: &[CertificateDer<'_>]) -> Self {
        Self {
            chain: chain.iter().map(|der| der.clone().into_owned()).collect(),
            last_check: Mutex::new(None),
        }
    }

    /// Whether `rules` admit this certificate now.
    pub fn admitted_by(&self, rules: &Arc<ClientCertificates>) -> bool {
        let second = UnixTime::now().as_secs();
        let mut last = self
            .last_check
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((checked_by, checked_at, admitted)) = last.as_ref()
            && *checked_at == second
            && Weak::ptr_eq(checked_by, &Arc::downgrade(rules))
        {
            return *admitted;
        }
        let admitted = rules.admit(&self.chain);
        *last = Some((Arc::downgrade(rules), second, admitted));
        admitted
    }
}

impl TlsSettings {
    /// Loads the identity from a PEM certificate chain and private key; with `clients`, client
    /// certificates are asked for, and demanded unless it says they are optional.
    pub fn load(cert: &Path, key: &Path, clients: Option<ClientRules<'_>>) -> Result<Self, String> {
        let verifier = clients
            .map(|rules| client_verifier(rules.ca, rules.certificate_optional))
            .transpose()?;
        let clients = match (clients, &verifier) {
            (Some(rules), Some(verifier)) => Some(Arc::new(ClientCertificates {
                verifier: Arc::clone(verifier),
                allowed_subjects: rules.allowed_subjects.to_vec(),
            })),
            _ => None,
        };
        Ok(Self {
            server: server_config(cert, key, verifier)?,
            clients,
        })
    }
}

/// The verifier of client certificates chained to the CA bundle `ca`.
fn client_verifier(ca: &Path, optional: bool) -> Result<Arc<dyn ClientCertVerifier>, String> {
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
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    );
    let builder = if optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder
        .build()
        .map_err(|error| format!("`{}`: {error}", ca.display()))
}

fn server_config(
    cert: &Path,
    key: &Path,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
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
    let builder = match client_verifier {
        None => builder.with_no_client_auth(),
        Some(verifier) => builder.with_client_cert_verifier(verifier),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|error| {
        format!("the certificate and key do not make a server identity: {error}")
    })?;
    // HTTP/2 by ALPN (gRPC and JSON callouts alike), else HTTP/1.1; the accept loop serves either.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Where the accept loop gets the TLS settings of each new connection: the running generation's.
pub trait TlsSource: Send + Sync + 'static {
    /// The settings in force now, if the running configuration has `tls:`.
    fn tls(&self) -> Option<Arc<TlsSettings>>;
}

/// Completes the TLS handshake of a new connection with the running generation's identity (`first`
/// if a reload dropped `tls:`), and checks a client certificate against `allowed_subjects`. Returns
/// the stream and the client certificate, if one was presented; `None` when the connection is
/// refused, the reason logged.
pub async fn accept(
    source: &dyn TlsSource,
    first: &Arc<TlsSettings>,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<(TlsStream<TcpStream>, Option<Arc<ClientCertificate>>)> {
    let settings = source.tls().unwrap_or_else(|| Arc::clone(first));
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
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .filter(|chain| !chain.is_empty())
        .map(|chain| Arc::new(ClientCertificate::new(chain)));
    if let (Some(certificate), Some(clients)) = (&certificate, &settings.clients)
        && !certificate.admitted_by(clients)
    {
        tracing::info!(%peer, "refused a client certificate not in `callers.mtls.allowed_subjects`");
        return None;
    }
    Some((stream, certificate))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate with this common name (if any), DNS names and URIs.
    fn certificate(
        common_name: Option<&str>,
        dns: &[&str],
        uris: &[&str],
    ) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(
            dns.iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(name) = common_name {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
        }
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example Org");
        for uri in uris {
            params.subject_alt_names.push(rcgen::SanType::URI(
                rcgen::string::Ia5String::try_from(*uri).unwrap(),
            ));
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn each_allowed_subject_form_matches_its_own_kind_of_name() {
        let apigee = certificate(
            Some("apigee-prod"),
            &["gw.example.com"],
            &["spiffe://example.com/apigee"],
        );
        let cases: &[(&str, bool)] = &[
            ("CN=apigee-prod", true),
            ("CN=apigee", false),
            ("CN=Apigee-Prod", false),
            ("CN=Example Org", false),
            ("CN=gw.example.com", false),
            ("DNS:gw.example.com", true),
            ("DNS:apigee-prod", false),
            ("DNS:example.com", false),
            ("URI:spiffe://example.com/apigee", true),
            ("URI:spiffe://example.com", false),
            ("URI:gw.example.com", false),
            ("apigee-prod", true),
            ("gw.example.com", true),
            ("spiffe://example.com/apigee", true),
            ("Example Org", false),
            ("O=Example Org", false),
            ("", false),
        ];
        for (entry, allowed) in cases {
            assert_eq!(
                client_allowed(&apigee, &[(*entry).to_owned()]),
                *allowed,
                "{entry}"
            );
        }
        assert!(!client_allowed(&apigee, &[]));
        assert!(client_allowed(
            &apigee,
            &["CN=other".to_owned(), "DNS:gw.example.com".to_owned()]
        ));
    }

    /// A DER element of `tag` around `contents` (short length form).
    fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut element = vec![tag, u8::try_from(contents.len()).unwrap()];
        element.extend_from_slice(contents);
        element
    }

    /// One relative distinguished name: a SET of one `SEQUENCE { OID, value }`.
    fn rdn(oid: &[u8], value_tag: u8, value: &str) -> Vec<u8> {
        let attribute = [der(0x06, oid), der(value_tag, value.as_bytes())].concat();
        der(0x31, &der(0x30, &attribute))
    }

    #[test]
    fn every_common_name_of_a_name_is_read_whatever_its_string_type() {
        const CN: &[u8] = &[0x55, 0x04, 0x03];
        const O: &[u8] = &[0x55, 0x04, 0x0a];
        let name = [
            rdn(CN, 0x0c, "first"),
            rdn(O, 0x0c, "Example Org"),
            rdn(CN, 0x13, "second"),
        ]
        .concat();
        assert_eq!(common_names(&name), ["first", "second"]);
        assert_eq!(
            common_names(&rdn(O, 0x0c, "Example Org")),
            Vec::<String>::new()
        );
        // A name cut short yields what came before the cut, and nothing from the rest.
        let cut = &name[..name.len() - 2];
        assert_eq!(common_names(cut), ["first"]);
        assert_eq!(common_names(&[]), Vec::<String>::new());
        // A common name that is not UTF-8 is skipped.
        let latin1 = der(
            0x31,
            &der(0x30, &[der(0x06, CN), der(0x0c, &[0xe9])].concat()),
        );
        assert_eq!(common_names(&latin1), Vec::<String>::new());
    }

    #[test]
    fn a_certificate_without_a_common_name_matches_by_its_other_names() {
        let none = certificate(None, &["only.example.com"], &[]);
        assert!(!client_allowed(&none, &["CN=only.example.com".to_owned()]));
        assert!(client_allowed(&none, &["only.example.com".to_owned()]));
    }

    #[test]
    fn a_long_common_name_uses_the_long_length_form() {
        let long = "a".repeat(200);
        let certificate = certificate(Some(&long), &[], &[]);
        assert!(client_allowed(&certificate, &[format!("CN={long}")]));
    }

    #[test]
    fn der_elements_are_read_by_their_length_and_refused_when_cut_short() {
        type Element<'a> = (u8, &'a [u8], &'a [u8]);
        let cases: &[(&[u8], Option<Element<'_>>)] = &[
            (
                &[0x04, 0x02, b'h', b'i', 0xff],
                Some((0x04, b"hi", &[0xff])),
            ),
            (&[0x04, 0x00], Some((0x04, b"", b""))),
            (&[0x04, 0x81, 0x01, b'x'], Some((0x04, b"x", b""))),
            (&[0x04, 0x82, 0x00, 0x01, b'x'], Some((0x04, b"x", b""))),
            (&[0x04, 0x03, b'h', b'i'], None),
            (&[0x04, 0x80], None),
            (&[0x04, 0x85, 0, 0, 0, 0, 1, b'x'], None),
            (&[0x04, 0x82, 0x01], None),
            (&[0x04], None),
            (&[], None),
        ];
        for (input, expected) in cases {
            assert_eq!(der_element(input), *expected, "{input:x?}");
        }
    }

    #[test]
    fn something_that_is_not_a_certificate_matches_nothing() {
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(!client_allowed(
            &garbage,
            &["CN=x".to_owned(), "x".to_owned()]
        ));
    }
}
