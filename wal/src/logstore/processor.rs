//! One segment's write path: the out-of-order window, the flush task and the writer.
//!
//! A [`SegmentProcessor`] owns one background task. Appends go into the
//! [`SequentialBuffer`] under a short lock and return an [`AppendReceipt`] at once ("Buffered");
//! the receipt resolves when the entry is durable ("Synced") or failed. An append may carry a
//! callback ([`OnDurable`]) instead, which the task calls in id order with the same outcome, so
//! a caller is answered without a task of its own waiting on a receipt. The task alone touches
//! the writer: it flushes on the policy ticker (through the injected [`Clock`]), when the
//! contiguous prefix reaches `max_flush_size`, when buffered bytes reach `max_bytes`, and
//! before it fences, completes or closes. On object storage a flush starts its block uploads
//! and returns, so consecutive flushes overlap (up to `max_flush_threads` blocks in flight);
//! on local disk a small block is written and queued for the journal's group commit (two at a
//! time), a large one is written and fsynced, and appends arriving meanwhile go into the next
//! block.
//!
//! Durability: an entry is acknowledged only when its block and every earlier block are
//! stored (object PUT succeeded, or `data.log` appended and fsynced). The first block that
//! fails makes the writer not-writable: that block's entries and every later one fail (8104
//! for a fence, 8103 otherwise), and later appends fail fast with the same error. Nothing
//! acknowledged is ever taken back.
//!
//! What it must never do: acknowledge out of order, retry a PUT after a fence, or sleep
//! outside the clock.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use storage::codec::HEADER_RECORD_LEN;
use storage::object::ObjectStorage;
use storage::segment::journal::Journal;
use storage::segment::local::{BlockInfo, BlockWrite, DATA_FILE, LocalSegmentWriter};
use storage::segment::object::{ObjectSegmentWriter, PreparedBlock, SegmentObjects};
use telemetry::Stopwatch;
use telemetry::catalog::ServerLogMetrics;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use super::buffer::{Admit, ReadyBatch, SequentialBuffer};
use super::error::{LogStoreError, Result, StorageKind};
use super::policy::{FormatVersion, SyncPolicy};
use crate::clock::{Clock, ClockRef};

/// Told once when an entry becomes durable (`Ok(entry id)`) or fails; see
/// [`SegmentProcessor::try_add_entry_with`].
pub type OnDurable = Box<dyn FnOnce(Result<i64>) + Send>;

/// Whoever waits for an entry: a receipt's channel, or a callback.
enum Waiter {
    Receipt(oneshot::Sender<Result<i64>>),
    Callback(Callback),
}

impl Waiter {
    fn send(self, r: Result<i64>) {
        match self {
            Waiter::Receipt(tx) => {
                let _ = tx.send(r);
            }
            Waiter::Callback(mut c) => {
                if let Some(f) = c.f.take() {
                    f(r);
                }
            }
        }
    }
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Waiter::Receipt(_) => "Receipt",
            Waiter::Callback(_) => "Callback",
        })
    }
}

/// A callback that is told even when the processor goes away without answering it (as a
/// receipt's channel is), so that nobody waits forever.
struct Callback {
    f: Option<OnDurable>,
    segment: Arc<str>,
}

impl Drop for Callback {
    fn drop(&mut self) {
        if let Some(f) = self.f.take() {
            f(Err(LogStoreError::WriterClosed {
                segment: self.segment.to_string(),
            }));
        }
    }
}

/// What [`SegmentProcessor::try_add_entry_with`] did.
#[derive(Debug)]
pub enum TryAdd {
    /// The entry was taken; its callback will be told.
    Taken,
    /// Taking it now would mean waiting for buffer space; nothing was taken and the callback
    /// was not made. [`add_entry_with`](SegmentProcessor::add_entry_with) waits.
    WouldWait,
}

/// Where a processor's writer stands, as readers in this process see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterPhase {
    /// Taking appends: more entries may become durable.
    Writable,
    /// Reopened on existing data: it serves fence and complete, never new entries.
    Recovery,
    /// Fenced or completed: storage shows the end of the segment (a fence or a footer).
    Sealed,
    /// Closed, or a block failed: no more entries come from this processor, but storage
    /// does not show an end.
    Inactive,
}

/// What [`SegmentProcessor::subscribe_durable`] publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurableState {
    /// The last entry id acknowledged durable (-1 when none).
    pub last_entry_id: i64,
    /// The writer's phase.
    pub phase: WriterPhase,
}

/// Resolves to the entry id once the entry is durable, or to the error that made it fail.
#[derive(Debug)]
#[must_use = "an append is durable only when its receipt resolves"]
pub struct AppendReceipt {
    rx: oneshot::Receiver<Result<i64>>,
    segment: Arc<str>,
}

impl Future for AppendReceipt {
    type Output = Result<i64>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                Err(LogStoreError::WriterClosed {
                    segment: self.segment.to_string(),
                })
            })
        })
    }
}

