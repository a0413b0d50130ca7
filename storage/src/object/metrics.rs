//! Object store traffic, measured.
//!
//! * [`CountingStore`]: counters a caller owns (requests, errors, bytes and time per
//!   operation), outermost (above retries) to count what callers asked for or innermost to
//!   count what went on the wire; [`StoreCounters::snapshot`] reads them. Tests and benchmarks
//!   use it.
//! * [`MeteredStore`]: the process's Prometheus metrics under Go Woodpecker's names, and the
//!   `object.put` span; every store [`super::build_object_storage`] builds has it outermost.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use telemetry::Stopwatch;
use telemetry::catalog::{ObjectOp, ObjectStorageMetrics};
use tracing::Instrument as _;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

use super::faults::Op;

const OPS: [Op; 6] = [Op::Put, Op::Get, Op::Head, Op::List, Op::Delete, Op::Copy];

fn slot(op: Op) -> usize {
    OPS.iter().position(|o| *o == op).unwrap_or(0)
}

#[derive(Debug, Default)]
struct OpCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    nanos: AtomicU64,
}

/// Shared counters, one set per operation.
#[derive(Debug, Default)]
pub struct StoreCounters {
    ops: [OpCounters; 6],
}

/// Counters of one operation at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpSnapshot {
    /// Calls made.
    pub requests: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Payload bytes written (puts) or read (gets).
    pub bytes: u64,
    /// Total time spent in calls, in nanoseconds.
    pub nanos: u64,
}

impl StoreCounters {
    /// The counters of `op`.
    pub fn snapshot(&self, op: Op) -> OpSnapshot {
        let c = &self.ops[slot(op)];
        OpSnapshot {
            requests: c.requests.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            nanos: c.nanos.load(Ordering::Relaxed),
        }
    }

    /// All operations with their counters.
    pub fn all(&self) -> Vec<(Op, OpSnapshot)> {
        OPS.iter().map(|op| (*op, self.snapshot(*op))).collect()
    }

    fn record(&self, op: Op, started: Stopwatch, ok: bool, bytes: u64) {
        let c = &self.ops[slot(op)];
        c.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        c.bytes.fetch_add(bytes, Ordering::Relaxed);
        let nanos = started.elapsed_nanos();
        c.nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// An [`ObjectStore`] that counts the calls made to the store it wraps.
#[derive(Debug, Clone)]
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    counters: Arc<StoreCounters>,
}

impl CountingStore {
    /// Wraps `inner`, counting into `counters`.
    pub fn new(inner: Arc<dyn ObjectStore>, counters: Arc<StoreCounters>) -> Self {
        CountingStore { inner, counters }
    }

