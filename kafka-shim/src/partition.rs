//! One topic-partition: a log of the engine holding one Kafka record batch per entry.
//!
//! # Offsets
//!
//! Offsets are dense per partition. Each stored batch carries its base offset in its own
//! header (patched in before the write), so the log itself is the source of truth: opening a
//! partition scans its log once and rebuilds the in-memory index (entry id, base and last
//! offset, timestamps, size per batch), the high watermark and the idempotent producers'
//! sequence state. Offsets therefore survive restarts without any other bookkeeping.
//! Retention never removes the newest batch, so the next offset survives too.
//!
//! # Writes
//!
//! Offsets are assigned and writes issued under one lock, in arrival order; the writer
//! resolves them in that order. A batch becomes visible (the high watermark passes it) only
//! after its write and every write before it are durable, so nothing is readable before it
//! is acknowledged. A failed write poisons the partition: the broker reopens it from the log
//! on the next request, which fences the old writer and finds exactly what was made durable.
//!
//! # Errors a producer sees
//!
//! A produce is answered within its `timeout_ms`, as Kafka answers it:
//!
//! * storage failed under the write (a full disk, an IO error, the metadata store):
//!   `KAFKA_STORAGE_ERROR` (56), what a Kafka broker answers for a partition on a failed log
//!   directory; the batch is not acknowledged. Clients retry it (it is retriable in the Java
//!   client and librdkafka) until their delivery timeout;
//! * another writer took the log over, or the partition is closing: `NOT_LEADER_OR_FOLLOWER`
//!   (6), as for a leader that moved;
//! * nothing decided within `timeout_ms` (storage slow, not failed): `REQUEST_TIMED_OUT` (7),
//!   as for acks=all when the replicas do not answer in time. As in Kafka, the batch may still
//!   become durable afterwards; an idempotent producer's retry of it is then answered as a
//!   duplicate.
//!
//! A partition that failed on storage is reopened only after a pause that grows with each
//! attempt that fails again ([`ReopenBackoff`]); meanwhile its requests get the same error at
//! once. Once storage has room again the next reopen succeeds and writes go on: nothing needs
//! a restart, nothing acknowledged is lost, and no attempt leaves an empty segment behind
//! (the engine's writer gives a segment it never got an entry into up).
//!
//! # Reads
//!
//! Recent batches stay in memory (up to the tail-cache budget); older ones are read back
//! through a small pool of log readers kept at the position the last fetch ended.
//!
//! # Damaged blocks
//!
//! A damaged block does not keep a partition offline: the scan at open reports it (with its
//! entries and, once the next batch is read, its offsets), steps over it and goes on. A
//! fetch of one of its offsets gets `CORRUPT_MESSAGE`, which the Java consumer raises as
//! "Encountered corrupt message when fetching offset ..." (a consumer seeks past it to go
//! on); a fetch before it stops short of it. Once `woodpecker log repair --apply` replaced the
//! block by lost-entry markers, its offsets are a gap that consumers go past, as in a
//! compacted topic.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use telemetry::Stopwatch;
use tokio::sync::watch;
use wal::client::{Client, ClientError, LogHandle, LogReader, LogWriter};
use wal::clock::ClockRef;
use wal::message::{LogMessageId, WriteMessage};

use crate::batch::{self, BatchHeader, Marker};
use crate::error::KafkaCode;

/// How many batch sequence ranges are kept per producer for duplicate detection (Kafka: 5).
const PRODUCER_BATCHES: usize = 5;
/// Readers kept per partition for catch-up reads.
const READER_POOL: usize = 2;

/// One stored batch.
#[derive(Debug, Clone)]
struct Entry {
    base: i64,
    /// Last offset (inclusive).
    last: i64,
    first_ts: i64,
    max_ts: i64,
    size: usize,
    /// `None` while the write is in flight.
    id: Option<LogMessageId>,
    /// Cached bytes; dropped from old entries beyond the tail-cache budget.
    data: Option<Bytes>,
    /// For a transaction marker: what it ends, applied to the index once it is durable.
    ends: Option<TxnEnd>,
}

/// What a transaction marker ends on this partition: the producer's transaction that began
/// at `first` (`None`: the producer wrote nothing here in that transaction).
#[derive(Debug, Clone, Copy)]
struct TxnEnd {
    producer_id: i64,
    first: Option<i64>,
    marker: Marker,
}

/// An aborted transaction of this partition: the producer and its offsets from the first
/// batch to the abort marker. Fetches at `read_committed` list the ones they overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The producer.
    pub producer_id: i64,
    /// The offset of its first batch in the transaction.
    pub first_offset: i64,
    /// The offset of the abort marker.
    pub last_offset: i64,
}

#[derive(Debug, Default)]
struct Index {
    /// Acknowledged batches, oldest first.
    committed: VecDeque<Entry>,
    /// Issued batches waiting for their acknowledgement, in offset order.
    pending: VecDeque<Entry>,
    log_start: i64,
    high_watermark: i64,
    /// Bytes of `committed` still cached.
    cached: usize,
    /// Entries of `committed` before this index hold no data; from it on they all do (new
    /// entries arrive cached at the back, eviction drops from the front of the cached run).
    first_cached: usize,
    /// Bytes of `committed`.
    stored: u64,
    /// Open transactions: first offset -> producer id. The last stable offset is the
    /// smallest of these, or the high watermark when there is none.
    ongoing: std::collections::BTreeMap<i64, i64>,
    /// Aborted transactions, in marker order (so also by last offset).
    aborted: Vec<AbortedTxn>,
    /// Offsets of batches in damaged blocks, in order: fetched, they are CORRUPT_MESSAGE.
    holes: Vec<Hole>,
}

/// The offsets of batches a damaged block held (between the batches around it).
#[derive(Debug)]
struct Hole {
    first: i64,
    last: i64,
    /// Which entries of which block, and what is wrong.
    what: String,
    /// Whether a fetch of it was logged already (consumers retry such fetches: one line).
    warned: AtomicBool,
}

impl Index {
    /// Drops cached data from the oldest cached entries until `budget` holds, always keeping
    /// the newest batch. Amortised O(1) per entry.
    fn evict(&mut self, budget: usize) {
        let keep = self.committed.len().saturating_sub(1);
        while self.cached > budget && self.first_cached < keep {
            if let Some(d) = self.committed[self.first_cached].data.take() {
                self.cached -= d.len();
            }
            self.first_cached += 1;
        }
    }