/// What the processor accepts.
#[derive(Debug, Clone)]
enum Mode {
    Writable,
    /// Reopened on existing data: fence and complete only.
    Recovery,
    /// Fenced by us or found fenced.
    Fenced,
    Finalized,
    /// A block failed: 8103 or 8104.
    Failed(LogStoreError),
    Closed,
}

#[derive(Debug)]
struct State {
    buffer: SequentialBuffer<Waiter>,
    mode: Mode,
    block_count: usize,
    /// What readers are told (published through `Shared::durable`).
    phase: WriterPhase,
}

struct Shared {
    segment: Arc<str>,
    state: Mutex<State>,
    /// Wakes the task for a flush.
    wake: Notify,
    /// Tells an idle task (nothing buffered, its ticker stopped) that an entry arrived, so
    /// that it starts the ticker.
    arm: Notify,
    /// Wakes appends waiting for buffer space or a mode change.
    space: Notify,
    policy: SyncPolicy,
    /// Flush as soon as the task is idle (group commit) instead of waiting for the ticker:
    /// on local disk a flush is one write and one fsync, so an idle flusher should not make
    /// an append wait up to `maxIntervalForLocalStorage`. Appends arriving during a flush go
    /// together into the next one. Object storage keeps the ticker (each flush is a PUT).
    eager: bool,
    /// The last durable id and phase, for readers in this process.
    durable: watch::Sender<DurableState>,
    /// Clock milliseconds of the last append, fence or completion (idle-processor cleanup).
    last_active: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the durable id and phase of `st` (called with the state lock held, so
    /// publications follow the order of state changes).
    fn publish(&self, st: &State) {
        self.durable.send_replace(DurableState {
            last_entry_id: st.buffer.durable_id(),
            phase: st.phase,
        });
    }

    /// Sets the phase readers see and publishes it. `Sealed` is final.
    fn set_phase(&self, phase: WriterPhase) {
        let mut st = self.lock();
        if st.phase != WriterPhase::Sealed {
            st.phase = phase;
        }
        self.publish(&st);
    }

    fn mode_error(&self, mode: &Mode) -> Option<LogStoreError> {
        let segment = self.segment.to_string();
        match mode {
            Mode::Writable => None,
            Mode::Recovery => Some(LogStoreError::InRecoveryMode { segment }),
            Mode::Fenced => Some(LogStoreError::SegmentFenced {
                segment,
                detail: "the segment was fenced".into(),
            }),
            Mode::Finalized => Some(LogStoreError::Finalized { segment }),
            Mode::Failed(e) => Some(e.clone()),
            Mode::Closed => Some(LogStoreError::WriterClosed { segment }),
        }
    }
}

enum Command {
    Fence(oneshot::Sender<Result<i64>>),
    Complete(i64, oneshot::Sender<Result<i64>>),
    Close(oneshot::Sender<()>),
}

/// What a local segment's footer records as its LAC when the segment is completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FooterLac {
    /// The last entry written (embedded mode: the LogStore is the only replica).
    #[default]
    LastEntry,
    /// The LAC the completing client names (service mode: the quorum's completion target,
    /// which bounds what replicas serve, spec §5.4).
    Given,
}

/// Where a processor's segment lives.
#[derive(Debug, Clone)]
pub enum SegmentLocation {
    /// `<root>/<logId>/<segId>/N.blk` objects.
    Object(ObjectStorage),
    /// The directory holding `data.log`.
    Local(PathBuf),
}

/// The write path of one (log, segment): see the module docs.
pub struct SegmentProcessor {
    log_id: i64,
    segment_id: i64,
    shared: Arc<Shared>,
    clock: ClockRef,
    commands: mpsc::UnboundedSender<Command>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for SegmentProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("SegmentProcessor")
            .field("log_id", &self.log_id)
            .field("segment_id", &self.segment_id)
            .field("mode", &st.mode)
            .field("durable", &st.buffer.durable_id())
            .field("blocks", &st.block_count)
            .finish()
    }
}

