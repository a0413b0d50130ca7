//! [`LogWriter`]: the write path of one log in embedded mode (spec §2.3, §6.1, §6.4).
//!
//! Writes are taken in the order they were issued, entry ids assigned densely
//! (`entryId = last assigned + 1`) and each append handed to the segment's LogStore processor.
//! The common case is taken in line, in the issuing call, under one short lock: a writable
//! segment is open, the rolling policy (spec §6.4) is not due, an in-flight permit is free and
//! the processor has buffer space. Everything else (opening a segment, rolling, waiting for a
//! permit or for space) goes to the writer's task, and once a write is queued there every
//! later write queues behind it until the task has caught up, so the order holds.
//!
//! Answers come from the processor, which makes entries durable in id order and tells each
//! entry's callback on its own task: the callback checks the order, records the last
//! acknowledged id, releases the permit and answers the write (a channel for
//! [`LogWriter::write_async`], the caller's callback for [`LogWriter::write_then`]), so an
//! acknowledgement takes no extra task hop. Rolling waits until every append issued to the
//! segment was answered before completing it; no lock is held across any await.
//!
//! A not-writable LogStore error (8104 fenced by a newer writer, …) or a metadata conflict
//! (3011, 3014) invalidates the writer: that write and every later one fail with
//! [`ClientError::WriterLost`] (1405). A block storage could not take (8103: a full disk, an
//! IO error) stops the writer the same way with [`ClientError::StorageFailed`]; the log is
//! still its own then. Acknowledged entries are never taken back.
//!
//! Failures that may pass do not cost the writer its log. Completing a segment (a roll or a
//! close) rides out replicas that are down or do not answer and a metadata store that is
//! unavailable for up to [`ClientSettings::complete_patience`](super::ClientSettings::complete_patience),
//! writes queuing behind it; a metadata change whose answer was lost (the store may have
//! applied it) is looked at before it is taken for another writer's: a creation or completion
//! the store holds exactly as this writer made it is this writer's own. A LogStore that
//! restarted under the writer (its processor back in recovery mode) fails its replica, not
//! the writer.
//!
//! No empty segment is left behind: a segment the writer created but never got an entry
//! into (its first block failed) is given up when the writer rolls or closes instead of
//! being completed, when storage holds nothing of it (its data removed, then its metadata
//! deleted at the revision the writer stored), and its id is used again.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use proto::meta::{QuorumInfo, SegmentMetadata, SegmentState};
use telemetry::Stopwatch;
use telemetry::catalog::ClientLogMetrics;
use telemetry::metrics::{Counter, Histogram};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::error::{ClientError, Result};
use super::segment::{Appender, Replicas};
use super::{Patience, Shared, millis};
use crate::logstore::{LogStoreError, OnDurable, TryAdd, code};
use crate::message::{LogMessageId, WriteMessage};
use crate::meta::kv::Revision;
use crate::meta::{MetaError, WriterLock};

/// How long a closing writer gives the replicas behind the ack quorum to make the last
/// entries durable before it completes its segment: long enough for a healthy replica one
/// round trip behind, short enough that a replica that is down does not hold a close up.
const CLOSE_DRAIN: Duration = Duration::from_secs(1);

/// Who is told the outcome of a write.
enum Reply {
    Channel(oneshot::Sender<Result<LogMessageId>>),
    Callback(Box<dyn FnOnce(Result<LogMessageId>) + Send>),
}

/// A write's reply, with what its measurement needs when it is answered: the append latency
/// histogram of its log, when it was issued, and its `wal.append` span (disabled, and free,
/// unless spans are exported).
struct Answer {
    reply: Reply,
    issued: Stopwatch,
    latency: &'static Histogram,
    span: tracing::Span,
}

impl Answer {
    fn send(self, r: Result<LogMessageId>) {
        if r.is_ok() {
            self.latency.observe(self.issued.elapsed_nanos());
        }
        match self.reply {
            Reply::Channel(tx) => {
                let _ = tx.send(r);
            }
            Reply::Callback(f) => f(r),
        }
        // The span ends with the answer.
        drop(self.span);
    }
}

enum Command {
    Write { data: Bytes, answer: Answer },
    Close { reply: oneshot::Sender<Result<()>> },
}

/// Whether the writer still owns its log; shared by the writer, its task and its segments' answers.
#[derive(Debug)]
struct Validity {
    log: String,
    /// Why the writer is no longer valid; `None` while it is.
    lost: Mutex<Option<Lost>>,
    /// `woodpecker_client_writers_lost_total` of the log.
    lost_total: &'static Counter,
}

#[derive(Debug, Clone)]
enum Lost {
    Taken(String),
    /// Storage failed under the writer; the log is still its own.
    Storage(String),
    Closed,
}

