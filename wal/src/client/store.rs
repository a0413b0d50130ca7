//! The boundary between the client and the LogStores: [`LogStoreClient`] is one LogStore
//! node as the client sees it, shaped after the `woodpecker.proto.logstore.LogStore` gRPC
//! service (one method per RPC the client uses), and [`LogStoreCluster`] is where a client's
//! nodes come from (the quorum for a new segment, the client of a node named in a segment's
//! metadata).
//!
//! Two implementations of each:
//!
//! * Embedded mode: [`LocalLogStoreClient`] over the process's own
//!   [`LogStore`](crate::logstore::LogStore), in a [`EmbeddedCluster`] that always answers
//!   the quorum of one (`{id:-1, nodes:["127.0.0.1:59456"]}`). Calls go straight to the
//!   LogStore: nothing is encoded, copied or handed to another task. The writer's hot path
//!   goes one step further and hands appends to the segment's processor itself
//!   ([`LogStoreClient::in_process`]), so embedded mode writes exactly as it did before this
//!   boundary existed.
//! * Service mode: the tonic client of a remote LogStore and the cluster of static seeds in
//!   [`crate::service`].
//!
//! Errors are [`LogStoreError`]s with the Go wire codes, whichever side produced them.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use proto::meta::QuorumInfo;
use tokio::sync::mpsc;

use super::error::ClientError;
use super::{EMBEDDED_NODE, embedded_quorum};
use crate::logstore::{
    Backend, CleanScope, CompactResult, DamagedBlock, LogStore, LogStoreError, ReadResult,
    WaitOutcome,
};

/// Result alias of the boundary.
pub(crate) type StoreResult<T> = std::result::Result<T, LogStoreError>;

/// Progress of an [`add_entries`](LogStoreClient::add_entries) call, as the AddEntries
/// stream reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendEvent {
    /// Every entry of the call was taken into the node's buffer (not yet durable).
    Buffered,
    /// Every entry of the call up to this id is durable on the node.
    Synced(i64),
}

/// The answers to one [`add_entries`](LogStoreClient::add_entries) call: `Buffered` once,
/// then `Synced` ids in increasing order; an error ends it (the Go `Failed` frame). The
/// stream ends after the call's last entry is synced.
pub type AppendStream = BoxStream<'static, StoreResult<AppendEvent>>;

/// One LogStore node, as the client talks to it (the `LogStore` gRPC service).
///
/// Every method is one request naming its log and segment; none keeps state between calls
/// that the caller depends on. Calls to a remote node are bounded in time by the
/// implementation (a silent node gives an error, never a wait without end).
#[async_trait]
pub trait LogStoreClient: Send + Sync + fmt::Debug {
    /// The node's address as recorded in `QuorumInfo.nodes`.
    fn endpoint(&self) -> &str;

    /// The in-process LogStore behind this client, when there is one. A segment whose only
    /// replica is in process is written through its processor directly (no copy, no task
    /// hop); see [`SegmentProcessor::try_add_entry_with`](crate::logstore::SegmentProcessor::try_add_entry_with).
    fn in_process(&self) -> Option<&Arc<LogStore>> {
        None
    }

    /// AddEntries: appends consecutive entries of one segment.
    async fn add_entries(
        &self,
        log_id: i64,
        segment_id: i64,
        entries: Vec<(i64, Bytes)>,
    ) -> StoreResult<AppendStream>;

    /// GetBatchEntriesAdv: entries from `from_entry`, at most `max_entries` and about
    /// `max_bytes` (a remote node applies its own byte budget).
    async fn get_batch_entries(
        &self,
        log_id: i64,
        segment_id: i64,
        from_entry: i64,
        max_entries: usize,
        max_bytes: usize,
    ) -> StoreResult<ReadResult>;

    /// FenceSegment: stops appends and returns the node's last entry id (−1: none).
    async fn fence_segment(&self, log_id: i64, segment_id: i64) -> StoreResult<i64>;

