//! Kafka shim benchmark: produce and consume throughput and latency through `woodpecker serve`
//! with Apache Kafka's own perf tools, against the engine's native path in the same run.
//!
//! One run, each part on a fresh temporary data directory:
//!
//! * **Native** (in process): [`wal::engine::Engine`] with the default local configuration
//!   (what `woodpecker serve` uses without `--config`: embedded metadata, local-disk
//!   segments), one log, the same bytes written three times: as 1 KiB entries and as 16 KiB
//!   entries (what a Kafka producer's default `batch.size` hands the shim per WAL entry), with
//!   at most `in_flight_bytes` outstanding (default 32 MiB, a Kafka producer's
//!   `buffer.memory`); and as 16 KiB entries with only 5 × 16 KiB outstanding, the pipeline
//!   depth a default producer has against one partition (5 requests in flight, one batch
//!   each). Writes are pipelined with [`wal::client::LogWriter::write_async`]; latency is per
//!   write, from issue to acknowledgement (durable). Then the log is read back from the
//!   earliest entry with a [`wal::client::LogReader`].
//! * **Shim**: the `woodpecker` binary, `serve` with `--kafka-partitions 1` on port 0; the
//!   topic is created by auto-create on the producer's first Metadata request. Kafka's
//!   `ProducerPerformance` (`acks=all`, 1 KiB records, unthrottled) and then
//!   `ConsumerPerformance` run against it; their summaries are parsed. The server is stopped
//!   with SIGTERM.
//!
//! Kafka's tools count MB as MiB (2^20 bytes); so does this report. Their latency is also
//! from `send()` to acknowledgement, including time queued in the producer's buffer.
//!
//! The binary `kafka_shim` (`benches/src/bin/kafka_shim.rs`) drives [`run`] and prints
//! [`Report::to_markdown`].

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use wal::clock::SystemClock;
use wal::config::Config as WalConfig;
use wal::engine::Engine;
use wal::message::{LogMessageId, WriteMessage};

use crate::ceilings::{HostInfo, KIB, LoadAvg, MIB, fmt_ms, fmt_size, random_bytes};

const MIB_F: f64 = MIB as f64;

/// How long `woodpecker serve` may take to print its ready line.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one Kafka tool may run before it is killed.
const TOOL_TIMEOUT: Duration = Duration::from_secs(900);
/// How long the server may take to stop after SIGTERM before it is killed.
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// The Kafka tool classes (kafka-tools 3.x).
pub const PRODUCER_PERFORMANCE: &str = "org.apache.kafka.tools.ProducerPerformance";
/// See [`PRODUCER_PERFORMANCE`].
pub const CONSUMER_PERFORMANCE: &str = "org.apache.kafka.tools.ConsumerPerformance";
/// A Kafka producer's default `max.in.flight.requests.per.connection`: with one partition
/// and `linger.ms` 0 each request carries one batch, so at most this many batches are in
/// flight through the shim.
pub const PRODUCER_IN_FLIGHT_REQUESTS: usize = 5;

// --- configuration -----------------------------------------------------------------------------

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Whether this is the `--quick` (smoke) configuration; recorded in the report.
    pub quick: bool,
    /// Records (of `record_size` bytes) produced by every part.
    pub records: usize,
    /// Bytes per record.
    pub record_size: usize,
    /// Bytes per entry of the native batched variant (Kafka's default `batch.size`).
    pub batch_size: usize,
    /// Native writes outstanding, in bytes.
    pub in_flight_bytes: usize,
    /// Where the temporary data directories go.
    pub dir: PathBuf,
    /// Skip the native part.
    pub no_native: bool,
    /// Skip the shim part.
    pub no_shim: bool,
    /// The `woodpecker` binary.
    pub woodpecker: PathBuf,
    /// The Java launcher.
    pub java: PathBuf,
    /// The classpath of Kafka's tools; `None` asks `scripts/kafka-tools classpath`.
    pub classpath: Option<String>,
}

// --- figures ---------------------------------------------------------------------------------

/// Latency summary in milliseconds (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
}

/// Nearest-rank percentile `p` (0 < p <= 1) of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Latency {
    /// Summarises the samples (sorts them in place).
    pub fn from_samples(samples: &mut [Duration]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let total: Duration = samples.iter().sum();
        Self {
            p50_ms: ms(percentile(samples, 0.50)),
            p99_ms: ms(percentile(samples, 0.99)),
            p999_ms: ms(percentile(samples, 0.999)),
            max_ms: ms(samples[samples.len() - 1]),
            mean_ms: ms(total) / samples.len() as f64,
        }
    }
}

/// One native variant: writes of one entry size, then the read-back.
#[derive(Debug, Clone, Serialize)]
pub struct NativeRow {
    /// Bytes per entry.
    pub entry_size: usize,
    /// Writes outstanding at most, in bytes.
    pub in_flight_bytes: usize,
    /// Entries written (and read back).
    pub entries: usize,
    /// Payload bytes written.
    pub bytes: u64,
    /// Wall time of the writes, first issue to last acknowledgement.
    pub write_seconds: f64,
    /// Write throughput.
    pub write_mib_per_s: f64,
    /// Written bytes per second in records of the configured record size.
    pub write_records_per_s: f64,
    /// Entries written per second.
    pub write_entries_per_s: f64,
    /// Per-write latency, issue to acknowledgement.
    pub latency: Latency,
    /// Wall time of the read-back.
    pub read_seconds: f64,
    /// Read-back throughput.
    pub read_mib_per_s: f64,
    /// Read-back in records of the configured record size per second.
    pub read_records_per_s: f64,
}

