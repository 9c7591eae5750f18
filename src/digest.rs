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
