//! [`LogHandle`]: one log, its segments, and opening its writer (spec §2.2, §6.5).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use proto::meta::{SegmentMetadata, SegmentState};

use super::Shared;
use super::error::{ClientError, Result};
use super::writer::LogWriter;
use crate::meta::Versioned;

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

    /// Opens the log's writer. First every Active segment is fenced and completed (its
    /// metadata becomes Completed with the fenced last entry id), which stops any older
    /// writer; a failure gives [`ClientError::FenceFailed`] (1107) and no writer. The writer
    /// starts segment max + 1 on its first write.
    pub async fn open_writer(&self) -> Result<LogWriter> {
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
