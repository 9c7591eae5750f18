//! The `tls:` section: HTTPS on `listen`, with the certificate and key it serves and, when `callers.mtls`
//! is set, the client certificates it lets in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_norway::Value;

use super::callers::Callers;
use super::errors::Errors;
use super::raw;
use crate::server::tls::{ClientRules, TlsSettings};

/// Validates `tls:` and loads what it names; the files it reads join `referenced_files`. `callers.mtls`
/// without `tls` is refused here, as the section it needs is this one.
pub(super) fn validate_tls(
    value: Option<Value>,
    callers: Option<&Callers>,
    base_dir: &Path,
    referenced_files: &mut Vec<PathBuf>,
    errors: &mut Errors,
) -> Option<Arc<TlsSettings>> {
    let mtls = callers.and_then(|callers| callers.mtls.as_ref());
    match value {
        None | Some(Value::Null) => {
            if mtls.is_some() {
                errors.push("callers.mtls", "needs `tls`: mutual TLS is part of HTTPS");
            }
            None
        }
        Some(value) => errors
            .deserialize::<raw::Tls>("tls", value)
            .and_then(|raw| {
                let cert = base_dir.join(raw.cert);
                let key = base_dir.join(raw.key);
                referenced_files.extend([cert.clone(), key.clone()]);
                referenced_files.extend(mtls.map(|mtls| mtls.ca.clone()));
                // A caller that can authenticate otherwise need not present a certificate.
                let certificate_optional = callers.is_some_and(|callers| {
                    callers.api_keys.is_some() || callers.google_id_token.is_some()
                });
                let clients = mtls.map(|mtls| ClientRules {
                    ca: &mtls.ca,
                    allowed_subjects: &mtls.allowed_subjects,
                    certificate_optional,
                });
                TlsSettings::load(&cert, &key, clients)
                    .map_err(|problem| errors.push("tls", problem))
                    .ok()
            })
            .map(Arc::new),
    }
}
