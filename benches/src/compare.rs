//! Side-by-side comparison: this engine (natively and through the Kafka shim) against Apache
//! Kafka, Apache Pulsar, Go Woodpecker and Tansu, one machine, one run.
//!
//! Every system runs as a local process on 127.0.0.1 from its published packages (the
//! `scripts/peers/*` launchers; `woodpecker serve` for the shim), or in process (this engine's
//! native path). The run goes in `runs` rounds: in each, every system is started, runs each
//! workload it supports once (on a topic or directory of its own, deleted afterwards, after a
//! `sync` of the page cache) and is stopped, so that the machine's slow spells and one system's
//! leftover writeback fall on all systems alike; the report keeps the
//! median of each figure over the rounds. A system that fails to start or to run a workload is
//! reported as failed with the reason (and not run again); nothing is left out silently.
//!
//! Workloads:
//!
//! * **1 MiB entries**: the Go project's published scenario: one client, one log, async writes
//!   of 1 MiB entries (16 in flight). Kafka-protocol systems: `ProducerPerformance` with 1 MiB
//!   records, acks=all; Pulsar: `pulsar-perf produce` with 1 MiB messages.
//! * **1 KiB latency**: one 1 KiB entry at a time (the next is written when the previous is
//!   acknowledged): the latency of small entries. Kafka-protocol systems and Pulsar: a low fixed
//!   rate, so that records do not queue behind each other.
//! * **1 KiB records, 1 / 16 partitions**: Kafka-style, acks=all, unthrottled, with Kafka's own
//!   `ProducerPerformance` (the same tool, unchanged, for the shim, Kafka and Tansu); Pulsar with
//!   `pulsar-perf` on a topic with 1 / 16 partitions; this engine natively and Go Woodpecker
//!   write 1 KiB entries to one log (16 logs for 16 partitions is not measured natively).
//! * **1 KiB records in transactions, 1 partition**: the same with `ProducerPerformance`'s
//!   transactional producer (`--transactional-id`, a commit every [`TXN_DURATION_MS`]), for the
//!   Kafka-protocol systems that serve transactions (this engine's shim and Kafka).
//!
//! Throughput is MiB/s of payload; latency is per write or record, issue to acknowledgement,
//! in milliseconds. Backend ceilings (local disk with fdatasync, PUTs to the S3-compatible
//! server) are measured in the same run by the `ceilings` probe.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::args::Flags;
use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::Semaphore;
use wal::clock::SystemClock;
use wal::config::Config as WalConfig;
use wal::engine::Engine;
use wal::message::WriteMessage;

use crate::ceilings::{self, HostInfo, KIB, LoadAvg, MIB, random_bytes};
use crate::kafka_shim::{default_wal_config, parse_producer, run_captured as run_cmd};
use crate::serve::tail;
pub use crate::service_cluster::Side;
use crate::service_cluster::{self, Cluster};

const MIB_F: f64 = MIB as f64;

/// The repository root (for `scripts/`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn progress(args: std::fmt::Arguments<'_>) {
    eprintln!("[compare] {args}");
}

// --- model -----------------------------------------------------------------------------------

/// A workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Workload {
    /// Async writes of 1 MiB entries, 16 in flight.
    Big,
    /// One 1 KiB entry at a time.
    Small,
    /// 1 KiB records, acks=all, one partition (one log), unthrottled.
    Records1,
    /// The same on 16 partitions.
    Records16,
    /// 1 KiB entries with a window of writes in flight (the service-mode systems): throughput
    /// at a latency a writer waits for.
    Window,
    /// 1 KiB records, acks=all, one partition, in transactions committed every
    /// [`TXN_DURATION_MS`] (an exactly-once producer).
    Txn1,
}

/// How long each transaction of the transactional workload stays open before it is committed
/// (ProducerPerformance's `--transaction-duration-ms`; Kafka Streams commits every 100 ms under
/// exactly-once).
pub const TXN_DURATION_MS: u64 = 100;

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 6] = [
        Workload::Big,
        Workload::Small,
        Workload::Window,
        Workload::Records1,
        Workload::Records16,
        Workload::Txn1,
    ];

    /// A short label.
    pub fn label(self) -> &'static str {
        match self {
            Workload::Big => "1 MiB entries, 16 in flight",
            Workload::Small => "1 KiB, one at a time (latency)",
            Workload::Records1 => "1 KiB records, 1 partition",
            Workload::Records16 => "1 KiB records, 16 partitions",
            Workload::Window => "1 KiB entries, 32 in flight",
            Workload::Txn1 => "1 KiB records in transactions, 1 partition",
        }
    }

    /// The name used by `--workloads`.
    pub fn key(self) -> &'static str {
        match self {
            Workload::Big => "big",
            Workload::Small => "small",
            Workload::Records1 => "records1",
            Workload::Records16 => "records16",
            Workload::Window => "window",
            Workload::Txn1 => "txn1",
        }
    }
}

/// Sizes of the workloads.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// The smoke configuration.
    pub quick: bool,
    /// Repetitions of each measurement (the report keeps medians).
    pub runs: usize,
    /// 1 MiB entries per run.
    pub big_entries: usize,
    /// Of which in flight.
    pub big_in_flight: usize,
    /// 1 KiB entries per latency run.
    pub small_entries: usize,
    /// Offered rate of the latency runs of the Kafka-protocol systems and Pulsar (records/s).
    pub small_rate: usize,
    /// The same on object storage.
    pub small_rate_object: usize,
    /// 1 KiB records per Kafka-style run: 1,000,000 (about 1 GB), so that the figures are
    /// the systems' steady state rather than the first seconds of a fresh JVM client (its JIT
    /// warm-up dominated shorter runs).
    pub records: usize,
    /// The same for this engine and Go Woodpecker natively on object storage, where 1000
    /// records in flight wait for the 200 ms flush ticker (about 5,000 records/s).
    pub records_native_object: usize,
    /// The same through the Kafka shim on object storage, where a default Java producer (5
    /// requests of 16 KiB in flight, each waiting for the 200 ms flush ticker) moves about
    /// 0.4 MB/s.
    pub records_object: usize,
    /// 1 KiB records each started server on local disk takes, unmeasured, before its first
    /// measured run of a round: a fresh JVM broker compiles its per-record paths during the
    /// first few hundred thousand records, which would otherwise land in one system's
    /// figures and not another's.
    pub warmup_records: usize,
    /// 1 MiB entries per run of the service-mode systems (three replicas of each land on the
    /// one local disk).
    pub service_big_entries: usize,
    /// 1 KiB entries per windowed run of the service-mode systems.
    pub service_window_entries: usize,
    /// Of which in flight (the label of [`Workload::Window`] names it).
    pub service_window: usize,
    /// Systems to run (names as in [`SystemId::name`] or [`SystemId::key`]); empty = all.
    pub only: Vec<String>,
    /// Workloads to run (names as in [`Workload::key`]); empty = all.
    pub workloads: Vec<String>,
    /// Where the report goes.
    pub out: PathBuf,
}

impl Settings {
    /// Records per Kafka-style run for the in-process clients (this engine, Go Woodpecker).
    fn native_records(&self, backend: Backend) -> usize {
        match backend {
            Backend::Minio => self.records_native_object,
            _ => self.records,
        }
    }

    /// Whether `--workloads` selects `w`.
    pub fn wants(&self, w: Workload) -> bool {
        self.workloads.is_empty() || self.workloads.iter().any(|k| k == w.key())
    }

    /// The full comparison.
    pub fn full(out: PathBuf) -> Settings {
        Settings {
            quick: false,
            runs: 3,
            big_entries: 768,
            big_in_flight: 16,
            small_entries: 100,
            small_rate: 100,
            small_rate_object: 4,
            records: 1_000_000,
            records_native_object: 200_000,
            records_object: 10_000,
            warmup_records: 200_000,
            service_big_entries: 256,
            service_window_entries: 50_000,
            service_window: 32,
            only: Vec::new(),
            workloads: Vec::new(),
            out,
        }
    }

    /// The smoke run: tiny workloads, one run each.
    pub fn quick(out: PathBuf) -> Settings {
        Settings {
            quick: true,
            runs: 1,
            big_entries: 4,
            big_in_flight: 4,
            small_entries: 10,
            small_rate: 50,
            small_rate_object: 4,
            records: 2_000,
            records_native_object: 2_000,
            records_object: 500,
            warmup_records: 500,
            service_big_entries: 4,
            service_window_entries: 200,
            service_window: 32,
            only: vec!["woodpecker-rs".into(), "kafka".into(), "service-rs".into()],
            workloads: Vec::new(),
            out,
        }
    }
}

/// A storage backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Backend {
    /// Local disk.
    Local,
    /// The S3-compatible server (MinIO).
    Minio,
    /// In memory (Tansu's only local engine in its prebuilt binary).
    Memory,
    /// The peer's own disk layout (Kafka log segments, BookKeeper journal).
    Disk,
    /// Three LogStore nodes on loopback (local disk, compaction into MinIO).
    Service,
}

impl Backend {
    fn label(self) -> &'static str {
        match self {
            Backend::Local => "local disk",
            Backend::Minio => "MinIO",
            Backend::Memory => "memory",
            Backend::Disk => "local disk",
            Backend::Service => "3 LogStores, Wq 3 / Aq 2",
        }
    }
}

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SystemId {
    /// This engine in process.
    Native(Backend),
    /// This engine through `woodpecker serve` and Kafka's tools.
    Shim(Backend),
    /// Go Woodpecker through `wp-bench`.
    Go(Backend),
    /// Apache Kafka, KRaft, with its defaults (acknowledges before fsync).
    Kafka,
    /// Apache Kafka flushing every batch to disk before acknowledging
    /// (`log.flush.interval.messages=1`): the durability this engine gives.
    KafkaFsync,
    /// Apache Pulsar standalone.
    Pulsar,
    /// Tansu.
    Tansu,
    /// Service mode: a client (this engine's or Go's) writing through three LogStore nodes
    /// (this engine's or Go's).
    Service {
        /// Whose client.
        client: Side,
        /// Whose nodes.
        nodes: Side,
    },
}

