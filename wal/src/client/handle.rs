//! [`LogHandle`]: one log, its segments, and opening its writer (spec §2.2, §6.5).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use proto::meta::{SegmentMetadata, SegmentState};

use super::Shared;
use super::error::{ClientError, Result};
use super::reader::LogReader;
use super::segment::Replicas;
use super::writer::LogWriter;
use crate::logstore::ReadResult;
use crate::message::LogMessageId;
use crate::meta::{LockOptions, MetaError, Versioned};

/// A handle on one log.
#[derive(Clone)]
pub struct LogHandle {
    name: String,
    log_id: i64,
    shared: Arc<Shared>,
}

impl fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogHandle")
            .field("name", &self.name)
            .field("log_id", &self.log_id)
            .finish()
    }
}

impl LogHandle {
    pub(crate) fn new(name: String, log_id: i64, shared: Arc<Shared>) -> Self {
        LogHandle {
            name,
            log_id,
            shared,
        }
    }

    /// The log name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log id.
    pub fn log_id(&self) -> i64 {
        self.log_id
    }

    /// What the client's handles share (for the auditor).
    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Every segment's metadata by id (a fresh read each call).
    pub async fn segments(&self) -> Result<BTreeMap<i64, SegmentMetadata>> {
        Ok(self
            .shared
            .meta
            .get_all_segment_metadata(&self.name)
            .await?
            .into_iter()
            .map(|(id, v)| (id, v.value))
            .collect())
    }

    /// Opens a reader at `from` (see [`LogReader`] for [`LogMessageId::EARLIEST`],
    /// [`LogMessageId::LATEST`] and truncated positions). Its name is
    /// `<log>-r-<unixNano>`, or `<log>-r-<base>-<unixNano>` with a base name, and it is
    /// registered as a `ReaderTempInfo` until [`LogReader::close`].
    pub async fn open_reader(
        &self,
        from: LogMessageId,
        reader_base_name: Option<&str>,
    ) -> Result<LogReader> {
        LogReader::open(
            self.name.clone(),
            self.log_id,
            self.shared.clone(),
            from,
            reader_base_name,
        )
        .await
    }

    /// The truncation point (inclusive), `None` while the log was never truncated.
    pub async fn truncation_point(&self) -> Result<Option<LogMessageId>> {
        let meta = self.shared.meta.get_log_meta(&self.name).await?.value;
        Ok((meta.truncated_segment_id >= 0)
            .then(|| LogMessageId::new(meta.truncated_segment_id, meta.truncated_entry_id)))
    }

