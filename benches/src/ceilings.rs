//! Backend ceilings probe: what this machine's raw backends can do, measured in the same run as
//! whatever is compared against them (machines are shared and noisy, so a figure only means
//! something next to a ceiling taken minutes apart under the same load).
//!
//! * Local disk: sequential appends to a new file with `fdatasync` (`File::sync_data`) after
//!   every write, for several write sizes; and plain appends without sync (the page-cache
//!   ceiling).
//! * Object store: parallel single PUTs through the raw `object_store` crate to an
//!   S3-compatible server, at several object sizes and concurrency levels.
//!
//! The binary `ceilings` (`benches/src/bin/ceilings.rs`) drives [`run`] and prints
//! [`Report::to_markdown`]; `--json FILE` writes the same [`Report`] as JSON.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::args::Flags;
use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures::StreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use serde::Serialize;

use crate::s3util::{self, S3Settings};

/// 1 KiB.
pub const KIB: usize = 1 << 10;
/// 1 MiB.
pub const MIB: usize = 1 << 20;

const MIB_F: f64 = MIB as f64;

// --- configuration -----------------------------------------------------------------------------

/// Limits of one workload: it stops at `max_bytes` or `max_time`, whichever comes first, but
/// not before `min_ops` operations (so that a p99 means something).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Stop after this many bytes.
    pub max_bytes: u64,
    /// Stop after this long.
    pub max_time: Duration,
    /// Never stop before this many operations.
    pub min_ops: u64,
}

impl Budget {
    fn done(&self, ops: u64, bytes: u64, elapsed: Duration) -> bool {
        ops >= self.min_ops && (bytes >= self.max_bytes || elapsed >= self.max_time)
    }
}

/// What to measure and how much.
#[derive(Debug, Clone)]
pub struct Config {
    /// Whether this is the `--quick` (smoke) configuration; recorded in the report.
    pub quick: bool,
    /// Directory in which the disk probe makes its temporary directory; `None` skips the disk.
    pub disk_dir: Option<PathBuf>,
    /// Write sizes for the write + fdatasync workload.
    pub fsync_sizes: Vec<usize>,
    /// Budget of each write + fdatasync size.
    pub fsync_budget: Budget,
    /// Write size of the no-sync (page cache) workload.
    pub page_cache_size: usize,
    /// Budget of the no-sync workload.
    pub page_cache_budget: Budget,
    /// Object sizes and how many objects to PUT at each concurrency level.
    pub objects: Vec<(usize, usize)>,
    /// Concurrency levels (PUTs in flight).
    pub concurrency: Vec<usize>,
}

impl Config {
    /// The full configuration (about a minute on a quiet machine).
    pub fn full() -> Self {
        Self {
            quick: false,
            disk_dir: Some(std::env::temp_dir()),
            fsync_sizes: vec![4 * KIB, 64 * KIB, MIB, 2 * MIB],
            fsync_budget: Budget {
                max_bytes: 1 << 30,
                max_time: Duration::from_secs(5),
                min_ops: 50,
            },
            page_cache_size: MIB,
            page_cache_budget: Budget {
                max_bytes: 1 << 30,
                max_time: Duration::from_secs(3),
                min_ops: 50,
            },
            objects: vec![(2 * MIB, 128), (16 * MIB, 32)],
            concurrency: vec![1, 4, 16],
        }
    }