    /// CompleteSegment: finalizes the segment at `lac` and returns the node's last entry id.
    async fn complete_segment(&self, log_id: i64, segment_id: i64, lac: i64) -> StoreResult<i64>;

    /// CompactSegment: merges a completed segment's blocks into object storage.
    async fn compact_segment(&self, log_id: i64, segment_id: i64) -> StoreResult<CompactResult>;

    /// NotifySegmentCompacted: another replica compacted the segment into object storage;
    /// this node serves it from there and reclaims its local copy. An in-process LogStore
    /// (the only replica) has nothing to do.
    async fn notify_segment_compacted(&self, _log_id: i64, _segment_id: i64) -> StoreResult<()> {
        Ok(())
    }

    /// GetSegmentLastAddConfirmed: the node's last entry id of the segment (−1: none).
    async fn get_segment_last_add_confirmed(
        &self,
        log_id: i64,
        segment_id: i64,
    ) -> StoreResult<i64>;

    /// GetSegmentBlockCount: blocks the node holds for the segment.
    async fn get_segment_block_count(&self, log_id: i64, segment_id: i64) -> StoreResult<usize>;

    /// UpdateLastAddConfirmed: tells the node how far the segment is acknowledged, which
    /// bounds what it serves to readers.
    async fn update_last_add_confirmed(
        &self,
        log_id: i64,
        segment_id: i64,
        lac: i64,
    ) -> StoreResult<()>;

    /// CleanSegment: deletes the segment's data (`scope` is the Go `flag`).
    async fn clean_segment(
        &self,
        log_id: i64,
        segment_id: i64,
        scope: CleanScope,
    ) -> StoreResult<()>;

    /// The client is done with a finished segment: an in-process LogStore closes its
    /// processor; a remote node needs nothing.
    async fn release_segment(&self, _log_id: i64, _segment_id: i64) {}

    /// Waits until `entry_id` is durable through this node's writer of the segment, when the
    /// node is in process; a remote node answers [`WaitOutcome::NoWriter`] (poll).
    async fn wait_for_entry(&self, _log_id: i64, _segment_id: i64, _entry_id: i64) -> WaitOutcome {
        WaitOutcome::NoWriter
    }

    /// Removes the segment's data if it holds no block and says whether it did (see
    /// [`LogStore::discard_segment_if_empty`]). The LogStore service has no such call, so a
    /// remote node answers `false` and the writer completes the segment empty, as Go does.
    async fn discard_segment_if_empty(&self, _log_id: i64, _segment_id: i64) -> StoreResult<bool> {
        Ok(false)
    }

    /// The segment's blocks that do not verify (see [`LogStore::damaged_blocks`]). The
    /// LogStore service has no such call: a remote node reports none, and a reader fails
    /// over to another replica when one answers a read with a corruption error.
    async fn damaged_blocks(
        &self,
        _log_id: i64,
        _segment_id: i64,
    ) -> StoreResult<Vec<DamagedBlock>> {
        Ok(Vec::new())
    }
}

/// Where a client's LogStores come from.
#[async_trait]
pub trait LogStoreCluster: Send + Sync + fmt::Debug {
    /// The replica set of a new segment, as recorded in its metadata; may keep trying for
    /// a while when no set is available.
    async fn select_quorum(&self) -> Result<QuorumInfo, ClientError>;

    /// One quick attempt at [`select_quorum`](Self::select_quorum), for a writer that can
    /// keep writing its current segment when no fresh set is available yet.
    async fn try_select_quorum(&self) -> Result<QuorumInfo, ClientError> {
        self.select_quorum().await
    }

    /// The client of the node at `endpoint` (one of a segment's `QuorumInfo.nodes`).
    fn node(&self, endpoint: &str) -> Result<Arc<dyn LogStoreClient>, ClientError>;

    /// The clients of a segment's nodes, in the order of `quorum.nodes`. A cluster refuses
    /// a quorum it cannot serve with [`ClientError::IncompatibleSegment`].
    fn resolve(&self, quorum: &QuorumInfo) -> Result<Vec<Arc<dyn LogStoreClient>>, ClientError> {
        quorum.nodes.iter().map(|e| self.node(e)).collect()
    }

