//! The replication core: quorum arithmetic of a segment's writes, fence and completion, as
//! pure code (spec §6.1 steps 5-8, §6.5, §6.8, §7.2).
//!
//! Nothing here performs IO, reads a clock, spawns or awaits: the caller (the client's
//! segment writer, the recovery in `LogHandle::open_writer`) feeds in what replicas answered
//! and acts on what comes out. That keeps the rules that decide whether an acknowledged
//! entry can be lost in one place, small enough to be checked exhaustively
//! (`wal/tests/quorum.rs`) and replayed from readable tables (`wal/tests/testdata/quorum/`).
//!
//! # Terms
//!
//! A segment is written to `Wq` replicas (every entry goes to all of them; there is no
//! striping, so the ensemble is the write quorum) and an entry is **acknowledged** to the
//! application once `Aq` of them have it durable. Replicas are interchangeable in every rule
//! below: they are numbered `0..Wq` and nothing depends on which one is which.
//!
//! A replica's **tail** is the highest entry id it holds durable (−1: none). A LogStore makes
//! a segment's entries durable in id order (it flushes only the contiguous prefix of its
//! window), so a replica that reports entry `e` durable holds every entry `0..=e`: a tail
//! describes everything a replica has, and counting the replicas that hold entry `e` is
//! counting the tails at or above `e`. [`AppendQuorum`] keeps per-entry counts that way.
//!
//! # The invariant
//!
//! **No acknowledged entry is lost.** Precisely: let the old writer have acknowledged entries
//! `0..=L`, so that each of them is durable on at least `Aq` replicas (its tail is ≥ the
//! entry). Let recovery receive fence replies (the replica's tail, −1 when it holds nothing)
//! from a set `S` of replicas, the others failing or staying silent. Then
//!
//! 1. when `|S| ≥ Wq − Aq + 1`, [`fence_target`] returns a target `T` with `T ≥ L`
//!    (*safety*), `T ≤` the largest tail in `S` (*nothing invented*: every entry up to `T`
//!    exists on a replica that answered), and `T` is the least value with both properties
//!    that the replies allow (*minimality*: for `T − 1` there is a tail assignment of the
//!    silent replicas, consistent with the replies, under which entry `T` was acknowledged);
//! 2. when `|S| < Wq − Aq + 1`, it refuses: too many replicas are silent to bound `L`;
//! 3. [`completion`] publishes the segment as Completed at `T` only when at least `Aq`
//!    replicas finalized it (answered CompleteSegment) and some replica is known to hold
//!    `T`; so the published segment holds every acknowledged entry, and each of those is on
//!    at least `Aq` replicas, of which at most `Wq − Aq` can be missing at any time.
//!
//! Why the target is the `(Wq − Aq)`-th smallest reply (0-based): an acknowledged entry `e`
//! is on at least `Aq` replicas, at most `Wq − |S|` of which are silent, so at least
//! `Aq − Wq + |S|` of the replies are ≥ `e`; the `(Aq − Wq + |S|)`-th largest reply, which is
//! the `(Wq − Aq)`-th smallest, is therefore ≥ `e`. A reply of −1 ("I hold nothing") is a
//! vote like any other; a failed reply is no vote at all. Go issue #320 lost an acknowledged
//! entry by treating a failed FenceSegment as a reply, and #252/#253 wedged a log by dropping
//! −1 votes; both histories are tables in `wal/tests/testdata/quorum/recovery.txt`.
//!
//! # Completion and the thin tail
//!
//! The target may be an entry that only one replica holds: with `Wq = 3, Aq = 2`, tails
//! `[1, 0, 0]` and the third replica silent, the replies `[1, 0]` cannot rule out that the
//! silent replica also holds entry 1 (so that entry 1 was acknowledged), and the target is 1.
//! Requiring `Aq` replicas to hold the target before publishing would then block the log
//! until the silent replica returns, and for ever if it never does, although no acknowledged
//! entry is at stake; Go made the same choice after #326 (its #327 records the corner).
//! [`completion`] publishes such a segment and says so ([`Completion::thin`]): readers of
//! entries above the qualified prefix depend on the replicas that hold them.

use std::fmt;

/// A write quorum `Wq` and an ack quorum `Aq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuorumSpec {
    wq: usize,
    aq: usize,
}

