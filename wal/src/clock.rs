//! Time, behind a trait so tests can run timeouts, leases and retention in milliseconds.
//!
//! Engine code never calls `Instant::now`, `SystemTime::now` or `tokio::time::sleep` directly:
//! it asks its [`Clock`]. [`SystemClock`] is the real one; [`ManualClock`] only moves when a test
//! advances it, and wakes sleepers whose deadline has passed.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::watch;

/// A source of time.
#[async_trait]
pub trait Clock: Send + Sync + Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> u64;

    /// Waits until `duration` has passed on this clock.
    async fn sleep(&self, duration: Duration);

    /// Seconds since the Unix epoch.
    fn now_secs(&self) -> u64 {
        self.now_millis() / 1000
    }
}

/// Shared handle to a clock.
pub type ClockRef = Arc<dyn Clock>;

/// The wall clock and tokio's timer.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl SystemClock {
    /// A shared system clock.
    pub fn shared() -> ClockRef {
        Arc::new(SystemClock)
    }
}

#[async_trait]
impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<u64>>,
    tick: watch::Sender<u64>,
}

impl ManualClock {
    /// A clock reading `start_millis`.
    pub fn new(start_millis: u64) -> Self {
        let (tick, _) = watch::channel(start_millis);
        ManualClock {
            now: Arc::new(Mutex::new(start_millis)),
            tick,
        }
    }

    /// Moves the clock forward and wakes sleepers whose deadline passed.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now = now.saturating_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX));
        self.tick.send_replace(*now);
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now_millis(&self) -> u64 {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn sleep(&self, duration: Duration) {
        let deadline = self
            .now_millis()
            .saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        let mut rx = self.tick.subscribe();
        while *rx.borrow_and_update() < deadline {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_only_when_advanced_past_their_deadline() {
        let clock = ManualClock::new(1_000);
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep(Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(9));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(1));
        sleeper.await.unwrap();
        assert_eq!(clock.now_millis(), 11_000);
        assert_eq!(clock.now_secs(), 11);
    }
}