    /// Removes the `count` oldest entries.
    fn pop_oldest(&mut self, count: usize) {
        for _ in 0..count {
            let Some(e) = self.committed.pop_front() else {
                break;
            };
            self.stored -= e.size as u64;
            if let Some(d) = e.data {
                self.cached -= d.len();
            }
            self.first_cached = self.first_cached.saturating_sub(1);
        }
    }

    /// The damaged block holding `offset`, if one does.
    fn hole_at(&self, offset: i64) -> Option<&Hole> {
        self.holes
            .iter()
            .find(|h| h.first <= offset && offset <= h.last)
    }

    fn position(&self, offset: i64) -> Option<usize> {
        let i = self.committed.partition_point(|e| e.last < offset);
        (i < self.committed.len()).then_some(i)
    }

    /// The last stable offset: no offset at or above it belongs to an open transaction.
    fn last_stable(&self) -> i64 {
        self.ongoing
            .keys()
            .next()
            .map_or(self.high_watermark, |&first| first.min(self.high_watermark))
    }

    /// Applies a durable marker: its transaction is no longer open, and an aborted one is
    /// remembered for `read_committed` fetches.
    fn end_txn(&mut self, end: TxnEnd, marker_offset: i64) {
        let Some(first) = end.first else { return };
        if self.ongoing.get(&first) == Some(&end.producer_id) {
            self.ongoing.remove(&first);
        }
        if end.marker == Marker::Abort {
            self.aborted.push(AbortedTxn {
                producer_id: end.producer_id,
                first_offset: first,
                last_offset: marker_offset,
            });
        }
    }

    /// The aborted transactions overlapping `[from, to)`, as Kafka lists them in a fetch.
    fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[start..]
            .iter()
            .filter(|a| a.first_offset < to)
            .copied()
            .collect()
    }
}

/// Sequence state of one idempotent producer on this partition.
#[derive(Debug, Clone)]
struct ProducerState {
    epoch: i16,
    /// (first sequence, last sequence, base offset, last offset), oldest first.
    batches: VecDeque<(i32, i32, i64, i64)>,
    /// The first offset of the producer's open transaction on this partition.
    txn_first: Option<i64>,
    /// The largest timestamp of its last batch.
    last_timestamp: i64,
    /// The coordinator epoch of the last marker written for it (-1: none).
    coordinator_epoch: i32,
}

impl Default for ProducerState {
    fn default() -> Self {
        ProducerState {
            epoch: 0,
            batches: VecDeque::new(),
            txn_first: None,
            last_timestamp: -1,
            coordinator_epoch: -1,
        }
    }
}

impl ProducerState {
    fn record(&mut self, h: &BatchHeader, base: i64) {
        if h.producer_epoch != self.epoch {
            self.epoch = h.producer_epoch;
            self.batches.clear();
        }
        self.batches.push_back((
            h.base_sequence,
            h.last_sequence(),
            base,
            base + h.offset_count() - 1,
        ));
        while self.batches.len() > PRODUCER_BATCHES {
            self.batches.pop_front();
        }
        self.last_timestamp = h.max_timestamp;
    }

    /// A marker for this producer: its open transaction ends, and a newer epoch (the
    /// coordinator fenced the producer) restarts its sequences.
    fn end_txn(&mut self, epoch: i16, coordinator_epoch: i32, timestamp: i64) -> Option<i64> {
        if epoch > self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
        self.coordinator_epoch = coordinator_epoch;
        self.last_timestamp = timestamp;
        self.txn_first.take()
    }
}

/// What DescribeProducers reports of one producer of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerView {
    /// The producer id.
    pub producer_id: i64,
    /// Its epoch.
    pub epoch: i16,
    /// The sequence of its last record (-1: none).
    pub last_sequence: i32,
    /// The largest timestamp of its last batch.
    pub last_timestamp: i64,
    /// The coordinator epoch of its last marker (-1: none).
    pub coordinator_epoch: i32,
    /// The first offset of its open transaction (-1: none).
    pub txn_start_offset: i64,
}

/// The coordinator epoch in a marker's value (bytes 2..6 of it), -1 when unreadable.
fn marker_coordinator_epoch(batch: &[u8]) -> i32 {
    // The one control record: length, attributes, timestamp delta, offset delta, key length
    // (4), the key, value length (6), then the value: version (2 bytes), coordinator epoch.
    let at = batch::HEADER_LEN + 1 + 1 + 1 + 1 + 1 + 4 + 1 + 2;
    batch
        .get(at..at + 4)
        .map_or(-1, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// What the sequence check decided for one batch.
enum SequenceCheck {
    /// Write it.
    New,
    /// Already written at these offsets: answer with them, write nothing.
    Duplicate { base: i64, last: i64 },
}

fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX { 0 } else { last + 1 }
}

fn check_sequence(
    producers: &HashMap<i64, ProducerState>,
    h: &BatchHeader,
) -> Result<SequenceCheck, KafkaCode> {
    if h.producer_id < 0 {
        return Ok(SequenceCheck::New);
    }
    if h.base_sequence < 0 {
        return Err(KafkaCode::InvalidRecord);
    }
    let Some(state) = producers.get(&h.producer_id) else {
        // A producer we hold no state for may only start at sequence 0; otherwise its
        // history was removed (retention) or never existed, and it must reset.
        return if h.base_sequence == 0 {
            Ok(SequenceCheck::New)
        } else {
            Err(KafkaCode::UnknownProducerId)
        };
    };
    if h.producer_epoch < state.epoch {
        return Err(KafkaCode::InvalidProducerEpoch);
    }
    if h.producer_epoch > state.epoch {
        return if h.base_sequence == 0 {
            Ok(SequenceCheck::New)
        } else {
            Err(KafkaCode::OutOfOrderSequenceNumber)
        };
    }
    let last_seq = h.last_sequence();
    if let Some(&(_, _, base, last)) = state
        .batches
        .iter()
        .find(|(first, l, _, _)| *first == h.base_sequence && *l == last_seq)
    {
        return Ok(SequenceCheck::Duplicate { base, last });
    }
    match state.batches.back() {
        Some(&(_, l, _, _)) if h.base_sequence == next_sequence(l) => Ok(SequenceCheck::New),
        None if h.base_sequence == 0 => Ok(SequenceCheck::New),
        _ => Err(KafkaCode::OutOfOrderSequenceNumber),
    }
}

struct WriteSide {
    writer: LogWriter,
    next_offset: i64,
    producers: HashMap<i64, ProducerState>,
}

/// Settings of a partition.
#[derive(Debug, Clone, Copy)]
pub struct PartitionSettings {
    /// Bytes of recent batches kept in memory for fetches at the tail.
    pub tail_cache_bytes: usize,
    /// The leader epoch written into batches and reported in Metadata.
    pub leader_epoch: i32,
}

/// Where a produce request's batches landed.
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    /// The base offset of the first batch.
    pub base_offset: i64,
    /// The last offset of the last batch.
    pub last_offset: i64,
}