impl SystemId {
    /// Every system, in report order.
    pub const ALL: [SystemId; 13] = [
        SystemId::Native(Backend::Local),
        SystemId::Native(Backend::Minio),
        SystemId::Shim(Backend::Local),
        SystemId::Go(Backend::Local),
        SystemId::Go(Backend::Minio),
        SystemId::Kafka,
        SystemId::KafkaFsync,
        SystemId::Pulsar,
        SystemId::Tansu,
        SystemId::Shim(Backend::Minio),
        SystemId::Service {
            client: Side::Rs,
            nodes: Side::Rs,
        },
        SystemId::Service {
            client: Side::Go,
            nodes: Side::Go,
        },
        SystemId::Service {
            client: Side::Rs,
            nodes: Side::Go,
        },
    ];

    /// The name used by `--only`.
    pub fn name(self) -> &'static str {
        match self {
            SystemId::Native(_) | SystemId::Shim(_) => "woodpecker-rs",
            SystemId::Go(_) => "go-woodpecker",
            SystemId::Kafka | SystemId::KafkaFsync => "kafka",
            SystemId::Pulsar => "pulsar",
            SystemId::Tansu => "tansu",
            SystemId::Service { .. } => "service",
        }
    }

    /// The name of this one system and backend, also accepted by `--only`.
    pub fn key(self) -> &'static str {
        match self {
            SystemId::Native(Backend::Minio) => "native-minio",
            SystemId::Native(_) => "native-local",
            SystemId::Shim(Backend::Minio) => "shim-minio",
            SystemId::Shim(_) => "shim-local",
            SystemId::Go(Backend::Minio) => "go-minio",
            SystemId::Go(_) => "go-local",
            SystemId::Kafka => "kafka-default",
            SystemId::KafkaFsync => "kafka-fsync",
            SystemId::Pulsar => "pulsar",
            SystemId::Tansu => "tansu",
            SystemId::Service {
                client: Side::Rs,
                nodes: Side::Rs,
            } => "service-rs",
            SystemId::Service {
                client: Side::Go, ..
            } => "service-go",
            SystemId::Service {
                client: Side::Rs,
                nodes: Side::Go,
            } => "service-rs-on-go",
        }
    }

    /// The label in the report.
    pub fn label(self) -> String {
        match self {
            SystemId::Native(_) => "woodpecker-rs (native)".into(),
            SystemId::Shim(_) => "woodpecker-rs (Kafka shim)".into(),
            SystemId::Go(_) => "Go Woodpecker".into(),
            SystemId::Kafka => "Apache Kafka".into(),
            SystemId::KafkaFsync => "Apache Kafka (fsync per batch)".into(),
            SystemId::Pulsar => "Apache Pulsar".into(),
            SystemId::Tansu => "Tansu".into(),
            SystemId::Service { client, nodes } => {
                let who = |s: Side| match s {
                    Side::Rs => "woodpecker-rs",
                    Side::Go => "Go Woodpecker",
                };
                format!("{} client on {} LogStores", who(client), who(nodes))
            }
        }
    }

    /// The storage backend.
    pub fn backend(self) -> Backend {
        match self {
            SystemId::Native(b) | SystemId::Shim(b) | SystemId::Go(b) => b,
            SystemId::Kafka | SystemId::KafkaFsync | SystemId::Pulsar => Backend::Disk,
            SystemId::Tansu => Backend::Memory,
            SystemId::Service { .. } => Backend::Service,
        }
    }

    fn needs_s3(self) -> bool {
        matches!(self.backend(), Backend::Minio | Backend::Service)
    }

    /// Whether it runs `w`.
    pub fn supports(self, w: Workload) -> bool {
        match self {
            // One log per client: 16 partitions are Kafka and Pulsar territory.
            SystemId::Native(_) | SystemId::Go(_) => {
                !matches!(w, Workload::Records16 | Workload::Txn1 | Workload::Window)
            }
            // Service mode: one writer on one log; Kafka-style records are not its figure.
            SystemId::Service { .. } => {
                matches!(w, Workload::Big | Workload::Small | Workload::Window)
            }
            // Transactions are a Kafka-protocol feature this engine's shim and Kafka serve;
            // Pulsar's differ, and Tansu's prebuilt binary does not serve them.
            SystemId::Pulsar | SystemId::Tansu => !matches!(w, Workload::Txn1 | Workload::Window),
            _ => w != Workload::Window,
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Figure {
    /// Payload MiB per second.
    pub mib_s: f64,
    /// Writes (records, entries, messages) per second.
    pub ops_s: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Figure {
    /// The median of each figure over runs.
    pub fn median_of(runs: &[Figure]) -> Figure {
        let pick = |f: fn(&Figure) -> f64| median(runs.iter().map(f).collect());
        Figure {
            mib_s: pick(|f| f.mib_s),
            ops_s: pick(|f| f.ops_s),
            p50_ms: pick(|f| f.p50_ms),
            p99_ms: pick(|f| f.p99_ms),
            p999_ms: pick(|f| f.p999_ms),
        }
    }
}

/// What happened to one (system, workload).
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// The system.
    pub system: SystemId,
    /// The workload.
    pub workload: Workload,
    /// Every run's figures.
    pub runs: Vec<Figure>,
    /// Their medians, when at least one run succeeded.
    pub median: Option<Figure>,
    /// Why it failed (start or run), when it did.
    pub failed: Option<String>,
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When it started, UTC.
    pub date_utc: String,
    /// The machine.
    pub host: HostInfo,
    /// Load before and after.
    pub load: (Option<LoadAvg>, Option<LoadAvg>),
    /// Sizes.
    pub settings: Settings,
    /// Versions of every system that ran.
    pub versions: Vec<(String, String)>,
    /// Backend ceilings measured in the same run.
    pub ceilings: Option<ceilings::Report>,
    /// Why the ceilings are missing, when they are.
    pub ceilings_error: Option<String>,
    /// Every cell.
    pub cells: Vec<Cell>,
}

// --- processes -------------------------------------------------------------------------------

fn script(name: &str) -> Command {
    Command::new(repo_root().join("scripts").join(name))
}

fn free_port() -> anyhow::Result<u16> {
    // Two consecutive free ports (peers use PORT+1, PORT+2).
    for _ in 0..50 {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        if port > 60_000 {
            continue;
        }
        let free = (1..=2).all(|d| std::net::TcpListener::bind(("127.0.0.1", port + d)).is_ok());
        if free {
            return Ok(port);
        }
    }
    bail!("no free port range found")
}

/// A peer started by a `scripts/peers/<name>` launcher; stopped on drop.
struct Peer {
    name: &'static str,
    dir: PathBuf,
    exports: Vec<(String, String)>,
}

impl Peer {
    fn start(name: &'static str, dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Peer> {
        let port = free_port()?;
        let mut cmd = script(&format!("peers/{name}"));
        cmd.arg("start").arg(dir).arg(port.to_string());
        cmd.envs(env.iter().copied());
        let out = run_cmd(
            cmd,
            &format!("scripts/peers/{name} start"),
            Duration::from_secs(300),
        )?;
        let exports = out
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                (
                    k.to_owned(),
                    v.trim_matches('\'').trim_matches('"').to_owned(),
                )
            })
            .collect();
        Ok(Peer {
            name,
            dir: dir.to_path_buf(),
            exports,
        })
    }

    fn var(&self, key: &str) -> anyhow::Result<String> {
        self.exports
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .with_context(|| format!("scripts/peers/{} start did not export {key}", self.name))
    }

    fn stop(&self) -> anyhow::Result<()> {
        let mut cmd = script(&format!("peers/{}", self.name));
        cmd.arg("stop").arg(&self.dir);
        run_cmd(cmd, "peer stop", Duration::from_secs(90)).map(|_| ())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn peer_version(name: &str) -> String {
    let mut cmd = script(&format!("peers/{name}"));
    cmd.arg("version");
    run_cmd(cmd, "peer version", Duration::from_secs(600))
        .map(|o| o.stdout.trim().to_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// `woodpecker serve` on a fresh data directory; stopped (SIGTERM) on drop.
struct Serve {
    child: Child,
    bootstrap: String,
}

impl Serve {
    fn start(bin: &Path, dir: &Path, config: Option<&Path>) -> anyhow::Result<Serve> {
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args([
                "--kafka-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
                "--milvus-addr",
                "127.0.0.1:0",
            ])
            .args(["--kafka-partitions", "1"]);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let log = std::fs::File::create(dir.join("serve.log"))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(a) = line.strip_prefix("kafka listening on ") {
                    let _ = tx.send(a.trim().to_owned());
                }
            }
        });
        let bootstrap = rx.recv_timeout(Duration::from_secs(120)).map_err(|_| {
            let _ = child.kill();
            anyhow!(
                "woodpecker serve did not become ready; its log:\n{}",
                tail(
                    &std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default(),
                    20
                )
            )
        })?;
        Ok(Serve { child, bootstrap })
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(60) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- drivers ---------------------------------------------------------------------------------

/// How `ProducerPerformance` produces.
#[derive(Debug, Clone, Copy, Default)]
struct Producing {
    /// Records per second offered (`None`: as fast as it can).
    throughput: Option<usize>,
    /// `max.in.flight.requests.per.connection` (`None`: the default, 5).
    in_flight: Option<usize>,
    /// In transactions committed every [`TXN_DURATION_MS`].
    transactional: bool,
}

/// Drives Kafka-protocol brokers with Kafka's own tools.
struct KafkaTools {
    classpath: String,
}

impl KafkaTools {
    fn java(&self, class: &str) -> Command {
        let mut cmd = Command::new("java");
        cmd.arg("-Xmx1g")
            .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
            .arg("-Duser.language=en")
            .arg("-Duser.country=US")
            .arg("-cp")
            .arg(&self.classpath)
            .arg(class);
        cmd
    }

    fn create_topic(&self, bootstrap: &str, topic: &str, partitions: usize) -> anyhow::Result<()> {
        let mut cmd = self.java("org.apache.kafka.tools.TopicCommand");
        cmd.args([
            "--bootstrap-server",
            bootstrap,
            "--create",
            "--topic",
            topic,
        ])
        .args(["--partitions", &partitions.to_string()])
        .args(["--replication-factor", "1"]);
        run_cmd(cmd, "TopicCommand --create", Duration::from_secs(120)).map(|_| ())
    }

    /// Deletes `topic`, so that every run starts from the same state (no data or partitions
    /// of earlier runs kept open). A failure is reported, not counted against the run.
    fn delete_topic(&self, bootstrap: &str, topic: &str) {
        let mut cmd = self.java("org.apache.kafka.tools.TopicCommand");
        cmd.args([
            "--bootstrap-server",
            bootstrap,
            "--delete",
            "--topic",
            topic,
        ]);
        if let Err(e) = run_cmd(cmd, "TopicCommand --delete", Duration::from_secs(120)) {
            progress(format_args!(
                "    warning: deleting topic {topic}: {}",
                first_line(&format!("{e:#}"))
            ));
        }
    }

    fn produce(
        &self,
        bootstrap: &str,
        topic: &str,
        records: usize,
        size: usize,
        how: Producing,
    ) -> anyhow::Result<Figure> {
        let Producing {
            throughput,
            in_flight,
            transactional,
        } = how;
        let mut cmd = self.java("org.apache.kafka.tools.ProducerPerformance");
        if transactional {
            cmd.args(["--transactional-id", &format!("{topic}-producer")])
                .args(["--transaction-duration-ms", &TXN_DURATION_MS.to_string()]);
        }
        cmd.args(["--topic", topic])
            .args(["--num-records", &records.to_string()])
            .args(["--record-size", &size.to_string()])
            .args([
                "--throughput",
                &throughput.map_or_else(|| "-1".to_owned(), |t| t.to_string()),
            ])
            .arg("--producer-props")
            .arg(format!("bootstrap.servers={bootstrap}"))
            .arg("acks=all");
        if size > 512 * KIB {
            cmd.arg(format!("max.request.size={}", 4 * size))
                .arg(format!("buffer.memory={}", 64 * size.max(MIB)));
        }
        if let Some(n) = in_flight {
            cmd.arg(format!("max.in.flight.requests.per.connection={n}"));
        }
        let out = run_cmd(cmd, "ProducerPerformance", Duration::from_secs(1800))?;
        let s = parse_producer(&out.stdout)?;
        Ok(Figure {
            mib_s: s.records_per_s * size as f64 / MIB_F,
            ops_s: s.records_per_s,
            p50_ms: s.p50_ms,
            p99_ms: s.p99_ms,
            p999_ms: s.p999_ms,
        })
    }

    /// The unmeasured warm-up ([`Settings::warmup_records`]) on a topic of its own.
    fn warm_up(&self, s: &Settings, bootstrap: &str) -> anyhow::Result<()> {
        let topic = format!("cmp-warmup-{}", uuid::Uuid::new_v4().simple());
        self.create_topic(bootstrap, &topic, 1)?;
        let r = self.produce(
            bootstrap,
            &topic,
            s.warmup_records,
            KIB,
            Producing::default(),
        );
        self.delete_topic(bootstrap, &topic);
        r.map(|_| ())
    }

    /// One measurement of `w` against a Kafka-protocol broker, on a topic of its own that is
    /// deleted afterwards.
    fn workload(
        &self,
        s: &Settings,
        bootstrap: &str,
        w: Workload,
        tag: &str,
        backend: Backend,
    ) -> anyhow::Result<Figure> {
        let topic = format!("cmp-{tag}");
        let figure = self.measure(s, bootstrap, w, &topic, backend);
        self.delete_topic(bootstrap, &topic);
        figure
    }

    fn measure(
        &self,
        s: &Settings,
        bootstrap: &str,
        w: Workload,
        topic: &str,
        backend: Backend,
    ) -> anyhow::Result<Figure> {
        match w {
            Workload::Big => {
                self.create_topic(bootstrap, topic, 1)?;
                self.produce(
                    bootstrap,
                    topic,
                    s.big_entries,
                    MIB,
                    Producing {
                        in_flight: Some(s.big_in_flight.min(5)),
                        ..Producing::default()
                    },
                )
            }
            Workload::Small => {
                self.create_topic(bootstrap, topic, 1)?;
                // Below what one write at a time sustains, so that records do not queue: on
                // object storage a write waits for the 200 ms flush ticker.
                let rate = if backend == Backend::Minio {
                    s.small_rate_object
                } else {
                    s.small_rate
                };
                self.produce(
                    bootstrap,
                    topic,
                    s.small_entries,
                    KIB,
                    Producing {
                        throughput: Some(rate),
                        in_flight: Some(1),
                        ..Producing::default()
                    },
                )
            }
            Workload::Window => bail!("{} is a service-mode workload", w.label()),
            Workload::Records1 | Workload::Records16 | Workload::Txn1 => {
                let p = if w == Workload::Records16 { 16 } else { 1 };
                self.create_topic(bootstrap, topic, p)?;
                let records = if backend == Backend::Minio {
                    s.records_object
                } else {
                    s.records
                };
                let how = Producing {
                    transactional: w == Workload::Txn1,
                    ..Producing::default()
                };
                self.produce(bootstrap, topic, records, KIB, how)
            }
        }
    }
}

/// Parses pulsar-perf's aggregated latency line and its DONE timing.
fn parse_pulsar(text: &str, messages: usize, size: usize) -> anyhow::Result<Figure> {
    // `... Aggregated latency stats --- Latency: mean: 52.4 ms - med: 39.9 - 95pct: 164.7 -
    // 99pct: 207.0 - 99.9pct: 213.0 - 99.99pct: ... - Max: 352.2`
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("Aggregated latency stats"))
        .context("no `Aggregated latency stats` line in pulsar-perf's output")?;
    let num_after = |key: &str| -> anyhow::Result<f64> {
        let rest = line
            .split(key)
            .nth(1)
            .with_context(|| format!("no `{key}` in `{line}`"))?;
        let token: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        token
            .parse::<f64>()
            .with_context(|| format!("`{key}` in `{line}`"))
    };
    let p50 = num_after("med:")?;
    let p99 = num_after("- 99pct:")?;
    let p999 = num_after("- 99.9pct:")?;
    // Rate: from "Created N producers" to "DONE" (the aggregated rate counts tool start-up).
    let stamp = |needle: &str| -> Option<f64> {
        let l = text.lines().find(|l| l.contains(needle))?;
        time_of_day(l)
    };
    let (Some(t0), Some(t1)) = (stamp("Created"), stamp("DONE")) else {
        bail!(
            "pulsar-perf's output has no `Created` / `DONE` timestamps:\n{}",
            tail(text, 10)
        );
    };
    let secs = if t1 >= t0 {
        t1 - t0
    } else {
        t1 + 86_400.0 - t0
    };
    let ops = messages as f64 / secs.max(1e-3);
    Ok(Figure {
        mib_s: ops * size as f64 / MIB_F,
        ops_s: ops,
        p50_ms: p50,
        p99_ms: p99,
        p999_ms: p999,
    })
}

/// The first `HH:MM:SS.fff` (or `,fff`) time of day in a log line, in seconds.
fn time_of_day(line: &str) -> Option<f64> {
    let b = line.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    for i in 0..b.len() {
        let shape = digit(i)
            && digit(i + 1)
            && b.get(i + 2) == Some(&b':')
            && digit(i + 3)
            && digit(i + 4)
            && b.get(i + 5) == Some(&b':')
            && digit(i + 6)
            && digit(i + 7);
        // Not the tail of a longer number.
        if !shape || (i > 0 && digit(i - 1)) {
            continue;
        }
        let num = |a: usize| f64::from((b[a] - b'0') * 10 + (b[a + 1] - b'0'));
        let mut secs = num(i) * 3600.0 + num(i + 3) * 60.0 + num(i + 6);
        if matches!(b.get(i + 8), Some(b'.' | b',')) {
            let frac: String = line[i + 9..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if !frac.is_empty() {
                secs += format!("0.{frac}").parse::<f64>().unwrap_or(0.0);
            }
        }
        return Some(secs);
    }
    None
}

fn pulsar_workload(s: &Settings, peer: &Peer, w: Workload, tag: &str) -> anyhow::Result<Figure> {
    let url = peer.var("PEER_SERVICE_URL")?;
    let http = peer.var("PEER_HTTP_URL")?;
    let topic = format!("persistent://public/default/cmp-{tag}");
    let (messages, size, rate, outstanding) = match w {
        Workload::Big => (s.big_entries, MIB, 10_000_000, s.big_in_flight),
        Workload::Small => (s.small_entries, KIB, s.small_rate, 1),
        Workload::Records1 | Workload::Records16 => (s.records, KIB, 10_000_000, 1000),
        Workload::Window => bail!("{} is a service-mode workload", w.label()),
        Workload::Txn1 => bail!("transactions are not driven through pulsar-perf"),
    };
    if w == Workload::Records16 {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "-d",
            "16",
        ])
        .arg(format!(
            "{http}/admin/v2/persistent/public/default/cmp-{tag}/partitions"
        ));
        run_cmd(cmd, "creating a partitioned topic", Duration::from_secs(60))?;
    }
    let mut cmd = script("peers/pulsar");
    cmd.args(["perf", "produce", "--service-url", &url])
        .args(["-s", &size.to_string(), "-m", &messages.to_string()])
        .args(["-r", &rate.to_string(), "-o", &outstanding.to_string()])
        // Latency from the first message on; the default skips the first second.
        .args(["--warmup-time", "0", "-i", "1"]);
    if w == Workload::Small {
        cmd.arg("-db");
    }
    cmd.arg(&topic);
    let out = run_cmd(cmd, "pulsar-perf produce", Duration::from_secs(1800));
    // Every run starts from the same state, as with the Kafka-protocol systems.
    pulsar_delete_topic(&http, &format!("cmp-{tag}"), w == Workload::Records16);
    let out = out?;
    parse_pulsar(&format!("{}\n{}", out.stdout, out.stderr), messages, size)
}

/// The unmeasured warm-up ([`Settings::warmup_records`]) of a Pulsar standalone.
fn pulsar_warm_up(s: &Settings, peer: &Peer) -> anyhow::Result<()> {
    let url = peer.var("PEER_SERVICE_URL")?;
    let http = peer.var("PEER_HTTP_URL")?;
    let name = format!("cmp-warmup-{}", uuid::Uuid::new_v4().simple());
    let mut cmd = script("peers/pulsar");
    cmd.args(["perf", "produce", "--service-url", &url])
        .args(["-s", &KIB.to_string(), "-m", &s.warmup_records.to_string()])
        .args(["-r", "10000000", "-o", "1000"])
        .arg(format!("persistent://public/default/{name}"));
    let out = run_cmd(
        cmd,
        "pulsar-perf produce (warm-up)",
        Duration::from_secs(600),
    );
    pulsar_delete_topic(&http, &name, false);
    out.map(|_| ())
}

/// Deletes topic `name` of `public/default` (a partitioned one with all its partitions)
/// through the admin API at `http`. A failure is reported, not counted against the run.
fn pulsar_delete_topic(http: &str, name: &str, partitioned: bool) {
    let mut delete = Command::new("curl");
    delete.args(["-sf", "-X", "DELETE"]).arg(format!(
        "{http}/admin/v2/persistent/public/default/{name}{}?force=true",
        if partitioned { "/partitions" } else { "" }
    ));
    if let Err(e) = run_cmd(delete, "deleting a topic", Duration::from_secs(120)) {
        progress(format_args!(
            "    warning: deleting topic {name}: {}",
            first_line(&format!("{e:#}"))
        ));
    }
}

/// Whether `sys` takes a warm-up: the servers on local disk (Kafka-protocol systems and
/// Pulsar). This engine and Go Woodpecker natively run in a fresh client per run, and the shim
/// on object storage waits for its flush ticker whatever it has seen.
fn warms_up(s: &Settings, sys: SystemId) -> bool {
    s.warmup_records > 0
        && sys.backend() != Backend::Minio
        && !matches!(
            sys,
            SystemId::Native(_) | SystemId::Go(_) | SystemId::Service { .. }
        )
}

/// Warms up a started server (see [`warms_up`]).
fn warm_up(
    s: &Settings,
    sys: SystemId,
    started: &Started,
    classpath: &anyhow::Result<String>,
) -> anyhow::Result<()> {
    if !warms_up(s, sys) {
        return Ok(());
    }
    match sys {
        SystemId::Shim(_) | SystemId::Kafka | SystemId::KafkaFsync | SystemId::Tansu => {
            let (kafka, bootstrap) = started.kafka_tools(classpath)?;
            kafka.warm_up(s, &bootstrap)
        }
        SystemId::Pulsar => match &started.peer {
            Some(peer) => pulsar_warm_up(s, peer),
            None => bail!("not started"),
        },
        SystemId::Native(_) | SystemId::Go(_) | SystemId::Service { .. } => Ok(()),
    }
}

#[derive(serde::Deserialize)]
struct GoJson {
    write_mib_s: f64,
    write_entries_s: f64,
    lat_ms: GoLatency,
}

#[derive(serde::Deserialize)]
struct GoLatency {
    p50: f64,
    p99: f64,
    p999: f64,
}

fn go_workload(
    s: &Settings,
    bin: &Path,
    backend: Backend,
    dir: &Path,
    w: Workload,
) -> anyhow::Result<Figure> {
    let (size, entries, in_flight) = match w {
        Workload::Big => (MIB, s.big_entries, s.big_in_flight),
        Workload::Small => (KIB, s.small_entries, 1),
        _ => (KIB, s.native_records(backend), 1000),
    };
    let etcd = std::env::var("WOODPECKER_TEST_ETCD_ENDPOINT")
        .context("WOODPECKER_TEST_ETCD_ENDPOINT is not set (Go Woodpecker needs etcd)")?;
    let mut cmd = Command::new(bin);
    cmd.args(["-data"])
        .arg(dir)
        .args(["-etcd", &etcd])
        .args(["-entry-size", &size.to_string()])
        .args(["-entries", &entries.to_string()])
        .args(["-in-flight", &in_flight.to_string()]);
    match backend {
        Backend::Minio => {
            let env = |k: &str| std::env::var(k).with_context(|| format!("{k} is not set"));
            let endpoint = env("WOODPECKER_TEST_S3_ENDPOINT")?;
            cmd.args(["-mode", "minio"])
                .args(["-s3-endpoint", endpoint.trim_start_matches("http://")])
                .args(["-s3-access-key", &env("WOODPECKER_TEST_S3_ACCESS_KEY_ID")?])
                .args([
                    "-s3-secret-key",
                    &env("WOODPECKER_TEST_S3_SECRET_ACCESS_KEY")?,
                ])
                .args(["-s3-bucket", "compare-go", "-s3-root-path", "go"]);
        }
        _ => {
            cmd.args(["-mode", "local"]);
        }
    }
    let out = run_cmd(cmd, "wp-bench", Duration::from_secs(1800))?;
    go_figure(&out.stdout, "wp-bench")
}

/// The figures in the JSON line `what` (wp-bench or wp-service-bench) printed.
fn go_figure(stdout: &str, what: &str) -> anyhow::Result<Figure> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{what} printed no JSON"))?;
    let j: GoJson = serde_json::from_str(line).with_context(|| format!("{what}'s JSON"))?;
    Ok(Figure {
        mib_s: j.write_mib_s,
        ops_s: j.write_entries_s,
        p50_ms: j.lat_ms.p50,
        p99_ms: j.lat_ms.p99,
        p999_ms: j.lat_ms.p999,
    })
}