    /// Whether one writer per log is enforced by the metadata writer lock instead of fencing
    /// (object storage without conditional writes, `fencePolicy.conditionWrite: disable`).
    fn requires_writer_lock(&self) -> bool {
        false
    }

    /// Whether completed segments are compacted (not on local files, as in Go).
    fn compacts(&self) -> bool;

    /// Stops what the cluster runs (an in-process LogStore flushes and closes).
    async fn shutdown(&self) {}
}

/// A [`LogStoreClient`] over the process's own LogStore: calls go straight through.
#[derive(Debug, Clone)]
pub struct LocalLogStoreClient {
    store: Arc<LogStore>,
    /// Target size of a merged block (`logstore.segmentCompactionPolicy.maxBytes`).
    compaction_max_bytes: usize,
}

impl LocalLogStoreClient {
    /// A client of `store` that compacts into blocks of about `compaction_max_bytes`.
    pub fn new(store: Arc<LogStore>, compaction_max_bytes: usize) -> Self {
        LocalLogStoreClient {
            store,
            compaction_max_bytes,
        }
    }

    /// The LogStore.
    pub fn store(&self) -> &Arc<LogStore> {
        &self.store
    }
}

#[async_trait]
impl LogStoreClient for LocalLogStoreClient {
    fn endpoint(&self) -> &str {
        EMBEDDED_NODE
    }

    fn in_process(&self) -> Option<&Arc<LogStore>> {
        Some(&self.store)
    }

