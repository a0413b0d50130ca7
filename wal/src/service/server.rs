//! The gRPC face of a [`LogStoreNode`]: `woodpecker.proto.logstore.LogStore`, wire-compatible
//! with Go Woodpecker's service (spec §3.3).
//!
//! Unary calls always answer gRPC OK with the outcome in `Status` (code 0 for success). The
//! append streams follow the Go shapes: AddEntries answers one `Buffered` frame naming every
//! id, then `Synced` frames, each naming the run of ids that became durable together, in
//! order; the first failure is one `Failed` frame naming that id, and ends the stream. A batch
//! that cannot be buffered gets a `Failed` frame naming the first id not buffered and then a
//! gRPC error, as the Go server does. AddEntry is the one-entry form with one id per frame.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use proto::logstore as pb;
use proto::logstore::log_store_server::LogStore as LogStoreRpc;
use proto::meta::{SegmentMetadata, SegmentState};
use telemetry::Stopwatch;
use telemetry::catalog::{LogStoreOp, LogStoreRpcMetrics};
use tonic::{Request, Response, Status};

use super::error::{ServiceError, ok_status, status_of};
use super::node::{AddHandle, LogStoreNode};
use crate::logstore::ReadEnd;

/// The tonic service over a node.
#[derive(Debug, Clone)]
pub struct LogStoreService {
    node: Arc<LogStoreNode>,
}

impl LogStoreService {
    /// The service of `node`.
    pub fn new(node: Arc<LogStoreNode>) -> Self {
        LogStoreService { node }
    }

    /// The tonic server with the Go message-size limits (receive 256 MiB, send 512 MiB).
    pub fn into_server(self) -> pb::log_store_server::LogStoreServer<LogStoreService> {
        pb::log_store_server::LogStoreServer::new(self)
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(512 * 1024 * 1024)
    }

    fn count<T>(&self, rpc: &str, r: &super::error::Result<T>) {
        self.node.metrics().rpc(rpc, r.is_err());
    }
}

/// Records one RPC under Go Woodpecker's `woodpecker_server_logstore_operation*` metrics.
fn measure(op: LogStoreOp, bucket: &str, root_path: &str, log_id: i64, ok: bool, t: Stopwatch) {
    LogStoreRpcMetrics::for_log(bucket, root_path, log_id).record(op, ok, t.elapsed_nanos());
}

type Outcomes =
    tokio::sync::mpsc::UnboundedReceiver<(i64, Result<i64, crate::logstore::LogStoreError>)>;

type Frames<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A frame of either append stream.
trait AckFrame: Send + 'static {
    fn frame(state: pb::AddEntryState, ids: Vec<i64>, status: pb::Status) -> Self;
}

impl AckFrame for pb::AddEntriesResponse {
    fn frame(state: pb::AddEntryState, ids: Vec<i64>, status: pb::Status) -> Self {
        pb::AddEntriesResponse {
            status: Some(status),
            entry_id: ids,
            state: state as i32,
        }
    }
}

impl AckFrame for pb::AddEntryResponse {
    fn frame(state: pb::AddEntryState, ids: Vec<i64>, status: pb::Status) -> Self {
        pb::AddEntryResponse {
            status: Some(status),
            entry_id: ids.first().copied().unwrap_or(-1),
            state: state as i32,
        }
    }
}

