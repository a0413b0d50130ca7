//! Three `woodpecker logstore` processes on loopback with MinIO, driven by a tonic client from
//! the test the way a service-mode client drives them: every entry to all three replicas,
//! LAC pushes, fence, complete, compaction by one replica, reads from the nodes and, after
//! compaction, from object storage; nodes killed with SIGKILL and restarted keep every entry
//! they acknowledged `Synced`. Membership: the nodes find each other by gossip from seeds, and
//! SelectNodes answers per strategy.
//!
//! Needs MinIO from `scripts/services start` (`WOODPECKER_TEST_S3_*`); without it every case
//! fails (it never skips). Each case works in its own bucket.

// Real processes, sockets and services answer in real time; waits poll them with deadlines.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use proto::logstore::log_store_client::LogStoreClient;
use proto::logstore::{
    AddEntriesRequest, AddEntryState, AffinityMode, CompactSegmentRequest, CompleteSegmentRequest,
    FenceSegmentRequest, GetBatchEntriesAdvRequest, LogEntry, NodeFilter,
    NotifySegmentCompactedRequest, SelectNodesRequest, StrategyType, UpdateLastAddConfirmedRequest,
};
use storage::config::MinioConfig;
use storage::object::{BuildOptions, build_object_storage};
use storage::segment::object::{ObjectSegmentReader, SegmentObjects};
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_woodpecker");
/// Hang guard for one process start or one wait; never a latency assertion.
const HANG_GUARD: Duration = Duration::from_secs(60);
const ROOT: &str = "files";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: this test needs MinIO; run `eval \"$(scripts/services start)\"` \
             first (or use scripts/test)"
        )
    })
}

/// The MinIO settings of the test services, in a fresh bucket.
fn minio(bucket: &str) -> MinioConfig {
    let s3 = env("WOODPECKER_TEST_S3_ENDPOINT");
    let (ssl, host_port) = match s3.trim_end_matches('/').split_once("://") {
        Some((scheme, rest)) => (scheme == "https", rest.to_string()),
        None => (false, s3.clone()),
    };
    let (host, port) = host_port.rsplit_once(':').expect("endpoint with a port");
    MinioConfig {
        address: host.to_string(),
        port: port.parse().expect("port"),
        use_ssl: ssl,
        access_key_id: env("WOODPECKER_TEST_S3_ACCESS_KEY_ID"),
        secret_access_key: env("WOODPECKER_TEST_S3_SECRET_ACCESS_KEY"),
        region: env("WOODPECKER_TEST_S3_REGION"),
        bucket_name: bucket.to_string(),
        create_bucket: true,
        root_path: ROOT.to_string(),
        ..MinioConfig::default()
    }
}

// The compat tests' port picker, shared by path (the cli crate does not depend on them).
#[path = "../../compat-tests/src/ports.rs"]
#[allow(dead_code, unreachable_pub)]
mod ports;
use ports::free_port;

/// One node's fixed identity (ports, data directory), so a restart is the same node.
struct NodeSpec {
    id: String,
    az: String,
    rg: String,
    service: SocketAddr,
    gossip: SocketAddr,
    data: PathBuf,
}

struct Node {
    spec: NodeSpec,
    child: Option<Child>,
    /// The admin endpoint of the running process.
    admin: Option<SocketAddr>,
}

