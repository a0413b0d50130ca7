//! Time, behind a trait so tests and simulations can run timeouts, leases, retries and
//! retention in milliseconds.
//!
//! This crate owns every reading of the real clock in the engine: code in `storage`, `wal`,
//! `kafka-shim` and `milvus-adapter` never calls `Instant::now`, `SystemTime::now` or
//! `tokio::time::sleep` directly (the workspace's `clippy.toml` forbids it); it asks its
//! [`Clock`]. [`SystemClock`] is the real one; [`ManualClock`] only moves when a test advances it,
//! and wakes sleepers whose deadline has passed. It sits below every other crate so that the
//! storage layer (journal rotation, retry backoff) shares the engine's seam; `wal::clock`
//! re-exports it.
//!
//! The trait gives two kinds of time: wall time ([`Clock::now_millis`]) for anything stored or
//! sent (timestamps, lease expiry in metadata), and monotonic time ([`Clock::now`]) for
//! intervals and deadlines inside one process. A manual clock moves both together.
//!
//! It also owns the other thing a deterministic simulation must schedule itself: where the
//! engine's blocking work (files, the embedded database) runs ([`blocking`]).

// The one module allowed to read the real clock and tokio's timer.
#![allow(clippy::disallowed_methods)]

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::watch;

pub mod blocking;