impl Validity {
    fn check(&self) -> Result<()> {
        match &*self.lost.lock().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(lost) => Err(self.error(lost)),
        }
    }

    fn error(&self, lost: &Lost) -> ClientError {
        match lost {
            Lost::Taken(reason) => ClientError::WriterLost {
                log: self.log.clone(),
                reason: reason.clone(),
            },
            Lost::Storage(reason) => ClientError::StorageFailed {
                log: self.log.clone(),
                reason: reason.clone(),
            },
            Lost::Closed => ClientError::WriterClosed {
                log: self.log.clone(),
            },
        }
    }

    /// Invalidates the writer (the first reason stays) and returns the error to report.
    fn invalidate(&self, lost: Lost) -> ClientError {
        let mut guard = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            match &lost {
                Lost::Taken(reason) => {
                    tracing::warn!(log = %self.log, reason = %reason, "writer invalidated");
                    self.lost_total.inc();
                }
                Lost::Storage(reason) => {
                    tracing::warn!(log = %self.log, reason = %reason, "writer stopped: storage failed");
                    self.lost_total.inc();
                }
                Lost::Closed => {}
            }
            *guard = Some(lost);
        }
        self.error(guard.as_ref().unwrap_or(&Lost::Closed))
    }

    fn lose(&self, reason: impl fmt::Display) -> ClientError {
        self.invalidate(Lost::Taken(reason.to_string()))
    }

    /// Why the writer is no longer valid; `None` while it is.
    fn lost(&self) -> Option<Lost> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Invalidates the writer after a LogStore error that ends its segment: a storage
    /// failure (8103) stops it, anything else (a fence, …) means it lost the log.
    fn segment_ended(&self, segment_id: i64, e: &LogStoreError) -> ClientError {
        let reason = format!("segment {segment_id} is not writable: {e}");
        match e {
            LogStoreError::StorageNotWritable { .. } => self.invalidate(Lost::Storage(reason)),
            _ => self.invalidate(Lost::Taken(reason)),
        }
    }
}

/// Why a segment rolls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Roll {
    /// An append failed: the segment takes no more.
    Now,
    /// Full, old, or a replica failed: roll once a fresh quorum can be selected.
    WhenQuorum,
}

/// Whether an append error means this writer can no longer write the segment: Go's
/// not-writable set, plus a processor that was closed (2217) or reopened in recovery mode
/// (2218) under us, which in embedded mode only happens when another writer fenced and
/// completed the segment, or the LogStore shut down.
fn segment_lost(e: &LogStoreError) -> bool {
    e.is_segment_not_writable() || matches!(e.code(), code::WRITER_CLOSED | code::IN_RECOVERY_MODE)
}

/// Whether a metadata error means another writer took the log over.
fn is_takeover(e: &MetaError) -> bool {
    matches!(
        e,
        MetaError::RevisionInvalid { .. } | MetaError::SegmentAlreadyExists { .. }
    )
}

/// The writer of one log. Writes are acknowledged once durable, strictly in issue order.
/// Dropping it without [`close`](LogWriter::close) leaves the segment Active, as a crash
/// would; the next writer fences and completes it.
pub struct LogWriter {
    core: Arc<Core>,
    commands: mpsc::UnboundedSender<Command>,
    /// The metadata writer lock, in lock mode (`fencePolicy.conditionWrite: disable`).
    lock: Mutex<Option<HeldLock>>,
}

/// The writer lock and the task that invalidates the writer when the lock is lost.
struct HeldLock {
    lock: Arc<WriterLock>,
    watcher: JoinHandle<()>,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogWriter")
            .field("log", &self.core.log)
            .field("log_id", &self.core.log_id)
            .field("validity", &self.core.validity.check().is_ok())
            .finish()
    }
}

impl LogWriter {
    pub(crate) fn start(
        log: String,
        log_id: i64,
        next_segment_id: i64,
        shared: Arc<Shared>,
        lock: Option<WriterLock>,
    ) -> Self {
        let metrics = ClientLogMetrics::for_log(log_id);
        let validity = Arc::new(Validity {
            log: log.clone(),
            lost: Mutex::new(None),
            lost_total: metrics.writers_lost,
        });
        let core = Arc::new(Core {
            log,
            log_id,
            metrics,
            permits: Arc::new(Semaphore::new(shared.settings.max_in_flight.max(1))),
            shared,
            validity: validity.clone(),
            slot: Mutex::new(Slot {
                segment: None,
                queued: 0,
            }),
        });
        let (commands, rx) = mpsc::unbounded_channel();
        let task = WriterTask {
            core: core.clone(),
            next_segment_id,
            select_failed_until: 0,
            uncertain_create: None,
        };
        tokio::spawn(task.run(rx));
        let lock = lock.map(|lock| {
            let lock = Arc::new(lock);
            let watched = Arc::clone(&lock);
            let watched_validity = Arc::clone(&validity);
            let watcher = tokio::spawn(async move {
                watched.lost().await;
                watched_validity.invalidate(Lost::Taken(
                    "the writer lock's session in metadata was lost".into(),
                ));
            });
            HeldLock { lock, watcher }
        });
        LogWriter {
            core,
            commands,
            lock: Mutex::new(lock),
        }
    }