/// A quorum that cannot exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quorum wq={wq} aq={aq}: {reason}")]
pub struct InvalidQuorum {
    /// The write quorum asked for.
    pub wq: usize,
    /// The ack quorum asked for.
    pub aq: usize,
    /// What is wrong.
    pub reason: &'static str,
}

/// The largest write quorum the core accepts (an ensemble beyond it is a configuration
/// mistake, and the exhaustive checks stop there).
pub const MAX_WRITE_QUORUM: usize = 16;

impl QuorumSpec {
    /// `Wq` replicas, acknowledged at `Aq`. Refuses `Aq = 0`, `Aq > Wq`, and a minority `Aq`
    /// (`2·Aq ≤ Wq`), under which two writers' acknowledged sets need not intersect.
    pub fn new(wq: usize, aq: usize) -> Result<QuorumSpec, InvalidQuorum> {
        let reason = if wq == 0 || wq > MAX_WRITE_QUORUM {
            Some("the write quorum must be between 1 and 16")
        } else if aq == 0 || aq > wq {
            Some("the ack quorum must be between 1 and the write quorum")
        } else if 2 * aq <= wq {
            Some("the ack quorum must be a majority of the write quorum")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(InvalidQuorum { wq, aq, reason }),
            None => Ok(QuorumSpec { wq, aq }),
        }
    }

    /// Go's rule for the configured `replicas`: `Wq = replicas`, `Aq = Wq/2 + 1` (3 → 2,
    /// 5 → 3, 1 → 1).
    pub fn majority(wq: usize) -> Result<QuorumSpec, InvalidQuorum> {
        QuorumSpec::new(wq, wq / 2 + 1)
    }

    /// The quorum of one of embedded mode.
    pub const ONE: QuorumSpec = QuorumSpec { wq: 1, aq: 1 };

    /// The write quorum (replicas every entry goes to).
    pub fn wq(&self) -> usize {
        self.wq
    }

    /// The ack quorum (replicas that must hold an entry before it is acknowledged).
    pub fn aq(&self) -> usize {
        self.aq
    }

    /// Replicas that may miss an acknowledged entry: `Wq − Aq`.
    pub(crate) fn slack(&self) -> usize {
        self.wq - self.aq
    }

    /// Fence replies recovery needs to bound what was acknowledged: `Wq − Aq + 1`.
    pub fn fence_replies_needed(&self) -> usize {
        self.slack() + 1
    }
}

impl fmt::Display for QuorumSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wq={} aq={}", self.wq, self.aq)
    }
}

/// An inclusive run of entry ids `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// The first id.
    pub first: i64,
    /// The last id (≥ `first`).
    pub last: i64,
}

impl IdRange {
    fn new(first: i64, last: i64) -> Option<IdRange> {
        (first <= last).then_some(IdRange { first, last })
    }

    /// The ids, in order.
    pub fn ids(&self) -> std::ops::RangeInclusive<i64> {
        self.first..=self.last
    }

    /// How many ids.
    pub fn len(&self) -> u64 {
        (self.last - self.first + 1) as u64
    }

    /// Never empty; for clippy's `len` rule.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}..={}", self.first, self.last)
        }
    }
}

/// What a call on [`AppendQuorum`] settled: entries newly acknowledged, then entries newly
/// failed, both in id order and both continuing the ids settled before. At most one of the
/// two ranges follows the other (`acked.last + 1 == failed.first`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[must_use = "settled entries must be answered"]
pub struct Settled {
    /// Newly acknowledged: durable on `Aq` replicas, every earlier entry acknowledged.
    pub acked: Option<IdRange>,
    /// Newly failed: these can no longer reach `Aq` replicas (or follow one that cannot).
    pub failed: Option<IdRange>,
}

impl Settled {
    /// Whether nothing was settled.
    pub fn is_empty(&self) -> bool {
        self.acked.is_none() && self.failed.is_none()
    }
}

impl fmt::Display for Settled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.acked, self.failed) {
            (None, None) => f.write_str("nothing settled"),
            (Some(a), None) => write!(f, "acked {a}"),
            (None, Some(x)) => write!(f, "failed {x}"),
            (Some(a), Some(x)) => write!(f, "acked {a}, failed {x}"),
        }
    }
}