impl NativeRow {
    /// `native, 16 KiB entries`.
    pub fn label(&self) -> String {
        format!("native, {} entries", fmt_size(self.entry_size))
    }

    /// `native, 16 KiB entries, 80 KiB in flight`.
    pub fn label_in_flight(&self) -> String {
        format!(
            "{}, {} in flight",
            self.label(),
            fmt_size(self.in_flight_bytes)
        )
    }
}

/// `ProducerPerformance`'s final summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProducerSummary {
    /// Records sent.
    pub records: u64,
    /// Records per second.
    pub records_per_s: f64,
    /// MiB per second (Kafka's "MB/sec").
    pub mib_per_s: f64,
    /// Average latency.
    pub avg_ms: f64,
    /// Maximum latency.
    pub max_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
}

/// `ConsumerPerformance`'s figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ConsumerSummary {
    /// MiB consumed.
    pub mib: f64,
    /// MiB per second over the whole run (group join included).
    pub mib_per_s: f64,
    /// Records consumed.
    pub records: u64,
    /// Records per second over the whole run.
    pub records_per_s: f64,
    /// Time spent joining the group.
    pub rebalance_ms: f64,
    /// Time spent fetching (whole run minus rebalance).
    pub fetch_ms: f64,
    /// MiB per second while fetching.
    pub fetch_mib_per_s: f64,
    /// Records per second while fetching.
    pub fetch_records_per_s: f64,
}

/// The shim part.
#[derive(Debug, Clone, Serialize)]
pub struct ShimSection {
    /// The `woodpecker` binary used.
    pub woodpecker: String,
    /// `java -version`, first line.
    pub java: Option<String>,
    /// The producer's figures.
    pub producer: ProducerSummary,
    /// Wall time of the producer process (JVM start included).
    pub producer_process_seconds: f64,
    /// The consumer's figures.
    pub consumer: ConsumerSummary,
    /// Wall time of the consumer process (JVM start included).
    pub consumer_process_seconds: f64,
    /// Warnings the tools printed on stdout (e.g. a consumer timeout).
    pub warnings: Vec<String>,
    /// Produce requests the server counted (its metrics endpoint), when it could be read.
    pub produce_requests: Option<u64>,
    /// CPU time of the server process during the producer run (user + system), Linux only.
    pub server_cpu_produce_seconds: Option<f64>,
    /// CPU time of the server process during the consumer run.
    pub server_cpu_consume_seconds: Option<f64>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When the run started, UTC.
    pub date_utc: String,
    /// Whether the `--quick` configuration was used.
    pub quick: bool,
    /// The machine.
    pub host: HostInfo,
    /// Load average before the first part.
    pub load_before: Option<LoadAvg>,
    /// Load average after the last part.
    pub load_after: Option<LoadAvg>,
    /// Records per part.
    pub records: usize,
    /// Bytes per record.
    pub record_size: usize,
    /// Native writes outstanding, in bytes.
    pub in_flight_bytes: usize,
    /// Native variants: one record per entry; `batch_size` bytes per entry; the same with
    /// only a Kafka producer's pipeline depth in flight (5 requests of one batch each).
    pub native: Vec<NativeRow>,
    /// Through the shim with Kafka's tools.
    pub shim: Option<ShimSection>,
}

fn progress(args: std::fmt::Arguments<'_>) {
    eprintln!("[kafka_shim] {args}");
}

// --- native ----------------------------------------------------------------------------------

/// The configuration `woodpecker serve` uses without `--config` (cli `DEFAULT_YAML`), with
/// the same `WOODPECKER_CONFIG__*` environment overrides, on `data_dir`.
pub fn default_wal_config(data_dir: &Path) -> anyhow::Result<WalConfig> {
    const DEFAULT_YAML: &str = "\
woodpecker:
  meta:
    type: embedded
  storage:
    type: local
    rootPath: ./data
";
    let mut cfg = WalConfig::from_yaml_str_with_env(DEFAULT_YAML, std::env::vars())
        .map_err(|e| anyhow!("{e} (default configuration with environment overrides)"))?;
    cfg.woodpecker.storage.root_path = data_dir
        .to_str()
        .with_context(|| format!("{} is not valid UTF-8", data_dir.display()))?
        .to_owned();
    cfg.validate().map_err(|e| anyhow!("{e}"))?;
    Ok(cfg)
}

/// Writes `entries` entries of `entry_size` bytes to a new log of a fresh engine on
/// `data_dir`, at most `in_flight_bytes` outstanding, then reads them back.
pub async fn native_run(
    data_dir: &Path,
    entry_size: usize,
    entries: usize,
    in_flight_bytes: usize,
    record_size: usize,
) -> anyhow::Result<NativeRow> {
    let engine = Engine::open(default_wal_config(data_dir)?, SystemClock::shared())
        .await
        .context("opening the engine")?;
    let result = native_on(&engine, entry_size, entries, in_flight_bytes, record_size).await;
    engine.shutdown().await;
    result
}