    /// The log name.
    pub fn log_name(&self) -> &str {
        &self.core.log
    }

    /// The log id.
    pub fn log_id(&self) -> i64 {
        self.core.log_id
    }

    /// Whether the writer may still write (not lost to another writer, not closed).
    pub fn is_valid(&self) -> bool {
        self.core.validity.check().is_ok()
    }

    /// Writes `msg` and returns its id once it is durable.
    pub async fn write(&self, msg: WriteMessage) -> Result<LogMessageId> {
        self.write_async(msg).await
    }

    /// Issues a write now and returns a future of its id. The write's place in the log is
    /// fixed by the order of `write_async` calls (not by when the futures are polled), so
    /// a caller can issue many writes and await them later; they resolve in order.
    /// Errors: 8100 for an empty message, 1405 once the writer is lost or closed.
    pub fn write_async(
        &self,
        msg: WriteMessage,
    ) -> impl Future<Output = Result<LogMessageId>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        self.issue(&msg, Reply::Channel(tx));
        let log = self.core.log.clone();
        async move { rx.await.unwrap_or(Err(ClientError::WriterClosed { log })) }
    }

    /// Issues a write now, like [`write_async`](Self::write_async), and calls `done` once
    /// with its id when it is durable, or with the error that made it fail. `done` runs on
    /// the engine task that made the entry durable (or in this call, for an error found at
    /// once), in issue order: it must be quick and must not block or call back into this
    /// writer. It saves the task hop of awaiting a future.
    pub fn write_then(
        &self,
        msg: WriteMessage,
        done: impl FnOnce(Result<LogMessageId>) + Send + 'static,
    ) {
        self.issue(&msg, Reply::Callback(Box::new(done)));
    }

    fn issue(&self, msg: &WriteMessage, reply: Reply) {
        let metrics = &self.core.metrics;
        let answer = Answer {
            reply,
            issued: Stopwatch::start(),
            latency: metrics.append_latency,
            span: tracing::debug_span!(target: telemetry::trace::SPAN_TARGET, "wal.append", log_id = self.core.log_id),
        };
        let encoded = msg.encode().map_err(ClientError::from);
        let data = match encoded.and_then(|d| self.core.validity.check().map(|()| d)) {
            Ok(d) => d,
            Err(e) => return answer.send(Err(e)),
        };
        metrics.append_requests.inc();
        metrics.append_bytes.observe(data.len() as u64);
        let mut slot = self.core.lock_slot();
        let Some(answer) = self.core.try_in_line(&mut slot, &data, answer) else {
            return;
        };
        slot.queued += 1;
        if let Err(mpsc::error::SendError(cmd)) =
            self.commands.send(Command::Write { data, answer })
        {
            slot.queued -= 1;
            drop(slot);
            if let Command::Write { answer, .. } = cmd {
                answer.send(Err(ClientError::WriterClosed {
                    log: self.core.log.clone(),
                }));
            }
        }
    }

    /// Closes the writer: waits for its in-flight writes, completes the writable segment
    /// (footer, metadata Completed) and invalidates the writer. Closing twice is fine.
    pub async fn close(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        let sent = {
            // Counted as queued for good: nothing is taken in line once a close is issued.
            let mut slot = self.core.lock_slot();
            slot.queued += 1;
            self.commands.send(Command::Close { reply }).is_ok()
        };
        let closed = if sent {
            rx.await.unwrap_or(Ok(()))
        } else {
            Ok(())
        };
        let held = self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(held) = held {
            held.watcher.abort();
            held.lock.unlock().await?;
        }
        closed
    }
}

/// What an append's callback saw of its segment.
#[derive(Debug, Clone, Copy)]
struct AckOutcome {
    /// Last acknowledged entry id (-1 when none).
    last_acked: i64,
    /// Whether an append failed (the segment must roll).
    failed: bool,
}

/// The answers of one segment's appends, given by the processor in id order.
struct SegmentAcks {
    segment_id: i64,
    validity: Arc<Validity>,
    state: Mutex<AckState>,
    /// Notified when every issued append has been answered.
    settled: Notify,
}

struct AckState {
    issued: u64,
    answered: u64,
    last_acked: i64,
    failure: Option<Failure>,
}

/// Why a segment stopped acknowledging.
enum Failure {
    /// An append failed in the LogStore.
    Store(LogStoreError),
    /// The LogStore acknowledged an entry out of order (the writer is lost).
    OutOfOrder,
}

