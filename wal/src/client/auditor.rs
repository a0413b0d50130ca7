//! The auditor: truncation marking, compaction and truncation GC of one log (spec §2.6,
//! §6.9).
//!
//! One pass ([`Auditor::run_once`]), in order:
//!
//! 1. **Mark truncated.** Every segment below `LogMeta.truncated_segment_id` that is
//!    Completed or Sealed becomes Truncated by a compare-and-swap on its revision. Active
//!    segments are never touched (the post-#286 rule: truncating a segment mid-completion
//!    made the completion's CAS fail and the writer fence itself).
//! 2. **Compact.** Every Completed segment is compacted by the first of its replicas that
//!    can (a quorum of one: the LogStore) and its metadata CASed to Sealed with the sealed
//!    time and the compacted size. Local storage has no compaction: as in Go, its segments
//!    stay Completed (counted as skipped). A segment no replica compacts (no footer: a
//!    takeover of a v0.1.13 writer) or whose compacted last entry is short of the metadata's
//!    (the #242 guard) stays Completed; the pass goes on.
//! 3. **Collect.** A Truncated segment is collected when its id is below both the
//!    truncation point and every live reader's `recent_read_segment_id`, and its latest time
//!    (create, completion, sealed) is at least `retentionPolicy.ttl` old on the client's
//!    clock. Collection writes the cleanup record `<P>/cleaning/<logId>/<segId>`
//!    (IN_PROGRESS, one entry per replica: `{"127.0.0.1:59456": false}` in embedded mode),
//!    cleans the data on every replica, marks the record COMPLETED, then deletes the segment metadata, the compacted-notify record and the
//!    cleanup record. Every step is idempotent: a record left IN_PROGRESS (an interrupted
//!    pass) is resumed once it has not been updated for
//!    [`ClientSettings::cleanup_stale_after`](super::ClientSettings::cleanup_stale_after), a
//!    FAILED or COMPLETED one on the next pass, and a record whose segment metadata is
//!    already gone is removed.
//!
//! In Go the auditor runs inside an open writer every `auditor.maxInterval`. Here
//! [`Auditor::spawn`] (or [`LogHandle::start_auditor`]) runs it in the background until the
//! returned [`AuditorHandle`] is stopped or dropped; it is not started by
//! [`LogWriter`](super::LogWriter) itself.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use proto::meta::{SegmentCleanupState, SegmentCleanupStatus, SegmentMetadata, SegmentState};
use tokio::task::JoinHandle;

use super::error::{ClientError, Result};
use super::handle::LogHandle;
use super::segment::Replicas;
use super::{Client, Shared};
use crate::logstore::CleanScope;
use crate::meta::{MetaError, Versioned};

/// What one auditor pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditReport {
    /// The truncation point the pass used (`-1`: never truncated).
    pub truncated_segment_id: i64,
    /// Segments marked Truncated.
    pub marked_truncated: usize,
    /// Segments compacted and marked Sealed.
    pub sealed: usize,
    /// Completed segments left Completed because the storage has no compaction (local).
    pub compaction_skipped: usize,
    /// Completed segments whose compaction or sealing failed; they stay Completed.
    pub compaction_failed: usize,
    /// Truncated segments whose data and metadata were deleted.
    pub collected: usize,
    /// Truncated segments whose collection failed (retried on a later pass).
    pub collection_failed: usize,
    /// Truncated segments kept: inside the retention TTL, at or above a live reader's
    /// position, or with a fresh IN_PROGRESS cleanup record.
    pub retained: usize,
    /// Cleanup records removed because their segment metadata was already gone.
    pub orphan_records_removed: usize,
    /// Compare-and-swap conflicts (the segment changed under the pass; retried next pass).
    pub conflicts: usize,
}

/// The auditor of one log.
#[derive(Clone)]
pub struct Auditor {
    log: String,
    log_id: i64,
    shared: Arc<Shared>,
}

impl fmt::Debug for Auditor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auditor")
            .field("log", &self.log)
            .field("log_id", &self.log_id)
            .finish()
    }
}

/// A running background auditor; dropping it stops the task.
#[derive(Debug)]
pub struct AuditorHandle {
    task: JoinHandle<()>,
}

