//! This engine's service-mode client (`storage.type: service`) against real `woodpecker
//! logstore` processes on loopback, with etcd for metadata and MinIO for compacted segments:
//!
//! * a writer writes while one node of three (two of five) is SIGKILLed and restarted, at
//!   least 50 kills per cluster size (`WOODPECKER_KILLS` overrides); every acknowledged
//!   entry is read back from the LogStores in id order exactly once, then again after the
//!   auditor compacted every finished segment into object storage and every node lost its
//!   local data (so the reads can only come from MinIO);
//! * the chaos loop (issue 19): SIGKILL and SIGSTOP/SIGCONT of LogStore nodes, and
//!   SIGSTOP/SIGCONT and SIGKILL-restarts of MinIO and etcd, with the same checks;
//! * `woodpecker log create/write/tail` run against the cluster with one node down.
//!
//! Needs etcd and MinIO from `scripts/services start` (`WOODPECKER_TEST_ETCD_ENDPOINT`,
//! `WOODPECKER_TEST_S3_*`); without them every case fails (it never skips). Each case uses
//! its own bucket and etcd root. Time limits here are hang guards, never latency assertions.

// Real processes, sockets and services answer in real time; waits poll them with deadlines.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use proto::meta::SegmentState;
use rand::Rng;
use rand::seq::IndexedRandom;
use wal::clock::SystemClock;
use wal::config::Config;
use wal::engine::Engine;
use wal::message::{LogMessageId, WriteMessage};

const BIN: &str = env!("CARGO_BIN_EXE_woodpecker");
/// Hang guard for one process start, one read or one command; never a latency assertion.
const HANG_GUARD: Duration = Duration::from_secs(60);
/// Hang guard for a whole kill loop.
const LOOP_GUARD: Duration = Duration::from_secs(900);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: this test needs etcd and MinIO; run `eval \"$(scripts/services \
             start)\"` first (or use scripts/test)"
        )
    })
}

// The compat tests' port picker, shared by path (the cli crate does not depend on them).
#[path = "../../compat-tests/src/ports.rs"]
#[allow(dead_code, unreachable_pub)]
mod ports;
use ports::free_port;

/// The `minio:` section of both configurations (nodes and client name the same bucket).
fn minio_yaml(bucket: &str) -> String {
    let s3 = env("WOODPECKER_TEST_S3_ENDPOINT");
    let (ssl, host_port) = match s3.trim_end_matches('/').split_once("://") {
        Some((scheme, rest)) => (scheme == "https", rest.to_string()),
        None => (false, s3.clone()),
    };
    let (host, port) = host_port.rsplit_once(':').expect("endpoint with a port");
    format!(
        "minio:
  address: \"{host}\"
  port: {port}
  useSSL: {ssl}
  accessKeyID: \"{key}\"
  secretAccessKey: \"{secret}\"
  region: \"{region}\"
  bucketName: {bucket}
  createBucket: true
  rootPath: files
",
        key = env("WOODPECKER_TEST_S3_ACCESS_KEY_ID"),
        secret = env("WOODPECKER_TEST_S3_SECRET_ACCESS_KEY"),
        region = env("WOODPECKER_TEST_S3_REGION"),
    )
}

/// One node: fixed ports and data directory, so a restart is the same node.
struct Node {
    id: String,
    service: SocketAddr,
    gossip: SocketAddr,
    data: PathBuf,
    child: Option<Child>,
}

struct Cluster {
    dir: tempfile::TempDir,
    node_config: PathBuf,
    /// The client's configuration: `storage.type: service` with the nodes as seeds.
    client_config: PathBuf,
    nodes: Vec<Node>,
}

