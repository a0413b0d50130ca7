//! [`LogReader`]: the read path of one log (spec §2.2, §2.4, §6.3).
//!
//! A reader keeps a position (the id of the next message to return) and a cache of one
//! batch of entries of its current segment. When the cache is empty it reads the segment
//! metadata of the log (one range, as Go does), then a batch of up to
//! [`ClientSettings::read_batch_entries`](super::ClientSettings::read_batch_entries) entries
//! from the segment's replicas (GetBatchEntriesAdv; with several replicas, from the one that
//! served the last batch, failing over to the others).
//!
//! # Moving between segments
//!
//! * A Completed or Sealed segment is read up to its metadata `lastEntryId` and never beyond
//!   it (after a takeover that is the fenced last id), then the reader moves to
//!   (segment + 1, 0). So does a storage EOF (footer or fence present).
//! * A segment in the Truncated state is skipped, and so is a segment missing from metadata
//!   whose id is at or below the log's truncation point (its metadata was collected).
//! * Any other missing segment is a segment not created yet: the reader waits for it.
//!
//! # Waiting at the tail
//!
//! When nothing follows the position, the reader asks the segment's in-process LogStore (a
//! quorum of one in this process) to
//! [wait for the entry](crate::logstore::LogStore::wait_for_entry) while sleeping the poll
//! interval ([`ClientSettings::read_poll_interval`](super::ClientSettings::read_poll_interval),
//! 200 ms) on the client's clock, whichever ends first. A writer in the same process
//! therefore wakes the reader as soon as its entry is durable; a writer in another process
//! is seen at the next poll (storage and metadata are read again).
//!
//! # Damaged blocks
//!
//! A read that reaches a block that does not verify returns the entries before it; the read
//! that starts in it fails with the LogStore's corruption error (8007), naming the segment,
//! the block, its offset, what is wrong and which entries it held, every time it is asked
//! (never a hang, never a silent skip). [`LogReader::skip_damaged`] moves past those entries
//! when the caller decides to, and says which they were.
//!
//! # Reader record
//!
//! Opening registers a `ReaderTempInfo` named `<log>-r-<unixNano>` (or
//! `<log>-r-<base>-<unixNano>`) with the open position. The recent read position is updated
//! when the reader returns a message of a higher segment than the last recorded one, or when
//! the last update is 30 s old. [`LogReader::close`] deletes the record; dropping the reader
//! without closing it lets the record's lease expire.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use proto::meta::{SegmentMetadata, SegmentState};

use super::Shared;
use super::error::{ClientError, Result};
use super::segment::Replicas;
use crate::logstore::{DamagedBlock, ReadEnd, WaitOutcome};
use crate::message::{LogMessage, LogMessageId};
use crate::meta::ReaderRegistration;

/// How old the recorded read position may get before the next read refreshes it (Go: 30 s).
pub const READER_INFO_UPDATE_INTERVAL: Duration = Duration::from_secs(30);

/// Distinguishes readers opened within the same clock millisecond.
static NAME_SEQ: AtomicU64 = AtomicU64::new(0);

/// The reader name of spec §2.2: `<log>-r-<unixNano>` or `<log>-r-<base>-<unixNano>`. The
/// clock has millisecond resolution, so the sub-millisecond digits carry a process-wide
/// sequence number that keeps names of one process distinct.
pub(crate) fn reader_name(log: &str, base: Option<&str>, now_millis: u64) -> String {
    let seq = NAME_SEQ.fetch_add(1, Ordering::Relaxed) % 1_000_000;
    let nanos = now_millis.saturating_mul(1_000_000).saturating_add(seq);
    match base {
        Some(base) if !base.is_empty() => format!("{log}-r-{base}-{nanos}"),
        _ => format!("{log}-r-{nanos}"),
    }
}

/// Entries [`LogReader::skip_damaged`] stepped over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEntries {
    /// The first entry skipped (the reader's position).
    pub first: LogMessageId,
    /// The last entry skipped.
    pub last: LogMessageId,
    /// The damaged block that held them: where it is and what is wrong.
    pub block: DamagedBlock,
}

fn is_finished(meta: &SegmentMetadata) -> bool {
    meta.state == SegmentState::Completed as i32 || meta.state == SegmentState::Sealed as i32
}