    /// A few seconds in total: proves that every part still runs (CI smoke), figures are rough.
    pub fn quick() -> Self {
        Self {
            quick: true,
            fsync_budget: Budget {
                max_bytes: 32 << 20,
                max_time: Duration::from_millis(250),
                min_ops: 5,
            },
            page_cache_budget: Budget {
                max_bytes: 64 << 20,
                max_time: Duration::from_millis(250),
                min_ops: 5,
            },
            objects: vec![(2 * MIB, 16), (16 * MIB, 4)],
            ..Self::full()
        }
    }
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile `p` (0 < p <= 1) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
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

/// One local-disk workload.
#[derive(Debug, Clone, Serialize)]
pub struct DiskRow {
    /// `write+fdatasync` or `write (no sync)`.
    pub workload: String,
    /// Bytes per write.
    pub write_size: usize,
    /// Writes done.
    pub writes: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Wall time of the workload.
    pub seconds: f64,
    /// Throughput.
    pub mib_per_s: f64,
    /// Writes (commits, for the fsync workloads) per second.
    pub writes_per_s: f64,
    /// Per-write latency, write and sync together.
    pub latency: Latency,
}

/// One object-store workload (one object size at one concurrency level).
#[derive(Debug, Clone, Serialize)]
pub struct PutRow {
    /// Bytes per object.
    pub object_size: usize,
    /// PUTs in flight.
    pub concurrency: usize,
    /// PUTs done.
    pub puts: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Wall time of the level.
    pub seconds: f64,
    /// Throughput.
    pub mib_per_s: f64,
    /// PUTs per second.
    pub puts_per_s: f64,
    /// Per-PUT latency.
    pub latency: Latency,
}

/// The local-disk part of a report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiskSection {
    /// Directory written to (a temporary directory inside it, removed afterwards).
    pub dir: Option<String>,
    /// Filesystem type of `dir` from /proc/mounts.
    pub filesystem: Option<String>,
    /// Why nothing was measured, when nothing was.
    pub not_measured: Option<String>,
    /// Figures.
    pub results: Vec<DiskRow>,
}

/// The object-store part of a report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ObjectStoreSection {
    /// Endpoint measured.
    pub endpoint: Option<String>,
    /// Server behind the endpoint, when known (`minio`).
    pub server: Option<String>,
    /// Bucket written to.
    pub bucket: Option<String>,
    /// Why nothing was measured, when nothing was.
    pub not_measured: Option<String>,
    /// Figures.
    pub results: Vec<PutRow>,
}

/// 1, 5 and 15 minute load averages from /proc/loadavg.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LoadAvg {
    /// 1-minute load average.
    pub one: f64,
    /// 5-minute load average.
    pub five: f64,
    /// 15-minute load average.
    pub fifteen: f64,
}

impl LoadAvg {
    /// Reads /proc/loadavg; `None` where it does not exist.
    pub fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/loadavg").ok()?)
    }

    /// Parses the text of /proc/loadavg.
    pub fn parse(text: &str) -> Option<Self> {
        let mut it = text.split_whitespace().map(str::parse::<f64>);
        Some(Self {
            one: it.next()?.ok()?,
            five: it.next()?.ok()?,
            fifteen: it.next()?.ok()?,
        })
    }
}

/// The machine the figures were taken on.
#[derive(Debug, Clone, Serialize)]
pub struct HostInfo {
    /// `uname -r`.
    pub kernel: Option<String>,
    /// CPUs available to this process.
    pub cpus: usize,
    /// CPU model name from /proc/cpuinfo.
    pub cpu_model: Option<String>,
}

impl HostInfo {
    /// Describes this machine.
    pub fn detect() -> Self {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_owned());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        });
        Self {
            kernel,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
        }
    }
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
    /// Load average before the first workload.
    pub load_before: Option<LoadAvg>,
    /// Load average after the last workload.
    pub load_after: Option<LoadAvg>,
    /// Local disk figures.
    pub disk: DiskSection,
    /// Object store figures.
    pub object_store: ObjectStoreSection,
}

// --- local disk ------------------------------------------------------------------------------

