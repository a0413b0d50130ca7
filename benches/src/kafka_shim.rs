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
//! * **Shim via librdkafka** (the headline shim figure): the `woodpecker` binary, `serve`
//!   with `--kafka-partitions 1` on port 0 and a fresh data directory; the topic is created
//!   by auto-create on the producer's first Metadata request. librdkafka 1.9.2's own
//!   benchmark tool `rdkafka_performance` (built by `scripts/rdkafka-perf`) produces the
//!   records to partition 0 (`acks=all`, 1 KiB records, `linger.ms=5`, librdkafka's other
//!   defaults: `batch.size` 1 MB, up to 1,000,000 requests in flight per connection,
//!   unthrottled), then reads them back with its simple consumer (`-C -p 0 -o beginning`).
//!   Its latency mode (`-l`) stamps every payload and copies it, which costs a sizeable
//!   share of the unthrottled throughput, so latency comes from a second, short run at a
//!   fixed rate (`-r`) into another topic, the per-message latencies (`-A FILE`, from
//!   `produce()` to the delivery report) summarised here.
//! * **Shim via Kafka's Java tools**: the same on another fresh server with Kafka's
//!   `ProducerPerformance` (`acks=all`, 1 KiB records, unthrottled) and then
//!   `ConsumerPerformance`; their summaries are parsed. On a small machine the JVM producer
//!   takes more CPU than the shim, so these rows measure the client as much as the server.
//!
//! Each server is stopped with SIGTERM. Kafka's Java tools count MB as MiB (2^20 bytes); so
//! does this report. `rdkafka_performance` counts MB as 10^6 bytes; its figures are converted.
//! ProducerPerformance's latency is from `send()` to acknowledgement, including time queued
//! in the producer's buffer.
//!
//! The binary `kafka_shim` (`benches/src/bin/kafka_shim.rs`) drives [`run`] and prints
//! [`Report::to_markdown`].

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::args::Flags;
use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use wal::clock::SystemClock;
use wal::config::Config as WalConfig;
use wal::engine::Engine;
use wal::message::{LogMessageId, WriteMessage};

use crate::ceilings::{
    HostInfo, KIB, Latency, LoadAvg, MIB, fmt_ms, fmt_size, random_bytes, write_run_rows,
};
use crate::serve::{Serve, tail};

const MIB_F: f64 = MIB as f64;

/// How long one Kafka tool may run before it is killed.
const TOOL_TIMEOUT: Duration = Duration::from_secs(900);

/// The Kafka tool classes (kafka-tools 3.x).
pub const PRODUCER_PERFORMANCE: &str = "org.apache.kafka.tools.ProducerPerformance";
/// See [`PRODUCER_PERFORMANCE`].
pub const CONSUMER_PERFORMANCE: &str = "org.apache.kafka.tools.ConsumerPerformance";
/// A Kafka producer's default `max.in.flight.requests.per.connection`: with one partition
/// and `linger.ms` 0 each request carries one batch, so at most this many batches are in
/// flight through the shim.
pub const PRODUCER_IN_FLIGHT_REQUESTS: usize = 5;
/// `linger.ms` given to `rdkafka_performance` (librdkafka 1.9's default too).
pub const RDKAFKA_LINGER_MS: u32 = 5;
/// `batch.size` of librdkafka 1.9 (its default, not set): bytes per partition batch.
pub const RDKAFKA_BATCH_SIZE: usize = 1_000_000;
/// The issue's target for the headline ratio (shim produce ÷ native one-record entries).
pub const HEADLINE_TARGET: f64 = 0.85;

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
    /// Skip both shim parts.
    pub no_shim: bool,
    /// Skip the shim part with `rdkafka_performance`.
    pub no_rdkafka: bool,
    /// Skip the shim part with Kafka's Java tools.
    pub no_java: bool,
    /// The `rdkafka_performance` binary; `None` asks `scripts/rdkafka-perf path`.
    pub rdkafka_perf: Option<PathBuf>,
    /// Message rate of the `rdkafka_performance` latency run (messages per second).
    pub rdkafka_latency_rate: usize,
    /// Messages of the `rdkafka_performance` latency run.
    pub rdkafka_latency_records: usize,
    /// The `woodpecker` binary.
    pub woodpecker: PathBuf,
    /// The Java launcher.
    pub java: PathBuf,
    /// The classpath of Kafka's tools; `None` asks `scripts/kafka-tools classpath`.
    pub classpath: Option<String>,
}

// --- figures ---------------------------------------------------------------------------------

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