    async fn add_entries(
        &self,
        log_id: i64,
        segment_id: i64,
        entries: Vec<(i64, Bytes)>,
    ) -> StoreResult<AppendStream> {
        let processor = self.store.processor(log_id, segment_id).await?;
        let (tx, rx) = mpsc::unbounded_channel::<StoreResult<i64>>();
        let mut taken = 0usize;
        let mut refused = None;
        for (id, data) in entries {
            let tx = tx.clone();
            let r = processor
                .add_entry_with(id, data, move || {
                    Box::new(move |r| {
                        let _ = tx.send(r);
                    })
                })
                .await;
            match r {
                Ok(()) => taken += 1,
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        if taken == 0 {
            return Err(refused.unwrap_or_else(|| LogStoreError::InvalidEntryId {
                entry_id: -1,
                reason: "AddEntries with no entries".into(),
            }));
        }
        // Buffered first, then each taken entry's outcome in id order (the processor tells
        // callbacks in id order), then the refusal of the entry that was not taken.
        let outcomes = futures::stream::unfold((rx, taken), |(mut rx, left)| async move {
            if left == 0 {
                return None;
            }
            let next = rx.recv().await.unwrap_or_else(|| {
                Err(LogStoreError::WriterClosed {
                    segment: "in-process segment".into(),
                })
            });
            Some((next.map(AppendEvent::Synced), (rx, left - 1)))
        });
        let stream = futures::stream::once(async { Ok(AppendEvent::Buffered) })
            .chain(outcomes)
            .chain(futures::stream::iter(refused.map(Err)));
        Ok(stream.boxed())
    }

    async fn get_batch_entries(
        &self,
        log_id: i64,
        segment_id: i64,
        from_entry: i64,
        max_entries: usize,
        max_bytes: usize,
    ) -> StoreResult<ReadResult> {
        self.store
            .read_batch(log_id, segment_id, from_entry, max_entries, max_bytes)
            .await
    }

    async fn fence_segment(&self, log_id: i64, segment_id: i64) -> StoreResult<i64> {
        self.store.fence_segment(log_id, segment_id).await
    }

    async fn complete_segment(&self, log_id: i64, segment_id: i64, lac: i64) -> StoreResult<i64> {
        self.store.complete_segment(log_id, segment_id, lac).await
    }

    async fn compact_segment(&self, log_id: i64, segment_id: i64) -> StoreResult<CompactResult> {
        self.store
            .compact_segment(log_id, segment_id, self.compaction_max_bytes)
            .await
    }

    async fn get_segment_last_add_confirmed(
        &self,
        log_id: i64,
        segment_id: i64,
    ) -> StoreResult<i64> {
        self.store.segment_last_entry_id(log_id, segment_id).await
    }

    async fn get_segment_block_count(&self, log_id: i64, segment_id: i64) -> StoreResult<usize> {
        self.store.block_count(log_id, segment_id).await
    }

    async fn update_last_add_confirmed(
        &self,
        _log_id: i64,
        _segment_id: i64,
        _lac: i64,
    ) -> StoreResult<()> {
        // The in-process LogStore serves what its processor made durable; the writer of
        // embedded mode is in this process, so there is nothing to tell it.
        Ok(())
    }

    async fn clean_segment(
        &self,
        log_id: i64,
        segment_id: i64,
        scope: CleanScope,
    ) -> StoreResult<()> {
        self.store.clean_segment(log_id, segment_id, scope).await
    }

    async fn release_segment(&self, log_id: i64, segment_id: i64) {
        self.store.close_processor(log_id, segment_id).await;
    }

    async fn wait_for_entry(&self, log_id: i64, segment_id: i64, entry_id: i64) -> WaitOutcome {
        self.store
            .wait_for_entry(log_id, segment_id, entry_id)
            .await
    }

    async fn discard_segment_if_empty(&self, log_id: i64, segment_id: i64) -> StoreResult<bool> {
        self.store
            .discard_segment_if_empty(log_id, segment_id)
            .await
    }

    async fn damaged_blocks(&self, log_id: i64, segment_id: i64) -> StoreResult<Vec<DamagedBlock>> {
        self.store.damaged_blocks(log_id, segment_id).await
    }
}

/// Embedded mode's cluster: one in-process LogStore, the quorum of one.
#[derive(Debug, Clone)]
pub struct EmbeddedCluster {
    node: Arc<LocalLogStoreClient>,
}

impl EmbeddedCluster {
    /// The cluster of `store`.
    pub fn new(store: Arc<LogStore>, compaction_max_bytes: usize) -> Self {
        EmbeddedCluster {
            node: Arc::new(LocalLogStoreClient::new(store, compaction_max_bytes)),
        }
    }

    /// The LogStore.
    pub fn store(&self) -> &Arc<LogStore> {
        self.node.store()
    }
}

#[async_trait]
impl LogStoreCluster for EmbeddedCluster {
    async fn select_quorum(&self) -> Result<QuorumInfo, ClientError> {
        Ok(embedded_quorum())
    }

    /// Every endpoint is the local node: Go's embedded client records `127.0.0.1:59456`,
    /// and a quorum id ≤ 0 means the local default quorum whatever the nodes say.
    fn node(&self, _endpoint: &str) -> Result<Arc<dyn LogStoreClient>, ClientError> {
        Ok(self.node.clone())
    }

    /// The quorum of one only: a segment a service-mode client wrote (quorum id > 0, its
    /// replicas on LogStore nodes) is not on this process's disk.
    fn resolve(&self, quorum: &QuorumInfo) -> Result<Vec<Arc<dyn LogStoreClient>>, ClientError> {
        if quorum.id > 0 || quorum.nodes.len() != 1 {
            return Err(ClientError::IncompatibleSegment {
                log: String::new(),
                segment: -1,
                reason: format!(
                    "it was written in service mode (quorum {} on {}); open it with \
                     `woodpecker.storage.type: service`",
                    quorum.id,
                    quorum.nodes.join(", ")
                ),
            });
        }
        Ok(vec![self.node.clone()])
    }

    fn requires_writer_lock(&self) -> bool {
        matches!(self.store().backend(), Backend::Object(storage) if !storage.condition_write_enabled())
    }

    fn compacts(&self) -> bool {
        !matches!(self.store().backend(), Backend::Local(_))
    }

    async fn shutdown(&self) {
        self.store().close_all().await;
    }
}
