//! [`LogWriter`]: the write path of one log in embedded mode (spec §2.3, §6.1, §6.4).
//!
//! One task per writer owns the writable segment: it takes writes in the order they were
//! issued, evaluates the rolling policy, creates segments, assigns entry ids densely
//! (`entryId = last assigned + 1`) and hands each append to the LogStore. Acknowledgements
//! come from one acker task per segment that awaits the LogStore receipts in id order, so
//! the application sees results strictly in order; the writer task never awaits a
//! durability receipt except when rolling (it waits for the segment's in-flight appends
//! before completing it), and no lock is held across any await.
//!
//! A not-writable LogStore error (8104 fenced by a newer writer, …) or a metadata conflict
//! (3011, 3014) invalidates the writer: that write and every later one fail with
//! [`ClientError::WriterLost`] (1405). Acknowledged entries are never taken back.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use proto::meta::{SegmentMetadata, SegmentState};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::error::{ClientError, Result};
use super::{Shared, embedded_quorum};
use crate::logstore::{AppendReceipt, LogStoreError};
use crate::message::{LogMessageId, WriteMessage};
use crate::meta::kv::Revision;
use crate::meta::{MetaError, WriterLock};

type Reply = oneshot::Sender<Result<LogMessageId>>;

enum Command {
    Write { data: Bytes, reply: Reply },
    Close { reply: oneshot::Sender<Result<()>> },
}

/// Whether the writer still owns its log; shared by the writer, its task and its ackers.
#[derive(Debug)]
struct Validity {
    log: String,
    /// Why the writer is no longer valid; `None` while it is.
    lost: Mutex<Option<Lost>>,
}

#[derive(Debug, Clone)]
enum Lost {
    Taken(String),
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
            Lost::Closed => ClientError::WriterClosed {
                log: self.log.clone(),
            },
        }
    }

    /// Invalidates the writer (the first reason stays) and returns the error to report.
    fn invalidate(&self, lost: Lost) -> ClientError {
        let mut guard = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            if let Lost::Taken(reason) = &lost {
                tracing::warn!(log = %self.log, reason = %reason, "writer invalidated");
            }
            *guard = Some(lost);
        }
        self.error(guard.as_ref().unwrap_or(&Lost::Closed))
    }

    fn lose(&self, reason: impl fmt::Display) -> ClientError {
        self.invalidate(Lost::Taken(reason.to_string()))
    }
}

/// Whether an append error means this writer can no longer write the segment: Go's
/// not-writable set, plus a processor that was closed (2217) or reopened in recovery mode
/// (2218) under us, which in embedded mode only happens when another writer fenced and
/// completed the segment, or the LogStore shut down.
fn segment_lost(e: &LogStoreError) -> bool {
    e.is_segment_not_writable()
        || matches!(
            e,
            LogStoreError::WriterClosed { .. } | LogStoreError::InRecoveryMode { .. }
        )
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
    log: String,
    log_id: i64,
    commands: mpsc::UnboundedSender<Command>,
    validity: Arc<Validity>,
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
            .field("log", &self.log)
            .field("log_id", &self.log_id)
            .field("validity", &self.validity.check().is_ok())
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
        let validity = Arc::new(Validity {
            log: log.clone(),
            lost: Mutex::new(None),
        });
        let (commands, rx) = mpsc::unbounded_channel();
        let task = WriterTask {
            log: log.clone(),
            log_id,
            permits: Arc::new(Semaphore::new(shared.settings.max_in_flight.max(1))),
            shared,
            validity: validity.clone(),
            next_segment_id,
            current: None,
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
            log,
            log_id,
            commands,
            validity,
            lock: Mutex::new(lock),
        }
    }

    /// The log name.
    pub fn log_name(&self) -> &str {
        &self.log
    }

    /// The log id.
    pub fn log_id(&self) -> i64 {
        self.log_id
    }

    /// Whether the writer may still write (not lost to another writer, not closed).
    pub fn is_valid(&self) -> bool {
        self.validity.check().is_ok()
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
        let issued = self.issue(&msg);
        let log = self.log.clone();
        async move {
            issued?
                .await
                .unwrap_or(Err(ClientError::WriterClosed { log }))
        }
    }

    fn issue(&self, msg: &WriteMessage) -> Result<oneshot::Receiver<Result<LogMessageId>>> {
        let data = msg.encode()?;
        self.validity.check()?;
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Write { data, reply })
            .map_err(|_| ClientError::WriterClosed {
                log: self.log.clone(),
            })?;
        Ok(rx)
    }

    /// Closes the writer: waits for its in-flight writes, completes the writable segment
    /// (footer, metadata Completed) and invalidates the writer. Closing twice is fine.
    pub async fn close(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        let closed = if self.commands.send(Command::Close { reply }).is_err() {
            Ok(())
        } else {
            rx.await.unwrap_or(Ok(()))
        };
        let held = self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(held) = held {
            held.watcher.abort();
            held.lock.unlock().await?;
        }
        closed
    }
}

