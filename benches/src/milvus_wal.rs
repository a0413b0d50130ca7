//! Milvus WAL benchmark: appends of Milvus-shaped messages natively, through the Milvus WAL
//! service, and through the Kafka listener, in one run.
//!
//! Every path writes the same workload to one pchannel (one log): messages of `size` random
//! bytes with the seven properties Milvus's headers look like (about 120 bytes), issued with
//! at most `in_flight` outstanding, each timed from issue to its acknowledgement (durable).
//! Each path first appends 200 unmeasured messages (connections, topic creation, the first
//! segment).
//!
//! * **native**: the engine in process ([`wal::engine::Engine`] with `woodpecker serve`'s
//!   default configuration: embedded metadata, local-disk segments), [`LogWriter::write_async`]
//!   with a semaphore of `in_flight`.
//! * **adapter**: a fresh `woodpecker serve` (the `woodpecker` binary, release build) and the
//!   Go program `walbench` (`milvus-adapter/go/cmd/walbench`) appending through the
//!   `woodpeckerrs` walimpls package, the client a Milvus built with it uses: concurrent
//!   `Append` calls batched onto one gRPC append stream.
//! * **kafka**: a fresh `woodpecker serve --kafka-partitions 1` and the same `walbench`
//!   appending through Milvus's own Kafka walimpls (`impls/kafka` of Milvus 2.6.23:
//!   librdkafka 1.9 with Milvus's producer settings, zstd, `linger.ms` 5, `acks=all`).
//!
//! Rounds: every round runs each workload on each path once, each server started afresh and
//! stopped (SIGTERM) after it, so that a slow spell of this shared machine falls on all paths
//! alike; the report gives each figure's median over the rounds and every round's value, with
//! the load average before and after.
//!
//! The binary `milvus_wal` (`benches/src/bin/milvus_wal.rs`) drives [`run`].
//!
//! [`LogWriter::write_async`]: wal::client::LogWriter::write_async

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};
use wal::clock::SystemClock;
use wal::engine::Engine;
use wal::message::{LogMessageId, WriteMessage};

use crate::args::Flags;
use crate::ceilings::{HostInfo, Latency, LoadAvg, fmt_ms, random_bytes};
use crate::kafka_shim::{default_wal_config, run_captured};
use crate::serve::{Serve, tail};

/// How long one `walbench` run may take.
const WALBENCH_TIMEOUT: Duration = Duration::from_secs(900);
/// Unmeasured appends before each measured run.
pub const WARMUP: usize = 200;

/// One workload: how many messages of what size, how many in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// Short name for the report.
    pub name: String,
    /// Measured appends.
    pub messages: usize,
    /// Payload bytes per message.
    pub size: usize,
    /// Appends outstanding at most.
    pub in_flight: usize,
}

impl Workload {
    fn new(messages: usize, size: usize, in_flight: usize) -> Self {
        let kib = size / 1024;
        Workload {
            name: format!("{kib} KiB x {messages}, {in_flight} in flight"),
            messages,
            size,
            in_flight,
        }
    }

    /// The default set: small messages with the framework's 5 appends in flight (latency
    /// bound), small messages with many in flight (throughput bound), and large messages
    /// (Milvus's insert batches).
    pub fn defaults(quick: bool) -> Vec<Workload> {
        let scale = if quick { 20 } else { 1 };
        vec![
            Workload::new(20_000 / scale, 1024, 5),
            Workload::new(100_000 / scale, 1024, 256),
            Workload::new(4_000 / scale, 64 * 1024, 16),
        ]
    }
}

/// The paths measured.
pub const PATHS: [&str; 3] = ["native", "adapter", "kafka"];

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The smoke configuration (recorded in the report).
    pub quick: bool,
    /// Rounds.
    pub rounds: usize,
    /// Workloads.
    pub workloads: Vec<Workload>,
    /// Paths to run (a subset of [`PATHS`]).
    pub paths: Vec<String>,
    /// Where temporary data directories go.
    pub dir: PathBuf,
    /// The `woodpecker` binary.
    pub woodpecker: PathBuf,
    /// The `walbench` binary; `None` builds it with `go build`.
    pub walbench: Option<PathBuf>,
}

