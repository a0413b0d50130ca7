//! The service-mode client against LogStore nodes over real gRPC: replicated appends
//! acknowledged at the ack quorum, reads failing over, rolls to a fresh quorum when a
//! replica fails, a silent replica (Go #359), recovery after a writer crash with a failed
//! fence reply (Go #320), and `storage.type: service` through `Engine::open`.
//!
//! The nodes are the test double of `support/fake_node.rs` (a tonic server over an
//! in-process LogStore on local files; "killing" a node aborts its server task, which drops
//! every connection). Metadata is the embedded store. Nothing here needs MinIO or etcd.
//! Waits are for events (acknowledgements, reads), never for fixed times, except the
//! client's own bounded timeouts, which the tests set short.

// Real processes, sockets and services answer in real time; waits poll them with deadlines.
#![allow(clippy::disallowed_methods)]

#[path = "support/fake_node.rs"]
mod fake_node;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use fake_node::{FakeNode, FakeProcess, Membership};
use proto::meta::SegmentState;
use wal::client::cluster::{SelectSettings, ServiceCluster};
use wal::client::grpc::{RpcSettings, Tenant};
use wal::client::{Client, ClientSettings, LogHandle, LogWriter, ReplicationSettings};
use wal::clock::{ClockRef, SystemClock};
use wal::config::{Config, QuorumBufferPool, QuorumSection};
use wal::message::{LogMessageId, WriteMessage};
use wal::meta::embedded::EmbeddedKv;
use wal::meta::kv::Kv;
use wal::meta::{KvMetadata, MetadataProvider};