async fn native_on(
    engine: &Engine,
    entry_size: usize,
    entries: usize,
    in_flight_bytes: usize,
    record_size: usize,
) -> anyhow::Result<NativeRow> {
    let log = "bench";
    engine.client.create_log(log).await?;
    let handle = engine.client.open_log(log).await?;
    let writer = handle.open_writer().await?;
    let payload = Bytes::from(random_bytes(entry_size, 0x6b61_666b_6121));
    let cost = u32::try_from(entry_size.min(in_flight_bytes)).context("entry size")?;
    let window = Arc::new(Semaphore::new(in_flight_bytes.max(entry_size)));

    // The writes resolve in issue order, so one task awaiting them in order sees each one
    // as soon as it completes; it records the latency and releases the window.
    type Pending = (
        Instant,
        std::pin::Pin<Box<dyn Future<Output = wal::client::Result<LogMessageId>> + Send>>,
        tokio::sync::OwnedSemaphorePermit,
    );
    let (tx, mut rx) = mpsc::unbounded_channel::<Pending>();
    let collector = tokio::spawn(async move {
        let mut samples = Vec::with_capacity(entries);
        while let Some((start, write, permit)) = rx.recv().await {
            write.await?;
            samples.push(start.elapsed());
            drop(permit);
        }
        Ok::<_, wal::client::ClientError>(samples)
    });
    let t0 = Instant::now();
    for _ in 0..entries {
        let permit = window.clone().acquire_many_owned(cost).await?;
        let start = Instant::now();
        let write = writer.write_async(WriteMessage::new(payload.clone()));
        if tx.send((start, Box::pin(write), permit)).is_err() {
            break; // the collector stopped on an error; it reports it below
        }
    }
    drop(tx);
    let mut samples = collector.await.context("collector task")??;
    let write_seconds = t0.elapsed().as_secs_f64();
    writer.close().await?;
    anyhow::ensure!(samples.len() == entries, "only {} writes", samples.len());

    let t1 = Instant::now();
    let mut reader = handle
        .open_reader(LogMessageId::EARLIEST, Some("bench"))
        .await?;
    let mut read_bytes = 0u64;
    for _ in 0..entries {
        let msg = reader.read_next().await?;
        read_bytes += msg.payload.len() as u64;
    }
    let read_seconds = t1.elapsed().as_secs_f64();
    reader.close().await?;

    let bytes = (entry_size * entries) as u64;
    anyhow::ensure!(
        read_bytes == bytes,
        "read back {read_bytes} of {bytes} bytes"
    );
    let mib = bytes as f64 / MIB_F;
    let records = bytes as f64 / record_size as f64;
    Ok(NativeRow {
        entry_size,
        in_flight_bytes,
        entries,
        bytes,
        write_seconds,
        write_mib_per_s: mib / write_seconds,
        write_records_per_s: records / write_seconds,
        write_entries_per_s: entries as f64 / write_seconds,
        latency: Latency::from_samples(&mut samples),
        read_seconds,
        read_mib_per_s: mib / read_seconds,
        read_records_per_s: records / read_seconds,
    })
}

// --- processes -------------------------------------------------------------------------------

/// What a finished child process printed.
#[derive(Debug)]
struct Finished {
    stdout: String,
    stderr: String,
    seconds: f64,
}