    /// Moves the truncation point to `id` (inclusive; spec §2.6). A point at or before the
    /// current one is ignored, and so is a segment without metadata. In a Completed or
    /// Sealed segment the entry must be within `0..=lastEntryId`, else
    /// [`ClientError::TruncateFailed`] (1105). The log metadata is replaced by a
    /// compare-and-swap on its revision, re-read and retried a few times on a conflict.
    /// Data is removed later, by the writer's auditor.
    pub async fn truncate(&self, id: LogMessageId) -> Result<()> {
        const ATTEMPTS: usize = 5;
        let refuse = |reason: String| ClientError::TruncateFailed {
            log: self.name.clone(),
            id,
            reason,
        };
        if id.segment_id < 0 || id.entry_id < 0 {
            return Err(refuse("ids are non-negative".into()));
        }
        for _ in 0..ATTEMPTS {
            let current = self.shared.meta.get_log_meta(&self.name).await?;
            let meta = &current.value;
            if meta.truncated_segment_id >= 0
                && id <= LogMessageId::new(meta.truncated_segment_id, meta.truncated_entry_id)
            {
                tracing::debug!(log = %self.name, %id, "truncation point not moved forward; ignored");
                return Ok(());
            }
            let segment = match self
                .shared
                .meta
                .get_segment_metadata(&self.name, id.segment_id)
                .await
            {
                Ok(v) => v.value,
                Err(MetaError::KeyNotExists { .. }) => {
                    tracing::debug!(log = %self.name, %id, "truncation in a missing segment; ignored");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            let finished = segment.state == SegmentState::Completed as i32
                || segment.state == SegmentState::Sealed as i32;
            if finished && id.entry_id > segment.last_entry_id {
                return Err(refuse(format!(
                    "segment {} ends at entry {}",
                    id.segment_id, segment.last_entry_id
                )));
            }
            let updated = proto::meta::LogMeta {
                truncated_segment_id: id.segment_id,
                truncated_entry_id: id.entry_id,
                modification_timestamp: self.shared.clock.now_secs(),
                ..*meta
            };
            match self
                .shared
                .meta
                .update_log_meta(&self.name, &updated, current.revision)
                .await
            {
                Ok(_) => {
                    tracing::info!(log = %self.name, %id, "log truncated");
                    return Ok(());
                }
                Err(MetaError::RevisionInvalid { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(refuse(format!(
            "the log metadata changed concurrently {ATTEMPTS} times"
        )))
    }

    /// Opens the log's writer. First every Active segment is fenced and completed (its
    /// metadata becomes Completed with the fenced last entry id), which stops any older
    /// writer; a failure gives [`ClientError::FenceFailed`] (1107) and no writer. The writer
    /// starts segment max + 1 on its first write.
    pub async fn open_writer(&self) -> Result<LogWriter> {
        // Object storage without conditional writes (`fencePolicy.conditionWrite: disable`)
        // cannot fence: one writer at a time is enforced by the metadata writer lock, taken
        // before anything else and held until the writer closes.
        let lock = if self.shared.cluster.requires_writer_lock() {
            Some(
                self.shared
                    .meta
                    .acquire_log_writer_lock(&self.name, LockOptions::default())
                    .await?,
            )
        } else {
            None
        };
        let segments = self
            .shared
            .meta
            .get_all_segment_metadata(&self.name)
            .await?;
        let active: Vec<_> = segments
            .iter()
            .filter(|(_, v)| v.value.state == SegmentState::Active as i32)
            .collect();
        let fenced = futures::future::join_all(
            active
                .iter()
                .map(|(id, v)| self.fence_and_complete(**id, v)),
        )
        .await;
        for ((id, _), r) in active.iter().zip(fenced) {
            if let Err(e) = r {
                tracing::warn!(log = %self.name, segment = **id, error = %e, "fence failed");
                return Err(ClientError::FenceFailed {
                    log: self.name.clone(),
                    segment: **id,
                    source: Box::new(e),
                });
            }
        }
        let next_segment_id = segments.keys().next_back().map_or(0, |max| max + 1);
        Ok(LogWriter::start(
            self.name.clone(),
            self.log_id,
            next_segment_id,
            self.shared.clone(),
            lock,
        ))
    }

    /// Fences the segment's replicas, completes them at the target the replies allow
    /// ([`crate::quorum`]), then CASes the metadata to Completed at that target.
    async fn fence_and_complete(
        &self,
        segment_id: i64,
        current: &Versioned<SegmentMetadata>,
    ) -> Result<()> {
        let replicas = Replicas::of(&self.shared, &self.name, self.log_id, &current.value)?;
        let done = replicas.recover().await?;
        let meta = SegmentMetadata {
            state: SegmentState::Completed as i32,
            last_entry_id: done.last_entry_id,
            completion_time: self.shared.now_millis(),
            ..current.value.clone()
        };
        self.shared
            .meta
            .update_segment_metadata(&self.name, &meta, current.revision)
            .await?;
        replicas.release().await;
        tracing::info!(log = %self.name, segment = segment_id, %done, "active segment fenced and completed");
        Ok(())
    }

    /// The replicas of segment `segment_id` as its metadata names them (3012 for a log
    /// without it, the metadata error for a missing segment).
    async fn replicas(&self, segment_id: i64) -> Result<Replicas> {
        let meta = self
            .shared
            .meta
            .get_segment_metadata(&self.name, segment_id)
            .await?
            .value;
        Replicas::of(&self.shared, &self.name, self.log_id, &meta)
    }

    /// The last entry id a replica of segment `segment_id` holds (−1: none): for an Active
    /// segment, how far its writer got; a finished segment's metadata says it directly.
    pub async fn segment_last_entry_id(&self, segment_id: i64) -> Result<i64> {
        self.replicas(segment_id).await?.last_entry_id().await
    }

    /// Blocks a replica of segment `segment_id` holds (merged blocks after compaction).
    pub async fn segment_block_count(&self, segment_id: i64) -> Result<usize> {
        self.replicas(segment_id).await?.block_count().await
    }

    /// Reads a batch of segment `segment_id` from `from_entry` straight from its replicas
    /// (at most `max_entries` entries and about `max_bytes`), with every block's checks; for
    /// tools that inspect segments. Applications read with [`LogHandle::open_reader`].
    pub async fn read_segment(
        &self,
        segment_id: i64,
        from_entry: i64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<ReadResult> {
        self.replicas(segment_id)
            .await?
            .read_batch(from_entry, max_entries, max_bytes, None, false)
            .await
    }
}
