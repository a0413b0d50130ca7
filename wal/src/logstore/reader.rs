//! The LogStore read path (spec §5.2 reader algorithm, §6.3) and segment maintenance
//! (§6.9: CompactSegment, CleanSegment, last entry id, block count).
//!
//! Reads are served from storage, never from a processor's buffer: object segments through a
//! cached [`ObjectSegmentReader`] per (log, segment), so a tail reader only fetches blocks it
//! has not seen; local segments through a cached [`LocalSegmentReader`], which re-reads the
//! file's tail on each call. Every block is length- and CRC-checked by storage before any of
//! its entries is returned; a damaged block is [`LogStoreError::Corrupt`] (8007) naming log,
//! segment, block, offset and the entries it held. A batch that reaches one ends before it;
//! reads of the entries after it go on ([`LogStore::damaged_blocks`] lists them,
//! [`LogStore::repair_segment`] replaces them with lost-entry markers).
//!
//! # Only acknowledged entries
//!
//! A batch never holds an entry whose append receipt in this process has not resolved:
//!
//! * Object storage: a block object exists only once its PUT succeeded, and the reader probes
//!   `0.blk, 1.blk, ...` in order and stops at the first missing one, so a block uploaded in
//!   parallel ahead of an earlier one is not served until the gap is filled.
//! * Local files: the reader serves every *complete, CRC-valid* block in `data.log`, and the
//!   writer's block becomes complete in the file (`write`) before its `fdatasync` returns. So
//!   the file alone would let a reader see a block a moment before it is durable.
//!
//! Both cases are closed by a cap: when this LogStore has a processor for the segment and it
//! has not sealed it (fence or footer stored), entries after the processor's durable id are
//! dropped from the batch. A reader in another process has no such cap; for local files it
//! may then see a written block whose fsync is still running (it is in the page cache and
//! survives a crash of the writer process, but not of the machine).
//!
//! # How a batch ends
//!
//! [`ReadEnd::More`] (a budget was reached), [`ReadEnd::Tail`] (everything present was
//! returned and the segment is open), [`ReadEnd::NotYet`] (nothing at `from_entry` yet: the
//! Go `ErrEntryNotFound`, 8102, as a value so the caller can wait) or [`ReadEnd::Eof`] (the
//! segment has a footer or a fence and was read to its end; with no entries this is the Go
//! EOF, 2310). A same-process reader waits for new entries with
//! [`LogStore::wait_for_entry`]; a reader in another process polls.
//!
//! # Cleaned segments
//!
//! After [`LogStore::clean_segment`] with [`CleanScope::All`], reads of that segment through
//! this LogStore fail with [`LogStoreError::SegmentNotFound`] (8105). Storage keeps no
//! tombstone, so another LogStore (or this one after a restart) reads a cleaned object
//! segment as [`ReadEnd::NotYet`]; a cleaned local segment (no `data.log`) reads as
//! [`ReadEnd::NotYet`] too. The client knows from metadata that a truncated segment is gone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};

use bytes::Bytes;
use storage::segment::DamagedBlock;
use storage::segment::local::{self, DATA_FILE, LocalSegmentReader, Repaired};
use storage::segment::object::{self, DeleteScope, ObjectSegmentReader, SegmentObjects};
use tokio::sync::Mutex;

use super::error::{LogStoreError, Result, StorageKind, code};
use super::processor::{SegmentLocation, SegmentProcessor, WriterPhase};
use super::{Backend, LogStore};

/// How many segment readers a LogStore keeps (an arbitrary one is dropped beyond this).
pub(super) const READER_CACHE_CAPACITY: usize = 256;

/// Why a [`ReadResult`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    /// `max_entries` or `max_bytes` was reached: more entries can be read now.
    More,
    /// Every entry present was returned; the segment is open and may grow.
    Tail,
    /// No entry at `from_entry` yet; the segment is open (Go `ErrEntryNotFound`, 8102,
    /// retriable). Wait ([`LogStore::wait_for_entry`]) or poll, then read again.
    NotYet,
    /// The segment is finished (footer or fence) and the batch reaches its end. With no
    /// entries this is the Go EOF (2310).
    Eof,
}