/// This engine in process: the configuration for `backend` on `dir`.
fn native_config(backend: Backend, dir: &Path) -> anyhow::Result<WalConfig> {
    match backend {
        Backend::Minio => {
            WalConfig::from_yaml_str(&minio_yaml(dir, "rs")?).map_err(|e| anyhow!("{e}"))
        }
        _ => default_wal_config(dir),
    }
}

/// Writes `entries` entries of `size` bytes with `in_flight` outstanding through a fresh
/// engine. With `first_unmeasured`, one entry is written first and not measured, retried
/// for up to a minute: in service mode the first write creates the segment on nodes selected
/// from seeds whose gossip may still be settling (the Go service peer does the same).
async fn native_writes(
    cfg: WalConfig,
    size: usize,
    entries: usize,
    in_flight: usize,
    first_unmeasured: bool,
) -> anyhow::Result<Figure> {
    let engine = Engine::open(cfg, SystemClock::shared()).await?;
    let result = async {
        let name = format!("compare-{}", uuid::Uuid::new_v4().simple());
        engine.client.create_log(&name).await?;
        let log = engine.client.open_log(&name).await?;
        let writer = Arc::new(log.open_writer().await?);
        let payload = Bytes::from(random_bytes(size, 7));
        if first_unmeasured {
            let t0 = Instant::now();
            while let Err(e) = writer.write(WriteMessage::new(payload.clone())).await {
                if t0.elapsed() > Duration::from_secs(60) {
                    bail!("first write: {e}");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        let permits = Arc::new(Semaphore::new(in_flight.max(1)));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let t0 = Instant::now();
        let collector = tokio::spawn(async move {
            let mut lat = Vec::with_capacity(entries);
            while let Some((issued, fut, permit)) = rx.recv().await {
                let fut: std::pin::Pin<
                    Box<
                        dyn std::future::Future<
                                Output = wal::client::Result<wal::message::LogMessageId>,
                            > + Send,
                    >,
                > = fut;
                fut.await?;
                lat.push(Instant::now().duration_since(issued));
                drop(permit);
            }
            Ok::<_, anyhow::Error>(lat)
        });
        for _ in 0..entries {
            let permit = permits.clone().acquire_owned().await?;
            let issued = Instant::now();
            let fut = writer.write_async(WriteMessage::new(payload.clone()));
            if tx
                .send((issued, Box::pin(fut) as std::pin::Pin<Box<_>>, permit))
                .is_err()
            {
                // The collector stopped at a failed write; its error is the one to report.
                break;
            }
        }
        drop(tx);
        let mut lat = collector.await??;
        let secs = t0.elapsed().as_secs_f64();
        writer.close().await?;
        let latency = ceilings::Latency::from_samples(&mut lat);
        let ops = entries as f64 / secs;
        Ok::<_, anyhow::Error>(Figure {
            mib_s: ops * size as f64 / MIB_F,
            ops_s: ops,
            p50_ms: latency.p50_ms,
            p99_ms: latency.p99_ms,
            p999_ms: latency.p999_ms,
        })
    }
    .await;
    engine.shutdown().await;
    result
}

fn native_workload(
    s: &Settings,
    rt: &tokio::runtime::Runtime,
    backend: Backend,
    dir: &Path,
    w: Workload,
) -> anyhow::Result<Figure> {
    let cfg = native_config(backend, dir)?;
    let (size, entries, in_flight) = match w {
        Workload::Big => (MIB, s.big_entries, s.big_in_flight),
        Workload::Small => (KIB, s.small_entries, 1),
        _ => (KIB, s.native_records(backend), 1000),
    };
    rt.block_on(native_writes(cfg, size, entries, in_flight, false))
}

/// Sizes of workload `w` on the service-mode systems: (entry size, entries, in flight).
fn service_sizes(s: &Settings, w: Workload) -> (usize, usize, usize) {
    match w {
        Workload::Big => (MIB, s.service_big_entries, s.big_in_flight),
        Workload::Small => (KIB, s.small_entries, 1),
        _ => (KIB, s.service_window_entries, s.service_window),
    }
}

/// One service-mode run: this engine's client in process, or Go's `wp-service-bench`, on
/// the started cluster.
fn service_workload(
    s: &Settings,
    rt: &tokio::runtime::Runtime,
    started: &Started,
    client: Side,
    w: Workload,
) -> anyhow::Result<Figure> {
    let cluster = started.cluster.as_ref().context("no LogStore cluster")?;
    let work = tempfile::tempdir()?;
    let (size, entries, in_flight) = service_sizes(s, w);
    match client {
        Side::Rs => {
            let cfg = WalConfig::from_yaml_str(&cluster.rs_client_yaml(work.path())?)
                .map_err(|e| anyhow!("{e}"))?;
            rt.block_on(native_writes(cfg, size, entries, in_flight, true))
        }
        Side::Go => {
            let (_, bench) = started.go_service.as_ref().context("no wp-service-bench")?;
            let mut cmd = cluster.go_client_command(bench, work.path())?;
            cmd.args(["-entry-size", &size.to_string()])
                .args(["-entries", &entries.to_string()])
                .args(["-in-flight", &in_flight.to_string()]);
            let out = run_cmd(cmd, "wp-service-bench", Duration::from_secs(1800))?;
            go_figure(&out.stdout, "wp-service-bench")
        }
    }
}

// --- the run ---------------------------------------------------------------------------------

/// Where the tools are.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The `woodpecker` binary (release build for figures).
    pub woodpecker: PathBuf,
}

struct Started {
    serve: Option<Serve>,
    peer: Option<Peer>,
    go_bin: Option<PathBuf>,
    /// Go's LogStore server and wp-service-bench.
    go_service: Option<(PathBuf, PathBuf)>,
    cluster: Option<Cluster>,
    _dir: tempfile::TempDir,
}

impl Started {
    /// The Kafka tools pointed at this started Kafka-protocol server.
    fn kafka_tools(
        &self,
        classpath: &anyhow::Result<String>,
    ) -> anyhow::Result<(KafkaTools, String)> {
        let bootstrap = match (&self.serve, &self.peer) {
            (Some(serve), _) => serve.bootstrap.clone(),
            (None, Some(peer)) => peer.var("PEER_BOOTSTRAP")?,
            _ => bail!("not started"),
        };
        let classpath = classpath
            .as_ref()
            .map_err(|e| anyhow!("the Kafka tools: {e:#}"))?;
        Ok((
            KafkaTools {
                classpath: classpath.clone(),
            },
            bootstrap,
        ))
    }
}

fn start_system(sys: SystemId, tools: &Tools) -> anyhow::Result<Started> {
    let tmp = tempfile::Builder::new().prefix("compare-").tempdir()?;
    let dir = tmp.path().to_path_buf();
    let mut started = Started {
        serve: None,
        peer: None,
        go_bin: None,
        go_service: None,
        cluster: None,
        _dir: tmp,
    };
    match sys {
        SystemId::Native(_) => {}
        SystemId::Shim(backend) => {
            let config = if backend == Backend::Minio {
                let cfg_path = dir.as_path().join("woodpecker.yaml");
                let text = minio_yaml(&dir.as_path().join("data"), "shim")?;
                std::fs::write(&cfg_path, text)?;
                Some(cfg_path)
            } else {
                None
            };
            started.serve = Some(Serve::start(
                &tools.woodpecker,
                dir.as_path(),
                config.as_deref(),
            )?);
        }
        SystemId::Go(_) => {
            let mut cmd = script("peers/go-woodpecker");
            cmd.arg("path");
            let out = run_cmd(
                cmd,
                "scripts/peers/go-woodpecker path",
                Duration::from_secs(1200),
            )?;
            started.go_bin = Some(PathBuf::from(out.stdout.trim()));
        }
        SystemId::Kafka => {
            started.peer = Some(Peer::start("kafka", &dir.as_path().join("kafka"), &[])?);
        }
        SystemId::KafkaFsync => {
            started.peer = Some(Peer::start(
                "kafka",
                &dir.as_path().join("kafka"),
                &[("KAFKA_EXTRA_PROPS", "log.flush.interval.messages=1")],
            )?);
        }
        SystemId::Pulsar => {
            started.peer = Some(Peer::start("pulsar", &dir.as_path().join("pulsar"), &[])?);
        }
        SystemId::Tansu => {
            started.peer = Some(Peer::start("tansu", &dir.as_path().join("tansu"), &[])?);
        }
        SystemId::Service { client, nodes } => {
            if client == Side::Go || nodes == Side::Go {
                let mut cmd = script("peers/go-woodpecker-service");
                cmd.arg("path");
                let out = run_cmd(
                    cmd,
                    "scripts/peers/go-woodpecker-service path",
                    Duration::from_secs(1200),
                )?;
                started.go_service =
                    Some(service_cluster::go_binaries(Path::new(out.stdout.trim()))?);
            }
            let go_server = started.go_service.as_ref().map(|(s, _)| s.as_path());
            started.cluster = Some(Cluster::start(
                nodes,
                dir.as_path(),
                &tools.woodpecker,
                go_server,
            )?);
        }
    }
    Ok(started)
}

/// A `woodpecker.yaml` for MinIO segments and etcd metadata (the test services' variables),
/// with segments under `root` and a fresh etcd prefix and bucket path tagged `tag`. The keys
/// go under that prefix (`prefixMode: configured`), apart from Go Woodpecker's `woodpecker/`.
fn minio_yaml(root: &Path, tag: &str) -> anyhow::Result<String> {
    let env = |k: &str| std::env::var(k).with_context(|| format!("{k} is not set"));
    let endpoint = env("WOODPECKER_TEST_S3_ENDPOINT")?;
    let (host, port) = endpoint
        .trim_start_matches("http://")
        .rsplit_once(':')
        .context("WOODPECKER_TEST_S3_ENDPOINT is not http://host:port")?;
    Ok(format!(
        "woodpecker:\n  meta:\n    type: etcd\n    prefixMode: configured\n  storage:\n    type: minio\n    rootPath: {root}\n\
etcd:\n  endpoints: [\"{etcd}\"]\n  rootPath: compare-{tag}-{uniq}\n\
minio:\n  address: {host}\n  port: {port}\n  accessKeyID: {ak}\n  secretAccessKey: {sk}\n  bucketName: compare-{tag}\n  rootPath: {tag}-{uniq}\n  createBucket: true\n",
        root = root.display(),
        etcd = env("WOODPECKER_TEST_ETCD_ENDPOINT")?,
        uniq = uuid::Uuid::new_v4().simple(),
        ak = env("WOODPECKER_TEST_S3_ACCESS_KEY_ID")?,
        sk = env("WOODPECKER_TEST_S3_SECRET_ACCESS_KEY")?,
    ))
}

/// Free space a full run wants where the systems keep their data: MinIO's objects of both
/// native clients and the biggest peer's log (Kafka keeps about 8 GB until it stops).
const FULL_RUN_DISK_BYTES: u64 = 20 << 30;

/// Says so when the filesystem of `dir` has less than [`FULL_RUN_DISK_BYTES`] free: a full
/// disk stalls peers rather than failing them (Pulsar's bookie turns read-only and
/// `pulsar-perf` waits), which would skew their figures.
fn warn_if_disk_is_short(dir: &Path) {
    let out = Command::new("df").arg("-Pk").arg(dir).output();
    let free_kib = out.ok().and_then(|o| {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.lines()
            .nth(1)?
            .split_whitespace()
            .nth(3)?
            .parse::<u64>()
            .ok()
    });
    if let Some(kib) = free_kib
        && kib.saturating_mul(1024) < FULL_RUN_DISK_BYTES
    {
        progress(format_args!(
            "warning: {:.1} GiB free under {}; a full run writes about {} GiB there",
            kib as f64 / (1024.0 * 1024.0),
            dir.display(),
            FULL_RUN_DISK_BYTES >> 30
        ));
    }
}

/// Writes the machine's dirty pages back (`sync`) before a measured run, so that no run pays
/// for the writeback of what ran before it (the storage probe and a system's log leave
/// gigabytes in the page cache, and an fsync then waits for them).
fn settle() {
    if let Err(e) = Command::new("sync").status() {
        progress(format_args!("    warning: sync: {e}"));
    }
}

/// Runs the comparison.
pub fn run(s: &Settings, tools: &Tools) -> anyhow::Result<Report> {
    let date_utc = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let load_before = LoadAvg::read();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let have_s3 = std::env::var("WOODPECKER_TEST_S3_ENDPOINT").is_ok();
    if !s.quick {
        warn_if_disk_is_short(&std::env::temp_dir());
    }

    progress(format_args!("backend ceilings (storage probe)"));
    let probe_cfg = if s.quick {
        ceilings::Config::quick()
    } else {
        ceilings::Config::full()
    };
    let s3 = match crate::s3util::S3Settings::from_env("compare-ceilings") {
        Ok(Some(x)) => Ok(x),
        Ok(None) => Err("WOODPECKER_TEST_S3_ENDPOINT is not set".to_owned()),
        Err(e) => Err(e.to_string()),
    };
    let (ceilings, ceilings_error) = match ceilings::run(&probe_cfg, s3) {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };

    let systems: Vec<SystemId> = SystemId::ALL
        .into_iter()
        .filter(|sys| s.only.is_empty() || s.only.iter().any(|o| o == sys.name() || o == sys.key()))
        .filter(|sys| !(s.quick && *sys == SystemId::Shim(Backend::Minio)))
        .collect();
    let plan: Vec<(SystemId, Vec<Workload>)> = systems
        .iter()
        .map(|sys| {
            let workloads = Workload::ALL
                .into_iter()
                .filter(|w| sys.supports(*w) && s.wants(*w))
                .collect();
            (*sys, workloads)
        })
        .collect();
    let total: usize = plan.iter().map(|(_, w)| w.len()).sum::<usize>() * s.runs;
    let mut done = 0;
    // Per system and workload: the runs so far, or why it failed (then it runs no more).
    let mut results: Vec<Vec<(Vec<Figure>, Option<String>)>> = plan
        .iter()
        .map(|(_, w)| vec![(Vec::new(), None); w.len()])
        .collect();
    let mut versions = vec![(
        "woodpecker-rs".to_owned(),
        env!("CARGO_PKG_VERSION").to_owned(),
    )];
    let classpath = crate::kafka_shim::kafka_tools_classpath();
    let t_start = Instant::now();
    // Rounds: each starts every system afresh, runs each of its workloads once and stops it,
    // so that a slow spell of the machine falls on every system rather than on the one whose
    // runs happen to be then, and no run inherits another's state.
    for round in 0..s.runs {
        for ((sys, workloads), results) in plan.iter().zip(results.iter_mut()) {
            let sys = *sys;
            let live: Vec<usize> = (0..workloads.len())
                .filter(|i| results[*i].1.is_none())
                .collect();
            if live.is_empty() {
                continue;
            }
            let fail_live = |why: String, results: &mut Vec<(Vec<Figure>, Option<String>)>| {
                for i in &live {
                    results[*i].1 = Some(why.clone());
                }
            };
            if sys.needs_s3() && !have_s3 {
                done += live.len() * (s.runs - round);
                fail_live(
                    "no S3-compatible server (WOODPECKER_TEST_S3_ENDPOINT)".into(),
                    results,
                );
                continue;
            }
            if round == 0 {
                match sys {
                    SystemId::Go(_) if !versions.iter().any(|(n, _)| n == "Go Woodpecker") => {
                        versions.push(("Go Woodpecker".into(), peer_version("go-woodpecker")));
                    }
                    SystemId::Kafka => {
                        versions.push(("Apache Kafka".into(), peer_version("kafka")));
                    }
                    SystemId::Pulsar => {
                        versions.push(("Apache Pulsar".into(), peer_version("pulsar")));
                    }
                    SystemId::Tansu => versions.push(("Tansu".into(), peer_version("tansu"))),
                    SystemId::Service {
                        client: Side::Go, ..
                    } => {
                        versions.push((
                            "Go Woodpecker (service mode: server and client)".into(),
                            peer_version("go-woodpecker-service"),
                        ));
                    }
                    _ => {}
                }
            }
            let phase = |done: usize, what: &str| {
                progress(format_args!(
                    "[{done}/{total} {:>4}s] round {}/{}: {} on {}: {what}",
                    t_start.elapsed().as_secs(),
                    round + 1,
                    s.runs,
                    sys.label(),
                    sys.backend().label()
                ));
            };
            phase(done, "starting");
            let started = match start_system(sys, tools) {
                Ok(x) => x,
                Err(e) => {
                    progress(format_args!("{} failed to start: {e:#}", sys.label()));
                    done += live.len() * (s.runs - round);
                    fail_live(
                        format!("failed to start: {}", first_line(&format!("{e:#}"))),
                        results,
                    );
                    continue;
                }
            };
            if warms_up(s, sys) {
                phase(done, "warm-up");
                settle();
            }
            if let Err(e) = warm_up(s, sys, &started, &classpath) {
                // The measured runs say whether the system works; this only costs fairness.
                progress(format_args!(
                    "    warning: warm-up failed: {}",
                    first_line(&format!("{e:#}"))
                ));
            }
            for i in live {
                let w = workloads[i];
                phase(done, w.label());
                let tag =
                    format!("{:?}-{round}-{}", w, uuid::Uuid::new_v4().simple()).to_lowercase();
                settle();
                let result = match sys {
                    SystemId::Native(b) => {
                        let d = tempfile::tempdir()?;
                        native_workload(s, &rt, b, d.path(), w)
                    }
                    SystemId::Go(b) => {
                        let d = tempfile::tempdir()?;
                        match &started.go_bin {
                            Some(bin) => go_workload(s, bin, b, d.path(), w),
                            None => Err(anyhow!("no wp-bench binary")),
                        }
                    }
                    SystemId::Shim(_)
                    | SystemId::Kafka
                    | SystemId::KafkaFsync
                    | SystemId::Tansu => started
                        .kafka_tools(&classpath)
                        .and_then(|(k, b)| k.workload(s, &b, w, &tag, sys.backend())),
                    SystemId::Pulsar => match &started.peer {
                        Some(peer) => pulsar_workload(s, peer, w, &tag),
                        None => Err(anyhow!("not started")),
                    },
                    SystemId::Service { client, .. } => {
                        service_workload(s, &rt, &started, client, w)
                    }
                };
                match result {
                    Ok(f) => {
                        progress(format_args!(
                            "    {:.1} MiB/s, {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms",
                            f.mib_s, f.ops_s, f.p50_ms, f.p99_ms
                        ));
                        results[i].0.push(f);
                        done += 1;
                    }
                    Err(e) => {
                        progress(format_args!("    failed: {e:#}"));
                        results[i].1 = Some(first_line(&format!("{e:#}")));
                        done += s.runs - round;
                    }
                }
            }
            drop(started);
        }
    }
    let cells = plan
        .iter()
        .zip(results)
        .flat_map(|((sys, workloads), results)| {
            workloads
                .iter()
                .zip(results)
                .map(|(w, (runs, failed))| Cell {
                    system: *sys,
                    workload: *w,
                    median: (!runs.is_empty() && failed.is_none())
                        .then(|| Figure::median_of(&runs)),
                    runs,
                    failed,
                })
        })
        .collect();
    Ok(Report {
        date_utc,
        host: HostInfo::detect(),
        load: (load_before, LoadAvg::read()),
        settings: s.clone(),
        versions,
        ceilings,
        ceilings_error,
        cells,
    })
}

fn first_line(s: &str) -> String {
    let l = s
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if l.len() > 200 {
        format!("{}…", &l[..l.floor_char_boundary(200)])
    } else {
        l.to_owned()
    }
}

// --- report ----------------------------------------------------------------------------------

impl Report {
    fn cell(&self, sys: SystemId, w: Workload) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.system == sys && c.workload == w)
    }

    fn fig(&self, sys: SystemId, w: Workload) -> Option<Figure> {
        self.cell(sys, w).and_then(|c| c.median)
    }

    /// The target checks of the issue, as ratios.
    pub fn targets(&self) -> Vec<String> {
        let mut out = Vec::new();
        let shim = SystemId::Shim(Backend::Local);
        for (kafka, name) in [
            (SystemId::Kafka, "Apache Kafka"),
            (SystemId::KafkaFsync, "Apache Kafka with fsync per batch"),
        ] {
            for w in [Workload::Records1, Workload::Records16, Workload::Txn1] {
                if let (Some(a), Some(b)) = (self.fig(shim, w), self.fig(kafka, w)) {
                    out.push(format!(
                        "Kafka shim vs {name}, {}: throughput {:.2}× ({}), p99 {:.2}× ({})",
                        w.label(),
                        a.mib_s / b.mib_s,
                        verdict(a.mib_s >= b.mib_s, "at least matches", "below"),
                        a.p99_ms / b.p99_ms,
                        verdict(a.p99_ms < b.p99_ms, "lower", "not lower"),
                    ));
                }
            }
        }
        for backend in [Backend::Local, Backend::Minio] {
            for w in [Workload::Big, Workload::Small] {
                if let (Some(a), Some(b)) = (
                    self.fig(SystemId::Native(backend), w),
                    self.fig(SystemId::Go(backend), w),
                ) {
                    out.push(format!(
                        "native vs Go Woodpecker on {}, {}: throughput {:.2}× ({}), p50 latency {:.2}× ({})",
                        backend.label(),
                        w.label(),
                        a.mib_s / b.mib_s,
                        verdict(a.mib_s > b.mib_s, "beats", "does not beat"),
                        a.p50_ms / b.p50_ms,
                        verdict(a.p50_ms < b.p50_ms, "beats", "does not beat"),
                    ));
                }
            }
        }
        let rs = SystemId::Service {
            client: Side::Rs,
            nodes: Side::Rs,
        };
        let go = SystemId::Service {
            client: Side::Go,
            nodes: Side::Go,
        };
        for w in [Workload::Window, Workload::Small, Workload::Big] {
            if let (Some(a), Some(b)) = (self.fig(rs, w), self.fig(go, w)) {
                let ratio = a.ops_s / b.ops_s;
                let mut line = format!(
                    "service mode (3 replicas, Wq 3 / Aq 2), {}: woodpecker-rs {:.0} appends/s (p99 {:.2} ms) vs Go Woodpecker {:.0} appends/s (p99 {:.2} ms): {:.2}×",
                    w.label(),
                    a.ops_s,
                    a.p99_ms,
                    b.ops_s,
                    b.p99_ms,
                    ratio
                );
                if w == Workload::Window {
                    let _ = write!(
                        line,
                        "; target 2× Go's appends/s at p99 ≤ 5 ms: {}",
                        verdict(ratio >= 2.0 && a.p99_ms <= 5.0, "met", "not met")
                    );
                }
                out.push(line);
            }
        }
        out
    }

    /// The Markdown report.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Side-by-side WAL benchmark\n");
        let _ = writeln!(
            md,
            "Run {} on {} ({} CPUs, kernel {}), load average {} before, {} after.{}\n",
            self.date_utc,
            self.host.cpu_model.as_deref().unwrap_or("unknown CPU"),
            self.host.cpus,
            self.host.kernel.as_deref().unwrap_or("?"),
            self.load.0.map_or("?".into(), |l| format!("{:.1}", l.one)),
            self.load.1.map_or("?".into(), |l| format!("{:.1}", l.one)),
            if self.settings.quick {
                " **Smoke run (`--quick`): tiny workloads, figures mean nothing.**"
            } else {
                ""
            }
        );
        let _ = writeln!(
            md,
            "Each figure is the median of {} runs, one per round (each round starts every system afresh, warms each server on local disk up with {} unmeasured 1 KiB records, runs each workload once on a topic or directory of its own that is deleted afterwards, and stops it; the page cache's dirty data is written back before every run). Throughput is MiB/s of payload; latency is per write, issue to acknowledgement, in ms. Sizes: {} × 1 MiB entries ({} in flight); {} × 1 KiB one at a time ({} records/s offered to the Kafka-protocol systems and Pulsar, {} on MinIO); {} × 1 KiB records, acks=all ({} natively on MinIO, {} through the shim on MinIO).\n",
            self.settings.runs,
            self.settings.warmup_records,
            self.settings.big_entries,
            self.settings.big_in_flight,
            self.settings.small_entries,
            self.settings.small_rate,
            self.settings.small_rate_object,
            self.settings.records,
            self.settings.records_native_object,
            self.settings.records_object
        );
        if self
            .cells
            .iter()
            .any(|c| c.system.backend() == Backend::Service)
        {
            let _ = writeln!(
                md,
                "Service mode: three LogStore nodes on 127.0.0.1 (this engine's `woodpecker logstore` or Go Woodpecker's `woodpecker server`), one writer with three replicas (write quorum 3, ack quorum 2), metadata in etcd, compaction into MinIO; one unmeasured first write; {} × 1 MiB entries ({} in flight), {} × 1 KiB one at a time, {} × 1 KiB with {} in flight.\n",
                self.settings.service_big_entries,
                self.settings.big_in_flight,
                self.settings.small_entries,
                self.settings.service_window_entries,
                self.settings.service_window
            );
        }
        let _ = writeln!(
            md,
            "| system | backend | workload | MiB/s | ops/s | p50 ms | p99 ms | p99.9 ms |"
        );
        let _ = writeln!(md, "|---|---|---|---:|---:|---:|---:|---:|");
        for c in &self.cells {
            match (&c.median, &c.failed) {
                (Some(f), _) => {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {:.1} | {:.0} | {:.2} | {:.2} | {:.2} |",
                        c.system.label(),
                        c.system.backend().label(),
                        c.workload.label(),
                        f.mib_s,
                        f.ops_s,
                        f.p50_ms,
                        f.p99_ms,
                        f.p999_ms
                    );
                }
                (None, why) => {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | **failed**: {} | | | | |",
                        c.system.label(),
                        c.system.backend().label(),
                        c.workload.label(),
                        why.as_deref().unwrap_or("no result").replace('|', "/")
                    );
                }
            }
        }
        let targets = self.targets();
        if !targets.is_empty() {
            let _ = writeln!(md, "\nTargets (ratios in this run):\n");
            for t in targets {
                let _ = writeln!(md, "* {t}");
            }
        }
        let _ = writeln!(md, "\nBackend ceilings measured in the same run:\n");
        match (&self.ceilings, &self.ceilings_error) {
            (Some(c), _) => {
                for r in &c.disk.results {
                    let _ = writeln!(
                        md,
                        "* local disk, {} of {} B: {:.1} MiB/s, p99 {:.2} ms",
                        r.workload, r.write_size, r.mib_per_s, r.latency.p99_ms
                    );
                }
                for r in &c.object_store.results {
                    let _ = writeln!(
                        md,
                        "* PUT of {} MiB to {}, {} in flight: {:.1} MiB/s, p99 {:.1} ms",
                        r.object_size / MIB,
                        c.object_store.server.as_deref().unwrap_or("S3"),
                        r.concurrency,
                        r.mib_per_s,
                        r.latency.p99_ms
                    );
                }
                if let Some(why) = &c.object_store.not_measured {
                    let _ = writeln!(md, "* object store not measured: {why}");
                }
            }
            (None, Some(e)) => {
                let _ = writeln!(md, "* not measured: {}", first_line(e));
            }
            (None, None) => {}
        }
        let _ = writeln!(md, "\nVersions and settings:\n");
        for (name, v) in &self.versions {
            let _ = writeln!(md, "* {name}: {v}");
        }
        let _ = writeln!(
            md,
            "* Kafka-protocol systems are driven by Apache Kafka 3.9.1's `ProducerPerformance` (default producer: idempotent, batch.size 16 KiB, linger.ms 0, 5 requests in flight; 1 MiB records with max.request.size raised; latency runs with 1 request in flight; the transactional run with `--transactional-id` and `--transaction-duration-ms {}`). Topics are created with `TopicCommand`. Apache Kafka runs twice: with its defaults (it acknowledges before fsync) and with `log.flush.interval.messages=1` (fsync before acknowledging, the durability this engine gives); Pulsar's bookie syncs its journal before acknowledging (`journalSyncData=true`); Tansu's prebuilt binary only has in-memory and S3 storage, so it runs in memory; this engine and Go Woodpecker acknowledge after fsync (local) or a completed PUT (MinIO).",
            TXN_DURATION_MS
        );
        let _ = writeln!(
            md,
            "\n![throughput](throughput.svg)\n\n![latency](latency.svg)"
        );
        md
    }

    /// Bar charts (SVG) of throughput and p50/p99 latency.
    pub fn plots(&self) -> (String, String) {
        let bars = |value: fn(&Figure) -> f64| -> Vec<(String, f64)> {
            self.cells
                .iter()
                .filter_map(|c| {
                    c.median.map(|f| {
                        (
                            format!(
                                "{} · {} · {}",
                                c.system.label(),
                                c.system.backend().label(),
                                c.workload.label()
                            ),
                            value(&f),
                        )
                    })
                })
                .collect()
        };
        let throughput = svg_bars(
            "Throughput (MiB/s, higher is better)",
            &[("MiB/s", bars(|f| f.mib_s))],
        );
        let latency = svg_bars(
            "Latency (ms, lower is better; log scale)",
            &[("p50", bars(|f| f.p50_ms)), ("p99", bars(|f| f.p99_ms))],
        );
        (throughput, latency)
    }
}