/// A source of time.
#[async_trait]
pub trait Clock: Send + Sync + Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> u64;

    /// A monotonic instant, for intervals and deadlines within this process. Instants of
    /// different clocks are not comparable.
    fn now(&self) -> Instant;

    /// Waits until `duration` has passed on this clock.
    async fn sleep(&self, duration: Duration);

    /// Waits until this clock's monotonic time reaches `deadline`.
    async fn sleep_until(&self, deadline: Instant) {
        let left = deadline.saturating_duration_since(self.now());
        if !left.is_zero() {
            self.sleep(left).await;
        }
    }

    /// Seconds since the Unix epoch.
    fn now_secs(&self) -> u64 {
        self.now_millis() / 1000
    }

    /// How much monotonic time passed since `since` (zero if `since` is in the future).
    fn elapsed(&self, since: Instant) -> Duration {
        self.now().saturating_duration_since(since)
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

    fn now(&self) -> Instant {
        // tokio's instant, so that a runtime with paused time (tokio's test-util) moves
        // deadlines and sleeps together.
        tokio::time::Instant::now().into_std()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    async fn sleep_until(&self, deadline: Instant) {
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// A clock that moves only when told to.
///
/// Its monotonic time starts at the real instant it was created and moves by exactly what
/// [`ManualClock::advance`] adds, as its wall time does.
#[derive(Debug, Clone)]
pub struct ManualClock {
    start_millis: u64,
    origin: Instant,
    now: Arc<Mutex<u64>>,
    tick: watch::Sender<u64>,
    /// Deadlines of the sleeps in progress, by sleep.
    sleeping: Arc<Mutex<Sleeping>>,
}

#[derive(Debug, Default)]
struct Sleeping {
    next: u64,
    deadlines: std::collections::HashMap<u64, u64>,
}

/// Unregisters a sleep however it ends (woken, or its future dropped).
struct SleepGuard<'a> {
    sleeping: &'a Mutex<Sleeping>,
    id: u64,
}

impl Drop for SleepGuard<'_> {
    fn drop(&mut self) {
        self.sleeping
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .deadlines
            .remove(&self.id);
    }
}

impl ManualClock {
    /// A clock reading `start_millis`.
    pub fn new(start_millis: u64) -> Self {
        let (tick, _) = watch::channel(start_millis);
        ManualClock {
            start_millis,
            origin: Instant::now(),
            now: Arc::new(Mutex::new(start_millis)),
            tick,
            sleeping: Arc::default(),
        }
    }

    /// A shared handle to this clock (the same time as `self`).
    pub fn shared(&self) -> ClockRef {
        Arc::new(self.clone())
    }

    /// How many tasks sleep on this clock towards a deadline still ahead. A sleeper whose
    /// deadline an [`advance`](Self::advance) passed no longer counts, even before it runs:
    /// after an advance, waiting for a sleeper is waiting for a task to handle the wake-up
    /// and go back to sleep.
    pub fn sleepers(&self) -> usize {
        let now = self.now_millis();
        self.sleeping
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .deadlines
            .values()
            .filter(|d| **d > now)
            .count()
    }

    /// How many tasks sleep on this clock until exactly `deadline_millis` (wall time): with
    /// the clock standing still, a task that just began `sleep(d)` sleeps until
    /// `now_millis() + d`, which tells it apart from other sleepers.
    pub fn sleepers_until(&self, deadline_millis: u64) -> usize {
        self.sleeping
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .deadlines
            .values()
            .filter(|d| **d == deadline_millis)
            .count()
    }

    /// Waits until a task sleeps on this clock for `duration` from now (see
    /// [`sleepers_until`](Self::sleepers_until)). Polls in real time; panics after
    /// [`testing::PATIENCE`].
    pub async fn wait_for_sleeper_of(&self, duration: Duration) {
        let deadline = self
            .now_millis()
            .saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        testing::eventually(
            &format!("a sleep of {duration:?} on the manual clock"),
            || self.sleepers_until(deadline) > 0,
        )
        .await;
    }

    /// Waits until at least `n` tasks sleep on this clock: the event a test waits for before
    /// it advances the clock, or before it checks that a task is parked on a timer. Polls in
    /// real time; panics after [`testing::PATIENCE`].
    pub async fn wait_for_sleepers(&self, n: usize) {
        testing::eventually(&format!("{n} sleepers on the manual clock"), || {
            self.sleepers() >= n
        })
        .await;
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

    fn now(&self) -> Instant {
        let moved = self.now_millis().saturating_sub(self.start_millis);
        self.origin + Duration::from_millis(moved)
    }

    async fn sleep(&self, duration: Duration) {
        let deadline = self
            .now_millis()
            .saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        let id = {
            let mut sleeping = self.sleeping.lock().unwrap_or_else(|p| p.into_inner());
            let id = sleeping.next;
            sleeping.next += 1;
            sleeping.deadlines.insert(id, deadline);
            id
        };
        let _registered = SleepGuard {
            sleeping: &self.sleeping,
            id,
        };
        let mut rx = self.tick.subscribe();
        while *rx.borrow_and_update() < deadline {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

pub mod testing {
    //! Waiting for a condition in tests, in real time: for what no clock governs (a file
    //! appearing, a task reaching a timer, a process answering). A test waits for the event
    //! it needs rather than sleeping a fixed while and hoping.

    use std::future::Future;
    use std::time::{Duration, Instant};

    /// How long [`eventually`] waits before it gives up: far beyond any healthy wait, so
    /// that only a missing event fails a test, never a slow machine.
    pub const PATIENCE: Duration = Duration::from_secs(30);

    /// How often a condition is polled.
    const POLL: Duration = Duration::from_millis(2);

    /// Waits until `condition` holds, polling it; panics naming `what` after [`PATIENCE`].
    pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
        eventually_async(what, || std::future::ready(condition())).await;
    }

    /// [`eventually`] with a condition that has to wait itself (a read from storage, a
    /// request).
    pub async fn eventually_async<F, Fut>(what: &str, condition: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        eventually_within(what, PATIENCE, condition).await;
    }

    /// [`eventually_async`] giving up after `patience`.
    pub async fn eventually_within<F, Fut>(what: &str, patience: Duration, mut condition: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + patience;
        while !condition().await {
            assert!(
                Instant::now() < deadline,
                "waited {patience:?} for {what}; it did not happen"
            );
            tokio::time::sleep(POLL).await;
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

    #[tokio::test]
    async fn manual_monotonic_time_moves_with_advance_and_only_then() {
        let clock = ManualClock::new(5_000);
        let t0 = clock.now();
        assert_eq!(clock.elapsed(t0), Duration::ZERO);
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(clock.elapsed(t0), Duration::from_millis(1_500));
        assert_eq!(clock.now() - t0, Duration::from_millis(1_500));

        let deadline = clock.now() + Duration::from_secs(2);
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep_until(deadline).await })
        };
        tokio::task::yield_now().await;
        clock.advance(Duration::from_millis(1_999));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_millis(1));
        sleeper.await.unwrap();
    }

    #[tokio::test]
    async fn sleep_until_a_past_deadline_returns_at_once() {
        let clock = ManualClock::new(0);
        let past = clock.now();
        clock.advance(Duration::from_secs(1));
        clock.sleep_until(past).await;
    }

    #[tokio::test]
    async fn sleepers_count_the_tasks_parked_on_the_clock() {
        let clock = ManualClock::new(0);
        assert_eq!(clock.sleepers(), 0);
        let sleepers: Vec<_> = (1..=2)
            .map(|s| {
                let clock = clock.clone();
                tokio::spawn(async move { clock.sleep(Duration::from_secs(s)).await })
            })
            .collect();
        clock.wait_for_sleepers(2).await;
        clock.wait_for_sleeper_of(Duration::from_secs(2)).await;
        assert_eq!(clock.sleepers_until(1_000), 1);
        assert_eq!(clock.sleepers_until(3_000), 0);
        clock.advance(Duration::from_secs(1));
        // The first sleeper's deadline passed: it no longer counts, woken or not.
        assert_eq!(clock.sleepers(), 1);
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.sleepers(), 0);
        for s in sleepers {
            s.await.unwrap();
        }
        assert_eq!(clock.sleepers(), 0);
    }

    #[tokio::test]
    #[should_panic(expected = "it did not happen")]
    async fn eventually_gives_up_on_a_condition_that_never_holds() {
        testing::eventually_within("nothing", Duration::from_millis(50), || async { false }).await;
    }

    #[tokio::test(start_paused = true)]
    async fn system_monotonic_time_follows_tokios_paused_timer() {
        let clock = SystemClock;
        let t0 = clock.now();
        clock.sleep(Duration::from_secs(30)).await;
        assert!(clock.elapsed(t0) >= Duration::from_secs(30));
        let deadline = clock.now() + Duration::from_secs(5);
        clock.sleep_until(deadline).await;
        assert!(clock.now() >= deadline);
    }
}
