//! [`LogHandle`]: one log, its segments, and opening its writer (spec §2.2, §6.5).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use proto::meta::{SegmentMetadata, SegmentState};

use super::Shared;
use super::error::{ClientError, Result};
use super::reader::LogReader;
use super::writer::LogWriter;
use crate::logstore::Backend;
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
        let lock = match self.shared.logstore.backend() {
            Backend::Object(storage) if !storage.condition_write_enabled() => Some(
                self.shared
                    .meta
                    .acquire_log_writer_lock(&self.name, LockOptions::default())
                    .await?,
            ),
            _ => None,
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

    /// Fence, complete, then CAS the metadata to Completed with the fenced last entry id.
    async fn fence_and_complete(
        &self,
        segment_id: i64,
        current: &Versioned<SegmentMetadata>,
    ) -> Result<()> {
        let logstore = &self.shared.logstore;
        let last = logstore.fence_segment(self.log_id, segment_id).await?;
        let completed = logstore
            .complete_segment(self.log_id, segment_id, last)
            .await?;
        if completed != last {
            tracing::warn!(log = %self.name, segment = segment_id, fenced = last, completed, "fence and completion disagree on the last entry; using the fence's");
        }
        let meta = SegmentMetadata {
            state: SegmentState::Completed as i32,
            last_entry_id: last,
            completion_time: self.shared.now_millis(),
            ..current.value.clone()
        };
        self.shared
            .meta
            .update_segment_metadata(&self.name, &meta, current.revision)
            .await?;
        logstore.close_processor(self.log_id, segment_id).await;
        tracing::info!(log = %self.name, segment = segment_id, last_entry_id = last, "active segment fenced and completed");
        Ok(())
    }
}
