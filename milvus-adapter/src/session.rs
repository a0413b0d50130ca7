//! The adapter's state: [`Adapter`] (the sessions of one server) and its sessions.
//!
//! A session is one open of a pchannel. A read-write session holds the pchannel's durable
//! term (see [`crate::terms`]), the engine's [`LogWriter`] of its log and the log's auditor
//! (which marks truncated segments and collects them after the retention TTL, as Go runs
//! it inside an open writer). A read-only session holds nothing but its name.
//!
//! # Fencing
//!
//! A read-write open claims the term record first (refused when the durable term is
//! higher), then opens the writer, which fences and completes every active segment of the
//! log: from then on every older writer's appends fail in the engine with a lost writer
//! (1405). A session whose writer is lost asks the term record who holds the pchannel:
//!
//! * another owner (a higher term, or a later open with the same term): the session is
//!   **fenced** for good; its writer and auditor are closed and every append answers
//!   [`AdapterError::Fenced`];
//! * still this session: the writer was taken over by something that is not a newer open
//!   (an open that lost the term race after opening its writer, or a writer outside the
//!   adapter). The session opens a new writer (fencing that one in turn) and the appends that
//!   failed answer [`AdapterError::Unavailable`], which Milvus retries.
//!
//! Between a newer open's term claim and its writer's takeover, an older writer's appends
//! still succeed; once the newer open has returned, none does.
//!
//! # Lifetime
//!
//! A session ends with `Close`, with the server's shutdown, or when it has had no append
//! stream attached and no call for [`AdapterConfig::session_ttl`] (its client is gone).
//! Session ids are random 64-bit numbers, so an id from before a restart never names a
//! session of the restarted server.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use proto::meta::{SegmentMetadata, SegmentState};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wal::client::{AuditorHandle, Client, ClientError, LogHandle, LogReader, LogWriter};
use wal::clock::ClockRef;
use wal::message::{LogMessageId, WriteMessage};
use wal::meta::keys::valid_log_name;
use wal::meta::kv::Kv;

use crate::error::AdapterError;
use crate::terms::Terms;

/// Settings of the adapter.
#[derive(Debug, Clone)]
pub struct AdapterConfig {
    /// How long a session lives without an attached append stream and without a call before
    /// it is closed (its client is presumed gone). Default 60 s.
    pub session_ttl: Duration,
    /// Payload bytes one append stream may have in flight before the server stops reading
    /// it (backpressure through HTTP/2 flow control). Default 64 MiB.
    pub append_bytes_in_flight: usize,
    /// The largest gRPC message accepted or sent. Default 64 MiB.
    pub max_message_bytes: usize,
    /// At most this many messages per read response. Default 256.
    pub read_batch_messages: usize,
    /// About this many payload bytes per read response (at least one message). Default 4 MiB.
    pub read_batch_bytes: usize,
    /// Read responses in flight per read when the client does not say. Default 8.
    pub default_read_ahead: usize,
}

impl Default for AdapterConfig {
    fn default() -> Self {
        AdapterConfig {
            session_ttl: Duration::from_secs(60),
            append_bytes_in_flight: 64 << 20,
            max_message_bytes: 64 << 20,
            read_batch_messages: 256,
            read_batch_bytes: 4 << 20,
            default_read_ahead: 8,
        }
    }
}

/// How a session was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Appends and truncations; holds the pchannel's term and writer.
    ReadWrite,
    /// Reads only.
    ReadOnly,
}

/// Where a read starts (Milvus's deliver policies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first message kept.
    All,
    /// Only messages appended after the read starts.
    Latest,
    /// From this message, inclusive.
    From(LogMessageId),
    /// From the message after this one.
    After(LogMessageId),
}

/// The result of one append, as the engine gave it.
#[derive(Debug)]
pub(crate) enum Appended {
    /// Durable under this id.
    Id(LogMessageId),
    /// Refused or failed for a reason that needs no decision.
    Failed(AdapterError),
    /// The writer of generation `generation` is lost; [`Session::resolve_lost`] decides
    /// what it means.
    Lost { generation: u64, error: ClientError },
}

