//! End-user API keys: a store holding only SHA-256 hashes of keys, each naming the principal
//! (`ApiKey::"<id>"`) a request with that key acts as.
//!
//! A presented key is hashed once and compared with every stored hash in constant time, so neither the
//! key nor which entry it is close to shows in the timing. Each key's credential is built once, at load.

use std::sync::Arc;

use aws_lc_rs::constant_time;

use super::{Credential, CredentialError, Verified};
use crate::config::ApiKeyConfig;

/// The prefix of keys `verdict apikey new` makes, so a leaked one is easy to recognise and scan for.
pub const KEY_PREFIX: &str = "vk_";
/// The `exp` of a key without an expiry: 9999-12-31T23:59:59Z.
const NEVER: i64 = 253_402_300_799;

/// The configured keys.
#[derive(Debug, Default)]
pub struct ApiKeyStore {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    hash: [u8; 32],
    expires: Option<i64>,
    token: Arc<Credential>,
}

impl ApiKeyStore {
    pub fn new(keys: &[ApiKeyConfig]) -> Self {
        let entries = keys
            .iter()
            .map(|key| {
                let token = Credential::for_api_key(key, key.expires.unwrap_or(NEVER));
                Entry {
                    hash: key.hash,
                    expires: key.expires,
                    token: Arc::new(token),
                }
            })
            .collect();
        Self { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal of the key whose SHA-256 is `key_digest`, at `now` (seconds since the epoch).
    pub fn verify(&self, key_digest: &[u8; 32], now: i64) -> Result<Verified, CredentialError> {
        let mut found = None;
        for entry in &self.entries {
            // Every entry is compared, whichever matches.
            if constant_time::verify_slices_are_equal(&entry.hash, key_digest).is_ok() {
                found = Some(entry);
            }
        }
        let entry = found.ok_or(CredentialError::UnknownApiKey)?;
        if entry.expires.is_some_and(|expires| now >= expires) {
            return Err(CredentialError::Expired);
        }
        Ok(Verified {
            credential: Arc::clone(&entry.token),
            cache_hit: false,
            keys_fresh_until: None,
        })
    }
}

/// A fresh key and the `sha256:` hash to store for it.
pub fn generate() -> Result<(String, String), String> {
    let mut bytes = [0_u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| "the system random source failed".to_owned())?;
    let key = format!(
        "{KEY_PREFIX}{}",
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
    );
    Ok((key.clone(), hash_of(&key)))
}

/// The `sha256:<hex>` form of a key's hash, as the configuration stores it.
pub fn hash_of(key: &str) -> String {
    let hex: String = crate::digest::sha256(key.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("sha256:{hex}")
}