/// A buffer of `len` pseudo-random bytes (nothing along the way can compress or dedupe it).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Appends `size`-byte writes to a new file in `dir` until the budget is spent, with
/// `fdatasync` after each write when `sync` is set. The file is deleted afterwards.
pub fn disk_workload(
    dir: &Path,
    size: usize,
    sync: bool,
    budget: Budget,
) -> anyhow::Result<DiskRow> {
    let buf = random_bytes(size, 0x5eed ^ size as u64);
    let mut file = tempfile::Builder::new()
        .prefix("append-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let mut samples = Vec::new();
    let (mut writes, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    while !budget.done(writes, bytes, start.elapsed()) {
        let t = Instant::now();
        let f = file.as_file_mut();
        f.write_all(&buf).context("write")?;
        if sync {
            f.sync_data().context("fdatasync")?;
        }
        samples.push(t.elapsed());
        writes += 1;
        bytes += size as u64;
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(file);
    Ok(DiskRow {
        workload: if sync {
            "write+fdatasync"
        } else {
            "write (no sync)"
        }
        .to_owned(),
        write_size: size,
        writes,
        bytes,
        seconds,
        mib_per_s: bytes as f64 / MIB_F / seconds,
        writes_per_s: writes as f64 / seconds,
        latency: Latency::from_samples(&mut samples),
    })
}

/// Filesystem type of the mount that holds `dir`, from /proc/mounts.
pub fn filesystem_of(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, mount, fstype) = (f.next()?, f.next()?, f.next()?);
            let mount = mount.replace("\\040", " ");
            dir.starts_with(&mount)
                .then(|| (mount.len(), fstype.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fstype)| fstype)
}

fn probe_disk(cfg: &Config, dir: &Path) -> anyhow::Result<DiskSection> {
    let tmp = tempfile::Builder::new()
        .prefix("woodpecker-ceilings-")
        .tempdir_in(dir)
        .with_context(|| format!("creating a temporary directory in {}", dir.display()))?;
    let mut results = Vec::new();
    for &size in &cfg.fsync_sizes {
        progress(format_args!("disk: {} write+fdatasync ...", fmt_size(size)));
        let row = disk_workload(tmp.path(), size, true, cfg.fsync_budget)?;
        progress_row_disk(&row);
        results.push(row);
    }
    // Last, so that its dirty pages do not slow the fsync workloads down.
    progress(format_args!(
        "disk: {} write, no sync (page cache) ...",
        fmt_size(cfg.page_cache_size)
    ));
    let row = disk_workload(
        tmp.path(),
        cfg.page_cache_size,
        false,
        cfg.page_cache_budget,
    )?;
    progress_row_disk(&row);
    results.push(row);
    tmp.close().context("removing the temporary directory")?;
    Ok(DiskSection {
        dir: Some(dir.display().to_string()),
        filesystem: filesystem_of(dir),
        not_measured: None,
        results,
    })
}

// --- object store ----------------------------------------------------------------------------

/// PUTs `count` objects of `payload.len()` bytes under `prefix` with `concurrency` PUTs in
/// flight (after one small warm-up PUT per connection), and times each.
pub async fn put_workload(
    store: Arc<dyn ObjectStore>,
    prefix: &ObjectPath,
    payload: Bytes,
    concurrency: usize,
    count: usize,
) -> anyhow::Result<PutRow> {
    let size = payload.len();
    let level = prefix.clone().join(format!("{size}-c{concurrency}"));

    let mut warmups = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let (store, path) = (store.clone(), level.clone().join(format!("warmup-{i}")));
        warmups.spawn(async move { store.put(&path, PutPayload::from_static(b"warm-up")).await });
    }
    while let Some(r) = warmups.join_next().await {
        r.context("warm-up task")?.context("warm-up PUT")?;
    }

    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    let start = Instant::now();
    for _ in 0..concurrency.min(count) {
        let (store, level, payload, next) =
            (store.clone(), level.clone(), payload.clone(), next.clone());
        workers.spawn(async move {
            let mut samples = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(samples);
                }
                let path = level.clone().join(format!("{i:06}"));
                let t = Instant::now();
                store
                    .put(&path, PutPayload::from(payload.clone()))
                    .await
                    .with_context(|| format!("PUT {path}"))?;
                samples.push(t.elapsed());
            }
        });
    }
    let mut samples = Vec::with_capacity(count);
    while let Some(r) = workers.join_next().await {
        samples.extend(r.context("PUT task")??);
    }
    let seconds = start.elapsed().as_secs_f64();
    let puts = samples.len() as u64;
    let bytes = puts * size as u64;
    Ok(PutRow {
        object_size: size,
        concurrency,
        puts,
        bytes,
        seconds,
        mib_per_s: bytes as f64 / MIB_F / seconds,
        puts_per_s: puts as f64 / seconds,
        latency: Latency::from_samples(&mut samples),
    })
}