fn verdict(ok: bool, yes: &str, no: &str) -> String {
    if ok { yes.to_owned() } else { no.to_owned() }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A horizontal bar chart; several series are drawn side by side per label. More than one
/// series uses a log scale (latencies span orders of magnitude).
fn svg_bars(title: &str, series: &[(&str, Vec<(String, f64)>)]) -> String {
    const COLORS: [&str; 3] = ["#4e79a7", "#e15759", "#59a14f"];
    let labels: Vec<&String> = series
        .first()
        .map(|(_, v)| v.iter().map(|(l, _)| l).collect())
        .unwrap_or_default();
    let log = series.len() > 1;
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|(_, x)| *x))
        .filter(|x| x.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let min_log = 0.01f64;
    let scale = |x: f64| -> f64 {
        if log {
            let lo = min_log.log10();
            let hi = max.max(min_log * 10.0).log10();
            ((x.max(min_log).log10() - lo) / (hi - lo)).clamp(0.0, 1.0)
        } else {
            (x / max).clamp(0.0, 1.0)
        }
    };
    let (left, width, bar_h, gap) = (430.0, 520.0, 12.0, 8.0);
    let group_h = bar_h * series.len() as f64 + gap;
    let height = 60.0 + group_h * labels.len() as f64 + 20.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="11">"#,
        w = left + width + 120.0
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="10" y="20" font-size="14">{}</text>"#,
        escape(title)
    );
    for (k, (name, _)) in series.iter().enumerate() {
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="30" width="10" height="10" fill="{c}"/><text x="{tx}" y="39">{n}</text>"#,
            x = left + k as f64 * 80.0,
            c = COLORS[k % COLORS.len()],
            tx = left + k as f64 * 80.0 + 14.0,
            n = escape(name)
        );
    }
    for (i, label) in labels.iter().enumerate() {
        let y0 = 55.0 + i as f64 * group_h;
        let _ = writeln!(
            svg,
            r#"<text x="{x}" y="{y}" text-anchor="end">{t}</text>"#,
            x = left - 6.0,
            y = y0 + bar_h * series.len() as f64 / 2.0 + 4.0,
            t = escape(label)
        );
        for (k, (_, values)) in series.iter().enumerate() {
            let v = values.get(i).map_or(0.0, |(_, v)| *v);
            let w = scale(v) * width;
            let y = y0 + k as f64 * bar_h;
            let _ = writeln!(
                svg,
                r#"<rect x="{left}" y="{y}" width="{w:.1}" height="{h}" fill="{c}"/><text x="{tx:.1}" y="{ty}">{v}</text>"#,
                h = bar_h - 2.0,
                c = COLORS[k % COLORS.len()],
                tx = left + w + 4.0,
                ty = y + bar_h - 3.0,
                v = if v >= 100.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            );
        }
    }
    let _ = writeln!(svg, "</svg>");
    svg
}