/// A misuse of [`AppendQuorum`] by its caller (a bug there, never a replica's doing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendQuorumError {
    /// Entry ids must be issued densely from 0.
    #[error("entry {entry_id} issued out of order: the next id is {expected}")]
    OutOfOrder {
        /// The id issued.
        entry_id: i64,
        /// The id expected.
        expected: i64,
    },
    /// A replica number outside `0..Wq`.
    #[error("replica {replica} is not in a write quorum of {wq}")]
    NoSuchReplica {
        /// The replica number.
        replica: usize,
        /// The write quorum.
        wq: usize,
    },
}

/// One segment's acknowledgement state: which entries were issued, how far each replica
/// has them durable, which replicas failed for good, and what was settled.
///
/// * An entry is **acknowledged** when at least `Aq` replicas report it durable and every
///   earlier entry is acknowledged: the last-add-confirmed (LAC) is the highest such id.
///   Because replica tails are prefixes, the LAC is the `Aq`-th largest tail (capped at the
///   last issued id), the quorum-commit rule of Raft.
/// * An entry **fails** when it can no longer reach `Aq`: fewer than `Aq` replicas either
///   hold it or are still live. Every later entry fails with it (a segment has no holes).
/// * Results are settled strictly in id order, each entry exactly once: a failure is
///   reported only after every earlier entry was acknowledged or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendQuorum {
    spec: QuorumSpec,
    /// Per replica: the highest id it reported durable (−1: none).
    tails: Vec<i64>,
    /// Per replica: failed for good (it reports nothing more).
    failed: Vec<bool>,
    /// The last id issued (−1: none).
    issued: i64,
    /// The last id settled, acknowledged or failed (−1: none).
    settled: i64,
    /// The last id acknowledged (−1: none).
    lac: i64,
}

impl AppendQuorum {
    /// A segment with nothing issued yet.
    pub fn new(spec: QuorumSpec) -> AppendQuorum {
        AppendQuorum {
            spec,
            tails: vec![-1; spec.wq],
            failed: vec![false; spec.wq],
            issued: -1,
            settled: -1,
            lac: -1,
        }
    }

    /// The quorum.
    pub fn spec(&self) -> QuorumSpec {
        self.spec
    }

    /// The last-add-confirmed entry (−1: none).
    pub fn lac(&self) -> i64 {
        self.lac
    }

    /// The last id issued (−1: none).
    pub fn last_issued(&self) -> i64 {
        self.issued
    }

    /// The last id settled (−1: none).
    pub fn last_settled(&self) -> i64 {
        self.settled
    }

    /// What replica `replica` reported durable (−1: nothing).
    pub fn tail(&self, replica: usize) -> i64 {
        self.tails.get(replica).copied().unwrap_or(-1)
    }

    /// Every replica's reported tail.
    pub fn tails(&self) -> &[i64] {
        &self.tails
    }

    /// Whether replica `replica` failed for good.
    pub fn is_failed(&self, replica: usize) -> bool {
        self.failed.get(replica).copied().unwrap_or(true)
    }

    /// Replicas that failed for good.
    pub fn failed_replicas(&self) -> usize {
        self.failed.iter().filter(|f| **f).count()
    }

    /// How many replicas report entry `entry_id` durable.
    pub fn ack_count(&self, entry_id: i64) -> usize {
        self.tails.iter().filter(|t| **t >= entry_id).count()
    }

    /// Whether entry `entry_id` can still reach `Aq`: enough replicas hold it or are live.
    pub fn reachable(&self, entry_id: i64) -> bool {
        let able = self
            .tails
            .iter()
            .zip(&self.failed)
            .filter(|(t, f)| **t >= entry_id || !**f)
            .count();
        able >= self.spec.aq
    }

    /// The first issued, unsettled id that can no longer be acknowledged, if any: entries
    /// from it on are doomed (and so, once issued, is every later one).
    pub fn doomed_from(&self) -> Option<i64> {
        let live = self.failed.iter().filter(|f| !**f).count();
        if live >= self.spec.aq {
            return None;
        }
        // Live replicas can still take anything; the rest of the ack quorum must come from
        // failed replicas that already hold the entry: the (Aq − live)-th largest of their
        // tails bounds what can still be acknowledged.
        let mut held: Vec<i64> = self
            .tails
            .iter()
            .zip(&self.failed)
            .filter(|(_, f)| **f)
            .map(|(t, _)| *t)
            .collect();
        held.sort_unstable_by(|a, b| b.cmp(a));
        let need = self.spec.aq - live;
        let bound = held.get(need - 1).copied().unwrap_or(-1);
        Some(bound.max(self.settled) + 1)
    }