/// One server's sessions. Cheap to clone.
#[derive(Clone)]
pub struct Adapter {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    terms: Terms,
    clock: ClockRef,
    config: AdapterConfig,
    sessions: Mutex<HashMap<u64, Arc<Session>>>,
    shutdown: CancellationToken,
    sweeper: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Adapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adapter")
            .field("terms", &self.inner.terms)
            .field("sessions", &self.lock_sessions().len())
            .finish()
    }
}

impl Adapter {
    /// An adapter over the engine's `client`, keeping term records in `kv` under `prefix`
    /// (the engine's metadata prefix), on `clock`. Starts the task that expires abandoned
    /// sessions, so it must be called inside a tokio runtime.
    pub fn new(
        client: Client,
        kv: Arc<dyn Kv>,
        prefix: &str,
        clock: ClockRef,
        config: AdapterConfig,
    ) -> Adapter {
        let adapter = Adapter {
            inner: Arc::new(Inner {
                client,
                terms: Terms::new(kv, prefix),
                clock,
                config,
                sessions: Mutex::new(HashMap::new()),
                shutdown: CancellationToken::new(),
                sweeper: Mutex::new(None),
            }),
        };
        let sweeper = tokio::spawn(sweep(Arc::downgrade(&adapter.inner)));
        *adapter
            .inner
            .sweeper
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(sweeper);
        adapter
    }

    /// The settings.
    pub fn config(&self) -> &AdapterConfig {
        &self.inner.config
    }

    /// Cancelled when the adapter shuts down: streams end.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// How many sessions are open.
    pub fn session_count(&self) -> usize {
        self.lock_sessions().len()
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Session>>> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.inner.clock.now_millis()
    }

    /// Now, on the adapter's clock (ms since the Unix epoch).
    pub(crate) fn now_millis(&self) -> u64 {
        self.now_ms()
    }

