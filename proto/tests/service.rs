//! The generated LogStore client and server speak the Go method paths
//! `/woodpecker.proto.logstore.LogStore/<Method>`: an in-process server on a
//! loopback port is called both through the generated client and through a
//! raw gRPC client that spells the paths out by hand.

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use proto::logstore::log_store_client::LogStoreClient;
use proto::logstore::log_store_server::{self, LogStore, LogStoreServer};
use proto::logstore::{
    AddEntriesRequest, AddEntriesResponse, AddEntryRequest, AddEntryResponse, AddEntryState,
    CleanSegmentRequest, CleanSegmentResponse, CompactSegmentRequest, CompactSegmentResponse,
    CompleteSegmentRequest, CompleteSegmentResponse, FenceSegmentRequest, FenceSegmentResponse,
    GetBatchEntriesAdvRequest, GetBatchEntriesAdvResponse, GetSegmentBlockCountRequest,
    GetSegmentBlockCountResponse, GetSegmentLastAddConfirmedRequest,
    GetSegmentLastAddConfirmedResponse, LogEntry, MarkInstanceDeletedRequest,
    MarkInstanceDeletedResponse, MarkLogDeletedRequest, MarkLogDeletedResponse,
    NotifySegmentCompactedRequest, NotifySegmentCompactedResponse, SelectNodesRequest,
    SelectNodesResponse, Status as WireStatus, UpdateLastAddConfirmedRequest,
    UpdateLastAddConfirmedResponse,
};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status};
use tonic_prost::ProstCodec;

const SERVICE: &str = "woodpecker.proto.logstore.LogStore";

/// Implements AddEntries and FenceSegment; everything else is unimplemented.
#[derive(Debug, Default)]
struct Fake;

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl LogStore for Fake {
    type AddEntryStream = BoxStream<'static, Result<AddEntryResponse, Status>>;
    type AddEntriesStream = BoxStream<'static, Result<AddEntriesResponse, Status>>;

    async fn add_entry(&self, _: Request<AddEntryRequest>) -> Reply<Self::AddEntryStream> {
        Err(Status::unimplemented("add_entry"))
    }

    /// One Buffered frame with every id, then one Synced frame per entry.
    async fn add_entries(&self, req: Request<AddEntriesRequest>) -> Reply<Self::AddEntriesStream> {
        let ids: Vec<i64> = req
            .into_inner()
            .entries
            .iter()
            .map(|e| e.entry_id)
            .collect();
        let mut frames = vec![AddEntriesResponse {
            status: Some(WireStatus::default()),
            entry_id: ids.clone(),
            state: AddEntryState::Buffered as i32,
        }];
        frames.extend(ids.into_iter().map(|id| AddEntriesResponse {
            status: Some(WireStatus::default()),
            entry_id: vec![id],
            state: AddEntryState::Synced as i32,
        }));
        Ok(Response::new(
            stream::iter(frames.into_iter().map(Ok)).boxed(),
        ))
    }

    async fn get_batch_entries_adv(
        &self,
        _: Request<GetBatchEntriesAdvRequest>,
    ) -> Reply<GetBatchEntriesAdvResponse> {
        Err(Status::unimplemented("get_batch_entries_adv"))
    }

    /// Reports `segment_id * 100 + log_id` as the last entry, so the test can
    /// see the request arrived intact.
    async fn fence_segment(
        &self,
        req: Request<FenceSegmentRequest>,
    ) -> Reply<FenceSegmentResponse> {
        let req = req.into_inner();
        Ok(Response::new(FenceSegmentResponse {
            status: Some(WireStatus::default()),
            last_entry_id: req.segment_id * 100 + req.log_id,
        }))
    }

    async fn complete_segment(
        &self,
        _: Request<CompleteSegmentRequest>,
    ) -> Reply<CompleteSegmentResponse> {
        Err(Status::unimplemented("complete_segment"))
    }

    async fn compact_segment(
        &self,
        _: Request<CompactSegmentRequest>,
    ) -> Reply<CompactSegmentResponse> {
        Err(Status::unimplemented("compact_segment"))
    }

    async fn notify_segment_compacted(
        &self,
        _: Request<NotifySegmentCompactedRequest>,
    ) -> Reply<NotifySegmentCompactedResponse> {
        Err(Status::unimplemented("notify_segment_compacted"))
    }

    async fn get_segment_last_add_confirmed(
        &self,
        _: Request<GetSegmentLastAddConfirmedRequest>,
    ) -> Reply<GetSegmentLastAddConfirmedResponse> {
        Err(Status::unimplemented("get_segment_last_add_confirmed"))
    }

    async fn get_segment_block_count(
        &self,
        _: Request<GetSegmentBlockCountRequest>,
    ) -> Reply<GetSegmentBlockCountResponse> {
        Err(Status::unimplemented("get_segment_block_count"))
    }

    async fn update_last_add_confirmed(
        &self,
        _: Request<UpdateLastAddConfirmedRequest>,
    ) -> Reply<UpdateLastAddConfirmedResponse> {
        Err(Status::unimplemented("update_last_add_confirmed"))
    }

    async fn clean_segment(&self, _: Request<CleanSegmentRequest>) -> Reply<CleanSegmentResponse> {
        Err(Status::unimplemented("clean_segment"))
    }

    async fn mark_log_deleted(
        &self,
        _: Request<MarkLogDeletedRequest>,
    ) -> Reply<MarkLogDeletedResponse> {
        Err(Status::unimplemented("mark_log_deleted"))
    }

    async fn mark_instance_deleted(
        &self,
        _: Request<MarkInstanceDeletedRequest>,
    ) -> Reply<MarkInstanceDeletedResponse> {
        Err(Status::unimplemented("mark_instance_deleted"))
    }

    async fn select_nodes(&self, _: Request<SelectNodesRequest>) -> Reply<SelectNodesResponse> {
        Err(Status::unimplemented("select_nodes"))
    }
}

