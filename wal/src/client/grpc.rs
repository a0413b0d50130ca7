//! The [`LogStoreClient`] of a remote LogStore node: a tonic client of
//! `woodpecker.proto.logstore.LogStore` (spec §3.3), one per node endpoint, kept by the
//! [`ServiceCluster`](super::cluster::ServiceCluster)'s pool.
//!
//! * **Every reply is bounded in time**, on the client's clock: a unary call by
//!   [`RpcSettings::request_timeout`], the first frame of an AddEntries stream by
//!   [`RpcSettings::first_reply_timeout`] and *each later frame* by
//!   [`RpcSettings::ack_timeout`]. Go bounds only the first frame of a stream (its issue
//!   #359), so a replica that goes silent after `Buffered` wedges a write there; here it
//!   becomes an [`LogStoreError::Unavailable`] the replicated appender retries or gives up.
//! * **Stale connections are evicted** (Go #140): a transport failure or a timeout drops the
//!   node's channel, so the next call dials afresh (and resolves the name again) instead of
//!   reusing a connection to a process that is gone. The node is also marked down for
//!   [`RpcSettings::down_for`], which keeps it out of new quorums.
//! * Unary calls answer gRPC OK with the outcome in `Status`; a non-zero code becomes
//!   [`LogStoreError::Remote`] with the node's code, reason and retriable flag, except the
//!   codes the boundary expresses as values: "entry not found" (8102) and "end of file"
//!   (2310) on reads, "no block found" (2311) for the last entry of an empty segment.
//!
//! Every request carries the tenant of the client's `minio` section (`bucket_name`,
//! `root_path`), as Go clients send it.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use proto::logstore as pb;
use proto::logstore::log_store_client::LogStoreClient as Stub;
use proto::meta::SegmentState;
use tonic::transport::{Channel, Endpoint};

use super::store::{AppendEvent, AppendStream, LogStoreClient, StoreResult};
use crate::clock::ClockRef;
use crate::logstore::{CleanScope, CompactResult, LogStoreError, ReadEnd, ReadResult, code};

/// Go's client message limits: send up to 256 MiB, receive up to 512 MiB.
const MAX_SEND: usize = 256 * 1024 * 1024;
const MAX_RECEIVE: usize = 512 * 1024 * 1024;

/// How the client talks to LogStore nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcSettings {
    /// Dialling a node.
    pub connect_timeout: Duration,
    /// A unary call, request to answer (Go: 30 s).
    pub request_timeout: Duration,
    /// The first frame of an AddEntries stream (Go `appendFirstResponseTimeout`, 30 s).
    pub first_reply_timeout: Duration,
    /// Every later frame of an AddEntries stream (Go's per-entry `batchAckReadTimeout`,
    /// 30 s; Go applies no bound between frames of one stream, its #359).
    pub ack_timeout: Duration,
    /// How long a node that failed at the transport level or timed out is kept out of new
    /// quorums unless it answers a probe.
    pub down_for: Duration,
    /// The bound of that probe (a SelectNodes call).
    pub probe_timeout: Duration,
}

impl Default for RpcSettings {
    fn default() -> Self {
        RpcSettings {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            first_reply_timeout: Duration::from_secs(30),
            ack_timeout: Duration::from_secs(30),
            down_for: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(2),
        }
    }
}

/// The tenant every request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// `minio.bucketName`.
    pub bucket: String,
    /// `minio.rootPath`.
    pub root_path: String,
}

/// The client of one remote LogStore node (cheap to clone: clones share the connection).
#[derive(Clone)]
pub struct GrpcLogStoreClient {
    inner: Arc<GrpcNode>,
}

impl std::ops::Deref for GrpcLogStoreClient {
    type Target = GrpcNode;

    fn deref(&self) -> &GrpcNode {
        &self.inner
    }
}

/// What the clones of a [`GrpcLogStoreClient`] share.
pub struct GrpcNode {
    endpoint: String,
    uri: String,
    tenant: Tenant,
    settings: RpcSettings,
    clock: ClockRef,
    /// The node's channel; `None` after an eviction (dialled again on the next call).
    channel: Mutex<Option<Channel>>,
    /// When the node last failed at the transport level or timed out (clock millis); `None`
    /// once a call got through after that.
    down_since: Mutex<Option<u64>>,
}

