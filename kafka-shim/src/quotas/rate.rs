//! The measurement behind byte-rate quotas, with no IO and no clock of its own: a rate
//! measured over a window of samples, and the throttle time a rate over its limit earns.
//!
//! The arithmetic is the one Kafka documents for client quotas (KIP-13, KIP-219): a rate is
//! what was recorded in the last `samples` sample windows (`quota.window.num`, 11) of
//! `sample_ms` each (`quota.window.size.seconds`, 1 s), divided by the time they cover,
//! which is never taken as less than `samples - 1` whole windows (so that a burst just after
//! a quiet spell is not measured over a few milliseconds). A client whose rate `r` is over
//! its limit `q` is throttled for `(r - q) / q * window`: the time after which, with nothing
//! more recorded, its rate is back at the limit.

use std::collections::VecDeque;

/// How rates are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaWindow {
    /// Samples kept (`quota.window.num`).
    pub samples: u32,
    /// The length of one sample, in milliseconds (`quota.window.size.seconds` × 1000).
    pub sample_ms: u64,
}

impl Default for QuotaWindow {
    fn default() -> Self {
        QuotaWindow {
            samples: 11,
            sample_ms: 1000,
        }
    }
}

impl QuotaWindow {
    /// The longest throttle time handed out: the whole measured window. A rate cannot need
    /// longer than that to fall back to its limit, whatever a single request brought.
    pub fn max_throttle_ms(&self) -> u64 {
        u64::from(self.samples.max(1)) * self.sample_ms
    }

    /// The most a client may take in one request under `limit` bytes per second without
    /// needing more than the window to pay it back: `limit × (samples − 1) × sample`
    /// (Kafka bounds a quota-limited fetch by this).
    pub fn max_value_in_window(&self, limit: f64) -> f64 {
        let seconds = f64::from(self.samples.saturating_sub(1).max(1)) * self.sample_ms as f64;
        limit * seconds / 1000.0
    }
}

/// One sample: when it started and what was recorded in it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    start_ms: u64,
    value: f64,
}

/// A rate over a window of samples (per second).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rate {
    samples: VecDeque<Sample>,
}

impl Rate {
    /// Adds `value` at `now_ms`.
    pub fn record(&mut self, window: &QuotaWindow, now_ms: u64, value: f64) {
        self.purge(window, now_ms);
        match self.samples.back_mut() {
            Some(s) if now_ms < s.start_ms.saturating_add(window.sample_ms) => s.value += value,
            _ => {
                self.samples.push_back(Sample {
                    start_ms: now_ms,
                    value,
                });
                while self.samples.len() > window.samples.max(1) as usize {
                    self.samples.pop_front();
                }
            }
        }
    }

    /// Takes back `value` recorded at `now_ms` (what was measured but, in the end, not
    /// served: a fetch answered empty because it is throttled).
    pub fn unrecord(&mut self, window: &QuotaWindow, now_ms: u64, value: f64) {
        self.record(window, now_ms, -value);
    }

    /// Drops the samples that ended before the window that ends at `now_ms`.
    fn purge(&mut self, window: &QuotaWindow, now_ms: u64) {
        let span = window.max_throttle_ms();
        while self
            .samples
            .front()
            .is_some_and(|s| s.start_ms.saturating_add(span) <= now_ms)
        {
            self.samples.pop_front();
        }
    }

    /// The time the rate is measured over at `now_ms`, in milliseconds: from the start of
    /// the oldest sample kept, with whole sample windows added until at least
    /// `samples - 1` are covered.
    pub fn window_ms(&self, window: &QuotaWindow, now_ms: u64) -> u64 {
        let live = self
            .samples
            .iter()
            .find(|s| s.start_ms.saturating_add(window.max_throttle_ms()) > now_ms);
        let elapsed = live.map_or(0, |s| now_ms.saturating_sub(s.start_ms));
        let sample = window.sample_ms.max(1);
        let full = elapsed / sample;
        let least = u64::from(window.samples.saturating_sub(1).max(1));
        if full < least {
            elapsed + (least - full) * sample
        } else {
            elapsed
        }
    }

    /// The rate at `now_ms`, per second.
    pub fn per_second(&self, window: &QuotaWindow, now_ms: u64) -> f64 {
        let span = window.max_throttle_ms();
        let total: f64 = self
            .samples
            .iter()
            .filter(|s| s.start_ms.saturating_add(span) > now_ms)
            .map(|s| s.value)
            .sum();
        total.max(0.0) * 1000.0 / self.window_ms(window, now_ms) as f64
    }

