//! The LogStore write path, in process: the server side of embedded mode (a quorum of one),
//! and the core a service-mode LogStore wraps in gRPC.
//!
//! A [`LogStore`] keeps one [`SegmentProcessor`] per (log, segment), created on first use
//! over a [`Backend`]: object storage (`<root>/<logId>/<segId>/N.blk`, spec §5.2) or local
//! files (`<storage.rootPath>/<minio.rootPath>/<logId>/<segId>/data.log`, spec §5.3). Each
//! processor buffers out-of-order appends in a [`SequentialBuffer`] and flushes the
//! contiguous prefix from its own task (spec §6.2); fencing and completion follow §6.5.
//!
//! The read path and segment maintenance (compaction, cleaning, inspection) live in
//! [`LogStore::read_batch`] and its neighbours: reads come from storage, capped at what this
//! LogStore's processor acknowledged, and same-process readers wait on
//! [`LogStore::wait_for_entry`] instead of polling.
//!
//! [`staged`] is the service-mode storage of one tenant on top of a local-file LogStore: local
//! `data.log` files while a segment is active, the client's completion LAC in the local
//! footer ([`FooterLac::Given`]), reads capped at the LAC, and compaction into the object
//! layout by one replica.
//!
//! Errors carry the Go wire codes ([`LogStoreError::code`]). Time comes from the injected
//! [`Clock`](crate::clock::Clock) only.

mod buffer;
mod error;
mod policy;
mod processor;
mod reader;
pub mod staged;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use storage::object::ObjectStorage;
use storage::segment::journal::Journal;
use tokio::sync::Mutex;

pub use buffer::{Admit, ReadyBatch, SequentialBuffer};
pub use error::{LogStoreError, Result, StorageKind, code};
pub use policy::{FormatVersion, SyncPolicy};
pub use processor::{
    AppendReceipt, DurableState, FooterLac, OnDurable, SegmentLocation, SegmentProcessor, TryAdd,
    WriterPhase,
};
pub use reader::{CleanScope, CompactResult, ReadEnd, ReadResult, WaitOutcome};
pub use storage::segment::DamagedBlock;
pub use storage::segment::local::Repaired;

use crate::clock::ClockRef;

/// Where a LogStore keeps segments.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Object storage (embedded "minio" mode); keys are relative to its root.
    Object(ObjectStorage),
    /// Local files under this directory: segment `s` of log `l` is `<dir>/<l>/<s>/data.log`.
    /// Build it with [`Backend::local`] from the two Go settings.
    Local(PathBuf),
}

impl Backend {
    /// The local layout of spec §5.3: `<storage.rootPath>/<minio.rootPath>/...` (an empty
    /// `minio.rootPath` adds nothing).
    pub fn local(storage_root_path: impl AsRef<Path>, minio_root_path: &str) -> Backend {
        let sub = minio_root_path.trim_matches('/');
        let root = storage_root_path.as_ref();
        Backend::Local(if sub.is_empty() {
            root.to_path_buf()
        } else {
            root.join(sub)
        })
    }

    /// Where segment `segment_id` of `log_id` lives.
    pub(crate) fn segment_location(&self, log_id: i64, segment_id: i64) -> SegmentLocation {
        match self {
            Backend::Object(storage) => SegmentLocation::Object(storage.clone()),
            Backend::Local(dir) => {
                SegmentLocation::Local(dir.join(log_id.to_string()).join(segment_id.to_string()))
            }
        }
    }
}

/// A segment's processor, or the place it will be once opened.
type ProcessorSlot = Arc<tokio::sync::OnceCell<Arc<SegmentProcessor>>>;

/// The processors of one LogStore.
#[derive(Debug)]
pub struct LogStore {
    backend: Backend,
    policy: SyncPolicy,
    version: FormatVersion,
    clock: ClockRef,
    /// One slot per segment, filled when its processor opens. Opening (storage IO) happens
    /// outside the map lock, so opening one segment never stalls appends to the others.
    processors: Mutex<HashMap<(i64, i64), ProcessorSlot>>,
    /// Cached segment readers and cleaned segments.
    read_state: reader::ReadStateRef,
    /// Group commit for local segments (see [`storage::segment::journal`]); `None` on object
    /// storage, or when another store holds this root's journal.
    journal: Option<Arc<Journal>>,
    /// What local footers record as LAC on completion.
    footer_lac: FooterLac,
    /// The `log_ns` label of its processors' flush metrics; `None`: the process's.
    log_ns: Option<Arc<str>>,
}

impl LogStore {
    /// A LogStore over `backend`. Fails when `policy` is invalid.
    pub fn new(
        backend: Backend,
        policy: SyncPolicy,
        version: FormatVersion,
        clock: ClockRef,
    ) -> std::result::Result<LogStore, String> {
        policy.validate()?;
        let journal = match &backend {
            // Replays what a crash left before any segment is opened.
            Backend::Local(root) => Journal::open(root, clock.clone())
                .map_err(|e| format!("local journal: {e}"))?
                .map(|(journal, _)| journal),
            Backend::Object(_) => None,
        };
        Ok(LogStore {
            backend,
            policy,
            version,
            clock,
            processors: Mutex::new(HashMap::new()),
            read_state: reader::ReadStateRef::default(),
            journal,
            footer_lac: FooterLac::LastEntry,
            log_ns: None,
        })
    }