/// One measured run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    /// Appends per second.
    pub messages_per_s: f64,
    /// Payload MiB per second.
    pub mib_per_s: f64,
    /// Latency percentiles, ms.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// See `p50_ms`.
    pub p999_ms: f64,
    /// See `p50_ms`.
    pub max_ms: f64,
}

/// One path on one workload: every round and the medians.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The workload's name.
    pub workload: String,
    /// `native`, `adapter` or `kafka`.
    pub path: String,
    /// One per round.
    pub rounds: Vec<Measured>,
    /// Medians over the rounds.
    pub median: Measured,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When (UTC).
    pub started: String,
    /// The machine.
    pub host: HostInfo,
    /// Load average before and after.
    pub load_before: Option<LoadAvg>,
    /// See `load_before`.
    pub load_after: Option<LoadAvg>,
    /// Whether this was the smoke configuration.
    pub quick: bool,
    /// Rounds run.
    pub rounds: usize,
    /// The workloads.
    pub workloads: Vec<Workload>,
    /// One row per (workload, path).
    pub rows: Vec<Row>,
}

// --- the paths ---------------------------------------------------------------------------------

/// The properties every message carries, shaped like Milvus's headers (version, type, time
/// tick, vchannel, last confirmed id, WAL term) plus a sequence number.
fn properties(i: usize) -> BTreeMap<String, String> {
    let tick = (i as u64) << 18;
    BTreeMap::from([
        ("_v".to_owned(), "2".to_owned()),
        ("_t".to_owned(), "1".to_owned()),
        ("_tt".to_owned(), tick.to_string()),
        ("_vc".to_owned(), "bench_v0".to_owned()),
        ("_lc".to_owned(), "CAEQKg==".to_owned()),
        ("_wt".to_owned(), "1".to_owned()),
        ("i".to_owned(), i.to_string()),
    ])
}

/// The native path on a fresh engine.
pub async fn native(data_dir: &Path, w: &Workload) -> anyhow::Result<Measured> {
    let engine = Engine::open(default_wal_config(data_dir)?, SystemClock::shared())
        .await
        .context("opening the engine")?;
    let result = native_on(&engine, w).await;
    engine.shutdown().await;
    result
}

async fn native_on(engine: &Engine, w: &Workload) -> anyhow::Result<Measured> {
    engine.client.create_log("bench").await?;
    let writer = engine.client.open_log("bench").await?.open_writer().await?;
    let payload = Bytes::from(random_bytes(w.size, 0x6d69_6c76_7573));
    let writer = Arc::new(writer);
    let append_all = |n: usize| {
        let writer = writer.clone();
        let payload = payload.clone();
        let in_flight = w.in_flight;
        async move {
            let window = Arc::new(Semaphore::new(in_flight));
            type Pending = (
                Instant,
                std::pin::Pin<Box<dyn Future<Output = wal::client::Result<LogMessageId>> + Send>>,
                tokio::sync::OwnedSemaphorePermit,
            );
            let (tx, mut rx) = mpsc::unbounded_channel::<Pending>();
            // Writes resolve in issue order: one task awaiting them in order sees each as
            // soon as it is durable.
            let collector = tokio::spawn(async move {
                let mut samples = Vec::with_capacity(n);
                while let Some((start, write, permit)) = rx.recv().await {
                    write.await?;
                    samples.push(start.elapsed());
                    drop(permit);
                }
                Ok::<_, wal::client::ClientError>(samples)
            });
            let t0 = Instant::now();
            for i in 0..n {
                let permit = window.clone().acquire_owned().await?;
                let start = Instant::now();
                let write = writer.write_async(WriteMessage {
                    payload: payload.clone(),
                    properties: properties(i),
                });
                if tx.send((start, Box::pin(write), permit)).is_err() {
                    break;
                }
            }
            drop(tx);
            let samples = collector.await.context("collector task")??;
            anyhow::ensure!(samples.len() == n, "only {} of {n} writes", samples.len());
            Ok::<_, anyhow::Error>((samples, t0.elapsed()))
        }
    };
    append_all(WARMUP).await?;
    let (mut samples, elapsed) = append_all(w.messages).await?;
    writer.close().await?;
    let seconds = elapsed.as_secs_f64();
    let lat = Latency::from_samples(&mut samples);
    let bytes = (w.messages * w.size) as f64;
    Ok(Measured {
        messages_per_s: w.messages as f64 / seconds,
        mib_per_s: bytes / (1 << 20) as f64 / seconds,
        p50_ms: lat.p50_ms,
        p99_ms: lat.p99_ms,
        p999_ms: lat.p999_ms,
        max_ms: lat.max_ms,
    })
}