/// Deletes every object under `prefix`; returns how many were deleted.
pub async fn delete_prefix(store: &dyn ObjectStore, prefix: &ObjectPath) -> anyhow::Result<usize> {
    let locations = store
        .list(Some(prefix))
        .map(|meta| meta.map(|m| m.location))
        .boxed();
    let mut deleted = 0;
    let mut results = store.delete_stream(locations);
    while let Some(r) = results.next().await {
        r.context("deleting a probe object")?;
        deleted += 1;
    }
    Ok(deleted)
}

async fn probe_object_store(cfg: &Config, settings: &S3Settings) -> anyhow::Result<Vec<PutRow>> {
    let store = settings.connect().await?;
    progress(format_args!(
        "s3: using bucket {} at {}",
        settings.bucket, settings.endpoint
    ));
    let prefix = ObjectPath::from(format!("ceilings/{}", uuid::Uuid::new_v4()));
    let measured = async {
        let mut rows = Vec::new();
        for &(size, count) in &cfg.objects {
            let payload = Bytes::from(random_bytes(size, 0xb0b ^ size as u64));
            for &concurrency in &cfg.concurrency {
                progress(format_args!(
                    "s3: {count} PUTs of {} with {concurrency} in flight ...",
                    fmt_size(size)
                ));
                let row = put_workload(store.clone(), &prefix, payload.clone(), concurrency, count)
                    .await?;
                progress(format_args!(
                    "    {:.1} MiB/s, {:.1} PUTs/s, p50 {} ms, p99 {} ms",
                    row.mib_per_s,
                    row.puts_per_s,
                    fmt_ms(row.latency.p50_ms),
                    fmt_ms(row.latency.p99_ms)
                ));
                rows.push(row);
            }
        }
        anyhow::Ok(rows)
    }
    .await;
    // Clean up whether or not the measurements succeeded.
    let cleaned = delete_prefix(store.as_ref(), &prefix).await;
    let rows = measured?;
    let deleted = cleaned.with_context(|| format!("deleting the probe objects under {prefix}"))?;
    progress(format_args!(
        "s3: deleted {deleted} probe objects under {prefix}"
    ));
    Ok(rows)
}

// --- run -------------------------------------------------------------------------------------

fn progress(args: std::fmt::Arguments<'_>) {
    eprintln!("[ceilings] {args}");
}

fn progress_row_disk(row: &DiskRow) {
    progress(format_args!(
        "    {} writes, {:.1} MiB/s, {:.0} writes/s, p50 {} ms, p99 {} ms, max {} ms",
        row.writes,
        row.mib_per_s,
        row.writes_per_s,
        fmt_ms(row.latency.p50_ms),
        fmt_ms(row.latency.p99_ms),
        fmt_ms(row.latency.max_ms)
    ));
}

/// Runs every part of the probe. `s3` is `Err(reason)` when the object store is not to be
/// measured (the reason is reported, never dropped).
pub fn run(cfg: &Config, s3: Result<S3Settings, String>) -> anyhow::Result<Report> {
    let date_utc = chrono::Utc::now()
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string();
    let host = HostInfo::detect();
    let load_before = LoadAvg::read();

    let disk = match &cfg.disk_dir {
        Some(dir) => probe_disk(cfg, dir)?,
        None => DiskSection {
            not_measured: Some("disabled (--no-disk)".to_owned()),
            ..DiskSection::default()
        },
    };

    let object_store = match s3 {
        Ok(settings) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            let results = rt
                .block_on(probe_object_store(cfg, &settings))
                .with_context(|| format!("object store probe against {}", settings.endpoint))?;
            ObjectStoreSection {
                endpoint: Some(settings.endpoint.clone()),
                server: settings.server.clone(),
                bucket: Some(settings.bucket.clone()),
                not_measured: None,
                results,
            }
        }
        Err(reason) => {
            progress(format_args!("s3: not measured ({reason})"));
            ObjectStoreSection {
                not_measured: Some(reason),
                ..ObjectStoreSection::default()
            }
        }
    };

    Ok(Report {
        date_utc,
        quick: cfg.quick,
        host,
        load_before,
        load_after: LoadAvg::read(),
        disk,
        object_store,
    })
}