struct Cluster {
    /// Nodes in this process (faults can be switched on).
    nodes: Vec<FakeNode>,
    /// Nodes in child processes (they can be killed).
    procs: Vec<FakeProcess>,
    members: Membership,
    meta: Arc<dyn MetadataProvider>,
    clock: ClockRef,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` nodes in this process.
    async fn start(n: usize) -> Cluster {
        Cluster::build(n, false).await
    }

    /// `n` nodes in child processes.
    async fn start_processes(n: usize) -> Cluster {
        Cluster::build(n, true).await
    }

    async fn build(n: usize, processes: bool) -> Cluster {
        // RUST_LOG=wal=debug shows what the client does.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let clock = SystemClock::shared();
        let members: Membership = Arc::new(dir.path().join("members"));
        let mut nodes = Vec::new();
        let mut procs = Vec::new();
        for i in 0..n {
            let d = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&d).unwrap();
            if processes {
                procs.push(FakeProcess::spawn(d, members.clone(), "fake_node_process"));
            } else {
                nodes.push(FakeNode::start(d, members.clone(), clock.clone()).await);
            }
        }
        let kv: Arc<dyn Kv> = Arc::new(
            EmbeddedKv::open(&dir.path().join("meta"), clock.clone())
                .await
                .unwrap(),
        );
        let meta = KvMetadata::with_prefix(kv, "by-dev/woodpecker", clock.clone());
        meta.init_if_necessary().await.unwrap();
        let cluster = Cluster {
            nodes,
            procs,
            members,
            meta: Arc::new(meta),
            clock,
            _dir: dir,
        };
        cluster.set_members(&(0..n).collect::<Vec<_>>());
        cluster
    }

    fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(FakeNode::endpoint)
            .chain(self.procs.iter().map(FakeProcess::endpoint))
            .collect()
    }

    /// Lists only the given nodes as live in SelectNodes answers.
    fn set_members(&self, live: &[usize]) {
        let all = self.endpoints();
        let live: Vec<String> = live.iter().map(|i| all[*i].clone()).collect();
        fake_node::set_members(&self.members, &live);
    }

    fn quorum(&self, replicas: u32) -> QuorumSection {
        let mut q = QuorumSection {
            quorum_buffer_pools: vec![QuorumBufferPool {
                name: "pool".into(),
                seeds: self.endpoints(),
            }],
            ..QuorumSection::default()
        };
        q.quorum_select_strategy.replicas = replicas;
        q
    }

    fn client(&self, replicas: u32) -> Client {
        let rpc = RpcSettings {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            first_reply_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_millis(800),
            down_for: Duration::from_secs(30),
            probe_timeout: Duration::from_millis(500),
        };
        let select = SelectSettings {
            timeout: Duration::from_secs(1),
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
        };
        let tenant = Tenant {
            bucket: "bucket".into(),
            root_path: "root".into(),
        };
        let cluster = ServiceCluster::new(
            &self.quorum(replicas),
            tenant,
            rpc,
            select,
            self.clock.clone(),
        )
        .unwrap();
        let settings = ClientSettings {
            replication: ReplicationSettings {
                retry_backoff: Duration::from_millis(20),
                max_retry_backoff: Duration::from_millis(100),
                ..ReplicationSettings::default()
            },
            roll_retry_interval: Duration::from_millis(100),
            read_poll_interval: Duration::from_millis(20),
            ..ClientSettings::default()
        };
        Client::with_cluster(
            self.meta.clone(),
            Arc::new(cluster),
            settings,
            self.clock.clone(),
        )
    }
}

fn msg(i: u64) -> WriteMessage {
    WriteMessage::new(format!("entry-{i}").into_bytes())
}

/// Writes `from..to` one after the other; returns the ids of the acknowledged ones (a write
/// may fail while a replica is being given up; it is retried).
async fn write_all(w: &LogWriter, from: u64, to: u64) -> Vec<(u64, LogMessageId)> {
    let mut acked = Vec::new();
    for i in from..to {
        let mut attempts = 0;
        loop {
            match w.write(msg(i)).await {
                Ok(id) => {
                    acked.push((i, id));
                    break;
                }
                Err(e) if e.is_retriable() && attempts < 50 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("write {i} failed: {e}"),
            }
        }
    }
    acked
}

/// Reads the log from the start until every id in `acked` was seen; checks order and that
/// each acknowledged payload comes back exactly once at its id.
async fn read_back(log: &LogHandle, acked: &[(u64, LogMessageId)]) {
    let mut reader = log.open_reader(LogMessageId::EARLIEST, None).await.unwrap();
    let want: BTreeSet<LogMessageId> = acked.iter().map(|(_, id)| *id).collect();
    let last = *want.iter().next_back().unwrap();
    let mut seen = BTreeSet::new();
    let mut prev: Option<LogMessageId> = None;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), reader.read_next())
            .await
            .expect("read in time")
            .unwrap();
        if let Some(p) = prev {
            assert!(m.id > p, "{} after {p}", m.id);
        }
        prev = Some(m.id);
        if let Some((i, _)) = acked.iter().find(|(_, id)| *id == m.id) {
            assert_eq!(
                m.payload.as_ref(),
                format!("entry-{i}").as_bytes(),
                "{}",
                m.id
            );
            assert!(seen.insert(m.id), "{} twice", m.id);
        }
        if m.id >= last {
            break;
        }
    }
    assert_eq!(seen, want);
    reader.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_reach_every_replica_and_read_back_in_order() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client(3);
    client.create_log("l").await.unwrap();
    let log = client.open_log("l").await.unwrap();
    let w = log.open_writer().await.unwrap();
    let acked = write_all(&w, 0, 200).await;
    // Pipelined writes resolve in order too.
    let futures: Vec<_> = (200..400).map(|i| w.write_async(msg(i))).collect();
    let mut all = acked;
    for (i, f) in (200..400).zip(futures) {
        all.push((i, f.await.unwrap()));
    }
    let ids: Vec<LogMessageId> = all.iter().map(|(_, id)| *id).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0].next_in_segment()));
    w.close().await.unwrap();
    let segs = log.segments().await.unwrap();
    let seg = &segs[&0];
    assert_eq!(seg.state, SegmentState::Completed as i32);
    assert_eq!(seg.last_entry_id, 399);
    let q = seg.quorum.as_ref().unwrap();
    assert_eq!((q.id, q.es, q.wq, q.aq, q.nodes.len()), (1, 3, 3, 2, 3));
    // Every entry reached the ack quorum, so at least Aq replicas serve all of them. The
    // third usually does too (a close gives the replicas behind the quorum a bounded time
    // to catch up, which the simulation checks deterministically in sim/tests/close.rs), but
    // in real time a loaded machine may complete it a few entries short; none serves more
    // than the segment.
    let mut full = 0;
    for node in &cluster.nodes {
        let last = node.store().segment_last_entry_id(1, 0).await.unwrap();
        assert!(last <= 399, "{}: {last}", node.endpoint());
        if last == 399 {
            full += 1;
        }
    }
    assert!(full >= 2, "only {full} replicas hold every entry");
    read_back(&log, &all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_replica_neither_wedges_writes_nor_stays_in_the_quorum() {
    // Go #359: a replica that answers Buffered and then nothing. Here every reply is
    // bounded, so writes go on at two of three and the segment rolls away from it.
    let cluster = Cluster::start(4).await;
    cluster.set_members(&[0, 1, 2]);
    let client = cluster.client(3);
    client.create_log("l").await.unwrap();
    let log = client.open_log("l").await.unwrap();
    let w = log.open_writer().await.unwrap();
    let mut acked = write_all(&w, 0, 20).await;
    cluster.nodes[2].faults.lock().unwrap().silent_appends = true;
    cluster.set_members(&[0, 1, 2, 3]);
    // Writes go on at two of three while the silent replica's replies time out, and the
    // segment rolls once it is given up.
    let mut n = 20;
    while log.segments().await.unwrap().len() < 2 {
        acked.extend(write_all(&w, n, n + 10).await);
        n += 10;
        assert!(n < 100_000, "the writer never gave the silent replica up");
    }
    acked.extend(write_all(&w, n, n + 20).await);
    cluster.nodes[2].faults.lock().unwrap().silent_appends = false;
    w.close().await.unwrap();
    read_back(&log, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_of_three_nodes_down_writes_go_on_and_the_roll_waits_for_a_quorum() {
    let mut cluster = Cluster::start_processes(3).await;
    let client = cluster.client(3);
    client.create_log("l").await.unwrap();
    let log = client.open_log("l").await.unwrap();
    let w = log.open_writer().await.unwrap();
    let mut acked = write_all(&w, 0, 50).await;
    cluster.procs[1].kill();
    cluster.set_members(&[0, 2]);
    // No fresh quorum of three exists: the segment keeps taking writes at two of three.
    acked.extend(write_all(&w, 50, 150).await);
    assert_eq!(log.segments().await.unwrap().len(), 1);
    cluster.procs[1].restart();
    cluster.set_members(&[0, 1, 2]);
    // The node is back (a new connection to the same address): the next roll finds a
    // quorum, and the segment it rolls to takes writes on all three.
    let mut n = 150;
    while log.segments().await.unwrap().len() < 2 {
        acked.extend(write_all(&w, n, n + 10).await);
        n += 10;
        assert!(n < 10_000, "the writer never rolled");
    }
    acked.extend(write_all(&w, n, n + 50).await);
    w.close().await.unwrap();
    let segs = log.segments().await.unwrap();
    assert!(
        segs.values()
            .all(|s| s.state == SegmentState::Completed as i32)
    );
    read_back(&log, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_keeps_what_was_acknowledged_when_a_fence_reply_fails() {
    // Go #320 end to end: entries acknowledged on two replicas, the third refusing
    // appends; the new writer's fence fails on one of the two data-bearing replicas.
    let cluster = Cluster::start(3).await;
    let client = cluster.client(3);
    client.create_log("l").await.unwrap();
    let log = client.open_log("l").await.unwrap();
    let old = log.open_writer().await.unwrap();
    let mut acked = write_all(&old, 0, 1).await;
    cluster.nodes[2].faults.lock().unwrap().refuse_appends = Some(2200);
    // No fresh quorum while the third replica refuses: the segment keeps taking writes at
    // two of three instead of rolling.
    cluster.set_members(&[0, 1]);
    acked.extend(write_all(&old, 1, 10).await);
    // The old writer is gone without closing (a crash); the refusing replica recovers.
    drop(old);
    cluster.nodes[2].faults.lock().unwrap().refuse_appends = None;
    cluster.set_members(&[0, 1, 2]);
    cluster.nodes[0].faults.lock().unwrap().fail_fence = Some(8000);
    let other = cluster.client(3);
    let log2 = other.open_log("l").await.unwrap();
    let w2 = log2.open_writer().await.unwrap();
    let seg0 = &log2.segments().await.unwrap()[&0];
    assert_eq!(seg0.state, SegmentState::Completed as i32);
    assert_eq!(
        seg0.last_entry_id, 9,
        "completed at the last acknowledged entry"
    );
    cluster.nodes[0].faults.lock().unwrap().fail_fence = None;
    let more = write_all(&w2, 10, 20).await;
    w2.close().await.unwrap();
    let mut all = acked;
    all.extend(more);
    read_back(&log2, &all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_needs_enough_fence_replies() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client(3);
    client.create_log("l").await.unwrap();
    let log = client.open_log("l").await.unwrap();
    let old = log.open_writer().await.unwrap();
    write_all(&old, 0, 5).await;
    drop(old);
    for n in &cluster.nodes[..2] {
        n.faults.lock().unwrap().fail_fence = Some(8000);
    }
    let e = log.open_writer().await.unwrap_err();
    assert_eq!(e.code(), 1107, "{e}");
    assert!(e.to_string().contains("answered the fence"), "{e}");
    // The segment stays Active for the next attempt.
    let seg0 = &log.segments().await.unwrap()[&0];
    assert_eq!(seg0.state, SegmentState::Active as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_runs_service_mode_from_its_configuration() {
    let cluster = Cluster::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let seeds = cluster.endpoints();
    let yaml = format!(
        "woodpecker:\n  meta:\n    type: embedded\n  storage:\n    type: service\n    rootPath: {}\n  client:\n    quorum:\n      quorumBufferPools:\n        - name: region-a\n          seeds: [{}]\n      quorumSelectStrategy:\n        replicas: 3\nminio:\n  bucketName: bucket-b\n  rootPath: r\n",
        dir.path().display(),
        seeds.join(", ")
    );
    let cfg = Config::from_yaml_str(&yaml).unwrap();
    let engine = wal::engine::Engine::open(cfg, SystemClock::shared())
        .await
        .unwrap();
    assert!(engine.logstore.is_none());
    engine.client.create_log("l").await.unwrap();
    let log = engine.client.open_log("l").await.unwrap();
    let w = log.open_writer().await.unwrap();
    let acked = write_all(&w, 0, 30).await;
    w.close().await.unwrap();
    read_back(&log, &acked).await;
    assert_eq!(log.segment_last_entry_id(0).await.unwrap(), 29);
    engine.shutdown().await;
}

/// The body of the child node processes of `Cluster::start_processes` (does nothing when
/// run as a test).
#[test]
#[ignore = "run by the tests as a child process"]
fn fake_node_process() {
    fake_node::run_child();
}

/// How many SIGKILLs each cluster size takes (`WOODPECKER_KILLS` overrides; at least 50
/// in the run `scripts/test` does).
fn kills() -> usize {
    std::env::var("WOODPECKER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// Writes issued and not yet answered: (payload, its acknowledgement).
type InFlight = Vec<(
    String,
    std::pin::Pin<Box<dyn std::future::Future<Output = wal::client::Result<LogMessageId>> + Send>>,
)>;

/// Issues `count` writes now (they are in flight when this returns), tagged with `tag`.
fn issue(w: &LogWriter, tag: usize, count: usize) -> InFlight {
    (0..count)
        .map(|i| {
            let payload = format!("t{tag}-e{i}");
            let ack = w.write_async(WriteMessage::new(payload.clone().into_bytes()));
            (payload, Box::pin(ack) as _)
        })
        .collect()
}

/// The acknowledged writes of `in_flight` (failures are expected while replicas die: those
/// entries are not counted), and whether the writer was lost.
async fn settle(in_flight: InFlight) -> (Vec<(String, LogMessageId)>, bool) {
    let mut acked = Vec::new();
    let mut lost = false;
    for (payload, ack) in in_flight {
        match ack.await {
            Ok(id) => acked.push((payload, id)),
            Err(e) => lost |= e.is_writer_lost(),
        }
    }
    (acked, lost)
}

/// SIGKILLs `per_round` random replica processes while a writer writes, restarts them, and
/// checks that every acknowledged entry is read back, in id order, exactly once.
async fn kill_loop(nodes: usize, replicas: u32, per_round: usize) {
    use rand::seq::IndexedRandom;
    let mut cluster = Cluster::start_processes(nodes).await;
    let client = cluster.client(replicas);
    client.create_log("kills").await.unwrap();
    let log = client.open_log("kills").await.unwrap();
    let mut writer = Some(log.open_writer().await.unwrap());
    let mut acked: Vec<(String, LogMessageId)> = Vec::new();
    let all: Vec<usize> = (0..nodes).collect();
    let started = std::time::Instant::now();
    let mut kills_done = 0;
    let mut round = 0;
    while kills_done < kills() {
        round += 1;
        let victims: Vec<usize> = all
            .choose_multiple(&mut rand::rng(), per_round)
            .copied()
            .collect();
        let w = writer.as_ref().unwrap();
        let before = issue(w, round * 3, 20);
        for v in &victims {
            cluster.procs[*v].kill();
        }
        kills_done += victims.len();
        let live: Vec<usize> = all
            .iter()
            .copied()
            .filter(|i| !victims.contains(i))
            .collect();
        cluster.set_members(&live);
        let during = issue(w, round * 3 + 1, 20);
        for batch in [before, during] {
            acked.extend(settle(batch).await.0);
        }
        for v in &victims {
            cluster.procs[*v].restart();
        }
        cluster.set_members(&all);
        // A writer that lost its segment (too many replicas gone to complete it) is
        // reopened once the nodes are back: that fences and completes its segments.
        if !writer.as_ref().unwrap().is_valid() {
            writer = None;
            let mut tries = 0;
            while writer.is_none() {
                match log.open_writer().await {
                    Ok(w) => writer = Some(w),
                    Err(e) if tries < 100 => {
                        tries += 1;
                        tracing::debug!(error = %e, "reopening the writer");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("cannot reopen the writer after round {round}: {e}"),
                }
            }
        }
        let (after, _) = settle(issue(writer.as_ref().unwrap(), round * 3 + 2, 20)).await;
        acked.extend(after);
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "{kills_done} kills took too long"
        );
    }
    writer.unwrap().close().await.unwrap();
    assert!(
        acked.len() > kills(),
        "too few writes were acknowledged: {}",
        acked.len()
    );
    // Every acknowledged entry, once, in id order, with its payload.
    acked.sort_by_key(|(_, id)| *id);
    for pair in acked.windows(2) {
        assert!(pair[0].1 < pair[1].1, "{} acknowledged twice", pair[0].1);
    }
    let mut reader = log.open_reader(LogMessageId::EARLIEST, None).await.unwrap();
    let mut want = acked.iter().peekable();
    let mut prev: Option<LogMessageId> = None;
    // Every payload read up to the last acknowledged entry, with how often: an acknowledged
    // payload must not come back a second time at another position either.
    let mut times: std::collections::HashMap<Vec<u8>, usize> = Default::default();
    while let Some((payload, id)) = want.peek() {
        let m = tokio::time::timeout(Duration::from_secs(60), reader.read_next())
            .await
            .unwrap_or_else(|_| panic!("no entry after {prev:?}; waiting for {id}"))
            .unwrap();
        if let Some(p) = prev {
            assert!(m.id > p, "{} after {p}", m.id);
        }
        prev = Some(m.id);
        *times.entry(m.payload.to_vec()).or_default() += 1;
        assert!(
            m.id <= *id,
            "acknowledged entry {id} was skipped (read {})",
            m.id
        );
        if m.id == *id {
            assert_eq!(m.payload.as_ref(), payload.as_bytes(), "{id}");
            want.next();
        }
    }
    reader.close().await.unwrap();
    for (payload, _) in &acked {
        assert_eq!(times.get(payload.as_bytes()), Some(&1), "{payload}");
    }
    eprintln!(
        "{nodes} nodes, {replicas} replicas: {kills_done} kills, {} acknowledged entries, {} segments, {:?}",
        acked.len(),
        log.segments().await.unwrap().len(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_lose_no_acknowledged_entry_through_kills_of_one() {
    kill_loop(3, 3, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_lose_no_acknowledged_entry_through_kills_of_two() {
    kill_loop(5, 3, 2).await;
}