/// The answer to [`LogStore::read_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// `(entry id, payload)` in id order from the asked id, without gaps.
    pub entries: Vec<(i64, Bytes)>,
    /// What follows the last entry.
    pub end: ReadEnd,
}

impl ReadResult {
    /// The Go status code an empty batch stands for: 8102 for [`ReadEnd::NotYet`], 2310 for
    /// [`ReadEnd::Eof`]; `None` when entries were returned.
    pub fn wire_code(&self) -> Option<i32> {
        match self.end {
            _ if !self.entries.is_empty() => None,
            ReadEnd::Eof => Some(code::EOF),
            ReadEnd::NotYet | ReadEnd::Tail | ReadEnd::More => Some(code::ENTRY_NOT_FOUND),
        }
    }
}

/// What [`LogStore::wait_for_entry`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The entry is durable; the value is the last durable entry id.
    Durable(i64),
    /// The processor fenced or completed the segment: read again to reach the EOF.
    Sealed,
    /// No writing processor here (none, in recovery mode, closed, or failed): poll.
    NoWriter,
}

/// The answer to [`LogStore::compact_segment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactResult {
    /// Bytes of the segment's blocks (object: the footer's total size over the merged
    /// blocks; local: the size of `data.log`).
    pub size: u64,
    /// Blocks after compaction.
    pub blocks: usize,
    /// The last entry id (-1 when empty).
    pub last_entry_id: i64,
    /// Whether the blocks are merged `m_N.blk` objects (always false for local files).
    pub compacted: bool,
}

/// What [`LogStore::clean_segment`] removes (the Go CleanSegment `flag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanScope {
    /// Everything of the segment (flag 0, truncation GC). Local: the segment directory.
    All,
    /// Original `N.blk` blocks only (flag 1). Local: nothing.
    Originals,
    /// Merged `m_N.blk` blocks only (flag 2). Local: nothing.
    Merged,
}

impl CleanScope {
    /// The scope of a Go `flag` value; `None` for an unknown one.
    pub fn from_flag(flag: i32) -> Option<CleanScope> {
        match flag {
            0 => Some(CleanScope::All),
            1 => Some(CleanScope::Originals),
            2 => Some(CleanScope::Merged),
            _ => None,
        }
    }

    /// The Go `flag` value.
    pub fn flag(self) -> i32 {
        match self {
            CleanScope::All => 0,
            CleanScope::Originals => 1,
            CleanScope::Merged => 2,
        }
    }

    fn delete_scope(self) -> DeleteScope {
        match self {
            CleanScope::All => DeleteScope::All,
            CleanScope::Originals => DeleteScope::Originals,
            CleanScope::Merged => DeleteScope::Merged,
        }
    }
}

/// A cached storage reader of one segment.
#[derive(Debug)]
pub(super) enum SegmentReader {
    Object(Mutex<ObjectSegmentReader>),
    Local(LocalSegmentReader),
}

/// How a storage batch ended, before the LogStore's cap and entry limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RawEnd {
    More,
    Tail,
    Eof,
}

impl SegmentReader {
    async fn read(
        &self,
        from: i64,
        max_bytes: usize,
    ) -> storage::Result<(Vec<(i64, Bytes)>, RawEnd)> {
        match self {
            SegmentReader::Object(r) => {
                let batch = r.lock().await.read(from, max_bytes).await?;
                let end = match batch.end {
                    object::BatchEnd::Budget => RawEnd::More,
                    object::BatchEnd::Tail => RawEnd::Tail,
                    object::BatchEnd::EndOfSegment => RawEnd::Eof,
                };
                Ok((batch.entries, end))
            }
            SegmentReader::Local(r) => {
                let batch = r.read_from(from, max_bytes).await?;
                let end = match batch.end {
                    local::BatchEnd::More => RawEnd::More,
                    local::BatchEnd::NotYet => RawEnd::Tail,
                    local::BatchEnd::Eof => RawEnd::Eof,
                };
                let entries = batch
                    .entries
                    .into_iter()
                    .map(|e| (e.entry_id, e.data))
                    .collect();
                Ok((entries, end))
            }
        }
    }
}