// --- output ----------------------------------------------------------------------------------

/// `4 KiB`, `2 MiB`, `1536 B`.
pub fn fmt_size(bytes: usize) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} B")
    }
}

/// Milliseconds with three significant-ish digits.
pub fn fmt_ms(v: f64) -> String {
    if v < 1.0 {
        format!("{v:.3}")
    } else if v < 100.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

/// The first rows of a report's run table (`| | |` header, then date, host and load), the
/// rows every report that describes one run of one machine starts with.
pub(crate) fn write_run_rows(
    s: &mut String,
    date_utc: &str,
    h: &HostInfo,
    load_before: Option<LoadAvg>,
    load_after: Option<LoadAvg>,
) -> std::fmt::Result {
    let load = |l: Option<LoadAvg>| l.map_or_else(|| "n/a".to_owned(), |l| format!("{:.2}", l.one));
    writeln!(s, "| | |\n|---|---|")?;
    writeln!(s, "| date | {date_utc} |")?;
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
        load(load_before),
        load(load_after)
    )
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
            "## Backend ceilings{}\n",
            if self.quick {
                " (--quick smoke run: figures are rough)"
            } else {
                ""
            }
        )?;
        write_run_rows(s, &self.date_utc, h, self.load_before, self.load_after)?;

        writeln!(s, "\n### Local disk: sequential appends to a new file\n")?;
        let d = &self.disk;
        if let Some(reason) = &d.not_measured {
            writeln!(s, "Not measured ({reason}).")?;
        } else {
            writeln!(
                s,
                "Directory `{}` ({}). Latency is per write call, including its fdatasync.\n",
                d.dir.as_deref().unwrap_or("?"),
                d.filesystem.as_deref().unwrap_or("filesystem unknown")
            )?;
            writeln!(
                s,
                "| workload | write size | writes | MiB | s | MiB/s | writes/s | p50 ms | p99 ms | max ms |"
            )?;
            writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
            for r in &d.results {
                writeln!(
                    s,
                    "| {} | {} | {} | {:.0} | {:.2} | {:.1} | {:.0} | {} | {} | {} |",
                    r.workload,
                    fmt_size(r.write_size),
                    r.writes,
                    r.bytes as f64 / MIB_F,
                    r.seconds,
                    r.mib_per_s,
                    r.writes_per_s,
                    fmt_ms(r.latency.p50_ms),
                    fmt_ms(r.latency.p99_ms),
                    fmt_ms(r.latency.max_ms)
                )?;
            }
        }

        writeln!(
            s,
            "\n### Object store: single PUTs through the object_store crate\n"
        )?;
        let o = &self.object_store;
        if let Some(reason) = &o.not_measured {
            writeln!(s, "Not measured ({reason}).")?;
        } else {
            writeln!(
                s,
                "Endpoint {}{}, bucket `{}`. Each level starts with one small warm-up PUT per \
                 connection; latency includes the client's SHA-256 of the signed payload; \
                 objects are deleted afterwards.\n",
                o.endpoint.as_deref().unwrap_or("?"),
                o.server
                    .as_deref()
                    .map(|v| format!(" ({v})"))
                    .unwrap_or_default(),
                o.bucket.as_deref().unwrap_or("?")
            )?;
            writeln!(
                s,
                "| object size | in flight | PUTs | MiB | s | MiB/s | PUTs/s | p50 ms | p99 ms | max ms |"
            )?;
            writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
            for r in &o.results {
                writeln!(
                    s,
                    "| {} | {} | {} | {:.0} | {:.2} | {:.1} | {:.1} | {} | {} | {} |",
                    fmt_size(r.object_size),
                    r.concurrency,
                    r.puts,
                    r.bytes as f64 / MIB_F,
                    r.seconds,
                    r.mib_per_s,
                    r.puts_per_s,
                    fmt_ms(r.latency.p50_ms),
                    fmt_ms(r.latency.p99_ms),
                    fmt_ms(r.latency.max_ms)
                )?;
            }
        }
        Ok(())
    }
}

