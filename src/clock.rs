//! Time as a dependency: the services ask a `Clock` for "now", so that tests can drive expiry,
//! retention and timestamps without sleeping past real deadlines.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reliquary_client::types::Timestamp;

pub trait Clock: Debug + Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The real time.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// Starts at the real time now, so stored timestamps look ordinary.
    pub fn starting_now() -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(Timestamp::now().millis())))
    }

    /// Starts at `at` (a test that needs data to look old to another process's real clock).
    pub fn starting_at(at: Timestamp) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(at.millis())))
    }

    pub fn advance(&self, by: Duration) {
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst))
    }
}

/// The clock a configuration starts with.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::starting_now();
        let start = clock.now();
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(3600));
        assert_eq!(clock.now().millis() - start.millis(), 3_600_000);
    }
}