/// The readers of one LogStore and the segments it cleaned.
#[derive(Debug, Default)]
pub(super) struct ReadState {
    readers: HashMap<(i64, i64), Arc<SegmentReader>>,
    cleaned: std::collections::HashSet<(i64, i64)>,
}

/// Shared handle to [`ReadState`].
pub(super) type ReadStateRef = StdMutex<ReadState>;

fn segment_name(log_id: i64, segment_id: i64) -> String {
    format!("log {log_id} segment {segment_id}")
}

/// What a read-only scan of a local `data.log` found.
struct LocalSummary {
    size: u64,
    blocks: usize,
    last_entry_id: i64,
}

impl LogStore {
    fn read_state(&self) -> MutexGuard<'_, ReadState> {
        self.read_state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn forget_cleaned(&self, log_id: i64, segment_id: i64) {
        self.read_state().cleaned.remove(&(log_id, segment_id));
    }

    fn storage_kind(&self) -> StorageKind {
        match self.backend {
            Backend::Object(_) => StorageKind::Object,
            Backend::Local(_) => StorageKind::Local,
        }
    }

    /// The processor of (log, segment) if this LogStore has one open; never opens one.
    pub async fn existing_processor(
        &self,
        log_id: i64,
        segment_id: i64,
    ) -> Option<Arc<SegmentProcessor>> {
        self.processors
            .lock()
            .await
            .get(&(log_id, segment_id))
            .and_then(|slot| slot.get().cloned())
    }

    /// The cached reader of (log, segment), created on first use; `None` for a local segment
    /// without `data.log` (not created yet, or cleaned).
    async fn segment_reader(
        &self,
        log_id: i64,
        segment_id: i64,
    ) -> Result<Option<Arc<SegmentReader>>> {
        if let Some(r) = self.read_state().readers.get(&(log_id, segment_id)) {
            return Ok(Some(r.clone()));
        }
        let reader = match self.backend.segment_location(log_id, segment_id) {
            SegmentLocation::Object(storage) => SegmentReader::Object(Mutex::new(
                ObjectSegmentReader::new(SegmentObjects::new(storage, log_id, segment_id)),
            )),
            SegmentLocation::Local(dir) => match LocalSegmentReader::open(&dir).await {
                Ok(r) => SegmentReader::Local(r),
                Err(storage::Error::NotFound { .. }) => return Ok(None),
                Err(e) => {
                    return Err(LogStoreError::read(
                        &segment_name(log_id, segment_id),
                        StorageKind::Local,
                        e,
                    ));
                }
            },
        };
        let mut st = self.read_state();
        if let Some(r) = st.readers.get(&(log_id, segment_id)) {
            return Ok(Some(r.clone()));
        }
        if st.readers.len() >= READER_CACHE_CAPACITY
            && let Some(victim) = st.readers.keys().next().copied()
        {
            st.readers.remove(&victim);
        }
        let reader = Arc::new(reader);
        st.readers.insert((log_id, segment_id), reader.clone());
        Ok(Some(reader))
    }

    pub(super) fn evict_reader(&self, log_id: i64, segment_id: i64) {
        self.read_state().readers.remove(&(log_id, segment_id));
    }