/// An append handed to the LogStore, waiting for its receipt.
struct Pending {
    entry_id: i64,
    receipt: AppendReceipt,
    reply: Reply,
    _permit: OwnedSemaphorePermit,
}

/// What an acker saw of its segment.
#[derive(Debug, Clone, Copy)]
struct AckOutcome {
    /// Last acknowledged entry id (-1 when none).
    last_acked: i64,
    /// Whether an append failed (the segment must roll).
    failed: bool,
}

/// The writable segment.
struct OpenSegment {
    id: i64,
    meta: SegmentMetadata,
    revision: Revision,
    next_entry_id: i64,
    bytes: u64,
    acker: mpsc::UnboundedSender<Pending>,
    acker_task: JoinHandle<AckOutcome>,
    failed: Arc<AtomicBool>,
}

struct WriterTask {
    log: String,
    log_id: i64,
    shared: Arc<Shared>,
    validity: Arc<Validity>,
    permits: Arc<Semaphore>,
    next_segment_id: i64,
    current: Option<OpenSegment>,
}

impl WriterTask {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        while let Some(cmd) = commands.recv().await {
            match cmd {
                Command::Write { data, reply } => {
                    if let Err(e) = self.write(data, reply).await {
                        tracing::debug!(log = %self.log, error = %e, "write failed");
                    }
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
                Command::Write { reply, .. } => {
                    let _ = reply.send(Err(self.validity.invalidate(Lost::Closed)));
                }
                Command::Close { reply } => {
                    let _ = reply.send(Ok(()));
                }
            }
        }
    }

    /// One write; the error (already sent to the caller) is returned for logging.
    async fn write(&mut self, data: Bytes, reply: Reply) -> std::result::Result<(), String> {
        match self.submit(data).await {
            Ok(pending) => {
                let pending = pending.with_reply(reply);
                match self.current.as_ref() {
                    Some(seg) => {
                        if let Err(mpsc::error::SendError(p)) = seg.acker.send(pending) {
                            let _ = p.reply.send(Err(self.validity.lose("acker stopped")));
                        }
                    }
                    None => {
                        let _ = pending
                            .reply
                            .send(Err(self.validity.lose("no writable segment")));
                    }
                }
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                let _ = reply.send(Err(e));
                Err(msg)
            }
        }
    }