impl SegmentProcessor {
    /// Opens the processor of `segment_id` in `log_id` and starts its task. A segment that
    /// already holds data (blocks, a footer, a fence, or a `data.log`) is opened in recovery
    /// mode: appends fail with 2218 (8104 when fenced), fence and complete work.
    // The LogStore is the only caller and passes its own settings through.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        location: SegmentLocation,
        log_id: i64,
        segment_id: i64,
        policy: SyncPolicy,
        version: FormatVersion,
        clock: ClockRef,
        journal: Option<Arc<Journal>>,
        footer_lac: FooterLac,
        log_ns: Option<&str>,
    ) -> Result<SegmentProcessor> {
        let segment: Arc<str> = format!("log {log_id} segment {segment_id}").into();
        let (writer, mode, durable, blocks) = match location {
            SegmentLocation::Object(storage) => {
                open_object(&segment, storage, log_id, segment_id, version).await?
            }
            SegmentLocation::Local(dir) => open_local(&segment, dir, version, journal).await?,
        };
        let phase = match mode {
            Mode::Writable => WriterPhase::Writable,
            Mode::Recovery => WriterPhase::Recovery,
            Mode::Fenced | Mode::Finalized => WriterPhase::Sealed,
            Mode::Failed(_) | Mode::Closed => WriterPhase::Inactive,
        };
        let (durable_tx, _) = watch::channel(DurableState {
            last_entry_id: durable,
            phase,
        });
        let interval = match writer {
            Writer::Local(_) => policy.max_interval_local,
            _ => policy.max_interval,
        };
        let eager = matches!(writer, Writer::Local(_));
        let shared = Arc::new(Shared {
            segment,
            state: Mutex::new(State {
                buffer: SequentialBuffer::new(durable + 1, policy.max_entries),
                mode,
                block_count: blocks,
                phase,
            }),
            wake: Notify::new(),
            arm: Notify::new(),
            space: Notify::new(),
            policy,
            eager,
            durable: durable_tx,
            last_active: AtomicU64::new(clock.now_millis()),
        });
        let (commands, rx) = mpsc::unbounded_channel();
        let flusher = Flusher {
            shared: shared.clone(),
            writer,
            clock: clock.clone(),
            footer_lac,
            metrics: match log_ns {
                Some(ns) => ServerLogMetrics::for_log_in(ns, log_id),
                None => ServerLogMetrics::for_log(log_id),
            },
            log_id,
            segment_id,
            finalized_last: None,
            in_flight: FuturesOrdered::new(),
            deferred: false,
        };
        let task = tokio::spawn(flusher.run(rx, interval));
        Ok(SegmentProcessor {
            log_id,
            segment_id,
            shared,
            clock,
            commands,
            task: Mutex::new(Some(task)),
        })
    }

    /// The log id.
    pub fn log_id(&self) -> i64 {
        self.log_id
    }

    /// The segment id.
    pub fn segment_id(&self) -> i64 {
        self.segment_id
    }

    /// Takes entry `entry_id` (phase one, "Buffered") and returns a receipt that resolves when
    /// it is durable (phase two, "Synced"). Waits while buffered and in-flight bytes reach
    /// `max_bytes`. An id already durable resolves at once; an id already buffered or in
    /// flight resolves with it (its data is ignored).
    ///
    /// Errors: 2200 beyond the window (retriable), 2215 negative id, 2218 recovery mode,
    /// 8104 fenced, 2216 finalized, 8103 after a storage failure, 2217 closed.
    pub async fn add_entry(&self, entry_id: i64, data: Bytes) -> Result<AppendReceipt> {
        let (tx, rx) = oneshot::channel();
        self.admit(entry_id, &data, move || Waiter::Receipt(tx))
            .await?;
        Ok(AppendReceipt {
            rx,
            segment: self.shared.segment.clone(),
        })
    }

    /// [`add_entry`](Self::add_entry) with a callback instead of a receipt: `on_durable` is
    /// made once the entry is taken and called exactly once, with the entry id when it is
    /// durable or with the error that made it fail. It runs on the processor's task (or at
    /// once, in this call, for an id already durable), in id order, so it must be quick and
    /// must not block. Errors as for `add_entry`; on an error `on_durable` is not made.
    pub async fn add_entry_with(
        &self,
        entry_id: i64,
        data: Bytes,
        on_durable: impl FnOnce() -> OnDurable,
    ) -> Result<()> {
        self.admit(entry_id, &data, self.callback(on_durable)).await
    }

    /// [`add_entry_with`](Self::add_entry_with) without waiting: [`TryAdd::WouldWait`] (and
    /// nothing made or taken) where `add_entry_with` would wait for buffer space. Lets a
    /// caller that orders its appends itself take the common case in line and queue the rest.
    pub fn try_add_entry_with(
        &self,
        entry_id: i64,
        data: &Bytes,
        on_durable: impl FnOnce() -> OnDurable,
    ) -> Result<TryAdd> {
        Ok(
            match self.try_admit(entry_id, data, self.callback(on_durable))? {
                None => TryAdd::Taken,
                Some(_) => TryAdd::WouldWait,
            },
        )
    }

    /// Makes the waiter of a callback append (only when the entry is taken).
    fn callback(&self, on_durable: impl FnOnce() -> OnDurable) -> impl FnOnce() -> Waiter {
        let segment = self.shared.segment.clone();
        move || {
            Waiter::Callback(Callback {
                f: Some(on_durable()),
                segment,
            })
        }
    }

    /// Takes the entry, waiting for buffer space; `waiter` is made only when it is taken.
    async fn admit<F: FnOnce() -> Waiter>(
        &self,
        entry_id: i64,
        data: &Bytes,
        waiter: F,
    ) -> Result<()> {
        let mut waiter = waiter;
        loop {
            let space = self.shared.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            waiter = match self.try_admit(entry_id, data, waiter)? {
                None => return Ok(()),
                Some(unmade) => unmade,
            };
            space.await;
        }
    }

    /// One attempt under the state lock: `Ok(None)` when taken (the waiter made and kept, or
    /// answered at once for an id already durable), `Ok(Some(waiter))` handed back unmade when
    /// the entry must wait for space (a flush was asked for).
    fn try_admit<F: FnOnce() -> Waiter>(
        &self,
        entry_id: i64,
        data: &Bytes,
        waiter: F,
    ) -> Result<Option<F>> {
        let policy = &self.shared.policy;
        self.touch();
        let mut st = self.shared.lock();
        if entry_id >= 0 && entry_id <= st.buffer.durable_id() {
            drop(st);
            waiter().send(Ok(entry_id));
            return Ok(None);
        }
        if let Some(e) = self.shared.mode_error(&st.mode) {
            return Err(e);
        }
        if entry_id < 0 {
            return Err(LogStoreError::InvalidEntryId {
                entry_id,
                reason: "entry ids are not negative".into(),
            });
        }
        let b = &st.buffer;
        let end = b.window_end();
        if entry_id >= end {
            self.shared.wake.notify_one();
            return Err(LogStoreError::BufferFull {
                entry_id,
                first: b.first_unflushed(),
                end,
            });
        }
        let pressure = b.buffered_bytes() + b.in_flight_bytes();
        // Wait only when a flush can free space; bytes held by non-contiguous entries alone
        // must not block the entry that fills their gap.
        if pressure >= policy.max_bytes
            && b.ready_bytes() + b.in_flight_bytes() > 0
            && !b.holds(entry_id)
        {
            self.shared.wake.notify_one();
            return Ok(Some(waiter));
        }
        let was_idle = st.buffer.is_empty();
        match st.buffer.push(entry_id, data.clone(), waiter()) {
            Ok(Admit::Waiting) => {}
            Ok(Admit::Durable(w)) => {
                drop(st);
                w.send(Ok(entry_id));
                return Ok(None);
            }
            // Checked above; should it happen, the waiter is told rather than dropped.
            Err((e, w)) => {
                drop(st);
                w.send(Err(e));
                return Ok(None);
            }
        }
        let b = &st.buffer;
        if self.shared.eager
            || b.ready_bytes() >= policy.max_flush_size
            || b.buffered_bytes() >= policy.max_bytes
        {
            self.shared.wake.notify_one();
        } else if was_idle {
            self.shared.arm.notify_one();
        }
        Ok(None)
    }

    /// Fences the segment: stops appends (8104), flushes the contiguous prefix, places the
    /// fence (a fence object after the last block, or `write.fence`) and returns the last
    /// entry id stored (-1 when empty). Entries left in the window fail with 8104.
    pub async fn fence(&self) -> Result<i64> {
        self.touch();
        let (tx, rx) = oneshot::channel();
        self.send(Command::Fence(tx))?;
        rx.await.map_err(|_| self.closed())?
    }

    /// Completes the segment: stops appends (2216), flushes and awaits everything
    /// contiguous, writes the footer and returns the last entry id. Idempotent (a second call
    /// returns the first one's answer). With [`FooterLac::LastEntry`] `lac` is ignored as in
    /// Go's embedded mode (the footer's LAC is the last block's last entry); with
    /// [`FooterLac::Given`] a local footer records `lac` (service mode, spec §5.4).
    pub async fn complete(&self, lac: i64) -> Result<i64> {
        self.touch();
        let (tx, rx) = oneshot::channel();
        self.send(Command::Complete(lac, tx))?;
        rx.await.map_err(|_| self.closed())?
    }

    /// Flushes what is contiguous, fails the rest (2217) and stops the task.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Close(tx)).is_ok() {
            let _ = rx.await;
        }
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    fn touch(&self) {
        self.shared
            .last_active
            .store(self.clock.now_millis(), Ordering::Relaxed);
    }

    /// Whether nothing is buffered or in flight and nothing was appended, fenced or completed
    /// for `max_idle` (by the processor's clock): closing it then loses nothing.
    pub(crate) fn is_idle(&self, max_idle: std::time::Duration) -> bool {
        let idle_for = self
            .clock
            .now_millis()
            .saturating_sub(self.shared.last_active.load(Ordering::Relaxed));
        let st = self.shared.lock();
        st.buffer.is_empty()
            && st.buffer.in_flight_bytes() == 0
            && u128::from(idle_for) >= max_idle.as_millis()
    }

    /// The last durable entry id (-1 when none).
    pub fn last_entry_id(&self) -> i64 {
        self.shared.lock().buffer.durable_id()
    }

    /// Blocks stored so far.
    pub fn block_count(&self) -> usize {
        self.shared.lock().block_count
    }

    /// A receiver of the last durable entry id and the writer's phase. It changes when
    /// entries become durable (after their receipts resolve), when a fence or completion has
    /// reached storage ([`WriterPhase::Sealed`]), and when the processor closes or fails
    /// ([`WriterPhase::Inactive`]).
    pub(crate) fn subscribe_durable(&self) -> watch::Receiver<DurableState> {
        self.shared.durable.subscribe()
    }

    /// The current [`DurableState`].
    pub(crate) fn durable_state(&self) -> DurableState {
        *self.shared.durable.borrow()
    }

    fn send(&self, cmd: Command) -> Result<()> {
        self.commands.send(cmd).map_err(|_| self.closed())
    }

    fn closed(&self) -> LogStoreError {
        LogStoreError::WriterClosed {
            segment: self.shared.segment.to_string(),
        }
    }
}