/// Runs `cmd` to completion (killing it after `timeout`), capturing its output; an error
/// (with the end of its stderr) when it fails.
fn run_captured(mut cmd: Command, what: &str, timeout: Duration) -> anyhow::Result<Finished> {
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as _));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as _));
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{what} did not finish within {}s; killed",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "{what} failed ({status}); stdout:\n{}\nstderr:\n{}",
            tail(&stdout, 20),
            tail(&stderr, 30)
        );
    }
    Ok(Finished {
        stdout,
        stderr,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running `woodpecker serve`; killed when dropped without [`Server::stop`].
#[derive(Debug)]
struct Server {
    child: Child,
    kafka_addr: String,
    metrics_addr: Option<String>,
    log: PathBuf,
}

impl Server {
    fn start(woodpecker: &Path, data_dir: &Path, log: PathBuf) -> anyhow::Result<Self> {
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(woodpecker)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--kafka-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .args(["--kafka-partitions", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it with `cargo build --release -p woodpecker`, or \
                     give --woodpecker PATH)",
                    woodpecker.display()
                )
            })?;
        let stdout = child.stdout.take().context("server stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the ready line, then keeps draining stdout so the server never blocks on it.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                for (prefix, kind) in [("kafka listening on ", 0), ("metrics listening on ", 1)] {
                    if let Some(addr) = line.strip_prefix(prefix) {
                        let _ = tx.send((kind, addr.trim().to_owned()));
                    }
                }
            }
        });
        let mut server = Server {
            child,
            kafka_addr: String::new(),
            metrics_addr: None,
            log,
        };
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        // The metrics line follows the Kafka line; it is only waited for a moment.
        let mut metrics_deadline = None;
        while server.kafka_addr.is_empty() || server.metrics_addr.is_none() {
            let until = metrics_deadline.unwrap_or(deadline);
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok((0, addr)) => {
                    server.kafka_addr = addr;
                    metrics_deadline = Some(Instant::now() + Duration::from_secs(2));
                }
                Ok((_, addr)) => server.metrics_addr = Some(addr),
                Err(_) if !server.kafka_addr.is_empty() => break,
                Err(_) => {
                    let status = server.child.try_wait().ok().flatten();
                    bail!(
                        "{} serve did not print `kafka listening on` ({}); its log:\n{}",
                        woodpecker.display(),
                        status.map_or_else(|| "timed out".to_owned(), |s| s.to_string()),
                        server.log_tail()
                    );
                }
            }
        }
        Ok(server)
    }

    /// CPU time (user + system) the server used so far, from /proc (Linux, USER_HZ 100).
    fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(ticks as f64 / 100.0)
    }

    /// A metric of the endpoint (`GET /metrics`): `name{labels}` exactly, or `name` summed
    /// over its label sets.
    fn metric(&self, name: &str) -> Option<f64> {
        use std::io::Write as _;
        let addr = self.metrics_addr.as_ref()?;
        let mut conn = std::net::TcpStream::connect(addr).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            conn,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        conn.read_to_string(&mut text).ok()?;
        let values: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                // `name` alone sums every label set; `name{labels}` picks one.
                let matches = key == name || key.split('{').next() == Some(name);
                matches.then(|| value.trim().parse().ok())?
            })
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    fn log_tail(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 30)
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        if !sent.is_ok_and(|s| s.success()) {
            bail!("could not send SIGTERM to the server (pid {pid})");
        }
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!(
                        "the server exited with {status} after SIGTERM; its log:\n{}",
                        self.log_tail()
                    );
                }
                return Ok(());
            }
            if t0.elapsed() > SERVER_STOP_TIMEOUT {
                bail!(
                    "the server did not stop within {}s of SIGTERM (killed); its log:\n{}",
                    SERVER_STOP_TIMEOUT.as_secs(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// --- Kafka tools -----------------------------------------------------------------------------

/// Parses `ProducerPerformance`'s final line, e.g. `2000 records sent, 1234.5 records/sec
/// (1.21 MB/sec), 12.34 ms avg latency, 56.00 ms max latency, 10 ms 50th, 40 ms 95th, 50 ms
/// 99th, 56 ms 99.9th.`
pub fn parse_producer(stdout: &str) -> anyhow::Result<ProducerSummary> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains(" records sent, ") && l.contains("99.9th"))
        .with_context(|| {
            format!(
                "no summary line in ProducerPerformance's output:\n{}",
                tail(stdout, 10)
            )
        })?;
    let bad = || anyhow!("unexpected ProducerPerformance summary: {line:?}");
    let parts: Vec<&str> = line.trim().trim_end_matches('.').split(", ").collect();
    if parts.len() != 8 {
        return Err(bad());
    }
    let first = |i: usize| -> anyhow::Result<f64> {
        parts[i]
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(bad)
    };
    let mib_per_s = parts[1]
        .split_once('(')
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(bad)?;
    Ok(ProducerSummary {
        records: first(0)? as u64,
        records_per_s: first(1)?,
        mib_per_s,
        avg_ms: first(2)?,
        max_ms: first(3)?,
        p50_ms: first(4)?,
        p95_ms: first(5)?,
        p99_ms: first(6)?,
        p999_ms: first(7)?,
    })
}

/// Parses `ConsumerPerformance`'s header and data line (`start.time, end.time,
/// data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms,
/// fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec`).
pub fn parse_consumer(stdout: &str) -> anyhow::Result<ConsumerSummary> {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("start.time"));
    let header = lines.next().with_context(|| {
        format!(
            "no header in ConsumerPerformance's output:\n{}",
            tail(stdout, 10)
        )
    })?;
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let values: Vec<&str> = lines
        .find(|l| l.split(',').count() == names.len())
        .context("no data line in ConsumerPerformance's output")?
        .split(',')
        .map(str::trim)
        .collect();
    let get = |name: &str| -> anyhow::Result<f64> {
        let i = names
            .iter()
            .position(|n| *n == name)
            .with_context(|| format!("ConsumerPerformance printed no {name}"))?;
        values[i]
            .parse()
            .with_context(|| format!("ConsumerPerformance's {name} is {:?}", values[i]))
    };
    Ok(ConsumerSummary {
        mib: get("data.consumed.in.MB")?,
        mib_per_s: get("MB.sec")?,
        records: get("data.consumed.in.nMsg")? as u64,
        records_per_s: get("nMsg.sec")?,
        rebalance_ms: get("rebalance.time.ms")?,
        fetch_ms: get("fetch.time.ms")?,
        fetch_mib_per_s: get("fetch.MB.sec")?,
        fetch_records_per_s: get("fetch.nMsg.sec")?,
    })
}

/// The classpath `scripts/kafka-tools classpath` prints (fetching the jars if needed).
pub fn kafka_tools_classpath() -> anyhow::Result<String> {
    let in_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka-tools");
    let script = if in_tree.exists() {
        in_tree
    } else {
        PathBuf::from("scripts/kafka-tools")
    };
    let mut cmd = Command::new("bash");
    cmd.arg(&script).arg("classpath");
    let out = run_captured(cmd, "scripts/kafka-tools classpath", TOOL_TIMEOUT)?;
    eprint!("{}", out.stderr);
    let cp = out.stdout.trim().to_owned();
    if cp.is_empty() {
        bail!("scripts/kafka-tools classpath printed nothing");
    }
    Ok(cp)
}