    /// Reads entries of (log, segment) with ids from `from_entry` on: at most `max_entries`
    /// entries and about `max_bytes` of payload, but at least one entry when one is
    /// available (`max_entries` 0 counts as 1). Only acknowledged entries are returned (see
    /// the module docs); the batch says how it ended ([`ReadEnd`]).
    ///
    /// Errors: 2215 for a negative `from_entry`, 8007 for a damaged block (naming it), 8105
    /// for a segment this LogStore cleaned, 9100/9000 for storage failures (retriable). After
    /// an error the segment's cached reader is dropped, so the next read starts afresh.
    pub async fn read_batch(
        &self,
        log_id: i64,
        segment_id: i64,
        from_entry: i64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<ReadResult> {
        let segment = segment_name(log_id, segment_id);
        if from_entry < 0 {
            return Err(LogStoreError::InvalidEntryId {
                entry_id: from_entry,
                reason: "a read starts at a non-negative entry id".into(),
            });
        }
        if self.read_state().cleaned.contains(&(log_id, segment_id)) {
            return Err(LogStoreError::SegmentNotFound {
                segment,
                detail: "the segment was cleaned".into(),
            });
        }
        let max_entries = max_entries.max(1);
        let Some(reader) = self.segment_reader(log_id, segment_id).await? else {
            return Ok(ReadResult {
                entries: Vec::new(),
                end: ReadEnd::NotYet,
            });
        };
        let (mut entries, mut end) = match reader.read(from_entry, max_bytes).await {
            Ok(batch) => batch,
            Err(e) => {
                self.evict_reader(log_id, segment_id);
                return Err(LogStoreError::read(&segment, self.storage_kind(), e));
            }
        };
        // The cap is taken after the storage read: every entry acknowledged by now may be
        // served, and nothing beyond it.
        if let Some(p) = self.existing_processor(log_id, segment_id).await {
            let state = p.durable_state();
            if state.phase != WriterPhase::Sealed
                && let Some(cut) = entries.iter().position(|(id, _)| *id > state.last_entry_id)
            {
                entries.truncate(cut);
                end = RawEnd::Tail;
            }
        }
        if entries.len() > max_entries {
            entries.truncate(max_entries);
            end = RawEnd::More;
        }
        let end = match end {
            RawEnd::Eof => ReadEnd::Eof,
            _ if entries.is_empty() => ReadEnd::NotYet,
            RawEnd::More => ReadEnd::More,
            RawEnd::Tail => ReadEnd::Tail,
        };
        Ok(ReadResult { entries, end })
    }

    /// Waits until `entry_id` of (log, segment) is durable through this LogStore's processor,
    /// or until waiting is pointless: the processor sealed the segment (read again to see the
    /// EOF), or there is no writing processor here ([`WaitOutcome::NoWriter`]: poll
    /// storage). Resolves at once when the entry is already durable. Cancel-safe.
    pub async fn wait_for_entry(&self, log_id: i64, segment_id: i64, entry_id: i64) -> WaitOutcome {
        let Some(p) = self.existing_processor(log_id, segment_id).await else {
            return WaitOutcome::NoWriter;
        };
        let mut rx = p.subscribe_durable();
        drop(p);
        loop {
            let state = *rx.borrow_and_update();
            if state.last_entry_id >= entry_id {
                return WaitOutcome::Durable(state.last_entry_id);
            }
            match state.phase {
                WriterPhase::Writable => {}
                WriterPhase::Sealed => return WaitOutcome::Sealed,
                WriterPhase::Recovery | WriterPhase::Inactive => return WaitOutcome::NoWriter,
            }
            if rx.changed().await.is_err() {
                return WaitOutcome::NoWriter;
            }
        }
    }

    /// CompactSegment: object storage merges the blocks of a completed segment into
    /// `m_N.blk` objects of about `max_bytes` and rewrites the footer (idempotent); a segment
    /// without `footer.blk` is refused with [`LogStoreError::SegmentStateInvalid`] (1202).
    /// Local files: a no-op reporting the file (as in Go); 8105 when there is no `data.log`.
    pub async fn compact_segment(
        &self,
        log_id: i64,
        segment_id: i64,
        max_bytes: usize,
    ) -> Result<CompactResult> {
        let segment = segment_name(log_id, segment_id);
        match self.backend.segment_location(log_id, segment_id) {
            SegmentLocation::Object(storage) => {
                let objects = SegmentObjects::new(storage, log_id, segment_id);
                let footer = objects.compact(max_bytes).await.map_err(|e| match e {
                    storage::Error::Unsupported { what } => LogStoreError::SegmentStateInvalid {
                        segment: segment.clone(),
                        detail: format!("not completed (no footer.blk); {what}"),
                    },
                    e => LogStoreError::read(&segment, StorageKind::Object, e),
                })?;
                Ok(CompactResult {
                    size: footer.footer.total_size,
                    blocks: footer.blocks.len(),
                    last_entry_id: footer.last_entry_id(),
                    compacted: footer.is_compacted(),
                })
            }
            SegmentLocation::Local(dir) => {
                let summary = inspect_local(&segment, &dir).await?.ok_or_else(|| {
                    LogStoreError::SegmentNotFound {
                        segment: segment.clone(),
                        detail: format!("no {}", dir.join(DATA_FILE).display()),
                    }
                })?;
                Ok(CompactResult {
                    size: summary.size,
                    blocks: summary.blocks,
                    last_entry_id: summary.last_entry_id,
                    compacted: false,
                })
            }
        }
    }

    /// CleanSegment: deletes the segment's data. [`CleanScope::All`] first closes this
    /// LogStore's processor of the segment, then deletes every object (`*.blk`,
    /// `footer.blk`, `*.lock`) or the segment directory; later reads through this LogStore
    /// fail with 8105 (see the module docs). The other scopes delete original or merged
    /// blocks only, and do nothing on local files. Idempotent.
    pub async fn clean_segment(
        &self,
        log_id: i64,
        segment_id: i64,
        scope: CleanScope,
    ) -> Result<()> {
        let segment = segment_name(log_id, segment_id);
        if scope == CleanScope::All {
            self.close_processor(log_id, segment_id).await;
        }
        self.evict_reader(log_id, segment_id);
        match self.backend.segment_location(log_id, segment_id) {
            SegmentLocation::Object(storage) => {
                SegmentObjects::new(storage, log_id, segment_id)
                    .delete(scope.delete_scope())
                    .await
                    .map_err(|e| LogStoreError::storage(&segment, StorageKind::Object, e))?;
            }
            SegmentLocation::Local(dir) => {
                if scope == CleanScope::All {
                    match crate::clock::blocking::fs::remove_dir_all(&dir).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(fs_error(&segment, "remove", &dir, e)),
                    }
                }
            }
        }
        if scope == CleanScope::All {
            let mut st = self.read_state();
            st.readers.remove(&(log_id, segment_id));
            st.cleaned.insert((log_id, segment_id));
        }
        Ok(())
    }