/// What `walbench` prints.
#[derive(Debug, Deserialize)]
struct WalbenchOut {
    messages_per_s: f64,
    mib_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

/// Runs `walbench` through `wal` (`woodpeckerrs` or `kafka`) against `addr`.
fn walbench(bin: &Path, wal: &str, addr: &str, w: &Workload) -> anyhow::Result<Measured> {
    let mut cmd = Command::new(bin);
    cmd.args(["-wal", wal, "-addr", addr])
        .args(["-messages", &w.messages.to_string()])
        .args(["-warmup", &WARMUP.to_string()])
        .args(["-size", &w.size.to_string()])
        .args(["-inflight", &w.in_flight.to_string()]);
    let done = run_captured(cmd, &format!("walbench -wal {wal}"), WALBENCH_TIMEOUT)?;
    let line = done
        .stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("walbench printed no result:\n{}", tail(&done.stdout, 10)))?;
    let out: WalbenchOut = serde_json::from_str(line).context("walbench's result")?;
    Ok(Measured {
        messages_per_s: out.messages_per_s,
        mib_per_s: out.mib_per_s,
        p50_ms: out.p50_ms,
        p99_ms: out.p99_ms,
        p999_ms: out.p999_ms,
        max_ms: out.max_ms,
    })
}

/// Builds `walbench` (`go build`, cached by Go's build cache) into `dir`.
pub fn build_walbench(dir: &Path) -> anyhow::Result<PathBuf> {
    let go_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../milvus-adapter/go");
    let bin = dir.join("walbench");
    let mut cmd = Command::new("go");
    cmd.current_dir(&go_dir)
        .env(
            "GOFLAGS",
            std::env::var("GOFLAGS").unwrap_or_else(|_| "-buildvcs=false".into()),
        )
        .args(["build", "-o"])
        .arg(&bin)
        .arg("./cmd/walbench");
    run_captured(cmd, "go build ./cmd/walbench", Duration::from_secs(1800))?;
    Ok(bin)
}

