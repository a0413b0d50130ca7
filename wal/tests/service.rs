//! The LogStore gRPC service in process: a real tonic server on a loopback port over staged
//! storage (local `data.log` files in a temporary directory, compaction into an in-process
//! object store), driven by the generated tonic client. Each test checks the wire answers
//! (frames, status codes) and what lands on disk and in object storage.

// Real processes, sockets and services answer in real time; waits poll them with deadlines.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use proto::logstore::log_store_client::LogStoreClient;
use proto::logstore::{
    AddEntriesRequest, AddEntryRequest, AddEntryState, AffinityMode, CleanSegmentRequest,
    CompactSegmentRequest, CompleteSegmentRequest, FenceSegmentRequest, GetBatchEntriesAdvRequest,
    GetSegmentBlockCountRequest, GetSegmentLastAddConfirmedRequest, LogEntry,
    MarkInstanceDeletedRequest, MarkLogDeletedRequest, NodeFilter, NodeMeta,
    NotifySegmentCompactedRequest, SelectNodesRequest, StrategyType, UpdateLastAddConfirmedRequest,
};
use proto::meta::SegmentState;
use storage::config::{CloudProvider, MinioConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::{Channel, Server};
use wal::clock::{ClockRef, SystemClock};
use wal::logstore::SyncPolicy;
use wal::service::{
    LogStoreNode, LogStoreService, MaintenanceSettings, Membership, NodeSettings, SelectionPolicy,
    TenantSettings,
};

const BUCKET: &str = "a-bucket";
const ROOT: &str = "files";

struct Running {
    node: Arc<LogStoreNode>,
    client: LogStoreClient<Channel>,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.server.await;
        self.node.close().await;
    }
}

fn settings(dir: &std::path::Path) -> NodeSettings {
    NodeSettings {
        tenants: TenantSettings {
            data_dir: dir.to_path_buf(),
            minio: MinioConfig {
                cloud_provider: CloudProvider::Memory,
                ..MinioConfig::default()
            },
            sync_policy: SyncPolicy::default(),
            compaction_max_bytes: 64,
        },
        read_max_bytes: 2_000_000,
        maintenance: MaintenanceSettings {
            reclaim_interval: std::time::Duration::from_millis(20),
            delete_grace: std::time::Duration::ZERO,
            ..MaintenanceSettings::default()
        },
        selection: SelectionPolicy::default(),
        // A neighbour filling the test machine's disk must not throttle these appends; the
        // watermark has its own test below.
        disk_watermark: wal::config::DiskWatermarkPolicy {
            enabled: false,
            ..Default::default()
        },
    }
}

async fn start(dir: &std::path::Path) -> Running {
    start_with(settings(dir)).await
}

async fn start_with(settings: NodeSettings) -> Running {
    let clock: ClockRef = SystemClock::shared();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let me = NodeMeta {
        node_id: "n1".into(),
        endpoint: addr.to_string(),
        az: "az1".into(),
        resource_group: "rg1".into(),
        ..NodeMeta::default()
    };
    let membership = Arc::new(Membership::solo(me, clock.clone()));
    let node = LogStoreNode::open(settings, membership, clock)
        .await
        .unwrap();
    node.spawn_maintenance();
    let (stop, mut stop_rx) = watch::channel(false);
    let svc = LogStoreService::new(node.clone()).into_server();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let server = tokio::spawn(async move {
        let _ = Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .await;
    });
    let client = LogStoreClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    Running {
        node,
        client,
        stop,
        server,
    }
}

fn entries(segment: i64, ids: std::ops::Range<i64>) -> Vec<LogEntry> {
    ids.map(|id| LogEntry {
        seg_id: segment,
        entry_id: id,
        values: Bytes::from(format!("entry-{segment}-{id}")),
    })
    .collect()
}

/// Sends AddEntries and collects the frames as (state, ids, status code).
async fn add(
    c: &mut LogStoreClient<Channel>,
    log: i64,
    segment: i64,
    ids: std::ops::Range<i64>,
) -> (Vec<(AddEntryState, Vec<i64>, i32)>, Option<tonic::Status>) {
    let mut stream = c
        .add_entries(AddEntriesRequest {
            bucket_name: BUCKET.into(),
            root_path: ROOT.into(),
            log_id: log,
            entries: entries(segment, ids),
        })
        .await
        .unwrap()
        .into_inner();
    let mut frames = Vec::new();
    while let Some(f) = stream.next().await {
        match f {
            Ok(f) => frames.push((
                f.state(),
                f.entry_id.clone(),
                f.status.map_or(0, |s| s.code),
            )),
            Err(e) => return (frames, Some(e)),
        }
    }
    (frames, None)
}

