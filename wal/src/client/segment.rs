//! One segment's replicas as the client sees them: the quorum recorded in its metadata
//! (`SegmentMetadata.quorum`), resolved to [`LogStoreClient`]s, and the operations the
//! client runs on all of them: fence and completion decided by [`crate::quorum`], reads
//! that fail over between replicas, compaction on the first replica that can, cleaning on
//! every one. The appends of an open segment go through an [`Appender`].
//!
//! A quorum of one (embedded mode) runs the same code: its fence target is the one reply,
//! and its completion needs that one replica.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use proto::meta::{QuorumInfo, SegmentMetadata};

use super::embedded_quorum;
use super::error::{ClientError, Result};
use super::replicated::Replicated;
use super::store::{LogStoreClient, StoreResult};
use super::{Patience, Shared, millis};
use crate::logstore::{
    CleanScope, CompactResult, DamagedBlock, LogStore, OnDurable, ReadEnd, ReadResult,
    SegmentProcessor, TryAdd, WaitOutcome,
};
use crate::quorum::{self, Completion, QuorumSpec, RecoveryError};

/// The replicas of one segment.
pub(crate) struct Replicas {
    log: String,
    log_id: i64,
    segment_id: i64,
    spec: QuorumSpec,
    nodes: Vec<Arc<dyn LogStoreClient>>,
    /// The replica a read asks first: the last one that served a read.
    preferred: AtomicUsize,
}

impl fmt::Debug for Replicas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replicas")
            .field("log", &self.log)
            .field("segment_id", &self.segment_id)
            .field("spec", &self.spec)
            .field("nodes", &self.endpoints())
            .finish()
    }
}

impl Replicas {
    /// The replicas `segment`'s metadata names. A segment without a quorum (written by Go
    /// v0.1.13, Milvus 2.6) is an embedded-mode segment.
    pub(crate) fn of(
        shared: &Shared,
        log: &str,
        log_id: i64,
        segment: &SegmentMetadata,
    ) -> Result<Replicas> {
        let quorum = segment.quorum.clone().unwrap_or_else(embedded_quorum);
        Replicas::from_quorum(shared, log, log_id, segment.seg_no, &quorum)
    }

    /// The replicas of `quorum` for segment `segment_id`.
    pub(crate) fn from_quorum(
        shared: &Shared,
        log: &str,
        log_id: i64,
        segment_id: i64,
        quorum: &QuorumInfo,
    ) -> Result<Replicas> {
        let invalid = |reason: String| ClientError::IncompatibleSegment {
            log: log.to_string(),
            segment: segment_id,
            reason,
        };
        let n = quorum.nodes.len();
        let wq = if quorum.wq > 0 { quorum.wq as usize } else { n };
        let aq = if quorum.aq > 0 {
            quorum.aq as usize
        } else {
            wq / 2 + 1
        };
        if n == 0 || n != wq {
            return Err(invalid(format!(
                "its quorum names {n} node(s) for a write quorum of {wq}"
            )));
        }
        let spec = QuorumSpec::new(wq, aq).map_err(|e| invalid(e.to_string()))?;
        let nodes = shared.cluster.resolve(quorum).map_err(|e| match e {
            ClientError::IncompatibleSegment { reason, .. } => invalid(reason),
            e => e,
        })?;
        Ok(Replicas {
            log: log.to_string(),
            log_id,
            segment_id,
            spec,
            nodes,
            preferred: AtomicUsize::new(0),
        })
    }

    /// The segment id.
    pub(crate) fn segment_id(&self) -> i64 {
        self.segment_id
    }