// --- command line ----------------------------------------------------------------------------

/// Usage of the `compare` binary.
pub const USAGE: &str = "\
compare: this engine (natively and through the Kafka shim) against Apache Kafka, Apache Pulsar,
Go Woodpecker and Tansu, each started locally, the same workloads, one report.

USAGE:
    scripts/bench-compare [--quick] [OPTIONS]      (starts MinIO and etcd, then runs this)
    compare [--quick] [OPTIONS]

OPTIONS:
    --quick              smoke run: tiny workloads, this engine and Apache Kafka only, one run
    --runs N             rounds: each runs every figure once (median reported) [default: 3]
    --only a,b           systems: woodpecker-rs, go-woodpecker, kafka, pulsar, tansu, service
                         (the three below), or one system on one backend: native-local,
                         native-minio, shim-local, shim-minio, go-local, go-minio,
                         kafka-default, kafka-fsync, service-rs (our client on our 3
                         LogStores), service-go (Go's client on Go's 3 LogStores),
                         service-rs-on-go (our client on Go's 3 LogStores)
    --workloads a,b      workloads: big (1 MiB entries), small (1 KiB latency), window
                         (1 KiB, 32 in flight; service mode only), records1, records16
                         (Kafka-style), txn1 (Kafka-style in transactions) [default: all]
    --records N          1 KiB records per Kafka-style run [default: 1000000]
    --warmup N           unmeasured 1 KiB records each started server on local disk takes
                         first in each round; 0 for none [default: 200000]
    --out DIR            where report.md, report.json and the SVG plots go [default: bench-report]
    --woodpecker PATH    the woodpecker binary [default: next to this binary]
    -h, --help           this text
";

/// Parsed arguments.
#[derive(Debug, Clone)]
pub struct Args {
    /// `--help`.
    pub help: bool,
    /// The settings.
    pub settings: Settings,
    /// The tools.
    pub tools: Tools,
}

impl Args {
    /// Parses the command line (without the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Args> {
        let args: Vec<String> = args.into_iter().collect();
        let quick = args.iter().any(|a| a == "--quick");
        let mut out = PathBuf::from("bench-report");
        let mut settings = if quick {
            Settings::quick(out.clone())
        } else {
            Settings::full(out.clone())
        };
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let mut woodpecker = exe_dir.join("woodpecker");
        let mut help = false;
        let mut flags = Flags::new(args);
        while let Some(flag) = flags.next_flag() {
            match flag.as_str() {
                "--quick" => {}
                "-h" | "--help" => help = true,
                "--runs" => settings.runs = flags.positive()?,
                "--records" => settings.records = flags.positive()?,
                "--warmup" => {
                    let v = flags.value()?;
                    settings.warmup_records = v
                        .parse()
                        .with_context(|| format!("--warmup wants a count of records, not `{v}`"))?;
                }
                "--only" => {
                    settings.only = flags.list()?;
                    if let Some(bad) = settings.only.iter().find(|o| {
                        !SystemId::ALL
                            .iter()
                            .any(|sys| sys.name() == o.as_str() || sys.key() == o.as_str())
                    }) {
                        bail!("unknown system `{bad}` (see --help)");
                    }
                }
                "--workloads" => {
                    settings.workloads = flags.list()?;
                    if let Some(bad) = settings
                        .workloads
                        .iter()
                        .find(|k| !Workload::ALL.iter().any(|w| w.key() == k.as_str()))
                    {
                        bail!(
                            "unknown workload `{bad}` (big, small, window, records1, records16, txn1)"
                        );
                    }
                }
                "--out" => out = PathBuf::from(flags.value()?),
                "--woodpecker" => woodpecker = PathBuf::from(flags.value()?),
                other => bail!("unknown argument `{other}` (see --help)"),
            }
            flags.check_switch(&["--quick", "--help"])?;
        }
        settings.out = out;
        Ok(Args {
            help,
            settings,
            tools: Tools { woodpecker },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        let runs = [
            Figure {
                mib_s: 3.0,
                p99_ms: 9.0,
                ..Figure::default()
            },
            Figure {
                mib_s: 1.0,
                p99_ms: 1.0,
                ..Figure::default()
            },
            Figure {
                mib_s: 2.0,
                p99_ms: 4.0,
                ..Figure::default()
            },
        ];
        let m = Figure::median_of(&runs);
        assert_eq!((m.mib_s, m.p99_ms), (2.0, 4.0));
        assert_eq!(median(vec![1.0, 3.0]), 2.0);
    }

    #[test]
    fn pulsar_output_parses() {
        let text = "\
2026-11-22T14:01:02,100+0000 [main] INFO  org.apache.pulsar.testclient.PerformanceProducer - Created 1 producers
2026-11-22T14:01:05,600+0000 [main] INFO  org.apache.pulsar.testclient.PerformanceProducer - DONE (reached the maximum number: 50000 of production)
2026-11-22T14:01:05,700+0000 [main] INFO  org.apache.pulsar.testclient.PerformanceProducer - Aggregated latency stats --- Latency: mean:  52.400 ms - med:  39.900 - 95pct: 164.700 - 99pct: 207.000 - 99.9pct: 213.000 - 99.99pct: 352.000 - Max: 352.200
";
        let f = parse_pulsar(text, 50_000, 1024).unwrap();
        assert_eq!((f.p50_ms, f.p99_ms, f.p999_ms), (39.9, 207.0, 213.0));
        assert!((f.ops_s - 50_000.0 / 3.5).abs() < 1.0, "{}", f.ops_s);
    }

    #[test]
    fn times_of_day() {
        assert_eq!(
            time_of_day("2026-11-22T14:01:02,100+0000 [main] x"),
            Some(50462.1)
        );
        assert_eq!(time_of_day("14:01:02.250 [main] INFO"), Some(50462.25));
        assert_eq!(time_of_day("no time here 1:2:3"), None);
    }

    #[test]
    fn arguments() {
        let a = Args::parse([
            "--quick".to_owned(),
            "--only".into(),
            "kafka,woodpecker-rs".into(),
        ])
        .unwrap();
        assert!(a.settings.quick);
        assert_eq!(a.settings.only, ["kafka", "woodpecker-rs"]);
        assert!(Args::parse(["--runs".to_owned(), "0".into()]).is_err());
        assert!(Args::parse(["--bogus".to_owned()]).is_err());
        let a = Args::parse([
            "--only".to_owned(),
            "native-minio,go-minio".into(),
            "--workloads".into(),
            "big".into(),
        ])
        .unwrap();
        assert_eq!(a.settings.only, ["native-minio", "go-minio"]);
        assert!(a.settings.wants(Workload::Big) && !a.settings.wants(Workload::Small));
        assert!(Args::parse(["--only".to_owned(), "kafak".into()]).is_err());
        assert!(Args::parse(["--workloads".to_owned(), "huge".into()]).is_err());
        let a = Args::parse(["--warmup".to_owned(), "0".into()]).unwrap();
        assert_eq!(a.settings.warmup_records, 0);
        assert!(!warms_up(&a.settings, SystemId::Kafka));
        let a = Args::parse(Vec::<String>::new()).unwrap();
        assert!(warms_up(&a.settings, SystemId::Kafka));
        assert!(warms_up(&a.settings, SystemId::Shim(Backend::Local)));
        assert!(!warms_up(&a.settings, SystemId::Shim(Backend::Minio)));
        assert!(!warms_up(&a.settings, SystemId::Native(Backend::Local)));
        assert!(Args::parse(["--warmup".to_owned(), "many".into()]).is_err());
    }

    #[test]
    fn charts_are_svg() {
        let (t, l) = Report {
            date_utc: String::new(),
            host: HostInfo::detect(),
            load: (None, None),
            settings: Settings::quick(PathBuf::new()),
            versions: Vec::new(),
            ceilings: None,
            ceilings_error: None,
            cells: vec![Cell {
                system: SystemId::Kafka,
                workload: Workload::Records1,
                runs: Vec::new(),
                median: Some(Figure {
                    mib_s: 10.0,
                    ops_s: 10.0,
                    p50_ms: 1.0,
                    p99_ms: 5.0,
                    p999_ms: 7.0,
                }),
                failed: None,
            }],
        }
        .plots();
        assert!(t.starts_with("<svg") && t.contains("Apache Kafka"));
        assert!(l.contains("p99"));
    }
}