/// Every id of `ids` Synced, in order, after one Buffered frame naming them all.
fn assert_synced(frames: &[(AddEntryState, Vec<i64>, i32)], ids: std::ops::Range<i64>) {
    let all: Vec<i64> = ids.collect();
    assert_eq!(frames[0], (AddEntryState::Buffered, all.clone(), 0));
    let synced: Vec<i64> = frames[1..]
        .iter()
        .inspect(|f| assert_eq!((f.0, f.2), (AddEntryState::Synced, 0), "{frames:?}"))
        .flat_map(|f| f.1.clone())
        .collect();
    assert_eq!(synced, all);
}

async fn read(
    c: &mut LogStoreClient<Channel>,
    log: i64,
    segment: i64,
    from: i64,
) -> (i32, Vec<(i64, Bytes)>) {
    let r = c
        .get_batch_entries_adv(GetBatchEntriesAdvRequest {
            bucket_name: BUCKET.into(),
            root_path: ROOT.into(),
            log_id: log,
            segment_id: segment,
            from_entry_id: from,
            max_entries: 1000,
            last_read_state: None,
        })
        .await
        .unwrap()
        .into_inner();
    let code = r.status.map_or(0, |s| s.code);
    let entries = r
        .result
        .map(|b| {
            b.entries
                .into_iter()
                .map(|e| (e.entry_id, e.values))
                .collect()
        })
        .unwrap_or_default();
    (code, entries)
}

/// Reads the whole segment from entry 0 until EOF.
async fn read_all(c: &mut LogStoreClient<Channel>, log: i64, segment: i64) -> Vec<i64> {
    let mut got = Vec::new();
    loop {
        let from = got.last().map_or(0, |l| l + 1);
        let (code, batch) = read(c, log, segment, from).await;
        if code == 2310 {
            return got;
        }
        assert_eq!(code, 0, "reading from {from}");
        for (id, v) in batch {
            assert_eq!(v, Bytes::from(format!("entry-{segment}-{id}")));
            got.push(id);
        }
    }
}