    /// Removes segment (log, segment) from storage if it holds no block, and says whether it
    /// did. For a writer giving up a segment it never got an entry into (a full disk, say):
    /// completing it would leave an empty segment in the log for each such failure. This
    /// LogStore's processor of the segment is closed first; nothing may be buffered in it
    /// (the writer waited for the answer of every append). A segment with a block, a fence or
    /// a footer is left as it is (`Ok(false)`): it is not empty, or not this writer's any
    /// more. Storage keeps no trace, so the segment id can be created again.
    pub(crate) async fn discard_segment_if_empty(
        &self,
        log_id: i64,
        segment_id: i64,
    ) -> Result<bool> {
        let segment = segment_name(log_id, segment_id);
        self.close_processor(log_id, segment_id).await;
        self.evict_reader(log_id, segment_id);
        match self.backend.segment_location(log_id, segment_id) {
            SegmentLocation::Object(storage) => {
                let objects = SegmentObjects::new(storage, log_id, segment_id);
                let err = |e| LogStoreError::storage(&segment, StorageKind::Object, e);
                if !objects.holds_no_block().await.map_err(err)? {
                    return Ok(false);
                }
                objects.delete(DeleteScope::All).await.map_err(err)?;
            }
            SegmentLocation::Local(dir) => {
                let data = dir.join(DATA_FILE);
                match crate::clock::blocking::fs::metadata(&data).await {
                    Ok(m) if m.len() > storage::codec::HEADER_RECORD_LEN as u64 => {
                        return Ok(false);
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(fs_error(&segment, "stat", &data, e)),
                }
                let fence = dir.join(local::FENCE_FILE);
                match crate::clock::blocking::fs::try_exists(&fence).await {
                    Ok(false) => {}
                    Ok(true) => return Ok(false),
                    Err(e) => return Err(fs_error(&segment, "stat", &fence, e)),
                }
                match crate::clock::blocking::fs::remove_dir_all(&dir).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(fs_error(&segment, "remove", &dir, e)),
                }
            }
        }
        self.forget_cleaned(log_id, segment_id);
        tracing::info!(segment, "empty segment discarded");
        Ok(true)
    }