    /// The counters.
    pub fn counters(&self) -> &Arc<StoreCounters> {
        &self.counters
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let started = Stopwatch::start();
        let len = payload.content_length() as u64;
        let r = self.inner.put_opts(location, payload, opts).await;
        self.counters.record(Op::Put, started, r.is_ok(), len);
        r
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let started = Stopwatch::start();
        let r = self.inner.put_multipart_opts(location, opts).await;
        self.counters.record(Op::Put, started, r.is_ok(), 0);
        r
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let started = Stopwatch::start();
        let op = if options.head { Op::Head } else { Op::Get };
        let r = self.inner.get_opts(location, options).await;
        let bytes = match (&r, op) {
            (Ok(g), Op::Get) => g.range.end - g.range.start,
            _ => 0,
        };
        self.counters.record(op, started, r.is_ok(), bytes);
        r
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let started = Stopwatch::start();
        let r = self.inner.get_ranges(location, ranges).await;
        let bytes = r
            .as_ref()
            .map(|v| v.iter().map(|b| b.len() as u64).sum())
            .unwrap_or(0);
        self.counters.record(Op::Get, started, r.is_ok(), bytes);
        r
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let counters = Arc::clone(&self.counters);
        let started = Stopwatch::start();
        self.inner
            .delete_stream(locations)
            .map(move |r| {
                counters.record(Op::Delete, started, r.is_ok(), 0);
                r
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let counters = Arc::clone(&self.counters);
        let started = Stopwatch::start();
        counters.record(Op::List, started, true, 0);
        let errors = Arc::clone(&counters);
        self.inner
            .list(prefix)
            .map(move |r| {
                if r.is_err() {
                    errors.ops[slot(Op::List)]
                        .errors
                        .fetch_add(1, Ordering::Relaxed);
                }
                r
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let started = Stopwatch::start();
        let r = self.inner.list_with_delimiter(prefix).await;
        self.counters.record(Op::List, started, r.is_ok(), 0);
        r
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let started = Stopwatch::start();
        let r = self.inner.copy_opts(from, to, options).await;
        self.counters.record(Op::Copy, started, r.is_ok(), 0);
        r
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        let started = Stopwatch::start();
        let r = self.inner.rename_opts(from, to, options).await;
        self.counters.record(Op::Copy, started, r.is_ok(), 0);
        r
    }
}

/// An [`ObjectStore`] that records Go Woodpecker's object-storage metrics
/// (`woodpecker_server_object_storage_*`, see [`telemetry::catalog`]) and an `object.put`
/// span per PUT.
///
/// It sits outermost, above retries: a call's latency is what its caller waited, as in Go
/// (whose minio client retries inside the measured call). `log_id` comes from the key: the
/// first component under the root (`<root>/<logId>/<segId>/...`) when it and the next one are
/// numbers, else empty. The metric handles of each log are resolved once; a call costs a
/// read lock on that cache, two clock reads and a few atomic adds.
#[derive(Debug, Clone)]
pub(crate) struct MeteredStore {
    inner: Arc<dyn ObjectStore>,
    /// The root prefix with a trailing `/` (empty for none).
    root: String,
    /// The `log_ns` label; `None`: the process's ([`telemetry::catalog::set_log_namespace`]).
    log_ns: Option<Arc<str>>,
}

impl MeteredStore {
    /// Wraps `inner`, whose keys live under `root` (`minio.rootPath`).
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, root: &str) -> Self {
        let root = root.trim_matches('/');
        MeteredStore {
            inner,
            root: if root.is_empty() {
                String::new()
            } else {
                format!("{root}/")
            },
            log_ns: None,
        }
    }

    /// Labels this store's traffic with `log_ns` (`<bucket>/<root path>`) instead of the
    /// process's namespace: a service-mode node holds one store per tenant.
    pub(crate) fn with_log_namespace(mut self, log_ns: &str) -> Self {
        self.log_ns = Some(log_ns.into());
        self
    }

    /// The handles of the log a key belongs to (`None`: outside any log).
    fn metrics(&self, log_id: Option<i64>) -> &'static ObjectStorageMetrics {
        match &self.log_ns {
            Some(ns) => ObjectStorageMetrics::for_log_in(ns, log_id),
            None => ObjectStorageMetrics::for_log(log_id),
        }
    }

    /// The log a key belongs to.
    fn log_id(&self, location: &Path) -> Option<i64> {
        let key = location.as_ref().strip_prefix(self.root.as_str())?;
        let mut parts = key.split('/');
        let log = parts.next()?;
        let segment = parts.next()?;
        let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        (numeric(log) && numeric(segment))
            .then(|| log.parse().ok())
            .flatten()
    }

    fn record(&self, location: &Path, op: ObjectOp, started: Stopwatch, ok: bool, bytes: u64) {
        self.metrics(self.log_id(location))
            .record(op, ok, started.elapsed_nanos(), bytes);
    }
}

impl fmt::Display for MeteredStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Metered({})", self.inner)
    }
}

/// Records a listing when its stream ends or is dropped.
struct ListGuard {
    metrics: &'static ObjectStorageMetrics,
    started: Stopwatch,
    failed: bool,
}

impl Drop for ListGuard {
    fn drop(&mut self) {
        self.metrics.record(
            ObjectOp::List,
            !self.failed,
            self.started.elapsed_nanos(),
            0,
        );
    }
}

#[async_trait]
impl ObjectStore for MeteredStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let op = match opts.mode {
            PutMode::Overwrite => ObjectOp::Put,
            _ if super::has_fence_metadata(&opts.attributes) => ObjectOp::PutFence,
            PutMode::Create | PutMode::Update(_) => ObjectOp::ConditionPut,
        };
        let len = payload.content_length() as u64;
        let span = tracing::debug_span!(target: telemetry::trace::SPAN_TARGET, "object.put", key = %location, bytes = len, operation = op.label());
        let started = Stopwatch::start();
        let r = self
            .inner
            .put_opts(location, payload, opts)
            .instrument(span)
            .await;
        self.record(location, op, started, r.is_ok(), len);
        r
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let started = Stopwatch::start();
        let r = self.inner.put_multipart_opts(location, opts).await;
        self.record(location, ObjectOp::Put, started, r.is_ok(), 0);
        r
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let started = Stopwatch::start();
        let op = if options.head {
            ObjectOp::Stat
        } else {
            ObjectOp::Get
        };
        let r = self.inner.get_opts(location, options).await;
        let bytes = match (&r, op) {
            (Ok(g), ObjectOp::Get) => g.range.end - g.range.start,
            _ => 0,
        };
        // A missing object is an answer, not a failure of the store.
        let ok = matches!(&r, Ok(_) | Err(object_store::Error::NotFound { .. }));
        self.record(location, op, started, ok, bytes);
        r
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let started = Stopwatch::start();
        let r = self.inner.get_ranges(location, ranges).await;
        let bytes = r
            .as_ref()
            .map(|v| v.iter().map(|b| b.len() as u64).sum())
            .unwrap_or(0);
        self.record(location, ObjectOp::Get, started, r.is_ok(), bytes);
        r
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let this = self.clone();
        let started = Stopwatch::start();
        self.inner
            .delete_stream(locations)
            .map(move |r| {
                match &r {
                    Ok(p) => this.record(p, ObjectOp::Remove, started, true, 0),
                    Err(_) => this.metrics(None).record(
                        ObjectOp::Remove,
                        false,
                        started.elapsed_nanos(),
                        0,
                    ),
                }
                r
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let mut guard = ListGuard {
            metrics: self.metrics(prefix.and_then(|p| self.log_id(p))),
            started: Stopwatch::start(),
            failed: false,
        };
        self.inner
            .list(prefix)
            .map(move |r| {
                // The whole guard moves into the closure (not just the flag), so that it is
                // dropped, and records, with the stream.
                let guard = &mut guard;
                guard.failed |= r.is_err();
                r
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let started = Stopwatch::start();
        let r = self.inner.list_with_delimiter(prefix).await;
        let metrics = self.metrics(prefix.and_then(|p| self.log_id(p)));
        metrics.record(ObjectOp::List, r.is_ok(), started.elapsed_nanos(), 0);
        r
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let started = Stopwatch::start();
        let r = self.inner.copy_opts(from, to, options).await;
        self.record(to, ObjectOp::Copy, started, r.is_ok(), 0);
        r
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        let started = Stopwatch::start();
        let r = self.inner.rename_opts(from, to, options).await;
        self.record(to, ObjectOp::Copy, started, r.is_ok(), 0);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[test]
    fn the_log_id_comes_from_the_key_under_the_root() {
        let m = MeteredStore::new(Arc::new(InMemory::new()), "/files/wp/");
        assert_eq!(m.log_id(&Path::from("files/wp/12/0/3.blk")), Some(12));
        assert_eq!(m.log_id(&Path::from("files/wp/12/0/footer.blk")), Some(12));
        assert_eq!(m.log_id(&Path::from("files/wp/probe/x")), None);
        assert_eq!(m.log_id(&Path::from("files/wp/12")), None);
        assert_eq!(m.log_id(&Path::from("other/12/0/3.blk")), None);
        let bare = MeteredStore::new(Arc::new(InMemory::new()), "");
        assert_eq!(bare.log_id(&Path::from("5/1/0.blk")), Some(5));
    }

    #[tokio::test]
    async fn a_tenant_store_labels_its_traffic_with_the_tenant() {
        let m =
            MeteredStore::new(Arc::new(InMemory::new()), "wp").with_log_namespace("tenant-x/wp");
        m.put_opts(
            &Path::from("wp/77/0/0.blk"),
            PutPayload::from_static(b"12345"),
            PutOptions::default(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        telemetry::catalog::render(&mut out);
        let line = "woodpecker_server_object_storage_bytes_transferred{node_id=\"embed\",\
                    log_ns=\"tenant-x/wp\",log_id=\"77\",operation=\"put_object\"} 5";
        assert!(out.contains(line), "missing {line} in\n{out}");
    }
}