/// `rdkafka_performance`'s final producer line (`% N messages produced (B bytes), D
/// delivered (offset O, F failed) in T ms: R msgs/s and X MB/s, E produce failures, Q in
/// queue, ... compression`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RdkafkaProducerSummary {
    /// Messages produced.
    pub messages: u64,
    /// Bytes produced.
    pub bytes: u64,
    /// Messages acknowledged without error.
    pub delivered: u64,
    /// Offset of the last delivered message.
    pub last_offset: i64,
    /// Messages whose delivery failed.
    pub failed: u64,
    /// From the first `produce()` to the last delivery report.
    pub elapsed_ms: u64,
    /// Delivered messages per second.
    pub msgs_per_s: f64,
    /// Delivered bytes per second in 10^6 bytes (the tool's "MB/s").
    pub mb_per_s: f64,
    /// The same in MiB (2^20 bytes) per second.
    pub mib_per_s: f64,
    /// `produce()` calls refused with a full queue (backpressure, retried).
    pub queue_full: u64,
}

/// `rdkafka_performance`'s final consumer line (`% N messages (B bytes) consumed in T ms: R
/// msgs/s (X MB/s)`); its clock starts at the first message received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RdkafkaConsumerSummary {
    /// Messages consumed.
    pub messages: u64,
    /// Bytes consumed.
    pub bytes: u64,
    /// From the first message received to the last.
    pub elapsed_ms: u64,
    /// Messages per second.
    pub msgs_per_s: f64,
    /// 10^6 bytes per second (the tool's "MB/s").
    pub mb_per_s: f64,
    /// The same in MiB per second.
    pub mib_per_s: f64,
}

/// The shim part with `rdkafka_performance`.
#[derive(Debug, Clone, Serialize)]
pub struct RdkafkaSection {
    /// The `woodpecker` binary used.
    pub woodpecker: String,
    /// The `rdkafka_performance` binary used.
    pub rdkafka_perf: String,
    /// `librdkafka version ...` from its usage text.
    pub librdkafka_version: Option<String>,
    /// The producer command's arguments (without the binary and broker address).
    pub producer_args: String,
    /// The unthrottled producer run.
    pub producer: RdkafkaProducerSummary,
    /// Wall time of the producer process.
    pub producer_process_seconds: f64,
    /// Produce requests the server counted during the producer run, when readable.
    pub produce_requests: Option<u64>,
    /// CPU time of the server process during the producer run (user + system), Linux only.
    pub server_cpu_produce_seconds: Option<f64>,
    /// The consumer command's arguments.
    pub consumer_args: String,
    /// The consumer run.
    pub consumer: RdkafkaConsumerSummary,
    /// Wall time of the consumer process (connection and first fetch included).
    pub consumer_process_seconds: f64,
    /// CPU time of the server process during the consumer run.
    pub server_cpu_consume_seconds: Option<f64>,
    /// The latency run's arguments.
    pub latency_args: String,
    /// Offered rate of the latency run (`-r`), messages per second.
    pub latency_rate: usize,
    /// The latency run (fixed rate, `-l`).
    pub latency_producer: RdkafkaProducerSummary,
    /// Its per-message latency, `produce()` to delivery report.
    pub latency: Latency,
    /// Latency samples read.
    pub latency_samples: usize,
}

/// The shim part with Kafka's Java tools.
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
    /// Through the shim with `rdkafka_performance` (the headline shim figures).
    pub rdkafka: Option<RdkafkaSection>,
    /// Through the shim with Kafka's Java tools.
    pub shim: Option<ShimSection>,
}

fn progress(args: std::fmt::Arguments<'_>) {
    eprintln!("[kafka_shim] {args}");
}

// --- native ----------------------------------------------------------------------------------