    /// Opens `pchannel` (see the module docs); returns the session id and the durable term.
    pub async fn open(
        &self,
        pchannel: &str,
        term: i64,
        access: Access,
    ) -> Result<(u64, i64), AdapterError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(AdapterError::ShuttingDown);
        }
        check_pchannel(pchannel)?;
        if term < 0 {
            return Err(AdapterError::InvalidArgument(format!(
                "term {term} of pchannel `{pchannel}` is negative"
            )));
        }
        let log = self.ensure_log(pchannel).await?;
        let id = loop {
            let id = uuid::Uuid::new_v4().as_u64_pair().0;
            if id != 0 && !self.lock_sessions().contains_key(&id) {
                break id;
            }
        };
        let (session, durable) = match access {
            Access::ReadOnly => {
                let durable = self
                    .inner
                    .terms
                    .current(pchannel)
                    .await?
                    .map_or(-1, |(record, _)| record.term);
                (Session::read_only(id, pchannel, term, log, self), durable)
            }
            Access::ReadWrite => (Session::open_rw(id, pchannel, term, log, self).await?, term),
        };
        let session = Arc::new(session);
        let superseded: Vec<Arc<Session>> = {
            let mut sessions = self.lock_sessions();
            let displaced = sessions.insert(id, session.clone());
            debug_assert!(displaced.is_none());
            sessions
                .values()
                .filter(|s| {
                    access == Access::ReadWrite
                        && s.id != id
                        && s.access == Access::ReadWrite
                        && s.pchannel == pchannel
                })
                .cloned()
                .collect()
        };
        // Older read-write sessions of this process are fenced now rather than at their next
        // append, so that their auditors stop at once.
        for old in superseded {
            old.fenced_by(term).await;
        }
        if self.inner.shutdown.is_cancelled() {
            // Shutdown began while opening: do not leave a writer behind it.
            self.lock_sessions().remove(&id);
            session.close().await;
            return Err(AdapterError::ShuttingDown);
        }
        tracing::info!(pchannel, term, session = id, ?access, "pchannel opened");
        Ok((id, durable))
    }

    /// The pchannel's log, created when missing (as Milvus's Woodpecker WAL does).
    async fn ensure_log(&self, pchannel: &str) -> Result<LogHandle, AdapterError> {
        let client = &self.inner.client;
        match client.open_log(pchannel).await {
            Ok(log) => return Ok(log),
            Err(ClientError::LogNotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        match client.create_log(pchannel).await {
            Ok(()) | Err(ClientError::LogAlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(client.open_log(pchannel).await?)
    }

    /// A live session, touched.
    pub(crate) fn session(&self, id: u64) -> Result<Arc<Session>, AdapterError> {
        let session = self
            .lock_sessions()
            .get(&id)
            .cloned()
            .ok_or(AdapterError::SessionNotFound(id))?;
        session.touch(self.now_ms());
        Ok(session)
    }

    /// Closes a session (see [`Session::close`]).
    pub async fn close(&self, id: u64) -> Result<(), AdapterError> {
        let session = self
            .lock_sessions()
            .remove(&id)
            .ok_or(AdapterError::SessionNotFound(id))?;
        session.close().await;
        tracing::info!(pchannel = %session.pchannel, term = session.term, session = id, "session closed");
        Ok(())
    }

    /// Truncates the session's pchannel at `id` (see [`Session::truncate`]).
    pub async fn truncate(&self, session: u64, id: LogMessageId) -> Result<(), AdapterError> {
        self.session(session)?.truncate(id).await
    }

    /// Opens an engine reader of `pchannel` at `start`, named after `name`.
    pub async fn open_reader(
        &self,
        pchannel: &str,
        name: &str,
        start: Start,
    ) -> Result<LogReader, AdapterError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(AdapterError::ShuttingDown);
        }
        check_pchannel(pchannel)?;
        let log = match self.inner.client.open_log(pchannel).await {
            Ok(log) => log,
            Err(ClientError::LogNotFound { .. }) => {
                return Err(AdapterError::PChannelNotFound(pchannel.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        let from = match start {
            Start::All => LogMessageId::EARLIEST,
            Start::Latest => LogMessageId::LATEST,
            Start::From(id) => check_id(id)?,
            // As Milvus's Woodpecker WAL: the next entry of the same segment; a reader past a
            // finished segment's last entry moves on to the next segment by itself.
            Start::After(id) => check_id(id)?.next_in_segment(),
        };
        let name = (!name.is_empty()).then_some(name);
        Ok(log.open_reader(from, name).await?)
    }

    /// Stops the adapter: streams end (cancellation), every session is closed (writers
    /// flushed and their segments completed, auditors stopped). Idempotent.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let sweeper = self
            .inner
            .sweeper
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(sweeper) = sweeper {
            sweeper.abort();
        }
        let sessions: Vec<_> = self.lock_sessions().drain().map(|(_, s)| s).collect();
        futures::future::join_all(sessions.iter().map(|s| s.close())).await;
        if !sessions.is_empty() {
            tracing::info!(sessions = sessions.len(), "milvus sessions closed");
        }
    }
}

/// Closes sessions nobody uses any more, every quarter of the TTL.
async fn sweep(inner: std::sync::Weak<Inner>) {
    loop {
        let (clock, ttl) = match inner.upgrade() {
            Some(inner) => (inner.clock.clone(), inner.config.session_ttl),
            None => return,
        };
        clock.sleep((ttl / 4).max(Duration::from_millis(10))).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let adapter = Adapter { inner };
        let now = adapter.now_ms();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let expired: Vec<Arc<Session>> = {
            let mut sessions = adapter.lock_sessions();
            let ids: Vec<u64> = sessions
                .iter()
                .filter(|(_, s)| s.idle_since(now) >= ttl_ms)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| sessions.remove(id)).collect()
        };
        for session in expired {
            tracing::warn!(pchannel = %session.pchannel, term = session.term, session = session.id, "session expired: no append stream and no call within the session TTL");
            session.close().await;
        }
    }
}

fn check_pchannel(pchannel: &str) -> Result<(), AdapterError> {
    if valid_log_name(pchannel) {
        Ok(())
    } else {
        Err(AdapterError::InvalidArgument(format!(
            "`{pchannel}` is not a pchannel name (not empty, no `/`, no control characters)"
        )))
    }
}

fn check_id(id: LogMessageId) -> Result<LogMessageId, AdapterError> {
    if id.segment_id < 0 || id.entry_id < 0 {
        return Err(AdapterError::InvalidArgument(format!(
            "message id {}/{} is negative",
            id.segment_id, id.entry_id
        )));
    }
    Ok(id)
}

fn is_finished(meta: &SegmentMetadata) -> bool {
    meta.state == SegmentState::Completed as i32 || meta.state == SegmentState::Sealed as i32
}

/// The writer a read-write session appends through, and its generation (bumped when the
/// session reopens it).
struct Slot {
    generation: u64,
    writer: Arc<LogWriter>,
}

/// One open of a pchannel.
pub(crate) struct Session {
    pub(crate) id: u64,
    pub(crate) pchannel: String,
    pub(crate) term: i64,
    access: Access,
    /// This session's owner token in the term record (read-write only).
    owner: String,
    log: LogHandle,
    terms: Terms,
    clock: ClockRef,
    /// The writer in use; `None` for read-only sessions and once closed or fenced.
    writer: RwLock<Option<Slot>>,
    /// Serialises reopening, fencing and closing.
    control: tokio::sync::Mutex<Control>,
    /// The term in force when the session was fenced.
    fenced: Mutex<Option<i64>>,
    closed: AtomicBool,
    /// Append streams attached right now.
    attached: AtomicUsize,
    /// Last call or stream detach, ms on the adapter's clock.
    last_touch_ms: AtomicU64,
    /// The highest id this session's writers acknowledged.
    last_acked: Mutex<Option<LogMessageId>>,
}

struct Control {
    generation: u64,
    auditor: Option<AuditorHandle>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("pchannel", &self.pchannel)
            .field("term", &self.term)
            .field("access", &self.access)
            .finish()
    }
}

impl Session {
    fn new(
        id: u64,
        pchannel: &str,
        term: i64,
        access: Access,
        owner: String,
        log: LogHandle,
        adapter: &Adapter,
    ) -> Self {
        Session {
            id,
            pchannel: pchannel.to_string(),
            term,
            access,
            owner,
            log,
            terms: adapter.inner.terms.clone(),
            clock: adapter.inner.clock.clone(),
            writer: RwLock::new(None),
            control: tokio::sync::Mutex::new(Control {
                generation: 0,
                auditor: None,
            }),
            fenced: Mutex::new(None),
            closed: AtomicBool::new(false),
            attached: AtomicUsize::new(0),
            last_touch_ms: AtomicU64::new(adapter.now_ms()),
            last_acked: Mutex::new(None),
        }
    }

    fn read_only(id: u64, pchannel: &str, term: i64, log: LogHandle, adapter: &Adapter) -> Self {
        Session::new(
            id,
            pchannel,
            term,
            Access::ReadOnly,
            String::new(),
            log,
            adapter,
        )
    }

    async fn open_rw(
        id: u64,
        pchannel: &str,
        term: i64,
        log: LogHandle,
        adapter: &Adapter,
    ) -> Result<Self, AdapterError> {
        let owner = uuid::Uuid::new_v4().to_string();
        let now = i64::try_from(adapter.now_ms()).unwrap_or(i64::MAX);
        adapter
            .inner
            .terms
            .claim(pchannel, term, &owner, now)
            .await?;
        let writer = take_writer(
            &log,
            &adapter.inner.terms,
            pchannel,
            term,
            &owner,
            &adapter.inner.clock,
        )
        .await?;
        // A newer open may have claimed the term while this writer was opening (and been
        // fenced by it): then this open lost, and that session takes its writer back.
        if let Err(e) = adapter
            .inner
            .terms
            .check_owner(pchannel, term, &owner)
            .await
        {
            let _ = writer.close().await;
            return Err(e);
        }
        let session = Session::new(id, pchannel, term, Access::ReadWrite, owner, log, adapter);
        *session.writer.write().unwrap_or_else(|p| p.into_inner()) = Some(Slot {
            generation: 0,
            writer: Arc::new(writer),
        });
        session.control.lock().await.auditor = Some(session.log.start_auditor());
        Ok(session)
    }

    fn touch(&self, now_ms: u64) {
        self.last_touch_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// Milliseconds since the session was last used, 0 while a stream is attached.
    fn idle_since(&self, now_ms: u64) -> u64 {
        if self.attached.load(Ordering::Acquire) > 0 {
            return 0;
        }
        now_ms.saturating_sub(self.last_touch_ms.load(Ordering::Relaxed))
    }

    /// An append stream starts using the session.
    pub(crate) fn attach(&self) {
        self.attached.fetch_add(1, Ordering::AcqRel);
    }

    /// An append stream stopped using the session at `now_ms`.
    pub(crate) fn detach(&self, now_ms: u64) {
        self.touch(now_ms);
        self.attached.fetch_sub(1, Ordering::AcqRel);
    }

    fn fenced_term(&self) -> Option<i64> {
        *self.fenced.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fenced_error(&self, term: i64) -> AdapterError {
        AdapterError::Fenced {
            pchannel: self.pchannel.clone(),
            term,
        }
    }

    /// Why the session cannot write now, if it cannot.
    fn unwritable(&self) -> Option<AdapterError> {
        if self.access == Access::ReadOnly {
            return Some(AdapterError::ReadOnly(self.id));
        }
        if let Some(term) = self.fenced_term() {
            return Some(self.fenced_error(term));
        }
        if self.closed.load(Ordering::Acquire) {
            return Some(AdapterError::SessionNotFound(self.id));
        }
        None
    }

    /// Issues an append; `done` is called once, in issue order with the session's other
    /// appends, with the outcome (on the engine task that made the entry durable, or in
    /// this call when it fails at once).
    pub(crate) fn append(&self, msg: WriteMessage, done: impl FnOnce(Appended) + Send + 'static) {
        if let Some(e) = self.unwritable() {
            return done(Appended::Failed(e));
        }
        let slot = self
            .writer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|s| (s.generation, s.writer.clone()));
        let Some((generation, writer)) = slot else {
            let e = self
                .unwritable()
                .unwrap_or(AdapterError::SessionNotFound(self.id));
            return done(Appended::Failed(e));
        };
        writer.write_then(msg, move |r| {
            done(match r {
                Ok(id) => Appended::Id(id),
                Err(error) if error.is_writer_lost() => Appended::Lost { generation, error },
                Err(e) => Appended::Failed(e.into()),
            })
        });
    }

    /// Records an acknowledged id (the highest one is kept, for truncation checks).
    pub(crate) fn acked(&self, id: LogMessageId) {
        let mut last = self.last_acked.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|l| id > l) {
            *last = Some(id);
        }
    }

    /// Decides what a lost writer of `generation` means (see the module docs) and returns
    /// the error to report for the appends it failed.
    pub(crate) async fn resolve_lost(&self, generation: u64, error: ClientError) -> AdapterError {
        let mut control = self.control.lock().await;
        if let Some(term) = self.fenced_term() {
            return self.fenced_error(term);
        }
        if self.closed.load(Ordering::Acquire) {
            return AdapterError::SessionNotFound(self.id);
        }
        if control.generation != generation {
            return AdapterError::Unavailable(format!(
                "the writer of pchannel `{}` was reopened; retry",
                self.pchannel
            ));
        }
        match self
            .terms
            .check_owner(&self.pchannel, self.term, &self.owner)
            .await
        {
            Ok(()) => {}
            Err(AdapterError::Fenced { term, .. }) => {
                self.fence(&mut control, term).await;
                return self.fenced_error(term);
            }
            Err(e) => {
                return AdapterError::Unavailable(format!(
                    "the writer of pchannel `{}` was lost ({error}) and its term could not be checked: {e}",
                    self.pchannel
                ));
            }
        }
        tracing::warn!(pchannel = %self.pchannel, term = self.term, session = self.id, %error, "writer taken over outside this session; reopening it");
        let taken = take_writer(
            &self.log,
            &self.terms,
            &self.pchannel,
            self.term,
            &self.owner,
            &self.clock,
        )
        .await;
        let writer = match taken {
            Ok(w) => w,
            Err(AdapterError::Fenced { term, .. }) => {
                self.fence(&mut control, term).await;
                return self.fenced_error(term);
            }
            Err(e) => {
                return AdapterError::Unavailable(format!(
                    "the writer of pchannel `{}` was lost and reopening it failed: {e}",
                    self.pchannel
                ));
            }
        };
        if let Err(AdapterError::Fenced { term, .. }) = self
            .terms
            .check_owner(&self.pchannel, self.term, &self.owner)
            .await
        {
            let _ = writer.close().await;
            self.fence(&mut control, term).await;
            return self.fenced_error(term);
        }
        control.generation += 1;
        let old = self
            .writer
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .replace(Slot {
                generation: control.generation,
                writer: Arc::new(writer),
            });
        if let Some(old) = old {
            let _ = old.writer.close().await;
        }
        AdapterError::Unavailable(format!(
            "the writer of pchannel `{}` was taken over outside this session and has been reopened; retry",
            self.pchannel
        ))
    }

    /// A newer open of this process took the pchannel at `term`.
    async fn fenced_by(&self, term: i64) {
        let mut control = self.control.lock().await;
        if self.fenced_term().is_none() && !self.closed.load(Ordering::Acquire) {
            self.fence(&mut control, term).await;
        }
    }

    /// Marks the session fenced at `term` and releases its writer and auditor.
    async fn fence(&self, control: &mut Control, term: i64) {
        *self.fenced.lock().unwrap_or_else(|p| p.into_inner()) = Some(term);
        tracing::info!(pchannel = %self.pchannel, term = self.term, session = self.id, newer_term = term, "session fenced by a newer open");
        self.release(control).await;
    }

    async fn release(&self, control: &mut Control) {
        let slot = self
            .writer
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(slot) = slot
            && let Err(e) = slot.writer.close().await
        {
            tracing::warn!(pchannel = %self.pchannel, session = self.id, error = %e, "closing the writer failed");
        }
        if let Some(auditor) = control.auditor.take() {
            auditor.stop().await;
        }
    }

    /// Waits for the session's appends, closes its writer (data flushed, segment completed)
    /// and its auditor. Idempotent.
    pub(crate) async fn close(&self) {
        let mut control = self.control.lock().await;
        self.closed.store(true, Ordering::Release);
        self.release(&mut control).await;
    }

    /// Truncates the pchannel at `id`: every message before it may be removed, `id` and
    /// everything after it stay readable. The engine's truncation point (inclusive) is
    /// therefore the message just before `id`. Refused on read-only and fenced sessions and
    /// for ids the pchannel does not hold; a point at or before the current one is ignored.
    pub(crate) async fn truncate(&self, id: LogMessageId) -> Result<(), AdapterError> {
        if let Some(e) = self.unwritable() {
            return Err(e);
        }
        let id = check_id(id)?;
        // A session fenced by another server may not have noticed yet (it learns it from a
        // failed append); a truncation asks the term record first.
        if let Err(e) = self
            .terms
            .check_owner(&self.pchannel, self.term, &self.owner)
            .await
        {
            if let AdapterError::Fenced { term, .. } = e {
                let mut control = self.control.lock().await;
                self.fence(&mut control, term).await;
            }
            return Err(e);
        }
        let segments = self.log.segments().await?;
        let missing = || {
            AdapterError::InvalidArgument(format!(
                "pchannel `{}` holds no message {}/{}",
                self.pchannel, id.segment_id, id.entry_id
            ))
        };
        match segments.get(&id.segment_id) {
            None => {
                // Below every segment left: collected after an earlier truncation.
                let collected = segments
                    .keys()
                    .next()
                    .is_some_and(|first| id.segment_id < *first);
                return if collected { Ok(()) } else { Err(missing()) };
            }
            Some(seg) if seg.state == SegmentState::Truncated as i32 => return Ok(()),
            Some(seg) if is_finished(seg) => {
                if id.entry_id > seg.last_entry_id {
                    return Err(missing());
                }
            }
            Some(_) => {
                // The active segment is this session's writer's: only what it acknowledged.
                let acked = *self.last_acked.lock().unwrap_or_else(|p| p.into_inner());
                if acked.is_none_or(|last| id > last) {
                    return Err(missing());
                }
            }
        }
        let Some(point) = predecessor(id, &segments) else {
            return Ok(());
        };
        self.log.truncate(point).await?;
        // The engine ignores a point at or before its current one.
        tracing::debug!(pchannel = %self.pchannel, session = self.id, to = %id, engine_point = %point, "truncation requested");
        Ok(())
    }
}

/// Opens the log's writer for the holder of (`pchannel`, `term`, `owner`). Opening fences and
/// completes the active segment; when another open does the same at the same moment, one of
/// the two metadata updates loses (fence failed, 1107). The loser tries again while it still
/// holds the term, and gives up with [`AdapterError::Fenced`] once it does not.
async fn take_writer(
    log: &LogHandle,
    terms: &Terms,
    pchannel: &str,
    term: i64,
    owner: &str,
    clock: &ClockRef,
) -> Result<LogWriter, AdapterError> {
    const ATTEMPTS: u32 = 10;
    let mut attempt = 0;
    loop {
        match log.open_writer().await {
            Ok(writer) => return Ok(writer),
            Err(e @ ClientError::FenceFailed { .. }) if attempt < ATTEMPTS => {
                terms.check_owner(pchannel, term, owner).await?;
                attempt += 1;
                tracing::debug!(pchannel, term, attempt, error = %e, "opening the writer raced another open; retrying");
                clock
                    .sleep(Duration::from_millis(10 * u64::from(attempt)))
                    .await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The message right before `id`, or `None` when nothing precedes it (or what precedes it
/// is truncated already).
fn predecessor(
    id: LogMessageId,
    segments: &BTreeMap<i64, SegmentMetadata>,
) -> Option<LogMessageId> {
    if id.entry_id > 0 {
        return Some(LogMessageId::new(id.segment_id, id.entry_id - 1));
    }
    for (&seg_id, seg) in segments.range(..id.segment_id).rev() {
        if seg.state == SegmentState::Truncated as i32 {
            return None;
        }
        if seg.last_entry_id >= 0 {
            return Some(LogMessageId::new(seg_id, seg.last_entry_id));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(state: SegmentState, last: i64) -> SegmentMetadata {
        SegmentMetadata {
            state: state as i32,
            last_entry_id: last,
            ..SegmentMetadata::default()
        }
    }

    #[test]
    fn the_engine_point_is_the_message_before() {
        let mut segments = BTreeMap::new();
        segments.insert(0, seg(SegmentState::Sealed, 9));
        segments.insert(1, seg(SegmentState::Completed, -1));
        segments.insert(2, seg(SegmentState::Completed, 4));
        segments.insert(3, seg(SegmentState::Active, -1));
        let id = LogMessageId::new;
        assert_eq!(predecessor(id(2, 3), &segments), Some(id(2, 2)));
        // The first entry of a segment: the last entry of the last non-empty one before it.
        assert_eq!(predecessor(id(3, 0), &segments), Some(id(2, 4)));
        assert_eq!(predecessor(id(2, 0), &segments), Some(id(0, 9)));
        assert_eq!(predecessor(id(0, 0), &segments), None);
        segments.insert(0, seg(SegmentState::Truncated, 9));
        assert_eq!(predecessor(id(2, 0), &segments), None);
    }
}