    /// Issues the next entry (ids are dense from 0). When entries are already doomed the new
    /// one fails at once, in order.
    pub fn issue(&mut self, entry_id: i64) -> Result<Settled, AppendQuorumError> {
        let expected = self.issued + 1;
        if entry_id != expected {
            return Err(AppendQuorumError::OutOfOrder { entry_id, expected });
        }
        self.issued = entry_id;
        Ok(self.settle())
    }

    /// Replica `replica` reports every entry up to `through` durable. Reports are cumulative
    /// (a lower one than before changes nothing), and ids beyond the last issued one count
    /// only once issued. A failed replica's late report still counts: the data is there.
    pub fn synced(&mut self, replica: usize, through: i64) -> Result<Settled, AppendQuorumError> {
        let wq = self.spec.wq;
        let tail = self
            .tails
            .get_mut(replica)
            .ok_or(AppendQuorumError::NoSuchReplica { replica, wq })?;
        if through > *tail {
            *tail = through;
        }
        Ok(self.settle())
    }

    /// Replica `replica` failed for good: it will report nothing more for this segment.
    pub fn fail(&mut self, replica: usize) -> Result<Settled, AppendQuorumError> {
        let wq = self.spec.wq;
        *self
            .failed
            .get_mut(replica)
            .ok_or(AppendQuorumError::NoSuchReplica { replica, wq })? = true;
        Ok(self.settle())
    }

    /// The `Aq`-th largest tail, capped at the last issued id.
    fn quorum_tail(&self) -> i64 {
        let mut tails = self.tails.clone();
        tails.sort_unstable_by(|a, b| b.cmp(a));
        tails[self.spec.aq - 1].min(self.issued)
    }

    fn settle(&mut self) -> Settled {
        let mut out = Settled::default();
        let doomed = self.doomed_from();
        let mut ack_to = self.quorum_tail();
        if let Some(d) = doomed {
            ack_to = ack_to.min(d - 1);
        }
        if ack_to > self.settled {
            out.acked = IdRange::new(self.settled + 1, ack_to);
            self.settled = ack_to;
            self.lac = ack_to;
        }
        if let Some(d) = doomed
            && d == self.settled + 1
            && self.issued >= d
        {
            out.failed = IdRange::new(d, self.issued);
            self.settled = self.issued;
        }
        out
    }
}

/// Why recovery could not decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// Too few replicas answered the fence to bound what was acknowledged.
    #[error(
        "only {replies} of {wq} replicas answered the fence; {needed} are needed to bound what was acknowledged"
    )]
    TooFewFenceReplies {
        /// Replies received.
        replies: usize,
        /// Replies needed (`Wq − Aq + 1`).
        needed: usize,
        /// The write quorum.
        wq: usize,
    },
    /// Too few replicas finalized the segment at the target.
    #[error(
        "only {finalized} of {wq} replicas completed the segment at entry {target}; {needed} are needed"
    )]
    TooFewFinalized {
        /// The completion target.
        target: i64,
        /// Replicas that answered CompleteSegment.
        finalized: usize,
        /// Replicas needed (`Aq`).
        needed: usize,
        /// The write quorum.
        wq: usize,
    },
    /// No finalized replica serves the target (its holders did not finalize, or a replica
    /// lost data): publishing it would promise entries no reader can get. Recovery retries.
    #[error("no finalized replica serves entry {target} (the highest served is {highest})")]
    Uncovered {
        /// The completion target.
        target: i64,
        /// The highest tail a finalized replica serves.
        highest: i64,
    },
    /// The replies do not match the quorum (a caller bug).
    #[error("{got} replies for a write quorum of {wq}")]
    WrongReplyCount {
        /// Replies given.
        got: usize,
        /// The write quorum.
        wq: usize,
    },
}