type Opened = (Writer, Mode, i64, usize);

async fn open_object(
    segment: &str,
    storage: ObjectStorage,
    log_id: i64,
    segment_id: i64,
    version: FormatVersion,
) -> Result<Opened> {
    let objects = SegmentObjects::new(storage, log_id, segment_id);
    let err = |e| LogStoreError::storage(segment, StorageKind::Object, e);
    let scan = objects.scan_blocks().await.map_err(err)?;
    let last = scan.blocks.last().map_or(-1, |b| b.last_entry_id);
    if scan.blocks.is_empty() && scan.footer.is_none() && scan.fenced_at.is_none() {
        let w = ObjectSegmentWriter::new(objects, 0, version.as_u16()).map_err(err)?;
        return Ok((Writer::Object(w), Mode::Writable, -1, 0));
    }
    if scan.fenced_at.is_some() {
        return Ok((
            Writer::FencedObject(objects),
            Mode::Fenced,
            last,
            scan.blocks.len(),
        ));
    }
    let w = ObjectSegmentWriter::recover(objects, version.as_u16())
        .await
        .map_err(err)?;
    let last = w.last_durable_entry_id();
    let blocks = w.durable_blocks().len();
    Ok((Writer::Object(w), Mode::Recovery, last, blocks))
}

async fn open_local(
    segment: &str,
    dir: PathBuf,
    version: FormatVersion,
    journal: Option<Arc<Journal>>,
) -> Result<Opened> {
    let err = |e| LogStoreError::storage(segment, StorageKind::Local, e);
    let path = dir.join(DATA_FILE);
    let len = match crate::clock::blocking::fs::metadata(&path).await {
        Ok(m) => Some(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(err(storage::Error::Backend {
                op: "stat",
                path: path.display().to_string(),
                source: Box::new(e),
            }));
        }
    };
    let mut exists = len.is_some();
    if let Some(len) = len
        && len < HEADER_RECORD_LEN as u64
    {
        // A create that did not get its header written (a crash, or a full disk whose clean-up
        // failed too): the file never held an entry, since none is taken before the header
        // is synced. It is created afresh rather than read as a damaged segment.
        tracing::warn!(segment, path = %path.display(), len, "segment file shorter than its header; creating it again");
        crate::clock::blocking::fs::remove_file(&path)
            .await
            .map_err(|e| {
                err(storage::Error::Backend {
                    op: "remove",
                    path: path.display().to_string(),
                    source: Box::new(e),
                })
            })?;
        exists = false;
    }
    if exists {
        let (w, recovery) = LocalSegmentWriter::open_for_recovery(&dir)
            .await
            .map_err(err)?;
        let mode = if recovery.fenced {
            Mode::Fenced
        } else {
            Mode::Recovery
        };
        return Ok((
            Writer::Local(w),
            mode,
            recovery.last_entry_id,
            recovery.blocks.len(),
        ));
    }
    let mut w = LocalSegmentWriter::create(&dir, 0, version.as_u16())
        .await
        .map_err(err)?;
    if let Some(journal) = journal {
        w = w.with_journal(journal);
    }
    Ok((Writer::Local(w), Mode::Writable, -1, 0))
}

