//! The `reload:` section: whether and how often to look for changed configuration and policy files.

use std::time::Duration;

use serde_norway::Value;

use super::errors::Errors;
use super::{defaults, raw};

/// Whether and how often to look for changed configuration and policy files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadConfig {
    pub watch: bool,
    pub interval: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: defaults::RELOAD_WATCH,
            interval: defaults::RELOAD_INTERVAL,
        }
    }
}

/// Validates `reload:`; `None` when it is wrong.
pub(super) fn validate_reload(value: Option<Value>, errors: &mut Errors) -> Option<ReloadConfig> {
    let raw = errors.section::<raw::Reload>("reload", value)?;
    let defaults = ReloadConfig::default();
    let interval = raw
        .interval
        .map_or(defaults.interval, |interval| interval.0);
    if interval < Duration::from_millis(100) {
        errors.push("reload.interval", "must be at least 100ms");
        return None;
    }
    Some(ReloadConfig {
        watch: raw.watch.unwrap_or(defaults.watch),
        interval,
    })
}