/// Runs one path on one workload in its own fresh data directory.
async fn measure(
    cfg: &Config,
    walbench_bin: &Path,
    path: &str,
    w: &Workload,
) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir_in(&cfg.dir).context("a data directory")?;
    let data = dir.path().join("data");
    match path {
        "native" => native(&data, w).await,
        "adapter" | "kafka" => {
            let server = Serve::start(&cfg.woodpecker, &data, data.with_extension("serve.log"))?;
            let (wal, addr) = if path == "adapter" {
                ("woodpeckerrs", server.milvus_addr.clone())
            } else {
                ("kafka", server.kafka_addr.clone())
            };
            let bin = walbench_bin.to_path_buf();
            let w2 = w.clone();
            let measured =
                tokio::task::spawn_blocking(move || walbench(&bin, wal, &addr, &w2)).await?;
            let stopped = server.stop();
            let measured = measured?;
            stopped?;
            Ok(measured)
        }
        other => bail!("unknown path {other:?} (native, adapter, kafka)"),
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn median_of(rounds: &[Measured]) -> Measured {
    let m = |f: fn(&Measured) -> f64| median(&mut rounds.iter().map(f).collect::<Vec<_>>());
    Measured {
        messages_per_s: m(|r| r.messages_per_s),
        mib_per_s: m(|r| r.mib_per_s),
        p50_ms: m(|r| r.p50_ms),
        p99_ms: m(|r| r.p99_ms),
        p999_ms: m(|r| r.p999_ms),
        max_ms: m(|r| r.max_ms),
    }
}

/// Runs the benchmark (see the module docs).
pub async fn run(cfg: &Config) -> anyhow::Result<Report> {
    for p in &cfg.paths {
        anyhow::ensure!(
            PATHS.contains(&p.as_str()),
            "unknown path {p:?} (native, adapter, kafka)"
        );
    }
    std::fs::create_dir_all(&cfg.dir)?;
    let tools = tempfile::tempdir_in(&cfg.dir)?;
    let walbench_bin = match &cfg.walbench {
        Some(p) => p.clone(),
        None if cfg.paths.iter().any(|p| p != "native") => {
            eprintln!(
                "milvus_wal: building walbench (go build; Milvus's packages take a few minutes cold)"
            );
            build_walbench(tools.path())?
        }
        None => PathBuf::new(),
    };
    let started = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let load_before = LoadAvg::read();
    let mut results: BTreeMap<(usize, usize), Vec<Measured>> = BTreeMap::new();
    for round in 0..cfg.rounds {
        for (wi, w) in cfg.workloads.iter().enumerate() {
            for (pi, path) in cfg.paths.iter().enumerate() {
                eprintln!(
                    "milvus_wal: round {}/{}, {}, {path}",
                    round + 1,
                    cfg.rounds,
                    w.name
                );
                let m = measure(cfg, &walbench_bin, path, w)
                    .await
                    .with_context(|| format!("{path} on {}", w.name))?;
                eprintln!(
                    "milvus_wal:   {:.1} MiB/s, {:.0} msg/s, p50 {} ms, p99 {} ms",
                    m.mib_per_s,
                    m.messages_per_s,
                    fmt_ms(m.p50_ms),
                    fmt_ms(m.p99_ms)
                );
                results.entry((wi, pi)).or_default().push(m);
            }
        }
    }
    let rows = results
        .into_iter()
        .map(|((wi, pi), rounds)| Row {
            workload: cfg.workloads[wi].name.clone(),
            path: cfg.paths[pi].clone(),
            median: median_of(&rounds),
            rounds,
        })
        .collect();
    Ok(Report {
        started,
        host: HostInfo::detect(),
        load_before,
        load_after: LoadAvg::read(),
        quick: cfg.quick,
        rounds: cfg.rounds,
        workloads: cfg.workloads.clone(),
        rows,
    })
}

impl Report {
    /// The report as Markdown: medians, ratios, and every round.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let load = |l: &Option<LoadAvg>| {
            l.as_ref()
                .map_or("?".to_owned(), |l| format!("{:.2}", l.one))
        };
        let _ = writeln!(
            s,
            "Milvus WAL appends, {} ({} CPUs{}), {} round(s){}, load average {} before, {} after.\n",
            self.started,
            self.host.cpus,
            self.host
                .cpu_model
                .as_deref()
                .map(|m| format!(", {m}"))
                .unwrap_or_default(),
            self.rounds,
            if self.quick {
                ", quick (smoke) sizes"
            } else {
                ""
            },
            load(&self.load_before),
            load(&self.load_after),
        );
        let _ = writeln!(
            s,
            "| workload | path | MiB/s | messages/s | p50 ms | p99 ms | p99.9 ms | rounds (MiB/s) |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---|");
        for r in &self.rows {
            let rounds: Vec<String> = r
                .rounds
                .iter()
                .map(|m| format!("{:.1}", m.mib_per_s))
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.0} | {} | {} | {} | {} |",
                r.workload,
                r.path,
                r.median.mib_per_s,
                r.median.messages_per_s,
                fmt_ms(r.median.p50_ms),
                fmt_ms(r.median.p99_ms),
                fmt_ms(r.median.p999_ms),
                rounds.join(", ")
            );
        }
        let find = |w: &str, p: &str| self.rows.iter().find(|r| r.workload == w && r.path == p);
        let _ = writeln!(
            s,
            "\n| workload | adapter ÷ native (throughput, p99) | adapter ÷ kafka (throughput, p99) |"
        );
        let _ = writeln!(s, "|---|---|---|");
        for w in &self.workloads {
            let ratio = |other: &str| match (find(&w.name, "adapter"), find(&w.name, other)) {
                (Some(a), Some(o)) if o.median.mib_per_s > 0.0 && o.median.p99_ms > 0.0 => format!(
                    "{:.2}x, {:.2}x",
                    a.median.mib_per_s / o.median.mib_per_s,
                    a.median.p99_ms / o.median.p99_ms
                ),
                _ => "-".to_owned(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                w.name,
                ratio("native"),
                ratio("kafka")
            );
        }
        s
    }
}

// --- command line ----------------------------------------------------------------------------