impl SegmentAcks {
    fn new(segment_id: i64, validity: Arc<Validity>) -> Self {
        SegmentAcks {
            segment_id,
            validity,
            state: Mutex::new(AckState {
                issued: 0,
                answered: 0,
                last_acked: -1,
                failure: None,
            }),
            settled: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AckState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an append about to be handed to the processor.
    fn issue(&self) {
        self.lock().issued += 1;
    }

    /// Takes back an append the processor did not take.
    fn withdraw(&self) {
        let settled = {
            let mut st = self.lock();
            st.issued -= 1;
            st.answered >= st.issued
        };
        if settled {
            self.settled.notify_waiters();
        }
    }

    fn failed(&self) -> bool {
        self.lock().failure.is_some()
    }

    /// The answer to append `entry_id` given the processor's result. After the first
    /// failure no later entry of the segment is acknowledged (entries cannot have holes).
    fn answer(
        &self,
        entry_id: i64,
        result: std::result::Result<i64, LogStoreError>,
    ) -> Result<LogMessageId> {
        let segment_id = self.segment_id;
        let mut st = self.lock();
        let expected = st.last_acked + 1;
        let answer = match (&st.failure, result) {
            (None, Ok(id)) if id == entry_id && entry_id == expected => {
                st.last_acked = id;
                Ok(LogMessageId::new(segment_id, id))
            }
            (None, Ok(id)) => {
                st.failure = Some(Failure::OutOfOrder);
                Err(self.validity.lose(format!(
                    "segment {segment_id}: entry {entry_id} acknowledged as {id}, expected {expected}"
                )))
            }
            (None, Err(e)) => {
                let answer = self.failure_answer(&e);
                st.failure = Some(Failure::Store(e));
                answer
            }
            (Some(Failure::Store(e)), _) => self.failure_answer(e),
            // The writer was lost then; `lose` keeps and reports that first reason.
            (Some(Failure::OutOfOrder), _) => {
                Err(self.validity.lose("out-of-order acknowledgement"))
            }
        };
        st.answered += 1;
        let settled = st.answered >= st.issued;
        drop(st);
        if settled {
            self.settled.notify_waiters();
        }
        answer
    }

    fn failure_answer(&self, e: &LogStoreError) -> Result<LogMessageId> {
        if segment_lost(e) {
            Err(self.validity.segment_ended(self.segment_id, e))
        } else {
            Err(ClientError::LogStore(e.clone()))
        }
    }

    /// Waits until every issued append was answered.
    async fn settle(&self) -> AckOutcome {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            {
                let st = self.lock();
                if st.answered >= st.issued {
                    return AckOutcome {
                        last_acked: st.last_acked,
                        failed: st.failure.is_some(),
                    };
                }
            }
            settled.await;
        }
    }
}

/// An append taken by the processor, waiting for its answer.
struct Pending {
    acks: Arc<SegmentAcks>,
    entry_id: i64,
    answer: Answer,
    /// The in-flight permit, released before the answer is given.
    permit: OwnedSemaphorePermit,
}

impl Pending {
    /// The processor's callback; made only once the processor takes the append.
    fn on_durable(pending: &mut Option<Pending>) -> OnDurable {
        let p = pending.take();
        Box::new(move |r| {
            if let Some(Pending {
                acks,
                entry_id,
                answer,
                permit,
            }) = p
            {
                let result = acks.answer(entry_id, r);
                drop(permit);
                answer.send(result);
            }
        })
    }
}

/// The writable segment.
struct OpenSegment {
    id: i64,
    meta: SegmentMetadata,
    revision: Revision,
    replicas: Arc<Replicas>,
    /// Opened on the first append when opening it at creation failed (it touches storage).
    appender: Option<Appender>,
    /// A roll that could not find a fresh quorum is not tried again before this (clock
    /// millis; 0 at first).
    roll_not_before: i64,
    next_entry_id: i64,
    bytes: u64,
    acks: Arc<SegmentAcks>,
}

/// What the in-line path and the task share, under one lock.
struct Slot {
    /// The writable segment, when one is open (the task takes it out to roll).
    segment: Option<OpenSegment>,
    /// Commands sent to the task and not finished; while any is, writes queue behind them.
    queued: usize,
}

/// The state a writer and its task share.
struct Core {
    log: String,
    log_id: i64,
    /// This log's append metrics (`woodpecker_client_append_*`).
    metrics: ClientLogMetrics,
    shared: Arc<Shared>,
    validity: Arc<Validity>,
    permits: Arc<Semaphore>,
    slot: Mutex<Slot>,
}

impl Core {
    fn lock_slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the write in line when nothing is queued, a segment is open and not due to
    /// roll, a permit is free and the processor has space; hands `answer` back otherwise
    /// (the task takes it). An error the processor gives is answered here.
    fn try_in_line(&self, slot: &mut Slot, data: &Bytes, answer: Answer) -> Option<Answer> {
        if slot.queued > 0 {
            return Some(answer);
        }
        let Some(seg) = slot.segment.as_mut() else {
            return Some(answer);
        };
        let Some(appender) = seg.appender.clone() else {
            return Some(answer);
        };
        if self.roll_due(seg).is_some() {
            return Some(answer);
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Some(answer);
        };
        let entry_id = seg.next_entry_id;
        let mut pending = Some(Pending {
            acks: seg.acks.clone(),
            entry_id,
            answer,
            permit,
        });
        seg.acks.issue();
        let r = appender.try_add_entry_with(entry_id, data, || Pending::on_durable(&mut pending));
        match (r, pending) {
            (Ok(TryAdd::Taken), _) => {
                seg.next_entry_id = entry_id + 1;
                seg.bytes += data.len() as u64;
                None
            }
            (Ok(TryAdd::WouldWait), Some(p)) => {
                seg.acks.withdraw();
                Some(p.answer)
            }
            (Err(e), Some(p)) => {
                seg.acks.withdraw();
                p.answer.send(Err(self.refused(seg.id, e)));
                None
            }
            // The processor made the callback only when it took the entry.
            (_, None) => None,
        }
    }