#[derive(Debug)]
enum Writer {
    Object(ObjectSegmentWriter),
    /// Found fenced at open: no writer can continue it; fence and complete report the fence.
    FencedObject(SegmentObjects),
    Local(LocalSegmentWriter),
}

/// A block on its way to durability: an object upload, or a local block waiting for the
/// journal's group commit.
type InFlight = Pin<Box<dyn Future<Output = Done> + Send>>;

/// How an [`InFlight`] block ended.
enum Done {
    Uploaded(PreparedBlock, storage::Result<()>),
    Journaled(BlockInfo, storage::Result<()>),
}

/// Local blocks waiting for the journal at once, per segment: two keep the journal busy (the
/// next block is queued while the previous ones sync) and let appends arriving meanwhile
/// gather into the block after.
const LOCAL_IN_FLIGHT: usize = 2;

/// The task side: the only owner of the writer.
struct Flusher {
    shared: Arc<Shared>,
    writer: Writer,
    clock: ClockRef,
    /// This log's flush metrics (`woodpecker_server_file_flush_latency`, `..._bytes_written`).
    metrics: ServerLogMetrics,
    log_id: i64,
    segment_id: i64,
    footer_lac: FooterLac,
    finalized_last: Option<i64>,
    /// Blocks in flight, oldest first. Consecutive flushes overlap (object segments: up to
    /// `max_flush_threads` uploads; local segments: up to [`LOCAL_IN_FLIGHT`] journal
    /// commits), but blocks are acknowledged strictly in order: an entry is durable only once
    /// its block and every earlier one are stored.
    in_flight: FuturesOrdered<InFlight>,
    /// A flush was asked for (size trigger, tick or wake-up) while the blocks in flight were
    /// at their limit; it starts when one completes.
    deferred: bool,
}