    /// The nodes' endpoints.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| n.endpoint().to_string())
            .collect()
    }

    /// The in-process LogStore when it is the segment's only replica.
    pub(crate) fn single_in_process(&self) -> Option<&Arc<LogStore>> {
        match self.nodes.as_slice() {
            [only] => only.in_process(),
            _ => None,
        }
    }

    /// The error for a quorum step that failed: a quorum of one reports its node's own
    /// error (so embedded mode reports what the LogStore said); larger quorums name every
    /// replica's failure.
    fn quorum_error(&self, e: RecoveryError, results: &[StoreResult<i64>]) -> ClientError {
        if let ([Err(only)], 1) = (results, self.spec.wq()) {
            return ClientError::LogStore(only.clone());
        }
        let failures: Vec<String> = self
            .nodes
            .iter()
            .zip(results)
            .filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{}: {e}", n.endpoint())))
            .collect();
        let reason = if failures.is_empty() {
            e.to_string()
        } else {
            format!("{e} ({})", failures.join("; "))
        };
        ClientError::QuorumFailed {
            log: self.log.clone(),
            segment: self.segment_id,
            reason,
        }
    }

    async fn fence_all(&self) -> Vec<StoreResult<i64>> {
        join_all(
            self.nodes
                .iter()
                .map(|n| n.fence_segment(self.log_id, self.segment_id)),
        )
        .await
    }

    async fn complete_all(&self, target: i64) -> Vec<StoreResult<i64>> {
        join_all(
            self.nodes
                .iter()
                .map(|n| n.complete_segment(self.log_id, self.segment_id, target)),
        )
        .await
    }

    fn log_behind(&self, target: i64, completed: &[StoreResult<i64>]) {
        for (n, r) in self.nodes.iter().zip(completed) {
            match r {
                Ok(last) if *last < target => {
                    tracing::debug!(log = %self.log, segment = self.segment_id, node = n.endpoint(), last, target, "replica completed behind the target");
                }
                Err(e) => {
                    tracing::warn!(log = %self.log, segment = self.segment_id, node = n.endpoint(), error = %e, "replica did not complete the segment");
                }
                Ok(_) => {}
            }
        }
    }

    /// Recovery after a writer crash (spec §6.5): fences every replica, picks the target
    /// from the replies, completes every reachable replica at it and decides whether the
    /// segment may be published Completed at it ([`quorum::fence_target`],
    /// [`quorum::completion`]).
    pub(crate) async fn recover(&self) -> Result<Completion> {
        let fenced = self.fence_all().await;
        let replies: Vec<Option<i64>> = fenced.iter().map(|r| r.as_ref().ok().copied()).collect();
        let target =
            quorum::fence_target(self.spec, &replies).map_err(|e| self.quorum_error(e, &fenced))?;
        let completed = self.complete_all(target.target).await;
        self.log_behind(target.target, &completed);
        let finalized: Vec<Option<i64>> =
            completed.iter().map(|r| r.as_ref().ok().copied()).collect();
        let done = quorum::completion(self.spec, target.target, &replies, &finalized)
            .map_err(|e| self.quorum_error(e, &completed))?;
        if done.thin {
            tracing::warn!(log = %self.log, segment = self.segment_id, %done, "segment completed with entries held by fewer than the ack quorum");
        }
        Ok(done)
    }

    /// Completes every replica at `target`, the writer's own last acknowledged entry (a
    /// roll or a close), and decides whether the segment may be published Completed at it.
    ///
    /// A completion that falls short only because replicas could not be reached (down, no
    /// answer in time) is asked again of every replica, completing being idempotent at one
    /// target, after each pause of the writer's `patience`: a node that restarts within it
    /// does not cost the writer its log. Any other refusal (a fence by a newer writer, a
    /// replica that cannot hold the target) ends it at once.
    pub(crate) async fn complete(
        &self,
        target: i64,
        patience: &mut Patience<'_>,
    ) -> Result<Completion> {
        loop {
            let completed = self.complete_all(target).await;
            self.log_behind(target, &completed);
            let finalized: Vec<Option<i64>> =
                completed.iter().map(|r| r.as_ref().ok().copied()).collect();
            let unknown = vec![None; self.spec.wq()];
            let e = match quorum::completion(self.spec, target, &unknown, &finalized) {
                Ok(done) => return Ok(done),
                Err(e) => e,
            };
            let may_pass = completed.iter().any(Result::is_err)
                && completed.iter().all(|r| match r {
                    Ok(_) => true,
                    Err(e) => e.is_retriable() && !e.is_segment_not_writable(),
                });
            let Some(pause) = patience.next_pause().filter(|_| may_pass) else {
                return Err(self.quorum_error(e, &completed));
            };
            tracing::info!(log = %self.log, segment = self.segment_id, target, pause_ms = millis(pause), "too few replicas completed the segment; asking again");
            patience.pause().await;
        }
    }

    /// Lets every replica release what it holds for the segment's writer.
    pub(crate) async fn release(&self) {
        join_all(
            self.nodes
                .iter()
                .map(|n| n.release_segment(self.log_id, self.segment_id)),
        )
        .await;
    }

    /// A batch from the replica that served the last read, failing over to the others
    /// (spec §6.3): a replica with nothing at `from_entry` yet or an error passes to the
    /// next; a batch with entries or an end of segment is the answer. When the segment is
    /// known to hold entries up to `last_entry_id` (its metadata says so), a replica that
    /// ends before that is a replica behind the others (finalized with less than the
    /// segment holds) and passes to the next too.
    ///
    /// A `sealed` segment (compacted into object storage) that no replica serves is one whose
    /// replicas do not know of the compaction (a notification missed, a node that lost its
    /// disk): they are told (NotifySegmentCompacted, which makes a node read the segment from
    /// object storage) and asked once more.
    pub(crate) async fn read_batch(
        &self,
        from_entry: i64,
        max_entries: usize,
        max_bytes: usize,
        last_entry_id: Option<i64>,
        sealed: bool,
    ) -> Result<ReadResult> {
        let first = self
            .read_once(from_entry, max_entries, max_bytes, last_entry_id)
            .await;
        let served = match &first {
            Ok(b) => !b.entries.is_empty() || b.end == ReadEnd::Eof,
            Err(_) => false,
        };
        if served || !sealed {
            return first;
        }
        self.notify_compacted(None).await;
        self.read_once(from_entry, max_entries, max_bytes, last_entry_id)
            .await
    }

    async fn read_once(
        &self,
        from_entry: i64,
        max_entries: usize,
        max_bytes: usize,
        last_entry_id: Option<i64>,
    ) -> Result<ReadResult> {
        let n = self.nodes.len();
        let start = self.preferred.load(Ordering::Relaxed) % n;
        let mut empty = None;
        let mut failed = None;
        for i in 0..n {
            let r = (start + i) % n;
            match self.nodes[r]
                .get_batch_entries(
                    self.log_id,
                    self.segment_id,
                    from_entry,
                    max_entries,
                    max_bytes,
                )
                .await
            {
                Ok(b)
                    if b.entries.is_empty()
                        && b.end == ReadEnd::Eof
                        && last_entry_id.is_some_and(|last| from_entry <= last)
                        && n > 1 =>
                {
                    tracing::debug!(log = %self.log, segment = self.segment_id, node = self.nodes[r].endpoint(), from_entry, "replica ends early; trying another replica");
                    empty = Some(b);
                }
                Ok(b) if !b.entries.is_empty() || b.end == ReadEnd::Eof => {
                    self.preferred.store(r, Ordering::Relaxed);
                    return Ok(b);
                }
                Ok(b) => empty = Some(b),
                Err(e) => {
                    if n > 1 {
                        tracing::debug!(log = %self.log, segment = self.segment_id, node = self.nodes[r].endpoint(), error = %e, "read failed; trying another replica");
                    }
                    failed = Some(e);
                }
            }
        }
        match (empty, failed) {
            (Some(b), _) => Ok(b),
            (None, Some(e)) => Err(e.into()),
            (None, None) => unreachable!("a segment has at least one replica"),
        }
    }

    /// The first answer, in replica order, of `call`.
    async fn first_answer<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(Arc<dyn LogStoreClient>) -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        let mut failed = None;
        for node in &self.nodes {
            match call(node.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => failed = Some(e),
            }
        }
        Err(failed.map_or_else(
            || ClientError::QuorumFailed {
                log: self.log.clone(),
                segment: self.segment_id,
                reason: "no replica".into(),
            },
            ClientError::from,
        ))
    }

    /// The last entry id the first replica that answers holds (GetSegmentLastAddConfirmed,
    /// spec §6.3 "tail open").
    pub(crate) async fn last_entry_id(&self) -> Result<i64> {
        let (log_id, segment_id) = (self.log_id, self.segment_id);
        self.first_answer(
            |n| async move { n.get_segment_last_add_confirmed(log_id, segment_id).await },
        )
        .await
    }

    /// Blocks the first replica that answers holds.
    pub(crate) async fn block_count(&self) -> Result<usize> {
        let (log_id, segment_id) = (self.log_id, self.segment_id);
        self.first_answer(|n| async move { n.get_segment_block_count(log_id, segment_id).await })
            .await
    }

    /// Compacts the segment on the first replica that can and whose result reaches
    /// `expected_last` (the Go #242 guard: a replica behind the published last entry must
    /// not seal a short segment). When every replica that answered is short, the last short
    /// result is returned for the caller to refuse.
    pub(crate) async fn compact(&self, expected_last: i64) -> Result<CompactResult> {
        let mut short = None;
        let mut failed = None;
        for (i, node) in self.nodes.iter().enumerate() {
            // The object copy is written once: a replica that serves less than the segment
            // holds (completed at an older LAC by a writer that was then replaced) must not
            // be the one to write it, or the segment could never be sealed whole.
            match node
                .get_segment_last_add_confirmed(self.log_id, self.segment_id)
                .await
            {
                Ok(served) if served < expected_last => {
                    tracing::debug!(log = %self.log, segment = self.segment_id, node = node.endpoint(), served, expected_last, "replica serves less than the segment holds; not compacting from it");
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    failed = Some(e);
                    continue;
                }
            }
            match node.compact_segment(self.log_id, self.segment_id).await {
                Ok(r) if r.last_entry_id >= expected_last => {
                    self.notify_compacted(Some(i)).await;
                    return Ok(r);
                }
                Ok(r) => {
                    tracing::debug!(log = %self.log, segment = self.segment_id, node = node.endpoint(), last = r.last_entry_id, expected_last, "replica compacted short of the segment");
                    short = Some(r);
                }
                Err(e) => failed = Some(e),
            }
        }
        match (short, failed) {
            (Some(r), _) => Ok(r),
            (None, Some(e)) => Err(e.into()),
            (None, None) => Err(ClientError::QuorumFailed {
                log: self.log.clone(),
                segment: self.segment_id,
                reason: format!(
                    "no replica serves the segment up to its last entry {expected_last}; not compacting"
                ),
            }),
        }
    }

    /// Tells the replicas (but `except`, the one that compacted) that the segment is in
    /// object storage, so that they serve it from there and reclaim their local copies. Best
    /// effort: a replica that misses it keeps its local copy, which still serves reads, and
    /// is told again by a reader that finds it without the segment (see
    /// [`read_batch`](Self::read_batch)).
    pub(crate) async fn notify_compacted(&self, except: Option<usize>) {
        let calls = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != except)
            .map(|(_, n)| async move {
                if let Err(e) = n.notify_segment_compacted(self.log_id, self.segment_id).await {
                    tracing::debug!(log = %self.log, segment = self.segment_id, node = n.endpoint(), error = %e, "replica not told of the compaction");
                }
            });
        join_all(calls).await;
    }

    /// Cleans the segment on every replica; the outcome per node endpoint.
    pub(crate) async fn clean(&self, scope: CleanScope) -> Vec<(String, StoreResult<()>)> {
        let results = join_all(
            self.nodes
                .iter()
                .map(|n| n.clean_segment(self.log_id, self.segment_id, scope)),
        )
        .await;
        self.endpoints().into_iter().zip(results).collect()
    }

    /// Removes the data of a segment that holds no block and says whether it did. Only a
    /// quorum of one does this (embedded mode): replicas that each decided on their own could
    /// leave the segment gone from some and present on others, so a larger quorum answers
    /// `false` and the segment is completed empty.
    pub(crate) async fn discard_if_empty(&self) -> StoreResult<bool> {
        match self.nodes.as_slice() {
            [only] => {
                only.discard_segment_if_empty(self.log_id, self.segment_id)
                    .await
            }
            _ => Ok(false),
        }
    }

    /// The damaged blocks the first replica that answers reports.
    pub(crate) async fn damaged_blocks(&self) -> Result<Vec<DamagedBlock>> {
        let (log_id, segment_id) = (self.log_id, self.segment_id);
        self.first_answer(|n| async move { n.damaged_blocks(log_id, segment_id).await })
            .await
    }

    /// Waits for `entry_id` through a writer in this process (a quorum of one in process);
    /// otherwise [`WaitOutcome::NoWriter`] at once.
    pub(crate) async fn wait_for_entry(&self, entry_id: i64) -> WaitOutcome {
        match self.nodes.as_slice() {
            [only] => {
                only.wait_for_entry(self.log_id, self.segment_id, entry_id)
                    .await
            }
            _ => WaitOutcome::NoWriter,
        }
    }
}

