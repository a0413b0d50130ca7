//! What a seed decides before the run starts: the cluster's shape, the workload and the
//! timed faults. Message-level faults are decided per call from the seed as well (see
//! [`draw`]), so nothing random in a run comes from outside the seed.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One timed fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The node is cut off from the client (requests and replies vanish) for a while.
    Partition {
        /// Node index.
        node: usize,
        /// How long.
        heal_after: Duration,
    },
    /// The node stops answering at once; after a while it restarts from its directory.
    CrashRestart {
        /// Node index.
        node: usize,
        /// How long it stays down.
        down_for: Duration,
    },
}

/// A fault at a simulated time since the run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timed {
    /// When, since the start of the write phase.
    pub at: Duration,
    /// What.
    pub fault: Fault,
}

/// Rates of the faults decided per call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MessageFaults {
    /// A request never reaches the node (the caller times out).
    pub lose_request: f64,
    /// The node applies the request but its reply is lost (the caller times out).
    pub lose_reply: f64,
    /// A request is delayed by up to `max_delay`.
    pub delay: f64,
    /// The longest delay.
    pub max_delay: Duration,
}

/// Object-store faults (through `storage::object::faults`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObjectFaults {
    /// Transient errors before the operation.
    pub error_before: f64,
    /// Transient errors after the operation was applied.
    pub error_after: f64,
    /// Latency added to every operation.
    pub latency: Duration,
}

/// Metadata-store faults (through [`crate::meta::FaultyKv`]), while the write phase runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetaFaults {
    /// Calls that fail before they are applied.
    pub error_before: f64,
    /// Calls that change something, are applied, and fail (the answer is lost).
    pub error_after: f64,
    /// Calls delayed by up to `max_delay`.
    pub delay: f64,
    /// The longest delay.
    pub max_delay: Duration,
}

/// Local-disk faults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskFaults {
    /// Crashes are power losses: unsynced writes are lost and the last ones torn
    /// ([`crate::disk`]); otherwise a crash stops the process after its last flush.
    pub power_loss: bool,
    /// Each write or sync of local files takes up to this long (a slow disk, a slow `fsync`);
    /// zero: at once.
    pub max_write_latency: Duration,
    /// Each read of local files takes up to this long.
    pub max_read_latency: Duration,
}

/// Everything a seed decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The seed.
    pub seed: u64,
    /// LogStore nodes.
    pub nodes: usize,
    /// Replicas of a segment (3 or 5, at most `nodes`).
    pub replicas: usize,
    /// Writes of the workload (first writer, then the second).
    pub writes: usize,
    /// After how many writes the second writer opens (fencing the first, which keeps trying).
    pub fence_at: usize,
    /// Entries the first writer tries after it was fenced, concurrently with the second.
    pub stale_writes: usize,
    /// Bytes after which a segment rolls (`segmentRollingPolicy.maxSize`), small so that a
    /// run spans several segments.
    pub segment_max_bytes: u64,
    /// Timed faults, in time order.
    pub faults: Vec<Timed>,
    /// Per-call faults.
    pub messages: MessageFaults,
    /// Object-store faults.
    pub objects: ObjectFaults,
    /// Local-disk faults.
    pub disk: DiskFaults,
    /// Metadata-store faults.
    pub meta: MetaFaults,
}

impl Plan {
    /// Three nodes, three replicas, 1 MiB segments and no fault at all: a base for a test
    /// that places the one fault it is about itself.
    pub fn healthy(seed: u64) -> Plan {
        let mut plan = Plan::from_seed(seed);
        plan.nodes = 3;
        plan.replicas = 3;
        plan.faults.clear();
        plan.segment_max_bytes = 1 << 20;
        plan.messages = MessageFaults {
            lose_request: 0.0,
            lose_reply: 0.0,
            delay: 0.0,
            max_delay: Duration::ZERO,
        };
        plan.objects = ObjectFaults {
            error_before: 0.0,
            error_after: 0.0,
            latency: Duration::ZERO,
        };
        plan.meta = MetaFaults {
            error_before: 0.0,
            error_after: 0.0,
            delay: 0.0,
            max_delay: Duration::ZERO,
        };
        plan.disk = DiskFaults {
            power_loss: false,
            max_write_latency: Duration::ZERO,
            max_read_latency: Duration::ZERO,
        };
        plan
    }