impl Flusher {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        interval: std::time::Duration,
    ) {
        // The ticker has a fixed period, like Go's: ticks fall on `origin + k * period`, one
        // interval after the previous tick rather than after the previous flush, so an entry
        // waits at most one interval however long flushes take (ticks a slow flush overran
        // are skipped). It runs only while something is buffered or in flight: an idle
        // segment (a quiet log, a partition nobody writes) does not wake every interval, and
        // the first entry that arrives starts it again (`arm`) on the same grid of ticks, so
        // stopping changes no entry's wait.
        let period = u64::try_from(interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let origin = self.clock.now_millis();
        let next_on_grid = |now: u64| {
            let k = now.saturating_sub(origin) / period + 1;
            origin.saturating_add(k.saturating_mul(period))
        };
        let mut next_tick: Option<u64> = None;
        loop {
            let idle = self.in_flight.is_empty() && self.shared.lock().buffer.is_empty();
            if idle {
                next_tick = None;
            } else if next_tick.is_none() {
                next_tick = Some(next_on_grid(self.clock.now_millis()));
            }
            let clock = self.clock.clone();
            let wait = next_tick.map_or(std::time::Duration::ZERO, |t| {
                std::time::Duration::from_millis(t.saturating_sub(clock.now_millis()))
            });
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    Some(Command::Fence(reply)) => {
                        let r = self.fence().await;
                        if r.is_ok() {
                            self.shared.set_phase(WriterPhase::Sealed);
                        }
                        let _ = reply.send(r);
                    }
                    Some(Command::Complete(lac, reply)) => {
                        let r = self.complete(lac).await;
                        if r.is_ok() {
                            self.shared.set_phase(WriterPhase::Sealed);
                        }
                        let _ = reply.send(r);
                    }
                    Some(Command::Close(reply)) => {
                        self.close().await;
                        self.shared.set_phase(WriterPhase::Inactive);
                        let _ = reply.send(());
                        return;
                    }
                    None => {
                        self.close().await;
                        self.shared.set_phase(WriterPhase::Inactive);
                        return;
                    }
                },
                Some(done) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.completed(done).await;
                    if self.deferred {
                        self.flush().await;
                    }
                }
                () = self.shared.wake.notified() => self.flush().await,
                // An entry reached the idle task: the next turn starts the ticker.
                () = self.shared.arm.notified(), if next_tick.is_none() => {}
                () = clock.sleep(wait), if next_tick.is_some() => {
                    self.flush().await;
                    next_tick = Some(next_on_grid(self.clock.now_millis()));
                }
            }
        }
    }

    fn segment(&self) -> &str {
        &self.shared.segment
    }

    /// Starts a flush of the contiguous prefix as blocks: object uploads, or a local block
    /// that either waits for its own write and fsync (large blocks, or no journal) or is
    /// queued for the journal's group commit. The task acknowledges queued blocks as they
    /// complete, in order; a flush asked for while the limit of blocks is in flight
    /// (`max_flush_threads` uploads, [`LOCAL_IN_FLIGHT`] journal commits) waits for one of
    /// them, and entries arriving meanwhile gather into the next block. One batch per call,
    /// so that a steady stream of appends cannot starve fence, complete and close.
    async fn flush(&mut self) {
        let limit = match self.writer {
            Writer::Object(_) => self.shared.policy.max_flush_threads,
            _ => LOCAL_IN_FLIGHT,
        };
        if self.in_flight.len() >= limit {
            self.deferred = true;
            return;
        }
        self.deferred = false;
        let batch = self.shared.lock().buffer.take_ready();
        if let Some(batch) = batch {
            self.flush_batch(batch).await;
        }
    }

    async fn flush_batch(&mut self, batch: ReadyBatch) {
        let span = tracing::debug_span!(
            target: telemetry::trace::SPAN_TARGET,
            "logstore.flush",
            log_id = self.log_id,
            segment_id = self.segment_id,
            first_entry_id = batch.first_id,
            entries = batch.entries.len(),
            bytes = batch.bytes,
        );
        match &self.writer {
            Writer::Object(_) => self.start_uploads(batch, span),
            Writer::Local(_) => self.flush_local(batch, span).await,
            Writer::FencedObject(objects) => {
                let e = LogStoreError::SegmentFenced {
                    segment: self.shared.segment.to_string(),
                    detail: format!("{} was fenced before this writer opened", objects.prefix()),
                };
                self.fail(e);
            }
        }
    }

    /// Flushes everything contiguous and waits until every upload in flight is durable or
    /// failed (before a fence, a footer or a close).
    async fn flush_all(&mut self) {
        self.deferred = false;
        let batch = self.shared.lock().buffer.take_ready();
        if let Some(batch) = batch {
            self.flush_batch(batch).await;
        }
        while let Some(done) = self.in_flight.next().await {
            self.completed(done).await;
        }
    }

    /// Writes `batch` as one block: acknowledged at once when it was synced in `data.log`,
    /// queued behind the blocks in flight when it waits for the journal.
    async fn flush_local(&mut self, batch: ReadyBatch, span: tracing::Span) {
        let Writer::Local(w) = &self.writer else {
            return;
        };
        let timer = Stopwatch::start();
        let bytes = batch.bytes as u64;
        let metrics = self.metrics;
        match w
            .write_block(batch.first_id, &batch.entries)
            .instrument(span.clone())
            .await
        {
            Ok(BlockWrite::Durable(info)) => {
                metrics.flush_latency.observe(timer.elapsed_nanos());
                metrics.flush_bytes.add(bytes);
                self.acknowledge(info.last_entry_id);
            }
            Ok(BlockWrite::Journaled(block)) => {
                self.in_flight.push_back(Box::pin(
                    async move {
                        let (info, r) = block.durable().await;
                        if r.is_ok() {
                            metrics.flush_latency.observe(timer.elapsed_nanos());
                            metrics.flush_bytes.add(bytes);
                        }
                        Done::Journaled(info, r)
                    }
                    .instrument(span),
                ));
            }
            Err(e) => {
                let e = LogStoreError::block_failed(self.segment(), &e);
                self.fail(e);
            }
        }
    }

    /// Prepares `batch` as blocks and queues their uploads (with retries) behind the ones in
    /// flight.
    fn start_uploads(&mut self, batch: ReadyBatch, span: tracing::Span) {
        let metrics = self.metrics;
        let policy = self.shared.policy.clone();
        let segment = self.shared.segment.clone();
        let Writer::Object(w) = &mut self.writer else {
            return;
        };
        let mut prepared = Vec::new();
        for group in split_blocks(batch.entries, policy.max_flush_size) {
            match w.prepare_block(&group) {
                Ok(b) => prepared.push(b),
                Err(e) => {
                    let e = LogStoreError::block_failed(&segment, &e);
                    self.fail(e);
                    return;
                }
            }
        }
        let objects = w.objects().clone();
        for block in prepared {
            let objects = objects.clone();
            let clock = self.clock.clone();
            let policy = policy.clone();
            self.in_flight.push_back(Box::pin(
                async move {
                    let timer = Stopwatch::start();
                    let r = upload(&objects, &block, clock.as_ref(), &policy).await;
                    if r.is_ok() {
                        metrics.flush_latency.observe(timer.elapsed_nanos());
                        metrics.flush_bytes.add(block.bytes.len() as u64);
                    }
                    Done::Uploaded(block, r)
                }
                .instrument(span.clone()),
            ));
        }
    }

    /// The oldest block in flight finished: acknowledge its entries, or fail the writer (and
    /// drop the later blocks in flight: their entries fail with it).
    async fn completed(&mut self, done: Done) {
        let segment = self.shared.segment.clone();
        let (block_number, r) = match (&mut self.writer, done) {
            (Writer::Object(w), Done::Uploaded(block, r)) => {
                let r = r.and_then(|()| w.block_durable(&block).map(|_| ()));
                (
                    block.header.block_number,
                    r.map(|()| block.header.last_entry_id),
                )
            }
            (Writer::Local(w), Done::Journaled(info, r)) => (
                info.block_number,
                w.confirm(info, r).await.map(|i| i.last_entry_id),
            ),
            _ => return,
        };
        match r {
            Ok(last) => self.acknowledge(last),
            Err(e) => {
                let e = LogStoreError::block_failed(&segment, &e);
                tracing::warn!(segment = %segment, block = block_number, error = %e, "block failed; the segment is not writable");
                self.in_flight = FuturesOrdered::new();
                self.fail(e);
            }
        }
    }

    fn acknowledge(&self, last_entry_id: i64) {
        let woken = {
            let mut st = self.shared.lock();
            st.block_count += 1;
            st.buffer.mark_durable(last_entry_id)
        };
        for (id, w) in woken {
            w.send(Ok(id));
        }
        // After the receipts: a reader woken by this never sees an entry before its writer
        // could.
        self.shared.publish(&self.shared.lock());
        self.shared.space.notify_waiters();
    }

    /// The writer failed: everything not durable fails with `e`, and so do later appends.
    fn fail(&self, e: LogStoreError) {
        let failed = {
            let mut st = self.shared.lock();
            if matches!(st.mode, Mode::Writable) {
                st.mode = Mode::Failed(e.clone());
            }
            st.buffer.fail_all()
        };
        for (_, w) in failed {
            w.send(Err(e.clone()));
        }
        self.shared.set_phase(WriterPhase::Inactive);
        self.shared.space.notify_waiters();
    }

    /// Sets `mode` unless a terminal state says more, flushes, and fails what is left.
    async fn stop_appends(&mut self, mode: Mode, leftover: LogStoreError) {
        {
            let mut st = self.shared.lock();
            if matches!(st.mode, Mode::Writable | Mode::Recovery) || matches!(mode, Mode::Finalized)
            {
                st.mode = mode;
            }
        }
        self.shared.space.notify_waiters();
        self.flush_all().await;
        let failed = self.shared.lock().buffer.fail_all();
        for (_, w) in failed {
            w.send(Err(leftover.clone()));
        }
    }

    async fn fence(&mut self) -> Result<i64> {
        let fenced = LogStoreError::SegmentFenced {
            segment: self.shared.segment.to_string(),
            detail: "the segment was fenced".into(),
        };
        if self.finalized_last.is_none() {
            self.stop_appends(Mode::Fenced, fenced).await;
        }
        let segment = self.shared.segment.clone();
        match &self.writer {
            Writer::Object(w) => w
                .objects()
                .fence()
                .await
                .map(|o| o.last_entry_id)
                .map_err(|e| LogStoreError::storage(&segment, StorageKind::Object, e)),
            Writer::FencedObject(objects) => objects
                .fence()
                .await
                .map(|o| o.last_entry_id)
                .map_err(|e| LogStoreError::storage(&segment, StorageKind::Object, e)),
            Writer::Local(w) => {
                w.fence()
                    .await
                    .map_err(|e| LogStoreError::storage(&segment, StorageKind::Local, e))?;
                Ok(w.status().await.last_entry_id)
            }
        }
    }

    async fn complete(&mut self, lac: i64) -> Result<i64> {
        if let Some(last) = self.finalized_last {
            return Ok(last);
        }
        let finalized = LogStoreError::Finalized {
            segment: self.shared.segment.to_string(),
        };
        self.stop_appends(Mode::Finalized, finalized).await;
        let segment = self.shared.segment.clone();
        let last = match &mut self.writer {
            Writer::Object(w) => w
                .finalize()
                .await
                .map(|f| f.last_entry_id())
                .map_err(|e| LogStoreError::storage(&segment, StorageKind::Object, e))?,
            // A segment fenced before we opened ends at its fence (the Go v0.1.13 takeover
            // shape); storage offers no footer over someone else's fenced blocks.
            Writer::FencedObject(objects) => objects
                .fence()
                .await
                .map(|o| o.last_entry_id)
                .map_err(|e| LogStoreError::storage(&segment, StorageKind::Object, e))?,
            Writer::Local(w) => {
                let lac = match self.footer_lac {
                    FooterLac::LastEntry => None,
                    FooterLac::Given => Some(lac),
                };
                w.finalize(lac)
                    .await
                    .map_err(|e| LogStoreError::storage(&segment, StorageKind::Local, e))?;
                w.status().await.last_entry_id
            }
        };
        tracing::debug!(segment = %segment, lac, last, "segment completed");
        self.finalized_last = Some(last);
        Ok(last)
    }

    async fn close(&mut self) {
        let closed = LogStoreError::WriterClosed {
            segment: self.shared.segment.to_string(),
        };
        self.stop_appends(Mode::Closed, closed).await;
    }
}