/// The reader of one log. Messages come back in id order without gaps within a segment.
///
/// # Start positions
///
/// * [`LogMessageId::EARLIEST`]: the first message of the log; on a truncated log, the
///   first message after the truncation point (Go `adjustPendingReadPointIfTruncated`).
/// * [`LogMessageId::LATEST`]: the next message to be written: (last segment, its last
///   durable entry + 1) when the last segment is Active, else (last segment + 1, 0).
/// * Any other id: that message. **Unlike Go**, which honours any explicit position, an
///   explicit position at or before the truncation point is refused with
///   [`ClientError::Truncated`] (code 1504, not retriable), which names the truncation
///   point; open at [`LogMessageId::EARLIEST`] (or just after the point) instead.
pub struct LogReader {
    log: String,
    log_id: i64,
    name: String,
    shared: Arc<Shared>,
    registration: Option<ReaderRegistration>,
    /// The id of the next message to return.
    next: LogMessageId,
    /// Entries of `next.segment_id` starting at `next.entry_id`.
    cache: VecDeque<(i64, Bytes)>,
    /// The segment and time of the last recorded read position.
    recorded_segment: i64,
    recorded_at_millis: u64,
    /// The replicas of the segment being read.
    replicas: Option<Arc<Replicas>>,
}

impl fmt::Debug for LogReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogReader")
            .field("log", &self.log)
            .field("name", &self.name)
            .field("next", &self.next)
            .field("cached", &self.cache.len())
            .finish()
    }
}

impl LogReader {
    pub(crate) async fn open(
        log: String,
        log_id: i64,
        shared: Arc<Shared>,
        from: LogMessageId,
        base_name: Option<&str>,
    ) -> Result<LogReader> {
        let log_meta = shared.meta.get_log_meta(&log).await?.value;
        let truncated = (log_meta.truncated_segment_id >= 0)
            .then(|| LogMessageId::new(log_meta.truncated_segment_id, log_meta.truncated_entry_id));
        let start = if from == LogMessageId::LATEST {
            resolve_latest(&log, log_id, &shared).await?
        } else if from == LogMessageId::EARLIEST {
            truncated.map_or(from, LogMessageId::next_in_segment)
        } else {
            if from.segment_id < 0 || from.entry_id < 0 {
                return Err(ClientError::ReadFailed {
                    log,
                    reason: format!("{from} is not a valid start position"),
                });
            }
            if let Some(point) = truncated
                && from <= point
            {
                return Err(ClientError::Truncated {
                    log,
                    requested: from,
                    truncated_at: point,
                });
            }
            from
        };
        let now = shared.clock.now_millis();
        let name = reader_name(&log, base_name, now);
        let registration = shared
            .meta
            .register_reader(log_id, &name, start.segment_id, start.entry_id)
            .await?;
        tracing::debug!(log = %log, reader = %name, %start, "reader opened");
        Ok(LogReader {
            log,
            log_id,
            name,
            shared,
            registration: Some(registration),
            next: start,
            cache: VecDeque::new(),
            recorded_segment: start.segment_id,
            recorded_at_millis: now,
            replicas: None,
        })
    }

    /// The reader name (also the key of its `ReaderTempInfo`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log name.
    pub fn log_name(&self) -> &str {
        &self.log
    }

    /// The id of the next message [`read_next`](Self::read_next) returns, as far as known
    /// (the reader may still skip to a later segment).
    pub fn position(&self) -> LogMessageId {
        self.next
    }

    /// The next message; waits for one at the tail of the log (see the module docs).
    /// Cancel-safe: dropping the future loses no message.
    ///
    /// Errors: a stored entry that does not decode (8100, naming its id), a Completed
    /// segment whose data ends before its metadata `lastEntryId` (1504), metadata and
    /// storage failures (their own codes; retriable ones may be retried on this reader).
    pub async fn read_next(&mut self) -> Result<LogMessage> {
        loop {
            if let Some(&(entry_id, _)) = self.cache.front() {
                let id = LogMessageId::new(self.next.segment_id, entry_id);
                // Recorded before the entry leaves the cache: this is the one await between
                // taking an entry and returning it, and a future dropped here must not lose
                // the entry (recording twice is harmless).
                self.record_position(id).await;
                let Some((_, data)) = self.cache.pop_front() else {
                    continue;
                };
                self.next = id.next_in_segment();
                let msg = LogMessage::decode(id, data)?;
                return Ok(msg);
            }
            self.fill().await?;
        }
    }

