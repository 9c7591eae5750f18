//! Wall-clock time as an injectable dependency, so tests control time instead of sleeping.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time, as seconds since the Unix epoch.
///
/// Token validity (`exp`, `nbf`, `iat`), key-set ages and refresh schedules all read the time through
/// this trait; production uses [`SystemClock`], tests a [`ManualClock`] they advance by hand.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs())
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    seconds: AtomicU64,
}

impl ManualClock {
    /// A clock standing at `seconds` since the Unix epoch.
    pub fn starting_at(seconds: u64) -> Arc<Self> {
        Arc::new(Self {
            seconds: AtomicU64::new(seconds),
        })
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.seconds.fetch_add(by.as_secs(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.seconds.load(Ordering::SeqCst)
    }
}
