//! Staged storage (spec §5.4): what a service-mode LogStore keeps for one tenant (bucket and
//! root path).
//!
//! Active segments are local `data.log` files, written by the same [`LogStore`] and
//! [`SegmentProcessor`] as embedded local mode (group-committed
//! through the journal or fsynced, before an entry is acknowledged `Synced`), under
//! `<dir>/<logId>/<segId>/`. Completing a segment writes the local footer with the LAC the
//! client names (the quorum's completion target). One replica then compacts the completed
//! segment into object storage in the layout embedded mode reads (`m_N.blk`, then
//! `footer.blk` as the commit point; no `N.blk` originals), after which `data.compacted` marks
//! the local copy as reclaimable and reads come from object storage.
//!
//! # What readers see
//!
//! A replica serves only entries at or below the segment's LAC: the last value pushed by
//! `UpdateLastAddConfirmed` (kept in memory, lost on restart) or the LAC of the local footer.
//! Entries written here but never confirmed by a quorum are never served. A request at or
//! below the LAC that this replica cannot satisfy (it is behind) is answered "not yet" (8102),
//! so the client asks another replica; EOF (2310) is answered only once the segment is
//! complete and every entry up to its LAC was served.
//!
//! # Compaction guard
//!
//! A replica compacts only a segment it completed locally and only when it holds every entry
//! up to the completion LAC (Go #242: a behind replica once sealed a short segment). The
//! object footer is written with a conditional create, so two replicas compacting at once
//! agree on one footer.
//!
//! What it must never do: serve an entry above the LAC, delete a local `data.log` before the
//! object footer is confirmed, or create a new `data.log` for a segment already compacted.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use storage::codec::{FOOTER_FLAG_COMPACTED, FooterRecord, INDEX_RECORD_LEN};
use storage::object::ObjectStorage;
use storage::segment::local::{DATA_FILE, FENCE_FILE, LocalSegmentReader};
use storage::segment::object::{
    DeleteScope, MergedOffsets, MergedWriter, ObjectSegmentReader, SegmentFooter, SegmentObjects,
};
use tokio::sync::Mutex;

use super::error::{LogStoreError, Result, StorageKind};
use super::reader::{CleanScope, ReadEnd, ReadResult};
use super::{Backend, FooterLac, FormatVersion, LogStore, SegmentProcessor, SyncPolicy};
use crate::clock::ClockRef;

/// How many object-storage readers of compacted segments a store keeps (an arbitrary one is
/// dropped beyond this; a dropped reader only costs a footer read when used again).
const OBJECT_READER_CAPACITY: usize = 256;

/// The empty file that marks a segment as durably compacted into object storage.
pub(crate) const COMPACTED_MARKER: &str = "data.compacted";

/// What [`StagedStore::compact`] produced (the facts CompactSegment answers with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StagedCompaction {
    /// Bytes of the merged blocks.
    pub size: u64,
    /// Merged blocks.
    pub blocks: usize,
    /// The segment's last entry (its completion LAC; -1 when empty).
    pub last_entry_id: i64,
}

/// The LAC a replica knows for a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lac {
    value: i64,
    /// From a completion (local footer): the segment ends there.
    complete: bool,
}

#[derive(Debug, Default)]
struct State {
    lacs: HashMap<(i64, i64), Lac>,
    compacted: HashSet<(i64, i64)>,
    compacting: HashSet<(i64, i64)>,
    readers: HashMap<(i64, i64), Arc<Mutex<ObjectSegmentReader>>>,
}

/// The staged storage of one tenant: see the module docs.
#[derive(Debug)]
pub struct StagedStore {
    local: LogStore,
    dir: PathBuf,
    objects: ObjectStorage,
    clock: ClockRef,
    compaction_max_bytes: usize,
    state: StdMutex<State>,
}

