//! `logstore.segmentSyncPolicy` (spec Appendix B) and the on-storage format version.

use std::time::Duration;

/// When and how a segment processor flushes. `Default` is the Go project's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPolicy {
    /// Flush ticker for object storage (`maxInterval`, 200 ms).
    pub max_interval: Duration,
    /// Flush ticker for local files (`maxIntervalForLocalStorage`, 10 ms).
    pub max_interval_local: Duration,
    /// Size of the out-of-order window in entries (`maxEntries`, 10000).
    pub max_entries: usize,
    /// Buffered plus in-flight bytes at which appends wait (`maxBytes`, 256 MB).
    pub max_bytes: usize,
    /// Contiguous bytes that trigger a flush, and the size a block is closed at
    /// (`maxFlushSize`, 2 MB).
    pub max_flush_size: usize,
    /// Parallel block uploads (`maxFlushThreads`, 32).
    pub max_flush_threads: usize,
    /// Retries of one block upload (`maxFlushRetries`, 5).
    pub max_flush_retries: u32,
    /// Upper bound of the retry backoff, which starts at 100 ms (`retryInterval`, 1000 ms).
    pub retry_interval: Duration,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy {
            max_interval: Duration::from_millis(200),
            max_interval_local: Duration::from_millis(10),
            max_entries: 10_000,
            max_bytes: 256_000_000,
            max_flush_size: 2_000_000,
            max_flush_threads: 32,
            max_flush_retries: 5,
            retry_interval: Duration::from_millis(1000),
        }
    }
}

impl SyncPolicy {
    /// The first retry backoff.
    pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

    /// Checks the settings; the message names the Go YAML key.
    pub fn validate(&self) -> Result<(), String> {
        let key = "woodpecker.logstore.segmentSyncPolicy";
        if self.max_entries == 0 {
            return Err(format!("{key}.maxEntries must be positive"));
        }
        if self.max_bytes == 0 {
            return Err(format!("{key}.maxBytes must be positive"));
        }
        if self.max_flush_size == 0 {
            return Err(format!("{key}.maxFlushSize must be positive"));
        }
        if self.max_flush_threads == 0 {
            return Err(format!("{key}.maxFlushThreads must be positive"));
        }
        if self.max_interval.is_zero() || self.max_interval_local.is_zero() {
            return Err(format!("{key}.maxInterval must be positive"));
        }
        Ok(())
    }

    /// The backoff before retry number `attempt` (1-based): 100 ms doubling up to
    /// `retry_interval`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        Self::INITIAL_BACKOFF
            .saturating_mul(factor)
            .min(self.retry_interval.max(Self::INITIAL_BACKOFF))
    }
}

/// The block format a processor writes: 5 keeps segments readable by Milvus 2.6 (Go v0.1.13),
/// 6 is the current Go format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FormatVersion {
    /// Format 5.
    V5,
    /// Format 6.
    #[default]
    V6,
}

impl FormatVersion {
    /// The number written in header and footer records.
    pub fn as_u16(self) -> u16 {
        match self {
            FormatVersion::V5 => storage::codec::FORMAT_V5,
            FormatVersion::V6 => storage::codec::FORMAT_V6,
        }
    }
}

impl TryFrom<u16> for FormatVersion {
    type Error = String;

    fn try_from(v: u16) -> Result<Self, String> {
        match v {
            5 => Ok(FormatVersion::V5),
            6 => Ok(FormatVersion::V6),
            v => Err(format!("format version {v} is not 5 or 6")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_go_defaults() {
        let p = SyncPolicy::default();
        assert_eq!(p.max_interval, Duration::from_millis(200));
        assert_eq!(p.max_interval_local, Duration::from_millis(10));
        assert_eq!(p.max_entries, 10_000);
        assert_eq!(p.max_bytes, 256_000_000);
        assert_eq!(p.max_flush_size, 2_000_000);
        assert_eq!(p.max_flush_threads, 32);
        assert_eq!(p.max_flush_retries, 5);
        assert_eq!(p.retry_interval, Duration::from_millis(1000));
        p.validate().unwrap();
    }

    #[test]
    fn backoff_doubles_from_100ms_up_to_the_retry_interval() {
        let p = SyncPolicy::default();
        let got: Vec<u128> = (1..=6).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn format_versions() {
        assert_eq!(FormatVersion::V5.as_u16(), 5);
        assert_eq!(FormatVersion::default().as_u16(), 6);
        assert_eq!(FormatVersion::try_from(5), Ok(FormatVersion::V5));
        assert!(FormatVersion::try_from(7).is_err());
        let bad = SyncPolicy {
            max_entries: 0,
            ..SyncPolicy::default()
        };
        assert!(bad.validate().unwrap_err().contains("maxEntries"));
    }
}