/// The frames of a buffered batch: `Buffered`, then `Synced` runs, or a `Failed` that ends it.
fn ack_stream<T: AckFrame>(handle: AddHandle) -> Frames<T> {
    let AddHandle { ids, outcomes } = handle;
    let total = ids.len();
    let next_id = ids.first().copied().unwrap_or(0);
    let first = T::frame(pb::AddEntryState::Buffered, ids, ok_status());
    struct S {
        outcomes: Outcomes,
        left: usize,
        next_id: i64,
        failed: Option<(i64, pb::Status)>,
        done: bool,
    }
    let state = S {
        outcomes,
        left: total,
        next_id,
        failed: None,
        done: false,
    };
    let rest = futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        if let Some((id, status)) = s.failed.take() {
            s.done = true;
            return Some((Ok(T::frame(pb::AddEntryState::Failed, vec![id], status)), s));
        }
        if s.left == 0 {
            return None;
        }
        let mut synced = Vec::new();
        let mut next = s.outcomes.recv().await;
        loop {
            match next {
                None => {
                    // The processor went away without answering: the remaining ids fail.
                    let status =
                        ServiceError::Internal("the segment processor stopped".into()).status();
                    s.done = true;
                    let id = s.next_id;
                    if synced.is_empty() {
                        return Some((
                            Ok(T::frame(pb::AddEntryState::Failed, vec![id], status)),
                            s,
                        ));
                    }
                    s.failed = Some((id, status));
                    return Some((
                        Ok(T::frame(pb::AddEntryState::Synced, synced, ok_status())),
                        s,
                    ));
                }
                Some((id, Ok(_))) => {
                    synced.push(id);
                    s.left -= 1;
                    s.next_id = id + 1;
                }
                Some((id, Err(e))) => {
                    let status = ServiceError::from(e).status();
                    if synced.is_empty() {
                        s.done = true;
                        return Some((
                            Ok(T::frame(pb::AddEntryState::Failed, vec![id], status)),
                            s,
                        ));
                    }
                    s.failed = Some((id, status));
                    return Some((
                        Ok(T::frame(pb::AddEntryState::Synced, synced, ok_status())),
                        s,
                    ));
                }
            }
            if s.left == 0 {
                break;
            }
            // Entries already durable join this frame; the next one not yet durable ends it.
            match s.outcomes.try_recv() {
                Ok(o) => next = Some(o),
                Err(_) => break,
            }
        }
        Some((
            Ok(T::frame(pb::AddEntryState::Synced, synced, ok_status())),
            s,
        ))
    });
    Box::pin(futures::stream::once(async move { Ok(first) }).chain(rest))
}

/// The frames of a batch that could not be buffered: `Failed` naming the first id not
/// buffered, then a gRPC error.
fn refused<T: AckFrame>(failed_id: i64, e: ServiceError) -> Frames<T> {
    let frame = T::frame(pb::AddEntryState::Failed, vec![failed_id], e.status());
    let err = Status::unknown(e.to_string());
    Box::pin(futures::stream::iter([Ok(frame), Err(err)]))
}

fn segment_metadata(
    segment_id: i64,
    size: u64,
    last_entry_id: i64,
    now_ms: i64,
) -> SegmentMetadata {
    #[allow(deprecated)]
    SegmentMetadata {
        seg_no: segment_id,
        state: SegmentState::Sealed as i32,
        last_entry_id,
        size: i64::try_from(size).unwrap_or(i64::MAX),
        sealed_time: now_ms,
        completion_time: now_ms,
        quorum_id: 1,
        ..SegmentMetadata::default()
    }
}

#[tonic::async_trait]
impl LogStoreRpc for LogStoreService {
    type AddEntryStream = Frames<pb::AddEntryResponse>;
    type AddEntriesStream = Frames<pb::AddEntriesResponse>;

    async fn add_entry(
        &self,
        request: Request<pb::AddEntryRequest>,
    ) -> Result<Response<Self::AddEntryStream>, Status> {
        let started = Stopwatch::start();
        let r = request.into_inner();
        let Some(e) = r.entry else {
            let err = ServiceError::InvalidRequest("AddEntry without an entry".into());
            self.node.metrics().rpc("AddEntry", true);
            return Ok(Response::new(refused(-1, err)));
        };
        let id = e.entry_id;
        let out = self
            .node
            .add_entries(
                &r.bucket_name,
                &r.root_path,
                r.log_id,
                vec![(e.seg_id, id, e.values)],
            )
            .await;
        self.node.metrics().rpc("AddEntry", out.is_err());
        measure(
            LogStoreOp::AddEntry,
            &r.bucket_name,
            &r.root_path,
            r.log_id,
            out.is_ok(),
            started,
        );
        Ok(Response::new(match out {
            Ok(handle) => ack_stream(handle),
            Err((_, e)) => refused(id, e),
        }))
    }