async fn update_lac(c: &mut LogStoreClient<Channel>, log: i64, segment: i64, lac: i64) {
    let r = c
        .update_last_add_confirmed(UpdateLastAddConfirmedRequest {
            bucket_name: BUCKET.into(),
            root_path: ROOT.into(),
            log_id: log,
            segment_id: segment,
            last_add_confirmed: lac,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 0);
}

async fn fence(c: &mut LogStoreClient<Channel>, log: i64, segment: i64) -> (i32, i64) {
    let r = c
        .fence_segment(FenceSegmentRequest {
            bucket_name: BUCKET.into(),
            root_path: ROOT.into(),
            log_id: log,
            segment_id: segment,
        })
        .await
        .unwrap()
        .into_inner();
    (r.status.unwrap().code, r.last_entry_id)
}

async fn complete(c: &mut LogStoreClient<Channel>, log: i64, segment: i64, lac: i64) -> (i32, i64) {
    let r = c
        .complete_segment(CompleteSegmentRequest {
            bucket_name: BUCKET.into(),
            root_path: ROOT.into(),
            log_id: log,
            segment_id: segment,
            last_add_confirmed: lac,
        })
        .await
        .unwrap()
        .into_inner();
    (r.status.unwrap().code, r.last_entry_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_lives_from_append_to_object_storage() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = start(dir.path()).await;
    let c = &mut run.client;

    let (frames, err) = add(c, 1, 0, 0..10).await;
    assert!(err.is_none());
    assert_synced(&frames, 0..10);

    // Nothing is served before a LAC is known; then exactly up to it.
    assert_eq!(read(c, 1, 0, 0).await.0, 8102);
    update_lac(c, 1, 0, 6).await;
    let (code, got) = read(c, 1, 0, 0).await;
    assert_eq!(code, 0);
    assert_eq!(
        got.iter().map(|e| e.0).collect::<Vec<_>>(),
        (0..=6).collect::<Vec<_>>()
    );
    assert_eq!(read(c, 1, 0, 7).await.0, 8102);
    // A lower LAC never lowers what is served.
    update_lac(c, 1, 0, 3).await;
    assert_eq!(read(c, 1, 0, 0).await.1.len(), 7);

    // AddEntry: one entry, Buffered then Synced; a re-send of a durable id is Synced again.
    for id in [10, 10] {
        let mut s = c
            .add_entry(AddEntryRequest {
                bucket_name: BUCKET.into(),
                root_path: ROOT.into(),
                log_id: 1,
                entry: Some(entries(0, id..id + 1).remove(0)),
            })
            .await
            .unwrap()
            .into_inner();
        let states: Vec<(AddEntryState, i64)> = s
            .by_ref()
            .map(|f| f.unwrap())
            .map(|f| (f.state(), f.entry_id))
            .collect()
            .await;
        assert_eq!(
            states,
            [(AddEntryState::Buffered, id), (AddEntryState::Synced, id)]
        );
    }

    // Fence: appends fail with 8104 afterwards; the last entry stored is reported.
    assert_eq!(fence(c, 1, 0).await, (0, 10));
    let (frames, err) = add(c, 1, 0, 11..12).await;
    assert_eq!(frames, [(AddEntryState::Failed, vec![11], 8104)]);
    assert!(err.is_some());

    // Complete at LAC 9 (entry 10 never reached a quorum): served up to 9, then EOF. The
    // reply, and a later fence's, is what this replica serves (9), not what it stores (10):
    // recovery counting entry 10 would complete the segment past what any replica serves.
    assert_eq!(complete(c, 1, 0, 9).await, (0, 9));
    assert_eq!(fence(c, 1, 0).await, (0, 9));
    assert_eq!(read_all(c, 1, 0).await, (0..=9).collect::<Vec<_>>());
    assert_eq!(read(c, 1, 0, 10).await.0, 2310);
    let seg_dir = dir.path().join(BUCKET).join(ROOT).join("1").join("0");
    assert!(seg_dir.join("data.log").exists());

    // Compact: merged blocks and a compacted footer in object storage, local copy reclaimed.
    let r = c
        .compact_segment(CompactSegmentRequest {
            bucket_name: BUCKET.into(),
            root_path: ROOT.into(),
            log_id: 1,
            segment_id: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 0);
    let meta = r.metadata.unwrap();
    assert_eq!(meta.state(), SegmentState::Sealed);
    assert_eq!(meta.last_entry_id, 9);
    assert!(meta.size > 0 && meta.sealed_time > 0);
    assert!(!seg_dir.join("data.log").exists());
    assert!(seg_dir.join("data.compacted").exists());
    let tenants = run.node.tenants().open_stores().await;
    let objects = tenants[0].1.objects().clone();
    let footer = storage::segment::object::SegmentObjects::new(objects.clone(), 1, 0)
        .read_footer()
        .await
        .unwrap()
        .unwrap();
    assert!(footer.is_compacted());
    assert_eq!(footer.footer.lac, 9);
    assert_eq!(footer.footer.total_records, 10);
    assert!(footer.blocks.len() > 1, "64-byte merged blocks: {footer:?}");
    assert!(footer.blocks.iter().all(|b| b.start_offset == 0));
    let keys: Vec<String> = objects
        .list("1/0")
        .await
        .unwrap()
        .iter()
        .map(|m| objects.relative_key(&m.location).to_string())
        .collect();
    assert!(
        keys.iter()
            .all(|k| k.contains("/m_") || k.ends_with("footer.blk")),
        "{keys:?}"
    );
    // Reads now come from object storage, the same entries.
    assert_eq!(read_all(c, 1, 0).await, (0..=9).collect::<Vec<_>>());
    let last = c
        .get_segment_last_add_confirmed(GetSegmentLastAddConfirmedRequest {
            bucket_name: BUCKET.into(),
            root_path: ROOT.into(),
            log_id: 1,
            segment_id: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((last.status.unwrap().code, last.last_entry_id), (0, 9));
    // Compacting again answers from the stored footer; no new data.log appears for appends.
    let again = c
        .compact_segment(CompactSegmentRequest {
            bucket_name: BUCKET.into(),
            root_path: ROOT.into(),
            log_id: 1,
            segment_id: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.metadata.unwrap().last_entry_id, 9);
    let (frames, _) = add(c, 1, 0, 11..12).await;
    assert_eq!(frames[0].2, 2216);
    assert!(!seg_dir.join("data.log").exists());

    // CleanSegment(0) removes everything.
    let r = c
        .clean_segment(CleanSegmentRequest {
            bucket_name: BUCKET.into(),
            root_path: ROOT.into(),
            log_id: 1,
            segment_id: 0,
            flag: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 0);
    assert!(!seg_dir.exists());
    assert!(objects.list("1/0").await.unwrap().is_empty());
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_behind_replica_compacts_only_what_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = start(dir.path()).await;
    let c = &mut run.client;
    let (frames, _) = add(c, 2, 0, 0..3).await;
    assert_synced(&frames, 0..3);
    // The quorum confirmed up to 5, but this replica holds 0..=2.
    assert_eq!(fence(c, 2, 0).await, (0, 2));
    assert_eq!(complete(c, 2, 0, 5).await, (0, 2));
    // It serves what it has and answers "not here" (not EOF) beyond, below the LAC.
    assert_eq!(read(c, 2, 0, 0).await.1.len(), 3);
    assert_eq!(read(c, 2, 0, 3).await.0, 8102);
    let r = c
        .compact_segment(CompactSegmentRequest {
            bucket_name: BUCKET.into(),
            root_path: ROOT.into(),
            log_id: 2,
            segment_id: 0,
        })
        .await
        .unwrap()
        .into_inner();
    // It compacts what it serves (0..=2) and says so: a caller comparing the answer with
    // the segment's last entry sees it short (the auditor asks only a replica that serves
    // the whole segment; a replica an earlier recovery attempt completed past what it held
    // must still be able to compact a segment that ended where it ends).
    assert_eq!(r.status.unwrap().code, 0);
    assert_eq!(r.metadata.unwrap().last_entry_id, 2);
    // Not completed at all: refused.
    let (frames, _) = add(c, 2, 1, 0..2).await;
    assert_synced(&frames, 0..2);
    let r = c
        .compact_segment(CompactSegmentRequest {
            bucket_name: BUCKET.into(),
            root_path: ROOT.into(),
            log_id: 2,
            segment_id: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 1202);
    // NotifySegmentCompacted before any footer exists is refused and keeps the data.
    let r = c
        .notify_segment_compacted(NotifySegmentCompactedRequest {
            bucket_name: BUCKET.into(),
            root_path: ROOT.into(),
            log_id: 2,
            segment_id: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 1202);
    let blocks = c
        .get_segment_block_count(GetSegmentBlockCountRequest {
            bucket_name: BUCKET.into(),
            root_path: ROOT.into(),
            log_id: 2,
            segment_id: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(blocks.status.unwrap().code, 0);
    assert!(blocks.block_count >= 1);
    // An empty segment: GetSegmentLastAddConfirmed is 2311; an empty completed segment
    // compacts to a footer with no blocks.
    assert_eq!(fence(c, 2, 2).await, (0, -1));
    let last = c
        .get_segment_last_add_confirmed(GetSegmentLastAddConfirmedRequest {
            bucket_name: BUCKET.into(),
            root_path: ROOT.into(),
            log_id: 2,
            segment_id: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(last.status.unwrap().code, 2311);
    assert_eq!(complete(c, 2, 2, -1).await, (0, -1));
    let r = c
        .compact_segment(CompactSegmentRequest {
            bucket_name: BUCKET.into(),
            root_path: ROOT.into(),
            log_id: 2,
            segment_id: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 0);
    assert_eq!(r.metadata.unwrap().last_entry_id, -1);
    assert_eq!(read(c, 2, 2, 0).await.0, 2310);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_its_code_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = start(dir.path()).await;
    let c = &mut run.client;
    // Tenant names that would escape the data directory.
    for (bucket, root) in [("..", "files"), ("b", "../../etc"), ("b", ""), ("b/c", "x")] {
        let r = c
            .fence_segment(FenceSegmentRequest {
                bucket_name: bucket.into(),
                root_path: root.into(),
                log_id: 1,
                segment_id: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status.unwrap().code, 2008, "{bucket} {root}");
    }
    // A batch whose ids are not consecutive, and a negative log id.
    let mut bad = entries(0, 0..3);
    bad[2].entry_id = 7;
    let mut s = c
        .add_entries(AddEntriesRequest {
            bucket_name: BUCKET.into(),
            root_path: ROOT.into(),
            log_id: 3,
            entries: bad,
        })
        .await
        .unwrap()
        .into_inner();
    let f = s.next().await.unwrap().unwrap();
    assert_eq!(
        (f.state(), f.status.unwrap().code),
        (AddEntryState::Failed, 8100)
    );
    assert!(s.next().await.unwrap().is_err());
    let (frames, _) = add(c, -4, 0, 0..1).await;
    assert_eq!(frames[0].2, 8100);
    let r = c
        .clean_segment(CleanSegmentRequest {
            bucket_name: BUCKET.into(),
            root_path: ROOT.into(),
            log_id: 3,
            segment_id: 0,
            flag: 9,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 8100);
    // Nothing was created for refused requests.
    assert!(!dir.path().join("..").join("files").join("1").exists());
    assert!(!dir.path().join(BUCKET).join(ROOT).join("3").exists());
    // An id beyond the window (10000 entries) is 2200, retriable.
    let (frames, _) = add(c, 3, 1, 20_000..20_001).await;
    assert_eq!(frames[0].2, 2200);

    // SelectNodes: no filter is 4000; otherwise this node.
    let r = c
        .select_nodes(SelectNodesRequest {
            strategy: StrategyType::Random as i32,
            affinity_mode: AffinityMode::Soft as i32,
            filters: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 4000);
    let r = c
        .select_nodes(SelectNodesRequest {
            strategy: StrategyType::SingleAzSingleRg as i32,
            affinity_mode: AffinityMode::Hard as i32,
            filters: vec![NodeFilter {
                limit: 3,
                ..NodeFilter::default()
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 0);
    assert_eq!(r.total_count, 1);
    assert_eq!(r.nodes[0].node_id, "n1");
    let r = c
        .select_nodes(SelectNodesRequest {
            strategy: StrategyType::Random as i32,
            affinity_mode: AffinityMode::Hard as i32,
            filters: vec![NodeFilter {
                az: "az9".into(),
                limit: 3,
                ..NodeFilter::default()
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 4001);
    run.stop().await;
}

/// Waits (bounded, polling an event) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_logs_and_instances_are_refused_and_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = start(dir.path()).await;
    let c = &mut run.client;
    let (frames, _) = add(c, 5, 0, 0..2).await;
    assert_synced(&frames, 0..2);
    let (frames, _) = add(c, 6, 0, 0..2).await;
    assert_synced(&frames, 0..2);
    // A tenant whose root lies below this one's: deleting this instance must not touch it.
    let mut nested = entries(0, 0..1);
    nested[0].values = Bytes::from_static(b"nested");
    let mut s = c
        .add_entries(AddEntriesRequest {
            bucket_name: BUCKET.into(),
            root_path: format!("{ROOT}/wp"),
            log_id: 1,
            entries: nested,
        })
        .await
        .unwrap()
        .into_inner();
    while s.next().await.is_some() {}
    let tenant = dir.path().join(BUCKET).join(ROOT);
    let r = c
        .mark_log_deleted(MarkLogDeletedRequest {
            bucket_name: BUCKET.into(),
            root_path: ROOT.into(),
            log_id: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 0);
    assert_eq!(fence(c, 5, 0).await.0, 2005);
    assert_eq!(read(c, 5, 0, 0).await.0, 2005);
    assert_eq!(fence(c, 6, 0).await, (0, 1));
    eventually("log 5's local data removed", || !tenant.join("5").exists()).await;
    assert!(tenant.join("6").join("0").join("data.log").exists());
    // The marker survives a restart.
    run.stop().await;
    let mut run = start(dir.path()).await;
    let c = &mut run.client;
    assert_eq!(fence(c, 5, 0).await.0, 2005);
    // The instance: every log of the tenant, then the tenant can serve a new instance.
    let r = c
        .mark_instance_deleted(MarkInstanceDeletedRequest {
            bucket_name: BUCKET.into(),
            root_path: ROOT.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 0);
    eventually("the instance reclaimed", || !tenant.join("6").exists()).await;
    assert!(
        tenant
            .join("wp")
            .join("1")
            .join("0")
            .join("data.log")
            .exists()
    );
    eventually("the instance marker removed", || {
        !dir.path()
            .join(".deleted")
            .join(BUCKET)
            .join(ROOT)
            .join("_instance_.json")
            .exists()
    })
    .await;
    // The markers are removed from disk first, then forgotten: wait for the second step.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while fence(c, 7, 0).await.0 == 2005 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tenant stays refused"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (frames, _) = add(c, 5, 0, 0..1).await;
    assert_synced(&frames, 0..1);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_synced_entries_and_refuses_appends_to_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = start(dir.path()).await;
    let (frames, _) = add(&mut run.client, 7, 0, 0..50).await;
    assert_synced(&frames, 0..50);
    run.stop().await;

    let mut run = start(dir.path()).await;
    let c = &mut run.client;
    // The segment reopens in recovery mode: appends get 2218, so the client rolls.
    let (frames, _) = add(c, 7, 0, 50..51).await;
    assert_eq!(frames[0].2, 2218);
    // Every Synced entry is there once a LAC is pushed (in-memory LAC is lost on restart).
    update_lac(c, 7, 0, 49).await;
    assert_eq!(fence(c, 7, 0).await, (0, 49));
    assert_eq!(complete(c, 7, 0, 49).await, (0, 49));
    assert_eq!(read_all(c, 7, 0).await, (0..50).collect::<Vec<_>>());
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommissioning_refuses_appends_and_ends_once_local_data_is_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = start(dir.path()).await;
    let c = &mut run.client;
    let (frames, _) = add(c, 8, 0, 0..4).await;
    assert_synced(&frames, 0..4);
    let state = run.node.decommission().await.unwrap();
    assert_eq!(state, wal::service::Lifecycle::Decommissioning);
    let (frames, _) = add(c, 8, 1, 0..1).await;
    assert_eq!(frames[0].2, 2002);
    // Not selectable any more.
    let r = c
        .select_nodes(SelectNodesRequest {
            strategy: StrategyType::Random as i32,
            affinity_mode: AffinityMode::Soft as i32,
            filters: vec![NodeFilter::default()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.total_count, 0);
    // Fence, complete and compact still work; then nothing is left locally.
    assert_eq!(fence(c, 8, 0).await, (0, 3));
    assert_eq!(complete(c, 8, 0, 3).await, (0, 3));
    let r = c
        .compact_segment(CompactSegmentRequest {
            bucket_name: BUCKET.into(),
            root_path: ROOT.into(),
            log_id: 8,
            segment_id: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 0);
    assert_eq!(
        run.node.decommission().await.unwrap(),
        wal::service::Lifecycle::Decommissioned
    );
    // Persisted across a restart.
    run.stop().await;
    let mut run = start(dir.path()).await;
    assert_eq!(
        run.node.lifecycle(),
        wal::service::Lifecycle::Decommissioned
    );
    let (frames, _) = add(&mut run.client, 8, 2, 0..1).await;
    assert_eq!(frames[0].2, 2002);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_processors_are_closed_and_their_segments_reopen_in_recovery_mode() {
    use std::time::Duration;
    use wal::clock::ManualClock;
    use wal::logstore::staged::StagedStore;

    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let store = StagedStore::open(
        dir.path(),
        storage::object::ObjectStorage::in_memory("files").unwrap(),
        SyncPolicy::default(),
        1024,
        Arc::new(clock.clone()),
    )
    .unwrap();
    let p = store.processor(1, 0).await.unwrap();
    p.add_entry(0, Bytes::from_static(b"x"))
        .await
        .unwrap()
        .await
        .unwrap();
    drop(p);
    let max_idle = Duration::from_secs(300);
    assert_eq!(store.close_idle(max_idle).await, 0);
    clock.advance(Duration::from_secs(299));
    assert_eq!(store.close_idle(max_idle).await, 0);
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.close_idle(max_idle).await, 1);
    assert_eq!(store.local().open_processors().await, 0);
    // Reopened from its data.log: it serves fence and complete, not appends (the client rolls).
    let p = store.processor(1, 0).await.unwrap();
    let err = p.add_entry(1, Bytes::from_static(b"y")).await.unwrap_err();
    assert_eq!(err.code(), 2218);
    assert_eq!(store.fence(1, 0).await.unwrap(), 0);
    store.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_appends_with_2007_but_serves_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (frames, _) = {
        let mut run = start(dir.path()).await;
        let r = add(&mut run.client, 1, 0, 0..3).await;
        run.stop().await;
        r
    };
    assert_synced(&frames, 0..3);
    // Every real disk is fuller than this hard watermark.
    let mut s = settings(dir.path());
    s.disk_watermark = wal::config::DiskWatermarkPolicy {
        enabled: true,
        soft_threshold_ratio: 1e-9,
        hard_threshold_ratio: 2e-9,
        min_free_bytes: 0,
        ..Default::default()
    };
    let mut run = start_with(s).await;
    let c = &mut run.client;
    let (frames, err) = add(c, 1, 1, 0..1).await;
    assert_eq!(frames, [(AddEntryState::Failed, vec![0], 2007)]);
    assert!(err.is_some());
    // Fence, complete and reads still work: they are how a full disk drains.
    assert_eq!(fence(c, 1, 0).await, (0, 2));
    assert_eq!(complete(c, 1, 0, 2).await, (0, 2));
    assert_eq!(read_all(c, 1, 0).await, vec![0, 1, 2]);
    run.stop().await;
}