    /// After [`read_next`](Self::read_next) failed on a damaged block (a
    /// [`LogStoreError::Corrupt`](crate::logstore::LogStoreError::Corrupt), 8007), moves the
    /// reader past the entries that block held and says which they were; the next read goes
    /// on after them. `Ok(None)`, moving nothing, when no damaged block holds the reader's
    /// position (the failure was something else), or when nothing says where the damaged
    /// entries end (damage at the end of a segment still being written). Skipping gives up
    /// entries: it is never done implicitly, and callers report what they skipped. Storage
    /// reads the whole segment to find the block.
    pub async fn skip_damaged(&mut self) -> Result<Option<SkippedEntries>> {
        let seg = self.next.segment_id;
        let at = self.next.entry_id;
        let meta = self
            .shared
            .meta
            .get_segment_metadata(&self.log, seg)
            .await?
            .value;
        let damaged = Replicas::of(&self.shared, &self.log, self.log_id, &meta)?
            .damaged_blocks()
            .await?;
        let Some(mut block) = damaged
            .into_iter()
            .find(|d| d.first_entry_id <= at && at <= d.last_entry_id)
        else {
            return Ok(None);
        };
        if !block.end_known() {
            // Only the metadata of a finished segment can say where it ends.
            if !is_finished(&meta) || meta.last_entry_id < at {
                return Ok(None);
            }
            block.last_entry_id = meta.last_entry_id;
        }
        self.cache.clear();
        let last = LogMessageId::new(seg, block.last_entry_id);
        self.next = last.next_in_segment();
        tracing::debug!(log = %self.log, reader = %self.name, first = %LogMessageId::new(seg, at), %last,
            position = %block.position(), error = %block.detail, "reader moved past the entries of a damaged block");
        Ok(Some(SkippedEntries {
            first: LogMessageId::new(seg, at),
            last,
            block,
        }))
    }

    /// Closes the reader and deletes its `ReaderTempInfo`.
    pub async fn close(mut self) -> Result<()> {
        if let Some(reg) = self.registration.take() {
            reg.close().await?;
        }
        tracing::debug!(log = %self.log, reader = %self.name, "reader closed");
        Ok(())
    }