    async fn add_entries(
        &self,
        request: Request<pb::AddEntriesRequest>,
    ) -> Result<Response<Self::AddEntriesStream>, Status> {
        let started = Stopwatch::start();
        let r = request.into_inner();
        if r.entries.is_empty() {
            // Nothing to do: an empty stream, as in Go.
            self.node.metrics().rpc("AddEntries", false);
            return Ok(Response::new(Box::pin(futures::stream::empty())));
        }
        let ids: Vec<i64> = r.entries.iter().map(|e| e.entry_id).collect();
        let entries: Vec<(i64, i64, Bytes)> = r
            .entries
            .into_iter()
            .map(|e| (e.seg_id, e.entry_id, e.values))
            .collect();
        let out = self
            .node
            .add_entries(&r.bucket_name, &r.root_path, r.log_id, entries)
            .await;
        self.node.metrics().rpc("AddEntries", out.is_err());
        measure(
            LogStoreOp::AddEntries,
            &r.bucket_name,
            &r.root_path,
            r.log_id,
            out.is_ok(),
            started,
        );
        Ok(Response::new(match out {
            Ok(handle) => ack_stream(handle),
            Err((buffered, e)) => refused(ids.get(buffered).copied().unwrap_or(ids[0]), e),
        }))
    }

    async fn get_batch_entries_adv(
        &self,
        request: Request<pb::GetBatchEntriesAdvRequest>,
    ) -> Result<Response<pb::GetBatchEntriesAdvResponse>, Status> {
        let started = Stopwatch::start();
        let r = request.into_inner();
        let out = self
            .node
            .read(
                &r.bucket_name,
                &r.root_path,
                r.log_id,
                r.segment_id,
                r.from_entry_id,
                r.max_entries,
            )
            .await;
        self.count("GetBatchEntriesAdv", &out);
        measure(
            LogStoreOp::GetBatchEntries,
            &r.bucket_name,
            &r.root_path,
            r.log_id,
            out.is_ok(),
            started,
        );
        let resp = match out {
            Ok(batch) => {
                if batch.entries.is_empty() {
                    let code = batch
                        .wire_code()
                        .unwrap_or(crate::logstore::code::ENTRY_NOT_FOUND);
                    let e = if batch.end == ReadEnd::Eof {
                        pb::Status {
                            code,
                            reason: "end of file".into(),
                            detail: format!(
                                "log {} segment {} has no entry from {}",
                                r.log_id, r.segment_id, r.from_entry_id
                            ),
                            ..pb::Status::default()
                        }
                    } else {
                        pb::Status {
                            code,
                            reason: "entry not found".into(),
                            retriable: true,
                            detail: format!(
                                "log {} segment {} entry {} is not available on this node yet",
                                r.log_id, r.segment_id, r.from_entry_id
                            ),
                            ..pb::Status::default()
                        }
                    };
                    pb::GetBatchEntriesAdvResponse {
                        status: Some(e),
                        result: None,
                    }
                } else {
                    let next = batch
                        .entries
                        .last()
                        .map_or(r.from_entry_id, |(id, _)| id + 1);
                    let entries = batch
                        .entries
                        .into_iter()
                        .map(|(id, values)| pb::LogEntry {
                            seg_id: r.segment_id,
                            entry_id: id,
                            values,
                        })
                        .collect();
                    pb::GetBatchEntriesAdvResponse {
                        status: Some(ok_status()),
                        result: Some(pb::BatchReadResult {
                            entries,
                            // An opaque cursor: this server resumes from `from_entry_id`.
                            // Bit 0 stays clear, so a client's direct reader re-resolves
                            // the position by entry id (spec §3.2).
                            last_read_state: Some(pb::LastReadState {
                                segment_id: r.segment_id,
                                flags: 0,
                                version: u32::from(storage::codec::FORMAT_V6),
                                last_block_id: -1,
                                block_offset: next,
                                block_size: 0,
                                node: String::new(),
                            }),
                        }),
                    }
                }
            }
            Err(e) => pb::GetBatchEntriesAdvResponse {
                status: Some(e.status()),
                result: None,
            },
        };
        Ok(Response::new(resp))
    }