// --- command line ----------------------------------------------------------------------------

/// Usage of the `ceilings` binary.
pub const USAGE: &str = "\
ceilings: measure this machine's raw backend ceilings (local disk, S3 object store)

USAGE: ceilings [OPTIONS]

  --quick                   shrink every workload to a few seconds in total (CI smoke)
  --dir DIR                 where the disk probe writes (a temporary directory inside DIR,
                            removed afterwards); default: the system temp dir
  --no-disk                 skip the disk probe
  --json FILE               also write the figures as JSON to FILE
  --endpoint URL            S3 endpoint           [env WOODPECKER_TEST_S3_ENDPOINT]
  --access-key-id ID        S3 access key id      [env WOODPECKER_TEST_S3_ACCESS_KEY_ID]
  --secret-access-key KEY   S3 secret access key  [env WOODPECKER_TEST_S3_SECRET_ACCESS_KEY]
  --region REGION           S3 region             [env WOODPECKER_TEST_S3_REGION, us-east-1]
  --bucket NAME             bucket, created if missing (default woodpecker-ceilings)
  --concurrency LIST        PUTs in flight, comma-separated (default 1,4,16)
  --objects N               PUTs per object size and level (default 128 of 2 MiB, 32 of 16 MiB)
  --no-object-store         skip the object store probe
  -h, --help                this text

Without an endpoint the object store part is reported as not measured.
The Markdown report goes to stdout, progress to stderr.
";

/// Parsed command line of the `ceilings` binary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    /// `--quick`.
    pub quick: bool,
    /// `--dir`.
    pub dir: Option<PathBuf>,
    /// `--no-disk`.
    pub no_disk: bool,
    /// `--json`.
    pub json: Option<PathBuf>,
    /// `--endpoint`.
    pub endpoint: Option<String>,
    /// `--access-key-id`.
    pub access_key_id: Option<String>,
    /// `--secret-access-key`.
    pub secret_access_key: Option<String>,
    /// `--region`.
    pub region: Option<String>,
    /// `--bucket`.
    pub bucket: Option<String>,
    /// `--concurrency`.
    pub concurrency: Option<Vec<usize>>,
    /// `--objects`.
    pub objects: Option<usize>,
    /// `--no-object-store`.
    pub no_object_store: bool,
    /// `--help`.
    pub help: bool,
}