#[test]
fn service_name_is_the_go_one() {
    assert_eq!(log_store_server::SERVICE_NAME, SERVICE);
    assert_eq!(
        <LogStoreServer<Fake> as tonic::server::NamedService>::NAME,
        SERVICE
    );
}

/// Starts the fake on 127.0.0.1:0 and returns a connected channel plus the
/// shutdown trigger and the server task.
async fn start() -> anyhow::Result<(
    Channel,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
)> {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse()?)?;
    let addr = incoming.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .add_service(LogStoreServer::new(Fake))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok((channel, stop, server))
}

#[tokio::test]
async fn generated_client_and_server_talk() -> anyhow::Result<()> {
    let (channel, stop, server) = start().await?;
    let mut client = LogStoreClient::new(channel);

    let entries = (10..13)
        .map(|entry_id| LogEntry {
            seg_id: 1,
            entry_id,
            values: bytes::Bytes::from_static(b"x"),
        })
        .collect();
    let mut frames = client
        .add_entries(AddEntriesRequest {
            bucket_name: "b".to_owned(),
            root_path: "r".to_owned(),
            log_id: 1,
            entries,
        })
        .await?
        .into_inner();
    let mut seen = Vec::new();
    while let Some(frame) = frames.message().await? {
        seen.push((frame.state(), frame.entry_id));
    }
    assert_eq!(
        seen,
        vec![
            (AddEntryState::Buffered, vec![10, 11, 12]),
            (AddEntryState::Synced, vec![10]),
            (AddEntryState::Synced, vec![11]),
            (AddEntryState::Synced, vec![12]),
        ]
    );

    let err = client
        .select_nodes(SelectNodesRequest::default())
        .await
        .expect_err("not implemented by the fake");
    assert_eq!(err.code(), Code::Unimplemented);

    stop.send(()).ok();
    server.await??;
    Ok(())
}