/// The fence target recovery chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceTarget {
    /// The entry to complete the segment at (−1: empty).
    pub target: i64,
    /// Replicas that answered.
    pub replies: usize,
    /// Of those, replicas whose tail reaches the target.
    pub holders: usize,
}

impl fmt::Display for FenceTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "target {} ({} replied, {} holding it)",
            self.target, self.replies, self.holders
        )
    }
}

/// The fence target from one reply per replica: `Some(tail)` for an answer (−1 when the
/// replica holds nothing), `None` for a failed or missing one. See the module docs for the
/// rule and why it is safe.
pub fn fence_target(
    spec: QuorumSpec,
    replies: &[Option<i64>],
) -> Result<FenceTarget, RecoveryError> {
    if replies.len() != spec.wq {
        return Err(RecoveryError::WrongReplyCount {
            got: replies.len(),
            wq: spec.wq,
        });
    }
    let mut answered: Vec<i64> = replies.iter().flatten().map(|t| (*t).max(-1)).collect();
    let needed = spec.fence_replies_needed();
    if answered.len() < needed {
        return Err(RecoveryError::TooFewFenceReplies {
            replies: answered.len(),
            needed,
            wq: spec.wq,
        });
    }
    answered.sort_unstable();
    let target = answered[spec.slack()];
    Ok(FenceTarget {
        target,
        replies: answered.len(),
        holders: answered.iter().filter(|t| **t >= target).count(),
    })
}

/// The decision to publish a segment as Completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The segment's last entry id (the target).
    pub last_entry_id: i64,
    /// Replicas that finalized the segment (answered CompleteSegment).
    pub finalized: usize,
    /// Of those, replicas whose tail reaches the target.
    pub qualified: usize,
    /// Fewer than `Aq` replicas are known to hold the target (see the module docs).
    pub thin: bool,
}

impl fmt::Display for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "completed at {} ({} finalized, {} holding it{})",
            self.last_entry_id,
            self.finalized,
            self.qualified,
            if self.thin { ", thin tail" } else { "" }
        )
    }
}