impl AuditorHandle {
    /// Stops the auditor and waits for its task to end (a pass in progress is abandoned;
    /// every step is idempotent, so the next auditor resumes it).
    pub async fn stop(self) {
        let mut this = self;
        this.task.abort();
        // Cancelled (or already ended): either way the task is gone. The abort in Drop
        // that follows is harmless.
        let _ = (&mut this.task).await;
    }

    /// Whether the task has ended (stopped, or the log was deleted).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for AuditorHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn state_is(seg: &SegmentMetadata, state: SegmentState) -> bool {
    seg.state == state as i32
}

fn is_conflict(e: &MetaError) -> bool {
    matches!(
        e,
        MetaError::RevisionInvalid { .. } | MetaError::KeyNotExists { .. }
    )
}

impl Auditor {
    pub(crate) fn new(log: String, log_id: i64, shared: Arc<Shared>) -> Self {
        Auditor {
            log,
            log_id,
            shared,
        }
    }

    /// The log name.
    pub fn log_name(&self) -> &str {
        &self.log
    }

    /// Runs passes every [`ClientSettings::auditor_interval`](super::ClientSettings) on the
    /// client's clock (the first one after one interval) until the handle is stopped or
    /// dropped, or the log is deleted. A failed pass is logged and retried next interval.
    pub fn spawn(self) -> AuditorHandle {
        let task = tokio::spawn(async move {
            let interval = self
                .shared
                .settings
                .auditor_interval
                .max(std::time::Duration::from_millis(1));
            loop {
                self.shared.clock.sleep(interval).await;
                match self.run_once().await {
                    Ok(report) => tracing::debug!(log = %self.log, ?report, "auditor pass"),
                    Err(ClientError::LogNotFound { .. }) => {
                        tracing::info!(log = %self.log, "log deleted; auditor stops");
                        return;
                    }
                    Err(e) => tracing::warn!(log = %self.log, error = %e, "auditor pass failed"),
                }
            }
        });
        AuditorHandle { task }
    }

    /// One pass: mark truncated, compact, collect (see the module docs). Fails only when
    /// the log's metadata, segments or readers cannot be read (3012 when the log is gone);
    /// per-segment failures are logged and counted in the report.
    pub async fn run_once(&self) -> Result<AuditReport> {
        let meta = &self.shared.meta;
        let log_meta = meta.get_log_meta(&self.log).await?.value;
        let truncated = log_meta.truncated_segment_id;
        let mut report = AuditReport {
            truncated_segment_id: truncated,
            ..AuditReport::default()
        };
        let mut segments = meta.get_all_segment_metadata(&self.log).await?;
        self.mark_truncated(&mut segments, truncated, &mut report)
            .await;
        self.compact(&mut segments, &mut report).await;
        self.collect(&segments, truncated, &mut report).await?;
        Ok(report)
    }

    async fn mark_truncated(
        &self,
        segments: &mut BTreeMap<i64, Versioned<SegmentMetadata>>,
        truncated: i64,
        report: &mut AuditReport,
    ) {
        for (&id, seg) in segments.range_mut(..truncated) {
            if !(state_is(&seg.value, SegmentState::Completed)
                || state_is(&seg.value, SegmentState::Sealed))
            {
                continue;
            }
            let next = SegmentMetadata {
                state: SegmentState::Truncated as i32,
                ..seg.value.clone()
            };
            match self
                .shared
                .meta
                .update_segment_metadata(&self.log, &next, seg.revision)
                .await
            {
                Ok(revision) => {
                    tracing::info!(log = %self.log, segment = id, "segment marked truncated");
                    *seg = Versioned {
                        value: next,
                        revision,
                    };
                    report.marked_truncated += 1;
                }
                Err(e) => {
                    tracing::warn!(log = %self.log, segment = id, error = %e, "marking a segment truncated failed");
                    if is_conflict(&e) {
                        report.conflicts += 1;
                    }
                }
            }
        }
    }