impl fmt::Debug for GrpcLogStoreClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl fmt::Debug for GrpcNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcLogStoreClient")
            .field("endpoint", &self.endpoint)
            .field("tenant", &self.tenant)
            .finish()
    }
}

/// Why a call did not produce an answer.
enum CallError {
    Status(tonic::Status),
    TimedOut,
}

impl GrpcLogStoreClient {
    /// The client of the node at `endpoint` (`host:port`, or a full `http://` URI).
    pub fn new(endpoint: &str, tenant: Tenant, settings: RpcSettings, clock: ClockRef) -> Self {
        let uri = if endpoint.contains("://") {
            endpoint.to_string()
        } else {
            format!("http://{endpoint}")
        };
        GrpcLogStoreClient {
            inner: Arc::new(GrpcNode {
                endpoint: endpoint.to_string(),
                uri,
                tenant,
                settings,
                clock,
                channel: Mutex::new(None),
                down_since: Mutex::new(None),
            }),
        }
    }
}

impl GrpcNode {
    /// Whether the node failed at the transport level or timed out within
    /// [`RpcSettings::down_for`], with no call getting through since.
    pub(crate) fn is_down(&self) -> bool {
        let since = *self.down_since.lock().unwrap_or_else(|p| p.into_inner());
        let window = u64::try_from(self.settings.down_for.as_millis()).unwrap_or(u64::MAX);
        since.is_some_and(|t| self.clock.now_millis().saturating_sub(t) < window)
    }

    fn stub(&self) -> StoreResult<Stub<Channel>> {
        let mut guard = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match &*guard {
            Some(c) => c.clone(),
            None => {
                let endpoint = Endpoint::from_shared(self.uri.clone())
                    .map_err(|e| LogStoreError::Unavailable {
                        node: self.endpoint.clone(),
                        detail: format!("invalid endpoint {}: {e}", self.uri),
                        timed_out: false,
                    })?
                    .connect_timeout(self.settings.connect_timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(Duration::from_secs(10));
                let c = endpoint.connect_lazy();
                *guard = Some(c.clone());
                c
            }
        };
        Ok(Stub::new(channel)
            .max_encoding_message_size(MAX_SEND)
            .max_decoding_message_size(MAX_RECEIVE))
    }

    /// Drops the channel (the next call dials again) and marks the node down.
    fn evict(&self, why: &str) {
        let had = self
            .channel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_some();
        *self.down_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.clock.now_millis());
        if had {
            tracing::debug!(node = %self.endpoint, why, "connection evicted");
        }
    }