/// Calls the server through paths written out by hand, as a Go client would.
#[tokio::test]
async fn method_paths_match_go() -> anyhow::Result<()> {
    let (channel, stop, server) = start().await?;
    let mut grpc = tonic::client::Grpc::new(channel);

    grpc.ready().await?;
    let reply: Response<FenceSegmentResponse> = grpc
        .unary(
            Request::new(FenceSegmentRequest {
                log_id: 7,
                segment_id: 3,
                ..FenceSegmentRequest::default()
            }),
            PathAndQuery::from_static("/woodpecker.proto.logstore.LogStore/FenceSegment"),
            ProstCodec::default(),
        )
        .await?;
    assert_eq!(reply.get_ref().last_entry_id, 307);

    grpc.ready().await?;
    let mut frames = grpc
        .server_streaming::<_, AddEntriesResponse, _>(
            Request::new(AddEntriesRequest {
                entries: vec![LogEntry {
                    seg_id: 0,
                    entry_id: 0,
                    values: bytes::Bytes::new(),
                }],
                ..AddEntriesRequest::default()
            }),
            PathAndQuery::from_static("/woodpecker.proto.logstore.LogStore/AddEntries"),
            ProstCodec::default(),
        )
        .await?
        .into_inner();
    let mut states = Vec::new();
    while let Some(frame) = frames.message().await? {
        states.push(frame.state());
    }
    assert_eq!(states, vec![AddEntryState::Buffered, AddEntryState::Synced]);

    // A path outside the service is not routed to it.
    grpc.ready().await?;
    let err = grpc
        .unary::<_, FenceSegmentResponse, _>(
            Request::new(FenceSegmentRequest::default()),
            PathAndQuery::from_static("/woodpecker.proto.logstore.LogStore/NoSuchMethod"),
            ProstCodec::default(),
        )
        .await
        .expect_err("unknown method");
    assert_eq!(err.code(), Code::Unimplemented);

    stop.send(()).ok();
    server.await??;
    Ok(())
}

/// Every LogStore method of the Go service is routed by its Go path. The fake
/// answers the unimplemented ones with its own method name, which tells a
/// routed call apart from an unknown path.
#[tokio::test]
async fn every_go_method_path_is_routed() -> anyhow::Result<()> {
    const ROUTED: [(&str, &str); 12] = [
        ("AddEntry", "add_entry"),
        ("GetBatchEntriesAdv", "get_batch_entries_adv"),
        ("CompleteSegment", "complete_segment"),
        ("CompactSegment", "compact_segment"),
        ("NotifySegmentCompacted", "notify_segment_compacted"),
        (
            "GetSegmentLastAddConfirmed",
            "get_segment_last_add_confirmed",
        ),
        ("GetSegmentBlockCount", "get_segment_block_count"),
        ("UpdateLastAddConfirmed", "update_last_add_confirmed"),
        ("CleanSegment", "clean_segment"),
        ("MarkLogDeleted", "mark_log_deleted"),
        ("MarkInstanceDeleted", "mark_instance_deleted"),
        ("SelectNodes", "select_nodes"),
    ];
    let (channel, stop, server) = start().await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    for (method, handler) in ROUTED {
        let path = PathAndQuery::try_from(format!("/{SERVICE}/{method}"))?;
        grpc.ready().await?;
        // An empty message is zero bytes, a valid encoding of every request type.
        let err = grpc
            .unary::<_, FenceSegmentResponse, _>(
                Request::new(FenceSegmentRequest::default()),
                path,
                ProstCodec::default(),
            )
            .await
            .expect_err("the fake does not implement it");
        assert_eq!(err.code(), Code::Unimplemented, "{method}");
        assert_eq!(err.message(), handler, "{method} reached the wrong handler");
    }
    stop.send(()).ok();
    server.await??;
    Ok(())
}
