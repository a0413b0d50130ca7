//! The invariants, checked on a run's history (pure; no IO):
//!
//! 1. every acknowledged entry is read back, at the id its acknowledgement named, exactly
//!    once (durable, exactly once, not moved);
//! 2. what is read comes in strictly increasing id order, and each writer's acknowledgements
//!    come in the order it wrote (in order);
//! 3. nothing is read that no writer sent (no invention), and no payload is read twice, even
//!    one that was never acknowledged;
//! 4. no segment holds acknowledged entries of two writers (fencing).
//!
//! CRC integrity is checked by the engine on every read (a block that does not verify is an
//! error, never data), so a corrupt entry shows up as a failed read, which the run reports.
//! Hangs (bounded simulated time) and permanent errors are the run's to report.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use wal::message::LogMessageId;

/// One acknowledged write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Which writer (0: the first, 1: the one that fenced it, 2: the recovery writer).
    pub writer: u8,
    /// The payload (unique per attempt).
    pub payload: String,
    /// Where the acknowledgement says it is.
    pub id: LogMessageId,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Acknowledged writes, in acknowledgement order per writer.
    pub acks: Vec<Ack>,
    /// Every payload any writer sent (acknowledged or not).
    pub sent: BTreeSet<String>,
    /// Entries read back from the start of the log, in read order.
    pub reads: Vec<(LogMessageId, String)>,
    /// Permanent errors the current writer met under faults, with their cause: the writer
    /// (0 or 1) and the error.
    pub reopens: Vec<(u8, ReopenCause, String)>,
}

/// Why a writer met a permanent error (and was reopened), in the few classes the checker and
/// the soak tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReopenCause {
    /// Completing a segment fell short of the quorum for longer than the writer's patience
    /// (a majority of the segment's nodes down or cut off that long): legitimate.
    CompletionShort,
    /// The segment's metadata was another writer's (a stale writer, mid-roll when fenced,
    /// created the next segment first): legitimate, the store decides who keeps the log.
    MetadataConflict,
    /// The metadata store stayed unavailable through the writer's retries. The simulation's
    /// metadata faults are drawn per call, so a writer that retries for its patience always
    /// gets through: spurious.
    MetadataUnavailable,
    /// A LogStore refused the segment as not writable (recovery mode, closed, stopping, …)
    /// where no newer writer fenced it: spurious.
    NotWritable,
    /// Any other permanent error: spurious.
    Other,
}

impl ReopenCause {
    /// The cause of a permanent error a writer met.
    pub fn of(e: &wal::client::ClientError) -> ReopenCause {
        let wal::client::ClientError::WriterLost { reason, .. } = e else {
            return ReopenCause::Other;
        };
        if reason.starts_with("completing segment") && reason.contains("quorum failed") {
            ReopenCause::CompletionShort
        } else if reason.contains("created by another writer")
            || reason.contains("changed under this writer")
        {
            ReopenCause::MetadataConflict
        } else if reason.contains("metadata store") {
            ReopenCause::MetadataUnavailable
        } else if reason.contains("not writable") {
            ReopenCause::NotWritable
        } else {
            ReopenCause::Other
        }
    }

    /// Whether a correct engine may meet it under the simulation's faults.
    pub fn legitimate(self) -> bool {
        matches!(
            self,
            ReopenCause::CompletionShort | ReopenCause::MetadataConflict
        )
    }
}