    /// The last entry id of (log, segment) (-1 when it holds none or does not exist): the
    /// processor's durable id when this LogStore writes it, else from storage without
    /// changing it (object: the footer or a block scan; local: a read-only scan of
    /// `data.log` that, like recovery, stops at the first torn or damaged block but
    /// truncates nothing).
    pub async fn segment_last_entry_id(&self, log_id: i64, segment_id: i64) -> Result<i64> {
        if let Some(p) = self.existing_processor(log_id, segment_id).await {
            return Ok(p.last_entry_id());
        }
        let segment = segment_name(log_id, segment_id);
        match self.backend.segment_location(log_id, segment_id) {
            SegmentLocation::Object(storage) => {
                let scan = SegmentObjects::new(storage, log_id, segment_id)
                    .scan_blocks()
                    .await
                    .map_err(|e| LogStoreError::read(&segment, StorageKind::Object, e))?;
                Ok(scan.blocks.last().map_or(-1, |b| b.last_entry_id))
            }
            SegmentLocation::Local(dir) => Ok(inspect_local(&segment, &dir)
                .await?
                .map_or(-1, |s| s.last_entry_id)),
        }
    }

    /// The blocks of (log, segment) in storage that do not verify, read without changing
    /// anything (every block is read and checked): what a reader would fail on, with the
    /// entries each held. Empty when the segment is whole (or does not exist).
    pub async fn damaged_blocks(&self, log_id: i64, segment_id: i64) -> Result<Vec<DamagedBlock>> {
        let segment = segment_name(log_id, segment_id);
        match self.backend.segment_location(log_id, segment_id) {
            SegmentLocation::Object(storage) => SegmentObjects::new(storage, log_id, segment_id)
                .damaged_blocks()
                .await
                .map_err(|e| LogStoreError::read(&segment, StorageKind::Object, e)),
            SegmentLocation::Local(dir) => Ok(local::check_segment(&dir)
                .await
                .map_err(|e| LogStoreError::read(&segment, StorageKind::Local, e))?
                .map_or_else(Vec::new, |c| c.damaged)),
        }
    }