/// Where an open segment's appends go.
#[derive(Debug, Clone)]
pub(crate) enum Appender {
    /// The segment's only replica is in process: appends go to its processor directly, in
    /// the caller's call, and the processor's task answers them.
    Direct(Arc<SegmentProcessor>),
    /// Replicas elsewhere: appends go to all of them and are acknowledged at the ack
    /// quorum ([`Replicated`]).
    Replicated(Replicated),
}

impl Appender {
    /// The appender of `replicas`' segment (an in-process one touches storage to open).
    pub(crate) async fn open(replicas: &Replicas, shared: &Shared) -> StoreResult<Appender> {
        match replicas.single_in_process() {
            Some(store) => Ok(Appender::Direct(
                store
                    .processor(replicas.log_id, replicas.segment_id)
                    .await?,
            )),
            None => Ok(Appender::Replicated(Replicated::start(
                replicas.log_id,
                replicas.segment_id,
                replicas.spec,
                replicas.nodes.clone(),
                shared.settings.replication.clone(),
                shared.clock.clone(),
            ))),
        }
    }

    /// Takes entry `entry_id` without waiting (see
    /// [`SegmentProcessor::try_add_entry_with`]).
    #[inline]
    pub(crate) fn try_add_entry_with(
        &self,
        entry_id: i64,
        data: &Bytes,
        on_durable: impl FnOnce() -> OnDurable,
    ) -> StoreResult<TryAdd> {
        match self {
            Appender::Direct(p) => p.try_add_entry_with(entry_id, data, on_durable),
            Appender::Replicated(r) => r.try_add_entry_with(entry_id, data, on_durable),
        }
    }