    async fn fence_segment(
        &self,
        request: Request<pb::FenceSegmentRequest>,
    ) -> Result<Response<pb::FenceSegmentResponse>, Status> {
        let started = Stopwatch::start();
        let r = request.into_inner();
        let out = self
            .node
            .fence(&r.bucket_name, &r.root_path, r.log_id, r.segment_id)
            .await;
        self.count("FenceSegment", &out);
        measure(
            LogStoreOp::Fence,
            &r.bucket_name,
            &r.root_path,
            r.log_id,
            out.is_ok(),
            started,
        );
        Ok(Response::new(pb::FenceSegmentResponse {
            status: Some(status_of(&out)),
            last_entry_id: out.unwrap_or(-1),
        }))
    }

    async fn complete_segment(
        &self,
        request: Request<pb::CompleteSegmentRequest>,
    ) -> Result<Response<pb::CompleteSegmentResponse>, Status> {
        let started = Stopwatch::start();
        let r = request.into_inner();
        let out = self
            .node
            .complete(
                &r.bucket_name,
                &r.root_path,
                r.log_id,
                r.segment_id,
                r.last_add_confirmed,
            )
            .await;
        self.count("CompleteSegment", &out);
        measure(
            LogStoreOp::Complete,
            &r.bucket_name,
            &r.root_path,
            r.log_id,
            out.is_ok(),
            started,
        );
        Ok(Response::new(pb::CompleteSegmentResponse {
            status: Some(status_of(&out)),
            last_entry_id: out.unwrap_or(-1),
        }))
    }

    async fn compact_segment(
        &self,
        request: Request<pb::CompactSegmentRequest>,
    ) -> Result<Response<pb::CompactSegmentResponse>, Status> {
        let started = Stopwatch::start();
        let r = request.into_inner();
        let out = self
            .node
            .compact(&r.bucket_name, &r.root_path, r.log_id, r.segment_id)
            .await;
        self.count("CompactSegment", &out);
        measure(
            LogStoreOp::CompactSegment,
            &r.bucket_name,
            &r.root_path,
            r.log_id,
            out.is_ok(),
            started,
        );
        let now = i64::try_from(self.node.clock().now_millis()).unwrap_or(i64::MAX);
        Ok(Response::new(pb::CompactSegmentResponse {
            status: Some(status_of(&out)),
            metadata: out
                .ok()
                .map(|c| segment_metadata(r.segment_id, c.size, c.last_entry_id, now)),
        }))
    }

    async fn notify_segment_compacted(
        &self,
        request: Request<pb::NotifySegmentCompactedRequest>,
    ) -> Result<Response<pb::NotifySegmentCompactedResponse>, Status> {
        let r = request.into_inner();
        let out = self
            .node
            .notify_compacted(&r.bucket_name, &r.root_path, r.log_id, r.segment_id)
            .await;
        self.count("NotifySegmentCompacted", &out);
        Ok(Response::new(pb::NotifySegmentCompactedResponse {
            status: Some(status_of(&out)),
        }))
    }

    async fn get_segment_last_add_confirmed(
        &self,
        request: Request<pb::GetSegmentLastAddConfirmedRequest>,
    ) -> Result<Response<pb::GetSegmentLastAddConfirmedResponse>, Status> {
        let started = Stopwatch::start();
        let r = request.into_inner();
        let out = self
            .node
            .last_entry_id(&r.bucket_name, &r.root_path, r.log_id, r.segment_id)
            .await;
        self.count("GetSegmentLastAddConfirmed", &out);
        measure(
            LogStoreOp::GetSegmentLac,
            &r.bucket_name,
            &r.root_path,
            r.log_id,
            out.is_ok(),
            started,
        );
        Ok(Response::new(pb::GetSegmentLastAddConfirmedResponse {
            status: Some(status_of(&out)),
            last_entry_id: out.unwrap_or(-1),
        }))
    }

