//! SHA-256, the one hash the service uses: token cache keys, caller-key comparison, revisions.

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0; 32];
    for (slot, byte) in out.iter_mut().zip(digest.as_ref()) {
        *slot = *byte;
    }
    out
}

/// The first `bytes` bytes of a SHA-256 in lower-case hex: a short, stable fingerprint.
pub fn short_hex(data: &[u8], bytes: usize) -> String {
    hex(sha256(data).get(..bytes).unwrap_or_default())
}

/// A short, stable fingerprint of some text, shown as the running revision.
pub fn revision_of(text: &str) -> String {
    short_hex(text.as_bytes(), 6)
}

/// `bytes` in lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The first six bytes of a SHA-256, written as twelve lower-case hex digits: enough to tell the
/// credentials in a log apart, too little to find one by. Written without an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortDigest([u8; 6]);

impl ShortDigest {
    pub fn of(digest: &[u8; 32]) -> Self {
        let [a, b, c, d, e, f, ..] = *digest;
        Self([a, b, c, d, e, f])
    }
}

impl std::fmt::Display for ShortDigest {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0
            .iter()
            .try_for_each(|byte| write!(formatter, "{byte:02x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_digest_is_the_hex_of_the_first_six_bytes() {
        let digest = sha256(b"token");
        assert_eq!(
            ShortDigest::of(&digest).to_string(),
            hex(digest.get(..6).unwrap()),
            "the same text as the hex of its bytes"
        );
        assert_eq!(ShortDigest::of(&digest).to_string().len(), 12);
    }
}
