//! The request limits every callout goes through: at most `limits.max_concurrent_requests` at once
//! (one more is refused at once, not queued, so a burst cannot build a backlog that outlives the
//! proxy's own timeout) and an answer within `limits.request_timeout`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The permits and the deadline of callouts.
#[derive(Debug)]
pub struct RequestLimits {
    permits: Arc<Semaphore>,
    max_concurrent: usize,
    timeout: Duration,
}

/// A callout over the concurrency limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

impl RequestLimits {
    pub fn new(max_concurrent: usize, timeout: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            timeout,
        }
    }

    /// A place for one more callout, held until the permit is dropped; [`Overloaded`] when every
    /// place is taken.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, Overloaded> {
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| Overloaded)
    }

    /// How long a callout may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Callouts being served now.
    pub fn in_flight(&self) -> usize {
        self.max_concurrent
            .saturating_sub(self.permits.available_permits())
    }
}