fn segment_name(log_id: i64, segment_id: i64) -> String {
    format!("log {log_id} segment {segment_id}")
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

impl StagedStore {
    /// Staged storage with local segments under `dir` (replaying its journal first) and
    /// compaction into `objects` (whose root is the tenant's root path). Segments are written
    /// in format 6, the only one whose footer holds a LAC.
    pub fn open(
        dir: impl Into<PathBuf>,
        objects: ObjectStorage,
        policy: SyncPolicy,
        compaction_max_bytes: usize,
        clock: ClockRef,
    ) -> std::result::Result<StagedStore, String> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let tenant = format!("{}/{}", objects.bucket(), objects.root());
        let local = LogStore::new(
            Backend::Local(dir.clone()),
            policy,
            FormatVersion::V6,
            clock.clone(),
        )?
        .with_footer_lac(FooterLac::Given)
        .with_log_namespace(&tenant);
        Ok(StagedStore {
            local,
            dir,
            objects,
            clock,
            compaction_max_bytes: compaction_max_bytes.max(1),
            state: StdMutex::new(State::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The local LogStore of active segments.
    pub fn local(&self) -> &LogStore {
        &self.local
    }

    /// The directory of local segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The object storage compacted segments go to.
    pub fn objects(&self) -> &ObjectStorage {
        &self.objects
    }

    fn segment_dir(&self, log_id: i64, segment_id: i64) -> PathBuf {
        self.dir
            .join(log_id.to_string())
            .join(segment_id.to_string())
    }

    fn segment_objects(&self, log_id: i64, segment_id: i64) -> SegmentObjects {
        SegmentObjects::new(self.objects.clone(), log_id, segment_id)
    }

    /// Whether the segment is marked compacted here (`data.compacted`).
    pub async fn is_compacted(&self, log_id: i64, segment_id: i64) -> bool {
        if self.state().compacted.contains(&(log_id, segment_id)) {
            return true;
        }
        let marker = self.segment_dir(log_id, segment_id).join(COMPACTED_MARKER);
        let found = crate::clock::blocking::fs::try_exists(&marker)
            .await
            .unwrap_or(false);
        if found {
            self.state().compacted.insert((log_id, segment_id));
        }
        found
    }

    /// The object footer of a compacted segment.
    async fn remote_footer(&self, log_id: i64, segment_id: i64) -> Result<SegmentFooter> {
        let segment = segment_name(log_id, segment_id);
        self.segment_objects(log_id, segment_id)
            .read_footer()
            .await
            .map_err(|e| LogStoreError::read(&segment, StorageKind::Object, e))?
            .ok_or_else(|| LogStoreError::SegmentNotFound {
                segment,
                detail: "marked compacted here but footer.blk is missing".into(),
            })
    }

    /// The processor that takes appends for the segment; a compacted segment takes none
    /// (2216), and gets no new `data.log`.
    pub async fn processor(&self, log_id: i64, segment_id: i64) -> Result<Arc<SegmentProcessor>> {
        if self.is_compacted(log_id, segment_id).await {
            return Err(LogStoreError::Finalized {
                segment: segment_name(log_id, segment_id),
            });
        }
        self.local.processor(log_id, segment_id).await
    }

    /// FenceSegment: stops appends and returns the last entry this replica serves (-1 when
    /// none): the last stored one, or at most the footer's LAC once completed.
    pub async fn fence(&self, log_id: i64, segment_id: i64) -> Result<i64> {
        if self.is_compacted(log_id, segment_id).await {
            return Ok(self
                .remote_footer(log_id, segment_id)
                .await?
                .last_entry_id());
        }
        let last = self.local.fence_segment(log_id, segment_id).await?;
        self.served_tail(log_id, segment_id, last).await
    }

    /// What a replica serves of a segment whose last stored entry is `last`: reads stop at a
    /// completed segment's footer LAC, so entries stored past it (written but never
    /// acknowledged when the writer completed this replica) are not this replica's to offer.
    /// Recovery and compaction must count only what a replica serves: a fence reply above it
    /// would complete the segment at entries no replica gives readers.
    async fn served_tail(&self, log_id: i64, segment_id: i64, last: i64) -> Result<i64> {
        Ok(match self.lac(log_id, segment_id).await? {
            Some(lac) if lac.complete => last.min(lac.value),
            _ => last,
        })
    }

    /// CompleteSegment: writes the local footer with `lac` (the quorum's completion target)
    /// and returns the last entry this replica serves (see [`fence`](Self::fence)).
    /// Idempotent: a segment completed before keeps its first LAC, and answers with what
    /// that LAC lets it serve.
    pub async fn complete(&self, log_id: i64, segment_id: i64, lac: i64) -> Result<i64> {
        if lac < -1 {
            return Err(LogStoreError::InvalidEntryId {
                entry_id: lac,
                reason: "a last-add-confirmed is -1 or more".into(),
            });
        }
        if self.is_compacted(log_id, segment_id).await {
            return Ok(self
                .remote_footer(log_id, segment_id)
                .await?
                .last_entry_id());
        }
        let last = self.local.complete_segment(log_id, segment_id, lac).await?;
        // The footer's LAC is what counts from now on (a first completion's, if there were two).
        self.state().lacs.remove(&(log_id, segment_id));
        self.served_tail(log_id, segment_id, last).await
    }

    /// UpdateLastAddConfirmed: raises the LAC this replica serves up to (never lowers it).
    pub fn update_lac(&self, log_id: i64, segment_id: i64, lac: i64) {
        let mut st = self.state();
        let e = st.lacs.entry((log_id, segment_id)).or_insert(Lac {
            value: lac,
            complete: false,
        });
        if !e.complete && lac > e.value {
            e.value = lac;
        }
    }

    /// The LAC this replica knows: the local footer's once completed, else the last pushed
    /// one; `None` when neither is known (nothing may be served yet).
    async fn lac(&self, log_id: i64, segment_id: i64) -> Result<Option<Lac>> {
        if let Some(l) = self.state().lacs.get(&(log_id, segment_id))
            && l.complete
        {
            return Ok(Some(*l));
        }
        if let Some(footer) = self.local_footer(log_id, segment_id).await? {
            let l = Lac {
                value: footer.lac,
                complete: true,
            };
            self.state().lacs.insert((log_id, segment_id), l);
            return Ok(Some(l));
        }
        Ok(self.state().lacs.get(&(log_id, segment_id)).copied())
    }

    /// The footer of the local `data.log`, if it has one.
    async fn local_footer(&self, log_id: i64, segment_id: i64) -> Result<Option<FooterRecord>> {
        let segment = segment_name(log_id, segment_id);
        let reader = match LocalSegmentReader::open(self.segment_dir(log_id, segment_id)).await {
            Ok(r) => r,
            Err(storage::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(LogStoreError::read(&segment, StorageKind::Local, e)),
        };
        // A read past every entry loads the header and the footer only.
        reader
            .read_from(i64::MAX, 0)
            .await
            .map_err(|e| LogStoreError::read(&segment, StorageKind::Local, e))?;
        Ok(reader.footer().await)
    }

    /// Reads confirmed entries from `from_entry` on (see the module docs): from object storage
    /// once the segment is compacted, else from the local `data.log` capped at the LAC.
    pub async fn read_batch(
        &self,
        log_id: i64,
        segment_id: i64,
        from_entry: i64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<ReadResult> {
        if from_entry < 0 {
            return Err(LogStoreError::InvalidEntryId {
                entry_id: from_entry,
                reason: "a read starts at a non-negative entry id".into(),
            });
        }
        let max_entries = max_entries.max(1);
        if self.is_compacted(log_id, segment_id).await {
            return self
                .read_objects(log_id, segment_id, from_entry, max_entries, max_bytes)
                .await;
        }
        let Some(lac) = self.lac(log_id, segment_id).await? else {
            return Ok(ReadResult {
                entries: Vec::new(),
                end: ReadEnd::NotYet,
            });
        };
        if lac.complete && from_entry > lac.value {
            return Ok(ReadResult {
                entries: Vec::new(),
                end: ReadEnd::Eof,
            });
        }
        if from_entry > lac.value {
            return Ok(ReadResult {
                entries: Vec::new(),
                end: ReadEnd::NotYet,
            });
        }
        let mut batch = self
            .local
            .read_batch(log_id, segment_id, from_entry, max_entries, max_bytes)
            .await?;
        let cut = batch.entries.iter().position(|(id, _)| *id > lac.value);
        if let Some(cut) = cut {
            batch.entries.truncate(cut);
        }
        let next = batch.entries.last().map_or(from_entry, |(id, _)| id + 1);
        batch.end = if lac.complete && next > lac.value {
            ReadEnd::Eof
        } else if batch.entries.is_empty() {
            // Behind the LAC here: another replica holds what is asked for.
            ReadEnd::NotYet
        } else if batch.end == ReadEnd::More && cut.is_none() {
            ReadEnd::More
        } else {
            ReadEnd::Tail
        };
        Ok(batch)
    }

    async fn read_objects(
        &self,
        log_id: i64,
        segment_id: i64,
        from_entry: i64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<ReadResult> {
        let segment = segment_name(log_id, segment_id);
        let reader = {
            let mut st = self.state();
            if !st.readers.contains_key(&(log_id, segment_id))
                && st.readers.len() >= OBJECT_READER_CAPACITY
                && let Some(victim) = st.readers.keys().next().copied()
            {
                st.readers.remove(&victim);
            }
            st.readers
                .entry((log_id, segment_id))
                .or_insert_with(|| {
                    Arc::new(Mutex::new(ObjectSegmentReader::new(
                        self.segment_objects(log_id, segment_id),
                    )))
                })
                .clone()
        };
        let batch = reader.lock().await.read(from_entry, max_bytes).await;
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                self.state().readers.remove(&(log_id, segment_id));
                return Err(LogStoreError::read(&segment, StorageKind::Object, e));
            }
        };
        let mut entries = batch.entries;
        let mut end = match batch.end {
            storage::segment::object::BatchEnd::Budget => ReadEnd::More,
            storage::segment::object::BatchEnd::Tail => ReadEnd::Tail,
            storage::segment::object::BatchEnd::EndOfSegment => ReadEnd::Eof,
        };
        if entries.len() > max_entries {
            entries.truncate(max_entries);
            end = ReadEnd::More;
        }
        if entries.is_empty() && end != ReadEnd::Eof {
            end = ReadEnd::NotYet;
        }
        Ok(ReadResult { entries, end })
    }

    /// The last entry id this replica serves (-1 when none): the local one (at most the
    /// footer's LAC once completed), or the object footer's once compacted.
    pub async fn last_entry_id(&self, log_id: i64, segment_id: i64) -> Result<i64> {
        if self.is_compacted(log_id, segment_id).await {
            return Ok(self
                .remote_footer(log_id, segment_id)
                .await?
                .last_entry_id());
        }
        let last = self.local.segment_last_entry_id(log_id, segment_id).await?;
        self.served_tail(log_id, segment_id, last).await
    }

    /// Blocks of the segment: local blocks, or merged blocks once compacted.
    pub async fn block_count(&self, log_id: i64, segment_id: i64) -> Result<usize> {
        if self.is_compacted(log_id, segment_id).await {
            return Ok(self.remote_footer(log_id, segment_id).await?.blocks.len());
        }
        self.local.block_count(log_id, segment_id).await
    }

    /// CompactSegment: merges the completed local segment into object storage (see the module
    /// docs), marks it compacted here and reclaims the local copy. Idempotent: a segment
    /// compacted before (by this replica or another) answers with the stored footer.
    ///
    /// Compacts what this replica serves: entries up to its LAC, or up to the last it holds
    /// when a recovery completed it at a target it did not hold. Errors: 2110 while another
    /// compaction of the segment runs here; 1202 when this replica has not completed the
    /// segment; 9000/9100 on storage failures (nothing is reclaimed then).
    pub async fn compact(&self, log_id: i64, segment_id: i64) -> Result<StagedCompaction> {
        let segment = segment_name(log_id, segment_id);
        if !self.state().compacting.insert((log_id, segment_id)) {
            return Err(LogStoreError::AlreadyCompacting { segment });
        }
        let r = self.compact_inner(log_id, segment_id, &segment).await;
        self.state().compacting.remove(&(log_id, segment_id));
        r
    }

    async fn compact_inner(
        &self,
        log_id: i64,
        segment_id: i64,
        segment: &str,
    ) -> Result<StagedCompaction> {
        let summary = |f: &SegmentFooter| StagedCompaction {
            size: f.footer.total_size,
            blocks: f.blocks.len(),
            last_entry_id: f.last_entry_id(),
        };
        if self.is_compacted(log_id, segment_id).await {
            return Ok(summary(&self.remote_footer(log_id, segment_id).await?));
        }
        let objects = self.segment_objects(log_id, segment_id);
        let obj_err = |e| LogStoreError::read(segment, StorageKind::Object, e);
        let local_err = |e| LogStoreError::read(segment, StorageKind::Local, e);
        let dir = self.segment_dir(log_id, segment_id);
        let reader = match LocalSegmentReader::open(&dir).await {
            Ok(r) => Some(r),
            Err(storage::Error::NotFound { .. }) => None,
            Err(e) => return Err(local_err(e)),
        };
        let Some(reader) = reader else {
            // Nothing here; another replica may have compacted it already.
            return match objects.read_footer().await.map_err(obj_err)? {
                Some(f) if f.is_compacted() => Ok(summary(&f)),
                _ => Err(LogStoreError::SegmentNotFound {
                    segment: segment.to_string(),
                    detail: format!("no {} on this replica", dir.join(DATA_FILE).display()),
                }),
            };
        };
        let probe = reader.read_from(i64::MAX, 0).await.map_err(local_err)?;
        let Some(local_footer) = reader.footer().await else {
            return Err(LogStoreError::SegmentStateInvalid {
                segment: segment.to_string(),
                detail: "the segment must be completed on this replica before compaction".into(),
            });
        };
        // What this replica serves: up to its footer's LAC, or less when a recovery completed
        // it at a target it did not hold (the auditor asks only a replica that serves the
        // segment's whole length, see `Replicas::compact`).
        let lac = local_footer.lac.min(probe.last_entry_id);
        if let Some(f) = objects.read_footer().await.map_err(obj_err)?
            && f.is_compacted()
        {
            self.mark_compacted(log_id, segment_id).await?;
            return Ok(summary(&f));
        }
        let mut writer =
            MergedWriter::new(&objects, local_footer.version, 0, self.compaction_max_bytes)
                .with_offsets(MergedOffsets::Zero);
        let mut next = 0i64;
        let mut first = None;
        while next <= lac {
            let batch = reader
                .read_from(next, self.compaction_max_bytes)
                .await
                .map_err(local_err)?;
            if batch.entries.is_empty() {
                return Err(LogStoreError::Corrupt {
                    segment: segment.to_string(),
                    location: dir.join(DATA_FILE).display().to_string(),
                    detail: format!("entry {next} is missing below the LAC {lac}"),
                });
            }
            for e in batch.entries {
                if e.entry_id > lac {
                    break;
                }
                first.get_or_insert(e.entry_id);
                next = e.entry_id + 1;
                writer.push(e.data).await.map_err(obj_err)?;
            }
        }
        let blocks = writer.finish().await.map_err(obj_err)?;
        let records = first.map_or(0, |f| lac - f + 1);
        let footer = SegmentFooter {
            footer: FooterRecord {
                total_blocks: i32::try_from(blocks.len()).unwrap_or(i32::MAX),
                total_records: u32::try_from(records).unwrap_or(u32::MAX),
                total_size: blocks.iter().map(|b| u64::from(b.block_size)).sum(),
                index_offset: 0,
                index_length: u32::try_from(blocks.len() * INDEX_RECORD_LEN).unwrap_or(u32::MAX),
                version: local_footer.version,
                flags: local_footer.flags | FOOTER_FLAG_COMPACTED,
                lac,
            },
            blocks,
        };
        // The footer is the commit point; a footer another replica wrote first wins.
        let stored = objects
            .put_footer_if_absent(&footer)
            .await
            .map_err(obj_err)?;
        if !stored.is_compacted() || stored.last_entry_id() != lac {
            return Err(LogStoreError::Corrupt {
                segment: segment.to_string(),
                location: objects.footer_key(),
                detail: format!(
                    "an existing footer ends at entry {} (compacted: {}) where this replica's LAC is {lac}",
                    stored.last_entry_id(),
                    stored.is_compacted()
                ),
            });
        }
        tracing::info!(
            segment,
            lac,
            blocks = stored.blocks.len(),
            "segment compacted to object storage"
        );
        self.mark_compacted(log_id, segment_id).await?;
        Ok(summary(&stored))
    }

    /// NotifySegmentCompacted: once `footer.blk` is confirmed compacted in object storage,
    /// marks the segment compacted here and reclaims the local copy. Refused (1202) while the
    /// object footer is missing or not compacted.
    pub(crate) async fn notify_compacted(&self, log_id: i64, segment_id: i64) -> Result<()> {
        if self.is_compacted(log_id, segment_id).await {
            return Ok(());
        }
        let segment = segment_name(log_id, segment_id);
        let footer = self
            .segment_objects(log_id, segment_id)
            .read_footer()
            .await
            .map_err(|e| LogStoreError::read(&segment, StorageKind::Object, e))?;
        match footer {
            Some(f) if f.is_compacted() => self.mark_compacted(log_id, segment_id).await,
            _ => Err(LogStoreError::SegmentStateInvalid {
                segment,
                detail: "footer.blk is not compacted in object storage yet".into(),
            }),
        }
    }

    /// Writes `data.compacted` (synced) and reclaims the local copy.
    async fn mark_compacted(&self, log_id: i64, segment_id: i64) -> Result<()> {
        let segment = segment_name(log_id, segment_id);
        let dir = self.segment_dir(log_id, segment_id);
        let marker = dir.join(COMPACTED_MARKER);
        let written = crate::clock::blocking::io(crate::clock::blocking::Io::Write, {
            let dir = dir.clone();
            let marker = marker.clone();
            move || -> std::io::Result<()> {
                std::fs::create_dir_all(&dir)?;
                std::fs::File::create(&marker)?.sync_all()?;
                std::fs::File::open(&dir)?.sync_all()
            }
        })
        .await;
        written.map_err(|e| fs_error(&segment, "write", &marker, e))?;
        self.state().compacted.insert((log_id, segment_id));
        self.reclaim(log_id, segment_id).await
    }

    /// Removes the local `data.log` (and fence file) of a segment marked compacted; the marker
    /// stays, so the segment keeps being read from object storage and never gets a new file.
    async fn reclaim(&self, log_id: i64, segment_id: i64) -> Result<()> {
        let segment = segment_name(log_id, segment_id);
        self.local.close_processor(log_id, segment_id).await;
        self.local.evict_reader(log_id, segment_id);
        let dir = self.segment_dir(log_id, segment_id);
        for name in [DATA_FILE, FENCE_FILE] {
            let path = dir.join(name);
            match crate::clock::blocking::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(fs_error(&segment, "remove", &path, e)),
            }
        }
        self.state().lacs.remove(&(log_id, segment_id));
        Ok(())
    }

    /// CleanSegment: [`CleanScope::All`] deletes the local segment directory and every object
    /// of the segment; the other scopes delete original or merged objects only.
    pub async fn clean(&self, log_id: i64, segment_id: i64, scope: CleanScope) -> Result<()> {
        let segment = segment_name(log_id, segment_id);
        let delete = match scope {
            CleanScope::All => DeleteScope::All,
            CleanScope::Originals => DeleteScope::Originals,
            CleanScope::Merged => DeleteScope::Merged,
        };
        if scope == CleanScope::All {
            self.local
                .clean_segment(log_id, segment_id, CleanScope::All)
                .await?;
            let mut st = self.state();
            st.lacs.remove(&(log_id, segment_id));
            st.compacted.remove(&(log_id, segment_id));
            st.readers.remove(&(log_id, segment_id));
        }
        self.segment_objects(log_id, segment_id)
            .delete(delete)
            .await
            .map_err(|e| LogStoreError::storage(&segment, StorageKind::Object, e))?;
        Ok(())
    }

    /// Deletes every local segment of `log_id` (a log marked deleted): closes its processors
    /// and removes `<dir>/<logId>`.
    pub(crate) async fn delete_local_log(&self, log_id: i64) -> Result<()> {
        let log_dir = self.dir.join(log_id.to_string());
        for segment_id in self.local_segments(log_id).await {
            self.local.close_processor(log_id, segment_id).await;
            self.local.evict_reader(log_id, segment_id);
        }
        {
            let mut st = self.state();
            st.lacs.retain(|(l, _), _| *l != log_id);
            st.compacted.retain(|(l, _)| *l != log_id);
            st.readers.retain(|(l, _), _| *l != log_id);
        }
        match crate::clock::blocking::fs::remove_dir_all(&log_dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(fs_error(&format!("log {log_id}"), "remove", &log_dir, e)),
        }
    }

    /// Removes every local log of this tenant and its journal (an instance marked deleted).
    /// Only what belongs to this tenant goes: log directories (decimal names) and `.journal`;
    /// another tenant whose root path lies below this one's is left alone.
    pub(crate) async fn delete_local_instance(&self) -> Result<()> {
        self.local.close_all().await;
        for log_id in numeric_dirs(&self.dir).await {
            self.delete_local_log(log_id).await?;
        }
        let journal = self.dir.join(".journal");
        match crate::clock::blocking::fs::remove_dir_all(&journal).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(fs_error("instance", "remove", &journal, e)),
        }
    }

    /// Segment ids with a local directory under `log_id`.
    async fn local_segments(&self, log_id: i64) -> Vec<i64> {
        numeric_dirs(&self.dir.join(log_id.to_string())).await
    }

    /// Local segments still holding a `data.log` that is not marked compacted, as (log,
    /// segment) pairs: what a decommissioning node must see drained.
    pub(crate) async fn unreclaimed_segments(&self) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        for log_id in numeric_dirs(&self.dir).await {
            for segment_id in self.local_segments(log_id).await {
                let dir = self.segment_dir(log_id, segment_id);
                let has_data = crate::clock::blocking::fs::try_exists(dir.join(DATA_FILE))
                    .await
                    .unwrap_or(false);
                if has_data && !self.is_compacted(log_id, segment_id).await {
                    out.push((log_id, segment_id));
                }
            }
        }
        out
    }

    /// The pull reconcile (the backstop of NotifySegmentCompacted, which Go clients before
    /// v0.1.36 never send): local segments completed at least `min_age` ago whose object
    /// footer is compacted are marked compacted and reclaimed. Returns how many.
    pub(crate) async fn reconcile_compacted(&self, min_age: Duration) -> usize {
        let mut done = 0;
        for (log_id, segment_id) in self.unreclaimed_segments().await {
            let data = self.segment_dir(log_id, segment_id).join(DATA_FILE);
            let old_enough = crate::clock::blocking::fs::metadata(&data)
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            if !old_enough || !matches!(self.local_footer(log_id, segment_id).await, Ok(Some(_))) {
                continue;
            }
            if self.notify_compacted(log_id, segment_id).await.is_ok() {
                done += 1;
            }
        }
        done
    }

    /// Closes processors idle for `max_idle`; see [`LogStore::close_idle`].
    pub async fn close_idle(&self, max_idle: Duration) -> usize {
        self.local.close_idle(max_idle).await
    }

    /// Closes every processor and the journal.
    pub async fn close_all(&self) {
        self.local.close_all().await;
    }

    /// The clock.
    pub fn clock(&self) -> &ClockRef {
        &self.clock
    }
}

/// Names of the subdirectories of `dir` that are decimal ids.
async fn numeric_dirs(dir: &Path) -> Vec<i64> {
    let mut out = Vec::new();
    let Ok(entries) = crate::clock::blocking::fs::read_dir(dir).await else {
        return out;
    };
    for entry in entries {
        if let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i64>().ok())
            && entry.file_type().is_ok_and(|t| t.is_dir())
        {
            out.push(id);
        }
    }
    out.sort_unstable();
    out
}