impl Cluster {
    fn start(n: usize) -> Cluster {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let bucket = format!("wp-sc-{id}");
        let dir = tempfile::tempdir().unwrap();
        let node_config = dir.path().join("logstore.yaml");
        std::fs::write(
            &node_config,
            format!(
                "woodpecker:
  storage:
    type: service
    rootPath: {unused}
  logstore:
    # a neighbour filling the test machine's disk must not throttle the test's appends
    diskWatermarkPolicy:
      enabled: false
{minio}",
                unused = dir.path().join("unused").display(),
                minio = minio_yaml(&bucket),
            ),
        )
        .unwrap();
        let nodes: Vec<Node> = (0..n)
            .map(|i| Node {
                id: format!("n{i}"),
                service: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
                gossip: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
                data: dir.path().join(format!("node{i}")),
                child: None,
            })
            .collect();
        let seeds: Vec<String> = nodes.iter().map(|n| n.service.to_string()).collect();
        let client_config = dir.path().join("client.yaml");
        std::fs::write(
            &client_config,
            format!(
                "woodpecker:
  meta:
    type: etcd
    prefixMode: configured   # keys under the fresh etcd.rootPath, apart from other tests
  storage:
    type: service
    rootPath: {data}
  client:
    segmentRollingPolicy:
      maxSize: 16384          # many segments, so that kills meet rolls and completions
    quorum:
      quorumBufferPools:
        - name: pool
          seeds: [{seeds}]
      quorumSelectStrategy:
        replicas: 3
etcd:
  endpoints: [\"{etcd}\"]
  rootPath: wp-sc-{id}
{minio}",
                data = dir.path().join("client").display(),
                seeds = seeds.join(", "),
                etcd = env("WOODPECKER_TEST_ETCD_ENDPOINT"),
                minio = minio_yaml(&bucket),
            ),
        )
        .unwrap();
        let mut cluster = Cluster {
            dir,
            node_config,
            client_config,
            nodes,
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster
    }

    /// Starts node `i` (seeded with the others' gossip addresses) and waits until it serves.
    fn spawn(&mut self, i: usize) {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| n.gossip.to_string())
            .collect();
        let n = &self.nodes[i];
        let mut child = Command::new(BIN)
            .arg("logstore")
            .arg("--config")
            .arg(&self.node_config)
            .arg("--data-dir")
            .arg(&n.data)
            .args(["--service-addr", &n.service.to_string()])
            .args(["--gossip-addr", &n.gossip.to_string()])
            .args(["--admin-addr", "127.0.0.1:0"])
            .args(["--seeds", &seeds.join(",")])
            .args(["--node-id", &n.id])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn woodpecker logstore");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            // Drains stdout for the child's whole life.
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(HANG_GUARD)
            .unwrap_or_else(|e| panic!("node {i} did not start within {HANG_GUARD:?}: {e}"));
        assert_eq!(line, format!("logstore listening on {}", n.service));
        self.nodes[i].child = Some(child);
    }

    /// SIGKILL: no chance to flush or close anything.
    fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    async fn engine(&self) -> Engine {
        let cfg =
            Config::from_yaml_str(&std::fs::read_to_string(&self.client_config).unwrap()).unwrap();
        let engine = Engine::open(cfg, SystemClock::shared()).await.unwrap();
        assert!(engine.logstore.is_none(), "service mode keeps no LogStore");
        engine
    }

    /// Runs `woodpecker --config <client config> args` with `input` on stdin.
    fn cli(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&self.client_config)
            .args(args)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn woodpecker");
        child.stdin.take().unwrap().write_all(input).unwrap();
        let pid = child.id();
        let (tx, rx) = mpsc::channel::<()>();
        let guard = thread::spawn(move || {
            if rx.recv_timeout(HANG_GUARD).is_err() {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        });
        let out = child.wait_with_output().unwrap();
        let _ = tx.send(());
        guard.join().unwrap();
        assert!(
            out.status.success(),
            "woodpecker {args:?}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
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

static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Issues `count` writes now (in flight when this returns), tagged with `tag`.
fn issue(w: &wal::client::LogWriter, tag: usize, count: usize) -> InFlight {
    (0..count)
        .map(|i| {
            // Some bulk, so that segments roll every few rounds.
            // Unique across retries: an entry that failed may still have reached storage.
            let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let payload = format!("t{tag}-e{i}-n{n}-{}", "p".repeat(200));
            let ack = w.write_async(WriteMessage::new(payload.clone().into_bytes()));
            (payload, Box::pin(ack) as _)
        })
        .collect()
}

/// The acknowledged writes of `in_flight` (failures are expected while nodes die: those
/// entries are not counted).
async fn settle(in_flight: InFlight) -> Vec<(String, LogMessageId)> {
    let mut acked = Vec::new();
    for (payload, ack) in in_flight {
        if let Ok(id) = ack.await {
            acked.push((payload, id));
        }
    }
    acked
}

/// Writes batches of 20 until one gets an acknowledgement (bounded by the hang guard), and
/// returns the acknowledged ones.
async fn acknowledged(w: &wal::client::LogWriter, tag: usize) -> Vec<(String, LogMessageId)> {
    let started = Instant::now();
    loop {
        let acked = settle(issue(w, tag, 20)).await;
        if !acked.is_empty() {
            return acked;
        }
        assert!(
            started.elapsed() < HANG_GUARD,
            "hang guard: no write acknowledged in {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads the log from the start and checks that every acknowledged entry comes back in id
/// order, exactly once, with its payload (and no acknowledged payload a second time at
/// another position).
async fn read_back(log: &wal::client::LogHandle, acked: &[(String, LogMessageId)], from: &str) {
    let mut reader = log.open_reader(LogMessageId::EARLIEST, None).await.unwrap();
    let mut want = acked.iter().peekable();
    let mut prev: Option<LogMessageId> = None;
    let mut times: HashMap<Vec<u8>, usize> = HashMap::new();
    while let Some((payload, id)) = want.peek() {
        let m = tokio::time::timeout(HANG_GUARD, reader.read_next())
            .await
            .unwrap_or_else(|_| panic!("{from}: no entry after {prev:?}; waiting for {id}"))
            .unwrap_or_else(|e| panic!("{from}: reading after {prev:?}: {e}"));
        if let Some(p) = prev {
            assert!(m.id > p, "{from}: {} after {p}", m.id);
        }
        prev = Some(m.id);
        *times.entry(m.payload.to_vec()).or_default() += 1;
        assert!(
            m.id <= *id,
            "{from}: acknowledged entry {id} was skipped (read {})",
            m.id
        );
        if m.id == *id {
            assert_eq!(m.payload.as_ref(), payload.as_bytes(), "{from}: {id}");
            want.next();
        }
    }
    reader.close().await.unwrap();
    for (payload, _) in acked {
        assert_eq!(times.get(payload.as_bytes()), Some(&1), "{from}: {payload}");
    }
}

/// SIGKILLs `per_round` random nodes of `nodes` while a writer writes (3 replicas, ack
/// quorum 2), restarts them, then reads everything back from the LogStores and, after
/// compaction and the loss of every node's local data, from object storage.
async fn kill_loop(nodes: usize, per_round: usize) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut cluster = Cluster::start(nodes);
    let engine = cluster.engine().await;
    let client = engine.client.clone();
    client.create_log("kills").await.unwrap();
    let log = client.open_log("kills").await.unwrap();
    let mut writer = Some(log.open_writer().await.unwrap());
    let mut acked: Vec<(String, LogMessageId)> = Vec::new();
    let all: Vec<usize> = (0..nodes).collect();
    let started = Instant::now();
    // The first segment needs three nodes that know each other (gossip from seeds).
    acked.extend(acknowledged(writer.as_ref().unwrap(), 0).await);
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
            cluster.kill9(*v);
        }
        kills_done += victims.len();
        let during = issue(w, round * 3 + 1, 20);
        acked.extend(settle(before).await);
        acked.extend(settle(during).await);
        for v in &victims {
            cluster.spawn(*v);
        }
        // A writer that lost its segment (too many replicas gone to complete it) is
        // reopened once the nodes are back: that fences and completes its segments.
        if !writer.as_ref().unwrap().is_valid() {
            writer = None;
            let mut tries = 0;
            while writer.is_none() {
                match log.open_writer().await {
                    Ok(w) => writer = Some(w),
                    Err(_) if tries < 100 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("cannot reopen the writer after round {round}: {e}"),
                }
            }
        }
        // The restarted nodes rejoin by gossip; with three nodes a roll waits for them.
        acked.extend(acknowledged(writer.as_ref().unwrap(), round * 3 + 2).await);
        assert!(
            started.elapsed() < LOOP_GUARD,
            "hang guard: {kills_done} kills in {:?}",
            started.elapsed()
        );
    }
    writer.unwrap().close().await.unwrap();
    assert!(
        acked.len() > kills(),
        "too few writes were acknowledged: {}",
        acked.len()
    );
    acked.sort_by_key(|(_, id)| *id);
    for pair in acked.windows(2) {
        assert!(pair[0].1 < pair[1].1, "{} acknowledged twice", pair[0].1);
    }
    let looped = started.elapsed();
    read_back(&log, &acked, "from the LogStores").await;

    // Compaction: every finished segment into object storage, by one of its replicas.
    let auditor = log.auditor();
    let mut passes = 0;
    loop {
        auditor.run_once().await.unwrap();
        let segments = log.segments().await.unwrap();
        let left: Vec<i64> = segments
            .iter()
            .filter(|(_, m)| m.state != SegmentState::Sealed as i32)
            .map(|(id, _)| *id)
            .collect();
        if left.is_empty() {
            break;
        }
        passes += 1;
        assert!(
            passes < 20,
            "segments {left:?} are not compacted after {passes} passes"
        );
    }
    // Every node loses its local data: what is read now comes from MinIO.
    for i in 0..nodes {
        cluster.kill9(i);
        std::fs::remove_dir_all(&cluster.nodes[i].data).unwrap();
    }
    for i in 0..nodes {
        cluster.spawn(i);
    }
    read_back(&log, &acked, "from object storage").await;
    eprintln!(
        "{nodes} nodes, 3 replicas: {kills_done} kills, {} acknowledged entries, {} segments, \
         kill loop {looped:?}, in all {:?}",
        acked.len(),
        log.segments().await.unwrap().len(),
        started.elapsed()
    );
    engine.shutdown().await;
}

/// Sends `sig` (`STOP`, `CONT`) to `pid`.
fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid}: {status}");
}

/// The pid of a test service (`minio`, `etcd`) that `scripts/services` started, from its
/// state directory (`WOODPECKER_SERVICES_DIR`).
fn service_pid(name: &str) -> Option<u32> {
    let dir = std::env::var_os("WOODPECKER_SERVICES_DIR")?;
    std::fs::read_to_string(PathBuf::from(dir).join(name).join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Crashes test service `name` (SIGKILL) and starts it again on its ports with its data
/// (`scripts/services restart`, which started it); returns once it is healthy again.
fn restart_service(name: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/services");
    let out = Command::new(script)
        .args(["restart", name])
        .output()
        .expect("run scripts/services restart");
    assert!(
        out.status.success(),
        "scripts/services restart {name}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The etcd and MinIO every test here talks to. The chaos loop kills and restarts them, so it
/// holds this exclusively while the other tests of this file (which run in parallel with it
/// otherwise) share it: a restart meant for the chaos loop must not fail another test's
/// hang guard.
static SHARED_SERVICES: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Rounds of the chaos loop (`WOODPECKER_CHAOS_ROUNDS` overrides).
fn chaos_rounds() -> usize {
    std::env::var("WOODPECKER_CHAOS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

/// The chaos loop of issue 19 on real processes: while a writer writes, each round injects
/// one fault drawn at random: SIGKILL and restart of a LogStore node, SIGSTOP/SIGCONT of a
/// node, SIGSTOP/SIGCONT or SIGKILL and restart (same ports, same data) of MinIO or of etcd
/// (those only when `scripts/services` started them and `WOODPECKER_SERVICES_DIR` names its
/// state). Then the same checks as the kill loop: every
/// acknowledged entry read back in order exactly once from the LogStores, and again from
/// object storage after compaction and the loss of every node's local data.
async fn chaos_loop(nodes: usize) {
    let mut cluster = Cluster::start(nodes);
    let engine = cluster.engine().await;
    let client = engine.client.clone();
    client.create_log("chaos").await.unwrap();
    let log = client.open_log("chaos").await.unwrap();
    let mut writer = Some(log.open_writer().await.unwrap());
    let mut acked: Vec<(String, LogMessageId)> = Vec::new();
    let started = Instant::now();
    acked.extend(acknowledged(writer.as_ref().unwrap(), 0).await);
    let services: Vec<&'static str> = ["minio", "etcd"]
        .into_iter()
        .filter(|n| service_pid(n).is_some())
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for round in 1..=chaos_rounds() {
        let (kind, victim, pause) = {
            let mut rng = rand::rng();
            (
                rng.random_range(0..2 + 2 * services.len()),
                rng.random_range(0..nodes),
                Duration::from_millis(rng.random_range(200..3_000)),
            )
        };
        let w = writer.as_ref().unwrap();
        let before = issue(w, round * 3, 20);
        let during;
        match kind {
            0 => {
                cluster.kill9(victim);
                during = issue(w, round * 3 + 1, 20);
                acked.extend(settle(before).await);
                acked.extend(settle(during).await);
                cluster.spawn(victim);
                *counts.entry("SIGKILL+restart logstore".into()).or_default() += 1;
            }
            1 => {
                let pid = cluster.nodes[victim].child.as_ref().unwrap().id();
                signal(pid, "STOP");
                during = issue(w, round * 3 + 1, 20);
                tokio::time::sleep(pause).await;
                signal(pid, "CONT");
                acked.extend(settle(before).await);
                acked.extend(settle(during).await);
                *counts.entry("SIGSTOP/SIGCONT logstore".into()).or_default() += 1;
            }
            k if k < 2 + services.len() => {
                let name = services[k - 2];
                let pid = service_pid(name).expect("the service is running");
                signal(pid, "STOP");
                during = issue(w, round * 3 + 1, 20);
                tokio::time::sleep(pause).await;
                signal(pid, "CONT");
                acked.extend(settle(before).await);
                acked.extend(settle(during).await);
                *counts.entry(format!("SIGSTOP/SIGCONT {name}")).or_default() += 1;
            }
            k => {
                let name = services[k - 2 - services.len()];
                let restart = tokio::task::spawn_blocking(move || restart_service(name));
                during = issue(w, round * 3 + 1, 20);
                restart.await.expect("restart of a service");
                acked.extend(settle(before).await);
                acked.extend(settle(during).await);
                *counts.entry(format!("SIGKILL+restart {name}")).or_default() += 1;
            }
        }
        if !writer.as_ref().unwrap().is_valid() {
            writer = None;
            let mut tries = 0;
            while writer.is_none() {
                match log.open_writer().await {
                    Ok(w) => writer = Some(w),
                    Err(_) if tries < 100 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("cannot reopen the writer after round {round}: {e}"),
                }
            }
            *counts.entry("writer reopened".into()).or_default() += 1;
        }
        acked.extend(acknowledged(writer.as_ref().unwrap(), round * 3 + 2).await);
        assert!(
            started.elapsed() < LOOP_GUARD,
            "hang guard: round {round} at {:?}",
            started.elapsed()
        );
    }
    writer.unwrap().close().await.unwrap();
    acked.sort_by_key(|(_, id)| *id);
    for pair in acked.windows(2) {
        assert!(pair[0].1 < pair[1].1, "{} acknowledged twice", pair[0].1);
    }
    read_back(&log, &acked, "from the LogStores").await;
    let auditor = log.auditor();
    let mut passes = 0;
    loop {
        // MinIO may still be waking up from its last pause: a failed pass is retried.
        let _ = auditor.run_once().await;
        let segments = log.segments().await.unwrap();
        let left: Vec<i64> = segments
            .iter()
            .filter(|(_, m)| m.state != SegmentState::Sealed as i32)
            .map(|(id, _)| *id)
            .collect();
        if left.is_empty() {
            break;
        }
        passes += 1;
        assert!(
            passes < 20,
            "segments {left:?} are not compacted after {passes} passes"
        );
    }
    for i in 0..nodes {
        cluster.kill9(i);
        std::fs::remove_dir_all(&cluster.nodes[i].data).unwrap();
    }
    for i in 0..nodes {
        cluster.spawn(i);
    }
    read_back(&log, &acked, "from object storage").await;
    let mut kinds: Vec<_> = counts.into_iter().collect();
    kinds.sort();
    eprintln!(
        "chaos: {nodes} nodes, {} rounds, faults {kinds:?}, {} acknowledged entries, lost 0, \
         {} segments, in {:?}",
        chaos_rounds(),
        acked.len(),
        log.segments().await.unwrap().len(),
        started.elapsed()
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_logstores_lose_nothing_through_kills_pauses_and_restarts_of_every_process() {
    let _alone = SHARED_SERVICES.write().await;
    chaos_loop(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_logstores_lose_no_acknowledged_entry_through_kills_of_one() {
    let _shared = SHARED_SERVICES.read().await;
    kill_loop(3, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_logstores_lose_no_acknowledged_entry_through_kills_of_two() {
    let _shared = SHARED_SERVICES.read().await;
    kill_loop(5, 2).await;
}

/// `woodpecker log ...` with `storage.type: service`: create, write and tail through the
/// cluster, and writing on with one node of four down (a new writer selects three live
/// nodes).
#[test]
fn log_commands_run_against_a_cluster() {
    let _shared = SHARED_SERVICES.blocking_read();
    let mut cluster = Cluster::start(4);
    cluster.cli(&["log", "create", "cli"], b"");
    let first: Vec<u8> = (0..50)
        .flat_map(|i| format!("line-{i}\n").into_bytes())
        .collect();
    cluster.cli(&["log", "write", "cli"], &first);
    let out = cluster.cli(&["log", "tail", "cli"], b"");
    assert_eq!(out.stdout, first);

    cluster.kill9(1);
    let more: Vec<u8> = (50..80)
        .flat_map(|i| format!("line-{i}\n").into_bytes())
        .collect();
    cluster.cli(&["log", "write", "cli"], &more);
    let out = cluster.cli(&["log", "tail", "cli"], b"");
    assert_eq!(out.stdout, [first, more].concat());
    let out = cluster.cli(&["log", "list"], b"");
    assert!(String::from_utf8_lossy(&out.stdout).contains("cli"));
}
