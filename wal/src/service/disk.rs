//! Disk watermark (Go `diskWatermarkPolicy`, spec §6.2): a LogStore node refuses appends with
//! 2007 (retriable) when the disk holding its local segments is too full, so that clients back
//! off or roll to other replicas before the disk runs out under a half-written block.
//!
//! Usage is sampled from `statvfs` of the data directory every `sampleInterval`; the ratio is
//! used / (used + available), as `df` shows it. At or above `hardThresholdRatio`, or with at
//! most `minFreeBytes` available, every append is refused; between `softThresholdRatio` and the
//! hard ratio (with `throttleEnabled`) an append is refused with a probability that grows
//! linearly from 0 at the soft ratio to 1 at the hard one. Reads, fence, complete and
//! compaction are never refused: they are how the disk drains.

use std::path::Path;

use crate::config::DiskWatermarkPolicy;

/// One sample of the data directory's file system.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskUsage {
    /// used / (used + available).
    pub used_ratio: f64,
    /// Bytes available to this process.
    pub available: u64,
}

/// Samples the file system holding `path`.
pub fn sample(path: &Path) -> std::io::Result<DiskUsage> {
    let s = rustix::fs::statvfs(path)?;
    let unit = if s.f_frsize > 0 {
        s.f_frsize
    } else {
        s.f_bsize
    };
    let used = s.f_blocks.saturating_sub(s.f_bfree).saturating_mul(unit);
    let available = s.f_bavail.saturating_mul(unit);
    let total = used.saturating_add(available);
    let used_ratio = if total == 0 {
        0.0
    } else {
        used as f64 / total as f64
    };
    Ok(DiskUsage {
        used_ratio,
        available,
    })
}

/// Whether an append may go ahead on a disk in `usage`; `draw` is a uniform random number in
/// [0, 1) for the throttle. `Err` says why not.
pub fn admit(usage: DiskUsage, policy: &DiskWatermarkPolicy, draw: f64) -> Result<(), String> {
    if !policy.enabled {
        return Ok(());
    }
    let pct = usage.used_ratio * 100.0;
    if usage.available <= policy.min_free_bytes {
        return Err(format!(
            "{} bytes available, at most the {} bytes minFreeBytes keeps free",
            usage.available, policy.min_free_bytes
        ));
    }
    if policy.hard_threshold_ratio < 1.0 && usage.used_ratio >= policy.hard_threshold_ratio {
        return Err(format!(
            "disk {pct:.1}% used, at or above the hard watermark {:.0}%",
            policy.hard_threshold_ratio * 100.0
        ));
    }
    if policy.throttle_enabled
        && policy.hard_threshold_ratio < 1.0
        && usage.used_ratio > policy.soft_threshold_ratio
    {
        let span = policy.hard_threshold_ratio - policy.soft_threshold_ratio;
        let p = if span > 0.0 {
            (usage.used_ratio - policy.soft_threshold_ratio) / span
        } else {
            1.0
        };
        if draw < p {
            return Err(format!(
                "disk {pct:.1}% used, above the soft watermark {:.0}%: throttled",
                policy.soft_threshold_ratio * 100.0
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(ratio: f64, free_gib: u64) -> DiskUsage {
        DiskUsage {
            used_ratio: ratio,
            available: free_gib << 30,
        }
    }

    #[test]
    fn watermarks_follow_the_go_policy() {
        let p = DiskWatermarkPolicy::default();
        assert!(admit(usage(0.5, 100), &p, 0.0).is_ok());
        assert!(admit(usage(0.80, 100), &p, 0.0).is_ok());
        // Half-way between soft and hard: refused for draws below 0.5.
        assert!(admit(usage(0.85, 100), &p, 0.49).is_err());
        assert!(admit(usage(0.85, 100), &p, 0.51).is_ok());
        assert!(
            admit(usage(0.90, 100), &p, 0.99)
                .unwrap_err()
                .contains("hard")
        );
        // The absolute floor: 1 GiB.
        assert!(
            admit(usage(0.1, 1), &p, 0.99)
                .unwrap_err()
                .contains("minFreeBytes")
        );
        let no_throttle = DiskWatermarkPolicy {
            throttle_enabled: false,
            ..p
        };
        assert!(admit(usage(0.89, 100), &no_throttle, 0.0).is_ok());
        let warn_only = DiskWatermarkPolicy {
            hard_threshold_ratio: 1.0,
            ..p
        };
        assert!(admit(usage(0.99, 100), &warn_only, 0.0).is_ok());
        let off = DiskWatermarkPolicy {
            enabled: false,
            ..p
        };
        assert!(admit(usage(1.0, 0), &off, 0.0).is_ok());
    }

    #[test]
    fn samples_the_real_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let u = sample(dir.path()).unwrap();
        assert!((0.0..=1.0).contains(&u.used_ratio), "{u:?}");
        assert!(sample(&dir.path().join("missing")).is_err());
    }
}
