//! Secrets the configuration holds (an issuer's `shared_secret`, an introspection `client_secret`, the
//! caller keys), kept out of debug output and compared by digest.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// A secret from the configuration: its text, which only [`ExposeSecret::expose_secret`] shows, and its
/// SHA-256, computed once, by which two secrets are compared. A reload can so tell a changed secret
/// from an unchanged one without comparing the secrets themselves.
#[derive(Clone)]
pub struct Secret {
    text: SecretString,
    digest: [u8; 32],
}

impl Secret {
    /// Holds `text` as a secret.
    pub fn new(text: String) -> Self {
        let digest = crate::digest::sha256(text.as_bytes());
        Self {
            text: SecretString::from(text),
            digest,
        }
    }

    /// The SHA-256 of the text.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Self::new(text)
    }
}

impl ExposeSecret<str> for Secret {
    fn expose_secret(&self) -> &str {
        self.text.expose_secret()
    }
}

/// Equal when the digests are: the digest is of the text, so it stands for it.
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for Secret {}

/// Neither the text nor its digest: a digest of a short secret would give it away.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_by_the_text_it_holds() {
        let secret = Secret::from("correct horse battery staple".to_owned());
        assert_eq!(
            secret,
            Secret::from("correct horse battery staple".to_owned())
        );
        assert_eq!(secret, secret.clone());
        assert_ne!(
            secret,
            Secret::from("correct horse battery stapler".to_owned())
        );
        assert_eq!(secret.expose_secret(), "correct horse battery staple");
    }

    #[test]
    fn shows_nothing_of_the_secret_in_debug_output() {
        let secret = Secret::from("correct horse battery staple".to_owned());
        let shown = format!("{secret:?} {:?}", Some(&secret));
        assert!(!shown.contains("horse"), "{shown}");
        assert!(
            !shown.contains(&crate::digest::hex(&secret.digest)),
            "{shown}"
        );
        assert_eq!(shown, "Secret([REDACTED]) Some(Secret([REDACTED]))");
    }
}