    /// Rewrites the completed local segment (log, segment) with each damaged block replaced
    /// by a block of the same entries, entry `id` being `lost(id, block)` (a marker saying it
    /// was lost; see [`storage::segment::local::repair_segment`]); the damaged file is kept
    /// beside it. `Ok(None)` when nothing is damaged. This LogStore's processor and reader of
    /// the segment are closed first.
    ///
    /// Refused, changing nothing: on object storage (not supported: the damaged block objects
    /// are reported by [`damaged_blocks`](Self::damaged_blocks), and stay as they are); for
    /// a segment without a footer (complete it first: a writer's fencing does); and when
    /// another process holds this root's journal (it may still replay old blocks into the
    /// file: stop that process first).
    pub async fn repair_segment<F>(
        &self,
        log_id: i64,
        segment_id: i64,
        lost: F,
    ) -> Result<Option<Repaired>>
    where
        F: Fn(i64, &DamagedBlock) -> Vec<u8> + Send + 'static,
    {
        let segment = segment_name(log_id, segment_id);
        let dir = match self.backend.segment_location(log_id, segment_id) {
            SegmentLocation::Local(dir) => dir,
            SegmentLocation::Object(_) => {
                return Err(LogStoreError::SegmentStateInvalid {
                    segment,
                    detail: "repairing object-storage segments is not supported; their damaged \
                             blocks are reported and readers can skip them"
                        .into(),
                });
            }
        };
        if self.journal.is_none() {
            return Err(LogStoreError::SegmentStateInvalid {
                segment,
                detail: "another process holds this data directory's journal (is `woodpecker \
                         serve` running on it?); stop it first"
                    .into(),
            });
        }
        self.close_processor(log_id, segment_id).await;
        self.evict_reader(log_id, segment_id);
        local::repair_segment(&dir, self.clock.now_secs(), lost)
            .await
            .map_err(|e| match e {
                storage::Error::Unsupported { what } => LogStoreError::SegmentStateInvalid {
                    segment: segment.clone(),
                    detail: what,
                },
                e => LogStoreError::read(&segment, StorageKind::Local, e),
            })
    }

    /// Blocks of (log, segment) (0 when it does not exist): the processor's count when this
    /// LogStore writes it, else from storage as [`segment_last_entry_id`] does. After
    /// compaction this counts merged blocks.
    ///
    /// [`segment_last_entry_id`]: LogStore::segment_last_entry_id
    pub async fn block_count(&self, log_id: i64, segment_id: i64) -> Result<usize> {
        if let Some(p) = self.existing_processor(log_id, segment_id).await {
            return Ok(p.block_count());
        }
        let segment = segment_name(log_id, segment_id);
        match self.backend.segment_location(log_id, segment_id) {
            SegmentLocation::Object(storage) => {
                let scan = SegmentObjects::new(storage, log_id, segment_id)
                    .scan_blocks()
                    .await
                    .map_err(|e| LogStoreError::read(&segment, StorageKind::Object, e))?;
                Ok(scan.blocks.len())
            }
            SegmentLocation::Local(dir) => {
                Ok(inspect_local(&segment, &dir).await?.map_or(0, |s| s.blocks))
            }
        }
    }
}

fn fs_error(segment: &str, op: &'static str, path: &Path, e: std::io::Error) -> LogStoreError {
    LogStoreError::storage(
        segment,
        StorageKind::Local,
        storage::Error::Backend {
            op,
            path: path.display().to_string(),
            source: Box::new(e),
        },
    )
}

/// Verifies `dir/data.log` read-only (the whole file is read; past damaged blocks, as
/// recovery does); `None` when it does not exist.
async fn inspect_local(segment: &str, dir: &Path) -> Result<Option<LocalSummary>> {
    let path: PathBuf = dir.join(DATA_FILE);
    let Some(check) = local::check_segment(dir)
        .await
        .map_err(|e| LogStoreError::read(segment, StorageKind::Local, e))?
    else {
        return Ok(None);
    };
    for d in &check.damaged {
        tracing::debug!(segment, path = %path.display(), position = %d.position(), error = %d.detail, lost = %d.lost(),
            "damaged block in a segment file (see `woodpecker log repair`)");
    }
    if let Some((offset, why)) = &check.tail {
        tracing::debug!(segment, path = %path.display(), offset, error = %why,
            "torn or damaged bytes after the last valid block; recovery would cut them off");
    }
    Ok(Some(LocalSummary {
        size: check.size,
        blocks: check.valid_blocks + check.damaged.len(),
        last_entry_id: check.last_entry_id,
    }))
}