fn java_command(cfg: &Config, classpath: &str, class: &str) -> Command {
    let mut cmd = Command::new(&cfg.java);
    cmd.arg("-cp")
        .arg(classpath)
        // Kafka's tools format numbers with the default locale; the parsers want `1.5`.
        .args(["-Duser.language=en", "-Duser.country=US"])
        .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
        .arg(class);
    cmd
}

fn java_version(java: &Path) -> Option<String> {
    let out = Command::new(java).arg("-version").output().ok()?;
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .next()
        .map(|l| l.trim().to_owned())
}

fn forward_stderr(tool: &str, stderr: &str) {
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        progress(format_args!("{tool}: {line}"));
    }
}

fn shim_run(cfg: &Config, classpath: &str) -> anyhow::Result<ShimSection> {
    let dir = tempfile::Builder::new()
        .prefix("woodpecker-kafka-shim-")
        .tempdir_in(&cfg.dir)
        .with_context(|| format!("creating a temporary directory in {}", cfg.dir.display()))?;
    let data_dir = dir.path().join("data");
    let server = Server::start(&cfg.woodpecker, &data_dir, dir.path().join("serve.log"))?;
    progress(format_args!(
        "shim: {} serve listening on {}",
        cfg.woodpecker.display(),
        server.kafka_addr
    ));
    let topic = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let records = cfg.records.to_string();
    let record_size = cfg.record_size.to_string();

    let mut producer = java_command(cfg, classpath, PRODUCER_PERFORMANCE);
    producer
        .args(["--topic", &topic, "--num-records", &records])
        .args(["--record-size", &record_size, "--throughput", "-1"])
        .arg("--producer-props")
        .arg(format!("bootstrap.servers={}", server.kafka_addr))
        .arg("acks=all");
    progress(format_args!(
        "shim: ProducerPerformance, {records} records of {record_size} B, acks=all"
    ));
    let cpu0 = server.cpu_seconds();
    let out = run_captured(producer, "ProducerPerformance", TOOL_TIMEOUT)
        .map_err(|e| anyhow!("{e:#}\nserver log:\n{}", server.log_tail()))?;
    forward_stderr("ProducerPerformance", &out.stderr);
    let produced = parse_producer(&out.stdout)?;
    let producer_seconds = out.seconds;
    let cpu1 = server.cpu_seconds();
    let produce_requests = server
        .metric("woodpecker_kafka_requests_total{api=\"Produce\"}")
        .map(|v| v as u64);
    progress(format_args!(
        "shim: produced {:.1} MiB/s, {:.0} records/s, p50 {} ms, p99 {} ms",
        produced.mib_per_s, produced.records_per_s, produced.p50_ms, produced.p99_ms
    ));
    if produced.records != cfg.records as u64 {
        bail!(
            "ProducerPerformance sent {} of {} records",
            produced.records,
            cfg.records
        );
    }

    let mut consumer = java_command(cfg, classpath, CONSUMER_PERFORMANCE);
    consumer
        .arg("--bootstrap-server")
        .arg(&server.kafka_addr)
        .args(["--topic", &topic, "--messages", &records]);
    progress(format_args!("shim: ConsumerPerformance, {records} records"));
    let out = run_captured(consumer, "ConsumerPerformance", TOOL_TIMEOUT)
        .map_err(|e| anyhow!("{e:#}\nserver log:\n{}", server.log_tail()))?;
    forward_stderr("ConsumerPerformance", &out.stderr);
    let consumed = parse_consumer(&out.stdout)?;
    let cpu2 = server.cpu_seconds();
    let warnings: Vec<String> = out
        .stdout
        .lines()
        .filter(|l| l.contains("WARNING"))
        .map(str::to_owned)
        .collect();
    progress(format_args!(
        "shim: consumed {:.1} MiB/s ({:.1} MiB/s while fetching), {} records",
        consumed.mib_per_s, consumed.fetch_mib_per_s, consumed.records
    ));
    server.stop()?;
    Ok(ShimSection {
        woodpecker: cfg.woodpecker.display().to_string(),
        java: java_version(&cfg.java),
        producer: produced,
        producer_process_seconds: producer_seconds,
        consumer: consumed,
        consumer_process_seconds: out.seconds,
        warnings,
        produce_requests,
        server_cpu_produce_seconds: cpu0.zip(cpu1).map(|(a, b)| b - a),
        server_cpu_consume_seconds: cpu1.zip(cpu2).map(|(a, b)| b - a),
    })
}

// --- the run ---------------------------------------------------------------------------------