impl fmt::Display for ReopenCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReopenCause::CompletionShort => {
                "completion short of the quorum past the writer's patience"
            }
            ReopenCause::MetadataConflict => "metadata conflict (another writer's segment)",
            ReopenCause::MetadataUnavailable => "metadata store unavailable past the patience",
            ReopenCause::NotWritable => "segment refused as not writable",
            ReopenCause::Other => "another permanent error",
        })
    }
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// An acknowledged entry was not read back.
    Lost {
        /// The payload.
        payload: String,
        /// Its acknowledged id.
        id: LogMessageId,
    },
    /// An acknowledged entry was read at another id.
    Moved {
        /// The payload.
        payload: String,
        /// Acknowledged id.
        acked: LogMessageId,
        /// Where it was read.
        read: LogMessageId,
    },
    /// A payload was read more than once.
    Duplicated {
        /// The payload.
        payload: String,
        /// How many times.
        times: usize,
    },
    /// Reads went backwards or repeated an id.
    OutOfOrder {
        /// The earlier read.
        before: LogMessageId,
        /// The read after it.
        after: LogMessageId,
    },
    /// A writer's acknowledgements went backwards.
    AckOutOfOrder {
        /// The writer.
        writer: u8,
        /// The earlier acknowledgement.
        before: LogMessageId,
        /// The later one.
        after: LogMessageId,
    },
    /// Something was read that nobody sent.
    Invented {
        /// The payload.
        payload: String,
        /// Where.
        id: LogMessageId,
    },
    /// Two writers were acknowledged in one segment.
    TwoWriters {
        /// The segment.
        segment: i64,
        /// The writers.
        writers: Vec<u8>,
    },
    /// The current writer met a permanent error a correct engine rides out under these
    /// faults ([`ReopenCause::legitimate`]).
    SpuriousPermanentError {
        /// The writer.
        writer: u8,
        /// The error.
        error: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Lost { payload, id } => {
                write!(
                    f,
                    "acknowledged entry {payload} at {id:?} was not read back"
                )
            }
            Violation::Moved {
                payload,
                acked,
                read,
            } => write!(
                f,
                "entry {payload} acknowledged at {acked:?} was read at {read:?}"
            ),
            Violation::Duplicated { payload, times } => {
                write!(f, "entry {payload} was read {times} times")
            }
            Violation::OutOfOrder { before, after } => {
                write!(f, "read {after:?} after {before:?}")
            }
            Violation::AckOutOfOrder {
                writer,
                before,
                after,
            } => write!(
                f,
                "writer {writer} was acknowledged {after:?} after {before:?}"
            ),
            Violation::Invented { payload, id } => {
                write!(f, "read {payload} at {id:?}, which nobody sent")
            }
            Violation::TwoWriters { segment, writers } => write!(
                f,
                "segment {segment} has acknowledged entries of writers {writers:?}"
            ),
            Violation::SpuriousPermanentError { writer, error } => write!(
                f,
                "writer {writer} met a permanent error it should have ridden out: {error}"
            ),
        }
    }
}

