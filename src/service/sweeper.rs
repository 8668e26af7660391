//! The sweeper wakes every pool worker and the interrupt worker each `sweep_interval` (and
//! once at start, so recovery adopts in-flight operations), so in-flight operations progress
//! and a still-active signal gets its next step without waiting for Alertmanager's repeat.
//! It owns nothing but its schedule and needs only the wake-ups and the shutdown signal.

use std::time::Duration;

use tokio::sync::watch;

use super::triggers::Triggers;

/// The sweep loop.
pub(super) struct Sweeper {
    interval: Duration,
    triggers: Triggers,
    shutdown: watch::Receiver<bool>,
}

impl Sweeper {
    /// A sweeper waking everything through `triggers` every `interval` until `shutdown`.
    pub(super) fn new(interval: Duration, triggers: Triggers, shutdown: watch::Receiver<bool>) -> Self {
        Sweeper { interval, triggers, shutdown }
    }

    /// Wakes every worker now and then every `interval` until shutdown.
    pub(super) async fn run(mut self) {
        let mut next = tokio::time::Instant::now();
        loop {
            self.triggers.all();
            next += self.interval;
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = self.shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }
}