impl Args {
    /// Parses the arguments after the program name. Accepts `--flag value` and `--flag=value`.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> anyhow::Result<Self> {
        let mut out = Self::default();
        let mut flags = Flags::new(args);
        while let Some(flag) = flags.next_flag() {
            match flag.as_str() {
                "--quick" => out.quick = true,
                "--no-disk" => out.no_disk = true,
                "--no-object-store" => out.no_object_store = true,
                "-h" | "--help" => out.help = true,
                "--dir" => out.dir = Some(flags.value()?.into()),
                "--json" => out.json = Some(flags.value()?.into()),
                "--endpoint" => out.endpoint = Some(flags.value()?),
                "--access-key-id" => out.access_key_id = Some(flags.value()?),
                "--secret-access-key" => out.secret_access_key = Some(flags.value()?),
                "--region" => out.region = Some(flags.value()?),
                "--bucket" => out.bucket = Some(flags.value()?),
                "--objects" => out.objects = Some(flags.positive()?),
                "--concurrency" => {
                    let v = flags.value()?;
                    let levels = v
                        .split(',')
                        .map(|x| crate::args::positive("--concurrency", x))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    out.concurrency = Some(levels);
                }
                _ => bail!("unknown argument {flag:?} (see --help)"),
            }
            flags.check_switch(&["--quick", "--no-disk", "--no-object-store", "--help"])?;
        }
        Ok(out)
    }

    /// The configuration these arguments ask for.
    pub fn config(&self) -> Config {
        let mut cfg = if self.quick {
            Config::quick()
        } else {
            Config::full()
        };
        if self.no_disk {
            cfg.disk_dir = None;
        } else if let Some(dir) = &self.dir {
            cfg.disk_dir = Some(dir.clone());
        }
        if let Some(levels) = &self.concurrency {
            cfg.concurrency = levels.clone();
        }
        if let Some(n) = self.objects {
            for (_, count) in &mut cfg.objects {
                *count = n;
            }
        }
        cfg
    }

    /// The S3 settings: flags first, then the test environment variables. `Err(reason)` when
    /// the object store is not to be measured; an error when the settings are incomplete.
    pub fn s3_settings(&self) -> anyhow::Result<Result<S3Settings, String>> {
        if self.no_object_store {
            return Ok(Err("disabled (--no-object-store)".to_owned()));
        }
        let bucket = self
            .bucket
            .clone()
            .unwrap_or_else(|| "woodpecker-ceilings".to_owned());
        let from_env = S3Settings::from_env(&bucket);
        let mut settings = match (&self.endpoint, from_env) {
            (None, Ok(None)) => return Ok(Err("no endpoint".to_owned())),
            (None, Ok(Some(s))) => s,
            (None, Err(e)) => return Err(e),
            (Some(endpoint), env) => {
                let env = env.ok().flatten();
                let key = |flag: &Option<String>, var: &str| {
                    flag.clone()
                        .or_else(|| std::env::var(var).ok().filter(|v| !v.is_empty()))
                        .with_context(|| format!("--endpoint given without a key: set {var}"))
                };
                S3Settings {
                    endpoint: endpoint.clone(),
                    access_key_id: key(&self.access_key_id, s3util::ENV_ACCESS_KEY_ID)?,
                    secret_access_key: key(&self.secret_access_key, s3util::ENV_SECRET_ACCESS_KEY)?,
                    region: env
                        .as_ref()
                        .map_or_else(|| "us-east-1".to_owned(), |s| s.region.clone()),
                    bucket: bucket.clone(),
                    // The server name only describes the environment's endpoint.
                    server: env
                        .filter(|s| &s.endpoint == endpoint)
                        .and_then(|s| s.server),
                }
            }
        };
        if let Some(v) = &self.access_key_id {
            settings.access_key_id = v.clone();
        }
        if let Some(v) = &self.secret_access_key {
            settings.secret_access_key = v.clone();
        }
        if let Some(v) = &self.region {
            settings.region = v.clone();
        }
        Ok(Ok(settings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> anyhow::Result<Args> {
        Args::parse(list.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let l = Latency::from_samples(&mut v);
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        assert!((l.mean_ms - 50.5).abs() < 1e-9);
        assert_eq!(
            percentile(&[Duration::from_millis(7)], 0.99),
            Duration::from_millis(7)
        );
        assert_eq!(Latency::from_samples(&mut []), Latency::default());
    }

    #[test]
    fn budget_stops_at_the_first_limit_but_not_before_min_ops() {
        let b = Budget {
            max_bytes: 100,
            max_time: Duration::from_secs(1),
            min_ops: 3,
        };
        assert!(!b.done(2, 1000, Duration::from_secs(9)));
        assert!(b.done(3, 100, Duration::ZERO));
        assert!(b.done(3, 0, Duration::from_secs(1)));
        assert!(!b.done(3, 99, Duration::from_millis(999)));
    }

    #[test]
    fn parses_arguments() {
        let a = args(&[
            "--quick",
            "--dir",
            "d",
            "--json=out.json",
            "--concurrency",
            "2,8",
        ])
        .unwrap();
        assert!(a.quick);
        assert_eq!(a.dir, Some(PathBuf::from("d")));
        assert_eq!(a.json, Some(PathBuf::from("out.json")));
        assert_eq!(a.concurrency, Some(vec![2, 8]));
        let cfg = a.config();
        assert!(cfg.quick);
        assert_eq!(cfg.concurrency, vec![2, 8]);
        assert_eq!(cfg.disk_dir, Some(PathBuf::from("d")));

        let cfg = args(&["--objects", "3", "--no-disk"]).unwrap().config();
        assert!(cfg.objects.iter().all(|&(_, n)| n == 3));
        assert_eq!(cfg.disk_dir, None);

        assert!(args(&["--bogus"]).is_err());
        assert!(args(&["--dir"]).is_err());
        assert!(args(&["--concurrency", "1,0"]).is_err());
        assert!(args(&["--quick=yes"]).is_err());
        assert!(args(&["-h"]).unwrap().help);
    }

    #[test]
    fn no_object_store_is_reported_not_dropped() {
        let reason = args(&["--no-object-store"])
            .unwrap()
            .s3_settings()
            .unwrap()
            .unwrap_err();
        assert!(reason.contains("disabled"));
    }

    #[test]
    fn formats_sizes_and_load() {
        assert_eq!(fmt_size(4096), "4 KiB");
        assert_eq!(fmt_size(2 * MIB), "2 MiB");
        assert_eq!(fmt_size(1000), "1000 B");
        let l = LoadAvg::parse("0.52 0.58 0.59 1/467 1234\n").unwrap();
        assert_eq!(l.one, 0.52);
        assert_eq!(l.fifteen, 0.59);
        assert!(LoadAvg::parse("").is_none());
    }

    #[test]
    fn random_bytes_are_deterministic_and_not_constant() {
        let a = random_bytes(4096, 1);
        assert_eq!(a.len(), 4096);
        assert_eq!(a, random_bytes(4096, 1));
        assert_ne!(a, random_bytes(4096, 2));
        assert!(a.iter().any(|&b| b != a[0]));
    }

    #[test]
    fn disk_workload_writes_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Budget {
            max_bytes: 64 * 1024,
            max_time: Duration::from_secs(5),
            min_ops: 2,
        };
        let row = disk_workload(dir.path(), 4096, true, budget).unwrap();
        assert_eq!(row.writes, 16);
        assert_eq!(row.bytes, 64 * 1024);
        assert!(row.latency.max_ms >= row.latency.p50_ms);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Bucket creation, the PUT workload and the clean-up against the server that
    /// `scripts/test` (or `scripts/services start`) provides.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_against_the_test_s3_server() {
        let bucket = format!("wp-benches-{}", uuid::Uuid::new_v4().simple());
        let settings = S3Settings::from_env(&bucket).unwrap().unwrap_or_else(|| {
            panic!(
                "{} is not set: this test needs the S3-compatible server that `scripts/test` \
                     starts (or `eval \"$(scripts/services start)\"`)",
                s3util::ENV_ENDPOINT
            )
        });
        let store = settings.connect().await.unwrap();
        // Connecting again finds the bucket.
        settings.connect().await.unwrap();
        let wrong_secret = S3Settings {
            secret_access_key: "not-the-secret".to_owned(),
            bucket: format!("{bucket}-x"),
            ..settings.clone()
        };
        let err = wrong_secret.connect().await.unwrap_err();
        assert!(format!("{err:#}").contains("minio.accessKeyID"), "{err:#}");

        let prefix = ObjectPath::from("probe");
        let row = put_workload(store.clone(), &prefix, Bytes::from(vec![7u8; 4096]), 2, 5)
            .await
            .unwrap();
        assert_eq!((row.puts, row.bytes, row.concurrency), (5, 5 * 4096, 2));
        let got = store
            .get(&prefix.clone().join("4096-c2").join("000004"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(got.len(), 4096);
        // 5 objects and 2 warm-up objects.
        assert_eq!(delete_prefix(store.as_ref(), &prefix).await.unwrap(), 7);
        assert_eq!(store.list(Some(&prefix)).count().await, 0);
    }

    #[test]
    fn markdown_reports_what_was_not_measured() {
        let cfg = Config {
            disk_dir: None,
            ..Config::quick()
        };
        let report = run(&cfg, Err("no endpoint".to_owned())).unwrap();
        let md = report.to_markdown();
        assert!(md.contains("Not measured (disabled (--no-disk))"));
        assert!(md.contains("Not measured (no endpoint)"));
        assert!(md.contains("load average"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["object_store"]["not_measured"], "no endpoint");
    }
}