    fn reached(&self) {
        *self.down_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// `fut` bounded by `timeout` on the client's clock.
    async fn bounded<T>(
        &self,
        timeout: Duration,
        fut: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, CallError> {
        tokio::select! {
            r = fut => r.map_err(CallError::Status),
            () = self.clock.sleep(timeout) => Err(CallError::TimedOut),
        }
    }

    /// The error for a call that got no answer; evicts the connection when the transport
    /// failed.
    fn call_error(&self, rpc: &str, e: CallError) -> LogStoreError {
        match e {
            CallError::TimedOut => {
                self.evict("timeout");
                LogStoreError::Unavailable {
                    node: self.endpoint.clone(),
                    detail: format!("{rpc} got no answer in time"),
                    timed_out: true,
                }
            }
            CallError::Status(s) => {
                use tonic::Code;
                if matches!(
                    s.code(),
                    Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
                ) {
                    self.evict("transport");
                }
                LogStoreError::Unavailable {
                    node: self.endpoint.clone(),
                    detail: format!("{rpc}: {} ({:?})", s.message(), s.code()),
                    timed_out: false,
                }
            }
        }
    }

    /// The error a non-OK `Status` stands for.
    fn remote(&self, status: &pb::Status) -> LogStoreError {
        LogStoreError::Remote {
            node: self.endpoint.clone(),
            code: status.code,
            reason: if status.reason.is_empty() {
                status.detail.clone()
            } else {
                status.reason.clone()
            },
            retriable: status.retriable,
        }
    }

    /// `Ok(())` for a missing or zero status, the node's error otherwise.
    fn check(&self, status: Option<&pb::Status>) -> StoreResult<()> {
        match status {
            Some(s) if s.code != 0 => Err(self.remote(s)),
            _ => Ok(()),
        }
    }

    /// One unary call: bounded, transport failures evicted, answers marking the node up.
    async fn unary<T, Fut>(
        &self,
        rpc: &'static str,
        call: impl FnOnce(Stub<Channel>) -> Fut,
    ) -> StoreResult<T>
    where
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let stub = self.stub()?;
        match self
            .bounded(self.settings.request_timeout, call(stub))
            .await
        {
            Ok(r) => {
                self.reached();
                Ok(r.into_inner())
            }
            Err(e) => Err(self.call_error(rpc, e)),
        }
    }

    fn tenant(&self) -> (String, String) {
        (self.tenant.bucket.clone(), self.tenant.root_path.clone())
    }

    /// Whether the node answers a SelectNodes call within [`RpcSettings::probe_timeout`];
    /// an answer clears its down mark.
    pub async fn probe(&self) -> bool {
        let req = pb::SelectNodesRequest {
            strategy: pb::StrategyType::Random as i32,
            affinity_mode: pb::AffinityMode::Soft as i32,
            filters: vec![pb::NodeFilter {
                limit: 1,
                ..pb::NodeFilter::default()
            }],
        };
        let Ok(mut stub) = self.stub() else {
            return false;
        };
        match self
            .bounded(self.settings.probe_timeout, stub.select_nodes(req))
            .await
        {
            Ok(_) => {
                self.reached();
                true
            }
            Err(e) => {
                let _ = self.call_error("SelectNodes", e);
                false
            }
        }
    }

    /// SelectNodes: asks this node to pick replicas for a new segment's quorum.
    pub async fn select_nodes(
        &self,
        strategy: pb::StrategyType,
        affinity: pb::AffinityMode,
        filters: Vec<pb::NodeFilter>,
    ) -> StoreResult<Vec<pb::NodeMeta>> {
        let req = pb::SelectNodesRequest {
            strategy: strategy as i32,
            affinity_mode: affinity as i32,
            filters,
        };
        let r = self
            .unary(
                "SelectNodes",
                |mut s| async move { s.select_nodes(req).await },
            )
            .await?;
        self.check(r.status.as_ref())?;
        Ok(r.nodes)
    }
}

#[async_trait]
impl LogStoreClient for GrpcLogStoreClient {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn add_entries(
        &self,
        log_id: i64,
        segment_id: i64,
        entries: Vec<(i64, Bytes)>,
    ) -> StoreResult<AppendStream> {
        let Some(last) = entries.last().map(|(id, _)| *id) else {
            return Err(LogStoreError::InvalidEntryId {
                entry_id: -1,
                reason: "AddEntries with no entries".into(),
            });
        };
        let (bucket_name, root_path) = self.tenant();
        let req = pb::AddEntriesRequest {
            bucket_name,
            root_path,
            log_id,
            entries: entries
                .into_iter()
                .map(|(entry_id, values)| pb::LogEntry {
                    seg_id: segment_id,
                    entry_id,
                    values,
                })
                .collect(),
        };
        let mut stub = self.stub()?;
        let started = self.clock.now_millis();
        let first_budget = self.settings.first_reply_timeout;
        let response = match self.bounded(first_budget, stub.add_entries(req)).await {
            Ok(r) => r.into_inner(),
            Err(e) => return Err(self.call_error("AddEntries", e)),
        };
        // Each frame is bounded: the first by what is left of the first-reply budget,
        // every later one by the ack budget.
        struct Frames {
            inner: tonic::Streaming<pb::AddEntriesResponse>,
            buffered: bool,
            done: bool,
        }
        let ack_budget = self.settings.ack_timeout;
        let first_left = first_budget.saturating_sub(Duration::from_millis(
            self.clock.now_millis().saturating_sub(started),
        ));
        let frames = Frames {
            inner: response,
            buffered: false,
            done: false,
        };
        let client = self.inner.clone();
        let stream = futures::stream::unfold(frames, move |mut f| {
            let client = client.clone();
            async move {
                if f.done {
                    return None;
                }
                let budget = if f.buffered { ack_budget } else { first_left };
                let next = tokio::select! {
                    m = f.inner.message() => Some(m),
                    () = client.clock.sleep(budget) => None,
                };
                let item = match next {
                    None => {
                        f.done = true;
                        Err(client.call_error("AddEntries", CallError::TimedOut))
                    }
                    Some(Err(status)) => {
                        f.done = true;
                        Err(client.call_error("AddEntries", CallError::Status(status)))
                    }
                    Some(Ok(None)) => {
                        f.done = true;
                        Err(LogStoreError::Unavailable {
                            node: client.endpoint.clone(),
                            detail: format!(
                                "the AddEntries stream ended before entry {last} was synced"
                            ),
                            timed_out: false,
                        })
                    }
                    Some(Ok(Some(frame))) => {
                        match pb::AddEntryState::try_from(frame.state) {
                            Ok(pb::AddEntryState::Buffered) => {
                                f.buffered = true;
                                Ok(AppendEvent::Buffered)
                            }
                            Ok(pb::AddEntryState::Synced) => {
                                f.buffered = true;
                                let top = frame.entry_id.iter().copied().max().unwrap_or(-1);
                                if top >= last {
                                    // Only a whole request counts as the node being well:
                                    // a node that buffers and then goes silent is not.
                                    client.reached();
                                    f.done = true;
                                }
                                Ok(AppendEvent::Synced(top))
                            }
                            Ok(pb::AddEntryState::Failed) | Err(_) => {
                                f.done = true;
                                let status = frame.status.unwrap_or_else(|| pb::Status {
                                    code: code::INTERNAL,
                                    reason: "a Failed frame without a status".into(),
                                    ..pb::Status::default()
                                });
                                Err(client.remote(&status))
                            }
                        }
                    }
                };
                Some((item, f))
            }
        });
        Ok(stream.boxed())
    }

