//! Counters of a LogStore node, rendered in the Prometheus text format for `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// The node's counters (all monotonic).
#[derive(Debug, Default)]
pub struct Metrics {
    rpcs: [AtomicU64; RPCS.len()],
    rpc_errors: [AtomicU64; RPCS.len()],
    entries_appended: AtomicU64,
    bytes_appended: AtomicU64,
    appends_failed: AtomicU64,
    entries_read: AtomicU64,
    compactions: AtomicU64,
    compactions_failed: AtomicU64,
}

/// The RPCs counted, in proto order.
pub(crate) const RPCS: [&str; 14] = [
    "AddEntry",
    "AddEntries",
    "GetBatchEntriesAdv",
    "FenceSegment",
    "CompleteSegment",
    "CompactSegment",
    "NotifySegmentCompacted",
    "GetSegmentLastAddConfirmed",
    "GetSegmentBlockCount",
    "UpdateLastAddConfirmed",
    "CleanSegment",
    "MarkLogDeleted",
    "MarkInstanceDeleted",
    "SelectNodes",
];

impl Metrics {
    /// Counts one call of `rpc` (a name of [`RPCS`]) and whether it failed.
    pub fn rpc(&self, rpc: &str, failed: bool) {
        if let Some(i) = RPCS.iter().position(|r| *r == rpc) {
            self.rpcs[i].fetch_add(1, Ordering::Relaxed);
            if failed {
                self.rpc_errors[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn appended(&self, entries: usize, bytes: usize) {
        self.entries_appended
            .fetch_add(entries as u64, Ordering::Relaxed);
        self.bytes_appended
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn append_failed(&self) {
        self.appends_failed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn read(&self, entries: usize) {
        self.entries_read
            .fetch_add(entries as u64, Ordering::Relaxed);
    }

    pub(crate) fn compacted(&self, ok: bool) {
        if ok {
            self.compactions.fetch_add(1, Ordering::Relaxed);
        } else {
            self.compactions_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition; `gauges` are appended as they are given.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        for (name, help, values) in [
            (
                "woodpecker_logstore_rpc_total",
                "LogStore RPCs handled, by method.",
                &self.rpcs,
            ),
            (
                "woodpecker_logstore_rpc_errors_total",
                "LogStore RPCs answered with a non-zero status, by method.",
                &self.rpc_errors,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (rpc, v) in RPCS.iter().zip(values.iter()) {
                let _ = writeln!(
                    out,
                    "{name}{{method=\"{rpc}\"}} {}",
                    v.load(Ordering::Relaxed)
                );
            }
        }
        for (name, help, v) in [
            (
                "woodpecker_logstore_entries_appended_total",
                "Entries buffered by AddEntry/AddEntries.",
                &self.entries_appended,
            ),
            (
                "woodpecker_logstore_bytes_appended_total",
                "Entry bytes buffered by AddEntry/AddEntries.",
                &self.bytes_appended,
            ),
            (
                "woodpecker_logstore_appends_failed_total",
                "Append batches refused while buffering.",
                &self.appends_failed,
            ),
            (
                "woodpecker_logstore_entries_read_total",
                "Entries returned by GetBatchEntriesAdv.",
                &self.entries_read,
            ),
            (
                "woodpecker_logstore_compactions_total",
                "Segments compacted into object storage.",
                &self.compactions,
            ),
            (
                "woodpecker_logstore_compactions_failed_total",
                "Compactions that failed or were refused.",
                &self.compactions_failed,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.rpc("AddEntries", false);
        m.rpc("AddEntries", true);
        m.appended(3, 30);
        let text = m.render(&[("woodpecker_logstore_up", "Up.", 1.0)]);
        assert!(text.contains("woodpecker_logstore_rpc_total{method=\"AddEntries\"} 2"));
        assert!(text.contains("woodpecker_logstore_rpc_errors_total{method=\"AddEntries\"} 1"));
        assert!(text.contains("woodpecker_logstore_entries_appended_total 3"));
        assert!(text.contains("# TYPE woodpecker_logstore_up gauge\nwoodpecker_logstore_up 1"));
    }
}