/// The configuration `woodpecker serve` uses without `--config` ([`wal::config::EMBEDDED_DEFAULT_YAML`]), with
/// the same `WOODPECKER_CONFIG__*` environment overrides, on `data_dir`.
pub fn default_wal_config(data_dir: &Path) -> anyhow::Result<WalConfig> {
    let mut cfg =
        WalConfig::from_yaml_str_with_env(wal::config::EMBEDDED_DEFAULT_YAML, std::env::vars())
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
/// A finished process: its output and wall time.
#[derive(Debug)]
pub(crate) struct Finished {
    /// Standard output.
    pub(crate) stdout: String,
    /// Standard error.
    pub(crate) stderr: String,
    /// Wall time.
    pub(crate) seconds: f64,
}

/// Runs `cmd` to completion (killing it after `timeout`), capturing its output; an error
/// (with the end of its stderr) when it fails.
pub(crate) fn run_captured(
    mut cmd: Command,
    what: &str,
    timeout: Duration,
) -> anyhow::Result<Finished> {
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

/// `bash scripts/<script> <arg>`, the script found beside this crate's sources, else
/// relative to the current directory.
fn script_command(script: &str, arg: &str) -> Command {
    let in_tree = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(script);
    let path = if in_tree.exists() {
        in_tree
    } else {
        Path::new("scripts").join(script)
    };
    let mut cmd = Command::new("bash");
    cmd.arg(path).arg(arg);
    cmd
}

/// The classpath `scripts/kafka-tools classpath` prints (fetching the jars if needed).
pub fn kafka_tools_classpath() -> anyhow::Result<String> {
    let out = run_captured(
        script_command("kafka-tools", "classpath"),
        "scripts/kafka-tools classpath",
        TOOL_TIMEOUT,
    )?;
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
    let server = Serve::start(&cfg.woodpecker, &data_dir, dir.path().join("serve.log"))?;
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

// --- rdkafka_performance ---------------------------------------------------------------------

/// The trimmed text between the first `start` in `line` and the next `end` after it.
fn between<'a>(line: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &line[line.find(start)? + start.len()..];
    Some(rest[..rest.find(end)?].trim())
}

/// 10^6 bytes (`rdkafka_performance`'s MB) per second to MiB per second.
fn mb_to_mib(mb: f64) -> f64 {
    mb * 1e6 / MIB_F
}

/// Parses the last producer summary line `rdkafka_performance -P` printed (without `-u`);
/// see [`RdkafkaProducerSummary`].
pub fn parse_rdkafka_producer(stdout: &str) -> anyhow::Result<RdkafkaProducerSummary> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("% ") && l.contains(" messages produced ("))
        .with_context(|| {
            format!(
                "no summary line in rdkafka_performance's output:\n{}",
                tail(stdout, 10)
            )
        })?;
    let bad = || anyhow!("unexpected rdkafka_performance producer line: {line:?}");
    let num = |start: &str, end: &str| -> anyhow::Result<f64> {
        between(line, start, end)
            .and_then(|v| v.parse().ok())
            .ok_or_else(bad)
    };
    let (offset, failed) = between(line, " delivered (offset ", " failed)")
        .and_then(|v| v.split_once(", "))
        .ok_or_else(bad)?;
    let mb_per_s = num(" msgs/s and ", " MB/s")?;
    Ok(RdkafkaProducerSummary {
        messages: num("% ", " messages produced")? as u64,
        bytes: num(" messages produced (", " bytes)")? as u64,
        delivered: num(" bytes), ", " delivered")? as u64,
        last_offset: offset.trim().parse().map_err(|_| bad())?,
        failed: failed.trim().parse().map_err(|_| bad())?,
        elapsed_ms: num(" failed) in ", "ms: ")? as u64,
        msgs_per_s: num("ms: ", " msgs/s")?,
        mb_per_s,
        mib_per_s: mb_to_mib(mb_per_s),
        queue_full: num(" MB/s, ", " produce failures")? as u64,
    })
}

/// Parses the last consumer summary line `rdkafka_performance -C` printed (without `-u`);
/// see [`RdkafkaConsumerSummary`].
pub fn parse_rdkafka_consumer(stdout: &str) -> anyhow::Result<RdkafkaConsumerSummary> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("% ") && l.contains(" consumed in "))
        .with_context(|| {
            format!(
                "no summary line in rdkafka_performance's output:\n{}",
                tail(stdout, 10)
            )
        })?;
    let bad = || anyhow!("unexpected rdkafka_performance consumer line: {line:?}");
    let num = |start: &str, end: &str| -> anyhow::Result<f64> {
        between(line, start, end)
            .and_then(|v| v.parse().ok())
            .ok_or_else(bad)
    };
    let mb_per_s = num(" msgs/s (", " MB/s)")?;
    Ok(RdkafkaConsumerSummary {
        messages: num("% ", " messages (")? as u64,
        bytes: num(" messages (", " bytes)")? as u64,
        elapsed_ms: num(" consumed in ", "ms: ")? as u64,
        msgs_per_s: num("ms: ", " msgs/s")?,
        mb_per_s,
        mib_per_s: mb_to_mib(mb_per_s),
    })
}

/// Parses the per-message latency file `rdkafka_performance -l -A FILE` writes (one
/// latency in microseconds a line).
pub fn parse_rdkafka_latencies(text: &str) -> anyhow::Result<Vec<Duration>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse::<u64>()
                .map(Duration::from_micros)
                .with_context(|| format!("bad latency sample {l:?}"))
        })
        .collect()
}

/// The path `scripts/rdkafka-perf path` prints (building the tool if needed).
pub fn rdkafka_perf_path() -> anyhow::Result<PathBuf> {
    let out = run_captured(
        script_command("rdkafka-perf", "path"),
        "scripts/rdkafka-perf path",
        TOOL_TIMEOUT,
    )?;
    eprint!("{}", out.stderr);
    let path = out.stdout.trim();
    if path.is_empty() {
        bail!("scripts/rdkafka-perf path printed nothing");
    }
    Ok(PathBuf::from(path))
}