    /// Records the read position when the reader reached a higher segment or the last
    /// record is old. A failure is logged, never returned: the record is advisory.
    async fn record_position(&mut self, id: LogMessageId) {
        let now = self.shared.clock.now_millis();
        let stale = now.saturating_sub(self.recorded_at_millis)
            >= u64::try_from(READER_INFO_UPDATE_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if id.segment_id <= self.recorded_segment && !stale {
            return;
        }
        let Some(reg) = &self.registration else {
            return;
        };
        match reg.update(id.segment_id, id.entry_id).await {
            Ok(()) => {
                self.recorded_segment = id.segment_id;
                self.recorded_at_millis = now;
            }
            Err(e) => {
                tracing::warn!(log = %self.log, reader = %self.name, error = %e, "cannot update reader record");
            }
        }
    }

    /// Fills the cache, moving to later segments and waiting as needed. Returns once the
    /// cache holds at least one entry (or an error).
    async fn fill(&mut self) -> Result<()> {
        loop {
            let segments = self.shared.meta.get_all_segment_metadata(&self.log).await?;
            let seg_id = self.next.segment_id;
            let Some(seg) = segments.get(&seg_id).map(|v| &v.value) else {
                if self.missing_segment_truncated(seg_id).await? {
                    tracing::debug!(log = %self.log, segment = seg_id, "skipping collected segment");
                    self.next = LogMessageId::new(seg_id + 1, 0);
                    continue;
                }
                // Not created yet: only metadata tells, so poll.
                self.shared
                    .clock
                    .sleep(self.shared.settings.read_poll_interval)
                    .await;
                continue;
            };
            if seg.state == SegmentState::Truncated as i32 {
                self.next = LogMessageId::new(seg_id + 1, 0);
                continue;
            }
            let finished = is_finished(seg);
            let last = seg.last_entry_id;
            if finished && self.next.entry_id > last {
                self.next = LogMessageId::new(seg_id + 1, 0);
                continue;
            }
            let mut max_entries = self.shared.settings.read_batch_entries.max(1);
            if finished {
                let left = usize::try_from(last - self.next.entry_id + 1).unwrap_or(usize::MAX);
                max_entries = max_entries.min(left);
            }
            let replicas = self.replicas_of(seg)?;
            let batch = replicas
                .read_batch(
                    self.next.entry_id,
                    max_entries,
                    self.shared.settings.read_batch_bytes,
                    finished.then_some(last),
                    seg.state == SegmentState::Sealed as i32,
                )
                .await?;
            let mut entries = batch.entries;
            if finished {
                entries.retain(|(id, _)| *id <= last);
            }
            if let Some((first, _)) = entries.first()
                && *first != self.next.entry_id
            {
                return Err(ClientError::ReadFailed {
                    log: self.log.clone(),
                    reason: format!(
                        "segment {seg_id}: asked for entry {} but got entry {first}",
                        self.next.entry_id
                    ),
                });
            }
            if !entries.is_empty() {
                self.cache.extend(entries);
                return Ok(());
            }
            match batch.end {
                ReadEnd::Eof if finished => {
                    return Err(ClientError::ReadFailed {
                        log: self.log.clone(),
                        reason: format!(
                            "segment {seg_id} ends before entry {} but its metadata says its last entry is {last}",
                            self.next.entry_id
                        ),
                    });
                }
                ReadEnd::Eof => {
                    // Fenced or completed in storage; the metadata will follow.
                    self.next = LogMessageId::new(seg_id + 1, 0);
                }
                ReadEnd::NotYet | ReadEnd::Tail | ReadEnd::More => {
                    self.wait(&replicas, self.next.entry_id).await;
                }
            }
        }
    }

    /// Whether a segment missing from metadata was collected after truncation (skip it)
    /// rather than not created yet (wait for it).
    /// A later segment in metadata does not prove this one was collected: without a
    /// truncation point covering it, it is waited for (as Go's `findNextReadableSegment`).
    async fn missing_segment_truncated(&self, seg_id: i64) -> Result<bool> {
        let meta = self.shared.meta.get_log_meta(&self.log).await?.value;
        Ok(meta.truncated_segment_id >= 0 && seg_id <= meta.truncated_segment_id)
    }

    /// The replicas of `seg` (kept while the reader stays in that segment).
    fn replicas_of(&mut self, seg: &SegmentMetadata) -> Result<Arc<Replicas>> {
        if let Some(r) = &self.replicas
            && r.segment_id() == seg.seg_no
        {
            return Ok(r.clone());
        }
        let r = Arc::new(Replicas::of(&self.shared, &self.log, self.log_id, seg)?);
        self.replicas = Some(r.clone());
        Ok(r)
    }

    /// Waits for `entry_id` of the segment of `replicas`: until this process's writer makes
    /// it durable or seals the segment, or one poll interval passed.
    async fn wait(&self, replicas: &Replicas, entry_id: i64) {
        let poll = self
            .shared
            .clock
            .sleep(self.shared.settings.read_poll_interval);
        tokio::pin!(poll);
        let waited = replicas.wait_for_entry(entry_id);
        tokio::select! {
            outcome = waited => match outcome {
                WaitOutcome::Durable(_) | WaitOutcome::Sealed => {}
                WaitOutcome::NoWriter => poll.await,
            },
            () = &mut poll => {}
        }
    }
}

/// (last segment, last durable entry + 1) when the last segment is Active, else
/// (last segment + 1, 0); (0, 0) for a log without segments.
async fn resolve_latest(log: &str, log_id: i64, shared: &Shared) -> Result<LogMessageId> {
    let segments = shared.meta.get_all_segment_metadata(log).await?;
    let Some((&id, seg)) = segments.iter().next_back() else {
        return Ok(LogMessageId::EARLIEST);
    };
    if seg.value.state == SegmentState::Active as i32 {
        let last = Replicas::of(shared, log, log_id, &seg.value)?
            .last_entry_id()
            .await?;
        Ok(LogMessageId::new(id, last + 1))
    } else {
        Ok(LogMessageId::new(id + 1, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nanos(name: &str) -> u64 {
        name.rsplit('-').next().unwrap().parse().unwrap()
    }

    #[test]
    fn reader_names_follow_go() {
        let a = reader_name("log", None, 5);
        assert!(a.starts_with("log-r-"), "{a}");
        assert_eq!(nanos(&a) / 1_000_000, 5, "{a}");
        let b = reader_name("log", Some("milvus"), 5);
        assert!(b.starts_with("log-r-milvus-"), "{b}");
        assert_eq!(nanos(&b) / 1_000_000, 5, "{b}");
        assert_ne!(reader_name("log", None, 5), reader_name("log", None, 5));
        let c = reader_name("log", Some(""), 1);
        assert!(c.starts_with("log-r-") && !c.starts_with("log-r--"), "{c}");
    }
}