    /// The error for an append the processor refused.
    fn refused(&self, segment_id: i64, e: LogStoreError) -> ClientError {
        if segment_lost(&e) {
            self.validity.segment_ended(segment_id, &e)
        } else {
            // Nothing was taken: the id stays free for the next write.
            e.into()
        }
    }

    /// The rolling policy of spec §6.4, evaluated before every write.
    fn roll_due(&self, seg: &OpenSegment) -> Option<Roll> {
        if seg.acks.failed() {
            return Some(Roll::Now);
        }
        let policy = &self.shared.settings.rolling;
        let now = self.shared.now_millis();
        let non_empty = seg.next_entry_id > 0;
        let age_ms = now.saturating_sub(seg.meta.create_time);
        let due = seg.bytes >= policy.max_size
            || seg.appender.as_ref().is_some_and(Appender::wants_roll)
            || (non_empty
                && age_ms >= 0
                && (age_ms as u64) >= policy.max_interval.saturating_mul(1000))
            || (non_empty
                && seg
                    .appender
                    .as_ref()
                    .and_then(Appender::block_count)
                    .is_some_and(|blocks| blocks as u64 >= policy.max_blocks));
        (due && now >= seg.roll_not_before).then_some(Roll::WhenQuorum)
    }
}

/// The writer's task: the writes that cannot be taken in line, rolling and closing.
struct WriterTask {
    core: Arc<Core>,
    next_segment_id: i64,
    /// After a quorum selection failed, writes that need a new segment fail at once until
    /// this time (clock millis) instead of each waiting out a selection of its own.
    select_failed_until: i64,
    /// The metadata of a segment whose creation failed in a way that may have applied it
    /// (the store's answer was lost): the next attempt at that id looks before it creates.
    uncertain_create: Option<SegmentMetadata>,
}

impl WriterTask {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        while let Some(cmd) = commands.recv().await {
            match cmd {
                Command::Write { data, answer } => {
                    self.write(data, answer).await;
                    self.core.lock_slot().queued -= 1;
                }
                Command::Close { reply } => {
                    let r = self.close().await;
                    let _ = reply.send(r);
                    break;
                }
            }
        }
        // Writes queued behind a close, or after the writer was dropped, fail.
        commands.close();
        while let Ok(cmd) = commands.try_recv() {
            match cmd {
                Command::Write { answer, .. } => {
                    answer.send(Err(self.core.validity.invalidate(Lost::Closed)));
                }
                Command::Close { reply } => {
                    let _ = reply.send(Ok(()));
                }
            }
        }
    }