/// Parsed command line of the `milvus_wal` binary.
#[derive(Debug)]
pub struct Args {
    /// `--help`.
    pub help: bool,
    /// The configuration.
    pub config: Config,
    /// `--json FILE`.
    pub json: Option<PathBuf>,
}

/// The `--help` text.
pub const USAGE: &str = "\
milvus_wal: appends of Milvus-shaped messages natively, through the Milvus WAL service
(the woodpeckerrs walimpls package) and through the Kafka listener (Milvus's Kafka walimpls)

usage: milvus_wal [--quick] [--rounds N] [--paths native,adapter,kafka]
                  [--workload MESSAGES:SIZE:IN_FLIGHT]... [--woodpecker PATH]
                  [--walbench PATH] [--dir DIR] [--json FILE]

  --quick          smoke sizes (a twentieth of the messages), one round
  --rounds N       rounds (default 3)
  --paths LIST     which paths (default all three)
  --workload W     replaces the default workloads (repeatable), e.g. 20000:1024:5
  --woodpecker P   the woodpecker binary (default: target/release/woodpecker beside this one)
  --walbench P     a built walbench (default: go build of milvus-adapter/go/cmd/walbench)
  --dir DIR        where data directories go (default: the system temp dir)
  --json FILE      also write the report as JSON
";

impl Args {
    /// Parses the arguments (without the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Args> {
        let mut f = Flags::new(args);
        let mut quick = false;
        let mut rounds = None;
        let mut paths: Vec<String> = PATHS.iter().map(|s| s.to_string()).collect();
        let mut workloads = Vec::new();
        let mut woodpecker = None;
        let mut walbench = None;
        let mut dir = std::env::temp_dir();
        let mut json = None;
        let mut help = false;
        while let Some(flag) = f.next_flag() {
            match flag.as_str() {
                "--help" | "-h" => help = true,
                "--quick" => quick = true,
                "--rounds" => rounds = Some(f.positive()?),
                "--paths" => paths = f.list()?,
                "--workload" => {
                    let v = f.value()?;
                    let parts: Vec<&str> = v.split(':').collect();
                    let [m, s, k] = parts.as_slice() else {
                        bail!("--workload wants MESSAGES:SIZE:IN_FLIGHT, got {v:?}");
                    };
                    workloads.push(Workload::new(
                        crate::args::positive("--workload messages", m)?,
                        crate::args::positive("--workload size", s)?,
                        crate::args::positive("--workload in-flight", k)?,
                    ));
                }
                "--woodpecker" => woodpecker = Some(PathBuf::from(f.value()?)),
                "--walbench" => walbench = Some(PathBuf::from(f.value()?)),
                "--dir" => dir = PathBuf::from(f.value()?),
                "--json" => json = Some(PathBuf::from(f.value()?)),
                other => bail!("unknown flag {other}; see --help"),
            }
            f.check_switch(&["--help", "-h", "--quick"])?;
        }
        if workloads.is_empty() {
            workloads = Workload::defaults(quick);
        }
        let woodpecker = match woodpecker {
            Some(p) => p,
            None => std::env::current_exe()?
                .parent()
                .context("no directory of this binary")?
                .join("woodpecker"),
        };
        Ok(Args {
            help,
            json,
            config: Config {
                quick,
                rounds: rounds.unwrap_or(if quick { 1 } else { 3 }),
                workloads,
                paths,
                dir,
                woodpecker,
                walbench,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_and_medians() {
        let a = Args::parse(
            [
                "--quick",
                "--paths",
                "native,kafka",
                "--workload",
                "10:2048:3",
                "--rounds=2",
            ]
            .map(String::from),
        )
        .unwrap();
        assert!(a.config.quick);
        assert_eq!(a.config.rounds, 2);
        assert_eq!(a.config.paths, ["native", "kafka"]);
        assert_eq!(a.config.workloads, [Workload::new(10, 2048, 3)]);
        assert!(Args::parse(["--workload", "1:2"].map(String::from)).is_err());
        assert!(Args::parse(["--nope"].map(String::from)).is_err());
        let defaults = Args::parse(Vec::<String>::new()).unwrap().config;
        assert_eq!((defaults.rounds, defaults.workloads.len()), (3, 3));
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
