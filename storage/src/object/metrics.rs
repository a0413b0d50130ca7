//! Counters for object store traffic: requests, errors, bytes and time per operation.
//!
//! A [`CountingStore`] sits outermost (above retries) so that it counts what callers asked for,
//! or innermost to count what went on the wire; [`StoreCounters`] is shared and read with
//! [`StoreCounters::snapshot`] by whatever exports metrics.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
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

    fn record(&self, op: Op, started: Instant, ok: bool, bytes: u64) {
        let c = &self.ops[slot(op)];
        c.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        c.bytes.fetch_add(bytes, Ordering::Relaxed);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
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
        let started = Instant::now();
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
        let started = Instant::now();
        let r = self.inner.put_multipart_opts(location, opts).await;
        self.counters.record(Op::Put, started, r.is_ok(), 0);
        r
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let started = Instant::now();
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
        let started = Instant::now();
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
        let started = Instant::now();
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
        let started = Instant::now();
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
        let started = Instant::now();
        let r = self.inner.list_with_delimiter(prefix).await;
        self.counters.record(Op::List, started, r.is_ok(), 0);
        r
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let started = Instant::now();
        let r = self.inner.copy_opts(from, to, options).await;
        self.counters.record(Op::Copy, started, r.is_ok(), 0);
        r
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        let started = Instant::now();
        let r = self.inner.rename_opts(from, to, options).await;
        self.counters.record(Op::Copy, started, r.is_ok(), 0);
        r
    }
}
