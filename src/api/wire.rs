//! The JSON shapes of the service's own endpoints: `/healthz` and `/readyz`. (Each front's shapes,
//! and the error body they share, are under [`crate::fronts`].)

use serde::Serialize;

use crate::jwks::KeyStatus;
use crate::state::{FailedReload, Generation, ReloadRecord};

/// `/healthz`: the process is up.
#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
}

/// `/readyz`: whether every key set is loaded and fresh, and what the running generation holds. No
/// URL credentials, response body or configuration value appears in it.
#[derive(Debug, Serialize)]
pub struct Readiness<'a> {
    pub ready: bool,
    pub config_revision: &'a str,
    pub policy_revision: &'a str,
    pub policies: usize,
    pub issuers: Vec<KeySetReadiness>,
    pub reloads: Reloads,
}

/// One key set in `/readyz`.
#[derive(Debug, Serialize)]
pub struct KeySetReadiness {
    pub name: String,
    pub ready: bool,
    pub keys: usize,
    pub key_age_seconds: Option<u64>,
    pub stale: bool,
    pub last_error: Option<String>,
}

/// Reloads in `/readyz`: counts, times, and where the last failure was, never its message.
#[derive(Debug, Serialize)]
pub struct Reloads {
    pub succeeded: u64,
    pub failed: u64,
    pub last_success: Option<String>,
    pub last_failure: Option<LastFailure>,
}

/// The last failed reload in `/readyz`.
#[derive(Debug, Serialize)]
pub struct LastFailure {
    pub at: String,
    pub paths: Vec<String>,
}

impl<'a> Readiness<'a> {
    pub fn of(generation: &'a Generation, reloads: ReloadRecord) -> Self {
        let policies = generation.engine.policies();
        Self {
            ready: generation.is_ready(),
            config_revision: &generation.config_revision,
            policy_revision: policies.revision(),
            policies: policies.len(),
            issuers: generation
                .key_sets()
                .map(|keys| KeySetReadiness::from(keys.status()))
                .collect(),
            reloads: Reloads::from(reloads),
        }
    }
}

impl From<KeyStatus> for KeySetReadiness {
    fn from(status: KeyStatus) -> Self {
        Self {
            ready: status.loaded && !status.stale,
            name: status.name,
            keys: status.key_count,
            key_age_seconds: status.age_seconds,
            stale: status.stale,
            last_error: status.last_error,
        }
    }
}

impl From<ReloadRecord> for Reloads {
    fn from(record: ReloadRecord) -> Self {
        Self {
            succeeded: record.succeeded,
            failed: record.failed,
            last_success: record.last_success,
            last_failure: record
                .last_failure
                .map(|FailedReload { at, paths }| LastFailure { at, paths }),
        }
    }
}