    async fn compact(
        &self,
        segments: &mut BTreeMap<i64, Versioned<SegmentMetadata>>,
        report: &mut AuditReport,
    ) {
        let compacts = self.shared.cluster.compacts();
        for (&id, seg) in segments.iter_mut() {
            if !state_is(&seg.value, SegmentState::Completed) {
                continue;
            }
            if !compacts {
                report.compaction_skipped += 1;
                continue;
            }
            let compacted = match Replicas::of(&self.shared, &self.log, self.log_id, &seg.value) {
                Ok(replicas) => replicas.compact(seg.value.last_entry_id).await,
                Err(e) => Err(e),
            };
            let result = match compacted {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(log = %self.log, segment = id, error = %e, "compaction failed; the segment stays completed");
                    report.compaction_failed += 1;
                    continue;
                }
            };
            if result.last_entry_id < seg.value.last_entry_id {
                tracing::warn!(log = %self.log, segment = id, compacted = result.last_entry_id, expected = seg.value.last_entry_id, "compacted segment is short of its last entry; not sealing");
                report.compaction_failed += 1;
                continue;
            }
            let next = SegmentMetadata {
                state: SegmentState::Sealed as i32,
                sealed_time: self.shared.now_millis(),
                size: i64::try_from(result.size).unwrap_or(i64::MAX),
                ..seg.value.clone()
            };
            match self
                .shared
                .meta
                .update_segment_metadata(&self.log, &next, seg.revision)
                .await
            {
                Ok(revision) => {
                    tracing::info!(log = %self.log, segment = id, size = result.size, blocks = result.blocks, "segment compacted and sealed");
                    *seg = Versioned {
                        value: next,
                        revision,
                    };
                    report.sealed += 1;
                }
                Err(e) => {
                    tracing::warn!(log = %self.log, segment = id, error = %e, "sealing a compacted segment failed");
                    if is_conflict(&e) {
                        report.conflicts += 1;
                    } else {
                        report.compaction_failed += 1;
                    }
                }
            }
        }
    }

    async fn collect(
        &self,
        segments: &BTreeMap<i64, Versioned<SegmentMetadata>>,
        truncated: i64,
        report: &mut AuditReport,
    ) -> Result<()> {
        let meta = &self.shared.meta;
        let records: HashMap<i64, SegmentCleanupStatus> = meta
            .list_segment_cleanup_status(self.log_id)
            .await?
            .into_iter()
            .map(|r| (r.segment_id, r))
            .collect();
        for (&id, _) in records.iter().filter(|(id, _)| !segments.contains_key(id)) {
            match meta.delete_segment_cleanup_status(self.log_id, id).await {
                Ok(()) => report.orphan_records_removed += 1,
                Err(e) => {
                    tracing::warn!(log = %self.log, segment = id, error = %e, "removing an orphan cleanup record failed");
                }
            }
        }
        let readers = meta.get_reader_temp_infos(self.log_id).await?;
        let bound = readers
            .iter()
            .map(|r| r.recent_read_segment_id)
            .fold(truncated, i64::min);
        let now = self.shared.now_millis();
        let ttl = super::millis(self.shared.settings.retention_ttl);
        let stale_after = super::millis(self.shared.settings.cleanup_stale_after);
        for (&id, seg) in segments {
            if !state_is(&seg.value, SegmentState::Truncated) {
                continue;
            }
            let latest = seg
                .value
                .create_time
                .max(seg.value.completion_time)
                .max(seg.value.sealed_time);
            if id >= bound || now.saturating_sub(latest) < ttl {
                report.retained += 1;
                continue;
            }
            if let Some(r) = records.get(&id)
                && r.state == SegmentCleanupState::CleanupInProgress as i32
                && now.saturating_sub(i64::try_from(r.last_update_time).unwrap_or(i64::MAX))
                    < stale_after
            {
                tracing::debug!(log = %self.log, segment = id, "cleanup in progress elsewhere");
                report.retained += 1;
                continue;
            }
            match self.collect_one(id, &seg.value, records.get(&id)).await {
                Ok(()) => report.collected += 1,
                Err(e) => {
                    tracing::warn!(log = %self.log, segment = id, error = %e, "collecting a truncated segment failed");
                    report.collection_failed += 1;
                }
            }
        }
        Ok(())
    }

    /// Collects one segment, resuming `record` when there is one.
    async fn collect_one(
        &self,
        id: i64,
        segment: &SegmentMetadata,
        record: Option<&SegmentCleanupStatus>,
    ) -> Result<()> {
        let meta = &self.shared.meta;
        let replicas = Replicas::of(&self.shared, &self.log, self.log_id, segment)?;
        let now = u64::try_from(self.shared.now_millis()).unwrap_or(0);
        let mut status = match record {
            Some(r) => SegmentCleanupStatus {
                state: SegmentCleanupState::CleanupInProgress as i32,
                last_update_time: now,
                error_message: String::new(),
                ..r.clone()
            },
            None => SegmentCleanupStatus {
                log_id: self.log_id,
                segment_id: id,
                state: SegmentCleanupState::CleanupInProgress as i32,
                start_time: now,
                last_update_time: now,
                quorum_cleanup_status: replicas
                    .endpoints()
                    .into_iter()
                    .map(|node| (node, false))
                    .collect(),
                error_message: String::new(),
            },
        };
        let done = record.is_some_and(|r| r.state == SegmentCleanupState::CleanupCompleted as i32);
        if !done {
            if record.is_some() {
                tracing::info!(log = %self.log, segment = id, "resuming an interrupted cleanup");
                meta.update_segment_cleanup_status(&status).await?;
            } else {
                meta.create_segment_cleanup_status(&status).await?;
            }
            let mut failure = None;
            for (node, r) in replicas.clean(CleanScope::All).await {
                match r {
                    Ok(()) => {
                        status.quorum_cleanup_status.insert(node, true);
                    }
                    Err(e) => {
                        tracing::warn!(log = %self.log, segment = id, node = %node, error = %e, "cleaning a replica failed");
                        status.quorum_cleanup_status.insert(node.clone(), false);
                        failure.get_or_insert((node, e));
                    }
                }
            }
            status.last_update_time = u64::try_from(self.shared.now_millis()).unwrap_or(0);
            if let Some((node, e)) = failure {
                status.state = SegmentCleanupState::CleanupFailed as i32;
                status.error_message = format!("{node}: {e}");
                if let Err(e2) = meta.update_segment_cleanup_status(&status).await {
                    tracing::warn!(log = %self.log, segment = id, error = %e2, "recording a failed cleanup failed");
                }
                return Err(e.into());
            }
            status.state = SegmentCleanupState::CleanupCompleted as i32;
            meta.update_segment_cleanup_status(&status).await?;
        }
        match meta.delete_segment_metadata(&self.log, id).await {
            Ok(()) | Err(MetaError::KeyNotExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        meta.delete_compacted_notify_status(self.log_id, id).await?;
        meta.delete_segment_cleanup_status(self.log_id, id).await?;
        tracing::info!(log = %self.log, segment = id, "truncated segment collected");
        Ok(())
    }
}

impl LogHandle {
    /// The auditor of this log.
    pub fn auditor(&self) -> Auditor {
        Auditor::new(
            self.name().to_string(),
            self.log_id(),
            self.shared().clone(),
        )
    }

    /// Starts this log's auditor in the background (see [`Auditor::spawn`]). Go runs it
    /// inside an open writer; here the application starts it, normally next to the writer.
    pub fn start_auditor(&self) -> AuditorHandle {
        self.auditor().spawn()
    }
}

impl Client {
    /// Deletes a log: cleans every segment's data through the LogStore, then deletes its
    /// metadata (parked under `logs-deleted/` first, as Go's non-forced deletion). A writer
    /// still open on the log loses it. Fails with 3012 when the log does not exist; a
    /// failure to clean a segment stops the deletion before any metadata is removed, so it
    /// can be repeated.
    pub async fn delete_log(&self, name: &str) -> Result<()> {
        let shared = &self.shared;
        let log_id = shared.meta.get_log_meta(name).await?.value.log_id;
        let segments = shared.meta.get_all_segment_metadata(name).await?;
        for seg in segments.values() {
            let replicas = Replicas::of(shared, name, log_id, &seg.value)?;
            for (_, r) in replicas.clean(CleanScope::All).await {
                r?;
            }
        }
        shared.meta.delete_log_metadata(name, false).await?;
        tracing::info!(log = name, log_id, segments = segments.len(), "log deleted");
        Ok(())
    }
}