    async fn get_segment_block_count(
        &self,
        request: Request<pb::GetSegmentBlockCountRequest>,
    ) -> Result<Response<pb::GetSegmentBlockCountResponse>, Status> {
        let started = Stopwatch::start();
        let r = request.into_inner();
        let out = self
            .node
            .block_count(&r.bucket_name, &r.root_path, r.log_id, r.segment_id)
            .await;
        self.count("GetSegmentBlockCount", &out);
        measure(
            LogStoreOp::GetSegmentBlockCount,
            &r.bucket_name,
            &r.root_path,
            r.log_id,
            out.is_ok(),
            started,
        );
        Ok(Response::new(pb::GetSegmentBlockCountResponse {
            status: Some(status_of(&out)),
            block_count: out.unwrap_or(0),
        }))
    }

    async fn update_last_add_confirmed(
        &self,
        request: Request<pb::UpdateLastAddConfirmedRequest>,
    ) -> Result<Response<pb::UpdateLastAddConfirmedResponse>, Status> {
        let started = Stopwatch::start();
        let r = request.into_inner();
        let out = self
            .node
            .update_lac(
                &r.bucket_name,
                &r.root_path,
                r.log_id,
                r.segment_id,
                r.last_add_confirmed,
            )
            .await;
        self.count("UpdateLastAddConfirmed", &out);
        measure(
            LogStoreOp::UpdateLac,
            &r.bucket_name,
            &r.root_path,
            r.log_id,
            out.is_ok(),
            started,
        );
        Ok(Response::new(pb::UpdateLastAddConfirmedResponse {
            status: Some(status_of(&out)),
        }))
    }

    async fn clean_segment(
        &self,
        request: Request<pb::CleanSegmentRequest>,
    ) -> Result<Response<pb::CleanSegmentResponse>, Status> {
        let started = Stopwatch::start();
        let r = request.into_inner();
        let out = self
            .node
            .clean(&r.bucket_name, &r.root_path, r.log_id, r.segment_id, r.flag)
            .await;
        self.count("CleanSegment", &out);
        measure(
            LogStoreOp::CleanSegment,
            &r.bucket_name,
            &r.root_path,
            r.log_id,
            out.is_ok(),
            started,
        );
        Ok(Response::new(pb::CleanSegmentResponse {
            status: Some(status_of(&out)),
        }))
    }

    async fn mark_log_deleted(
        &self,
        request: Request<pb::MarkLogDeletedRequest>,
    ) -> Result<Response<pb::MarkLogDeletedResponse>, Status> {
        let r = request.into_inner();
        let out = self
            .node
            .mark_deleted(&r.bucket_name, &r.root_path, Some(r.log_id))
            .await;
        self.count("MarkLogDeleted", &out);
        Ok(Response::new(pb::MarkLogDeletedResponse {
            status: Some(status_of(&out)),
        }))
    }

    async fn mark_instance_deleted(
        &self,
        request: Request<pb::MarkInstanceDeletedRequest>,
    ) -> Result<Response<pb::MarkInstanceDeletedResponse>, Status> {
        let r = request.into_inner();
        let out = self
            .node
            .mark_deleted(&r.bucket_name, &r.root_path, None)
            .await;
        self.count("MarkInstanceDeleted", &out);
        Ok(Response::new(pb::MarkInstanceDeletedResponse {
            status: Some(status_of(&out)),
        }))
    }

    async fn select_nodes(
        &self,
        request: Request<pb::SelectNodesRequest>,
    ) -> Result<Response<pb::SelectNodesResponse>, Status> {
        let r = request.into_inner();
        let strategy = pb::StrategyType::try_from(r.strategy).unwrap_or(pb::StrategyType::Random);
        let affinity =
            pb::AffinityMode::try_from(r.affinity_mode).unwrap_or(pb::AffinityMode::Soft);
        let out = self.node.select(strategy, affinity, &r.filters).await;
        self.count("SelectNodes", &out);
        let status = status_of(&out);
        let nodes = out.unwrap_or_default();
        Ok(Response::new(pb::SelectNodesResponse {
            status: Some(status),
            total_count: i32::try_from(nodes.len()).unwrap_or(i32::MAX),
            nodes,
        }))
    }
}
