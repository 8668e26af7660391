//! Source of "now", so the service can be driven by a test clock.

use crate::core::time::Timestamp;

/// Source of "now", so the service can be driven by a test clock.
pub trait Clock: Send + Sync {
    /// The current wall-clock time.
    fn now(&self) -> Timestamp;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system(std::time::SystemTime::now())
    }
}

#[cfg(test)]
pub(crate) use manual::ManualClock;

#[cfg(test)]
mod manual {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::Clock;
    use crate::core::time::Timestamp;

    /// A clock the test moves by hand.
    pub struct ManualClock(AtomicU64);

    impl ManualClock {
        pub fn at(millis: u64) -> Self {
            Self(AtomicU64::new(millis))
        }
        pub fn advance(&self, by: Duration) {
            self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Timestamp {
            Timestamp::from_millis(self.0.load(Ordering::SeqCst))
        }
    }
}