fn native_variant(
    cfg: &Config,
    entry_size: usize,
    in_flight_bytes: usize,
) -> anyhow::Result<NativeRow> {
    let dir = tempfile::Builder::new()
        .prefix("woodpecker-kafka-native-")
        .tempdir_in(&cfg.dir)
        .with_context(|| format!("creating a temporary directory in {}", cfg.dir.display()))?;
    let bytes = cfg.records * cfg.record_size;
    let entries = bytes.div_ceil(entry_size);
    progress(format_args!(
        "native: {entries} entries of {entry_size} B, at most {} in flight",
        fmt_size(in_flight_bytes)
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let row = rt.block_on(native_run(
        &dir.path().join("data"),
        entry_size,
        entries,
        in_flight_bytes,
        cfg.record_size,
    ))?;
    rt.shutdown_timeout(Duration::from_secs(10));
    progress(format_args!(
        "native: {entry_size} B entries: write {:.1} MiB/s (p50 {} ms, p99 {} ms), read {:.1} MiB/s",
        row.write_mib_per_s,
        fmt_ms(row.latency.p50_ms),
        fmt_ms(row.latency.p99_ms),
        row.read_mib_per_s
    ));
    Ok(row)
}

/// Runs every part of `cfg`.
pub fn run(cfg: &Config) -> anyhow::Result<Report> {
    let date_utc = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let load_before = LoadAvg::read();
    let classpath = if cfg.no_shim {
        None
    } else {
        match &cfg.classpath {
            Some(cp) => Some(cp.clone()),
            None => Some(kafka_tools_classpath()?),
        }
    };
    if !cfg.no_shim && !cfg.woodpecker.exists() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p woodpecker`, or give \
             --woodpecker PATH",
            cfg.woodpecker.display()
        );
    }
    let native = if cfg.no_native {
        Vec::new()
    } else {
        vec![
            native_variant(cfg, cfg.record_size, cfg.in_flight_bytes)?,
            native_variant(cfg, cfg.batch_size, cfg.in_flight_bytes)?,
            native_variant(
                cfg,
                cfg.batch_size,
                PRODUCER_IN_FLIGHT_REQUESTS * cfg.batch_size,
            )?,
        ]
    };
    let shim = match &classpath {
        Some(cp) => Some(shim_run(cfg, cp)?),
        None => None,
    };
    Ok(Report {
        date_utc,
        quick: cfg.quick,
        host: HostInfo::detect(),
        load_before,
        load_after: LoadAvg::read(),
        records: cfg.records,
        record_size: cfg.record_size,
        in_flight_bytes: cfg.in_flight_bytes,
        native,
        shim,
    })
}

// --- output ----------------------------------------------------------------------------------

fn fmt_load(l: Option<LoadAvg>) -> String {
    l.map_or_else(|| "n/a".to_owned(), |l| format!("{:.2}", l.one))
}

fn ratio(num: f64, den: f64) -> String {
    if den > 0.0 {
        format!("{:.0}%", 100.0 * num / den)
    } else {
        "n/a".to_owned()
    }
}

impl Report {
    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = self.write_markdown(&mut s);
        s
    }

    fn write_markdown(&self, s: &mut String) -> std::fmt::Result {
        let h = &self.host;
        writeln!(
            s,
            "## Kafka shim vs native{}\n",
            if self.quick {
                " (--quick smoke run: figures are rough)"
            } else {
                ""
            }
        )?;
        writeln!(s, "| | |\n|---|---|")?;
        writeln!(s, "| date | {} |", self.date_utc)?;
        writeln!(
            s,
            "| host | Linux {}, {} CPUs{} |",
            h.kernel.as_deref().unwrap_or("?"),
            h.cpus,
            h.cpu_model
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        )?;
        writeln!(
            s,
            "| load average (1 min) | {} before, {} after |",
            fmt_load(self.load_before),
            fmt_load(self.load_after)
        )?;
        writeln!(
            s,
            "| workload | {} records of {} B ({:.0} MiB), acks=all / durable |",
            self.records,
            self.record_size,
            (self.records * self.record_size) as f64 / MIB_F
        )?;
        if let Some(shim) = &self.shim {
            writeln!(s, "| woodpecker | `{}` |", shim.woodpecker)?;
            writeln!(s, "| java | {} |", shim.java.as_deref().unwrap_or("?"))?;
            let cpu = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.2} s"));
            writeln!(
                s,
                "| server CPU (user + sys) | {} while producing ({:.1} s producer process), \
                 {} while consuming ({:.1} s consumer process) |",
                cpu(shim.server_cpu_produce_seconds),
                shim.producer_process_seconds,
                cpu(shim.server_cpu_consume_seconds),
                shim.consumer_process_seconds
            )?;
        }

        writeln!(s, "\n### Produce\n")?;
        writeln!(
            s,
            "| path | in flight | entries | MiB/s | records/s | p50 ms | p99 ms | p99.9 ms | max ms |"
        )?;
        writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for r in &self.native {
            writeln!(
                s,
                "| {} | {} | {} | {:.1} | {:.0} | {} | {} | {} | {} |",
                r.label(),
                fmt_size(r.in_flight_bytes),
                r.entries,
                r.write_mib_per_s,
                r.write_records_per_s,
                fmt_ms(r.latency.p50_ms),
                fmt_ms(r.latency.p99_ms),
                fmt_ms(r.latency.p999_ms),
                fmt_ms(r.latency.max_ms)
            )?;
        }
        if let Some(shim) = &self.shim {
            let p = &shim.producer;
            writeln!(
                s,
                "| shim via ProducerPerformance | {PRODUCER_IN_FLIGHT_REQUESTS} requests | {} | {:.1} | {:.0} | {} | {} | {} | {} |",
                shim.produce_requests
                    .map_or_else(|| "?".to_owned(), |n| format!("{n} requests")),
                p.mib_per_s,
                p.records_per_s,
                fmt_ms(p.p50_ms),
                fmt_ms(p.p99_ms),
                fmt_ms(p.p999_ms),
                fmt_ms(p.max_ms)
            )?;
        }

        writeln!(s, "\n### Consume\n")?;
        writeln!(s, "| path | MiB/s | records/s | note |")?;
        writeln!(s, "|---|---:|---:|---|")?;
        for r in &self.native {
            writeln!(
                s,
                "| read-back of {} | {:.1} | {:.0} | LogReader from the earliest entry |",
                r.label_in_flight(),
                r.read_mib_per_s,
                r.read_records_per_s
            )?;
        }
        if let Some(shim) = &self.shim {
            let c = &shim.consumer;
            writeln!(
                s,
                "| shim via ConsumerPerformance | {:.1} | {:.0} | MB.sec: whole run, group join ({:.0} ms) included |",
                c.mib_per_s, c.records_per_s, c.rebalance_ms
            )?;
            writeln!(
                s,
                "| shim via ConsumerPerformance, fetch only | {:.1} | {:.0} | fetch.MB.sec |",
                c.fetch_mib_per_s, c.fetch_records_per_s
            )?;
        }

        if let Some(shim) = &self.shim
            && !self.native.is_empty()
        {
            writeln!(s, "\n### Ratios: shim / native, same run\n")?;
            writeln!(
                s,
                "| against | produce | consume (whole run) | consume (fetch only) |"
            )?;
            writeln!(s, "|---|---:|---:|---:|")?;
            for r in &self.native {
                writeln!(
                    s,
                    "| {} | {} | {} | {} |",
                    r.label_in_flight(),
                    ratio(shim.producer.mib_per_s, r.write_mib_per_s),
                    ratio(shim.consumer.mib_per_s, r.read_mib_per_s),
                    ratio(shim.consumer.fetch_mib_per_s, r.read_mib_per_s)
                )?;
            }
        }
        if let Some(shim) = &self.shim {
            for w in &shim.warnings {
                writeln!(s, "\nConsumerPerformance: {w}")?;
            }
        }
        writeln!(
            s,
            "\nNative: the engine in process with the default local configuration; writes \
             pipelined with at most the given bytes outstanding, latency from issue to durable \
             acknowledgement. Shim: `woodpecker serve` (1 partition) with Kafka's {} and {} \
             (default producer settings: batch.size 16 KiB, linger.ms 0, at most \
             {PRODUCER_IN_FLIGHT_REQUESTS} requests of one batch in flight); producer latency \
             is from send() to acknowledgement, time in the producer's 32 MiB buffer included. \
             MiB throughout (Kafka's tools print MiB as \"MB\").",
            PRODUCER_PERFORMANCE.rsplit('.').next().unwrap_or_default(),
            CONSUMER_PERFORMANCE.rsplit('.').next().unwrap_or_default(),
        )?;
        Ok(())
    }
}

// --- command line ----------------------------------------------------------------------------

/// The `--help` text.
pub const USAGE: &str = "\
kafka_shim: produce/consume throughput and latency through `woodpecker serve` with Kafka's
perf tools (ProducerPerformance, ConsumerPerformance), against the native engine, same run

USAGE: kafka_shim [OPTIONS]

  --records N               records per part (default 200000, 1 KiB each: ~195 MiB)
  --quick                   2000 records (CI smoke; works with debug builds)
  --woodpecker PATH         the woodpecker binary (default: `woodpecker` next to this binary,
                            else target/release/woodpecker)
  --kafka-tools-classpath CP
                            classpath of Kafka's tools (default: `scripts/kafka-tools
                            classpath`, which fetches them from Maven Central once)
  --java PATH               the java launcher (default: java)
  --in-flight-bytes N       native writes outstanding, bytes (default 33554432, a Kafka
                            producer's buffer.memory)
  --dir DIR                 where the temporary data directories go (default: temp dir)
  --no-native               skip the native part
  --no-shim                 skip the shim part
  --json FILE               also write the figures as JSON to FILE
  -h, --help                this text

The Markdown report goes to stdout, progress to stderr.
";

/// Parsed command line of the `kafka_shim` binary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    /// `--records`.
    pub records: Option<usize>,
    /// `--quick`.
    pub quick: bool,
    /// `--woodpecker`.
    pub woodpecker: Option<PathBuf>,
    /// `--kafka-tools-classpath`.
    pub classpath: Option<String>,
    /// `--java`.
    pub java: Option<PathBuf>,
    /// `--in-flight-bytes`.
    pub in_flight_bytes: Option<usize>,
    /// `--dir`.
    pub dir: Option<PathBuf>,
    /// `--no-native`.
    pub no_native: bool,
    /// `--no-shim`.
    pub no_shim: bool,
    /// `--json`.
    pub json: Option<PathBuf>,
    /// `--help`.
    pub help: bool,
}

fn parse_positive(flag: &str, v: &str) -> anyhow::Result<usize> {
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => bail!("{flag} wants a positive integer, got {v:?}"),
    }
}

/// `woodpecker` beside the running executable (cargo puts both in `target/<profile>/`), else
/// `target/release/woodpecker`.
fn default_woodpecker() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("woodpecker")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("target/release/woodpecker"))
}

impl Args {
    /// Parses the arguments after the program name. Accepts `--flag value` and `--flag=value`.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> anyhow::Result<Self> {
        let mut out = Self::default();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let mut value = || -> anyhow::Result<String> {
                match inline.clone() {
                    Some(v) => Ok(v),
                    None => it.next().with_context(|| format!("{flag} needs a value")),
                }
            };
            match flag.as_str() {
                "--quick" => out.quick = true,
                "--no-native" => out.no_native = true,
                "--no-shim" => out.no_shim = true,
                "-h" | "--help" => out.help = true,
                "--records" => out.records = Some(parse_positive("--records", &value()?)?),
                "--in-flight-bytes" => {
                    out.in_flight_bytes = Some(parse_positive("--in-flight-bytes", &value()?)?);
                }
                "--woodpecker" => out.woodpecker = Some(value()?.into()),
                "--kafka-tools-classpath" => out.classpath = Some(value()?),
                "--java" => out.java = Some(value()?.into()),
                "--dir" => out.dir = Some(value()?.into()),
                "--json" => out.json = Some(value()?.into()),
                _ => bail!("unknown argument {arg:?} (see --help)"),
            }
            if inline.is_some()
                && matches!(
                    flag.as_str(),
                    "--quick" | "--no-native" | "--no-shim" | "--help"
                )
            {
                bail!("{flag} takes no value");
            }
        }
        if out.no_native && out.no_shim {
            bail!("--no-native and --no-shim leave nothing to run");
        }
        Ok(out)
    }

    /// The configuration these arguments ask for.
    pub fn config(&self) -> Config {
        let records = self
            .records
            .unwrap_or(if self.quick { 2_000 } else { 200_000 });
        Config {
            quick: self.quick,
            records,
            record_size: KIB,
            batch_size: 16 * KIB,
            in_flight_bytes: self.in_flight_bytes.unwrap_or(32 * MIB),
            dir: self.dir.clone().unwrap_or_else(std::env::temp_dir),
            no_native: self.no_native,
            no_shim: self.no_shim,
            woodpecker: self.woodpecker.clone().unwrap_or_else(default_woodpecker),
            java: self.java.clone().unwrap_or_else(|| PathBuf::from("java")),
            classpath: self.classpath.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_producer_summary() {
        let out = "\
99905 records sent, 19981.0 records/sec (19.51 MB/sec), 1021.6 ms avg latency, 1466.0 ms max latency.
200000 records sent, 20491.803279 records/sec (20.01 MB/sec), 1007.47 ms avg latency, 1466.00 ms max latency, 1003 ms 50th, 1340 ms 95th, 1420 ms 99th, 1459 ms 99.9th.
";
        let p = parse_producer(out).unwrap();
        assert_eq!(p.records, 200_000);
        assert!((p.records_per_s - 20491.803279).abs() < 1e-6);
        assert_eq!(p.mib_per_s, 20.01);
        assert_eq!(p.avg_ms, 1007.47);
        assert_eq!(p.max_ms, 1466.0);
        assert_eq!(
            (p.p50_ms, p.p95_ms, p.p99_ms, p.p999_ms),
            (1003.0, 1340.0, 1420.0, 1459.0)
        );
        assert!(parse_producer("99905 records sent, 19981.0 records/sec").is_err());
    }

    #[test]
    fn parses_the_consumer_summary() {
        let out = "\
start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
2026-11-22 13:40:00:123, 2026-11-22 13:40:05:123, 195.3125, 39.0625, 200000, 40000.0, 3000, 2000, 97.6563, 100000.0
";
        let c = parse_consumer(out).unwrap();
        assert_eq!(c.mib, 195.3125);
        assert_eq!(c.mib_per_s, 39.0625);
        assert_eq!(c.records, 200_000);
        assert_eq!(c.records_per_s, 40000.0);
        assert_eq!(c.rebalance_ms, 3000.0);
        assert_eq!(c.fetch_ms, 2000.0);
        assert_eq!(c.fetch_mib_per_s, 97.6563);
        assert_eq!(c.fetch_records_per_s, 100000.0);
        assert!(parse_consumer("WARNING: nothing").is_err());
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut v: Vec<Duration> = (1..=1000).rev().map(Duration::from_millis).collect();
        let l = Latency::from_samples(&mut v);
        assert_eq!(l.p50_ms, 500.0);
        assert_eq!(l.p99_ms, 990.0);
        assert_eq!(l.p999_ms, 999.0);
        assert_eq!(l.max_ms, 1000.0);
    }

    #[test]
    fn parses_arguments() {
        let a = Args::parse(
            [
                "--quick",
                "--records=10",
                "--woodpecker",
                "w",
                "--no-native",
            ]
            .iter()
            .map(|s| (*s).to_owned()),
        )
        .unwrap();
        assert!(a.quick && a.no_native && !a.no_shim);
        let cfg = a.config();
        assert_eq!(cfg.records, 10);
        assert_eq!(cfg.woodpecker, PathBuf::from("w"));
        assert_eq!(cfg.in_flight_bytes, 32 * MIB);
        assert_eq!(
            Args::parse(["--quick".to_owned()])
                .unwrap()
                .config()
                .records,
            2_000
        );
        assert!(Args::parse(["--records".to_owned(), "0".to_owned()]).is_err());
        assert!(Args::parse(["--quick=1".to_owned()]).is_err());
        assert!(Args::parse(["--bogus".to_owned()]).is_err());
    }
}