/// One open topic-partition.
pub struct Partition {
    topic: String,
    index_no: i32,
    handle: LogHandle,
    settings: PartitionSettings,
    write: tokio::sync::Mutex<Option<WriteSide>>,
    index: Mutex<Index>,
    hwm: watch::Sender<i64>,
    failed: AtomicBool,
    /// The Kafka error code of the failure, once `failed` is set.
    failure: AtomicI16,
    /// Whether a write was acknowledged since the partition opened.
    acknowledged_any: AtomicBool,
    readers: tokio::sync::Mutex<Vec<LogReader>>,
    auditor: Mutex<Option<wal::client::AuditorHandle>>,
    /// Held while batches are removed from the front of the log (retention, DeleteRecords):
    /// two removals at once would pop the same index entries twice.
    truncating: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("topic", &self.topic)
            .field("partition", &self.index_no)
            .field("log", &self.handle.name())
            .finish()
    }
}

/// A failure of the engine under a partition.
#[derive(Debug, thiserror::Error)]
#[error("partition {topic}-{partition}: {source}")]
pub struct PartitionError {
    topic: String,
    partition: i32,
    #[source]
    source: ClientError,
}

/// How far the scan that rebuilds a partition's index has come: it logs a line every
/// [`ScanProgress::EVERY`] while it runs (a large partition takes a while after a start), and
/// its counts and rate end up in the "partition opened" line.
struct ScanProgress<'a> {
    topic: &'a str,
    partition: i32,
    started: Stopwatch,
    next: Duration,
    batches: u64,
    bytes: u64,
}

impl<'a> ScanProgress<'a> {
    const EVERY: Duration = Duration::from_secs(5);

    fn start(topic: &'a str, partition: i32) -> Self {
        ScanProgress {
            topic,
            partition,
            started: Stopwatch::start(),
            next: Self::EVERY,
            batches: 0,
            bytes: 0,
        }
    }

    /// Counts one stored batch of `size` bytes at `at`, the scan ending at `target`.
    fn batch(&mut self, size: usize, at: LogMessageId, target: LogMessageId) {
        self.batches += 1;
        self.bytes += size as u64;
        if !self.batches.is_multiple_of(256) || self.started.elapsed() < self.next {
            return;
        }
        self.next = self.started.elapsed() + Self::EVERY;
        tracing::info!(
            topic = self.topic,
            partition = self.partition,
            progress = %self,
            at = %at,
            until = %target,
            "scanning the partition's log to rebuild its index"
        );
    }
}

impl fmt::Display for ScanProgress<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.batches == 0 {
            return f.write_str("nothing (empty log)");
        }
        let secs = self.started.elapsed().as_secs_f64();
        let mib = self.bytes as f64 / (1024.0 * 1024.0);
        write!(
            f,
            "{} batches ({mib:.1} MiB) in {secs:.1} s ({:.0} batches/s, {:.1} MiB/s)",
            self.batches,
            self.batches as f64 / secs.max(1e-9),
            mib / secs.max(1e-9)
        )
    }
}

