//! The `api_keys:` section: end-user API keys, each a SHA-256 hash and the principal it stands for,
//! listed inline or in a separate file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_norway::Value;

use super::errors::Errors;
use super::raw;

/// One end-user API key: the hash of the key and the principal it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyConfig {
    pub id: String,
    /// SHA-256 of the key.
    pub hash: [u8; 32],
    pub subject: String,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    pub tenant: String,
    /// Seconds since the epoch from which the key is refused.
    pub expires: Option<i64>,
}

/// Validates `api_keys:`, inline and in its `file`, which joins `referenced_files`; the keys found
/// valid, none when the section itself cannot be read.
pub(super) fn validate_api_keys(
    value: Option<Value>,
    base_dir: &Path,
    referenced_files: &mut Vec<PathBuf>,
    errors: &mut Errors,
) -> Vec<ApiKeyConfig> {
    let Some(raw) = errors.section::<raw::EndUserKeys>("api_keys", value) else {
        return Vec::new();
    };
    let mut entries: Vec<(String, raw::EndUserKey)> = raw
        .keys
        .into_iter()
        .enumerate()
        .map(|(index, key)| (format!("api_keys.keys[{index}]"), key))
        .collect();
    if let Some(file) = raw.file {
        let path = base_dir.join(&file);
        referenced_files.push(path.clone());
        let parsed = std::fs::read_to_string(&path)
            .map_err(|error| format!("cannot read `{}`: {error}", path.display()))
            .and_then(|text| {
                serde_path_to_error::deserialize::<_, raw::EndUserKeyFile>(
                    serde_norway::Deserializer::from_str(&text),
                )
                .map_err(|error| {
                    let at = error.path().to_string();
                    format!("`{}`: {at}: {}", path.display(), error.into_inner())
                })
            });
        match parsed {
            Ok(file) => entries.extend(file.keys.into_iter().enumerate().map(|(index, key)| {
                (
                    format!("api_keys.file: `{}`: keys[{index}]", path.display()),
                    key,
                )
            })),
            Err(problem) => errors.push("api_keys.file", problem),
        }
    }
    let mut ids = HashSet::new();
    let mut keys = Vec::new();
    for (path, key) in entries {
        if key.id.is_empty() {
            errors.push(format!("{path}.id"), "must not be empty");
        } else if !ids.insert(key.id.clone()) {
            errors.push(
                format!("{path}.id"),
                format!("duplicate API key id `{}`", key.id),
            );
        }
        let hash = key.hash.strip_prefix("sha256:").and_then(parse_sha256);
        let Some(hash) = hash else {
            errors.push(
                format!("{path}.hash"),
                "must be `sha256:` and 64 hex digits, as `verdict apikey new` prints",
            );
            continue;
        };
        let expires = match key.expires.as_deref().map(humantime::parse_rfc3339) {
            None => None,
            Some(Ok(time)) => time
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .and_then(|elapsed| i64::try_from(elapsed.as_secs()).ok()),
            Some(Err(error)) => {
                errors.push(
                    format!("{path}.expires"),
                    format!("not an RFC 3339 UTC time such as 2027-01-01T00:00:00Z ({error})"),
                );
                continue;
            }
        };
        keys.push(ApiKeyConfig {
            subject: key.subject.unwrap_or_else(|| key.id.clone()),
            id: key.id,
            hash,
            scopes: key.scopes,
            roles: key.roles,
            tenant: key.tenant.unwrap_or_default(),
            expires,
        });
    }
    keys
}

/// 64 hex digits as 32 bytes.
fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0_u8; 32];
    for (slot, pair) in out.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *slot = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}