    /// Labels the flush metrics of this store's segments with `log_ns` (`<bucket>/<root
    /// path>`) instead of the process's namespace: a service-mode node holds one store per
    /// tenant, and two tenants' logs with the same id must not share a series.
    pub fn with_log_namespace(mut self, log_ns: &str) -> Self {
        self.log_ns = Some(log_ns.into());
        self
    }

    /// Makes completion record the LAC the client names in local footers (service mode, see
    /// [`FooterLac::Given`]).
    pub(crate) fn with_footer_lac(mut self, footer_lac: FooterLac) -> Self {
        self.footer_lac = footer_lac;
        self
    }

    /// The backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The processor of (log, segment), opened on first use (in recovery mode when the
    /// segment already holds data).
    pub async fn processor(&self, log_id: i64, segment_id: i64) -> Result<Arc<SegmentProcessor>> {
        let key = (log_id, segment_id);
        loop {
            let slot = self.processors.lock().await.entry(key).or_default().clone();
            if let Some(p) = slot.get() {
                return Ok(p.clone());
            }
            let p = slot
                .get_or_try_init(|| async {
                    let p = SegmentProcessor::open(
                        self.backend.segment_location(log_id, segment_id),
                        log_id,
                        segment_id,
                        self.policy.clone(),
                        self.version,
                        self.clock.clone(),
                        self.journal.clone(),
                        self.footer_lac,
                        self.log_ns.as_deref(),
                    )
                    .await?;
                    self.forget_cleaned(log_id, segment_id);
                    Ok::<_, LogStoreError>(Arc::new(p))
                })
                .await?
                .clone();
            // Closed while it was opening: the closer's decision stands for that instance.
            let current = self.processors.lock().await.get(&key).cloned();
            match current {
                Some(c) if Arc::ptr_eq(&c, &slot) => return Ok(p),
                _ => p.close().await,
            }
        }
    }

    /// [`SegmentProcessor::add_entry`] on the processor of (log, segment).
    pub async fn add_entry(
        &self,
        log_id: i64,
        segment_id: i64,
        entry_id: i64,
        data: Bytes,
    ) -> Result<AppendReceipt> {
        self.processor(log_id, segment_id)
            .await?
            .add_entry(entry_id, data)
            .await
    }

    /// FenceSegment: [`SegmentProcessor::fence`].
    pub async fn fence_segment(&self, log_id: i64, segment_id: i64) -> Result<i64> {
        self.processor(log_id, segment_id).await?.fence().await
    }

    /// CompleteSegment: [`SegmentProcessor::complete`].
    pub async fn complete_segment(&self, log_id: i64, segment_id: i64, lac: i64) -> Result<i64> {
        self.processor(log_id, segment_id)
            .await?
            .complete(lac)
            .await
    }

    /// Closes and forgets the processor of (log, segment), if open.
    pub async fn close_processor(&self, log_id: i64, segment_id: i64) {
        let slot = self.processors.lock().await.remove(&(log_id, segment_id));
        if let Some(p) = slot.as_ref().and_then(|s| s.get()) {
            p.close().await;
        }
    }

    /// Closes the processors that have been idle for `max_idle` (see
    /// [`SegmentProcessor::is_idle`]) and returns how many. A later request for such a
    /// segment reopens it from storage, in recovery mode (spec §7.4, `processorCleanupPolicy`).
    pub async fn close_idle(&self, max_idle: std::time::Duration) -> usize {
        let idle: Vec<(i64, i64)> = self
            .processors
            .lock()
            .await
            .iter()
            .filter(|(_, slot)| slot.get().is_some_and(|p| p.is_idle(max_idle)))
            .map(|(k, _)| *k)
            .collect();
        for (log_id, segment_id) in &idle {
            self.close_processor(*log_id, *segment_id).await;
        }
        idle.len()
    }

    /// How many processors are open.
    pub async fn open_processors(&self) -> usize {
        self.processors.lock().await.len()
    }

    /// Closes every processor (flushes what is contiguous and stops the tasks) and checkpoints
    /// and closes the local journal.
    pub async fn close_all(&self) {
        let all: Vec<_> = self
            .processors
            .lock()
            .await
            .drain()
            .filter_map(|(_, slot)| slot.get().cloned())
            .collect();
        futures::future::join_all(all.iter().map(|p| p.close())).await;
        // A final checkpoint, so that a clean stop leaves no journal to replay. Segments
        // opened after this sync their blocks themselves.
        if let Some(journal) = self.journal.clone() {
            let _ = crate::clock::blocking::run(crate::clock::blocking::Io::Write, move || {
                journal.close();
            })
            .await;
        }
    }
}