    /// One queued write: rolls if due, opens a segment if needed, waits for a permit and
    /// for buffer space, and appends with the next entry id.
    async fn write(&mut self, data: Bytes, answer: Answer) {
        if let Err(e) = self.prepare().await {
            tracing::debug!(log = %self.core.log, error = %e, "write failed");
            return answer.send(Err(e));
        }
        let permit = match self.core.permits.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return answer.send(Err(self.core.validity.lose("in-flight limiter closed"))),
        };
        let (appender, replicas, entry_id, acks, segment_id) = {
            let slot = self.core.lock_slot();
            let Some(seg) = slot.segment.as_ref() else {
                drop(slot);
                return answer.send(Err(self.core.validity.lose("no writable segment")));
            };
            (
                seg.appender.clone(),
                seg.replicas.clone(),
                seg.next_entry_id,
                seg.acks.clone(),
                seg.id,
            )
        };
        let appender = match appender {
            Some(a) => a,
            None => match Appender::open(&replicas, &self.core.shared).await {
                Ok(a) => {
                    if let Some(seg) = self.core.lock_slot().segment.as_mut() {
                        seg.appender = Some(a.clone());
                    }
                    a
                }
                Err(e) => return answer.send(Err(self.core.refused(segment_id, e))),
            },
        };
        let mut pending = Some(Pending {
            acks: acks.clone(),
            entry_id,
            answer,
            permit,
        });
        acks.issue();
        let len = data.len() as u64;
        let r = appender
            .add_entry_with(entry_id, data, || Pending::on_durable(&mut pending))
            .await;
        match (r, pending) {
            (Ok(()), _) => {
                // Dense ids: the next append takes the next id only once this one is taken.
                if let Some(seg) = self.core.lock_slot().segment.as_mut() {
                    seg.next_entry_id = entry_id + 1;
                    seg.bytes += len;
                }
            }
            (Err(e), Some(p)) => {
                acks.withdraw();
                let e = self.core.refused(segment_id, e);
                tracing::debug!(log = %self.core.log, error = %e, "write failed");
                p.answer.send(Err(e));
            }
            // The processor made the callback only when it took the entry.
            (Err(_), None) => {}
        }
    }

    /// Checks the writer, rolls if due and opens a segment if none is open.
    ///
    /// A segment that failed an append rolls at once. One that is only due (full, old, or a
    /// replica failed while the others still acknowledge) rolls once a fresh quorum is
    /// selected; while none can be (a three-node cluster with one node down has no fresh
    /// quorum of three), it keeps taking writes and the roll is tried again after
    /// [`ClientSettings::roll_retry_interval`](super::ClientSettings::roll_retry_interval).
    async fn prepare(&mut self) -> Result<()> {
        self.core.validity.check()?;
        let due = {
            let slot = self.core.lock_slot();
            slot.segment.as_ref().and_then(|s| self.core.roll_due(s))
        };
        let mut next_quorum = None;
        match due {
            None => {}
            Some(Roll::Now) => self.roll().await?,
            Some(Roll::WhenQuorum) => match self.core.shared.cluster.try_select_quorum().await {
                Ok(q) => {
                    self.roll().await?;
                    next_quorum = Some(q);
                }
                Err(e) => {
                    let retry = self.core.shared.settings.roll_retry_interval;
                    let mut slot = self.core.lock_slot();
                    if let Some(seg) = slot.segment.as_mut() {
                        if seg.roll_not_before == 0 {
                            tracing::info!(log = %self.core.log, segment = seg.id, error = %e, "segment due to roll but no fresh quorum yet; it keeps taking writes");
                        } else {
                            tracing::debug!(log = %self.core.log, segment = seg.id, error = %e, "still no fresh quorum");
                        }
                        seg.roll_not_before =
                            self.core.shared.now_millis().saturating_add(millis(retry));
                    }
                }
            },
        }
        if self.core.lock_slot().segment.is_none() {
            self.open_segment(next_quorum).await?;
        }
        Ok(())
    }

    /// Stores the metadata of segment `next_segment_id` (Active, with its quorum: `quorum`
    /// or a new selection) and makes it writable.
    async fn open_segment(&mut self, quorum: Option<QuorumInfo>) -> Result<()> {
        let id = self.next_segment_id;
        let (meta, revision, replicas) = match self.adopt_uncertain(id).await? {
            Some(adopted) => adopted,
            None => self.create_segment(id, quorum).await?,
        };
        let core = &self.core;
        // The appender is opened now when that works; a failure here (storage) is left to
        // the first append, as a failed append leaves the segment open.
        let appender = Appender::open(&replicas, &core.shared).await.ok();
        tracing::debug!(log = %core.log, segment = id, nodes = ?replicas.endpoints(), "segment opened");
        core.lock_slot().segment = Some(OpenSegment {
            id,
            meta,
            revision,
            replicas,
            appender,
            roll_not_before: 0,
            next_entry_id: 0,
            bytes: 0,
            acks: Arc::new(SegmentAcks::new(id, core.validity.clone())),
        });
        self.next_segment_id = id + 1;
        Ok(())
    }

    /// Selects a quorum (unless given) and creates segment `id`'s metadata, Active.
    async fn create_segment(
        &mut self,
        id: i64,
        quorum: Option<QuorumInfo>,
    ) -> Result<(SegmentMetadata, Revision, Arc<Replicas>)> {
        let core = &self.core;
        let quorum = match quorum {
            Some(q) => q,
            None => {
                let now = core.shared.now_millis();
                if now < self.select_failed_until {
                    return Err(ClientError::SelectQuorumFailed {
                        reason: "the last selection failed moments ago; retry later".into(),
                    });
                }
                match core.shared.cluster.select_quorum().await {
                    Ok(q) => q,
                    Err(e) => {
                        let retry = core.shared.settings.roll_retry_interval;
                        self.select_failed_until =
                            core.shared.now_millis().saturating_add(millis(retry));
                        return Err(e);
                    }
                }
            }
        };
        let replicas = Arc::new(Replicas::from_quorum(
            &core.shared,
            &core.log,
            core.log_id,
            id,
            &quorum,
        )?);
        let meta = SegmentMetadata {
            seg_no: id,
            create_time: core.shared.now_millis(),
            state: SegmentState::Active as i32,
            last_entry_id: -1,
            quorum: Some(quorum),
            ..SegmentMetadata::default()
        };
        match core
            .shared
            .meta
            .store_segment_metadata(&core.log, &meta)
            .await
        {
            Ok(revision) => Ok((meta, revision, replicas)),
            Err(e) if is_takeover(&e) => Err(core
                .validity
                .lose(format!("segment {id} was created by another writer: {e}"))),
            Err(e) => {
                if e.is_retriable() {
                    self.uncertain_create = Some(meta);
                }
                Err(e.into())
            }
        }
    }

    /// After a creation of segment `id` whose answer was lost: the segment as this writer
    /// created it when the store holds exactly that (the creation was applied), `None` when
    /// it holds no such segment (create it now), and the writer lost when it holds another
    /// writer's. A read that fails leaves the doubt for the next attempt.
    async fn adopt_uncertain(
        &mut self,
        id: i64,
    ) -> Result<Option<(SegmentMetadata, Revision, Arc<Replicas>)>> {
        let Some(tried) = self.uncertain_create.take() else {
            return Ok(None);
        };
        if tried.seg_no != id {
            return Ok(None);
        }
        let core = &self.core;
        match core.shared.meta.get_segment_metadata(&core.log, id).await {
            Ok(found) if found.value == tried => {
                let replicas = Arc::new(Replicas::of(
                    &core.shared,
                    &core.log,
                    core.log_id,
                    &found.value,
                )?);
                tracing::info!(log = %core.log, segment = id, "a segment creation whose answer was lost had been applied; writing it");
                Ok(Some((found.value, found.revision, replicas)))
            }
            Ok(_) => Err(core
                .validity
                .lose(format!("segment {id} was created by another writer"))),
            Err(MetaError::KeyNotExists { .. }) => Ok(None),
            Err(e) => {
                if e.is_retriable() {
                    self.uncertain_create = Some(tried);
                }
                Err(e.into())
            }
        }
    }

    /// Waits for the segment's in-flight appends, completes it in the LogStore and CASes
    /// its metadata to Completed. Any failure invalidates the writer.
    async fn roll(&mut self) -> Result<()> {
        let Some(seg) = self.core.lock_slot().segment.take() else {
            return Ok(());
        };
        let id = seg.id;
        let r = self.complete(seg, false).await;
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.is_writer_lost() => Err(e),
            Err(e) => Err(self
                .core
                .validity
                .lose(format!("completing segment {id} failed: {e}"))),
        }
    }

    /// Completes `seg` once its appends are answered. With `drain` (a close, not a roll: a
    /// roll must not wait for a slow replica while writes queue behind it), the replicas
    /// behind the ack quorum get [`CLOSE_DRAIN`] to catch up first.
    async fn complete(&mut self, seg: OpenSegment, drain: bool) -> Result<()> {
        let OpenSegment {
            id,
            meta,
            revision,
            replicas,
            appender,
            bytes,
            acks,
            ..
        } = seg;
        let core = &self.core;
        let outcome = acks.settle().await;
        if let Some(a) = &appender {
            if drain && outcome.last_acked >= 0 {
                a.drain(outcome.last_acked, CLOSE_DRAIN).await;
            }
            a.close();
        }
        core.validity.check()?;
        if outcome.last_acked < 0 && self.give_up_empty(&replicas, revision).await {
            // Its id is the next segment's.
            self.next_segment_id = id;
            return Ok(());
        }
        let core = &self.core;
        let mut patience = Patience::new(&core.shared, core.metrics.completion_retries);
        let last = match replicas.complete(outcome.last_acked, &mut patience).await {
            Ok(done) => done.last_entry_id,
            Err(ClientError::LogStore(e)) if segment_lost(&e) => {
                return Err(core.validity.lose(format!("completing segment {id}: {e}")));
            }
            Err(e) => return Err(e),
        };
        let completed = SegmentMetadata {
            state: SegmentState::Completed as i32,
            last_entry_id: last,
            completion_time: core.shared.now_millis(),
            size: i64::try_from(bytes).unwrap_or(i64::MAX),
            ..meta
        };
        self.publish_completion(&completed, revision, &mut patience)
            .await?;
        replicas.release().await;
        tracing::debug!(log = %core.log, segment = id, last_entry_id = last, failed = outcome.failed, "segment completed");
        Ok(())
    }

    /// CASes the segment's metadata to `completed` (from `revision`). A failure that may
    /// pass (the store unavailable) is tried again after each pause of `patience`. An
    /// attempt whose answer was lost may have been applied, so a revision conflict after one
    /// is looked at: the segment holding exactly `completed` is this writer's own
    /// completion, anything else is another writer's.
    async fn publish_completion(
        &self,
        completed: &SegmentMetadata,
        revision: Revision,
        patience: &mut Patience<'_>,
    ) -> Result<()> {
        let core = &self.core;
        let id = completed.seg_no;
        let mut uncertain = false;
        loop {
            let e = match core
                .shared
                .meta
                .update_segment_metadata(&core.log, completed, revision)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if uncertain && is_takeover(&e) {
                match core.shared.meta.get_segment_metadata(&core.log, id).await {
                    Ok(found) if found.value == *completed => {
                        tracing::info!(log = %core.log, segment = id, "a completion whose answer was lost had been applied");
                        return Ok(());
                    }
                    Ok(_) => {}
                    Err(read) if read.is_retriable() => {
                        // Still in doubt: the update is tried again, and so is this.
                        if !self.pause_before_retry(patience, id, &read).await {
                            return Err(read.into());
                        }
                        continue;
                    }
                    Err(_) => {}
                }
            }
            if is_takeover(&e) {
                return Err(core.validity.lose(format!(
                    "segment {id} metadata changed under this writer: {e}"
                )));
            }
            if !e.is_retriable() || !self.pause_before_retry(patience, id, &e).await {
                return Err(e.into());
            }
            uncertain = true;
        }
    }

    /// Waits out the next pause of `patience` after metadata failure `e`; `false` when the
    /// patience is spent or the writer was invalidated meanwhile.
    async fn pause_before_retry(
        &self,
        patience: &mut Patience<'_>,
        segment: i64,
        e: &MetaError,
    ) -> bool {
        let core = &self.core;
        let Some(pause) = patience.next_pause() else {
            return false;
        };
        tracing::info!(log = %core.log, segment, error = %e, pause_ms = millis(pause), "metadata update failed; trying again");
        patience.pause().await;
        core.validity.check().is_ok()
    }

    /// Gives up segment `id`, which holds no acknowledged entry, when storage holds nothing
    /// of it either: its data, then its metadata (at `revision`, so only if no other writer
    /// touched it since). Whether it is gone; a failure is logged and leaves the segment to be
    /// completed (here, or by the next writer's fencing).
    async fn give_up_empty(&self, replicas: &Replicas, revision: Revision) -> bool {
        let core = &self.core;
        let id = replicas.segment_id();
        match replicas.discard_if_empty().await {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                tracing::warn!(log = %core.log, segment = id, error = %e, "cannot remove an empty segment's data; it will be completed");
                return false;
            }
        }
        match core
            .shared
            .meta
            .delete_segment_metadata_at(&core.log, id, revision)
            .await
        {
            Ok(()) => {
                tracing::info!(log = %core.log, segment = id, "empty segment given up");
                true
            }
            Err(e) => {
                tracing::warn!(log = %core.log, segment = id, error = %e, "cannot delete an empty segment's metadata; it will be completed");
                false
            }
        }
    }

    async fn close(&mut self) -> Result<()> {
        let seg = self.core.lock_slot().segment.take();
        if let Some(lost) = self.core.validity.lost() {
            // Lost or closed: the segment is not ours to complete. Wait until every issued
            // write has its answer. A writer stopped by storage still owns the log: an
            // empty segment it leaves is given up rather than left to be completed empty.
            if let Some(seg) = seg {
                let outcome = seg.acks.settle().await;
                if matches!(lost, Lost::Storage(_)) {
                    // The processor's writer failed: the next writer's fencing must reopen
                    // the segment from storage (recovery) rather than find it broken here.
                    let given_up = outcome.last_acked < 0
                        && self.give_up_empty(&seg.replicas, seg.revision).await;
                    if !given_up {
                        seg.replicas.release().await;
                    }
                }
            }
            self.core.validity.invalidate(Lost::Closed);
            return Ok(());
        }
        let r = match seg {
            Some(seg) => self.complete(seg, true).await,
            None => self.close_uncertain().await,
        };
        self.core.validity.invalidate(Lost::Closed);
        r
    }

    /// At close, with no segment open: a segment whose creation's answer was lost and that
    /// the store does hold as this writer created it is closed as any other (given up, or
    /// completed empty), so that no Active segment is left for the next writer to fence.
    /// What cannot be decided now is left to that fencing.
    async fn close_uncertain(&mut self) -> Result<()> {
        let id = self.next_segment_id;
        let (meta, revision, replicas) = match self.adopt_uncertain(id).await {
            Ok(Some(adopted)) => adopted,
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::debug!(log = %self.core.log, segment = id, error = %e, "segment creation left in doubt at close");
                return Ok(());
            }
        };
        let seg = OpenSegment {
            id,
            meta,
            revision,
            replicas,
            appender: None,
            roll_not_before: 0,
            next_entry_id: 0,
            bytes: 0,
            acks: Arc::new(SegmentAcks::new(id, self.core.validity.clone())),
        };
        self.complete(seg, false).await
    }
}
