//! The engine's clock on the runtime's (paused, simulated) time.

use std::time::Duration;

use async_trait::async_trait;
use wal::clock::Clock;

/// Milliseconds since the epoch = a fixed start + tokio's (simulated) elapsed time, so that
/// timestamps the engine records are the same on every run of a seed.
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    start_millis: u64,
    start: tokio::time::Instant,
}

impl SimClock {
    /// A clock reading `start_millis` now. Call inside the simulation runtime.
    pub fn new(start_millis: u64) -> Self {
        SimClock {
            start_millis,
            start: tokio::time::Instant::now(),
        }
    }

    /// Simulated milliseconds since the clock was made.
    pub fn elapsed_millis(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[async_trait]
impl Clock for SimClock {
    fn now_millis(&self) -> u64 {
        self.start_millis.saturating_add(self.elapsed_millis())
    }

    fn now(&self) -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}