/// `librdkafka version 1.9.2 (0x010902ff)` from the tool's usage text.
fn librdkafka_version(tool: &Path) -> Option<String> {
    let out = Command::new(tool).stdin(Stdio::null()).output().ok()?;
    [out.stdout, out.stderr]
        .iter()
        .flat_map(|b| {
            String::from_utf8_lossy(b)
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|l| l.starts_with("librdkafka version"))
        .map(|l| l.trim().to_owned())
}

/// Forwards the tool's stderr, less librdkafka's warnings about the consumer properties
/// the tool sets on its producer too.
fn forward_rdkafka_stderr(stderr: &str) {
    let lines = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("|CONFWARN|"));
    for line in lines {
        progress(format_args!("rdkafka_performance: {line}"));
    }
}

fn rdkafka_run(cfg: &Config, tool: &Path) -> anyhow::Result<RdkafkaSection> {
    let dir = tempfile::Builder::new()
        .prefix("woodpecker-kafka-rdkafka-")
        .tempdir_in(&cfg.dir)
        .with_context(|| format!("creating a temporary directory in {}", cfg.dir.display()))?;
    let server = Serve::start(
        &cfg.woodpecker,
        &dir.path().join("data"),
        dir.path().join("serve.log"),
    )?;
    progress(format_args!(
        "rdkafka: {} serve listening on {}",
        cfg.woodpecker.display(),
        server.kafka_addr
    ));
    let topic = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let linger = format!("linger.ms={RDKAFKA_LINGER_MS}");
    let with_server = |e: anyhow::Error| anyhow!("{e:#}\nserver log:\n{}", server.log_tail());
    let command = |args: &[String]| {
        let mut cmd = Command::new(tool);
        cmd.args(args).arg("-b").arg(&server.kafka_addr);
        cmd
    };

    // Unthrottled throughput.
    let producer_args: Vec<String> = [
        "-P",
        "-t",
        &topic,
        "-p",
        "0",
        "-s",
        &cfg.record_size.to_string(),
        "-c",
        &cfg.records.to_string(),
        "-X",
        "acks=all",
        "-X",
        &linger,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    progress(format_args!(
        "rdkafka: producer, {} records of {} B, acks=all, {linger}",
        cfg.records, cfg.record_size
    ));
    let cpu0 = server.cpu_seconds();
    let out = run_captured(
        command(&producer_args),
        "rdkafka_performance -P",
        TOOL_TIMEOUT,
    )
    .map_err(with_server)?;
    let cpu1 = server.cpu_seconds();
    forward_rdkafka_stderr(&out.stderr);
    let producer = parse_rdkafka_producer(&out.stdout)?;
    let producer_process_seconds = out.seconds;
    let produce_requests = server
        .metric("woodpecker_kafka_requests_total{api=\"Produce\"}")
        .map(|v| v as u64);
    progress(format_args!(
        "rdkafka: produced {:.1} MiB/s ({:.2} MB/s), {:.0} msgs/s",
        producer.mib_per_s, producer.mb_per_s, producer.msgs_per_s
    ));
    if producer.delivered != cfg.records as u64 || producer.failed != 0 {
        bail!(
            "rdkafka_performance delivered {} of {} records ({} failed)",
            producer.delivered,
            cfg.records,
            producer.failed
        );
    }

    // Read-back.
    let consumer_args: Vec<String> = [
        "-C",
        "-t",
        &topic,
        "-p",
        "0",
        "-o",
        "beginning",
        "-c",
        &cfg.records.to_string(),
        "-e",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    progress(format_args!("rdkafka: consumer, {} records", cfg.records));
    let out = run_captured(
        command(&consumer_args),
        "rdkafka_performance -C",
        TOOL_TIMEOUT,
    )
    .map_err(with_server)?;
    let cpu2 = server.cpu_seconds();
    forward_rdkafka_stderr(&out.stderr);
    let consumer = parse_rdkafka_consumer(&out.stdout)?;
    let consumer_process_seconds = out.seconds;
    progress(format_args!(
        "rdkafka: consumed {:.1} MiB/s ({:.2} MB/s), {} records",
        consumer.mib_per_s, consumer.mb_per_s, consumer.messages
    ));
    if consumer.messages != cfg.records as u64 {
        bail!(
            "rdkafka_performance consumed {} of {} records",
            consumer.messages,
            cfg.records
        );
    }

    // Latency at a fixed rate, into another topic.
    let latency_file = dir.path().join("latency.txt");
    let latency_records = cfg.rdkafka_latency_records.min(cfg.records);
    let mut latency_args: Vec<String> = [
        "-P",
        "-t",
        &format!("{topic}-latency"),
        "-p",
        "0",
        "-s",
        &cfg.record_size.to_string(),
        "-c",
        &latency_records.to_string(),
        "-r",
        &cfg.rdkafka_latency_rate.to_string(),
        "-X",
        "acks=all",
        "-X",
        &linger,
        "-l",
        "-A",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let shown_latency_args = format!("{} FILE", latency_args.join(" "));
    latency_args.push(latency_file.to_string_lossy().into_owned());
    progress(format_args!(
        "rdkafka: latency run, {latency_records} records at {} msgs/s",
        cfg.rdkafka_latency_rate
    ));
    let out = run_captured(
        command(&latency_args),
        "rdkafka_performance -P -l",
        TOOL_TIMEOUT,
    )
    .map_err(with_server)?;
    forward_rdkafka_stderr(&out.stderr);
    let latency_producer = parse_rdkafka_producer(&out.stdout)?;
    let text = std::fs::read_to_string(&latency_file)
        .with_context(|| format!("reading {}", latency_file.display()))?;
    let mut samples = parse_rdkafka_latencies(&text)?;
    let latency_samples = samples.len();
    let latency = Latency::from_samples(&mut samples);
    progress(format_args!(
        "rdkafka: latency at {:.0} msgs/s: p50 {} ms, p99 {} ms, max {} ms",
        latency_producer.msgs_per_s,
        fmt_ms(latency.p50_ms),
        fmt_ms(latency.p99_ms),
        fmt_ms(latency.max_ms)
    ));
    if latency_producer.delivered != latency_records as u64 || latency_samples == 0 {
        bail!(
            "rdkafka_performance's latency run delivered {} of {latency_records} records \
             ({latency_samples} latency samples)",
            latency_producer.delivered
        );
    }
    server.stop()?;
    Ok(RdkafkaSection {
        woodpecker: cfg.woodpecker.display().to_string(),
        rdkafka_perf: tool.display().to_string(),
        librdkafka_version: librdkafka_version(tool),
        producer_args: producer_args.join(" "),
        producer,
        producer_process_seconds,
        produce_requests,
        server_cpu_produce_seconds: cpu0.zip(cpu1).map(|(a, b)| b - a),
        consumer_args: consumer_args.join(" "),
        consumer,
        consumer_process_seconds,
        server_cpu_consume_seconds: cpu1.zip(cpu2).map(|(a, b)| b - a),
        latency_args: shown_latency_args,
        latency_rate: cfg.rdkafka_latency_rate,
        latency_producer,
        latency,
        latency_samples,
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
    let classpath = if cfg.no_shim || cfg.no_java {
        None
    } else {
        match &cfg.classpath {
            Some(cp) => Some(cp.clone()),
            None => Some(kafka_tools_classpath()?),
        }
    };
    let rdkafka_perf = if cfg.no_shim || cfg.no_rdkafka {
        None
    } else {
        match &cfg.rdkafka_perf {
            Some(p) => Some(p.clone()),
            None => Some(rdkafka_perf_path()?),
        }
    };
    if (classpath.is_some() || rdkafka_perf.is_some()) && !cfg.woodpecker.exists() {
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
    let rdkafka = match &rdkafka_perf {
        Some(tool) => Some(rdkafka_run(cfg, tool)?),
        None => None,
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
        rdkafka,
        shim,
    })
}

// --- output ----------------------------------------------------------------------------------

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

    /// The native row with one record per entry (the headline's denominator).
    fn native_per_record(&self) -> Option<&NativeRow> {
        self.native
            .iter()
            .find(|r| r.entry_size == self.record_size)
    }

    /// Shim (rdkafka_performance) produce MiB/s ÷ native one-record-entry write MiB/s.
    pub fn headline_ratio(&self) -> Option<f64> {
        let rd = self.rdkafka.as_ref()?;
        let native = self.native_per_record()?;
        (native.write_mib_per_s > 0.0).then(|| rd.producer.mib_per_s / native.write_mib_per_s)
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
        if let (Some(rd), Some(native), Some(r)) = (
            &self.rdkafka,
            self.native_per_record(),
            self.headline_ratio(),
        ) {
            writeln!(
                s,
                "**Headline:** shim produce via rdkafka_performance {:.1} MiB/s ÷ native {} \
                 entries {:.1} MiB/s = **{:.0}%** (target ≥ {:.0}%: {}).\n",
                rd.producer.mib_per_s,
                fmt_size(native.entry_size),
                native.write_mib_per_s,
                100.0 * r,
                100.0 * HEADLINE_TARGET,
                if r >= HEADLINE_TARGET {
                    "met"
                } else {
                    "not met"
                }
            )?;
        }
        let cpu = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.2} s"));
        write_run_rows(s, &self.date_utc, h, self.load_before, self.load_after)?;
        writeln!(
            s,
            "| workload | {} records of {} B ({:.0} MiB), acks=all / durable |",
            self.records,
            self.record_size,
            (self.records * self.record_size) as f64 / MIB_F
        )?;
        let woodpecker = self
            .rdkafka
            .as_ref()
            .map(|r| &r.woodpecker)
            .or(self.shim.as_ref().map(|s| &s.woodpecker));
        if let Some(w) = woodpecker {
            writeln!(s, "| woodpecker | `{w}` |")?;
        }
        if let Some(rd) = &self.rdkafka {
            writeln!(
                s,
                "| rdkafka_performance | {}; producer `{}`; consumer `{}`; latency run `{}` |",
                rd.librdkafka_version.as_deref().unwrap_or("?"),
                rd.producer_args,
                rd.consumer_args,
                rd.latency_args
            )?;
            writeln!(
                s,
                "| server CPU (user + sys), rdkafka_performance | {} while producing ({:.1} s \
                 producer process), {} while consuming ({:.1} s consumer process) |",
                cpu(rd.server_cpu_produce_seconds),
                rd.producer_process_seconds,
                cpu(rd.server_cpu_consume_seconds),
                rd.consumer_process_seconds
            )?;
        }
        if let Some(shim) = &self.shim {
            writeln!(s, "| java | {} |", shim.java.as_deref().unwrap_or("?"))?;
            writeln!(
                s,
                "| server CPU (user + sys), Java tools | {} while producing ({:.1} s producer \
                 process), {} while consuming ({:.1} s consumer process) |",
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
        let requests =
            |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| format!("{n} requests"));
        if let Some(rd) = &self.rdkafka {
            let p = &rd.producer;
            writeln!(
                s,
                "| **shim via rdkafka_performance** | 1 MB batches, linger {RDKAFKA_LINGER_MS} ms | {} | **{:.1}** | {:.0} | – | – | – | – |",
                requests(rd.produce_requests),
                p.mib_per_s,
                p.msgs_per_s
            )?;
            let l = &rd.latency;
            writeln!(
                s,
                "| shim via rdkafka_performance -l, {} msgs/s offered | 1 MB batches, linger {RDKAFKA_LINGER_MS} ms | {} records | {:.1} | {:.0} | {} | {} | {} | {} |",
                rd.latency_rate,
                rd.latency_samples,
                rd.latency_producer.mib_per_s,
                rd.latency_producer.msgs_per_s,
                fmt_ms(l.p50_ms),
                fmt_ms(l.p99_ms),
                fmt_ms(l.p999_ms),
                fmt_ms(l.max_ms)
            )?;
        }
        if let Some(shim) = &self.shim {
            let p = &shim.producer;
            writeln!(
                s,
                "| shim via ProducerPerformance | {PRODUCER_IN_FLIGHT_REQUESTS} requests | {} | {:.1} | {:.0} | {} | {} | {} | {} |",
                requests(shim.produce_requests),
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
        if let Some(rd) = &self.rdkafka {
            let c = &rd.consumer;
            writeln!(
                s,
                "| **shim via rdkafka_performance** | **{:.1}** | {:.0} | -C, partition 0 from the beginning; clock starts at the first message |",
                c.mib_per_s, c.msgs_per_s
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

        if (self.rdkafka.is_some() || self.shim.is_some()) && !self.native.is_empty() {
            writeln!(s, "\n### Ratios: shim / native, same run\n")?;
            writeln!(
                s,
                "| against | rdkafka_performance produce | rdkafka_performance consume | \
                 ProducerPerformance | ConsumerPerformance (whole run) | ConsumerPerformance \
                 (fetch only) |"
            )?;
            writeln!(s, "|---|---:|---:|---:|---:|---:|")?;
            let dash = || "–".to_owned();
            for r in &self.native {
                let (rp, rc) = self.rdkafka.as_ref().map_or_else(
                    || (dash(), dash()),
                    |rd| {
                        (
                            ratio(rd.producer.mib_per_s, r.write_mib_per_s),
                            ratio(rd.consumer.mib_per_s, r.read_mib_per_s),
                        )
                    },
                );
                let (jp, jc, jf) = self.shim.as_ref().map_or_else(
                    || (dash(), dash(), dash()),
                    |shim| {
                        (
                            ratio(shim.producer.mib_per_s, r.write_mib_per_s),
                            ratio(shim.consumer.mib_per_s, r.read_mib_per_s),
                            ratio(shim.consumer.fetch_mib_per_s, r.read_mib_per_s),
                        )
                    },
                );
                writeln!(
                    s,
                    "| {} | {rp} | {rc} | {jp} | {jc} | {jf} |",
                    r.label_in_flight()
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
             acknowledgement. Each shim part runs its own `woodpecker serve` (1 partition, \
             fresh data directory). rdkafka_performance (librdkafka 1.9.2): acks=all, \
             linger.ms {RDKAFKA_LINGER_MS}, otherwise librdkafka's defaults (batch.size {} B, \
             up to 1,000,000 requests in flight, 100,000 messages / 1 GiB queued), unthrottled; \
             its MB (10^6 B) converted to MiB. Its latency (produce() to delivery report) \
             comes from a separate run at a fixed offered rate, since its latency mode copies \
             and stamps every message and costs unthrottled throughput. Kafka's {} and {} \
             (default producer settings: batch.size 16 KiB, linger.ms 0, at most \
             {PRODUCER_IN_FLIGHT_REQUESTS} requests of one batch in flight); their producer \
             latency is from send() to acknowledgement, time in the producer's 32 MiB buffer \
             included; on a small host the JVM takes more CPU than the shim. MiB throughout \
             (Kafka's Java tools print MiB as \"MB\").",
            RDKAFKA_BATCH_SIZE,
            PRODUCER_PERFORMANCE.rsplit('.').next().unwrap_or_default(),
            CONSUMER_PERFORMANCE.rsplit('.').next().unwrap_or_default(),
        )?;
        Ok(())
    }
}

// --- command line ----------------------------------------------------------------------------

/// The `--help` text.
pub const USAGE: &str = "\
kafka_shim: produce/consume throughput and latency through `woodpecker serve` with Kafka
perf tools (librdkafka's rdkafka_performance; Kafka's Java ProducerPerformance and
ConsumerPerformance), against the native engine, same run

USAGE: kafka_shim [OPTIONS]

  --records N               records per part (default 200000, 1 KiB each: ~195 MiB)
  --quick                   2000 records (CI smoke; works with debug builds)
  --woodpecker PATH         the woodpecker binary (default: `woodpecker` next to this binary,
                            else target/release/woodpecker)
  --kafka-tools-classpath CP
                            classpath of Kafka's tools (default: `scripts/kafka-tools
                            classpath`, which fetches them from Maven Central once)
  --java PATH               the java launcher (default: java)
  --rdkafka-perf PATH       librdkafka's rdkafka_performance (default: `scripts/rdkafka-perf
                            path`, which builds it once from the vendored librdkafka 1.9.2)
  --rdkafka-latency-rate N  messages/s of the rdkafka_performance latency run (default 1000)
  --rdkafka-latency-records N
                            messages of the latency run (default 5000, at most --records)
  --in-flight-bytes N       native writes outstanding, bytes (default 33554432, a Kafka
                            producer's buffer.memory)
  --dir DIR                 where the temporary data directories go (default: temp dir)
  --no-native               skip the native part
  --no-shim                 skip both shim parts
  --no-rdkafka              skip the shim part with rdkafka_performance
  --no-java                 skip the shim part with Kafka's Java tools
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
    /// `--no-rdkafka`.
    pub no_rdkafka: bool,
    /// `--no-java`.
    pub no_java: bool,
    /// `--rdkafka-perf`.
    pub rdkafka_perf: Option<PathBuf>,
    /// `--rdkafka-latency-rate`.
    pub rdkafka_latency_rate: Option<usize>,
    /// `--rdkafka-latency-records`.
    pub rdkafka_latency_records: Option<usize>,
    /// `--json`.
    pub json: Option<PathBuf>,
    /// `--help`.
    pub help: bool,
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
        let mut flags = Flags::new(args);
        while let Some(flag) = flags.next_flag() {
            match flag.as_str() {
                "--quick" => out.quick = true,
                "--no-native" => out.no_native = true,
                "--no-shim" => out.no_shim = true,
                "--no-rdkafka" => out.no_rdkafka = true,
                "--no-java" => out.no_java = true,
                "--rdkafka-perf" => out.rdkafka_perf = Some(flags.value()?.into()),
                "--rdkafka-latency-rate" => {
                    out.rdkafka_latency_rate = Some(flags.positive()?);
                }
                "--rdkafka-latency-records" => {
                    out.rdkafka_latency_records = Some(flags.positive()?);
                }
                "-h" | "--help" => out.help = true,
                "--records" => out.records = Some(flags.positive()?),
                "--in-flight-bytes" => {
                    out.in_flight_bytes = Some(flags.positive()?);
                }
                "--woodpecker" => out.woodpecker = Some(flags.value()?.into()),
                "--kafka-tools-classpath" => out.classpath = Some(flags.value()?),
                "--java" => out.java = Some(flags.value()?.into()),
                "--dir" => out.dir = Some(flags.value()?.into()),
                "--json" => out.json = Some(flags.value()?.into()),
                _ => bail!("unknown argument {flag:?} (see --help)"),
            }
            flags.check_switch(&[
                "--quick",
                "--no-native",
                "--no-shim",
                "--no-rdkafka",
                "--no-java",
                "--help",
            ])?;
        }
        if out.no_native && (out.no_shim || (out.no_rdkafka && out.no_java)) {
            bail!(
                "--no-native with --no-shim (or --no-rdkafka and --no-java) leaves nothing to run"
            );
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
            no_rdkafka: self.no_rdkafka,
            no_java: self.no_java,
            rdkafka_perf: self.rdkafka_perf.clone(),
            rdkafka_latency_rate: self.rdkafka_latency_rate.unwrap_or(1_000),
            rdkafka_latency_records: self.rdkafka_latency_records.unwrap_or(5_000),
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
    fn parses_the_rdkafka_producer_summary() {
        // Captured from `rdkafka_performance -P -t T -p 0 -b ADDR -s 1024 -c 200000 -X
        // acks=all -X linger.ms=5` (librdkafka 1.9.2) against `woodpecker serve`.
        let out = "\
% Sending 200000 messages of size 1024 bytes
% 200000 messages produced (204800000 bytes), 152784 delivered (offset 152783, 0 failed) in 1000ms: 152654 msgs/s and 156.32 MB/s, 62 produce failures, 47216 in queue, no compression
% 62 backpressures for 200000 produce calls: 0.031% backpressure rate
% 200000 messages produced (204800000 bytes), 200000 delivered (offset 199999, 0 failed) in 1122ms: 178241 msgs/s and 182.52 MB/s, 62 produce failures, 0 in queue, no compression
";
        let p = parse_rdkafka_producer(out).unwrap();
        assert_eq!(
            p,
            RdkafkaProducerSummary {
                messages: 200_000,
                bytes: 204_800_000,
                delivered: 200_000,
                last_offset: 199_999,
                failed: 0,
                elapsed_ms: 1122,
                msgs_per_s: 178_241.0,
                mb_per_s: 182.52,
                mib_per_s: 182.52e6 / MIB_F,
                queue_full: 62,
            }
        );
        assert!((p.mib_per_s - 174.06).abs() < 0.01);
        assert!(parse_rdkafka_producer("% Sending 200000 messages of size 1024 bytes").is_err());
        assert!(
            parse_rdkafka_producer(
                "% 2 messages produced (2048 bytes), x delivered (offset 1, 0 failed) in 1ms: 2 msgs/s and 2.05 MB/s, 0 produce failures, 0 in queue, no compression"
            )
            .is_err()
        );
    }

    #[test]
    fn parses_the_rdkafka_consumer_summary() {
        // Captured from `rdkafka_performance -C -t T -p 0 -b ADDR -o beginning -c 200000 -e`.
        let out = "\
% 0 messages (0 bytes) consumed in 0ms: 0 msgs/s (0.00 MB/s)
% 76393 messages (78226432 bytes) consumed in 1015ms: 75215 msgs/s (77.02 MB/s)
% Consumer reached end of bench [0] message queue at offset 200000
% 200000 messages (204800000 bytes) consumed in 2847ms: 70247 msgs/s (71.93 MB/s)
% Average application fetch latency: 16us
";
        let c = parse_rdkafka_consumer(out).unwrap();
        assert_eq!(
            c,
            RdkafkaConsumerSummary {
                messages: 200_000,
                bytes: 204_800_000,
                elapsed_ms: 2847,
                msgs_per_s: 70_247.0,
                mb_per_s: 71.93,
                mib_per_s: 71.93e6 / MIB_F,
            }
        );
        // The latency suffix of `-l` runs is ignored.
        let l = parse_rdkafka_consumer(
            "% 10 messages (10240 bytes) consumed in 5ms: 2000 msgs/s (2.05 MB/s), latency curr/avg/lo/hi 1.00/2.00/0.50/3.00ms",
        )
        .unwrap();
        assert_eq!((l.messages, l.mb_per_s), (10, 2.05));
        assert!(parse_rdkafka_consumer("% Average application fetch latency: 16us").is_err());
    }

    #[test]
    fn parses_rdkafka_latency_samples() {
        let mut v = parse_rdkafka_latencies("439031\n8944\n\n155027\n").unwrap();
        assert_eq!(v.len(), 3);
        let l = Latency::from_samples(&mut v);
        assert_eq!(l.p50_ms, 155.027);
        assert_eq!(l.max_ms, 439.031);
        assert!(parse_rdkafka_latencies("12\nabc\n").is_err());
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
        let a = Args::parse(
            [
                "--no-java",
                "--rdkafka-perf=tools/rdkafka_performance",
                "--rdkafka-latency-rate",
                "500",
            ]
            .iter()
            .map(|s| (*s).to_owned()),
        )
        .unwrap();
        let cfg = a.config();
        assert!(cfg.no_java && !cfg.no_rdkafka);
        assert_eq!(
            cfg.rdkafka_perf,
            Some(PathBuf::from("tools/rdkafka_performance"))
        );
        assert_eq!(
            (cfg.rdkafka_latency_rate, cfg.rdkafka_latency_records),
            (500, 5_000)
        );
        assert!(
            Args::parse(
                ["--no-native", "--no-java", "--no-rdkafka"]
                    .iter()
                    .map(|s| (*s).to_owned())
            )
            .is_err()
        );
        assert!(Args::parse(["--no-java=1".to_owned()]).is_err());
    }
}