    async fn get_batch_entries(
        &self,
        log_id: i64,
        segment_id: i64,
        from_entry: i64,
        max_entries: usize,
        _max_bytes: usize,
    ) -> StoreResult<ReadResult> {
        let (bucket_name, root_path) = self.tenant();
        let max = i64::try_from(max_entries.max(1)).unwrap_or(i64::MAX);
        let req = pb::GetBatchEntriesAdvRequest {
            bucket_name,
            root_path,
            log_id,
            segment_id,
            from_entry_id: from_entry,
            max_entries: max,
            last_read_state: None,
        };
        let r = self
            .unary("GetBatchEntriesAdv", |mut s| async move {
                s.get_batch_entries_adv(req).await
            })
            .await?;
        match r.status.as_ref().map_or(0, |s| s.code) {
            0 => {}
            code::ENTRY_NOT_FOUND => {
                return Ok(ReadResult {
                    entries: Vec::new(),
                    end: ReadEnd::NotYet,
                });
            }
            code::EOF => {
                return Ok(ReadResult {
                    entries: Vec::new(),
                    end: ReadEnd::Eof,
                });
            }
            _ => return Err(self.check(r.status.as_ref()).unwrap_err()),
        }
        let entries: Vec<(i64, Bytes)> = r
            .result
            .map(|b| b.entries)
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.entry_id, e.values))
            .collect();
        // A node must answer the asked entries in order without gaps; anything else is not
        // served to a reader.
        for (i, (id, _)) in entries.iter().enumerate() {
            if *id != from_entry + i as i64 {
                return Err(LogStoreError::Remote {
                    node: self.endpoint.clone(),
                    code: code::CORRUPT,
                    reason: format!(
                        "asked for entries from {from_entry}, answered entry {id} at position {i}"
                    ),
                    retriable: false,
                });
            }
        }
        let end = match entries.len() {
            0 => ReadEnd::NotYet,
            n if n >= max_entries.max(1) => ReadEnd::More,
            _ => ReadEnd::Tail,
        };
        Ok(ReadResult { entries, end })
    }

    async fn fence_segment(&self, log_id: i64, segment_id: i64) -> StoreResult<i64> {
        let (bucket_name, root_path) = self.tenant();
        let req = pb::FenceSegmentRequest {
            bucket_name,
            root_path,
            log_id,
            segment_id,
        };
        let r = self
            .unary(
                "FenceSegment",
                |mut s| async move { s.fence_segment(req).await },
            )
            .await?;
        self.check(r.status.as_ref())?;
        Ok(r.last_entry_id)
    }

    async fn complete_segment(&self, log_id: i64, segment_id: i64, lac: i64) -> StoreResult<i64> {
        let (bucket_name, root_path) = self.tenant();
        let req = pb::CompleteSegmentRequest {
            bucket_name,
            root_path,
            log_id,
            segment_id,
            last_add_confirmed: lac,
        };
        let r = self
            .unary("CompleteSegment", |mut s| async move {
                s.complete_segment(req).await
            })
            .await?;
        self.check(r.status.as_ref())?;
        Ok(r.last_entry_id)
    }

    async fn compact_segment(&self, log_id: i64, segment_id: i64) -> StoreResult<CompactResult> {
        let (bucket_name, root_path) = self.tenant();
        let req = pb::CompactSegmentRequest {
            bucket_name,
            root_path,
            log_id,
            segment_id,
        };
        let r = self
            .unary("CompactSegment", |mut s| async move {
                s.compact_segment(req).await
            })
            .await?;
        self.check(r.status.as_ref())?;
        let meta = r.metadata.ok_or_else(|| LogStoreError::Remote {
            node: self.endpoint.clone(),
            code: code::INTERNAL,
            reason: "CompactSegment answered without the segment's metadata".into(),
            retriable: true,
        })?;
        let compacted = meta.state == SegmentState::Sealed as i32;
        let mut last_entry_id = meta.last_entry_id;
        if compacted && last_entry_id <= 0 {
            // Go's LogStore answers only state, size and sealed time: ask the node how far
            // the segment it compacted goes, so that a short compaction (Go #242) is still
            // seen by the caller.
            last_entry_id = self
                .get_segment_last_add_confirmed(log_id, segment_id)
                .await?;
        }
        Ok(CompactResult {
            size: u64::try_from(meta.size).unwrap_or(0),
            blocks: 0,
            last_entry_id,
            compacted,
        })
    }

    async fn get_segment_last_add_confirmed(
        &self,
        log_id: i64,
        segment_id: i64,
    ) -> StoreResult<i64> {
        let (bucket_name, root_path) = self.tenant();
        let req = pb::GetSegmentLastAddConfirmedRequest {
            bucket_name,
            root_path,
            log_id,
            segment_id,
        };
        let r = self
            .unary("GetSegmentLastAddConfirmed", |mut s| async move {
                s.get_segment_last_add_confirmed(req).await
            })
            .await?;
        match r.status.as_ref().map_or(0, |s| s.code) {
            0 => Ok(r.last_entry_id),
            code::NO_BLOCK_FOUND => Ok(-1),
            _ => Err(self.check(r.status.as_ref()).unwrap_err()),
        }
    }

    async fn get_segment_block_count(&self, log_id: i64, segment_id: i64) -> StoreResult<usize> {
        let (bucket_name, root_path) = self.tenant();
        let req = pb::GetSegmentBlockCountRequest {
            bucket_name,
            root_path,
            log_id,
            segment_id,
        };
        let r = self
            .unary("GetSegmentBlockCount", |mut s| async move {
                s.get_segment_block_count(req).await
            })
            .await?;
        self.check(r.status.as_ref())?;
        Ok(usize::try_from(r.block_count).unwrap_or(0))
    }

    async fn notify_segment_compacted(&self, log_id: i64, segment_id: i64) -> StoreResult<()> {
        let (bucket_name, root_path) = self.tenant();
        let req = pb::NotifySegmentCompactedRequest {
            bucket_name,
            root_path,
            log_id,
            segment_id,
        };
        let r = self
            .unary("NotifySegmentCompacted", |mut s| async move {
                s.notify_segment_compacted(req).await
            })
            .await?;
        self.check(r.status.as_ref())
    }

    async fn update_last_add_confirmed(
        &self,
        log_id: i64,
        segment_id: i64,
        lac: i64,
    ) -> StoreResult<()> {
        let (bucket_name, root_path) = self.tenant();
        let req = pb::UpdateLastAddConfirmedRequest {
            bucket_name,
            root_path,
            log_id,
            segment_id,
            last_add_confirmed: lac,
        };
        let r = self
            .unary("UpdateLastAddConfirmed", |mut s| async move {
                s.update_last_add_confirmed(req).await
            })
            .await?;
        self.check(r.status.as_ref())
    }

    async fn clean_segment(
        &self,
        log_id: i64,
        segment_id: i64,
        scope: CleanScope,
    ) -> StoreResult<()> {
        let (bucket_name, root_path) = self.tenant();
        let req = pb::CleanSegmentRequest {
            bucket_name,
            root_path,
            log_id,
            segment_id,
            flag: scope.flag(),
        };
        let r = self
            .unary(
                "CleanSegment",
                |mut s| async move { s.clean_segment(req).await },
            )
            .await?;
        self.check(r.status.as_ref())
    }
}