    /// Rolls if due, opens a segment if needed, and appends with the next entry id.
    async fn submit(&mut self, data: Bytes) -> Result<PendingNoReply> {
        self.validity.check()?;
        if self.roll_due().await {
            self.roll().await?;
        }
        if self.current.is_none() {
            self.open_segment().await?;
        }
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| self.validity.lose("in-flight limiter closed"))?;
        let Some(seg) = self.current.as_mut() else {
            return Err(self.validity.lose("no writable segment"));
        };
        let entry_id = seg.next_entry_id;
        let len = data.len() as u64;
        match self
            .shared
            .logstore
            .add_entry(self.log_id, seg.id, entry_id, data)
            .await
        {
            Ok(receipt) => {
                // Dense ids: the next append takes the next id only once this one is taken.
                seg.next_entry_id = entry_id + 1;
                seg.bytes += len;
                Ok(PendingNoReply {
                    entry_id,
                    receipt,
                    permit,
                })
            }
            Err(e) if segment_lost(&e) => Err(self
                .validity
                .lose(format!("segment {} is not writable: {e}", seg.id))),
            // Nothing was taken: the id stays free for the next write.
            Err(e) => Err(e.into()),
        }
    }

    /// The rolling policy of spec §6.4, evaluated before every write.
    async fn roll_due(&self) -> bool {
        let Some(seg) = &self.current else {
            return false;
        };
        let policy = &self.shared.settings.rolling;
        if seg.failed.load(Ordering::Acquire) {
            return true;
        }
        if seg.bytes >= policy.max_size {
            return true;
        }
        let non_empty = seg.next_entry_id > 0;
        let age_ms = self
            .shared
            .now_millis()
            .saturating_sub(seg.meta.create_time);
        if non_empty && age_ms >= 0 && (age_ms as u64) >= policy.max_interval.saturating_mul(1000) {
            return true;
        }
        if non_empty
            && let Ok(p) = self.shared.logstore.processor(self.log_id, seg.id).await
            && p.block_count() as u64 >= policy.max_blocks
        {
            return true;
        }
        false
    }

    /// Stores the metadata of segment `next_segment_id` (Active) and starts its acker.
    async fn open_segment(&mut self) -> Result<()> {
        let id = self.next_segment_id;
        let meta = SegmentMetadata {
            seg_no: id,
            create_time: self.shared.now_millis(),
            state: SegmentState::Active as i32,
            last_entry_id: -1,
            quorum: Some(embedded_quorum()),
            ..SegmentMetadata::default()
        };
        let revision = match self
            .shared
            .meta
            .store_segment_metadata(&self.log, &meta)
            .await
        {
            Ok(r) => r,
            Err(e) if is_takeover(&e) => {
                return Err(self
                    .validity
                    .lose(format!("segment {id} was created by another writer: {e}")));
            }
            Err(e) => return Err(e.into()),
        };
        let (acker, rx) = mpsc::unbounded_channel();
        let failed = Arc::new(AtomicBool::new(false));
        let acker_task = tokio::spawn(ack_segment(
            rx,
            LogMessageId::new(id, 0),
            self.validity.clone(),
            failed.clone(),
        ));
        tracing::debug!(log = %self.log, segment = id, "segment opened");
        self.current = Some(OpenSegment {
            id,
            meta,
            revision,
            next_entry_id: 0,
            bytes: 0,
            acker,
            acker_task,
            failed,
        });
        self.next_segment_id = id + 1;
        Ok(())
    }

    /// Waits for the segment's in-flight appends, completes it in the LogStore and CASes
    /// its metadata to Completed. Any failure invalidates the writer.
    async fn roll(&mut self) -> Result<()> {
        let Some(seg) = self.current.take() else {
            return Ok(());
        };
        let id = seg.id;
        let r = self.complete(seg).await;
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.is_writer_lost() => Err(e),
            Err(e) => Err(self
                .validity
                .lose(format!("completing segment {id} failed: {e}"))),
        }
    }

    async fn complete(&mut self, seg: OpenSegment) -> Result<()> {
        let OpenSegment {
            id,
            meta,
            revision,
            bytes,
            acker,
            acker_task,
            ..
        } = seg;
        drop(acker);
        let outcome = acker_task.await.map_err(|e| {
            self.validity
                .lose(format!("acker of segment {id} failed: {e}"))
        })?;
        self.validity.check()?;
        let logstore = &self.shared.logstore;
        let last = match logstore
            .complete_segment(self.log_id, id, outcome.last_acked)
            .await
        {
            Ok(last) => last,
            Err(e) if segment_lost(&e) => {
                return Err(self.validity.lose(format!("completing segment {id}: {e}")));
            }
            Err(e) => return Err(e.into()),
        };
        if last < outcome.last_acked {
            return Err(self.validity.lose(format!(
                "segment {id} completed at entry {last} but entry {} was acknowledged",
                outcome.last_acked
            )));
        }
        let completed = SegmentMetadata {
            state: SegmentState::Completed as i32,
            last_entry_id: last,
            completion_time: self.shared.now_millis(),
            size: i64::try_from(bytes).unwrap_or(i64::MAX),
            ..meta
        };
        match self
            .shared
            .meta
            .update_segment_metadata(&self.log, &completed, revision)
            .await
        {
            Ok(_) => {}
            Err(e) if is_takeover(&e) => {
                return Err(self.validity.lose(format!(
                    "segment {id} metadata changed under this writer: {e}"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        logstore.close_processor(self.log_id, id).await;
        tracing::debug!(log = %self.log, segment = id, last_entry_id = last, failed = outcome.failed, "segment completed");
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        if self.validity.check().is_err() {
            // Lost or closed: the segment is not ours to complete. Wait for the acker so
            // every issued write has its answer.
            if let Some(seg) = self.current.take() {
                drop(seg.acker);
                let _ = seg.acker_task.await;
            }
            self.validity.invalidate(Lost::Closed);
            return Ok(());
        }
        let r = match self.current.take() {
            Some(seg) => self.complete(seg).await,
            None => Ok(()),
        };
        self.validity.invalidate(Lost::Closed);
        r
    }
}

/// A taken append before its reply is attached.
struct PendingNoReply {
    entry_id: i64,
    receipt: AppendReceipt,
    permit: OwnedSemaphorePermit,
}

impl PendingNoReply {
    fn with_reply(self, reply: Reply) -> Pending {
        Pending {
            entry_id: self.entry_id,
            receipt: self.receipt,
            reply,
            _permit: self.permit,
        }
    }
}

/// Awaits a segment's receipts in id order and answers the writes. After the first failure
/// no later entry of the segment is acknowledged (entries cannot have holes).
async fn ack_segment(
    mut rx: mpsc::UnboundedReceiver<Pending>,
    first: LogMessageId,
    validity: Arc<Validity>,
    failed: Arc<AtomicBool>,
) -> AckOutcome {
    let segment_id = first.segment_id;
    let mut last_acked = first.entry_id - 1;
    let mut failure: Option<LogStoreError> = None;
    while let Some(p) = rx.recv().await {
        let expected = last_acked + 1;
        let result = p.receipt.await;
        let answer = match (&failure, result) {
            (None, Ok(id)) if id == p.entry_id && p.entry_id == expected => {
                last_acked = id;
                Ok(LogMessageId::new(segment_id, id))
            }
            (None, Ok(id)) => {
                failed.store(true, Ordering::Release);
                Err(validity.lose(format!(
                    "segment {segment_id}: entry {} acknowledged as {id}, expected {expected}",
                    p.entry_id
                )))
            }
            (None, Err(e)) => {
                failed.store(true, Ordering::Release);
                failure = Some(e.clone());
                if segment_lost(&e) {
                    Err(validity.lose(format!("segment {segment_id} is not writable: {e}")))
                } else {
                    Err(ClientError::LogStore(e))
                }
            }
            (Some(e), _) => {
                if segment_lost(e) {
                    Err(validity.lose(format!("segment {segment_id} is not writable: {e}")))
                } else {
                    Err(ClientError::LogStore(e.clone()))
                }
            }
        };
        let _ = p.reply.send(answer);
    }
    AckOutcome {
        last_acked,
        failed: failure.is_some(),
    }
}