    /// The plan of `seed`.
    pub fn from_seed(seed: u64) -> Plan {
        let mut rng = StdRng::seed_from_u64(seed);
        let nodes = rng.random_range(3..=5usize);
        let replicas = if nodes == 5 && rng.random_bool(0.25) {
            5
        } else {
            3
        };
        let writes = rng.random_range(40..=120usize);
        let fence_at = rng.random_range(writes / 4..=3 * writes / 4);
        let stale_writes = rng.random_range(1..=10usize);
        let segment_max_bytes = rng.random_range(100..=1_500u64);
        let mut faults = Vec::new();
        let mut at = Duration::ZERO;
        let count = rng.random_range(0..=8usize);
        for _ in 0..count {
            at += Duration::from_millis(rng.random_range(50..=3_000));
            let node = rng.random_range(0..nodes);
            let fault = if rng.random_bool(0.5) {
                Fault::Partition {
                    node,
                    heal_after: Duration::from_millis(rng.random_range(100..=8_000)),
                }
            } else {
                Fault::CrashRestart {
                    node,
                    down_for: Duration::from_millis(rng.random_range(100..=8_000)),
                }
            };
            faults.push(Timed { at, fault });
        }
        let rate = |rng: &mut StdRng, max: f64| {
            if rng.random_bool(0.5) {
                rng.random_range(0.0..max)
            } else {
                0.0
            }
        };
        let messages = MessageFaults {
            lose_request: rate(&mut rng, 0.05),
            lose_reply: rate(&mut rng, 0.05),
            delay: rate(&mut rng, 0.3),
            max_delay: Duration::from_millis(rng.random_range(1..=500)),
        };
        let objects = ObjectFaults {
            error_before: rate(&mut rng, 0.2),
            error_after: rate(&mut rng, 0.1),
            latency: Duration::from_millis(if rng.random_bool(0.5) {
                rng.random_range(1..=200)
            } else {
                0
            }),
        };
        // Drawn last, so that the draws above give every seed the plan it had before disk
        // faults existed.
        let slow = rng.random_bool(0.4);
        let disk = DiskFaults {
            power_loss: rng.random_bool(0.75),
            max_write_latency: Duration::from_millis(if slow {
                rng.random_range(1..=40)
            } else {
                0
            }),
            max_read_latency: Duration::from_millis(if slow { rng.random_range(0..=5) } else { 0 }),
        };
        let meta = MetaFaults {
            error_before: rate(&mut rng, 0.05),
            error_after: rate(&mut rng, 0.03),
            delay: rate(&mut rng, 0.3),
            max_delay: Duration::from_millis(rng.random_range(1..=300)),
        };
        Plan {
            seed,
            nodes,
            replicas,
            writes,
            fence_at,
            stale_writes,
            segment_max_bytes,
            faults,
            messages,
            objects,
            disk,
            meta,
        }
    }
}

/// A number in `[0, 1)` that depends only on `seed` and the two coordinates (splitmix64),
/// for decisions that must not depend on the order in which tasks draw them.
pub fn draw(seed: u64, a: u64, b: u64) -> f64 {
    (mix(seed, a, b) >> 11) as f64 / (1u64 << 53) as f64
}

/// A 64-bit value that depends only on `seed` and the two coordinates (splitmix64): the seed
/// of a decision's own generator.
pub fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z = seed
        .wrapping_add(a.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(b.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_gives_the_same_plan_and_draws() {
        assert_eq!(Plan::from_seed(7), Plan::from_seed(7));
        assert_ne!(Plan::from_seed(7), Plan::from_seed(8));
        assert_eq!(draw(1, 2, 3), draw(1, 2, 3));
        assert_ne!(draw(1, 2, 3), draw(1, 2, 4));
        let d = draw(u64::MAX, u64::MAX, 0);
        assert!((0.0..1.0).contains(&d));
    }
}