/// Every broken invariant of `h` (empty: the run was correct).
pub fn check(h: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut read_at: HashMap<&str, Vec<LogMessageId>> = HashMap::new();
    let mut prev: Option<LogMessageId> = None;
    for (id, payload) in &h.reads {
        if let Some(p) = prev
            && *id <= p
        {
            out.push(Violation::OutOfOrder {
                before: p,
                after: *id,
            });
        }
        prev = Some(*id);
        if !h.sent.contains(payload) {
            out.push(Violation::Invented {
                payload: payload.clone(),
                id: *id,
            });
        }
        read_at.entry(payload.as_str()).or_default().push(*id);
    }
    let mut dup: Vec<(&str, usize)> = read_at
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(p, ids)| (*p, ids.len()))
        .collect();
    dup.sort_unstable();
    for (payload, times) in dup {
        out.push(Violation::Duplicated {
            payload: payload.to_string(),
            times,
        });
    }
    let mut last_ack: HashMap<u8, LogMessageId> = HashMap::new();
    let mut writers_of: BTreeMap<i64, BTreeSet<u8>> = BTreeMap::new();
    for a in &h.acks {
        if let Some(before) = last_ack.insert(a.writer, a.id)
            && a.id <= before
        {
            out.push(Violation::AckOutOfOrder {
                writer: a.writer,
                before,
                after: a.id,
            });
        }
        writers_of
            .entry(a.id.segment_id)
            .or_default()
            .insert(a.writer);
        match read_at.get(a.payload.as_str()).map(Vec::as_slice) {
            None | Some([]) => out.push(Violation::Lost {
                payload: a.payload.clone(),
                id: a.id,
            }),
            Some(ids) => {
                if let Some(other) = ids.iter().find(|r| **r != a.id) {
                    out.push(Violation::Moved {
                        payload: a.payload.clone(),
                        acked: a.id,
                        read: *other,
                    });
                }
            }
        }
    }
    for (segment, writers) in writers_of {
        if writers.len() > 1 {
            out.push(Violation::TwoWriters {
                segment,
                writers: writers.into_iter().collect(),
            });
        }
    }
    for (writer, cause, error) in &h.reopens {
        if !cause.legitimate() {
            out.push(Violation::SpuriousPermanentError {
                writer: *writer,
                error: error.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: i64, e: i64) -> LogMessageId {
        LogMessageId::new(s, e)
    }

    fn ack(writer: u8, p: &str, s: i64, e: i64) -> Ack {
        Ack {
            writer,
            payload: p.into(),
            id: id(s, e),
        }
    }

    fn history(acks: Vec<Ack>, sent: &[&str], reads: &[(i64, i64, &str)]) -> History {
        History {
            acks,
            sent: sent.iter().map(|s| s.to_string()).collect(),
            reads: reads
                .iter()
                .map(|(s, e, p)| (id(*s, *e), p.to_string()))
                .collect(),
            reopens: Vec::new(),
        }
    }

    #[test]
    fn a_clean_history_passes_and_unacknowledged_entries_may_appear_once() {
        let h = history(
            vec![ack(0, "a", 0, 0), ack(0, "c", 0, 2), ack(1, "d", 1, 0)],
            &["a", "b", "c", "d", "e"],
            &[(0, 0, "a"), (0, 1, "b"), (0, 2, "c"), (1, 0, "d")],
        );
        assert_eq!(check(&h), vec![]);
    }

    #[test]
    fn each_broken_invariant_is_named() {
        let h = history(
            vec![
                ack(0, "a", 0, 0),
                ack(0, "b", 0, 1),
                ack(0, "c", 0, 0),
                ack(1, "d", 0, 3),
            ],
            &["a", "b", "c", "d"],
            &[
                (0, 0, "a"),
                (0, 2, "c"),
                (0, 2, "x"),
                (0, 3, "d"),
                (0, 4, "d"),
            ],
        );
        let v = check(&h);
        assert!(v.contains(&Violation::Lost {
            payload: "b".into(),
            id: id(0, 1)
        }));
        assert!(v.contains(&Violation::Moved {
            payload: "c".into(),
            acked: id(0, 0),
            read: id(0, 2)
        }));
        assert!(v.contains(&Violation::OutOfOrder {
            before: id(0, 2),
            after: id(0, 2)
        }));
        assert!(v.contains(&Violation::Invented {
            payload: "x".into(),
            id: id(0, 2)
        }));
        assert!(v.contains(&Violation::Duplicated {
            payload: "d".into(),
            times: 2
        }));
        assert!(v.contains(&Violation::AckOutOfOrder {
            writer: 0,
            before: id(0, 1),
            after: id(0, 0)
        }));
        assert!(v.contains(&Violation::TwoWriters {
            segment: 0,
            writers: vec![0, 1]
        }));
    }

    #[test]
    fn only_legitimate_reopens_pass() {
        let lost = |reason: &str| wal::client::ClientError::WriterLost {
            log: "sim".into(),
            reason: reason.into(),
        };
        let cases = [
            (
                "completing segment 3 failed: quorum failed for segment 3 of log `sim`: only 1 of 3",
                ReopenCause::CompletionShort,
            ),
            (
                "segment 4 was created by another writer: segment 4 of log `sim` already exists",
                ReopenCause::MetadataConflict,
            ),
            (
                "segment 2 metadata changed under this writer: metadata at `k` changed",
                ReopenCause::MetadataConflict,
            ),
            (
                "completing segment 0 failed: metadata store at sim-metadata unavailable: x",
                ReopenCause::MetadataUnavailable,
            ),
            (
                "segment 0 is not writable: writer of segment log 1 segment 0 is in recovery mode",
                ReopenCause::NotWritable,
            ),
        ];
        let mut h = history(vec![], &[], &[]);
        for (reason, cause) in cases {
            let e = lost(reason);
            assert_eq!(ReopenCause::of(&e), cause, "{reason}");
            h.reopens.push((0, cause, e.to_string()));
        }
        let other = wal::client::ClientError::WriterClosed { log: "sim".into() };
        assert_eq!(ReopenCause::of(&other), ReopenCause::Other);
        h.reopens.push((1, ReopenCause::Other, other.to_string()));
        let spurious: Vec<u8> = check(&h)
            .iter()
            .filter_map(|v| match v {
                Violation::SpuriousPermanentError { writer, .. } => Some(*writer),
                _ => None,
            })
            .collect();
        assert_eq!(spurious, [0, 0, 1]);
    }
}