impl Partition {
    /// Opens the partition stored in `log_name`: takes over its writer (fencing any older
    /// one) and rebuilds the index from the log.
    pub async fn open(
        client: &Client,
        topic: &str,
        partition: i32,
        log_name: &str,
        settings: PartitionSettings,
    ) -> Result<Arc<Partition>, PartitionError> {
        let err = |source| PartitionError {
            topic: topic.to_string(),
            partition,
            source,
        };
        let handle = match client.open_log(log_name).await {
            Ok(h) => h,
            Err(ClientError::LogNotFound { .. }) => {
                match client.create_log(log_name).await {
                    Ok(()) | Err(ClientError::LogAlreadyExists { .. }) => {}
                    Err(e) => return Err(err(e)),
                }
                client.open_log(log_name).await.map_err(err)?
            }
            Err(e) => return Err(err(e)),
        };
        let writer = handle.open_writer().await.map_err(err)?;
        let segments = handle.segments().await.map_err(err)?;
        let target = segments
            .iter()
            .filter(|(_, m)| m.last_entry_id >= 0)
            .map(|(id, m)| LogMessageId::new(*id, m.last_entry_id))
            .max();
        let truncated = handle.truncation_point().await.map_err(err)?;
        let mut index = Index::default();
        let mut producers: HashMap<i64, ProducerState> = HashMap::new();
        let mut scan = ScanProgress::start(topic, partition);
        if let Some(target) = target
            && truncated.is_none_or(|t| t < target)
        {
            let mut reader = handle
                .open_reader(LogMessageId::EARLIEST, Some("kafka-open"))
                .await
                .map_err(err)?;
            let scanned = async {
                // A damaged block whose batches' offsets are known once the next batch is.
                let mut open_hole: Option<(String, LogMessageId)> = None;
                loop {
                    let msg = match reader.read_next().await {
                        Ok(msg) => msg,
                        Err(e) if e.code() == wal::logstore::code::CORRUPT => {
                            let Some(skipped) = reader.skip_damaged().await? else {
                                return Err(e);
                            };
                            let what = format!(
                                "entries {}..={} of log `{log_name}` ({}: {})",
                                skipped.first,
                                skipped.last,
                                skipped.block.position(),
                                skipped.block.detail
                            );
                            tracing::error!(topic, partition, damaged = %what,
                                "a damaged block: its batches cannot be read, and fetches of their offsets get CORRUPT_MESSAGE until `woodpecker log repair {log_name} --apply`");
                            if skipped.last >= target {
                                tracing::error!(topic, partition, damaged = %what,
                                    "the last batches of the log are in a damaged block: their offsets are unknown, and new batches take offsets after the last readable one");
                                return Ok(());
                            }
                            open_hole = Some((what, skipped.last));
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    if let Some(why) = msg.lost() {
                        // A repair put this marker where a damaged block's entry was: its
                        // batch is gone, and consumers go past its offsets as past those of a
                        // compacted topic.
                        tracing::info!(topic, partition, entry = %msg.id, why, "a batch lost to a damaged block (repaired) is left out");
                        if msg.id >= target {
                            return Ok(());
                        }
                        continue;
                    }
                    let not_kafka = |e: batch::BatchError| ClientError::ReadFailed {
                        log: log_name.to_string(),
                        reason: format!("entry {} is not a Kafka batch: {e}", msg.id),
                    };
                    let h = batch::read_header(&msg.payload).map_err(not_kafka)?;
                    let entry = Entry {
                        base: h.base_offset,
                        last: h.base_offset + h.offset_count() - 1,
                        first_ts: h.base_timestamp,
                        max_ts: h.max_timestamp,
                        size: msg.payload.len(),
                        id: Some(msg.id),
                        data: Some(msg.payload.clone()),
                        ends: None,
                    };
                    if h.is_control() {
                        // A marker ends the producer's open transaction here.
                        if let Some(marker) = batch::read_marker(&msg.payload).map_err(not_kafka)? {
                            let state = producers.entry(h.producer_id).or_default();
                            let coordinator_epoch = marker_coordinator_epoch(&msg.payload);
                            let first =
                                state.end_txn(h.producer_epoch, coordinator_epoch, h.max_timestamp);
                            index.end_txn(
                                TxnEnd {
                                    producer_id: h.producer_id,
                                    first,
                                    marker,
                                },
                                h.base_offset,
                            );
                        }
                    } else if h.producer_id >= 0 {
                        let state = producers.entry(h.producer_id).or_default();
                        state.record(&h, h.base_offset);
                        if h.is_transactional() && state.txn_first.is_none() {
                            state.txn_first = Some(h.base_offset);
                            index.ongoing.insert(h.base_offset, h.producer_id);
                        }
                    }
                    scan.batch(entry.size, msg.id, target);
                    if let Some((what, _)) = open_hole.take() {
                        let first = index.committed.back().map_or(0, |e| e.last + 1);
                        if first < entry.base {
                            index.holes.push(Hole {
                                first,
                                last: entry.base - 1,
                                what,
                                warned: AtomicBool::new(false),
                            });
                        }
                    }
                    index.cached += entry.size;
                    index.stored += entry.size as u64;
                    index.committed.push_back(entry);
                    index.evict(settings.tail_cache_bytes);
                    if msg.id >= target {
                        return Ok::<_, ClientError>(());
                    }
                }
            }
            .await;
            let closed = reader.close().await;
            scanned.map_err(err)?;
            closed.map_err(err)?;
            for h in &index.holes {
                tracing::error!(topic, partition, first_offset = h.first, last_offset = h.last, damaged = %h.what,
                    "offsets of a damaged block: fetches get CORRUPT_MESSAGE; consumers can seek past them");
            }
        }
        index.log_start = index.committed.front().map_or(0, |e| e.base);
        index.high_watermark = index.committed.back().map_or(0, |e| e.last + 1);
        let next_offset = index.high_watermark;
        let (hwm, _) = watch::channel(next_offset);
        tracing::info!(
            topic,
            partition,
            log = log_name,
            log_start = index.log_start,
            high_watermark = next_offset,
            batches = index.committed.len(),
            scanned = %scan,
            "partition opened"
        );
        let auditor = handle.start_auditor();
        Ok(Arc::new(Partition {
            topic: topic.to_string(),
            index_no: partition,
            handle,
            settings,
            write: tokio::sync::Mutex::new(Some(WriteSide {
                writer,
                next_offset,
                producers,
            })),
            index: Mutex::new(index),
            hwm,
            failed: AtomicBool::new(false),
            failure: AtomicI16::new(KafkaCode::NotLeaderOrFollower.code()),
            acknowledged_any: AtomicBool::new(false),
            readers: tokio::sync::Mutex::new(Vec::new()),
            auditor: Mutex::new(Some(auditor)),
            truncating: tokio::sync::Mutex::new(()),
        }))
    }

    fn lock_index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a write failed; the partition must be reopened.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The Kafka error its requests get once it failed (see the module docs).
    pub fn failure_code(&self) -> KafkaCode {
        if self.failure.load(Ordering::Acquire) == KafkaCode::KafkaStorageError.code() {
            KafkaCode::KafkaStorageError
        } else {
            KafkaCode::NotLeaderOrFollower
        }
    }

    /// Whether a write was acknowledged since the partition opened.
    pub fn acknowledged_any(&self) -> bool {
        self.acknowledged_any.load(Ordering::Acquire)
    }

    fn fail(&self, why: &ClientError) {
        // Set before `failed`, which readers of the code check first.
        if !self.is_failed() {
            self.failure
                .store(write_failure_code(why).code(), Ordering::Release);
        }
        if !self.failed.swap(true, Ordering::AcqRel) {
            tracing::warn!(topic = %self.topic, partition = self.index_no, error = %why, "write failed; the partition will be reopened from its log");
        }
        // Wake everyone waiting on the high watermark.
        self.hwm.send_modify(|_| {});
    }

    /// (log start offset, high watermark).
    pub fn offsets(&self) -> (i64, i64) {
        let ix = self.lock_index();
        (ix.log_start, ix.high_watermark)
    }

    /// The last stable offset: the high watermark, or the first offset of the oldest open
    /// transaction when that is lower.
    pub fn last_stable_offset(&self) -> i64 {
        self.lock_index().last_stable()
    }

    /// The aborted transactions overlapping `[from, to)`.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.lock_index().aborted_between(from, to)
    }

    /// The producers this partition holds state for (DescribeProducers).
    pub async fn producers(&self) -> Vec<ProducerView> {
        let guard = self.write.lock().await;
        let Some(side) = guard.as_ref() else {
            return Vec::new();
        };
        let mut out: Vec<ProducerView> = side
            .producers
            .iter()
            .map(|(&producer_id, s)| ProducerView {
                producer_id,
                epoch: s.epoch,
                last_sequence: s.batches.back().map_or(-1, |b| b.1),
                last_timestamp: s.last_timestamp,
                coordinator_epoch: s.coordinator_epoch,
                txn_start_offset: s.txn_first.unwrap_or(-1),
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
    }

    /// Writes a transaction marker for `producer_id` (as a coordinator's WriteTxnMarkers
    /// has a leader do) and waits until it is durable. Its transaction on this partition
    /// is closed from then on: the last stable offset passes it, and an aborted one is
    /// listed to `read_committed` fetches. Returns the marker's offset.
    pub async fn write_marker(
        self: &Arc<Self>,
        producer_id: i64,
        producer_epoch: i16,
        marker: Marker,
        coordinator_epoch: i32,
        timestamp: i64,
    ) -> Result<i64, KafkaCode> {
        let offset = {
            if self.is_failed() {
                return Err(KafkaCode::NotLeaderOrFollower);
            }
            let mut guard = self.write.lock().await;
            let Some(side) = guard.as_mut() else {
                return Err(KafkaCode::NotLeaderOrFollower);
            };
            let state = side.producers.entry(producer_id).or_default();
            if producer_epoch < state.epoch {
                // A marker of an older epoch than the producer's data here: Kafka's leader
                // refuses it the same way.
                return Err(KafkaCode::InvalidProducerEpoch);
            }
            let first = state.end_txn(producer_epoch, coordinator_epoch, timestamp);
            let offset = side.next_offset;
            side.next_offset += 1;
            let bytes = batch::with_base_offset(
                &batch::marker_batch(
                    marker,
                    producer_id,
                    producer_epoch,
                    coordinator_epoch,
                    timestamp,
                ),
                offset,
                self.settings.leader_epoch,
            );
            self.lock_index().pending.push_back(Entry {
                base: offset,
                last: offset,
                first_ts: timestamp,
                max_ts: timestamp,
                size: bytes.len(),
                id: None,
                data: Some(bytes.clone()),
                ends: Some(TxnEnd {
                    producer_id,
                    first,
                    marker,
                }),
            });
            let me = self.clone();
            side.writer
                .write_then(WriteMessage::new(bytes), move |r| match r {
                    Ok(id) => me.acknowledged(offset, id),
                    Err(e) => me.fail(&e),
                });
            offset
        };
        self.wait_visible(offset).await?;
        Ok(offset)
    }

    /// Bytes stored (acknowledged batches still retained).
    pub fn stored_bytes(&self) -> u64 {
        self.lock_index().stored
    }

    /// A receiver of high-watermark changes.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.hwm.subscribe()
    }

    /// Appends validated batches: checks producer sequences, assigns offsets and issues the
    /// writes in this order, then waits until every batch is durable and visible.
    /// Duplicates of recent idempotent batches are answered with their original offsets.
    pub async fn append(
        self: &Arc<Self>,
        batches: Vec<(BatchHeader, Bytes)>,
    ) -> Result<Appended, KafkaCode> {
        let (first, last) = self.issue(batches).await?;
        self.wait_visible(last).await?;
        Ok(Appended {
            base_offset: first,
            last_offset: last,
        })
    }

    /// The ordered part of [`append`](Self::append): returns the first base offset and the
    /// last offset to wait for with [`wait_visible`](Self::wait_visible).
    pub async fn issue(
        self: &Arc<Self>,
        batches: Vec<(BatchHeader, Bytes)>,
    ) -> Result<(i64, i64), KafkaCode> {
        if self.is_failed() {
            return Err(self.failure_code());
        }
        let mut guard = self.write.lock().await;
        let Some(side) = guard.as_mut() else {
            return Err(KafkaCode::NotLeaderOrFollower);
        };
        // Decide every batch first, on a scratch copy of the producers involved, so that a
        // refused batch leaves nothing written and later batches of the request are checked
        // against earlier ones.
        let mut producers: HashMap<i64, ProducerState> = batches
            .iter()
            .filter_map(|(h, _)| {
                let state = side.producers.get(&h.producer_id)?;
                Some((h.producer_id, state.clone()))
            })
            .collect();
        let mut next = side.next_offset;
        let mut plan = Vec::with_capacity(batches.len());
        for (h, data) in batches {
            match check_sequence(&producers, &h)? {
                SequenceCheck::Duplicate { base, last } => {
                    plan.push((h, data, base, last, false, false));
                }
                SequenceCheck::New => {
                    let mut starts_txn = false;
                    if h.producer_id >= 0 {
                        let state = producers.entry(h.producer_id).or_default();
                        state.record(&h, next);
                        if h.is_transactional() && state.txn_first.is_none() {
                            state.txn_first = Some(next);
                            starts_txn = true;
                        }
                    }
                    let last = next + h.offset_count() - 1;
                    plan.push((h, data, next, last, true, starts_txn));
                    next = last + 1;
                }
            }
        }
        side.producers.extend(producers);
        side.next_offset = next;
        let mut first = None;
        let mut last = -1;
        for (h, data, base, end, new, starts_txn) in plan {
            first.get_or_insert(base);
            last = last.max(end);
            if !new {
                continue;
            }
            let bytes = batch::with_base_offset(&data, base, self.settings.leader_epoch);
            // Pending before the write is issued: its acknowledgement may come at once.
            {
                let mut ix = self.lock_index();
                if starts_txn {
                    // Open from the moment its offset is given: the last stable offset
                    // stays below it until the marker is durable.
                    ix.ongoing.insert(base, h.producer_id);
                }
                ix.pending.push_back(Entry {
                    base,
                    last: end,
                    first_ts: h.base_timestamp,
                    max_ts: h.max_timestamp,
                    size: bytes.len(),
                    id: None,
                    data: Some(bytes.clone()),
                    ends: None,
                });
            }
            // Told on the engine's task that made the batch durable, with no task of its own.
            let me = self.clone();
            side.writer
                .write_then(WriteMessage::new(bytes), move |r| match r {
                    Ok(id) => me.acknowledged(base, id),
                    Err(e) => me.fail(&e),
                });
        }
        Ok((first.unwrap_or(last), last))
    }

    fn acknowledged(&self, base: i64, id: LogMessageId) {
        let hwm = {
            let mut ix = self.lock_index();
            if let Some(e) = ix.pending.iter_mut().find(|e| e.base == base) {
                e.id = Some(id);
            }
            let mut moved = false;
            while ix.pending.front().is_some_and(|e| e.id.is_some()) {
                let Some(e) = ix.pending.pop_front() else {
                    break;
                };
                if let Some(end) = e.ends {
                    ix.end_txn(end, e.base);
                }
                ix.high_watermark = e.last + 1;
                ix.cached += e.size;
                ix.stored += e.size as u64;
                ix.committed.push_back(e);
                moved = true;
            }
            if !moved {
                return;
            }
            self.acknowledged_any.store(true, Ordering::Release);
            ix.evict(self.settings.tail_cache_bytes);
            ix.high_watermark
        };
        self.hwm.send_replace(hwm);
    }

    /// Waits until `last` is below the high watermark (durable and visible).
    pub async fn wait_visible(&self, last: i64) -> Result<(), KafkaCode> {
        let mut rx = self.hwm.subscribe();
        loop {
            if *rx.borrow_and_update() > last {
                return Ok(());
            }
            if self.is_failed() {
                return Err(self.failure_code());
            }
            if rx.changed().await.is_err() {
                return Err(KafkaCode::NotLeaderOrFollower);
            }
        }
    }

    /// [`wait_visible`](Self::wait_visible) within a produce request's `timeout_ms`:
    /// `REQUEST_TIMED_OUT` when neither the acknowledgement nor a failure came in time. A
    /// timeout of zero or less waits for the outcome.
    pub async fn wait_acknowledged(&self, last: i64, timeout_ms: i32) -> Result<(), KafkaCode> {
        if timeout_ms <= 0 {
            return self.wait_visible(last).await;
        }
        let limit = Duration::from_millis(timeout_ms.unsigned_abs().into());
        tokio::time::timeout(limit, self.wait_visible(last))
            .await
            .unwrap_or(Err(KafkaCode::RequestTimedOut))
    }

    /// Batches from the one holding `offset`, up to `max_bytes` in all; with `whole_first`,
    /// the first batch even when it alone is larger (KIP-74: the first batch of a fetch
    /// response is returned whole so that a consumer always makes progress).
    /// `Ok(None)` when `offset` is out of range; an empty list at the high watermark.
    ///
    /// With `committed_only` (`read_committed`), nothing at or above the last stable offset
    /// is returned.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        whole_first: bool,
        committed_only: bool,
    ) -> Result<Option<Vec<Bytes>>, KafkaCode> {
        let wanted: Vec<(LogMessageId, Option<Bytes>)> = {
            let ix = self.lock_index();
            if offset < ix.log_start || offset > ix.high_watermark {
                return Ok(None);
            }
            let limit = if committed_only {
                ix.last_stable()
            } else {
                ix.high_watermark
            };
            if offset >= limit {
                return Ok(Some(Vec::new()));
            }
            if let Some(hole) = ix.hole_at(offset) {
                if !hole.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(topic = %self.topic, partition = self.index_no, offset, damaged = %hole.what,
                        "fetch of an offset of a damaged block: CORRUPT_MESSAGE (said once per block)");
                }
                return Err(KafkaCode::CorruptMessage);
            }
            let Some(start) = ix.position(offset) else {
                return Ok(Some(Vec::new()));
            };
            let mut out = Vec::new();
            let mut bytes = 0usize;
            for e in ix.committed.iter().skip(start) {
                if e.last >= limit {
                    break;
                }
                if bytes + e.size > max_bytes && !(out.is_empty() && whole_first) {
                    break;
                }
                // A damaged block's offsets come next: the next fetch starts there and fails.
                if !out.is_empty() && ix.hole_at(e.base - 1).is_some() {
                    break;
                }
                bytes += e.size;
                // Committed entries always carry their id.
                let Some(id) = e.id else { break };
                out.push((id, e.data.clone()));
            }
            out
        };
        let mut result = Vec::with_capacity(wanted.len());
        let mut i = 0;
        while i < wanted.len() {
            if let Some(d) = &wanted[i].1 {
                result.push(d.clone());
                i += 1;
                continue;
            }
            // A run of uncached entries: read them with one reader.
            let run_end = wanted[i..]
                .iter()
                .position(|(_, d)| d.is_some())
                .map_or(wanted.len(), |p| i + p);
            let ids: Vec<LogMessageId> = wanted[i..run_end].iter().map(|(id, _)| *id).collect();
            match self.read_stored(&ids).await {
                Ok(mut data) => result.append(&mut data),
                Err(e) => {
                    tracing::warn!(topic = %self.topic, partition = self.index_no, error = %e, "reading stored batches failed");
                    if result.is_empty() {
                        return Err(read_failure_code(&e));
                    }
                    return Ok(Some(result));
                }
            }
            i = run_end;
        }
        Ok(Some(result))
    }