    /// Takes entry `entry_id`, waiting for room (see [`SegmentProcessor::add_entry_with`]).
    pub(crate) async fn add_entry_with(
        &self,
        entry_id: i64,
        data: Bytes,
        on_durable: impl FnOnce() -> OnDurable,
    ) -> StoreResult<()> {
        match self {
            Appender::Direct(p) => p.add_entry_with(entry_id, data, on_durable).await,
            Appender::Replicated(r) => r.add_entry_with(entry_id, data, on_durable).await,
        }
    }

    /// Blocks stored, when the writer knows (only a quorum of one counts blocks: Go asks
    /// `GetSegmentBlockCount` only then).
    pub(crate) fn block_count(&self) -> Option<usize> {
        match self {
            Appender::Direct(p) => Some(p.block_count()),
            Appender::Replicated(_) => None,
        }
    }

    /// Whether a replica failed and the segment should roll to a fresh quorum.
    pub(crate) fn wants_roll(&self) -> bool {
        match self {
            Appender::Direct(_) => false,
            Appender::Replicated(r) => r.wants_roll(),
        }
    }

    /// Gives the replicas behind the ack quorum up to `bound` to make every entry up to
    /// `last` durable, so that the segment is completed with every live replica holding all
    /// of it (see [`Replicated::drain`]); an in-process replica holds everything already.
    pub(crate) async fn drain(&self, last: i64, bound: Duration) {
        if let Appender::Replicated(r) = self {
            r.drain(last, bound).await;
        }
    }

    /// Stops sending, once every append was answered and before the segment completes.
    pub(crate) fn close(&self) {
        match self {
            // The processor is closed when the replicas release the segment.
            Appender::Direct(_) => {}
            Appender::Replicated(r) => r.close(),
        }
    }
}
