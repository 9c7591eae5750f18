//! The record of reloads that `/readyz` and the metrics show: counts, when the last succeeded, and when
//! and where the last failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use arc_swap::ArcSwapOption;

/// Counts and the last failure of reloads, for `/readyz` (and metrics).
#[derive(Debug, Default)]
pub struct ReloadHistory {
    succeeded: AtomicU64,
    failed: AtomicU64,
    /// Seconds since the epoch of the last successful reload; 0 before the first.
    last_success: AtomicU64,
    last_failure: ArcSwapOption<Failure>,
}

#[derive(Debug)]
struct Failure {
    at: u64,
    /// Where it failed; never the message, which may quote the configuration.
    paths: Vec<String>,
}

impl ReloadHistory {
    pub fn record_success(&self, at: u64) {
        self.succeeded.fetch_add(1, Ordering::Relaxed);
        self.last_success.store(at, Ordering::Relaxed);
    }

    /// Records a failed reload at `at`, by the configuration paths where it failed.
    pub fn record_failure(&self, at: u64, paths: Vec<String>) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.last_failure
            .store(Some(Arc::new(Failure { at, paths })));
    }

    pub fn succeeded(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// The record as `/readyz` shows it: counts, times and the paths of the last failure, never its
    /// message.
    pub fn record(&self) -> ReloadRecord {
        let last_success = match self.last_success.load(Ordering::Relaxed) {
            0 => None,
            at => Some(rfc3339(at)),
        };
        let last_failure = self
            .last_failure
            .load()
            .as_deref()
            .map(|failure| FailedReload {
                at: rfc3339(failure.at),
                paths: failure.paths.clone(),
            });
        ReloadRecord {
            succeeded: self.succeeded(),
            failed: self.failed(),
            last_success,
            last_failure,
        }
    }
}

/// What is known of reloads at one moment; times in RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadRecord {
    pub succeeded: u64,
    pub failed: u64,
    pub last_success: Option<String>,
    pub last_failure: Option<FailedReload>,
}

/// When and where the last reload failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedReload {
    pub at: String,
    /// The configuration paths of the errors.
    pub paths: Vec<String>,
}

fn rfc3339(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string()
}