struct Cluster {
    _dir: tempfile::TempDir,
    config: PathBuf,
    bucket: String,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Three nodes: (az1, rg1), (az2, rg1), (az3, rg2), each seeded with the others.
    fn start() -> Cluster {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let bucket = format!("wp-ls-{id}");
        let dir = tempfile::tempdir().unwrap();
        let m = minio(&bucket);
        let config = dir.path().join("woodpecker.yaml");
        let yaml = format!(
            "woodpecker:
  storage:
    type: service
    rootPath: {data}
  logstore:
    segmentCompactionPolicy:
      maxBytes: 4096
    # a neighbour filling the test machine's disk must not throttle the test's appends
    diskWatermarkPolicy:
      enabled: false
minio:
  address: \"{host}\"
  port: {port}
  useSSL: {ssl}
  accessKeyID: \"{key}\"
  secretAccessKey: \"{secret}\"
  region: \"{region}\"
  bucketName: {bucket}
  createBucket: true
  rootPath: {ROOT}
",
            data = dir.path().join("unused").display(),
            host = m.address,
            port = m.port,
            ssl = m.use_ssl,
            key = m.access_key_id,
            secret = m.secret_access_key,
            region = m.region,
        );
        std::fs::write(&config, yaml).unwrap();
        let placement = [("az1", "rg1"), ("az2", "rg1"), ("az3", "rg2")];
        let specs: Vec<NodeSpec> = placement
            .iter()
            .enumerate()
            .map(|(i, (az, rg))| NodeSpec {
                id: format!("n{i}"),
                az: az.to_string(),
                rg: rg.to_string(),
                service: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
                gossip: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
                data: dir.path().join(format!("node{i}")),
            })
            .collect();
        let mut cluster = Cluster {
            _dir: dir,
            config,
            bucket,
            nodes: specs
                .into_iter()
                .map(|spec| Node {
                    spec,
                    child: None,
                    admin: None,
                })
                .collect(),
        };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i);
        }
        cluster
    }

    fn seeds(&self, except: usize) -> String {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != except)
            .map(|(_, n)| n.spec.gossip.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts node `i` and waits for `logstore listening on`.
    fn spawn(&mut self, i: usize) {
        let seeds = self.seeds(i);
        let s = &self.nodes[i].spec;
        let mut child = Command::new(BIN)
            .arg("logstore")
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&s.data)
            .args(["--service-addr", &s.service.to_string()])
            .args(["--gossip-addr", &s.gossip.to_string()])
            .args(["--admin-addr", "127.0.0.1:0"])
            .args(["--seeds", &seeds])
            .args(["--node-id", &s.id, "--az", &s.az, "--resource-group", &s.rg])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn woodpecker logstore");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            // Drains stdout for the child's whole life, whether anyone still listens or not.
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(HANG_GUARD)
            .unwrap_or_else(|e| panic!("node {i} did not start within {HANG_GUARD:?}: {e}"));
        assert_eq!(line, format!("logstore listening on {}", s.service));
        let admin = rx.recv_timeout(HANG_GUARD).expect("admin line");
        let admin = admin
            .strip_prefix("admin listening on ")
            .unwrap_or_else(|| panic!("unexpected line {admin:?}"))
            .parse()
            .unwrap();
        self.nodes[i].child = Some(child);
        self.nodes[i].admin = Some(admin);
    }

    /// SIGKILL: no chance to flush or close anything.
    fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit (status 0).
    fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let pid = c.id().to_string();
            Command::new("kill").args(["-TERM", &pid]).status().unwrap();
            let status = c.wait().unwrap();
            assert!(status.success(), "node {i} exited with {status}");
        }
    }

    async fn client(&self, i: usize) -> LogStoreClient<Channel> {
        let url = format!("http://{}", self.nodes[i].spec.service);
        LogStoreClient::connect(url).await.expect("connect")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn payload(segment: i64, id: i64) -> Bytes {
    Bytes::from(format!(
        "seg {segment} entry {id} {}",
        "x".repeat((id % 7) as usize * 100)
    ))
}

/// AddEntries of `ids` on one node: the ids it acknowledged `Synced` (in order) and the
/// first failure code, if any.
async fn append(
    c: &mut LogStoreClient<Channel>,
    bucket: &str,
    log: i64,
    segment: i64,
    ids: std::ops::Range<i64>,
) -> (Vec<i64>, Option<i32>) {
    let entries = ids
        .map(|id| LogEntry {
            seg_id: segment,
            entry_id: id,
            values: payload(segment, id),
        })
        .collect();
    let stream = c
        .add_entries(AddEntriesRequest {
            bucket_name: bucket.into(),
            root_path: ROOT.into(),
            log_id: log,
            entries,
        })
        .await;
    let mut stream = match stream {
        Ok(s) => s.into_inner(),
        Err(_) => return (Vec::new(), Some(-1)),
    };
    let mut synced = Vec::new();
    while let Some(frame) = stream.next().await {
        match frame {
            Ok(f) if f.state() == AddEntryState::Synced => synced.extend(f.entry_id),
            Ok(f) if f.state() == AddEntryState::Failed => {
                return (synced, Some(f.status.map_or(-1, |s| s.code)));
            }
            Ok(_) => {}
            Err(_) => return (synced, Some(-1)),
        }
    }
    (synced, None)
}

async fn update_lac(c: &mut LogStoreClient<Channel>, bucket: &str, log: i64, seg: i64, lac: i64) {
    let r = c
        .update_last_add_confirmed(UpdateLastAddConfirmedRequest {
            bucket_name: bucket.into(),
            root_path: ROOT.into(),
            log_id: log,
            segment_id: seg,
            last_add_confirmed: lac,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 0);
}

/// Reads a segment from a node until EOF (2310), checking every payload; entry ids in order.
async fn read_all(c: &mut LogStoreClient<Channel>, bucket: &str, log: i64, seg: i64) -> Vec<i64> {
    let mut got: Vec<i64> = Vec::new();
    loop {
        let from = got.last().map_or(0, |l| l + 1);
        let r = c
            .get_batch_entries_adv(GetBatchEntriesAdvRequest {
                bucket_name: bucket.into(),
                root_path: ROOT.into(),
                log_id: log,
                segment_id: seg,
                from_entry_id: from,
                max_entries: 37,
                last_read_state: None,
            })
            .await
            .unwrap()
            .into_inner();
        let code = r.status.map_or(0, |s| s.code);
        if code == 2310 {
            return got;
        }
        assert_eq!(code, 0, "read of log {log} segment {seg} from {from}");
        for e in r.result.unwrap().entries {
            assert_eq!(e.values, payload(seg, e.entry_id));
            got.push(e.entry_id);
        }
    }
}

/// One read at `from`: the status code and how many entries came back.
async fn read_at(
    c: &mut LogStoreClient<Channel>,
    bucket: &str,
    log: i64,
    seg: i64,
    from: i64,
) -> (i32, usize) {
    let r = c
        .get_batch_entries_adv(GetBatchEntriesAdvRequest {
            bucket_name: bucket.into(),
            root_path: ROOT.into(),
            log_id: log,
            segment_id: seg,
            from_entry_id: from,
            max_entries: 37,
            last_read_state: None,
        })
        .await
        .unwrap()
        .into_inner();
    (
        r.status.map_or(0, |s| s.code),
        r.result.map_or(0, |b| b.entries.len()),
    )
}

async fn fence(c: &mut LogStoreClient<Channel>, bucket: &str, log: i64, seg: i64) -> i64 {
    let r = c
        .fence_segment(FenceSegmentRequest {
            bucket_name: bucket.into(),
            root_path: ROOT.into(),
            log_id: log,
            segment_id: seg,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 0);
    r.last_entry_id
}

async fn complete(
    c: &mut LogStoreClient<Channel>,
    bucket: &str,
    log: i64,
    seg: i64,
    lac: i64,
) -> i64 {
    let r = c
        .complete_segment(CompleteSegmentRequest {
            bucket_name: bucket.into(),
            root_path: ROOT.into(),
            log_id: log,
            segment_id: seg,
            last_add_confirmed: lac,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 0);
    r.last_entry_id
}

fn segment_dir(node: &Node, bucket: &str, log: i64, seg: i64) -> PathBuf {
    node.spec
        .data
        .join(bucket)
        .join(ROOT)
        .join(log.to_string())
        .join(seg.to_string())
}

/// One HTTP/1.1 request to a node's admin endpoint: (status line, body).
fn http(addr: SocketAddr, method: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(HANG_GUARD)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

fn exists(p: &Path) -> bool {
    p.exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_complete_compact_and_keep_synced_entries_across_sigkill() {
    let mut cluster = Cluster::start();
    let bucket = cluster.bucket.clone();
    let (log, seg) = (1, 0);

    // Every entry to all three replicas, in batches.
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(cluster.client(i).await);
    }
    for batch in 0..10 {
        let ids = batch * 10..batch * 10 + 10;
        let mut tasks = Vec::new();
        for c in &clients {
            let (mut c, bucket, ids) = (c.clone(), bucket.clone(), ids.clone());
            tasks.push(tokio::spawn(async move {
                append(&mut c, &bucket, log, seg, ids).await
            }));
        }
        for t in tasks {
            let (synced, failed) = t.await.unwrap();
            assert_eq!(failed, None);
            assert_eq!(synced, (batch * 10..batch * 10 + 10).collect::<Vec<_>>());
        }
    }
    for c in &mut clients {
        update_lac(c, &bucket, log, seg, 99).await;
        // Everything up to the LAC is served; past it, "not yet" (8102), never EOF.
        let (code, n) = read_at(c, &bucket, log, seg, 0).await;
        assert_eq!((code, n), (0, 37));
        assert_eq!(read_at(c, &bucket, log, seg, 99).await, (0, 1));
        assert_eq!(read_at(c, &bucket, log, seg, 100).await.0, 8102);
    }

    // SIGKILL node 2 and restart it: everything it acknowledged is still there (its LAC was in
    // memory, so it is pushed again), and the old segment takes no appends (2218).
    cluster.kill9(2);
    cluster.spawn(2);
    let mut c2 = cluster.client(2).await;
    let (synced, failed) = append(&mut c2, &bucket, log, seg, 100..101).await;
    assert!(synced.is_empty());
    assert_eq!(failed, Some(2218));
    update_lac(&mut c2, &bucket, log, seg, 99).await;
    clients[2] = c2;

    // Fence and complete on every replica at LAC 99.
    for c in &mut clients {
        assert_eq!(fence(c, &bucket, log, seg).await, 99);
        assert_eq!(complete(c, &bucket, log, seg, 99).await, 99);
        assert_eq!(
            read_all(c, &bucket, log, seg).await,
            (0..100).collect::<Vec<_>>()
        );
    }

    // One replica compacts into MinIO: merged blocks and a compacted footer only.
    let r = clients[0]
        .compact_segment(CompactSegmentRequest {
            bucket_name: bucket.clone(),
            root_path: ROOT.into(),
            log_id: log,
            segment_id: seg,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 0);
    assert_eq!(r.metadata.unwrap().last_entry_id, 99);
    let objects = build_object_storage(&minio(&bucket), BuildOptions::default())
        .await
        .unwrap()
        .storage;
    let names: BTreeSet<String> = objects
        .list("1/0")
        .await
        .unwrap()
        .iter()
        .map(|m| {
            let k = objects.relative_key(&m.location);
            k.rsplit('/').next().unwrap().to_string()
        })
        .collect();
    assert!(
        names.contains("footer.blk") && names.contains("m_0.blk"),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .all(|n| n == "footer.blk" || n.starts_with("m_")),
        "{names:?}"
    );
    // The same reader embedded mode uses reads it back from object storage.
    let mut reader = ObjectSegmentReader::new(SegmentObjects::new(objects.clone(), log, seg));
    let mut from_objects = Vec::new();
    loop {
        let b = reader
            .read(from_objects.len() as i64, 1 << 20)
            .await
            .unwrap();
        for (id, v) in &b.entries {
            assert_eq!(*v, payload(seg, *id));
        }
        from_objects.extend(b.entries.iter().map(|e| e.0));
        if b.end == storage::segment::object::BatchEnd::EndOfSegment {
            break;
        }
    }
    assert_eq!(from_objects, (0..100).collect::<Vec<_>>());
    assert!(reader.footer().unwrap().is_compacted());
    // The compacting replica reclaimed its copy and reads from object storage.
    assert!(!exists(
        &segment_dir(&cluster.nodes[0], &bucket, log, seg).join("data.log")
    ));
    assert_eq!(
        read_all(&mut clients[0], &bucket, log, seg).await.len(),
        100
    );
    // Another replica still serves its local copy until told, then reclaims it.
    assert!(exists(
        &segment_dir(&cluster.nodes[1], &bucket, log, seg).join("data.log")
    ));
    let r = clients[1]
        .notify_segment_compacted(NotifySegmentCompactedRequest {
            bucket_name: bucket.clone(),
            root_path: ROOT.into(),
            log_id: log,
            segment_id: seg,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 0);
    assert!(!exists(
        &segment_dir(&cluster.nodes[1], &bucket, log, seg).join("data.log")
    ));
    assert_eq!(
        read_all(&mut clients[1], &bucket, log, seg).await.len(),
        100
    );

    // Kill rounds: appends stream to one node while it is SIGKILLed; after a restart every
    // entry it acknowledged Synced is read back, in order, exactly once.
    let rounds = 20;
    for round in 0..rounds {
        let victim = round % 3;
        let seg = 10 + round as i64;
        let mut c = cluster.client(victim).await;
        let (bucket2, c_writer) = (bucket.clone(), c.clone());
        let (acked_tx, acked_rx) = tokio::sync::watch::channel(Vec::<i64>::new());
        let writer = tokio::spawn(async move {
            let mut c = c_writer;
            let mut next = 0;
            let mut acked = Vec::new();
            loop {
                let (synced, failed) = append(&mut c, &bucket2, log, seg, next..next + 20).await;
                acked.extend(synced.iter().copied());
                acked_tx.send_replace(acked.clone());
                if failed.is_some() {
                    return acked;
                }
                next += 20;
            }
        });
        // Kill once some entries were acknowledged (events, not sleeps).
        let mut rx = acked_rx.clone();
        let _ = tokio::time::timeout(HANG_GUARD, rx.wait_for(|a| a.len() >= 200 + round * 40))
            .await
            .expect("appends are acknowledged");
        cluster.kill9(victim);
        let acked = tokio::time::timeout(HANG_GUARD, writer)
            .await
            .expect("the writer sees the node die")
            .unwrap();
        assert!(!acked.is_empty());
        assert_eq!(acked, (0..acked.len() as i64).collect::<Vec<_>>());
        cluster.spawn(victim);
        c = cluster.client(victim).await;
        let last = fence(&mut c, &bucket, log, seg).await;
        assert!(
            last >= *acked.last().unwrap(),
            "round {round}: fence says {last}, acked {acked:?}"
        );
        let lac = *acked.last().unwrap();
        // Completed at the LAC, the replica serves up to it: what it stored beyond (entries
        // whose acknowledgements the kill cut off) was never acknowledged.
        assert_eq!(complete(&mut c, &bucket, log, seg, lac).await, lac);
        let got = read_all(&mut c, &bucket, log, seg).await;
        assert_eq!(got, acked, "round {round}");
    }

    // A clean stop exits 0.
    for i in 0..3 {
        cluster.stop(i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_find_each_other_by_gossip_and_select_per_strategy() {
    let cluster = Cluster::start();
    let c = cluster.client(0).await;
    let select = |strategy: StrategyType, affinity: AffinityMode, filter: NodeFilter| {
        let mut c = c.clone();
        async move {
            let r = c
                .select_nodes(SelectNodesRequest {
                    strategy: strategy as i32,
                    affinity_mode: affinity as i32,
                    filters: vec![filter],
                })
                .await
                .unwrap()
                .into_inner();
            (r.status.unwrap().code, r.nodes)
        }
    };
    let all = NodeFilter {
        limit: 3,
        ..NodeFilter::default()
    };
    // Every node comes to see all three (bounded wait on an event, not a timing claim).
    for i in 0..3 {
        let mut ci = cluster.client(i).await;
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        loop {
            let r = ci
                .select_nodes(SelectNodesRequest {
                    strategy: StrategyType::Random as i32,
                    affinity_mode: AffinityMode::Soft as i32,
                    filters: vec![all.clone()],
                })
                .await
                .unwrap()
                .into_inner();
            if r.total_count == 3 {
                let eps: BTreeSet<String> = r.nodes.iter().map(|n| n.endpoint.clone()).collect();
                let want: BTreeSet<String> = cluster
                    .nodes
                    .iter()
                    .map(|n| n.spec.service.to_string())
                    .collect();
                assert_eq!(eps, want);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {i} sees {} nodes",
                r.total_count
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let ids = |v: &[proto::logstore::NodeMeta]| -> BTreeSet<String> {
        v.iter().map(|n| n.node_id.clone()).collect()
    };
    for _ in 0..20 {
        let (code, v) = select(StrategyType::Random, AffinityMode::Soft, all.clone()).await;
        assert_eq!((code, v.len()), (0, 3));
        let (_, v) = select(
            StrategyType::SingleAzSingleRg,
            AffinityMode::Soft,
            all.clone(),
        )
        .await;
        assert_eq!(v.len(), 1, "one node per (az, rg) here");
        let (_, v) = select(
            StrategyType::MultiAzSingleRg,
            AffinityMode::Soft,
            all.clone(),
        )
        .await;
        let set = ids(&v);
        assert!(
            set == ["n0", "n1"].map(String::from).into() || set == ["n2"].map(String::from).into(),
            "{set:?}"
        );
        let (_, v) = select(
            StrategyType::SingleAzMultiRg,
            AffinityMode::Soft,
            all.clone(),
        )
        .await;
        assert_eq!(v.len(), 1);
        let (_, v) = select(
            StrategyType::MultiAzMultiRg,
            AffinityMode::Soft,
            all.clone(),
        )
        .await;
        assert_eq!(ids(&v).len(), 3);
        let (_, v) = select(StrategyType::RandomGroup, AffinityMode::Soft, all.clone()).await;
        assert_eq!(ids(&v).len(), 3);
        let rg1 = NodeFilter {
            resource_group: "rg1".into(),
            limit: 3,
            ..NodeFilter::default()
        };
        let (_, v) = select(StrategyType::Custom, AffinityMode::Hard, rg1).await;
        assert_eq!(ids(&v), ["n0", "n1"].map(String::from).into());
    }
    let nowhere = NodeFilter {
        az: "az[7-9]".into(),
        limit: 3,
        ..NodeFilter::default()
    };
    let (code, v) = select(StrategyType::Random, AffinityMode::Soft, nowhere.clone()).await;
    assert_eq!((code, v.len()), (0, 0));
    let (code, _) = select(StrategyType::Random, AffinityMode::Hard, nowhere).await;
    assert_eq!(code, 4001);

    // The admin endpoint: metrics, health, and decommission. A decommissioning node refuses
    // appends (2002) and, once its status has gossiped, is no longer selected anywhere.
    let admin = cluster.nodes[2].admin.unwrap();
    let (status, body) = http(admin, "GET", "/healthz");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok\n");
    let (_, metrics) = http(admin, "GET", "/metrics");
    assert!(
        metrics.contains("woodpecker_logstore_live_nodes 3"),
        "{metrics}"
    );
    let (status, body) = http(admin, "POST", "/admin/node/decommission");
    assert!(status.contains("200"), "{status} {body}");
    assert!(
        body.contains("\"state\":\"decommissioned\""),
        "no local data: {body}"
    );
    let mut c2 = cluster.client(2).await;
    let (_, failed) = append(&mut c2, &cluster.bucket, 9, 0, 0..1).await;
    assert_eq!(failed, Some(2002));
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        let (_, v) = select(StrategyType::Random, AffinityMode::Soft, all.clone()).await;
        if ids(&v) == ["n0", "n1"].map(String::from).into() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still selected: {:?}",
            ids(&v)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, body) = http(admin, "GET", "/admin/node/status");
    assert!(body.contains("\"nodeId\":\"n2\""), "{body}");
    drop(c);
}