    async fn read_stored(&self, ids: &[LogMessageId]) -> Result<Vec<Bytes>, ClientError> {
        let Some(&first) = ids.first() else {
            return Ok(Vec::new());
        };
        let pooled = {
            let mut pool = self.readers.lock().await;
            pool.iter()
                .position(|r| r.position() == first)
                .map(|i| pool.swap_remove(i))
        };
        let mut reader = match pooled {
            Some(r) => r,
            None => self.handle.open_reader(first, Some("kafka-fetch")).await?,
        };
        let mut out = Vec::with_capacity(ids.len());
        let mut outcome = Ok(());
        for &id in ids {
            match reader.read_next().await {
                Ok(msg) if msg.id == id => out.push(msg.payload),
                Ok(msg) => {
                    outcome = Err(ClientError::ReadFailed {
                        log: self.handle.name().to_string(),
                        reason: format!("expected entry {id}, read {}", msg.id),
                    });
                    break;
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        if outcome.is_ok() {
            let evicted = {
                let mut pool = self.readers.lock().await;
                pool.push(reader);
                if pool.len() > READER_POOL {
                    Some(pool.remove(0))
                } else {
                    None
                }
            };
            if let Some(old) = evicted {
                let _ = old.close().await;
            }
        } else {
            let _ = reader.close().await;
        }
        outcome.map(|()| out)
    }

    /// The bytes of one committed batch (cached, or read back from the log).
    async fn batch_bytes(
        &self,
        id: LogMessageId,
        cached: Option<Bytes>,
    ) -> Result<Bytes, KafkaCode> {
        if let Some(b) = cached {
            return Ok(b);
        }
        let mut read = self.read_stored(&[id]).await.map_err(|e| {
            tracing::warn!(topic = %self.topic, partition = self.index_no, error = %e, "reading a stored batch failed");
            read_failure_code(&e)
        })?;
        read.pop().ok_or(KafkaCode::KafkaStorageError)
    }

    /// The first record whose timestamp is at least `ts`: (offset, timestamp), as Kafka's
    /// ListOffsets answers. The batch index narrows it to one batch (the first whose max
    /// timestamp reaches `ts`); that batch's records are then read.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, KafkaCode> {
        let found = {
            let ix = self.lock_index();
            ix.committed
                .iter()
                .find(|e| e.max_ts >= ts)
                .map(|e| (e.base, e.first_ts, e.max_ts, e.id, e.data.clone()))
        };
        let Some((base, first_ts, max_ts, id, data)) = found else {
            return Ok(None);
        };
        if first_ts >= ts {
            return Ok(Some((base, first_ts)));
        }
        let Some(id) = id else { return Ok(None) };
        let bytes = self.batch_bytes(id, data).await?;
        match batch::find_record(&bytes, |_, t| t >= ts) {
            Ok(Some(found)) => Ok(Some(found)),
            // The header promised a record at or after `ts`; fall back to the batch level.
            Ok(None) => Ok(Some((base, max_ts))),
            Err(e) => {
                tracing::warn!(topic = %self.topic, partition = self.index_no, error = %e, "a stored batch does not decode");
                Err(KafkaCode::CorruptMessage)
            }
        }
    }

    /// The record with the largest timestamp (the first of them): (offset, timestamp).
    pub async fn max_timestamp(&self) -> Result<Option<(i64, i64)>, KafkaCode> {
        let found = {
            let ix = self.lock_index();
            // The first batch holding the maximum.
            let max = ix.committed.iter().map(|e| e.max_ts).max();
            max.and_then(|m| {
                ix.committed
                    .iter()
                    .find(|e| e.max_ts == m)
                    .map(|e| (e.last, e.max_ts, e.id, e.data.clone()))
            })
        };
        let Some((last, max_ts, id, data)) = found else {
            return Ok(None);
        };
        let Some(id) = id else { return Ok(None) };
        let bytes = self.batch_bytes(id, data).await?;
        match batch::find_record(&bytes, |_, t| t == max_ts) {
            Ok(Some(found)) => Ok(Some(found)),
            Ok(None) => Ok(Some((last, max_ts))),
            Err(e) => {
                tracing::warn!(topic = %self.topic, partition = self.index_no, error = %e, "a stored batch does not decode");
                Err(KafkaCode::CorruptMessage)
            }
        }
    }

    /// Applies retention: removes the oldest batches older than `retention_ms` (by their
    /// max timestamp) or beyond `retention_bytes`, always keeping the newest batch.
    /// Negative limits are off. Returns the number of batches removed.
    pub async fn apply_retention(
        &self,
        now_ms: i64,
        retention_ms: i64,
        retention_bytes: i64,
    ) -> Result<usize, ClientError> {
        let _truncating = self.truncating.lock().await;
        let (count, cut) = {
            let ix = self.lock_index();
            let mut stored = ix.stored;
            let mut count = 0;
            let keep_from = ix.committed.len().saturating_sub(1);
            for e in ix.committed.iter().take(keep_from) {
                let too_old = retention_ms >= 0 && e.max_ts < now_ms.saturating_sub(retention_ms);
                let too_big = retention_bytes >= 0 && stored > retention_bytes as u64;
                if !(too_old || too_big) {
                    break;
                }
                stored -= e.size as u64;
                count += 1;
            }
            if count == 0 {
                return Ok(0);
            }
            (count, ix.committed[count - 1].id)
        };
        let Some(cut) = cut else { return Ok(0) };
        self.handle.truncate(cut).await?;
        let mut ix = self.lock_index();
        ix.pop_oldest(count);
        // Never below a start DeleteRecords set inside the batch now at the front.
        let front = ix.committed.front().map_or(ix.high_watermark, |e| e.base);
        ix.log_start = ix.log_start.max(front);
        let log_start = ix.log_start;
        ix.aborted.retain(|a| a.last_offset >= log_start);
        tracing::info!(topic = %self.topic, partition = self.index_no, removed = count, log_start = ix.log_start, "retention applied");
        Ok(count)
    }

    /// Raises the log start offset to `offset` (at most the high watermark; never lowers
    /// it), as Kafka's DeleteRecords does, and returns the start now in force. Fetches below
    /// it are OFFSET_OUT_OF_RANGE from then on. The batches wholly below it are removed
    /// from the log, except the newest batch: its offsets are what a reopen rebuilds the
    /// high watermark from, so the start itself must be kept elsewhere to survive a
    /// restart (the broker keeps it in the metadata store and raises it again on open).
    pub async fn advance_log_start(&self, offset: i64) -> Result<i64, ClientError> {
        let _truncating = self.truncating.lock().await;
        let (count, cut, start) = {
            let mut ix = self.lock_index();
            let wanted = offset.min(ix.high_watermark);
            if wanted > ix.log_start {
                ix.log_start = wanted;
                tracing::info!(topic = %self.topic, partition = self.index_no, log_start = wanted, "log start offset raised");
            }
            let start = ix.log_start;
            ix.aborted.retain(|a| a.last_offset >= start);
            let keep_from = ix.committed.len().saturating_sub(1);
            let count = ix
                .committed
                .iter()
                .take(keep_from)
                .take_while(|e| e.last < start)
                .count();
            if count == 0 {
                return Ok(start);
            }
            (count, ix.committed[count - 1].id, start)
        };
        let Some(cut) = cut else { return Ok(start) };
        self.handle.truncate(cut).await?;
        self.lock_index().pop_oldest(count);
        Ok(start)
    }

    /// Closes the writer (flushing what is in flight), the readers and the auditor.
    pub async fn close(&self) {
        let side = self.write.lock().await.take();
        if let Some(side) = side
            && let Err(e) = side.writer.close().await
        {
            tracing::warn!(topic = %self.topic, partition = self.index_no, error = %e, "closing the writer failed");
        }
        let readers: Vec<LogReader> = std::mem::take(&mut *self.readers.lock().await);
        for r in readers {
            let _ = r.close().await;
        }
        let auditor = self
            .auditor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(a) = auditor {
            a.stop().await;
        }
        self.failed.store(true, Ordering::Release);
        self.hwm.send_modify(|_| {});
    }
}

/// The Kafka error for a failed write (see the module docs): the writer lost the log to
/// another writer, or closed, is a moved leader; anything else failed in storage.
fn write_failure_code(e: &ClientError) -> KafkaCode {
    match e {
        ClientError::WriterLost { .. } | ClientError::WriterClosed { .. } => {
            KafkaCode::NotLeaderOrFollower
        }
        _ => KafkaCode::KafkaStorageError,
    }
}

/// The Kafka error for a stored batch that could not be read: a damaged block is
/// `CORRUPT_MESSAGE` (the Java consumer throws "Encountered corrupt message when fetching
/// offset ..." instead of retrying for ever), any other failure `KAFKA_STORAGE_ERROR`.
fn read_failure_code(e: &ClientError) -> KafkaCode {
    if e.code() == wal::logstore::code::CORRUPT {
        KafkaCode::CorruptMessage
    } else {
        KafkaCode::KafkaStorageError
    }
}

/// Spaces out the attempts to open a partition while its storage keeps failing: without it a
/// full disk makes every produce fence, scan and write the log again (each attempt also
/// costing a metadata write or two). A failed open, or a reopened partition that failed on
/// storage before acknowledging a write, waits twice as long as the attempt before it, from
/// [`FIRST`](Self::FIRST) up to [`MAX`](Self::MAX); meanwhile the partition's requests get
/// the failure's code at once. A partition that acknowledged writes before it failed starts
/// over at `FIRST`.
#[derive(Debug)]
pub struct ReopenBackoff {
    failing: Mutex<HashMap<(String, i32), Failing>>,
    clock: ClockRef,
}

impl Default for ReopenBackoff {
    fn default() -> Self {
        ReopenBackoff::new(wal::clock::SystemClock::shared())
    }
}

#[derive(Debug, Clone, Copy)]
struct Failing {
    attempts: u32,
    retry_at: std::time::Instant,
    code: KafkaCode,
}

impl ReopenBackoff {
    /// The pause after the first failed attempt.
    pub const FIRST: Duration = Duration::from_millis(100);
    /// The longest pause: how long a partition may stay failed once storage has room again.
    pub const MAX: Duration = Duration::from_secs(2);

    /// No partition failing; pauses are measured on `clock`.
    pub fn new(clock: ClockRef) -> Self {
        ReopenBackoff {
            failing: Mutex::default(),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i32), Failing>> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(code)` while `key` waits for its next attempt.
    pub fn check(&self, key: &(String, i32)) -> Result<(), KafkaCode> {
        match self.lock().get(key) {
            Some(f) if self.clock.now() < f.retry_at => Err(f.code),
            _ => Ok(()),
        }
    }

    /// An attempt to open `key` failed with `code`.
    pub fn open_failed(&self, key: &(String, i32), code: KafkaCode) {
        self.record(key, code, false);
    }

    /// `old`, the open partition of `key`, failed and is being replaced. A moved leader
    /// reopens at once; a storage failure waits.
    pub fn partition_failed(&self, key: &(String, i32), old: &Partition) {
        match old.failure_code() {
            KafkaCode::KafkaStorageError => {
                self.record(key, KafkaCode::KafkaStorageError, old.acknowledged_any())
            }
            _ => {
                self.lock().remove(key);
            }
        }
    }

    fn record(&self, key: &(String, i32), code: KafkaCode, start_over: bool) {
        let mut failing = self.lock();
        let attempts = match failing.get(key) {
            Some(f) if !start_over => f.attempts.saturating_add(1),
            _ => 1,
        };
        let pause = Self::FIRST
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(16))
            .min(Self::MAX);
        tracing::debug!(topic = %key.0, partition = key.1, attempts, ?pause, "partition failing; next attempt after a pause");
        failing.insert(
            key.clone(),
            Failing {
                attempts,
                retry_at: self.clock.now() + pause,
                code,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32) -> BatchHeader {
        batch::read_header(&batch::test_support::batch(count, pid, epoch, seq)).unwrap()
    }

    fn entry(base: i64, size: usize) -> Entry {
        Entry {
            base,
            last: base,
            first_ts: 0,
            max_ts: 0,
            size,
            id: Some(LogMessageId::new(0, base)),
            data: Some(Bytes::from(vec![0u8; size])),
            ends: None,
        }
    }

    #[test]
    fn the_tail_cache_keeps_the_newest_batches_within_budget() {
        let mut ix = Index::default();
        for i in 0..100 {
            let e = entry(i, 10);
            ix.cached += e.size;
            ix.stored += e.size as u64;
            ix.committed.push_back(e);
            ix.evict(35);
            assert!(ix.cached <= 35 || ix.committed.len() == 1);
        }
        // The cached entries are exactly the newest ones.
        let cached: Vec<i64> = ix
            .committed
            .iter()
            .filter(|e| e.data.is_some())
            .map(|e| e.base)
            .collect();
        assert_eq!(cached, vec![97, 98, 99]);
        assert_eq!(ix.first_cached, 97);
        ix.pop_oldest(98);
        assert_eq!(ix.first_cached, 0);
        assert_eq!(ix.committed.len(), 2);
        assert_eq!(ix.cached, 20);
        assert_eq!(ix.stored, 20);
        // A budget smaller than one batch still keeps the newest.
        ix.evict(0);
        assert!(ix.committed.back().is_some_and(|e| e.data.is_some()));
        assert_eq!(ix.cached, 10);
    }

    #[test]
    fn sequence_rules() {
        let mut producers = HashMap::new();
        let first = header(7, 0, 0, 3);
        assert!(matches!(
            check_sequence(&producers, &first),
            Ok(SequenceCheck::New)
        ));
        assert_eq!(
            check_sequence(&producers, &header(7, 0, 5, 1)).err(),
            Some(KafkaCode::UnknownProducerId)
        );
        producers
            .entry(7)
            .or_insert_with(ProducerState::default)
            .record(&first, 0);
        // The next batch continues at 3.
        assert!(matches!(
            check_sequence(&producers, &header(7, 0, 3, 2)),
            Ok(SequenceCheck::New)
        ));
        // A retry of the first one is a duplicate with its original offsets.
        assert!(matches!(
            check_sequence(&producers, &first),
            Ok(SequenceCheck::Duplicate { base: 0, last: 2 })
        ));
        // A gap.
        assert_eq!(
            check_sequence(&producers, &header(7, 0, 9, 1)).err(),
            Some(KafkaCode::OutOfOrderSequenceNumber)
        );
        // A fenced epoch and a new epoch.
        producers.get_mut(&7).unwrap().epoch = 2;
        assert_eq!(
            check_sequence(&producers, &header(7, 1, 3, 1)).err(),
            Some(KafkaCode::InvalidProducerEpoch)
        );
        assert!(matches!(
            check_sequence(&producers, &header(7, 3, 0, 1)),
            Ok(SequenceCheck::New)
        ));
        assert_eq!(
            check_sequence(&producers, &header(7, 3, 1, 1)).err(),
            Some(KafkaCode::OutOfOrderSequenceNumber)
        );
        // Non-idempotent batches are never checked.
        assert!(matches!(
            check_sequence(&producers, &header(-1, -1, -1, 1)),
            Ok(SequenceCheck::New)
        ));
    }
}