/// Whether a segment may be published as Completed at `target`, given what each replica is
/// known to hold (`known`: a fence reply or the writer's own acknowledgement record; `None`
/// when unknown) and how each answered CompleteSegment(`target`) (`Some(its tail)` when it
/// finalized, `None` when it failed or stayed silent).
///
/// Publishes when at least `Aq` replicas finalized and some replica is known to hold
/// `target` (a target of −1, an empty segment, needs no holder). `qualified` counts the
/// finalized replicas that hold the target; below `Aq` the result is [thin](Completion::thin).
pub fn completion(
    spec: QuorumSpec,
    target: i64,
    known: &[Option<i64>],
    finalized: &[Option<i64>],
) -> Result<Completion, RecoveryError> {
    for got in [known.len(), finalized.len()] {
        if got != spec.wq {
            return Err(RecoveryError::WrongReplyCount { got, wq: spec.wq });
        }
    }
    let done = finalized.iter().flatten().count();
    if done < spec.aq {
        return Err(RecoveryError::TooFewFinalized {
            target,
            finalized: done,
            needed: spec.aq,
            wq: spec.wq,
        });
    }
    // Per replica, the most it is known to hold.
    let held: Vec<i64> = known
        .iter()
        .zip(finalized)
        .map(|(k, c)| k.unwrap_or(-1).max(c.unwrap_or(-1)))
        .collect();
    // A finalized replica serves what it answered CompleteSegment with (at most its footer's
    // LAC), whatever it stored: the segment may only be published at an entry one of them
    // serves. An entry held only by a replica that did not finalize (down meanwhile) would
    // be unreadable, since nobody completes that replica once the segment is published
    // (found by the simulation, seeds 1008 and 1047); recovery retries instead.
    let highest = finalized.iter().flatten().copied().max().unwrap_or(-1);
    if target >= 0 && highest < target {
        return Err(RecoveryError::Uncovered { target, highest });
    }
    let qualified = finalized
        .iter()
        .zip(&held)
        .filter(|(c, h)| c.is_some() && **h >= target)
        .count();
    let holders = held.iter().filter(|h| **h >= target).count();
    Ok(Completion {
        last_entry_id: target,
        finalized: done,
        qualified,
        thin: holders < spec.aq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorums_must_be_majorities() {
        assert_eq!(QuorumSpec::majority(3).unwrap().aq(), 2);
        assert_eq!(QuorumSpec::majority(5).unwrap().aq(), 3);
        assert_eq!(QuorumSpec::majority(1).unwrap(), QuorumSpec::ONE);
        assert!(QuorumSpec::new(4, 2).is_err());
        assert!(QuorumSpec::new(3, 4).is_err());
        assert!(QuorumSpec::new(0, 0).is_err());
        assert!(QuorumSpec::new(17, 9).is_err());
        assert_eq!(QuorumSpec::new(5, 3).unwrap().fence_replies_needed(), 3);
    }

    #[test]
    fn entries_are_acknowledged_in_order_at_the_ack_quorum() {
        let mut q = AppendQuorum::new(QuorumSpec::majority(3).unwrap());
        for id in 0..5 {
            assert!(q.issue(id).unwrap().is_empty());
        }
        assert!(q.issue(7).is_err());
        assert!(q.synced(0, 3).unwrap().is_empty());
        let s = q.synced(2, 1).unwrap();
        assert_eq!(s.acked, IdRange::new(0, 1));
        assert_eq!(q.lac(), 1);
        let s = q.synced(1, 9).unwrap();
        assert_eq!(s.acked, IdRange::new(2, 3), "the second largest tail");
        let s = q.synced(0, 9).unwrap();
        assert_eq!(s.acked, IdRange::new(4, 4), "capped at the last issued id");
        assert!(q.synced(9, 0).is_err());
    }

    #[test]
    fn failures_cascade_in_order_after_the_acknowledged_prefix() {
        let mut q = AppendQuorum::new(QuorumSpec::majority(3).unwrap());
        for id in 0..6 {
            let _ = q.issue(id).unwrap();
        }
        let _ = q.synced(0, 5).unwrap();
        assert!(
            q.fail(1).unwrap().is_empty(),
            "one failure leaves two able replicas"
        );
        let s = q.fail(2).unwrap();
        assert_eq!(s.failed, IdRange::new(0, 5));
        assert_eq!(q.lac(), -1);
        // Issued after the doom: fails at once.
        assert_eq!(q.issue(6).unwrap().failed, IdRange::new(6, 6));
    }

    #[test]
    fn the_fence_target_counts_minus_one_and_ignores_failures() {
        let spec = QuorumSpec::majority(3).unwrap();
        // Go #320: tails [0, 0, -1], the first replica's fence fails.
        let t = fence_target(spec, &[None, Some(0), Some(-1)]).unwrap();
        assert_eq!(t.target, 0);
        // Go #252: [0, -1, -1] all answer: entry 0 is on one replica only.
        assert_eq!(
            fence_target(spec, &[Some(0), Some(-1), Some(-1)])
                .unwrap()
                .target,
            -1
        );
        assert!(matches!(
            fence_target(spec, &[None, None, Some(4)]),
            Err(RecoveryError::TooFewFenceReplies { .. })
        ));
    }

    #[test]
    fn completion_needs_aq_finalized_and_a_holder() {
        let spec = QuorumSpec::majority(3).unwrap();
        // Go #327: tails [1, 0, 0], fence from the first two, the tail holder gone before
        // completion. Publishing at 1 would leave entry 1 to a replica nobody completes (a
        // reader waits for ever); publishing lower could drop an acknowledged entry. So it is
        // refused, and recovery retries.
        assert!(matches!(
            completion(
                spec,
                1,
                &[Some(1), Some(0), None],
                &[None, Some(0), Some(0)]
            ),
            Err(RecoveryError::Uncovered {
                target: 1,
                highest: 0
            })
        ));
        // With the holder finalized, the same completion is thin (one of Aq holds it).
        let c = completion(
            spec,
            1,
            &[Some(1), Some(0), None],
            &[Some(1), Some(0), None],
        )
        .unwrap();
        assert!(c.thin);
        assert_eq!(c.qualified, 1);
        assert!(completion(spec, 1, &[None; 3], &[None, Some(0), Some(0)]).is_err());
        assert!(completion(spec, 0, &[None; 3], &[Some(0), None, None]).is_err());
        let c = completion(spec, -1, &[None; 3], &[Some(-1), Some(-1), None]).unwrap();
        assert!(!c.thin);
    }
}