/// Retries one block upload on retriable errors (100 ms doubling to `retry_interval`, through
/// the clock), never after a fence.
async fn upload(
    objects: &SegmentObjects,
    block: &PreparedBlock,
    clock: &dyn Clock,
    policy: &SyncPolicy,
) -> storage::Result<()> {
    let mut attempt = 0;
    loop {
        match objects.put_block(block).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_retriable() && attempt < policy.max_flush_retries => {
                attempt += 1;
                tracing::debug!(key = %objects.block_key(block.header.block_number), attempt, error = %e, "retrying block upload");
                clock.sleep(policy.backoff(attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Splits entries into blocks, closing each once its payload reaches `max_flush_size` (so a
/// block can exceed it by one entry).
fn split_blocks(entries: Vec<Bytes>, max_flush_size: usize) -> Vec<Vec<Bytes>> {
    let mut blocks = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for e in entries {
        size += e.len();
        current.push(e);
        if size >= max_flush_size {
            blocks.push(std::mem::take(&mut current));
            size = 0;
        }
    }
    if !current.is_empty() {
        blocks.push(current);
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_close_once_they_reach_the_flush_size() {
        let e = |n: usize| Bytes::from(vec![0u8; n]);
        let sizes = |blocks: Vec<Vec<Bytes>>| -> Vec<Vec<usize>> {
            blocks
                .into_iter()
                .map(|b| b.iter().map(Bytes::len).collect())
                .collect()
        };
        assert_eq!(
            sizes(split_blocks(vec![e(3), e(3), e(5), e(1), e(1)], 5)),
            vec![vec![3, 3], vec![5], vec![1, 1]]
        );
        assert_eq!(sizes(split_blocks(vec![e(10)], 5)), vec![vec![10]]);
        assert!(split_blocks(Vec::new(), 5).is_empty());
    }
}