    /// Whether nothing was recorded within the window ending at `now_ms` (the rate can be
    /// forgotten).
    pub fn idle(&self, window: &QuotaWindow, now_ms: u64) -> bool {
        self.samples
            .back()
            .is_none_or(|s| s.start_ms.saturating_add(window.max_throttle_ms()) <= now_ms)
    }
}

/// The throttle time, in milliseconds, of a client measured at `rate` per second over
/// `window_ms` against `limit` per second: 0 within the limit, else the time its rate takes
/// to fall back to the limit, at most `max_ms`.
pub fn throttle_ms(rate: f64, limit: f64, window_ms: u64, max_ms: u64) -> u64 {
    if limit.is_nan() || limit <= 0.0 || rate <= limit {
        return 0;
    }
    let t = ((rate - limit) / limit * window_ms as f64).round();
    if t.is_finite() {
        (t as u64).min(max_ms)
    } else {
        max_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: QuotaWindow = QuotaWindow {
        samples: 11,
        sample_ms: 1000,
    };

    #[test]
    fn a_young_rate_is_measured_over_at_least_samples_minus_one_windows() {
        let mut r = Rate::default();
        r.record(&W, 100_000, 10_000.0);
        // 10 full windows are assumed even though 0 ms passed.
        assert_eq!(r.window_ms(&W, 100_000), 10_000);
        assert_eq!(r.per_second(&W, 100_000), 1000.0);
        // 2.5 s later: the partial window counts, plus the missing full windows.
        assert_eq!(r.window_ms(&W, 102_500), 10_500);
    }

    #[test]
    fn samples_roll_and_old_ones_are_forgotten() {
        let mut r = Rate::default();
        for s in 0..20u64 {
            r.record(&W, s * 1000, 1000.0);
        }
        // Only the last 11 samples are kept: 11,000 over the 10 s they span (the oldest
        // started at 9 s).
        assert_eq!(r.samples.len(), 11);
        assert_eq!(r.window_ms(&W, 19_000), 10_000);
        assert_eq!(r.per_second(&W, 19_000), 1100.0);
        // Long after, nothing is left.
        assert!(r.idle(&W, 30_000));
        assert_eq!(r.per_second(&W, 40_000), 0.0);
    }

    #[test]
    fn records_within_a_sample_add_up() {
        let mut r = Rate::default();
        r.record(&W, 0, 1.0);
        r.record(&W, 999, 2.0);
        r.record(&W, 1000, 4.0);
        assert_eq!(r.samples.len(), 2);
        assert_eq!(r.samples[0].value, 3.0);
        r.unrecord(&W, 1000, 4.0);
        assert_eq!(r.per_second(&W, 1000), 3.0 * 1000.0 / 10_000.0);
    }

    #[test]
    fn throttle_is_the_time_the_rate_takes_to_fall_to_the_limit() {
        // Twice the limit over 10 s: 10 s more at zero halves it.
        assert_eq!(throttle_ms(2000.0, 1000.0, 10_000, 11_000), 10_000);
        assert_eq!(throttle_ms(1500.0, 1000.0, 10_000, 11_000), 5_000);
        // Within the limit: none.
        assert_eq!(throttle_ms(1000.0, 1000.0, 10_000, 11_000), 0);
        assert_eq!(throttle_ms(10.0, 1000.0, 10_000, 11_000), 0);
        // Capped at the window.
        assert_eq!(throttle_ms(1e12, 1.0, 10_000, 11_000), 11_000);
        // No limit, no throttle.
        assert_eq!(throttle_ms(1e12, 0.0, 10_000, 11_000), 0);
        assert_eq!(throttle_ms(1e12, f64::NAN, 10_000, 11_000), 0);
    }

    #[test]
    fn a_throttled_client_that_waits_its_throttle_time_is_back_within_its_limit() {
        let mut r = Rate::default();
        let limit = 1000.0;
        r.record(&W, 50_000, 30_000.0);
        let now = 50_000;
        let t = throttle_ms(
            r.per_second(&W, now),
            limit,
            r.window_ms(&W, now),
            W.max_throttle_ms(),
        );
        assert_eq!(
            t, 11_000,
            "3x the limit over 10 s needs 20 s: capped at 11 s"
        );
        let later = now + t;
        assert!(r.per_second(&W, later) <= limit);
    }

    #[test]
    fn the_largest_request_a_quota_allows_fits_in_the_window() {
        assert_eq!(W.max_value_in_window(1024.0), 10_240.0);
        assert_eq!(W.max_throttle_ms(), 11_000);
    }
}
