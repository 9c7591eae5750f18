//! Authentication of the caller (the Apigee proxy) before any decision is made (DESIGN §5): a caller
//! key header, a Google-signed ID token in the callout's own `Authorization` header (or the header
//! `callers.google_id_token.header` names; gRPC metadata are headers too), or a client
//! certificate, which the TLS listener checks at the handshake and the generation deciding each request
//! checks again (`crate::server::tls::ClientCertificate`). Any one that is configured admits a caller.

use std::sync::Arc;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use http::{HeaderMap, HeaderName};

use crate::clock::SharedClock;
use crate::config::{Callers, GoogleIdTokenCallers};
use crate::credential::{self, Verifier};
use crate::digest::sha256;
use crate::jwks::IssuerKeys;
use crate::policy::NameReads;
use crate::server::tls::{ClientCertificate, ClientCertificates};

/// How many verified caller tokens are kept (a caller reuses one token for up to an hour).
const CALLER_TOKEN_CACHE: usize = 64;
/// The longest caller ID token read.
const MAX_CALLER_TOKEN_BYTES: usize = 8 * 1024;

/// Who made a callout, as the decision log names it: `api_key#N` (the Nth configured caller key),
/// `google:<email>`, `mtls` or `anonymous`.
#[derive(Debug, Clone)]
pub struct Caller(Arc<str>);

impl Caller {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }
}

/// How callers prove who they are.
#[derive(Debug)]
pub struct CallerAuth {
    api_key: Option<ApiKeyCheck>,
    google: Option<GoogleCheck>,
    /// The client certificates `callers.mtls` lets in.
    mutual_tls: Option<Arc<ClientCertificates>>,
}

#[derive(Debug)]
struct GoogleCheck {
    config: GoogleIdTokenCallers,
    verifier: Arc<Verifier>,
}

#[derive(Debug)]
struct ApiKeyCheck {
    header: HeaderName,
    /// SHA-256 of each accepted key: comparing fixed-size digests in constant time hides both the key
    /// and its length.
    key_digests: Vec<[u8; 32]>,
}

impl CallerAuth {
    /// The checks `callers` configures, with `client_certificates` the TLS settings made of
    /// `callers.mtls`, taking over the Google key set of `previous` when its settings are unchanged.
    pub fn new(
        callers: &Callers,
        client_certificates: Option<Arc<ClientCertificates>>,
        previous: Option<&Self>,
        http: &reqwest::Client,
        clock: SharedClock,
    ) -> Self {
        if callers.allow_unauthenticated
            && callers.api_keys.is_none()
            && callers.google_id_token.is_none()
            && callers.mtls.is_none()
        {
            tracing::warn!(
                "caller authentication is off (`allow_unauthenticated: true`): anyone who reaches this port gets decisions"
            );
        }
        let api_key = callers.api_keys.as_ref().map(|api_keys| ApiKeyCheck {
            header: api_keys.header.clone(),
            key_digests: api_keys.keys.iter().map(|key| *key.digest()).collect(),
        });
        let google = callers.google_id_token.as_ref().map(|config| {
            let issuers = std::slice::from_ref(&config.issuer);
            let previous = previous
                .and_then(|previous| previous.google.as_ref())
                .map(|check| &check.verifier);
            let verifier = Verifier::succeeding(
                previous,
                issuers,
                MAX_CALLER_TOKEN_BYTES,
                CALLER_TOKEN_CACHE,
                &NameReads::Named(["email", "email_verified"].map(str::to_owned).into()),
                http,
                clock,
            );
            GoogleCheck {
                config: config.clone(),
                verifier,
            }
        });
        Self {
            api_key,
            google,
            mutual_tls: client_certificates,
        }
    }

    /// The key sets caller authentication needs loaded and fresh.
    pub fn key_sets(&self) -> impl Iterator<Item = &Arc<IssuerKeys>> {
        self.google
            .iter()
            .flat_map(|check| check.verifier.key_sets())
    }

    /// The caller that the request's headers, or the client certificate of its connection, authenticate
    /// by these rules, if any.
    pub async fn admits(
        &self,
        headers: &HeaderMap,
        certificate: Option<&ClientCertificate>,
    ) -> Option<Caller> {
        if let Some(rules) = &self.mutual_tls
            && certificate.is_some_and(|certificate| certificate.admitted_by(rules))
        {
            return Some(Caller::new("mtls"));
        }
        if self.api_key.is_none() && self.google.is_none() && self.mutual_tls.is_none() {
            return Some(Caller::new("anonymous"));
        }
        if let Some(caller) = self
            .api_key
            .as_ref()
            .and_then(|check| check.admits(headers))
        {
            return Some(caller);
        }
        match &self.google {
            Some(check) => check.admits(headers).await,
            None => None,
        }
    }
}

impl ApiKeyCheck {
    fn admits(&self, headers: &HeaderMap) -> Option<Caller> {
        let presented = sha256(headers.get(&self.header)?.as_bytes());
        // Every key is compared, whatever the outcome, so timing does not tell which key matched.
        let matched = self
            .key_digests
            .iter()
            .enumerate()
            .fold(None, |matched, (index, key)| {
                let equal = verify_slices_are_equal(key, &presented).is_ok();
                if equal { Some(index) } else { matched }
            });
        matched.map(|index| Caller::new(format!("api_key#{}", index + 1)))
    }
}

impl GoogleCheck {
    /// A valid ID token for the configured audience whose verified `email` is on the list.
    async fn admits(&self, headers: &HeaderMap) -> Option<Caller> {
        let token = headers
            .get(&self.config.header)
            .and_then(|value| value.to_str().ok())
            .and_then(credential::bearer_token)?;
        let verified = match self.verifier.verify(token).await {
            Ok(verified) => verified.credential,
            Err(error) => {
                tracing::info!(%error, "refused a caller's ID token");
                return None;
            }
        };
        let claims = verified.claims();
        let email_verified = claims.get("email_verified") == Some(&serde_json::Value::Bool(true));
        let email = claims.get("email").and_then(serde_json::Value::as_str);
        match email {
            Some(email)
                if email_verified && self.config.emails.iter().any(|allowed| allowed == email) =>
            {
                Some(Caller::new(format!("google:{email}")))
            }
            _ => {
                tracing::info!(
                    email = email.unwrap_or_default(),
                    email_verified,
                    "refused a caller's ID token: its email is not allowed"
                );
                None
            }
        }
    }
}
