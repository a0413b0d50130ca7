//! Progress of long commands, on stderr: every few seconds a line with what was done so far
//! and its rate, and a summary at the end.
//!
//! The interval is `WOODPECKER_PROGRESS_SECS` (seconds, fractions allowed; default 5; 0
//! turns the periodic lines off, the summary stays).

use std::time::Duration;

use telemetry::Stopwatch;

/// The environment variable that sets the interval.
pub(crate) const INTERVAL_VAR: &str = "WOODPECKER_PROGRESS_SECS";
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// Counts of one long operation.
#[derive(Debug)]
pub(crate) struct Progress {
    what: String,
    started: Stopwatch,
    every: Option<Duration>,
    next: Duration,
    entries: u64,
    bytes: u64,
}

fn interval() -> Option<Duration> {
    match std::env::var(INTERVAL_VAR) {
        Err(_) => Some(DEFAULT_INTERVAL),
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(0.0) => None,
            Ok(secs) if secs.is_finite() && secs > 0.0 => Some(Duration::from_secs_f64(secs)),
            _ => {
                eprintln!(
                    "woodpecker: warning: {INTERVAL_VAR}={v:?} is not a number of seconds; using {}",
                    DEFAULT_INTERVAL.as_secs()
                );
                Some(DEFAULT_INTERVAL)
            }
        },
    }
}

impl Progress {
    /// Starts counting; `what` opens every line (`log write \`demo\``).
    pub(crate) fn start(what: impl Into<String>) -> Self {
        let every = interval();
        Progress {
            what: what.into(),
            started: Stopwatch::start(),
            next: every.unwrap_or(Duration::MAX),
            every,
            entries: 0,
            bytes: 0,
        }
    }

    /// Counts `entries` more entries of `bytes` bytes; prints a line when one is due,
    /// `detail` saying where the operation stands (or nothing).
    pub(crate) fn add(&mut self, entries: u64, bytes: u64, detail: impl FnOnce() -> String) {
        self.entries += entries;
        self.bytes += bytes;
        let Some(every) = self.every else {
            return;
        };
        let elapsed = self.started.elapsed();
        if elapsed < self.next {
            return;
        }
        // The next line falls on the interval's grid, however late this one was.
        let intervals = elapsed.as_nanos() / every.as_nanos().max(1) + 1;
        self.next = every.saturating_mul(u32::try_from(intervals).unwrap_or(u32::MAX));
        let detail = detail();
        let sep = if detail.is_empty() { "" } else { ", " };
        eprintln!(
            "woodpecker: {}: {detail}{sep}{} so far",
            self.what,
            self.counts(elapsed)
        );
    }

    /// Entries counted.
    pub(crate) fn entries(&self) -> u64 {
        self.entries
    }

    /// `N entries (X MiB) in T s (R entries/s, M MiB/s)`.
    pub(crate) fn summary(&self) -> String {
        self.counts(self.started.elapsed())
    }

    /// `X MiB in T s (R entries/s, M MiB/s)`.
    pub(crate) fn rates(&self) -> String {
        self.rates_at(self.started.elapsed())
    }

    fn counts(&self, elapsed: Duration) -> String {
        format!(
            "{} entries ({}) in {:.1} s ({})",
            self.entries,
            size(self.bytes as f64),
            elapsed.as_secs_f64(),
            self.per_second(elapsed)
        )
    }

    fn rates_at(&self, elapsed: Duration) -> String {
        format!(
            "{} in {:.1} s, {}",
            size(self.bytes as f64),
            elapsed.as_secs_f64(),
            self.per_second(elapsed)
        )
    }

    fn per_second(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(1e-9);
        format!(
            "{:.0} entries/s, {}/s",
            self.entries as f64 / secs,
            size(self.bytes as f64 / secs)
        )
    }
}

/// `bytes` with a binary unit: `512 B`, `3.4 KiB`, `1.5 MiB`, `2.0 GiB`.
fn size(bytes: f64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024.0 {
        return format!("{bytes:.0} B");
    }
    let mut v = bytes / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_rates() {
        let mut p = Progress {
            what: "t".into(),
            started: Stopwatch::start(),
            every: None,
            next: Duration::MAX,
            entries: 0,
            bytes: 0,
        };
        p.add(3, 3 * 1024 * 1024, String::new);
        assert_eq!(p.entries(), 3);
        let line = p.counts(Duration::from_secs(2));
        assert_eq!(
            line,
            "3 entries (3.0 MiB) in 2.0 s (2 entries/s, 1.5 MiB/s)"
        );
        let rates = p.rates_at(Duration::from_secs(2));
        assert_eq!(rates, "3.0 MiB in 2.0 s, 2 entries/s, 1.5 MiB/s");
        assert_eq!(size(100.0), "100 B");
        assert_eq!(size(3.5 * 1024.0), "3.5 KiB");
        assert_eq!(size(5.0 * 1024.0 * 1024.0 * 1024.0), "5.0 GiB");
    }
}
